//! SchedulerActor: decides when each task's jobs are due, owns the
//! schedule lock, and drives the fan-out runs.
//!
//! Every `scheduler.check_interval` (a tick) it starts one *pass* per task
//! type, each as its own future, so a large fan-out of one task never
//! delays another's tick. A pass holds the task's lock
//! `{prefix}:schedule:lock:{task}` (one replica at a time per task; its
//! fencing token goes with every write made under it) and:
//!
//! 1. on a tick, asks the calculus what is due since the last recorded
//!    fire (misfire policy and catch-up window included); a due period
//!    becomes a [`Run`] in the store, then the fire is recorded. A task with
//!    no schedule state yet records "now" and starts at its next fire;
//! 2. on a tick, turns the users of a custom interval whose own fire came
//!    into runs of named users, and moves them to their next fire;
//! 3. advances every run of the task through the DistributorActor
//!    ([`AdvanceRun`]): plans its users into the slot lists, releases the
//!    slots that are due, renewing the lock as it goes;
//! 4. releases the lock, and plans its next pass for when the next slot of
//!    a run comes due (between ticks).
//!
//! A trigger ([`Trigger`], from the API) makes a run at once and answers
//! with its size; the run proceeds in the task's passes like any other.
//! Runs live in the store, so a replica that takes the lock over carries
//! on any run another left unfinished.
//!
//! Time comes from an injected [`crate::clock::Clock`], so tests move it
//! instead of waiting. The task definitions are reloaded by the pipeline
//! (every role, see [`crate::pipeline`]); passes read the catalog in
//! force.
//!
//! Every tick beats the scheduler's heartbeat on the [`HealthBoard`]. A
//! panic in a pass is caught: the actor stops and its supervisor restarts
//! it (counted on the board); the store keeps everything a pass did.
//! [`StopScheduling`] (shutdown) ends the ticks and passes for good: a
//! pass under way stops after its current step and releases its lock, so
//! another replica carries its run on at once instead of after the lock's
//! time to live.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    panic::AssertUnwindSafe,
    path::PathBuf,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use futures::FutureExt;
use serde::Serialize;

use crate::{
    catalog::TaskCatalog,
    clock::SharedClock,
    distributor::{AdvanceRun, DistributorActor, PlanListed},
    domain::{MisfirePolicy, TaskInterval, TaskType, TaskTypeId, UserId},
    error::PipelineError,
    fanout::{Audience, Run, RunSource, ZoneWalk, run_slots},
    health::{HealthBoard, Quarantine},
    prometheus::{Families, PassLabel, PassLabels, TaskLabels},
    schedule::{self, Schedule},
    store::{LockLease, LockName, StateStore, StoreError, Stores, results::JobResultStore},
};

/// Starts a pass of every task type now. Answers with the jobs published
/// by the passes it started, once they end.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<u64, PipelineError>")]
pub struct Tick;

/// Stops ticking and starting passes, for good (shutdown); triggers are
/// refused from then on. A pass under way stops after the step it is in
/// (its run stays in the store, for the next holder of the lock) and
/// releases its lock: the answer comes once every pass has, or after the
/// lock's time to live, when a lock left held would have expired anyway.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct StopScheduling;

/// The name of the scheduler on the [`HealthBoard`].
pub const SCHEDULER: &str = "scheduler";

/// Runs a task now, outside its schedule (`POST /schedule/trigger`).
/// Answers at once with the run made (or the run an earlier trigger with
/// the same idempotency key made); the fan-out proceeds in the task's
/// passes.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<TriggerAccepted, PipelineError>")]
pub struct Trigger {
    /// The task.
    pub task: TaskType,
    /// The users; `None` for every user with the task enabled (custom
    /// intervals included).
    pub users: Option<Vec<UserId>>,
    /// Every job now, no spread over the window.
    pub immediate: bool,
    /// A client's `Idempotency-Key`: a retried trigger with the same key
    /// answers with the first one's run instead of making another.
    pub idempotency_key: Option<String>,
    /// Ties the jobs to the request.
    pub correlation_id: Option<String>,
}

/// The answer to [`Trigger`].
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerAccepted {
    /// The run's id (its `scheduled_at` in epoch ms).
    pub run_id: i64,
    /// Jobs the run makes (the users it reaches).
    pub jobs_created: u64,
    /// The window its jobs are spread over (zero when immediate).
    pub distribution_window: Duration,
    /// An earlier trigger with the same idempotency key made the run.
    pub replayed: bool,
}

/// How long a trigger's idempotency key is remembered.
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

/// How far a custom-interval entry without a usable interval is moved on,
/// so that it stops taking a place in every page of due users.
const QUARANTINE_MOVE: Duration = Duration::from_secs(3600);

/// Shortest pause between two passes of one task.
const MIN_PASS_GAP: Duration = Duration::from_millis(10);

/// Reads the task definitions afresh: every task, or every problem found.
pub type TaskSource = Arc<dyn Fn() -> Result<Vec<TaskType>, ReloadProblems> + Send + Sync>;

/// One problem a reload of the task definitions found.
///
/// Shown as `config/tasks.yaml:12:17: task daily_report: interval.timezone:
/// unknown time zone ...`, the text `taskqueue validate` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadProblem {
    /// The file the value came from; for an environment override, the
    /// variable's name prefixed with `$`.
    pub file: PathBuf,
    /// 1-based line and column, when the parser knows them.
    pub position: Option<(u32, u32)>,
    /// The task the problem is in, when it has a usable id.
    pub task: Option<TaskTypeId>,
    /// The field: inside [`task`](Self::task) (`interval.timezone`), else
    /// the config path (`rate_limit.per_task.x`, `tasks[3].id`). Empty for
    /// the task, or the file, as a whole.
    pub field: String,
    /// Only a warning: reported with the errors that rejected the file.
    pub warning: bool,
    /// What is wrong, and what would be right.
    pub message: String,
}

