//! Structured logs through `tracing`.

use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global subscriber: JSON lines when `json`, else compact
/// text. `RUST_LOG` overrides `default_filter`. Safe to call twice.
pub fn init(default_filter: &str, json: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.compact().try_init()
    };
}
