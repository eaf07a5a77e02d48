//! ExecutionBatcher: coalesces the claim and finish writes of the jobs in
//! flight on one arbiter into one store pipeline per round.
//!
//! Each executor arbiter runs one batcher (two tasks on the arbiter's own
//! thread, so handing a write over costs no thread wake-up). A request is
//! sent as soon as the batcher task runs, together with every request
//! queued by then (up to [`MAX_BATCH`]), as one `claim_executions` /
//! `finish_executions` call: with one job in flight a round is one job,
//! with fifty finishing together it is up to fifty. Rounds do not wait for
//! each other (they share the multiplexed Redis connection, in flight
//! together), and no request waits for a timer or for a round to fill, so
//! a success read from an endpoint is in Redis one round trip later: that
//! round trip is the whole window in which a crash can make the job run
//! again (RELIABILITY.md).
//!
//! Per-job semantics are kept: each claim and finish runs its own script,
//! as if alone, and each caller gets its own outcome. A finish answers only
//! once its pipeline is acknowledged by Redis, so the executor's invariant
//! "ack only after the outcome is recorded" holds. A failed round fails
//! every request in it (the executors requeue those jobs; claims and
//! finishes are idempotent per execution id).

use std::{panic::AssertUnwindSafe, sync::Arc};

use actix::ArbiterHandle;
use futures::{FutureExt, StreamExt, stream::FuturesUnordered};
use tokio::sync::{mpsc, oneshot};

use crate::{
    error::PipelineError,
    store::{ClaimOutcome, ClaimStore, ExecutionClaim, ExecutionFinish, StoreError},
};

/// Most requests sent in one round.
pub const MAX_BATCH: usize = 128;

type Reply<T> = oneshot::Sender<Result<T, String>>;

/// The handle executors write through. Cheap to clone.
#[derive(Clone)]
pub struct ExecutionBatcher {
    claims: mpsc::UnboundedSender<(ExecutionClaim, Reply<ClaimOutcome>)>,
    finishes: mpsc::UnboundedSender<(ExecutionFinish, Reply<()>)>,
}

impl ExecutionBatcher {
    /// Starts a batcher's rounds on `arbiter`, writing to `store`.
    pub fn start(arbiter: &ArbiterHandle, store: Arc<dyn ClaimStore>) -> ExecutionBatcher {
        let (claims, claim_rx) = mpsc::unbounded_channel();
        let (finishes, finish_rx) = mpsc::unbounded_channel();
        let for_claims = store.clone();
        arbiter.spawn(rounds(claim_rx, move |batch: Vec<ExecutionClaim>| {
            let store = for_claims.clone();
            async move { store.claim_executions(&batch).await }
        }));
        arbiter.spawn(rounds(finish_rx, move |batch: Vec<ExecutionFinish>| {
            let store = store.clone();
            async move {
                store
                    .finish_executions(&batch)
                    .await
                    .map(|()| vec![(); batch.len()])
            }
        }));
        ExecutionBatcher { claims, finishes }
    }

    /// [`ClaimStore::claim_execution`], in the next round.
    pub async fn claim(&self, claim: ExecutionClaim) -> Result<ClaimOutcome, PipelineError> {
        let (reply, answer) = oneshot::channel();
        self.claims
            .send((claim, reply))
            .map_err(|_| PipelineError::Batch("the claim batcher stopped".to_owned()))?;
        answered(answer.await)
    }

    /// [`ClaimStore::finish_execution`], in the next round; answers once
    /// the round is recorded.
    pub async fn finish(&self, finish: ExecutionFinish) -> Result<(), PipelineError> {
        let (reply, answer) = oneshot::channel();
        self.finishes
            .send((finish, reply))
            .map_err(|_| PipelineError::Batch("the finish batcher stopped".to_owned()))?;
        answered(answer.await)
    }
}

fn answered<T>(
    answer: Result<Result<T, String>, oneshot::error::RecvError>,
) -> Result<T, PipelineError> {
    match answer {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(reason)) => Err(PipelineError::Batch(reason)),
        Err(_) => Err(PipelineError::Batch("the round was dropped".to_owned())),
    }
}

/// Runs rounds until every handle is dropped: whenever a request comes,
/// sends it at once together with whatever else is queued (up to
/// [`MAX_BATCH`]) as one call, without waiting for the rounds already in
/// flight, and answers each request from its call's outcomes (in order).
/// Rounds in flight complete concurrently on the multiplexed connection,
/// so a request waits one store round trip, never for another round.
async fn rounds<R, O, F, Fut>(mut queue: mpsc::UnboundedReceiver<(R, Reply<O>)>, mut send: F)
where
    F: FnMut(Vec<R>) -> Fut,
    Fut: Future<Output = Result<Vec<O>, StoreError>>,
{
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            // Answering a finished round is cheap; it goes first.
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            next = queue.recv() => {
                let Some((request, reply)) = next else { break };
                let mut requests = Vec::with_capacity(4);
                let mut replies = Vec::with_capacity(4);
                requests.push(request);
                replies.push(reply);
                while requests.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok((request, reply)) => {
                            requests.push(request);
                            replies.push(reply);
                        }
                        Err(_) => break,
                    }
                }
                in_flight.push(round(send(requests), replies));
            }
        }
    }
    while in_flight.next().await.is_some() {}
}

