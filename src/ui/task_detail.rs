//! The task detail page (`GET /ui/tasks/{id}`): execution duration
//! percentiles per hour over the last day, executions and failures per day
//! over the last [`DAYS_SHOWN`] days, the forecast dispatch curve of
//! the next 24 hours (the `taskqueue forecast` computation on the users in
//! the store), the current period's planned / released / remaining, and
//! the task's most recent dead letters.

use actix_web::{HttpRequest, HttpResponse, web};
use actors::{
    domain::TaskTypeId,
    scheduler::schedule_status,
    store::durations::{DailyCount, DurationPoint, DurationSummary, MAX_READ, summarize},
};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use indicatif::ProgressBar;
use serde_json::{Value, json};

use super::{UiError, render, session::base_context, tasks::interval_in_words};
use crate::{
    commands::forecast::{Horizon, forecast, population},
    routes::{dead_letters::view, state::ApiState},
};

/// Days of executions and failures shown: the default
/// `monitoring.metrics_retention` (older days are gone unless it is
/// raised).
pub const DAYS_SHOWN: i64 = 30;

/// Hours of the forecast curve.
const FORECAST_HOURS: usize = 24;

/// Dead letters listed as the most recent errors.
const RECENT_ERRORS: usize = 10;

/// Dead letters read to find the most recent (the index pages oldest
/// first).
const ERRORS_SCANNED: usize = 500;

/// Width and height of the forecast chart's drawing, in SVG units.
const CHART_WIDTH: f64 = 864.0;
const CHART_HEIGHT: f64 = 160.0;

/// The days that counted anything, newest first, each with its bar's
/// width (percent of the busiest day's executions).
fn daily_json(daily: &[DailyCount]) -> Value {
    let busiest = daily
        .iter()
        .map(|day| day.executions)
        .max()
        .unwrap_or(0)
        .max(1);
    json!({
        "days": DAYS_SHOWN,
        "rows": daily
            .iter()
            .filter(|day| day.executions > 0 || day.failures > 0)
            .map(|day| json!({
                "date": day.date.to_string(),
                "executions": day.executions,
                "failures": day.failures,
                "width": day.executions * 100 / busiest,
            }))
            .collect::<Vec<_>>(),
    })
}

/// Percentiles of each hour that has samples, oldest first.
fn hourly_percentiles(points: &[DurationPoint]) -> Vec<Value> {
    let mut hours: std::collections::BTreeMap<DateTime<Utc>, Vec<DurationPoint>> =
        Default::default();
    for point in points {
        let hour = point
            .completed_at
            .duration_trunc(TimeDelta::hours(1))
            .unwrap_or(point.completed_at);
        hours.entry(hour).or_default().push(*point);
    }
    hours
        .into_iter()
        .filter_map(|(hour, points)| {
            summarize(&points)
                .map(|summary| json!({"hour": hour, "summary": summary_json(Some(summary))}))
        })
        .collect()
}

/// A summary as the template reads it (`null` without samples).
fn summary_json(summary: Option<DurationSummary>) -> Value {
    summary.map_or(Value::Null, |summary| {
        json!({
            "count": summary.count,
            "p50_ms": summary.p50_ms,
            "p90_ms": summary.p90_ms,
            "p99_ms": summary.p99_ms,
            "max_ms": summary.max_ms,
        })
    })
}

/// The forecast's buckets as bars of the chart: `x`, `height`, count.
fn bars(counts: &[u64], start: DateTime<Utc>) -> (Vec<Value>, u64) {
    let max = counts.iter().copied().max().unwrap_or(0);
    let width = CHART_WIDTH / counts.len().max(1) as f64;
    let bars = counts
        .iter()
        .enumerate()
        .filter(|(_, jobs)| **jobs > 0)
        .map(|(index, jobs)| {
            let height = (*jobs as f64 / max.max(1) as f64 * CHART_HEIGHT).max(1.0);
            json!({
                "x": index as f64 * width,
                "y": CHART_HEIGHT - height,
                "width": width.max(1.0),
                "height": height,
                "jobs": jobs,
                "start": start + TimeDelta::minutes(5 * index as i64),
            })
        })
        .collect();
    (bars, max)
}

