//! DistributorActor: plans the users of a fan-out run into the
//! distribution slot lists, and releases each slot to the broker when it
//! comes due.
//!
//! It never takes or renews the schedule lock: the SchedulerActor owns it
//! and hands the lease's fencing token along with each message, and every
//! write of a run ([`ScheduleStore::save_run`]) is rejected once a later
//! holder took the lock.
//!
//! - [`AdvanceRun`] plans a few pages of a run's users (spread order,
//!   rank `r` of `n` into slot `r * slots / n`: see [`crate::fanout`]) into
//!   the slot lists, each page in one atomic write with the run's progress,
//!   then publishes every slot that is due and completely planned: the
//!   slot's users as one confirmed batch of jobs due now, straight into
//!   their priority queue, then trims them from the list. An immediate run
//!   skips the lists and pipelines its pages: the next page is read and
//!   published while the confirms of earlier ones are outstanding (up to
//!   [`MAX_UNCONFIRMED`] jobs), and the cursor is saved only up to the
//!   last page whose confirms are all in.
//! - [`PlanListed`] makes (or extends) a run of named users: a trigger's
//!   `user_ids`, or the users of a custom interval whose own fire came.
//!
//! Nothing is lost and nothing doubles: a crash between a publish and its
//! trim publishes the same job ids again (UUIDv5 of task, user and
//! `scheduled_at`; the executors drop duplicates by id), and a crash
//! mid-plan resumes from the run's saved cursor.

use std::{
    collections::{BTreeMap, VecDeque},
    time::Duration,
};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use futures::FutureExt;

use crate::{
    broker::{BrokerError, JobBroker},
    domain::{Job, JobEnvelope, JobMetadata, JobSource, TaskType, TaskTypeId, UserId, job_id},
    error::PipelineError,
    fanout::{Audience, Run, RunSource, run_slots},
    health::HealthBoard,
    slot,
    store::{ScheduleStore, SlotWrite},
};

use std::{panic::AssertUnwindSafe, sync::Arc};

/// The name of the distributor on the [`HealthBoard`].
pub const DISTRIBUTOR: &str = "distributor";

/// How often the distributor beats its heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Pages of users one [`AdvanceRun`] plans at most, so that due slots of
/// every run are released between the pages of a large plan.
const PAGES_PER_STEP: usize = 8;

/// Pages of users one [`AdvanceRun`] publishes at most for an immediate
/// run: each step ends by waiting for its last confirms, so steps are
/// longer than a plan's to keep that pause rare. A step also starts no
/// page once a sixth of the lock's life has gone, so that the scheduler
/// renews the lock in time however slow the broker.
const IMMEDIATE_PAGES_PER_STEP: usize = 32;

/// Jobs of an immediate run published and not yet confirmed, at most
/// (at least one page is always in flight).
pub const MAX_UNCONFIRMED: usize = 4096;

/// How long slot lists outlive their window: a run left behind by a
/// crashed fleet is still complete when a scheduler comes back.
const LIST_TTL_MARGIN: Duration = Duration::from_secs(24 * 3600);

/// Plans some users of `run` and releases its due slots. Answers with the
/// run as saved and the jobs published.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Advanced, PipelineError>")]
pub struct AdvanceRun {
    /// The task's definition in force.
    pub task: TaskType,
    /// The run, as last read from the store.
    pub run: Run,
    /// Now, as the scheduler's clock says.
    pub now: DateTime<Utc>,
    /// The fencing token of the scheduler's lease on the task.
    pub fence: u64,
}

/// What one [`AdvanceRun`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Advanced {
    /// The run as saved (finished runs are moved to the last-run record).
    pub run: Run,
    /// Jobs confirmed in the broker by this step.
    pub published: u64,
}

/// Makes a run of named users, or adds them to the run of the same
/// `scheduled_at`. Answers with the run as saved.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Run, PipelineError>")]
pub struct PlanListed {
    /// The task's definition in force.
    pub task: TaskType,
    /// The run's instant.
    pub scheduled_at: DateTime<Utc>,
    /// Who asks.
    pub source: RunSource,
    /// The users.
    pub users: Vec<UserId>,
    /// Every job at `scheduled_at`, no spread.
    pub immediate: bool,
    /// Ties the jobs to the tick or request.
    pub correlation_id: String,
    /// The scheduler's fencing token, when it holds the task's lock; a run
    /// can only be extended under the lock.
    pub fence: Option<u64>,
    /// Now, as the scheduler's clock says.
    pub now: DateTime<Utc>,
}

