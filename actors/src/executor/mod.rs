//! ExecutorActor: runs one job at a time against its task's endpoint.
//!
//! The path of a delivery is as short as the work: the task is borrowed
//! from the catalog's current snapshot (no copy); the claim before the call
//! and the finish after it go through the arbiter's [`ExecutionBatcher`],
//! which sends the claims (and the finishes) of every job in flight on
//! that arbiter as one pipeline per round; the rate limit is passed by
//! spending leased tokens without a message (one hop to the
//! [`RateLimiterActor`](crate::rate_limiter::RateLimiterActor) only when a
//! lease runs dry); every executor shares one HTTP client (a bounded idle
//! pool, redirects not followed); the JSON body is encoded straight from
//! the job; at most 1 KiB of the response is read (what a dead letter keeps); the
//! outcome is counted through a [`MetricsRecorder`] (no message).
//!
//! For each delivery: the rate limit (at most `max_token_wait`; a job
//! that gets no token in time is deferred, republished with the same
//! attempt, and its delivery acked), then `claim_execution` (skips a job whose success is
//! already recorded, acking it; claims the job for this execution; under
//! `overlap: skip` skips a second concurrent run for the same (task,
//! user); reads the user's parameters), the call,
//! `finish_execution` (records a success and releases the claims), then
//! the delivery is settled from the outcome:
//!
//! | outcome | what happens |
//! |---|---|
//! | 2xx | success recorded (`finish_execution`), then ack |
//! | 429 or 503 with `Retry-After` | counted against the job's throttle budget, the task (not the limiter) paused as long for every replica, the same attempt republished after that delay (capped by `execution.max_retry_delay`), then ack; past the budget dead-lettered (`throttled_too_long`) |
//! | timeout, connection error, 408, 429 without `Retry-After`, other 5xx | attempt + 1 republished after a full-jitter exponential backoff from `execution.retry_delay`, while attempts remain; else dead-lettered (`retries_exhausted`) |
//! | 3xx, other 4xx, unusable request | dead-lettered at once (`permanent_failure`) |
//!
//! A job whose task this replica does not know (yet) is republished a
//! little later, same attempt, for up to [`UNKNOWN_TASK_GRACE`] after its
//! creation (a reload may bring the task), then dead-lettered
//! (`unknown_task_type`).
//!
//! Before calling, an execution claims its job id (the run claim of the
//! pseudo user `job.{job id}`, held by a fresh execution id): a second copy
//! of the same job arriving meanwhile (the last batch of a resumed fan-out)
//! is republished a few seconds later instead of calling twice, and is then
//! skipped as already succeeded.
//!
//! **Invariant:** a delivery is acked only after its outcome is recorded
//! (success mark, retry published, or dead letter confirmed): a batched
//! finish answers only once its round is acknowledged by Redis. When the
//! store or broker fails midway, the delivery is requeued instead.
//!
//! A panic while running a job stops the actor; its supervisor restarts it
//! and the job it held is requeued, so it is redelivered, not lost.

mod call;
mod outcome;

use std::{
    collections::BTreeMap,
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use futures::FutureExt;
use tokio::sync::mpsc::UnboundedSender;
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    batcher::ExecutionBatcher,
    broker::{DeadLetter, Delivery, DeliveryHandle, JobBroker},
    catalog::TaskCatalog,
    domain::{
        DeadLetterReason, ErrorDetail, ExecutionResult, Job, JobEnvelope, JobMetadata,
        OverlapPolicy, Status, TaskType, TaskTypeId, UserId,
    },
    error::PipelineError,
    messages::{ExecutionOutcome, RecordExecution},
    metrics::{Deferral, MetricsRecorder, Skip},
    rate_limiter::{RateLimit, TaskPauses},
    store::{
        ClaimOutcome, ExecutionClaim, ExecutionFinish, NextTry, StateStore, Throttle,
        dead_letters::{DeadLetterRecord, DeadLetterStore},
        results::{AttemptRecord, PeriodOf, ResultWrite},
    },
};
use call::{CallResult, call_endpoint, fresh_uuid};
pub use call::{call_timeout, http_client};
use outcome::{Backoff, Outcome, Step, ThrottleBudget, classify, defer_delay, next_step};

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

/// Runs one delivery. The executor must be idle (the dispatcher
/// guarantees it); it reports back on its idle channel when done.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ExecuteJob {
    /// The job and its settlement handle.
    pub delivery: Delivery,
}

/// Stops the job in hand and requeues it (shutdown after the grace
/// period). Answers once the requeue is settled.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct AbandonJob;

/// Stops the actor as a crash would; its supervisor restarts it and the
/// job it held is requeued.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct RestartExecutor;

