//! `GET /health`: one body for every role.
//!
//! The scheduler's fields (`status`, `version`, `uptime`) are always
//! present; a process that runs executors (`--role worker` or `all`) adds
//! the worker's (`workers`, `active_jobs`, `rate_limit {current, max}`).
//! `--role all` therefore answers with the union of the spec's two bodies:
//!
//! ```json
//! {"status": "healthy", "version": "0.1.0", "uptime": 3600,
//!  "workers": 10, "active_jobs": 3, "rate_limit": {"current": 45, "max": 100}}
//! ```
//!
//! `status` is `degraded`, with an `errors` list, while the last reload of
//! the tasks file failed (the previous definitions keep running). The
//! status code is 200 either way: the process is alive and working.

use std::time::Instant;

use actix_web::{HttpResponse, get, web};
use actors::metrics::GetStats;
use serde_json::{Value, json};

use super::state::ApiState;

/// When the process started, for `uptime`.
#[derive(Debug, Clone, Copy)]
pub struct StartedAt(pub Instant);

/// Liveness and a summary of the service's state.
#[get("/health")]
pub async fn health(state: web::Data<ApiState>) -> HttpResponse {
    let errors = state.reload_health.errors();
    let mut body = json!({
        "status": if errors.is_empty() { "healthy" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime": state.started.elapsed().as_secs(),
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
    HttpResponse::Ok().json(body)
}