/// How fan-outs are shaped.
#[derive(Debug, Clone)]
pub struct DistributionSettings {
    /// Runs of one period are spread over this long.
    pub window: Duration,
    /// Users read, planned and published per batch.
    pub batch_size: usize,
    /// How long the schedule lock is extended at each renewal.
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

    /// How long slot lists live.
    pub fn list_ttl(&self) -> Duration {
        self.window + LIST_TTL_MARGIN
    }
}

/// Whether `users` runs fit in `window` at `rate` per second.
pub fn window_fits(users: u64, rate: Option<u32>, window: Duration) -> bool {
    match rate {
        None => true,
        Some(rate) => (u128::from(rate) * window.as_millis()) / 1000 >= u128::from(users),
    }
}

/// Plans runs and releases their slots.
pub struct DistributorActor {
    work: Arc<Distribution>,
    board: HealthBoard,
}

impl DistributorActor {
    /// A distributor publishing to `broker`, beating on `board` (where it
    /// should be registered as [`DISTRIBUTOR`]).
    pub fn new(
        store: Arc<dyn ScheduleStore>,
        broker: Arc<dyn JobBroker>,
        settings: DistributionSettings,
        board: HealthBoard,
    ) -> Self {
        DistributorActor {
            work: Arc::new(Distribution {
                store,
                broker,
                settings,
            }),
            board,
        }
    }

    /// `work`, with a panic in it caught, counted on the board and answered
    /// as an error (the caller's pass fails and is retried; the actor keeps
    /// nothing a panic could corrupt).
    fn guarded<T: 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, PipelineError>> + 'static,
    ) -> ResponseFuture<Result<T, PipelineError>> {
        let board = self.board.clone();
        Box::pin(async move {
            match AssertUnwindSafe(work).catch_unwind().await {
                Ok(result) => result,
                Err(_) => {
                    tracing::error!("distributor handler panicked; restarted");
                    board.restarted(DISTRIBUTOR);
                    Err(PipelineError::Panicked(DISTRIBUTOR))
                }
            }
        })
    }
}

impl Actor for DistributorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.board.beat(DISTRIBUTOR);
        ctx.run_interval(HEARTBEAT, |act, _| act.board.beat(DISTRIBUTOR));
    }
}

impl Supervised for DistributorActor {}

impl Handler<AdvanceRun> for DistributorActor {
    type Result = ResponseFuture<Result<Advanced, PipelineError>>;

    fn handle(&mut self, msg: AdvanceRun, _: &mut Self::Context) -> Self::Result {
        let work = self.work.clone();
        self.guarded(async move { work.advance(msg).await })
    }
}

impl Handler<PlanListed> for DistributorActor {
    type Result = ResponseFuture<Result<Run, PipelineError>>;

    fn handle(&mut self, msg: PlanListed, _: &mut Self::Context) -> Self::Result {
        let work = self.work.clone();
        self.guarded(async move { work.plan_listed(msg).await })
    }
}

/// The distributor's shared half, used by its handlers' futures.
struct Distribution {
    store: Arc<dyn ScheduleStore>,
    broker: Arc<dyn JobBroker>,
    settings: DistributionSettings,
}

impl Distribution {
    async fn advance(&self, msg: AdvanceRun) -> Result<Advanced, PipelineError> {
        let AdvanceRun {
            task,
            mut run,
            now,
            fence,
        } = msg;
        let mut published = 0;
        if run.immediate && matches!(run.audience, Audience::Enabled { .. }) {
            if !run.planning_done {
                published += self.publish_pipelined(&task, &mut run, fence).await?;
            }
        } else if run.immediate {
            for _ in 0..PAGES_PER_STEP {
                if run.planning_done {
                    break;
                }
                published += self.plan_page(&task, &mut run, fence).await?;
            }
        } else {
            self.plan_pages(&task, &mut run, fence).await?;
        }
        // Empty slots move `next_slot` in memory only: the next write of
        // the run (a trim, the finish, or one save at the end) carries it.
        let mut unsaved = false;
        for slot in run.releasable(now) {
            if run.planning_done && run.released >= run.planned {
                // Every planned user is out: the slots left are empty.
                run.next_slot = run.slots;
                break;
            }
            let (count, wrote) = self.release_slot(&task, &mut run, slot, fence).await?;
            published += count;
            unsaved = !wrote;
        }
        if run.planning_done && run.released >= run.planned && !run.finished() {
            run.next_slot = run.slots;
        }
        if unsaved && !run.finished() {
            let written = self
                .store
                .save_run(&run, &[], self.settings.list_ttl(), fence)
                .await?;
            self.fenced(written, &run)?;
        }
        if run.finished() {
            self.fenced(self.store.finish_run(&run, fence).await?, &run)?;
            tracing::info!(
                task = %run.task_type_id,
                scheduled_at = %run.scheduled_at,
                source = %run.source,
                jobs = run.released,
                "fan-out done"
            );
        }
        Ok(Advanced { run, published })
    }

