//! # taskqueue
//!
//! The service around the actors: command line, configuration, the
//! internal HTTP API, and start-up wiring. The actors themselves, the
//! domain model and the backend adapters live in the `actors` crate.
//!
//! # Layout
//!
//! - [`cli`]: the command line (clap) and its dispatch to [`commands`].
//! - [`configuration`]: YAML layers, `${ENV}` secrets, env overrides,
//!   validation that reports every problem with file, path, line, column.
//! - [`startup`]: builds the application (backends, actors, HTTP server).
//! - [`routes`]: the internal API's handlers, one module per area.
//! - [`ui`]: the web dashboard at `/ui` (server-rendered pages).
//! - [`telemetry`]: structured logs.

pub mod beacon;
pub mod cli;
pub mod commands;
pub mod configuration;
pub mod role;
pub mod routes;
pub mod startup;
pub mod telemetry;
pub mod ui;

pub use role::Role;
