//! The Prometheus families of a process, in one registry.
//!
//! Executors count through the [`MetricsRecorder`](crate::metrics::MetricsRecorder)
//! as before; the recorder keeps, per task, clones of the family members it
//! updates (atomic counters, histograms), so an outcome costs no family
//! lookup and no lock beyond the recorder's own. Gauges that describe the
//! world (queue depths, active jobs, fan-out progress) are set at scrape
//! time by whoever serves `/metrics`, from a cache of a few seconds.
//!
//! Names follow the Prometheus conventions: counters end in `_total`,
//! durations are in seconds and end in `_seconds`, everything starts with
//! `taskqueue_`.

use std::sync::Arc;

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::domain::DeadLetterReason;

/// What became of one attempt, as the metrics tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum OutcomeLabel {
    /// 2xx: the job is done.
    success,
    /// A retryable failure: the next attempt is published.
    retry,
    /// 429/503 with `Retry-After`: the same attempt is published later.
    throttle,
    /// Failed for good: the job is in the failed queue.
    dead_letter,
}

/// Why a job was put back without being called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum DeferralLabel {
    /// No rate-limit token within `execution.max_token_wait`.
    rate_limit,
    /// The task is paused by an endpoint's `Retry-After`.
    retry_after,
    /// The task is paused by an operator (`POST /tasks/{id}/pause`).
    paused,
}

/// What a scheduling pass of a task came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum PassLabel {
    /// It held the task's lock and did what was due.
    completed,
    /// Another replica holds the task's lock.
    lock_elsewhere,
    /// An operator pause holds the task: nothing done.
    paused,
    /// It failed (or panicked); the next tick tries again.
    failed,
}

/// `task`, `outcome` (of a scheduling pass).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PassLabels {
    /// The task type id.
    pub task: String,
    /// What the pass came to.
    pub outcome: PassLabel,
}

/// `task`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TaskLabels {
    /// The task type id.
    pub task: String,
}

/// `task`, `outcome`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The task type id.
    pub task: String,
    /// What became of the attempt.
    pub outcome: OutcomeLabel,
}

/// `task`, `reason` (a dead letter's reason).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The task type id.
    pub task: String,
    /// `retries_exhausted`, `permanent_failure`, `throttled_too_long`,
    /// `unknown_task_type`.
    pub reason: String,
}

/// `task`, `reason` (why a job was deferred).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DeferralLabels {
    /// The task type id.
    pub task: String,
    /// Why it was deferred.
    pub reason: DeferralLabel,
}

/// `queue`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct QueueLabels {
    /// The broker queue.
    pub queue: String,
}

/// Which run of a task a fan-out gauge describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RunLabel {
    /// The last finished run.
    last,
    /// The runs in progress, summed.
    in_progress,
}

/// Which count of a run a fan-out gauge holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum StageLabel {
    /// Users the run reaches (users due in the period).
    due,
    /// Users written to a slot list so far.
    planned,
    /// Jobs published to the broker so far.
    released,
}

/// `task`, `run`, `stage`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FanoutLabels {
    /// The task type id.
    pub task: String,
    /// Which run.
    pub run: RunLabel,
    /// Which count.
    pub stage: StageLabel,
}

/// Bucket bounds (seconds) of the duration histogram: 5 ms to about 80 s.
fn duration_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.005, 2.0, 15)
}

/// Bucket bounds (seconds) of the lateness histogram: 50 ms to about 1.8 h.
fn lateness_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.05, 2.0, 18)
}

fn duration_histogram() -> Histogram {
    Histogram::new(duration_buckets())
}

