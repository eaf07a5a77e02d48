//! Throughput of the RabbitMQ broker against bare lapin on the same
//! broker in the same run: confirmed publishing (confirms streamed, not
//! one at a time) and consume + ack. Median of three runs.
//!
//! Runs in a vhost of its own (created and deleted with `rabbitmqctl`).
//! `TASKQUEUE_TEST_AMQP_URL` picks the broker, `BENCH_MESSAGES` the
//! messages per run (default 20000).

use std::process::Command;
use std::time::{Duration, Instant};

use actors::broker::amqp::{AmqpBroker, AmqpOptions};
use actors::broker::{EXCHANGE, JobBroker, QUEUE_NORMAL};
use actors::domain::{Job, JobEnvelope, JobMetadata, JobSource, Priority, TaskTypeId, UserId};
use chrono::Utc;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use uuid::Uuid;

const CTL: &str = "/usr/sbin/rabbitmqctl";
const BARE_QUEUE: &str = "bench.bare";
const PREFETCH: u16 = 100;
const RUNS: usize = 3;

fn envelope(n: usize) -> JobEnvelope {
    let now = Utc::now();
    JobEnvelope::new(
        Job {
            id: Uuid::new_v4(),
            task_type_id: TaskTypeId::parse("daily_report").expect("valid task id"),
            user_id: UserId::parse(format!("user-{n:08}")).expect("valid user id"),
            scheduled_at: now,
            execute_after: now,
            attempt: 1,
            priority: Priority::Normal,
            payload: vec![7; 64],
            created_at: now,
        },
        JobMetadata {
            correlation_id: Uuid::new_v4().to_string(),
            source: JobSource::Scheduler,
            distribution_slot: Some(12),
            origin: None,
        },
    )
}

fn ctl(args: &[&str]) {
    let status = Command::new(CTL)
        .arg("-q")
        .args(args)
        .status()
        .expect("rabbitmqctl runs");
    assert!(status.success(), "rabbitmqctl {args:?} failed");
}

