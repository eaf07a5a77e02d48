//! The RabbitMQ broker against a real RabbitMQ. Each test runs in a vhost
//! of its own, created with `rabbitmqctl` and deleted when the test ends,
//! so tests run in parallel with the exact production queue names.

use std::collections::HashMap;
use std::process::Command;
use std::sync::LazyLock;
use std::time::Duration;

use actors::broker::amqp::{
    AmqpBroker, AmqpOptions, HEADER_ERROR_CODE, HEADER_REASON, HEADER_RESULT, QueueType,
};
use actors::broker::{
    BrokerError, DeadLetter, Delivery, JobBroker, JobStream, QUEUE_DELAYED, QUEUE_FAILED,
    QUEUE_HIGH, QUEUE_NORMAL,
};
use actors::domain::{
    ErrorDetail, ExecutionResult, Job, JobEnvelope, JobMetadata, JobSource, Priority, Status,
    TaskTypeId, UserId,
};
use chrono::{DateTime, Utc};
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rand::Rng;
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use uuid::Uuid;

/// Taken shared by every test and exclusively by the one that restarts
/// RabbitMQ, so no test of this file meets the restart by surprise.
static BROKER_RESTART: LazyLock<RwLock<()>> = LazyLock::new(|| RwLock::new(()));

/// A vhost of its own for one test (the kit's, deleted on drop) and the
/// test's turn beside the restart.
struct Vhost {
    own: test_kit::Vhost,
    _turn: Turn,
}

/// The test's hold on [`BROKER_RESTART`]: one of the two is set.
struct Turn {
    _shared: Option<RwLockReadGuard<'static, ()>>,
    _alone: Option<RwLockWriteGuard<'static, ()>>,
}

impl Vhost {
    /// A vhost for a test that leaves the broker running.
    async fn new(test: &str) -> Vhost {
        test_kit::server_lock::shared_servers();
        let turn = Turn {
            _shared: Some(BROKER_RESTART.read().await),
            _alone: None,
        };
        Vhost::create(test, turn)
    }

    /// A vhost for the test that restarts the broker.
    async fn alone(test: &str) -> Vhost {
        let turn = Turn {
            _shared: None,
            _alone: Some(BROKER_RESTART.write().await),
        };
        // Restarts the shared RabbitMQ: every other test process waits.
        test_kit::server_lock::restarting_servers();
        Vhost::create(test, turn)
    }

    fn create(test: &str, turn: Turn) -> Vhost {
        Vhost {
            own: test_kit::Vhost::new(&format!("test-{test}"))
                .unwrap_or_else(|error| panic!("{error}")),
            _turn: turn,
        }
    }

    async fn broker(&self, options: AmqpOptions) -> AmqpBroker {
        let broker = AmqpBroker::connect(&self.own.url, options).await.unwrap();
        broker.declare().await.unwrap();
        broker
    }

    async fn raw(&self) -> lapin::Channel {
        let connection = Connection::connect(&self.own.url, ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        // The channel keeps the connection alive.
        std::mem::forget(connection);
        channel
    }
}

/// The directory `scripts/services.sh` started RabbitMQ from:
/// `TASKQUEUE_SERVICES_DIR`, else what the script wrote into the broker's
/// environment file (`MNESIA_BASE=<dir>/rabbitmq/mnesia`).
fn services_dir() -> Option<String> {
    if let Ok(dir) = std::env::var("TASKQUEUE_SERVICES_DIR") {
        return Some(dir);
    }
    let conf = std::fs::read_to_string("/etc/rabbitmq/rabbitmq-env.conf").ok()?;
    conf.lines()
        .find_map(|line| line.strip_prefix("MNESIA_BASE="))
        .and_then(|base| base.strip_suffix("/rabbitmq/mnesia"))
        .map(str::to_owned)
}

fn envelope(n: usize, priority: Priority, execute_after: DateTime<Utc>) -> JobEnvelope {
    let now = Utc::now();
    JobEnvelope::new(
        Job {
            id: Uuid::new_v4(),
            task_type_id: TaskTypeId::parse("daily_report").unwrap(),
            user_id: UserId::parse(format!("u{n}")).unwrap(),
            scheduled_at: now,
            execute_after,
            attempt: 1,
            priority,
            payload: format!("payload {n}").into_bytes(),
            created_at: now,
        },
        JobMetadata {
            correlation_id: format!("c{n}"),
            source: JobSource::Scheduler,
            distribution_slot: Some(u32::try_from(n % 60).unwrap()),
            origin: None,
        },
    )
}

fn after(ms: i64) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::milliseconds(ms)
}

