//! Dead letters: jobs that failed for good, listed, replayed and deleted
//! through the store's dead-letter index (see
//! [`actors::store::dead_letters`]), safe with any number of replicas.
//!
//! - `GET /dead-letters?task_type_id=&limit=&cursor=`: oldest first, with
//!   the reason, the last error and the attempts made; `next_cursor` pages
//!   on (absent on the last page).
//! - `POST /dead-letters/replay` with `{"job_ids": [...]}` or
//!   `{"task_type_id": "..."}`: each job is published again, same job id
//!   (so the endpoint sees the same `Idempotency-Key`), attempt 1, due now,
//!   and leaves the index. A job is refused, with a reason, when its task
//!   is not defined (the poison of `unknown_task_type`), when it succeeded
//!   since, when another replay of it is under way, or when it is not a
//!   dead letter.
//! - `DELETE /dead-letters` with the same selection: forgets the records.
//!
//! The broker's copies in `taskqueue.jobs.failed` are left alone (they are
//! the failed queue operators alert on; age them out with a queue policy).

use std::time::Duration;

use actix_web::{HttpResponse, web};
use actors::{
    domain::{ErrorDetail, Job, JobEnvelope, JobMetadata, JobSource, TaskTypeId, UserId},
    store::{
        ExecutionFinish, NextTry,
        dead_letters::{DeadLetterRecord, MAX_PAGE},
    },
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{ApiError, auth::Authorized, error::ErrorBody, state::ApiState};

/// Page size of `GET /dead-letters` without `limit`.
pub const DEFAULT_LIMIT: usize = 50;

/// Most job ids one replay or delete may name.
pub const MAX_JOB_IDS: usize = 1000;

/// Most dead letters one replay or delete of a whole task handles; the
/// answer says `more: true` when some are left.
pub const MAX_PER_TASK_REQUEST: usize = 10_000;

/// How long a replay holds its claim on a record: a replica that dies
/// mid-replay leaves the record replayable again after this.
const REPLAY_CLAIM: Duration = Duration::from_secs(60);

/// How long a replayed job's reset retry chain is remembered.
const REPLAY_NEXT_TTL: Duration = Duration::from_secs(86_400);

/// Query of `GET /dead-letters`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this task's dead letters.
    pub task_type_id: Option<String>,
    /// Page size, 1 to [`MAX_PAGE`].
    pub limit: Option<usize>,
    /// A previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// Body of a replay or a delete: job ids, or a whole task.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// These jobs.
    pub job_ids: Option<Vec<String>>,
    /// Every dead letter of this task.
    pub task_type_id: Option<String>,
}

fn parse_task(id: &str) -> Result<TaskTypeId, ApiError> {
    TaskTypeId::parse(id.to_owned())
        .map_err(|err| ApiError::BadRequest(format!("task_type_id {id:?} {err}")))
}

fn unavailable(err: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(err.to_string())
}

/// One dead letter, as listed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetterView {
    /// The job (its `Idempotency-Key`).
    pub job_id: Uuid,
    /// Its task.
    #[schema(value_type = String)]
    pub task_type_id: TaskTypeId,
    /// Its user.
    #[schema(value_type = String)]
    pub user_id: UserId,
    /// The period it belongs to.
    pub scheduled_at: DateTime<Utc>,
    /// `retries_exhausted`, `permanent_failure`, `throttled_too_long` or
    /// `unknown_task_type`.
    pub reason: String,
    /// The last attempt's error (`code`, `message`, `retry`), `null` when
    /// the job never ran.
    pub last_error: Option<ErrorDetail>,
    /// Attempts made.
    pub attempts: u32,
    /// When it was dead-lettered.
    pub dead_lettered_at: DateTime<Utc>,
}

/// A page of `GET /dead-letters`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetterPage {
    /// Oldest first.
    pub dead_letters: Vec<DeadLetterView>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A job a replay refused.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Refusal {
    /// The job.
    pub job_id: Uuid,
    /// `not_dead_lettered`, `unknown_task_type`, `replay_in_progress` or
    /// `already_succeeded`.
    pub reason: &'static str,
}

/// Answer of `POST /dead-letters/replay`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplayOutcome {
    /// Jobs published again (same id, attempt 1, due now).
    pub replayed: Vec<Uuid>,
    /// Jobs refused, with the reason.
    pub refused: Vec<Refusal>,
    /// True when a whole-task selection had more than 10,000: ask again.
    pub more: bool,
}

/// Answer of `DELETE /dead-letters`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeleteOutcome {
    /// Records forgotten.
    pub deleted: Vec<Uuid>,
    /// Ids named that are not dead letters.
    pub not_found: Vec<Uuid>,
    /// True when a whole-task selection had more than 10,000: ask again.
    pub more: bool,
}