    fn fenced(&self, written: bool, run: &Run) -> Result<(), PipelineError> {
        if written {
            Ok(())
        } else {
            tracing::warn!(task = %run.task_type_id, "schedule lock taken over; another replica carries on");
            Err(PipelineError::LockLost(run.task_type_id.clone()))
        }
    }

    /// Reads the next page of the run's users and plans it (or, for an
    /// immediate run, publishes it). Answers with the jobs published.
    async fn plan_page(
        &self,
        task: &TaskType,
        run: &mut Run,
        fence: u64,
    ) -> Result<u64, PipelineError> {
        let users = self.next_page(task, run).await?;
        let count = users.len() as u64;
        let mut published = 0;
        let mut lists = Vec::new();
        if run.immediate {
            let envelopes: Vec<JobEnvelope> = users
                .iter()
                .map(|user| envelope(task, run, user, None))
                .collect();
            if !envelopes.is_empty() {
                self.broker.publish(&envelopes).await?;
            }
            published = count;
            run.released += count;
            if run.planning_done {
                // Published as read: no list to release.
                run.next_slot = run.slots;
            }
        } else {
            let mut slots: BTreeMap<u32, Vec<UserId>> = BTreeMap::new();
            for (i, user) in users.into_iter().enumerate() {
                let slot = run.slot_for_rank(run.planned + i as u64);
                slots.entry(slot).or_default().push(user);
            }
            lists = slot_writes(slots);
        }
        run.planned += count;
        let written = self
            .store
            .save_run(run, &lists, self.settings.list_ttl(), fence)
            .await?;
        self.fenced(written, run)?;
        Ok(published)
    }

    /// Plans up to [`PAGES_PER_STEP`] pages of a spread run into its slot
    /// lists, reading each next page while the write of the one before is
    /// in flight (one round trip per page instead of two, in sequence).
    /// The write of page k carries the run as it was after page k, so the
    /// stored cursor never passes a user missing from the lists; a failed
    /// or fenced write drops the page read ahead.
    async fn plan_pages(
        &self,
        task: &TaskType,
        run: &mut Run,
        fence: u64,
    ) -> Result<(), PipelineError> {
        let ttl = self.settings.list_ttl();
        let mut ahead: Option<Vec<UserId>> = None;
        for step in 0..PAGES_PER_STEP {
            let users = match ahead.take() {
                Some(users) => users,
                None if run.planning_done => break,
                None => self.next_page(task, run).await?,
            };
            let mut slots: BTreeMap<u32, Vec<UserId>> = BTreeMap::new();
            let planned = run.planned;
            let count = users.len() as u64;
            for (i, user) in users.into_iter().enumerate() {
                let slot = run.slot_for_rank(planned + i as u64);
                slots.entry(slot).or_default().push(user);
            }
            let lists = slot_writes(slots);
            run.planned += count;
            if step + 1 < PAGES_PER_STEP && !run.planning_done {
                // `run` moves on only once both the write and the read
                // ahead succeeded.
                let mut next_run = run.clone();
                let (written, next) = futures::join!(
                    self.store.save_run(run, &lists, ttl, fence),
                    self.next_page(task, &mut next_run)
                );
                self.fenced(written?, run)?;
                ahead = Some(next?);
                *run = next_run;
            } else {
                let written = self.store.save_run(run, &lists, ttl, fence).await?;
                self.fenced(written, run)?;
            }
        }
        Ok(())
    }

