//! Shutdown of a `taskqueue serve` process on the real Redis and RabbitMQ:
//! once SIGTERM arrives, while a slow job is still draining, triggers are
//! refused with a 503 JSON error and `/health` says it is shutting down.

use crate::support;

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use support::*;

fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn serve(config: &std::path::Path, address: SocketAddr) -> Child {
    Command::new(env!("CARGO_BIN_EXE_taskqueue"))
        .args(["serve", "--config"])
        .arg(config)
        .args(["--bind", &address.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

async fn wait_until_healthy(address: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(response) = reqwest::get(format!("http://{address}/health")).await
            && response.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{address} never became healthy");
}

#[actix_rt::test]
async fn triggers_are_refused_as_soon_as_shutdown_starts() {
    let backends = Backends::new("shutdown-503");
    let sink = Sink::start();
    let text = format!(
        r#"
backend: external
scheduler:
  check_interval: 1s
  distribution_window: 2s
redis:
  addresses: ["{redis}"]
  prefix: "{prefix}"
queue:
  url: "{amqp}"
worker:
  shutdown_timeout: 120s
execution:
  timeout: 120s
monitoring:
  log_level: warn
tasks:
  - id: slow
    name: slow
    interval: {{ type: daily, value: 1 }}
    timeout: 120s
    config: {{ endpoint: "{endpoint}", method: POST }}
"#,
        redis = backends.redis_address(),
        prefix = backends.prefix,
        amqp = backends.amqp_url,
        endpoint = sink.url("/slow/60000/job"),
    );
    let file = temp_file("taskqueue.yaml", &text);
    let address = free_address();
    let mut replica = serve(&file, address);
    wait_until_healthy(address).await;

    let trigger = json!({"task_type_id": "slow", "user_ids": ["ann"], "execute_immediately": true});
    let (status, body) = post(address, "/schedule/trigger", &trigger).await;
    assert_eq!(status, 202, "{body}");
    let calls = sink.wait_for("/slow/", 1, Duration::from_secs(30)).await;
    assert_eq!(calls.len(), 1, "the slow job is in flight");

    let terminated = Command::new("kill")
        .args(["-TERM", &replica.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());

    // The job holds the drain open for a minute: the answers below come
    // while it drains.
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused: Value = loop {
        assert!(Instant::now() < deadline, "triggers were never refused");
        let (status, body) = post(address, "/schedule/trigger", &trigger).await;
        if status == 503 {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_error(&refused, "unavailable");
    let (status, health) = get(address, "/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "shutting down"),
        "{health}"
    );
    assert!(replica.try_wait().unwrap().is_none(), "still draining");
    let _ = replica.kill();
    let _ = replica.wait();
}
