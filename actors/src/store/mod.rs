//! The state-store port: everything the actors need of shared state.
//!
//! Two implementations: [`redis::RedisStore`] (production, many replicas)
//! and [`memory::MemoryStore`] (embedded mode and fast actor tests). Both
//! pass the same conformance suite. Key names live in [`keys::Keys`], the
//! one place that spells the spec's key patterns.

pub mod dead_letters;
pub mod durations;
pub mod keys;
pub mod memory;
pub mod redis;
pub mod replicas;
pub mod results;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use uuid::Uuid;

use crate::{
    domain::{Settings, TaskInterval, TaskTypeId, UserId, UserPreference},
    fanout::Run,
};

pub use keys::Keys;

/// Failures of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend (Redis) answered with an error or could not be reached;
    /// `detail` is its error text, for logs, never for clients.
    #[error("{backend}: {detail}")]
    Backend {
        /// Which backend: `redis`.
        backend: &'static str,
        /// What it said.
        detail: String,
    },
    /// Stored data could not be read back (written by something else?).
    #[error("corrupt value at {key}: {reason}")]
    Corrupt {
        /// The key holding the bad value.
        key: String,
        /// What was wrong with it.
        reason: String,
    },
}

/// One change to one user's preference for one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferenceWrite {
    /// Whose preference.
    pub user_id: UserId,
    /// For which task.
    pub task_type_id: TaskTypeId,
    /// Whether the task runs for the user.
    pub enabled: bool,
    /// The user's overrides; `None` leaves no settings (removes old ones).
    pub settings: Option<Settings>,
    /// For an enabled user with a custom interval: the next fire of that
    /// interval, computed by the caller. The user then leaves the task's
    /// enabled index and enters its due index.
    pub custom_next_fire: Option<DateTime<Utc>>,
    /// Stamped as the preference's `last_modified`.
    pub modified_at: DateTime<Utc>,
}

impl PreferenceWrite {
    /// The write of `enabled` and `settings`, stamped `now`. For an enabled
    /// user with a custom interval, `custom_next_fire` is that interval's
    /// first fire after `now`.
    pub fn new(
        user_id: UserId,
        task_type_id: TaskTypeId,
        enabled: bool,
        settings: Option<Settings>,
        now: DateTime<Utc>,
    ) -> Self {
        let custom_next_fire = settings
            .as_ref()
            .and_then(|settings| settings.custom_interval.as_ref())
            .filter(|_| enabled)
            .map(|interval| crate::schedule::Schedule::new(interval).next_after(now));
        PreferenceWrite {
            user_id,
            task_type_id,
            enabled,
            settings,
            custom_next_fire,
            modified_at: now,
        }
    }

    /// The writes that store a whole [`UserPreference`] (one per task it
    /// names, enabled or with settings), stamped with its `last_modified`;
    /// custom intervals get their first fire after `now`.
    pub fn from_preference(preference: &UserPreference, now: DateTime<Utc>) -> Vec<Self> {
        let mut tasks: Vec<&TaskTypeId> = preference.enabled_tasks.keys().collect();
        tasks.extend(
            preference
                .task_settings
                .keys()
                .filter(|task| !preference.enabled_tasks.contains_key(*task)),
        );
        tasks
            .into_iter()
            .map(|task| {
                let enabled = preference.enabled_tasks.get(task).copied().unwrap_or(false);
                let settings = preference.task_settings.get(task).cloned();
                PreferenceWrite {
                    modified_at: preference.last_modified,
                    ..PreferenceWrite::new(
                        preference.user_id.clone(),
                        task.clone(),
                        enabled,
                        settings,
                        now,
                    )
                }
            })
            .collect()
    }
}

/// A change of one user's default time zone (the zone of every task the
/// user has not given a `timezone` of its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimezoneWrite {
    /// Whose zone.
    pub user_id: UserId,
    /// The new default; `None` removes it (the tasks' own zones apply).
    pub timezone: Option<Tz>,
}

