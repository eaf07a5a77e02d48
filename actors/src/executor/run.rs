//! Running one job, from its delivery to its settlement: the task looked
//! up (a job of a task not known yet is deferred, then dead-lettered),
//! its pauses and rate limit (a job that may not run now is deferred, same
//! attempt, not held), the claim, the attempt, and its outcome recorded
//! (`finish_execution`, tried again on a store blip) before the delivery is
//! settled: acked once the success is recorded or the next try published,
//! else dead-lettered. A job whose outcome could not be recorded is
//! requeued.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    ExecutionSettings, ExecutorEnv, HeldDelivery,
    call::{CallResult, call_endpoint, call_timeout},
    outcome::{Backoff, Outcome, Step, ThrottleBudget, classify, defer_delay, next_step},
};
use crate::{
    batcher::ExecutionBatcher,
    broker::DeadLetter,
    domain::{
        DeadLetterReason, ErrorDetail, ExecutionResult, Job, JobEnvelope, JobMetadata,
        OverlapPolicy, Status, TaskType,
    },
    error::PipelineError,
    messages::{ExecutionOutcome, RecordExecution},
    metrics::{Deferral, Skip},
    store::{
        ClaimOutcome, ExecutionClaim, ExecutionFinish, NextTry, Throttle,
        dead_letters::DeadLetterRecord,
        results::{AttemptRecord, PeriodOf, ResultWrite},
    },
};

/// Pause before requeueing a job whose outcome could not be recorded.
const REQUEUE_PAUSE: Duration = Duration::from_millis(500);

/// How long a job claim outlives the call's timeout (a crashed execution's
/// claim blocks the redelivered copy this much longer).
const JOB_CLAIM_MARGIN: Duration = Duration::from_secs(10);

/// How long a copy of a job that is already running waits before it looks
/// again.
const DUPLICATE_DEFER: Duration = Duration::from_secs(5);

/// Pauses between the tries of a `finish_execution` that failed: about
/// 3 s in all, well within the claim's [`JOB_CLAIM_MARGIN`].
const FINISH_BACKOFF: [Duration; 5] = [
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(400),
    Duration::from_millis(800),
    Duration::from_millis(1600),
];

/// Runs one job to a settled delivery.
pub(super) async fn run_job(
    env: Arc<ExecutorEnv>,
    batcher: ExecutionBatcher,
    envelope: JobEnvelope,
    held: Arc<HeldDelivery>,
    execution: Uuid,
) {
    let job_id = envelope.job.id;
    if let Err(err) = execute(&env, &batcher, &envelope, &held, execution).await {
        tracing::warn!(%job_id, error = %err, "job outcome not recorded; requeueing");
        tokio::time::sleep(REQUEUE_PAUSE).await;
        if let Err(err) = held.requeue().await {
            tracing::warn!(%job_id, error = %err, "requeue failed; the broker will redeliver");
        }
    }
}

