//! Messages that more than one actor handles or sends.
//!
//! Messages private to one actor live in that actor's file.

use std::time::Duration;

use actix::Message;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{DeadLetterReason, Status, TaskTypeId};

/// One finished attempt, reported by an executor to the metrics actor.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct RecordExecution {
    /// The task that ran.
    pub task_type_id: TaskTypeId,
    /// The job that ran.
    pub job_id: Uuid,
    /// What became of it.
    pub outcome: ExecutionOutcome,
    /// When the attempt ended.
    pub completed_at: DateTime<Utc>,
    /// How long the call took.
    pub duration: Duration,
    /// How late the attempt started: its start minus the job's
    /// `execute_after` (zero when it started on time).
    pub lateness: Duration,
}

impl RecordExecution {
    /// `Success`, `Retrying` (will run again) or `Failed` (dead-lettered).
    pub fn status(&self) -> Status {
        self.outcome.status()
    }
}

/// What became of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionOutcome {
    /// 2xx: the job is done.
    Success,
    /// A retryable failure: the next attempt is published.
    Retry,
    /// 429/503 with `Retry-After`: the same attempt is published later.
    Throttle,
    /// Failed for good, with the dead letter's reason.
    DeadLetter(DeadLetterReason),
}

impl ExecutionOutcome {
    /// The execution status this outcome leaves the job in.
    pub fn status(self) -> Status {
        match self {
            ExecutionOutcome::Success => Status::Success,
            ExecutionOutcome::Retry | ExecutionOutcome::Throttle => Status::Retrying,
            ExecutionOutcome::DeadLetter(_) => Status::Failed,
        }
    }
}
