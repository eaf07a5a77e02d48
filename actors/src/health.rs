//! What `/health` reports of the process: its dependencies, its actors and
//! the records it set aside.
//!
//! - [`Dependency`]: a backend the process cannot work without (Redis,
//!   RabbitMQ), probed on every health request.
//! - [`HealthBoard`]: one entry per long-lived actor, with its last
//!   heartbeat and how often it was restarted after a panic. An actor whose
//!   heartbeat is older than its `stale_after` shows as `stuck`.
//! - [`Quarantine`]: stored records the scheduler could not read (a bad
//!   index member, custom interval or progress field), skipped so that the
//!   rest of the task keeps running; each is logged once.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use serde::Serialize;

/// A backend the process needs.
#[async_trait]
pub trait Dependency: Send + Sync {
    /// Its name in `/health` (`redis`, `rabbitmq`).
    fn name(&self) -> &'static str;
    /// One round trip to it: `Err` with the reason when it is unusable.
    async fn check(&self) -> Result<(), String>;
}

#[async_trait]
impl Dependency for crate::store::redis::RedisStore {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn check(&self) -> Result<(), String> {
        self.ping().await.map_err(|err| err.to_string())
    }
}

#[async_trait]
impl Dependency for crate::broker::amqp::AmqpBroker {
    fn name(&self) -> &'static str {
        "rabbitmq"
    }

    async fn check(&self) -> Result<(), String> {
        self.check_connection().await.map_err(|err| err.to_string())
    }
}

/// One actor's entry on the board.
#[derive(Debug, Clone)]
struct ActorEntry {
    last_beat: Instant,
    stale_after: Duration,
    restarts: u64,
}

/// What `/health` shows of one actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActorReport {
    /// `running`, or `stuck` when its heartbeat is late.
    pub status: &'static str,
    /// Restarts after a panic since the process started.
    pub restarts: u64,
    /// Milliseconds since its last heartbeat.
    pub last_heartbeat_ms: u64,
}

/// The heartbeats and restart counts of the long-lived actors. Cheap to
/// clone: clones share the board.
#[derive(Debug, Clone, Default)]
pub struct HealthBoard(Arc<Mutex<BTreeMap<String, ActorEntry>>>);

impl HealthBoard {
    fn entries(&self) -> MutexGuard<'_, BTreeMap<String, ActorEntry>> {
        match self.0.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Puts `actor` on the board; it is stuck when it has not beaten for
    /// `stale_after`.
    pub fn register(&self, actor: impl Into<String>, stale_after: Duration) {
        self.entries()
            .entry(actor.into())
            .or_insert(ActorEntry {
                last_beat: Instant::now(),
                stale_after,
                restarts: 0,
            })
            .stale_after = stale_after;
    }

    /// `actor` is alive now.
    pub fn beat(&self, actor: &str) {
        if let Some(entry) = self.entries().get_mut(actor) {
            entry.last_beat = Instant::now();
        }
    }

    /// `actor` panicked and was restarted.
    pub fn restarted(&self, actor: &str) {
        if let Some(entry) = self.entries().get_mut(actor) {
            entry.restarts += 1;
            entry.last_beat = Instant::now();
        }
    }

    /// Every actor's state now.
    pub fn report(&self) -> BTreeMap<String, ActorReport> {
        self.entries()
            .iter()
            .map(|(name, entry)| {
                let age = entry.last_beat.elapsed();
                let report = ActorReport {
                    status: if age > entry.stale_after {
                        "stuck"
                    } else {
                        "running"
                    },
                    restarts: entry.restarts,
                    last_heartbeat_ms: u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
                };
                (name.clone(), report)
            })
            .collect()
    }
}

/// Most quarantined records kept for `/health` (the count goes on).
const QUARANTINE_SHOWN: usize = 100;

/// One record set aside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuarantinedRecord {
    /// Where it is stored (a Redis key, with the member or field).
    pub location: String,
    /// Why it could not be used.
    pub reason: String,
}

#[derive(Debug, Default)]
struct QuarantineInner {
    count: u64,
    records: BTreeMap<String, String>,
}

/// Records skipped because they could not be read. Cheap to clone: clones
/// share the register.
#[derive(Debug, Clone, Default)]
pub struct Quarantine(Arc<Mutex<QuarantineInner>>);

impl Quarantine {
    fn inner(&self) -> MutexGuard<'_, QuarantineInner> {
        match self.0.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Sets the record at `location` aside; logs it the first time only.
    pub fn add(&self, location: &str, reason: &str) {
        let mut inner = self.inner();
        if inner.records.contains_key(location) {
            return;
        }
        inner.count += 1;
        tracing::error!(%location, %reason, "unreadable record skipped and quarantined");
        if inner.records.len() < QUARANTINE_SHOWN {
            inner.records.insert(location.to_owned(), reason.to_owned());
        }
    }

    /// Distinct records set aside since start.
    pub fn count(&self) -> u64 {
        self.inner().count
    }

    /// The records set aside (the first [`QUARANTINE_SHOWN`]).
    pub fn records(&self) -> Vec<QuarantinedRecord> {
        self.inner()
            .records
            .iter()
            .map(|(location, reason)| QuarantinedRecord {
                location: location.clone(),
                reason: reason.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_heartbeat_is_stuck_and_restarts_count() {
        let board = HealthBoard::default();
        board.register("scheduler", Duration::ZERO);
        board.register("distributor", Duration::from_secs(3600));
        board.restarted("distributor");
        std::thread::sleep(Duration::from_millis(2));
        let report = board.report();
        assert_eq!(report["scheduler"].status, "stuck");
        assert_eq!(report["distributor"].status, "running");
        assert_eq!(report["distributor"].restarts, 1);
    }

    #[test]
    fn a_record_is_quarantined_once() {
        let quarantine = Quarantine::default();
        quarantine.add("k:a", "bad");
        quarantine.add("k:a", "bad");
        quarantine.add("k:b", "worse");
        assert_eq!(quarantine.count(), 2);
        assert_eq!(quarantine.records().len(), 2);
    }
}
