//! MetricsActor: counts execution outcomes for `/stats` and flushes them to
//! the Redis metrics in one pipelined batch per `monitoring.metrics_interval`.
//! Executors count through a [`MetricsRecorder`] (a short lock on the
//! shared counters), so an outcome costs no message.
//!
//! Every attempt that reached an outcome counts once in `processed`;
//! attempts that did not succeed (retried or dead-lettered) also count in
//! `failed`. The Redis hashes `metrics:executions:{date}` and
//! `metrics:failures:{date}` use the same definitions, per task. A failed
//! flush keeps its counts for the next one.
//!
//! Jobs settled without a call are not attempts: they count apart, by
//! reason, in `/stats`'s `skipped` ([`Skipped`]): the user disabled the
//! task or no longer has it, the job already succeeded (a duplicate copy),
//! a stale copy of a try already retried, or a run for the user under way
//! (`overlap: skip`).
//!
//! The same recorder feeds the Prometheus families ([`Families`]): under
//! the lock it already takes, it bumps the task's cached members (shared
//! atomics), so `/metrics` costs the hot path no extra lock or message.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use actix::prelude::*;
use chrono::NaiveDate;

use crate::{
    domain::{DeadLetterReason, Status, TaskTypeId},
    messages::{ExecutionOutcome, RecordExecution},
    prometheus::{DeferralLabel, DeferralLabels, Families, ReasonLabels, TaskLabels, TaskMembers},
    store::{DurationSample, MetricsBatch, MetricsStore, StoreError},
};

/// Window over which `current_rate` is measured.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Duration samples kept for the next flush at most (older ones are dropped
/// when Redis is unreachable for long).
const MAX_PENDING_SAMPLES: usize = 100_000;

/// Asks for the `/stats` numbers.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Stats")]
pub struct GetStats;

/// Writes what is pending to Redis now (also done on every interval and at
/// shutdown).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct FlushMetrics;

/// Why a job was settled without calling its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The user disabled the task, or no longer has it enabled.
    Disabled,
    /// The job's success is recorded: a duplicate copy.
    AlreadySucceeded,
    /// A copy of a try the job already retried.
    Stale,
    /// Another run for the user is under way (`overlap: skip`).
    Overlap,
}

/// Jobs skipped since start, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// [`Skip::Disabled`].
    pub disabled: u64,
    /// [`Skip::AlreadySucceeded`].
    pub already_succeeded: u64,
    /// [`Skip::Stale`].
    pub stale: u64,
    /// [`Skip::Overlap`].
    pub overlap: u64,
}

impl Skipped {
    fn add(&mut self, skip: Skip) {
        let counter = match skip {
            Skip::Disabled => &mut self.disabled,
            Skip::AlreadySucceeded => &mut self.already_succeeded,
            Skip::Stale => &mut self.stale,
            Skip::Overlap => &mut self.overlap,
        };
        *counter += 1;
    }
}

/// The worker's `/stats` body.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Stats {
    /// Attempts that reached an outcome.
    pub processed: u64,
    /// Attempts that did not succeed.
    pub failed: u64,
    /// Mean duration of an attempt, in milliseconds.
    pub avg_duration_ms: u64,
    /// Attempts per second over the last 10 seconds.
    pub current_rate: f64,
    /// Seconds since the actor started.
    pub uptime: u64,
    /// Jobs settled without a call, by reason (not counted in `processed`).
    pub skipped: Skipped,
}

/// Counters in memory plus what the next flush will add to Redis.
#[derive(Debug)]
struct Counters {
    processed: u64,
    failed: u64,
    total_duration_ms: u128,
    skipped: Skipped,
    /// Completion instants inside [`RATE_WINDOW`], oldest first.
    recent: VecDeque<Instant>,
    /// Not yet flushed.
    pending: MetricsBatch,
    /// The Prometheus families.
    families: Families,
    /// Each task's members of the outcome families, looked up once.
    members: HashMap<TaskTypeId, TaskMembers>,
}

impl Counters {
    fn count_families(&mut self, msg: &RecordExecution) {
        let families = &self.families;
        let members = self
            .members
            .entry(msg.task_type_id.clone())
            .or_insert_with(|| families.task(msg.task_type_id.as_str()));
        match msg.outcome {
            ExecutionOutcome::Success => {
                members.success.inc();
            }
            ExecutionOutcome::Retry => {
                members.retry.inc();
                members.retries.inc();
                members.failures.inc();
            }
            ExecutionOutcome::Throttle => {
                members.throttle.inc();
                members.throttles.inc();
                members.failures.inc();
            }
            ExecutionOutcome::DeadLetter(reason) => {
                members.dead_letter.inc();
                members.failures.inc();
                families
                    .dead_letters
                    .get_or_create(&ReasonLabels {
                        task: msg.task_type_id.as_str().to_owned(),
                        reason: reason.as_str().to_owned(),
                    })
                    .inc();
            }
        }
        members.duration.observe(msg.duration.as_secs_f64());
        members.lateness.observe(msg.lateness.as_secs_f64());
    }

