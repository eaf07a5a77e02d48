//! The outcome of one attempt of a job.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What happened when a job ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecutionResult {
    /// The job this is the outcome of.
    pub job_id: Uuid,
    /// Where the job stands after this attempt.
    pub status: Status,
    /// When the attempt started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub completed_at: DateTime<Utc>,
    /// How long it took: integer nanoseconds in JSON, as Go's
    /// `time.Duration` serialises (`1234000000` is 1.234 s). Older records
    /// written as text (`"1s 234ms"`) are still read.
    #[serde(with = "duration_nanos")]
    #[cfg_attr(feature = "openapi", schema(value_type = u64, example = 1_234_000_000_u64))]
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
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Byte))]
    pub response: Option<Vec<u8>>,
    /// When the next attempt is due, for a job that will be retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<DateTime<Utc>>,
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable machine-readable code (`http_500`, `timeout`, `connect`, ...).
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// Whether the failure is worth another attempt.
    pub retry: bool,
}

/// `Duration` as integer nanoseconds, the JSON form of Go's `time.Duration`.
pub mod duration_nanos {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes a duration as integer nanoseconds (saturating at `u64::MAX`).
    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        serializer.serialize_u64(nanos)
    }

    /// The forms a stored duration may take.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        /// Integer nanoseconds, as written today.
        Nanos(u64),
        /// Human-readable text, as written by earlier releases.
        Text(String),
    }

    /// Reads integer nanoseconds, or the human-readable text earlier releases wrote.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        match Stored::deserialize(deserializer)? {
            Stored::Nanos(nanos) => Ok(Duration::from_nanos(nanos)),
            Stored::Text(text) => {
                humantime::parse_duration(text.trim()).map_err(serde::de::Error::custom)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(duration: Duration) -> ExecutionResult {
        let at = DateTime::parse_from_rfc3339("2024-01-15T10:15:30Z")
            .unwrap()
            .with_timezone(&Utc);
        ExecutionResult {
            job_id: Uuid::nil(),
            status: Status::Success,
            started_at: at,
            completed_at: at + duration,
            duration,
            error: None,
            response: None,
            next_attempt: None,
        }
    }

    #[test]
    fn duration_is_integer_nanoseconds_in_json() {
        let json = serde_json::to_value(result(Duration::from_millis(1234))).unwrap();
        assert_eq!(json["duration"], serde_json::json!(1_234_000_000u64));
    }

    #[test]
    fn text_durations_from_earlier_releases_still_read() {
        let mut json = serde_json::to_value(result(Duration::from_millis(1234))).unwrap();
        json["duration"] = serde_json::json!("1s 234ms");
        let back: ExecutionResult = serde_json::from_value(json).unwrap();
        assert_eq!(back.duration, Duration::from_millis(1234));
    }
}
