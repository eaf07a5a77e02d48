//! Misfires: what to run after the scheduler was away.
//!
//! A fire is *on time* while it is at most the on-time tolerance old (the
//! scheduler only looks every `check_interval`); older fires in
//! (`last_fired`, `now`] were *missed*. Under [`MisfirePolicy::RunOnce`]
//! the latest missed fire runs once if it is younger than the catch-up
//! window, and every older one is skipped and counted; under
//! [`MisfirePolicy::Skip`] no missed fire runs. Missed fires are never
//! replayed one by one.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::Schedule;
use crate::domain::MisfirePolicy;

/// How late a fire may be seen and still count as on time, when the
/// caller does not say ([`due`]): two default scheduler ticks of 60s.
pub const DEFAULT_ON_TIME_TOLERANCE: Duration = Duration::from_secs(120);

/// Fires counted one by one before the count falls back to candidate
/// arithmetic (exact except where a DST gap merged two wall times).
const EXACT_COUNT_LIMIT: u64 = 4_096;

/// What the scheduler should run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The fire to run now, if any.
    pub fire: Option<DateTime<Utc>>,
    /// Fires in (`last_fired`, `now`] that will never run.
    pub missed: u64,
}

/// What is due between `last_fired` (exclusive) and `now` (inclusive),
/// under the misfire policy and catch-up window, with the
/// [`DEFAULT_ON_TIME_TOLERANCE`].
pub fn due(
    schedule: &Schedule,
    last_fired: DateTime<Utc>,
    now: DateTime<Utc>,
    catchup_window: Duration,
    policy: MisfirePolicy,
) -> Due {
    due_with_tolerance(
        schedule,
        last_fired,
        now,
        catchup_window,
        policy,
        DEFAULT_ON_TIME_TOLERANCE,
    )
}

/// [`due`] with an explicit on-time tolerance: a fire at most `on_time`
/// old runs under either policy. Pass at least the scheduler's tick.
pub fn due_with_tolerance(
    schedule: &Schedule,
    last_fired: DateTime<Utc>,
    now: DateTime<Utc>,
    catchup_window: Duration,
    policy: MisfirePolicy,
    on_time: Duration,
) -> Due {
    let Some(latest) = schedule
        .latest_at_or_before(now)
        .filter(|latest| *latest > last_fired)
    else {
        return Due {
            fire: None,
            missed: 0,
        };
    };
    let fires = count_fires(schedule, last_fired, latest);
    let age = now - latest;
    // A limit too large for a TimeDelta is no limit.
    let on_time = TimeDelta::from_std(on_time).map_or(true, |limit| age <= limit);
    let runs = on_time
        || match policy {
            MisfirePolicy::RunOnce => {
                TimeDelta::from_std(catchup_window).map_or(true, |window| age < window)
            }
            MisfirePolicy::Skip => false,
        };
    if runs {
        Due {
            fire: Some(latest),
            missed: fires - 1,
        }
    } else {
        Due {
            fire: None,
            missed: fires,
        }
    }
}

/// Number of fires in (`after`, `last`], where `last` is a fire after
/// `after` (at least 1): the count [`Due::missed`] is made of.
pub fn fires_between(schedule: &Schedule, after: DateTime<Utc>, last: DateTime<Utc>) -> u64 {
    count_fires(schedule, after, last)
}

