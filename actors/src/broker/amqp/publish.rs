//! Publishing: the message for a job, and confirmed batches through the
//! pool of confirm-mode channels, sent again across reconnects.

use std::sync::atomic::Ordering;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use lapin::message::Delivery as LapinDelivery;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tokio::time::Instant;
use uuid::Uuid;

use super::backoff::Backoff;
use super::connect::{Inner, Link};
use super::{
    HEADER_ATTEMPT, HEADER_ERROR_MESSAGE, HEADER_EXECUTE_AFTER, HEADER_REASON, HEADER_TARGET,
    HEADER_TASK_TYPE, long_string, priority_queue,
};
use crate::broker::{BrokerError, QUEUE_DELAYED, QUEUE_FAILED};
use crate::domain::DeadLetterReason;
use crate::domain::JobEnvelope;

/// One message ready to be published.
pub(super) struct Outgoing {
    pub(super) id: Uuid,
    pub(super) routing_key: String,
    pub(super) body: Vec<u8>,
    pub(super) properties: BasicProperties,
}

impl Inner {
    /// Publishes every message and returns once all are confirmed.
    /// Messages not confirmed because the connection or channel failed are
    /// sent again (after a reconnect) until `publish_timeout`; a nack or a
    /// return ends the call with an error once the rest is settled.
    pub(super) async fn publish_all(&self, messages: &[Outgoing]) -> Result<(), BrokerError> {
        let deadline = Instant::now() + self.options.publish_timeout;
        let mut pending: Vec<usize> = (0..messages.len()).collect();
        let mut backoff = Backoff::new(&self.options);
        let mut fatal: Option<BrokerError> = None;
        while !pending.is_empty() {
            let link = self.link_retrying(Some(deadline)).await?;
            // A connection that dies without a word could leave confirms
            // pending forever: the deadline bounds the round too.
            let round = self.publish_round(&link, messages, &pending, &mut fatal);
            let Ok((unsent, error)) = tokio::time::timeout_at(deadline, round).await else {
                return Err(BrokerError::Closed);
            };
            pending = unsent;
            if pending.is_empty() {
                break;
            }
            // A channel-level refusal (no such exchange, access refused)
            // comes back the same every time: no point sending again.
            if let Some(BrokerError::Amqp { refused: true, .. }) = &error {
                return Err(error.unwrap_or(BrokerError::Closed));
            }
            if !backoff.fits(Some(deadline)) {
                return Err(error.unwrap_or(BrokerError::Closed));
            }
            if let Some(error) = error {
                tracing::warn!(%error, unconfirmed = pending.len(), retry_in = ?backoff.wait(), "publish interrupted; sending again");
            }
            backoff.sleep().await;
        }
        fatal.map_or(Ok(()), Err)
    }

    /// One attempt at publishing `pending` on one channel of `link`.
    /// Returns the messages to send again and the error that stopped them.
    async fn publish_round(
        &self,
        link: &Link,
        messages: &[Outgoing],
        pending: &[usize],
        fatal: &mut Option<BrokerError>,
    ) -> (Vec<usize>, Option<BrokerError>) {
        let slot = self.next_publisher.fetch_add(1, Ordering::Relaxed) % link.publishers.len();
        let mut unsent = Vec::new();
        let mut last_error = None;
        let mut in_flight = FuturesUnordered::new();
        let mut settle = |index: usize,
                          outcome: Result<Confirmation, lapin::Error>,
                          unsent: &mut Vec<usize>,
                          last_error: &mut Option<BrokerError>| {
            match outcome {
                Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => {}
                Ok(Confirmation::Ack(Some(_))) => {
                    fatal.get_or_insert(BrokerError::Unroutable(messages[index].id));
                }
                Ok(Confirmation::Nack(_)) => {
                    fatal.get_or_insert(BrokerError::PublishNacked(messages[index].id));
                }
                Err(error) => {
                    unsent.push(index);
                    *last_error = Some(BrokerError::from(error));
                }
            }
        };
        {
            let mut channel_slot = link.publishers[slot].lock().await;
            let channel = match publisher_channel(&link.connection, &mut channel_slot).await {
                Ok(channel) => channel,
                Err(error) => return (pending.to_vec(), Some(error)),
            };
            for (position, &index) in pending.iter().enumerate() {
                while in_flight.len() >= self.options.publisher_in_flight.max(1) {
                    if let Some((done, outcome)) = in_flight.next().await {
                        settle(done, outcome, &mut unsent, &mut last_error);
                    }
                }
                let message = &messages[index];
                let sent = channel
                    .basic_publish(
                        self.exchange(),
                        message.routing_key.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            immediate: false,
                        },
                        &message.body,
                        message.properties.clone(),
                    )
                    .await;
                match sent {
                    Ok(confirm) => in_flight.push(confirm.map(move |outcome| (index, outcome))),
                    Err(error) => {
                        unsent.extend_from_slice(&pending[position..]);
                        last_error = Some(BrokerError::from(error));
                        *channel_slot = None;
                        break;
                    }
                }
            }
        }
        while let Some((done, outcome)) = in_flight.next().await {
            settle(done, outcome, &mut unsent, &mut last_error);
        }
        (unsent, last_error)
    }
}