    /// Reads the next page of the run's users, moving its cursor (or
    /// custom offset) past them and marking the end of its audience.
    async fn next_page(
        &self,
        task: &TaskType,
        run: &mut Run,
    ) -> Result<Vec<UserId>, PipelineError> {
        let batch = self.settings.batch_size.max(1);
        let users = match run.audience {
            Audience::Listed => {
                run.planning_done = true;
                Vec::new()
            }
            Audience::Enabled { with_custom } => match run.custom_offset {
                None => {
                    let page = match run.zone_walk.current() {
                        Some(None) => {
                            self.store
                                .enabled_users_in_spread_order(&task.id, run.cursor.as_ref(), batch)
                                .await?
                        }
                        Some(Some(zone)) => {
                            self.store
                                .zone_users_in_spread_order(
                                    &task.id,
                                    zone,
                                    run.cursor.as_ref(),
                                    batch,
                                )
                                .await?
                        }
                        None => Vec::new(),
                    };
                    let short = page.len() < batch;
                    if let Some(last) = page.last() {
                        run.cursor = Some(last.clone());
                    }
                    let users = page.into_iter().map(|cursor| cursor.user).collect();
                    if short {
                        // This group is done: on to the next, from its start.
                        run.zone_walk.position += 1;
                        if run.zone_walk.current().is_some() {
                            run.cursor = None;
                        } else if with_custom {
                            run.custom_offset = Some(0);
                        } else {
                            run.planning_done = true;
                        }
                    }
                    users
                }
                Some(offset) => {
                    let users = self
                        .store
                        .custom_users_page(&task.id, offset, batch)
                        .await?;
                    run.custom_offset = Some(offset + users.len() as u64);
                    if users.len() < batch {
                        run.planning_done = true;
                    }
                    users
                }
            },
        };
        Ok(users)
    }

