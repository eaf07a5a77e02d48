//! Structured logs through `tracing`, on standard error.
//!
//! Two formats (`monitoring.log_format`): `pretty`, one compact line per
//! event, coloured only when standard error is a terminal and `NO_COLOR`
//! is not set (a log file never holds escape codes); and `json`, one JSON
//! object per line for log shippers, with the event's fields at the top
//! level and the fields of the span it happened in under `span` (a job's
//! `job_id`, `task`, `user` and `attempt`).

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt};

use crate::configuration::LogFormat;

/// Installs the global subscriber. `RUST_LOG` overrides `default_filter`.
/// Safe to call twice (the second call changes nothing).
pub fn init(default_filter: &str, format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder
            .compact()
            .with_ansi(colour(std::io::stderr().is_terminal()))
            .try_init(),
    };
}

/// Whether to colour the output: only on a terminal, and never with
/// `NO_COLOR` set (<https://no-color.org>).
fn colour(terminal: bool) -> bool {
    terminal && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
}