pub(crate) fn view(record: &DeadLetterRecord) -> DeadLetterView {
    let job = &record.envelope.job;
    DeadLetterView {
        job_id: job.id,
        task_type_id: job.task_type_id.clone(),
        user_id: job.user_id.clone(),
        scheduled_at: job.scheduled_at,
        reason: record.reason.to_string(),
        last_error: record.last_error.clone(),
        attempts: record.attempts,
        dead_lettered_at: record.dead_lettered_at,
    }
}

/// Lists dead letters, oldest first.
#[utoipa::path(
    get,
    path = "/dead-letters",
    tag = "dead letters",
    description = "Jobs that failed for good, oldest first, with the reason, the last error and the \
attempts made; `next_cursor` pages on.",
    params(ListQuery),
    responses(
        (status = 200, description = "A page.", body = DeadLetterPage),
        (status = 400, description = "Bad `task_type_id`, `limit` not 1 to 1000, a cursor this endpoint did not give, or an unknown query parameter.", body = ErrorBody),
        (status = 401, description = "`api.protect_reads` is on and the token is missing or wrong.", body = ErrorBody),
        (status = 503, description = "Redis is unavailable.", body = ErrorBody),
    ),
    security((), ("bearer_token" = []))
)]
pub async fn list(
    query: web::Query<ListQuery>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let ListQuery {
        task_type_id,
        limit,
        cursor,
    } = query.into_inner();
    let task = task_type_id.as_deref().map(parse_task).transpose()?;
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_PAGE}, not {limit}"
        )));
    }
    if let Some(cursor) = &cursor
        && !valid_cursor(cursor)
    {
        return Err(ApiError::BadRequest(format!(
            "cursor {cursor:?} is not a next_cursor of this endpoint"
        )));
    }
    let page = state
        .dead_letters
        .dead_letters(task.as_ref(), cursor.as_deref(), limit)
        .await
        .map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(DeadLetterPage {
        dead_letters: page.records.iter().map(view).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Whether `cursor` has the shape of an index member (13 digits, `:`, a
/// UUID).
fn valid_cursor(cursor: &str) -> bool {
    cursor.split_once(':').is_some_and(|(ms, id)| {
        ms.len() == 13 && ms.bytes().all(|b| b.is_ascii_digit()) && Uuid::parse_str(id).is_ok()
    })
}

/// The records a selection names: (found, ids named that are not dead
/// letters, more left for a whole-task selection).
pub(crate) async fn select(
    state: &ApiState,
    selection: Selection,
) -> Result<(Vec<DeadLetterRecord>, Vec<Uuid>, bool), ApiError> {
    match (selection.job_ids, selection.task_type_id) {
        (Some(ids), None) => {
            if ids.is_empty() || ids.len() > MAX_JOB_IDS {
                return Err(ApiError::BadRequest(format!(
                    "job_ids must name 1 to {MAX_JOB_IDS} jobs, not {}",
                    ids.len()
                )));
            }
            let mut found = Vec::new();
            let mut missing = Vec::new();
            for id in ids {
                let job = Uuid::parse_str(&id)
                    .map_err(|_| ApiError::BadRequest(format!("job id {id:?} is not a UUID")))?;
                match state
                    .dead_letters
                    .dead_letter(job)
                    .await
                    .map_err(unavailable)?
                {
                    Some(record) => found.push(record),
                    None => missing.push(job),
                }
            }
            Ok((found, missing, false))
        }
        (None, Some(task)) => {
            let task = parse_task(&task)?;
            let mut found = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let room = MAX_PER_TASK_REQUEST - found.len();
                let page = state
                    .dead_letters
                    .dead_letters(Some(&task), cursor.as_deref(), room.min(MAX_PAGE))
                    .await
                    .map_err(unavailable)?;
                found.extend(page.records);
                match page.next_cursor {
                    Some(next) if found.len() < MAX_PER_TASK_REQUEST => cursor = Some(next),
                    Some(_) => return Ok((found, Vec::new(), true)),
                    None => return Ok((found, Vec::new(), false)),
                }
            }
        }
        _ => Err(ApiError::BadRequest(
            "give either job_ids or task_type_id".into(),
        )),
    }
}

/// Replays the selected dead letters.
#[utoipa::path(
    post,
    path = "/dead-letters/replay",
    tag = "dead letters",
    description = "Publishes the selected dead letters again: same job id (so the same \
`Idempotency-Key`), attempt 1, due now. A job is refused with a reason when its task is not \
defined, it succeeded since, another replay of it is under way, or it is not a dead letter.",
    request_body = Selection,
    responses(
        (status = 200, description = "What was replayed and what was refused.", body = ReplayOutcome),
        (status = 400, description = "Malformed body, neither or both of `job_ids` and `task_type_id`, 0 or more than 1,000 ids, or an id that is not a UUID.", body = ErrorBody),
        (status = 401, description = "The bearer token is missing or wrong.", body = ErrorBody),
        (status = 503, description = "Redis or RabbitMQ is unavailable.", body = ErrorBody),
    ),
    security(("bearer_token" = []))
)]
pub async fn replay(
    _authorized: Authorized,
    body: web::Json<Selection>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let (records, missing, more) = select(&state, body.into_inner()).await?;
    let mut replayed = Vec::new();
    let mut refused: Vec<Refusal> = missing
        .iter()
        .map(|&job_id| Refusal {
            job_id,
            reason: "not_dead_lettered",
        })
        .collect();
    for record in records {
        let job = record.envelope.job.id;
        match replay_one(&state, &record).await? {
            None => replayed.push(job),
            Some(reason) => refused.push(Refusal {
                job_id: job,
                reason,
            }),
        }
    }
    Ok(HttpResponse::Ok().json(ReplayOutcome {
        replayed,
        refused,
        more,
    }))
}

