//! The command line: the parser and the dispatch to `commands`. Each
//! command's arguments live with the command (`commands::*`), so nothing
//! but `main.rs` depends on this module.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::{self, ConfigArgs, serve::ServeArgs};

/// Recurring per-user tasks at scale: fan-out spread over a window,
/// per-user intervals and time zones, cluster-wide rate limits.
#[derive(Debug, Parser)]
#[command(name = "taskqueue", version, about, after_help = EXAMPLES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

const EXAMPLES: &str = "\
Examples:
  taskqueue serve --config config/quickstart.yaml      run everything in one process
  taskqueue serve --config config/taskqueue.yaml --role worker --bind 127.0.0.1:8081
  taskqueue validate --config config/taskqueue.yaml
  taskqueue next-runs --interval '{\"type\":\"daily\",\"value\":1,\"timezone\":\"America/New_York\",\"at_time\":\"02:30\"}' --after 2026-03-07T00:00:00Z
  taskqueue users import users.jsonl --config config/taskqueue.yaml
  taskqueue forecast --config config/taskqueue.yaml --hours 24
  taskqueue openapi --markdown > docs/api.md";

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (scheduler, worker or both) and its internal API.
    Serve(ServeArgs),
    /// Check configuration files; print every problem and exit non-zero if any.
    Validate(ConfigArgs),
    /// Print the next fire instants of an interval or a configured task.
    NextRuns(commands::next_runs::NextRunsArgs),
    /// Forecast the jobs a configuration would dispatch per 5-minute bucket,
    /// for the users in Redis, flagging buckets above the rate limits.
    Forecast(commands::forecast::ForecastArgs),
    /// Print the internal API's OpenAPI document (or, with --markdown,
    /// docs/api.md rendered from it).
    Openapi(commands::openapi::OpenApiArgs),
    /// Manage user preferences.
    Users {
        /// What to do with users.
        #[command(subcommand)]
        command: UsersCommand,
    },
}

/// `taskqueue users ...`
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Import preferences from a JSON-lines file of `UserPreference`s.
    Import(commands::users::ImportArgs),
}

/// Runs a parsed command line to its exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => commands::serve::run(args),
        Command::Validate(args) => commands::validate::run(args),
        Command::NextRuns(args) => commands::next_runs::run(args),
        Command::Forecast(args) => commands::forecast::run(args),
        Command::Openapi(args) => commands::openapi::run(args),
        Command::Users {
            command: UsersCommand::Import(args),
        } => commands::users::import(args),
    }
}