async fn execute(
    env: &ExecutorEnv,
    batcher: &ExecutionBatcher,
    envelope: &JobEnvelope,
    held: &HeldDelivery,
    execution: Uuid,
) -> Result<(), PipelineError> {
    let job = &envelope.job;
    // The task is borrowed from the catalog's current snapshot (an `Arc`),
    // never copied.
    let tasks = env.catalog.snapshot();
    let Some(task) = tasks.get(&job.task_type_id) else {
        return defer_unknown_task(env, envelope, held).await;
    };
    let timeout = call_timeout(task, &env.settings);

    // Tokens first, the claim after them: the claim (and the delivery)
    // is never held while the job waits for a token, so it cannot expire
    // meanwhile. A job that gets no token within `max_token_wait` is
    // deferred (same attempt) and its delivery acked, so one task's
    // limit never stalls the executors other tasks could use.
    // A task paused by a `Retry-After` (known here) defers its jobs
    // without spending a token.
    if let Some(pause) = env.limiters.pauses.remaining(&task.id) {
        return defer(env, envelope, held, pause, Deferral::RetryAfter).await;
    }
    // A task paused by an operator leaves its jobs queued: deferred, same
    // attempt (see `crate::pause`).
    if let Some(since) = env.limiters.held.since(&task.id) {
        let wait = crate::pause::defer_wait(since, Utc::now());
        return defer(env, envelope, held, wait, Deferral::Paused).await;
    }
    if let Some(limit) = env.limiters.for_task(&task.id)
        && let Some(wait) = limit.acquire_within(env.settings.max_token_wait).await?
    {
        return defer(env, envelope, held, wait, Deferral::RateLimit).await;
    }

    // One round trip before the call (`claim_execution`): a recorded
    // success skips the job; one execution of a job at a time (two copies
    // of the same job, the last batch of a resumed fan-out promoted from
    // the delay stage together, must not both call the endpoint: a copy
    // that finds the job claimed comes back later, by when the success is
    // recorded and it is skipped); under `overlap: skip` one run per
    // (task, user); and the user's parameters for the task.
    let job_ttl = timeout + JOB_CLAIM_MARGIN;
    let guarded = task.overlap() == OverlapPolicy::Skip;
    let claim = ExecutionClaim {
        task_type_id: task.id.clone(),
        user_id: job.user_id.clone(),
        job_id: job.id,
        execution,
        job_ttl,
        run_ttl: guarded.then(|| timeout.saturating_mul(2) + Duration::from_secs(30)),
        attempt: job.attempt,
        execute_after_ms: job.execute_after.timestamp_millis(),
        // Jobs of a scheduled fan-out (and their retries) were made for
        // enabled users; a trigger may name users of its own.
        require_enabled: envelope.metadata.planned(),
        result: Some(result_write(
            &env.settings,
            job,
            ExecutionResult {
                job_id: job.id,
                status: Status::Running,
                started_at: Utc::now(),
                completed_at: Utc::now(),
                duration: Duration::ZERO,
                error: None,
                response: None,
                next_attempt: None,
            },
        )),
    };
    let parameters = match batcher.claim(claim).await? {
        ClaimOutcome::AlreadySucceeded => {
            tracing::debug!(job_id = %job.id, "already succeeded; skipping");
            env.metrics.skipped(Skip::AlreadySucceeded);
            return held.ack().await;
        }
        ClaimOutcome::JobBusy => {
            let wait = DUPLICATE_DEFER.min(job_ttl);
            tracing::info!(job_id = %job.id, "another copy of this job is running; deferring this one");
            env.broker
                .publish(&[again(envelope, job.attempt, Utc::now(), wait)])
                .await?;
            return held.ack().await;
        }
        ClaimOutcome::Disabled => {
            tracing::info!(job_id = %job.id, user = %job.user_id, outcome = "skipped", reason = "disabled", "the user no longer has this task enabled; skipping");
            env.metrics.skipped(Skip::Disabled);
            return held.ack().await;
        }
        ClaimOutcome::Stale => {
            // A failed or throttled try of this job already published the
            // next one: this copy would start a second retry chain.
            tracing::info!(job_id = %job.id, attempt = job.attempt, "stale copy of a job already retried; dropping it");
            env.metrics.skipped(Skip::Stale);
            return held.ack().await;
        }
        ClaimOutcome::Paused(pause) => {
            // Another replica's throttle: this one obeys it too.
            env.limiters.pauses.pause(&task.id, pause);
            return defer(env, envelope, held, pause, Deferral::RetryAfter).await;
        }
        ClaimOutcome::UserBusy => {
            tracing::info!(job_id = %job.id, user = %job.user_id, "a run for this user is under way; skipping (overlap: skip)");
            env.metrics.skipped(Skip::Overlap);
            return held.ack().await;
        }
        ClaimOutcome::Claimed { parameters } => parameters,
    };
    let finish = ExecutionFinish {
        task_type_id: task.id.clone(),
        user_id: job.user_id.clone(),
        job_id: job.id,
        execution,
        run_claimed: guarded,
        success_ttl: None,
        next: None,
        result: None,
    };
    attempt(env, batcher, task, envelope, held, &parameters, finish).await
}

