//! The in-process broker against the job-broker contract: priority order,
//! delays on tokio time, prefetch, settling, redelivery on drop.

use std::time::Duration;

use actors::broker::memory::MemoryBroker;
use actors::broker::{BrokerError, DeadLetter, Delivery, JobBroker, JobStream};
use actors::domain::{Job, JobEnvelope, JobMetadata, JobSource, Priority, TaskTypeId, UserId};
use chrono::Utc;
use uuid::Uuid;

/// A job for user `u<n>`, due `delay` from now.
fn envelope(n: u32, priority: Priority, delay: Duration) -> JobEnvelope {
    let now = Utc::now();
    JobEnvelope::new(
        Job {
            id: Uuid::new_v4(),
            task_type_id: TaskTypeId::parse("daily_report").unwrap(),
            user_id: UserId::parse(format!("u{n}")).unwrap(),
            scheduled_at: now,
            execute_after: now + chrono::Duration::from_std(delay).unwrap(),
            attempt: 1,
            priority,
            payload: n.to_be_bytes().to_vec(),
            created_at: now,
        },
        JobMetadata {
            correlation_id: format!("c{n}"),
            source: JobSource::Scheduler,
            distribution_slot: None,
            origin: None,
        },
    )
}

fn user(delivery: &Delivery) -> String {
    delivery.envelope.job.user_id.to_string()
}

/// The next delivery, or `None` if nothing comes within `wait`.
async fn next_within(stream: &mut Box<dyn JobStream>, wait: Duration) -> Option<Delivery> {
    tokio::time::timeout(wait, stream.next())
        .await
        .ok()
        .flatten()
}

/// Publishes `(user number, priority)` in order, drains the broker and
/// checks the users come out in `expected` order.
async fn check(published: &[(u32, Priority)], expected: &[u32]) {
    let broker = MemoryBroker::new();
    let jobs: Vec<_> = published
        .iter()
        .map(|(n, priority)| envelope(*n, *priority, Duration::ZERO))
        .collect();
    broker.publish(&jobs).await.unwrap();
    let mut stream = broker.consume(0).await.unwrap();
    let mut seen = Vec::new();
    while let Some(delivery) = next_within(&mut stream, Duration::from_millis(50)).await {
        seen.push(user(&delivery));
        delivery.handle.ack().await.unwrap();
    }
    let expected: Vec<_> = expected.iter().map(|n| format!("u{n}")).collect();
    assert_eq!(seen, expected, "published {published:?}");
    assert_eq!(broker.pending(), 0);
}

