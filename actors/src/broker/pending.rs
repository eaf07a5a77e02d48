//! [`RecordPending`]: the distributor's broker. It publishes through
//! another [`JobBroker`] and, once a batch is confirmed, records each of
//! its jobs as `pending` in the job results
//! ([`JobResultStore::record_pending`]), so `GET /jobs/{job_id}` answers
//! for a job from the moment it is queued, not only once it has started.
//!
//! The record is a view, not part of delivery: when it cannot be written
//! (Redis unreachable) the publish still stands, the failure is logged,
//! and the job's record appears when it is claimed.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;

use super::{BrokerError, JobBroker, JobStream};
use crate::{domain::JobEnvelope, store::results::JobResultStore};

/// A [`JobBroker`] that records what it got confirmed as `pending`.
pub struct RecordPending {
    inner: Arc<dyn JobBroker>,
    results: Arc<dyn JobResultStore>,
    retention: Duration,
}

impl RecordPending {
    /// Publishes through `inner`, records in `results`, kept for
    /// `retention` (`monitoring.result_retention`).
    pub fn new(
        inner: Arc<dyn JobBroker>,
        results: Arc<dyn JobResultStore>,
        retention: Duration,
    ) -> Self {
        RecordPending {
            inner,
            results,
            retention,
        }
    }
}

#[async_trait]
impl JobBroker for RecordPending {
    async fn declare(&self) -> Result<(), BrokerError> {
        self.inner.declare().await
    }

    async fn publish(&self, jobs: &[JobEnvelope]) -> Result<(), BrokerError> {
        self.inner.publish(jobs).await?;
        if let Err(error) = self.results.record_pending(jobs, self.retention).await {
            tracing::warn!(
                %error,
                jobs = jobs.len(),
                "published jobs not recorded as pending; their records appear when they start"
            );
        }
        Ok(())
    }

    async fn consume(&self, prefetch: u16) -> Result<Box<dyn JobStream>, BrokerError> {
        self.inner.consume(prefetch).await
    }

    async fn queue_depths(&self) -> Result<Vec<(&'static str, u64)>, BrokerError> {
        self.inner.queue_depths().await
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::{
        broker::memory::MemoryBroker,
        distributor::job_envelope,
        domain::{JobSource, Status, TaskType, UserId},
        store::memory::MemoryStore,
    };

    #[tokio::test]
    async fn a_confirmed_job_is_recorded_pending() {
        let store = Arc::new(MemoryStore::new());
        let broker = RecordPending::new(
            Arc::new(MemoryBroker::new()),
            store.clone(),
            Duration::from_secs(60),
        );
        let task: TaskType = serde_json::from_value(serde_json::json!({
            "id": "digest", "name": "Digest",
            "interval": {"type": "daily", "value": 1, "at_time": "09:00"},
            "timeout": "10s",
            "config": {"endpoint": "http://127.0.0.1:1/x", "method": "POST"}
        }))
        .unwrap();
        let at = Utc.with_ymd_and_hms(2026, 12, 3, 9, 0, 0).unwrap();
        let user = UserId::parse("u1").unwrap();
        let envelope = job_envelope(&task, &user, at, at, None, JobSource::Scheduler, "test");
        broker
            .publish(std::slice::from_ref(&envelope))
            .await
            .unwrap();

        let kept = store.job_results(envelope.job.id).await.unwrap().unwrap();
        assert_eq!(kept.latest.result.status, Status::Pending);
        assert_eq!(kept.latest.result.next_attempt, Some(at));
        assert_eq!(kept.latest.attempt, 1);
        assert!(kept.attempts.is_empty());
    }
}