impl fmt::Display for ReloadProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        f.write_str(": ")?;
        if self.warning {
            f.write_str("warning: ")?;
        }
        match (&self.task, self.field.as_str()) {
            (Some(task), "") => write!(f, "task {task}: ")?,
            (Some(task), field) => write!(f, "task {task}: {field}: ")?,
            (None, "") => {}
            (None, field) => write!(f, "{field}: ")?,
        }
        f.write_str(&self.message)
    }
}

/// Why a reload was rejected: every problem found, warnings included, in
/// file order.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ReloadProblems(pub Vec<ReloadProblem>);

/// The outcome of the last tasks reload, for `/health`.
#[derive(Debug, Clone, Default)]
pub struct ReloadHealth(Arc<RwLock<Vec<ReloadProblem>>>);

impl ReloadHealth {
    /// The problems of the last reload (empty when it succeeded).
    pub fn problems(&self) -> Vec<ReloadProblem> {
        match self.0.read() {
            Ok(problems) => problems.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Records the outcome of a reload: its problems, none when it
    /// succeeded.
    pub fn set(&self, problems: Vec<ReloadProblem>) {
        match self.0.write() {
            Ok(mut guard) => *guard = problems,
            Err(poisoned) => *poisoned.into_inner() = problems,
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
    /// `scheduler.distribution_window`.
    pub window: Duration,
    /// Where missed fires are counted (`taskqueue_missed_fires_total`).
    pub families: Families,
    /// Where missed fires are tallied for every replica to read, with the
    /// period that followed them, and for how long (`None`: not tallied).
    pub missed_tally: Option<(Arc<dyn JobResultStore>, Duration)>,
}

/// One task's pass under way, and what arrived meanwhile.
#[derive(Debug, Default)]
struct PassState {
    /// A tick came during the pass: run a ticking pass after it.
    tick_pending: bool,
    /// A trigger came during the pass: run a pass after it.
    rerun: bool,
}

/// Decides what is due, owns the schedule locks, drives the runs.
pub struct SchedulerActor {
    stores: Stores,
    catalog: TaskCatalog,
    clock: SharedClock,
    distributor: Addr<DistributorActor>,
    settings: SchedulerSettings,
    board: HealthBoard,
    quarantine: Quarantine,
    /// Set by [`StopScheduling`] for good (it survives restarts); the
    /// passes under way read it between their steps.
    halt: Arc<AtomicBool>,
    /// [`StopScheduling`]s waiting for the passes under way to end.
    stop_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
    /// The tick timer, cancelled by [`StopScheduling`].
    ticker: Option<SpawnHandle>,
    /// Passes under way, by task.
    passes: HashMap<TaskTypeId, PassState>,
    /// The next pass planned between ticks, by task.
    wakes: HashMap<TaskTypeId, SpawnHandle>,
}

impl SchedulerActor {
    /// A scheduler for the tasks of `catalog`, beating on `board` (where
    /// it should be registered as [`SCHEDULER`]) and setting unreadable
    /// records aside in `quarantine`.
    pub fn new(
        stores: Stores,
        catalog: TaskCatalog,
        clock: SharedClock,
        distributor: Addr<DistributorActor>,
        settings: SchedulerSettings,
        board: HealthBoard,
        quarantine: Quarantine,
    ) -> Self {
        SchedulerActor {
            stores,
            catalog,
            clock,
            distributor,
            settings,
            board,
            quarantine,
            halt: Arc::new(AtomicBool::new(false)),
            stop_waiters: Vec::new(),
            ticker: None,
            passes: HashMap::new(),
            wakes: HashMap::new(),
        }
    }

    /// Starts a pass of `task` unless one is under way (then it runs again
    /// after). Returns the pass's outcome.
    fn start_pass(
        &mut self,
        task: TaskTypeId,
        tick: bool,
        ctx: &mut Context<Self>,
    ) -> Option<tokio::sync::oneshot::Receiver<u64>> {
        if self.halted() {
            return None;
        }
        if let Some(state) = self.passes.get_mut(&task) {
            state.tick_pending |= tick;
            state.rerun = true;
            return None;
        }
        let definition = self.catalog.get(&task)?;
        if let Some(handle) = self.wakes.remove(&task) {
            ctx.cancel_future(handle);
        }
        self.passes.insert(task.clone(), PassState::default());
        let pass = Pass {
            stores: self.stores.clone(),
            clock: self.clock.clone(),
            distributor: self.distributor.clone(),
            settings: self.settings.clone(),
            quarantine: self.quarantine.clone(),
            halt: self.halt.clone(),
        };
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        ctx.spawn(
            async move {
                let outcome = pass.run(&definition, tick).await;
                if let Err(err) = &outcome.error {
                    tracing::warn!(task = %definition.id, error = %err, "scheduling pass failed; retrying next tick");
                }
                outcome
            }
            .into_actor(self)
            .map(move |outcome, act, ctx| {
                act.settings
                    .families
                    .passes
                    .get_or_create(&PassLabels {
                        task: task.as_str().to_owned(),
                        outcome: outcome.kind,
                    })
                    .inc();
                let _ = done_tx.send(outcome.published);
                if outcome.panicked {
                    // The store holds all the pass did (its lock is
                    // released): restart with nothing in memory.
                    tracing::error!(%task, "scheduling pass panicked; restarting the scheduler");
                    act.board.restarted(SCHEDULER);
                    ctx.stop();
                    return;
                }
                act.pass_done(task, outcome.next_wake, ctx);
            }),
        );
        Some(done_rx)
    }

    fn pass_done(
        &mut self,
        task: TaskTypeId,
        next_wake: Option<DateTime<Utc>>,
        ctx: &mut Context<Self>,
    ) {
        let state = self.passes.remove(&task).unwrap_or_default();
        if self.halted() {
            self.wake_stop_waiters();
            return;
        }
        if state.rerun {
            self.start_pass(task, state.tick_pending, ctx);
            return;
        }
        let Some(at) = next_wake else { return };
        let delay = (at - self.clock.now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .max(MIN_PASS_GAP);
        if delay >= self.settings.check_interval {
            return;
        }
        let wake_task = task.clone();
        let handle = ctx.run_later(delay, move |act, ctx| {
            act.wakes.remove(&wake_task);
            act.start_pass(wake_task, false, ctx);
        });
        self.wakes.insert(task, handle);
    }

    /// Whether [`StopScheduling`] came.
    fn halted(&self) -> bool {
        self.halt.load(Ordering::SeqCst)
    }

    /// Answers the [`StopScheduling`]s waiting, once no pass is under way.
    fn wake_stop_waiters(&mut self) {
        if self.passes.is_empty() {
            for waiter in self.stop_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }
}

impl Actor for SchedulerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.halted() {
            return;
        }
        ctx.notify(Tick);
        self.ticker =
            Some(ctx.run_interval(self.settings.check_interval, |_, ctx| ctx.notify(Tick)));
    }
}

impl Supervised for SchedulerActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        self.passes.clear();
        self.wakes.clear();
        self.ticker = None;
        self.wake_stop_waiters();
    }
}

impl Handler<StopScheduling> for SchedulerActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: StopScheduling, ctx: &mut Self::Context) -> Self::Result {
        self.halt.store(true, Ordering::SeqCst);
        if let Some(ticker) = self.ticker.take() {
            ctx.cancel_future(ticker);
        }
        for (_, wake) in self.wakes.drain() {
            ctx.cancel_future(wake);
        }
        if self.passes.is_empty() {
            tracing::info!("scheduler stopped: no more ticks or passes");
            return Box::pin(async {});
        }
        let (waiter, ended) = tokio::sync::oneshot::channel();
        self.stop_waiters.push(waiter);
        let under_way = self.passes.len();
        let bound = self.settings.lock_ttl;
        tracing::info!(
            passes = under_way,
            "scheduler stopping: the passes under way end after their current step"
        );
        Box::pin(async move {
            match tokio::time::timeout(bound, ended).await {
                Ok(_) => tracing::info!("scheduler stopped: no more ticks or passes"),
                Err(_) => tracing::warn!(
                    passes = under_way,
                    "scheduler stopped with passes under way; their locks expire"
                ),
            }
        })
    }
}

