//! RateLimiterActor: one per token bucket (the global one and one per task
//! type with a limit). It mirrors its Redis bucket with a local `governor`
//! limiter of the same shape, so most refusals cost no round trip, and
//! leases tokens from Redis (`take_tokens`) in small batches, so most
//! grants cost none either.
//!
//! **Invariant:** only this actor runs the token-bucket script. Leased
//! tokens are used within [`LEASE_TTL`] or forgotten, so a replica never
//! sits on capacity the others could use for longer than that. A refusal
//! answers with how long to wait; waiting never uses up an attempt.

use std::{
    num::NonZeroU32,
    sync::Arc,
    time::{Duration, Instant},
};

use actix::prelude::*;
use governor::{
    DefaultDirectRateLimiter, Quota, RateLimiter,
    clock::{Clock as _, DefaultClock},
};

use crate::store::{Bucket, StateStore};

/// How long leased tokens stay usable.
pub const LEASE_TTL: Duration = Duration::from_secs(1);

/// Shortest wait suggested after a refusal.
const MIN_WAIT: Duration = Duration::from_millis(5);

/// Asks for one token. Answers at once (one Redis round trip at most).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Grant")]
pub struct AcquireToken;

/// Refuses every token for `pause` (the endpoint answered 429 or 503
/// with `Retry-After`).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct SlowDown {
    /// How long to refuse.
    pub pause: Duration,
}

/// The answer to [`AcquireToken`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Go ahead.
    Granted,
    /// Ask again after this long.
    Wait(Duration),
}

/// One token bucket, local mirror and Redis lease.
pub struct RateLimiterActor {
    bucket: Bucket,
    store: Arc<dyn StateStore>,
    local: DefaultDirectRateLimiter,
    /// Tokens taken from Redis and not used yet.
    leased: u32,
    /// When `leased` was taken.
    leased_at: Instant,
    /// Tokens asked of Redis per round trip.
    lease_batch: u32,
    /// No tokens before this instant.
    paused_until: Option<Instant>,
}

impl RateLimiterActor {
    /// A limiter of `rate` tokens per second with a burst of `rate`, in
    /// Redis as `bucket`.
    pub fn new(bucket: Bucket, store: Arc<dyn StateStore>) -> Self {
        let rate =
            NonZeroU32::new(bucket.refill_rate.round().max(1.0) as u32).unwrap_or(NonZeroU32::MIN);
        let burst =
            NonZeroU32::new(bucket.max_tokens.round().max(1.0) as u32).unwrap_or(NonZeroU32::MIN);
        let local = RateLimiter::direct(Quota::per_second(rate).allow_burst(burst));
        RateLimiterActor {
            lease_batch: lease_batch(rate.get()),
            bucket,
            store,
            local,
            leased: 0,
            leased_at: Instant::now(),
            paused_until: None,
        }
    }

    fn refill_wait(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.bucket.refill_rate.max(0.001)).max(MIN_WAIT)
    }
}

/// Tokens leased per Redis round trip: about 100 ms worth, 1 to 10.
pub fn lease_batch(rate_per_second: u32) -> u32 {
    (rate_per_second / 10).clamp(1, 10)
}

impl Actor for RateLimiterActor {
    type Context = Context<Self>;
}

impl Handler<AcquireToken> for RateLimiterActor {
    type Result = AtomicResponse<Self, Grant>;

    fn handle(&mut self, _: AcquireToken, _: &mut Self::Context) -> Self::Result {
        let now = Instant::now();
        if let Some(until) = self.paused_until {
            if until > now {
                return AtomicResponse::new(Box::pin(fut::ready(Grant::Wait(until - now))));
            }
            self.paused_until = None;
        }
        if let Err(not_until) = self.local.check() {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return AtomicResponse::new(Box::pin(fut::ready(Grant::Wait(wait.max(MIN_WAIT)))));
        }
        if self.leased > 0 && self.leased_at.elapsed() < LEASE_TTL {
            self.leased -= 1;
            return AtomicResponse::new(Box::pin(fut::ready(Grant::Granted)));
        }
        self.leased = 0;
        let store = self.store.clone();
        let bucket = self.bucket.clone();
        let batch = self.lease_batch;
        let wait = self.refill_wait();
        AtomicResponse::new(Box::pin(
            async move {
                let now = epoch_seconds();
                let mut taken = 0;
                for requested in [batch, 1] {
                    match store.take_tokens(&bucket, requested, now).await {
                        Ok(true) => {
                            taken = requested;
                            break;
                        }
                        Ok(false) if requested > 1 => continue,
                        Ok(false) => break,
                        Err(err) => {
                            tracing::warn!(error = %err, "token bucket unreachable; waiting");
                            break;
                        }
                    }
                }
                taken
            }
            .into_actor(self)
            .map(move |taken, act, _| {
                if taken == 0 {
                    return Grant::Wait(wait);
                }
                act.leased = taken - 1;
                act.leased_at = Instant::now();
                Grant::Granted
            }),
        ))
    }
}

impl Handler<SlowDown> for RateLimiterActor {
    type Result = ();

    fn handle(&mut self, msg: SlowDown, _: &mut Self::Context) {
        let until = Instant::now() + msg.pause;
        self.paused_until = Some(self.paused_until.map_or(until, |u| u.max(until)));
        self.leased = 0;
    }
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
        check(10_000, 10);
    }
}
