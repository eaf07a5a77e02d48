//! Which parts of the service a process runs (`serve --role`).

use clap::ValueEnum;

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
