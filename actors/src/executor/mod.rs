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
//!
//! The executor by concern: this file holds the actor, its messages and
//! what it owns (the shared [`ExecutorEnv`], the [`HeldDelivery`]);
//! `run` runs one job to a settled delivery, `call` makes the HTTP call,
//! `outcome` classifies its result and decides the next step (retry
//! backoff, throttle budget).

mod call;
mod outcome;
mod run;

use std::{
    collections::BTreeMap,
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use actix::prelude::*;
use futures::FutureExt;
use tokio::sync::mpsc::UnboundedSender;
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    batcher::ExecutionBatcher,
    broker::{DeadLetter, Delivery, DeliveryHandle, JobBroker},
    catalog::TaskCatalog,
    domain::{TaskTypeId, UserId},
    error::PipelineError,
    metrics::MetricsRecorder,
    rate_limiter::{RateLimit, TaskPauses},
    store::{ClaimStore, ExecutionFinish, dead_letters::DeadLetterStore},
};
use call::fresh_uuid;
pub use call::{call_timeout, http_client};
pub use run::UNKNOWN_TASK_GRACE;
use run::run_job;

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
    /// Execution claims, finishes and throttles.
    pub claims: Arc<dyn ClaimStore>,
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
        if let Err(err) = env.claims.finish_execution(&finish).await {
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
