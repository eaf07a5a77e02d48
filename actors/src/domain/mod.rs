//! The spec's data model: parsed once at the edge, plain data afterwards.
//!
//! Nothing here does I/O or reads the clock.

mod dead_letter;
mod execution;
mod ids;
mod job;
pub mod payload;
mod preference;
mod task;

pub use dead_letter::{DeadLetterReason, UnknownReason};
pub use execution::{ErrorDetail, ExecutionResult, Status};
pub use ids::{MAX_ID_LEN, ParseIdError, TaskTypeId, UserId};
pub use job::{
    ENVELOPE_VERSION, Job, JobEnvelope, JobMetadata, JobSource, OtherSource, Priority,
    base64_bytes, base64_bytes_opt, job_id,
};
pub use preference::{Settings, UserPreference};
pub use task::{
    AtTime, IntervalType, MisfirePolicy, OverlapPolicy, ParseAtTimeError, TaskConfig, TaskInterval,
    TaskType, Weekday,
};