/// Timeouts, retries and retention of the executors.
#[derive(Debug, Clone)]
pub struct ExecutionSettings {
    /// `execution.timeout`: upper bound of any call.
    pub timeout: Duration,
    /// Retries of a task that does not set its own.
    pub max_retries: u32,
    /// Base of the exponential backoff.
    pub retry_delay: Duration,
    /// Cap of the backoff and of `Retry-After` waits.
    pub max_retry_delay: Duration,
    /// How long a recorded success keeps duplicates from running.
    pub success_ttl: Duration,
    /// `execution.max_token_wait`: the longest a delivery waits for a
    /// rate-limit token before its job is deferred.
    pub max_token_wait: Duration,
    /// `execution.throttles_per_attempt`: throttles (429/503 with
    /// `Retry-After`) a job may take per allowed attempt.
    pub throttles_per_attempt: u32,
    /// `execution.max_throttled_age`: no throttled job is tried again
    /// later than this after it was created.
    pub max_throttled_age: Duration,
    /// `monitoring.result_retention`: how long a job's results (`GET
    /// /jobs/{id}`) are kept after its last attempt.
    pub result_retention: Duration,
    /// `monitoring.record_pending`: whether the distributor records the
    /// jobs it publishes as `pending`.
    pub record_pending: bool,
}

/// The rate limits of the pool: one per task with a limit of its own (its
/// bucket, then the global one), and the global one alone for the others.
#[derive(Clone, Default)]
pub struct Limiters {
    /// The limit of tasks without one of their own.
    pub global: Option<RateLimit>,
    /// Per-task limits (each also spends a global token).
    pub per_task: Arc<BTreeMap<TaskTypeId, RateLimit>>,
    /// This replica's copy of the tasks' `Retry-After` pauses.
    pub pauses: Arc<TaskPauses>,
    /// This replica's copy of the operator pauses (`POST /tasks/{id}/pause`).
    pub held: Arc<crate::pause::OperatorPauses>,
}

impl Limiters {
    /// The limit a job of `task` must pass, if any.
    pub fn for_task(&self, task: &TaskTypeId) -> Option<&RateLimit> {
        self.per_task.get(task).or(self.global.as_ref())
    }
}

/// What every executor shares.
pub struct ExecutorEnv {
    /// Shared state.
    pub store: Arc<dyn StateStore>,
    /// Where retries and dead letters go.
    pub broker: Arc<dyn JobBroker>,
    /// Where jobs that failed for good are recorded (for listing and
    /// replay), before the broker's copy goes to the failed queue.
    pub dead_letters: Arc<dyn DeadLetterStore>,
    /// Task definitions in force.
    pub catalog: TaskCatalog,
    /// Rate limits.
    pub limiters: Limiters,
    /// The one HTTP client of the pool (see [`http_client`]).
    pub client: reqwest::Client,
    /// Where outcomes are counted.
    pub metrics: MetricsRecorder,
    /// Timeouts and retries.
    pub settings: ExecutionSettings,
    /// Jobs in flight over the pool, for `/health`'s `active_jobs`.
    pub active: Arc<AtomicUsize>,
}

/// A delivery that must be settled exactly once. Dropped unsettled (the
/// job future was cancelled or panicked), it requeues itself.
pub struct HeldDelivery {
    handle: Mutex<Option<Box<dyn DeliveryHandle>>>,
}

impl HeldDelivery {
    /// Holds `handle` until it is settled.
    pub fn new(handle: Box<dyn DeliveryHandle>) -> Self {
        HeldDelivery {
            handle: Mutex::new(Some(handle)),
        }
    }

    fn take(&self) -> Option<Box<dyn DeliveryHandle>> {
        match self.handle.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
    }

    /// Acks (no-op when already settled).
    pub async fn ack(&self) -> Result<(), PipelineError> {
        if let Some(handle) = self.take() {
            handle.ack().await?;
        }
        Ok(())
    }

    /// Requeues (no-op when already settled).
    pub async fn requeue(&self) -> Result<(), PipelineError> {
        if let Some(handle) = self.take() {
            handle.requeue().await?;
        }
        Ok(())
    }

    /// Dead-letters (no-op when already settled).
    pub async fn dead_letter(&self, letter: DeadLetter) -> Result<(), PipelineError> {
        if let Some(handle) = self.take() {
            handle.dead_letter(letter).await?;
        }
        Ok(())
    }
}

impl Drop for HeldDelivery {
    fn drop(&mut self) {
        if let Some(handle) = self.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if let Err(err) = handle.requeue().await {
                    tracing::warn!(error = %err, "requeue of an abandoned job failed");
                }
            });
        }
    }
}

struct Running {
    job_id: Uuid,
    task_type_id: TaskTypeId,
    user_id: UserId,
    /// Holder of the job's execution claim.
    execution: Uuid,
    held: Arc<HeldDelivery>,
    spawned: SpawnHandle,
}

