//! In-process implementation of the job-broker port.
//!
//! [`MemoryBroker`] is the twin of [`super::amqp::AmqpBroker`] for the
//! embedded mode and for fast actor tests. It keeps the same contract:
//!
//! - three priority queues drained strictly high, then normal, then low;
//! - jobs whose `execute_after` lies in the future wait in a delay heap and
//!   become deliverable when due (tokio time, so `tokio::time::pause()`
//!   drives them deterministically);
//! - at most `prefetch` unsettled deliveries per stream (`0` = unlimited,
//!   as in AMQP);
//! - ack, requeue (to the front of its queue, marked redelivered) and
//!   dead-letter (kept for [`MemoryBroker::dead_letters`]);
//! - dropping a stream puts its unsettled deliveries back at the front of
//!   their queues, marked redelivered; settling one of them afterwards
//!   fails with [`BrokerError::Closed`].
//!
//! Nothing survives the process: this broker gives no durability.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    BrokerError, DeadLetter, Delivery, DeliveryHandle, JobBroker, JobStream, QUEUE_DELAYED,
    QUEUE_FAILED, QUEUE_HIGH, QUEUE_LOW, QUEUE_NORMAL,
};
use crate::domain::{DeadLetterReason, ENVELOPE_VERSION, JobEnvelope, Priority};

/// The in-process broker. Cloning gives another handle to the same queues.
#[derive(Clone, Default)]
pub struct MemoryBroker {
    shared: Arc<Shared>,
}

/// One dead-lettered message, as kept by [`MemoryBroker`].
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLettered {
    /// The message, unchanged.
    pub envelope: JobEnvelope,
    /// Why it was dead-lettered.
    pub letter: DeadLetter,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Woken on every change a waiting stream may care about: a publish,
    /// a settle, a requeue, a close.
    changed: Notify,
}

#[derive(Default)]
struct State {
    /// Ready messages by priority, index `Priority as usize`.
    ready: [VecDeque<Queued>; 3],
    /// Delayed messages, earliest due first; the sequence number keeps
    /// publish order among equal due instants.
    delayed: BinaryHeap<Reverse<(Instant, u64, DelayedJob)>>,
    /// Unsettled deliveries per open stream, by delivery tag.
    streams: HashMap<u64, BTreeMap<u64, Queued>>,
    dead: Vec<DeadLettered>,
    next_seq: u64,
    closed: bool,
}

struct Queued {
    envelope: JobEnvelope,
    redelivered: bool,
}

/// Wrapper ordering delayed jobs by nothing (the heap orders by due
/// instant and sequence number, which are unique together).
struct DelayedJob(JobEnvelope);

impl PartialEq for DelayedJob {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for DelayedJob {}
impl PartialOrd for DelayedJob {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for DelayedJob {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl State {
    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Moves every due delayed job to its priority queue.
    fn promote_due(&mut self, now: Instant) {
        while let Some(Reverse((due, _, _))) = self.delayed.peek() {
            if *due > now {
                break;
            }
            if let Some(Reverse((_, _, DelayedJob(envelope)))) = self.delayed.pop() {
                let queue = envelope.job.priority as usize;
                self.ready[queue].push_back(Queued {
                    envelope,
                    redelivered: false,
                });
            }
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.delayed.peek().map(|Reverse((due, _, _))| *due)
    }

    fn pop_ready(&mut self) -> Option<Queued> {
        Priority::HIGHEST_FIRST
            .iter()
            .find_map(|priority| self.ready[*priority as usize].pop_front())
    }
}

impl MemoryBroker {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every message dead-lettered so far, oldest first.
    pub fn dead_letters(&self) -> Vec<DeadLettered> {
        self.shared.lock().dead.clone()
    }

    /// How many messages wait in the priority queues (ready) and in the
    /// delay stage, not counting deliveries in hand.
    pub fn pending(&self) -> usize {
        let state = self.shared.lock();
        state.ready.iter().map(VecDeque::len).sum::<usize>() + state.delayed.len()
    }

    /// How many deliveries the open streams hold unsettled (neither acked,
    /// requeued nor dead-lettered yet).
    pub fn unsettled(&self) -> usize {
        self.shared.lock().streams.values().map(BTreeMap::len).sum()
    }

