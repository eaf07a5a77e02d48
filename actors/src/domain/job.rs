//! Jobs: one run of one task for one user, and the queue message that
//! carries it.

use std::{convert::Infallible, fmt, str::FromStr};

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use super::{TaskTypeId, UserId};

/// Version written into, and required of, every queue message.
pub const ENVELOPE_VERSION: &str = "1.0";

/// Namespace of the UUIDv5 job ids (fixed forever: changing it would let a
/// replica of another release name the same run differently).
const JOB_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c1f_0c5e_8f0e_4b9a_9d3e_2a7b_5c4d_1e01);

/// One queued run of a task for a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// [`job_id`] of (task, user, `scheduled_at`): every replica and every
    /// retry of a fan-out names the same run the same way.
    pub id: Uuid,
    /// The task to run.
    pub task_type_id: TaskTypeId,
    /// The user it runs for.
    pub user_id: UserId,
    /// The fire instant (the period) this run belongs to.
    pub scheduled_at: DateTime<Utc>,
    /// Not to be started before this instant.
    pub execute_after: DateTime<Utc>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Which queue the job travels in.
    pub priority: Priority,
    /// Opaque bytes for the endpoint (base64 in JSON).
    #[serde(with = "base64_bytes")]
    pub payload: Vec<u8>,
    /// When the job was first created.
    pub created_at: DateTime<Utc>,
}

/// The id of the run of `task` for `user` in the period that fired at
/// `scheduled_at` (UUIDv5, stable across replicas and releases).
pub fn job_id(task: &TaskTypeId, user: &UserId, scheduled_at: DateTime<Utc>) -> Uuid {
    let name = format!(
        "{}\n{}\n{}",
        task,
        user,
        scheduled_at.timestamp_nanos_opt().unwrap_or(i64::MAX)
    );
    Uuid::new_v5(&JOB_ID_NAMESPACE, name.as_bytes())
}

/// Job priority: `0` low, `1` normal, `2` high in JSON. Config files may
/// also write `low`, `normal` or `high`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Runs when nothing else waits.
    Low = 0,
    /// The default.
    #[default]
    Normal = 1,
    /// Runs first.
    High = 2,
}