/// The record of one attempt of `job`, kept for the result retention (the
/// response body is not kept).
fn result_write(settings: &ExecutionSettings, job: &Job, result: ExecutionResult) -> ResultWrite {
    ResultWrite {
        record: AttemptRecord {
            task_type_id: job.task_type_id.clone(),
            user_id: job.user_id.clone(),
            attempt: job.attempt,
            result: ExecutionResult {
                response: None,
                ..result
            },
        },
        retention: settings.result_retention,
        period: Some(PeriodOf {
            scheduled_at: job.scheduled_at,
            execute_after: job.execute_after,
        }),
    }
}

/// Records an execution's end (`finish_execution`), trying again with
/// backoff ([`FINISH_BACKOFF`]) before giving up: a recorded success must
/// not be lost to one store blip (the job would be called again once its
/// claim expired). The finish is idempotent per execution id.
async fn finish_with_retries(
    batcher: &ExecutionBatcher,
    finish: ExecutionFinish,
) -> Result<(), PipelineError> {
    let mut pauses = FINISH_BACKOFF.iter();
    loop {
        match batcher.finish(finish.clone()).await {
            Ok(()) => return Ok(()),
            Err(err) => match pauses.next() {
                Some(pause) => {
                    tracing::warn!(job_id = %finish.job_id, error = %err, retry_in_ms = pause.as_millis() as u64, "outcome not recorded; trying again");
                    tokio::time::sleep(*pause).await;
                }
                None => return Err(err),
            },
        }
    }
}

/// Republishes `envelope`'s job, same attempt, to run after about `wait`
/// (see [`defer_delay`]), and acks its delivery.
async fn defer(
    env: &ExecutorEnv,
    envelope: &JobEnvelope,
    held: &HeldDelivery,
    wait: Duration,
    why: Deferral,
) -> Result<(), PipelineError> {
    let delay = defer_delay(wait, rand::random::<f64>());
    tracing::debug!(job_id = %envelope.job.id, delay_ms = delay.as_millis() as u64, why = why.as_str(), "deferring");
    env.broker
        .publish(&[deferred(envelope, Utc::now(), delay)])
        .await?;
    env.metrics.deferred(&envelope.job.task_type_id, why, delay);
    held.ack().await
}

