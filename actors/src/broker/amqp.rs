//! RabbitMQ implementation of the job-broker port.
//!
//! The design (topology, priority consumption, the delay ladder, dead
//! letters, reconnects) is written up in `docs/broker.md`. In short:
//!
//! - one direct exchange (durable unless `queue.durable: false`); every queue is bound under its own name,
//!   so the routing key of a message is the name of the queue it goes to;
//! - publishes go through a small pool of confirm-mode channels, many
//!   messages in flight per batch, `mandatory` set, retried across
//!   reconnects until confirmed;
//! - a consumer holds one channel per priority queue and hands out high
//!   before normal before low (strict: a lower-priority message is handed
//!   out only once the higher queues are known to hold nothing ready);
//! - acks are coalesced per consumer channel (`Settler`): one
//!   `basic.ack` with `multiple` per burst over the run of done
//!   deliveries, never covering one still in hand;
//! - delayed jobs enter `taskqueue.jobs.delayed`, whose consumer (the
//!   delay pump) moves each one through fixed-TTL queues
//!   `taskqueue.jobs.delayed.<ms>` and, once less than
//!   [`AmqpOptions::delay_hold`] remains, holds it in memory and publishes
//!   it to its priority queue when due.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use lapin::message::Delivery as LapinDelivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer, ErrorKind,
    ExchangeKind,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use uuid::Uuid;

use super::{
    BrokerError, DeadLetter, Delivery, DeliveryHandle, EXCHANGE, JobBroker, JobStream,
    QUEUE_DELAYED, QUEUE_FAILED, QUEUE_HIGH, QUEUE_LOW, QUEUE_NORMAL,
};
use crate::domain::{ENVELOPE_VERSION, JobEnvelope, Priority};

/// Header: the task type of the job.
pub const HEADER_TASK_TYPE: &str = "x-task-type";
/// Header: the attempt number of the job (1 for the first).
pub const HEADER_ATTEMPT: &str = "x-attempt";
/// Header: `execute_after` in milliseconds since the Unix epoch.
pub const HEADER_EXECUTE_AFTER: &str = "x-execute-after";
/// Header: the priority queue a delayed job goes to when due.
pub const HEADER_TARGET: &str = "x-taskqueue-target";
/// Header: why a message is in `taskqueue.jobs.failed`.
pub const HEADER_REASON: &str = "x-taskqueue-reason";
/// Header: code of the last error of a dead-lettered job.
pub const HEADER_ERROR_CODE: &str = "x-taskqueue-error-code";
/// Header: message of the last error (or the parse error of a poison message).
pub const HEADER_ERROR_MESSAGE: &str = "x-taskqueue-error-message";
/// Header: the last attempt's `ExecutionResult`, as JSON.
pub const HEADER_RESULT: &str = "x-taskqueue-result";

/// Longest wait for an ack, nack or passive declare before the channel is
/// taken for dead.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle consumer checks that its channels are alive.
const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(1);

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

/// Queue type of every queue taskqueue declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    /// Classic queues (single node; the default).
    #[default]
    Classic,
    /// Quorum queues (replicated; the delay ladder then dead-letters
    /// at-least-once).
    Quorum,
}

