//! Every Redis key taskqueue uses, in one place.
//!
//! The spec's patterns, under a configurable prefix (default `taskqueue`),
//! plus the extension keys that make the scheduler's work proportional to
//! the users due (documented in ARCHITECTURE.md).

use chrono::{DateTime, NaiveDate, Utc};
use twox_hash::XxHash3_64;
use uuid::Uuid;

use super::{BucketName, LockName};
use crate::domain::{TaskTypeId, UserId};

/// Number of `{p}:users:modified:{bucket}` hashes. With Redis's default
/// `hash-max-listpack-entries` (128 in the shipped redis.conf, 512 built
/// in) each stays listpack-encoded up to 1,000,000 (resp. 4,000,000)
/// users; past that a bucket turns into a hashtable, which costs more per
/// user but stays correct. Fixed: changing it would lose every stored
/// `last_modified`.
pub const MODIFIED_BUCKETS: u64 = 8192;

/// Key builder for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new("taskqueue")
    }
}

impl Keys {
    /// Keys under `prefix` (no trailing colon).
    pub fn new(prefix: impl Into<String>) -> Self {
        Keys {
            prefix: prefix.into(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{p}:schedule:{task}`: STRING, last fire handled.
    pub fn schedule(&self, task: &TaskTypeId) -> String {
        format!("{}:schedule:{task}", self.prefix)
    }

    /// The key of a lock.
    pub fn lock(&self, lock: &LockName) -> String {
        match lock {
            LockName::Schedule(task) => format!("{}:schedule:lock:{task}", self.prefix),
        }
    }

    /// `{lock key}:fence`: counter handing out fencing tokens (extension).
    pub fn lock_fence(&self, lock: &LockName) -> String {
        format!("{}:fence", self.lock(lock))
    }

    /// `{p}:users:{user}:tasks`: HASH task -> `0`/`1`.
    pub fn user_tasks(&self, user: &UserId) -> String {
        format!("{}:users:{user}:tasks", self.prefix)
    }

    /// `{p}:users:{user}:settings:{task}`: HASH of the user's settings.
    pub fn user_settings(&self, user: &UserId, task: &TaskTypeId) -> String {
        format!("{}:users:{user}:settings:{task}", self.prefix)
    }

    /// `{p}:users:modified:{bucket}` (extension): HASH user -> when any of
    /// the user's preferences last changed (epoch ms), for the users of one
    /// of [`MODIFIED_BUCKETS`] buckets ([`Keys::modified_bucket`]): a few
    /// hashes small enough to stay listpack-encoded instead of a key per
    /// user. The field goes with the user's last preference.
    pub fn user_modified(&self, user: &UserId) -> String {
        format!(
            "{}:users:modified:{}",
            self.prefix,
            Keys::modified_bucket(user)
        )
    }

    /// The bucket of [`Keys::user_modified`] holding `user`: XXH3-64 (seed
    /// 0) of the id, modulo [`MODIFIED_BUCKETS`]; fixed across releases.
    pub fn modified_bucket(user: &UserId) -> u64 {
        XxHash3_64::oneshot(user.as_str().as_bytes()) % MODIFIED_BUCKETS
    }

    /// `{p}:users:{user}:last_modified`: the STRING (RFC 3339) in which
    /// releases before [`Keys::user_modified`] kept a user's
    /// `last_modified`; read when the bucket has no entry, deleted by the
    /// user's next preference write.
    pub fn legacy_user_modified(&self, user: &UserId) -> String {
        format!("{}:users:{user}:last_modified", self.prefix)
    }

    /// The key of a token bucket.
    pub fn bucket(&self, bucket: &BucketName) -> String {
        match bucket {
            BucketName::Global => format!("{}:ratelimit:global", self.prefix),
            BucketName::Task(task) => format!("{}:ratelimit:task:{task}", self.prefix),
        }
    }

    /// `{p}:metrics:executions:{date}`: HASH task -> count.
    pub fn metrics_executions(&self, date: NaiveDate) -> String {
        format!("{}:metrics:executions:{date}", self.prefix)
    }

    /// `{p}:metrics:failures:{date}`: HASH task -> count.
    pub fn metrics_failures(&self, date: NaiveDate) -> String {
        format!("{}:metrics:failures:{date}", self.prefix)
    }

    /// `{p}:metrics:duration:{task}`: ZSET of durations scored by time.
    pub fn metrics_duration(&self, task: &TaskTypeId) -> String {
        format!("{}:metrics:duration:{task}", self.prefix)
    }

    /// `{p}:distribution:{task}:{run}:{slot}`: LIST of the user ids placed
    /// in one slot of one run, until the slot is released. The spec's
    /// `distribution:{task_type_id}:{slot}` with the run's id (its
    /// `scheduled_at` in epoch ms) before the slot, so that runs that
    /// overlap (a trigger during a period, a window longer than the
    /// interval) never share a list.
    pub fn distribution(&self, task: &TaskTypeId, run: i64, slot: u32) -> String {
        format!("{}:distribution:{task}:{run}:{slot}", self.prefix)
    }

    /// `{p}:index:enabled:{task}` (extension): ZSET of users with the task
    /// enabled on its default interval, scored by their
    /// [`crate::slot::spread_key`] (0 for entries older releases wrote);
    /// paged in (score, id) order.
    pub fn enabled_index(&self, task: &TaskTypeId) -> String {
        format!("{}:index:enabled:{task}", self.prefix)
    }

    /// `{p}:index:zone:{task}:{zone}` (extension): ZSET of users with the
    /// task enabled on its own interval read in time zone `zone` (their
    /// per-task `timezone`, else their default zone), scored by their
    /// [`crate::slot::spread_key`]; users without a zone stay in
    /// [`Keys::enabled_index`].
    pub fn zone_index(&self, task: &TaskTypeId, zone: &str) -> String {
        format!("{}:index:zone:{task}:{zone}", self.prefix)
    }

    /// [`Keys::zone_index`] as a template for Lua scripts: `{T}` stands for
    /// the task id, `{Z}` for the zone.
    pub fn zone_index_template(&self) -> String {
        format!("{}:index:zone:{{T}}:{{Z}}", self.prefix)
    }

    /// `{p}:index:zones:{task}` (extension): SET of the zones that have
    /// had a [`Keys::zone_index`] for the task (the scheduler's zone
    /// groups; an emptied group stays listed and costs one calculus step
    /// per tick).
    pub fn zone_set(&self, task: &TaskTypeId) -> String {
        format!("{}:index:zones:{task}", self.prefix)
    }

    /// [`Keys::zone_set`] as a template for Lua scripts (`{T}`: task id).
    pub fn zone_set_template(&self) -> String {
        format!("{}:index:zones:{{T}}", self.prefix)
    }

    /// [`Keys::enabled_index`] as a template for Lua scripts (`{T}`).
    pub fn enabled_index_template(&self) -> String {
        format!("{}:index:enabled:{{T}}", self.prefix)
    }

    /// [`Keys::user_settings`] of one user as a template for Lua scripts
    /// (`{T}`: task id).
    pub fn user_settings_template(&self, user: &UserId) -> String {
        format!("{}:users:{user}:settings:{{T}}", self.prefix)
    }

    /// `{p}:schedule:zones:{task}` (extension): HASH zone -> the last fire
    /// handled for the task's zone group `zone`, encoded as
    /// [`Keys::schedule`]'s value (`<RFC 3339>|fence=<n>`).
    pub fn zone_schedule(&self, task: &TaskTypeId) -> String {
        format!("{}:schedule:zones:{task}", self.prefix)
    }

    /// `{p}:users:timezone:{bucket}` (extension): HASH user -> the user's
    /// default time zone (IANA name), for the users of one bucket (the
    /// buckets of [`Keys::user_modified`]).
    pub fn user_timezone(&self, user: &UserId) -> String {
        format!(
            "{}:users:timezone:{}",
            self.prefix,
            Keys::modified_bucket(user)
        )
    }

    /// `{p}:index:custom:{task}` (extension): ZSET of users with the task
    /// enabled on a custom interval, scored by next fire (epoch ms).
    pub fn custom_index(&self, task: &TaskTypeId) -> String {
        format!("{}:index:custom:{task}", self.prefix)
    }

    /// `{p}:fanout:{task}` (extension): HASH run id (`scheduled_at` in
    /// epoch ms) -> the run's record as JSON ([`crate::fanout::Run`]), for
    /// runs in progress; a finished run's field is deleted.
    pub fn fanout(&self, task: &TaskTypeId) -> String {
        format!("{}:fanout:{task}", self.prefix)
    }

    /// `{p}:fanout:{task}:last` (extension): STRING, the task's last
    /// finished run as JSON.
    pub fn fanout_last(&self, task: &TaskTypeId) -> String {
        format!("{}:fanout:{task}:last", self.prefix)
    }

    /// `{p}:trigger:{task}:{key}` (extension): STRING, the run id a trigger
    /// with this `Idempotency-Key` made; `key` is a UUIDv5 of the header's
    /// value, so any header text makes a safe key.
    pub fn trigger(&self, task: &TaskTypeId, idempotency_key: &str) -> String {
        let key = Uuid::new_v5(&Uuid::NAMESPACE_OID, idempotency_key.as_bytes());
        format!("{}:trigger:{task}:{key}", self.prefix)
    }

    /// `{p}:job:{id}:done` (extension): STRING set once a job succeeded.
    pub fn job_done(&self, job: Uuid) -> String {
        format!("{}:job:{job}:done", self.prefix)
    }

    /// `{p}:job:{id}:next` (extension): HASH `attempt`, `eligible` (epoch
    /// ms): the try the job's retry chain expects next; older copies are
    /// stale.
    pub fn job_next(&self, job: Uuid) -> String {
        format!("{}:job:{job}:next", self.prefix)
    }

    /// `{p}:job:{id}:result` (extension): HASH `record` (the job's latest
    /// [`crate::store::results::AttemptRecord`] as JSON) and `finished`
    /// (the execution whose finish was last recorded, so a finish sent
    /// twice is recorded once); kept for `monitoring.result_retention`.
    pub fn job_result(&self, job: Uuid) -> String {
        format!("{}:job:{job}:result", self.prefix)
    }

    /// `{p}:replica:{id}` (extension): STRING, the latest report of one
    /// running replica (JSON, [`crate::store::replicas::ReplicaReport`]),
    /// expiring unless renewed.
    pub fn replica(&self, id: &str) -> String {
        format!("{}:replica:{id}", self.prefix)
    }

    /// `{p}:replicas` (extension): ZSET of replica ids by the epoch ms of
    /// their last report.
    pub fn replicas(&self) -> String {
        format!("{}:replicas", self.prefix)
    }

    /// `{p}:schedule:period:{task}:{ms}` (extension): HASH of the finishes
    /// of the task's period that fired at `scheduled_at` (epoch ms):
    /// `succeeded`, `failed`, and `late:{bucket}` per lateness bucket of
    /// first attempts ([`crate::store::results::PeriodTally`]); written by
    /// `finish_execution.lua`, kept for the result retention.
    pub fn period_tally(&self, task: &TaskTypeId, scheduled_at: DateTime<Utc>) -> String {
        format!(
            "{}:schedule:period:{task}:{}",
            self.prefix,
            scheduled_at.timestamp_millis()
        )
    }

    /// `{p}:job:{id}:attempts` (extension): LIST of the job's finished
    /// attempts ([`crate::store::results::AttemptRecord`] JSON), oldest
    /// first, capped at [`crate::store::results::MAX_ATTEMPTS_KEPT`].
    pub fn job_attempts(&self, job: Uuid) -> String {
        format!("{}:job:{job}:attempts", self.prefix)
    }

    /// `{p}:users:{user}:runs:{task}` (extension): LIST of the ids of the
    /// user's recent jobs of the task, newest first, capped at
    /// [`crate::store::results::MAX_RUNS_KEPT`].
    pub fn user_runs(&self, user: &UserId, task: &TaskTypeId) -> String {
        format!("{}:users:{user}:runs:{task}", self.prefix)
    }

    /// `{p}:job:{id}:throttles` (extension): STRING count of the job's
    /// throttles (429/503 with `Retry-After`), against its budget.
    pub fn job_throttles(&self, job: Uuid) -> String {
        format!("{}:job:{job}:throttles", self.prefix)
    }

    /// `{p}:dead:{job id}` (extension): STRING, the JSON record of a job
    /// that failed for good.
    pub fn dead_letter(&self, job: Uuid) -> String {
        format!("{}:dead:{job}", self.prefix)
    }

    /// `{p}:dead:index` (all tasks) or `{p}:dead:index:{task}` (extension):
    /// ZSET of members `<dead-lettered at, epoch ms, 13 digits>:<job id>`,
    /// all scored 0, paged in lexical (= time) order.
    pub fn dead_letter_index(&self, task: Option<&TaskTypeId>) -> String {
        match task {
            Some(task) => format!("{}:dead:index:{task}", self.prefix),
            None => format!("{}:dead:index", self.prefix),
        }
    }

    /// `{p}:dead:{job id}:replay` (extension): STRING held while one
    /// replica replays the job (`SET NX PX`).
    pub fn dead_letter_replay(&self, job: Uuid) -> String {
        format!("{}:dead:{job}:replay", self.prefix)
    }

    /// `{p}:pause:{task}` (extension): STRING set while the task is
    /// paused by a `Retry-After`, expiring when the pause ends; every
    /// replica obeys it.
    pub fn task_pause(&self, task: &TaskTypeId) -> String {
        format!("{}:pause:{task}", self.prefix)
    }

    /// `{p}:tasks:paused` (extension): HASH task -> when an operator
    /// paused it (RFC 3339), for the tasks paused through
    /// `POST /tasks/{id}/pause` until their resume. Distinct from
    /// [`Keys::task_pause`], the endpoint's `Retry-After` pauses, which
    /// expire by themselves.
    pub fn operator_pauses(&self) -> String {
        format!("{}:tasks:paused", self.prefix)
    }

    /// `{p}:running:{task}:{user}` (extension): STRING job id of the run
    /// in progress (overlap guard).
    pub fn running(&self, task: &TaskTypeId, user: &UserId) -> String {
        format!("{}:running:{task}:{user}", self.prefix)
    }

    /// `{p}:running:{task}:job.{job id}` (extension): STRING execution id
    /// of the one execution of a job under way: the run claim of the
    /// pseudo user [`Keys::job_claimant`].
    pub fn job_claim(&self, task: &TaskTypeId, job: Uuid) -> String {
        format!("{}:running:{task}:{}", self.prefix, Keys::job_claimant(job))
    }

    /// `job.{job id}` (the id without hyphens): the pseudo user under which
    /// one execution of a job is claimed.
    pub fn job_claimant(job: Uuid) -> String {
        format!("job.{}", job.simple())
    }

    /// Epoch milliseconds, the encoding of instants in scores and fields.
    pub fn millis(at: DateTime<Utc>) -> i64 {
        at.timestamp_millis()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_key_patterns() {
        let keys = Keys::default();
        let task = TaskTypeId::parse("daily_report").unwrap();
        let user = UserId::parse("user_12345").unwrap();
        let date = NaiveDate::from_ymd_opt(2024, 1, 15).unwrap();
        let cases = [
            (keys.schedule(&task), "taskqueue:schedule:daily_report"),
            (
                keys.lock(&LockName::Schedule(task.clone())),
                "taskqueue:schedule:lock:daily_report",
            ),
            (keys.user_tasks(&user), "taskqueue:users:user_12345:tasks"),
            (
                keys.user_settings(&user, &task),
                "taskqueue:users:user_12345:settings:daily_report",
            ),
            (
                keys.bucket(&BucketName::Global),
                "taskqueue:ratelimit:global",
            ),
            (
                keys.bucket(&BucketName::Task(task.clone())),
                "taskqueue:ratelimit:task:daily_report",
            ),
            (
                keys.metrics_executions(date),
                "taskqueue:metrics:executions:2024-01-15",
            ),
            (
                keys.metrics_failures(date),
                "taskqueue:metrics:failures:2024-01-15",
            ),
            (
                keys.metrics_duration(&task),
                "taskqueue:metrics:duration:daily_report",
            ),
            (
                keys.distribution(&task, 1_705_312_800_000, 93),
                "taskqueue:distribution:daily_report:1705312800000:93",
            ),
            (
                keys.legacy_user_modified(&user),
                "taskqueue:users:user_12345:last_modified",
            ),
            (keys.user_modified(&user), "taskqueue:users:modified:2196"),
            (keys.user_timezone(&user), "taskqueue:users:timezone:2196"),
            (
                keys.zone_index(&task, "Asia/Kathmandu"),
                "taskqueue:index:zone:daily_report:Asia/Kathmandu",
            ),
            (keys.zone_set(&task), "taskqueue:index:zones:daily_report"),
            (keys.operator_pauses(), "taskqueue:tasks:paused"),
            (
                keys.user_runs(&user, &task),
                "taskqueue:users:user_12345:runs:daily_report",
            ),
            (
                keys.job_result(Uuid::nil()),
                "taskqueue:job:00000000-0000-0000-0000-000000000000:result",
            ),
            (
                keys.job_attempts(Uuid::nil()),
                "taskqueue:job:00000000-0000-0000-0000-000000000000:attempts",
            ),
            (
                keys.zone_schedule(&task),
                "taskqueue:schedule:zones:daily_report",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }
}
