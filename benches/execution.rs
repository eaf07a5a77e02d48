//! W2, execution throughput: `taskqueue serve --role worker` (pool of 50)
//! working off N ready jobs (default 100,000) that POST to a loopback
//! sink, next to two ceilings measured in the same run on the same
//! servers: bare lapin consume + ack of the same N messages (same
//! prefetch) and bare reqwest POSTs to the same sink at the same
//! concurrency.
//!
//! For each it reports jobs/s (first sink request, or first delivery, to
//! the last job acknowledged) and CPU per job from `/proc/<pid>/stat`
//! (utime + stime over the measured interval): the worker process, the
//! bare client, the sink, and, for the worker run, RabbitMQ and Redis
//! (shared servers: other load on them shows up there).
//!
//! The sink is this binary again (`--sink`), a child process running
//! actix-web on two threads that counts requests per `Idempotency-Key`.
//! Jobs are preloaded through taskqueue's own broker adapter into a vhost
//! created for the run (`rabbitmqctl add_vhost`, deleted afterwards); each
//! worker run has a fresh Redis prefix, deleted afterwards.
//!
//! Run: `cargo bench --bench execution` (`EXEC_BENCH_JOBS` or a numeric
//! argument sets N, `EXEC_BENCH_RUNS` the runs, default 3). `--tiny` runs
//! 500 jobs once, asserts that every job reached the sink exactly once
//! and prints no timings (for CI). Progress goes to stderr, the table to
//! stdout.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use actors::{
    broker::{
        JobBroker, QUEUE_NORMAL,
        amqp::{AmqpBroker, AmqpOptions},
    },
    domain::{Job, JobEnvelope, JobMetadata, Priority, TaskTypeId, UserId},
};
use chrono::Utc;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use lapin::{
    Connection, ConnectionProperties,
    options::QueueDeclareOptions,
    options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions},
    types::FieldTable,
};
use redis::aio::ConnectionManager;
use uuid::Uuid;

const CTL: &str = "/usr/sbin/rabbitmqctl";
const TASK: &str = "bench_exec";
const POOL: usize = 50;
const TINY_JOBS: usize = 500;

fn redis_url() -> String {
    std::env::var("TASKQUEUE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

fn redis_address() -> String {
    redis_url()
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:6379")
        .to_owned()
}

fn ctl(args: &[&str]) {
    let status = Command::new(CTL)
        .arg("-q")
        .args(args)
        .status()
        .expect("rabbitmqctl runs");
    assert!(status.success(), "rabbitmqctl {args:?} failed");
}

// --- CPU accounting -------------------------------------------------------

/// Clock ticks per second of `/proc/<pid>/stat` times.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of `pid` (or `self`), in seconds.
fn cpu_seconds(pid: &str, ticks: f64) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(after_name) = stat.rfind(')').map(|at| &stat[at + 1..]) else {
        return 0.0;
    };
    // Fields after the name start at field 3 (state); utime is field 14.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let stime: f64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    (utime + stime) / ticks
}

/// Pids of the processes named `comm`.
fn pids_named(comm: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            name.chars().all(|c| c.is_ascii_digit()).then_some(name)
        })
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|text| text.trim() == comm)
        })
        .collect()
}

/// CPU seconds of a set of processes, read together.
struct CpuMeter {
    ticks: f64,
    pids: Vec<Vec<String>>,
}

impl CpuMeter {
    fn read(&self) -> Vec<f64> {
        self.pids
            .iter()
            .map(|group| group.iter().map(|pid| cpu_seconds(pid, self.ticks)).sum())
            .collect()
    }
}

// --- the sink ---------------------------------------------------------------

/// Requests per `Idempotency-Key`.
type Counts = Arc<Mutex<HashMap<Uuid, u32>>>;

async fn sink_job(
    request: HttpRequest,
    _body: web::Bytes,
    counts: web::Data<Counts>,
) -> HttpResponse {
    let key = request
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v).ok());
    if let Some(key) = key
        && let Ok(mut counts) = counts.lock()
    {
        *counts.entry(key).or_default() += 1;
    }
    HttpResponse::Ok().finish()
}

/// `total distinct duplicated` since the last reset.
async fn sink_counts(counts: web::Data<Counts>) -> HttpResponse {
    let counts = counts.lock().map(|c| c.clone()).unwrap_or_default();
    let total: u64 = counts.values().map(|n| u64::from(*n)).sum();
    let duplicated = counts.values().filter(|n| **n > 1).count();
    HttpResponse::Ok().body(format!("{total} {} {duplicated}", counts.len()))
}

