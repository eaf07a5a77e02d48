//! The scheduler's API: `POST /schedule/trigger` and
//! `GET /schedule/status/{task_type_id}`.
//!
//! A trigger runs the task now, outside its schedule: its `scheduled_at` is
//! the trigger instant (whole milliseconds), so its job ids never collide
//! with a scheduled period's. Without `user_ids` it reaches every user with
//! the task enabled (custom intervals included); with them, exactly those
//! users (at most 10,000). `execute_immediately: true` skips the spread.
//!
//! The answer is `202 Accepted` as soon as the run is recorded, whatever
//! the population: `jobs_created` is the number of users the run reaches,
//! and the run proceeds under the SchedulerActor (its progress shows in
//! `/schedule/status`). A request with an `Idempotency-Key` header that
//! repeats an earlier one (same task, same key, within 24 hours) answers
//! with the earlier run instead of starting another. Once shutdown has
//! started, a trigger is refused with 503.

use actix_web::{HttpRequest, HttpResponse, web};
use actors::{
    domain::{TaskType, TaskTypeId, UserId},
    scheduler::{Trigger, schedule_status},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, auth::Authorized, error::ErrorBody, state::ApiState};

/// Most users one trigger may name.
pub const MAX_TRIGGER_USERS: usize = 10_000;

/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 256;

/// Body of `POST /schedule/trigger`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    /// The task to run.
    #[schema(example = "daily_report")]
    pub task_type_id: String,
    /// The users to run it for (at most 10,000); omitted means every
    /// enabled user.
    #[serde(default)]
    pub user_ids: Option<Vec<String>>,
    /// Run every job now instead of spreading them over the window.
    #[serde(default)]
    pub execute_immediately: bool,
}

/// Answer of `POST /schedule/trigger`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TriggerAccepted {
    /// Users the run reaches.
    pub jobs_created: u64,
    /// The window the jobs are spread over (humantime, `0s` when
    /// immediate).
    #[schema(example = "1h")]
    pub distribution_window: String,
    /// The run's id (the earlier run's when the `Idempotency-Key`
    /// repeats).
    pub run_id: String,
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
/// jobs the run makes, the window they are spread over and the run's id.
#[utoipa::path(
    post,
    path = "/schedule/trigger",
    tag = "scheduling",
    description = "Runs a task now, outside its schedule, for `user_ids` (at most 10,000) or every \
user with it enabled; `execute_immediately: true` skips the spread over the distribution window. \
Answers as soon as the run is recorded; its progress shows in `/schedule/status`. A repeated \
`Idempotency-Key` (same task, within 24 hours) answers with the earlier run.",
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 256 printable ASCII characters; a retry with the same key is the same run.")),
    request_body = TriggerRequest,
    responses(
        (status = 202, description = "The run is recorded.", body = TriggerAccepted),
        (status = 400, description = "Malformed body, bad user id, more than 10,000 users, or a bad `Idempotency-Key`.", body = ErrorBody),
        (status = 401, description = "The bearer token is missing or wrong.", body = ErrorBody),
        (status = 404, description = "No such task type.", body = ErrorBody),
        (status = 503, description = "Shutting down, or the scheduler or a backend is unavailable.", body = ErrorBody),
    ),
    security(("bearer_token" = []))
)]
pub async fn trigger(
    _authorized: Authorized,
    request: HttpRequest,
    body: web::Json<TriggerRequest>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    if state.stopping.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ApiError::Refused("shutting down: triggers are refused"));
    }
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
    let idempotency_key = idempotency_key(&request)?;
    let scheduler = state
        .scheduler
        .clone()
        .ok_or(ApiError::Refused("this process does not run the scheduler"))?;
    let accepted = scheduler
        .send(Trigger {
            task,
            users,
            immediate: execute_immediately,
            idempotency_key,
            correlation_id: None,
        })
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
    Ok(HttpResponse::Accepted().json(TriggerAccepted {
        jobs_created: accepted.jobs_created,
        distribution_window: humantime::format_duration(accepted.distribution_window).to_string(),
        run_id: accepted.run_id.to_string(),
    }))
}

/// The request's `Idempotency-Key`, if any: printable ASCII, at most 256
/// bytes.
fn idempotency_key(request: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = request.headers().get("Idempotency-Key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|key| !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"
            ))
        })?;
    Ok(Some(key.to_owned()))
}

/// The task's last and next execution, its enabled users and interval.
#[utoipa::path(
    get,
    path = "/schedule/status/{task_type_id}",
    tag = "scheduling",
    description = "The task's last and next execution, its enabled users, its interval and the \
progress of its runs.",
    params(("task_type_id" = String, Path, description = "A task type of the catalog.")),
    responses(
        (status = 200, description = "The task's status.", body = Object),
        (status = 401, description = "`api.protect_reads` is on and the token is missing or wrong.", body = ErrorBody),
        (status = 404, description = "No such task type.", body = ErrorBody),
        (status = 503, description = "A backend is unavailable.", body = ErrorBody),
    ),
    security((), ("bearer_token" = []))
)]
pub async fn status(
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
