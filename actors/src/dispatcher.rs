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
//!
//! Heartbeats ([`Heartbeats`]): every [`BEAT_EVERY`] the loop beats its
//! own entry on the health board (a lane whose thread is blocked stops
//! beating), and the entry of its executors unless one of them has held
//! its job longer than any job can take (`stuck_after`): `/health` then
//! shows that lane's dispatcher or executors `stuck`.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use actix::Addr;
use tokio::sync::{mpsc::UnboundedReceiver, watch};

use crate::{
    broker::JobStream,
    executor::{AbandonJob, ExecuteJob, ExecutorActor},
    health::HealthBoard,
};

/// How often a dispatcher beats.
pub const BEAT_EVERY: Duration = Duration::from_secs(1);

/// Where a dispatcher beats, and when its executors count as stuck.
pub struct Heartbeats {
    /// The board.
    pub board: HealthBoard,
    /// The dispatcher's entry (`dispatcher.<lane>`).
    pub dispatcher: String,
    /// Its executors' entry (`executors.<lane>`).
    pub executors: String,
    /// Longer than any job can hold an executor (token wait, call,
    /// recording, with margin).
    pub stuck_after: Duration,
}

impl Heartbeats {
    /// One beat: the dispatcher always, the executors unless one is over
    /// `stuck_after` (`busy_since`: when each busy executor took its job).
    fn beat(&self, busy_since: &BTreeMap<usize, tokio::time::Instant>) {
        self.board.beat(&self.dispatcher);
        let over = busy_since
            .values()
            .any(|since| since.elapsed() > self.stuck_after);
        if !over {
            self.board.beat(&self.executors);
        }
    }
}

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
    /// Where it beats.
    pub heartbeats: Heartbeats,
}

impl Dispatcher {
    /// Runs until `stop` turns true (or the stream ends), then drains.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut idle: BTreeSet<usize> = (0..self.executors.len()).collect();
        let mut busy: BTreeSet<usize> = BTreeSet::new();
        let mut busy_since: BTreeMap<usize, tokio::time::Instant> = BTreeMap::new();
        let mut beat = tokio::time::interval(BEAT_EVERY);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        'run: loop {
            while let Ok(index) = self.idle.try_recv() {
                busy.remove(&index);
                busy_since.remove(&index);
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
                        busy_since.remove(&index);
                        idle.insert(index);
                    }
                    _ = beat.tick() => self.heartbeats.beat(&busy_since),
                }
                continue;
            };
            // The wait for a delivery is kept across beats (not restarted).
            let next = {
                let mut next = std::pin::pin!(self.stream.next());
                loop {
                    tokio::select! {
                        biased;
                        changed = stop.changed() => {
                            if changed.is_err() {
                                break 'run;
                            }
                            continue 'run;
                        }
                        _ = beat.tick() => self.heartbeats.beat(&busy_since),
                        next = &mut next => break next,
                    }
                }
            };
            let Some(delivery) = next else {
                tracing::warn!("job stream ended; dispatcher stopping");
                break;
            };
            idle.remove(&index);
            busy.insert(index);
            busy_since.insert(index, tokio::time::Instant::now());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executors_over_their_time_do_not_beat() {
        let board = HealthBoard::default();
        let heartbeats = Heartbeats {
            board: board.clone(),
            dispatcher: "dispatcher.0".to_owned(),
            executors: "executors.0".to_owned(),
            stuck_after: Duration::from_secs(1),
        };
        board.register("dispatcher.0", Duration::from_millis(500));
        board.register("executors.0", Duration::from_millis(500));
        std::thread::sleep(Duration::from_millis(600));
        let now = tokio::time::Instant::now();
        let fresh = BTreeMap::from([(0, now)]);
        heartbeats.beat(&fresh);
        let report = board.report();
        assert_eq!(report["dispatcher.0"].status, "running");
        assert_eq!(report["executors.0"].status, "running");

        std::thread::sleep(Duration::from_millis(600));
        let held_too_long = BTreeMap::from([(0, now), (1, now - Duration::from_secs(2))]);
        heartbeats.beat(&held_too_long);
        let report = board.report();
        assert_eq!(report["dispatcher.0"].status, "running");
        assert_eq!(report["executors.0"].status, "stuck");
    }
}
