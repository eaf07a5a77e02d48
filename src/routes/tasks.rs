//! `POST /tasks/{task_type_id}/pause` and `POST /tasks/{task_type_id}/resume`:
//! an operator's pause of one task type, obeyed by every replica.
//!
//! A pause is stored in Redis (`{prefix}:tasks:paused`); while it holds,
//! the scheduler makes no new fan-out of the task and releases none of its
//! planned slots, and executors leave its queued jobs in the broker
//! (deferred, same attempt). Other tasks are untouched. The resume lets
//! the next tick catch up under the task's misfire policy. See
//! `actors::pause` and docs/operations.md.
//!
//! Both answer 200 with the task's pause state:
//! `{"task_type_id", "paused", "paused_at", "changed"}` (`changed`:
//! false when the task was already in that state, so a retried request is
//! harmless). Unknown task: 404. Both are mutating routes: the bearer
//! token applies.

use actix_web::{HttpResponse, web};
use actors::domain::{TaskType, TaskTypeId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, auth::Authorized, error::ErrorBody, state::ApiState};

/// Answer of the pause and resume routes.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PauseState {
    /// The task.
    #[schema(value_type = String, example = "daily_report")]
    pub task_type_id: TaskTypeId,
    /// Whether it is paused now.
    pub paused: bool,
    /// Since when (`null` when not paused).
    pub paused_at: Option<DateTime<Utc>>,
    /// False when the task was already in that state (a retried request
    /// is harmless).
    pub changed: bool,
}

fn known_task(state: &ApiState, id: &str) -> Result<TaskType, ApiError> {
    TaskTypeId::parse(id)
        .ok()
        .and_then(|id| state.catalog.get(&id))
        .ok_or_else(|| ApiError::NotFound(format!("no task type {id:?}")))
}

fn unavailable(err: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(err.to_string())
}

/// Pauses (`paused`) or resumes a task for every replica: the task, and
/// whether its state changed. Shared with the dashboard's buttons.
pub(crate) async fn set_paused(
    state: &ApiState,
    id: &str,
    paused: bool,
) -> Result<(TaskType, Option<chrono::DateTime<chrono::Utc>>, bool), ApiError> {
    let task = known_task(state, id)?;
    if !paused {
        let changed = state
            .store
            .set_task_paused(&task.id, None)
            .await
            .map_err(unavailable)?;
        state.pauses.resume(&task.id);
        if changed {
            tracing::info!(task = %task.id, "task resumed by an operator");
        }
        return Ok((task, None, changed));
    }
    let now = state.clock.now();
    let changed = state
        .store
        .set_task_paused(&task.id, Some(now))
        .await
        .map_err(unavailable)?;
    let since = state
        .store
        .paused_tasks()
        .await
        .map_err(unavailable)?
        .get(&task.id)
        .copied()
        .unwrap_or(now);
    state.pauses.pause(&task.id, since);
    if changed {
        tracing::info!(task = %task.id, "task paused by an operator");
    }
    Ok((task, Some(since), changed))
}

/// Pauses the task for every replica.
#[utoipa::path(
    post,
    path = "/tasks/{task_type_id}/pause",
    tag = "operations",
    description = "Pauses the task for every replica: no new fan-out, no release of planned slots, and executors leave its queued jobs in the broker.",
    params(("task_type_id" = String, Path, description = "A task type of the catalog.")),
    responses(
        (status = 200, description = "The task's pause state.", body = PauseState),
        (status = 401, description = "The bearer token is missing or wrong.", body = ErrorBody),
        (status = 404, description = "No such task type.", body = ErrorBody),
        (status = 503, description = "Redis is unavailable.", body = ErrorBody),
    ),
    security(("bearer_token" = []))
)]
pub async fn pause(
    _authorized: Authorized,
    path: web::Path<String>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let (task, since, changed) = set_paused(&state, &path.into_inner(), true).await?;
    Ok(HttpResponse::Ok().json(PauseState {
        task_type_id: task.id,
        paused: true,
        paused_at: since,
        changed,
    }))
}

/// Resumes the task; its missed fires follow its misfire policy.
#[utoipa::path(
    post,
    path = "/tasks/{task_type_id}/resume",
    tag = "operations",
    description = "Resumes the task; its missed fires follow its misfire policy.",
    params(("task_type_id" = String, Path, description = "A task type of the catalog.")),
    responses(
        (status = 200, description = "The task's pause state.", body = PauseState),
        (status = 401, description = "The bearer token is missing or wrong.", body = ErrorBody),
        (status = 404, description = "No such task type.", body = ErrorBody),
        (status = 503, description = "Redis is unavailable.", body = ErrorBody),
    ),
    security(("bearer_token" = []))
)]
pub async fn resume(
    _authorized: Authorized,
    path: web::Path<String>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let (task, _, changed) = set_paused(&state, &path.into_inner(), false).await?;
    Ok(HttpResponse::Ok().json(PauseState {
        task_type_id: task.id,
        paused: false,
        paused_at: None,
        changed,
    }))
}
