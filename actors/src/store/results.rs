//! Job results: the spec's `ExecutionResult` of each job, kept for
//! `monitoring.result_retention`, with the job's attempts so far and each
//! user's recent runs of a task.
//!
//! Nothing here costs the executor a round trip: the records are written
//! by the scripts it already runs, `claim_execution.lua` (the attempt is
//! `running`) and `finish_execution.lua` (`success`, `failed` or
//! `retrying` with `next_attempt`), from the [`ResultWrite`] a claim or a
//! finish carries. This module reads them back ([`JobResultStore`]) for
//! `GET /jobs/{job_id}` and `GET /users/{user_id}/tasks/{task_id}/runs`.
//!
//! Layout (see [`super::Keys`]): `{p}:job:{id}:result` (HASH: `record`,
//! the latest [`AttemptRecord`] as JSON; `finished`, the execution whose
//! finish was last recorded), `{p}:job:{id}:attempts` (LIST of finished
//! attempts, oldest first, at most [`MAX_ATTEMPTS_KEPT`]) and
//! `{p}:users:{user}:runs:{task}` (LIST of job ids, newest first, at most
//! [`MAX_RUNS_KEPT`]), each expiring [`ResultWrite::retention`] after its
//! last write.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{StoreError, memory::MemoryStore, redis::RedisStore};
use crate::domain::{ExecutionResult, TaskTypeId, UserId};

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

/// A result to record with a claim (the `running` attempt) or a finish
/// (its outcome), in the same script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultWrite {
    /// The record.
    pub record: AttemptRecord,
    /// How long the job's records are kept after this write.
    pub retention: Duration,
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

/// Where job results are read from.
#[async_trait]
pub trait JobResultStore: Send + Sync + 'static {
    /// The records of `job`, `None` when none is kept (never claimed, or
    /// past its retention). One round trip.
    async fn job_results(&self, job: Uuid) -> Result<Option<JobResults>, StoreError>;
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
    async fn job_results(&self, job: Uuid) -> Result<Option<JobResults>, StoreError> {
        let keys = self.keys();
        let result_key = keys.job_result(job);
        let mut connection = self.connection();
        let (latest, attempts): (Option<String>, Vec<String>) = redis::pipe()
            .hget(&result_key, "record")
            .lrange(keys.job_attempts(job), 0, -1)
            .query_async(&mut connection)
            .await?;
        let Some(latest) = latest else {
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
