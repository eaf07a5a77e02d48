//! Job results (see [`actors::store::results`]):
//!
//! - `GET /jobs/{job_id}`: the job's latest `ExecutionResult` (the spec's
//!   JSON shape), its task, user and attempt, and its finished attempts so
//!   far, oldest first (at most 20).
//! - `GET /users/{user_id}/tasks/{task_type_id}/runs?limit=`: the user's
//!   recent jobs of the task, newest first, each with its latest result
//!   (`limit` 1 to 100, default 20).
//!
//! A job reads `pending` once the distributor has it confirmed in the
//! broker (`next_attempt` is when it is due), then the executor's claim
//! (`running`) and finish (`success`, `failed`, `retrying` with
//! `next_attempt`) scripts write over it; all kept for
//! `monitoring.result_retention`. A job of a spread fan-out is published
//! when its slot comes due: before that it has no record (404).

use actix_web::{HttpResponse, web};
use actors::{
    domain::{ExecutionResult, TaskTypeId, UserId},
    store::results::{AttemptRecord, MAX_RUNS_KEPT},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{ApiError, error::ErrorBody, state::ApiState};

/// Runs listed without `limit`.
pub const DEFAULT_RUNS_LIMIT: usize = 20;

/// One attempt of a job, as answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AttemptView {
    /// The attempt (1 for the first try).
    pub attempt: u32,
    /// Its `ExecutionResult` (the spec's shape: `job_id`, `status`,
    /// `started_at`, `completed_at`, `duration` in nanoseconds, `error`,
    /// `next_attempt`).
    pub result: ExecutionResult,
}

/// Answer of `GET /jobs/{job_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    /// The job.
    pub job_id: Uuid,
    /// Its task.
    #[schema(value_type = String)]
    pub task_type_id: TaskTypeId,
    /// Its user.
    #[schema(value_type = String)]
    pub user_id: UserId,
    /// The attempt of `result`.
    pub attempt: u32,
    /// The latest result: the attempt under way (`running`) or the last
    /// finished one (the spec's `ExecutionResult`).
    pub result: ExecutionResult,
    /// The finished attempts so far, oldest first (at most 20).
    pub attempts: Vec<AttemptView>,
}

/// One run in `GET /users/{user_id}/tasks/{task_type_id}/runs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunView {
    /// The job.
    pub job_id: Uuid,
    /// The attempt of `result`.
    pub attempt: u32,
    /// The job's latest result (the spec's `ExecutionResult`).
    pub result: ExecutionResult,
}

/// Answer of `GET /users/{user_id}/tasks/{task_type_id}/runs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunsView {
    /// The user.
    #[schema(value_type = String)]
    pub user_id: UserId,
    /// The task.
    #[schema(value_type = String)]
    pub task_type_id: TaskTypeId,
    /// The runs, newest first.
    pub runs: Vec<RunView>,
}

/// Query of the runs route.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// How many runs, 1 to 100 (default 20).
    pub limit: Option<String>,
}

fn attempt_view(record: AttemptRecord) -> AttemptView {
    AttemptView {
        attempt: record.attempt,
        result: record.result,
    }
}

