//! SchedulerActor: decides, every `scheduler.check_interval`, which periods
//! of which task types are due, and hands them to the distributor.
//!
//! Per task type and tick, under the lock `{prefix}:schedule:lock:{task}`
//! (so one replica at a time schedules a task):
//!
//! 1. finish fan-outs another replica left unfinished;
//! 2. a task with no schedule state yet (new task, empty store) records
//!    "now" as its last fire: it starts at its next future fire and never
//!    fires a past period;
//! 3. otherwise ask the calculus what is due since the last fire (misfire
//!    policy and catch-up window included); mark the fan-out started,
//!    record the fire with the lease's fencing token, then fan out;
//! 4. publish the users of a custom interval whose own fire has come, and
//!    move them to their next fire.
//!
//! Time comes from an injected [`crate::clock::Clock`], so tests move it instead of
//! waiting. The tasks file is re-read every `tasks.reload_interval` and on
//! [`ReloadTasks`]; a bad file keeps the running definitions and shows as
//! degraded health with the errors.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{
    catalog::TaskCatalog,
    clock::SharedClock,
    distributor::{DistributeDue, DistributorActor},
    domain::{MisfirePolicy, TaskInterval, TaskType, TaskTypeId},
    error::PipelineError,
    messages::Distribute,
    schedule::{self, Schedule},
    store::{LockName, StateStore, StoreError},
};

/// Looks at every task type now. Answers with the jobs published.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<u64, PipelineError>")]
pub struct Tick;

/// Re-reads the task definitions now (SIGHUP).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct ReloadTasks;

/// Reads the task definitions afresh: every task, or every problem found.
pub type TaskSource = Arc<dyn Fn() -> Result<Vec<TaskType>, Vec<String>> + Send + Sync>;

/// The outcome of the last tasks reload, for `/health`.
#[derive(Debug, Clone, Default)]
pub struct ReloadHealth(Arc<RwLock<Vec<String>>>);

impl ReloadHealth {
    /// The errors of the last reload (empty when it succeeded).
    pub fn errors(&self) -> Vec<String> {
        match self.0.read() {
            Ok(errors) => errors.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, errors: Vec<String>) {
        match self.0.write() {
            Ok(mut guard) => *guard = errors,
            Err(poisoned) => *poisoned.into_inner() = errors,
        }
    }
}

/// How the scheduler ticks.
#[derive(Clone)]
pub struct SchedulerSettings {
    /// Time between ticks.
    pub check_interval: Duration,
    /// How long a schedule lock lives without renewal.
    pub lock_ttl: Duration,
    /// Due custom-interval users read per batch.
    pub batch_size: usize,
    /// Time between reloads of the task definitions.
    pub reload_interval: Duration,
}

/// Looks for due periods and hands them out.
pub struct SchedulerActor {
    store: Arc<dyn StateStore>,
    catalog: TaskCatalog,
    clock: SharedClock,
    distributor: Addr<DistributorActor>,
    settings: SchedulerSettings,
    source: Option<TaskSource>,
    health: ReloadHealth,
    /// A tick is under way; the next one is skipped.
    ticking: bool,
}

impl SchedulerActor {
    /// A scheduler for the tasks of `catalog`, reloading them from
    /// `source` when given.
    pub fn new(
        store: Arc<dyn StateStore>,
        catalog: TaskCatalog,
        clock: SharedClock,
        distributor: Addr<DistributorActor>,
        settings: SchedulerSettings,
        source: Option<TaskSource>,
        health: ReloadHealth,
    ) -> Self {
        SchedulerActor {
            store,
            catalog,
            clock,
            distributor,
            settings,
            source,
            health,
            ticking: false,
        }
    }
}

impl Actor for SchedulerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.notify(Tick);
        ctx.run_interval(self.settings.check_interval, |_, ctx| ctx.notify(Tick));
        if self.source.is_some() && !self.settings.reload_interval.is_zero() {
            ctx.run_interval(self.settings.reload_interval, |_, ctx| {
                ctx.notify(ReloadTasks)
            });
        }
    }
}

impl Supervised for SchedulerActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        self.ticking = false;
    }
}

impl Handler<Tick> for SchedulerActor {
    type Result = ResponseActFuture<Self, Result<u64, PipelineError>>;

