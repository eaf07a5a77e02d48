//! Consuming: three priority consumers on one connection, handed out
//! high before normal before low, reopened with backoff when they break.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use lapin::message::Delivery as LapinDelivery;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::backoff::Backoff;
use super::connect::{Inner, Link};
use super::publish::reject_poison;
use super::settle::{AmqpHandle, Settler};
use super::{HEALTH_CHECK_EVERY, SETTLE_TIMEOUT};
use crate::broker::{BrokerError, Delivery, JobStream, QUEUE_HIGH, QUEUE_LOW, QUEUE_NORMAL};
use crate::domain::DeadLetterReason;
use crate::domain::{ENVELOPE_VERSION, JobEnvelope};

/// The three priority consumers of one connection.
struct Session {
    /// Per rank; kept so dropping the session closes them (unsettled
    /// deliveries then go back to their queues).
    channels: [Channel; 3],
    consumers: [Consumer; 3],
    /// Per rank: the acks and requeues of the channel's deliveries.
    settlers: [Arc<Settler>; 3],
}

/// What the queues above a priority hold.
enum Higher {
    /// Nothing ready, known from an earlier look.
    Empty,
    /// Nothing ready, as the broker just said (the question took this long).
    JustEmptied(Duration),
    /// Messages ready.
    Ready,
    /// The question failed: the session is broken.
    Broken,
}

/// A consumer over the three priority queues.
pub(super) struct AmqpStream {
    inner: Arc<Inner>,
    prefetch: u16,
    /// One permit per delivery handed out and not yet settled.
    slots: Arc<Semaphore>,
    session: Option<Session>,
    /// Deliveries received but not handed out, per rank.
    stash: [VecDeque<Received>; 3],
    /// The queue of this rank held nothing ready at the last look and no
    /// delivery of it arrived since.
    known_empty: [bool; 3],
    closed: bool,
}

struct Received {
    envelope: JobEnvelope,
    delivery: LapinDelivery,
    /// The settler of the channel it came on.
    settler: Arc<Settler>,
}

impl AmqpStream {
    /// A stream of `prefetch` deliveries at most in hand, its consumers
    /// open.
    pub(super) async fn open(inner: Arc<Inner>, prefetch: u16) -> Result<Self, BrokerError> {
        let mut stream = AmqpStream {
            inner,
            prefetch,
            slots: Arc::new(Semaphore::new(usize::from(prefetch.max(1)))),
            session: None,
            stash: Default::default(),
            known_empty: [false; 3],
            closed: false,
        };
        stream.session = Some(stream.open_session().await?);
        Ok(stream)
    }

    async fn open_session(&self) -> Result<Session, BrokerError> {
        let link = self.inner.link().await?;
        let (high_channel, high) = self.open_consumer(&link, QUEUE_HIGH).await?;
        let (normal_channel, normal) = self.open_consumer(&link, QUEUE_NORMAL).await?;
        let (low_channel, low) = self.open_consumer(&link, QUEUE_LOW).await?;
        let hold = usize::from(self.prefetch / 4).max(1);
        let settlers = [&high_channel, &normal_channel, &low_channel]
            .map(|channel| Arc::new(Settler::new(channel.clone(), hold)));
        Ok(Session {
            channels: [high_channel, normal_channel, low_channel],
            consumers: [high, normal, low],
            settlers,
        })
    }

    async fn open_consumer(
        &self,
        link: &Link,
        queue: &str,
    ) -> Result<(Channel, Consumer), BrokerError> {
        let channel = link.connection.create_channel().await?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((channel, consumer))
    }

