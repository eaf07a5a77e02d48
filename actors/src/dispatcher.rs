//! The dispatcher: pulls deliveries from the broker and hands each to an
//! idle executor.
//!
//! It is a task, not an actor: it owns the [`JobStream`] and a set of idle
//! executor numbers, fed back by the executors on a channel. It takes a
//! delivery only when an executor is idle, so at most `pool_size` jobs are
//! in flight per process and nothing waits in a mailbox.
//!
//! On stop it closes the stream (no new deliveries), waits up to the
//! shutdown timeout for the executors to finish, then tells the busy ones
//! to abandon their jobs, which requeues them, and drops the stream.

use std::{collections::BTreeSet, time::Duration};

use actix::Addr;
use tokio::sync::{mpsc::UnboundedReceiver, watch};

use crate::{
    broker::JobStream,
    executor::{AbandonJob, ExecuteJob, ExecutorActor},
};

/// Feeds executors from a job stream.
pub struct Dispatcher {
    /// The pool, indexed by executor number.
    pub executors: Vec<Addr<ExecutorActor>>,
    /// Executor numbers that became idle (each executor sends its own).
    pub idle: UnboundedReceiver<usize>,
    /// The deliveries.
    pub stream: Box<dyn JobStream>,
    /// How long in-flight jobs may finish after a stop.
    pub shutdown_timeout: Duration,
}

impl Dispatcher {
    /// Runs until `stop` turns true (or the stream ends), then drains.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut idle: BTreeSet<usize> = (0..self.executors.len()).collect();
        let mut busy: BTreeSet<usize> = BTreeSet::new();
        loop {
            while let Ok(index) = self.idle.try_recv() {
                busy.remove(&index);
                idle.insert(index);
            }
            if *stop.borrow() {
                break;
            }
            let Some(index) = idle.first().copied() else {
                tokio::select! {
                    changed = stop.changed() => if changed.is_err() { break },
                    Some(index) = self.idle.recv() => {
                        busy.remove(&index);
                        idle.insert(index);
                    }
                }
                continue;
            };
            let next = tokio::select! {
                biased;
                changed = stop.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    continue;
                }
                next = self.stream.next() => next,
            };
            let Some(delivery) = next else {
                tracing::warn!("job stream ended; dispatcher stopping");
                break;
            };
            idle.remove(&index);
            busy.insert(index);
            self.executors[index].do_send(ExecuteJob { delivery });
        }
        self.drain(busy).await;
    }

    async fn drain(mut self, mut busy: BTreeSet<usize>) {
        self.stream.close().await;
        tracing::info!(
            in_flight = busy.len(),
            "stopped taking jobs; letting in-flight ones finish"
        );
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        while !busy.is_empty() {
            tokio::select! {
                Some(index) = self.idle.recv() => { busy.remove(&index); }
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        if !busy.is_empty() {
            tracing::warn!(
                jobs = busy.len(),
                "shutdown timeout reached; requeueing unfinished jobs"
            );
            for index in &busy {
                if let Err(err) = self.executors[*index].send(AbandonJob).await {
                    tracing::warn!(executor = index, error = %err, "executor gone; its job is requeued by the broker");
                }
            }
        }
        drop(self.stream);
    }
}
