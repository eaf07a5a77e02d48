//! The dead letters page (`GET /ui/dead-letters?task_type_id=&cursor=`):
//! jobs that failed for good with their reason and last error, filtered
//! by task; checkboxes select jobs to replay or purge, a confirmation page
//! (`POST /ui/dead-letters/confirm`) lists what will happen, and only its
//! button (`POST /ui/dead-letters/apply`) acts. Both posts are
//! CSRF-checked. Replays go through the API's own replay, so a poison
//! message is refused with its reason here too.

use actix_web::{HttpRequest, HttpResponse, web};
use actors::{domain::TaskTypeId, store::dead_letters::MAX_PAGE};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    UiError, render,
    session::{base_context, check_csrf},
};
use crate::routes::{
    dead_letters::{MAX_JOB_IDS, Selection, replay_one, select, view},
    state::ApiState,
};

/// Dead letters per page.
pub const PAGE: usize = 50;

/// Query of the page.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Only this task's (empty: all).
    #[serde(default)]
    pub task_type_id: String,
    /// A previous page's cursor.
    #[serde(default)]
    pub cursor: String,
}

/// The dead letters page.
pub async fn page(
    request: HttpRequest,
    query: web::Query<ListQuery>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, UiError> {
    let mut context = base_context(&request, "Dead letters", "dead_letters");
    let query = query.into_inner();
    let task = match query.task_type_id.trim() {
        "" => None,
        id => Some(
            TaskTypeId::parse(id.to_owned())
                .map_err(|err| UiError::BadRequest(format!("task {id:?} {err}")))?,
        ),
    };
    let cursor = Some(query.cursor.trim()).filter(|cursor| !cursor.is_empty());
    let page = state
        .dead_letters
        .dead_letters(task.as_ref(), cursor, PAGE.min(MAX_PAGE))
        .await
        .map_err(UiError::unavailable)?;
    let letters: Vec<Value> = page
        .records
        .iter()
        .map(|record| json!(view(record)))
        .collect();
    let tasks: Vec<String> = state
        .catalog
        .snapshot()
        .keys()
        .map(|id| id.as_str().to_owned())
        .collect();
    context["letters"] = json!(letters);
    context["tasks"] = json!(tasks);
    context["filter"] = json!(task);
    context["next_cursor"] = json!(page.next_cursor);
    render::page("dead_letters.html", &context)
}

/// What the operator asked to do with the selected jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Publish them again.
    Replay,
    /// Forget them.
    Purge,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Replay => "replay",
            Action::Purge => "purge",
        }
    }
}

/// The selected jobs of a form (`job_id` repeated) and the action.
struct Chosen {
    action: Action,
    job_ids: Vec<String>,
    csrf: String,
}

fn chosen(body: &[u8]) -> Result<Chosen, UiError> {
    let fields: Vec<(String, String)> = form_pairs(body)?;
    let mut action = None;
    let mut job_ids = Vec::new();
    let mut csrf = String::new();
    for (name, value) in fields {
        match name.as_str() {
            "action" => {
                action = Some(match value.as_str() {
                    "replay" => Action::Replay,
                    "purge" => Action::Purge,
                    other => {
                        return Err(UiError::BadRequest(format!(
                            "unknown action {other:?}; expected replay or purge"
                        )));
                    }
                });
            }
            "job_id" => job_ids.push(value),
            "csrf" => csrf = value,
            _ => {}
        }
    }
    let action = action.ok_or_else(|| UiError::BadRequest("no action chosen".into()))?;
    if job_ids.is_empty() {
        return Err(UiError::BadRequest(
            "no dead letter selected: tick at least one".into(),
        ));
    }
    if job_ids.len() > MAX_JOB_IDS {
        return Err(UiError::BadRequest(format!(
            "{} dead letters selected; at most {MAX_JOB_IDS} at once",
            job_ids.len()
        )));
    }
    Ok(Chosen {
        action,
        job_ids,
        csrf,
    })
}

/// Decodes an `application/x-www-form-urlencoded` body into its pairs,
/// repeated names kept.
fn form_pairs(body: &[u8]) -> Result<Vec<(String, String)>, UiError> {
    url::form_urlencoded::parse(body)
        .map(|(name, value)| Ok((name.into_owned(), value.into_owned())))
        .collect()
}

/// The confirmation step: what the selection holds and what will happen.
pub async fn confirm(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, UiError> {
    let chosen = chosen(&body)?;
    check_csrf(&request, &chosen.csrf)?;
    let (records, missing, _) = select(
        &state,
        Selection {
            job_ids: Some(chosen.job_ids),
            task_type_id: None,
        },
    )
    .await?;
    let mut context = base_context(&request, "Confirm", "dead_letters");
    context["action"] = json!(chosen.action.verb());
    context["letters"] = json!(records.iter().map(view).collect::<Vec<_>>());
    context["missing"] = json!(missing);
    render::page("dead_letters_confirm.html", &context)
}

/// Carries out a confirmed replay or purge and shows the outcome.
pub async fn apply(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, UiError> {
    let chosen = chosen(&body)?;
    check_csrf(&request, &chosen.csrf)?;
    let (records, missing, _) = select(
        &state,
        Selection {
            job_ids: Some(chosen.job_ids),
            task_type_id: None,
        },
    )
    .await?;
    let mut done = Vec::new();
    let mut refused: Vec<Value> = missing
        .iter()
        .map(|job| json!({"job_id": job, "reason": "not_dead_lettered"}))
        .collect();
    for record in &records {
        let job = record.envelope.job.id;
        match chosen.action {
            Action::Replay => match replay_one(&state, record).await? {
                None => done.push(job),
                Some(reason) => refused.push(json!({"job_id": job, "reason": reason})),
            },
            Action::Purge => {
                if state
                    .dead_letters
                    .delete_dead_letter(record)
                    .await
                    .map_err(UiError::unavailable)?
                {
                    done.push(job);
                } else {
                    refused.push(json!({"job_id": job, "reason": "not_dead_lettered"}));
                }
            }
        }
    }
    let mut context = base_context(&request, "Done", "dead_letters");
    context["action"] = json!(chosen.action.verb());
    context["done"] = json!(done);
    context["refused"] = json!(refused);
    context["applied"] = json!(true);
    render::page("dead_letters_confirm.html", &context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_names_its_action_and_jobs() {
        let chosen = chosen(b"csrf=abc&action=replay&job_id=a&job_id=b").unwrap();
        assert_eq!(chosen.action, Action::Replay);
        assert_eq!(chosen.job_ids, ["a", "b"]);
        assert_eq!(chosen.csrf, "abc");
    }

    #[test]
    fn a_form_without_jobs_or_action_is_refused() {
        assert!(matches!(
            chosen(b"action=purge"),
            Err(UiError::BadRequest(_))
        ));
        assert!(matches!(chosen(b"job_id=a"), Err(UiError::BadRequest(_))));
        assert!(matches!(
            chosen(b"action=drop&job_id=a"),
            Err(UiError::BadRequest(_))
        ));
    }
}