    /// A session, reconnecting with backoff while the connection is down.
    async fn ensure_session(&mut self) -> Option<()> {
        let mut backoff = Backoff::new(&self.inner.options);
        while self.session.is_none() {
            if self.closed {
                return None;
            }
            match self.open_session().await {
                Ok(session) => {
                    self.session = Some(session);
                    self.known_empty = [false; 3];
                }
                Err(BrokerError::Closed) => {
                    self.closed = true;
                    return None;
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff.wait(), "job consumer reconnect failed");
                    backoff.sleep().await;
                }
            }
        }
        Some(())
    }

    /// Drops the broken session; its deliveries go back to their queues.
    fn lose_session(&mut self, why: &str) {
        tracing::warn!(why, "job consumer lost its channel; reconnecting");
        self.session = None;
        for stash in &mut self.stash {
            stash.clear();
        }
    }

    /// Files one raw delivery: parsed ones into the stash, poison ones to
    /// the failed queue.
    async fn file(&mut self, rank_hint: usize, delivery: LapinDelivery) {
        let Some(session) = self.session.as_ref() else {
            return;
        };
        let settler = Arc::clone(&session.settlers[rank_hint]);
        settler.track(delivery.delivery_tag);
        match parse(&delivery.data) {
            Ok(envelope) => {
                self.known_empty[rank_hint] = false;
                self.stash[rank_hint].push_back(Received {
                    envelope,
                    delivery,
                    settler,
                });
            }
            Err((reason, detail)) => {
                tracing::warn!(%reason, %detail, "poison message moved to the failed queue");
                if let Err(error) = reject_poison(&self.inner, &delivery, reason, &detail).await {
                    tracing::warn!(%error, "could not move a poison message; it stays unacked");
                } else if let Err(error) = settler.ack(delivery.delivery_tag).await {
                    tracing::warn!(%error, "poison message moved, its ack failed; it comes back and is moved again");
                }
            }
        }
    }

    /// Moves what the consumers already received into the stash, highest
    /// priority first. Unless `all`, stops at the first priority with
    /// something at hand: lower ones could not be handed out anyway, and
    /// every consumer left unpolled saves work per delivery. Returns false
    /// if the session broke.
    async fn drain_ready(&mut self, all: bool) -> bool {
        for rank in 0..3 {
            if !all && !self.stash[rank].is_empty() && rank > 0 {
                break;
            }
            loop {
                let Some(session) = self.session.as_mut() else {
                    return false;
                };
                match session.consumers[rank].next().now_or_never() {
                    None => break,
                    Some(Some(Ok(delivery))) => self.file(rank, delivery).await,
                    Some(Some(Err(_)) | None) => return false,
                }
            }
            if !all && !self.stash[rank].is_empty() {
                break;
            }
        }
        true
    }

    /// Waits for the next raw delivery of any consumer (high first when
    /// several are ready), up to `limit`. Returns false if the session broke.
    async fn receive(&mut self, limit: Option<Duration>) -> bool {
        let Some(session) = self.session.as_mut() else {
            return false;
        };
        let [high, normal, low] = &mut session.consumers;
        let received = async {
            tokio::select! {
                biased;
                item = high.next() => (0, item),
                item = normal.next() => (1, item),
                item = low.next() => (2, item),
            }
        };
        // Without a limit, still look up every second whether the channels
        // are alive: a connection can die without telling its consumers.
        let (limit, open_ended) = match limit {
            Some(limit) => (limit, false),
            None => (HEALTH_CHECK_EVERY, true),
        };
        let outcome = match tokio::time::timeout(limit, received).await {
            Ok(outcome) => outcome,
            Err(_) => {
                return !open_ended
                    || session
                        .channels
                        .iter()
                        .all(|channel| channel.status().connected());
            }
        };
        match outcome {
            (rank, Some(Ok(delivery))) => {
                self.file(rank, delivery).await;
                true
            }
            _ => false,
        }
    }

    /// Whether every queue above `rank` has nothing ready, asking the
    /// broker about those not already known empty.
    async fn higher_empty(&mut self, rank: usize) -> Higher {
        let mut asked = None;
        for higher in 0..rank {
            if self.known_empty[higher] {
                continue;
            }
            let Some(session) = self.session.as_ref() else {
                return Higher::Empty;
            };
            let queue = [QUEUE_HIGH, QUEUE_NORMAL, QUEUE_LOW][higher];
            let options = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            let started = Instant::now();
            // Asked on the consumer's own channel, so the answer queues up
            // behind (or just ahead of) deliveries already on their way.
            let declared = session.channels[higher].queue_declare(
                queue.into(),
                options,
                FieldTable::default(),
            );
            match tokio::time::timeout(SETTLE_TIMEOUT, declared).await {
                Ok(Ok(state)) if state.message_count() == 0 => {
                    self.known_empty[higher] = true;
                    asked = Some(started.elapsed());
                }
                Ok(Ok(_)) => return Higher::Ready,
                Ok(Err(_)) | Err(_) => return Higher::Broken,
            }
        }
        asked.map_or(Higher::Empty, Higher::JustEmptied)
    }

    fn hand_out(&self, received: Received, permit: OwnedSemaphorePermit) -> Delivery {
        let Received {
            envelope,
            delivery,
            settler,
        } = received;
        Delivery {
            redelivered: delivery.redelivered,
            handle: Box::new(AmqpHandle {
                inner: Arc::clone(&self.inner),
                job_id: envelope.job.id,
                attempt: envelope.job.attempt,
                delivery,
                settler,
                permit: Mutex::new(Some(permit)),
            }),
            envelope,
        }
    }
}

