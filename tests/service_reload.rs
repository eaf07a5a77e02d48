//! Split roles on the real Redis and RabbitMQ: a task added to the tasks
//! file reaches a `--role worker` process too. The scheduler, told by
//! SIGHUP, fans the new task out before the worker has reloaded: the
//! worker defers the job (it does not know the task yet) instead of
//! dead-lettering it, and runs it once its own SIGHUP brought the task
//! (the interval reload, 5 minutes by default, is not waited for).

use crate::support;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc::Receiver,
    time::{Duration, Instant},
};

use serde_json::json;
use support::*;

fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A `taskqueue serve` process and the lines of its log.
struct Replica {
    process: Child,
    address: SocketAddr,
    log: Receiver<String>,
}

impl Replica {
    fn start(config: &Path, role: &str) -> Replica {
        let address = free_address();
        let mut process = Command::new(env!("CARGO_BIN_EXE_taskqueue"))
            .args(["serve", "--config"])
            .arg(config)
            .args(["--role", role, "--bind", &address.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = process.stderr.take().unwrap();
        let (tx, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{}] {line}", address.port());
                let _ = tx.send(line);
            }
        });
        Replica {
            process,
            address,
            log,
        }
    }

    fn hangup(&self) {
        let sent = Command::new("kill")
            .args(["-HUP", &self.process.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits for a log line containing `text`.
    fn wait_for_log(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(line) = self.log.recv_timeout(Duration::from_millis(200))
                && line.contains(text)
            {
                return line;
            }
        }
        panic!("no log line with {text:?}");
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
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

fn write_config(path: &Path, backends: &Backends, tasks: &[(&str, String)]) {
    let mut text = format!(
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
monitoring:
  log_level: info
tasks:
"#,
        redis = backends.redis_address(),
        prefix = backends.prefix,
        amqp = backends.amqp_url,
    );
    for (id, endpoint) in tasks {
        text.push_str(&format!(
            "  - id: {id}\n    name: {id}\n    interval: {{ type: daily, value: 1 }}\n    timeout: 10s\n    config: {{ endpoint: \"{endpoint}\", method: POST }}\n"
        ));
    }
    std::fs::write(path, text).unwrap();
}

#[actix_rt::test]
async fn a_new_task_reaches_the_workers_and_its_early_jobs_wait_for_it() {
    let backends = Backends::new("reload-split");
    let sink = Sink::start();
    let file = temp_file("taskqueue.yaml", "");
    let old = ("old", sink.url("/ok/old"));
    write_config(&file, &backends, std::slice::from_ref(&old));
    let scheduler = Replica::start(&file, "scheduler");
    let worker = Replica::start(&file, "worker");
    wait_until_healthy(scheduler.address).await;
    wait_until_healthy(worker.address).await;

    write_config(&file, &backends, &[old, ("fresh", sink.url("/ok/fresh"))]);
    scheduler.hangup();
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(scheduler.address, "/schedule/status/fresh").await.0 != 200 {
        assert!(Instant::now() < deadline, "the scheduler never reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let trigger =
        json!({"task_type_id": "fresh", "user_ids": ["ann"], "execute_immediately": true});
    let (status, body) = post(scheduler.address, "/schedule/trigger", &trigger).await;
    assert_eq!(status, 202, "{body}");

    // The worker has not reloaded: it defers the job rather than failing it.
    let line = worker.wait_for_log("unknown task type; deferring");
    assert!(line.contains("fresh"), "{line}");
    worker.hangup();
    let calls = sink.wait_for("/ok/fresh", 1, Duration::from_secs(60)).await;
    assert_eq!(
        calls.len(),
        1,
        "the worker ran the new task after its reload"
    );
    assert_eq!(sink.received_at("/ok/fresh").len(), 1);
    assert!(
        backends.take_all("taskqueue.jobs.failed").await.is_empty(),
        "nothing dead-lettered"
    );
}