/// The task detail page.
pub async fn page(
    request: HttpRequest,
    path: web::Path<String>,
    state: web::Data<ApiState>,
) -> Result<HttpResponse, UiError> {
    let id = path.into_inner();
    let task = TaskTypeId::parse(id.clone())
        .ok()
        .and_then(|id| state.catalog.get(&id))
        .ok_or_else(|| UiError::NotFound(format!("no task type {id:?}")))?;
    let mut context = base_context(&request, &format!("Task {}", task.id), "tasks");
    let now = state.clock.now();
    let rate = state.distribution.rate_of(&task.id);
    let window = state.distribution.window;

    let status = schedule_status(state.store.as_ref(), &task, now, rate, window)
        .await
        .map_err(UiError::unavailable)?;

    let read = state
        .durations
        .durations_since(&task.id, now - TimeDelta::hours(24), MAX_READ)
        .await
        .map_err(UiError::unavailable)?;
    let last_hour: Vec<DurationPoint> = read
        .points
        .iter()
        .filter(|point| point.completed_at >= now - TimeDelta::hours(1))
        .copied()
        .collect();

    let today = now.date_naive();
    let days: Vec<chrono::NaiveDate> = (0..DAYS_SHOWN)
        .map(|back| today - TimeDelta::days(back))
        .collect();
    let daily = state
        .durations
        .daily_counts(&task.id, &days)
        .await
        .map_err(UiError::unavailable)?;

    let people = population(state.store.as_ref(), &task, &ProgressBar::hidden())
        .await
        .map_err(UiError::unavailable)?;
    let start = now.duration_trunc(TimeDelta::minutes(5)).unwrap_or(now);
    let horizon = Horizon {
        start,
        buckets: FORECAST_HOURS * 12,
    };
    let counts = forecast(&task, &people, window, &horizon);
    let (forecast_bars, forecast_max) = bars(&counts, start);
    let limit_per_bucket = rate.map(|rate| u64::from(rate) * 300);

    let letters = state
        .dead_letters
        .dead_letters(Some(&task.id), None, ERRORS_SCANNED)
        .await
        .map_err(UiError::unavailable)?;
    let recent: Vec<Value> = letters
        .records
        .iter()
        .rev()
        .take(RECENT_ERRORS)
        .map(|record| serde_json::json!(view(record)))
        .collect();

    context["task"] = json!({
        "id": task.id,
        "name": task.name,
        "description": task.description,
        "interval": interval_in_words(&task.interval),
        "timezone": task.interval.tz().name(),
        "rate": rate,
    });
    context["status"] = json!(status);
    context["current"] = json!(status.runs.first().or(status.last_run.as_ref()));
    context["current_in_progress"] = json!(!status.runs.is_empty());
    context["durations"] = json!({
        "last_hour": summary_json(summarize(&last_hour)),
        "last_day": summary_json(summarize(&read.points)),
        "hours": hourly_percentiles(&read.points),
    });
    context["daily"] = daily_json(&daily);
    context["forecast"] = json!({
        "start": start,
        "end": start + TimeDelta::hours(FORECAST_HOURS as i64),
        "total": counts.iter().sum::<u64>(),
        "max": forecast_max,
        "users": people.users(),
        "limit_per_bucket": limit_per_bucket,
        "over_limit": limit_per_bucket.map(|limit| counts.iter().filter(|jobs| **jobs > limit).count()),
        "bars": forecast_bars,
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
    });
    context["recent_errors"] = json!(recent);
    context["more_errors"] = json!(letters.next_cursor.is_some());
    render::page("task.html", &context)
}