    fn handle(&mut self, _: Tick, _: &mut Self::Context) -> Self::Result {
        if self.ticking {
            return Box::pin(fut::ready(Ok(0)));
        }
        self.ticking = true;
        let pass = Pass {
            store: self.store.clone(),
            clock: self.clock.clone(),
            distributor: self.distributor.clone(),
            settings: self.settings.clone(),
        };
        let tasks = self.catalog.snapshot();
        Box::pin(
            async move {
                let mut published = 0;
                let mut first_error = None;
                for task in tasks.values() {
                    match pass.schedule_task(task).await {
                        Ok(n) => published += n,
                        Err(err) => {
                            tracing::warn!(task = %task.id, error = %err, "scheduling pass failed; retrying next tick");
                            first_error.get_or_insert(err);
                        }
                    }
                }
                match first_error {
                    Some(err) if published == 0 => Err(err),
                    _ => Ok(published),
                }
            }
            .into_actor(self)
            .map(|result, act, _| {
                act.ticking = false;
                result
            }),
        )
    }
}

impl Handler<ReloadTasks> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, _: ReloadTasks, _: &mut Self::Context) {
        let Some(source) = &self.source else { return };
        match source() {
            Ok(tasks) => {
                tracing::info!(tasks = tasks.len(), "task definitions reloaded");
                self.catalog.replace(tasks);
                self.health.set(Vec::new());
            }
            Err(errors) => {
                tracing::error!(
                    ?errors,
                    "tasks file rejected; keeping the running definitions"
                );
                self.health.set(errors);
            }
        }
    }
}

/// One scheduling pass over one task.
struct Pass {
    store: Arc<dyn StateStore>,
    clock: SharedClock,
    distributor: Addr<DistributorActor>,
    settings: SchedulerSettings,
}

impl Pass {
    async fn schedule_task(&self, task: &TaskType) -> Result<u64, PipelineError> {
        let lock = LockName::Schedule(task.id.clone());
        let Some(lease) = self
            .store
            .acquire_lock(&lock, self.settings.lock_ttl)
            .await?
        else {
            tracing::debug!(task = %task.id, "schedule lock held elsewhere");
            return Ok(0);
        };
        let result = self.under_lock(task, &lock, &lease).await;
        if let Err(err) = self.store.release_lock(&lock, &lease).await {
            tracing::warn!(task = %task.id, error = %err, "schedule lock not released; it expires");
        }
        result
    }

    async fn under_lock(
        &self,
        task: &TaskType,
        lock: &LockName,
        lease: &crate::store::LockLease,
    ) -> Result<u64, PipelineError> {
        let mut published = 0;
        let distribute = |at: DateTime<Utc>, source: &str| Distribute {
            task: task.clone(),
            scheduled_at: at,
            users: None,
            with_custom_users: false,
            immediate: false,
            lease: Some((lock.clone(), lease.clone())),
            source: source.to_owned(),
            correlation_id: format!("{}:{}", task.id, at.timestamp()),
        };
        for at in self.store.unfinished_fanouts(&task.id).await? {
            published += self.distributor.send(distribute(at, "scheduler")).await??;
        }

        let now = self.clock.now();
        let schedule = Schedule::new(&task.interval);
        match self.store.schedule_state(&task.id).await? {
            None => {
                if !self.store.record_fire(&task.id, now, lease).await? {
                    return Err(PipelineError::LockLost(task.id.clone()));
                }
                tracing::info!(task = %task.id, next = %schedule.next_after(now), "new task type; it starts at its next fire");
            }
            Some(state) => {
                // A fire up to two ticks old is on time, not missed: the
                // scheduler only looks once per tick.
                let due = schedule::due_with_tolerance(
                    &schedule,
                    state.last_fired,
                    now,
                    task.catchup_window(),
                    task.misfire(),
                    self.settings.check_interval.saturating_mul(2),
                );
                if due.missed > 0 {
                    tracing::warn!(task = %task.id, missed = due.missed, "fires missed while no scheduler ran were skipped");
                }
                let record = due.fire.or_else(|| {
                    (due.missed > 0)
                        .then(|| schedule.latest_at_or_before(now))
                        .flatten()
                        .filter(|at| *at > state.last_fired)
                });
                if let Some(fire) = due.fire
                    && self.store.fanout_progress(&task.id, fire).await?.is_none()
                {
                    self.store
                        .save_fanout_progress(&task.id, fire, None, false)
                        .await?;
                }
                if let Some(at) = record
                    && !self.store.record_fire(&task.id, at, lease).await?
                {
                    return Err(PipelineError::LockLost(task.id.clone()));
                }
                if let Some(fire) = due.fire {
                    tracing::info!(task = %task.id, scheduled_at = %fire, "period due; fanning out");
                    published += self
                        .distributor
                        .send(distribute(fire, "scheduler"))
                        .await??;
                }
            }
        }
        published += self.custom_users(task, now).await?;
        Ok(published)
    }

