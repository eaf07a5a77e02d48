//! The worker's API: `GET /stats` (its `/health` part lives in
//! [`super::health`]).

use actix_web::{HttpResponse, web};
use actors::metrics::GetStats;

use super::{ApiError, state::ApiState};

/// Counters of this process's executions since it started: `processed`
/// (attempts that reached an outcome), `failed` (those that did not
/// succeed), `avg_duration_ms`, `current_rate` (attempts per second over
/// the last 10 s) and `uptime` (seconds).
#[utoipa::path(
    get,
    path = "/stats",
    tag = "service",
    description = "Counters of this process's executions since it started: `processed`, `failed`, \
`avg_duration_ms`, `current_rate` (attempts per second over the last 10 s), `uptime` (s), and \
`skipped` (jobs settled without a call, by reason).",
    responses(
        (status = 200, description = "The counters.", body = Object,
            example = json!({"processed": 1200, "failed": 3, "avg_duration_ms": 85, "current_rate": 12.5, "uptime": 3600,
                "skipped": {"disabled": 0, "already_succeeded": 1, "stale": 0, "overlap": 0}})),
        (status = 401, description = "`api.protect_reads` is on and the token is missing or wrong.", body = super::error::ErrorBody),
        (status = 503, description = "The metrics actor did not answer.", body = super::error::ErrorBody),
    ),
    security((), ("bearer_token" = []))
)]
pub async fn stats(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let stats = state
        .metrics
        .send(GetStats)
        .await
        .map_err(|err| ApiError::Unavailable(err.to_string()))?;
    Ok(HttpResponse::Ok().json(stats))
}
