//! # taskqueue-actors
//!
//! Everything taskqueue does, minus HTTP: the spec's data model, the
//! schedule calculus, the ports to shared state and to the job broker with
//! their adapters, and the supervised actors that move jobs along.
//!
//! # Layout
//!
//! - [`domain`]: the spec's types (TaskType, Job, UserPreference, ...),
//!   parsed once at the edge.
//! - [`catalog`]: the task definitions in force, swapped whole on reload.
//! - [`schedule`]: pure fire-time calculus (time zones, DST, misfires).
//! - [`slot`]: stable placement of a user inside the distribution window.
//! - [`fanout`]: the record of one fan-out run and its slot arithmetic.
//! - [`store`]: the state-store port; Redis and in-process adapters.
//! - [`broker`]: the job-broker port; RabbitMQ and in-process adapters.
//! - [`health`]: dependency probes, actor heartbeats, quarantined records.
//! - [`prometheus`]: the Prometheus families `/metrics` exposes.
//! - [`clock`]: where "now" comes from (injectable for tests).
//! - [`pause`]: operator pauses of a task, and each replica's copy.
//! - [`preview`]: a task's next fires and one user's coming jobs.
//! - [`messages`]: messages shared by several actors; [`error`] their
//!   error type.
//! - The actors, one file each: [`scheduler`], [`distributor`],
//!   [`rate_limiter`], [`metrics`], and [`executor`] (a folder: the actor,
//!   running one job, the HTTP call, outcomes and retries); [`dispatcher`]
//!   feeds the executors from the broker; [`pipeline`] starts the tree (the
//!   `Pipeline`).
//!
//! **Invariant:** this crate knows nothing about HTTP serving (no
//! actix-web); the service crate adapts its messages to the API.

pub mod batcher;
pub mod broker;
pub mod catalog;
pub mod clock;
pub mod dispatcher;
pub mod distributor;
pub mod domain;
pub mod error;
pub mod executor;
pub mod fanout;
pub mod health;
pub mod messages;
pub mod metrics;
pub mod pause;
pub mod pipeline;
pub mod preview;
pub mod prometheus;
pub mod rate_limiter;
pub mod schedule;
pub mod scheduler;
pub mod slot;
pub mod store;