/// The zone groups of a task: every zone with an index of users, and the
/// last fire handled for each (see [`ScheduleStore::zone_groups`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ZoneGroups {
    /// Each zone and its last fire handled (`None`: never scheduled yet).
    pub groups: Vec<(Tz, Option<ScheduleState>)>,
    /// The instant up to which the scheduler last evaluated the task's
    /// zone groups (the `now` of its last ticking pass; `None` before the
    /// first). A group without a state of its own starts from here.
    pub checked: Option<DateTime<Utc>>,
    /// Stored zone names or states that could not be read (skipped).
    pub unreadable: Vec<String>,
}

/// A user's place in a walk of a task's enabled index in spread order
/// (ascending `key`, then `user`). `key` is the index entry's score: the
/// user's [`crate::slot::spread_key`] (0 for entries written before the
/// index was scored, which then sort first, by id).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct SpreadCursor {
    /// The spread key the index holds for the user.
    pub key: u64,
    /// The user.
    pub user: UserId,
}

/// A change to one slot list of a run: drop `trim` users from its head
/// (they are published), then append `append`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotWrite {
    /// The slot.
    pub slot: u32,
    /// Users to remove from the head of the list.
    pub trim: usize,
    /// Users to append.
    pub append: Vec<UserId>,
}

/// The runs in progress of a task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunList {
    /// Readable runs, oldest first.
    pub runs: Vec<Run>,
    /// Fields of the run hash that could not be read (skipped).
    pub unreadable: Vec<String>,
}

/// A user with a custom interval whose next fire has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueUser {
    /// The user.
    pub user_id: UserId,
    /// The fire instant that is due (the run's `scheduled_at`).
    pub scheduled_at: DateTime<Utc>,
    /// The user's settings for the task (holding the custom interval).
    pub settings: Settings,
}

/// Names of the distributed locks.
///
/// The spec's `taskqueue:distribution:lock` ("distribution process lock")
/// has no variant: a task's distribution runs under its own schedule lock,
/// whose fencing token every write of the run carries, so one global lock
/// would only serialise the tasks of all replicas behind each other (see
/// `docs/pipeline.md`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LockName {
    /// `{prefix}:schedule:lock:{task_type_id}`
    Schedule(TaskTypeId),
}

/// Proof of holding a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockLease {
    /// Random value only this holder knows; renew and release compare it.
    pub token: String,
    /// Strictly greater than the fence of every earlier acquisition of the
    /// same lock; writes guarded by the lock reject smaller fences.
    pub fence: u64,
}

/// Which token bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BucketName {
    /// `{prefix}:ratelimit:global`
    Global,
    /// `{prefix}:ratelimit:task:{task_type_id}`
    Task(TaskTypeId),
}

/// A token bucket's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// Which bucket.
    pub name: BucketName,
    /// Capacity (the burst).
    pub max_tokens: f64,
    /// Tokens added per second.
    pub refill_rate: f64,
}

/// The last fire the scheduler handled for a task type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleState {
    /// The fire instant last handed to the distributor.
    pub last_fired: DateTime<Utc>,
    /// Fence of the lock lease that wrote it.
    pub fence: u64,
}

/// Counters and samples to add to the Redis metrics, flushed in one batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsBatch {
    /// (date, task) -> executions to add to `metrics:executions:{date}`.
    pub executions: Vec<(NaiveDate, TaskTypeId, u64)>,
    /// (date, task) -> failures to add to `metrics:failures:{date}`.
    pub failures: Vec<(NaiveDate, TaskTypeId, u64)>,
    /// Samples for `metrics:duration:{task}`.
    pub durations: Vec<DurationSample>,
}

/// One execution's duration.
#[derive(Debug, Clone, PartialEq)]
pub struct DurationSample {
    /// The task.
    pub task_type_id: TaskTypeId,
    /// The job (keeps ZSET members unique).
    pub job_id: Uuid,
    /// When it completed (the ZSET score).
    pub completed_at: DateTime<Utc>,
    /// How long it took.
    pub duration_ms: u64,
}

