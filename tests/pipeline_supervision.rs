//! Supervision on the in-process backends: an executor that panics in the
//! middle of a job is restarted by its supervisor and the job it held is
//! redelivered and completed; a panic in a scheduling pass restarts the
//! scheduler and one in a distributor handler fails that message only,
//! both counted in the health board, and the work goes on.

use crate::support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use actors::{
    broker::{JobBroker, memory::MemoryBroker},
    catalog::TaskCatalog,
    clock::SystemClock,
    distributor::job_envelope,
    domain::{JobSource, TaskTypeId, UserId},
    executor::ExecutionSettings,
    fanout::Run,
    metrics::GetStats,
    pipeline::{Pipeline, PipelineConfig, PipelineDeps},
    scheduler::Trigger,
    store::{
        ClaimOutcome, ClaimStore, DueUser, ExecutionClaim, ExecutionFinish, LockLease, LockName,
        LockStore, RunList, ScheduleState, ScheduleStore, SlotWrite, SpreadCursor, StoreError,
        Stores, Throttle, ZoneGroups, memory::MemoryStore,
    },
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::json;
use support::*;
use uuid::Uuid;

/// Where [`Faulty`] panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// In the executor's claim (the middle of a job).
    ClaimExecution,
    /// In a scheduling pass (its read of the task's runs).
    Runs,
    /// In the distributor (its creation of a run of named users).
    CreateRun,
    /// Nowhere.
    Never,
}

/// A memory store with injected faults: its first call at `fault` panics,
/// as a bug would; its first `failing_finishes` finishes fail, as a Redis
/// blip would.
struct Faulty {
    inner: Arc<MemoryStore>,
    fault: Fault,
    panicked: AtomicBool,
    failing_finishes: AtomicU32,
}

impl Faulty {
    fn new(fault: Fault) -> Faulty {
        Faulty {
            inner: Arc::new(MemoryStore::new()),
            fault,
            panicked: AtomicBool::new(false),
            failing_finishes: AtomicU32::new(0),
        }
    }

    /// A store that never panics and fails its first `finishes` finishes.
    fn blips(finishes: u32) -> Faulty {
        Faulty {
            inner: Arc::new(MemoryStore::new()),
            fault: Fault::Never,
            panicked: AtomicBool::new(false),
            failing_finishes: AtomicU32::new(finishes),
        }
    }

    /// The pipeline's stores: this one for the schedule and the claims (the
    /// roles it injects faults into), its memory store for the others.
    fn stores(self: &Arc<Self>) -> Stores {
        Stores::new(self.inner.clone())
            .with_schedule(self.clone())
            .with_claims(self.clone())
    }

    fn maybe_panic(&self, at: Fault) {
        if self.fault == at && !self.panicked.swap(true, Ordering::SeqCst) {
            panic!("injected fault at {at:?}");
        }
    }
}

#[async_trait]
impl ScheduleStore for Faulty {
    async fn zone_groups(&self, t: &TaskTypeId) -> Result<ZoneGroups, StoreError> {
        self.inner.zone_groups(t).await
    }

    async fn zone_users_in_spread_order(
        &self,
        t: &TaskTypeId,
        z: Tz,
        a: Option<&SpreadCursor>,
        l: usize,
    ) -> Result<Vec<SpreadCursor>, StoreError> {
        self.inner.zone_users_in_spread_order(t, z, a, l).await
    }

    async fn record_zone_fires(
        &self,
        t: &TaskTypeId,
        f: &[(Tz, DateTime<Utc>)],
        c: DateTime<Utc>,
        l: &LockLease,
    ) -> Result<bool, StoreError> {
        self.inner.record_zone_fires(t, f, c, l).await
    }

    async fn enabled_users_in_spread_order(
        &self,
        t: &TaskTypeId,
        a: Option<&SpreadCursor>,
        l: usize,
    ) -> Result<Vec<SpreadCursor>, StoreError> {
        self.inner.enabled_users_in_spread_order(t, a, l).await
    }

    async fn enabled_users_after(
        &self,
        t: &TaskTypeId,
        a: Option<&UserId>,
        l: usize,
    ) -> Result<Vec<UserId>, StoreError> {
        self.inner.enabled_users_after(t, a, l).await
    }

    async fn due_custom_users(
        &self,
        t: &TaskTypeId,
        n: DateTime<Utc>,
        l: usize,
    ) -> Result<Vec<DueUser>, StoreError> {
        self.inner.due_custom_users(t, n, l).await
    }

