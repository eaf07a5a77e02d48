//! The samples behind the overview's throughput chart: every
//! [`SAMPLE_EVERY`] the process's outcome counters (the `/stats` ones) are
//! read, and the last [`KEPT`] samples (15 minutes) are kept in memory.
//! `GET /ui/api/throughput` turns consecutive samples into executed/s and
//! failed/s.

use std::{collections::VecDeque, sync::Mutex, time::Duration};

use actix::Addr;
use actors::metrics::{GetStats, MetricsActor};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// Interval between two samples.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// Samples kept: 15 minutes of them, plus the one the first rate needs.
pub const KEPT: usize = 15 * 60 / 10 + 1;

/// One reading of the counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When it was read.
    pub at: DateTime<Utc>,
    /// Attempts that reached an outcome, since the process started.
    pub processed: u64,
    /// Attempts that did not succeed, since the process started.
    pub failed: u64,
}

/// The rate between two samples, as the chart draws it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// End of the interval.
    pub at: DateTime<Utc>,
    /// Attempts per second over the interval.
    pub executed_per_s: f64,
    /// Failed attempts per second over the interval.
    pub failed_per_s: f64,
}

/// The kept samples, oldest first.
#[derive(Debug, Default)]
pub struct Throughput(Mutex<VecDeque<Sample>>);

impl Throughput {
    /// Adds a sample, dropping the oldest past [`KEPT`].
    pub fn record(&self, sample: Sample) {
        let mut samples = self.0.lock().unwrap_or_else(|poison| poison.into_inner());
        samples.push_back(sample);
        while samples.len() > KEPT {
            samples.pop_front();
        }
    }

    /// The rates between consecutive samples.
    pub fn points(&self) -> Vec<Point> {
        let samples = self.0.lock().unwrap_or_else(|poison| poison.into_inner());
        samples
            .iter()
            .zip(samples.iter().skip(1))
            .filter_map(|(before, after)| {
                let seconds = (after.at - before.at).num_milliseconds() as f64 / 1000.0;
                (seconds > 0.0).then(|| Point {
                    at: after.at,
                    executed_per_s: after.processed.saturating_sub(before.processed) as f64
                        / seconds,
                    failed_per_s: after.failed.saturating_sub(before.failed) as f64 / seconds,
                })
            })
            .collect()
    }
}

/// Samples the metrics actor's counters until the actor goes away.
pub async fn sample(metrics: Addr<MetricsActor>, into: std::sync::Arc<Throughput>) {
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    loop {
        ticks.tick().await;
        let Ok(stats) = metrics.send(GetStats).await else {
            return;
        };
        into.record(Sample {
            at: Utc::now(),
            processed: stats.processed,
            failed: stats.failed,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn rates_come_from_consecutive_samples() {
        let throughput = Throughput::default();
        throughput.record(Sample {
            at: at(0),
            processed: 0,
            failed: 0,
        });
        throughput.record(Sample {
            at: at(10),
            processed: 50,
            failed: 10,
        });
        throughput.record(Sample {
            at: at(20),
            processed: 70,
            failed: 10,
        });
        let points = throughput.points();
        assert_eq!(points.len(), 2);
        assert_eq!(
            (points[0].executed_per_s, points[0].failed_per_s),
            (5.0, 1.0)
        );
        assert_eq!(
            (points[1].executed_per_s, points[1].failed_per_s),
            (2.0, 0.0)
        );
    }

    #[test]
    fn only_fifteen_minutes_are_kept() {
        let throughput = Throughput::default();
        for i in 0..200 {
            throughput.record(Sample {
                at: at(i * 10),
                processed: i as u64,
                failed: 0,
            });
        }
        assert_eq!(throughput.points().len(), KEPT - 1);
    }
}