/// What an execution of a job claims before it calls the endpoint (see
/// [`ClaimStore::claim_execution`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionClaim {
    /// The job's task.
    pub task_type_id: TaskTypeId,
    /// The job's user.
    pub user_id: UserId,
    /// The job.
    pub job_id: Uuid,
    /// This execution (fresh for every delivery): holder of the job's
    /// execution claim.
    pub execution: Uuid,
    /// How long the execution claim outlives a crashed execution.
    pub job_ttl: Duration,
    /// Under the overlap guard (`overlap: skip`), how long the (task, user)
    /// run claim outlives a crashed execution; `None` takes no run claim.
    pub run_ttl: Option<Duration>,
    /// The copy's attempt.
    pub attempt: u32,
    /// The copy's `execute_after`, epoch milliseconds.
    pub execute_after_ms: i64,
    /// A job of a scheduled fan-out: a user who does not have the task
    /// enabled now (preferences without it, or no preferences at all: the
    /// user was removed after the fan-out) is skipped too. A user who
    /// disabled the task is always skipped; a trigger's job (`false`) runs
    /// for a user without preferences (a trigger may name any user).
    pub require_enabled: bool,
    /// The job's `running` record, written with a successful claim (the
    /// first claim of a job also enters it in the user's runs list);
    /// `None` writes none.
    pub result: Option<results::ResultWrite>,
}

/// What [`ClaimStore::claim_execution`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The job's success is recorded; nothing was claimed.
    AlreadySucceeded,
    /// Another execution of the same job holds it; nothing was claimed.
    JobBusy,
    /// The user no longer has the task enabled (see
    /// [`ExecutionClaim::require_enabled`]); nothing was claimed.
    Disabled,
    /// The copy is older than the try the job's retry chain expects next
    /// (a smaller attempt, or the same attempt due before its next-eligible
    /// time): a duplicate to drop; nothing was claimed.
    Stale,
    /// The task is paused by a `Retry-After` for this much longer (see
    /// [`ClaimStore::record_throttle`]); nothing was claimed.
    Paused(Duration),
    /// Another job holds the (task, user) run claim; nothing was claimed.
    UserBusy,
    /// Both claims are held (the run claim only under the overlap guard).
    Claimed {
        /// The user's parameters for the task (empty without settings).
        parameters: BTreeMap<String, String>,
    },
}

/// How an execution ended (see [`ClaimStore::finish_execution`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionFinish {
    /// The job's task.
    pub task_type_id: TaskTypeId,
    /// The job's user.
    pub user_id: UserId,
    /// The job.
    pub job_id: Uuid,
    /// The execution whose claims are released.
    pub execution: Uuid,
    /// Whether the execution may hold the (task, user) run claim (it is
    /// released only then, and only if `job_id` holds it).
    pub run_claimed: bool,
    /// `Some(ttl)` when the job succeeded: its success marker is kept this
    /// long.
    pub success_ttl: Option<Duration>,
    /// When the execution ended in a retry or a throttle: the try it
    /// published, which the job's later claims compare copies with.
    pub next: Option<NextTry>,
    /// The attempt's outcome, recorded as the job's latest result and
    /// appended to its attempts, once per execution and only while this
    /// execution holds the job (a finish sent twice, or after the claim
    /// expired, records nothing); `None` records none.
    pub result: Option<results::ResultWrite>,
}

/// The next try of a job's retry chain, kept with the job (see
/// [`ClaimOutcome::Stale`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextTry {
    /// Its attempt.
    pub attempt: u32,
    /// Its `execute_after`, epoch milliseconds.
    pub eligible_ms: i64,
    /// How long it is kept.
    pub ttl: Duration,
}

/// A throttle of one job: the endpoint answered 429 or 503 with
/// `Retry-After` (see [`ClaimStore::record_throttle`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttle {
    /// The job's task (the one paused).
    pub task_type_id: TaskTypeId,
    /// The job (whose throttles are counted).
    pub job_id: Uuid,
    /// How long the task is paused.
    pub pause: Duration,
    /// How long the job's count is kept.
    pub count_ttl: Duration,
}

