//! Fan-out runs: the jobs of one task for one `scheduled_at`, planned into
//! the distribution slot lists and released to the broker slot by slot.
//!
//! A [`Run`] is the whole state of one fan-out, kept in the store (one
//! field of `{p}:fanout:{task}`), so any replica holding the task's
//! schedule lock carries on where another stopped. This module is pure: the
//! arithmetic of slots, ranks and due times, and the record itself; the
//! DistributorActor does the I/O.
//!
//! Placement. A spread run walks the task's users in spread order
//! ([`crate::slot::spread_key`], then id) and gives the user of rank `r`
//! out of `n` the slot `r * slots / n`: every second of the window gets the
//! same number of runs (±1), and a user keeps about the same offset from
//! period to period (its rank moves only as far as users are added or
//! removed before it). Jobs of slot `s` are due at `scheduled_at + s`
//! seconds and are published when that instant comes, straight into their
//! priority queue.

use std::{fmt, time::Duration};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::{
    domain::{JobSource, TaskTypeId},
    slot::{SLOT_LENGTH, slot_count},
    store::SpreadCursor,
};

/// Who made a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunSource {
    /// A due period of the task's own interval.
    Scheduler,
    /// `POST /schedule/trigger`.
    Trigger,
    /// Users on a custom interval whose own fire came.
    CustomInterval,
}

impl From<RunSource> for JobSource {
    /// The `metadata.source` of the run's jobs.
    fn from(source: RunSource) -> JobSource {
        match source {
            RunSource::Scheduler => JobSource::Scheduler,
            RunSource::Trigger => JobSource::Trigger,
            RunSource::CustomInterval => JobSource::CustomInterval,
        }
    }
}

impl fmt::Display for RunSource {
    /// The name of the run's jobs' source: `scheduler`, ...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        JobSource::from(*self).fmt(f)
    }
}

/// Which users a run reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Audience {
    /// Every user in the task's enabled index, read page by page; with
    /// `with_custom`, then every user of its custom-interval index too (a
    /// trigger of everyone).
    Enabled {
        /// Also the users on a custom interval.
        with_custom: bool,
    },
    /// The users written into the slot lists when the run was made (named
    /// users of a trigger, due custom-interval users).
    Listed,
}

/// One fan-out, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// The task.
    pub task_type_id: TaskTypeId,
    /// The period's fire instant (or the trigger's instant): part of every
    /// job id, and the run's id.
    pub scheduled_at: DateTime<Utc>,
    /// Who made it.
    pub source: RunSource,
    /// Who it reaches.
    pub audience: Audience,
    /// Every job runs at `scheduled_at`, published as it is read (no slot
    /// lists).
    pub immediate: bool,
    /// Slots in the window (1 for an immediate run).
    pub slots: u32,
    /// Users expected (the index sizes when the run was made); ranks are
    /// spread over this many.
    pub users: u64,
    /// Users planned so far (written to a slot list, or published for an
    /// immediate run).
    pub planned: u64,
    /// Last user planned from the enabled index (spread order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<SpreadCursor>,
    /// Users of the custom-interval index planned so far; `Some` once the
    /// enabled index is done (only with `with_custom`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_offset: Option<u64>,
    /// Which indexes of users on the task's own interval the run walks,
    /// and where it is (audience `Enabled` only).
    #[serde(default, skip_serializing_if = "ZoneWalk::is_default")]
    pub zone_walk: ZoneWalk,
    /// Every user is planned.
    pub planning_done: bool,
    /// Slots below this one are released (their jobs are confirmed in the
    /// broker and their lists trimmed).
    pub next_slot: u32,
    /// Jobs published so far.
    pub released: u64,
    /// Ties the jobs to the tick or request that made them.
    pub correlation_id: String,
    /// When the run was made.
    pub created_at: DateTime<Utc>,
}

/// The groups of users on the task's own interval that a run of audience
/// [`Audience::Enabled`] walks, one after the other, each in spread order:
/// `None` stands for the enabled index (users without a zone, on the
/// task's `interval.timezone`), `Some(zone)` for the zone group of `zone`.
/// Ranks count on across groups, so the run's users share its window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneWalk {
    /// The groups, in walk order; empty: the enabled index alone (runs of
    /// older releases).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<Option<Tz>>,
    /// The group the run's cursor is in (an index into `groups`).
    #[serde(default)]
    pub position: usize,
}