impl Handler<Tick> for SchedulerActor {
    type Result = ResponseFuture<Result<u64, PipelineError>>;

    fn handle(&mut self, _: Tick, ctx: &mut Self::Context) -> Self::Result {
        self.board.beat(SCHEDULER);
        let tasks: Vec<TaskTypeId> = self.catalog.snapshot().keys().cloned().collect();
        let started: Vec<_> = tasks
            .into_iter()
            .filter_map(|task| self.start_pass(task, true, ctx))
            .collect();
        Box::pin(async move {
            let mut published = 0;
            for done in started {
                published += done.await.unwrap_or(0);
            }
            Ok(published)
        })
    }
}

impl Handler<Trigger> for SchedulerActor {
    type Result = ResponseActFuture<Self, Result<TriggerAccepted, PipelineError>>;

    fn handle(&mut self, msg: Trigger, _: &mut Self::Context) -> Self::Result {
        if self.halted() {
            return Box::pin(fut::ready(Err(PipelineError::ShuttingDown)));
        }
        let stores = self.stores.clone();
        let distributor = self.distributor.clone();
        let window = self.settings.window;
        let now = self.clock.now();
        let task_id = msg.task.id.clone();
        Box::pin(
            async move { make_trigger_run(&stores, &distributor, msg, now, window).await }
                .into_actor(self)
                .map(move |result, act, ctx| {
                    if result.as_ref().is_ok_and(|accepted| !accepted.replayed) {
                        act.start_pass(task_id, false, ctx);
                    }
                    result
                }),
        )
    }
}

/// Makes the run of a trigger (or finds the one its idempotency key made).
async fn make_trigger_run(
    stores: &Stores,
    distributor: &Addr<DistributorActor>,
    msg: Trigger,
    now: DateTime<Utc>,
    window: Duration,
) -> Result<TriggerAccepted, PipelineError> {
    let task = &msg.task;
    let spread = if msg.immediate {
        Duration::ZERO
    } else {
        window
    };
    // Whole milliseconds: the run id, and a `scheduled_at` that never
    // collides with a scheduled period's (whole seconds) in practice.
    let mut scheduled_at = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
    if let Some(key) = &msg.idempotency_key
        && let Some(earlier) = stores
            .schedule
            .trigger_run(
                &task.id,
                key,
                scheduled_at.timestamp_millis(),
                IDEMPOTENCY_TTL,
            )
            .await?
    {
        let run = find_run(stores, &task.id, earlier).await?;
        return Ok(TriggerAccepted {
            run_id: earlier,
            jobs_created: run.as_ref().map_or(0, |run| run.users),
            distribution_window: run.map_or(spread, |run| {
                if run.immediate {
                    Duration::ZERO
                } else {
                    window
                }
            }),
            replayed: true,
        });
    }
    let correlation_id = msg
        .correlation_id
        .clone()
        .unwrap_or_else(|| format!("trigger:{}:{}", task.id, scheduled_at.timestamp_millis()));
    let run = match msg.users {
        Some(users) => {
            distributor
                .send(PlanListed {
                    task: task.clone(),
                    scheduled_at,
                    source: RunSource::Trigger,
                    users,
                    immediate: msg.immediate,
                    correlation_id,
                    fence: None,
                    now,
                })
                .await??
        }
        None => {
            let (default, custom) = stores.preferences.index_sizes(&task.id).await?;
            let zones: Vec<Tz> = stores
                .schedule
                .zone_groups(&task.id)
                .await?
                .groups
                .into_iter()
                .map(|(zone, _)| zone)
                .collect();
            let zoned: u64 = stores
                .preferences
                .zone_sizes(&task.id, &zones)
                .await?
                .iter()
                .sum();
            let mut groups = vec![None];
            groups.extend(zones.into_iter().map(Some));
            loop {
                let run = Run {
                    task_type_id: task.id.clone(),
                    scheduled_at,
                    source: RunSource::Trigger,
                    audience: Audience::Enabled { with_custom: true },
                    immediate: msg.immediate,
                    slots: run_slots(window, msg.immediate),
                    users: default + custom + zoned,
                    planned: 0,
                    cursor: None,
                    custom_offset: None,
                    zone_walk: ZoneWalk::of(groups.clone()),
                    planning_done: false,
                    next_slot: 0,
                    released: 0,
                    correlation_id: correlation_id.clone(),
                    created_at: now,
                };
                if stores
                    .schedule
                    .create_run(&run, &[], Duration::from_secs(1), None)
                    .await?
                {
                    break run;
                }
                // Another trigger in the same millisecond.
                scheduled_at += chrono::Duration::milliseconds(1);
            }
        }
    };
    tracing::info!(task = %task.id, run = run.id(), users = run.users, immediate = run.immediate, "trigger accepted");
    Ok(TriggerAccepted {
        run_id: run.id(),
        jobs_created: run.users,
        distribution_window: spread,
        replayed: false,
    })
}

