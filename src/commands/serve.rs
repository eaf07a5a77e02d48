//! `taskqueue serve`: run the service until SIGTERM/SIGINT.

use std::process::ExitCode;

use crate::{cli::ServeArgs, configuration, startup::Application, telemetry};

/// Runs the service.
pub fn run(args: ServeArgs) -> ExitCode {
    let loaded = match configuration::load(&args.config.config) {
        Ok(loaded) => loaded,
        Err(errors) => {
            for problem in &errors.problems {
                eprintln!("{problem}");
            }
            eprintln!("taskqueue: configuration invalid; nothing started");
            return ExitCode::FAILURE;
        }
    };
    telemetry::init(&loaded.service.monitoring.log_level, false);
    for warning in &loaded.warnings {
        tracing::warn!(%warning, "configuration");
    }
    let config = loaded.service;
    let bind = args.bind.unwrap_or(config.api.bind);
    let result = actix_rt::System::new().block_on(async move {
        let app = Application::build(config, args.role, bind).await?;
        tracing::info!(address = %app.address(), role = ?args.role, "taskqueue serving");
        app.run_until_stopped().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "taskqueue stopped");
            eprintln!("taskqueue: {err:#}");
            ExitCode::FAILURE
        }
    }
}
