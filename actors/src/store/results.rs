//! Job results: the spec's `ExecutionResult` of each job, kept for
//! `monitoring.result_retention`, with the job's attempts so far and each
//! user's recent runs of a task.
//!
//! Nothing here costs the executor a round trip: the records are written
//! by the scripts it already runs, `claim_execution.lua` (the attempt is
//! `running`) and `finish_execution.lua` (`success`, `failed` or
//! `retrying` with `next_attempt`), from the [`ResultWrite`] a claim or a
//! finish carries. Before that, a job the distributor got confirmed in the
//! broker is recorded `pending` ([`JobResultStore::record_pending`], one
//! pipelined round trip per published batch; a record already kept wins
//! over it). This module reads them back ([`JobResultStore`]) for
//! `GET /jobs/{job_id}` and `GET /users/{user_id}/tasks/{task_id}/runs`.
//!
//! Layout (see [`super::Keys`]): `{p}:job:{id}:result` (HASH: `record`,
//! the latest [`AttemptRecord`] as JSON; `finished`, the execution whose
//! finish was last recorded; `pending`, the queued job's record until its
//! first claim, never read while `record` is there), `{p}:job:{id}:attempts` (LIST of finished
//! attempts, oldest first, at most [`MAX_ATTEMPTS_KEPT`]) and
//! `{p}:users:{user}:runs:{task}` (LIST of job ids, newest first, at most
//! [`MAX_RUNS_KEPT`]), each expiring [`ResultWrite::retention`] after its
//! last write.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    StoreError,
    memory::MemoryStore,
    redis::{RedisStore, millis},
};
use crate::domain::{ExecutionResult, JobEnvelope, Status, TaskTypeId, UserId};

/// Default `monitoring.result_retention`: 7 days.
pub const DEFAULT_RESULT_RETENTION: Duration = Duration::from_secs(7 * 86_400);

/// Finished attempts kept per job (the oldest are dropped).
pub const MAX_ATTEMPTS_KEPT: usize = 20;

/// Job ids kept per (user, task) runs list (the oldest are dropped).
pub const MAX_RUNS_KEPT: usize = 100;

/// One attempt of a job, as kept: who and what it ran for, which try it
/// was, and its `ExecutionResult` (the response body is not kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The job's task.
    pub task_type_id: TaskTypeId,
    /// The job's user.
    pub user_id: UserId,
    /// The attempt (1 for the first try).
    pub attempt: u32,
    /// Where the job stood after (or, `running`, during) this attempt.
    pub result: ExecutionResult,
}

impl AttemptRecord {
    /// A queued job, not started: `pending`, with the instant its first
    /// attempt is due (`execute_after`) as `next_attempt`. It has not
    /// started nor completed, so those two instants are the zero time of
    /// the spec's Go model (`0001-01-01T00:00:00Z`), its duration zero.
    pub fn pending(envelope: &JobEnvelope) -> Self {
        let job = &envelope.job;
        AttemptRecord {
            task_type_id: job.task_type_id.clone(),
            user_id: job.user_id.clone(),
            attempt: job.attempt,
            result: ExecutionResult {
                job_id: job.id,
                status: Status::Pending,
                started_at: zero_time(),
                completed_at: zero_time(),
                duration: Duration::ZERO,
                error: None,
                response: None,
                next_attempt: Some(job.execute_after),
            },
        }
    }
}

/// Go's zero `time.Time`: what the spec's model holds in an instant that
/// has not happened.
pub fn zero_time() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(1, 1, 1)
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .expect("0001-01-01 is a date")
        .and_utc()
}

/// A result to record with a claim (the `running` attempt) or a finish
/// (its outcome), in the same script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultWrite {
    /// The record.
    pub record: AttemptRecord,
    /// How long the job's records are kept after this write.
    pub retention: Duration,
    /// The job's period, when its finish counts in the period's tally
    /// ([`PeriodTally`]); `None` counts nothing.
    pub period: Option<PeriodOf>,
}