fn lateness_histogram() -> Histogram {
    Histogram::new(lateness_buckets())
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every family of the process. Cheap to clone (the members are shared).
#[derive(Clone)]
pub struct Families {
    registry: Arc<Registry>,
    /// `taskqueue_executions_total{task,outcome}`.
    pub executions: Family<OutcomeLabels, Counter>,
    /// `taskqueue_failures_total{task}`: attempts that did not succeed.
    pub failures: Family<TaskLabels, Counter>,
    /// `taskqueue_retries_total{task}`.
    pub retries: Family<TaskLabels, Counter>,
    /// `taskqueue_throttles_total{task}`.
    pub throttles: Family<TaskLabels, Counter>,
    /// `taskqueue_dead_letters_total{task,reason}`.
    pub dead_letters: Family<ReasonLabels, Counter>,
    /// `taskqueue_execution_duration_seconds{task}`.
    pub duration: HistogramFamily<TaskLabels>,
    /// `taskqueue_execution_lateness_seconds{task}`: start minus
    /// `execute_after`.
    pub lateness: HistogramFamily<TaskLabels>,
    /// `taskqueue_deferrals_total{task,reason}`: jobs put back uncalled.
    pub deferrals: Family<DeferralLabels, Counter>,
    /// `taskqueue_rate_limit_wait_seconds{task}`: how long a deferred job
    /// was put back for.
    pub rate_limit_wait: HistogramFamily<TaskLabels>,
    /// `taskqueue_queue_depth{queue}`: messages ready in each broker queue.
    pub queue_depth: Family<QueueLabels, Gauge>,
    /// `taskqueue_active_jobs`: jobs in flight in this process.
    pub active_jobs: Gauge,
    /// `taskqueue_fanout_jobs{task,run,stage}`.
    pub fanout_jobs: Family<FanoutLabels, Gauge>,
    /// `taskqueue_fanout_runs_in_progress{task}`.
    pub runs_in_progress: Family<TaskLabels, Gauge>,
    /// `taskqueue_last_run_timestamp_seconds{task}`: the last finished
    /// run's `scheduled_at`.
    pub last_run: Family<TaskLabels, Gauge>,
    /// `taskqueue_missed_fires_total{task}`: fires the misfire policy
    /// skipped (counted by the scheduler that handled them).
    pub missed_fires: Family<TaskLabels, Counter>,
    /// `taskqueue_task_paused{task}`: 1 while an operator pause holds the
    /// task, else 0.
    pub task_paused: Family<TaskLabels, Gauge>,
    /// `taskqueue_scheduler_passes_total{task,outcome}`: scheduling passes
    /// this replica ended, by what they came to.
    pub passes: Family<PassLabels, Counter>,
}

impl std::fmt::Debug for Families {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Families").finish_non_exhaustive()
    }
}

impl Default for Families {
    fn default() -> Self {
        Families::new()
    }
}

impl Families {
    /// A fresh registry with every family registered.
    pub fn new() -> Families {
        let mut registry = Registry::with_prefix("taskqueue");
        let executions = Family::default();
        let failures = Family::default();
        let retries = Family::default();
        let throttles = Family::default();
        let dead_letters = Family::default();
        let duration: HistogramFamily<TaskLabels> =
            Family::new_with_constructor(duration_histogram as fn() -> Histogram);
        let lateness: HistogramFamily<TaskLabels> =
            Family::new_with_constructor(lateness_histogram as fn() -> Histogram);
        let deferrals = Family::default();
        let rate_limit_wait: HistogramFamily<TaskLabels> =
            Family::new_with_constructor(lateness_histogram as fn() -> Histogram);
        let queue_depth = Family::default();
        let active_jobs = Gauge::default();
        let fanout_jobs = Family::default();
        let runs_in_progress = Family::default();
        let last_run = Family::default();
        let missed_fires = Family::default();
        let task_paused = Family::default();
        let passes = Family::default();
        registry.register(
            "executions",
            "Attempts that reached an outcome, per task and outcome",
            executions.clone(),
        );
        registry.register(
            "failures",
            "Attempts that did not succeed (retried, throttled or dead-lettered)",
            failures.clone(),
        );
        registry.register(
            "retries",
            "Failed attempts whose next attempt was published",
            retries.clone(),
        );
        registry.register(
            "throttles",
            "Attempts answered 429/503 with Retry-After",
            throttles.clone(),
        );
        registry.register(
            "dead_letters",
            "Jobs sent to the failed queue, per task and reason",
            dead_letters.clone(),
        );
        registry.register(
            "execution_duration_seconds",
            "Duration of an endpoint call",
            duration.clone(),
        );
        registry.register(
            "execution_lateness_seconds",
            "Start of an attempt minus its execute_after",
            lateness.clone(),
        );
        registry.register(
            "deferrals",
            "Jobs put back uncalled, per task and reason",
            deferrals.clone(),
        );
        registry.register(
            "rate_limit_wait_seconds",
            "How long a deferred job was put back for",
            rate_limit_wait.clone(),
        );
        registry.register(
            "queue_depth",
            "Messages ready in each broker queue",
            queue_depth.clone(),
        );
        registry.register(
            "active_jobs",
            "Jobs in flight in this process",
            active_jobs.clone(),
        );
        registry.register(
            "fanout_jobs",
            "Users due, planned and released of the last finished run and of the runs in progress",
            fanout_jobs.clone(),
        );
        registry.register(
            "fanout_runs_in_progress",
            "Fan-out runs not finished yet",
            runs_in_progress.clone(),
        );
        registry.register(
            "last_run_timestamp_seconds",
            "scheduled_at of the last finished run",
            last_run.clone(),
        );
        registry.register(
            "missed_fires",
            "Fires the misfire policy skipped (never run)",
            missed_fires.clone(),
        );
        registry.register(
            "task_paused",
            "1 while the task is paused by an operator",
            task_paused.clone(),
        );
        registry.register(
            "scheduler_passes",
            "Scheduling passes this replica ended, per task and outcome",
            passes.clone(),
        );
        Families {
            registry: Arc::new(registry),
            executions,
            failures,
            retries,
            throttles,
            dead_letters,
            duration,
            lateness,
            deferrals,
            rate_limit_wait,
            queue_depth,
            active_jobs,
            fanout_jobs,
            runs_in_progress,
            last_run,
            missed_fires,
            task_paused,
            passes,
        }
    }

