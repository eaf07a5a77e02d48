//! Rate limiting: the local side of each Redis token bucket, and the
//! RateLimiterActor that refills it.
//!
//! Each bucket (the global one, and one per task type with a limit) has a
//! [`BucketLease`], shared by every executor: a local `governor` limiter
//! of the bucket's shape (so most refusals cost no round trip), the tokens
//! leased from Redis and not used yet, and a pause. A job's
//! [`RateLimit`] names the buckets it must pass (its task's, then the
//! global one) and the actor that refills them. An executor spends leased
//! tokens itself, without a message; only when a lease runs dry does it
//! ask the actor, which takes a batch from each dry bucket in one round
//! trip (the per-task limiter consults the global budget itself) and
//! grants from it. So a job makes one limiter hop at most, and most make
//! none.
//!
//! **Invariant:** only RateLimiterActor runs the token-bucket script, so
//! every token spent anywhere in the cluster was taken from the Redis
//! bucket, and the limits hold across replicas. Leased tokens are used
//! within [`LEASE_TTL`] or forgotten, so a replica never sits on capacity
//! the others could use for longer than that. A refusal answers with how
//! long to wait; waiting never uses up an attempt.
//!
//! A `Retry-After` pauses the task that got it, not a bucket: the pause is
//! kept in the store for every replica, and [`TaskPauses`] is each
//! replica's copy of it.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use actix::prelude::*;
use governor::{
    DefaultDirectRateLimiter, Quota, RateLimiter,
    clock::{Clock as _, DefaultClock},
};

use crate::{
    domain::TaskTypeId,
    error::PipelineError,
    store::{Bucket, TokenStore},
};

/// How long leased tokens stay usable.
pub const LEASE_TTL: Duration = Duration::from_secs(1);

/// Shortest wait suggested after a refusal.
const MIN_WAIT: Duration = Duration::from_millis(5);

/// Refills the dry leases of the actor's buckets and grants one token of
/// each. Sent by an executor whose local mirrors allowed the call but
/// whose leases ran dry; answers after one Redis round trip at most.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Grant")]
pub struct RefillLease;

/// The answer to [`RefillLease`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Go ahead.
    Granted,
    /// Ask again after this long.
    Wait(Duration),
}

/// The local side of one Redis token bucket, shared by the executors
/// (which spend its leased tokens) and the actors that refill it.
pub struct BucketLease {
    bucket: Bucket,
    /// Mirror of the bucket's shape: refuses what Redis would refuse,
    /// without asking it.
    local: DefaultDirectRateLimiter,
    /// Tokens asked of Redis per round trip.
    lease_batch: u32,
    state: Mutex<LeaseState>,
}

#[derive(Debug)]
struct LeaseState {
    /// Tokens taken from Redis and not used yet.
    leased: u32,
    /// When `leased` was taken; past [`LEASE_TTL`] the tokens are gone.
    leased_at: Instant,
    /// No tokens before this instant.
    paused_until: Option<Instant>,
}

impl LeaseState {
    fn usable(&self, now: Instant) -> bool {
        self.leased > 0 && now.duration_since(self.leased_at) < LEASE_TTL
    }
}

