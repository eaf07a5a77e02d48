//! `GET /health`: one body for every role.
//!
//! The scheduler's fields (`status`, `version`, `uptime`) are always
//! present; a process that runs executors (`--role worker` or `all`) adds
//! the worker's (`workers`, `active_jobs`, `rate_limit {current, max}`).
//! `--role all` therefore answers with the union of the spec's two bodies,
//! plus what the process checked:
//!
//! ```json
//! {"status": "healthy", "version": "0.1.0", "uptime": 3600,
//!  "workers": 10, "active_jobs": 3, "rate_limit": {"current": 45, "max": 100},
//!  "dependencies": {"redis": {"status": "up"}, "rabbitmq": {"status": "up"}},
//!  "actors": {"scheduler": {"status": "running", "restarts": 0, "last_heartbeat_ms": 210}},
//!  "quarantined": {"count": 0, "records": []}}
//! ```
//!
//! Every request pings each backend (Redis `PING`, the RabbitMQ
//! connection). `status` is:
//! - `unhealthy`, with status code 503, when a backend is down: the
//!   process cannot do its work;
//! - `degraded` (200) while the last reload of the tasks file failed (the
//!   previous definitions keep running), an actor's heartbeat is late,
//!   records were quarantined, or shutdown has started;
//! - `healthy` (200) otherwise.
//!
//! `errors` lists the reasons whenever the status is not `healthy`.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use actix_web::{HttpResponse, web};
use actors::metrics::GetStats;
use serde_json::{Map, Value, json};

use super::state::ApiState;

/// When the process started, for `uptime`.
#[derive(Debug, Clone, Copy)]
pub struct StartedAt(pub Instant);

/// Longest wait for one backend's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Liveness and a summary of the service's state.
#[utoipa::path(
    get,
    path = "/health",
    tag = "service",
    description = "Liveness and a summary of the process: `status` (`healthy`, `degraded`, `unhealthy`), \
`version`, `uptime` (s), each backend probed on this request (`dependencies`), each long-lived actor's \
heartbeat and restarts (`actors`), records skipped as unreadable (`quarantined`) and, when not \
`healthy`, `errors`. A process that runs executors adds `workers`, `active_jobs` and \
`rate_limit {current, max}`. Never needs the token.",
    responses(
        (status = 200, description = "`healthy`, or `degraded` (a reload failed, an actor is late, records were quarantined, or shutdown has started).", body = Object,
            example = json!({"status": "healthy", "version": "0.1.0", "uptime": 3600, "workers": 10, "active_jobs": 3,
                "rate_limit": {"current": 45, "max": 100},
                "dependencies": {"redis": {"status": "up"}, "rabbitmq": {"status": "up"}},
                "actors": {"scheduler": {"status": "running", "restarts": 0, "last_heartbeat_ms": 210}},
                "quarantined": {"count": 0, "records": []}})),
        (status = 503, description = "`unhealthy`: a backend is down.", body = Object),
    )
)]
pub async fn health(state: web::Data<ApiState>) -> HttpResponse {
    let mut errors: Vec<String> = state
        .reload_health
        .problems()
        .iter()
        .map(ToString::to_string)
        .collect();
    let mut unhealthy = false;

    let probes = state.dependencies.iter().map(|dependency| async move {
        let outcome = match tokio::time::timeout(PROBE_TIMEOUT, dependency.check()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
        };
        (dependency.name(), outcome)
    });
    let mut dependencies = Map::new();
    for (name, outcome) in futures::future::join_all(probes).await {
        let entry = match outcome {
            Ok(()) => json!({"status": "up"}),
            Err(error) => {
                unhealthy = true;
                errors.push(format!("{name} unreachable: {error}"));
                json!({"status": "down", "error": error})
            }
        };
        dependencies.insert(name.to_owned(), entry);
    }

    let actors = state.board.report();
    for (name, report) in &actors {
        if report.status != "running" {
            errors.push(format!(
                "{name} is {} (last heartbeat {} ms ago)",
                report.status, report.last_heartbeat_ms
            ));
        }
    }
    let quarantined = state.quarantine.count();
    if quarantined > 0 {
        errors.push(format!("{quarantined} unreadable records quarantined"));
    }
    if state.stopping.load(Ordering::SeqCst) {
        errors.push("shutting down".to_owned());
    }

    let status = if unhealthy {
        "unhealthy"
    } else if errors.is_empty() {
        "healthy"
    } else {
        "degraded"
    };
    let mut body = json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime": state.started.elapsed().as_secs(),
        "dependencies": dependencies,
        "actors": actors,
        "quarantined": {"count": quarantined, "records": state.quarantine.records()},
    });
    if !errors.is_empty() {
        body["errors"] = json!(errors);
    }
    if let Some(worker) = &state.worker {
        let current = match state.metrics.send(GetStats).await {
            Ok(stats) => stats.current_rate.round() as u64,
            Err(_) => 0,
        };
        body["workers"] = json!(worker.workers);
        body["active_jobs"] = json!(worker.active_jobs());
        body["rate_limit"] = json!({
            "current": current,
            "max": worker.global_rate.map_or(Value::Null, |max| json!(max)),
        });
    }
    if unhealthy {
        HttpResponse::ServiceUnavailable().json(body)
    } else {
        HttpResponse::Ok().json(body)
    }
}
