//! Settling deliveries: coalesced acks per consumer channel, requeues,
//! and dead letters.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::FutureExt;
use lapin::Channel;
use lapin::message::Delivery as LapinDelivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::AMQPValue;
use tokio::sync::OwnedSemaphorePermit;
use uuid::Uuid;

use super::connect::Inner;
use super::consume::parse;
use super::publish::{Outgoing, encode};
use super::{
    HEADER_ATTEMPT, HEADER_ERROR_CODE, HEADER_ERROR_MESSAGE, HEADER_REASON, HEADER_RESULT,
    HEADER_TASK_TYPE, SETTLE_TIMEOUT, long_string,
};
use crate::broker::{BrokerError, DeadLetter, DeliveryHandle, QUEUE_FAILED};

/// The acks of one consumer channel, coalesced.
///
/// An ack marks its delivery done and, unless an ack round is already
/// queued, queues one: the round runs after the other tasks that are ready
/// on the thread (the executors answered by the same finish round mark
/// theirs meanwhile), then sends one `basic.ack` with `multiple` for the
/// longest run of done deliveries from the oldest one still open, written
/// straight on the channel (no hop through lapin's internal RPC task). A
/// delivery still in hand stops the run: the done ones behind it wait for
/// it, unless they are [`Settler::hold`] or more, when they are acked one
/// by one (in the same round), so a long job never holds much of the
/// prefetch. Nothing is acked before its own ack was asked for (after its
/// outcome was recorded), and a multiple ack never covers a delivery in
/// hand or one being requeued. Requeues are sent one by one and awaited.
pub(super) struct Settler {
    channel: Channel,
    /// Done deliveries behind one in hand acked one by one from this many.
    hold: usize,
    state: Mutex<SettleState>,
}

#[derive(Default)]
struct SettleState {
    /// Delivery tags received and not yet acked or requeued: `true` once
    /// their ack was asked for.
    open: BTreeMap<u64, bool>,
    /// An ack round is queued; it takes every delivery marked before it
    /// runs.
    round_queued: bool,
}

/// What one ack round sends.
#[derive(Debug, Default, PartialEq)]
struct AckRound {
    /// The last tag of the run of done deliveries from the oldest open one
    /// (acked with `multiple`).
    up_to: Option<u64>,
    /// Done deliveries behind one in hand, acked one by one.
    singles: Vec<u64>,
}

impl SettleState {
    /// Takes the deliveries the next round acks out of `open`.
    fn take_round(&mut self, hold: usize) -> AckRound {
        let mut round = AckRound::default();
        while let Some(entry) = self.open.first_entry() {
            if !*entry.get() {
                break;
            }
            round.up_to = Some(entry.remove_entry().0);
        }
        let waiting = self.open.values().filter(|done| **done).count();
        if waiting >= hold.max(1) {
            round.singles = self
                .open
                .iter()
                .filter(|(_, done)| **done)
                .map(|(tag, _)| *tag)
                .collect();
            for tag in &round.singles {
                self.open.remove(tag);
            }
        }
        round
    }
}

/// Sends an ack round's first step if the round is dropped before it runs
/// (its task was cancelled), so the marked deliveries are not left over.
struct RoundGuard<'a>(Option<&'a Settler>);

impl Drop for RoundGuard<'_> {
    fn drop(&mut self) {
        if let Some(settler) = self.0.take() {
            let _ = settler.send_round();
        }
    }
}

