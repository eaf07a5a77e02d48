//! `taskqueue users import`: bulk-load preferences.

use std::{path::PathBuf, process::ExitCode};

use crate::cli::ConfigArgs;

/// Arguments of `taskqueue users import`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// JSON-lines file, one `UserPreference` per line.
    pub file: PathBuf,
    /// Configuration (for the Redis connection and the task list).
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Imports the file.
pub fn import(args: ImportArgs) -> ExitCode {
    let _ = args;
    eprintln!("users import: not available yet");
    ExitCode::from(2)
}
