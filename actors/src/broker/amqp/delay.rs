//! The delay ladder: fixed-TTL queues a delayed job steps down, and the
//! pump that moves each job from `taskqueue.jobs.delayed` to its next
//! step or, once nearly due, holds it and publishes it to its priority
//! queue.

use std::sync::Weak;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use lapin::message::Delivery as LapinDelivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use tokio::sync::watch;
use uuid::Uuid;

use super::backoff::Backoff;
use super::connect::Inner;
use super::consume::parse;
use super::publish::{Outgoing, reject_poison};
use super::{
    HEADER_EXECUTE_AFTER, HEADER_TARGET, HEALTH_CHECK_EVERY, header_i64, header_str, priority_queue,
};
use crate::broker::{BrokerError, QUEUE_DELAYED};
use crate::domain::DeadLetterReason;

/// Shortest step of the delay ladder, in milliseconds (2^8).
const LADDER_MIN_EXP: u32 = 8;
/// Longest step of the delay ladder, in milliseconds (2^26, about 18.6 h);
/// longer delays go round the longest step again.
const LADDER_MAX_EXP: u32 = 26;

/// The TTLs of the delay ladder, shortest first, in milliseconds.
pub fn ladder_steps() -> impl Iterator<Item = u64> {
    (LADDER_MIN_EXP..=LADDER_MAX_EXP).map(|exp| 1u64 << exp)
}

/// Name of the delay-ladder queue whose messages wait `ms` milliseconds.
pub fn ladder_queue(ms: u64) -> String {
    format!("{QUEUE_DELAYED}.{ms}")
}

/// The pump's first wait after it could not consume, whatever
/// [`super::AmqpOptions::reconnect_initial`] says; later waits follow the
/// reconnect settings.
const PUMP_FIRST_RETRY: Duration = Duration::from_millis(100);

/// Consumes `taskqueue.jobs.delayed` until the broker is dropped, moving
/// each job one step down the ladder or, when nearly due, to its priority
/// queue.
pub(super) async fn delay_pump(inner: Weak<Inner>, mut alive: watch::Receiver<()>) {
    let mut backoff: Option<Backoff> = None;
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let backoff = backoff
            .get_or_insert_with(|| Backoff::new(&strong.options).starting_at(PUMP_FIRST_RETRY));
        let consumer = match open_pump(&strong).await {
            Ok(consumer) => consumer,
            Err(BrokerError::Closed) => return,
            Err(error) => {
                drop(strong);
                tracing::warn!(%error, retry_in = ?backoff.wait(), "delay pump cannot consume; retrying");
                tokio::select! {
                    _ = alive.changed() => return,
                    () = backoff.sleep() => {}
                }
                continue;
            }
        };
        backoff.reset();
        drop(strong);
        let (channel, mut consumer) = consumer;
        loop {
            let item = tokio::select! {
                _ = alive.changed() => return,
                item = tokio::time::timeout(HEALTH_CHECK_EVERY, consumer.next()) => item,
            };
            let delivery = match item {
                Ok(Some(Ok(delivery))) => delivery,
                Err(_) if channel.status().connected() => continue,
                _ => break,
            };
            let Some(strong) = inner.upgrade() else {
                return;
            };
            tokio::spawn(async move { pump_one(&strong, delivery).await });
        }
    }
}