impl Priority {
    /// Every priority, highest first: the order consumers drain queues in.
    pub const HIGHEST_FIRST: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// Lower-case name (`high`), as used in queue names.
    pub fn name(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Priority {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(*self as u8)
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PriorityVisitor;
        impl serde::de::Visitor<'_> for PriorityVisitor {
            type Value = Priority;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("0, 1, 2, \"low\", \"normal\" or \"high\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Priority, E> {
                match v {
                    0 => Ok(Priority::Low),
                    1 => Ok(Priority::Normal),
                    2 => Ok(Priority::High),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Unsigned(v), &self)),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Priority, E> {
                u64::try_from(v)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Priority, E> {
                match v {
                    "low" => Ok(Priority::Low),
                    "normal" => Ok(Priority::Normal),
                    "high" => Ok(Priority::High),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        deserializer.deserialize_any(PriorityVisitor)
    }
}

/// The queue message: a versioned envelope around a [`Job`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEnvelope {
    /// Always [`ENVELOPE_VERSION`].
    pub version: String,
    /// The run.
    pub job: Job,
    /// Where the job came from.
    pub metadata: JobMetadata,
}

impl JobEnvelope {
    /// Wraps `job` in a current-version envelope.
    pub fn new(job: Job, metadata: JobMetadata) -> Self {
        JobEnvelope {
            version: ENVELOPE_VERSION.to_owned(),
            job,
            metadata,
        }
    }
}

/// Tracing and placement facts about a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMetadata {
    /// Ties the job to the request or tick that created it.
    pub correlation_id: String,
    /// Where the job came from.
    pub source: JobSource,
    /// The slot of the distribution window the job was placed in; absent
    /// for jobs that were not spread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution_slot: Option<u32>,
    /// The `source` of the job's first try, kept by its retries (whose
    /// `source` is `retry`) and replays, so a retry is held to the same
    /// rules as the try it repeats (extension; absent on a first try and on
    /// messages of older releases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<JobSource>,
}

impl JobMetadata {
    /// Where the job's first try came from: `origin` for a retry or a
    /// replay, else `source`.
    pub fn first_source(&self) -> &JobSource {
        self.origin.as_ref().unwrap_or(&self.source)
    }

    /// Whether the job was planned by a scheduled fan-out (`scheduler` or
    /// `custom_interval`), on its first try or a retry of one: such a job
    /// was made for a user who had the task enabled, and is skipped when
    /// the user no longer has.
    pub fn planned(&self) -> bool {
        matches!(
            self.first_source(),
            JobSource::Scheduler | JobSource::CustomInterval
        )
    }
}

/// Where a job came from: `metadata.source` (and `metadata.origin`) of its
/// message, written as a name (`"scheduler"`, `"retry"`, ...).
///
/// A name this release does not know (a message of another producer, or
/// of a later release) still reads: it is kept as written in
/// [`JobSource::Other`] and written back unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobSource {
    /// A due period of the task's own interval (`scheduler`).
    Scheduler,
    /// `POST /schedule/trigger` (`trigger`).
    Trigger,
    /// The users on a custom interval whose own fire came (`custom_interval`).
    CustomInterval,
    /// The next try of a job that failed or was throttled (`retry`).
    Retry,
    /// A dead letter sent again through the API or the dashboard (`replay`).
    Replay,
    /// Any other name, as written.
    Other(OtherSource),
}

/// A source name that is none of [`JobSource`]'s own, kept as written.
/// Only reading a name makes one, so `JobSource::Other` never holds a
/// name that has a variant of its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OtherSource(String);

impl OtherSource {
    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl JobSource {
    /// Every source with a variant of its own.
    pub const NAMED: [JobSource; 5] = [
        JobSource::Scheduler,
        JobSource::Trigger,
        JobSource::CustomInterval,
        JobSource::Retry,
        JobSource::Replay,
    ];

    /// As written in the message: `scheduler`, `trigger`, ...
    pub fn as_str(&self) -> &str {
        match self {
            JobSource::Scheduler => "scheduler",
            JobSource::Trigger => "trigger",
            JobSource::CustomInterval => "custom_interval",
            JobSource::Retry => "retry",
            JobSource::Replay => "replay",
            JobSource::Other(other) => other.as_str(),
        }
    }

    /// The source named `name`, or `name` kept as an [`OtherSource`].
    fn named(name: String) -> JobSource {
        JobSource::NAMED
            .into_iter()
            .find(|source| source.as_str() == name)
            .unwrap_or(JobSource::Other(OtherSource(name)))
    }
}

impl fmt::Display for JobSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobSource {
    /// Every name reads: an unknown one as [`JobSource::Other`].
    type Err = Infallible;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Ok(JobSource::named(name.to_owned()))
    }
}

impl Serialize for JobSource {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for JobSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(JobSource::named)
    }
}

/// Base64 (standard alphabet, padded) for byte fields.
pub mod base64_bytes {
    use super::*;

    /// Writes bytes as base64 text.
    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    /// Reads base64 text into bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// Base64 for optional byte fields.
pub mod base64_bytes_opt {
    use super::*;

    /// Writes optional bytes as base64 text.
    pub fn serialize<S: Serializer>(
        bytes: &Option<Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => base64_bytes::serialize(bytes, serializer),
            None => serializer.serialize_none(),
        }
    }

