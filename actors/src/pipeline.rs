//! Starts the actor tree and stops it gracefully.
//!
//! ```text
//! Pipeline
//! ├── MetricsActor                      (system arbiter)
//! ├── RateLimiterActor × (1 + tasks with a limit)   (system arbiter; refills leases only)
//! ├── scheduler side (role scheduler/all)
//! │   ├── DistributorActor              Supervisor: restarted when it stops
//! │   └── SchedulerActor                Supervisor: restarted when it stops
//! └── worker side (role worker/all)
//!     └── lane × arbiters (one Arbiter per core, at most pool_size)
//!         ├── dispatcher task           its own JobStream → its idle executors
//!         ├── ExecutorActor × its share of pool_size   Supervisor
//!         ├── ExecutionBatcher          claim/finish rounds of the lane
//!         └── one HTTP client           connections driven on the lane's thread
//! ```
//!
//! Restart rules: an executor whose job panics stops; its supervisor
//! restarts it with the same mailbox, and the job it held is requeued (so
//! redelivered, not lost). A panic in a scheduling pass stops the
//! scheduler and its supervisor restarts it; a panic in a distributor
//! handler fails that message only. Both keep no state a restart could
//! lose (schedule state and fan-out progress live in the store), and both
//! restarts are counted on the [`HealthBoard`], with their heartbeats.
//! Each lane's dispatcher beats `dispatcher.<lane>` and `executors.<lane>`
//! (the latter withheld while an executor holds one job longer than the
//! token wait, the call timeout and a minute together): a blocked lane or
//! a hung executor shows `stuck` in `/health`.
//!
//! Every role reloads the task definitions (every `tasks.reload_interval`
//! and on [`Pipeline::reloader`], i.e. SIGHUP): workers need a new task's
//! endpoint as much as the scheduler needs its interval. A bad file keeps
//! the running definitions and shows in [`ReloadHealth`].
//!
//! Shutdown ([`Pipeline::shutdown`]): the scheduler stops ticking at once
//! ([`StopScheduling`]) and its passes under way end after their current
//! step, releasing their locks; then the reloader ends, the dispatcher
//! stops taking jobs and drains.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use actix::prelude::*;
use tokio::sync::{mpsc, oneshot, watch};

use crate::{
    batcher::ExecutionBatcher,
    broker::{JobBroker, pending::RecordPending},
    catalog::TaskCatalog,
    clock::SharedClock,
    dispatcher::{Dispatcher, Heartbeats},
    distributor::{DISTRIBUTOR, DistributionSettings, DistributorActor},
    domain::TaskTypeId,
    error::PipelineError,
    executor::{ExecutionSettings, ExecutorActor, ExecutorEnv, Limiters, http_client},
    health::{HealthBoard, Quarantine},
    metrics::{FlushMetrics, MetricsActor},
    pause::{self, OperatorPauses},
    prometheus::Families,
    rate_limiter::{BucketLease, RateLimit},
    scheduler::{
        ReloadHealth, ReloadProblems, SCHEDULER, SchedulerActor, SchedulerSettings, StopScheduling,
        TaskSource,
    },
    store::dead_letters::DeadLetterStore,
    store::results::JobResultStore,
    store::{Bucket, BucketName, Stores, TokenStore},
};

/// Everything the actor tree needs to know, mapped from the service
/// configuration by the service crate.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Run the scheduler and distributor.
    pub scheduler: bool,
    /// Run the executors.
    pub worker: bool,
    /// `scheduler.check_interval`.
    pub check_interval: Duration,
    /// `scheduler.distribution_window`.
    pub distribution_window: Duration,
    /// `scheduler.batch_size`.
    pub batch_size: usize,
    /// `tasks.reload_interval`.
    pub reload_interval: Duration,
    /// How long a schedule lock lives without renewal.
    pub lock_ttl: Duration,
    /// `worker.pool_size`.
    pub pool_size: usize,
    /// Executor arbiters (threads); 0 means one per core.
    pub arbiters: usize,
    /// `queue.prefetch` (raised to `pool_size` if smaller).
    pub prefetch: u16,
    /// `worker.shutdown_timeout`.
    pub shutdown_timeout: Duration,
    /// `rate_limit.global`; `None` for no global limit.
    pub global_rate: Option<u32>,
    /// `rate_limit.per_task`.
    pub per_task_rate: BTreeMap<TaskTypeId, u32>,
    /// Timeouts, retries, success retention.
    pub execution: ExecutionSettings,
    /// `monitoring.metrics_interval`.
    pub metrics_interval: Duration,
}