impl QueueType {
    fn name(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

/// Settings of [`AmqpBroker`].
#[derive(Debug, Clone)]
pub struct AmqpOptions {
    /// The exchange every job goes through.
    pub exchange: String,
    /// Type of every declared queue.
    pub queue_type: QueueType,
    /// Prefetch of a consumer opened with `consume(0)` (`queue.prefetch`).
    pub prefetch: u16,
    /// Confirm-mode channels publishes are spread over.
    pub publisher_channels: usize,
    /// Most unconfirmed messages one `publish` call keeps in flight.
    pub publisher_in_flight: usize,
    /// First wait after a failed connect; doubles up to `reconnect_max`.
    pub reconnect_initial: Duration,
    /// Longest wait between connect attempts.
    pub reconnect_max: Duration,
    /// How long `publish` keeps retrying unconfirmed messages through
    /// reconnects before it returns the error.
    pub publish_timeout: Duration,
    /// Run the delay pump (consumer of `taskqueue.jobs.delayed`) in this
    /// process once the topology is declared.
    pub delay_pump: bool,
    /// A delayed job with less than this left is held in memory by the
    /// pump instead of going round the ladder again.
    pub delay_hold: Duration,
    /// Prefetch of the delay pump (bounds the jobs it holds in memory).
    pub delay_prefetch: u16,
    /// Durable exchange and queues, persistent messages (`queue.durable`,
    /// default true). False declares transient queues and publishes
    /// non-persistent messages: a broker restart loses every queued job.
    pub durable: bool,
}

impl AmqpOptions {
    /// AMQP `delivery_mode`: 2 (persistent) when durable, else 1.
    fn delivery_mode(&self) -> u8 {
        if self.durable { 2 } else { 1 }
    }
}

impl Default for AmqpOptions {
    fn default() -> Self {
        AmqpOptions {
            exchange: EXCHANGE.to_owned(),
            queue_type: QueueType::Classic,
            prefetch: 10,
            publisher_channels: 4,
            publisher_in_flight: 1024,
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            publish_timeout: Duration::from_secs(60),
            delay_pump: true,
            delay_hold: Duration::from_millis(250),
            delay_prefetch: 1000,
            durable: true,
        }
    }
}

/// The RabbitMQ broker. Cloning gives another handle to the same
/// connection.
#[derive(Clone)]
pub struct AmqpBroker {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    options: AmqpOptions,
    /// The current connection, replaced when it is found broken.
    link: tokio::sync::Mutex<Option<Arc<Link>>>,
    /// Round-robin cursor over the publisher channels.
    next_publisher: AtomicUsize,
    pump_started: AtomicBool,
    /// Set by [`AmqpBroker::close`]: no reconnecting any more.
    closed: AtomicBool,
    /// Dropped with the broker; the pump stops when it sees that.
    _alive: watch::Sender<()>,
    alive: watch::Receiver<()>,
}

/// One connection and its publisher channels.
struct Link {
    connection: Connection,
    /// Confirm-mode channels, created on first use; the lock is held while
    /// a batch writes its messages, so delivery tags match the order of
    /// the frames.
    publishers: Vec<tokio::sync::Mutex<Option<Channel>>>,
}

/// One message ready to be published.
struct Outgoing {
    id: Uuid,
    routing_key: String,
    body: Vec<u8>,
    properties: BasicProperties,
}

impl AmqpBroker {
    /// Connects to `url` (`amqp://user:pass@host:port/vhost`). Call
    /// [`JobBroker::declare`] before publishing or consuming.
    pub async fn connect(url: &str, options: AmqpOptions) -> Result<Self, BrokerError> {
        let (alive_tx, alive_rx) = watch::channel(());
        let broker = AmqpBroker {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                options,
                link: tokio::sync::Mutex::new(None),
                next_publisher: AtomicUsize::new(0),
                pump_started: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                _alive: alive_tx,
                alive: alive_rx,
            }),
        };
        broker.inner.link().await?;
        Ok(broker)
    }

    /// The options in force.
    pub fn options(&self) -> &AmqpOptions {
        &self.inner.options
    }

    /// Whether the connection is up, reconnecting once if it is broken
    /// (for `/health`).
    pub async fn check_connection(&self) -> Result<(), BrokerError> {
        self.inner.link().await.map(|_| ())
    }

    /// Closes the connection for good (shutdown): streams end, deliveries
    /// not settled go back to their queues, the delay pump stops, and
    /// publishing fails with [`BrokerError::Closed`].
    pub async fn close(&self) -> Result<(), BrokerError> {
        self.inner.closed.store(true, Ordering::SeqCst);
        let link = self.inner.link.lock().await.take();
        if let Some(link) = link {
            link.connection.close(200, "shutdown".into()).await?;
        }
        Ok(())
    }
}

