//! Builders shared by the pipeline tests: a loopback sink that records
//! every request, backends of their own on the real Redis and RabbitMQ
//! (a fresh key prefix and a fresh vhost per test), and the service
//! started in-process or as a `taskqueue serve` process.
//!
//! Where the servers are, the vhost and prefix plumbing and the
//! cross-process server lock come from the workspace's test kit
//! (`tests/kit`, crate `test_kit`), which the `actors` tests and the
//! benches use too.
//!
//! Every builder that reaches the shared servers takes the shared side of
//! the cross-process server lock (`test_kit::server_lock`) first, so no test runs
//! while another test binary restarts Redis or RabbitMQ; a restart test
//! calls [`restarting_servers`] before anything else.

#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use actors::{
    domain::{Settings, TaskType, TaskTypeId, UserId},
    store::{Keys, PreferenceWrite, StateStore, redis::RedisOptions, redis::RedisStore},
};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

mod ledger;
mod process;
mod restart;

// Not every test binary uses both.
#[allow(unused_imports)]
pub use ledger::*;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use restart::*;
#[allow(unused_imports)]
pub use test_kit::server_lock::{restarting_servers, shared_servers};

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Path, e.g. `/ok/report`.
    pub path: String,
    /// HTTP method.
    pub method: String,
    /// Header name (lower case) to value.
    pub headers: BTreeMap<String, String>,
    /// Query string.
    pub query: String,
    /// Body (JSON for POST/PUT/PATCH).
    pub body: Value,
    /// When it arrived.
    pub at: DateTime<Utc>,
    /// Arrival on the monotonic clock.
    pub instant: Instant,
    /// Whether the sink answered 2xx.
    pub answered_ok: bool,
}

impl Received {
    /// The `Idempotency-Key` header.
    pub fn key(&self) -> String {
        self.headers
            .get("idempotency-key")
            .cloned()
            .unwrap_or_default()
    }

    /// The `X-Taskqueue-Attempt` header as a number.
    pub fn attempt(&self) -> u32 {
        self.headers
            .get("x-taskqueue-attempt")
            .and_then(|a| a.parse().ok())
            .unwrap_or(0)
    }
}