/// The run `id` of `task`, in progress or the last finished.
async fn find_run(stores: &Stores, task: &TaskTypeId, id: i64) -> Result<Option<Run>, StoreError> {
    if let Some(run) = stores
        .schedule
        .runs(task)
        .await?
        .runs
        .into_iter()
        .find(|run| run.id() == id)
    {
        return Ok(Some(run));
    }
    Ok(stores
        .schedule
        .last_run(task)
        .await?
        .filter(|run| run.id() == id))
}

/// What one pass did.
struct PassOutcome {
    /// What it came to, for `taskqueue_scheduler_passes_total`.
    kind: PassLabel,
    published: u64,
    next_wake: Option<DateTime<Utc>>,
    error: Result<(), PipelineError>,
    /// The pass panicked (a bug): the scheduler restarts.
    panicked: bool,
}

/// One pass over one task.
struct Pass {
    stores: Stores,
    clock: SharedClock,
    distributor: Addr<DistributorActor>,
    settings: SchedulerSettings,
    quarantine: Quarantine,
    /// Set at shutdown: the pass ends after its current step.
    halt: Arc<AtomicBool>,
}

/// The lease of a pass, renewed as the pass goes.
struct Held {
    lock: LockName,
    lease: LockLease,
    renewed: Instant,
}

