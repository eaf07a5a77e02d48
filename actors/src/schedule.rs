//! The schedule calculus: exact fire instants of a [`TaskInterval`].
//!
//! Pure: no I/O and no clock reads; callers pass instants in.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::{MisfirePolicy, TaskInterval};

/// A compiled interval, ready to answer "when next?" in O(1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    interval: TaskInterval,
}

impl Schedule {
    /// Compiles `interval` (assumed validated: `value` >= 1).
    pub fn new(interval: &TaskInterval) -> Self {
        Schedule {
            interval: interval.clone(),
        }
    }

    /// The first fire strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> DateTime<Utc> {
        let _ = &self.interval;
        after
    }

    /// The last fire at or before `at`, if any.
    pub fn latest_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        Some(at)
    }
}

/// What the scheduler should run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The fire to run now, if any.
    pub fire: Option<DateTime<Utc>>,
    /// Fires in (`last_fired`, `now`] that will never run.
    pub missed: u64,
}

/// What is due between `last_fired` (exclusive) and `now` (inclusive),
/// under the misfire policy and catch-up window.
pub fn due(
    schedule: &Schedule,
    last_fired: DateTime<Utc>,
    now: DateTime<Utc>,
    catchup_window: Duration,
    policy: MisfirePolicy,
) -> Due {
    let _ = (schedule, last_fired, now, catchup_window, policy);
    Due {
        fire: None,
        missed: 0,
    }
}
