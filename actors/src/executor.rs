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

/// Shortest deferral of a job that got no token within the wait cap.
const MIN_DEFER: Duration = Duration::from_millis(250);

/// Response bytes kept in a dead letter's `ExecutionResult`.
const KEPT_RESPONSE_BYTES: usize = 1024;

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

/// The HTTP client every executor of a pool shares: at most `pool_size`
/// idle connections kept per host (no more calls than executors are ever
/// in flight), redirects not followed (a 3xx is the endpoint's answer).
pub fn http_client(pool_size: usize) -> Result<reqwest::Client, PipelineError> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(pool_size.max(1))
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .build()
        .map_err(|err| PipelineError::HttpClient(err.to_string()))
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

/// How long a job that got no token within the wait cap is deferred: the
/// wait the limiter asked for, at least [`MIN_DEFER`], plus up to
/// [`MIN_DEFER`] of jitter (`jitter` in [0, 1)) so deferred jobs do not
/// come back together.
pub fn defer_delay(wait: Duration, jitter: f64) -> Duration {
    wait.max(MIN_DEFER) + MIN_DEFER.mul_f64(jitter.clamp(0.0, 1.0))
}

/// The smallest of the task's `timeout`, its `config.max_duration` and
/// `execution.timeout`.
pub fn call_timeout(task: &TaskType, settings: &ExecutionSettings) -> Duration {
    let mut timeout = task.timeout.min(settings.timeout);
    if let Some(max) = task.config.max_duration {
        timeout = timeout.min(max);
    }
    timeout.max(Duration::from_millis(1))
}

/// The JSON body of a call (POST, PUT, PATCH), encoded straight from the
/// job.
#[derive(serde::Serialize)]
struct CallBody<'a> {
    job_id: Uuid,
    task_type_id: &'a TaskTypeId,
    user_id: &'a UserId,
    scheduled_at: DateTime<Utc>,
    attempt: u32,
    parameters: &'a BTreeMap<String, String>,
}

/// A random (version 4) id from the thread's generator, without a system
/// call.
fn fresh_uuid() -> Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

/// What a call to an endpoint came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallResult {
    /// The endpoint answered.
    Status {
        /// HTTP status code.
        code: u16,
        /// The `Retry-After` header, if any.
        retry_after: Option<String>,
        /// The start of the response body.
        body: Vec<u8>,
    },
    /// No answer within the timeout.
    Timeout,
    /// The connection could not be made or broke.
    Connect(String),
    /// The request could not be built (bad method, URL, header).
    Invalid(String),
}

