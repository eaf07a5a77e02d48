//! User preferences: `PUT`/`DELETE /users/{user_id}/tasks/{task_id}`,
//! `GET /users/{user_id}/preferences`, and the user's default time zone
//! (extension): `PUT`/`GET /users/{user_id}` with `{"timezone": "..."}`.
//!
//! Writes go through the state store, which updates the preference, the
//! settings and the scheduler's indexes atomically. `PUT` replaces the
//! user's choice for the task whole: settings omitted means no settings.
//! Task ids must name a task of the catalog (else 404); `DELETE` also
//! removes what is stored for a task since dropped from the catalog.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use actors::{
    catalog::TaskCatalog,
    domain::{IntervalType, Settings, TaskInterval, TaskTypeId, UserId},
    store::{PreferenceWrite, StateStore, StoreError, TimezoneWrite},
};
use chrono::Utc;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, auth::Authorized, error::ErrorBody};

/// Body of `PUT /users/{user_id}/tasks/{task_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreferenceBody {
    /// Whether the task runs for the user.
    pub enabled: bool,
    /// The user's overrides (the spec's `Settings`: `custom_interval`,
    /// `timezone`, `parameters`); omitted or `null` removes earlier ones.
    #[serde(default)]
    #[schema(example = json!({"timezone": "Asia/Tokyo", "parameters": {"report_type": "summary"}}))]
    pub settings: Option<Settings>,
}

/// Body of `PUT /users/{user_id}` (extension): the user's default time
/// zone, used by every task the user has not given a `timezone` of its
/// own; `null` removes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserBody {
    /// IANA time zone name, or `null`.
    #[schema(value_type = Option<String>, example = "Europe/Paris")]
    pub timezone: Option<Tz>,
}

/// Answer of `GET`/`PUT /users/{user_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct UserView {
    /// The user.
    #[schema(value_type = String, example = "user_42")]
    pub user_id: UserId,
    /// The user's default time zone, `null` when none.
    #[schema(value_type = Option<String>, example = "Europe/Paris")]
    pub timezone: Option<Tz>,
}

/// Sets or removes a user's default time zone; every task the user runs
/// on its own interval without a zone of its own moves with it.
#[utoipa::path(
    put,
    path = "/users/{user_id}",
    tag = "preferences",
    description = "Sets (or with `null` removes) the user's default time zone, used by every task \
the user has not given a `timezone` of its own.",
    params(("user_id" = String, Path, description = "The user: no `:`, `*`, whitespace or control characters.")),
    request_body = UserBody,
    responses(
        (status = 200, description = "The user's time zone as stored.", body = UserView),
        (status = 400, description = "Bad user id, unknown time zone or malformed body.", body = ErrorBody),
        (status = 401, description = "The bearer token is missing or wrong.", body = ErrorBody),
        (status = 503, description = "Redis is unavailable.", body = ErrorBody),
    ),
    security(("bearer_token" = []))
)]
pub async fn put_user(
    _authorized: Authorized,
    path: web::Path<String>,
    body: web::Json<UserBody>,
    store: web::Data<Arc<dyn StateStore>>,
) -> Result<HttpResponse, ApiError> {
    let user_id = parse_user(path.into_inner())?;
    let timezone = body.into_inner().timezone;
    store
        .write_user_timezones(&[TimezoneWrite {
            user_id: user_id.clone(),
            timezone,
        }])
        .await
        .map_err(store_error)?;
    Ok(HttpResponse::Ok().json(UserView { user_id, timezone }))
}

/// A user's default time zone (`null` when none is set).
#[utoipa::path(
    get,
    path = "/users/{user_id}",
    tag = "preferences",
    description = "The user's default time zone (`null` when none is set).",
    params(("user_id" = String, Path, description = "The user: no `:`, `*`, whitespace or control characters.")),
    responses(
        (status = 200, description = "The user's time zone.", body = UserView),
        (status = 400, description = "Bad user id.", body = ErrorBody),
        (status = 401, description = "`api.protect_reads` is on and the token is missing or wrong.", body = ErrorBody),
        (status = 503, description = "Redis is unavailable.", body = ErrorBody),
    ),
    security((), ("bearer_token" = []))
)]
pub async fn get_user(
    path: web::Path<String>,
    store: web::Data<Arc<dyn StateStore>>,
) -> Result<HttpResponse, ApiError> {
    let user_id = parse_user(path.into_inner())?;
    let timezone = store.user_timezone(&user_id).await.map_err(store_error)?;
    Ok(HttpResponse::Ok().json(UserView { user_id, timezone }))
}