/// Calls the endpoint (its tokens are spent), then records the outcome and
/// releases the claims (`finish_execution`, the one round trip after the
/// call) before settling the delivery.
async fn attempt(
    env: &ExecutorEnv,
    batcher: &ExecutionBatcher,
    task: &TaskType,
    envelope: &JobEnvelope,
    held: &HeldDelivery,
    parameters: &BTreeMap<String, String>,
    mut finish: ExecutionFinish,
) -> Result<(), PipelineError> {
    let job = &envelope.job;
    let timeout = call_timeout(task, &env.settings);

    let started_at = Utc::now();
    let clock = Instant::now();
    let call = call_endpoint(&env.client, task, job, parameters, timeout).await;
    let duration = clock.elapsed();
    let completed_at = Utc::now();

    let settings = &env.settings;
    let retries = task.retries.unwrap_or(settings.max_retries);
    let backoff = Backoff {
        base: settings.retry_delay,
        cap: settings.max_retry_delay,
    };
    let outcome = classify(&call, completed_at);
    let attempt_error = match &outcome {
        Outcome::Success => None,
        Outcome::Throttled(_, error) | Outcome::Transient(error) | Outcome::Permanent(error) => {
            Some(error.clone())
        }
    };
    let mut budget = ThrottleBudget {
        throttles: 0,
        per_attempt: settings.throttles_per_attempt,
        age: (completed_at - job.created_at)
            .to_std()
            .unwrap_or(Duration::ZERO),
        max_age: settings.max_throttled_age,
    };
    if let Outcome::Throttled(wait, _) = &outcome {
        // The pause is the task's, for every replica (in the store), and
        // the throttle counts against the job's own budget.
        let pause = (*wait).min(backoff.cap);
        env.limiters.pauses.pause(&task.id, pause);
        let throttle = Throttle {
            task_type_id: task.id.clone(),
            job_id: job.id,
            pause,
            count_ttl: settings.max_throttled_age.max(Duration::from_secs(1)),
        };
        budget.throttles = match env.claims.record_throttle(&throttle).await {
            Ok(count) => count,
            Err(err) => {
                if let Err(release) = batcher.finish(finish).await {
                    tracing::warn!(job_id = %job.id, error = %release, "claims not released; they expire");
                }
                return Err(err.into());
            }
        };
    }
    let step = next_step(
        outcome,
        job.attempt,
        retries,
        &backoff,
        rand::random::<f64>(),
        &budget,
    );
    let mut result = ExecutionResult {
        job_id: job.id,
        status: Status::Success,
        started_at,
        completed_at,
        duration,
        error: None,
        response: None,
        next_attempt: None,
    };
    let record = |outcome: ExecutionOutcome| RecordExecution {
        task_type_id: task.id.clone(),
        job_id: job.id,
        outcome,
        completed_at,
        duration,
        lateness: (started_at - job.execute_after)
            .to_std()
            .unwrap_or(Duration::ZERO),
    };
    // The outcome is recorded (success marker) and the claims released in
    // one round trip, before the delivery is settled. A retry or throttle
    // is published first, then recorded as the job's next try (so a copy
    // of an older try is dropped as stale, and a failed publish leaves no
    // record that would make the requeued copy look stale).
    let next_try = |attempt: u32, delay: Duration| {
        let again = again(envelope, attempt, completed_at, delay);
        let next = NextTry {
            attempt,
            eligible_ms: again.job.execute_after.timestamp_millis(),
            ttl: settings
                .success_ttl
                .max(settings.max_throttled_age)
                .saturating_add(settings.max_retry_delay),
        };
        (again, next)
    };
    match step {
        Step::Succeed => {
            finish.success_ttl = Some(settings.success_ttl);
            finish.result = Some(result_write(settings, job, result.clone()));
            finish_with_retries(batcher, finish).await?;
            env.metrics.record(record(ExecutionOutcome::Success));
            held.ack().await
        }
        Step::Throttle(wait) => {
            tracing::info!(job_id = %job.id, wait_ms = wait.as_millis() as u64, throttles = budget.throttles, "endpoint asked to retry later; attempt kept");
            let (again, next) = next_try(job.attempt, wait);
            let kept = ExecutionResult {
                status: Status::Retrying,
                error: attempt_error.clone(),
                next_attempt: Some(again.job.execute_after),
                ..result.clone()
            };
            env.broker.publish(&[again]).await?;
            finish.next = Some(next);
            finish.result = Some(result_write(settings, job, kept));
            finish_with_retries(batcher, finish).await?;
            env.metrics.record(record(ExecutionOutcome::Throttle));
            held.ack().await
        }
        Step::Retry { attempt, delay } => {
            tracing::info!(job_id = %job.id, attempt, delay_ms = delay.as_millis() as u64, "attempt failed; retrying");
            let (again, next) = next_try(attempt, delay);
            let kept = ExecutionResult {
                status: Status::Retrying,
                error: attempt_error.clone(),
                next_attempt: Some(again.job.execute_after),
                ..result.clone()
            };
            env.broker.publish(&[again]).await?;
            finish.next = Some(next);
            finish.result = Some(result_write(settings, job, kept));
            finish_with_retries(batcher, finish).await?;
            env.metrics.record(record(ExecutionOutcome::Retry));
            held.ack().await
        }
        Step::DeadLetter { reason, error } => {
            let kept = ExecutionResult {
                status: Status::Failed,
                error: Some(error.clone()),
                ..result.clone()
            };
            finish.result = Some(result_write(settings, job, kept));
            finish_with_retries(batcher, finish).await?;
            tracing::warn!(job_id = %job.id, %reason, code = %error.code, "job failed for good; dead-lettering");
            result.status = Status::Failed;
            result.error = Some(error);
            if let CallResult::Status { body, .. } = &call
                && !body.is_empty()
            {
                result.response = Some(body.clone());
            }
            record_dead_letter(env, envelope, reason, result.error.clone()).await?;
            held.dead_letter(DeadLetter {
                reason,
                result: Some(result),
            })
            .await?;
            env.metrics
                .record(record(ExecutionOutcome::DeadLetter(reason)));
            Ok(())
        }
    }
}