async fn open_pump(inner: &Inner) -> Result<(Channel, Consumer), BrokerError> {
    let link = inner.link().await?;
    let channel = link.connection.create_channel().await?;
    channel
        .basic_qos(inner.options.delay_prefetch, BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            QUEUE_DELAYED.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((channel, consumer))
}

/// Where a delayed message goes next, given what is left of its delay.
#[derive(Debug, PartialEq, Eq)]
enum Hop {
    /// Wait this long in memory, then publish to the target queue.
    Hold(Duration),
    /// Publish to the ladder queue with this TTL (ms).
    Ladder(u64),
}

fn next_hop(remaining_ms: i64, hold: Duration) -> Hop {
    let hold_ms = i64::try_from(hold.as_millis()).unwrap_or(i64::MAX);
    if remaining_ms < hold_ms.max(1 << LADDER_MIN_EXP) {
        return Hop::Hold(Duration::from_millis(
            u64::try_from(remaining_ms).unwrap_or(0),
        ));
    }
    let remaining = u64::try_from(remaining_ms).unwrap_or(0);
    let step = ladder_steps()
        .take_while(|ms| *ms <= remaining)
        .last()
        .unwrap_or(1 << LADDER_MIN_EXP);
    Hop::Ladder(step)
}

/// Headers the broker adds when it dead-letters a message; dropped when a
/// delayed job leaves the ladder.
fn is_death_header(name: &str) -> bool {
    name == "x-death" || name.starts_with("x-first-death-") || name.starts_with("x-last-death-")
}

async fn pump_one(inner: &Inner, delivery: LapinDelivery) {
    let properties = &delivery.properties;
    let (due_ms, target) = match (
        header_i64(properties, HEADER_EXECUTE_AFTER),
        header_str(properties, HEADER_TARGET),
    ) {
        (Some(due), Some(target)) => (due, target),
        _ => match parse(&delivery.data) {
            Ok(envelope) => (
                envelope.job.execute_after.timestamp_millis(),
                priority_queue(envelope.job.priority).to_owned(),
            ),
            Err((reason, detail)) => {
                if let Err(error) = reject_poison(inner, &delivery, reason, &detail).await {
                    tracing::warn!(%error, "could not move a poison delayed message");
                }
                return;
            }
        },
    };
    let remaining = due_ms - Utc::now().timestamp_millis();
    // The broker's death headers are dropped on every hop: each ladder
    // queue then sees a fresh message, so its dead-letter cycle detection
    // never drops one that goes round the longest step twice.
    let mut clean = FieldTable::default();
    if let Some(headers) = properties.headers() {
        for (name, value) in headers.inner() {
            if !is_death_header(name.as_str()) {
                clean.insert(name.clone(), value.clone());
            }
        }
    }
    let properties = properties.clone().with_headers(clean);
    let routing_key = match next_hop(remaining, inner.options.delay_hold) {
        Hop::Hold(wait) => {
            tokio::time::sleep(wait).await;
            // Never early: the wall clock may lag the timer by a millisecond.
            let late = due_ms - Utc::now().timestamp_millis();
            if late > 0 {
                tokio::time::sleep(Duration::from_millis(u64::try_from(late).unwrap_or(0))).await;
            }
            target
        }
        Hop::Ladder(ms) => ladder_queue(ms),
    };
    let message = Outgoing {
        id: Uuid::nil(),
        routing_key,
        body: delivery.data.clone(),
        properties,
    };
    let settled = match inner.publish_all(std::slice::from_ref(&message)).await {
        Ok(()) => delivery.acker.ack(BasicAckOptions::default()).await,
        Err(BrokerError::Unroutable(_)) => {
            let detail = format!("no queue bound to {:?}", message.routing_key);
            if let Err(error) =
                reject_poison(inner, &delivery, DeadLetterReason::Unroutable, &detail).await
            {
                tracing::warn!(%error, "could not move an unroutable delayed message");
            }
            return;
        }
        Err(error) => {
            tracing::warn!(%error, "delay pump could not forward a job; it goes back");
            // Do not spin on a broker that refuses: the job comes back later.
            tokio::time::sleep(inner.options.reconnect_initial).await;
            delivery
                .acker
                .nack(BasicNackOptions {
                    multiple: false,
                    requeue: true,
                })
                .await
        }
    };
    if let Err(error) = settled {
        tracing::debug!(%error, "delay pump settle failed; the broker redelivers");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(remaining_ms: i64, expected: Hop) {
        assert_eq!(
            next_hop(remaining_ms, Duration::from_millis(250)),
            expected,
            "{remaining_ms} ms left"
        );
    }

    #[test]
    fn delays_step_down_the_ladder_then_wait_in_memory() {
        check(-5, Hop::Hold(Duration::ZERO));
        check(0, Hop::Hold(Duration::ZERO));
        check(249, Hop::Hold(Duration::from_millis(249)));
        check(255, Hop::Hold(Duration::from_millis(255)));
        check(256, Hop::Ladder(256));
        check(1000, Hop::Ladder(512));
        check(1024, Hop::Ladder(1024));
        check(600_000, Hop::Ladder(524_288));
        check(i64::MAX, Hop::Ladder(1 << LADDER_MAX_EXP));
    }
}