/// Number of fires in (`after`, `last`], where `last` is a fire after
/// `after` (so the answer is at least 1).
fn count_fires(schedule: &Schedule, after: DateTime<Utc>, last: DateTime<Utc>) -> u64 {
    let mut count = 0;
    for fire in schedule.fires_after(after) {
        if fire > last {
            return count.max(1);
        }
        count += 1;
        if count == EXACT_COUNT_LIMIT {
            let span = schedule.candidates_between(fire, last);
            return count + span;
        }
    }
    count.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TaskInterval;

    const HOUR: Duration = Duration::from_secs(3_600);
    const DAY: Duration = Duration::from_secs(86_400);

    fn instant(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    /// `due` for `interval` between `last_fired` and `now` is `fire` with
    /// `missed` fires counted.
    fn check(
        interval: &str,
        (last_fired, now): (&str, &str),
        (window, policy): (Duration, MisfirePolicy),
        (fire, missed): (Option<&str>, u64),
    ) {
        let interval: TaskInterval = serde_json::from_str(interval).unwrap();
        let schedule = Schedule::new(&interval);
        let got = due(&schedule, instant(last_fired), instant(now), window, policy);
        assert_eq!(
            got,
            Due {
                fire: fire.map(instant),
                missed
            },
            "{interval:?} {last_fired}..{now} {policy:?} window {window:?}"
        );
    }

    const DAILY: &str = r#"{"type":"daily","value":1,"at_time":"09:00"}"#;

    #[test]
    fn run_once_runs_the_latest_fire_inside_the_window() {
        let run_once = (DAY, MisfirePolicy::RunOnce);
        // A normal tick.
        check(
            DAILY,
            ("2026-01-01T09:00:00Z", "2026-01-02T09:00:30Z"),
            run_once,
            (Some("2026-01-02T09:00:00Z"), 0),
        );
        // Nothing new yet.
        check(
            DAILY,
            ("2026-01-01T09:00:00Z", "2026-01-02T08:59:59Z"),
            run_once,
            (None, 0),
        );
        check(
            DAILY,
            ("2026-01-02T09:00:00Z", "2026-01-02T09:00:00Z"),
            run_once,
            (None, 0),
        );
        // Three days down: the latest runs once, the two before are missed.
        check(
            DAILY,
            ("2026-01-01T09:00:00Z", "2026-01-04T10:00:00Z"),
            run_once,
            (Some("2026-01-04T09:00:00Z"), 2),
        );
        // The latest is older than the window: nothing runs.
        check(
            DAILY,
            ("2026-01-01T09:00:00Z", "2026-01-04T10:00:00Z"),
            (Duration::from_secs(30 * 60), MisfirePolicy::RunOnce),
            (None, 3),
        );
        // Exactly as old as the window is not younger than it.
        check(
            DAILY,
            ("2026-01-01T09:00:00Z", "2026-01-04T10:00:00Z"),
            (HOUR, MisfirePolicy::RunOnce),
            (None, 3),
        );
        // An unbounded window runs the latest fire however old; the 2194
        // daily fires before it since 2020-01-02 are missed.
        check(
            DAILY,
            ("2020-01-01T09:00:00Z", "2026-01-04T10:00:00Z"),
            (Duration::MAX, MisfirePolicy::RunOnce),
            (Some("2026-01-04T09:00:00Z"), 2_194),
        );
        // A short window never refuses an on-time fire.
        check(
            DAILY,
            ("2026-01-01T09:00:00Z", "2026-01-02T09:01:00Z"),
            (Duration::ZERO, MisfirePolicy::RunOnce),
            (Some("2026-01-02T09:00:00Z"), 0),
        );
    }

    #[test]
    fn skip_never_runs_a_missed_fire() {
        let skip = (DAY, MisfirePolicy::Skip);
        check(
            DAILY,
            ("2026-01-01T09:00:00Z", "2026-01-02T09:01:00Z"),
            skip,
            (Some("2026-01-02T09:00:00Z"), 0),
        );
        check(
            DAILY,
            ("2026-01-01T09:00:00Z", "2026-01-02T09:30:00Z"),
            skip,
            (None, 1),
        );
        check(
            DAILY,
            ("2026-01-01T09:00:00Z", "2026-01-04T10:00:00Z"),
            skip,
            (None, 3),
        );
        // Back just in time for the latest: it runs, the others stay missed.
        check(
            DAILY,
            ("2026-01-01T09:00:00Z", "2026-01-04T09:02:00Z"),
            skip,
            (Some("2026-01-04T09:00:00Z"), 2),
        );
    }

    #[test]
    fn missed_fires_are_counted_once_each() {
        // 02:30 (a gap) and 03:30 EDT are one fire on the US spring-forward.
        let hourly =
            r#"{"type":"hourly","value":1,"timezone":"America/New_York","at_time":"00:30"}"#;
        check(
            hourly,
            ("2026-03-08T05:30:00Z", "2026-03-08T08:40:00Z"),
            (HOUR, MisfirePolicy::RunOnce),
            (Some("2026-03-08T08:30:00Z"), 2),
        );
        check(
            hourly,
            ("2026-03-08T05:30:00Z", "2026-03-08T08:40:00Z"),
            (HOUR, MisfirePolicy::Skip),
            (None, 3),
        );
        // Six years of an hourly task: 2192 days of 24 fires, counted
        // without replaying them.
        check(
            r#"{"type":"hourly","value":1}"#,
            ("2020-01-01T00:00:00Z", "2026-01-01T00:30:00Z"),
            (HOUR, MisfirePolicy::RunOnce),
            (Some("2026-01-01T00:00:00Z"), 2_192 * 24 - 1),
        );
    }
}