    async fn advance_custom_users(
        &self,
        t: &TaskTypeId,
        m: &[(UserId, DateTime<Utc>, DateTime<Utc>)],
        f: u64,
    ) -> Result<bool, StoreError> {
        self.inner.advance_custom_users(t, m, f).await
    }

    async fn schedule_state(&self, t: &TaskTypeId) -> Result<Option<ScheduleState>, StoreError> {
        self.inner.schedule_state(t).await
    }

    async fn record_fire(
        &self,
        t: &TaskTypeId,
        f: DateTime<Utc>,
        e: &LockLease,
    ) -> Result<bool, StoreError> {
        self.inner.record_fire(t, f, e).await
    }

    async fn runs(&self, t: &TaskTypeId) -> Result<RunList, StoreError> {
        self.maybe_panic(Fault::Runs);
        self.inner.runs(t).await
    }

    async fn last_run(&self, t: &TaskTypeId) -> Result<Option<Run>, StoreError> {
        self.inner.last_run(t).await
    }

    async fn create_run(
        &self,
        r: &Run,
        l: &[SlotWrite],
        d: Duration,
        f: Option<u64>,
    ) -> Result<bool, StoreError> {
        self.maybe_panic(Fault::CreateRun);
        self.inner.create_run(r, l, d, f).await
    }

    async fn save_run(
        &self,
        r: &Run,
        l: &[SlotWrite],
        d: Duration,
        f: u64,
    ) -> Result<bool, StoreError> {
        self.inner.save_run(r, l, d, f).await
    }

    async fn finish_run(&self, r: &Run, f: u64) -> Result<bool, StoreError> {
        self.inner.finish_run(r, f).await
    }

    async fn slot_users(&self, r: &Run, s: u32, l: usize) -> Result<Vec<UserId>, StoreError> {
        self.inner.slot_users(r, s, l).await
    }

    async fn trigger_run(
        &self,
        t: &TaskTypeId,
        k: &str,
        r: i64,
        d: Duration,
    ) -> Result<Option<i64>, StoreError> {
        self.inner.trigger_run(t, k, r, d).await
    }

    async fn custom_users_page(
        &self,
        t: &TaskTypeId,
        o: u64,
        l: usize,
    ) -> Result<Vec<UserId>, StoreError> {
        self.inner.custom_users_page(t, o, l).await
    }

    async fn set_task_paused(
        &self,
        t: &TaskTypeId,
        since: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        self.inner.set_task_paused(t, since).await
    }

    async fn paused_tasks(
        &self,
    ) -> Result<std::collections::BTreeMap<TaskTypeId, DateTime<Utc>>, StoreError> {
        self.inner.paused_tasks().await
    }
}

#[async_trait]
impl ClaimStore for Faulty {
    async fn succeeded(&self, jobs: &[Uuid]) -> Result<Vec<bool>, StoreError> {
        self.inner.succeeded(jobs).await
    }

    async fn claim_execution(&self, c: &ExecutionClaim) -> Result<ClaimOutcome, StoreError> {
        self.maybe_panic(Fault::ClaimExecution);
        self.inner.claim_execution(c).await
    }

    async fn finish_execution(&self, f: &ExecutionFinish) -> Result<(), StoreError> {
        let failing = self
            .failing_finishes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(StoreError::Corrupt {
                key: "finish".to_owned(),
                reason: "injected store blip".to_owned(),
            });
        }
        self.inner.finish_execution(f).await
    }

    async fn record_throttle(&self, t: &Throttle) -> Result<u32, StoreError> {
        self.inner.record_throttle(t).await
    }
}