    /// Reads optional base64 text into bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?;
        text.map(|t| STANDARD.decode(t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_stable_and_distinct() {
        let task = TaskTypeId::parse("daily_report").unwrap();
        let alice = UserId::parse("alice").unwrap();
        let bob = UserId::parse("bob").unwrap();
        let at: DateTime<Utc> = "2024-01-15T10:00:00Z".parse().unwrap();
        assert_eq!(job_id(&task, &alice, at), job_id(&task, &alice, at));
        assert_ne!(job_id(&task, &alice, at), job_id(&task, &bob, at));
        assert_ne!(
            job_id(&task, &alice, at),
            job_id(&task, &alice, at + chrono::Duration::seconds(1))
        );
        assert_eq!(job_id(&task, &alice, at).get_version_num(), 5);
    }

    #[test]
    fn priority_is_an_integer_in_json_and_a_name_in_config() {
        assert_eq!(serde_json::to_string(&Priority::High).unwrap(), "2");
        assert_eq!(
            serde_json::from_str::<Priority>("0").unwrap(),
            Priority::Low
        );
        assert_eq!(
            serde_json::from_str::<Priority>("\"high\"").unwrap(),
            Priority::High
        );
        assert!(serde_json::from_str::<Priority>("3").is_err());
    }

    #[test]
    fn each_source_reads_back_from_its_name_and_its_json() {
        for source in JobSource::NAMED {
            let name = source.to_string();
            assert_eq!(name.parse::<JobSource>(), Ok(source.clone()));
            assert_eq!(
                serde_json::to_string(&source).unwrap(),
                format!("\"{name}\"")
            );
            assert_eq!(
                serde_json::from_str::<JobSource>(&format!("\"{name}\"")).unwrap(),
                source
            );
        }
        assert_eq!(JobSource::CustomInterval.as_str(), "custom_interval");
    }

    fn message(metadata: &str) -> String {
        format!(
            r#"{{"version":"1.0","job":{{"id":"550e8400-e29b-41d4-a716-446655440000","task_type_id":"daily_report","user_id":"user_12345","scheduled_at":"2024-01-15T10:00:00Z","execute_after":"2024-01-15T10:15:30Z","attempt":2,"priority":1,"payload":"","created_at":"2024-01-15T09:00:00Z"}},"metadata":{metadata}}}"#
        )
    }

    #[test]
    fn a_source_of_another_producer_reads_and_is_written_back_unchanged() {
        let text = message(
            r#"{"correlation_id":"req_789","source":"legacy_import","origin":"nightly_batch"}"#,
        );
        let envelope: JobEnvelope = serde_json::from_str(&text).unwrap();
        let metadata = &envelope.metadata;
        assert!(
            matches!(&metadata.source, JobSource::Other(other) if other.as_str() == "legacy_import")
        );
        assert_eq!(metadata.first_source().as_str(), "nightly_batch");
        assert!(!metadata.planned(), "only a scheduled fan-out plans jobs");
        assert_eq!(
            serde_json::to_value(&envelope).unwrap(),
            serde_json::from_str::<serde_json::Value>(&text).unwrap()
        );
        // A name with a variant of its own never reads as `Other`.
        assert_eq!("retry".parse::<JobSource>(), Ok(JobSource::Retry));
    }

    #[test]
    fn a_retry_of_a_scheduled_job_is_planned_and_keeps_the_wire_names() {
        let text = message(
            r#"{"correlation_id":"req_789","source":"retry","distribution_slot":93,"origin":"custom_interval"}"#,
        );
        let envelope: JobEnvelope = serde_json::from_str(&text).unwrap();
        assert_eq!(envelope.metadata.source, JobSource::Retry);
        assert_eq!(envelope.metadata.first_source(), &JobSource::CustomInterval);
        assert!(envelope.metadata.planned());
        assert_eq!(
            serde_json::to_value(&envelope).unwrap(),
            serde_json::from_str::<serde_json::Value>(&text).unwrap()
        );
        let trigger: JobEnvelope =
            serde_json::from_str(&message(r#"{"correlation_id":"c","source":"trigger"}"#)).unwrap();
        assert_eq!(trigger.metadata.first_source(), &JobSource::Trigger);
        assert!(!trigger.metadata.planned());
    }
}
