//! The topology: the exchange, the priority, delay-ladder and failed
//! queues with their arguments, and the depth of each.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ErrorKind, ExchangeKind};
use tokio::time::Instant;

use super::connect::Inner;
use super::delay::{delay_pump, ladder_queue, ladder_steps};
use super::{QueueType, SETTLE_TIMEOUT, long_string};
use crate::broker::{
    BrokerError, QUEUE_DELAYED, QUEUE_FAILED, QUEUE_HIGH, QUEUE_LOW, QUEUE_NORMAL,
};

/// Declares the exchange and every queue, bound under its own name, then
/// starts the delay pump once if this process runs it.
pub(super) async fn declare(inner: &Arc<Inner>) -> Result<(), BrokerError> {
    let deadline = Instant::now() + inner.options.publish_timeout;
    let link = inner.link_retrying(Some(deadline)).await?;
    let channel = link.connection.create_channel().await?;
    channel
        .exchange_declare(
            inner.exchange(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: inner.options.durable,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let queue_type = inner.options.queue_type;
    let base = || {
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), long_string(queue_type.name()));
        arguments
    };
    let mut queues: Vec<(String, FieldTable)> = Vec::new();
    for queue in [QUEUE_HIGH, QUEUE_NORMAL, QUEUE_LOW] {
        // Anything the broker itself rejects or expires ends in `failed`.
        let mut arguments = base();
        arguments.insert(
            "x-dead-letter-exchange".into(),
            long_string(&inner.options.exchange),
        );
        arguments.insert(
            "x-dead-letter-routing-key".into(),
            long_string(QUEUE_FAILED),
        );
        queues.push((queue.to_owned(), arguments));
    }
    queues.push((QUEUE_DELAYED.to_owned(), base()));
    queues.push((QUEUE_FAILED.to_owned(), base()));
    for ms in ladder_steps() {
        let mut arguments = base();
        arguments.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(i64::try_from(ms).unwrap_or(i64::MAX)),
        );
        arguments.insert(
            "x-dead-letter-exchange".into(),
            long_string(&inner.options.exchange),
        );
        arguments.insert(
            "x-dead-letter-routing-key".into(),
            long_string(QUEUE_DELAYED),
        );
        if queue_type == QueueType::Quorum {
            arguments.insert(
                "x-dead-letter-strategy".into(),
                long_string("at-least-once"),
            );
            arguments.insert("x-overflow".into(), long_string("reject-publish"));
        }
        queues.push((ladder_queue(ms), arguments));
    }
    for (queue, arguments) in queues {
        declare_queue(&channel, &queue, inner.options.durable, arguments).await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                inner.exchange(),
                queue.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    let _ = channel.close(200, "OK".into()).await;
    if inner.options.delay_pump && !inner.pump_started.swap(true, Ordering::SeqCst) {
        tokio::spawn(delay_pump(Arc::downgrade(inner), inner.alive.clone()));
    }
    Ok(())
}

/// The messages in each queue (the delay stage counts its ladder too).
pub(super) async fn queue_depths(inner: &Inner) -> Result<Vec<(&'static str, u64)>, BrokerError> {
    let link = inner.link().await?;
    let channel = link.connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let mut depths = Vec::new();
    for queue in [
        QUEUE_HIGH,
        QUEUE_NORMAL,
        QUEUE_LOW,
        QUEUE_DELAYED,
        QUEUE_FAILED,
    ] {
        let mut names = vec![queue.to_owned()];
        if queue == QUEUE_DELAYED {
            names.extend(ladder_steps().map(ladder_queue));
        }
        let mut count = 0u64;
        for name in names {
            let declared =
                channel.queue_declare(name.as_str().into(), passive, FieldTable::default());
            let state = tokio::time::timeout(SETTLE_TIMEOUT, declared)
                .await
                .map_err(|_| BrokerError::Closed)??;
            count += u64::from(state.message_count());
        }
        depths.push((queue, count));
    }
    let _ = channel.close(200, "OK".into()).await;
    Ok(depths)
}

/// Declares the queue, mapping PRECONDITION_FAILED to a topology mismatch.
async fn declare_queue(
    channel: &Channel,
    queue: &str,
    durable: bool,
    arguments: FieldTable,
) -> Result<(), BrokerError> {
    let options = QueueDeclareOptions {
        durable,
        ..QueueDeclareOptions::default()
    };
    match channel
        .queue_declare(queue.into(), options, arguments)
        .await
    {
        Ok(_) => Ok(()),
        Err(error) => match error.kind() {
            ErrorKind::ProtocolError(amqp)
                if *amqp.kind() == AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) =>
            {
                Err(BrokerError::TopologyMismatch {
                    queue: queue.to_owned(),
                    detail: amqp.get_message().to_string(),
                })
            }
            _ => Err(BrokerError::from(error)),
        },
    }
}
