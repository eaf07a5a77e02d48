//! Messages that more than one actor handles or sends.
//!
//! Messages private to one actor live in that actor's file.

use std::time::Duration;

use actix::Message;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    domain::{Status, TaskType, TaskTypeId, UserId},
    error::PipelineError,
    store::{LockLease, LockName},
};

/// One finished attempt, reported by an executor to the metrics actor.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct RecordExecution {
    /// The task that ran.
    pub task_type_id: TaskTypeId,
    /// The job that ran.
    pub job_id: Uuid,
    /// `Success`, `Retrying` (will run again) or `Failed` (dead-lettered).
    pub status: Status,
    /// When the attempt ended.
    pub completed_at: DateTime<Utc>,
    /// How long the call took.
    pub duration: Duration,
}

/// Fan out one period (or one trigger) of a task to its users. Answers
/// with the number of jobs published.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<u64, PipelineError>")]
pub struct Distribute {
    /// The task (a snapshot of its definition).
    pub task: TaskType,
    /// The period's fire instant, or the trigger instant; part of every
    /// job id.
    pub scheduled_at: DateTime<Utc>,
    /// `None`: every user with the task enabled, resumably (progress saved
    /// after each confirmed batch). `Some`: exactly these users.
    pub users: Option<Vec<UserId>>,
    /// Also run the users whose custom interval keeps them out of the
    /// enabled index (a trigger of "every enabled user").
    pub with_custom_users: bool,
    /// Run every job at `scheduled_at` instead of spreading them.
    pub immediate: bool,
    /// The lock the fan-out runs under, renewed after each batch; the
    /// fan-out stops when it is lost.
    pub lease: Option<(LockName, LockLease)>,
    /// Written into every job's metadata (`scheduler`, `trigger`).
    pub source: String,
    /// Ties the jobs to the tick or request that made them.
    pub correlation_id: String,
}