/// Calls the endpoint of `task` for `job`: the task's method and headers,
/// `Idempotency-Key: <job id>`, `X-Taskqueue-Attempt: <n>`,
/// `X-Taskqueue-Execute-After: <RFC 3339 instant the job was due>` (so an
/// endpoint can tell how late it runs), and as the body, when the task has
/// a `config.payload` template, the job's payload with its
/// `{{param.NAME}}` filled from `parameters`, else the job as JSON (query
/// parameters for GET and DELETE).
pub async fn call_endpoint(
    client: &reqwest::Client,
    task: &TaskType,
    job: &Job,
    parameters: &BTreeMap<String, String>,
    timeout: Duration,
) -> CallResult {
    let method = match reqwest::Method::from_bytes(task.config.method.to_uppercase().as_bytes()) {
        Ok(method) => method,
        Err(err) => return CallResult::Invalid(format!("method {:?}: {err}", task.config.method)),
    };
    let mut request = client
        .request(method.clone(), &task.config.endpoint)
        .timeout(timeout);
    for (name, value) in &task.config.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    request = request
        .header("Idempotency-Key", job.id.to_string())
        .header("X-Taskqueue-Attempt", job.attempt.to_string())
        .header(
            "X-Taskqueue-Execute-After",
            job.execute_after
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        );
    let in_query = method == reqwest::Method::GET || method == reqwest::Method::DELETE;
    if let Err(problem) = check_parameters(parameters, in_query) {
        return CallResult::Invalid(problem);
    }
    if in_query {
        let mut query: Vec<(String, String)> = vec![
            ("job_id".to_owned(), job.id.to_string()),
            ("task_type_id".to_owned(), job.task_type_id.to_string()),
            ("user_id".to_owned(), job.user_id.to_string()),
            ("scheduled_at".to_owned(), job.scheduled_at.to_rfc3339()),
            ("attempt".to_owned(), job.attempt.to_string()),
        ];
        query.extend(parameters.iter().map(|(k, v)| (k.clone(), v.clone())));
        request = request.query(&query);
    } else if let Some(template) = &task.config.payload {
        // The task has a payload template: the job's payload (rendered for
        // the user when the job was made, or brought by the message) is the
        // body; a job made before the template was added renders it now.
        let payload = if job.payload.is_empty() {
            crate::domain::payload::render_payload(template, &job.user_id)
        } else {
            job.payload.clone()
        };
        if !task
            .config
            .headers
            .keys()
            .any(|name| name.eq_ignore_ascii_case("content-type"))
        {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json");
        }
        request = request.body(crate::domain::payload::fill_parameters(
            &payload, parameters,
        ));
    } else {
        request = request.json(&CallBody {
            job_id: job.id,
            task_type_id: &job.task_type_id,
            user_id: &job.user_id,
            scheduled_at: job.scheduled_at,
            attempt: job.attempt,
            parameters,
        });
    }
    let call = async {
        let mut response = request.send().await?;
        let code = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Only the first KEPT_RESPONSE_BYTES are kept, so no more is read
        // (a longer body costs its connection, not its size in memory).
        let mut body = Vec::new();
        while body.len() < KEPT_RESPONSE_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = KEPT_RESPONSE_BYTES - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) | Err(_) => break,
            }
        }
        Ok::<_, reqwest::Error>(CallResult::Status {
            code,
            retry_after,
            body,
        })
    };
    // reqwest's error text names the URL (credentials, and every user
    // parameter of a GET): it is left out, and the task's secrets and the
    // user's parameter values are redacted from what remains.
    match tokio::time::timeout(timeout, call).await {
        Err(_) => CallResult::Timeout,
        Ok(Ok(result)) => result,
        Ok(Err(err)) if err.is_timeout() => CallResult::Timeout,
        Ok(Err(err)) if err.is_builder() => {
            CallResult::Invalid(redact(&error_chain(&err.without_url()), task, parameters))
        }
        Ok(Err(err)) => {
            CallResult::Connect(redact(&error_chain(&err.without_url()), task, parameters))
        }
    }
}

/// The fields taskqueue puts in every call's query string (GET, DELETE);
/// no user parameter may take one of these names.
pub const BUILT_IN_FIELDS: [&str; 5] = [
    "job_id",
    "task_type_id",
    "user_id",
    "scheduled_at",
    "attempt",
];

/// Most user parameters sent with one call.
pub const MAX_PARAMETERS: usize = 64;

/// Longest parameter name, in bytes.
pub const MAX_PARAMETER_NAME: usize = 128;

/// Most bytes of all parameter names and values of one call together.
pub const MAX_PARAMETER_BYTES: usize = 16 * 1024;

