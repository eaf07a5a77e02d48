//! Reading the execution durations back: the `metrics:duration:{task}`
//! samples the metrics flush writes (member `<job id>:<duration ms>`,
//! score the completion instant in epoch ms, see ARCHITECTURE.md), read
//! by completion time with one `ZRANGEBYSCORE`, and the percentiles of a
//! set of samples; and the daily counts of `metrics:executions:{date}` and
//! `metrics:failures:{date}` ([`DurationStore::daily_counts`]).

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use super::{StoreError, memory::MemoryStore, redis::RedisStore};
use crate::domain::TaskTypeId;

/// Most samples one read returns (the set itself is capped by
/// `monitoring.metrics_max_samples`, 10,000 by default).
pub const MAX_READ: usize = 100_000;

/// One execution's duration, as kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationPoint {
    /// When the execution completed (the sample's score).
    pub completed_at: DateTime<Utc>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
}

/// The samples of a task since an instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DurationRead {
    /// Readable samples, oldest first.
    pub points: Vec<DurationPoint>,
    /// Members whose duration could not be read (skipped).
    pub unreadable: usize,
}

/// Percentiles of a set of durations (nearest rank), in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationSummary {
    /// Samples summarised.
    pub count: usize,
    /// Median.
    pub p50_ms: u64,
    /// 90th percentile.
    pub p90_ms: u64,
    /// 99th percentile.
    pub p99_ms: u64,
    /// Longest.
    pub max_ms: u64,
}

/// The nearest-rank percentiles of `points`; `None` when there are none.
pub fn summarize(points: &[DurationPoint]) -> Option<DurationSummary> {
    let mut sorted: Vec<u64> = points.iter().map(|p| p.duration_ms).collect();
    sorted.sort_unstable();
    let count = sorted.len();
    let max_ms = *sorted.last()?;
    // Nearest rank: the smallest value with at least p% of the samples at
    // or below it.
    let rank = |p: usize| sorted[(count * p).div_ceil(100).clamp(1, count) - 1];
    Some(DurationSummary {
        count,
        p50_ms: rank(50),
        p90_ms: rank(90),
        p99_ms: rank(99),
        max_ms,
    })
}

/// The duration in a sample's member `<job id>:<duration ms>`.
fn member_duration(member: &str) -> Option<u64> {
    member.rsplit_once(':').and_then(|(_, ms)| ms.parse().ok())
}

fn point(score_ms: i64, member: &str) -> Option<DurationPoint> {
    Some(DurationPoint {
        completed_at: DateTime::from_timestamp_millis(score_ms)?,
        duration_ms: member_duration(member)?,
    })
}

/// Where durations are read from.
#[async_trait]
pub trait DurationStore: Send + Sync + 'static {
    /// The samples of `task` completed at or after `since`, oldest first;
    /// at most `limit` (the oldest ones). One round trip.
    async fn durations_since(
        &self,
        task: &TaskTypeId,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<DurationRead, StoreError>;
    /// The executions and failures the metrics flush counted for `task` on
    /// each of `days`, in the same order. One round trip.
    async fn daily_counts(
        &self,
        task: &TaskTypeId,
        days: &[NaiveDate],
    ) -> Result<Vec<DailyCount>, StoreError>;
}

/// One day's counts of a task (UTC days, every replica's flushes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyCount {
    /// The day.
    pub date: NaiveDate,
    /// Executions completed (successes and failed attempts).
    pub executions: u64,
    /// Attempts that failed.
    pub failures: u64,
}

#[async_trait]
impl DurationStore for RedisStore {
    async fn durations_since(
        &self,
        task: &TaskTypeId,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<DurationRead, StoreError> {
        let mut connection = self.connection();
        let samples: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys().metrics_duration(task))
            .arg(since.timestamp_millis())
            .arg("+inf")
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(limit.max(1))
            .query_async(&mut connection)
            .await?;
        let mut read = DurationRead::default();
        for (member, score) in samples {
            // Scores are whole epoch milliseconds.
            match point(score as i64, &member) {
                Some(point) => read.points.push(point),
                None => read.unreadable += 1,
            }
        }
        Ok(read)
    }

    async fn daily_counts(
        &self,
        task: &TaskTypeId,
        days: &[NaiveDate],
    ) -> Result<Vec<DailyCount>, StoreError> {
        if days.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.keys();
        let mut pipe = redis::pipe();
        for day in days {
            pipe.hget(keys.metrics_executions(*day), task.as_str());
            pipe.hget(keys.metrics_failures(*day), task.as_str());
        }
        let mut connection = self.connection();
        let counts: Vec<Option<u64>> = pipe.query_async(&mut connection).await?;
        Ok(days
            .iter()
            .zip(counts.chunks(2))
            .map(|(date, pair)| DailyCount {
                date: *date,
                executions: pair.first().copied().flatten().unwrap_or(0),
                failures: pair.get(1).copied().flatten().unwrap_or(0),
            })
            .collect())
    }
}

#[async_trait]
impl DurationStore for MemoryStore {
    async fn daily_counts(
        &self,
        task: &TaskTypeId,
        days: &[NaiveDate],
    ) -> Result<Vec<DailyCount>, StoreError> {
        Ok(days
            .iter()
            .map(|date| DailyCount {
                date: *date,
                executions: self.executions(*date, task),
                failures: self.failures(*date, task),
            })
            .collect())
    }

    async fn durations_since(
        &self,
        task: &TaskTypeId,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<DurationRead, StoreError> {
        let since_ms = since.timestamp_millis();
        let mut read = DurationRead::default();
        for (ms, member) in self
            .durations(task)
            .into_iter()
            .filter(|(ms, _)| *ms >= since_ms)
            .take(limit.max(1))
        {
            match point(ms, &member) {
                Some(point) => read.points.push(point),
                None => read.unreadable += 1,
            }
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(durations: &[u64], expected: Option<(u64, u64, u64, u64)>) {
        let at = DateTime::from_timestamp_millis(0).unwrap();
        let points: Vec<DurationPoint> = durations
            .iter()
            .map(|&duration_ms| DurationPoint {
                completed_at: at,
                duration_ms,
            })
            .collect();
        let summary = summarize(&points).map(|s| (s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms));
        assert_eq!(summary, expected, "{durations:?}");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        check(&[], None);
        check(&[7], Some((7, 7, 7, 7)));
        check(&[30, 10, 20], Some((20, 30, 30, 30)));
        let hundred: Vec<u64> = (1..=100).rev().collect();
        check(&hundred, Some((50, 90, 99, 100)));
        let ten: Vec<u64> = (1..=10).map(|n| n * 10).collect();
        check(&ten, Some((50, 90, 100, 100)));
    }

    #[test]
    fn members_carry_the_duration_after_the_job_id() {
        assert_eq!(
            member_duration("6c1f0c5e-8f0e-4b9a-9d3e-2a7b5c4d1e01:1234"),
            Some(1234)
        );
        assert_eq!(member_duration("no-duration"), None);
        assert_eq!(member_duration("job:-5"), None);
    }
}