impl Settler {
    pub(super) fn new(channel: Channel, hold: usize) -> Settler {
        Settler {
            channel,
            hold,
            state: Mutex::new(SettleState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SettleState> {
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// A delivery received on the channel.
    pub(super) fn track(&self, tag: u64) {
        self.state().open.insert(tag, false);
    }

    /// Marks `tag` done and sees that an ack round takes it.
    pub(super) async fn ack(&self, tag: u64) -> Result<(), BrokerError> {
        if !self.channel.status().connected() {
            return Err(BrokerError::Closed);
        }
        let lead = {
            let mut state = self.state();
            match state.open.get_mut(&tag) {
                Some(done) if !*done => *done = true,
                // Settled already.
                _ => return Err(BrokerError::Closed),
            }
            !std::mem::replace(&mut state.round_queued, true)
        };
        if !lead {
            return Ok(());
        }
        let mut guard = RoundGuard(Some(self));
        tokio::task::yield_now().await;
        guard.0 = None;
        self.send_round()
    }

    /// Takes the round and writes its acks on the channel.
    fn send_round(&self) -> Result<(), BrokerError> {
        let round = {
            let mut state = self.state();
            state.round_queued = false;
            state.take_round(self.hold)
        };
        let acks = round
            .up_to
            .map(|tag| (tag, true))
            .into_iter()
            .chain(round.singles.iter().map(|tag| (*tag, false)));
        let mut outcome = Ok(());
        for (tag, multiple) in acks {
            // The frame is queued on the first poll; the answer (the frame
            // written) is not awaited.
            let sent = self
                .channel
                .basic_ack(tag, BasicAckOptions { multiple })
                .now_or_never();
            if let Some(Err(error)) = sent {
                outcome = Err(BrokerError::from(error));
            }
        }
        outcome
    }

    /// Requeues `tag` (awaited), then lets the deliveries behind it be
    /// acked.
    pub(super) async fn requeue(&self, tag: u64) -> Result<(), BrokerError> {
        let nacked = self.channel.basic_nack(
            tag,
            BasicNackOptions {
                multiple: false,
                requeue: true,
            },
        );
        let outcome = match tokio::time::timeout(SETTLE_TIMEOUT, nacked).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(BrokerError::from(error)),
            Err(_) => Err(BrokerError::Closed),
        };
        let lead = {
            let mut state = self.state();
            state.open.remove(&tag);
            !std::mem::replace(&mut state.round_queued, true)
        };
        if lead {
            let _ = self.send_round();
        }
        outcome
    }
}

/// Settles one delivery of an [`AmqpStream`].
pub(super) struct AmqpHandle {
    pub(super) inner: Arc<Inner>,
    pub(super) job_id: Uuid,
    pub(super) attempt: u32,
    pub(super) delivery: LapinDelivery,
    pub(super) settler: Arc<Settler>,
    /// The stream's slot, freed when the delivery is settled.
    pub(super) permit: Mutex<Option<OwnedSemaphorePermit>>,
}

impl AmqpHandle {
    fn release(&self) {
        if let Ok(mut permit) = self.permit.lock() {
            permit.take();
        }
    }
}

#[async_trait]
impl DeliveryHandle for AmqpHandle {
    async fn ack(&self) -> Result<(), BrokerError> {
        let outcome = self.settler.ack(self.delivery.delivery_tag).await;
        self.release();
        outcome
    }

    async fn requeue(&self) -> Result<(), BrokerError> {
        let outcome = self.settler.requeue(self.delivery.delivery_tag).await;
        self.release();
        outcome
    }

    async fn dead_letter(&self, letter: DeadLetter) -> Result<(), BrokerError> {
        let properties = &self.delivery.properties;
        let mut headers = properties.headers().clone().unwrap_or_default();
        headers.insert(HEADER_REASON.into(), long_string(letter.reason.as_str()));
        headers.insert(
            HEADER_ATTEMPT.into(),
            AMQPValue::LongLongInt(i64::from(self.attempt)),
        );
        // A job published due now carries no headers; a dead letter names
        // its task for whoever reads the failed queue (rare: parsed again).
        if !headers.contains_key(HEADER_TASK_TYPE)
            && let Ok(envelope) = parse(&self.delivery.data)
        {
            headers.insert(
                HEADER_TASK_TYPE.into(),
                long_string(envelope.job.task_type_id.as_ref()),
            );
        }
        if let Some(result) = &letter.result {
            if let Some(error) = &result.error {
                headers.insert(HEADER_ERROR_CODE.into(), long_string(&error.code));
                headers.insert(HEADER_ERROR_MESSAGE.into(), long_string(&error.message));
            }
            let json = serde_json::to_string(result).map_err(|e| BrokerError::from(encode(e)))?;
            headers.insert(HEADER_RESULT.into(), long_string(&json));
        }
        let message = Outgoing {
            id: self.job_id,
            routing_key: QUEUE_FAILED.to_owned(),
            body: self.delivery.data.clone(),
            properties: properties.clone().with_headers(headers),
        };
        self.inner
            .publish_all(std::slice::from_ref(&message))
            .await?;
        self.ack().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(open: &[(u64, bool)]) -> SettleState {
        SettleState {
            open: open.iter().copied().collect(),
            round_queued: true,
        }
    }

    #[test]
    fn an_ack_round_covers_the_done_run_and_never_a_delivery_in_hand() {
        // 1 and 2 done, 3 in hand, 4 done: one multiple ack up to 2; 4
        // waits for 3 (fewer than the hold).
        let mut open = state(&[(1, true), (2, true), (3, false), (4, true)]);
        assert_eq!(
            open.take_round(4),
            AckRound {
                up_to: Some(2),
                singles: vec![]
            }
        );
        assert_eq!(open.open.keys().copied().collect::<Vec<_>>(), vec![3, 4]);
        // 3 done: it and 4 go together.
        open.open.insert(3, true);
        assert_eq!(
            open.take_round(4),
            AckRound {
                up_to: Some(4),
                singles: vec![]
            }
        );
        assert!(open.open.is_empty());
    }

    #[test]
    fn done_deliveries_behind_a_long_one_are_acked_singly_at_the_hold() {
        let mut open = state(&[(7, false), (8, true), (9, false), (10, true)]);
        assert_eq!(
            open.take_round(2),
            AckRound {
                up_to: None,
                singles: vec![8, 10]
            }
        );
        assert_eq!(open.open.keys().copied().collect::<Vec<_>>(), vec![7, 9]);
        // Nothing done: nothing sent.
        assert_eq!(open.take_round(2), AckRound::default());
    }
}