/// Checks a user's parameters before they are sent: at most
/// [`MAX_PARAMETERS`], names of at most [`MAX_PARAMETER_NAME`] bytes, all
/// together at most [`MAX_PARAMETER_BYTES`], and, when they go in the
/// query string (`in_query`), none named like a [`BUILT_IN_FIELDS`] entry
/// (it would shadow the real one). The problem names no value.
pub fn check_parameters(
    parameters: &BTreeMap<String, String>,
    in_query: bool,
) -> Result<(), String> {
    if parameters.len() > MAX_PARAMETERS {
        return Err(format!(
            "{} parameters, at most {MAX_PARAMETERS} allowed",
            parameters.len()
        ));
    }
    let mut bytes = 0usize;
    for (name, value) in parameters {
        if name.len() > MAX_PARAMETER_NAME {
            return Err(format!(
                "a parameter name of {} bytes, at most {MAX_PARAMETER_NAME} allowed",
                name.len()
            ));
        }
        if in_query && BUILT_IN_FIELDS.contains(&name.as_str()) {
            return Err(format!(
                "parameter {name:?} would shadow the built-in query field of that name"
            ));
        }
        bytes = bytes.saturating_add(name.len() + value.len());
    }
    if bytes > MAX_PARAMETER_BYTES {
        return Err(format!(
            "parameters of {bytes} bytes, at most {MAX_PARAMETER_BYTES} allowed"
        ));
    }
    Ok(())
}

/// `text` with every secret of the call replaced by `[redacted]`: the
/// task's header values, the endpoint's user info and query, and the
/// user's parameter values.
fn redact(text: &str, task: &TaskType, parameters: &BTreeMap<String, String>) -> String {
    let mut secrets: Vec<String> = task
        .config
        .headers
        .values()
        .chain(parameters.values())
        .cloned()
        .collect();
    if let Ok(url) = reqwest::Url::parse(&task.config.endpoint) {
        secrets.push(url.username().to_owned());
        secrets.extend(url.password().map(str::to_owned));
        secrets.extend(url.query().map(str::to_owned));
        secrets.extend(url.query_pairs().map(|(_, value)| value.into_owned()));
    }
    // Longest first, so a secret containing another is replaced whole;
    // very short values (a `1`, a `true`) would redact ordinary words.
    secrets.retain(|secret| secret.len() >= 4);
    secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    let mut text = text.to_owned();
    for secret in &secrets {
        text = text.replace(secret.as_str(), "[redacted]");
    }
    text
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// How an attempt ended, before counting attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Success,
    /// The endpoint asked to come back after this long (429/503 with
    /// `Retry-After`); the detail names the answer.
    Throttled(Duration, ErrorDetail),
    /// Worth another attempt.
    Transient(ErrorDetail),
    /// Never worth another attempt.
    Permanent(ErrorDetail),
}

/// Classifies a call's result (`now` reads `Retry-After` dates).
pub fn classify(call: &CallResult, now: DateTime<Utc>) -> Outcome {
    let detail = |code: String, message: String, retry: bool| ErrorDetail {
        code,
        message,
        retry,
    };
    match call {
        CallResult::Status { code, .. } if (200..300).contains(code) => Outcome::Success,
        CallResult::Status {
            code: code @ (429 | 503),
            retry_after: Some(value),
            ..
        } => match parse_retry_after(value, now) {
            Some(wait) => Outcome::Throttled(
                wait,
                detail(
                    format!("http_{code}"),
                    format!("endpoint answered {code} with Retry-After {value:?}"),
                    true,
                ),
            ),
            None => Outcome::Transient(detail(
                format!("http_{code}"),
                format!("endpoint answered {code} with an unreadable Retry-After {value:?}"),
                true,
            )),
        },
        CallResult::Status { code, .. } if *code == 408 || *code == 429 || *code >= 500 => {
            Outcome::Transient(detail(
                format!("http_{code}"),
                format!("endpoint answered {code}"),
                true,
            ))
        }
        CallResult::Status { code, .. } => Outcome::Permanent(detail(
            format!("http_{code}"),
            format!("endpoint answered {code}"),
            false,
        )),
        CallResult::Timeout => Outcome::Transient(detail(
            "timeout".to_owned(),
            "no answer within the timeout".to_owned(),
            true,
        )),
        CallResult::Connect(message) => {
            Outcome::Transient(detail("connect".to_owned(), message.clone(), true))
        }
        CallResult::Invalid(message) => {
            Outcome::Permanent(detail("invalid_request".to_owned(), message.clone(), false))
        }
    }
}

