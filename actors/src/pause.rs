//! Operator pauses: a task paused through `POST /tasks/{id}/pause` until
//! `POST /tasks/{id}/resume`.
//!
//! The pause lives in the store ([`ScheduleStore::set_task_paused`], key
//! `{prefix}:tasks:paused`), so every replica obeys it. While a task is
//! paused:
//!
//! - the scheduler's passes of the task do nothing (no new fan-out, no
//!   slot released, no custom-interval user moved); its fires are not
//!   recorded, so the pass after the resume finds them and applies the
//!   task's misfire policy (`run_once`: the latest runs if younger than the
//!   catch-up window; `skip`: none), counted as missed fires;
//! - executors defer the task's jobs already in the broker: republished
//!   with the same attempt (not an attempt, not a throttle), a little later
//!   each time ([`defer_wait`]: as long as the pause has lasted, 1 s to
//!   30 s), so nothing is lost and the resume is picked up within 30 s.
//!
//! The scheduler reads the store at each pass. Executors check
//! [`OperatorPauses`], this replica's copy, refreshed from the store every
//! tick ([`spawn_refresher`]) and at once by this replica's own pause and
//! resume calls: one uncontended read lock per job, no round trip.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::{domain::TaskTypeId, store::ScheduleStore};

/// Shortest deferral of a job of a paused task.
pub const MIN_PAUSED_DEFER: Duration = Duration::from_secs(1);

/// Longest deferral of a job of a paused task: a resume reaches the jobs
/// already queued within about this long.
pub const MAX_PAUSED_DEFER: Duration = Duration::from_secs(30);

/// This replica's copy of the operator pauses: task -> paused since.
#[derive(Debug, Default)]
pub struct OperatorPauses {
    held: RwLock<BTreeMap<TaskTypeId, DateTime<Utc>>>,
}

impl OperatorPauses {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<TaskTypeId, DateTime<Utc>>> {
        match self.held.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Since when `task` is paused, as far as this replica knows.
    pub fn since(&self, task: &TaskTypeId) -> Option<DateTime<Utc>> {
        let held = match self.held.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if held.is_empty() {
            return None;
        }
        held.get(task).copied()
    }

    /// Replaces the copy with the store's list.
    pub fn replace(&self, paused: BTreeMap<TaskTypeId, DateTime<Utc>>) {
        *self.write() = paused;
    }

    /// Notes a pause made here (the store has it already).
    pub fn pause(&self, task: &TaskTypeId, since: DateTime<Utc>) {
        self.write().entry(task.clone()).or_insert(since);
    }

    /// Notes a resume made here (the store has it already).
    pub fn resume(&self, task: &TaskTypeId) {
        self.write().remove(task);
    }
}

/// How long a job of a task paused since `since` is deferred at `now`: as
/// long as the pause has lasted, between [`MIN_PAUSED_DEFER`] and
/// [`MAX_PAUSED_DEFER`].
pub fn defer_wait(since: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (now - since)
        .to_std()
        .unwrap_or(Duration::ZERO)
        .clamp(MIN_PAUSED_DEFER, MAX_PAUSED_DEFER)
}

/// Refreshes `pauses` from the store every `interval` (the scheduler's
/// tick) until `stop`; a failed read keeps the last copy (logged).
pub fn spawn_refresher(
    store: Arc<dyn ScheduleStore>,
    pauses: Arc<OperatorPauses>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let period = interval.max(Duration::from_millis(100));
    actix::spawn(async move {
        let mut timer = tokio::time::interval(period);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = timer.tick() => {}
                _ = stop.changed() => return,
            }
            match store.paused_tasks().await {
                Ok(paused) => pauses.replace(paused),
                Err(err) => {
                    tracing::warn!(error = %err, "paused tasks not read; keeping the last list");
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn paused_jobs_wait_as_long_as_the_pause_lasted_within_bounds() {
        let since = at("2026-01-01T00:00:00Z");
        assert_eq!(defer_wait(since, since), MIN_PAUSED_DEFER);
        assert_eq!(
            defer_wait(since, at("2026-01-01T00:00:07Z")),
            Duration::from_secs(7)
        );
        assert_eq!(
            defer_wait(since, at("2026-01-01T01:00:00Z")),
            MAX_PAUSED_DEFER
        );
    }

    #[test]
    fn the_copy_follows_pauses_resumes_and_refreshes() {
        let pauses = OperatorPauses::default();
        let a = TaskTypeId::parse("a").unwrap();
        let b = TaskTypeId::parse("b").unwrap();
        let since = at("2026-01-01T00:00:00Z");
        assert_eq!(pauses.since(&a), None);
        pauses.pause(&a, since);
        pauses.pause(&a, at("2026-01-02T00:00:00Z"));
        assert_eq!(pauses.since(&a), Some(since));
        assert_eq!(pauses.since(&b), None);
        pauses.replace(BTreeMap::from([(b.clone(), since)]));
        assert_eq!((pauses.since(&a), pauses.since(&b)), (None, Some(since)));
        pauses.resume(&b);
        assert_eq!(pauses.since(&b), None);
    }
}
