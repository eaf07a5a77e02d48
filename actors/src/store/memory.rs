//! In-process implementation of the state-store port.
//!
//! [`MemoryStore`] keeps everything the Redis store keeps, with the same
//! semantics, behind one mutex: embedded (single-process) mode and fast
//! actor tests use it. It never reads the wall clock where the port takes a
//! `now`; time-to-live values are honoured lazily against
//! [`std::time::Instant`] when an entry is next touched.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    ops::Bound,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use uuid::Uuid;

use super::{
    Bucket, BucketName, ClaimOutcome, ClaimStore, DueUser, ExecutionClaim, ExecutionFinish, Keys,
    LockLease, LockName, LockStore, MetricsBatch, MetricsStore, PreferenceStore, PreferenceWrite,
    RunList, ScheduleState, ScheduleStore, SlotWrite, SpreadCursor, StoreError, Throttle,
    TimezoneWrite, TokenStore, ZoneGroups,
    results::{AttemptRecord, MAX_ATTEMPTS_KEPT, MAX_RUNS_KEPT, PeriodTally, ResultWrite},
};
use crate::{
    domain::{Settings, TaskInterval, TaskTypeId, UserId, UserPreference},
    fanout::Run,
};

/// How long an untouched token bucket lives (the script's `EXPIRE 3600`).
const BUCKET_TTL: Duration = Duration::from_secs(3600);

/// Default metrics retention: 30 days.
pub const DEFAULT_METRICS_RETENTION: Duration = Duration::from_secs(30 * 86_400);

/// Default cap on the duration samples kept per task.
pub const DEFAULT_METRICS_MAX_SAMPLES: usize = 10_000;

/// The in-process state store.
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
    metrics_retention: Duration,
    metrics_max_samples: usize,
    /// The replica reports (`store::replicas`).
    pub(crate) replicas: super::replicas::MemoryReplicas,
}

/// A task's enabled index, as the Redis ZSET holds it: user -> spread key
/// (the score), walked in (key, user) order.
#[derive(Debug, Default)]
struct EnabledIndex {
    /// Each user's entry key; always the same entries as `order`.
    keys: HashMap<UserId, u64>,
    /// The entries in spread order.
    order: BTreeSet<SpreadCursor>,
}

impl EnabledIndex {
    /// Adds `user` at `key`, or moves it there (`ZADD`).
    fn insert(&mut self, user: &UserId, key: u64) {
        if let Some(old) = self.keys.insert(user.clone(), key) {
            self.order.remove(&SpreadCursor {
                key: old,
                user: user.clone(),
            });
        }
        self.order.insert(SpreadCursor {
            key,
            user: user.clone(),
        });
    }

    /// Removes `user` (`ZREM`).
    fn remove(&mut self, user: &UserId) {
        if let Some(key) = self.keys.remove(user) {
            self.order.remove(&SpreadCursor {
                key,
                user: user.clone(),
            });
        }
    }