/// Where a job stands in its task's schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodOf {
    /// The period (the run's `scheduled_at`).
    pub scheduled_at: DateTime<Utc>,
    /// When the job was due (its first attempt's `execute_after`).
    pub execute_after: DateTime<Utc>,
}

/// Upper bounds (milliseconds) of the lateness buckets of a
/// [`PeriodTally`]; a last bucket holds the rest.
pub const LATENESS_BOUNDS_MS: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 3_600_000,
];

/// Buckets of [`PeriodTally::lateness`]: one per bound and one past them.
pub const LATENESS_BUCKETS: usize = LATENESS_BOUNDS_MS.len() + 1;

/// How a finish ended its job, for the period's tally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The job succeeded.
    Succeeded,
    /// The job failed for good.
    Failed,
}

impl Ended {
    /// Its field in the tally hash.
    pub fn field(self) -> &'static str {
        match self {
            Ended::Succeeded => "succeeded",
            Ended::Failed => "failed",
        }
    }
}

/// The lateness bucket of `late_ms` (an index into
/// [`LATENESS_BOUNDS_MS`], or its length for the last bucket).
pub fn lateness_bucket(late_ms: i64) -> usize {
    let late = u64::try_from(late_ms).unwrap_or(0);
    LATENESS_BOUNDS_MS
        .iter()
        .position(|bound| late <= *bound)
        .unwrap_or(LATENESS_BOUNDS_MS.len())
}

/// What the finishes of one period of a task came to, across every
/// replica (`{p}:schedule:period:{task}:{ms}`, kept for the result
/// retention): each execution is counted once, by the script that records
/// its result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeriodTally {
    /// Jobs that succeeded.
    pub succeeded: u64,
    /// Jobs that failed for good (dead-lettered after their attempts).
    pub failed: u64,
    /// Fires the misfire policy skipped just before this period (the
    /// scheduler that ran it counts them).
    pub missed: u64,
    /// First attempts by lateness (start minus `execute_after`), one count
    /// per bucket of [`LATENESS_BOUNDS_MS`] and a last one for the rest. A
    /// first attempt that was throttled and ran again counts each time.
    pub lateness: [u64; LATENESS_BUCKETS],
}

impl PeriodTally {
    /// What a finish recorded by `write` adds to the tally: how it ended
    /// the job, if it did, and the lateness bucket of a first attempt.
    pub fn fields(write: &ResultWrite) -> (Option<Ended>, Option<usize>) {
        let result = &write.record.result;
        let outcome = match result.status {
            Status::Success => Some(Ended::Succeeded),
            Status::Failed => Some(Ended::Failed),
            _ => None,
        };
        let late = write
            .period
            .filter(|_| write.record.attempt == 1 && result.status != Status::Running)
            .map(|period| {
                lateness_bucket((result.started_at - period.execute_after).num_milliseconds())
            });
        (outcome, late)
    }

    /// Counts one finish: how it ended the job, and a first attempt's
    /// lateness bucket.
    pub fn count(&mut self, ended: Option<Ended>, late: Option<usize>) {
        match ended {
            Some(Ended::Succeeded) => self.succeeded += 1,
            Some(Ended::Failed) => self.failed += 1,
            None => {}
        }
        if let Some(bucket) = late {
            self.lateness[bucket] += 1;
        }
    }

    /// The upper bound (ms) under which a share `q` (0 to 1) of the first
    /// attempts started: the bound of the bucket that reaches it; `None`
    /// without samples, `Some(None)` when it is past the last bound.
    pub fn lateness_quantile(&self, q: f64) -> Option<Option<u64>> {
        let total: u64 = self.lateness.iter().sum();
        if total == 0 {
            return None;
        }
        let wanted = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (bucket, count) in self.lateness.iter().enumerate() {
            seen += count;
            if seen >= wanted {
                return Some(LATENESS_BOUNDS_MS.get(bucket).copied());
            }
        }
        Some(None)
    }
}

impl ResultWrite {
    /// The record as stored (JSON).
    pub fn json(&self) -> String {
        serde_json::to_string(&self.record).expect("an attempt record serialises")
    }
}