async fn sink_reset(counts: web::Data<Counts>) -> HttpResponse {
    if let Ok(mut counts) = counts.lock() {
        counts.clear();
    }
    HttpResponse::Ok().finish()
}

/// The sink process: prints its address on stdout, serves until killed.
fn run_sink() {
    actix_rt::System::new().block_on(async {
        let counts = web::Data::new(Counts::default());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(counts.clone())
                .route("/job", web::post().to(sink_job))
                .route("/_counts", web::get().to(sink_counts))
                .route("/_reset", web::post().to(sink_reset))
        })
        .workers(2)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("bind");
        println!("{}", server.addrs()[0]);
        server.run().await.expect("sink runs");
    });
}

struct SinkProcess {
    child: Child,
    address: String,
}

impl SinkProcess {
    fn start() -> SinkProcess {
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .arg("--sink")
            .stdout(Stdio::piped())
            .spawn()
            .expect("sink starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("sink address");
        SinkProcess {
            child,
            address: line.trim().to_owned(),
        }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// (total, distinct, duplicated) since the last reset.
    async fn counts(&self, http: &reqwest::Client) -> (u64, u64, u64) {
        let text = http
            .get(format!("http://{}/_counts", self.address))
            .send()
            .await
            .expect("sink answers")
            .text()
            .await
            .expect("counts");
        let numbers: Vec<u64> = text
            .split_whitespace()
            .map(|n| n.parse().expect("number"))
            .collect();
        (numbers[0], numbers[1], numbers[2])
    }

    async fn reset(&self, http: &reqwest::Client) {
        http.post(format!("http://{}/_reset", self.address))
            .send()
            .await
            .expect("sink answers");
    }
}

impl Drop for SinkProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --- jobs and the broker ------------------------------------------------------

fn envelope(n: usize) -> JobEnvelope {
    let now = Utc::now();
    let due = now - chrono::Duration::seconds(1);
    JobEnvelope::new(
        Job {
            id: Uuid::new_v4(),
            task_type_id: TaskTypeId::parse(TASK).expect("valid task id"),
            user_id: UserId::parse(format!("user-{n:08}")).expect("valid user id"),
            scheduled_at: due,
            execute_after: due,
            attempt: 1,
            priority: Priority::Normal,
            payload: Vec::new(),
            created_at: now,
        },
        JobMetadata {
            correlation_id: Uuid::new_v4().to_string(),
            source: "scheduler".into(),
            distribution_slot: None,
        },
    )
}

/// Publishes `jobs` fresh ready jobs (confirmed) into the normal queue.
async fn preload(broker: &AmqpBroker, jobs: usize, what: &str) {
    let bar = progress(jobs as u64, &format!("preloading {what}"));
    let mut done = 0;
    while done < jobs {
        let chunk: Vec<_> = (done..(done + 5_000).min(jobs)).map(envelope).collect();
        broker.publish(&chunk).await.expect("preload publish");
        done += chunk.len();
        bar.set_position(done as u64);
    }
    bar.finish_and_clear();
}

/// Ready messages in the normal queue.
async fn ready_in_normal(connection: &Connection) -> u32 {
    let channel = connection.create_channel().await.expect("channel");
    let queue = channel
        .queue_declare(
            QUEUE_NORMAL.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue exists");
    let _ = channel.close(200, "done".into()).await;
    queue.message_count()
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:<28} {bar:30} {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_owned());
    bar
}

// --- the worker -----------------------------------------------------------------

fn write_config(dir: &Path, prefix: &str, amqp_url: &str, sink: &str) -> PathBuf {
    let text = format!(
        r#"backend: external
redis:
  addresses: ["{redis}"]
  prefix: "{prefix}"
queue:
  url: "{amqp_url}"
worker:
  pool_size: {POOL}
  shutdown_timeout: 10s
rate_limit:
  global: 1000000
  per_task:
    {TASK}: 1000000
execution:
  timeout: 10s
monitoring:
  metrics_interval: 1s
  log_level: warn
tasks:
  - id: {TASK}
    name: {TASK}
    interval: {{ type: hourly, value: 1 }}
    timeout: 10s
    config: {{ endpoint: "http://{sink}/job", method: POST }}
"#,
        redis = redis_address(),
    );
    let path = dir.join("taskqueue.yaml");
    std::fs::write(&path, text).expect("config written");
    path
}

fn free_address() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .to_string()
}

async fn processed(http: &reqwest::Client, api: &str) -> Option<u64> {
    let response = http.get(format!("http://{api}/stats")).send().await.ok()?;
    let stats: serde_json::Value = response.json().await.ok()?;
    stats["processed"].as_u64()
}

async fn delete_prefix(connection: &mut ConnectionManager, prefix: &str) {
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(10_000)
            .query_async(connection)
            .await
            .expect("SCAN");
        if !keys.is_empty() {
            redis::cmd("UNLINK")
                .arg(keys)
                .query_async::<()>(connection)
                .await
                .expect("UNLINK");
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
}

/// One measured interval.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    jobs_per_second: f64,
    /// µs of CPU per job: the system under test (worker or bare client).
    cpu_us: f64,
    /// µs of CPU per job of the sink.
    sink_us: f64,
    /// µs of CPU per job of RabbitMQ.
    rabbit_us: f64,
    /// µs of CPU per job of Redis.
    redis_us: f64,
}

fn per_job_us(before: &[f64], after: &[f64], jobs: usize) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| (a - b) * 1e6 / jobs as f64)
        .collect()
}

