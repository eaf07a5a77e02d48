//! Previews: the next fires of a task, and when one user's jobs would be
//! due, as the scheduler and distributor would make them.
//!
//! [`next_fires`] is the calculus `taskqueue next-runs` prints and
//! `GET /schedule/preview/{task}` answers: the interval's fires strictly
//! after an instant, optionally read in another time zone (as for a user
//! whose own zone it is).
//!
//! [`user_runs`] adds what the store knows of one user: which schedule
//! they follow (a custom interval; else the task's interval in their
//! per-task `timezone`, else their default zone, else the task's zone),
//! and where in the distribution window their job goes:
//!
//! - on the task's interval, the run of a fire instant walks every group
//!   due at that instant (the task-zone group first, then the zone groups
//!   in name order, empty ones left out) and places the user of rank `r`
//!   of `n` in slot `r * slots / n`; the preview reads the user's rank in
//!   their group (`ZRANK`, O(log N)) and the sizes of the groups, so it is
//!   exact for the population of the moment (users who join or leave
//!   before the fire move the offsets a little);
//! - on a custom interval, the user's slot is the stable hash placement of
//!   (task, user), whatever the population.
//!
//! Slots are [`crate::slot::SLOT_LENGTH`] long, so a job is due at its
//! fire plus its slot, in whole seconds.

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::{
    domain::{TaskType, UserId},
    fanout::{run_slots, slot_of_rank},
    schedule::Schedule,
    slot,
    store::{StateStore, StoreError},
};

/// The first `count` fires of `schedule` strictly after `after`, with its
/// interval read in `zone` when given.
pub fn next_fires(
    schedule: &Schedule,
    zone: Option<Tz>,
    after: DateTime<Utc>,
    count: usize,
) -> Vec<DateTime<Utc>> {
    match zone {
        Some(zone) => Schedule::new(&schedule.interval().in_zone(zone))
            .fires_after(after)
            .take(count)
            .collect(),
        None => schedule.fires_after(after).take(count).collect(),
    }
}

/// Which schedule a user follows for a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleSource {
    /// The user's own `custom_interval`.
    CustomInterval,
    /// The task's interval in the user's `timezone` for the task.
    TaskTimezone,
    /// The task's interval in the user's default zone.
    UserTimezone,
    /// The task's interval in the task's own zone.
    Task,
}

/// One of a user's coming jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRun {
    /// The fire instant (the job's `scheduled_at`).
    pub scheduled_at: DateTime<Utc>,
    /// The distribution slot the job goes to.
    pub slot: u32,
    /// When the job is due (`scheduled_at` plus the slot).
    pub execute_after: DateTime<Utc>,
}

/// A user's coming jobs of one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserPreview {
    /// The user.
    pub user_id: UserId,
    /// Which schedule applies.
    pub source: ScheduleSource,
    /// The zone the schedule is read in.
    pub timezone: String,
    /// The next jobs, earliest first.
    pub runs: Vec<UserRun>,
}

/// The next `count` jobs of `user` for `task` after `after`, with the
/// distribution window `window`; `None` when the user does not have the
/// task enabled. A handful of store round trips, O(zones + log N), plus
/// one calculus step per zone group and fire.
pub async fn user_runs(
    store: &dyn StateStore,
    task: &TaskType,
    user: &UserId,
    window: Duration,
    after: DateTime<Utc>,
    count: usize,
) -> Result<Option<UserPreview>, StoreError> {
    let Some(preference) = store.preferences(user).await? else {
        return Ok(None);
    };
    if preference.enabled_tasks.get(&task.id) != Some(&true) {
        return Ok(None);
    }
    let settings = preference.task_settings.get(&task.id);
    let slots = run_slots(window, false);
    if let Some(interval) = settings.and_then(|settings| settings.custom_interval.as_ref()) {
        let schedule = Schedule::new(interval);
        let placed = slot::place(&task.id, user, window)
            .slot
            .min(slots.saturating_sub(1));
        let runs = next_fires(&schedule, None, after, count)
            .into_iter()
            .map(|fire| run_at(fire, placed))
            .collect();
        return Ok(Some(UserPreview {
            user_id: user.clone(),
            source: ScheduleSource::CustomInterval,
            timezone: interval.tz().name().to_owned(),
            runs,
        }));
    }
    let (zone, source) = match settings.and_then(|settings| settings.timezone) {
        Some(zone) => (Some(zone), ScheduleSource::TaskTimezone),
        None => match store.user_timezone(user).await? {
            Some(zone) => (Some(zone), ScheduleSource::UserTimezone),
            None => (None, ScheduleSource::Task),
        },
    };
    let rank = store.spread_rank(&task.id, zone, user).await?.unwrap_or(0);
    let task_schedule = Schedule::new(&task.interval);
    let zones: Vec<Tz> = store
        .zone_groups(&task.id)
        .await?
        .groups
        .into_iter()
        .map(|(zone, _)| zone)
        .collect();
    let sizes = store.zone_sizes(&task.id, &zones).await?;
    let (default_users, _) = store.index_sizes(&task.id).await?;
    let groups: Vec<(Schedule, u64, Option<Tz>)> = zones
        .into_iter()
        .zip(sizes)
        .map(|(zone, size)| {
            (
                Schedule::new(&task.interval.in_zone(zone)),
                size,
                Some(zone),
            )
        })
        .collect();
    let runs = next_fires(&task_schedule, zone, after, count)
        .into_iter()
        .map(|fire| {
            // The run of `fire`: the task-zone group when due (walked even
            // empty), then each due zone group with users.
            let mut before = 0;
            let mut total = 0;
            if fires_at(&task_schedule, fire) {
                total += default_users;
            }
            for (schedule, size, group) in &groups {
                if *size == 0 || !fires_at(schedule, fire) {
                    continue;
                }
                if *group == zone {
                    before = total;
                }
                total += size;
            }
            let slot = slot_of_rank(before + rank, total.max(before + rank + 1), slots);
            run_at(fire, slot)
        })
        .collect();
    Ok(Some(UserPreview {
        user_id: user.clone(),
        source,
        timezone: zone.unwrap_or_else(|| task.interval.tz()).name().to_owned(),
        runs,
    }))
}

/// Whether `schedule` fires at `at`.
fn fires_at(schedule: &Schedule, at: DateTime<Utc>) -> bool {
    schedule
        .try_next_after(at - chrono::Duration::milliseconds(1))
        .is_some_and(|next| next == at)
}

fn run_at(fire: DateTime<Utc>, slot: u32) -> UserRun {
    let offset = slot::SLOT_LENGTH.saturating_mul(slot);
    UserRun {
        scheduled_at: fire,
        slot,
        execute_after: fire + chrono::Duration::from_std(offset).unwrap_or_default(),
    }
}