impl Pass {
    async fn run(&self, task: &TaskType, tick: bool) -> PassOutcome {
        // An operator pause (see `crate::pause`): no fan-out, no release,
        // no fire recorded, until the resume.
        match self.stores.schedule.paused_tasks().await {
            Ok(paused) if paused.contains_key(&task.id) => {
                tracing::debug!(task = %task.id, "task paused; pass skipped");
                return PassOutcome {
                    kind: PassLabel::paused,
                    published: 0,
                    next_wake: None,
                    error: Ok(()),
                    panicked: false,
                };
            }
            Ok(_) => {}
            Err(err) => {
                return PassOutcome {
                    kind: PassLabel::failed,
                    published: 0,
                    next_wake: None,
                    error: Err(err.into()),
                    panicked: false,
                };
            }
        }
        let lock = LockName::Schedule(task.id.clone());
        let lease = match self
            .stores
            .locks
            .acquire_lock(&lock, self.settings.lock_ttl)
            .await
        {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                tracing::debug!(task = %task.id, "schedule lock held elsewhere");
                return PassOutcome {
                    kind: PassLabel::lock_elsewhere,
                    published: 0,
                    next_wake: None,
                    error: Ok(()),
                    panicked: false,
                };
            }
            Err(err) => {
                return PassOutcome {
                    kind: PassLabel::failed,
                    published: 0,
                    next_wake: None,
                    error: Err(err.into()),
                    panicked: false,
                };
            }
        };
        let mut held = Held {
            lock,
            lease,
            renewed: Instant::now(),
        };
        let mut published = 0;
        let result = AssertUnwindSafe(self.under_lock(task, tick, &mut held, &mut published))
            .catch_unwind()
            .await;
        if let Err(err) = self
            .stores
            .locks
            .release_lock(&held.lock, &held.lease)
            .await
        {
            tracing::warn!(task = %task.id, error = %err, "schedule lock not released; it expires");
        }
        match result {
            Ok(Ok(next_wake)) => PassOutcome {
                kind: PassLabel::completed,
                published,
                next_wake,
                error: Ok(()),
                panicked: false,
            },
            Ok(Err(err)) => PassOutcome {
                kind: PassLabel::failed,
                published,
                next_wake: None,
                error: Err(err),
                panicked: false,
            },
            Err(_) => PassOutcome {
                kind: PassLabel::failed,
                published,
                next_wake: None,
                error: Ok(()),
                panicked: true,
            },
        }
    }

    async fn under_lock(
        &self,
        task: &TaskType,
        tick: bool,
        held: &mut Held,
        published: &mut u64,
    ) -> Result<Option<DateTime<Utc>>, PipelineError> {
        if tick && !self.halted() {
            self.schedule_periods(task, &held.lease).await?;
            self.custom_users(task, held).await?;
        }
        loop {
            if self.halted() {
                // Shutdown: the runs stay in the store for the next holder.
                return Ok(None);
            }
            let list = self.stores.schedule.runs(&task.id).await?;
            for field in &list.unreadable {
                self.quarantine.add(
                    &format!("fan-out run {field} of {}", task.id),
                    "unreadable run record",
                );
            }
            let mut planning = false;
            let mut wake: Option<DateTime<Utc>> = None;
            for run in list.runs {
                if self.halted() {
                    return Ok(None);
                }
                let advanced = self
                    .distributor
                    .send(AdvanceRun {
                        task: task.clone(),
                        run,
                        now: self.clock.now(),
                        fence: held.lease.fence,
                    })
                    .await??;
                *published += advanced.published;
                planning |= !advanced.run.planning_done;
                if let Some(at) = advanced.run.next_wake(self.clock.now()) {
                    wake = Some(wake.map_or(at, |earlier| earlier.min(at)));
                }
                self.renew(task, held).await?;
            }
            if !planning {
                return Ok(wake);
            }
        }
    }

    /// Whether shutdown asked the pass to end.
    fn halted(&self) -> bool {
        self.halt.load(Ordering::SeqCst)
    }

    /// Counts fires the misfire policy skipped.
    fn count_missed(&self, task: &TaskType, missed: u64) {
        if missed == 0 {
            return;
        }
        self.settings
            .families
            .missed_fires
            .get_or_create(&TaskLabels {
                task: task.id.as_str().to_owned(),
            })
            .inc_by(missed);
    }

    /// Extends the lease once a third of its life has gone.
    async fn renew(&self, task: &TaskType, held: &mut Held) -> Result<(), PipelineError> {
        if held.renewed.elapsed() < self.settings.lock_ttl / 3 {
            return Ok(());
        }
        if !self
            .stores
            .locks
            .renew_lock(&held.lock, &held.lease, self.settings.lock_ttl)
            .await?
        {
            tracing::warn!(task = %task.id, "schedule lock lost; another replica carries on");
            return Err(PipelineError::LockLost(task.id.clone()));
        }
        held.renewed = Instant::now();
        Ok(())
    }

    /// Records what is due of the task's own interval and makes the run of
    /// a due period.
    async fn schedule_periods(
        &self,
        task: &TaskType,
        lease: &LockLease,
    ) -> Result<(), PipelineError> {
        let now = self.clock.now();
        let schedule = Schedule::new(&task.interval);
        let state = match self.stores.schedule.schedule_state(&task.id).await {
            Ok(state) => state,
            // Unreadable: set aside and started afresh (the next record
            // overwrites it), rather than failing every tick.
            Err(StoreError::Corrupt { key, reason }) => {
                self.quarantine.add(&key, &reason);
                None
            }
            Err(err) => return Err(err.into()),
        };
        let Some(state) = state else {
            // The zone groups start here too: none has a fire to catch up.
            if !self
                .stores
                .schedule
                .record_fire(&task.id, now, lease)
                .await?
                || !self
                    .stores
                    .schedule
                    .record_zone_fires(&task.id, &[], now, lease)
                    .await?
            {
                return Err(PipelineError::LockLost(task.id.clone()));
            }
            tracing::info!(task = %task.id, next = %schedule.next_after(now), "new task type; it starts at its next fire");
            return Ok(());
        };
        // A fire up to two ticks old is on time, not missed: the scheduler
        // only looks once per tick.
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
            self.count_missed(task, due.missed);
        }
        let record = due.fire.or_else(|| {
            (due.missed > 0)
                .then(|| schedule.latest_at_or_before(now))
                .flatten()
                .filter(|at| *at > state.last_fired)
        });
        // Fire instant -> the groups due then (`None`: the enabled index).
        let mut due_groups: BTreeMap<DateTime<Utc>, Vec<Option<Tz>>> = BTreeMap::new();
        if let Some(fire) = due.fire {
            due_groups.entry(fire).or_default().push(None);
        }
        let zone_records = self.zone_periods(task, now, &mut due_groups).await?;
        for (fire, groups) in due_groups {
            self.make_period_run(task, lease, now, fire, groups).await?;
        }
        if let Some(at) = record
            && !self
                .stores
                .schedule
                .record_fire(&task.id, at, lease)
                .await?
        {
            return Err(PipelineError::LockLost(task.id.clone()));
        }
        if let (Some(at), Some((results, ttl))) = (record, &self.settings.missed_tally)
            && due.missed > 0
            && let Err(error) = results.add_missed(&task.id, at, due.missed, *ttl).await
        {
            tracing::warn!(task = %task.id, %error, "missed fires not tallied");
        }
        if !self
            .stores
            .schedule
            .record_zone_fires(&task.id, &zone_records, now, lease)
            .await?
        {
            return Err(PipelineError::LockLost(task.id.clone()));
        }
        Ok(())
    }

    /// What is due of each zone group of the task: the task's interval
    /// read in the group's zone, with the same misfire rules. Adds the due
    /// groups to `due_groups` by fire instant; answers with the fires to
    /// record. O(zones): one store round trip and one calculus step per
    /// group. A group never scheduled before starts where the previous
    /// ticking pass left off ([`crate::store::ZoneGroups::checked`]): its
    /// fires since then are handled like any group's (on time, or missed
    /// under the misfire policy), and a fire the previous pass handled for
    /// the groups of that time is not handled again. Without a previous
    /// pass on record (data of an older release) it starts two ticks ago.
    async fn zone_periods(
        &self,
        task: &TaskType,
        now: DateTime<Utc>,
        due_groups: &mut BTreeMap<DateTime<Utc>, Vec<Option<Tz>>>,
    ) -> Result<Vec<(Tz, DateTime<Utc>)>, PipelineError> {
        let zones = self.stores.schedule.zone_groups(&task.id).await?;
        for entry in &zones.unreadable {
            self.quarantine.add(entry, "unreadable zone group");
        }
        let tolerance = self.settings.check_interval.saturating_mul(2);
        let first_seen_from = zones
            .checked
            .unwrap_or_else(|| now - chrono::Duration::from_std(tolerance).unwrap_or_default());
        let mut records = Vec::new();
        for (zone, state) in zones.groups {
            let schedule = Schedule::new(&task.interval.in_zone(zone));
            let last_fired = state.map_or(first_seen_from, |state| state.last_fired);
            let due = schedule::due_with_tolerance(
                &schedule,
                last_fired,
                now,
                task.catchup_window(),
                task.misfire(),
                tolerance,
            );
            if due.missed > 0 {
                tracing::warn!(task = %task.id, zone = zone.name(), missed = due.missed, "fires missed while no scheduler ran were skipped");
                self.count_missed(task, due.missed);
            }
            let record = due.fire.or_else(|| {
                (due.missed > 0)
                    .then(|| schedule.latest_at_or_before(now))
                    .flatten()
                    .filter(|at| *at > last_fired)
            });
            if let Some(fire) = due.fire {
                due_groups.entry(fire).or_default().push(Some(zone));
            }
            match (record, state) {
                (Some(at), _) => records.push((zone, at)),
                (None, None) => records.push((zone, last_fired)),
                (None, Some(_)) => {}
            }
        }
        Ok(records)
    }

    /// Makes the run of the groups due at `fire`: one run per instant,
    /// walking the groups one after the other. Zone groups without users
    /// are left out; the enabled index is always walked when due.
    async fn make_period_run(
        &self,
        task: &TaskType,
        lease: &LockLease,
        now: DateTime<Utc>,
        fire: DateTime<Utc>,
        groups: Vec<Option<Tz>>,
    ) -> Result<(), PipelineError> {
        let zones: Vec<Tz> = groups.iter().filter_map(|group| *group).collect();
        let sizes = self.stores.preferences.zone_sizes(&task.id, &zones).await?;
        let mut walk: Vec<Option<Tz>> = Vec::with_capacity(groups.len());
        let mut users = 0;
        if groups.contains(&None) {
            walk.push(None);
            users += self.stores.preferences.index_sizes(&task.id).await?.0;
        }
        for (zone, size) in zones.into_iter().zip(sizes) {
            if size > 0 {
                walk.push(Some(zone));
                users += size;
            }
        }
        if walk.is_empty() {
            return Ok(());
        }
        let zone_names: Vec<&str> = walk
            .iter()
            .map(|group| group.map_or("(task)", |zone| zone.name()))
            .collect();
        let zone_walk = if walk == [None] {
            ZoneWalk::default()
        } else {
            ZoneWalk::of(walk.clone())
        };
        let run = Run {
            task_type_id: task.id.clone(),
            scheduled_at: fire,
            source: RunSource::Scheduler,
            audience: Audience::Enabled { with_custom: false },
            immediate: false,
            slots: run_slots(self.settings.window, false),
            users,
            planned: 0,
            cursor: None,
            custom_offset: None,
            zone_walk,
            planning_done: false,
            next_slot: 0,
            released: 0,
            correlation_id: format!("{}:{}", task.id, fire.timestamp()),
            created_at: now,
        };
        if self
            .stores
            .schedule
            .create_run(&run, &[], Duration::from_secs(1), Some(lease.fence))
            .await?
        {
            tracing::info!(task = %task.id, scheduled_at = %fire, users, zones = ?zone_names, "period due; fanning out");
        }
        Ok(())
    }

    /// Plans the due users of a custom interval (a run per fire instant)
    /// and moves each to its next fire. Fires older than the catch-up
    /// window (or, under `misfire: skip`, older than two ticks) are
    /// skipped, not run.
    async fn custom_users(&self, task: &TaskType, held: &mut Held) -> Result<(), PipelineError> {
        let now = self.clock.now();
        let batch = self.settings.batch_size.max(1);
        loop {
            let due = self
                .stores
                .schedule
                .due_custom_users(&task.id, now, batch)
                .await?;
            if due.is_empty() {
                return Ok(());
            }
            let full_page = due.len() >= batch;
            let mut moves = Vec::with_capacity(due.len());
            let mut run: BTreeMap<DateTime<Utc>, Vec<UserId>> = BTreeMap::new();
            for mut user in due {
                let Some(interval) = user.settings.custom_interval.clone() else {
                    self.quarantine.add(
                        &format!("custom-interval index of {}: {}", task.id, user.user_id),
                        "no usable custom_interval in the user's settings",
                    );
                    let later = now
                        + chrono::Duration::from_std(QUARANTINE_MOVE)
                            .unwrap_or(chrono::Duration::zero());
                    moves.push((user.user_id.clone(), user.scheduled_at, later));
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
                    // The fires from the stored one up to the latest,
                    // exclusive, never run.
                    let skipped = schedule::fires_between(
                        &schedule,
                        user.scheduled_at - chrono::Duration::milliseconds(1),
                        latest,
                    ) - 1;
                    self.count_missed(task, skipped);
                    user.scheduled_at = latest;
                }
                if fresh_enough(
                    task,
                    &interval,
                    user.scheduled_at,
                    now,
                    self.settings.check_interval,
                ) {
                    run.entry(user.scheduled_at).or_default().push(user.user_id);
                } else {
                    tracing::info!(task = %task.id, user = %user.user_id, fire = %user.scheduled_at, "missed custom-interval fire skipped");
                    self.count_missed(task, 1);
                }
            }
            for (scheduled_at, users) in run {
                let planned = self
                    .distributor
                    .send(PlanListed {
                        task: task.clone(),
                        scheduled_at,
                        source: RunSource::CustomInterval,
                        users,
                        immediate: false,
                        correlation_id: format!("{}:custom:{}", task.id, now.timestamp()),
                        fence: Some(held.lease.fence),
                        now,
                    })
                    .await?;
                match planned {
                    Ok(_) => {}
                    // The run of that instant finished already: these
                    // users' jobs are published as a run of their own.
                    Err(PipelineError::RunExists(_)) => {
                        tracing::warn!(task = %task.id, fire = %scheduled_at, "custom-interval users came after their run finished; skipped");
                    }
                    Err(err) => return Err(err),
                }
            }
            if !self
                .stores
                .schedule
                .advance_custom_users(&task.id, &moves, held.lease.fence)
                .await?
            {
                return Err(PipelineError::LockLost(task.id.clone()));
            }
            self.renew(task, held).await?;
            if !full_page || moves.is_empty() {
                return Ok(());
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

/// A run's progress, as `/schedule/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunStatus {
    /// The run's id (its `scheduled_at` in epoch ms, as text, like the
    /// trigger's answer).
    pub run_id: String,
    /// The run's instant.
    pub scheduled_at: DateTime<Utc>,
    /// `scheduler`, `trigger` or `custom_interval`.
    pub source: RunSource,
    /// No spread over the window.
    pub immediate: bool,
    /// Users the run reaches.
    pub users: u64,
    /// Users planned into slots (or published, when immediate).
    pub planned: u64,
    /// Jobs confirmed in the broker.
    pub released: u64,
    /// Jobs still to publish.
    pub remaining: u64,
    /// Every user is planned.
    pub planning_done: bool,
    /// Every job is published.
    pub done: bool,
}

impl From<&Run> for RunStatus {
    fn from(run: &Run) -> Self {
        RunStatus {
            run_id: run.id().to_string(),
            scheduled_at: run.scheduled_at,
            source: run.source,
            immediate: run.immediate,
            users: run.users,
            planned: run.planned,
            released: run.released,
            remaining: run.remaining(),
            planning_done: run.planning_done,
            done: run.finished(),
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
    /// Paused by an operator (`POST /tasks/{id}/pause`, extension): no
    /// fan-out, no release, its queued jobs deferred.
    pub paused: bool,
    /// When the pause began, while paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<DateTime<Utc>>,
    /// The task's interval.
    pub interval: TaskInterval,
    /// Runs in progress (planned, released, remaining), oldest first.
    pub runs: Vec<RunStatus>,
    /// The last finished run, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunStatus>,
    /// The groups of users on the task's own interval (extension): first
    /// the users without a zone (on the task's `interval.timezone`), then
    /// one group per user zone, each with its next fire.
    pub zone_groups: Vec<ZoneGroupStatus>,
    /// Problems worth knowing (e.g. the window cannot fit the users at the
    /// rate limit); omitted when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One zone group in `/schedule/status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZoneGroupStatus {
    /// The zone the task's interval is read in for the group.
    pub timezone: String,
    /// `task`: users without a zone of their own (the task's zone);
    /// `user`: users whose own zone (per task, else their default) it is.
    pub source: &'static str,
    /// Users in the group.
    pub users: u64,
    /// The last fire handled for the group, if any.
    pub last_execution: Option<DateTime<Utc>>,
    /// The group's next fire.
    pub next_execution: DateTime<Utc>,
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
    let paused_at = store.paused_tasks().await?.get(&task.id).copied();
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
    let runs = store.runs(&task.id).await?;
    let last_run = store.last_run(&task.id).await?;
    let (default_users, _) = store.index_sizes(&task.id).await?;
    let mut zone_groups = vec![ZoneGroupStatus {
        timezone: task.interval.tz().name().to_owned(),
        source: "task",
        users: default_users,
        last_execution,
        next_execution,
    }];
    let zones = store.zone_groups(&task.id).await?;
    let names: Vec<Tz> = zones.groups.iter().map(|(zone, _)| *zone).collect();
    let sizes = store.zone_sizes(&task.id, &names).await?;
    for ((zone, state), users) in zones.groups.into_iter().zip(sizes) {
        let last = state.map(|state| state.last_fired);
        let from = last.map_or(now, |last| last.max(now));
        zone_groups.push(ZoneGroupStatus {
            timezone: zone.name().to_owned(),
            source: "user",
            users,
            last_execution: last,
            next_execution: Schedule::new(&task.interval.in_zone(zone)).next_after(from),
        });
    }
    Ok(ScheduleStatus {
        task_type_id: task.id.clone(),
        last_execution,
        next_execution,
        enabled_users,
        paused: paused_at.is_some(),
        paused_at,
        interval: task.interval.clone(),
        runs: runs.runs.iter().map(RunStatus::from).collect(),
        last_run: last_run.as_ref().map(RunStatus::from),
        zone_groups,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        broker::memory::MemoryBroker,
        clock::{Clock, ManualClock},
        distributor::DistributionSettings,
        domain::Settings,
        store::{LockStore, PreferenceStore, PreferenceWrite, ScheduleStore, memory::MemoryStore},
    };
    use chrono_tz::Asia;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    /// "Daily at 09:00", in UTC for users without a zone.
    fn digest() -> TaskType {
        serde_json::from_value(serde_json::json!({
            "id": "digest", "name": "Digest",
            "interval": {"type": "daily", "value": 1, "at_time": "09:00"},
            "timeout": "10s",
            "config": {"endpoint": "http://127.0.0.1:1/x", "method": "POST"}
        }))
        .unwrap()
    }

    /// A pass over a memory store, ticking every `check_interval`, with
    /// the clock at `start` and the task's lock held.
    async fn pass_at(
        start: DateTime<Utc>,
        check_interval: Duration,
    ) -> (Pass, Arc<MemoryStore>, Arc<ManualClock>, LockLease) {
        let store = Arc::new(MemoryStore::new());
        let clock = ManualClock::new(start);
        let distributor = DistributorActor::new(
            store.clone(),
            Arc::new(MemoryBroker::new()),
            DistributionSettings {
                window: Duration::from_secs(60),
                batch_size: 100,
                lock_ttl: Duration::from_secs(60),
                task_rates: BTreeMap::new(),
                global_rate: None,
            },
            HealthBoard::default(),
        )
        .start();
        let lease = store
            .acquire_lock(&LockName::Schedule(digest().id), Duration::from_secs(3600))
            .await
            .unwrap()
            .unwrap();
        let pass = Pass {
            stores: Stores::new(store.clone()),
            clock: clock.clone(),
            distributor,
            settings: SchedulerSettings {
                check_interval,
                lock_ttl: Duration::from_secs(3600),
                batch_size: 100,
                window: Duration::from_secs(60),
                families: Families::new(),
                missed_tally: Some((store.clone(), Duration::from_secs(3600))),
            },
            quarantine: Quarantine::default(),
            halt: Arc::new(AtomicBool::new(false)),
        };
        (pass, store, clock, lease)
    }

    async fn place(store: &MemoryStore, user: &str, zone: Tz, now: DateTime<Utc>) {
        let settings = Settings {
            timezone: Some(zone),
            ..Settings::default()
        };
        store
            .write_preferences(&[PreferenceWrite::new(
                UserId::parse(user).unwrap(),
                digest().id,
                true,
                Some(settings),
                now,
            )])
            .await
            .unwrap();
    }

    /// The runs in progress that reach users: (scheduled_at, users). (The
    /// task's own group, without users here, makes empty runs at 09:00Z.)
    async fn runs(store: &MemoryStore) -> Vec<(DateTime<Utc>, u64)> {
        let list = store.runs(&digest().id).await.unwrap();
        list.runs
            .iter()
            .filter(|run| run.users > 0)
            .map(|run| (run.scheduled_at, run.users))
            .collect()
    }

    #[actix_rt::test]
    async fn a_new_zone_groups_first_fire_after_a_clock_jump_runs_once() {
        let task = digest();
        // 09:00 in Tokyo (UTC+9) is 00:00Z.
        let fire = at("2026-03-01T00:00:00Z");
        let start = at("2026-02-28T23:50:00Z");
        let (pass, store, clock, lease) = pass_at(start, Duration::from_secs(1)).await;
        pass.schedule_periods(&task, &lease).await.unwrap();
        clock.advance(Duration::from_secs(1));
        pass.schedule_periods(&task, &lease).await.unwrap();
        // The group appears with its first user, ten minutes before its
        // first fire...
        place(&store, "tokyo_user", Asia::Tokyo, clock.now()).await;
        // ... and the next pass comes five minutes after it (a clock jump,
        // a slow pass): far more than two ticks.
        clock.set(fire + chrono::Duration::minutes(5));
        pass.schedule_periods(&task, &lease).await.unwrap();
        assert_eq!(
            runs(&store).await,
            vec![(fire, 1)],
            "the first fire runs once (misfire: run_once, inside the catch-up window)"
        );
        let groups = store.zone_groups(&task.id).await.unwrap();
        assert_eq!(groups.groups.len(), 1);
        assert_eq!(groups.groups[0].1.map(|state| state.last_fired), Some(fire));
        assert_eq!(groups.checked, Some(clock.now()));
        // Later passes do not run it again.
        for _ in 0..3 {
            clock.advance(Duration::from_secs(1));
            pass.schedule_periods(&task, &lease).await.unwrap();
        }
        assert_eq!(runs(&store).await, vec![(fire, 1)]);
    }

    #[actix_rt::test]
    async fn a_new_zone_group_does_not_rerun_a_fire_handled_before_it_appeared() {
        let task = digest();
        // 09:00 in Seoul and in Tokyo: both UTC+9, the same instant.
        let fire = at("2026-03-01T00:00:00Z");
        // Ticks of 10 s: a fire up to 20 s old is on time.
        let (pass, store, clock, lease) =
            pass_at(at("2026-02-28T23:59:00Z"), Duration::from_secs(10)).await;
        place(&store, "mover", Asia::Seoul, clock.now()).await;
        pass.schedule_periods(&task, &lease).await.unwrap();
        clock.set(fire + chrono::Duration::seconds(1));
        pass.schedule_periods(&task, &lease).await.unwrap();
        assert_eq!(runs(&store).await, vec![(fire, 1)], "Seoul's fire");
        let run = store.runs(&task.id).await.unwrap().runs.remove(0);
        assert!(store.finish_run(&run, lease.fence).await.unwrap());
        // The user moves to Tokyo, a group seen for the first time, whose
        // fire is the very instant just handled for Seoul.
        place(
            &store,
            "mover",
            Asia::Tokyo,
            fire + chrono::Duration::seconds(2),
        )
        .await;
        clock.set(fire + chrono::Duration::seconds(5));
        pass.schedule_periods(&task, &lease).await.unwrap();
        assert_eq!(runs(&store).await, vec![], "no second call of the mover");
        // Tokyo's next fire is tomorrow's.
        clock.set(fire + chrono::Duration::days(1) + chrono::Duration::seconds(1));
        pass.schedule_periods(&task, &lease).await.unwrap();
        assert_eq!(
            runs(&store).await,
            vec![(fire + chrono::Duration::days(1), 1)]
        );
    }

    #[actix_rt::test]
    async fn a_zone_group_present_at_the_first_pass_starts_at_its_next_fire() {
        let task = digest();
        let fire = at("2026-03-01T00:00:00Z");
        // The task's first pass comes after Tokyo's fire of the day.
        let (pass, store, clock, lease) =
            pass_at(fire + chrono::Duration::minutes(1), Duration::from_secs(10)).await;
        place(&store, "tokyo_user", Asia::Tokyo, clock.now()).await;
        pass.schedule_periods(&task, &lease).await.unwrap();
        clock.advance(Duration::from_secs(10));
        pass.schedule_periods(&task, &lease).await.unwrap();
        assert_eq!(
            runs(&store).await,
            vec![],
            "no fire from before the task's start"
        );
        clock.set(fire + chrono::Duration::days(1));
        pass.schedule_periods(&task, &lease).await.unwrap();
        assert_eq!(
            runs(&store).await,
            vec![(fire + chrono::Duration::days(1), 1)]
        );
    }
}
