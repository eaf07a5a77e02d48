//! The fault suite, scenario 3: RabbitMQ restarted (with
//! `scripts/services.sh restart rabbitmq`, data kept) while a replica
//! publishes and consumes a run. Nothing is lost, nothing succeeds twice.
//! The restart touches the whole broker, so this scenario is a test binary
//! of its own: cargo runs test binaries one after another, and no other
//! test meets the restart (as for `actors/tests/broker_amqp.rs`).

mod support;

use std::{process::Command, time::Duration};

use chrono::{DurationRound, TimeDelta, Utc};
use support::*;

/// The directory `scripts/services.sh` started RabbitMQ from (see
/// `actors/tests/broker_amqp.rs`).
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

#[actix_rt::test]
async fn s3_a_rabbitmq_restart_during_publish_and_consume_loses_nothing() {
    const USERS: usize = 3_000;
    let ledger = Ledger::start();
    let backends = Backends::new("fault-broker-restart");
    let store = backends.store().await;
    let t0 = Utc::now().duration_trunc(TimeDelta::seconds(1)).unwrap();
    let users: Vec<String> = (0..USERS).map(|n| format!("user_{n:05}")).collect();
    enable_users(&store, "work", &users).await;
    seed_last_fire(&store, "work", t0).await;
    let config = config_file(
        &backends,
        "worker:\n  pool_size: 16",
        &hourly_task(
            "work",
            t0 + TimeDelta::seconds(5),
            &ledger.url("/delay/5/work"),
        ),
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("distribution_window: 3s", "distribution_window: 20s");
    std::fs::write(&config, text).unwrap();
    let mut replica = serve(&config);

    // Restarted while the distributor still publishes the run's later
    // slots and the executors consume its earlier ones.
    assert!(
        ledger
            .wait_until(Duration::from_secs(60), |calls| calls.len() >= USERS / 5)
            .await,
        "the run never started"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services.sh");
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
    let at_restart = ledger.delivered();
    assert!(at_restart < USERS, "the restart fell after the run");

    ledger
        .wait_delivered(USERS, Duration::from_secs(180), Duration::from_secs(14))
        .await;
    println!("fault s3: restarted after {at_restart} deliveries");
    ledger
        .outcome(USERS)
        .report_and_check("s3 RabbitMQ restart during publish and consume");
    assert_eq!(terminate(&mut replica), 0);
    let _ = std::fs::remove_file(config);
}