    /// The members one task's outcomes update, looked up once.
    pub fn task(&self, task: &str) -> TaskMembers {
        let labels = TaskLabels {
            task: task.to_owned(),
        };
        let outcome = |outcome| {
            self.executions.get_or_create_owned(&OutcomeLabels {
                task: task.to_owned(),
                outcome,
            })
        };
        TaskMembers {
            success: outcome(OutcomeLabel::success),
            retry: outcome(OutcomeLabel::retry),
            throttle: outcome(OutcomeLabel::throttle),
            dead_letter: outcome(OutcomeLabel::dead_letter),
            failures: self.failures.get_or_create_owned(&labels),
            retries: self.retries.get_or_create_owned(&labels),
            throttles: self.throttles.get_or_create_owned(&labels),
            duration: self.duration.get_or_create_owned(&labels),
            lateness: self.lateness.get_or_create_owned(&labels),
        }
    }

    /// Creates every series of `task` at zero (every outcome, deferral
    /// reason and dead-letter reason), so a dashboard's `rate()` sees the
    /// series before its first event.
    pub fn touch(&self, task: &str) {
        let _ = self.task(task);
        let labels = TaskLabels {
            task: task.to_owned(),
        };
        let _ = self.rate_limit_wait.get_or_create(&labels);
        let _ = self.missed_fires.get_or_create(&labels);
        for reason in [
            DeferralLabel::rate_limit,
            DeferralLabel::retry_after,
            DeferralLabel::paused,
        ] {
            let _ = self.deferrals.get_or_create(&DeferralLabels {
                task: task.to_owned(),
                reason,
            });
        }
        for reason in DeadLetterReason::OF_EXECUTION {
            let _ = self.dead_letters.get_or_create(&ReasonLabels {
                task: task.to_owned(),
                reason: reason.as_str().to_owned(),
            });
        }
    }

    /// The text exposition (Prometheus text format 0.0.4).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// The `Content-Type` of [`Families::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// One task's members of the outcome families (shared atomics).
#[derive(Debug, Clone)]
pub struct TaskMembers {
    /// `executions_total{outcome="success"}`.
    pub success: Counter,
    /// `executions_total{outcome="retry"}`.
    pub retry: Counter,
    /// `executions_total{outcome="throttle"}`.
    pub throttle: Counter,
    /// `executions_total{outcome="dead_letter"}`.
    pub dead_letter: Counter,
    /// `failures_total`.
    pub failures: Counter,
    /// `retries_total`.
    pub retries: Counter,
    /// `throttles_total`.
    pub throttles: Counter,
    /// `execution_duration_seconds`.
    pub duration: Histogram,
    /// `execution_lateness_seconds`.
    pub lateness: Histogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_named_by_the_conventions() {
        let families = Families::new();
        let members = families.task("daily");
        members.success.inc();
        members.duration.observe(0.25);
        families
            .dead_letters
            .get_or_create(&ReasonLabels {
                task: "daily".into(),
                reason: DeadLetterReason::PermanentFailure.as_str().into(),
            })
            .inc();
        let text = families.encode().unwrap();
        for line in [
            "# TYPE taskqueue_executions_total counter",
            "taskqueue_executions_total{task=\"daily\",outcome=\"success\"} 1",
            "taskqueue_dead_letters_total{task=\"daily\",reason=\"permanent_failure\"} 1",
            "# TYPE taskqueue_execution_duration_seconds histogram",
            "taskqueue_execution_duration_seconds_count{task=\"daily\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
    }
}