    /// Shuts the broker down: publishes fail with [`BrokerError::Closed`],
    /// streams end.
    pub fn shutdown(&self) {
        self.shared.lock().closed = true;
        self.shared.changed.notify_waiters();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl JobBroker for MemoryBroker {
    async fn declare(&self) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn queue_depths(&self) -> Result<Vec<(&'static str, u64)>, BrokerError> {
        let state = self.shared.lock();
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        Ok(vec![
            (
                QUEUE_HIGH,
                count(state.ready[Priority::High as usize].len()),
            ),
            (
                QUEUE_NORMAL,
                count(state.ready[Priority::Normal as usize].len()),
            ),
            (QUEUE_LOW, count(state.ready[Priority::Low as usize].len())),
            (QUEUE_DELAYED, count(state.delayed.len())),
            (QUEUE_FAILED, count(state.dead.len())),
        ])
    }

    async fn publish(&self, jobs: &[JobEnvelope]) -> Result<(), BrokerError> {
        let now_wall = Utc::now();
        let now = Instant::now();
        {
            let mut state = self.shared.lock();
            if state.closed {
                return Err(BrokerError::Closed);
            }
            for envelope in jobs {
                let wait = (envelope.job.execute_after - now_wall)
                    .to_std()
                    .unwrap_or_default();
                if wait.is_zero() {
                    let queue = envelope.job.priority as usize;
                    state.ready[queue].push_back(Queued {
                        envelope: envelope.clone(),
                        redelivered: false,
                    });
                } else {
                    let seq = state.seq();
                    state
                        .delayed
                        .push(Reverse((now + wait, seq, DelayedJob(envelope.clone()))));
                }
            }
        }
        self.shared.changed.notify_waiters();
        Ok(())
    }

    async fn consume(&self, prefetch: u16) -> Result<Box<dyn JobStream>, BrokerError> {
        let mut state = self.shared.lock();
        if state.closed {
            return Err(BrokerError::Closed);
        }
        let id = state.seq();
        state.streams.insert(id, BTreeMap::new());
        Ok(Box::new(MemoryStream {
            shared: Arc::clone(&self.shared),
            id,
            prefetch: usize::from(prefetch),
            closed: false,
        }))
    }
}

/// A consumer of a [`MemoryBroker`].
struct MemoryStream {
    shared: Arc<Shared>,
    id: u64,
    /// Most unsettled deliveries this stream hands out; 0 = unlimited.
    prefetch: usize,
    closed: bool,
}

enum Step {
    Deliver(Box<Delivery>),
    Wait(Option<Instant>),
    End,
}

impl MemoryStream {
    fn step(&self) -> Step {
        let mut state = self.shared.lock();
        if state.closed || self.closed {
            return Step::End;
        }
        state.promote_due(Instant::now());
        let next_due = state.next_due();
        let in_hand = state.streams.get(&self.id).map_or(0, BTreeMap::len);
        if self.prefetch != 0 && in_hand >= self.prefetch {
            return Step::Wait(None);
        }
        loop {
            let Some(queued) = state.pop_ready() else {
                return Step::Wait(next_due);
            };
            if queued.envelope.version != ENVELOPE_VERSION {
                state.dead.push(DeadLettered {
                    envelope: queued.envelope,
                    letter: DeadLetter {
                        reason: DeadLetterReason::UnsupportedVersion,
                        result: None,
                    },
                });
                continue;
            }
            let tag = state.seq();
            let delivery = Delivery {
                envelope: queued.envelope.clone(),
                redelivered: queued.redelivered,
                handle: Box::new(MemoryHandle {
                    shared: Arc::clone(&self.shared),
                    stream: self.id,
                    tag,
                }),
            };
            if let Some(unsettled) = state.streams.get_mut(&self.id) {
                unsettled.insert(tag, queued);
            }
            return Step::Deliver(Box::new(delivery));
        }
    }
}

#[async_trait]
impl JobStream for MemoryStream {
    async fn next(&mut self) -> Option<Delivery> {
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.step() {
                Step::Deliver(delivery) => return Some(*delivery),
                Step::End => return None,
                Step::Wait(None) => changed.await,
                Step::Wait(Some(due)) => {
                    tokio::select! {
                        () = changed => {}
                        () = tokio::time::sleep_until(due) => {}
                    }
                }
            }
        }
    }

    async fn close(&mut self) {
        self.closed = true;
    }
}

impl Drop for MemoryStream {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if let Some(unsettled) = state.streams.remove(&self.id) {
            // Newest first to the front, so the oldest ends up first.
            for (_, mut queued) in unsettled.into_iter().rev() {
                queued.redelivered = true;
                let queue = queued.envelope.job.priority as usize;
                state.ready[queue].push_front(queued);
            }
        }
        drop(state);
        self.shared.changed.notify_waiters();
    }
}

/// Settles one delivery of a [`MemoryStream`].
struct MemoryHandle {
    shared: Arc<Shared>,
    stream: u64,
    tag: u64,
}

impl MemoryHandle {
    /// Takes the delivery out of its stream's unsettled set and applies
    /// `then` to it; fails when the stream is gone or it was settled.
    fn settle(&self, then: impl FnOnce(&mut State, Queued)) -> Result<(), BrokerError> {
        let mut state = self.shared.lock();
        let queued = state
            .streams
            .get_mut(&self.stream)
            .and_then(|unsettled| unsettled.remove(&self.tag))
            .ok_or(BrokerError::Closed)?;
        then(&mut state, queued);
        drop(state);
        self.shared.changed.notify_waiters();
        Ok(())
    }
}

#[async_trait]
impl DeliveryHandle for MemoryHandle {
    async fn ack(&self) -> Result<(), BrokerError> {
        self.settle(|_, _| {})
    }

    async fn requeue(&self) -> Result<(), BrokerError> {
        self.settle(|state, mut queued| {
            queued.redelivered = true;
            let queue = queued.envelope.job.priority as usize;
            state.ready[queue].push_front(queued);
        })
    }

    async fn dead_letter(&self, letter: DeadLetter) -> Result<(), BrokerError> {
        self.settle(|state, queued| {
            state.dead.push(DeadLettered {
                envelope: queued.envelope,
                letter,
            });
        })
    }
}
