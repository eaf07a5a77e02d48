//! What a new user and a log shipper see from `taskqueue serve` as a
//! process: the quick start with no configuration, an unreachable Redis
//! named once with what to do, JSON log lines with the job's fields, and
//! no colour codes when the output is not a terminal.

use crate::support;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc::Receiver,
    time::Duration,
};

use serde_json::Value;
use support::*;

/// `taskqueue serve [--config config] --bind address` with stderr piped
/// and no `TASKQUEUE_*` variables from the test's environment.
fn serve_logged(config: Option<&Path>, address: SocketAddr) -> (Child, Receiver<String>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskqueue"));
    command.arg("serve");
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    for (name, _) in std::env::vars() {
        if name.starts_with("TASKQUEUE_") || name == "RUST_LOG" || name == "NO_COLOR" {
            command.env_remove(name);
        }
    }
    let mut child = command
        .args(["--bind", &address.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    (child, lines_rx)
}

/// Lines until one satisfies `done` (all of them, that one last).
fn lines_until(lines: &Receiver<String>, done: impl Fn(&str) -> bool) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no awaited line in:\n{}", seen.join("\n")));
        let last = done(&line);
        seen.push(line);
        if last {
            return seen;
        }
    }
}

fn assert_no_escape_codes(lines: &[String]) {
    for line in lines {
        assert!(!line.contains('\u{1b}'), "escape code in {line:?}");
    }
}

#[actix_rt::test]
async fn with_no_configuration_the_quick_start_runs_and_says_so_first() {
    let address = free_address();
    let (mut child, lines) = serve_logged(None, address);
    let first = lines_until(&lines, |_| true);
    assert!(
        first[0].contains("quick start") && first[0].contains("no configuration"),
        "{first:?}"
    );
    // Logged just before the signal handlers are installed.
    let started = lines_until(&lines, |line| line.contains("taskqueue serving"));
    wait_until_up(address).await;
    let (status, health) = get(address, "/health").await;
    assert_eq!(status, 200, "{health}");
    // The example tasks call this process's sink, wherever it listens.
    let (status, sink) = get(address, "/sink").await;
    assert_eq!(status, 200, "{sink}");
    assert_eq!(terminate(&mut child), 0);
    let rest: Vec<String> = lines.try_iter().collect();
    assert_no_escape_codes(&first);
    assert_no_escape_codes(&started);
    assert_no_escape_codes(&rest);
}

#[actix_rt::test]
async fn an_unreachable_redis_is_named_once_with_what_to_do() {
    let backends = Backends::new("first-contact");
    let port = free_address().port();
    let config = temp_file(
        "taskqueue.yaml",
        &format!(
            r#"
backend: external
redis:
  addresses: ["127.0.0.1:{port}"]
  prefix: "{prefix}"
queue:
  url: "{amqp}"
monitoring:
  log_level: "info,taskqueue=debug"
tasks: []
"#,
            prefix = backends.prefix,
            amqp = backends.amqp_url,
        ),
    );
    let (mut child, lines) = serve_logged(Some(&config), free_address());
    // Wait until two more attempts were made after the first (logged at
    // debug level only).
    let seen = {
        let mut seen = Vec::new();
        let mut retries = 0;
        while retries < 2 {
            let batch = lines_until(&lines, |line| line.contains("still waiting for Redis"));
            seen.extend(batch);
            retries += 1;
        }
        seen
    };
    kill9(&mut child);
    let named: Vec<&String> = seen
        .iter()
        .filter(|line| line.contains("cannot be reached"))
        .collect();
    assert_eq!(named.len(), 1, "{seen:#?}");
    let line = named[0];
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    assert!(line.contains("scripts/services.sh start"), "{line}");
    assert!(line.contains("quick start"), "{line}");
    assert_eq!(
        line.matches("Connection refused").count(),
        1,
        "the cause said once: {line}"
    );
    assert_no_escape_codes(&seen);
}

#[actix_rt::test]
async fn json_logs_carry_the_job_fields_on_every_line() {
    // An endpoint nobody listens on: the attempt fails and is retried,
    // which is logged inside the job's span.
    let closed = free_address();
    let address = free_address();
    let config = temp_file(
        "taskqueue.yaml",
        &format!(
            r#"
backend: embedded
scheduler:
  check_interval: 1s
  distribution_window: 1s
execution:
  retry_delay: 100ms
  max_retry_delay: 200ms
monitoring:
  log_level: info
  log_format: json
api:
  demo_users: 1
tasks:
  - id: unreachable
    name: unreachable
    interval: {{ type: daily, value: 1 }}
    timeout: 2s
    retries: 1
    config: {{ endpoint: "http://{closed}/x", method: POST }}
"#
        ),
    );
    let (mut child, lines) = serve_logged(Some(&config), address);
    let seen = lines_until(&lines, |line| line.contains("attempt failed; retrying"));
    // The job may run before the SIGTERM handler is installed: stop it
    // the hard way, the lines are read already.
    kill9(&mut child);
    for line in &seen {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line:?}"));
        assert!(value["level"].is_string(), "{line}");
        assert!(value["timestamp"].is_string(), "{line}");
        assert!(value["message"].is_string(), "{line}");
    }
    let retry: Value = serde_json::from_str(seen.last().unwrap()).unwrap();
    let span = &retry["span"];
    assert_eq!(span["name"], "job", "{retry}");
    assert_eq!(span["task"], "unreachable", "{retry}");
    assert_eq!(span["user"], "user_1", "{retry}");
    assert_eq!(span["attempt"], 1, "{retry}");
    assert_eq!(
        span["job_id"].as_str().map(str::len),
        Some(36),
        "a UUID: {retry}"
    );
    assert_eq!(
        retry["attempt"], 2,
        "the next attempt, an event field: {retry}"
    );
    assert_no_escape_codes(&seen);
}