/// Reads a `Retry-After` value: whole seconds, or an HTTP date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// `90s` for 90 seconds (a duration in error text).
fn humantime_secs(duration: Duration) -> String {
    format!("{}s", duration.as_secs())
}

/// Exponential backoff with full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first retry's delay.
    pub base: Duration,
    /// No delay exceeds this.
    pub cap: Duration,
}

impl Backoff {
    /// The delay after attempt `attempt` (1-based) failed: uniform in
    /// [0, min(cap, base * 2^(attempt-1))], `jitter` in [0, 1) picking the
    /// point.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        let ceiling = self.base.saturating_mul(1 << exponent).min(self.cap);
        ceiling.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// What to do with a delivery after its attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Record the success and ack.
    Succeed,
    /// Republish the same attempt to run after this long.
    Throttle(Duration),
    /// Republish as attempt `attempt` after `delay`.
    Retry {
        /// The next attempt's number.
        attempt: u32,
        /// How long it waits.
        delay: Duration,
    },
    /// Send to the dead-letter queue.
    DeadLetter {
        /// Why (of [`DeadLetterReason::OF_EXECUTION`]).
        reason: DeadLetterReason,
        /// The last error.
        error: ErrorDetail,
    },
}

/// A job's throttles against its budget: `per_attempt` throttles per
/// allowed attempt, and no try later than `max_age` after the job was
/// created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleBudget {
    /// The job's throttles so far, the one being decided included.
    pub throttles: u32,
    /// Throttles allowed per allowed attempt (1 + retries).
    pub per_attempt: u32,
    /// How long ago the job was created.
    pub age: Duration,
    /// The oldest a job may be when tried again after a throttle.
    pub max_age: Duration,
}