    /// Publishes pages of an immediate run of the enabled index, several
    /// at a time: the next page is read and its publish started while
    /// earlier pages wait for their confirms, up to [`MAX_UNCONFIRMED`]
    /// jobs. The run is saved only up to the last page whose confirms are
    /// all in, so the saved cursor never passes an unconfirmed job (a
    /// crash publishes the same job ids again). Answers with the jobs
    /// confirmed.
    async fn publish_pipelined(
        &self,
        task: &TaskType,
        run: &mut Run,
        fence: u64,
    ) -> Result<u64, PipelineError> {
        let batch = self.settings.batch_size.max(1);
        let ttl = self.settings.list_ttl();
        let mut in_flight = InFlight::default();
        // The run as read ahead: its cursor is past every page started.
        let mut ahead = run.clone();
        let mut pages = 0;
        let mut published = 0;
        let started = std::time::Instant::now();
        let step = self.settings.lock_ttl / 6;
        loop {
            while pages < IMMEDIATE_PAGES_PER_STEP
                && (pages == 0 || started.elapsed() < step)
                && !ahead.planning_done
                && (in_flight.pages.is_empty() || in_flight.jobs + batch <= MAX_UNCONFIRMED)
            {
                let users = self.next_page(task, &mut ahead).await?;
                pages += 1;
                let count = users.len() as u64;
                ahead.planned += count;
                ahead.released += count;
                if ahead.planning_done {
                    // Published as read: no list to release.
                    ahead.next_slot = ahead.slots;
                }
                let confirm = (!users.is_empty()).then(|| {
                    let envelopes: Vec<JobEnvelope> = users
                        .iter()
                        .map(|user| envelope(task, &ahead, user, None))
                        .collect();
                    let broker = Arc::clone(&self.broker);
                    tokio::spawn(async move { broker.publish(&envelopes).await })
                });
                in_flight.jobs += users.len();
                in_flight.pages.push_back(Page {
                    confirm,
                    jobs: users.len(),
                    run: ahead.clone(),
                });
            }
            let Some(mut page) = in_flight.pages.pop_front() else {
                return Ok(published);
            };
            // This page and every page after it already confirmed: one
            // save covers them all. A failed page stops the step once the
            // pages confirmed before it are saved.
            let mut settled = false;
            let mut failure: Option<PipelineError> = None;
            loop {
                in_flight.jobs -= page.jobs;
                if let Some(confirm) = page.confirm.take() {
                    match confirm.await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => failure = Some(error.into()),
                        Err(_) => failure = Some(BrokerError::Closed.into()),
                    }
                    if failure.is_some() {
                        break;
                    }
                }
                published += page.jobs as u64;
                *run = page.run;
                settled = true;
                match in_flight.pages.front() {
                    Some(next) if next.confirm.as_ref().is_none_or(|c| c.is_finished()) => {
                        page = in_flight.pages.pop_front().ok_or(BrokerError::Closed)?;
                    }
                    _ => break,
                }
            }
            if settled {
                let written = self.store.save_run(run, &[], ttl, fence).await?;
                self.fenced(written, run)?;
            }
            if let Some(failure) = failure {
                return Err(failure);
            }
        }
    }

    /// Publishes the users of one due slot, batch by batch, trimming each
    /// batch from the list once confirmed. Answers with the jobs published
    /// and whether the run was written (an empty slot only moves
    /// `next_slot`, for the next write to carry).
    async fn release_slot(
        &self,
        task: &TaskType,
        run: &mut Run,
        slot: u32,
        fence: u64,
    ) -> Result<(u64, bool), PipelineError> {
        let batch = self.settings.batch_size.max(1);
        let mut published = 0;
        loop {
            let users = self.store.slot_users(run, slot, batch).await?;
            let last = users.len() < batch;
            if last {
                run.next_slot = slot + 1;
            }
            if users.is_empty() {
                return Ok((published, false));
            }
            let envelopes: Vec<JobEnvelope> = users
                .iter()
                .map(|user| envelope(task, run, user, Some(slot)))
                .collect();
            self.broker.publish(&envelopes).await?;
            published += users.len() as u64;
            run.released += users.len() as u64;
            let trim = [SlotWrite {
                slot,
                trim: users.len(),
                append: Vec::new(),
            }];
            let written = self
                .store
                .save_run(run, &trim, self.settings.list_ttl(), fence)
                .await?;
            self.fenced(written, run)?;
            if last {
                return Ok((published, true));
            }
        }
    }

    async fn plan_listed(&self, msg: PlanListed) -> Result<Run, PipelineError> {
        let slots = run_slots(self.settings.window, msg.immediate);
        let mut run = Run {
            task_type_id: msg.task.id.clone(),
            scheduled_at: msg.scheduled_at,
            source: msg.source,
            audience: Audience::Listed,
            immediate: msg.immediate,
            slots,
            users: msg.users.len() as u64,
            planned: msg.users.len() as u64,
            cursor: None,
            custom_offset: None,
            zone_walk: Default::default(),
            planning_done: true,
            next_slot: 0,
            released: 0,
            correlation_id: msg.correlation_id.clone(),
            created_at: msg.now,
        };
        let ttl = self.settings.list_ttl();
        let lists = listed_slots(&msg.task.id, &run, msg.users.clone(), self.settings.window);
        if self.store.create_run(&run, &lists, ttl, msg.fence).await? {
            return Ok(run);
        }
        // A run of this instant exists (a later page of the same custom
        // fire): add the users to it, never into a released slot.
        let Some(fence) = msg.fence else {
            return Err(PipelineError::RunExists(msg.task.id.clone()));
        };
        let existing = self
            .store
            .runs(&msg.task.id)
            .await?
            .runs
            .into_iter()
            .find(|existing| existing.id() == run.id());
        let Some(existing) = existing else {
            // It finished meanwhile: its jobs are out; these users' are not.
            return Err(PipelineError::RunExists(msg.task.id.clone()));
        };
        run = existing;
        run.users += msg.users.len() as u64;
        run.planned += msg.users.len() as u64;
        let lists = listed_slots(&msg.task.id, &run, msg.users, self.settings.window);
        let written = self.store.save_run(&run, &lists, ttl, fence).await?;
        self.fenced(written, &run)?;
        Ok(run)
    }
}

/// One page of an immediate run on its way to the broker.
struct Page {
    /// Its publish, `None` for an empty page.
    confirm: Option<tokio::task::JoinHandle<Result<(), BrokerError>>>,
    /// Its jobs.
    jobs: usize,
    /// The run once this page is confirmed.
    run: Run,
}

/// The pages of an immediate run published and not yet confirmed, oldest
/// first. Dropped early (an error, a lost lock), it stops their publishes:
/// whatever was not confirmed is published again from the saved cursor.
#[derive(Default)]
struct InFlight {
    pages: VecDeque<Page>,
    jobs: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        for page in &self.pages {
            if let Some(confirm) = &page.confirm {
                confirm.abort();
            }
        }
    }
}