impl ZoneWalk {
    /// A walk of `groups` from the start.
    pub fn of(groups: Vec<Option<Tz>>) -> Self {
        ZoneWalk {
            groups,
            position: 0,
        }
    }

    /// True for the walk of the enabled index alone, from its start.
    pub fn is_default(&self) -> bool {
        *self == ZoneWalk::default()
    }

    /// The group being walked; `None` past the last.
    pub fn current(&self) -> Option<Option<Tz>> {
        if self.groups.is_empty() {
            (self.position == 0).then_some(None)
        } else {
            self.groups.get(self.position).copied()
        }
    }
}

/// The run id: `scheduled_at` in epoch milliseconds (one run per task and
/// instant, as job ids are derived from the instant).
pub fn run_id(scheduled_at: DateTime<Utc>) -> i64 {
    scheduled_at.timestamp_millis()
}

/// Slots of a run over `window` (1 when immediate).
pub fn run_slots(window: Duration, immediate: bool) -> u32 {
    if immediate { 1 } else { slot_count(window) }
}

/// The slot of the user of rank `rank` among `users` over `slots` slots.
pub fn slot_of_rank(rank: u64, users: u64, slots: u32) -> u32 {
    if users == 0 || slots <= 1 {
        return 0;
    }
    let slot = u128::from(rank) * u128::from(slots) / u128::from(users);
    u32::try_from(slot).unwrap_or(u32::MAX).min(slots - 1)
}

impl Run {
    /// The run's id (see [`run_id`]).
    pub fn id(&self) -> i64 {
        run_id(self.scheduled_at)
    }

    /// When the jobs of `slot` are due.
    pub fn slot_due(&self, slot: u32) -> DateTime<Utc> {
        let offset = SLOT_LENGTH.saturating_mul(slot);
        self.scheduled_at + chrono::Duration::from_std(offset).unwrap_or_default()
    }

    /// The slot for the next user planned (rank `planned`), never one
    /// already released.
    pub fn slot_for_rank(&self, rank: u64) -> u32 {
        slot_of_rank(rank, self.users, self.slots).max(self.next_slot)
    }

    /// The last slot every user of which is planned, if any: slots are
    /// filled in order, so all below the next rank's slot are complete.
    pub fn planned_through(&self) -> Option<u32> {
        if self.planning_done {
            return Some(self.slots.saturating_sub(1));
        }
        self.slot_for_rank(self.planned).checked_sub(1)
    }

    /// The last slot due at `now`, if any.
    pub fn due_through(&self, now: DateTime<Utc>) -> Option<u32> {
        let elapsed = (now - self.scheduled_at).to_std().ok()?;
        let slot = elapsed.as_millis() / SLOT_LENGTH.as_millis().max(1);
        Some(
            u32::try_from(slot)
                .unwrap_or(u32::MAX)
                .min(self.slots.saturating_sub(1)),
        )
    }

    /// The slots to release at `now`: due and completely planned, not yet
    /// released.
    pub fn releasable(&self, now: DateTime<Utc>) -> std::ops::Range<u32> {
        let through = match (self.due_through(now), self.planned_through()) {
            (Some(due), Some(planned)) => due.min(planned),
            _ => return self.next_slot..self.next_slot,
        };
        self.next_slot..(through + 1).max(self.next_slot)
    }

    /// Every user planned and every slot released (an immediate run of
    /// the whole index has no lists: it counts its one slot as released
    /// once every user is published).
    pub fn finished(&self) -> bool {
        self.planning_done && self.next_slot >= self.slots
    }

    /// Users planned but not yet published.
    pub fn remaining(&self) -> u64 {
        self.users.max(self.planned).saturating_sub(self.released)
    }