/// Users' preferences and time zones, and the reads of the indexes they feed (sizes, ranks, pages).
#[async_trait]
pub trait PreferenceStore: Send + Sync + 'static {
    /// Applies preference writes, each atomically with its index updates.
    async fn write_preferences(&self, writes: &[PreferenceWrite]) -> Result<(), StoreError>;

    /// Removes a user's preference and settings for a task (and the user
    /// from its indexes). False when there was nothing to remove.
    async fn delete_preference(&self, user: &UserId, task: &TaskTypeId)
    -> Result<bool, StoreError>;

    /// A user's preferences, `None` for an unknown user.
    async fn preferences(&self, user: &UserId) -> Result<Option<UserPreference>, StoreError>;

    /// Sets or removes users' default time zones. Atomically with each
    /// change, every task a user has enabled on its own interval without a
    /// `timezone` of its own moves to the user's new zone group (custom
    /// intervals stay where they are).
    async fn write_user_timezones(&self, writes: &[TimezoneWrite]) -> Result<(), StoreError>;

    /// A user's default time zone, if set.
    async fn user_timezone(&self, user: &UserId) -> Result<Option<Tz>, StoreError>;

    /// Users in each of `zones`' groups of the task, in the same order.
    async fn zone_sizes(&self, task: &TaskTypeId, zones: &[Tz]) -> Result<Vec<u64>, StoreError>;

    /// Users with the task enabled (default and custom intervals together).
    async fn enabled_user_count(&self, task: &TaskTypeId) -> Result<u64, StoreError>;

    /// The user's rank in the spread order of the task's zone group `zone`
    /// (`None`: the users on the task's own zone), `None` when the group
    /// does not hold the user. One round trip, O(log N).
    async fn spread_rank(
        &self,
        task: &TaskTypeId,
        zone: Option<Tz>,
        user: &UserId,
    ) -> Result<Option<u64>, StoreError>;

    /// Users of the task's custom-interval index by rank, with their
    /// custom interval (`None` when it cannot be read): at most `limit`
    /// from `offset`. One round trip.
    async fn custom_intervals_page(
        &self,
        task: &TaskTypeId,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<(UserId, Option<TaskInterval>)>, StoreError>;

    /// Sizes of the task's enabled index and custom-interval index.
    async fn index_sizes(&self, task: &TaskTypeId) -> Result<(u64, u64), StoreError>;
}

/// The named locks of the scheduler side, with fencing tokens.
#[async_trait]
pub trait LockStore: Send + Sync + 'static {
    /// Takes the lock if free. `None` when another holder has it.
    async fn acquire_lock(
        &self,
        lock: &LockName,
        ttl: Duration,
    ) -> Result<Option<LockLease>, StoreError>;

    /// Extends the lock if `lease` still holds it.
    async fn renew_lock(
        &self,
        lock: &LockName,
        lease: &LockLease,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Frees the lock if `lease` still holds it.
    async fn release_lock(&self, lock: &LockName, lease: &LockLease) -> Result<bool, StoreError>;
}