/// The slot lists of named users: a trigger's spread evenly in spread
/// order, a custom fire's at each user's stable hash slot; an immediate
/// run's all in slot 0. Never into a slot already released.
fn listed_slots(
    task: &TaskTypeId,
    run: &Run,
    users: Vec<UserId>,
    window: Duration,
) -> Vec<SlotWrite> {
    let mut slots: BTreeMap<u32, Vec<UserId>> = BTreeMap::new();
    if run.immediate {
        slots.insert(0, users);
    } else if run.source == RunSource::CustomInterval {
        for user in users {
            let slot = slot::place(task, &user, window).slot.max(run.next_slot);
            slots
                .entry(slot.min(run.slots.saturating_sub(1)))
                .or_default()
                .push(user);
        }
    } else {
        let mut ordered: Vec<(u64, UserId)> = users
            .into_iter()
            .map(|user| (slot::spread_key(task, &user), user))
            .collect();
        ordered.sort_unstable();
        let count = ordered.len() as u64;
        for (rank, (_, user)) in ordered.into_iter().enumerate() {
            let slot =
                crate::fanout::slot_of_rank(rank as u64, count, run.slots).max(run.next_slot);
            slots.entry(slot).or_default().push(user);
        }
    }
    slot_writes(slots)
}

fn slot_writes(slots: BTreeMap<u32, Vec<UserId>>) -> Vec<SlotWrite> {
    slots
        .into_iter()
        .map(|(slot, append)| SlotWrite {
            slot,
            trim: 0,
            append,
        })
        .collect()
}

/// The job of `run` for `user`: due when its slot comes (`None`: at the
/// run's instant).
fn envelope(task: &TaskType, run: &Run, user: &UserId, slot: Option<u32>) -> JobEnvelope {
    let execute_after = slot.map_or(run.scheduled_at, |slot| run.slot_due(slot));
    job_envelope(
        task,
        user,
        run.scheduled_at,
        execute_after,
        slot,
        run.source.into(),
        &run.correlation_id,
    )
}