/// Sets a user's preference for a task; answers with all the user's
/// preferences.
#[utoipa::path(
    put,
    path = "/users/{user_id}/tasks/{task_id}",
    tag = "preferences",
    description = "Sets the user's choice for a task, whole: `settings` omitted means no settings. \
Answers with all the user's preferences (the spec's `UserPreference`).",
    params(("user_id" = String, Path, description = "The user: no `:`, `*`, whitespace or control characters."), ("task_id" = String, Path, description = "A task type of the catalog.")),
    request_body = PreferenceBody,
    responses(
        (status = 200, description = "All the user's preferences.", body = Object,
            example = json!({"user_id": "user_42", "enabled_tasks": {"daily_report": true},
                "task_settings": {"daily_report": {"parameters": {"report_type": "summary"}}},
                "last_modified": "2024-01-15T10:00:00Z"})),
        (status = 400, description = "Bad user id, malformed body, or a custom interval the calculus cannot run.", body = ErrorBody),
        (status = 401, description = "The bearer token is missing or wrong.", body = ErrorBody),
        (status = 404, description = "No such task type.", body = ErrorBody),
        (status = 503, description = "Redis is unavailable.", body = ErrorBody),
    ),
    security(("bearer_token" = []))
)]
pub async fn put_preference(
    _authorized: Authorized,
    path: web::Path<(String, String)>,
    body: web::Json<PreferenceBody>,
    store: web::Data<Arc<dyn StateStore>>,
    catalog: web::Data<TaskCatalog>,
) -> Result<HttpResponse, ApiError> {
    let (user_id, task_id) = path.into_inner();
    let user_id = parse_user(user_id)?;
    let task_id = known_task(&catalog, task_id)?;
    let PreferenceBody { enabled, settings } = body.into_inner();
    if let Some(interval) = settings.as_ref().and_then(|s| s.custom_interval.as_ref()) {
        check_interval(interval).map_err(ApiError::BadRequest)?;
    }
    let write = PreferenceWrite::new(user_id.clone(), task_id, enabled, settings, Utc::now());
    store
        .write_preferences(&[write])
        .await
        .map_err(store_error)?;
    let preference = store
        .preferences(&user_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::Internal("preference vanished after its write".into()))?;
    Ok(HttpResponse::Ok().json(preference))
}

/// Removes a user's preference and settings for a task.
#[utoipa::path(
    delete,
    path = "/users/{user_id}/tasks/{task_id}",
    tag = "preferences",
    description = "Removes the user's preference and settings for a task (also one since dropped \
from the catalog).",
    params(("user_id" = String, Path, description = "The user: no `:`, `*`, whitespace or control characters."), ("task_id" = String, Path, description = "A task type of the catalog.")),
    responses(
        (status = 204, description = "Removed."),
        (status = 400, description = "Bad user id.", body = ErrorBody),
        (status = 401, description = "The bearer token is missing or wrong.", body = ErrorBody),
        (status = 404, description = "The user has no preference for the task.", body = ErrorBody),
        (status = 503, description = "Redis is unavailable.", body = ErrorBody),
    ),
    security(("bearer_token" = []))
)]
pub async fn delete_preference(
    _authorized: Authorized,
    path: web::Path<(String, String)>,
    store: web::Data<Arc<dyn StateStore>>,
) -> Result<HttpResponse, ApiError> {
    let (user_id, task_id) = path.into_inner();
    let user_id = parse_user(user_id)?;
    let task_id = TaskTypeId::parse(task_id.as_str())
        .map_err(|_| ApiError::NotFound(format!("no task {task_id:?}")))?;
    if store
        .delete_preference(&user_id, &task_id)
        .await
        .map_err(store_error)?
    {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!(
            "user {user_id} has no preference for task {task_id}"
        )))
    }
}