    /// When this run next has work to do, seen at `now`: now while users
    /// remain to plan, else when its next slot is due; `None` once finished.
    pub fn next_wake(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.finished() {
            return None;
        }
        if !self.planning_done {
            return Some(now);
        }
        Some(self.slot_due(self.next_slot).max(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(users: u64, slots: u32) -> Run {
        Run {
            task_type_id: TaskTypeId::parse("t").unwrap(),
            scheduled_at: "2024-01-15T10:00:00Z".parse().unwrap(),
            source: RunSource::Scheduler,
            audience: Audience::Enabled { with_custom: false },
            immediate: false,
            slots,
            users,
            planned: 0,
            cursor: None,
            custom_offset: None,
            zone_walk: ZoneWalk::default(),
            planning_done: false,
            next_slot: 0,
            released: 0,
            correlation_id: "c".into(),
            created_at: "2024-01-15T10:00:00Z".parse().unwrap(),
        }
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        run(1, 1).scheduled_at + chrono::Duration::milliseconds(seconds * 1000)
    }

    #[test]
    fn a_run_source_is_stored_under_the_name_its_jobs_carry() {
        for source in [
            RunSource::Scheduler,
            RunSource::Trigger,
            RunSource::CustomInterval,
        ] {
            let job = JobSource::from(source);
            assert_eq!(
                serde_json::to_value(source).unwrap(),
                serde_json::to_value(&job).unwrap()
            );
            assert_eq!(source.to_string(), job.as_str());
        }
    }

    #[test]
    fn ranks_fill_every_slot_evenly() {
        for (users, slots) in [(10_000u64, 60u32), (7, 3), (1_000_000, 1800), (5, 60)] {
            let mut counts = vec![0u64; slots as usize];
            for rank in 0..users {
                counts[slot_of_rank(rank, users, slots) as usize] += 1;
            }
            let min = *counts.iter().min().unwrap();
            let max = *counts.iter().max().unwrap();
            assert!(max - min <= 1, "{users} over {slots}: {min}..{max}");
            // Ranks come in order, so slots fill in order.
            let ordered: Vec<u32> = (0..users).map(|r| slot_of_rank(r, users, slots)).collect();
            assert!(ordered.windows(2).all(|w| w[0] <= w[1]));
        }
        assert_eq!(slot_of_rank(5, 0, 10), 0);
        assert_eq!(
            slot_of_rank(50, 10, 10),
            9,
            "late arrivals go to the last slot"
        );
    }

    #[test]
    fn a_slot_is_released_once_due_and_fully_planned() {
        let mut r = run(100, 10);
        assert_eq!(r.releasable(at(-1)), 0..0, "before the fire");
        assert_eq!(r.releasable(at(5)), 0..0, "nothing planned yet");
        r.planned = 35; // ranks 0..34: slots 0, 1, 2 complete, 3 partly
        assert_eq!(r.planned_through(), Some(2));
        assert_eq!(r.releasable(at(1)), 0..2);
        assert_eq!(r.releasable(at(9)), 0..3);
        r.next_slot = 3;
        assert_eq!(r.releasable(at(9)), 3..3);
        r.planned = 100;
        r.planning_done = true;
        assert_eq!(r.releasable(at(9)), 3..10);
        assert_eq!(r.releasable(at(60)), 3..10, "never past the last slot");
        assert!(!r.finished());
        assert_eq!(r.next_wake(at(4)), Some(at(4)));
        r.next_slot = 6;
        assert_eq!(r.next_wake(at(4)), Some(at(6)));
        r.next_slot = 10;
        assert!(r.finished());
        assert_eq!(r.next_wake(at(4)), None);
    }

    #[test]
    fn planning_never_goes_into_a_released_slot() {
        let mut r = run(100, 10);
        r.next_slot = 4;
        assert_eq!(r.slot_for_rank(0), 4);
        assert_eq!(r.slot_for_rank(95), 9);
    }

    #[test]
    fn an_immediate_run_has_one_slot_and_no_wait() {
        assert_eq!(run_slots(Duration::from_secs(1800), true), 1);
        assert_eq!(run_slots(Duration::from_secs(1800), false), 1800);
        let mut r = run(10, 1);
        r.immediate = true;
        r.planning_done = true;
        assert!(!r.finished(), "its one slot is still to release");
        assert_eq!(r.releasable(at(0)), 0..1);
        r.next_slot = 1;
        assert!(r.finished());
    }

    #[test]
    fn the_record_round_trips_as_json() {
        let mut r = run(3, 2);
        r.cursor = Some(SpreadCursor {
            key: 42,
            user: crate::domain::UserId::parse("u1").unwrap(),
        });
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Run>(&text).unwrap(), r);
        assert_eq!(r.id(), 1_705_312_800_000);
    }
}
