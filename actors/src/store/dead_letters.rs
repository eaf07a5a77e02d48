//! The dead-letter port: a listable, replica-safe record of every job that
//! failed for good, written by the executor when it dead-letters a job
//! (before the broker's copy goes to the failed queue).
//!
//! The failed queue stays the broker-side copy (for alerts and forensics);
//! the API lists, replays and deletes through this index, never by reading
//! the queue (a `basic_get` + requeue walk is neither stable nor safe with
//! several replicas). A replay first *claims* the record (a key set with
//! `NX` and a TTL, so two replicas never replay the same job), publishes
//! the job, then removes the record; a replica that dies in between leaves
//! the claim to expire and the record in place (at-least-once: the job id
//! and its success marker keep a second replay harmless).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::Script;
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    sync::{LazyLock, Mutex},
    time::Duration,
};
use uuid::Uuid;

use super::{StoreError, redis::RedisStore};
use crate::domain::{DeadLetterReason, ErrorDetail, JobEnvelope, TaskTypeId};

/// Largest page [`DeadLetterStore::dead_letters`] is asked for by the API.
pub const MAX_PAGE: usize = 500;

/// One job that failed for good, as kept in the index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterRecord {
    /// The message as it was dead-lettered.
    pub envelope: JobEnvelope,
    /// Why it failed for good.
    pub reason: DeadLetterReason,
    /// The last attempt's error, when the job ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<ErrorDetail>,
    /// Attempts made (the last attempt's number).
    pub attempts: u32,
    /// When it was dead-lettered.
    pub dead_lettered_at: DateTime<Utc>,
}

impl DeadLetterRecord {
    /// The record's position in the index: dead-lettering instant, then
    /// job id (a stable, exact paging order).
    pub fn member(&self) -> String {
        format!(
            "{:013}:{}",
            self.dead_lettered_at.timestamp_millis().max(0),
            self.envelope.job.id
        )
    }
}

/// A page of dead letters, oldest first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeadLetterPage {
    /// The records.
    pub records: Vec<DeadLetterRecord>,
    /// Pass as `cursor` for the next page; `None` on the last one.
    pub next_cursor: Option<String>,
}

/// Where dead letters are kept.
#[async_trait]
pub trait DeadLetterStore: Send + Sync + 'static {
    /// Records (or replaces) the dead letter of `record`'s job.
    async fn record_dead_letter(&self, record: &DeadLetterRecord) -> Result<(), StoreError>;
    /// Up to `limit` records after `cursor` (a previous page's
    /// `next_cursor`), of one task or of all.
    async fn dead_letters(
        &self,
        task: Option<&TaskTypeId>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<DeadLetterPage, StoreError>;
    /// The record of one job, if any.
    async fn dead_letter(&self, job: Uuid) -> Result<Option<DeadLetterRecord>, StoreError>;
    /// Claims a job's record for a replay for `ttl`; false when another
    /// replay holds it.
    async fn claim_replay(&self, job: Uuid, ttl: Duration) -> Result<bool, StoreError>;
    /// Forgets the job's throttle count, so a replay starts with its whole
    /// throttle budget (the retry chain's next try is reset through
    /// [`ClaimStore::finish_execution`](super::ClaimStore::finish_execution)).
    async fn reset_job(&self, job: Uuid) -> Result<(), StoreError>;
    /// Removes a job's record (and its replay claim); false when there was
    /// none.
    async fn delete_dead_letter(&self, record: &DeadLetterRecord) -> Result<bool, StoreError>;
}

static RECORD: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/dead_letter_record.lua")));
static DELETE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/dead_letter_delete.lua")));

fn encode(key: &str, record: &DeadLetterRecord) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|err| StoreError::Corrupt {
        key: key.to_owned(),
        reason: err.to_string(),
    })
}

fn decode(key: &str, json: &str) -> Result<DeadLetterRecord, StoreError> {
    serde_json::from_str(json).map_err(|err| StoreError::Corrupt {
        key: key.to_owned(),
        reason: err.to_string(),
    })
}

/// The job id at the end of an index member.
fn member_job(member: &str) -> Option<Uuid> {
    member.split_once(':').and_then(|(_, id)| id.parse().ok())
}

#[async_trait]
impl DeadLetterStore for RedisStore {
    async fn record_dead_letter(&self, record: &DeadLetterRecord) -> Result<(), StoreError> {
        let keys = self.keys();
        let job = record.envelope.job.id;
        let mut connection = self.connection();
        let key = keys.dead_letter(job);
        let json = encode(&key, record)?;
        // The previous record's member, if the job was dead-lettered before.
        let previous = self
            .dead_letter(job)
            .await
            .ok()
            .flatten()
            .map(|old| old.member())
            .unwrap_or_default();
        let _: i64 = RECORD
            .key(&key)
            .key(keys.dead_letter_index(None))
            .key(keys.dead_letter_index(Some(&record.envelope.job.task_type_id)))
            .arg(json)
            .arg(record.member())
            .arg(previous)
            .invoke_async(&mut connection)
            .await?;
        Ok(())
    }