/// The backends and shared objects the tree runs on.
#[derive(Clone)]
pub struct PipelineDeps {
    /// Shared state.
    pub stores: Stores,
    /// The job broker.
    pub broker: Arc<dyn JobBroker>,
    /// Task definitions in force.
    pub catalog: TaskCatalog,
    /// Where the scheduler reads "now".
    pub clock: SharedClock,
    /// Where reloads read the task definitions from.
    pub task_source: Option<TaskSource>,
    /// Where unreadable records are set aside (shared with the store).
    pub quarantine: Quarantine,
    /// Where jobs that failed for good are recorded.
    pub dead_letters: Arc<dyn DeadLetterStore>,
    /// Where job results are kept: the distributor records the jobs it
    /// publishes as `pending` there (when `execution.record_pending`), the
    /// scheduler the fires it skipped as missed, in the tally of the
    /// period that followed them.
    pub results: Arc<dyn JobResultStore>,
}

/// The worker side's live numbers, for `/health`.
#[derive(Debug, Clone)]
pub struct WorkerGauge {
    /// Executors in the pool.
    pub workers: usize,
    /// Jobs in flight.
    pub active: Arc<AtomicUsize>,
    /// The global limit, if any.
    pub global_rate: Option<u32>,
}

impl WorkerGauge {
    /// Jobs in flight now.
    pub fn active_jobs(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

/// The rate limits of a worker: the global bucket's lease shared by every
/// limit, one limit (and refilling actor) per task with a rate of its own,
/// and one for the others.
fn start_limiters(
    global_rate: Option<u32>,
    task_rates: &BTreeMap<TaskTypeId, u32>,
    store: &Arc<dyn TokenStore>,
    held: Arc<OperatorPauses>,
) -> Limiters {
    let bucket = |name: BucketName, rate: u32| Bucket {
        name,
        max_tokens: f64::from(rate),
        refill_rate: f64::from(rate),
    };
    let global = global_rate.map(|rate| BucketLease::new(bucket(BucketName::Global, rate)));
    let per_task = task_rates
        .iter()
        .map(|(task, rate)| {
            let lease = BucketLease::new(bucket(BucketName::Task(task.clone()), *rate));
            let limit = RateLimit::start(Some(lease), global.clone(), store.clone());
            (task.clone(), limit)
        })
        .collect();
    Limiters {
        global: global.map(|lease| RateLimit::start(None, Some(lease), store.clone())),
        per_task: Arc::new(per_task),
        pauses: Arc::default(),
        held,
    }
}

/// The prefetch of a lane of `size` executors out of `pool`: its share of
/// `prefetch`, rounded up, and never below its executors.
fn lane_prefetch(prefetch: u16, size: usize, pool: usize) -> u16 {
    let share = (usize::from(prefetch) * size).div_ceil(pool.max(1));
    u16::try_from(share.max(size)).unwrap_or(u16::MAX)
}

/// A running tree.
pub struct Pipeline {
    /// Counts outcomes; `/stats` asks it.
    pub metrics: Addr<MetricsActor>,
    /// The Prometheus families of this process.
    pub families: Families,
    /// Present when the scheduler side runs.
    pub scheduler: Option<Addr<SchedulerActor>>,
    /// Present when the scheduler side runs.
    pub distributor: Option<Addr<DistributorActor>>,
    /// The executor pool (empty without the worker side).
    pub executors: Vec<Addr<ExecutorActor>>,
    /// Present when the worker side runs.
    pub worker: Option<WorkerGauge>,
    /// Outcome of the last tasks reload.
    pub reload_health: ReloadHealth,
    /// Distribution settings in force (for the trigger and status API).
    pub distribution: Arc<DistributionSettings>,
    /// Heartbeats and restarts of the scheduler and distributor.
    pub board: HealthBoard,
    /// Records skipped because they could not be read.
    pub quarantine: Quarantine,
    /// Set as soon as [`Pipeline::shutdown`] starts.
    pub stopping: Arc<AtomicBool>,
    /// This process's copy of the operator pauses (refreshed every tick).
    pub pauses: Arc<OperatorPauses>,
    reload: mpsc::UnboundedSender<()>,
    stop: watch::Sender<bool>,
    dispatchers_done: Vec<oneshot::Receiver<()>>,
    arbiters: Vec<Arbiter>,
}

impl Pipeline {
    /// Starts the tree on the current actix system.
    pub async fn start(
        config: PipelineConfig,
        deps: PipelineDeps,
    ) -> Result<Pipeline, PipelineError> {
        deps.broker.declare().await?;
        let metrics_actor = MetricsActor::new(deps.stores.metrics.clone(), config.metrics_interval);
        let recorder = metrics_actor.recorder();
        let families = metrics_actor.families();
        let metrics = metrics_actor.start();

        let mut task_rates = BTreeMap::new();
        for (task, rate) in &config.per_task_rate {
            if *rate > 0 {
                task_rates.insert(task.clone(), *rate);
            }
        }
        let global_rate = config.global_rate.filter(|r| *r > 0);
        let distribution = Arc::new(DistributionSettings {
            window: config.distribution_window,
            batch_size: config.batch_size.max(1),
            lock_ttl: config.lock_ttl,
            task_rates,
            global_rate,
        });

        let (stop, stop_rx) = watch::channel(false);
        let (reload, reload_rx) = mpsc::unbounded_channel();
        let reload_health = ReloadHealth::default();
        if let Some(source) = deps.task_source.clone() {
            spawn_reloader(
                source,
                deps.catalog.clone(),
                reload_health.clone(),
                config.reload_interval,
                reload_rx,
                stop.subscribe(),
            );
        }
        let pauses = Arc::new(OperatorPauses::default());
        pause::spawn_refresher(
            deps.stores.schedule.clone(),
            pauses.clone(),
            config.check_interval,
            stop.subscribe(),
        );
        let board = HealthBoard::default();
        let mut pipeline = Pipeline {
            metrics: metrics.clone(),
            families,
            scheduler: None,
            distributor: None,
            executors: Vec::new(),
            worker: None,
            reload_health,
            distribution: distribution.clone(),
            board: board.clone(),
            quarantine: deps.quarantine.clone(),
            stopping: Arc::new(AtomicBool::new(false)),
            pauses: pauses.clone(),
            reload,
            stop,
            dispatchers_done: Vec::new(),
            arbiters: Vec::new(),
        };

        if config.worker {
            let limiters = start_limiters(
                global_rate,
                &distribution.task_rates,
                &deps.stores.tokens,
                pauses.clone(),
            );
            let active = Arc::new(AtomicUsize::new(0));
            let pool = config.pool_size.max(1);
            let threads = match config.arbiters {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            }
            .min(pool);
            let prefetch = config.prefetch.max(u16::try_from(pool).unwrap_or(u16::MAX));
            pipeline.arbiters = (0..threads).map(|_| Arbiter::new()).collect();
            // One lane per arbiter: its own consumer, dispatcher, executors,
            // batcher and HTTP client, all on the arbiter's thread, so a job
            // is received, claimed, called, recorded and acked without
            // changing threads.
            for (lane, arbiter) in pipeline.arbiters.iter().enumerate() {
                let size = pool / threads + usize::from(lane < pool % threads);
                let handle = arbiter.handle();
                let env = Arc::new(ExecutorEnv {
                    claims: deps.stores.claims.clone(),
                    broker: deps.broker.clone(),
                    dead_letters: deps.dead_letters.clone(),
                    catalog: deps.catalog.clone(),
                    limiters: limiters.clone(),
                    client: http_client(size)?,
                    metrics: recorder.clone(),
                    settings: config.execution.clone(),
                    active: active.clone(),
                });
                let batcher = ExecutionBatcher::start(&handle, deps.stores.claims.clone());
                let (idle_tx, idle_rx) = mpsc::unbounded_channel();
                let executors: Vec<Addr<ExecutorActor>> = (0..size)
                    .map(|index| {
                        let env = env.clone();
                        let idle = idle_tx.clone();
                        let batcher = batcher.clone();
                        Supervisor::start_in_arbiter(&handle, move |_| {
                            ExecutorActor::new(index, env, batcher, idle)
                        })
                    })
                    .collect();
                let stream = deps
                    .broker
                    .consume(lane_prefetch(prefetch, size, pool))
                    .await?;
                let heartbeats = Heartbeats {
                    board: board.clone(),
                    dispatcher: format!("{DISPATCHER}.{lane}"),
                    executors: format!("{EXECUTORS}.{lane}"),
                    stuck_after: config
                        .execution
                        .max_token_wait
                        .saturating_add(config.execution.timeout)
                        .saturating_add(EXECUTOR_MARGIN),
                };
                board.register(heartbeats.dispatcher.clone(), STALE_AFTER);
                board.register(heartbeats.executors.clone(), STALE_AFTER);
                let dispatcher = Dispatcher {
                    executors: executors.clone(),
                    idle: idle_rx,
                    stream,
                    shutdown_timeout: config.shutdown_timeout,
                    heartbeats,
                };
                let (done_tx, done_rx) = oneshot::channel();
                let stop_rx = stop_rx.clone();
                handle.spawn(async move {
                    dispatcher.run(stop_rx).await;
                    let _ = done_tx.send(());
                });
                pipeline.dispatchers_done.push(done_rx);
                pipeline.executors.extend(executors);
            }
            pipeline.worker = Some(WorkerGauge {
                workers: pool,
                active,
                global_rate,
            });
        }

        if config.scheduler {
            let schedule = deps.stores.schedule.clone();
            let broker: Arc<dyn JobBroker> = if config.execution.record_pending {
                Arc::new(RecordPending::new(
                    deps.broker.clone(),
                    deps.results.clone(),
                    config.execution.result_retention,
                ))
            } else {
                deps.broker.clone()
            };
            let settings = (*distribution).clone();
            let stale_after = config.check_interval.saturating_mul(3).max(STALE_AFTER);
            board.register(DISTRIBUTOR, STALE_AFTER);
            board.register(SCHEDULER, stale_after);
            let for_distributor = board.clone();
            let distributor = Supervisor::start(move |_| {
                DistributorActor::new(schedule, broker, settings, for_distributor)
            });
            let stores = deps.stores.clone();
            let catalog = deps.catalog.clone();
            let clock = deps.clock.clone();
            let settings = SchedulerSettings {
                check_interval: config.check_interval,
                lock_ttl: config.lock_ttl,
                batch_size: config.batch_size.max(1),
                window: config.distribution_window,
                families: pipeline.families.clone(),
                missed_tally: Some((deps.results.clone(), config.execution.result_retention)),
            };
            let for_scheduler = distributor.clone();
            let for_board = board.clone();
            let quarantine = deps.quarantine.clone();
            let scheduler = Supervisor::start(move |_| {
                SchedulerActor::new(
                    stores,
                    catalog,
                    clock,
                    for_scheduler,
                    settings,
                    for_board,
                    quarantine,
                )
            });
            pipeline.distributor = Some(distributor);
            pipeline.scheduler = Some(scheduler);
        }
        Ok(pipeline)
    }

    /// A handle that asks for a reload of the task definitions (SIGHUP).
    pub fn reloader(&self) -> TaskReloader {
        TaskReloader(self.reload.clone())
    }

    /// Stops gracefully: no more ticks or triggers, no new jobs, in-flight
    /// ones finish within the shutdown timeout, the rest are requeued;
    /// metrics are flushed.
    pub async fn shutdown(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(scheduler) = self.scheduler.take() {
            let _ = scheduler.send(StopScheduling).await;
        }
        let _ = self.stop.send(true);
        for done in self.dispatchers_done.drain(..) {
            let _ = done.await;
        }
        if let Ok(Err(err)) = self.metrics.send(FlushMetrics).await {
            tracing::warn!(error = %err, "final metrics flush failed");
        }
        for arbiter in self.arbiters.drain(..) {
            arbiter.stop();
        }
    }
}

/// Board entries of a lane's dispatcher and executors: `dispatcher.<lane>`,
/// `executors.<lane>`.
const DISPATCHER: &str = "dispatcher";
const EXECUTORS: &str = "executors";

/// Beyond the token wait and the call timeout, what recording an outcome
/// (with its retries) and settling a delivery may take: an executor
/// holding one job longer is stuck.
const EXECUTOR_MARGIN: Duration = Duration::from_secs(60);

/// An actor is stuck when it has not beaten its heartbeat for this long
/// (or three check intervals, if longer).
const STALE_AFTER: Duration = Duration::from_secs(30);

/// Asks the pipeline's reloader to re-read the task definitions.
#[derive(Debug, Clone)]
pub struct TaskReloader(mpsc::UnboundedSender<()>);

impl TaskReloader {
    /// Reloads soon; false once the pipeline is shutting down.
    pub fn reload(&self) -> bool {
        self.0.send(()).is_ok()
    }
}

/// Re-reads the task definitions every `interval` (never when zero) and on
/// each request, until `stop`.
fn spawn_reloader(
    source: TaskSource,
    catalog: TaskCatalog,
    health: ReloadHealth,
    interval: Duration,
    mut requests: mpsc::UnboundedReceiver<()>,
    mut stop: watch::Receiver<bool>,
) {
    actix::spawn(async move {
        let period = if interval.is_zero() {
            Duration::from_secs(365 * 24 * 3600)
        } else {
            interval
        };
        let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = timer.tick(), if !interval.is_zero() => {}
                request = requests.recv() => if request.is_none() { return },
                _ = stop.changed() => return,
            }
            reload_tasks(&source, &catalog, &health);
        }
    });
}

