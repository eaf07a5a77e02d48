//! Messages that more than one actor handles or sends.
//!
//! Messages private to one actor live in that actor's file.

use std::time::Duration;

use actix::Message;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{Status, TaskTypeId};

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
