//! The job-broker port: publish with confirms, consume with ack, delay,
//! dead-letter.
//!
//! Two implementations: [`amqp::AmqpBroker`] (RabbitMQ via lapin) and
//! [`memory::MemoryBroker`] (embedded mode and fast actor tests).

pub mod amqp;
pub mod memory;
pub mod pending;

use async_trait::async_trait;

use crate::domain::{DeadLetterReason, ExecutionResult, JobEnvelope};

/// The exchange every job is published through.
pub const EXCHANGE: &str = "taskqueue";
/// Queue of high-priority jobs.
pub const QUEUE_HIGH: &str = "taskqueue.jobs.high";
/// Queue of normal-priority jobs.
pub const QUEUE_NORMAL: &str = "taskqueue.jobs.normal";
/// Queue of low-priority jobs.
pub const QUEUE_LOW: &str = "taskqueue.jobs.low";
/// Where jobs wait for their `execute_after`.
pub const QUEUE_DELAYED: &str = "taskqueue.jobs.delayed";
/// The dead-letter queue.
pub const QUEUE_FAILED: &str = "taskqueue.jobs.failed";

/// Failures of the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The AMQP connection or channel failed; `detail` is the client's
    /// error text (for logs).
    #[error("amqp: {detail}")]
    Amqp {
        /// What failed.
        detail: String,
        /// A channel-level refusal (no such exchange, access refused): it
        /// comes back the same on every try.
        refused: bool,
    },
    /// The broker refused a publish (negative confirm).
    #[error("broker nacked the publish of job {0}")]
    PublishNacked(uuid::Uuid),
    /// A mandatory publish could not be routed to any queue.
    #[error("job {0} was returned unroutable")]
    Unroutable(uuid::Uuid),
    /// Existing queues were declared with other arguments.
    #[error(
        "queue {queue} exists with other arguments than this configuration asks for ({detail}); delete it or change queue.type"
    )]
    TopologyMismatch {
        /// The queue.
        queue: String,
        /// What the broker said.
        detail: String,
    },
    /// The broker (or its in-process twin) is shut down.
    #[error("broker closed")]
    Closed,
}

/// Why a message went to the dead-letter queue.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Why, put in the `x-taskqueue-reason` header.
    pub reason: DeadLetterReason,
    /// The last attempt's outcome, when the job ran.
    pub result: Option<ExecutionResult>,
}

/// Publishes jobs and opens consumers.
#[async_trait]
pub trait JobBroker: Send + Sync + 'static {
    /// Declares exchanges and queues; idempotent.
    async fn declare(&self) -> Result<(), BrokerError>;
    /// Publishes every envelope and returns once all are confirmed. Jobs
    /// whose `execute_after` is in the future wait in the delay stage and
    /// reach their priority queue when due.
    async fn publish(&self, jobs: &[JobEnvelope]) -> Result<(), BrokerError>;
    /// Opens a consumer over the priority queues (high before normal
    /// before low) with `prefetch` unacknowledged deliveries at most.
    async fn consume(&self, prefetch: u16) -> Result<Box<dyn JobStream>, BrokerError>;
    /// Messages waiting in each queue (ready, not counting deliveries in
    /// hand), by queue name: the three priority queues, the delay stage
    /// ([`QUEUE_DELAYED`], its ladder included) and [`QUEUE_FAILED`].
    async fn queue_depths(&self) -> Result<Vec<(&'static str, u64)>, BrokerError>;
}

/// A stream of deliveries. Malformed messages never come out of it: the
/// implementation dead-letters them with the reason and carries on.
#[async_trait]
pub trait JobStream: Send {
    /// The next delivery; `None` once the stream is closed.
    async fn next(&mut self) -> Option<Delivery>;
    /// Stops taking new deliveries (those in hand can still be settled).
    async fn close(&mut self);
}

/// A job handed to a worker, to be settled exactly once.
pub struct Delivery {
    /// The message.
    pub envelope: JobEnvelope,
    /// The broker had delivered it before (it may have run).
    pub redelivered: bool,
    /// Settles the delivery.
    pub handle: Box<dyn DeliveryHandle>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("job_id", &self.envelope.job.id)
            .field("redelivered", &self.redelivered)
            .finish()
    }
}

/// How a delivery is settled.
#[async_trait]
pub trait DeliveryHandle: Send + Sync {
    /// Done with it: remove it from the queue.
    async fn ack(&self) -> Result<(), BrokerError>;
    /// Put it back for another consumer (shutdown, lost claim).
    async fn requeue(&self) -> Result<(), BrokerError>;
    /// Publish it, unchanged, to the dead-letter queue with the reason
    /// (confirmed), then remove it from its queue.
    async fn dead_letter(&self, letter: DeadLetter) -> Result<(), BrokerError>;
}
