//! The schedule calculus: exact fire instants of a [`TaskInterval`].
//!
//! Pure: no I/O and no clock reads; callers pass instants in. The rules
//! (documented for users in `docs/schedule.md`) are read on local wall-clock
//! time in the interval's time zone, with `d(D)` the number of days from
//! 1970-01-01 to local date `D`:
//!
//! - hourly/N: `h:MM:SS` (minute and second of `at_time`) on every local hour
//!   with `(d(date) * 24 + h) mod N == 0`;
//! - daily/N: `at_time` on every local date with `d(date) mod N == 0`;
//! - weekly/N: `at_time` on `weekday` of every week (Monday first) whose
//!   index since the week of 1970-01-05 is a multiple of N;
//! - monthly/N: `at_time` on `day_of_month`, clamped to the month's last
//!   day, of every month whose index since 1970-01 is a multiple of N.
//!
//! A wall time inside a DST gap is read with the offset in force just
//! before the gap (it fires later by the gap's length); a wall time inside
//! an overlap fires once, at its first occurrence; wall times that map to
//! the same instant fire once.
//!
//! # How it stays O(1)
//!
//! Candidate wall times are numbered: candidate `u` (a multiple of N) is the
//! hour, day, week or month number `u`, and its wall time is computed
//! arithmetically (module `civil`). The first candidate after an instant is found
//! from the instant's local wall time by division, then converted to UTC
//! with one `chrono-tz` lookup. Only near an offset change (detected by
//! comparing the offset at the instant with the offset [`TRANSITION_REACH`]
//! earlier) are a few neighbouring candidates examined, since a gap can
//! push a fire past its successors' wall times and an overlap can put a
//! later wall time before the instant.

mod civil;
mod misfire;

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

use crate::domain::{IntervalType, TaskInterval};

pub use misfire::{DEFAULT_ON_TIME_TOLERANCE, Due, due, due_with_tolerance, fires_between};

const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;
/// Day number of Monday 1970-01-05, the start of week 0.
const WEEK_ZERO: i64 = 4;

/// How far back an offset change is looked for, in seconds. Longer than
/// any gap or overlap in the time-zone database (the longest, Samoa's and
/// Kwajalein's skipped days, are 24 hours).
pub const TRANSITION_REACH: i64 = 48 * HOUR;

/// Upper bound of candidates examined for one answer; reached only by a
/// schedule with no representable fire (years beyond chrono's range).
const MAX_STEPS: usize = 4_096;

/// Why a [`TaskInterval`] cannot be scheduled. Each message starts with
/// the name of the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInterval {
    /// `value` was zero.
    #[error("value: must be at least 1, got 0")]
    ZeroValue,
    /// `day_of_month` was outside 1..=31.
    #[error("day_of_month: must be between 1 and 31, got {0}")]
    DayOfMonth(u8),
}

/// A compiled interval, ready to answer "when next?" in O(1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    interval: TaskInterval,
    tz: Tz,
    kind: IntervalType,
    /// The period N in units, at least 1.
    every: i64,
    /// Seconds after the start of the unit's first day (hourly: after the
    /// start of the hour) at which a candidate fires; weekly adds the
    /// weekday's days.
    offset_in_unit: i64,
    /// Day of the month, 1..=31, clamped per month.
    day_of_month: u32,
}

impl Schedule {
    /// Compiles `interval`. An invalid interval (see [`Schedule::try_new`])
    /// is read as the nearest valid one: `value` 0 as 1, `day_of_month`
    /// 0 as 1 and above 31 as 31.
    pub fn new(interval: &TaskInterval) -> Self {
        let at = interval.at();
        let time_of_day =
            i64::from(at.hour) * HOUR + i64::from(at.minute) * 60 + i64::from(at.second);
        let minute_second = i64::from(at.minute) * 60 + i64::from(at.second);
        let weekday_days = i64::from(interval.weekday.map_or(0, |w| w.days_from_monday()));
        let offset_in_unit = match interval.kind {
            IntervalType::Hourly => minute_second,
            IntervalType::Daily | IntervalType::Monthly => time_of_day,
            IntervalType::Weekly => weekday_days * DAY + time_of_day,
        };
        Schedule {
            interval: interval.clone(),
            tz: interval.tz(),
            kind: interval.kind,
            every: i64::from(interval.value.max(1)),
            offset_in_unit,
            day_of_month: u32::from(interval.day_of_month.unwrap_or(1).clamp(1, 31)),
        }
    }

