//! The worker's API: `GET /stats` (its `/health` part lives in
//! [`super::health`]).

use actix_web::{HttpResponse, get, web};
use actors::metrics::GetStats;

use super::{ApiError, state::ApiState};

/// Counters of this process's executions since it started: `processed`
/// (attempts that reached an outcome), `failed` (those that did not
/// succeed), `avg_duration_ms`, `current_rate` (attempts per second over
/// the last 10 s) and `uptime` (seconds).
#[get("/stats")]
pub async fn stats(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let stats = state
        .metrics
        .send(GetStats)
        .await
        .map_err(|err| ApiError::Unavailable(err.to_string()))?;
    Ok(HttpResponse::Ok().json(stats))
}