impl BucketLease {
    /// The lease of `bucket` (`refill_rate` tokens per second, a burst of
    /// `max_tokens`), with nothing leased yet.
    pub fn new(bucket: Bucket) -> Arc<BucketLease> {
        let rate =
            NonZeroU32::new(bucket.refill_rate.round().max(1.0) as u32).unwrap_or(NonZeroU32::MIN);
        let burst =
            NonZeroU32::new(bucket.max_tokens.round().max(1.0) as u32).unwrap_or(NonZeroU32::MIN);
        Arc::new(BucketLease {
            local: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
            lease_batch: lease_batch(rate.get()),
            bucket,
            state: Mutex::new(LeaseState {
                leased: 0,
                leased_at: Instant::now(),
                paused_until: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, LeaseState> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// How long the bucket is still paused, if it is.
    fn paused(&self, now: Instant) -> Option<Duration> {
        let mut state = self.lock();
        match state.paused_until {
            Some(until) if until > now => Some(until - now),
            Some(_) => {
                state.paused_until = None;
                None
            }
            None => None,
        }
    }

    /// Refuses every token for `pause` and forgets the lease.
    pub fn pause(&self, pause: Duration) {
        let until = Instant::now() + pause;
        let mut state = self.lock();
        state.paused_until = Some(state.paused_until.map_or(until, |u| u.max(until)));
        state.leased = 0;
    }

    /// Adds `taken` tokens just leased from Redis.
    fn add_lease(&self, taken: u32, now: Instant) {
        let mut state = self.lock();
        if state.usable(now) {
            // The older tokens keep their deadline; the new ones share it.
            state.leased += taken;
        } else {
            state.leased = taken;
            state.leased_at = now;
        }
    }

    fn refill_wait(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.bucket.refill_rate.max(0.001)).max(MIN_WAIT)
    }
}

/// Tokens leased per Redis round trip: about 100 ms worth, 1 to 100.
pub fn lease_batch(rate_per_second: u32) -> u32 {
    (rate_per_second / 10).clamp(1, 100)
}

/// What a local attempt came to.
enum Attempt {
    Granted,
    Wait(Duration),
    /// The mirrors allow it, a lease is dry: ask the actor.
    Refill,
}

/// The buckets a job of one task must pass (its task's, if the task has a
/// limit, then the global one, if any) and the actor that refills them.
#[derive(Clone)]
pub struct RateLimit {
    /// The task's bucket.
    task: Option<Arc<BucketLease>>,
    /// The global bucket.
    global: Option<Arc<BucketLease>>,
    refill: Addr<RateLimiterActor>,
}

impl RateLimit {
    /// Starts the actor refilling `task` and `global` (on the current
    /// arbiter) and returns the limit over both.
    pub fn start(
        task: Option<Arc<BucketLease>>,
        global: Option<Arc<BucketLease>>,
        store: Arc<dyn TokenStore>,
    ) -> RateLimit {
        let refill = RateLimiterActor {
            task: task.clone(),
            global: global.clone(),
            store,
        }
        .start();
        RateLimit {
            task,
            global,
            refill,
        }
    }

    /// Waits until one token of each bucket is spent for this job.
    pub async fn acquire(&self) -> Result<(), PipelineError> {
        self.acquire_within(Duration::MAX).await.map(|_| ())
    }

    /// Waits at most `max_wait` for one token of each bucket: `None` when
    /// they are spent for this job, else `Some(wait)`, how much longer
    /// the limiter asked to wait when the next sleep would pass
    /// `max_wait` (nothing is spent then). A caller holding a delivery
    /// defers the job by about `wait` instead of holding it.
    pub async fn acquire_within(
        &self,
        max_wait: Duration,
    ) -> Result<Option<Duration>, PipelineError> {
        let started = Instant::now();
        loop {
            let wait = match self.attempt() {
                Attempt::Granted => return Ok(None),
                Attempt::Wait(wait) => wait,
                Attempt::Refill => match self.refill.send(RefillLease).await? {
                    Grant::Granted => return Ok(None),
                    Grant::Wait(wait) => wait,
                },
            };
            if started.elapsed().saturating_add(wait) > max_wait {
                return Ok(Some(wait));
            }
            tokio::time::sleep(wait).await;
        }
    }

    fn buckets(&self) -> impl Iterator<Item = &Arc<BucketLease>> {
        self.task.iter().chain(self.global.iter())
    }

    /// Pauses, then mirrors, then leases, without a message.
    fn attempt(&self) -> Attempt {
        let now = Instant::now();
        for bucket in self.buckets() {
            if let Some(wait) = bucket.paused(now) {
                return Attempt::Wait(wait);
            }
        }
        for bucket in self.buckets() {
            if let Err(not_until) = bucket.local.check() {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                return Attempt::Wait(wait.max(MIN_WAIT));
            }
        }
        if spend_leased(self.task.as_deref(), self.global.as_deref(), now) {
            Attempt::Granted
        } else {
            Attempt::Refill
        }
    }
}

/// This replica's copy of the tasks' `Retry-After` pauses. The pause
/// itself lives in the store (`{prefix}:pause:{task}`, set by
/// [`ClaimStore::record_throttle`], answered by every claim of the task's
/// jobs), so every replica obeys it; the copy lets a replica defer the
/// task's next jobs without spending a token or a round trip on them.
/// A pause is the task's alone: no other task waits for it.
#[derive(Debug, Default)]
pub struct TaskPauses {
    until: Mutex<HashMap<TaskTypeId, Instant>>,
}

impl TaskPauses {
    fn lock(&self) -> MutexGuard<'_, HashMap<TaskTypeId, Instant>> {
        match self.until.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Notes that `task` is paused for `pause` from now (a longer pause
    /// already noted is kept).
    pub fn pause(&self, task: &TaskTypeId, pause: Duration) {
        let until = Instant::now() + pause;
        let mut pauses = self.lock();
        let entry = pauses.entry(task.clone()).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// How long `task` is still paused, as far as this replica knows.
    pub fn remaining(&self, task: &TaskTypeId) -> Option<Duration> {
        let mut pauses = self.lock();
        let until = *pauses.get(task)?;
        let now = Instant::now();
        if until > now {
            Some(until - now)
        } else {
            pauses.remove(task);
            None
        }
    }
}

/// Spends one leased token of each bucket if every one has one (else
/// spends none). Locks the task's bucket before the global one.
fn spend_leased(task: Option<&BucketLease>, global: Option<&BucketLease>, now: Instant) -> bool {
    let mut task = task.map(BucketLease::lock);
    let mut global = global.map(BucketLease::lock);
    let usable = |state: &Option<MutexGuard<'_, LeaseState>>| {
        state.as_ref().is_none_or(|state| state.usable(now))
    };
    if !(usable(&task) && usable(&global)) {
        return false;
    }
    for state in task.iter_mut().chain(global.iter_mut()) {
        state.leased -= 1;
    }
    true
}

/// Refills the leases of one task's buckets (or of the global bucket
/// alone, for tasks without a limit of their own).
pub struct RateLimiterActor {
    task: Option<Arc<BucketLease>>,
    global: Option<Arc<BucketLease>>,
    store: Arc<dyn TokenStore>,
}

impl Actor for RateLimiterActor {
    type Context = Context<Self>;
}

impl Handler<RefillLease> for RateLimiterActor {
    type Result = AtomicResponse<Self, Grant>;

    fn handle(&mut self, _: RefillLease, _: &mut Self::Context) -> Self::Result {
        let now = Instant::now();
        // An earlier refill may have served this request already.
        if spend_leased(self.task.as_deref(), self.global.as_deref(), now) {
            return AtomicResponse::new(Box::pin(fut::ready(Grant::Granted)));
        }
        let dry: Vec<Arc<BucketLease>> = self
            .task
            .iter()
            .chain(self.global.iter())
            .filter(|bucket| !bucket.lock().usable(now))
            .cloned()
            .collect();
        let store = self.store.clone();
        AtomicResponse::new(Box::pin(
            async move {
                let epoch = epoch_seconds();
                // One round trip for every dry bucket (the calls share the
                // store's multiplexed connection).
                let taken = futures::future::join_all(
                    dry.iter()
                        .map(|bucket| lease_tokens(store.as_ref(), bucket, epoch)),
                )
                .await;
                let now = Instant::now();
                let mut wait = None;
                for (bucket, taken) in dry.iter().zip(taken) {
                    if taken > 0 {
                        bucket.add_lease(taken, now);
                    } else {
                        let refill = bucket.refill_wait();
                        wait = Some(wait.map_or(refill, |w: Duration| w.max(refill)));
                    }
                }
                wait
            }
            .into_actor(self)
            .map(|wait, act, _| {
                if let Some(wait) = wait {
                    return Grant::Wait(wait);
                }
                if spend_leased(act.task.as_deref(), act.global.as_deref(), Instant::now()) {
                    Grant::Granted
                } else {
                    Grant::Wait(MIN_WAIT)
                }
            }),
        ))
    }
}

/// Takes a batch from `bucket`'s Redis bucket (falling back to one
/// token): the tokens taken, 0 when refused or unreachable.
async fn lease_tokens(store: &dyn TokenStore, bucket: &BucketLease, epoch: f64) -> u32 {
    for requested in [bucket.lease_batch, 1] {
        match store.take_tokens(&bucket.bucket, requested, epoch).await {
            Ok(true) => return requested,
            Ok(false) if requested > 1 => continue,
            Ok(false) => return 0,
            Err(err) => {
                tracing::warn!(error = %err, "token bucket unreachable; waiting");
                return 0;
            }
        }
    }
    0
}

/// Seconds since the epoch, as the token-bucket script wants them.
fn epoch_seconds() -> f64 {
    let now = chrono::Utc::now();
    now.timestamp() as f64 + f64::from(now.timestamp_subsec_micros()) / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rate: u32, expected: u32) {
        assert_eq!(lease_batch(rate), expected, "rate {rate}");
    }

    #[test]
    fn leases_are_about_a_tenth_of_a_second_of_tokens() {
        check(1, 1);
        check(5, 1);
        check(50, 5);
        check(100, 10);
        check(1_000, 100);
        check(1_000_000, 100);
    }
}