/// What the scheduler side keeps: fires handled, operator pauses, fan-out runs and their slot lists, and the walks of the indexes a fan-out reads.
#[async_trait]
pub trait ScheduleStore: Send + Sync + 'static {
    /// The zone groups of a task, with the last fire handled for each: one
    /// round trip, O(zones).
    async fn zone_groups(&self, task: &TaskTypeId) -> Result<ZoneGroups, StoreError>;

    /// Users of the task's zone group `zone` in spread order, strictly
    /// after `after`; at most `limit`. One round trip, O(log N + limit).
    async fn zone_users_in_spread_order(
        &self,
        task: &TaskTypeId,
        zone: Tz,
        after: Option<&SpreadCursor>,
        limit: usize,
    ) -> Result<Vec<SpreadCursor>, StoreError>;

    /// Records the last fire handled of zone groups and the instant up to
    /// which the groups were evaluated ([`ZoneGroups::checked`]), fenced
    /// as [`ScheduleStore::record_fire`]: false (nothing written) when a
    /// later holder took the task's schedule lock.
    async fn record_zone_fires(
        &self,
        task: &TaskTypeId,
        fires: &[(Tz, DateTime<Utc>)],
        checked: DateTime<Utc>,
        lease: &LockLease,
    ) -> Result<bool, StoreError>;

    /// Users with the task enabled on its default interval, in the index's
    /// walk order (spread order, as [`ScheduleStore::enabled_users_in_spread_order`]),
    /// strictly after the user `after`; at most `limit`. One round trip,
    /// O(log N + limit). `after` need not be enabled any more: the walk
    /// resumes at its entry's place, else at its spread key (at key 0
    /// while entries written before the index was scored remain, so none of
    /// those is skipped; some users may then come out twice).
    async fn enabled_users_after(
        &self,
        task: &TaskTypeId,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Vec<UserId>, StoreError>;

    /// Users with the task enabled on its default interval in spread order
    /// (ascending spread key, then id), strictly after `after`; at most
    /// `limit`. One round trip.
    async fn enabled_users_in_spread_order(
        &self,
        task: &TaskTypeId,
        after: Option<&SpreadCursor>,
        limit: usize,
    ) -> Result<Vec<SpreadCursor>, StoreError>;

    /// Users with a custom interval whose next fire is at or before `now`,
    /// earliest first; at most `limit`.
    async fn due_custom_users(
        &self,
        task: &TaskTypeId,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DueUser>, StoreError>;

    /// Moves due users to their next fire; an entry whose stored fire is no
    /// longer `scheduled_at` (the user changed it meanwhile) is left alone.
    /// Fenced as [`ScheduleStore::save_run`]: false (and nothing written) when
    /// a later holder took the task's schedule lock.
    async fn advance_custom_users(
        &self,
        task: &TaskTypeId,
        moves: &[(UserId, DateTime<Utc>, DateTime<Utc>)],
        fence: u64,
    ) -> Result<bool, StoreError>;

    /// Pauses `task` (`Some(since)`) or resumes it (`None`) for every
    /// replica; true when that changed its state (an earlier pause keeps
    /// its time).
    async fn set_task_paused(
        &self,
        task: &TaskTypeId,
        since: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError>;

    /// The tasks paused by an operator, with when each was paused. One
    /// round trip.
    async fn paused_tasks(&self) -> Result<BTreeMap<TaskTypeId, DateTime<Utc>>, StoreError>;

    /// The last fire handled for `task`.
    async fn schedule_state(&self, task: &TaskTypeId) -> Result<Option<ScheduleState>, StoreError>;

    /// Records `last_fired` unless a lease with a greater fence wrote since
    /// (then false: the caller lost its lock).
    async fn record_fire(
        &self,
        task: &TaskTypeId,
        last_fired: DateTime<Utc>,
        lease: &LockLease,
    ) -> Result<bool, StoreError>;

    /// The task's runs in progress, oldest first. Records that cannot be
    /// read are left out and named in [`RunList::unreadable`].
    async fn runs(&self, task: &TaskTypeId) -> Result<RunList, StoreError>;

    /// The task's last finished run.
    async fn last_run(&self, task: &TaskTypeId) -> Result<Option<Run>, StoreError>;

    /// Stores a new run with its first slot lists, atomically; false (and
    /// nothing written) when a run with its id exists, or when `fence` (a
    /// run made under the task's schedule lock) is no longer the lock's
    /// latest. A trigger, made without the lock, passes `None`.
    async fn create_run(
        &self,
        run: &Run,
        lists: &[SlotWrite],
        ttl: Duration,
        fence: Option<u64>,
    ) -> Result<bool, StoreError>;

    /// Saves `run` and applies `lists` (trims, then appends) atomically, if
    /// `fence` is still the latest fence of the task's schedule lock; false
    /// (and nothing written) when a later holder took the lock.
    async fn save_run(
        &self,
        run: &Run,
        lists: &[SlotWrite],
        ttl: Duration,
        fence: u64,
    ) -> Result<bool, StoreError>;

    /// Removes the finished `run` and keeps it as the task's last run,
    /// fenced as [`ScheduleStore::save_run`].
    async fn finish_run(&self, run: &Run, fence: u64) -> Result<bool, StoreError>;

    /// Up to `limit` users at the head of a slot list of `run`.
    async fn slot_users(
        &self,
        run: &Run,
        slot: u32,
        limit: usize,
    ) -> Result<Vec<UserId>, StoreError>;

    /// The run already made under a trigger's idempotency key, or `None`
    /// after recording `run` under it for `ttl`.
    async fn trigger_run(
        &self,
        task: &TaskTypeId,
        key: &str,
        run: i64,
        ttl: Duration,
    ) -> Result<Option<i64>, StoreError>;

    /// Users of the task's custom-interval index by rank: at most `limit`
    /// from `offset`.
    async fn custom_users_page(
        &self,
        task: &TaskTypeId,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<UserId>, StoreError>;
}

/// The execution bookkeeping of the worker side: claims, finishes, successes and throttles.
#[async_trait]
pub trait ClaimStore: Send + Sync + 'static {
    /// For each job id, whether a success is recorded.
    async fn succeeded(&self, jobs: &[Uuid]) -> Result<Vec<bool>, StoreError>;

    /// Claims one execution of a job, atomically: `AlreadySucceeded` when
    /// its success is recorded; else takes the job's execution claim
    /// (`JobBusy` when another execution holds it), then, when
    /// `claim.run_ttl` is set, the (task, user) run claim (`UserBusy` when
    /// another job holds it; the execution claim is released again).
    /// `Claimed` carries the user's parameters for the task. A user who
    /// disabled the task (or, with `require_enabled`, does not have it
    /// enabled) answers `Disabled`. A copy older
    /// than the job's next try recorded by a finish answers `Stale` (after
    /// the success check). A task paused
    /// by [`ClaimStore::record_throttle`] answers `Paused` after the
    /// success check, claiming nothing.
    async fn claim_execution(&self, claim: &ExecutionClaim) -> Result<ClaimOutcome, StoreError>;

    /// Ends an execution at once: records the success (when
    /// `finish.success_ttl` is set) and releases the execution claim and
    /// (when `finish.run_claimed`) the run claim, each only if this
    /// execution holds it.
    async fn finish_execution(&self, finish: &ExecutionFinish) -> Result<(), StoreError>;

    /// [`claim_execution`](ClaimStore::claim_execution) of several jobs in
    /// one round trip (one pipeline): each claim as if made alone, in
    /// order; the outcomes in the same order. An error means none is known
    /// to be claimed (claims are idempotent per execution id, so a retry
    /// is safe).
    async fn claim_executions(
        &self,
        claims: &[ExecutionClaim],
    ) -> Result<Vec<ClaimOutcome>, StoreError> {
        let mut outcomes = Vec::with_capacity(claims.len());
        for claim in claims {
            outcomes.push(self.claim_execution(claim).await?);
        }
        Ok(outcomes)
    }

    /// [`finish_execution`](ClaimStore::finish_execution) of several jobs in
    /// one round trip (one pipeline), each as if made alone. `Ok` means
    /// every one is recorded.
    async fn finish_executions(&self, finishes: &[ExecutionFinish]) -> Result<(), StoreError> {
        for finish in finishes {
            self.finish_execution(finish).await?;
        }
        Ok(())
    }

    /// Counts a throttle of `throttle.job_id` (the count kept
    /// `count_ttl`) and pauses its task for `pause` on every replica (a
    /// longer pause already set is kept): claims of the task's jobs answer
    /// [`ClaimOutcome::Paused`] until it ends. Returns the job's throttles
    /// so far, this one included.
    async fn record_throttle(&self, throttle: &Throttle) -> Result<u32, StoreError>;
}

/// The spec's token buckets.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// The spec's token-bucket script: takes `requested` tokens if there
    /// are that many. `now` is seconds since the epoch, as a float.
    async fn take_tokens(
        &self,
        bucket: &Bucket,
        requested: u32,
        now: f64,
    ) -> Result<bool, StoreError>;
}

/// The Redis metrics.
#[async_trait]
pub trait MetricsStore: Send + Sync + 'static {
    /// Adds a batch to the Redis metrics (one pipeline), trimming and
    /// expiring per the store's retention.
    async fn record_metrics(&self, batch: &MetricsBatch) -> Result<(), StoreError>;
}