/// How long a job of a task this replica does not know is deferred, from
/// the job's creation, before it is dead-lettered (`unknown_task_type`): a
/// reload bringing the task may be on its way (two default reload
/// intervals).
pub const UNKNOWN_TASK_GRACE: Duration = Duration::from_secs(10 * 60);

/// Longest pause between two looks at a job of an unknown task.
const UNKNOWN_TASK_DEFER_MAX: Duration = Duration::from_secs(30);

/// A job whose task is not in the catalog: republished (same attempt) to
/// look again after a pause as long as its age (1 s to 30 s), while it is
/// younger than [`UNKNOWN_TASK_GRACE`]; dead-lettered after.
async fn defer_unknown_task(
    env: &ExecutorEnv,
    envelope: &JobEnvelope,
    held: &HeldDelivery,
) -> Result<(), PipelineError> {
    let job = &envelope.job;
    let now = Utc::now();
    let age = (now - job.created_at).to_std().unwrap_or(Duration::ZERO);
    if age >= UNKNOWN_TASK_GRACE {
        tracing::warn!(job_id = %job.id, task = %job.task_type_id, "unknown task type past its grace period; dead-lettering");
        let reason = DeadLetterReason::UnknownTaskType;
        record_dead_letter(env, envelope, reason, None).await?;
        held.dead_letter(DeadLetter {
            reason,
            result: None,
        })
        .await?;
        env.metrics.dead_lettered(&job.task_type_id, reason);
        return Ok(());
    }
    let wait = age.clamp(Duration::from_secs(1), UNKNOWN_TASK_DEFER_MAX);
    tracing::info!(job_id = %job.id, task = %job.task_type_id, wait_ms = wait.as_millis() as u64, "unknown task type; deferring (a reload may bring it)");
    env.broker
        .publish(&[again(envelope, job.attempt, now, wait)])
        .await?;
    held.ack().await
}

/// Records the dead letter of `envelope`'s job (listed and replayed
/// through the API), before the broker's copy is sent.
async fn record_dead_letter(
    env: &ExecutorEnv,
    envelope: &JobEnvelope,
    reason: DeadLetterReason,
    last_error: Option<ErrorDetail>,
) -> Result<(), PipelineError> {
    let record = DeadLetterRecord {
        envelope: envelope.clone(),
        reason,
        last_error,
        attempts: envelope.job.attempt,
        dead_lettered_at: Utc::now(),
    };
    env.dead_letters.record_dead_letter(&record).await?;
    Ok(())
}

/// The envelope of the next try of `envelope`'s job: attempt `attempt`,
/// not before `now + delay`.
fn again(envelope: &JobEnvelope, attempt: u32, now: DateTime<Utc>, delay: Duration) -> JobEnvelope {
    let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    JobEnvelope::new(
        Job {
            attempt,
            execute_after: now + delay,
            ..envelope.job.clone()
        },
        JobMetadata {
            source: crate::domain::JobSource::Retry,
            origin: Some(envelope.metadata.first_source().clone()),
            ..envelope.metadata.clone()
        },
    )
}

/// The envelope of a job deferred for want of a token: the same attempt
/// and metadata, not before `now + delay`.
fn deferred(envelope: &JobEnvelope, now: DateTime<Utc>, delay: Duration) -> JobEnvelope {
    let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    JobEnvelope::new(
        Job {
            execute_after: now + delay,
            ..envelope.job.clone()
        },
        envelope.metadata.clone(),
    )
}
