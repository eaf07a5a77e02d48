//! One module per subcommand, each with its own arguments; the
//! configuration arguments several of them share are here.

use std::path::PathBuf;

pub mod forecast;
pub mod next_runs;
pub mod openapi;
pub mod serve;
pub mod users;
pub mod validate;

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