/// Shared state, as the actors see it: every role of the store, for the
/// code that needs several (a backend implements each role; this trait
/// comes with them). Every method is one round trip (or one pipeline)
/// whatever the size of its batch argument.
pub trait StateStore:
    PreferenceStore + LockStore + ScheduleStore + ClaimStore + TokenStore + MetricsStore
{
}

impl<T: PreferenceStore + LockStore + ScheduleStore + ClaimStore + TokenStore + MetricsStore>
    StateStore for T
{
}

/// The store's roles as the pipeline's actors take them, one handle per
/// role: each actor holds the roles it uses, and a test double takes the
/// place of one role (say [`ClaimStore`], to fail finishes) while a real
/// store serves the others.
#[derive(Clone)]
pub struct Stores {
    /// Preferences and index reads.
    pub preferences: Arc<dyn PreferenceStore>,
    /// The scheduler side's locks.
    pub locks: Arc<dyn LockStore>,
    /// Fires, pauses, fan-out runs and their slot lists.
    pub schedule: Arc<dyn ScheduleStore>,
    /// Execution claims, finishes and throttles.
    pub claims: Arc<dyn ClaimStore>,
    /// Token buckets.
    pub tokens: Arc<dyn TokenStore>,
    /// Redis metrics.
    pub metrics: Arc<dyn MetricsStore>,
}