/// Decides the step after attempt `attempt` of a job allowed `retries`
/// retries ended with `outcome`; a throttle past `budget` (more throttles
/// than `per_attempt × (1 + retries)`, or a next try past `max_age`) is
/// dead-lettered as `throttled_too_long`.
pub fn next_step(
    outcome: Outcome,
    attempt: u32,
    retries: u32,
    backoff: &Backoff,
    jitter: f64,
    budget: &ThrottleBudget,
) -> Step {
    match outcome {
        Outcome::Success => Step::Succeed,
        Outcome::Throttled(wait, mut error) => {
            let wait = wait.min(backoff.cap);
            let allowed = budget.per_attempt.saturating_mul(retries.saturating_add(1));
            if budget.throttles > allowed {
                error.retry = false;
                error.message = format!(
                    "{}; {} throttles, {allowed} allowed",
                    error.message, budget.throttles
                );
                Step::DeadLetter {
                    reason: DeadLetterReason::ThrottledTooLong,
                    error,
                }
            } else if budget.age.saturating_add(wait) > budget.max_age {
                error.retry = false;
                error.message = format!(
                    "{}; the job would be older than {}",
                    error.message,
                    humantime_secs(budget.max_age)
                );
                Step::DeadLetter {
                    reason: DeadLetterReason::ThrottledTooLong,
                    error,
                }
            } else {
                Step::Throttle(wait)
            }
        }
        Outcome::Transient(_) if attempt <= retries => Step::Retry {
            attempt: attempt + 1,
            delay: backoff.delay(attempt, jitter),
        },
        Outcome::Transient(error) => Step::DeadLetter {
            reason: DeadLetterReason::RetriesExhausted,
            error,
        },
        Outcome::Permanent(error) => Step::DeadLetter {
            reason: DeadLetterReason::PermanentFailure,
            error,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn status(code: u16, retry_after: Option<&str>) -> CallResult {
        CallResult::Status {
            code,
            retry_after: retry_after.map(str::to_owned),
            body: Vec::new(),
        }
    }

    /// A throttle budget with `throttles` so far, 10 per attempt, a job
    /// `age_secs` old of at most a day.
    fn budget(throttles: u32, age_secs: u64) -> ThrottleBudget {
        ThrottleBudget {
            throttles,
            per_attempt: 10,
            age: Duration::from_secs(age_secs),
            max_age: Duration::from_secs(86_400),
        }
    }

    /// (call, attempt, retries) -> the step, with zero jitter.
    fn check(call: CallResult, attempt: u32, retries: u32, expected: &str) {
        check_budget(call, attempt, retries, budget(1, 0), expected);
    }

    fn check_budget(
        call: CallResult,
        attempt: u32,
        retries: u32,
        budget: ThrottleBudget,
        expected: &str,
    ) {
        let backoff = Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
        };
        let step = next_step(
            classify(&call, now()),
            attempt,
            retries,
            &backoff,
            1.0,
            &budget,
        );
        let got = match &step {
            Step::Succeed => "succeed".to_owned(),
            Step::Throttle(wait) => format!("throttle {}ms", wait.as_millis()),
            Step::Retry { attempt, delay } => {
                format!("retry #{attempt} within {}ms", delay.as_millis())
            }
            Step::DeadLetter { reason, error } => format!("{reason} {}", error.code),
        };
        assert_eq!(got, expected, "{call:?} attempt {attempt} of 1+{retries}");
    }

    #[test]
    fn outcomes_map_to_steps() {
        check(status(200, None), 1, 3, "succeed");
        check(status(204, None), 4, 3, "succeed");
        check(status(429, Some("1")), 1, 3, "throttle 1000ms");
        check(status(503, Some("2")), 4, 3, "throttle 2000ms");
        check(status(503, Some("3600")), 1, 3, "throttle 60000ms");
        check(
            status(429, Some("Thu, 01 Jan 2026 00:00:05 GMT")),
            1,
            3,
            "throttle 5000ms",
        );
        check(status(429, None), 1, 3, "retry #2 within 1000ms");
        check(status(503, None), 2, 3, "retry #3 within 2000ms");
        check(status(500, None), 3, 3, "retry #4 within 4000ms");
        check(status(500, None), 4, 3, "retries_exhausted http_500");
        check(status(408, None), 1, 0, "retries_exhausted http_408");
        check(CallResult::Timeout, 1, 1, "retry #2 within 1000ms");
        check(
            CallResult::Connect("refused".into()),
            2,
            1,
            "retries_exhausted connect",
        );
        check(status(404, None), 1, 3, "permanent_failure http_404");
        check(status(400, None), 1, 3, "permanent_failure http_400");
        check(status(301, None), 1, 3, "permanent_failure http_301");
        check(
            CallResult::Invalid("bad url".into()),
            1,
            3,
            "permanent_failure invalid_request",
        );
    }

    #[test]
    fn throttles_past_their_budget_are_dead_lettered() {
        let throttled = || status(429, Some("1"));
        // 10 per allowed attempt: 1 + 2 retries allow 30.
        check_budget(throttled(), 1, 2, budget(30, 0), "throttle 1000ms");
        check_budget(
            throttled(),
            1,
            2,
            budget(31, 0),
            "throttled_too_long http_429",
        );
        check_budget(
            status(503, Some("0")),
            1,
            0,
            budget(11, 0),
            "throttled_too_long http_503",
        );
        // A past date is a zero wait; it still counts.
        check_budget(
            status(429, Some("Wed, 31 Dec 2025 23:59:00 GMT")),
            1,
            0,
            budget(11, 0),
            "throttled_too_long http_429",
        );
        // The next try would come after the job's maximum age.
        check_budget(throttled(), 1, 3, budget(1, 86_399), "throttle 1000ms");
        check_budget(
            throttled(),
            1,
            3,
            budget(1, 86_400),
            "throttled_too_long http_429",
        );
        // Other outcomes ignore the throttle budget.
        check_budget(
            status(500, None),
            1,
            3,
            budget(99, 90_000),
            "retry #2 within 1000ms",
        );
    }

    #[test]
    fn deferrals_wait_at_least_the_minimum_with_jitter() {
        assert_eq!(defer_delay(Duration::ZERO, 0.0), MIN_DEFER);
        assert_eq!(
            defer_delay(Duration::from_secs(2), 0.5),
            Duration::from_secs(2) + MIN_DEFER / 2
        );
    }

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn parameters_are_bounded_and_never_shadow_built_in_fields() {
        let check = |parameters: BTreeMap<String, String>, in_query: bool, ok: bool| {
            let got = check_parameters(&parameters, in_query);
            assert_eq!(got.is_ok(), ok, "{got:?}");
        };
        check(params(&[("lang", "fr")]), true, true);
        check(params(&[("user_id", "mallory")]), true, false);
        check(params(&[("attempt", "1")]), true, false);
        // In a JSON body they sit under `parameters`: nothing to shadow.
        check(params(&[("user_id", "mallory")]), false, true);
        let many: BTreeMap<String, String> = (0..=MAX_PARAMETERS)
            .map(|n| (format!("p{n}"), "v".to_owned()))
            .collect();
        check(many, false, false);
        check(
            params(&[(&"n".repeat(MAX_PARAMETER_NAME + 1), "v")]),
            false,
            false,
        );
        check(
            params(&[("big", &"v".repeat(MAX_PARAMETER_BYTES))]),
            false,
            false,
        );
        check(
            params(&[("ok", &"v".repeat(MAX_PARAMETER_BYTES - 2))]),
            false,
            true,
        );
    }

    fn secret_task(endpoint: &str) -> TaskType {
        serde_json::from_value(serde_json::json!({
            "id": "report", "name": "report",
            "interval": {"type": "daily", "value": 1}, "timeout": "5s",
            "config": {
                "endpoint": endpoint, "method": "GET",
                "headers": {"Authorization": "Bearer hunter2-token"}
            }
        }))
        .unwrap()
    }

    #[actix::test]
    async fn connection_errors_name_no_url_and_no_secret() {
        // Nothing listens on port 1 of loopback: the connection is refused.
        let task = secret_task("http://admin:s3cret-pass@127.0.0.1:1/hook?api_key=k3y-value");
        let job = Job {
            id: Uuid::new_v4(),
            task_type_id: task.id.clone(),
            user_id: UserId::parse("alice").unwrap(),
            scheduled_at: now(),
            execute_after: now(),
            attempt: 1,
            priority: crate::domain::Priority::Normal,
            payload: Vec::new(),
            created_at: now(),
        };
        let parameters = params(&[("email", "alice@example.com")]);
        let client = http_client(1).unwrap();
        let call = call_endpoint(&client, &task, &job, &parameters, Duration::from_secs(5)).await;
        let CallResult::Connect(text) = call else {
            panic!("expected a connection error, got {call:?}");
        };
        for secret in [
            "s3cret-pass",
            "k3y-value",
            "alice@example.com",
            "127.0.0.1:1/hook",
            "admin",
        ] {
            assert!(!text.contains(secret), "{secret:?} in {text:?}");
        }
    }

    #[test]
    fn redaction_replaces_every_secret_of_the_call() {
        let task = secret_task("https://bot:pa55word@api.example/x?sig=abcdef");
        let text = "failed: pa55word abcdef Bearer hunter2-token alice@example.com 1";
        let got = redact(
            text,
            &task,
            &params(&[("email", "alice@example.com"), ("n", "1")]),
        );
        assert_eq!(got, "failed: [redacted] [redacted] [redacted] [redacted] 1");
    }

    #[test]
    fn backoff_is_capped_full_jitter() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        assert_eq!(backoff.delay(1, 0.0), Duration::ZERO);
        assert_eq!(backoff.delay(1, 0.5), Duration::from_millis(50));
        assert_eq!(backoff.delay(3, 0.5), Duration::from_millis(200));
        assert_eq!(backoff.delay(10, 0.5), Duration::from_millis(500));
        assert_eq!(backoff.delay(u32::MAX, 1.0), Duration::from_secs(1));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("7", now()), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 31 Dec 2025 23:59:00 GMT", now()),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now()), None);
    }
}