/// What is kept of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobResults {
    /// The latest record (the attempt under way, or the last finished).
    pub latest: AttemptRecord,
    /// The finished attempts, oldest first (at most [`MAX_ATTEMPTS_KEPT`]).
    pub attempts: Vec<AttemptRecord>,
    /// Stored attempts that could not be read (skipped).
    pub unreadable: usize,
}

/// Where job results are kept.
#[async_trait]
pub trait JobResultStore: Send + Sync + 'static {
    /// Records each of `jobs` as [`AttemptRecord::pending`], kept for
    /// `retention`, unless a record of it is kept already: a job published
    /// again after it started keeps its `running` or final record. One
    /// round trip.
    async fn record_pending(
        &self,
        jobs: &[JobEnvelope],
        retention: Duration,
    ) -> Result<(), StoreError>;
    /// The records of `job`, `None` when none is kept (never claimed, or
    /// past its retention). One round trip.
    async fn job_results(&self, job: Uuid) -> Result<Option<JobResults>, StoreError>;
    /// Adds `missed` skipped fires to the tally of the period of `task` at
    /// `scheduled_at`, the one that ran after them; kept for `ttl`. One
    /// round trip.
    async fn add_missed(
        &self,
        task: &TaskTypeId,
        scheduled_at: DateTime<Utc>,
        missed: u64,
        ttl: Duration,
    ) -> Result<(), StoreError>;
    /// The tally of the period of `task` that fired at `scheduled_at`
    /// (zero counts when nothing finished in it). One round trip.
    async fn period_tally(
        &self,
        task: &TaskTypeId,
        scheduled_at: DateTime<Utc>,
    ) -> Result<PeriodTally, StoreError>;
    /// The latest records of the user's most recent jobs of `task`, newest
    /// first, at most `limit`; jobs whose records expired are left out.
    /// Two round trips.
    async fn user_runs(
        &self,
        user: &UserId,
        task: &TaskTypeId,
        limit: usize,
    ) -> Result<Vec<AttemptRecord>, StoreError>;
}

fn parse(key: &str, json: &str) -> Result<AttemptRecord, StoreError> {
    serde_json::from_str(json).map_err(|err| StoreError::Corrupt {
        key: key.to_owned(),
        reason: err.to_string(),
    })
}

