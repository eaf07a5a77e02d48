//! The `taskqueue` binary: parse the command line, hand over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = taskqueue::cli::Cli::parse();
    taskqueue::cli::run(cli)
}
