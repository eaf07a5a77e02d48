//! The command line.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};

use crate::commands;

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

/// Where configuration comes from.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// Configuration file; repeat to layer files (later ones win).
    /// Environment variables `TASKQUEUE_SECTION__KEY` override files.
    #[arg(
        long = "config",
        short = 'c',
        env = "TASKQUEUE_CONFIG",
        value_delimiter = ','
    )]
    pub config: Vec<PathBuf>,
}

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

/// Which parts of the service a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Scheduler and distributor only.
    Scheduler,
    /// Executors only.
    Worker,
    /// Both.
    All,
}

impl Role {
    /// Whether the scheduler side runs.
    pub fn schedules(self) -> bool {
        matches!(self, Role::Scheduler | Role::All)
    }

    /// Whether the worker side runs.
    pub fn works(self) -> bool {
        matches!(self, Role::Worker | Role::All)
    }

    /// `scheduler`, `worker` or `all`, as `--role` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Scheduler => "scheduler",
            Role::Worker => "worker",
            Role::All => "all",
        }
    }
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
