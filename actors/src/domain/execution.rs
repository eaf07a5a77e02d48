//! The outcome of one attempt of a job.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What happened when a job ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionResult {
    /// The job this is the outcome of.
    pub job_id: Uuid,
    /// Where the job stands after this attempt.
    pub status: Status,
    /// When the attempt started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub completed_at: DateTime<Utc>,
    /// How long it took, as a human-readable duration (`1s 234ms`).
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
    /// The endpoint's response body (base64), when kept.
    #[serde(
        default,
        with = "super::job::base64_bytes_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub response: Option<Vec<u8>>,
    /// When the next attempt is due, for a job that will be retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<DateTime<Utc>>,
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Queued, not started.
    Pending,
    /// An attempt is under way.
    Running,
    /// Done; it will not run again.
    Success,
    /// Failed for good; it went to the dead-letter queue.
    Failed,
    /// Failed this attempt; another one is scheduled.
    Retrying,
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable machine-readable code (`http_500`, `timeout`, `connect`, ...).
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// Whether the failure is worth another attempt.
    pub retry: bool,
}