#[actix_rt::test]
async fn a_panicking_executor_is_restarted_and_its_job_redelivered() {
    let sink = Sink::start();
    let store = Arc::new(Faulty::new(Fault::ClaimExecution));
    let broker = Arc::new(MemoryBroker::new());
    let report = task(json!({
        "id": "report", "name": "Report",
        "interval": {"type": "daily", "value": 1},
        "timeout": "5s",
        "config": {"endpoint": sink.url("/ok/report"), "method": "POST"}
    }));
    let config = PipelineConfig {
        scheduler: false,
        ..pipeline_config()
    };
    let pipeline = Pipeline::start(
        config,
        PipelineDeps {
            stores: store.stores(),
            broker: broker.clone(),
            catalog: TaskCatalog::new(vec![report.clone()]),
            clock: Arc::new(SystemClock),
            task_source: None,
            quarantine: Default::default(),
            dead_letters: Arc::new(actors::store::dead_letters::MemoryDeadLetters::default()),
            results: Arc::new(actors::store::memory::MemoryStore::new()),
        },
    )
    .await
    .unwrap();
    let user = UserId::parse("carol").unwrap();
    let job = {
        let now = Utc::now();
        job_envelope(&report, &user, now, now, None, JobSource::Trigger, "test")
    };
    broker.publish(std::slice::from_ref(&job)).await.unwrap();

    let calls = sink
        .wait_for("/ok/report", 1, Duration::from_secs(10))
        .await;
    assert!(store.panicked.load(Ordering::SeqCst), "the fault fired");
    assert_eq!(calls.len(), 1, "the job ran after the restart");
    assert_eq!(calls[0].key(), job.job.id.to_string());
    // The redelivered copy settled (its attempt counted, its delivery
    // acked) and the broker holds no copy of the job, queued or in hand,
    // that could call again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = pipeline.metrics.send(GetStats).await.unwrap();
        let (pending, unsettled) = (broker.pending(), broker.unsettled());
        if stats.processed > 0 && pending == 0 && unsettled == 0 {
            assert_eq!(stats.processed, 1, "one attempt: {stats:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never settled: {stats:?}, {pending} queued, {unsettled} in hand"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sink.received_at("/ok/report").len(), 1);
    assert_eq!(
        store.inner.succeeded(&[job.job.id]).await.unwrap(),
        vec![true]
    );
    assert!(broker.dead_letters().is_empty());
    pipeline.shutdown().await;
}

/// Both sides, one executor, ticks every 200 ms.
fn pipeline_config() -> PipelineConfig {
    PipelineConfig {
        scheduler: true,
        worker: true,
        check_interval: Duration::from_millis(200),
        distribution_window: Duration::from_secs(1),
        batch_size: 10,
        reload_interval: Duration::ZERO,
        lock_ttl: Duration::from_secs(30),
        pool_size: 1,
        arbiters: 1,
        prefetch: 1,
        shutdown_timeout: Duration::from_secs(5),
        global_rate: None,
        per_task_rate: Default::default(),
        execution: ExecutionSettings {
            timeout: Duration::from_secs(5),
            max_retries: 0,
            retry_delay: Duration::from_millis(100),
            max_retry_delay: Duration::from_secs(1),
            success_ttl: Duration::from_secs(3600),
            throttles_per_attempt: 10,
            max_throttled_age: Duration::from_secs(86_400),
            result_retention: Duration::from_secs(3600),
            record_pending: true,
            max_token_wait: Duration::from_secs(1),
        },
        metrics_interval: Duration::from_secs(1),
    }
}

/// A pipeline of both sides on `store` and a memory broker, with the
/// `report` task calling `endpoint`.
async fn start_both(store: Arc<Faulty>, endpoint: String) -> (Pipeline, actors::domain::TaskType) {
    let report = task(json!({
        "id": "report", "name": "Report",
        "interval": {"type": "daily", "value": 1},
        "timeout": "5s",
        "config": {"endpoint": endpoint, "method": "POST"}
    }));
    let pipeline = Pipeline::start(
        pipeline_config(),
        PipelineDeps {
            stores: store.stores(),
            broker: Arc::new(MemoryBroker::new()),
            catalog: TaskCatalog::new(vec![report.clone()]),
            clock: Arc::new(SystemClock),
            task_source: None,
            quarantine: Default::default(),
            dead_letters: Arc::new(actors::store::dead_letters::MemoryDeadLetters::default()),
            results: Arc::new(actors::store::memory::MemoryStore::new()),
        },
    )
    .await
    .unwrap();
    (pipeline, report)
}

fn trigger(task: &actors::domain::TaskType, user: &str) -> Trigger {
    Trigger {
        task: task.clone(),
        users: Some(vec![UserId::parse(user).unwrap()]),
        immediate: true,
        idempotency_key: None,
        correlation_id: None,
    }
}

#[actix_rt::test]
async fn a_panicking_scheduling_pass_restarts_the_scheduler_and_the_run_goes_on() {
    let sink = Sink::start();
    let store = Arc::new(Faulty::new(Fault::Runs));
    let (pipeline, report) = start_both(store.clone(), sink.url("/ok/report")).await;
    let scheduler = pipeline.scheduler.clone().unwrap();

    // The first pass (the start's tick) panics reading the runs; the
    // supervisor restarts the scheduler.
    for _ in 0..200 {
        if pipeline.board.report()["scheduler"].restarts > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(store.panicked.load(Ordering::SeqCst), "the fault fired");
    let accepted = scheduler
        .send(trigger(&report, "dave"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(accepted.jobs_created, 1);
    let calls = sink
        .wait_for("/ok/report", 1, Duration::from_secs(10))
        .await;
    assert!(store.panicked.load(Ordering::SeqCst), "the fault fired");
    assert_eq!(calls.len(), 1, "the restarted scheduler released the run");
    let board = pipeline.board.report();
    assert_eq!(board["scheduler"].restarts, 1, "{board:?}");
    assert_eq!(board["scheduler"].status, "running", "{board:?}");
    assert_eq!(board["distributor"].restarts, 0, "{board:?}");
    pipeline.shutdown().await;
}

#[actix_rt::test]
async fn a_panicking_distributor_handler_fails_one_message_and_is_counted() {
    let sink = Sink::start();
    let store = Arc::new(Faulty::new(Fault::CreateRun));
    let (pipeline, report) = start_both(store.clone(), sink.url("/ok/report")).await;
    let scheduler = pipeline.scheduler.clone().unwrap();

    let failed = scheduler.send(trigger(&report, "erin")).await.unwrap();
    assert!(
        matches!(
            failed,
            Err(actors::error::PipelineError::Panicked("distributor"))
        ),
        "{failed:?}"
    );
    let accepted = scheduler
        .send(trigger(&report, "frank"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(accepted.jobs_created, 1);
    let calls = sink
        .wait_for("/ok/report", 1, Duration::from_secs(10))
        .await;
    assert_eq!(calls.len(), 1, "the next trigger ran");
    let board = pipeline.board.report();
    assert_eq!(board["distributor"].restarts, 1, "{board:?}");
    assert_eq!(board["scheduler"].restarts, 0, "{board:?}");
    pipeline.shutdown().await;
}

#[actix_rt::test]
async fn a_stopped_scheduler_refuses_triggers_and_starts_no_pass() {
    let sink = Sink::start();
    let store = Arc::new(Faulty::new(Fault::ClaimExecution));
    let (pipeline, report) = start_both(store.clone(), sink.url("/ok/report")).await;
    let scheduler = pipeline.scheduler.clone().unwrap();
    scheduler
        .send(actors::scheduler::StopScheduling)
        .await
        .unwrap();
    let refused = scheduler.send(trigger(&report, "gina")).await.unwrap();
    assert!(
        matches!(refused, Err(actors::error::PipelineError::ShuttingDown)),
        "{refused:?}"
    );
    let published = scheduler
        .send(actors::scheduler::Tick)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(published, 0, "no pass starts once stopped");
    assert!(store.inner.runs(&report.id).await.unwrap().runs.is_empty());
    pipeline.shutdown().await;
}

#[actix_rt::test]
async fn a_success_is_recorded_through_a_store_blip_without_a_second_call() {
    let sink = Sink::start();
    // The first two finishes fail: the success is recorded on a later try.
    let store = Arc::new(Faulty::blips(2));
    let broker = Arc::new(MemoryBroker::new());
    let report = task(json!({
        "id": "report", "name": "Report",
        "interval": {"type": "daily", "value": 1},
        "timeout": "5s",
        "config": {"endpoint": sink.url("/ok/report"), "method": "POST"}
    }));
    let pipeline = Pipeline::start(
        PipelineConfig {
            scheduler: false,
            ..pipeline_config()
        },
        PipelineDeps {
            stores: store.stores(),
            broker: broker.clone(),
            catalog: TaskCatalog::new(vec![report.clone()]),
            clock: Arc::new(SystemClock),
            task_source: None,
            quarantine: Default::default(),
            dead_letters: Arc::new(actors::store::dead_letters::MemoryDeadLetters::default()),
            results: Arc::new(actors::store::memory::MemoryStore::new()),
        },
    )
    .await
    .unwrap();
    let user = UserId::parse("dave").unwrap();
    let job = {
        let now = Utc::now();
        job_envelope(&report, &user, now, now, None, JobSource::Trigger, "test")
    };
    broker.publish(std::slice::from_ref(&job)).await.unwrap();

    // Without retries the success is lost and the job requeued; its copy
    // is then held off by the claim (timeout + 10 s) and called again.
    let mut recorded = false;
    for _ in 0..100 {
        if store.inner.succeeded(&[job.job.id]).await.unwrap() == vec![true] {
            recorded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recorded, "the success is recorded");
    assert_eq!(store.failing_finishes.load(Ordering::SeqCst), 0);
    assert_eq!(sink.received_at("/ok/report").len(), 1, "called once");
    // The delivery was acked, not requeued.
    assert_eq!(broker.pending(), 0);
    assert!(broker.dead_letters().is_empty());
    pipeline.shutdown().await;
}

/// A broker that publishes one batch at a time, each taking `delay`, as
/// a slow RabbitMQ would: it keeps a fan-out under way long enough to stop
/// it midway.
struct SlowBroker {
    inner: MemoryBroker,
    delay: Duration,
    one_at_a_time: tokio::sync::Mutex<()>,
}

#[async_trait]
impl JobBroker for SlowBroker {
    async fn declare(&self) -> Result<(), actors::broker::BrokerError> {
        self.inner.declare().await
    }
    async fn publish(
        &self,
        jobs: &[actors::domain::JobEnvelope],
    ) -> Result<(), actors::broker::BrokerError> {
        let _turn = self.one_at_a_time.lock().await;
        tokio::time::sleep(self.delay).await;
        self.inner.publish(jobs).await
    }
    async fn consume(
        &self,
        prefetch: u16,
    ) -> Result<Box<dyn actors::broker::JobStream>, actors::broker::BrokerError> {
        self.inner.consume(prefetch).await
    }
    async fn queue_depths(&self) -> Result<Vec<(&'static str, u64)>, actors::broker::BrokerError> {
        self.inner.queue_depths().await
    }
}

#[actix_rt::test]
async fn a_shutdown_ends_the_pass_under_way_and_frees_its_lock_for_another_replica() {
    let store = Arc::new(MemoryStore::new());
    let report = task(json!({
        "id": "report", "name": "Report",
        "interval": {"type": "daily", "value": 1},
        "timeout": "5s",
        "config": {"endpoint": "http://127.0.0.1:9/report", "method": "POST"}
    }));
    let users: Vec<String> = (0..400).map(|n| format!("user-{n:03}")).collect();
    enable_users(store.as_ref(), "report", &users).await;
    // Pages of 10 users, each publish 50 ms: the fan-out takes ~2 s.
    let pipeline = Pipeline::start(
        PipelineConfig {
            worker: false,
            check_interval: Duration::from_secs(3600),
            ..pipeline_config()
        },
        PipelineDeps {
            stores: Stores::new(store.clone()),
            broker: Arc::new(SlowBroker {
                inner: MemoryBroker::new(),
                delay: Duration::from_millis(50),
                one_at_a_time: Default::default(),
            }),
            catalog: TaskCatalog::new(vec![report.clone()]),
            clock: Arc::new(SystemClock),
            task_source: None,
            quarantine: Default::default(),
            dead_letters: Arc::new(actors::store::dead_letters::MemoryDeadLetters::default()),
            results: store.clone(),
        },
    )
    .await
    .unwrap();
    let scheduler = pipeline.scheduler.clone().unwrap();
    let accepted = scheduler
        .send(Trigger {
            users: None,
            ..trigger(&report, "unused")
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(accepted.jobs_created, 400);
    let released = || async {
        let runs = store.runs(&report.id).await.unwrap().runs;
        runs.first().map_or(0, |run| run.released)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while released().await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the fan-out never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let stopping = std::time::Instant::now();
    scheduler
        .send(actors::scheduler::StopScheduling)
        .await
        .unwrap();
    let took = stopping.elapsed();
    // Another replica gets the lock at once, and the run to carry on.
    let lock = LockName::Schedule(report.id.clone());
    assert!(
        store
            .acquire_lock(&lock, Duration::from_secs(30))
            .await
            .unwrap()
            .is_some(),
        "the stopped pass still holds the schedule lock"
    );
    let runs = store.runs(&report.id).await.unwrap().runs;
    assert_eq!(runs.len(), 1, "the run is kept for the next holder");
    assert!(
        runs[0].released < 400,
        "the pass stopped midway, not at the end: {} released",
        runs[0].released
    );
    assert!(
        took < Duration::from_secs(10),
        "the stop waited {took:?}, not one step"
    );
    pipeline.shutdown().await;
}