/// The job of `task` for `user` in the period of `scheduled_at`, due at
/// `execute_after`, from distribution slot `slot`.
pub fn job_envelope(
    task: &TaskType,
    user: &UserId,
    scheduled_at: DateTime<Utc>,
    execute_after: DateTime<Utc>,
    slot: Option<u32>,
    source: JobSource,
    correlation_id: &str,
) -> JobEnvelope {
    JobEnvelope::new(
        Job {
            id: job_id(&task.id, user, scheduled_at),
            task_type_id: task.id.clone(),
            user_id: user.clone(),
            scheduled_at,
            execute_after,
            attempt: 1,
            priority: task.priority(),
            payload: task
                .config
                .payload
                .as_ref()
                .map(|template| crate::domain::payload::render_payload(template, user))
                .unwrap_or_default(),
            created_at: Utc::now(),
        },
        JobMetadata {
            correlation_id: correlation_id.to_owned(),
            source,
            distribution_slot: slot,
            origin: None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        broker::{JobStream, memory::MemoryBroker},
        store::{LockName, LockStore, memory::MemoryStore},
    };
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A broker that refuses its `fail_at`-th publish call (counting from
    /// 1) and passes every other one to the in-memory broker.
    struct Refusing {
        inner: MemoryBroker,
        calls: AtomicUsize,
        fail_at: usize,
    }

    #[async_trait]
    impl JobBroker for Refusing {
        async fn declare(&self) -> Result<(), BrokerError> {
            self.inner.declare().await
        }
        async fn publish(&self, jobs: &[JobEnvelope]) -> Result<(), BrokerError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_at {
                return Err(BrokerError::PublishNacked(jobs[0].job.id));
            }
            self.inner.publish(jobs).await
        }
        async fn consume(&self, prefetch: u16) -> Result<Box<dyn JobStream>, BrokerError> {
            self.inner.consume(prefetch).await
        }
        async fn queue_depths(&self) -> Result<Vec<(&'static str, u64)>, BrokerError> {
            self.inner.queue_depths().await
        }
    }

    const USERS: u64 = 103;
    const BATCH: usize = 7;

    /// A store with `USERS` enabled users of task `t`, an immediate run of
    /// them made, and the task's lock held.
    async fn immediate_run() -> (Arc<MemoryStore>, TaskType, Run, u64) {
        let store = Arc::new(MemoryStore::new());
        let task: TaskType = serde_json::from_value(serde_json::json!({
            "id": "t", "name": "t",
            "interval": {"type": "daily", "value": 1},
            "timeout": "10s",
            "config": {"endpoint": "http://127.0.0.1:1/x", "method": "POST"}
        }))
        .unwrap();
        for i in 0..USERS {
            let user = UserId::parse(format!("u{i}")).unwrap();
            store.insert_enabled_entry(&task.id, &user, i * 7919 % 1000);
        }
        let lease = store
            .acquire_lock(
                &LockName::Schedule(task.id.clone()),
                Duration::from_secs(60),
            )
            .await
            .unwrap()
            .unwrap();
        let now = Utc::now();
        let run = Run {
            task_type_id: task.id.clone(),
            scheduled_at: now,
            source: RunSource::Trigger,
            audience: Audience::Enabled { with_custom: false },
            immediate: true,
            slots: run_slots(Duration::from_secs(60), true),
            users: USERS,
            planned: 0,
            cursor: None,
            custom_offset: None,
            zone_walk: Default::default(),
            planning_done: false,
            next_slot: 0,
            released: 0,
            correlation_id: "c".to_owned(),
            created_at: now,
        };
        assert!(
            store
                .create_run(&run, &[], Duration::from_secs(60), None)
                .await
                .unwrap()
        );
        (store, task, run, lease.fence)
    }

    fn distribution(store: Arc<MemoryStore>, broker: Arc<dyn JobBroker>) -> Distribution {
        Distribution {
            store,
            broker,
            settings: DistributionSettings {
                window: Duration::from_secs(60),
                batch_size: BATCH,
                lock_ttl: Duration::from_secs(60),
                task_rates: BTreeMap::new(),
                global_rate: None,
            },
        }
    }

    async fn advance_to_end(work: &Distribution, task: &TaskType, mut run: Run, fence: u64) -> u64 {
        let mut published = 0;
        while !run.finished() {
            let advanced = work
                .advance(AdvanceRun {
                    task: task.clone(),
                    run,
                    now: Utc::now(),
                    fence,
                })
                .await
                .unwrap();
            published += advanced.published;
            run = advanced.run;
        }
        published
    }

    #[tokio::test]
    async fn an_immediate_run_publishes_every_user_once_page_by_pipelined_page() {
        let (store, task, run, fence) = immediate_run().await;
        let broker = Arc::new(MemoryBroker::new());
        let work = distribution(store.clone(), broker.clone());
        assert_eq!(advance_to_end(&work, &task, run, fence).await, USERS);
        assert_eq!(broker.pending() as u64, USERS);
        let last = store.last_run(&task.id).await.unwrap().unwrap();
        assert_eq!((last.planned, last.released), (USERS, USERS));
        assert!(store.runs(&task.id).await.unwrap().runs.is_empty());
    }

    #[tokio::test]
    async fn the_saved_cursor_never_passes_a_page_whose_publish_failed() {
        let (store, task, run, fence) = immediate_run().await;
        // The third page is refused; the fourth and later may be confirmed.
        let refusing = Arc::new(Refusing {
            inner: MemoryBroker::new(),
            calls: AtomicUsize::new(0),
            fail_at: 3,
        });
        let work = distribution(store.clone(), refusing.clone());
        let failed = work
            .advance(AdvanceRun {
                task: task.clone(),
                run,
                now: Utc::now(),
                fence,
            })
            .await;
        assert!(
            matches!(failed, Err(PipelineError::Broker(_))),
            "{failed:?}"
        );
        let saved = store.runs(&task.id).await.unwrap().runs.remove(0);
        assert_eq!(saved.released, 2 * BATCH as u64);
        assert_eq!(saved.planned, 2 * BATCH as u64);
        // Resumed from the saved cursor, every user gets its job: the ones
        // confirmed after the refused page again, with the same job ids.
        let broker = Arc::new(MemoryBroker::new());
        let work = distribution(store.clone(), broker.clone());
        assert_eq!(
            advance_to_end(&work, &task, saved, fence).await,
            USERS - 2 * BATCH as u64
        );
        let first = refusing.inner.pending() as u64;
        assert_eq!(broker.pending() as u64, USERS - 2 * BATCH as u64);
        assert!(first >= 2 * BATCH as u64, "{first}");
    }

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