/// The open confirm-mode channel of a publisher slot, opening one if the
/// slot is empty or its channel is closed.
async fn publisher_channel(
    connection: &Connection,
    slot: &mut Option<Channel>,
) -> Result<Channel, BrokerError> {
    if let Some(channel) = slot.as_ref()
        && channel.status().connected()
    {
        return Ok(channel.clone());
    }
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    *slot = Some(channel.clone());
    Ok(channel)
}

/// The message for `envelope`: JSON body, `delivery_mode` (2: persistent,
/// 1: transient when `queue.durable` is off), `message-id` = job id. A job
/// due now goes straight to its priority queue as that lean message, all
/// the consumer needs (the body carries the whole job), so the broker does
/// the work of a bare publish; a job due later goes to the delay stage with
/// `correlation-id`, `timestamp` and the headers the delay pump reads (task
/// type, attempt, due time, target queue).
pub(super) fn outgoing(
    envelope: &JobEnvelope,
    now_ms: i64,
    delivery_mode: u8,
) -> Result<Outgoing, BrokerError> {
    let job = &envelope.job;
    let body = serde_json::to_vec(envelope).map_err(|error| BrokerError::from(encode(error)))?;
    let due_ms = job.execute_after.timestamp_millis();
    let target = priority_queue(job.priority);
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(delivery_mode)
        .with_message_id(job.id.to_string().into());
    if due_ms <= now_ms {
        return Ok(Outgoing {
            id: job.id,
            routing_key: target.to_owned(),
            body,
            properties,
        });
    }
    let mut headers = FieldTable::default();
    headers.insert(
        HEADER_TASK_TYPE.into(),
        long_string(job.task_type_id.as_ref()),
    );
    headers.insert(
        HEADER_ATTEMPT.into(),
        AMQPValue::LongLongInt(i64::from(job.attempt)),
    );
    headers.insert(HEADER_EXECUTE_AFTER.into(), AMQPValue::LongLongInt(due_ms));
    headers.insert(HEADER_TARGET.into(), long_string(target));
    let properties = properties
        .with_correlation_id(envelope.metadata.correlation_id.as_str().into())
        .with_timestamp(u64::try_from(now_ms / 1000).unwrap_or_default())
        .with_headers(headers);
    Ok(Outgoing {
        id: job.id,
        routing_key: QUEUE_DELAYED.to_owned(),
        body,
        properties,
    })
}

/// A JSON encoding failure as a lapin error (it cannot happen for our
/// types, but the port has no variant of its own for it).
pub(super) fn encode(error: serde_json::Error) -> lapin::Error {
    lapin::Error::from(std::io::Error::other(error))
}

/// Publishes a poison message unchanged to the failed queue with the
/// reason (the caller acks it).
pub(super) async fn reject_poison(
    inner: &Inner,
    delivery: &LapinDelivery,
    reason: DeadLetterReason,
    detail: &str,
) -> Result<(), BrokerError> {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(HEADER_REASON.into(), long_string(reason.as_str()));
    headers.insert(HEADER_ERROR_MESSAGE.into(), long_string(detail));
    let message = Outgoing {
        id: Uuid::nil(),
        routing_key: QUEUE_FAILED.to_owned(),
        body: delivery.data.clone(),
        properties: delivery
            .properties
            .clone()
            .with_delivery_mode(inner.options.delivery_mode())
            .with_headers(headers),
    };
    inner.publish_all(std::slice::from_ref(&message)).await
}