impl Inner {
    /// The current connection, connecting once if there is none or it is
    /// broken.
    async fn link(&self) -> Result<Arc<Link>, BrokerError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(BrokerError::Closed);
        }
        let mut current = self.link.lock().await;
        if let Some(link) = current.as_ref()
            && link.connection.status().connected()
        {
            return Ok(Arc::clone(link));
        }
        let connection = Connection::connect(&self.url, ConnectionProperties::default()).await?;
        let publishers = (0..self.options.publisher_channels.max(1))
            .map(|_| tokio::sync::Mutex::new(None))
            .collect();
        let link = Arc::new(Link {
            connection,
            publishers,
        });
        *current = Some(Arc::clone(&link));
        Ok(link)
    }

    /// [`Inner::link`], retried with backoff until `deadline` (forever
    /// without one).
    async fn link_retrying(&self, deadline: Option<Instant>) -> Result<Arc<Link>, BrokerError> {
        let mut wait = self.options.reconnect_initial;
        loop {
            match self.link().await {
                Ok(link) => return Ok(link),
                Err(BrokerError::Closed) => return Err(BrokerError::Closed),
                Err(error) => {
                    if deadline.is_some_and(|deadline| Instant::now() + wait > deadline) {
                        return Err(error);
                    }
                    tracing::warn!(%error, retry_in = ?wait, "rabbitmq connect failed");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(self.options.reconnect_max);
                }
            }
        }
    }

    fn exchange(&self) -> ShortString {
        self.options.exchange.as_str().into()
    }

    /// Publishes every message and returns once all are confirmed.
    /// Messages not confirmed because the connection or channel failed are
    /// sent again (after a reconnect) until `publish_timeout`; a nack or a
    /// return ends the call with an error once the rest is settled.
    async fn publish_all(&self, messages: &[Outgoing]) -> Result<(), BrokerError> {
        let deadline = Instant::now() + self.options.publish_timeout;
        let mut pending: Vec<usize> = (0..messages.len()).collect();
        let mut wait = self.options.reconnect_initial;
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
            if let Some(BrokerError::Amqp(soft)) = &error
                && soft.is_amqp_soft_error()
            {
                return Err(error.unwrap_or(BrokerError::Closed));
            }
            if Instant::now() + wait > deadline {
                return Err(error.unwrap_or(BrokerError::Closed));
            }
            if let Some(error) = error {
                tracing::warn!(%error, unconfirmed = pending.len(), retry_in = ?wait, "publish interrupted; sending again");
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(self.options.reconnect_max);
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
                    *last_error = Some(BrokerError::Amqp(error));
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
                        last_error = Some(BrokerError::Amqp(error));
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

fn long_string(text: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(text.as_bytes().to_vec()))
}

fn header_str(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
        _ => None,
    }
}

fn header_i64(properties: &BasicProperties, name: &str) -> Option<i64> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongLongInt(value) => Some(*value),
        AMQPValue::LongInt(value) => Some(i64::from(*value)),
        AMQPValue::LongUInt(value) => Some(i64::from(*value)),
        _ => None,
    }
}

fn priority_queue(priority: Priority) -> &'static str {
    match priority {
        Priority::High => QUEUE_HIGH,
        Priority::Normal => QUEUE_NORMAL,
        Priority::Low => QUEUE_LOW,
    }
}

/// The message for `envelope`: JSON body, `delivery_mode` (2: persistent,
/// 1: transient when `queue.durable` is off), `message-id` = job id. A job
/// due now goes straight to its priority queue as that lean message, all
/// the consumer needs (the body carries the whole job), so the broker does
/// the work of a bare publish; a job due later goes to the delay stage with
/// `correlation-id`, `timestamp` and the headers the delay pump reads (task
/// type, attempt, due time, target queue).
fn outgoing(
    envelope: &JobEnvelope,
    now_ms: i64,
    delivery_mode: u8,
) -> Result<Outgoing, BrokerError> {
    let job = &envelope.job;
    let body = serde_json::to_vec(envelope).map_err(|error| BrokerError::Amqp(encode(error)))?;
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
fn encode(error: serde_json::Error) -> lapin::Error {
    lapin::Error::from(std::io::Error::other(error))
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
            _ => Err(BrokerError::Amqp(error)),
        },
    }
}