/// Awaits one round's call and answers its requests.
async fn round<O, Fut>(call: Fut, replies: Vec<Reply<O>>)
where
    Fut: Future<Output = Result<Vec<O>, StoreError>>,
{
    let count = replies.len();
    // A panic in the store (a bug) fails this round's requests, not the
    // batcher.
    match AssertUnwindSafe(call).catch_unwind().await {
        Ok(Ok(outcomes)) if outcomes.len() == count => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Ok(Ok(outcomes)) => {
            let reason = format!("{count} requests answered {} times", outcomes.len());
            for reply in replies {
                let _ = reply.send(Err(reason.clone()));
            }
        }
        Ok(Err(err)) => {
            let reason = err.to_string();
            for reply in replies {
                let _ = reply.send(Err(reason.clone()));
            }
        }
        Err(_) => {
            tracing::error!(requests = count, "store panicked in a batched round");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        domain::{TaskTypeId, UserId},
        store::memory::MemoryStore,
    };

    fn claim(job: uuid::Uuid) -> ExecutionClaim {
        ExecutionClaim {
            task_type_id: TaskTypeId::parse("report").unwrap(),
            user_id: UserId::parse("alice").unwrap(),
            job_id: job,
            execution: uuid::Uuid::new_v4(),
            job_ttl: Duration::from_secs(30),
            run_ttl: None,
            attempt: 1,
            execute_after_ms: 0,
            require_enabled: false,
            result: None,
        }
    }

    #[actix::test]
    async fn concurrent_requests_get_their_own_outcomes() {
        let store: Arc<dyn ClaimStore> = Arc::new(MemoryStore::new());
        let batcher = ExecutionBatcher::start(&actix::Arbiter::current(), store.clone());
        // A job whose success is recorded: claimed and finished once.
        let done = uuid::Uuid::new_v4();
        let earlier = claim(done);
        assert!(matches!(
            store.claim_execution(&earlier).await.unwrap(),
            ClaimOutcome::Claimed { .. }
        ));
        store
            .finish_execution(&ExecutionFinish {
                task_type_id: earlier.task_type_id.clone(),
                user_id: earlier.user_id.clone(),
                job_id: done,
                execution: earlier.execution,
                run_claimed: false,
                success_ttl: Some(Duration::from_secs(60)),
                next: None,
                result: None,
            })
            .await
            .unwrap();
        let fresh = uuid::Uuid::new_v4();
        let first = claim(fresh);
        let (a, b, c) = futures::join!(
            batcher.claim(first.clone()),
            batcher.claim(claim(done)),
            batcher.claim(claim(fresh)),
        );
        assert!(matches!(a.unwrap(), ClaimOutcome::Claimed { .. }));
        assert_eq!(b.unwrap(), ClaimOutcome::AlreadySucceeded);
        assert_eq!(c.unwrap(), ClaimOutcome::JobBusy);
        batcher
            .finish(ExecutionFinish {
                task_type_id: first.task_type_id.clone(),
                user_id: first.user_id.clone(),
                job_id: fresh,
                execution: first.execution,
                run_claimed: false,
                success_ttl: Some(Duration::from_secs(60)),
                next: None,
                result: None,
            })
            .await
            .unwrap();
        assert_eq!(store.succeeded(&[fresh]).await.unwrap(), vec![true]);
    }

    #[actix::test]
    async fn a_request_is_sent_while_an_earlier_round_is_in_flight() {
        let (queue, receiver) = mpsc::unbounded_channel::<(u32, Reply<u32>)>();
        let (started, is_started) = oneshot::channel::<()>();
        let (release, gate) = oneshot::channel::<()>();
        let mut started = Some(started);
        let mut gate = Some(gate);
        actix::spawn(rounds(receiver, move |batch: Vec<u32>| {
            // The first round is held until released.
            if let Some(started) = started.take() {
                let _ = started.send(());
            }
            let gate = gate.take();
            async move {
                if let Some(gate) = gate {
                    let _ = gate.await;
                }
                Ok(batch.iter().map(|n| n * 10).collect())
            }
        }));
        let (first_reply, mut first) = oneshot::channel();
        queue.send((1, first_reply)).unwrap();
        is_started.await.unwrap();
        let (second_reply, second) = oneshot::channel();
        queue.send((2, second_reply)).unwrap();
        let second = tokio::time::timeout(Duration::from_secs(10), second)
            .await
            .expect("the second request waited for the first round");
        assert_eq!(second.unwrap(), Ok(20));
        assert!(first.try_recv().is_err(), "the first round is still held");
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Ok(10));
    }
}