/// A job's latest result and its attempts so far.
#[utoipa::path(
    get,
    path = "/jobs/{job_id}",
    tag = "jobs",
    description = "The job's latest `ExecutionResult` (`pending` once it is queued, with \
`next_attempt` when it is due; `running`; `success`; `failed`; or `retrying` with `next_attempt`), \
its task, user and attempt, and its finished attempts so far, oldest first (at most 20). Kept for \
`monitoring.result_retention`. A job of a spread fan-out whose slot is not due yet is not queued \
and has no record (404).",
    params(("job_id" = String, Path, description = "The job's UUID (its `Idempotency-Key`).")),
    responses(
        (status = 200, description = "The job's results.", body = JobView),
        (status = 400, description = "`job_id` is not a UUID.", body = ErrorBody),
        (status = 401, description = "`api.protect_reads` is on and the token is missing or wrong.", body = ErrorBody),
        (status = 404, description = "No result is kept for the job.", body = ErrorBody),
        (status = 503, description = "Redis is unavailable.", body = ErrorBody),
    ),
    security((), ("bearer_token" = []))
)]
pub async fn job(
    path: web::Path<String>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let job_id = Uuid::parse_str(id.trim())
        .map_err(|err| ApiError::BadRequest(format!("job_id {id:?} is not a UUID ({err})")))?;
    let kept = state
        .results
        .job_results(job_id)
        .await
        .map_err(|err| ApiError::Unavailable(err.to_string()))?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no result kept for job {job_id} (it is not queued yet, or its results are past monitoring.result_retention)"
            ))
        })?;
    let latest = kept.latest;
    Ok(HttpResponse::Ok().json(JobView {
        job_id,
        task_type_id: latest.task_type_id,
        user_id: latest.user_id,
        attempt: latest.attempt,
        result: latest.result,
        attempts: kept.attempts.into_iter().map(attempt_view).collect(),
    }))
}

/// Parses `limit` (1 to [`MAX_RUNS_KEPT`]).
fn parse_limit(limit: Option<&str>) -> Result<usize, ApiError> {
    let Some(limit) = limit else {
        return Ok(DEFAULT_RUNS_LIMIT);
    };
    match limit.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_RUNS_KEPT).contains(&n) => Ok(n),
        _ => Err(ApiError::BadRequest(format!(
            "limit must be a whole number from 1 to {MAX_RUNS_KEPT}, not {limit:?}"
        ))),
    }
}

/// A user's recent runs of a task, newest first.
#[utoipa::path(
    get,
    path = "/users/{user_id}/tasks/{task_type_id}/runs",
    tag = "jobs",
    description = "The user's most recent jobs of the task, newest first, each with its latest \
result; jobs whose results expired are left out.",
    params(
        ("user_id" = String, Path, description = "The user."),
        ("task_type_id" = String, Path, description = "The task type."),
        RunsQuery
    ),
    responses(
        (status = 200, description = "The runs.", body = RunsView),
        (status = 400, description = "Bad user or task id, `limit` not 1 to 100, or an unknown query parameter.", body = ErrorBody),
        (status = 401, description = "`api.protect_reads` is on and the token is missing or wrong.", body = ErrorBody),
        (status = 503, description = "Redis is unavailable.", body = ErrorBody),
    ),
    security((), ("bearer_token" = []))
)]
pub async fn runs(
    path: web::Path<(String, String)>,
    query: web::Query<RunsQuery>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let (user, task) = path.into_inner();
    let user_id = UserId::parse(user.clone())
        .map_err(|err| ApiError::BadRequest(format!("user_id {user:?} {err}")))?;
    let task_type_id = TaskTypeId::parse(task.clone())
        .map_err(|err| ApiError::BadRequest(format!("task_type_id {task:?} {err}")))?;
    let limit = parse_limit(query.limit.as_deref())?;
    let records = state
        .results
        .user_runs(&user_id, &task_type_id, limit)
        .await
        .map_err(|err| ApiError::Unavailable(err.to_string()))?;
    Ok(HttpResponse::Ok().json(RunsView {
        user_id,
        task_type_id,
        runs: records
            .into_iter()
            .map(|record| RunView {
                job_id: record.result.job_id,
                attempt: record.attempt,
                result: record.result,
            })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_one_to_a_hundred() {
        assert_eq!(parse_limit(None).unwrap(), DEFAULT_RUNS_LIMIT);
        assert_eq!(parse_limit(Some("1")).unwrap(), 1);
        assert_eq!(parse_limit(Some("100")).unwrap(), 100);
        for bad in ["0", "101", "-1", "ten", ""] {
            assert!(parse_limit(Some(bad)).is_err(), "{bad}");
        }
    }
}
