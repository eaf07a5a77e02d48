//! The overview page (`GET /ui/`): throughput over the last 15 minutes,
//! queue depths, jobs in flight and rate-limit use of this replica and of
//! every live replica (their reports, [`crate::beacon`]), and every
//! degraded component in red; and the chart's data
//! (`GET /ui/api/throughput`).

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use actors::metrics::GetStats;
use serde_json::json;

use super::{UiError, render, session::base_context, throughput::Throughput};
use crate::routes::state::ApiState;

/// How long a dependency probe may take before it counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The overview page.
pub async fn page(
    request: HttpRequest,
    state: web::Data<ApiState>,
    throughput: web::Data<Throughput>,
) -> Result<HttpResponse, UiError> {
    let mut context = base_context(&request, "Overview", "overview");
    let reload_problems = state.reload_health.problems();
    let reload_ok = reload_problems.is_empty();
    let mut problems: Vec<String> = reload_problems.iter().map(ToString::to_string).collect();

    let probes = state.dependencies.iter().map(|dependency| async move {
        let outcome = match tokio::time::timeout(PROBE_TIMEOUT, dependency.check()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
        };
        (dependency.name(), outcome)
    });
    let mut components = Vec::new();
    for (name, outcome) in futures::future::join_all(probes).await {
        match outcome {
            Ok(()) => components.push(json!({"name": name, "up": true, "detail": "up"})),
            Err(error) => {
                problems.push(format!("{name} unreachable: {error}"));
                components.push(json!({"name": name, "up": false, "detail": error}));
            }
        }
    }
    components.push(json!({
        "name": "config reload",
        "up": reload_ok,
        "detail": if reload_ok { "ok".to_owned() } else { "last reload failed".to_owned() },
    }));
    for (name, report) in state.board.report() {
        if report.status != "running" {
            problems.push(format!(
                "{name} is {} (last heartbeat {} ms ago)",
                report.status, report.last_heartbeat_ms
            ));
        }
    }
    let quarantined = state.quarantine.count();
    if quarantined > 0 {
        problems.push(format!("{quarantined} unreadable records quarantined"));
    }

    let queues = match state.broker.queue_depths().await {
        Ok(depths) => depths
            .into_iter()
            .map(|(queue, depth)| json!({"queue": queue, "depth": depth}))
            .collect(),
        Err(err) => {
            problems.push(format!("queue depths not read: {err}"));
            Vec::new()
        }
    };
    let now = chrono::Utc::now();
    let replicas: Vec<serde_json::Value> = match state.replicas.replicas().await {
        Ok(reports) => reports
            .into_iter()
            .map(|report| {
                let age = (now - report.reported_at).num_seconds().max(0);
                json!({"report": report, "age_s": age})
            })
            .collect(),
        Err(err) => {
            problems.push(format!("replica reports not read: {err}"));
            Vec::new()
        }
    };
    let stats = state.metrics.send(GetStats).await.ok();
    context["problems"] = json!(problems);
    context["components"] = json!(components);
    context["queues"] = json!(queues);
    context["replicas"] = json!(replicas);
    context["stats"] = json!(stats);
    context["worker"] = match &state.worker {
        Some(worker) => json!({
            "workers": worker.workers,
            "active_jobs": worker.active_jobs(),
            "rate_max": worker.global_rate,
            "rate_current": stats.map(|stats| stats.current_rate.round() as u64),
        }),
        None => json!(null),
    };
    context["points"] = json!(throughput.points());
    render::page("overview.html", &context)
}

/// `GET /ui/api/throughput`: `{"points": [{"at", "executed_per_s",
/// "failed_per_s"}]}`, oldest first.
pub async fn throughput(throughput: web::Data<Throughput>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(json!({ "points": throughput.points() }))
}
