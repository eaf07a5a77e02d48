//! The user lookup page (`GET /ui/users?user_id=`): a user's preferences
//! and, per enabled task, their next runs with the slot offset inside the
//! distribution window (the preview calculus of
//! `GET /schedule/preview/{task}?user_id=`), and their last executions
//! (the job results of `GET /users/{user_id}/tasks/{task_id}/runs`).

use actix_web::{HttpRequest, HttpResponse, web};
use actors::{domain::UserId, preview};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{UiError, render, session::base_context};
use crate::routes::state::ApiState;

/// Next runs listed per task.
const NEXT_RUNS: usize = 5;

/// Last executions listed per task (from the kept job results).
const LAST_RUNS: usize = 5;

/// Query of the page.
#[derive(Debug, Deserialize)]
pub struct LookupQuery {
    /// The user to look up (empty: just the form).
    #[serde(default)]
    pub user_id: String,
}

/// The user lookup page.
pub async fn page(
    request: HttpRequest,
    query: web::Query<LookupQuery>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, UiError> {
    let mut context = base_context(&request, "User lookup", "users");
    let wanted = query.into_inner().user_id.trim().to_owned();
    context["user_id"] = json!(wanted);
    if wanted.is_empty() {
        return render::page("users.html", &context);
    }
    let user = UserId::parse(wanted.clone())
        .map_err(|err| UiError::BadRequest(format!("user id {wanted:?} {err}")))?;
    let Some(preference) = state
        .store
        .preferences(&user)
        .await
        .map_err(UiError::unavailable)?
    else {
        context["not_found"] = json!(true);
        return render::page("users.html", &context);
    };
    let now = state.clock.now();
    let mut tasks: Vec<Value> = Vec::new();
    for (task_id, enabled) in &preference.enabled_tasks {
        let settings = preference.task_settings.get(task_id);
        let mut row = json!({
            "id": task_id,
            "enabled": enabled,
            "known": false,
            "settings": settings,
        });
        let last: Vec<Value> = state
            .results
            .user_runs(&user, task_id, LAST_RUNS)
            .await
            .map_err(UiError::unavailable)?
            .into_iter()
            .map(|run| {
                json!({
                    "job_id": run.result.job_id,
                    "attempt": run.attempt,
                    "status": run.result.status,
                    "started_at": run.result.started_at,
                    "duration_ms": run.result.duration.as_millis(),
                    "error": run.result.error.as_ref().map(|error| format!("{}: {}", error.code, error.message)),
                })
            })
            .collect();
        row["last"] = json!(last);
        if let Some(task) = state.catalog.get(task_id) {
            row["known"] = json!(true);
            if *enabled
                && let Some(runs) = preview::user_runs(
                    state.store.as_ref(),
                    &task,
                    &user,
                    state.distribution.window,
                    now,
                    NEXT_RUNS,
                )
                .await
                .map_err(UiError::unavailable)?
            {
                let next: Vec<Value> = runs
                    .runs
                    .iter()
                    .map(|run| {
                        json!({
                            "scheduled_at": run.scheduled_at,
                            "slot": run.slot,
                            "offset_s": (run.execute_after - run.scheduled_at).num_seconds(),
                            "execute_after": run.execute_after,
                        })
                    })
                    .collect();
                row["source"] = json!(runs.source);
                row["timezone"] = json!(runs.timezone);
                row["next"] = json!(next);
            }
        }
        tasks.push(row);
    }
    context["preference"] = json!({
        "user_id": preference.user_id,
        "last_modified": preference.last_modified,
        "timezone": preference.timezone.map(|zone| zone.name().to_owned()),
    });
    context["tasks"] = json!(tasks);
    render::page("users.html", &context)
}