#[async_trait]
impl JobResultStore for RedisStore {
    async fn record_pending(
        &self,
        jobs: &[JobEnvelope],
        retention: Duration,
    ) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        // Plain commands, no script: a `pending` field written next to a
        // `record` (a republish after the job started, or a worker faster
        // than this write) is never read, since a reader takes `record`
        // first, and the next claim drops it; `NX` keeps the TTL a started
        // job already has.
        let keys = self.keys();
        let ttl = millis(retention).max(1);
        let mut pipe = redis::pipe();
        for envelope in jobs {
            let json = serde_json::to_string(&AttemptRecord::pending(envelope))
                .expect("an attempt record serialises");
            let key = keys.job_result(envelope.job.id);
            pipe.hset(&key, "pending", json)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(ttl)
                .arg("NX")
                .ignore();
        }
        let mut connection = self.connection();
        Ok(pipe.query_async::<()>(&mut connection).await?)
    }

    async fn add_missed(
        &self,
        task: &TaskTypeId,
        scheduled_at: DateTime<Utc>,
        missed: u64,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = self.keys().period_tally(task, scheduled_at);
        let ttl = millis(ttl).max(1);
        let mut connection = self.connection();
        redis::pipe()
            .hincr(&key, "missed", missed)
            .ignore()
            .pexpire(&key, ttl as i64)
            .ignore()
            .query_async::<()>(&mut connection)
            .await?;
        Ok(())
    }

    async fn period_tally(
        &self,
        task: &TaskTypeId,
        scheduled_at: DateTime<Utc>,
    ) -> Result<PeriodTally, StoreError> {
        let key = self.keys().period_tally(task, scheduled_at);
        let mut connection = self.connection();
        let fields: std::collections::HashMap<String, u64> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut connection)
            .await?;
        let mut tally = PeriodTally::default();
        for (field, count) in fields {
            match field.as_str() {
                "succeeded" => tally.succeeded = count,
                "failed" => tally.failed = count,
                "missed" => tally.missed = count,
                other => {
                    if let Some(bucket) = other
                        .strip_prefix("late:")
                        .and_then(|b| b.parse::<usize>().ok())
                        .filter(|b| *b < LATENESS_BUCKETS)
                    {
                        tally.lateness[bucket] = count;
                    }
                }
            }
        }
        Ok(tally)
    }

    async fn job_results(&self, job: Uuid) -> Result<Option<JobResults>, StoreError> {
        let keys = self.keys();
        let result_key = keys.job_result(job);
        let mut connection = self.connection();
        let ((record, pending), attempts): ((Option<String>, Option<String>), Vec<String>) =
            redis::pipe()
                .cmd("HMGET")
                .arg(&result_key)
                .arg("record")
                .arg("pending")
                .lrange(keys.job_attempts(job), 0, -1)
                .query_async(&mut connection)
                .await?;
        let Some(latest) = record.or(pending) else {
            return Ok(None);
        };
        let latest = parse(&result_key, &latest)?;
        let mut read = JobResults {
            latest,
            attempts: Vec::with_capacity(attempts.len()),
            unreadable: 0,
        };
        for attempt in attempts {
            match serde_json::from_str(&attempt) {
                Ok(record) => read.attempts.push(record),
                Err(_) => read.unreadable += 1,
            }
        }
        Ok(Some(read))
    }

    async fn user_runs(
        &self,
        user: &UserId,
        task: &TaskTypeId,
        limit: usize,
    ) -> Result<Vec<AttemptRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keys = self.keys();
        let mut connection = self.connection();
        let ids: Vec<String> = redis::cmd("LRANGE")
            .arg(keys.user_runs(user, task))
            .arg(0)
            .arg(limit.min(MAX_RUNS_KEPT) - 1)
            .query_async(&mut connection)
            .await?;
        let ids: Vec<Uuid> = ids.iter().filter_map(|id| id.parse().ok()).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hget(keys.job_result(*id), "record");
        }
        let records: Vec<Option<String>> = pipe.query_async(&mut connection).await?;
        Ok(records
            .into_iter()
            .flatten()
            .filter_map(|json| serde_json::from_str(&json).ok())
            .collect())
    }
}

#[async_trait]
impl JobResultStore for MemoryStore {
    async fn record_pending(
        &self,
        jobs: &[JobEnvelope],
        retention: Duration,
    ) -> Result<(), StoreError> {
        self.keep_pending(
            jobs.iter()
                .map(|envelope| (envelope.job.id, AttemptRecord::pending(envelope)))
                .collect(),
            retention,
        );
        Ok(())
    }

    async fn add_missed(
        &self,
        task: &TaskTypeId,
        scheduled_at: DateTime<Utc>,
        missed: u64,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.tally_missed(task, scheduled_at, missed, ttl);
        Ok(())
    }

    async fn period_tally(
        &self,
        task: &TaskTypeId,
        scheduled_at: DateTime<Utc>,
    ) -> Result<PeriodTally, StoreError> {
        Ok(self.kept_tally(task, scheduled_at))
    }

    async fn job_results(&self, job: Uuid) -> Result<Option<JobResults>, StoreError> {
        Ok(self.kept_results(job).map(|(latest, attempts)| JobResults {
            latest,
            attempts,
            unreadable: 0,
        }))
    }

    async fn user_runs(
        &self,
        user: &UserId,
        task: &TaskTypeId,
        limit: usize,
    ) -> Result<Vec<AttemptRecord>, StoreError> {
        Ok(self
            .kept_runs(user, task)
            .into_iter()
            .take(limit.min(MAX_RUNS_KEPT))
            .filter_map(|job| self.kept_results(job).map(|(latest, _)| latest))
            .collect())
    }
}
