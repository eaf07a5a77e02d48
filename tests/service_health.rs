//! `/health` checks what the process depends on, on the real servers: Redis
//! (a private `redis-server` this test starts and stops) and RabbitMQ (the
//! test's own vhost, deleted and recreated). A backend that goes away turns
//! `/health` into a 503 naming it, and back to 200 once it returns; a
//! replica started before its Redis waits for it, saying so, instead of
//! exiting.

use crate::support;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use actors::clock::SystemClock;
use serde_json::Value;
use std::sync::Arc;
use support::*;

/// A `redis-server` of this test alone, on its own port; killed on drop.
struct PrivateRedis {
    port: u16,
    process: Child,
}

impl PrivateRedis {
    fn start_on(port: u16) -> PrivateRedis {
        let process = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let redis = PrivateRedis { port, process };
        redis.wait_until_answering();
        redis
    }

    fn wait_until_answering(&self) {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(mut connection) = client.get_connection()
                && redis::cmd("PING").query::<String>(&mut connection).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("private redis-server on {} never answered", self.port);
    }

    fn stop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free loopback port (released for the next taker).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `/health` until `accept(status, body)`, or panics after a while.
async fn health_until(
    address: SocketAddr,
    what: &str,
    accept: impl Fn(u16, &Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = (0, Value::Null);
    while Instant::now() < deadline {
        if let Ok(response) = reqwest::get(format!("http://{address}/health")).await {
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if accept(status, &body) {
                return body;
            }
            last = (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/health never showed {what}; last {} {}", last.0, last.1);
}

fn ctl(args: &[&str]) {
    let status = Command::new("/usr/sbin/rabbitmqctl")
        .arg("-q")
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "rabbitmqctl {args:?}");
}

#[actix_rt::test]
async fn health_names_each_dependency_and_actor() {
    let backends = Backends::new("health-ok");
    let app = spawn_app(config(&backends), Vec::new(), Arc::new(SystemClock)).await;
    let body = health_until(app.address, "healthy", |status, body| {
        status == 200 && body["status"] == "healthy"
    })
    .await;
    assert_eq!(body["dependencies"]["redis"]["status"], "up", "{body}");
    assert_eq!(body["dependencies"]["rabbitmq"]["status"], "up", "{body}");
    for actor in ["scheduler", "distributor"] {
        assert_eq!(body["actors"][actor]["status"], "running", "{body}");
        assert_eq!(body["actors"][actor]["restarts"], 0, "{body}");
    }
    // Each worker lane beats for its dispatcher and its executors.
    for entry in ["dispatcher.0", "executors.0"] {
        assert_eq!(body["actors"][entry]["status"], "running", "{body}");
        assert!(
            body["actors"][entry]["last_heartbeat_ms"]
                .as_u64()
                .is_some_and(|ms| ms < 30_000),
            "{body}"
        );
    }
    assert_eq!(body["quarantined"]["count"], 0, "{body}");
    assert!(body["workers"].as_u64().is_some(), "{body}");
    assert!(body["errors"].is_null(), "{body}");
}

#[actix_rt::test]
async fn health_is_503_while_redis_is_down_and_heals() {
    let backends = Backends::new("health-redis");
    let port = free_port();
    let mut redis = PrivateRedis::start_on(port);
    let mut config = config(&backends);
    config.redis.addresses = vec![format!("127.0.0.1:{port}")];
    let app = spawn_app(config, Vec::new(), Arc::new(SystemClock)).await;
    health_until(app.address, "healthy", |status, body| {
        status == 200 && body["status"] == "healthy"
    })
    .await;

    redis.stop();
    let body = health_until(app.address, "redis down", |status, body| {
        status == 503 && body["dependencies"]["redis"]["status"] == "down"
    })
    .await;
    assert_eq!(body["status"], "unhealthy", "{body}");
    assert_eq!(body["dependencies"]["rabbitmq"]["status"], "up", "{body}");
    assert!(
        body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().starts_with("redis unreachable")),
        "{body}"
    );

    let _redis = PrivateRedis::start_on(port);
    health_until(app.address, "redis back", |status, body| {
        status == 200 && body["dependencies"]["redis"]["status"] == "up"
    })
    .await;
}

#[actix_rt::test]
async fn health_is_503_while_rabbitmq_is_gone_and_heals() {
    let backends = Backends::new("health-amqp");
    let app = spawn_app(config(&backends), Vec::new(), Arc::new(SystemClock)).await;
    health_until(app.address, "healthy", |status, body| {
        status == 200 && body["status"] == "healthy"
    })
    .await;

    // Deleting the vhost closes every connection to it, and refuses new
    // ones until it exists again.
    ctl(&["delete_vhost", &backends.vhost.name]);
    let body = health_until(app.address, "rabbitmq down", |status, body| {
        status == 503 && body["dependencies"]["rabbitmq"]["status"] == "down"
    })
    .await;
    assert_eq!(body["status"], "unhealthy", "{body}");
    assert_eq!(body["dependencies"]["redis"]["status"], "up", "{body}");

    ctl(&["add_vhost", &backends.vhost.name]);
    ctl(&[
        "set_permissions",
        "-p",
        &backends.vhost.name,
        "guest",
        ".*",
        ".*",
        ".*",
    ]);
    health_until(app.address, "rabbitmq back", |status, body| {
        status == 200 && body["dependencies"]["rabbitmq"]["status"] == "up"
    })
    .await;
}

/// A service config file on `backends` with Redis at `redis`.
fn config_file(backends: &Backends, redis: &str) -> std::path::PathBuf {
    config_file_on(backends, redis, &backends.amqp_url)
}

/// A service config file on `backends`' prefix with Redis at `redis` and
/// RabbitMQ at `amqp`.
fn config_file_on(backends: &Backends, redis: &str, amqp: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
backend: external
redis:
  addresses: ["{redis}"]
  prefix: "{prefix}"
queue:
  url: "{amqp}"
monitoring:
  log_level: warn
tasks: []
"#,
        prefix = backends.prefix,
    );
    temp_file("taskqueue.yaml", &text)
}

fn serve(config: &Path, address: SocketAddr) -> Child {
    Command::new(env!("CARGO_BIN_EXE_taskqueue"))
        .args(["serve", "--config"])
        .arg(config)
        .args(["--bind", &address.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[actix_rt::test]
async fn a_replica_started_before_redis_waits_for_it() {
    let backends = Backends::new("health-wait");
    let port = free_port();
    let file = config_file(&backends, &format!("127.0.0.1:{port}"));
    let address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut replica = serve(&file, address);

    // The failed attempt is logged once, naming Redis and its address.
    let line = wait_for_line(&mut replica, "Redis at");
    assert!(line.contains(&port.to_string()), "{line}");

    let _redis = PrivateRedis::start_on(port);
    health_until(address, "healthy once Redis came", |status, body| {
        status == 200 && body["dependencies"]["redis"]["status"] == "up"
    })
    .await;
    let _ = replica.kill();
    let _ = replica.wait();
}

/// Reads the replica's log until a line contains `text`; that line.
fn wait_for_line(replica: &mut Child, text: &str) -> String {
    let stderr = replica.stderr.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    loop {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the replica logs while it waits");
        if line.contains(text) {
            assert!(line.contains("cannot be reached"), "{line}");
            assert!(replica.try_wait().unwrap().is_none(), "the replica exited");
            return line;
        }
    }
}

#[actix_rt::test]
async fn a_replica_started_before_its_rabbitmq_vhost_waits_for_it() {
    let backends = Backends::new("health-wait-amqp");
    // A vhost that does not exist yet: RabbitMQ refuses the connection.
    let late = format!("{}-late", backends.vhost.name);
    let authority_end = backends.amqp_url.rfind('/').unwrap();
    let amqp = format!("{}/{late}", &backends.amqp_url[..authority_end]);
    let file = config_file_on(&backends, &backends.redis_address(), &amqp);
    let address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut replica = serve(&file, address);

    let line = wait_for_line(&mut replica, "RabbitMQ at");
    assert!(line.contains(&late), "{line}");
    assert!(
        !line.contains("guest:guest"),
        "no credentials in logs: {line}"
    );

    ctl(&["add_vhost", &late]);
    ctl(&["set_permissions", "-p", &late, "guest", ".*", ".*", ".*"]);
    let healthy = health_until(address, "healthy once the vhost came", |status, body| {
        status == 200 && body["dependencies"]["rabbitmq"]["status"] == "up"
    })
    .await;
    assert_eq!(
        healthy["dependencies"]["redis"]["status"], "up",
        "{healthy}"
    );
    let _ = replica.kill();
    let _ = replica.wait();
    ctl(&["delete_vhost", &late]);
}