    async fn dead_letters(
        &self,
        task: Option<&TaskTypeId>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<DeadLetterPage, StoreError> {
        let keys = self.keys();
        let mut connection = self.connection();
        let start = cursor.map_or_else(|| "-".to_owned(), |cursor| format!("({cursor}"));
        let fetch = limit.max(1);
        let members: Vec<String> = redis::cmd("ZRANGEBYLEX")
            .arg(keys.dead_letter_index(task))
            .arg(start)
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(fetch + 1)
            .query_async(&mut connection)
            .await?;
        let more = members.len() > fetch;
        let page: Vec<&String> = members.iter().take(fetch).collect();
        let jobs: Vec<Uuid> = page.iter().filter_map(|m| member_job(m)).collect();
        let mut records = Vec::with_capacity(jobs.len());
        if !jobs.is_empty() {
            let record_keys: Vec<String> = jobs.iter().map(|job| keys.dead_letter(*job)).collect();
            let values: Vec<Option<String>> = redis::cmd("MGET")
                .arg(&record_keys)
                .query_async(&mut connection)
                .await?;
            for ((job, key), value) in jobs.iter().zip(&record_keys).zip(values) {
                match value.as_deref().map(|json| decode(key, json)) {
                    Some(Ok(record)) => records.push(record),
                    Some(Err(err)) => {
                        tracing::warn!(job_id = %job, error = %err, "unreadable dead letter skipped");
                    }
                    None => {}
                }
            }
        }
        Ok(DeadLetterPage {
            records,
            next_cursor: if more {
                page.last().map(|m| (*m).clone())
            } else {
                None
            },
        })
    }

    async fn dead_letter(&self, job: Uuid) -> Result<Option<DeadLetterRecord>, StoreError> {
        let mut connection = self.connection();
        let key = self.keys().dead_letter(job);
        let value: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut connection)
            .await?;
        value.as_deref().map(|json| decode(&key, json)).transpose()
    }

    async fn claim_replay(&self, job: Uuid, ttl: Duration) -> Result<bool, StoreError> {
        let mut connection = self.connection();
        let set: Option<String> = redis::cmd("SET")
            .arg(self.keys().dead_letter_replay(job))
            .arg(Uuid::new_v4().to_string())
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .query_async(&mut connection)
            .await?;
        Ok(set.is_some())
    }

    async fn reset_job(&self, job: Uuid) -> Result<(), StoreError> {
        let keys = self.keys();
        let mut connection = self.connection();
        let _: i64 = redis::cmd("DEL")
            .arg(keys.job_throttles(job))
            .query_async(&mut connection)
            .await?;
        Ok(())
    }

    async fn delete_dead_letter(&self, record: &DeadLetterRecord) -> Result<bool, StoreError> {
        let keys = self.keys();
        let job = record.envelope.job.id;
        let mut connection = self.connection();
        let removed: i64 = DELETE
            .key(keys.dead_letter(job))
            .key(keys.dead_letter_index(None))
            .key(keys.dead_letter_index(Some(&record.envelope.job.task_type_id)))
            .key(keys.dead_letter_replay(job))
            .arg(record.member())
            .invoke_async(&mut connection)
            .await?;
        Ok(removed == 1)
    }
}

/// The in-process twin (embedded mode and actor tests).
#[derive(Debug, Default)]
pub struct MemoryDeadLetters {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    /// Member -> record, in index order.
    index: BTreeMap<String, DeadLetterRecord>,
    /// Job -> member.
    members: BTreeMap<Uuid, String>,
    /// Jobs whose replay is claimed.
    claims: BTreeMap<Uuid, std::time::Instant>,
}

impl MemoryDeadLetters {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl DeadLetterStore for MemoryDeadLetters {
    async fn record_dead_letter(&self, record: &DeadLetterRecord) -> Result<(), StoreError> {
        let mut state = self.lock();
        let job = record.envelope.job.id;
        if let Some(old) = state.members.remove(&job) {
            state.index.remove(&old);
        }
        state.members.insert(job, record.member());
        state.index.insert(record.member(), record.clone());
        Ok(())
    }

    async fn dead_letters(
        &self,
        task: Option<&TaskTypeId>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<DeadLetterPage, StoreError> {
        let state = self.lock();
        let fetch = limit.max(1);
        let mut matching = state
            .index
            .iter()
            .filter(|(member, _)| cursor.is_none_or(|cursor| member.as_str() > cursor))
            .filter(|(_, record)| {
                task.is_none_or(|task| &record.envelope.job.task_type_id == task)
            });
        let page: Vec<(&String, &DeadLetterRecord)> = matching.by_ref().take(fetch).collect();
        let more = matching.next().is_some();
        Ok(DeadLetterPage {
            next_cursor: if more {
                page.last().map(|(m, _)| (*m).clone())
            } else {
                None
            },
            records: page.into_iter().map(|(_, r)| r.clone()).collect(),
        })
    }

    async fn dead_letter(&self, job: Uuid) -> Result<Option<DeadLetterRecord>, StoreError> {
        let state = self.lock();
        Ok(state
            .members
            .get(&job)
            .and_then(|member| state.index.get(member))
            .cloned())
    }

    async fn claim_replay(&self, job: Uuid, ttl: Duration) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let now = std::time::Instant::now();
        if state.claims.get(&job).is_some_and(|until| *until > now) {
            return Ok(false);
        }
        state.claims.insert(job, now + ttl);
        Ok(true)
    }

    async fn reset_job(&self, _job: Uuid) -> Result<(), StoreError> {
        Ok(())
    }

    async fn delete_dead_letter(&self, record: &DeadLetterRecord) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let job = record.envelope.job.id;
        state.claims.remove(&job);
        match state.members.remove(&job) {
            Some(member) => {
                state.index.remove(&member);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}