/// A loopback HTTP server recording every request. Behaviour by path:
/// `/ok/..` 200; `/flaky/..` 500 until attempt 3, then 200; `/fail/..`
/// 500; `/missing/..` 404; `/throttle/..` 429 with `Retry-After: 1` on
/// the first call of each job, then 200; `/always429/{secs}/..` 429 with
/// `Retry-After: {secs}` every time; `/slow/{ms}/..` waits, then 200;
/// `/slowfail/{ms}/..` (recorded on arrival) waits, then 500 for attempt
/// 1 and 200 after.
#[derive(Clone)]
pub struct Sink {
    /// Where it listens.
    pub address: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Sink {
    /// Starts a sink on a free port (on its own thread and runtime).
    pub fn start() -> Sink {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let for_server = received.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let data = web::Data::new(for_server);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .app_data(web::PayloadConfig::new(1 << 20))
                        .default_service(web::to(record))
                })
                .workers(2)
                .disable_signals()
                .bind("127.0.0.1:0")
                .unwrap();
                tx.send(server.addrs()[0]).unwrap();
                server.run().await.unwrap();
            });
        });
        let address = rx.recv().unwrap();
        Sink { address, received }
    }

    /// The URL of `path` on the sink.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Requests whose path starts with `prefix`.
    pub fn received_at(&self, prefix: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path.starts_with(prefix))
            .collect()
    }

    /// Waits until `count` requests under `prefix` arrived, or `timeout`.
    pub async fn wait_for(&self, prefix: &str, count: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received_at(prefix);
            if got.len() >= count || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn record(
    request: HttpRequest,
    body: web::Bytes,
    received: web::Data<Arc<Mutex<Vec<Received>>>>,
) -> HttpResponse {
    let path = request.path().to_owned();
    let headers: BTreeMap<String, String> = request
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_lowercase(),
                v.to_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let mut entry = Received {
        path: path.clone(),
        method: request.method().to_string(),
        query: request.query_string().to_owned(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        at: Utc::now(),
        instant: Instant::now(),
        answered_ok: false,
        headers,
    };
    let attempt = entry.attempt();
    let key = entry.key();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let response = match segments.first().copied() {
        Some("flaky") if attempt < 3 => HttpResponse::InternalServerError().finish(),
        Some("fail") => HttpResponse::InternalServerError().body("boom"),
        Some("missing") => HttpResponse::NotFound().finish(),
        Some("always429") => HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", segments.get(1).copied().unwrap_or("1")))
            .finish(),
        Some("throttle") => {
            let seen = received
                .lock()
                .unwrap()
                .iter()
                .any(|r| r.path == path && r.key() == key);
            if seen {
                HttpResponse::Ok().finish()
            } else {
                HttpResponse::TooManyRequests()
                    .insert_header(("Retry-After", "1"))
                    .finish()
            }
        }
        Some("slowfail") => {
            let ms = segments.get(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
            entry.answered_ok = attempt > 1;
            received.lock().unwrap().push(entry);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            return if attempt > 1 {
                HttpResponse::Ok().finish()
            } else {
                HttpResponse::InternalServerError().body("slow boom")
            };
        }
        Some("slow") => {
            let ms = segments.get(1).and_then(|s| s.parse().ok()).unwrap_or(1000);
            received.lock().unwrap().push(entry.clone());
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let mut all = received.lock().unwrap();
            if let Some(last) = all
                .iter_mut()
                .rev()
                .find(|r| r.instant == entry.instant && r.key() == key)
            {
                last.answered_ok = true;
            }
            return HttpResponse::Ok().finish();
        }
        _ => HttpResponse::Ok().finish(),
    };
    entry.answered_ok = response.status().is_success();
    received.lock().unwrap().push(entry);
    response
}

/// The Redis URL of the tests (the caller is about to use the server:
/// this takes the shared server lock).
pub fn redis_url() -> String {
    shared_servers();
    test_kit::redis_url()
}

/// The AMQP URL of the tests' broker, default vhost (the caller is about
/// to use the server: this takes the shared server lock).
pub fn amqp_url() -> String {
    shared_servers();
    test_kit::amqp_url()
}

/// A Redis prefix and a RabbitMQ vhost of one test; both removed on drop.
pub struct Backends {
    /// Key prefix.
    pub prefix: String,
    /// The vhost (`name`, `url`), deleted on drop.
    pub vhost: test_kit::Vhost,
    /// AMQP URL of the vhost.
    pub amqp_url: String,
    /// `host:port` of the Redis server.
    redis: String,
}

impl Backends {
    /// Fresh, empty backends named after `test`, on the shared Redis.
    pub fn new(test: &str) -> Backends {
        Backends::on_redis(test, &test_kit::address_of(&redis_url()))
    }

    /// [`Backends::new`] on the Redis server at `redis` (`host:port`).
    pub fn on_redis(test: &str, redis: &str) -> Backends {
        shared_servers();
        let vhost = test_kit::Vhost::new(&format!("pipeline-{test}"))
            .unwrap_or_else(|error| panic!("{error}"));
        let amqp_url = vhost.url.clone();
        Backends {
            prefix: format!("tqpipe-{test}-{}", Uuid::new_v4().simple()),
            vhost,
            amqp_url,
            redis: redis.to_owned(),
        }
    }

    /// `host:port` of the Redis server.
    pub fn redis_address(&self) -> String {
        self.redis.clone()
    }

    /// A store on the test's prefix.
    pub async fn store(&self) -> RedisStore {
        RedisStore::connect(
            &format!("redis://{}/", self.redis),
            Keys::new(self.prefix.clone()),
            RedisOptions::default(),
        )
        .await
        .unwrap()
    }

    /// Drains `queue` of the vhost with a raw channel: (headers, body).
    pub async fn take_all(&self, queue: &str) -> Vec<(BTreeMap<String, String>, Value)> {
        use lapin::{Connection, ConnectionProperties, options::BasicGetOptions};
        let connection = Connection::connect(&self.amqp_url, ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let mut out = Vec::new();
        while let Some(message) = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            let headers = message
                .delivery
                .properties
                .headers()
                .as_ref()
                .map(|table| {
                    table
                        .inner()
                        .iter()
                        .map(|(k, v)| {
                            let text = match v {
                                lapin::types::AMQPValue::LongString(s) => s.to_string(),
                                other => format!("{other:?}"),
                            };
                            (k.to_string(), text)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let body = serde_json::from_slice(&message.delivery.data).unwrap_or(Value::Null);
            out.push((headers, body));
        }
        let _ = connection.close(0, "done".into()).await;
        out
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        // The vhost deletes itself.
        delete_prefix_on(&format!("redis://{}/", self.redis), &self.prefix);
    }
}

/// Deletes every Redis key under `prefix` (a test's own namespace).
pub fn delete_prefix(prefix: &str) {
    delete_prefix_on(&redis_url(), prefix);
}

/// [`delete_prefix`] on the Redis server at `url` (a failure is only
/// reported: the keys are a test's leftovers).
pub fn delete_prefix_on(url: &str, prefix: &str) {
    if let Err(error) = test_kit::delete_prefix(url, prefix) {
        eprintln!("could not delete the keys of {prefix}: {error}");
    }
}

/// Runs `rabbitmqctl` ([`test_kit::rabbitmqctl`], which retries).
fn ctl(args: &[&str]) {
    shared_servers();
    test_kit::rabbitmqctl(args).unwrap_or_else(|error| panic!("{error}"));
}

/// A task definition from YAML-ish JSON.
pub fn task(value: Value) -> TaskType {
    serde_json::from_value(value).unwrap()
}

/// Enables `task` for `users` (default interval) in one write.
pub async fn enable_users(store: &dyn StateStore, task: &str, users: &[String]) {
    let task = TaskTypeId::parse(task).unwrap();
    let now = Utc::now();
    let writes: Vec<PreferenceWrite> = users
        .iter()
        .map(|u| {
            PreferenceWrite::new(
                UserId::parse(u.clone()).unwrap(),
                task.clone(),
                true,
                None,
                now,
            )
        })
        .collect();
    for chunk in writes.chunks(500) {
        store.write_preferences(chunk).await.unwrap();
    }
}

/// Enables `task` for `user` with `settings`, as of `now`.
pub async fn enable_user_with(
    store: &dyn StateStore,
    task: &str,
    user: &str,
    settings: Settings,
    now: DateTime<Utc>,
) {
    let write = PreferenceWrite::new(
        UserId::parse(user).unwrap(),
        TaskTypeId::parse(task).unwrap(),
        true,
        Some(settings),
        now,
    );
    store.write_preferences(&[write]).await.unwrap();
}

/// A service configuration on `backends`, tuned for fast tests.
pub fn config(backends: &Backends) -> taskqueue::configuration::ServiceConfig {
    let mut config = taskqueue::configuration::ServiceConfig::default();
    config.redis.addresses = vec![backends.redis_address()];
    config.redis.prefix = backends.prefix.clone();
    config.queue.url = backends.amqp_url.clone();
    config.scheduler.check_interval = Duration::from_secs(1);
    config.scheduler.distribution_window = Duration::from_secs(5);
    config.scheduler.batch_size = 100;
    config.worker.pool_size = 8;
    config.worker.shutdown_timeout = Duration::from_secs(10);
    config.rate_limit.global = 1000;
    config.execution.timeout = Duration::from_secs(10);
    config.execution.retry_delay = Duration::from_millis(200);
    config.execution.max_retry_delay = Duration::from_secs(1);
    config.monitoring.metrics_interval = Duration::from_secs(1);
    config.api.bind = "127.0.0.1:0".parse().unwrap();
    config
}

/// Path of a temporary file holding `text`.
pub fn temp_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}-{name}", Uuid::new_v4().simple()));
    std::fs::write(&path, text).unwrap();
    path
}

/// POSTs JSON to the service; (status, body).
/// `POST /schedule/trigger` of `task` for every enabled user, every job
/// now; asserts the 202 and answers its body.
pub async fn trigger_now(address: SocketAddr, task: &str) -> Value {
    let (status, body) = post(
        address,
        "/schedule/trigger",
        &serde_json::json!({"task_type_id": task, "execute_immediately": true}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    body
}

pub async fn post(address: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    post_with(address, path, body, &[]).await
}

/// `post` with extra request headers.
pub async fn post_with(
    address: SocketAddr,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{address}{path}"))
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// GETs JSON from the service; (status, body).
pub async fn get(address: SocketAddr, path: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("http://{address}{path}"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The service's `/metrics`, parsed.
pub async fn scrape(address: SocketAddr) -> prometheus_parse::Scrape {
    let text = reqwest::get(format!("http://{address}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|err| panic!("{err}: {text}"))
}

/// The sum of the samples of `name` that carry every one of `labels` (a
/// histogram counts its observations; 0 when there is none).
pub fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    use prometheus_parse::Value as Sample;
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v) => *v,
            Sample::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Sample::Summary(_) => 0.0,
        })
        .sum()
}

/// Scheduling passes of `task` the service at `address` ended with
/// `outcome` so far (`taskqueue_scheduler_passes_total`; `completed`,
/// `paused`, `lock_elsewhere`, `failed`).
pub async fn passes(address: SocketAddr, task: &str, outcome: &str) -> u64 {
    let scrape = scrape(address).await;
    sample(
        &scrape,
        "taskqueue_scheduler_passes_total",
        &[("task", task), ("outcome", outcome)],
    ) as u64
}

/// Waits until the service at `address` has ended `n` more passes of
/// `task` with `outcome` than now (at most 30 s). With `n` = 2 at least one
/// whole pass started after the call, so it saw whatever the test changed
/// before (the clock, the store): the positive observation that makes a
/// later "nothing happened" mean the scheduler looked and did nothing.
pub async fn wait_passes(address: SocketAddr, task: &str, outcome: &str, n: u64) {
    wait_passes_of(&[address], task, outcome, n).await;
}

/// [`wait_passes`] over replicas sharing the work: the passes of `task`
/// they ended between them (the replica holding the task's lock completes
/// a pass, the others find the lock held).
pub async fn wait_passes_of(addresses: &[SocketAddr], task: &str, outcome: &str, n: u64) {
    let ended = || async {
        let mut sum = 0;
        for address in addresses {
            sum += passes(*address, task, outcome).await;
        }
        sum
    };
    let target = ended().await + n;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ended = ended().await;
        if ended >= target {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{task}: {ended} passes {outcome}, never {target}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (at most 30 s) until the service at `address` counts `n`
/// attempts that reached an outcome (`/stats` `processed`): each of them
/// recorded and settled, so no copy of it is left to call again.
pub async fn wait_processed(address: SocketAddr, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, stats) = get(address, "/stats").await;
        let processed = stats["processed"].as_u64().unwrap_or(0);
        if processed >= n {
            assert_eq!(processed, n, "more attempts than expected: {stats}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{processed} attempts processed, never {n}: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The service running in this test's actix system.
pub struct RunningApp {
    /// Where its API listens.
    pub address: SocketAddr,
    /// Its executors.
    pub executors: Vec<actix::Addr<actors::executor::ExecutorActor>>,
}

/// Starts the service (`--role all`) in-process with `tasks` and `clock`.
pub async fn spawn_app(
    config: taskqueue::configuration::ServiceConfig,
    tasks: Vec<TaskType>,
    clock: actors::clock::SharedClock,
) -> RunningApp {
    spawn_app_as(taskqueue::Role::All, config, tasks, clock).await
}

/// Starts the service in-process in `role` with `tasks` and `clock`.
pub async fn spawn_app_as(
    role: taskqueue::Role,
    config: taskqueue::configuration::ServiceConfig,
    tasks: Vec<TaskType>,
    clock: actors::clock::SharedClock,
) -> RunningApp {
    let app = taskqueue::startup::Application::build_with(taskqueue::startup::Setup {
        bind: config.api.bind,
        config,
        tasks,
        task_source: None,
        role,
        clock,
    })
    .await
    .unwrap();
    let running = RunningApp {
        address: app.address(),
        executors: app.executors(),
    };
    actix_rt::spawn(app.run_until_stopped());
    running
}

/// Asserts `body` is the API's error shape with `code` and a message.
pub fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}