/// Parses a message body; on failure, the reason for the failed queue
/// and the detail.
pub(super) fn parse(body: &[u8]) -> Result<JobEnvelope, (DeadLetterReason, String)> {
    if let Ok(envelope) = serde_json::from_slice::<JobEnvelope>(body)
        && envelope.version == ENVELOPE_VERSION
    {
        return Ok(envelope);
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|error| (DeadLetterReason::Malformed, error.to_string()))?;
    match value.get("version").and_then(serde_json::Value::as_str) {
        Some(ENVELOPE_VERSION) => {}
        Some(other) => {
            return Err((
                DeadLetterReason::UnsupportedVersion,
                format!("version {other:?}"),
            ));
        }
        None => {
            return Err((
                DeadLetterReason::Malformed,
                "missing field `version`".to_owned(),
            ));
        }
    }
    serde_json::from_value(value).map_err(|error| (DeadLetterReason::Malformed, error.to_string()))
}

#[async_trait]
impl JobStream for AmqpStream {
    async fn next(&mut self) -> Option<Delivery> {
        if self.closed {
            return None;
        }
        let permit = Arc::clone(&self.slots).acquire_owned().await.ok()?;
        loop {
            self.ensure_session().await?;
            if !self.drain_ready(false).await {
                self.lose_session("consumer ended");
                continue;
            }
            if let Some(received) = self.stash[0].pop_front() {
                return Some(self.hand_out(received, permit));
            }
            if let Some(rank) = (1..3).find(|rank| !self.stash[*rank].is_empty()) {
                match self.higher_empty(rank).await {
                    Higher::Empty => {
                        if let Some(received) = self.stash[rank].pop_front() {
                            return Some(self.hand_out(received, permit));
                        }
                    }
                    Higher::JustEmptied(round_trip) => {
                        // Nothing ready up there, but deliveries the broker
                        // sent just before it answered may still be in
                        // transit: give them a moment, then look again.
                        let grace = (round_trip * 2)
                            .clamp(Duration::from_millis(2), Duration::from_millis(50));
                        tokio::time::sleep(grace).await;
                    }
                    Higher::Broken => self.lose_session("priority check failed"),
                    Higher::Ready => {
                        // On their way (this stream has credit there), or
                        // another consumer takes them.
                        if !self.receive(Some(Duration::from_millis(100))).await {
                            self.lose_session("consumer ended");
                        }
                    }
                }
                continue;
            }
            if !self.receive(None).await {
                self.lose_session("consumer ended");
            }
        }
    }

    async fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        if let Some(session) = self.session.as_mut() {
            for (channel, consumer) in session.channels.iter().zip(&session.consumers) {
                let _ = channel
                    .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                    .await;
            }
        }
        let _ = self.drain_ready(true).await;
        for stash in &mut self.stash {
            for received in stash.drain(..) {
                let _ = received
                    .settler
                    .requeue(received.delivery.delivery_tag)
                    .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poison_bodies_are_told_apart() {
        let reason = |body: &[u8]| parse(body).err().map(|(reason, _)| reason);
        assert_eq!(reason(b"not json"), Some(DeadLetterReason::Malformed));
        assert_eq!(
            reason(br#"{"version":"9.9","job":{}}"#),
            Some(DeadLetterReason::UnsupportedVersion)
        );
        assert_eq!(
            reason(br#"{"version":"1.0"}"#),
            Some(DeadLetterReason::Malformed)
        );
        assert_eq!(reason(br#"{"job":{}}"#), Some(DeadLetterReason::Malformed));
    }
}
