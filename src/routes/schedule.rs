//! The scheduler's API: `POST /schedule/trigger` and
//! `GET /schedule/status/{task_type_id}`.
//!
//! A trigger runs the task now, outside its schedule: its `scheduled_at` is
//! the trigger instant (whole milliseconds), so its job ids never collide
//! with a scheduled period's. Without `user_ids` it reaches every user with
//! the task enabled (custom intervals included) as one resumable fan-out
//! under the task's schedule lock; with them, exactly those users (at most
//! 10,000). `execute_immediately: true` skips the spread. The answer comes
//! once every job is confirmed published.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use actors::{
    domain::{TaskType, TaskTypeId, UserId},
    messages::Distribute,
    scheduler::schedule_status,
    store::LockName,
};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, auth::Authorized, state::ApiState};

/// Most users one trigger may name.
pub const MAX_TRIGGER_USERS: usize = 10_000;

/// How long a trigger of every user waits for the task's schedule lock.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Body of `POST /schedule/trigger`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    /// The task to run.
    pub task_type_id: String,
    /// The users to run it for; omitted means every enabled user.
    #[serde(default)]
    pub user_ids: Option<Vec<String>>,
    /// Run every job now instead of spreading them over the window.
    #[serde(default)]
    pub execute_immediately: bool,
}

/// Registers the scheduler routes.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/schedule/trigger", web::post().to(trigger))
        .route("/schedule/status/{task_type_id}", web::get().to(status));
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

/// Runs a task now for some or all of its users: 202 with the number of
/// jobs published and the window they are spread over.
async fn trigger(
    _authorized: Authorized,
    body: web::Json<TriggerRequest>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let TriggerRequest {
        task_type_id,
        user_ids,
        execute_immediately,
    } = body.into_inner();
    let task = known_task(&state, &task_type_id)?;
    let users = match user_ids {
        Some(ids) if ids.len() > MAX_TRIGGER_USERS => {
            return Err(ApiError::BadRequest(format!(
                "{} user_ids given; at most {MAX_TRIGGER_USERS} per trigger",
                ids.len()
            )));
        }
        Some(ids) => Some(
            ids.into_iter()
                .map(|id| {
                    UserId::parse(id.clone())
                        .map_err(|err| ApiError::BadRequest(format!("user id {id:?} {err}")))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    let distributor = state
        .distributor
        .clone()
        .ok_or_else(|| ApiError::Unavailable("this process does not run the scheduler".into()))?;
    let scheduled_at = whole_millis(state.clock.now());
    let lock = LockName::Schedule(task.id.clone());
    let lease = match users {
        Some(_) => None,
        None => Some(wait_for_lock(&state, &lock).await?),
    };
    let result = distributor
        .send(Distribute {
            task: task.clone(),
            scheduled_at,
            with_custom_users: users.is_none(),
            users,
            immediate: execute_immediately,
            lease: lease.clone().map(|lease| (lock.clone(), lease)),
            source: "trigger".to_owned(),
            correlation_id: format!("trigger:{}:{}", task.id, scheduled_at.timestamp_millis()),
        })
        .await;
    if let Some(lease) = &lease
        && let Err(err) = state.store.release_lock(&lock, lease).await
    {
        tracing::warn!(task = %task.id, error = %err, "schedule lock not released; it expires");
    }
    let jobs_created = result.map_err(unavailable)?.map_err(unavailable)?;
    let window = if execute_immediately {
        Duration::ZERO
    } else {
        state.distribution.window
    };
    Ok(HttpResponse::Accepted().json(json!({
        "jobs_created": jobs_created,
        "distribution_window": humantime::format_duration(window).to_string(),
    })))
}

/// Takes the task's schedule lock, waiting for a scheduler pass to end.
async fn wait_for_lock(
    state: &ApiState,
    lock: &LockName,
) -> Result<actors::store::LockLease, ApiError> {
    let deadline = tokio::time::Instant::now() + LOCK_WAIT;
    loop {
        let ttl = state.distribution.lock_ttl;
        match state.store.acquire_lock(lock, ttl).await {
            Ok(Some(lease)) => return Ok(lease),
            Ok(None) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(None) => {
                return Err(ApiError::Unavailable(
                    "the task is being scheduled; try again shortly".into(),
                ));
            }
            Err(err) => return Err(unavailable(err)),
        }
    }
}

fn whole_millis(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or(at)
}

/// The task's last and next execution, its enabled users and interval.
async fn status(
    path: web::Path<String>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let task = known_task(&state, &path.into_inner())?;
    let rate = state.distribution.rate_of(&task.id);
    let status = schedule_status(
        state.store.as_ref(),
        &task,
        state.clock.now(),
        rate,
        state.distribution.window,
    )
    .await
    .map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(status))
}