    /// Up to `limit` entries strictly after `after` (all from the first
    /// without it).
    fn page(&self, after: Option<&SpreadCursor>, limit: usize) -> Vec<SpreadCursor> {
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.order
            .range((lower, Bound::Unbounded))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Where a walk by user id resumes after `user`, as
    /// `enabled_page.lua` places it: at the user's entry, else at key 0
    /// while entries of key 0 remain, else at `fallback`.
    fn position(&self, user: &UserId, fallback: u64) -> SpreadCursor {
        let key = match self.keys.get(user) {
            Some(key) => *key,
            None if self.order.first().is_some_and(|first| first.key == 0) => 0,
            None => fallback,
        };
        SpreadCursor {
            key,
            user: user.clone(),
        }
    }
}

/// What is kept of one job's results (see [`super::results`]).
#[derive(Debug)]
struct KeptResults {
    /// The latest record of a claim or finish, if written.
    latest: Option<AttemptRecord>,
    /// The queued job's record, until its first claim.
    pending: Option<AttemptRecord>,
    /// The execution whose finish was last recorded.
    finished: Option<Uuid>,
    /// When `latest` expires.
    latest_expiry: Instant,
    /// Finished attempts, oldest first.
    attempts: VecDeque<AttemptRecord>,
    /// When `attempts` expires.
    attempts_expiry: Instant,
}

impl KeptResults {
    /// Nothing kept yet, the records expiring at the instants given.
    fn empty(latest_expiry: Instant, attempts_expiry: Instant) -> Self {
        KeptResults {
            latest: None,
            pending: None,
            finished: None,
            latest_expiry,
            attempts: VecDeque::new(),
            attempts_expiry,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// user -> task -> enabled.
    user_tasks: HashMap<UserId, BTreeMap<TaskTypeId, bool>>,
    /// (user, task) -> settings and when they were written.
    settings: HashMap<(UserId, TaskTypeId), (Settings, DateTime<Utc>)>,
    /// user -> when any preference last changed.
    user_modified: HashMap<UserId, DateTime<Utc>>,
    /// task -> users enabled on the default interval, by spread key.
    enabled_index: HashMap<TaskTypeId, EnabledIndex>,
    /// user -> default time zone.
    user_zone: HashMap<UserId, Tz>,
    /// (task, zone name) -> users of the zone group, by spread key.
    zone_index: HashMap<(TaskTypeId, String), EnabledIndex>,
    /// (user, task) -> the zone group holding the user (the Redis store
    /// finds it from the settings and the default zone).
    zone_of: HashMap<(UserId, TaskTypeId), Tz>,
    /// task -> zone name -> zone: the zones that had a group.
    zone_sets: HashMap<TaskTypeId, BTreeMap<String, Tz>>,
    /// (task, zone name) -> last fire handled of the zone group.
    zone_schedule: HashMap<(TaskTypeId, String), ScheduleState>,
    /// [`ZoneGroups::checked`] by task, with the fence that wrote it.
    zone_checked: HashMap<TaskTypeId, ScheduleState>,
    /// task -> user -> next fire (epoch ms) of users on a custom interval.
    custom_index: HashMap<TaskTypeId, BTreeMap<UserId, i64>>,
    /// lock key -> (token, expiry).
    locks: HashMap<String, (String, Instant)>,
    /// lock key -> last fence handed out.
    fences: HashMap<String, u64>,
    /// bucket key -> (tokens, last_refill, expiry).
    buckets: HashMap<String, (f64, f64, Instant)>,
    schedule: HashMap<TaskTypeId, ScheduleState>,
    /// (task, run, slot) -> (users, expiry).
    distribution: HashMap<(TaskTypeId, i64, u32), (VecDeque<UserId>, Instant)>,
    /// task -> run id -> run in progress.
    runs: HashMap<TaskTypeId, BTreeMap<i64, Run>>,
    /// task -> last finished run.
    last_runs: HashMap<TaskTypeId, Run>,
    /// (task, idempotency key) -> (run id, expiry).
    triggers: HashMap<(TaskTypeId, String), (i64, Instant)>,
    /// job -> expiry of its success marker.
    done_jobs: HashMap<Uuid, Instant>,
    /// job -> (next try's attempt, its eligible epoch ms, expiry).
    next_tries: HashMap<Uuid, (u32, i64, Instant)>,
    /// job -> its kept results (`job:{id}:result` and `:attempts`).
    results: HashMap<Uuid, KeptResults>,
    /// (task, period epoch ms) -> its tally and the tally's expiry.
    tallies: HashMap<(TaskTypeId, i64), (PeriodTally, Instant)>,
    /// (user, task) -> recent job ids, newest first, and their expiry.
    user_runs: HashMap<(UserId, TaskTypeId), (VecDeque<Uuid>, Instant)>,
    /// job -> (throttles, expiry of the count).
    throttles: HashMap<Uuid, (u32, Instant)>,
    /// task -> end of its `Retry-After` pause.
    pauses: HashMap<TaskTypeId, Instant>,
    /// task -> when an operator paused it.
    held: BTreeMap<TaskTypeId, DateTime<Utc>>,
    /// (task, user or job claimant) -> (holder, expiry): run claims and
    /// execution claims, as the Redis `running` keys hold them.
    running: HashMap<(TaskTypeId, String), (Uuid, Instant)>,
    executions: HashMap<(NaiveDate, TaskTypeId), u64>,
    failures: HashMap<(NaiveDate, TaskTypeId), u64>,
    /// task -> (score ms, member) samples, as the Redis ZSET holds them.
    durations: HashMap<TaskTypeId, BTreeSet<(i64, String)>>,
}

impl State {
    /// Whether `fence` is the latest fence of the task's schedule lock.
    fn holds_latest_fence(&self, task: &TaskTypeId, fence: u64) -> bool {
        let key = lock_key(&LockName::Schedule(task.clone()));
        self.fences.get(&key).copied().unwrap_or(0) == fence
    }

    /// Trims, then appends to, the slot lists of `run`.
    fn apply_slot_writes(&mut self, run: &Run, lists: &[SlotWrite], ttl: Duration) {
        let now = Instant::now();
        for list in lists {
            let key = (run.task_type_id.clone(), run.id(), list.slot);
            let entry = self
                .distribution
                .entry(key.clone())
                .or_insert_with(|| (VecDeque::new(), now));
            if entry.1 <= now {
                entry.0.clear();
            }
            let trim = list.trim.min(entry.0.len());
            entry.0.drain(..trim);
            entry.0.extend(list.append.iter().cloned());
            if !list.append.is_empty() {
                entry.1 = now + ttl;
            }
            if entry.0.is_empty() {
                self.distribution.remove(&key);
            }
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store with the default metrics limits.
    pub fn new() -> Self {
        MemoryStore::with_metrics_limits(DEFAULT_METRICS_RETENTION, DEFAULT_METRICS_MAX_SAMPLES)
    }

    /// An empty store keeping duration samples for `retention` (counted
    /// back from the newest sample) and at most `max_samples` per task.
    pub fn with_metrics_limits(retention: Duration, max_samples: usize) -> Self {
        MemoryStore {
            state: Mutex::new(State::default()),
            metrics_retention: retention,
            metrics_max_samples: max_samples,
            replicas: Default::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Who holds the `running` claim of `task` for `who` (a user id, or
    /// [`Keys::job_claimant`] for a job's execution claim), as
    /// `{p}:running:{task}:{who}` holds it: `None` when it is free.
    pub fn claim_holder(&self, task: &TaskTypeId, who: &str) -> Option<Uuid> {
        let state = self.lock();
        state
            .running
            .get(&(task.clone(), who.to_owned()))
            .filter(|(_, expiry)| *expiry > Instant::now())
            .map(|(holder, _)| *holder)
    }

    /// The executions counted for `task` on `date`.
    pub fn executions(&self, date: NaiveDate, task: &TaskTypeId) -> u64 {
        let key = (date, task.clone());
        self.lock().executions.get(&key).copied().unwrap_or(0)
    }

    /// The failures counted for `task` on `date`.
    pub fn failures(&self, date: NaiveDate, task: &TaskTypeId) -> u64 {
        let key = (date, task.clone());
        self.lock().failures.get(&key).copied().unwrap_or(0)
    }

    /// Puts `user` in the task's enabled index at spread key `key` and
    /// touches nothing else, as a bare `ZADD` on the Redis index would: for
    /// tests of entries an older release wrote (key 0) and of equal keys.
    pub fn insert_enabled_entry(&self, task: &TaskTypeId, user: &UserId, key: u64) {
        self.lock()
            .enabled_index
            .entry(task.clone())
            .or_default()
            .insert(user, key);
    }

    /// The kept results of `job` (latest, finished attempts oldest first),
    /// `None` when none is kept.
    pub(crate) fn kept_results(&self, job: Uuid) -> Option<(AttemptRecord, Vec<AttemptRecord>)> {
        let state = self.lock();
        let now = Instant::now();
        let kept = state.results.get(&job)?;
        let latest = kept
            .latest
            .clone()
            .or_else(|| kept.pending.clone())
            .filter(|_| kept.latest_expiry > now)?;
        let attempts = if kept.attempts_expiry > now {
            kept.attempts.iter().cloned().collect()
        } else {
            Vec::new()
        };
        Some((latest, attempts))
    }

    /// The `pending` records of [`super::results::JobResultStore::record_pending`]:
    /// each written only where no unexpired record is kept.
    pub(crate) fn keep_pending(&self, records: Vec<(Uuid, AttemptRecord)>, retention: Duration) {
        let mut state = self.lock();
        let now = Instant::now();
        for (job, record) in records {
            let kept = state
                .results
                .entry(job)
                .or_insert_with(|| KeptResults::empty(now, now));
            if kept.latest_expiry <= now {
                // A new (or expired) key: nothing of it is left, and it
                // takes the expiry; a kept one keeps its own.
                kept.latest = None;
                kept.pending = None;
                kept.finished = None;
                kept.latest_expiry = now + retention;
            }
            if kept.latest.is_none() {
                kept.pending = Some(record);
            }
        }
    }

    /// [`super::results::JobResultStore::add_missed`].
    pub(crate) fn tally_missed(
        &self,
        task: &TaskTypeId,
        scheduled_at: DateTime<Utc>,
        missed: u64,
        ttl: Duration,
    ) {
        let now = Instant::now();
        self.lock().tally(task, scheduled_at, now + ttl, now).missed += missed;
    }

    /// The tally of `task`'s period at `scheduled_at`, as kept.
    pub(crate) fn kept_tally(&self, task: &TaskTypeId, scheduled_at: DateTime<Utc>) -> PeriodTally {
        let state = self.lock();
        state
            .tallies
            .get(&(task.clone(), scheduled_at.timestamp_millis()))
            .filter(|(_, expiry)| *expiry > Instant::now())
            .map(|(tally, _)| tally.clone())
            .unwrap_or_default()
    }

    /// The user's recent job ids of `task`, newest first.
    pub(crate) fn kept_runs(&self, user: &UserId, task: &TaskTypeId) -> Vec<Uuid> {
        let state = self.lock();
        state
            .user_runs
            .get(&(user.clone(), task.clone()))
            .filter(|(_, expiry)| *expiry > Instant::now())
            .map(|(jobs, _)| jobs.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The duration samples of `task` as (completion epoch ms, member
    /// `<job id>:<duration ms>`), oldest first.
    pub fn durations(&self, task: &TaskTypeId) -> Vec<(i64, String)> {
        self.lock()
            .durations
            .get(task)
            .map(|samples| samples.iter().cloned().collect())
            .unwrap_or_default()
    }
}

fn lock_key(lock: &LockName) -> String {
    match lock {
        LockName::Schedule(task) => format!("schedule:{task}"),
    }
}

fn bucket_key(bucket: &BucketName) -> String {
    match bucket {
        BucketName::Global => "global".to_owned(),
        BucketName::Task(task) => format!("task:{task}"),
    }
}

/// Epoch milliseconds back to an instant.
pub(crate) fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The token-bucket arithmetic shared with `token_bucket.lua`: returns the
/// new (tokens, last_refill) when `requested` tokens can be taken.
pub(crate) fn take_from_bucket(
    stored: Option<(f64, f64)>,
    max_tokens: f64,
    refill_rate: f64,
    requested: f64,
    now: f64,
) -> Option<(f64, f64)> {
    let (tokens, last_refill) = stored.unwrap_or((max_tokens, now));
    // A caller whose clock is behind adds nothing and moves nothing back.
    let elapsed = (now - last_refill).max(0.0);
    let tokens = max_tokens.min(tokens + elapsed * refill_rate);
    if tokens >= requested {
        Some((tokens - requested, last_refill.max(now)))
    } else {
        None
    }
}

impl State {
    fn unindex(&mut self, user: &UserId, task: &TaskTypeId) {
        if let Some(index) = self.enabled_index.get_mut(task) {
            index.remove(user);
        }
        if let Some(zone) = self.zone_of.remove(&(user.clone(), task.clone()))
            && let Some(index) = self
                .zone_index
                .get_mut(&(task.clone(), zone.name().to_owned()))
        {
            index.remove(user);
        }
        if let Some(index) = self.custom_index.get_mut(task) {
            index.remove(user);
        }
    }

    fn write_preference(&mut self, write: &PreferenceWrite) {
        let user = &write.user_id;
        let task = &write.task_type_id;
        self.user_tasks
            .entry(user.clone())
            .or_default()
            .insert(task.clone(), write.enabled);
        let key = (user.clone(), task.clone());
        match &write.settings {
            Some(settings) => {
                self.settings
                    .insert(key, (settings.clone(), write.modified_at));
            }
            None => {
                self.settings.remove(&key);
            }
        }
        // Kept to the millisecond, as Redis keeps it.
        self.user_modified.insert(
            user.clone(),
            from_millis(write.modified_at.timestamp_millis()),
        );
        self.unindex(user, task);
        if write.enabled {
            match write.custom_next_fire {
                Some(next) => {
                    self.custom_index
                        .entry(task.clone())
                        .or_default()
                        .insert(user.clone(), next.timestamp_millis());
                }
                None => {
                    let zone = write
                        .settings
                        .as_ref()
                        .and_then(|settings| settings.timezone)
                        .or_else(|| self.user_zone.get(user).copied());
                    self.index_on_own_interval(user, task, zone);
                }
            }
        }
    }

    /// Puts `user` into the task's group of `zone` (the enabled index
    /// without one).
    fn index_on_own_interval(&mut self, user: &UserId, task: &TaskTypeId, zone: Option<Tz>) {
        let key = crate::slot::spread_key(task, user);
        match zone {
            None => self
                .enabled_index
                .entry(task.clone())
                .or_default()
                .insert(user, key),
            Some(zone) => {
                self.zone_sets
                    .entry(task.clone())
                    .or_default()
                    .insert(zone.name().to_owned(), zone);
                self.zone_of.insert((user.clone(), task.clone()), zone);
                self.zone_index
                    .entry((task.clone(), zone.name().to_owned()))
                    .or_default()
                    .insert(user, key);
            }
        }
    }

    /// Sets a user's default zone and moves the tasks that follow it.
    fn write_user_timezone(&mut self, write: &TimezoneWrite) {
        let user = &write.user_id;
        match write.timezone {
            Some(zone) => self.user_zone.insert(user.clone(), zone),
            None => self.user_zone.remove(user),
        };
        let tasks: Vec<TaskTypeId> = self
            .user_tasks
            .get(user)
            .map(|tasks| {
                tasks
                    .iter()
                    .filter(|(_, enabled)| **enabled)
                    .map(|(task, _)| task.clone())
                    .collect()
            })
            .unwrap_or_default();
        for task in tasks {
            let custom = self
                .custom_index
                .get(&task)
                .is_some_and(|index| index.contains_key(user));
            let overridden = self
                .settings
                .get(&(user.clone(), task.clone()))
                .is_some_and(|(settings, _)| settings.timezone.is_some());
            if custom || overridden {
                continue;
            }
            self.unindex(user, &task);
            self.index_on_own_interval(user, &task, write.timezone);
        }
    }

    /// Trims like the Redis pipeline: samples older than `retention`
    /// before `newest_ms` (the batch's newest), then all but the newest
    /// `max_samples`.
    /// Takes (or extends) the claim `key` for `holder`, unless another
    /// holder has it and it has not expired.
    fn claim(
        &mut self,
        key: (TaskTypeId, String),
        holder: Uuid,
        ttl: Duration,
        now: Instant,
    ) -> bool {
        if let Some((current, expiry)) = self.running.get(&key)
            && *expiry > now
            && *current != holder
        {
            return false;
        }
        self.running.insert(key, (holder, now + ttl));
        true
    }

    /// `claim_execution.lua`'s result write: the `running` record, and
    /// the job's entry in the user's runs list on its first claim (a
    /// `pending` record alone does not count, and is dropped).
    fn record_running(&mut self, claim: &ExecutionClaim, write: &ResultWrite, now: Instant) {
        let expiry = now + write.retention;
        let fresh = !self.results.get(&claim.job_id).is_some_and(|kept| {
            kept.latest.is_some() && kept.latest_expiry > now || kept.attempts_expiry > now
        });
        if fresh {
            self.results.remove(&claim.job_id);
            let runs = self
                .user_runs
                .entry((claim.user_id.clone(), claim.task_type_id.clone()))
                .or_insert_with(|| (VecDeque::new(), expiry));
            if runs.1 <= now {
                runs.0.clear();
            }
            runs.0.push_front(claim.job_id);
            runs.0.truncate(MAX_RUNS_KEPT);
        }
        if let Some(runs) = self
            .user_runs
            .get_mut(&(claim.user_id.clone(), claim.task_type_id.clone()))
        {
            runs.1 = expiry;
        }
        let kept = self
            .results
            .entry(claim.job_id)
            .or_insert_with(|| KeptResults::empty(expiry, now));
        kept.latest = Some(write.record.clone());
        kept.latest_expiry = expiry;
    }

    /// `finish_execution.lua`'s result write: recorded once per
    /// execution, while it holds the job.
    fn record_finished(&mut self, finish: &ExecutionFinish, write: &ResultWrite, now: Instant) {
        let holds = self
            .running
            .get(&(
                finish.task_type_id.clone(),
                Keys::job_claimant(finish.job_id),
            ))
            .is_some_and(|(holder, expiry)| *holder == finish.execution && *expiry > now);
        if !holds {
            return;
        }
        let expiry = now + write.retention;
        let kept = self
            .results
            .entry(finish.job_id)
            .or_insert_with(|| KeptResults::empty(expiry, expiry));
        if kept.latest_expiry <= now {
            kept.latest = None;
            kept.finished = None;
        }
        if kept.finished == Some(finish.execution) {
            return;
        }
        if kept.attempts_expiry <= now {
            kept.attempts.clear();
        }
        kept.latest = Some(write.record.clone());
        kept.finished = Some(finish.execution);
        kept.latest_expiry = expiry;
        kept.attempts.push_back(write.record.clone());
        while kept.attempts.len() > MAX_ATTEMPTS_KEPT {
            kept.attempts.pop_front();
        }
        kept.attempts_expiry = expiry;
        if let Some(period) = write.period {
            let (ended, late) = PeriodTally::fields(write);
            if ended.is_some() || late.is_some() {
                self.tally(&finish.task_type_id, period.scheduled_at, expiry, now)
                    .count(ended, late);
            }
        }
    }

    /// The live tally of `task`'s period at `scheduled_at` (a new one when
    /// none is, or it expired), its expiry set to `expiry`, as `HINCRBY`
    /// and `PEXPIRE` on `{p}:schedule:period:{task}:{ms}` would leave it.
    fn tally(
        &mut self,
        task: &TaskTypeId,
        scheduled_at: DateTime<Utc>,
        expiry: Instant,
        now: Instant,
    ) -> &mut PeriodTally {
        let entry = self
            .tallies
            .entry((task.clone(), scheduled_at.timestamp_millis()))
            .or_insert_with(|| (PeriodTally::default(), expiry));
        if entry.1 <= now {
            entry.0 = PeriodTally::default();
        }
        entry.1 = expiry;
        &mut entry.0
    }

    fn release(&mut self, key: &(TaskTypeId, String), holder: Uuid) {
        if self
            .running
            .get(key)
            .is_some_and(|(current, _)| *current == holder)
        {
            self.running.remove(key);
        }
    }

    fn trim_durations(
        &mut self,
        task: &TaskTypeId,
        newest_ms: i64,
        retention: Duration,
        max_samples: usize,
    ) {
        let Some(samples) = self.durations.get_mut(task) else {
            return;
        };
        let cutoff =
            newest_ms.saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
        samples.retain(|(score, _)| *score >= cutoff);
        while samples.len() > max_samples {
            samples.pop_first();
        }
    }
}

#[async_trait]
impl PreferenceStore for MemoryStore {
    async fn write_preferences(&self, writes: &[PreferenceWrite]) -> Result<(), StoreError> {
        let mut state = self.lock();
        for write in writes {
            state.write_preference(write);
        }
        Ok(())
    }

    async fn write_user_timezones(&self, writes: &[TimezoneWrite]) -> Result<(), StoreError> {
        let mut state = self.lock();
        for write in writes {
            state.write_user_timezone(write);
        }
        Ok(())
    }

    async fn user_timezone(&self, user: &UserId) -> Result<Option<Tz>, StoreError> {
        Ok(self.lock().user_zone.get(user).copied())
    }

    async fn zone_sizes(&self, task: &TaskTypeId, zones: &[Tz]) -> Result<Vec<u64>, StoreError> {
        let state = self.lock();
        Ok(zones
            .iter()
            .map(|zone| {
                state
                    .zone_index
                    .get(&(task.clone(), zone.name().to_owned()))
                    .map_or(0, |index| index.keys.len() as u64)
            })
            .collect())
    }

    async fn delete_preference(
        &self,
        user: &UserId,
        task: &TaskTypeId,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let mut removed = false;
        if let Some(tasks) = state.user_tasks.get_mut(user) {
            removed = tasks.remove(task).is_some();
            if tasks.is_empty() {
                state.user_tasks.remove(user);
                state.user_modified.remove(user);
            }
        }
        removed |= state
            .settings
            .remove(&(user.clone(), task.clone()))
            .is_some();
        state.unindex(user, task);
        Ok(removed)
    }

    async fn preferences(&self, user: &UserId) -> Result<Option<UserPreference>, StoreError> {
        let state = self.lock();
        let Some(tasks) = state.user_tasks.get(user) else {
            return Ok(None);
        };
        let task_settings = tasks
            .keys()
            .filter_map(|task| {
                state
                    .settings
                    .get(&(user.clone(), task.clone()))
                    .map(|(settings, _)| (task.clone(), settings.clone()))
            })
            .collect();
        let last_modified = state
            .user_modified
            .get(user)
            .copied()
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
        Ok(Some(UserPreference {
            user_id: user.clone(),
            enabled_tasks: tasks.clone(),
            task_settings,
            last_modified,
            timezone: state.user_zone.get(user).copied(),
        }))
    }

    async fn enabled_user_count(&self, task: &TaskTypeId) -> Result<u64, StoreError> {
        let state = self.lock();
        let default = state
            .enabled_index
            .get(task)
            .map_or(0, |index| index.keys.len());
        let custom = state.custom_index.get(task).map_or(0, BTreeMap::len);
        let zoned: usize = state
            .zone_index
            .iter()
            .filter(|((zone_task, _), _)| zone_task == task)
            .map(|(_, index)| index.keys.len())
            .sum();
        Ok((default + custom + zoned) as u64)
    }

    async fn index_sizes(&self, task: &TaskTypeId) -> Result<(u64, u64), StoreError> {
        let state = self.lock();
        let default = state
            .enabled_index
            .get(task)
            .map_or(0, |index| index.keys.len());
        let custom = state.custom_index.get(task).map_or(0, BTreeMap::len);
        Ok((default as u64, custom as u64))
    }

    async fn spread_rank(
        &self,
        task: &TaskTypeId,
        zone: Option<Tz>,
        user: &UserId,
    ) -> Result<Option<u64>, StoreError> {
        let state = self.lock();
        let index = match zone {
            Some(zone) => state
                .zone_index
                .get(&(task.clone(), zone.name().to_owned())),
            None => state.enabled_index.get(task),
        };
        let Some(index) = index else {
            return Ok(None);
        };
        let Some(key) = index.keys.get(user) else {
            return Ok(None);
        };
        let entry = SpreadCursor {
            key: *key,
            user: user.clone(),
        };
        Ok(Some(index.order.range(..entry).count() as u64))
    }

    async fn custom_intervals_page(
        &self,
        task: &TaskTypeId,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<(UserId, Option<TaskInterval>)>, StoreError> {
        let users = self.custom_users_page(task, offset, limit).await?;
        let state = self.lock();
        Ok(users
            .into_iter()
            .map(|user| {
                let interval = state
                    .settings
                    .get(&(user.clone(), task.clone()))
                    .and_then(|(settings, _)| settings.custom_interval.clone());
                (user, interval)
            })
            .collect())
    }
}

#[async_trait]
impl LockStore for MemoryStore {
    async fn acquire_lock(
        &self,
        lock: &LockName,
        ttl: Duration,
    ) -> Result<Option<LockLease>, StoreError> {
        let mut state = self.lock();
        let key = lock_key(lock);
        let now = Instant::now();
        if let Some((_, expiry)) = state.locks.get(&key)
            && *expiry > now
        {
            return Ok(None);
        }
        let token = Uuid::new_v4().to_string();
        state.locks.insert(key.clone(), (token.clone(), now + ttl));
        let fence = state.fences.entry(key).or_insert(0);
        *fence += 1;
        Ok(Some(LockLease {
            token,
            fence: *fence,
        }))
    }

    async fn renew_lock(
        &self,
        lock: &LockName,
        lease: &LockLease,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let now = Instant::now();
        match state.locks.get_mut(&lock_key(lock)) {
            Some((token, expiry)) if *token == lease.token && *expiry > now => {
                *expiry = now + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release_lock(&self, lock: &LockName, lease: &LockLease) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let key = lock_key(lock);
        match state.locks.get(&key) {
            Some((token, expiry)) if *token == lease.token && *expiry > Instant::now() => {
                state.locks.remove(&key);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[async_trait]
impl ScheduleStore for MemoryStore {
    async fn zone_groups(&self, task: &TaskTypeId) -> Result<ZoneGroups, StoreError> {
        let state = self.lock();
        let groups = state
            .zone_sets
            .get(task)
            .map(|zones| {
                zones
                    .iter()
                    .map(|(name, zone)| {
                        let stored = state.zone_schedule.get(&(task.clone(), name.clone()));
                        (*zone, stored.copied())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(ZoneGroups {
            groups,
            checked: state.zone_checked.get(task).map(|stored| stored.last_fired),
            unreadable: Vec::new(),
        })
    }

    async fn zone_users_in_spread_order(
        &self,
        task: &TaskTypeId,
        zone: Tz,
        after: Option<&SpreadCursor>,
        limit: usize,
    ) -> Result<Vec<SpreadCursor>, StoreError> {
        let state = self.lock();
        Ok(state
            .zone_index
            .get(&(task.clone(), zone.name().to_owned()))
            .map(|index| index.page(after, limit))
            .unwrap_or_default())
    }

    async fn record_zone_fires(
        &self,
        task: &TaskTypeId,
        fires: &[(Tz, DateTime<Utc>)],
        checked: DateTime<Utc>,
        lease: &LockLease,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let handed_out = lock_key(&LockName::Schedule(task.clone()));
        if state.fences.get(&handed_out).copied().unwrap_or(0) > lease.fence {
            return Ok(false);
        }
        let stale = fires.iter().any(|(zone, _)| {
            state
                .zone_schedule
                .get(&(task.clone(), zone.name().to_owned()))
                .is_some_and(|stored| stored.fence > lease.fence)
        }) || state
            .zone_checked
            .get(task)
            .is_some_and(|stored| stored.fence > lease.fence);
        if stale {
            return Ok(false);
        }
        state.zone_checked.insert(
            task.clone(),
            ScheduleState {
                last_fired: checked,
                fence: lease.fence,
            },
        );
        for (zone, last_fired) in fires {
            state.zone_schedule.insert(
                (task.clone(), zone.name().to_owned()),
                ScheduleState {
                    last_fired: *last_fired,
                    fence: lease.fence,
                },
            );
        }
        Ok(true)
    }

    async fn enabled_users_in_spread_order(
        &self,
        task: &TaskTypeId,
        after: Option<&SpreadCursor>,
        limit: usize,
    ) -> Result<Vec<SpreadCursor>, StoreError> {
        let state = self.lock();
        Ok(state
            .enabled_index
            .get(task)
            .map(|index| index.page(after, limit))
            .unwrap_or_default())
    }

    async fn enabled_users_after(
        &self,
        task: &TaskTypeId,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Vec<UserId>, StoreError> {
        let state = self.lock();
        let Some(index) = state.enabled_index.get(task) else {
            return Ok(Vec::new());
        };
        let after = after.map(|user| index.position(user, crate::slot::spread_key(task, user)));
        Ok(index
            .page(after.as_ref(), limit)
            .into_iter()
            .map(|cursor| cursor.user)
            .collect())
    }

    async fn due_custom_users(
        &self,
        task: &TaskTypeId,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DueUser>, StoreError> {
        let state = self.lock();
        let Some(index) = state.custom_index.get(task) else {
            return Ok(Vec::new());
        };
        let now_ms = now.timestamp_millis();
        let mut due: Vec<(i64, &UserId)> = index
            .iter()
            .filter(|(_, ms)| **ms <= now_ms)
            .map(|(user, ms)| (*ms, user))
            .collect();
        due.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.as_str().cmp(b.1.as_str())));
        let users = due
            .into_iter()
            .take(limit)
            .map(|(ms, user)| DueUser {
                user_id: user.clone(),
                scheduled_at: from_millis(ms),
                settings: state
                    .settings
                    .get(&(user.clone(), task.clone()))
                    .map(|(settings, _)| settings.clone())
                    .unwrap_or_default(),
            })
            .collect();
        Ok(users)
    }

    async fn advance_custom_users(
        &self,
        task: &TaskTypeId,
        moves: &[(UserId, DateTime<Utc>, DateTime<Utc>)],
        fence: u64,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock();
        if moves.is_empty() {
            return Ok(true);
        }
        if !state.holds_latest_fence(task, fence) {
            return Ok(false);
        }
        let Some(index) = state.custom_index.get_mut(task) else {
            return Ok(true);
        };
        for (user, from, to) in moves {
            if let Some(score) = index.get_mut(user)
                && *score == from.timestamp_millis()
            {
                *score = to.timestamp_millis();
            }
        }
        Ok(true)
    }

    async fn schedule_state(&self, task: &TaskTypeId) -> Result<Option<ScheduleState>, StoreError> {
        Ok(self.lock().schedule.get(task).copied())
    }

    async fn record_fire(
        &self,
        task: &TaskTypeId,
        last_fired: DateTime<Utc>,
        lease: &LockLease,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let handed_out = lock_key(&LockName::Schedule(task.clone()));
        if state.fences.get(&handed_out).copied().unwrap_or(0) > lease.fence {
            return Ok(false);
        }
        if let Some(stored) = state.schedule.get(task)
            && stored.fence > lease.fence
        {
            return Ok(false);
        }
        state.schedule.insert(
            task.clone(),
            ScheduleState {
                last_fired,
                fence: lease.fence,
            },
        );
        Ok(true)
    }

    async fn runs(&self, task: &TaskTypeId) -> Result<RunList, StoreError> {
        let state = self.lock();
        Ok(RunList {
            runs: state
                .runs
                .get(task)
                .map(|runs| runs.values().cloned().collect())
                .unwrap_or_default(),
            unreadable: Vec::new(),
        })
    }

    async fn last_run(&self, task: &TaskTypeId) -> Result<Option<Run>, StoreError> {
        Ok(self.lock().last_runs.get(task).cloned())
    }

    async fn create_run(
        &self,
        run: &Run,
        lists: &[SlotWrite],
        ttl: Duration,
        fence: Option<u64>,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock();
        if let Some(fence) = fence
            && !state.holds_latest_fence(&run.task_type_id, fence)
        {
            return Ok(false);
        }
        let runs = state.runs.entry(run.task_type_id.clone()).or_default();
        if runs.contains_key(&run.id()) {
            return Ok(false);
        }
        runs.insert(run.id(), run.clone());
        state.apply_slot_writes(run, lists, ttl);
        Ok(true)
    }

    async fn save_run(
        &self,
        run: &Run,
        lists: &[SlotWrite],
        ttl: Duration,
        fence: u64,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock();
        if !state.holds_latest_fence(&run.task_type_id, fence) {
            return Ok(false);
        }
        state.apply_slot_writes(run, lists, ttl);
        state
            .runs
            .entry(run.task_type_id.clone())
            .or_default()
            .insert(run.id(), run.clone());
        Ok(true)
    }

    async fn finish_run(&self, run: &Run, fence: u64) -> Result<bool, StoreError> {
        let mut state = self.lock();
        if !state.holds_latest_fence(&run.task_type_id, fence) {
            return Ok(false);
        }
        if let Some(runs) = state.runs.get_mut(&run.task_type_id) {
            runs.remove(&run.id());
        }
        state
            .last_runs
            .insert(run.task_type_id.clone(), run.clone());
        Ok(true)
    }

    async fn slot_users(
        &self,
        run: &Run,
        slot: u32,
        limit: usize,
    ) -> Result<Vec<UserId>, StoreError> {
        let state = self.lock();
        let key = (run.task_type_id.clone(), run.id(), slot);
        Ok(state
            .distribution
            .get(&key)
            .filter(|(_, expiry)| *expiry > Instant::now())
            .map(|(users, _)| users.iter().take(limit).cloned().collect())
            .unwrap_or_default())
    }

    async fn trigger_run(
        &self,
        task: &TaskTypeId,
        key: &str,
        run: i64,
        ttl: Duration,
    ) -> Result<Option<i64>, StoreError> {
        let mut state = self.lock();
        let now = Instant::now();
        let entry = (task.clone(), key.to_owned());
        if let Some((earlier, expiry)) = state.triggers.get(&entry)
            && *expiry > now
        {
            return Ok(Some(*earlier));
        }
        state.triggers.insert(entry, (run, now + ttl));
        Ok(None)
    }

    async fn custom_users_page(
        &self,
        task: &TaskTypeId,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<UserId>, StoreError> {
        let state = self.lock();
        let Some(index) = state.custom_index.get(task) else {
            return Ok(Vec::new());
        };
        // Rank order of the Redis ZSET: by score, then by id.
        let mut users: Vec<(i64, &UserId)> = index.iter().map(|(u, at)| (*at, u)).collect();
        users.sort();
        Ok(users
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(limit)
            .map(|(_, user)| user.clone())
            .collect())
    }

    async fn set_task_paused(
        &self,
        task: &TaskTypeId,
        since: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock();
        Ok(match since {
            Some(at) => {
                if state.held.contains_key(task) {
                    false
                } else {
                    state.held.insert(task.clone(), at);
                    true
                }
            }
            None => state.held.remove(task).is_some(),
        })
    }

    async fn paused_tasks(&self) -> Result<BTreeMap<TaskTypeId, DateTime<Utc>>, StoreError> {
        Ok(self.lock().held.clone())
    }
}

#[async_trait]
impl ClaimStore for MemoryStore {
    async fn succeeded(&self, jobs: &[Uuid]) -> Result<Vec<bool>, StoreError> {
        let state = self.lock();
        let now = Instant::now();
        Ok(jobs
            .iter()
            .map(|job| state.done_jobs.get(job).is_some_and(|expiry| *expiry > now))
            .collect())
    }

    async fn claim_execution(&self, claim: &ExecutionClaim) -> Result<ClaimOutcome, StoreError> {
        let mut state = self.lock();
        let now = Instant::now();
        if state
            .done_jobs
            .get(&claim.job_id)
            .is_some_and(|expiry| *expiry > now)
        {
            return Ok(ClaimOutcome::AlreadySucceeded);
        }
        let enabled = state
            .user_tasks
            .get(&claim.user_id)
            .and_then(|tasks| tasks.get(&claim.task_type_id))
            .copied();
        if enabled == Some(false) || (claim.require_enabled && enabled != Some(true)) {
            return Ok(ClaimOutcome::Disabled);
        }
        if let Some((attempt, eligible, expiry)) = state.next_tries.get(&claim.job_id)
            && *expiry > now
            && (claim.attempt < *attempt
                || (claim.attempt == *attempt && claim.execute_after_ms < *eligible))
        {
            return Ok(ClaimOutcome::Stale);
        }
        let task = &claim.task_type_id;
        if let Some(until) = state.pauses.get(task)
            && *until > now
        {
            return Ok(ClaimOutcome::Paused(*until - now));
        }
        let job_key = (task.clone(), Keys::job_claimant(claim.job_id));
        if !state.claim(job_key.clone(), claim.execution, claim.job_ttl, now) {
            return Ok(ClaimOutcome::JobBusy);
        }
        if let Some(run_ttl) = claim.run_ttl {
            let run_key = (task.clone(), claim.user_id.as_str().to_owned());
            if !state.claim(run_key, claim.job_id, run_ttl, now) {
                state.running.remove(&job_key);
                return Ok(ClaimOutcome::UserBusy);
            }
        }
        if let Some(write) = &claim.result {
            state.record_running(claim, write, now);
        }
        let parameters = state
            .settings
            .get(&(claim.user_id.clone(), task.clone()))
            .map(|(settings, _)| settings.parameters.clone())
            .unwrap_or_default();
        Ok(ClaimOutcome::Claimed { parameters })
    }

    async fn finish_execution(&self, finish: &ExecutionFinish) -> Result<(), StoreError> {
        let mut state = self.lock();
        let task = &finish.task_type_id;
        if let Some(ttl) = finish.success_ttl {
            state.done_jobs.insert(finish.job_id, Instant::now() + ttl);
        }
        if let Some(next) = finish.next {
            state.next_tries.insert(
                finish.job_id,
                (next.attempt, next.eligible_ms, Instant::now() + next.ttl),
            );
        }
        if let Some(write) = &finish.result {
            state.record_finished(finish, write, Instant::now());
        }
        state.release(
            &(task.clone(), Keys::job_claimant(finish.job_id)),
            finish.execution,
        );
        if finish.run_claimed {
            state.release(
                &(task.clone(), finish.user_id.as_str().to_owned()),
                finish.job_id,
            );
        }
        Ok(())
    }

    async fn record_throttle(&self, throttle: &Throttle) -> Result<u32, StoreError> {
        let mut state = self.lock();
        let now = Instant::now();
        let entry = state
            .throttles
            .entry(throttle.job_id)
            .or_insert((0, now + throttle.count_ttl));
        if entry.1 <= now {
            entry.0 = 0;
        }
        entry.0 += 1;
        entry.1 = now + throttle.count_ttl;
        let count = entry.0;
        if !throttle.pause.is_zero() {
            let until = now + throttle.pause;
            let pause = state
                .pauses
                .entry(throttle.task_type_id.clone())
                .or_insert(until);
            *pause = (*pause).max(until);
        }
        Ok(count)
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    async fn take_tokens(
        &self,
        bucket: &Bucket,
        requested: u32,
        now: f64,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let key = bucket_key(&bucket.name);
        let instant = Instant::now();
        let stored = state
            .buckets
            .get(&key)
            .filter(|(_, _, expiry)| *expiry > instant)
            .map(|(tokens, last, _)| (*tokens, *last));
        match take_from_bucket(
            stored,
            bucket.max_tokens,
            bucket.refill_rate,
            f64::from(requested),
            now,
        ) {
            Some((tokens, last)) => {
                state
                    .buckets
                    .insert(key, (tokens, last, instant + BUCKET_TTL));
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

#[async_trait]
impl MetricsStore for MemoryStore {
    async fn record_metrics(&self, batch: &MetricsBatch) -> Result<(), StoreError> {
        let mut state = self.lock();
        for (date, task, count) in &batch.executions {
            *state.executions.entry((*date, task.clone())).or_insert(0) += count;
        }
        for (date, task, count) in &batch.failures {
            *state.failures.entry((*date, task.clone())).or_insert(0) += count;
        }
        let mut newest = BTreeMap::<TaskTypeId, i64>::new();
        for sample in &batch.durations {
            let ms = sample.completed_at.timestamp_millis();
            state
                .durations
                .entry(sample.task_type_id.clone())
                .or_default()
                .insert((ms, format!("{}:{}", sample.job_id, sample.duration_ms)));
            let entry = newest.entry(sample.task_type_id.clone()).or_insert(ms);
            *entry = (*entry).max(ms);
        }
        for (task, newest_ms) in newest {
            state.trim_durations(
                &task,
                newest_ms,
                self.metrics_retention,
                self.metrics_max_samples,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(stored: Option<(f64, f64)>, requested: f64, now: f64, expected: Option<(f64, f64)>) {
        assert_eq!(
            take_from_bucket(stored, 10.0, 2.0, requested, now),
            expected,
            "stored {stored:?}, requested {requested}, now {now}"
        );
    }

    #[test]
    fn token_bucket_arithmetic() {
        // A fresh bucket is full.
        check(None, 1.0, 100.0, Some((9.0, 100.0)));
        check(None, 10.0, 100.0, Some((0.0, 100.0)));
        check(None, 11.0, 100.0, None);
        // Refill at 2 per second, capped at the capacity.
        check(Some((0.0, 100.0)), 4.0, 102.0, Some((0.0, 102.0)));
        check(Some((0.0, 100.0)), 5.0, 102.0, None);
        check(Some((5.0, 100.0)), 10.0, 200.0, Some((0.0, 200.0)));
        // A clock behind adds nothing, drains nothing, moves nothing back.
        check(Some((5.0, 100.0)), 1.0, 90.0, Some((4.0, 100.0)));
        check(Some((0.5, 100.0)), 1.0, 90.0, None);
    }

    #[actix_rt::test]
    async fn preference_round_trip() {
        let store = MemoryStore::new();
        let user = UserId::parse("u1").unwrap();
        let task = TaskTypeId::parse("t1").unwrap();
        let at: DateTime<Utc> = "2024-01-15T10:00:00Z".parse().unwrap();
        assert_eq!(store.preferences(&user).await.unwrap(), None);
        store
            .write_preferences(&[PreferenceWrite {
                user_id: user.clone(),
                task_type_id: task.clone(),
                enabled: true,
                settings: None,
                custom_next_fire: None,
                modified_at: at,
            }])
            .await
            .unwrap();
        let prefs = store.preferences(&user).await.unwrap().unwrap();
        assert_eq!(prefs.enabled_tasks.get(&task), Some(&true));
        assert_eq!(prefs.last_modified, at);
        assert_eq!(store.enabled_user_count(&task).await.unwrap(), 1);
        assert!(store.delete_preference(&user, &task).await.unwrap());
        assert!(!store.delete_preference(&user, &task).await.unwrap());
        assert_eq!(store.preferences(&user).await.unwrap(), None);
        assert_eq!(store.enabled_user_count(&task).await.unwrap(), 0);
    }

    #[actix_rt::test]
    async fn lock_fences_increase_and_stale_fences_lose() {
        let store = MemoryStore::new();
        let task = TaskTypeId::parse("t1").unwrap();
        let lock = LockName::Schedule(task.clone());
        let ttl = Duration::from_secs(10);
        let first = store.acquire_lock(&lock, ttl).await.unwrap().unwrap();
        assert_eq!(store.acquire_lock(&lock, ttl).await.unwrap(), None);
        assert!(store.release_lock(&lock, &first).await.unwrap());
        assert!(!store.renew_lock(&lock, &first, ttl).await.unwrap());
        let second = store.acquire_lock(&lock, ttl).await.unwrap().unwrap();
        assert!(second.fence > first.fence);
        let at: DateTime<Utc> = "2024-01-15T10:00:00Z".parse().unwrap();
        assert!(store.record_fire(&task, at, &second).await.unwrap());
        assert!(!store.record_fire(&task, at, &first).await.unwrap());
    }
}
