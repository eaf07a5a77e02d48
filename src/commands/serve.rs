//! `taskqueue serve`: run the service until SIGTERM/SIGINT.
//!
//! With no configuration at all (no `--config`, no `TASKQUEUE_CONFIG`, no
//! `TASKQUEUE_SECTION__KEY` override in the environment), it runs the embedded quick start (`config/quickstart.yaml`, compiled
//! in): the embedded backend, example tasks calling the process's own
//! sink, and example users; its first log line says so.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
};

use crate::{Role, commands::ConfigArgs, configuration, startup::Application, telemetry};

/// The quick start, as shipped in `config/quickstart.yaml`.
pub const QUICKSTART: &str = include_str!("../../config/quickstart.yaml");

/// The address the quick start's example tasks call (its `api.bind`).
const QUICKSTART_BIND: &str = "127.0.0.1:8080";

/// `taskqueue serve`
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Configuration.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Which parts to run in this process.
    #[arg(long, value_enum, default_value_t = Role::All)]
    pub role: Role,
    /// Address of the internal API (else config `api.bind`, else 127.0.0.1:8080).
    #[arg(long)]
    pub bind: Option<SocketAddr>,
}

/// Runs the service.
pub fn run(args: ServeArgs) -> ExitCode {
    let quickstart = args.config.config.is_empty() && !overrides_in_environment();
    let paths = if quickstart {
        match write_quickstart(args.bind.map(|bind| bind.to_string())) {
            Ok(path) => vec![path],
            Err(err) => {
                eprintln!("taskqueue: writing the quick start configuration: {err}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        args.config.config.clone()
    };
    let loaded = match configuration::load(&paths) {
        Ok(loaded) => loaded,
        Err(errors) => {
            for problem in &errors.problems {
                eprintln!("{problem}");
            }
            eprintln!("taskqueue: configuration invalid; nothing started");
            return ExitCode::FAILURE;
        }
    };
    telemetry::init(
        &loaded.service.monitoring.log_level,
        loaded.service.monitoring.log_format,
    );
    let bind = args.bind.unwrap_or(loaded.service.api.bind);
    if quickstart {
        tracing::info!(
            address = %bind,
            "no configuration given: running the embedded quick start (in-memory backend, example tasks calling this process's sink, 5 example users); see GET /sink and /stats, and pass --config FILE to run your own tasks on Redis and RabbitMQ"
        );
    }
    for warning in &loaded.warnings {
        tracing::warn!(%warning, "configuration");
    }
    let result = actix_rt::System::new().block_on(async move {
        let app = Application::build_loaded(loaded, paths, args.role, bind).await?;
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

/// Whether the environment sets any `TASKQUEUE_SECTION__KEY` override
/// (then the configuration is the defaults plus those, not the quick
/// start).
fn overrides_in_environment() -> bool {
    std::env::vars_os().any(|(name, _)| {
        name.to_str().is_some_and(|name| {
            name.strip_prefix(configuration::OVERRIDE_PREFIX)
                .is_some_and(|rest| rest.contains(configuration::OVERRIDE_SEPARATOR))
        })
    })
}

/// Writes the quick start to a file of this process (the loader and the
/// reloads read files), its example tasks calling `bind` when given.
fn write_quickstart(bind: Option<String>) -> std::io::Result<PathBuf> {
    let text = match bind {
        Some(bind) => QUICKSTART.replace(QUICKSTART_BIND, &bind),
        None => QUICKSTART.to_owned(),
    };
    let dir = std::env::temp_dir().join(format!("taskqueue-quickstart-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("quickstart.yaml");
    write_if_changed(&path, &text)?;
    Ok(path)
}

fn write_if_changed(path: &Path, text: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    std::fs::write(path, text)
}
