//! The fault suite, scenario 3: RabbitMQ restarted (with
//! `scripts/services.sh restart rabbitmq`, data kept) while a replica
//! publishes and consumes a run. Nothing is lost, nothing succeeds twice.
//! The restart touches the whole broker, so this scenario holds the
//! shared servers exclusively (`tests/kit/src/server_lock.rs`): no other
//! test process, under cargo or cargo-nextest, meets the restart.

mod support;

use std::{process::Command, time::Duration};

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
    // Runs alone on the shared servers: every other test process waits
    // (tests/kit/src/server_lock.rs).
    restarting_servers();
    let run = RestartRun::start(
        RunShape {
            users: 3_000,
            pool: 16,
            window: "20s",
            path: "/delay/5/work",
        },
        Backends::new("fault-broker-restart"),
    )
    .await;

    // Restarted while the distributor still publishes the run's later
    // slots and the executors consume its earlier ones.
    run.wait_started(5).await;
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
    let at_restart = run.ledger.delivered();
    assert!(at_restart < run.users, "the restart fell after the run");
    println!("fault s3: restarted after {at_restart} deliveries");
    run.finish(
        "s3 RabbitMQ restart during publish and consume",
        Duration::from_secs(14),
    )
    .await;
}