fn rate(messages: usize, took: Duration) -> f64 {
    messages as f64 / took.as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The properties taskqueue puts on a job message, so both publishers
/// send the same bytes.
fn same_properties(job: &JobEnvelope) -> BasicProperties {
    let text = |value: &str| AMQPValue::LongString(value.as_bytes().to_vec().into());
    let mut headers = FieldTable::default();
    headers.insert("x-task-type".into(), text(job.job.task_type_id.as_ref()));
    headers.insert("x-attempt".into(), AMQPValue::LongLongInt(1));
    headers.insert(
        "x-execute-after".into(),
        AMQPValue::LongLongInt(job.job.execute_after.timestamp_millis()),
    );
    headers.insert("x-taskqueue-target".into(), text(QUEUE_NORMAL));
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(job.job.id.to_string().into())
        .with_correlation_id(job.metadata.correlation_id.as_str().into())
        .with_timestamp(u64::try_from(Utc::now().timestamp()).unwrap_or_default())
        .with_headers(headers)
}

/// Bare lapin: one confirm channel, every message written, then every
/// confirm awaited together.
async fn bare_publish(
    channel: &lapin::Channel,
    body: &[u8],
    properties: &BasicProperties,
    messages: usize,
) -> Duration {
    let start = Instant::now();
    let mut confirms = FuturesUnordered::new();
    for _ in 0..messages {
        let confirm = channel
            .basic_publish(
                EXCHANGE.into(),
                BARE_QUEUE.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                body,
                properties.clone(),
            )
            .await
            .expect("publish");
        confirms.push(confirm);
    }
    while let Some(confirm) = confirms.next().await {
        assert!(confirm.expect("confirm").is_ack());
    }
    start.elapsed()
}

/// Bare lapin: one consumer with the same prefetch, each delivery acked
/// before the next is taken.
async fn bare_consume(connection: &Connection, messages: usize) -> Duration {
    let channel = connection.create_channel().await.expect("channel");
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .expect("qos");
    let start = Instant::now();
    let mut consumer = channel
        .basic_consume(
            BARE_QUEUE.into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    for _ in 0..messages {
        let delivery = consumer.next().await.expect("open").expect("delivery");
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
    let took = start.elapsed();
    channel
        .basic_cancel("bench".into(), BasicCancelOptions::default())
        .await
        .expect("cancel");
    took
}

async fn ours_publish(broker: &AmqpBroker, jobs: &[JobEnvelope]) -> Duration {
    let start = Instant::now();
    broker.publish(jobs).await.expect("publish");
    start.elapsed()
}

async fn ours_consume(broker: &AmqpBroker, messages: usize) -> Duration {
    let start = Instant::now();
    let mut stream = broker.consume(PREFETCH).await.expect("consume");
    for _ in 0..messages {
        let delivery = stream.next().await.expect("delivery");
        delivery.handle.ack().await.expect("ack");
    }
    let took = start.elapsed();
    stream.close().await;
    took
}

async fn run(url: &str, messages: usize) {
    let broker = AmqpBroker::connect(
        url,
        AmqpOptions {
            delay_pump: false,
            ..AmqpOptions::default()
        },
    )
    .await
    .expect("connect");
    broker.declare().await.expect("declare");
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .queue_declare(
            BARE_QUEUE.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare");
    channel
        .queue_bind(
            BARE_QUEUE.into(),
            EXCHANGE.into(),
            BARE_QUEUE.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");

    let jobs: Vec<_> = (0..messages).map(envelope).collect();
    let body = serde_json::to_vec(&jobs[0]).expect("json");
    let properties = same_properties(&jobs[0]);
    println!(
        "{messages} messages per run, {} bytes each, prefetch {PREFETCH}",
        body.len()
    );

    let mut results: [Vec<f64>; 4] = Default::default();
    for run in 1..=RUNS {
        for queue in [QUEUE_NORMAL, BARE_QUEUE] {
            channel
                .queue_purge(queue.into(), QueuePurgeOptions::default())
                .await
                .expect("purge");
        }
        // Who goes first alternates, so neither side always meets a broker
        // still busy with the other's work.
        let bare_first = run % 2 == 1;
        let mut bare_pub = 0.0;
        let mut ours_pub = 0.0;
        for side in [bare_first, !bare_first] {
            if side {
                let took = bare_publish(&channel, &body, &properties, messages).await;
                bare_pub = rate(messages, took);
            } else {
                ours_pub = rate(messages, ours_publish(&broker, &jobs).await);
            }
        }
        let mut bare_con = 0.0;
        let mut ours_con = 0.0;
        for side in [bare_first, !bare_first] {
            if side {
                bare_con = rate(messages, bare_consume(&connection, messages).await);
            } else {
                ours_con = rate(messages, ours_consume(&broker, messages).await);
            }
        }
        println!(
            "run {run}/{RUNS}: publish ours {ours_pub:.0}/s bare {bare_pub:.0}/s; consume+ack ours {ours_con:.0}/s bare {bare_con:.0}/s"
        );
        for (slot, value) in results
            .iter_mut()
            .zip([ours_pub, bare_pub, ours_con, bare_con])
        {
            slot.push(value);
        }
    }
    let [ours_pub, bare_pub, ours_con, bare_con] = results.map(median);
    println!();
    println!("| measure (median of {RUNS}) | taskqueue msg/s | bare lapin msg/s | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| confirmed publish | {ours_pub:.0} | {bare_pub:.0} | {:.2} |",
        ours_pub / bare_pub
    );
    println!(
        "| consume + ack | {ours_con:.0} | {bare_con:.0} | {:.2} |",
        ours_con / bare_con
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let messages = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(20_000);
    let vhost = format!("tq-bench-{}", Uuid::new_v4().simple());
    ctl(&["add_vhost", &vhost]);
    ctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
    let base = std::env::var("TASKQUEUE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let authority_end = base["amqp://".len()..]
        .find('/')
        .map_or(base.len(), |at| at + "amqp://".len());
    let url = format!("{}/{}", &base[..authority_end], vhost);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(&url, messages));
    drop(runtime);
    ctl(&["delete_vhost", &vhost]);
}
