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
//!
//! The adapter by concern: `connect` (the connection and reconnects,
//! with `backoff`), `declare` (topology), `publish`, `consume`,
//! `settle` (acks, requeues, dead letters) and `delay` (the ladder and
//! its pump).

mod backoff;
mod connect;
mod consume;
mod declare;
mod delay;
mod publish;
mod settle;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, LongString};
use tokio::sync::watch;

use self::connect::Inner;
use self::consume::AmqpStream;
pub use self::delay::{ladder_queue, ladder_steps};
use self::publish::outgoing;
use super::{BrokerError, EXCHANGE, JobBroker, JobStream, QUEUE_HIGH, QUEUE_LOW, QUEUE_NORMAL};
use crate::domain::{JobEnvelope, Priority};

impl From<lapin::Error> for BrokerError {
    fn from(error: lapin::Error) -> Self {
        BrokerError::Amqp {
            refused: error.is_amqp_soft_error(),
            detail: error.to_string(),
        }
    }
}

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
pub(super) const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle consumer checks that its channels are alive.
pub(super) const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(1);

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

#[async_trait]
impl JobBroker for AmqpBroker {
    async fn declare(&self) -> Result<(), BrokerError> {
        declare::declare(&self.inner).await
    }

    async fn queue_depths(&self) -> Result<Vec<(&'static str, u64)>, BrokerError> {
        declare::queue_depths(&self.inner).await
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
        let stream = AmqpStream::open(Arc::clone(&self.inner), prefetch).await?;
        Ok(Box::new(stream))
    }
}