#[tokio::test]
async fn drains_high_then_normal_then_low_fifo_within_a_priority() {
    use Priority::{High, Low, Normal};
    check(&[], &[]).await;
    check(&[(1, Normal)], &[1]).await;
    check(&[(1, Low), (2, Normal), (3, High)], &[3, 2, 1]).await;
    check(
        &[
            (1, Low),
            (2, High),
            (3, Normal),
            (4, Low),
            (5, High),
            (6, Normal),
        ],
        &[2, 5, 3, 6, 1, 4],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_short_delay_is_not_held_back_by_a_long_one() {
    let broker = MemoryBroker::new();
    let mut stream = broker.consume(10).await.unwrap();
    let start = tokio::time::Instant::now();
    broker
        .publish(&[envelope(1, Priority::Normal, Duration::from_secs(600))])
        .await
        .unwrap();
    broker
        .publish(&[envelope(2, Priority::Normal, Duration::from_secs(1))])
        .await
        .unwrap();
    assert!(
        next_within(&mut stream, Duration::from_millis(900))
            .await
            .is_none()
    );
    let first = stream.next().await.unwrap();
    let waited = start.elapsed();
    assert_eq!(user(&first), "u2");
    assert!(
        waited >= Duration::from_millis(990) && waited <= Duration::from_millis(1010),
        "{waited:?}"
    );
    first.handle.ack().await.unwrap();
    let second = stream.next().await.unwrap();
    assert_eq!(user(&second), "u1");
    assert!(start.elapsed() >= Duration::from_secs(599));
}

#[tokio::test(start_paused = true)]
async fn delayed_jobs_come_out_in_due_order_never_early() {
    let broker = MemoryBroker::new();
    let start = tokio::time::Instant::now();
    let delays = [5_000u64, 300, 2_000, 0, 1_200];
    let jobs: Vec<_> = delays
        .iter()
        .zip(1..)
        .map(|(ms, n)| envelope(n, Priority::Low, Duration::from_millis(*ms)))
        .collect();
    broker.publish(&jobs).await.unwrap();
    let mut stream = broker.consume(1).await.unwrap();
    let mut order = Vec::new();
    for _ in 0..delays.len() {
        let delivery = stream.next().await.unwrap();
        let n: usize = user(&delivery)[1..].parse().unwrap();
        let due = Duration::from_millis(delays[n - 1]);
        let at = start.elapsed();
        assert!(at + Duration::from_millis(10) >= due && at <= due + Duration::from_millis(10));
        order.push(n);
        delivery.handle.ack().await.unwrap();
    }
    assert_eq!(order, [4, 2, 5, 3, 1]);
}

#[tokio::test(start_paused = true)]
async fn prefetch_bounds_the_deliveries_in_hand() {
    let broker = MemoryBroker::new();
    let jobs: Vec<_> = (1..=3)
        .map(|n| envelope(n, Priority::Normal, Duration::ZERO))
        .collect();
    broker.publish(&jobs).await.unwrap();
    let mut stream = broker.consume(2).await.unwrap();
    let first = stream.next().await.unwrap();
    let _second = stream.next().await.unwrap();
    assert!(
        next_within(&mut stream, Duration::from_secs(5))
            .await
            .is_none()
    );
    first.handle.ack().await.unwrap();
    let third = next_within(&mut stream, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(user(&third), "u3");
}

#[tokio::test]
async fn dropping_a_stream_redelivers_what_it_had_not_settled() {
    let broker = MemoryBroker::new();
    let jobs: Vec<_> = (1..=3)
        .map(|n| envelope(n, Priority::Normal, Duration::ZERO))
        .collect();
    broker.publish(&jobs).await.unwrap();
    let mut stream = broker.consume(10).await.unwrap();
    let one = stream.next().await.unwrap();
    let two = stream.next().await.unwrap();
    one.handle.ack().await.unwrap();
    drop(stream);
    assert!(matches!(two.handle.ack().await, Err(BrokerError::Closed)));

    let mut stream = broker.consume(10).await.unwrap();
    let again = stream.next().await.unwrap();
    assert_eq!((user(&again), again.redelivered), ("u2".into(), true));
    let three = stream.next().await.unwrap();
    assert_eq!((user(&three), three.redelivered), ("u3".into(), false));
}

#[tokio::test]
async fn requeue_puts_a_job_back_first_and_marks_it_redelivered() {
    let broker = MemoryBroker::new();
    let jobs: Vec<_> = (1..=2)
        .map(|n| envelope(n, Priority::High, Duration::ZERO))
        .collect();
    broker.publish(&jobs).await.unwrap();
    let mut stream = broker.consume(1).await.unwrap();
    let first = stream.next().await.unwrap();
    first.handle.requeue().await.unwrap();
    assert!(matches!(first.handle.ack().await, Err(BrokerError::Closed)));
    let again = stream.next().await.unwrap();
    assert_eq!((user(&again), again.redelivered), ("u1".into(), true));
}

#[tokio::test]
async fn dead_letters_keep_the_message_and_the_reason() {
    let broker = MemoryBroker::new();
    let job = envelope(1, Priority::Normal, Duration::ZERO);
    let mut stale = envelope(2, Priority::Normal, Duration::ZERO);
    stale.version = "0.9".into();
    let after = envelope(3, Priority::Normal, Duration::ZERO);
    broker
        .publish(&[job.clone(), stale.clone(), after])
        .await
        .unwrap();
    let mut stream = broker.consume(10).await.unwrap();
    let delivery = stream.next().await.unwrap();
    let letter = DeadLetter {
        reason: actors::domain::DeadLetterReason::RetriesExhausted,
        result: None,
    };
    delivery.handle.dead_letter(letter.clone()).await.unwrap();
    let next = stream.next().await.unwrap();
    assert_eq!(user(&next), "u3", "the stale envelope is skipped");

    let dead = broker.dead_letters();
    assert_eq!(dead.len(), 2);
    assert_eq!((&dead[0].envelope, &dead[0].letter), (&job, &letter));
    assert_eq!(dead[1].envelope, stale);
    assert_eq!(
        dead[1].letter.reason,
        actors::domain::DeadLetterReason::UnsupportedVersion
    );
}

#[tokio::test]
async fn close_ends_the_stream_but_deliveries_in_hand_still_settle() {
    let broker = MemoryBroker::new();
    let jobs: Vec<_> = (1..=2)
        .map(|n| envelope(n, Priority::Normal, Duration::ZERO))
        .collect();
    broker.publish(&jobs).await.unwrap();
    let mut stream = broker.consume(10).await.unwrap();
    let first = stream.next().await.unwrap();
    stream.close().await;
    assert!(stream.next().await.is_none());
    first.handle.ack().await.unwrap();
    assert_eq!(broker.pending(), 1);

    broker.shutdown();
    assert!(matches!(
        broker.publish(&jobs).await,
        Err(BrokerError::Closed)
    ));
    assert!(broker.consume(1).await.is_err());
}

#[tokio::test]
async fn a_waiting_stream_wakes_on_publish() {
    let broker = MemoryBroker::new();
    let mut stream = broker.consume(1).await.unwrap();
    let publisher = broker.clone();
    let waiter = tokio::spawn(async move { stream.next().await.map(|d| user(&d)) });
    tokio::task::yield_now().await;
    publisher
        .publish(&[envelope(7, Priority::Low, Duration::ZERO)])
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.as_deref(), Some("u7"));
}
