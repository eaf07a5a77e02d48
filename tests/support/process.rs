//! `taskqueue serve` as child processes on a test's backends: the config
//! file, start (any role), wait until it answers, SIGTERM, `kill -9`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use actors::{
    domain::TaskTypeId,
    store::{LockName, StateStore},
};
use chrono::{DateTime, Utc};

use super::{Backends, temp_file};

/// A service config file on `backends` with `extra` sections (YAML at the
/// top level) and `tasks` (list items) inline.
pub fn config_file(backends: &Backends, extra: &str, tasks: &str) -> PathBuf {
    let text = format!(
        r#"
backend: external
scheduler:
  check_interval: 1s
  distribution_window: 3s
  batch_size: 10
redis:
  addresses: ["{redis}"]
  prefix: "{prefix}"
queue:
  url: "{amqp}"
rate_limit:
  global: 1000
execution:
  timeout: 10s
  retry_delay: 200ms
  max_retry_delay: 2s
monitoring:
  metrics_interval: 1s
  log_level: warn
{extra}
tasks:
{tasks}
"#,
        redis = backends.redis_address(),
        prefix = backends.prefix,
        amqp = backends.amqp_url,
    );
    temp_file("taskqueue.yaml", &text)
}

/// An hourly task (list item of `tasks:`) firing at `at`, calling `endpoint` with POST.
pub fn hourly_task(id: &str, at: DateTime<Utc>, endpoint: &str) -> String {
    hourly_task_with(id, at, endpoint, "timeout: 10s")
}

/// [`hourly_task`] with `fields` (task-level YAML, one line per field at
/// the task's indentation) instead of the default timeout.
pub fn hourly_task_with(id: &str, at: DateTime<Utc>, endpoint: &str, fields: &str) -> String {
    let fields: String = fields
        .lines()
        .map(|line| format!("    {}\n", line.trim()))
        .collect();
    format!(
        r#"  - id: {id}
    name: {id}
    interval: {{ type: hourly, value: 1, at_time: "{at}" }}
{fields}    config: {{ endpoint: "{endpoint}", method: POST }}
"#,
        at = at.format("%H:%M:%S")
    )
}

/// Records `at` as the task's last fire, so its next fire is due whenever
/// the processes get to it (however long they take to start).
pub async fn seed_last_fire(store: &dyn StateStore, task: &str, at: DateTime<Utc>) {
    let lock = LockName::Schedule(TaskTypeId::parse(task).unwrap());
    let lease = store
        .acquire_lock(&lock, Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .record_fire(&TaskTypeId::parse(task).unwrap(), at, &lease)
            .await
            .unwrap()
    );
    store.release_lock(&lock, &lease).await.unwrap();
}

/// A free loopback address (the port is released for the process to take).
pub fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Waits until `/health` of `address` answers at all.
pub async fn wait_until_up(address: SocketAddr) {
    for _ in 0..400 {
        if reqwest::get(format!("http://{address}/health"))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{address} never answered");
}

/// `taskqueue serve --config config` (`--role all`) on a free port.
pub fn serve(config: &Path) -> Child {
    serve_on(config, free_address())
}

/// `taskqueue serve --config config --bind address` (`--role all`).
pub fn serve_on(config: &Path, address: SocketAddr) -> Child {
    serve_as(config, address, "all")
}

/// `taskqueue serve --config config --bind address --role role`.
pub fn serve_as(config: &Path, address: SocketAddr, role: &str) -> Child {
    serve_command(config, address, role).spawn().unwrap()
}

/// The command of [`serve_as`], for callers that add to its environment.
fn serve_command(config: &Path, address: SocketAddr, role: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskqueue"));
    command
        .args(["serve", "--config"])
        .arg(config)
        .args(["--bind", &address.to_string(), "--role", role])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    command
}

/// [`serve_as`] with the wall clock moved by `offset` (`+30s`), through
/// `libfaketime` (Debian's `libfaketime`, installed by `scripts/services.sh
/// start`; `TASKQUEUE_TEST_LIBFAKETIME` names another copy) preloaded into
/// the process itself, so signals reach it: every wall-clock read
/// (`SystemTime`, so `Utc::now()`) is shifted, the monotonic clock is left
/// alone so timers and timeouts keep their real length.
pub fn serve_skewed(config: &Path, address: SocketAddr, role: &str, offset: &str) -> Child {
    let library = std::env::var("TASKQUEUE_TEST_LIBFAKETIME").unwrap_or_else(|_| {
        format!(
            "/usr/lib/{}-linux-gnu/faketime/libfaketimeMT.so.1",
            std::env::consts::ARCH
        )
    });
    assert!(
        Path::new(&library).exists(),
        "{library} missing: scripts/services.sh start installs libfaketime"
    );
    serve_command(config, address, role)
        .env("LD_PRELOAD", library)
        .env("FAKETIME", offset)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .spawn()
        .unwrap()
}

/// Sends `signal` (`TERM`, `HUP`, `KILL`...) to the child.
pub fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {}", child.id());
}

/// SIGTERM, then waits for the exit; the exit code.
pub fn terminate(child: &mut Child) -> i32 {
    signal(child, "TERM");
    child.wait().unwrap().code().unwrap_or(-1)
}

/// `kill -9`, then reaps the process.
pub fn kill9(child: &mut Child) {
    signal(child, "KILL");
    let _ = child.wait();
}
