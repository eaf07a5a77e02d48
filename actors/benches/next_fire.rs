//! Next fire for 1,000,000 (interval, instant) pairs across mixed zones,
//! kinds and periods, against the cost of one `chrono-tz` local-to-UTC
//! conversion of the same instants. Divide the reported time by 1,000,000
//! for nanoseconds per call (criterion also prints elements per second).
//!
//! Run: `cargo bench -p taskqueue-actors --bench next_fire`

use std::{hint::black_box, time::Duration};

use actors::{
    domain::{AtTime, IntervalType, TaskInterval, Weekday},
    schedule::Schedule,
};
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const PAIRS: usize = 1_000_000;

const ZONES: &[&str] = &[
    "UTC",
    "America/New_York",
    "America/Los_Angeles",
    "America/Santiago",
    "America/Sao_Paulo",
    "Europe/Berlin",
    "Europe/London",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Pacific/Apia",
    "Pacific/Chatham",
    "Africa/Casablanca",
    "Asia/Tehran",
];

const WEEKDAYS: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

/// A small deterministic generator (xorshift64*), so every run measures
/// the same pairs.
struct Numbers(u64);

impl Numbers {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % below
    }
}

/// The (interval, instant) pairs: intervals of every kind in mixed zones,
/// instants spread over 2000..2040.
fn pairs() -> Vec<(TaskInterval, DateTime<Utc>)> {
    let mut numbers = Numbers(0x9e37_79b9_7f4a_7c15);
    let from = Utc
        .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp();
    let to = Utc
        .with_ymd_and_hms(2040, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp();
    (0..PAIRS)
        .map(|_| {
            let (kind, value) = match numbers.next(4) {
                0 => (IntervalType::Hourly, 1 + numbers.next(24)),
                1 => (IntervalType::Daily, 1 + numbers.next(7)),
                2 => (IntervalType::Weekly, 1 + numbers.next(4)),
                _ => (IntervalType::Monthly, 1 + numbers.next(12)),
            };
            let interval = TaskInterval {
                kind,
                value: value as u32,
                timezone: Some(
                    ZONES[numbers.next(ZONES.len() as u64) as usize]
                        .parse()
                        .unwrap(),
                ),
                at_time: Some(AtTime {
                    hour: numbers.next(24) as u8,
                    minute: numbers.next(60) as u8,
                    second: 0,
                }),
                weekday: Some(WEEKDAYS[numbers.next(7) as usize]),
                day_of_month: Some(1 + numbers.next(31) as u8),
            };
            let at = from + numbers.next((to - from) as u64) as i64;
            (interval, DateTime::from_timestamp(at, 0).unwrap())
        })
        .collect()
}

fn next_fire(c: &mut Criterion) {
    let pairs = pairs();
    let compiled: Vec<(Schedule, DateTime<Utc>)> = pairs
        .iter()
        .map(|(interval, at)| (Schedule::new(interval), *at))
        .collect();
    let locals: Vec<(Tz, chrono::NaiveDateTime)> = pairs
        .iter()
        .map(|(interval, at)| (interval.tz(), at.naive_utc()))
        .collect();

    let mut group = c.benchmark_group("next_fire_1M_pairs");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(PAIRS as u64));
    group.bench_function("compile_and_next_after", |b| {
        b.iter(|| {
            for (interval, at) in &pairs {
                black_box(Schedule::new(black_box(interval)).next_after(*at));
            }
        })
    });
    group.bench_function("next_after_compiled", |b| {
        b.iter(|| {
            for (schedule, at) in &compiled {
                black_box(schedule.next_after(black_box(*at)));
            }
        })
    });
    group.bench_function("baseline_chrono_tz_from_local_datetime", |b| {
        b.iter(|| {
            for (tz, local) in &locals {
                black_box(tz.from_local_datetime(black_box(local)).earliest());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, next_fire);
criterion_main!(benches);
