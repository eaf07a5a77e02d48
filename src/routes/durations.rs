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
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, error::ErrorBody, state::ApiState};

/// How far back a request without `since` looks.
pub const DEFAULT_LOOKBACK: Duration = Duration::hours(1);

/// Query of `GET /tasks/{task_type_id}/durations`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DurationsQuery {
    /// RFC 3339 instant: only executions completed at or after it.
    pub since: Option<String>,
}

/// Answer of `GET /tasks/{task_type_id}/durations`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DurationsView {
    /// The task.
    #[schema(value_type = String, example = "daily_report")]
    pub task_type_id: TaskTypeId,
    /// The instant read from (RFC 3339, milliseconds).
    pub since: String,
    /// Samples read.
    pub count: usize,
    /// Nearest-rank median, `null` without samples.
    pub p50_ms: Option<u64>,
    /// Nearest-rank 90th percentile.
    pub p90_ms: Option<u64>,
    /// Nearest-rank 99th percentile.
    pub p99_ms: Option<u64>,
    /// Longest.
    pub max_ms: Option<u64>,
    /// Samples that could not be read.
    pub unreadable: usize,
    /// The samples, oldest first.
    pub durations: Vec<DurationSample>,
}

/// One execution's duration.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DurationSample {
    /// When it completed (RFC 3339, milliseconds).
    pub completed_at: String,
    /// How long it took.
    pub duration_ms: u64,
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

/// The task's execution durations since an instant.
#[utoipa::path(
    get,
    path = "/tasks/{task_type_id}/durations",
    tag = "operations",
    description = "The execution durations of the task completed since `since` (one hour ago when \
absent), with their nearest-rank p50, p90 and p99. Samples arrive with the metrics flush.",
    params(("task_type_id" = String, Path, description = "A task type of the catalog."), DurationsQuery),
    responses(
        (status = 200, description = "The samples and their summary.", body = DurationsView),
        (status = 400, description = "Bad task id, `since` not RFC 3339, or an unknown query parameter.", body = ErrorBody),
        (status = 401, description = "`api.protect_reads` is on and the token is missing or wrong.", body = ErrorBody),
        (status = 404, description = "No such task type.", body = ErrorBody),
        (status = 503, description = "Redis is unavailable.", body = ErrorBody),
    ),
    security((), ("bearer_token" = []))
)]
pub async fn durations(
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
        .map(|point| DurationSample {
            completed_at: point
                .completed_at
                .to_rfc3339_opts(SecondsFormat::Millis, true),
            duration_ms: point.duration_ms,
        })
        .collect();
    Ok(HttpResponse::Ok().json(DurationsView {
        task_type_id: task,
        since: since.to_rfc3339_opts(SecondsFormat::Millis, true),
        count: read.points.len(),
        p50_ms: summary.map(|s| s.p50_ms),
        p90_ms: summary.map(|s| s.p90_ms),
        p99_ms: summary.map(|s| s.p99_ms),
        max_ms: summary.map(|s| s.max_ms),
        unreadable: read.unreadable,
        durations: samples,
    }))
}