impl Stores {
    /// Every role served by `store`.
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        Stores {
            preferences: store.clone(),
            locks: store.clone(),
            schedule: store.clone(),
            claims: store.clone(),
            tokens: store.clone(),
            metrics: store,
        }
    }

    /// The same roles, with `schedule` served by another store.
    pub fn with_schedule(self, schedule: Arc<dyn ScheduleStore>) -> Self {
        Stores { schedule, ..self }
    }

    /// The same roles, with `claims` served by another store.
    pub fn with_claims(self, claims: Arc<dyn ClaimStore>) -> Self {
        Stores { claims, ..self }
    }
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stores")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{domain::TaskInterval, schedule::Schedule};

    fn interval() -> TaskInterval {
        serde_json::from_str(r#"{"type":"daily","value":1,"at_time":"07:30"}"#).unwrap()
    }

    fn check(enabled: bool, settings: Option<Settings>, expect_next: bool) {
        let now: DateTime<Utc> = "2024-01-15T10:00:00Z".parse().unwrap();
        let write = PreferenceWrite::new(
            UserId::parse("u1").unwrap(),
            TaskTypeId::parse("t1").unwrap(),
            enabled,
            settings.clone(),
            now,
        );
        let expected = expect_next.then(|| Schedule::new(&interval()).next_after(now));
        assert_eq!(write.custom_next_fire, expected, "{enabled} {settings:?}");
        assert_eq!(write.modified_at, now);
        assert_eq!(write.settings, settings);
    }

    #[test]
    fn only_enabled_custom_intervals_enter_the_due_index() {
        let custom = Settings {
            timezone: None,
            custom_interval: Some(interval()),
            parameters: BTreeMap::new(),
        };
        let params_only = Settings {
            timezone: None,
            custom_interval: None,
            parameters: BTreeMap::from([("a".to_owned(), "b".to_owned())]),
        };
        check(true, Some(custom.clone()), true);
        check(false, Some(custom), false);
        check(true, Some(params_only), false);
        check(true, None, false);
    }

    #[test]
    fn a_user_preference_becomes_one_write_per_task() {
        let preference: UserPreference = serde_json::from_str(
            r#"{"user_id":"u1","enabled_tasks":{"a":true,"b":false},
                "task_settings":{"b":{"parameters":{"x":"y"}},"c":{"parameters":{"x":"z"}}},
                "last_modified":"2024-01-15T10:00:00Z"}"#,
        )
        .unwrap();
        let now = "2024-02-01T00:00:00Z".parse().unwrap();
        let writes = PreferenceWrite::from_preference(&preference, now);
        let summary: Vec<(&str, bool, bool)> = writes
            .iter()
            .map(|w| (w.task_type_id.as_str(), w.enabled, w.settings.is_some()))
            .collect();
        assert_eq!(
            summary,
            vec![("a", true, false), ("b", false, true), ("c", false, true)]
        );
        assert!(
            writes
                .iter()
                .all(|w| w.modified_at == preference.last_modified)
        );
    }
}
