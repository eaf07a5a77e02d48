//! One module per subcommand.

pub mod forecast;
pub mod next_runs;
pub mod openapi;
pub mod serve;
pub mod users;
pub mod validate;