    /// Compiles `interval`, refusing `value` 0 and `day_of_month` outside
    /// 1..=31 with an error naming the field.
    pub fn try_new(interval: &TaskInterval) -> Result<Self, InvalidInterval> {
        if interval.value == 0 {
            return Err(InvalidInterval::ZeroValue);
        }
        if let Some(day) = interval.day_of_month
            && !(1..=31).contains(&day)
        {
            return Err(InvalidInterval::DayOfMonth(day));
        }
        Ok(Schedule::new(interval))
    }

    /// The interval this schedule was compiled from.
    pub fn interval(&self) -> &TaskInterval {
        &self.interval
    }

    /// The first fire strictly after `after`. Saturates at
    /// [`DateTime::<Utc>::MAX_UTC`] beyond chrono's range.
    pub fn next_after(&self, after: DateTime<Utc>) -> DateTime<Utc> {
        self.try_next_after(after)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// The first fire strictly after `after`, or `None` beyond chrono's
    /// range.
    pub fn try_next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Fires are whole seconds, so "after `after`" is "after its second".
        let instant = after.timestamp();
        let offset_now = self.offset_at(instant)?;
        let offset_before = self.offset_at(instant - TRANSITION_REACH)?;
        // After a recent gap, wall times up to the gap's length before the
        // local time may have been pushed past `after`.
        let reach_back = (offset_now - offset_before).max(0);
        let local = instant + offset_now;
        let mut unit = self.first_candidate_after(local - reach_back)?;
        let mut best: Option<i64> = None;
        for _ in 0..MAX_STEPS {
            let (fire, in_gap) = self.resolve(self.wall_time(unit)?)?;
            if fire > instant {
                best = Some(best.map_or(fire, |b| b.min(fire)));
                // Later wall times outside gaps fire later still, and a
                // later gap pushes its fires past this one.
                if !in_gap {
                    break;
                }
            }
            unit = unit.checked_add(self.every)?;
        }
        best.and_then(|secs| DateTime::from_timestamp(secs, 0))
    }