/// A user's preferences, as the spec's `UserPreference`.
#[utoipa::path(
    get,
    path = "/users/{user_id}/preferences",
    tag = "preferences",
    description = "The user's preferences, as the spec's `UserPreference`.",
    params(("user_id" = String, Path, description = "The user: no `:`, `*`, whitespace or control characters.")),
    responses(
        (status = 200, description = "The user's preferences.", body = Object,
            example = json!({"user_id": "user_42", "enabled_tasks": {"daily_report": true},
                "task_settings": {}, "last_modified": "2024-01-15T10:00:00Z"})),
        (status = 400, description = "Bad user id.", body = ErrorBody),
        (status = 401, description = "`api.protect_reads` is on and the token is missing or wrong.", body = ErrorBody),
        (status = 404, description = "The user has no preferences.", body = ErrorBody),
        (status = 503, description = "Redis is unavailable.", body = ErrorBody),
    ),
    security((), ("bearer_token" = []))
)]
pub async fn get_preferences(
    path: web::Path<String>,
    store: web::Data<Arc<dyn StateStore>>,
) -> Result<HttpResponse, ApiError> {
    let user_id = parse_user(path.into_inner())?;
    match store.preferences(&user_id).await.map_err(store_error)? {
        Some(preference) => Ok(HttpResponse::Ok().json(preference)),
        None => Err(ApiError::NotFound(format!(
            "no preferences for user {user_id}"
        ))),
    }
}

fn parse_user(user_id: String) -> Result<UserId, ApiError> {
    UserId::parse(user_id.as_str())
        .map_err(|err| ApiError::BadRequest(format!("invalid user id {user_id:?}: {err}")))
}

fn known_task(catalog: &TaskCatalog, task_id: String) -> Result<TaskTypeId, ApiError> {
    TaskTypeId::parse(task_id.as_str())
        .ok()
        .filter(|task| catalog.get(task).is_some())
        .ok_or_else(|| ApiError::NotFound(format!("no task {task_id:?}")))
}

/// Refuses custom intervals the schedule calculus cannot run.
pub fn check_interval(interval: &TaskInterval) -> Result<(), String> {
    if interval.value == 0 {
        return Err("custom_interval.value must be at least 1".into());
    }
    if let Some(day) = interval.day_of_month {
        if interval.kind != IntervalType::Monthly {
            return Err("custom_interval.day_of_month applies to monthly intervals only".into());
        }
        if !(1..=31).contains(&day) {
            return Err(format!(
                "custom_interval.day_of_month {day} is not in 1..=31"
            ));
        }
    }
    if interval.weekday.is_some() && interval.kind != IntervalType::Weekly {
        return Err("custom_interval.weekday applies to weekly intervals only".into());
    }
    Ok(())
}

fn store_error(err: StoreError) -> ApiError {
    match err {
        err @ StoreError::Backend { .. } => ApiError::Unavailable(err.to_string()),
        corrupt @ StoreError::Corrupt { .. } => ApiError::Internal(corrupt.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str, expected: Result<(), &str>) {
        let interval: TaskInterval = serde_json::from_str(json).unwrap();
        let got = check_interval(&interval);
        match expected {
            Ok(()) => assert_eq!(got, Ok(()), "{json}"),
            Err(fragment) => {
                let err = got.expect_err(json);
                assert!(err.contains(fragment), "{json}: {err}");
            }
        }
    }

    #[test]
    fn custom_intervals_are_checked() {
        check(r#"{"type":"daily","value":1}"#, Ok(()));
        check(r#"{"type":"monthly","value":1,"day_of_month":31}"#, Ok(()));
        check(r#"{"type":"weekly","value":2,"weekday":"fri"}"#, Ok(()));
        check(r#"{"type":"hourly","value":0}"#, Err("at least 1"));
        check(
            r#"{"type":"monthly","value":1,"day_of_month":0}"#,
            Err("1..=31"),
        );
        check(
            r#"{"type":"daily","value":1,"day_of_month":3}"#,
            Err("monthly"),
        );
        check(
            r#"{"type":"daily","value":1,"weekday":"mon"}"#,
            Err("weekly"),
        );
    }
}
