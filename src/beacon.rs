//! The replica beacon: every `monitoring.metrics_interval` this process
//! writes a [`ReplicaReport`] of itself (role, executors busy, rate-limit
//! use, attempts so far) to the store, kept for three intervals, so the
//! dashboard's overview lists every live replica of the deployment.

use std::{net::SocketAddr, time::Duration};

use actix_web::web;
use actors::{metrics::GetStats, store::replicas::ReplicaReport};
use chrono::Utc;
use uuid::Uuid;

use crate::{Role, routes::state::ApiState};

/// `host:pid`, for people.
fn process_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}

/// What this process would report now.
async fn report(
    state: &ApiState,
    id: &str,
    name: &str,
    role: Role,
    api: SocketAddr,
) -> ReplicaReport {
    let stats = state.metrics.send(GetStats).await.ok();
    let worker = state.worker.as_ref();
    ReplicaReport {
        id: id.to_owned(),
        name: name.to_owned(),
        role: role.as_str().to_owned(),
        api: api.to_string(),
        workers: worker.map(|worker| worker.workers),
        active_jobs: worker.map(|worker| worker.active_jobs()),
        rate_current: worker
            .and(stats.as_ref())
            .map(|s| s.current_rate.round() as u64),
        rate_max: worker.and_then(|worker| worker.global_rate),
        processed: stats.as_ref().map_or(0, |s| s.processed),
        failed: stats.as_ref().map_or(0, |s| s.failed),
        reported_at: Utc::now(),
    }
}

/// Reports every `interval` until the process ends; a failed write is
/// logged at debug level (the store's health shows on `/health`).
pub async fn run(state: web::Data<ApiState>, role: Role, api: SocketAddr, interval: Duration) {
    let id = Uuid::new_v4().simple().to_string();
    let name = process_name();
    let interval = interval.max(Duration::from_millis(100));
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let report = report(&state, &id, &name, role, api).await;
        if let Err(error) = state.replicas.report_replica(&report, interval * 3).await {
            tracing::debug!(%error, "replica report not written");
        }
    }
}