    fn prune(&mut self, now: Instant) {
        while let Some(front) = self.recent.front() {
            if now.duration_since(*front) > RATE_WINDOW {
                self.recent.pop_front();
            } else {
                break;
            }
        }
    }

    fn count(&mut self, msg: RecordExecution, now: Instant) {
        self.processed += 1;
        let failed = msg.status() != Status::Success;
        self.count_families(&msg);
        if failed {
            self.failed += 1;
        }
        let duration_ms = u64::try_from(msg.duration.as_millis()).unwrap_or(u64::MAX);
        self.total_duration_ms += u128::from(duration_ms);
        self.recent.push_back(now);
        self.prune(now);

        let date = msg.completed_at.date_naive();
        add_count(&mut self.pending.executions, date, &msg.task_type_id);
        if failed {
            add_count(&mut self.pending.failures, date, &msg.task_type_id);
        }
        if self.pending.durations.len() < MAX_PENDING_SAMPLES {
            self.pending.durations.push(DurationSample {
                task_type_id: msg.task_type_id,
                job_id: msg.job_id,
                completed_at: msg.completed_at,
                duration_ms,
            });
        }
    }
}

/// Where executors count their outcomes without a message (a short lock
/// on the counters the [`MetricsActor`] reads and flushes). Cheap to
/// clone.
#[derive(Clone)]
pub struct MetricsRecorder {
    counters: Arc<Mutex<Counters>>,
    families: Families,
}

impl MetricsRecorder {
    /// Counts one attempt's outcome.
    pub fn record(&self, msg: RecordExecution) {
        lock(&self.counters).count(msg, Instant::now());
    }

    /// Counts a job settled without a call.
    pub fn skipped(&self, skip: Skip) {
        lock(&self.counters).skipped.add(skip);
    }

    /// Counts a job put back uncalled for `wait` (a rate-limit wait).
    pub fn deferred(&self, task: &TaskTypeId, why: Deferral, wait: Duration) {
        let task = task.as_str().to_owned();
        self.families
            .rate_limit_wait
            .get_or_create(&TaskLabels { task: task.clone() })
            .observe(wait.as_secs_f64());
        self.families
            .deferrals
            .get_or_create(&DeferralLabels {
                task,
                reason: why.label(),
            })
            .inc();
    }

    /// Counts a job dead-lettered without an attempt (its task is
    /// unknown).
    pub fn dead_lettered(&self, task: &TaskTypeId, reason: DeadLetterReason) {
        self.families
            .dead_letters
            .get_or_create(&ReasonLabels {
                task: task.as_str().to_owned(),
                reason: reason.as_str().to_owned(),
            })
            .inc();
    }
}

/// Why a job was put back without being called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deferral {
    /// No rate-limit token within `execution.max_token_wait`.
    RateLimit,
    /// The task is paused by an endpoint's `Retry-After`.
    RetryAfter,
    /// The task is paused by an operator.
    Paused,
}

impl Deferral {
    /// For logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Deferral::RateLimit => "no token in time",
            Deferral::RetryAfter => "task paused by Retry-After",
            Deferral::Paused => "task paused by an operator",
        }
    }

    fn label(self) -> DeferralLabel {
        match self {
            Deferral::RateLimit => DeferralLabel::rate_limit,
            Deferral::RetryAfter => DeferralLabel::retry_after,
            Deferral::Paused => DeferralLabel::paused,
        }
    }
}

fn lock(counters: &Mutex<Counters>) -> MutexGuard<'_, Counters> {
    match counters.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Serves `/stats` from the counters and flushes them to Redis.
pub struct MetricsActor {
    store: Arc<dyn MetricsStore>,
    interval: Duration,
    started: Instant,
    counters: Arc<Mutex<Counters>>,
    families: Families,
    /// A flush is under way; another one waits for the next interval.
    flushing: bool,
}

impl MetricsActor {
    /// A metrics actor flushing to `store` every `interval`.
    pub fn new(store: Arc<dyn MetricsStore>, interval: Duration) -> Self {
        let families = Families::new();
        MetricsActor {
            store,
            interval,
            started: Instant::now(),
            counters: Arc::new(Mutex::new(Counters {
                processed: 0,
                failed: 0,
                total_duration_ms: 0,
                skipped: Skipped::default(),
                recent: VecDeque::new(),
                pending: MetricsBatch::default(),
                families: families.clone(),
                members: HashMap::new(),
            })),
            families,
            flushing: false,
        }
    }