/// One reload: swaps the catalog, or keeps it, logs each problem (one
/// line each) and records them for `/health`.
fn reload_tasks(source: &TaskSource, catalog: &TaskCatalog, health: &ReloadHealth) {
    match source() {
        Ok(tasks) => {
            tracing::info!(tasks = tasks.len(), "task definitions reloaded");
            catalog.replace(tasks);
            health.set(Vec::new());
        }
        Err(ReloadProblems(problems)) => {
            for problem in &problems {
                tracing::error!(
                    %problem,
                    "tasks file rejected; keeping the running definitions"
                );
            }
            health.set(problems);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::{domain::TaskType, scheduler::ReloadProblem};

    fn report() -> TaskType {
        serde_json::from_value(serde_json::json!({
            "id": "report", "name": "Report",
            "interval": {"type": "daily", "value": 1},
            "timeout": "5s",
            "config": {"endpoint": "http://127.0.0.1:9/x", "method": "POST"}
        }))
        .unwrap()
    }

    #[test]
    fn a_rejected_reload_keeps_the_tasks_and_records_its_problems() {
        let problems = ReloadProblems(vec![
            ReloadProblem {
                file: "config/tasks.yaml".into(),
                position: Some((12, 17)),
                task: Some(TaskTypeId::parse("report").unwrap()),
                field: "interval.timezone".to_owned(),
                warning: false,
                message: "unknown time zone \"Mars/Olympus\"".to_owned(),
            },
            ReloadProblem {
                file: "$TASKQUEUE_RATE_LIMIT__PER_TASK__GONE".into(),
                position: None,
                task: None,
                field: "rate_limit.per_task.gone".to_owned(),
                warning: true,
                message: "no task \"gone\"".to_owned(),
            },
        ]);
        let next: Arc<Mutex<Result<Vec<TaskType>, ReloadProblems>>> =
            Arc::new(Mutex::new(Err(problems.clone())));
        let answer = next.clone();
        let source: TaskSource = Arc::new(move || answer.lock().unwrap().clone());
        let catalog = TaskCatalog::new(vec![report()]);
        let health = ReloadHealth::default();

        reload_tasks(&source, &catalog, &health);
        assert_eq!(health.problems(), problems.0);
        let shown: Vec<String> = health.problems().iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "config/tasks.yaml:12:17: task report: interval.timezone: unknown time zone \"Mars/Olympus\"",
                "$TASKQUEUE_RATE_LIMIT__PER_TASK__GONE: warning: rate_limit.per_task.gone: no task \"gone\"",
            ]
        );
        assert_eq!(catalog.snapshot().len(), 1, "the running definitions stay");

        *next.lock().unwrap() = Ok(Vec::new());
        reload_tasks(&source, &catalog, &health);
        assert!(health.problems().is_empty());
        assert!(catalog.snapshot().is_empty());
    }
}
