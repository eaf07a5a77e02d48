//! `GET /schedule/preview/{task_type_id}?user_id=&count=&zone=`: the next
//! fire instants of a task and, with `user_id`, when that user's jobs
//! would be due.
//!
//! The calculus is `actors::preview`, the one `taskqueue next-runs`
//! prints. Without `user_id` the answer lists the task's next `count`
//! fires (in its own zone, or read in `zone`). With `user_id` it adds the
//! user's schedule (custom interval, per-task zone, default zone or the
//! task's), the zone it is read in and each coming job's fire, slot and
//! `execute_after`, for the population of the moment.
//!
//! `count` defaults to 5 and must be 1 to [`MAX_COUNT`]; a bad `count`,
//! `zone` or `user_id` (or an unknown query parameter) is a 400; an
//! unknown task, or a user who does not have the task enabled, a 404.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use actors::{
    domain::{TaskTypeId, UserId},
    preview,
    schedule::Schedule,
};
use chrono_tz::Tz;
use serde_json::json;

use super::{ApiError, error::ErrorBody, state::ApiState};

/// Most fires one preview lists.
pub const MAX_COUNT: usize = 100;

/// Fires listed when `count` is not given.
const DEFAULT_COUNT: usize = 5;

/// The query, checked field by field.
struct PreviewQuery {
    user_id: Option<UserId>,
    count: usize,
    zone: Option<Tz>,
}

fn parse_query(request: &HttpRequest) -> Result<PreviewQuery, ApiError> {
    let fields = web::Query::<BTreeMap<String, String>>::from_query(request.query_string())
        .map_err(|err| ApiError::BadRequest(format!("query: {err}")))?
        .into_inner();
    let mut query = PreviewQuery {
        user_id: None,
        count: DEFAULT_COUNT,
        zone: None,
    };
    for (name, value) in fields {
        match name.as_str() {
            "user_id" => {
                query.user_id = Some(UserId::parse(value.clone()).map_err(|err| {
                    ApiError::BadRequest(format!("query user_id: {value:?} {err}"))
                })?);
            }
            "count" => {
                query.count = value
                    .parse::<usize>()
                    .ok()
                    .filter(|count| (1..=MAX_COUNT).contains(count))
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "query count: {value:?} must be an integer from 1 to {MAX_COUNT}"
                        ))
                    })?;
            }
            "zone" => {
                query.zone = Some(value.parse::<Tz>().map_err(|err| {
                    ApiError::BadRequest(format!(
                        "query zone: {value:?} is not an IANA time zone: {err}"
                    ))
                })?);
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "query: unknown parameter {other:?}; expected user_id, count or zone"
                )));
            }
        }
    }
    if query.zone.is_some() && query.user_id.is_some() {
        return Err(ApiError::BadRequest(
            "query: zone and user_id exclude each other (a user's zone is read from the store)"
                .into(),
        ));
    }
    Ok(query)
}

/// The task's next fires, and a user's coming jobs.
#[utoipa::path(
    get,
    path = "/schedule/preview/{task_type_id}",
    tag = "scheduling",
    description = "The task's next `count` fire instants (`fires`, in its own zone or read in `zone`) \
and, with `user_id`, that user's schedule and coming jobs (`user`: the interval and zone in force, \
each job's fire, slot and `execute_after`).",
    params(
        ("task_type_id" = String, Path, description = "A task type of the catalog."),
        ("user_id" = Option<String>, Query, description = "Also preview this user's jobs; excludes `zone`."),
        ("count" = Option<usize>, Query, description = "Fires to list, 1 to 100 (default 5)."),
        ("zone" = Option<String>, Query, description = "IANA zone to read the task's interval in; excludes `user_id`."),
    ),
    responses(
        (status = 200, description = "The preview.", body = Object,
            example = json!({"task_type_id": "daily_report", "timezone": "UTC", "fires": ["2024-01-16T02:30:00Z"]})),
        (status = 400, description = "Bad `count`, `zone` or `user_id`, both `zone` and `user_id`, or an unknown query parameter.", body = ErrorBody),
        (status = 401, description = "`api.protect_reads` is on and the token is missing or wrong.", body = ErrorBody),
        (status = 404, description = "No such task type, or the user does not have it enabled.", body = ErrorBody),
        (status = 503, description = "Redis is unavailable.", body = ErrorBody),
    ),
    security((), ("bearer_token" = []))
)]
pub async fn preview_task(
    request: HttpRequest,
    path: web::Path<String>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let task = TaskTypeId::parse(id.clone())
        .ok()
        .and_then(|id| state.catalog.get(&id))
        .ok_or_else(|| ApiError::NotFound(format!("no task type {id:?}")))?;
    let query = parse_query(&request)?;
    let now = state.clock.now();
    let schedule = Schedule::new(&task.interval);
    let fires = preview::next_fires(&schedule, query.zone, now, query.count);
    let timezone = query.zone.unwrap_or_else(|| task.interval.tz());
    let mut body = json!({
        "task_type_id": task.id,
        "timezone": timezone.name(),
        "fires": fires,
    });
    if let Some(user) = &query.user_id {
        let runs = preview::user_runs(
            state.store.as_ref(),
            &task,
            user,
            state.distribution.window,
            now,
            query.count,
        )
        .await
        .map_err(|err| ApiError::Unavailable(err.to_string()))?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "user {user} does not have task {} enabled",
                task.id
            ))
        })?;
        body["user"] = serde_json::to_value(runs)
            .map_err(|err| ApiError::Internal(format!("encoding the preview: {err}")))?;
    }
    Ok(HttpResponse::Ok().json(body))
}
