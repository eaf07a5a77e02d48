//! DistributorActor: turns a due period (or a trigger) into one job per
//! user, spread over the distribution window.
//!
//! A fan-out of every enabled user reads the task's enabled index in pages
//! of `scheduler.batch_size`, publishes each page as one confirmed batch,
//! appends the page to the spec's distribution lists, then saves its
//! progress (the last user id of the page). An interrupted fan-out is
//! finished from the saved cursor by whichever replica next holds the
//! task's schedule lock: job ids are UUIDv5 of (task, user,
//! `scheduled_at`), so at most the last page is published twice, and the
//! executors drop the duplicates by job id.
//!
//! Each user's job executes at `scheduled_at` plus the user's stable offset
//! in the window ([`crate::slot::place`]); `metadata.distribution_slot` is
//! the slot.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use actix::prelude::*;
use chrono::{DateTime, Utc};

use crate::{
    broker::JobBroker,
    domain::{Job, JobEnvelope, JobMetadata, TaskType, TaskTypeId, UserId, job_id},
    error::PipelineError,
    messages::Distribute,
    slot,
    store::{DueUser, StateStore},
};

/// Most custom-interval users a trigger of every user reaches.
const MAX_CUSTOM_USERS: usize = 1_000_000;

/// Publishes jobs for users of a custom interval whose fire has come.
/// Answers with the number of jobs published.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<u64, PipelineError>")]
pub struct DistributeDue {
    /// The task.
    pub task: TaskType,
    /// The due users, each with its own `scheduled_at`.
    pub users: Vec<DueUser>,
    /// Ties the jobs to the tick that made them.
    pub correlation_id: String,
}

/// How fan-outs are shaped.
#[derive(Debug, Clone)]
pub struct DistributionSettings {
    /// Runs of one period are spread over this long.
    pub window: Duration,
    /// Users read and published per batch.
    pub batch_size: usize,
    /// How long the schedule lock is extended after each batch.
    pub lock_ttl: Duration,
    /// Effective executions per second of each task (the smaller of its
    /// own limit and the global one), to warn when a window is too short.
    pub task_rates: BTreeMap<TaskTypeId, u32>,
    /// The global limit, for tasks without their own.
    pub global_rate: Option<u32>,
}