async fn next_within(stream: &mut Box<dyn JobStream>, wait: Duration) -> Option<Delivery> {
    tokio::time::timeout(wait, stream.next())
        .await
        .ok()
        .flatten()
}

fn header(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        other => Some(format!("{other:?}")),
    }
}

/// Every message of `queue`, taken with basic.get and acked.
async fn take_all(channel: &lapin::Channel, queue: &str) -> Vec<(BasicProperties, Vec<u8>)> {
    let mut taken = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        taken.push((message.delivery.properties, message.delivery.data));
    }
    taken
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_confirmed_jobs_come_out_once_each_unchanged() {
    let vhost = Vhost::new("bulk").await;
    let broker = vhost.broker(AmqpOptions::default()).await;
    let jobs: Vec<_> = (0..10_000)
        .map(|n| envelope(n, Priority::Normal, Utc::now()))
        .collect();
    for batch in jobs.chunks(2_500) {
        broker.publish(batch).await.unwrap();
    }
    let mut expected: HashMap<Uuid, JobEnvelope> =
        jobs.into_iter().map(|job| (job.job.id, job)).collect();
    let mut stream = broker.consume(200).await.unwrap();
    while !expected.is_empty() {
        let delivery = next_within(&mut stream, Duration::from_secs(20))
            .await
            .expect("a delivery");
        let sent = expected
            .remove(&delivery.envelope.job.id)
            .expect("each job once");
        assert_eq!(delivery.envelope, sent);
        delivery.handle.ack().await.unwrap();
    }
    assert!(
        next_within(&mut stream, Duration::from_millis(500))
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drains_high_then_normal_then_low() {
    let vhost = Vhost::new("priority").await;
    let broker = vhost.broker(AmqpOptions::default()).await;
    let jobs: Vec<_> = (0..600)
        .map(|n| {
            let priority = [Priority::Low, Priority::Normal, Priority::High][n % 3];
            envelope(n, priority, Utc::now())
        })
        .collect();
    broker.publish(&jobs).await.unwrap();
    let mut stream = broker.consume(10).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < jobs.len() {
        let delivery = next_within(&mut stream, Duration::from_secs(10))
            .await
            .expect("a delivery");
        seen.push(delivery.envelope.job.priority);
        delivery.handle.ack().await.unwrap();
    }
    let inversions = seen.windows(2).filter(|pair| pair[1] > pair[0]).count();
    assert_eq!(inversions, 0, "priorities in order consumed: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_delay_is_not_held_back_by_a_long_one() {
    let vhost = Vhost::new("hol").await;
    let broker = vhost.broker(AmqpOptions::default()).await;
    let long = envelope(1, Priority::Normal, after(600_000));
    broker.publish(&[long]).await.unwrap();
    let short = envelope(2, Priority::Normal, after(1_000));
    broker.publish(std::slice::from_ref(&short)).await.unwrap();
    let mut stream = broker.consume(10).await.unwrap();
    let delivery = next_within(&mut stream, Duration::from_secs(5))
        .await
        .expect("the short job");
    let arrived = Utc::now();
    assert_eq!(delivery.envelope.job.id, short.job.id);
    let due = short.job.execute_after;
    assert!(arrived >= due, "early by {}", due - arrived);
    assert!(
        arrived - due <= chrono::Duration::seconds(1),
        "late by {}",
        arrived - due
    );
    delivery.handle.ack().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_delays_arrive_within_a_second_of_due_never_early() {
    let vhost = Vhost::new("delays").await;
    let broker = vhost.broker(AmqpOptions::default()).await;
    let mut rng = rand::rng();
    let jobs: Vec<_> = (0..200)
        .map(|n| envelope(n, Priority::High, after(rng.random_range(0..5_000))))
        .collect();
    broker.publish(&jobs).await.unwrap();
    let due: HashMap<Uuid, DateTime<Utc>> = jobs
        .iter()
        .map(|job| (job.job.id, job.job.execute_after))
        .collect();
    let mut stream = broker.consume(50).await.unwrap();
    let mut lateness = Vec::new();
    while lateness.len() < jobs.len() {
        let delivery = next_within(&mut stream, Duration::from_secs(10))
            .await
            .expect("a delivery");
        let late = Utc::now() - due[&delivery.envelope.job.id];
        lateness.push(late.num_milliseconds());
        delivery.handle.ack().await.unwrap();
    }
    lateness.sort_unstable();
    let (earliest, latest) = (lateness[0], lateness[lateness.len() - 1]);
    assert!(earliest >= 0, "a job came {earliest} ms early");
    assert!(latest <= 1_000, "a job came {latest} ms late");
    println!(
        "lateness ms: median {} p99 {} max {latest}",
        lateness[lateness.len() / 2],
        lateness[lateness.len() * 99 / 100]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_failed_with_a_reason_and_consumption_goes_on() {
    let vhost = Vhost::new("poison").await;
    let broker = vhost.broker(AmqpOptions::default()).await;
    let raw = vhost.raw().await;
    let good = envelope(1, Priority::Normal, Utc::now());
    let mut wrong_version = serde_json::to_value(&good).unwrap();
    wrong_version["version"] = "2.0".into();
    let mut missing_field = serde_json::to_value(&good).unwrap();
    missing_field["job"]
        .as_object_mut()
        .unwrap()
        .remove("user_id");
    let mut bad_task = serde_json::to_value(&good).unwrap();
    bad_task["job"]["task_type_id"] = "not a task id!".into();
    let poisons: Vec<(&str, Vec<u8>)> = vec![
        ("malformed", b"this is not json".to_vec()),
        (
            "unsupported_version",
            serde_json::to_vec(&wrong_version).unwrap(),
        ),
        ("malformed", serde_json::to_vec(&missing_field).unwrap()),
        ("malformed", serde_json::to_vec(&bad_task).unwrap()),
    ];
    for (_, body) in &poisons {
        raw.basic_publish(
            "taskqueue".into(),
            QUEUE_NORMAL.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    broker.publish(std::slice::from_ref(&good)).await.unwrap();

    let mut stream = broker.consume(10).await.unwrap();
    let delivery = next_within(&mut stream, Duration::from_secs(10))
        .await
        .expect("the good job");
    assert_eq!(delivery.envelope, good);
    delivery.handle.ack().await.unwrap();

    let mut failed = Vec::new();
    for _ in 0..50 {
        failed.extend(take_all(&raw, QUEUE_FAILED).await);
        if failed.len() >= poisons.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut got: Vec<_> = failed
        .iter()
        .map(|(properties, body)| (header(properties, HEADER_REASON).unwrap(), body.clone()))
        .collect();
    let mut want: Vec<_> = poisons
        .iter()
        .map(|(reason, body)| (reason.to_string(), body.clone()))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_messages_the_pump_cannot_place_go_to_failed() {
    let vhost = Vhost::new("pump-poison").await;
    let broker = vhost.broker(AmqpOptions::default()).await;
    let raw = vhost.raw().await;
    let mut headers = FieldTable::default();
    headers.insert(
        "x-execute-after".into(),
        AMQPValue::LongLongInt(Utc::now().timestamp_millis()),
    );
    headers.insert(
        "x-taskqueue-target".into(),
        AMQPValue::LongString("taskqueue.jobs.nowhere".into()),
    );
    let stray = serde_json::to_vec(&envelope(1, Priority::Low, Utc::now())).unwrap();
    for (body, properties) in [
        (b"garbage".to_vec(), BasicProperties::default()),
        (
            stray.clone(),
            BasicProperties::default().with_headers(headers),
        ),
    ] {
        raw.basic_publish(
            "taskqueue".into(),
            QUEUE_DELAYED.into(),
            BasicPublishOptions::default(),
            &body,
            properties,
        )
        .await
        .unwrap();
    }
    let good = envelope(2, Priority::Low, after(300));
    broker.publish(std::slice::from_ref(&good)).await.unwrap();
    let mut stream = broker.consume(10).await.unwrap();
    let delivery = next_within(&mut stream, Duration::from_secs(5))
        .await
        .expect("the good delayed job");
    assert_eq!(delivery.envelope, good);

    let mut failed = Vec::new();
    for _ in 0..50 {
        failed.extend(take_all(&raw, QUEUE_FAILED).await);
        if failed.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut got: Vec<_> = failed
        .iter()
        .map(|(properties, body)| (header(properties, HEADER_REASON).unwrap(), body.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("malformed".to_string(), b"garbage".to_vec()),
            ("unroutable".to_string(), stray)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_keep_the_body_and_the_failure() {
    let vhost = Vhost::new("dead").await;
    let broker = vhost.broker(AmqpOptions::default()).await;
    let raw = vhost.raw().await;
    let job = envelope(1, Priority::High, Utc::now());
    broker.publish(std::slice::from_ref(&job)).await.unwrap();
    let mut stream = broker.consume(1).await.unwrap();
    let delivery = next_within(&mut stream, Duration::from_secs(10))
        .await
        .unwrap();
    let result = ExecutionResult {
        job_id: job.job.id,
        status: Status::Failed,
        started_at: Utc::now(),
        completed_at: Utc::now(),
        duration: Duration::from_millis(1234),
        error: Some(ErrorDetail {
            code: "http_500".into(),
            message: "upstream broke".into(),
            retry: false,
        }),
        response: None,
        next_attempt: None,
    };
    delivery
        .handle
        .dead_letter(DeadLetter {
            reason: actors::domain::DeadLetterReason::RetriesExhausted,
            result: Some(result.clone()),
        })
        .await
        .unwrap();
    let failed = take_all(&raw, QUEUE_FAILED).await;
    assert_eq!(failed.len(), 1);
    let (properties, body) = &failed[0];
    assert_eq!(
        serde_json::from_slice::<JobEnvelope>(body).unwrap(),
        job,
        "body unchanged"
    );
    assert_eq!(
        header(properties, HEADER_REASON).as_deref(),
        Some("retries_exhausted")
    );
    assert_eq!(
        header(properties, HEADER_ERROR_CODE).as_deref(),
        Some("http_500")
    );
    let kept: ExecutionResult =
        serde_json::from_str(&header(properties, HEADER_RESULT).unwrap()).unwrap();
    assert_eq!(kept, result);
    assert_eq!(
        properties.message_id().as_ref().map(|id| id.to_string()),
        Some(job.job.id.to_string())
    );
    // Nothing left to consume: the original was acked.
    assert!(
        next_within(&mut stream, Duration::from_millis(300))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn queues_declared_with_other_arguments_are_a_clear_error() {
    let vhost = Vhost::new("mismatch").await;
    let raw = vhost.raw().await;
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(5));
    raw.queue_declare(
        QUEUE_HIGH.into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        arguments,
    )
    .await
    .unwrap();
    let broker = AmqpBroker::connect(&vhost.own.url, AmqpOptions::default())
        .await
        .unwrap();
    match broker.declare().await {
        Err(BrokerError::TopologyMismatch { queue, detail }) => {
            assert_eq!(queue, QUEUE_HIGH);
            assert!(detail.contains("PRECONDITION_FAILED"), "{detail}");
        }
        other => panic!("expected a topology mismatch, got {other:?}"),
    }
    drop((broker, raw, vhost));
    // Declaring twice with the same configuration is fine.
    let vhost = Vhost::new("idempotent").await;
    let options = AmqpOptions {
        queue_type: QueueType::Quorum,
        delay_pump: false,
        ..AmqpOptions::default()
    };
    let broker = vhost.broker(options).await;
    broker.declare().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_loses_no_confirmed_job() {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    let vhost = Vhost::alone("restart").await;
    let options = AmqpOptions {
        reconnect_initial: Duration::from_millis(200),
        reconnect_max: Duration::from_secs(1),
        publish_timeout: Duration::from_secs(120),
        ..AmqpOptions::default()
    };
    let broker = vhost.broker(options).await;
    let jobs: Vec<_> = (0..5_000)
        .map(|n| envelope(n, Priority::Normal, Utc::now()))
        .collect();
    let batches = jobs.chunks(25).count();
    let published = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let (broker, jobs, published) = (broker.clone(), jobs.clone(), Arc::clone(&published));
        tokio::spawn(async move {
            let mut confirmed = Vec::new();
            let mut failed = 0;
            for batch in jobs.chunks(25) {
                match broker.publish(batch).await {
                    Ok(()) => confirmed.extend(batch.iter().map(|job| job.job.id)),
                    Err(_) => failed += 1,
                }
                published.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            (confirmed, failed)
        })
    };
    // A consumer that runs through the restart and has to reconnect.
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let consumer = {
        let mut stream = broker.consume(50).await.unwrap();
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Some(delivery) = stream.next().await {
                seen.lock().unwrap().insert(delivery.envelope.job.id);
                // The ack of a delivery from before the restart may fail;
                // the broker then redelivers it.
                let _ = delivery.handle.ack().await;
            }
        })
    };

    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let before = published.load(Ordering::SeqCst);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/services.sh");
    let services_dir = services_dir();
    let restarted = tokio::task::spawn_blocking(move || {
        let mut restart = Command::new(script);
        restart.args(["restart", "rabbitmq"]);
        if let Some(dir) = services_dir {
            restart.env("TASKQUEUE_SERVICES_DIR", dir);
        }
        restart.status().unwrap()
    })
    .await
    .unwrap();
    assert!(restarted.success());
    let after = published.load(Ordering::SeqCst);
    assert!(
        before > 0 && after < batches,
        "the restart fell outside the publishing ({before}..{after} of {batches} batches)"
    );
    let (confirmed, failed_batches) = publisher.await.unwrap();
    println!(
        "confirmed {} of {}, {failed_batches} batches failed",
        confirmed.len(),
        jobs.len()
    );
    assert!(confirmed.len() > jobs.len() / 2);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let missing = {
            let seen = seen.lock().unwrap();
            confirmed.iter().filter(|id| !seen.contains(*id)).count()
        };
        if missing == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{missing} confirmed jobs never came"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    consumer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_close_streams_end_and_publishing_fails() {
    let vhost = Vhost::new("close").await;
    let broker = vhost.broker(AmqpOptions::default()).await;
    let raw = vhost.raw().await;
    let jobs: Vec<_> = (0..3)
        .map(|n| envelope(n, Priority::Normal, Utc::now()))
        .collect();
    broker.publish(&jobs).await.unwrap();
    let mut stream = broker.consume(1).await.unwrap();
    let in_hand = next_within(&mut stream, Duration::from_secs(5))
        .await
        .unwrap();
    broker.close().await.unwrap();
    assert!(
        next_within(&mut stream, Duration::from_secs(5))
            .await
            .is_none()
    );
    assert!(in_hand.handle.ack().await.is_err());
    assert!(matches!(
        broker.publish(&jobs).await,
        Err(BrokerError::Closed)
    ));
    drop(stream);
    // Nothing was acked: all three are back in the queue.
    let mut back = 0;
    for _ in 0..50 {
        back = raw
            .queue_declare(
                QUEUE_NORMAL.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .message_count();
        if back == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(back, 3);
}

/// `durable` decides the queues' durability and the messages' delivery
/// mode: a transient topology refuses a durable redeclare (and the other
/// way round), and its messages are not persistent.
#[tokio::test]
async fn durable_sets_queue_durability_and_delivery_mode() {
    for durable in [true, false] {
        let vhost = Vhost::new(if durable { "durable" } else { "transient" }).await;
        let options = AmqpOptions {
            durable,
            delay_pump: false,
            ..AmqpOptions::default()
        };
        let broker = vhost.broker(options).await;
        broker
            .publish(&[envelope(1, Priority::High, Utc::now())])
            .await
            .unwrap();
        let raw = vhost.raw().await;
        let taken = take_all(&raw, QUEUE_HIGH).await;
        assert_eq!(taken.len(), 1, "durable={durable}");
        let expected_mode = if durable { 2 } else { 1 };
        assert_eq!(
            *taken[0].0.delivery_mode(),
            Some(expected_mode),
            "durable={durable}"
        );
        // The same durability redeclares; the other one is refused.
        let arguments = || {
            let mut arguments = FieldTable::default();
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("classic".into()),
            );
            arguments
        };
        let same = QueueDeclareOptions {
            durable,
            ..QueueDeclareOptions::default()
        };
        raw.queue_declare(QUEUE_FAILED.into(), same, arguments())
            .await
            .unwrap();
        let opposite = QueueDeclareOptions {
            durable: !durable,
            ..QueueDeclareOptions::default()
        };
        let refused = raw
            .queue_declare(QUEUE_FAILED.into(), opposite, arguments())
            .await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|error| error.to_string().contains("PRECONDITION_FAILED")),
            "durable={durable}: {refused:?}"
        );
    }
}