impl Running {
    /// Releases the claims of a job that will not finish here, then
    /// requeues it (in that order, so the redelivered copy finds the job
    /// free).
    async fn give_back(self, env: Arc<ExecutorEnv>) {
        let finish = ExecutionFinish {
            task_type_id: self.task_type_id,
            user_id: self.user_id,
            job_id: self.job_id,
            execution: self.execution,
            // Released only if this job holds it, so asking is harmless.
            run_claimed: true,
            success_ttl: None,
            next: None,
            // The `running` record stays until the requeued copy's claim.
            result: None,
        };
        if let Err(err) = env.store.finish_execution(&finish).await {
            tracing::warn!(job_id = %self.job_id, error = %err, "claims not released; they expire");
        }
        if let Err(err) = self.held.requeue().await {
            tracing::warn!(job_id = %self.job_id, error = %err, "requeue failed; the broker will redeliver");
        }
    }
}

/// One executor of the pool.
pub struct ExecutorActor {
    index: usize,
    env: Arc<ExecutorEnv>,
    /// This arbiter's claim and finish rounds.
    batcher: ExecutionBatcher,
    /// Receives `index` whenever this executor becomes idle.
    idle: UnboundedSender<usize>,
    current: Option<Running>,
    /// Numbers the jobs, so a stale completion is recognised.
    generation: u64,
}

impl ExecutorActor {
    /// Executor number `index` of the pool.
    pub fn new(
        index: usize,
        env: Arc<ExecutorEnv>,
        batcher: ExecutionBatcher,
        idle: UnboundedSender<usize>,
    ) -> Self {
        ExecutorActor {
            index,
            env,
            batcher,
            idle,
            current: None,
            generation: 0,
        }
    }

    fn mark_idle(&self) {
        self.env.active.fetch_sub(1, Ordering::Relaxed);
        let _ = self.idle.send(self.index);
    }

    /// Requeues the job in hand, if any, and reports idle.
    fn abandon(&mut self, ctx: &mut Context<Self>) -> Option<Running> {
        let running = self.current.take()?;
        ctx.cancel_future(running.spawned);
        tracing::info!(job_id = %running.job_id, executor = self.index, "job abandoned; requeueing");
        self.mark_idle();
        Some(running)
    }
}

impl Actor for ExecutorActor {
    type Context = Context<Self>;
}

impl Supervised for ExecutorActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!(executor = self.index, "executor restarting");
        if let Some(running) = self.current.take() {
            actix::spawn(running.give_back(self.env.clone()));
            self.mark_idle();
        }
    }
}

impl Handler<ExecuteJob> for ExecutorActor {
    type Result = ();

    fn handle(&mut self, msg: ExecuteJob, ctx: &mut Context<Self>) {
        let held = Arc::new(HeldDelivery::new(msg.delivery.handle));
        if self.current.is_some() {
            tracing::error!(
                executor = self.index,
                "executor handed a job while busy; requeueing it"
            );
            actix::spawn(async move {
                let _ = held.requeue().await;
            });
            return;
        }
        let envelope = msg.delivery.envelope;
        let job_id = envelope.job.id;
        let task_type_id = envelope.job.task_type_id.clone();
        let user_id = envelope.job.user_id.clone();
        let execution = fresh_uuid();
        self.env.active.fetch_add(1, Ordering::Relaxed);
        self.generation += 1;
        let generation = self.generation;
        // Every log line of the job carries its id, task, user and attempt.
        let span = tracing::info_span!("job", %job_id, task = %task_type_id, user = %user_id, attempt = envelope.job.attempt);
        let job = run_job(
            self.env.clone(),
            self.batcher.clone(),
            envelope,
            held.clone(),
            execution,
        )
        .instrument(span);
        let spawned = ctx.spawn(AssertUnwindSafe(job).catch_unwind().into_actor(self).map(
            move |result, act, ctx| {
                if act.generation != generation || act.current.is_none() {
                    return;
                }
                let running = act.current.take();
                if result.is_err() {
                    tracing::error!(%job_id, executor = act.index, "executor panicked; restarting it");
                    if let Some(running) = running {
                        actix::spawn(running.give_back(act.env.clone()));
                    }
                    ctx.stop();
                }
                act.mark_idle();
            },
        ));
        self.current = Some(Running {
            job_id,
            task_type_id,
            user_id,
            execution,
            held,
            spawned,
        });
    }
}

impl Handler<AbandonJob> for ExecutorActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: AbandonJob, ctx: &mut Context<Self>) -> Self::Result {
        let running = self.abandon(ctx);
        let env = self.env.clone();
        Box::pin(async move {
            if let Some(running) = running {
                running.give_back(env).await;
            }
        })
    }
}

impl Handler<RestartExecutor> for ExecutorActor {
    type Result = ();

    fn handle(&mut self, _: RestartExecutor, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Runs one job to a settled delivery.
async fn run_job(
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
        budget.throttles = match env.store.record_throttle(&throttle).await {
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
            source: "retry".to_owned(),
            origin: Some(envelope.metadata.first_source().to_owned()),
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
