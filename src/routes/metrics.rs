//! `GET /metrics`: the process's Prometheus families in the text format.
//!
//! Outcome counters and histograms are counted by the executors as jobs
//! finish. The gauges that describe shared state (queue depths from the
//! broker, fan-out progress from the store) are refreshed by a scrape at
//! most every [`REFRESH_EVERY`], so any number of scrapers cost the broker
//! and Redis a few calls per interval; `taskqueue_active_jobs` is read at
//! every scrape. A backend that cannot be asked leaves the last values in
//! place (logged), and the scrape still answers 200.

use std::time::{Duration, Instant};

use actix_web::{HttpResponse, web};
use actors::prometheus::{
    CONTENT_TYPE, FanoutLabels, QueueLabels, RunLabel, StageLabel, TaskLabels,
};

use super::{ApiError, state::ApiState};

/// How long queue depths and fan-out gauges are reused.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// When the shared-state gauges were last refreshed.
#[derive(Debug, Default)]
pub struct ScrapeCache {
    refreshed: tokio::sync::Mutex<Option<Instant>>,
}

/// The Prometheus text exposition of this process.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    description = "This process's Prometheus families in the text exposition format \
(`taskqueue_..._total`, `_seconds`); queue depths and fan-out gauges are refreshed at most every 5 s.",
    responses(
        (status = 200, description = "The exposition.", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
        (status = 401, description = "`api.protect_reads` is on and the token is missing or wrong.", body = super::error::ErrorBody),
        (status = 503, description = "The families could not be encoded.", body = super::error::ErrorBody),
    ),
    security((), ("bearer_token" = []))
)]
pub async fn metrics(
    state: web::Data<ApiState>,
    cache: web::Data<ScrapeCache>,
) -> Result<HttpResponse, ApiError> {
    {
        let mut refreshed = cache.refreshed.lock().await;
        if refreshed.is_none_or(|at| at.elapsed() >= REFRESH_EVERY) {
            refresh(&state).await;
            *refreshed = Some(Instant::now());
        }
    }
    let families = &state.families;
    if let Some(worker) = &state.worker {
        families
            .active_jobs
            .set(i64::try_from(worker.active_jobs()).unwrap_or(i64::MAX));
    }
    let text = families
        .encode()
        .map_err(|err| ApiError::Unavailable(format!("encoding metrics: {err}")))?;
    Ok(HttpResponse::Ok().content_type(CONTENT_TYPE).body(text))
}

/// Sets the queue-depth and fan-out gauges from the broker and the store.
async fn refresh(state: &ApiState) {
    let families = &state.families;
    match state.broker.queue_depths().await {
        Ok(depths) => {
            for (queue, depth) in depths {
                families
                    .queue_depth
                    .get_or_create(&QueueLabels {
                        queue: queue.to_owned(),
                    })
                    .set(i64::try_from(depth).unwrap_or(i64::MAX));
            }
        }
        Err(err) => tracing::warn!(error = %err, "metrics: queue depths not read"),
    }
    let gauge = |task: &str, run, stage, value: u64| {
        families
            .fanout_jobs
            .get_or_create(&FanoutLabels {
                task: task.to_owned(),
                run,
                stage,
            })
            .set(i64::try_from(value).unwrap_or(i64::MAX));
    };
    let paused = match state.store.paused_tasks().await {
        Ok(paused) => Some(paused),
        Err(err) => {
            tracing::warn!(error = %err, "metrics: paused tasks not read");
            None
        }
    };
    for task in state.catalog.snapshot().keys() {
        let name = task.as_str();
        families.touch(name);
        if let Some(paused) = &paused {
            families
                .task_paused
                .get_or_create(&TaskLabels {
                    task: name.to_owned(),
                })
                .set(i64::from(paused.contains_key(task)));
        }
        match state.store.last_run(task).await {
            Ok(Some(run)) => {
                gauge(name, RunLabel::last, StageLabel::due, run.users);
                gauge(name, RunLabel::last, StageLabel::planned, run.planned);
                gauge(name, RunLabel::last, StageLabel::released, run.released);
                families
                    .last_run
                    .get_or_create(&TaskLabels {
                        task: name.to_owned(),
                    })
                    .set(run.scheduled_at.timestamp());
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(task = name, error = %err, "metrics: last run not read"),
        }
        match state.store.runs(task).await {
            Ok(list) => {
                let sum = |count: fn(&actors::fanout::Run) -> u64| {
                    list.runs.iter().map(count).sum::<u64>()
                };
                gauge(
                    name,
                    RunLabel::in_progress,
                    StageLabel::due,
                    sum(|r| r.users),
                );
                gauge(
                    name,
                    RunLabel::in_progress,
                    StageLabel::planned,
                    sum(|r| r.planned),
                );
                gauge(
                    name,
                    RunLabel::in_progress,
                    StageLabel::released,
                    sum(|r| r.released),
                );
                families
                    .runs_in_progress
                    .get_or_create(&TaskLabels {
                        task: name.to_owned(),
                    })
                    .set(i64::try_from(list.runs.len()).unwrap_or(i64::MAX));
            }
            Err(err) => tracing::warn!(task = name, error = %err, "metrics: runs not read"),
        }
    }
}
