//! `GET /tasks/{task_type_id}/durations?since=`: the execution durations
//! of a task completed since an instant (RFC 3339; one hour ago when
//! absent), read from the `metrics:duration:{task}` samples as they are
//! laid out (see [`actors::store::durations`]), with their nearest-rank
//! p50, p90 and p99.
//!
//! Samples reach the store with the metrics flush
//! (`monitoring.metrics_interval`), so the latest executions show up one
//! flush later; they are kept for `monitoring.metrics_retention`, at most
//! `monitoring.metrics_max_samples` per task.

use actix_web::{HttpResponse, web};
use actors::{
    domain::TaskTypeId,
    store::durations::{MAX_READ, summarize},
};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, state::ApiState};

/// How far back a request without `since` looks.
pub const DEFAULT_LOOKBACK: Duration = Duration::hours(1);

/// Registers the route.
pub fn configure(config: &mut web::ServiceConfig) {
    config.route("/tasks/{task_type_id}/durations", web::get().to(durations));
}

/// Query of `GET /tasks/{task_type_id}/durations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DurationsQuery {
    /// RFC 3339 instant: only executions completed at or after it.
    pub since: Option<String>,
}

/// Parses `since` (RFC 3339, with an offset).
fn parse_since(since: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(since.trim())
        .map(|at| at.with_timezone(&Utc))
        .map_err(|err| {
            ApiError::BadRequest(format!(
                "since {since:?} is not an RFC 3339 instant such as 2024-01-15T10:00:00Z ({err})"
            ))
        })
}

async fn durations(
    path: web::Path<String>,
    query: web::Query<DurationsQuery>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let task = TaskTypeId::parse(id.clone())
        .map_err(|err| ApiError::BadRequest(format!("task_type_id {id:?} {err}")))?;
    if !state.catalog.snapshot().contains_key(&task) {
        return Err(ApiError::NotFound(format!("no task type {task}")));
    }
    let since = match query.into_inner().since.as_deref() {
        Some(since) => parse_since(since)?,
        None => state.clock.now() - DEFAULT_LOOKBACK,
    };
    let read = state
        .durations
        .durations_since(&task, since, MAX_READ)
        .await
        .map_err(|err| ApiError::Unavailable(err.to_string()))?;
    let summary = summarize(&read.points);
    let samples: Vec<_> = read
        .points
        .iter()
        .map(|point| {
            json!({
                "completed_at": point.completed_at.to_rfc3339_opts(SecondsFormat::Millis, true),
                "duration_ms": point.duration_ms,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "task_type_id": task,
        "since": since.to_rfc3339_opts(SecondsFormat::Millis, true),
        "count": read.points.len(),
        "p50_ms": summary.map(|s| s.p50_ms),
        "p90_ms": summary.map(|s| s.p90_ms),
        "p99_ms": summary.map(|s| s.p99_ms),
        "max_ms": summary.map(|s| s.max_ms),
        "unreadable": read.unreadable,
        "durations": samples,
    })))
}
