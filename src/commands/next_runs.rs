//! `taskqueue next-runs`: the schedule calculus on the command line.

use std::process::ExitCode;

/// Arguments of `taskqueue next-runs`.
#[derive(Debug, Clone, clap::Args)]
pub struct NextRunsArgs {
    /// A `TaskInterval` as JSON.
    #[arg(long)]
    pub interval: Option<String>,
    /// RFC 3339 instant; fires strictly after it are printed.
    #[arg(long)]
    pub after: Option<String>,
    /// How many fires to print.
    #[arg(long, default_value_t = 5)]
    pub count: usize,
}

/// Prints the fires.
pub fn run(args: NextRunsArgs) -> ExitCode {
    let _ = args;
    eprintln!("next-runs: not available yet");
    ExitCode::from(2)
}
