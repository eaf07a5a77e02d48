//! The actors' error type: what can go wrong between a message and its
//! answer.

use crate::{broker::BrokerError, domain::TaskTypeId, store::StoreError};

/// Why an actor could not do what a message asked.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Shared state failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The job broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The task type is not (or no longer) defined.
    #[error("unknown task type {0}")]
    UnknownTask(TaskTypeId),
    /// Another replica holds the task's schedule lock, or this one lost it.
    #[error("the schedule lock of {0} is held elsewhere")]
    LockLost(TaskTypeId),
    /// A run of this task and instant exists and cannot take more users.
    #[error("a run of {0} at this instant exists")]
    RunExists(TaskTypeId),
    /// The actor that should answer is gone (shutting down).
    #[error("actor unavailable: {0}")]
    Mailbox(#[from] actix::MailboxError),
    /// A batched store round failed (see `batcher`).
    #[error("batched store round: {0}")]
    Batch(String),
    /// Shutdown has started: no new work is taken.
    #[error("shutting down")]
    ShuttingDown,
    /// A handler panicked (a bug); the actor carries on.
    #[error("{0} panicked")]
    Panicked(&'static str),
    /// The executors' HTTP client could not be built.
    #[error("HTTP client: {0}")]
    HttpClient(String),
}
