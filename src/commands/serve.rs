//! `taskqueue serve`: run the service until SIGTERM/SIGINT.

use std::process::ExitCode;

use crate::{cli::ServeArgs, configuration::ServiceConfig, startup::Application, telemetry};

/// Runs the service.
pub fn run(args: ServeArgs) -> ExitCode {
    let config = ServiceConfig::default();
    telemetry::init(&config.monitoring.log_level, false);
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