/// Replays one record; `Some(reason)` when it is refused.
pub(crate) async fn replay_one(
    state: &ApiState,
    record: &DeadLetterRecord,
) -> Result<Option<&'static str>, ApiError> {
    let old = &record.envelope.job;
    if state.catalog.get(&old.task_type_id).is_none() {
        return Ok(Some("unknown_task_type"));
    }
    let dead_letters = &state.dead_letters;
    if !dead_letters
        .claim_replay(old.id, REPLAY_CLAIM)
        .await
        .map_err(unavailable)?
    {
        return Ok(Some("replay_in_progress"));
    }
    let succeeded = state
        .store
        .succeeded(&[old.id])
        .await
        .map_err(unavailable)?;
    if succeeded.first().copied().unwrap_or(false) {
        return Ok(Some("already_succeeded"));
    }
    let now = Utc::now();
    let envelope = JobEnvelope::new(
        Job {
            attempt: 1,
            execute_after: now,
            ..old.clone()
        },
        JobMetadata {
            source: JobSource::Replay,
            origin: Some(record.envelope.metadata.first_source().clone()),
            ..record.envelope.metadata.clone()
        },
    );
    // The retry chain starts again at attempt 1 (else the replay would be
    // taken for a stale copy of an older try), with its full throttle
    // budget.
    dead_letters.reset_job(old.id).await.map_err(unavailable)?;
    state
        .store
        .finish_execution(&ExecutionFinish {
            task_type_id: old.task_type_id.clone(),
            user_id: old.user_id.clone(),
            job_id: old.id,
            execution: Uuid::new_v4(),
            run_claimed: false,
            success_ttl: None,
            next: Some(NextTry {
                attempt: 1,
                eligible_ms: envelope.job.execute_after.timestamp_millis(),
                ttl: REPLAY_NEXT_TTL,
            }),
            // The job's results stay `failed` until the replay is claimed.
            result: None,
        })
        .await
        .map_err(unavailable)?;
    state
        .broker
        .publish(std::slice::from_ref(&envelope))
        .await
        .map_err(unavailable)?;
    dead_letters
        .delete_dead_letter(record)
        .await
        .map_err(unavailable)?;
    tracing::info!(job_id = %old.id, task = %old.task_type_id, user = %old.user_id, "dead letter replayed");
    Ok(None)
}

/// Deletes the selected dead-letter records.
#[utoipa::path(
    delete,
    path = "/dead-letters",
    tag = "dead letters",
    description = "Forgets the selected dead-letter records (the broker's copies in \
`taskqueue.jobs.failed` are left alone).",
    request_body = Selection,
    responses(
        (status = 200, description = "What was deleted.", body = DeleteOutcome),
        (status = 400, description = "Malformed body, neither or both of `job_ids` and `task_type_id`, 0 or more than 1,000 ids, or an id that is not a UUID.", body = ErrorBody),
        (status = 401, description = "The bearer token is missing or wrong.", body = ErrorBody),
        (status = 503, description = "Redis is unavailable.", body = ErrorBody),
    ),
    security(("bearer_token" = []))
)]
pub async fn delete(
    _authorized: Authorized,
    body: web::Json<Selection>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, ApiError> {
    let (records, missing, more) = select(&state, body.into_inner()).await?;
    let mut deleted = Vec::new();
    for record in records {
        if state
            .dead_letters
            .delete_dead_letter(&record)
            .await
            .map_err(unavailable)?
        {
            deleted.push(record.envelope.job.id);
        }
    }
    Ok(HttpResponse::Ok().json(DeleteOutcome {
        deleted,
        not_found: missing,
        more,
    }))
}
