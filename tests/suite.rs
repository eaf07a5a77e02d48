//! Every integration test that shares the real Redis and RabbitMQ with
//! others, in one test binary: one link instead of one per file, so the
//! build is faster and its output a fraction of the size. Each file in
//! `tests/` is a module here; run one with `cargo test --test suite
//! pipeline_zones::`.
//!
//! Tests that restart a server are binaries of their own (Cargo.toml lists
//! them), run one after another by `cargo test`, each taking the exclusive
//! side of the server lock (`support/server_lock.rs`); so is the CPU stress
//! test (`fault_retry_stress`), whose busy loops would slow its neighbours.

mod support;

mod api_openapi;
mod api_preferences;
mod api_security;
mod architecture;
mod cli_forecast;
mod cli_next_runs;
mod cli_users_import;
mod config_validation;
mod fault_bad_input;
mod ops_compose;
mod ops_dead_letters;
mod ops_durations;
mod ops_first_contact;
mod ops_job_results;
mod ops_metrics;
mod ops_pause;
mod ops_preview;
mod pipeline_api;
mod pipeline_failures;
mod pipeline_limits;
mod pipeline_payload;
mod pipeline_processes;
mod pipeline_scheduled;
mod pipeline_supervision;
mod pipeline_triggered;
mod pipeline_zones;
mod service_health;
mod service_reload;
mod service_shutdown;
mod services_wiring;
mod spec_examples;
mod store_quarantine;
mod ui_browser;
mod ui_dashboard;