#[async_trait]
impl JobBroker for AmqpBroker {
    async fn declare(&self) -> Result<(), BrokerError> {
        let inner = &self.inner;
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

    async fn queue_depths(&self) -> Result<Vec<(&'static str, u64)>, BrokerError> {
        let link = self.inner.link().await?;
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

    async fn publish(&self, jobs: &[JobEnvelope]) -> Result<(), BrokerError> {
        let now_ms = Utc::now().timestamp_millis();
        let delivery_mode = self.inner.options.delivery_mode();
        let messages = jobs
            .iter()
            .map(|job| outgoing(job, now_ms, delivery_mode))
            .collect::<Result<Vec<_>, _>>()?;
        self.inner.publish_all(&messages).await
    }

    async fn consume(&self, prefetch: u16) -> Result<Box<dyn JobStream>, BrokerError> {
        let prefetch = if prefetch == 0 {
            self.inner.options.prefetch
        } else {
            prefetch
        };
        let mut stream = AmqpStream {
            inner: Arc::clone(&self.inner),
            prefetch,
            slots: Arc::new(Semaphore::new(usize::from(prefetch.max(1)))),
            session: None,
            stash: Default::default(),
            known_empty: [false; 3],
            closed: false,
        };
        stream.session = Some(stream.open_session().await?);
        Ok(Box::new(stream))
    }
}

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
struct AmqpStream {
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
        let mut wait = self.inner.options.reconnect_initial;
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
                    tracing::warn!(%error, retry_in = ?wait, "job consumer reconnect failed");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(self.inner.options.reconnect_max);
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
                tracing::warn!(reason, %detail, "poison message moved to the failed queue");
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
fn parse(body: &[u8]) -> Result<JobEnvelope, (&'static str, String)> {
    if let Ok(envelope) = serde_json::from_slice::<JobEnvelope>(body)
        && envelope.version == ENVELOPE_VERSION
    {
        return Ok(envelope);
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|error| ("malformed", error.to_string()))?;
    match value.get("version").and_then(serde_json::Value::as_str) {
        Some(ENVELOPE_VERSION) => {}
        Some(other) => return Err(("unsupported_version", format!("version {other:?}"))),
        None => return Err(("malformed", "missing field `version`".to_owned())),
    }
    serde_json::from_value(value).map_err(|error| ("malformed", error.to_string()))
}

/// Publishes a poison message unchanged to the failed queue with the
/// reason (the caller acks it).
async fn reject_poison(
    inner: &Inner,
    delivery: &LapinDelivery,
    reason: &str,
    detail: &str,
) -> Result<(), BrokerError> {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(HEADER_REASON.into(), long_string(reason));
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
struct Settler {
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
    fn new(channel: Channel, hold: usize) -> Settler {
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
    fn track(&self, tag: u64) {
        self.state().open.insert(tag, false);
    }

    /// Marks `tag` done and sees that an ack round takes it.
    async fn ack(&self, tag: u64) -> Result<(), BrokerError> {
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
                outcome = Err(BrokerError::Amqp(error));
            }
        }
        outcome
    }

    /// Requeues `tag` (awaited), then lets the deliveries behind it be
    /// acked.
    async fn requeue(&self, tag: u64) -> Result<(), BrokerError> {
        let nacked = self.channel.basic_nack(
            tag,
            BasicNackOptions {
                multiple: false,
                requeue: true,
            },
        );
        let outcome = match tokio::time::timeout(SETTLE_TIMEOUT, nacked).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(BrokerError::Amqp(error)),
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
struct AmqpHandle {
    inner: Arc<Inner>,
    job_id: Uuid,
    attempt: u32,
    delivery: LapinDelivery,
    settler: Arc<Settler>,
    /// The stream's slot, freed when the delivery is settled.
    permit: Mutex<Option<OwnedSemaphorePermit>>,
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
        headers.insert(HEADER_REASON.into(), long_string(&letter.reason));
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
            let json = serde_json::to_string(result).map_err(|e| BrokerError::Amqp(encode(e)))?;
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

/// Consumes `taskqueue.jobs.delayed` until the broker is dropped, moving
/// each job one step down the ladder or, when nearly due, to its priority
/// queue.
async fn delay_pump(inner: Weak<Inner>, mut alive: watch::Receiver<()>) {
    let mut wait = Duration::from_millis(100);
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let consumer = match open_pump(&strong).await {
            Ok(consumer) => consumer,
            Err(BrokerError::Closed) => return,
            Err(error) => {
                let max = strong.options.reconnect_max;
                drop(strong);
                tracing::warn!(%error, retry_in = ?wait, "delay pump cannot consume; retrying");
                tokio::select! {
                    _ = alive.changed() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(max);
                continue;
            }
        };
        wait = strong.options.reconnect_initial;
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
            if let Err(error) = reject_poison(inner, &delivery, "unroutable", &detail).await {
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

    #[test]
    fn poison_bodies_are_told_apart() {
        let reason = |body: &[u8]| parse(body).err().map(|(reason, _)| reason);
        assert_eq!(reason(b"not json"), Some("malformed"));
        assert_eq!(
            reason(br#"{"version":"9.9","job":{}}"#),
            Some("unsupported_version")
        );
        assert_eq!(reason(br#"{"version":"1.0"}"#), Some("malformed"));
        assert_eq!(reason(br#"{"job":{}}"#), Some("malformed"));
    }

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
