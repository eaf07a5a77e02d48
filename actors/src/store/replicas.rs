//! Replica reports: each running `taskqueue serve` writes what it is doing
//! (role, executors busy, rate-limit use, attempts) every metrics interval
//! with a short expiry, so the dashboard's overview can list every live
//! replica, not only the one that serves the page.
//!
//! Layout (see [`super::Keys`]): `{p}:replica:{id}` (STRING, the report
//! as JSON, expiring unless renewed) and `{p}:replicas` (ZSET of ids by
//! the epoch ms of their last report; ids whose report expired are
//! dropped when read, and any not seen for a day on every write).

use std::{collections::HashMap, sync::Mutex, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    StoreError,
    memory::MemoryStore,
    redis::{RedisStore, millis},
};

/// Ids left in the replicas index this long after their last report are
/// dropped by the next write.
const FORGET_AFTER_MS: i64 = 24 * 3600 * 1000;

/// What one replica reports about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaReport {
    /// A random id of the process.
    pub id: String,
    /// Host and process id, for people.
    pub name: String,
    /// `all`, `scheduler` or `worker`.
    pub role: String,
    /// The address its API listens on.
    pub api: String,
    /// Executors in its pool (workers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// Jobs in flight (workers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_jobs: Option<usize>,
    /// Calls per second now (workers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_current: Option<u64>,
    /// The global limit, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_max: Option<u32>,
    /// Attempts since it started.
    pub processed: u64,
    /// Failed attempts since it started.
    pub failed: u64,
    /// When it wrote this report.
    pub reported_at: DateTime<Utc>,
}

/// Orders reports for people: by name, then id.
fn by_name(reports: &mut [ReplicaReport]) {
    reports.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
}

/// Where replicas report.
#[async_trait]
pub trait ReplicaStore: Send + Sync + 'static {
    /// Writes `report`, kept for `ttl` unless written again. One round trip.
    async fn report_replica(&self, report: &ReplicaReport, ttl: Duration)
    -> Result<(), StoreError>;
    /// The live reports, by name. Two round trips.
    async fn replicas(&self) -> Result<Vec<ReplicaReport>, StoreError>;
}

#[async_trait]
impl ReplicaStore for RedisStore {
    async fn report_replica(
        &self,
        report: &ReplicaReport,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let keys = self.keys();
        let json = serde_json::to_string(report).expect("a replica report serialises");
        let now = report.reported_at.timestamp_millis();
        let ttl_ms = millis(ttl).max(1);
        let mut connection = self.connection();
        redis::pipe()
            .cmd("SET")
            .arg(keys.replica(&report.id))
            .arg(json)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .zadd(keys.replicas(), &report.id, now)
            .ignore()
            .zrembyscore(keys.replicas(), "-inf", now - FORGET_AFTER_MS)
            .ignore()
            .query_async::<()>(&mut connection)
            .await?;
        Ok(())
    }

    async fn replicas(&self) -> Result<Vec<ReplicaReport>, StoreError> {
        let keys = self.keys();
        let mut connection = self.connection();
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(keys.replicas())
            .arg(0)
            .arg(-1)
            .query_async(&mut connection)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let reports: Vec<Option<String>> = redis::cmd("MGET")
            .arg(ids.iter().map(|id| keys.replica(id)).collect::<Vec<_>>())
            .query_async(&mut connection)
            .await?;
        let mut live: Vec<ReplicaReport> = reports
            .into_iter()
            .flatten()
            .filter_map(|json| serde_json::from_str(&json).ok())
            .collect();
        by_name(&mut live);
        Ok(live)
    }
}

/// The memory twin's reports: id → (report, expiry).
#[derive(Debug, Default)]
pub(crate) struct MemoryReplicas(Mutex<HashMap<String, (ReplicaReport, std::time::Instant)>>);

#[async_trait]
impl ReplicaStore for MemoryStore {
    async fn report_replica(
        &self,
        report: &ReplicaReport,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut replicas = self.replicas.0.lock().unwrap_or_else(|p| p.into_inner());
        replicas.insert(
            report.id.clone(),
            (report.clone(), std::time::Instant::now() + ttl),
        );
        Ok(())
    }

    async fn replicas(&self) -> Result<Vec<ReplicaReport>, StoreError> {
        let mut replicas = self.replicas.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        replicas.retain(|_, (_, expiry)| *expiry > now);
        let mut live: Vec<ReplicaReport> = replicas.values().map(|(r, _)| r.clone()).collect();
        by_name(&mut live);
        Ok(live)
    }
}