    /// A recorder counting into this actor's counters.
    pub fn recorder(&self) -> MetricsRecorder {
        MetricsRecorder {
            counters: self.counters.clone(),
            families: self.families.clone(),
        }
    }

    /// The Prometheus families this actor's recorders count into.
    pub fn families(&self) -> Families {
        self.families.clone()
    }

    fn stats(&mut self) -> Stats {
        let now = Instant::now();
        let mut counters = lock(&self.counters);
        counters.prune(now);
        let avg = counters
            .total_duration_ms
            .checked_div(u128::from(counters.processed))
            .unwrap_or(0);
        Stats {
            processed: counters.processed,
            failed: counters.failed,
            avg_duration_ms: u64::try_from(avg).unwrap_or(u64::MAX),
            current_rate: counters.recent.len() as f64 / RATE_WINDOW.as_secs_f64(),
            uptime: self.started.elapsed().as_secs(),
            skipped: counters.skipped,
        }
    }

    /// Takes the pending batch, leaving an empty one.
    fn take_pending(&mut self) -> MetricsBatch {
        std::mem::take(&mut lock(&self.counters).pending)
    }

    /// Puts back a batch whose flush failed.
    fn restore(&mut self, batch: MetricsBatch) {
        let mut merged = batch;
        let newer = self.take_pending();
        merged.executions.extend(newer.executions);
        merged.failures.extend(newer.failures);
        merged.durations.extend(newer.durations);
        merged.executions = sum_counts(merged.executions);
        merged.failures = sum_counts(merged.failures);
        let excess = merged.durations.len().saturating_sub(MAX_PENDING_SAMPLES);
        merged.durations.drain(..excess);
        lock(&self.counters).pending = merged;
    }
}

fn add_count(counts: &mut Vec<(NaiveDate, TaskTypeId, u64)>, date: NaiveDate, task: &TaskTypeId) {
    match counts.iter_mut().find(|(d, t, _)| *d == date && t == task) {
        Some((_, _, n)) => *n += 1,
        None => counts.push((date, task.clone(), 1)),
    }
}

fn sum_counts(counts: Vec<(NaiveDate, TaskTypeId, u64)>) -> Vec<(NaiveDate, TaskTypeId, u64)> {
    let mut sums: BTreeMap<(NaiveDate, TaskTypeId), u64> = BTreeMap::new();
    for (date, task, n) in counts {
        *sums.entry((date, task)).or_default() += n;
    }
    sums.into_iter().map(|((d, t), n)| (d, t, n)).collect()
}

impl Actor for MetricsActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.interval, |_, ctx| {
            ctx.notify(FlushMetrics);
        });
    }
}

impl Handler<RecordExecution> for MetricsActor {
    type Result = ();

    fn handle(&mut self, msg: RecordExecution, _: &mut Self::Context) {
        lock(&self.counters).count(msg, Instant::now());
    }
}

impl Handler<GetStats> for MetricsActor {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.stats())
    }
}

impl Handler<FlushMetrics> for MetricsActor {
    type Result = ResponseActFuture<Self, Result<(), StoreError>>;

    fn handle(&mut self, _: FlushMetrics, _: &mut Self::Context) -> Self::Result {
        if self.flushing {
            return Box::pin(fut::ready(Ok(())));
        }
        let batch = self.take_pending();
        if batch == MetricsBatch::default() {
            return Box::pin(fut::ready(Ok(())));
        }
        self.flushing = true;
        let store = self.store.clone();
        Box::pin(
            async move {
                let result = store.record_metrics(&batch).await;
                (batch, result)
            }
            .into_actor(self)
            .map(|(batch, result), act, _| {
                act.flushing = false;
                if let Err(err) = &result {
                    tracing::warn!(error = %err, "metrics flush failed; keeping counts for the next one");
                    act.restore(batch);
                }
                result
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(counts: Vec<(u32, &str, u64)>, expected: Vec<(u32, &str, u64)>) {
        let day = |d: u32| NaiveDate::from_ymd_opt(2026, 1, d).unwrap();
        let task = |t: &str| TaskTypeId::parse(t).unwrap();
        let input = counts
            .into_iter()
            .map(|(d, t, n)| (day(d), task(t), n))
            .collect();
        let expected: Vec<_> = expected
            .into_iter()
            .map(|(d, t, n)| (day(d), task(t), n))
            .collect();
        assert_eq!(sum_counts(input), expected);
    }

    #[test]
    fn restored_counts_are_summed_per_day_and_task() {
        check(vec![], vec![]);
        check(
            vec![(1, "a", 2), (1, "a", 3), (2, "a", 1), (1, "b", 1)],
            vec![(1, "a", 5), (1, "b", 1), (2, "a", 1)],
        );
    }
}