    /// Publishes the due users of a custom interval and moves each to its
    /// next fire. Fires older than the catch-up window (or, under
    /// `misfire: skip`, older than two ticks) are skipped, not run.
    async fn custom_users(
        &self,
        task: &TaskType,
        now: DateTime<Utc>,
    ) -> Result<u64, PipelineError> {
        let mut published = 0;
        loop {
            let due = self
                .store
                .due_custom_users(&task.id, now, self.settings.batch_size.max(1))
                .await?;
            if due.is_empty() {
                return Ok(published);
            }
            let full_page = due.len() >= self.settings.batch_size.max(1);
            let mut moves = Vec::with_capacity(due.len());
            let mut run = Vec::with_capacity(due.len());
            for mut user in due {
                let Some(interval) = user.settings.custom_interval.clone() else {
                    continue;
                };
                let schedule = Schedule::new(&interval);
                let next = schedule.next_after(now);
                moves.push((user.user_id.clone(), user.scheduled_at, next));
                // After downtime only the latest missed fire may run (the
                // `run_once` policy), never the oldest.
                if let Some(latest) = schedule
                    .latest_at_or_before(now)
                    .filter(|latest| *latest > user.scheduled_at)
                {
                    user.scheduled_at = latest;
                }
                if fresh_enough(
                    task,
                    &interval,
                    user.scheduled_at,
                    now,
                    self.settings.check_interval,
                ) {
                    run.push(user);
                } else {
                    tracing::info!(task = %task.id, user = %user.user_id, fire = %user.scheduled_at, "missed custom-interval fire skipped");
                }
            }
            if !run.is_empty() {
                published += self
                    .distributor
                    .send(DistributeDue {
                        task: task.clone(),
                        users: run,
                        correlation_id: format!("{}:custom:{}", task.id, now.timestamp()),
                    })
                    .await??;
            }
            self.store.advance_custom_users(&task.id, &moves).await?;
            if !full_page || moves.is_empty() {
                return Ok(published);
            }
        }
    }
}

/// Whether a custom-interval fire at `fire` still runs at `now`.
fn fresh_enough(
    task: &TaskType,
    interval: &TaskInterval,
    fire: DateTime<Utc>,
    now: DateTime<Utc>,
    check_interval: Duration,
) -> bool {
    let age = (now - fire).to_std().unwrap_or(Duration::ZERO);
    match task.misfire() {
        MisfirePolicy::Skip => age <= check_interval.saturating_mul(2),
        MisfirePolicy::RunOnce => {
            age <= task
                .catchup_window
                .unwrap_or_else(|| interval.nominal_period())
        }
    }
}

/// The spec's `GET /schedule/status/{task_type_id}` body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleStatus {
    /// The task.
    pub task_type_id: TaskTypeId,
    /// The last fire handled, if any.
    pub last_execution: Option<DateTime<Utc>>,
    /// The next fire after now (and after the last one).
    pub next_execution: DateTime<Utc>,
    /// Users with the task enabled.
    pub enabled_users: u64,
    /// The task's interval.
    pub interval: TaskInterval,
    /// Problems worth knowing (e.g. the window cannot fit the users at the
    /// rate limit); omitted when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Builds the status of `task` at `now`; `rate` is its effective limit.
pub async fn schedule_status(
    store: &dyn StateStore,
    task: &TaskType,
    now: DateTime<Utc>,
    rate: Option<u32>,
    window: Duration,
) -> Result<ScheduleStatus, StoreError> {
    let state = store.schedule_state(&task.id).await?;
    let enabled_users = store.enabled_user_count(&task.id).await?;
    let last_execution = state.map(|s| s.last_fired);
    let from = last_execution.map_or(now, |last| last.max(now));
    let next_execution = Schedule::new(&task.interval).next_after(from);
    let mut warnings = Vec::new();
    if !crate::distributor::window_fits(enabled_users, rate, window) {
        warnings.push(format!(
            "{enabled_users} users do not fit the {}s distribution window at {} runs per second",
            window.as_secs(),
            rate.unwrap_or(0)
        ));
    }
    Ok(ScheduleStatus {
        task_type_id: task.id.clone(),
        last_execution,
        next_execution,
        enabled_users,
        interval: task.interval.clone(),
        warnings,
    })
}