    /// The last fire at or before `at`, if any (`None` only beyond
    /// chrono's range).
    pub fn latest_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let instant = at.timestamp();
        let offset_now = self.offset_at(instant)?;
        let offset_before = self.offset_at(instant - TRANSITION_REACH)?;
        // In the second pass of an overlap, wall times up to the overlap's
        // length after the local time have already fired.
        let reach_forward = (offset_before - offset_now).max(0);
        let local = instant + offset_now;
        let mut unit = self.last_candidate_at_or_before(local + reach_forward)?;
        let mut best: Option<i64> = None;
        // Once a fire outside a gap is found, earlier wall times can only
        // beat it if a gap pushed them past it: look back that far.
        let mut stop_below: Option<i64> = None;
        for _ in 0..MAX_STEPS {
            let wall = self.wall_time(unit)?;
            if stop_below.is_some_and(|floor| wall <= floor) {
                break;
            }
            let (fire, in_gap) = self.resolve(wall)?;
            if fire <= instant {
                best = Some(best.map_or(fire, |b| b.max(fire)));
                if !in_gap && stop_below.is_none() {
                    let gap =
                        (self.offset_at(fire)? - self.offset_at(fire - TRANSITION_REACH)?).max(0);
                    stop_below = Some(wall - gap);
                }
            }
            unit = unit.checked_sub(self.every)?;
        }
        best.and_then(|secs| DateTime::from_timestamp(secs, 0))
    }

    /// The fires strictly after `after`, in increasing order.
    pub fn fires_after(&self, after: DateTime<Utc>) -> Fires<'_> {
        Fires {
            schedule: self,
            cursor: Some(after),
        }
    }

    /// Number of candidate wall times after the local time of `from` and
    /// at or before that of `to`: the fires in (`from`, `to`] by
    /// arithmetic, counting wall times a DST gap merged as separate.
    pub(crate) fn candidates_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
        let local = |at: DateTime<Utc>| {
            let secs = at.timestamp();
            self.offset_at(secs).map(|offset| secs + offset)
        };
        let (Some(from), Some(to)) = (local(from), local(to)) else {
            return 0;
        };
        match (
            self.first_candidate_after(from),
            self.last_candidate_at_or_before(to),
        ) {
            (Some(first), Some(last)) if last >= first => {
                u64::try_from((last - first) / self.every + 1).unwrap_or(0)
            }
            _ => 0,
        }
    }

    /// UTC offset in seconds in force at the instant `secs`.
    fn offset_at(&self, secs: i64) -> Option<i64> {
        let naive = DateTime::from_timestamp(secs, 0)?.naive_utc();
        Some(i64::from(
            self.tz
                .offset_from_utc_datetime(&naive)
                .fix()
                .local_minus_utc(),
        ))
    }

    /// The instant of local wall time `wall` (seconds since the local
    /// epoch), and whether it lies in a gap.
    fn resolve(&self, wall: i64) -> Option<(i64, bool)> {
        let naive: NaiveDateTime = DateTime::from_timestamp(wall, 0)?.naive_utc();
        let offset = |o: &<Tz as TimeZone>::Offset| i64::from(o.fix().local_minus_utc());
        match self.tz.offset_from_local_datetime(&naive) {
            LocalResult::Single(o) => Some((wall - offset(&o), false)),
            // The first occurrence is the one with the larger offset.
            LocalResult::Ambiguous(a, b) => Some((wall - offset(&a).max(offset(&b)), false)),
            LocalResult::None => {
                // Reading the wall time with either offset lands on the
                // other side of the transition, so two lookups find both;
                // the offset before a gap is the smaller one.
                let first = self.offset_at(wall)?;
                let second = self.offset_at(wall - first)?;
                let third = self.offset_at(wall - second)?;
                Some((wall - second.min(third), true))
            }
        }
    }

    /// The unit number (hour, day, week or month) holding local wall time
    /// `wall`.
    fn unit_of(&self, wall: i64) -> i64 {
        match self.kind {
            IntervalType::Hourly => wall.div_euclid(HOUR),
            IntervalType::Daily => wall.div_euclid(DAY),
            IntervalType::Weekly => (wall.div_euclid(DAY) - WEEK_ZERO).div_euclid(7),
            IntervalType::Monthly => {
                let (year, month, _) = civil::civil_from_days(wall.div_euclid(DAY));
                (year - 1970) * 12 + i64::from(month) - 1
            }
        }
    }

    /// The local wall time of the candidate in unit `unit`; `None` beyond
    /// the representable range.
    fn wall_time(&self, unit: i64) -> Option<i64> {
        let unit_start = match self.kind {
            IntervalType::Hourly => unit.checked_mul(HOUR)?,
            IntervalType::Daily => unit.checked_mul(DAY)?,
            IntervalType::Weekly => unit
                .checked_mul(7)?
                .checked_add(WEEK_ZERO)?
                .checked_mul(DAY)?,
            IntervalType::Monthly => {
                let year = unit.div_euclid(12).checked_add(1970)?;
                if year.abs() > 1_000_000 {
                    return None;
                }
                let month = unit.rem_euclid(12) as u32 + 1;
                let day = self.day_of_month.min(civil::days_in_month(year, month));
                civil::days_from_civil(year, month, day) * DAY
            }
        };
        unit_start.checked_add(self.offset_in_unit)
    }

    /// The first candidate unit whose wall time is after `wall`.
    fn first_candidate_after(&self, wall: i64) -> Option<i64> {
        let unit = self.unit_of(wall);
        let first = unit.div_euclid(self.every) + i64::from(unit.rem_euclid(self.every) != 0);
        let first = first.checked_mul(self.every)?;
        if self.wall_time(first)? > wall {
            Some(first)
        } else {
            first.checked_add(self.every)
        }
    }

    /// The last candidate unit whose wall time is at or before `wall`.
    fn last_candidate_at_or_before(&self, wall: i64) -> Option<i64> {
        let last = self
            .unit_of(wall)
            .div_euclid(self.every)
            .checked_mul(self.every)?;
        if self.wall_time(last)? <= wall {
            Some(last)
        } else {
            last.checked_sub(self.every)
        }
    }
}

/// The fires of a [`Schedule`] after an instant, in increasing order
/// (see [`Schedule::fires_after`]). Each step is O(1).
#[derive(Debug, Clone)]
pub struct Fires<'a> {
    schedule: &'a Schedule,
    cursor: Option<DateTime<Utc>>,
}

impl Iterator for Fires<'_> {
    type Item = DateTime<Utc>;

    fn next(&mut self) -> Option<Self::Item> {
        let fire = self.schedule.try_next_after(self.cursor?);
        self.cursor = fire;
        fire
    }
}

#[cfg(test)]
mod tests;
