//! The tasks page (`GET /ui/tasks`): one row per task type with its
//! interval in words and zone, next fire, enabled users, pause state, its
//! current (else last) run's due / planned / released and, from the
//! period's tally in Redis (every replica's finishes), succeeded / failed
//! and the p50 / p99 lateness of first attempts; the fires skipped as
//! missed before the last fire recorded; and the pause and resume buttons
//! (`POST /ui/tasks/{id}/pause|resume`, CSRF-checked).

use actix_web::{HttpRequest, HttpResponse, web};
use actors::{
    domain::{IntervalType, TaskInterval},
    scheduler::schedule_status,
    store::results::{LATENESS_BOUNDS_MS, PeriodTally},
};
use serde_json::json;

use super::{
    PREFIX, UiError, render, see_other,
    session::{CsrfForm, base_context, check_csrf},
};
use crate::routes::{state::ApiState, tasks::set_paused};

/// The interval in words: "every day at 09:00", "every 2 hours at :30".
pub fn interval_in_words(interval: &TaskInterval) -> String {
    let (unit, units) = match interval.kind {
        IntervalType::Hourly => ("hour", "hours"),
        IntervalType::Daily => ("day", "days"),
        IntervalType::Weekly => ("week", "weeks"),
        IntervalType::Monthly => ("month", "months"),
    };
    let every = if interval.value == 1 {
        format!("every {unit}")
    } else {
        format!("every {} {units}", interval.value)
    };
    let at = interval.at_time.map(|at| at.to_string());
    let at = match interval.kind {
        IntervalType::Hourly => {
            let at = interval.at_time.unwrap_or_default();
            if at.minute == 0 && at.second == 0 {
                String::new()
            } else if at.second == 0 {
                format!(" at :{:02}", at.minute)
            } else {
                format!(" at :{:02}:{:02}", at.minute, at.second)
            }
        }
        _ => format!(" at {}", at.unwrap_or_else(|| "00:00".to_owned())),
    };
    let on = match interval.kind {
        IntervalType::Weekly => format!(
            " on {}",
            serde_json::to_value(interval.weekday.unwrap_or(actors::domain::Weekday::Mon))
                .ok()
                .and_then(|day| day.as_str().map(str::to_owned))
                .unwrap_or_default()
        ),
        IntervalType::Monthly => format!(" on day {}", interval.day_of_month.unwrap_or(1)),
        _ => String::new(),
    };
    format!("{every}{on}{at}")
}

/// A lateness quantile of `tally` for people: "≤ 250 ms", "> 1 h", or
/// "–" without a sample.
pub fn lateness_text(tally: &PeriodTally, q: f64) -> String {
    match tally.lateness_quantile(q) {
        None => "–".to_owned(),
        Some(Some(ms)) if ms < 1_000 => format!("≤ {ms} ms"),
        Some(Some(ms)) if ms < 60_000 => format!("≤ {} s", ms as f64 / 1_000.0),
        Some(Some(ms)) if ms < 3_600_000 => format!("≤ {} min", ms / 60_000),
        Some(Some(ms)) => format!("≤ {} h", ms / 3_600_000),
        Some(None) => format!(
            "> {} h",
            LATENESS_BOUNDS_MS.last().copied().unwrap_or_default() / 3_600_000
        ),
    }
}