struct Bench {
    jobs: usize,
    amqp_url: String,
    sink: SinkProcess,
    http: reqwest::Client,
    broker: AmqpBroker,
    connection: Connection,
    redis: ConnectionManager,
    ticks: f64,
    rabbit_pids: Vec<String>,
    redis_pids: Vec<String>,
    tiny: bool,
}

impl Bench {
    async fn worker_run(&mut self, run: usize) -> Sample {
        preload(&self.broker, self.jobs, "jobs for the worker").await;
        self.sink.reset(&self.http).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let prefix = format!("tqbench-exec-{}", Uuid::new_v4().simple());
        let config = write_config(dir.path(), &prefix, &self.amqp_url, &self.sink.address);
        let api = free_address();
        let log = std::fs::File::create(dir.path().join("worker.log")).expect("log file");
        let mut worker = Command::new(env!("CARGO_BIN_EXE_taskqueue"))
            .args(["serve", "--role", "worker", "--config"])
            .arg(&config)
            .args(["--bind", &api])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("worker starts");
        let meter = CpuMeter {
            ticks: self.ticks,
            pids: vec![
                vec![worker.id().to_string()],
                vec![self.sink.pid()],
                self.rabbit_pids.clone(),
                self.redis_pids.clone(),
            ],
        };
        let bar = progress(self.jobs as u64, &format!("run {run}: worker"));
        // The clock starts at the first request the sink sees.
        let (started, cpu_before) = loop {
            let cpu = meter.read();
            if self.sink.counts(&self.http).await.0 > 0 {
                break (Instant::now(), cpu);
            }
            if let Ok(Some(status)) = worker.try_wait() {
                let log =
                    std::fs::read_to_string(dir.path().join("worker.log")).unwrap_or_default();
                panic!("worker exited with {status} before the first job:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let done = processed(&self.http, &api).await.unwrap_or(0);
            bar.set_position(done);
            if done as usize >= self.jobs {
                break;
            }
            assert!(Instant::now() < deadline, "worker stalled at {done} jobs");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = started.elapsed();
        let cpu_after = meter.read();
        bar.finish_and_clear();
        let status = Command::new("kill")
            .args(["-TERM", &worker.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let exit = worker.wait().expect("worker exits");
        assert!(exit.success(), "worker exit status {exit}");
        // Unacked deliveries would be back in the queue after the worker's
        // connection closed.
        assert_eq!(ready_in_normal(&self.connection).await, 0, "jobs left over");
        let (total, distinct, duplicated) = self.sink.counts(&self.http).await;
        assert_eq!(distinct as usize, self.jobs, "every job reached the sink");
        if self.tiny {
            assert_eq!(total as usize, self.jobs, "no job reached the sink twice");
            assert_eq!(duplicated, 0);
        }
        delete_prefix(&mut self.redis, &prefix).await;
        let us = per_job_us(&cpu_before, &cpu_after, self.jobs);
        Sample {
            jobs_per_second: self.jobs as f64 / took.as_secs_f64(),
            cpu_us: us[0],
            sink_us: us[1],
            rabbit_us: us[2],
            redis_us: us[3],
        }
    }

    /// Bare lapin: one consumer on the normal queue with the worker's
    /// prefetch, every delivery acked.
    async fn bare_consume(&self, run: usize) -> Sample {
        preload(&self.broker, self.jobs, "jobs for bare consume").await;
        let meter = CpuMeter {
            ticks: self.ticks,
            pids: vec![
                vec!["self".to_owned()],
                vec![self.sink.pid()],
                self.rabbit_pids.clone(),
                self.redis_pids.clone(),
            ],
        };
        let bar = progress(self.jobs as u64, &format!("run {run}: bare consume+ack"));
        let channel = self.connection.create_channel().await.expect("channel");
        let prefetch = u16::try_from(POOL).unwrap_or(u16::MAX).max(10);
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .expect("qos");
        let mut consumer = channel
            .basic_consume(
                QUEUE_NORMAL.into(),
                "bench".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let mut first = None;
        for n in 0..self.jobs {
            let delivery = consumer.next().await.expect("open").expect("delivery");
            if first.is_none() {
                first = Some((Instant::now(), meter.read()));
            }
            delivery.ack(BasicAckOptions::default()).await.expect("ack");
            if n.is_multiple_of(1000) {
                bar.set_position(n as u64);
            }
        }
        let (started, cpu_before) = first.expect("at least one job");
        let took = started.elapsed();
        let cpu_after = meter.read();
        bar.finish_and_clear();
        channel
            .basic_cancel("bench".into(), BasicCancelOptions::default())
            .await
            .expect("cancel");
        let _ = channel.close(200, "done".into()).await;
        assert_eq!(ready_in_normal(&self.connection).await, 0, "jobs left over");
        let us = per_job_us(&cpu_before, &cpu_after, self.jobs);
        Sample {
            jobs_per_second: self.jobs as f64 / took.as_secs_f64(),
            cpu_us: us[0],
            sink_us: us[1],
            rabbit_us: us[2],
            redis_us: us[3],
        }
    }

    /// Bare reqwest: `POOL` tasks sharing one client POST the jobs' bodies
    /// to the sink.
    async fn bare_post(&self, run: usize) -> Sample {
        self.sink.reset(&self.http).await;
        let meter = CpuMeter {
            ticks: self.ticks,
            pids: vec![
                vec!["self".to_owned()],
                vec![self.sink.pid()],
                self.rabbit_pids.clone(),
                self.redis_pids.clone(),
            ],
        };
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(POOL)
            .build()
            .expect("client");
        let url = format!("http://{}/job", self.sink.address);
        let next = Arc::new(AtomicUsize::new(0));
        let bar = progress(self.jobs as u64, &format!("run {run}: bare reqwest"));
        let cpu_before = meter.read();
        let started = Instant::now();
        let tasks: Vec<_> = (0..POOL)
            .map(|_| {
                let client = client.clone();
                let url = url.clone();
                let next = next.clone();
                let jobs = self.jobs;
                let bar = bar.clone();
                tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= jobs {
                            break;
                        }
                        let job = envelope(n).job;
                        let response = client
                            .post(&url)
                            .header("Idempotency-Key", job.id.to_string())
                            .header("X-Taskqueue-Attempt", "1")
                            .json(&serde_json::json!({
                                "job_id": job.id,
                                "task_type_id": job.task_type_id,
                                "user_id": job.user_id,
                                "scheduled_at": job.scheduled_at,
                                "attempt": job.attempt,
                                "parameters": {},
                            }))
                            .send()
                            .await
                            .expect("sink answers");
                        assert!(response.status().is_success());
                        let _ = response.bytes().await;
                        if n.is_multiple_of(1000) {
                            bar.set_position(n as u64);
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("poster");
        }
        let took = started.elapsed();
        let cpu_after = meter.read();
        bar.finish_and_clear();
        let (total, distinct, _) = self.sink.counts(&self.http).await;
        assert_eq!((total as usize, distinct as usize), (self.jobs, self.jobs));
        let us = per_job_us(&cpu_before, &cpu_after, self.jobs);
        Sample {
            jobs_per_second: self.jobs as f64 / took.as_secs_f64(),
            cpu_us: us[0],
            sink_us: us[1],
            rabbit_us: us[2],
            redis_us: us[3],
        }
    }
}

fn stats(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    (
        sorted[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
    )
}

fn print_table(jobs: usize, runs: usize, rows: &[(&str, Vec<Sample>)]) {
    let ceiling = rows
        .iter()
        .find(|(name, _)| name.starts_with("bare lapin"))
        .map_or(1.0, |(_, samples)| {
            stats(
                &samples
                    .iter()
                    .map(|s| s.jobs_per_second)
                    .collect::<Vec<_>>(),
            )
            .1
        });
    println!();
    println!("W2 execution: {jobs} jobs, pool {POOL}, {runs} runs (min / median / max)");
    println!();
    println!(
        "| what | jobs/s min | median | max | ratio (median) | CPU µs/job (median) | sink µs/job | RabbitMQ µs/job | Redis µs/job |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, samples) in rows {
        let rate = stats(
            &samples
                .iter()
                .map(|s| s.jobs_per_second)
                .collect::<Vec<_>>(),
        );
        let median = |f: fn(&Sample) -> f64| stats(&samples.iter().map(f).collect::<Vec<_>>()).1;
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} |",
            rate.0,
            rate.1,
            rate.2,
            rate.1 / ceiling,
            median(|s| s.cpu_us),
            median(|s| s.sink_us),
            median(|s| s.rabbit_us),
            median(|s| s.redis_us),
        );
    }
    println!();
    println!(
        "ratio: jobs/s over bare lapin consume + ack. CPU: the process under test (the worker, or the bench's own bare client); RabbitMQ and Redis are shared servers."
    );
}

async fn bench(jobs: usize, runs: usize, tiny: bool, amqp_url: String) {
    let broker = AmqpBroker::connect(
        &amqp_url,
        AmqpOptions {
            delay_pump: false,
            ..AmqpOptions::default()
        },
    )
    .await
    .expect("broker");
    broker.declare().await.expect("declare");
    let connection = Connection::connect(&amqp_url, ConnectionProperties::default())
        .await
        .expect("connect");
    let client = redis::Client::open(redis_url()).expect("redis url");
    let redis = ConnectionManager::new(client).await.expect("redis");
    let mut bench = Bench {
        jobs,
        amqp_url,
        sink: SinkProcess::start(),
        http: reqwest::Client::new(),
        broker,
        connection,
        redis,
        ticks: clock_ticks(),
        rabbit_pids: pids_named("beam.smp"),
        redis_pids: pids_named("redis-server"),
        tiny,
    };
    let mut worker = Vec::new();
    let mut consume = Vec::new();
    let mut post = Vec::new();
    for run in 1..=runs {
        let sample = bench.worker_run(run).await;
        eprintln!(
            "run {run}/{runs}: worker {:.0} jobs/s, {:.1} µs CPU/job",
            sample.jobs_per_second, sample.cpu_us
        );
        worker.push(sample);
        let sample = bench.bare_consume(run).await;
        eprintln!(
            "run {run}/{runs}: bare consume+ack {:.0} jobs/s, {:.1} µs CPU/job",
            sample.jobs_per_second, sample.cpu_us
        );
        consume.push(sample);
        let sample = bench.bare_post(run).await;
        eprintln!(
            "run {run}/{runs}: bare reqwest {:.0} jobs/s, {:.1} µs CPU/job",
            sample.jobs_per_second, sample.cpu_us
        );
        post.push(sample);
    }
    if tiny {
        println!(
            "execution --tiny: {jobs} jobs, each reached the sink exactly once through `serve --role worker`; ceilings ran"
        );
        return;
    }
    print_table(
        jobs,
        runs,
        &[
            ("`serve --role worker`, pool 50, POST to the sink", worker),
            ("bare lapin consume + ack (prefetch 50)", consume),
            ("bare reqwest POST, concurrency 50", post),
        ],
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--sink") {
        run_sink();
        return;
    }
    let tiny = args.iter().any(|a| a == "--tiny");
    let from_env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
    let jobs = if tiny {
        TINY_JOBS
    } else {
        args.iter()
            .find_map(|a| a.parse().ok())
            .or_else(|| from_env("EXEC_BENCH_JOBS"))
            .unwrap_or(100_000)
    };
    let runs = if tiny {
        1
    } else {
        from_env("EXEC_BENCH_RUNS").unwrap_or(3).max(1)
    };
    let vhost = format!("tq-bench-exec-{}", Uuid::new_v4().simple());
    ctl(&["add_vhost", &vhost]);
    ctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
    let base = std::env::var("TASKQUEUE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let authority_end = base["amqp://".len()..]
        .find('/')
        .map_or(base.len(), |at| at + "amqp://".len());
    let amqp_url = format!("{}/{}", &base[..authority_end], vhost);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(bench(jobs, runs, tiny, amqp_url));
    }));
    drop(runtime);
    ctl(&["delete_vhost", &vhost]);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