impl DistributionSettings {
    /// The executions per second `task` can get, if limited.
    pub fn rate_of(&self, task: &TaskTypeId) -> Option<u32> {
        match (self.task_rates.get(task).copied(), self.global_rate) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Whether `users` runs fit in `window` at `rate` per second.
pub fn window_fits(users: u64, rate: Option<u32>, window: Duration) -> bool {
    match rate {
        None => true,
        Some(rate) => (u128::from(rate) * window.as_millis()) / 1000 >= u128::from(users),
    }
}

/// Spreads periods over users.
pub struct DistributorActor {
    store: Arc<dyn StateStore>,
    broker: Arc<dyn JobBroker>,
    settings: Arc<DistributionSettings>,
}

impl DistributorActor {
    /// A distributor publishing to `broker`.
    pub fn new(
        store: Arc<dyn StateStore>,
        broker: Arc<dyn JobBroker>,
        settings: DistributionSettings,
    ) -> Self {
        DistributorActor {
            store,
            broker,
            settings: Arc::new(settings),
        }
    }
}

impl Actor for DistributorActor {
    type Context = Context<Self>;
}

impl Supervised for DistributorActor {}

impl Handler<Distribute> for DistributorActor {
    type Result = ResponseFuture<Result<u64, PipelineError>>;

    fn handle(&mut self, msg: Distribute, _: &mut Self::Context) -> Self::Result {
        let fanout = Fanout {
            store: self.store.clone(),
            broker: self.broker.clone(),
            settings: self.settings.clone(),
        };
        Box::pin(async move { fanout.run(msg).await })
    }
}

impl Handler<DistributeDue> for DistributorActor {
    type Result = ResponseFuture<Result<u64, PipelineError>>;

    fn handle(&mut self, msg: DistributeDue, _: &mut Self::Context) -> Self::Result {
        let broker = self.broker.clone();
        let window = self.settings.window;
        Box::pin(async move {
            let envelopes: Vec<JobEnvelope> = msg
                .users
                .iter()
                .map(|due| {
                    envelope(
                        &msg.task,
                        &due.user_id,
                        due.scheduled_at,
                        Some(window),
                        "custom_interval",
                        &msg.correlation_id,
                    )
                })
                .collect();
            broker.publish(&envelopes).await?;
            Ok(envelopes.len() as u64)
        })
    }
}

struct Fanout {
    store: Arc<dyn StateStore>,
    broker: Arc<dyn JobBroker>,
    settings: Arc<DistributionSettings>,
}

impl Fanout {
    async fn run(&self, msg: Distribute) -> Result<u64, PipelineError> {
        let task = &msg.task;
        let at = msg.scheduled_at;
        let batch_size = self.settings.batch_size.max(1);
        let mut published = 0u64;
        if let Some(users) = &msg.users {
            for page in users.chunks(batch_size) {
                published += self.publish_page(&msg, page).await?;
            }
            return Ok(published);
        }

        let users_total = self.store.enabled_user_count(&task.id).await?;
        let rate = self.settings.rate_of(&task.id);
        if !msg.immediate && !window_fits(users_total, rate, self.settings.window) {
            tracing::warn!(
                task = %task.id,
                users = users_total,
                rate_per_second = rate,
                window_secs = self.settings.window.as_secs(),
                "the distribution window cannot fit this task's users at its rate limit; runs will lag behind their slots"
            );
        }
        let mut cursor = match self.store.fanout_progress(&task.id, at).await? {
            Some(cursor) => {
                if cursor.is_some() {
                    tracing::info!(task = %task.id, scheduled_at = %at, "resuming an interrupted fan-out");
                }
                cursor
            }
            None => {
                self.store
                    .save_fanout_progress(&task.id, at, None, false)
                    .await?;
                None
            }
        };
        loop {
            let page = self
                .store
                .enabled_users_after(&task.id, cursor.as_ref(), batch_size)
                .await?;
            if page.is_empty() {
                break;
            }
            published += self.publish_page(&msg, &page).await?;
            cursor = page.last().cloned();
            self.store
                .save_fanout_progress(&task.id, at, cursor.as_ref(), false)
                .await?;
            if let Some((lock, lease)) = &msg.lease
                && !self
                    .store
                    .renew_lock(lock, lease, self.settings.lock_ttl)
                    .await?
            {
                tracing::warn!(task = %task.id, "schedule lock lost during fan-out; another replica finishes it");
                return Err(PipelineError::LockLost(task.id.clone()));
            }
            if page.len() < batch_size {
                break;
            }
        }
        if msg.with_custom_users {
            let custom = self
                .store
                .due_custom_users(&task.id, DateTime::<Utc>::MAX_UTC, MAX_CUSTOM_USERS)
                .await?;
            let users: Vec<UserId> = custom.into_iter().map(|due| due.user_id).collect();
            for page in users.chunks(batch_size) {
                published += self.publish_page(&msg, page).await?;
            }
        }
        self.store
            .save_fanout_progress(&task.id, at, cursor.as_ref(), true)
            .await?;
        tracing::info!(task = %task.id, scheduled_at = %at, jobs = published, source = %msg.source, "fan-out done");
        Ok(published)
    }

    /// Publishes one page as one confirmed batch and records its slots.
    async fn publish_page(&self, msg: &Distribute, users: &[UserId]) -> Result<u64, PipelineError> {
        let window = (!msg.immediate).then_some(self.settings.window);
        let envelopes: Vec<JobEnvelope> = users
            .iter()
            .map(|user| {
                envelope(
                    &msg.task,
                    user,
                    msg.scheduled_at,
                    window,
                    &msg.source,
                    &msg.correlation_id,
                )
            })
            .collect();
        self.broker.publish(&envelopes).await?;
        if let Some(window) = window {
            let mut slots: BTreeMap<u32, Vec<UserId>> = BTreeMap::new();
            for envelope in &envelopes {
                if let Some(slot) = envelope.metadata.distribution_slot {
                    slots
                        .entry(slot)
                        .or_default()
                        .push(envelope.job.user_id.clone());
                }
            }
            let slots: Vec<(u32, Vec<UserId>)> = slots.into_iter().collect();
            let ttl = window.max(Duration::from_secs(60));
            self.store
                .write_distribution(&msg.task.id, &slots, ttl)
                .await?;
        }
        Ok(envelopes.len() as u64)
    }
}

/// The job of `task` for `user` in the period of `scheduled_at`, placed in
/// `window` (or run at `scheduled_at` when `None`).
pub fn envelope(
    task: &TaskType,
    user: &UserId,
    scheduled_at: DateTime<Utc>,
    window: Option<Duration>,
    source: &str,
    correlation_id: &str,
) -> JobEnvelope {
    let placement = window.map(|window| slot::place(&task.id, user, window));
    let offset = placement
        .map(|p| chrono::Duration::from_std(p.offset).unwrap_or_default())
        .unwrap_or_default();
    JobEnvelope::new(
        Job {
            id: job_id(&task.id, user, scheduled_at),
            task_type_id: task.id.clone(),
            user_id: user.clone(),
            scheduled_at,
            execute_after: scheduled_at + offset,
            attempt: 1,
            priority: task.priority(),
            payload: Vec::new(),
            created_at: Utc::now(),
        },
        JobMetadata {
            correlation_id: correlation_id.to_owned(),
            source: source.to_owned(),
            distribution_slot: placement.map(|p| p.slot),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(users: u64, rate: Option<u32>, window_secs: u64, expected: bool) {
        assert_eq!(
            window_fits(users, rate, Duration::from_secs(window_secs)),
            expected,
            "{users} users at {rate:?}/s in {window_secs}s"
        );
    }

    #[test]
    fn windows_fit_users_at_the_rate_limit() {
        check(1_000_000, None, 1, true);
        check(1800, Some(1), 1800, true);
        check(1801, Some(1), 1800, false);
        check(50, Some(5), 10, true);
        check(51, Some(5), 10, false);
    }
}