/// The tasks page.
pub async fn page(
    request: HttpRequest,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, UiError> {
    let mut context = base_context(&request, "Tasks", "tasks");
    let now = state.clock.now();
    let mut rows = Vec::new();
    for task in state.catalog.snapshot().values() {
        let status = schedule_status(
            state.store.as_ref(),
            task,
            now,
            state.distribution.rate_of(&task.id),
            state.distribution.window,
        )
        .await
        .map_err(UiError::unavailable)?;
        let run = status.runs.first().or(status.last_run.as_ref());
        let tally = match run {
            Some(run) => Some(
                state
                    .results
                    .period_tally(&task.id, run.scheduled_at)
                    .await
                    .map_err(UiError::unavailable)?,
            ),
            None => None,
        };
        // Missed fires are tallied with the fire recorded after them
        // (most often the run's own period, read above).
        let missed = match (status.last_execution, run, &tally) {
            (Some(fired), Some(run), Some(tally)) if fired == run.scheduled_at => tally.missed,
            (Some(fired), _, _) => {
                state
                    .results
                    .period_tally(&task.id, fired)
                    .await
                    .map_err(UiError::unavailable)?
                    .missed
            }
            (None, _, _) => 0,
        };
        rows.push(json!({
            "id": task.id,
            "name": task.name,
            "interval": interval_in_words(&task.interval),
            "timezone": task.interval.tz().name(),
            "next_execution": status.next_execution,
            "last_execution": status.last_execution,
            "enabled_users": status.enabled_users,
            "paused": status.paused,
            "paused_at": status.paused_at,
            "last_run": run,
            "runs_in_progress": status.runs.len(),
            "succeeded": tally.as_ref().map(|t| t.succeeded),
            "failed": tally.as_ref().map(|t| t.failed),
            "late_p50": tally.as_ref().map(|t| lateness_text(t, 0.5)),
            "late_p99": tally.as_ref().map(|t| lateness_text(t, 0.99)),
            "missed": missed,
        }));
    }
    context["tasks"] = json!(rows);
    context["now"] = json!(now);
    render::page("tasks.html", &context)
}

async fn set(
    request: HttpRequest,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
    state: web::Data<ApiState>,
    paused: bool,
) -> Result<HttpResponse, UiError> {
    check_csrf(&request, &form.csrf)?;
    set_paused(&state, &path.into_inner(), paused).await?;
    Ok(see_other(&format!("{PREFIX}/tasks")))
}

/// The pause button.
pub async fn pause(
    request: HttpRequest,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, UiError> {
    set(request, path, form, state, true).await
}

/// The resume button.
pub async fn resume(
    request: HttpRequest,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, UiError> {
    set(request, path, form, state, false).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str, words: &str) {
        let interval: TaskInterval = serde_json::from_str(yaml).unwrap();
        assert_eq!(interval_in_words(&interval), words, "{yaml}");
    }

    #[test]
    fn lateness_reads_as_its_bucket_bound() {
        let tally = |lateness: [u64; 13]| PeriodTally {
            lateness,
            ..PeriodTally::default()
        };
        assert_eq!(lateness_text(&tally([0; 13]), 0.5), "–");
        let mut some = [0; 13];
        some[2] = 9; // <= 250 ms
        some[5] = 1; // <= 2.5 s
        assert_eq!(lateness_text(&tally(some), 0.5), "≤ 250 ms");
        assert_eq!(lateness_text(&tally(some), 0.99), "≤ 2.5 s");
        some[10] = 90; // <= 5 min
        assert_eq!(lateness_text(&tally(some), 0.5), "≤ 5 min");
        some[12] = 1000; // past 1 h
        assert_eq!(lateness_text(&tally(some), 0.99), "> 1 h");
    }

    #[test]
    fn intervals_read_as_words() {
        check(r#"{"type":"daily","value":1}"#, "every day at 00:00");
        check(
            r#"{"type":"daily","value":2,"at_time":"09:30"}"#,
            "every 2 days at 09:30",
        );
        check(r#"{"type":"hourly","value":1}"#, "every hour");
        check(
            r#"{"type":"hourly","value":6,"at_time":"00:15"}"#,
            "every 6 hours at :15",
        );
        check(
            r#"{"type":"weekly","value":1,"weekday":"fri","at_time":"18:00"}"#,
            "every week on fri at 18:00",
        );
        check(
            r#"{"type":"monthly","value":3,"day_of_month":31}"#,
            "every 3 months on day 31 at 00:00",
        );
    }
}
