//! W2, execution throughput: `taskqueue serve --role worker` (pool of 50)
//! working off N ready jobs (default 100,000) that POST to a loopback
//! sink, next to peers measured in the same run on the same servers: bare
//! lapin consume + ack of the same N messages (same prefetch, the
//! ceiling), bare reqwest POSTs to the same sink at the same concurrency,
//! and a BullMQ worker (`benches/bullmq/worker.mjs`) at the same
//! concurrency POSTing to the same sink.
//!
//! For each it reports jobs/s (first sink request, or first delivery, to
//! the last job done) and CPU per job from `/proc/<pid>/stat` over the
//! measured interval: the process under test (the worker, the bench's own
//! bare client, or node as the BullMQ script reads it from
//! `process.cpuUsage()`), and for the Rust rows the sink, RabbitMQ and
//! Redis (shared servers: other load on them shows up there).
//!
//! The sink, the vhost (created for the run, deleted afterwards), the Redis
//! prefixes, the worker's configuration and the tables come from
//! `benches/support`. Jobs are preloaded through taskqueue's own broker
//! adapter.
//!
//! Run: `cargo bench --bench execution -- [--size N] [--runs N]`
//! (`BENCH_SIZE`, `BENCH_RUNS`; default 100,000 jobs, 3 runs). `--tiny`
//! runs 500 jobs once, checks that every job reached the sink exactly once
//! (and once per job through BullMQ when its packages are installed) and
//! prints no timings (for CI). Progress goes to stderr, the table to
//! stdout.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use actors::{
    broker::{
        JobBroker, QUEUE_NORMAL,
        amqp::{AmqpBroker, AmqpOptions},
    },
    domain::{Job, JobEnvelope, JobMetadata, JobSource, Priority, TaskTypeId, UserId},
};
use anyhow::{Context, Result, bail};
use chrono::Utc;
use futures::StreamExt;
use lapin::{
    options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions},
    types::FieldTable,
};
use serde_json::Value;
use support::*;
use uuid::Uuid;

const TASK: &str = "bench_exec";
const POOL: usize = 50;

fn envelope(n: usize) -> JobEnvelope {
    let now = Utc::now();
    let due = now - chrono::Duration::seconds(1);
    JobEnvelope::new(
        Job {
            id: Uuid::new_v4(),
            task_type_id: TaskTypeId::parse(TASK).expect("valid task id"),
            user_id: UserId::parse(user_id(n)).expect("valid user id"),
            scheduled_at: due,
            execute_after: due,
            attempt: 1,
            priority: Priority::Normal,
            payload: Vec::new(),
            created_at: now,
        },
        JobMetadata {
            correlation_id: Uuid::new_v4().to_string(),
            // The bench's users have no preferences: jobs as a trigger
            // names them (a scheduled fan-out's job for such a user is
            // skipped at the claim).
            source: JobSource::Trigger,
            distribution_slot: None,
            origin: None,
        },
    )
}

/// Publishes `jobs` fresh ready jobs (confirmed) into the normal queue.
async fn preload(broker: &AmqpBroker, jobs: usize, what: &str) -> Result<()> {
    progress(format!("preloading {jobs} jobs for {what}"));
    let mut done = 0;
    while done < jobs {
        let chunk: Vec<_> = (done..(done + 5_000).min(jobs)).map(envelope).collect();
        broker.publish(&chunk).await.context("preload publish")?;
        done += chunk.len();
    }
    Ok(())
}

async fn processed(http: &reqwest::Client, api: &str) -> Option<u64> {
    let response = http.get(format!("http://{api}/stats")).send().await.ok()?;
    let stats: Value = response.json().await.ok()?;
    stats["processed"].as_u64()
}

fn bullmq_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/bullmq")
}

/// One measured interval of one row.
#[derive(Debug, Clone)]
struct Sample {
    jobs_per_second: f64,
    /// CPU seconds of the process under test, then of the others watched.
    cpu: Vec<(String, f64)>,
}

struct Bench {
    jobs: usize,
    tiny: bool,
    vhost: Vhost,
    sink: Sink,
    http: reqwest::Client,
    broker: AmqpBroker,
    servers: Vec<Watched>,
}

impl Bench {
    /// The watched processes of a Rust row: `first`, the sink, the servers.
    fn watched(&self, first: Watched) -> Vec<Watched> {
        let mut out = vec![first, self.sink.watched()];
        out.extend(self.servers.iter().cloned());
        out
    }

    async fn worker_run(&self) -> Result<Sample> {
        preload(&self.broker, self.jobs, "the worker").await?;
        self.sink.reset().await?;
        let prefix = Prefix::new("exec");
        let scratch = Scratch::new()?;
        let extra = format!(
            "worker:\n  pool_size: {POOL}\n  shutdown_timeout: 10s\nrate_limit:\n  global: 1000000\n  per_task:\n    {TASK}: 1000000\nexecution:\n  timeout: 10s\n"
        );
        let task = BenchTask {
            id: TASK.into(),
            endpoint: self.sink.url("/job"),
        };
        let config = scratch.write(
            "taskqueue.yaml",
            &service_config(&prefix, &self.vhost, &[task], &extra),
        )?;
        let api = free_address()?.to_string();
        // Started by hand, not with `Service::start`, which waits for
        // `/health`: the worker starts on the ready jobs at once, and the
        // clock must start at its first call.
        let mut worker = Command::new(taskqueue_bin())
            .args(["serve", "--role", "worker", "--config"])
            .arg(&config)
            .args(["--bind", &api])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(scratch.path("worker.log"))?)
            .spawn()
            .context("spawn the worker")?;
        let watched = self.watched(Watched {
            name: "taskqueue".into(),
            pid: worker.id(),
        });
        let (started, cpu_before) = loop {
            let cpu = CpuSnapshot::take(&watched);
            if self.sink.count().await?.0 > 0 {
                break (Instant::now(), cpu);
            }
            if let Some(status) = worker.try_wait()? {
                let log = std::fs::read_to_string(scratch.path("worker.log")).unwrap_or_default();
                bail!("worker exited with {status} before the first job:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut reported = Instant::now();
        loop {
            let done = processed(&self.http, &api).await.unwrap_or(0);
            if done as usize >= self.jobs {
                break;
            }
            if reported.elapsed() > Duration::from_secs(5) {
                progress(format!("worker: {done}/{}", self.jobs));
                reported = Instant::now();
            }
            if Instant::now() > deadline {
                bail!("worker stalled at {done} jobs");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = started.elapsed();
        let cpu = CpuSnapshot::take(&watched).since(&cpu_before);
        let killed = Command::new("kill")
            .args(["-TERM", &worker.id().to_string()])
            .status()?;
        check(killed.success(), "SIGTERM sent to the worker")?;
        let exit = worker.wait()?;
        check(exit.success(), format!("worker exit status {exit}"))?;
        // Unacked deliveries would be back in the queue once the worker's
        // connection closed.
        let depth = QueueDepth::open(&self.vhost).await?;
        let left = depth.of(QUEUE_NORMAL).await?;
        depth.close().await;
        check(left == 0, format!("{left} jobs left over in the queue"))?;
        let (total, distinct) = self.sink.count().await?;
        check(
            distinct as usize == self.jobs,
            format!("{distinct} of {} jobs reached the sink", self.jobs),
        )?;
        if self.tiny {
            check(
                total == distinct,
                format!("{} calls for {distinct} jobs", total),
            )?;
        }
        Ok(Sample {
            jobs_per_second: self.jobs as f64 / took.as_secs_f64(),
            cpu,
        })
    }

    /// Bare lapin: one consumer on the normal queue with the worker's
    /// prefetch, every delivery acked.
    async fn bare_consume(&self) -> Result<Sample> {
        preload(&self.broker, self.jobs, "bare consume + ack").await?;
        let watched = self.watched(this_process("bench client"));
        let connection = self.vhost.connect().await?;
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(
                u16::try_from(POOL).unwrap_or(u16::MAX),
                BasicQosOptions::default(),
            )
            .await?;
        let mut consumer = channel
            .basic_consume(
                QUEUE_NORMAL.into(),
                "bench".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut first = None;
        for _ in 0..self.jobs {
            let delivery = consumer.next().await.context("consumer ended")??;
            if first.is_none() {
                first = Some((Instant::now(), CpuSnapshot::take(&watched)));
            }
            delivery.ack(BasicAckOptions::default()).await?;
        }
        let (started, cpu_before) = first.context("no delivery")?;
        let took = started.elapsed();
        let cpu = CpuSnapshot::take(&watched).since(&cpu_before);
        channel
            .basic_cancel("bench".into(), BasicCancelOptions::default())
            .await?;
        let _ = connection.close(200, "done".into()).await;
        Ok(Sample {
            jobs_per_second: self.jobs as f64 / took.as_secs_f64(),
            cpu,
        })
    }

    /// Bare reqwest: `POOL` tasks sharing one client POST the jobs' bodies
    /// to the sink.
    async fn bare_post(&self) -> Result<Sample> {
        self.sink.reset().await?;
        let watched = self.watched(this_process("bench client"));
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(POOL)
            .build()?;
        let url = self.sink.url("/job");
        let next = Arc::new(AtomicUsize::new(0));
        let cpu_before = CpuSnapshot::take(&watched);
        let started = Instant::now();
        let tasks: Vec<_> = (0..POOL)
            .map(|_| {
                let client = client.clone();
                let url = url.clone();
                let next = next.clone();
                let jobs = self.jobs;
                tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= jobs {
                            return Ok::<(), anyhow::Error>(());
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
                            .await?
                            .error_for_status()?;
                        let _ = response.bytes().await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
        let took = started.elapsed();
        let cpu = CpuSnapshot::take(&watched).since(&cpu_before);
        let (total, distinct) = self.sink.count().await?;
        check(
            (total as usize, distinct as usize) == (self.jobs, self.jobs),
            format!("bare reqwest: {total} calls, {distinct} jobs"),
        )?;
        Ok(Sample {
            jobs_per_second: self.jobs as f64 / took.as_secs_f64(),
            cpu,
        })
    }

    /// The BullMQ worker at concurrency `POOL` on a prefix of its own; it
    /// preloads (untimed), then times its own work and reads its own CPU.
    async fn bullmq(&self) -> Result<Sample> {
        self.sink.reset().await?;
        let prefix = Prefix::new("w2-bullmq");
        let output = tokio::process::Command::new("node")
            .arg(bullmq_dir().join("worker.mjs"))
            .args(["--count", &self.jobs.to_string(), "--prefix", &prefix.name])
            .args(["--redis", &redis_address()])
            .args(["--concurrency", &POOL.to_string()])
            .args(["--url", &self.sink.url("/job")])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .await
            .context("run node worker.mjs")?;
        if !output.status.success() {
            bail!("worker.mjs failed: {}", output.status);
        }
        let result: Value = serde_json::from_slice(&output.stdout).context("worker.mjs output")?;
        let seconds = result["seconds"].as_f64().context("seconds")?;
        let cpu = result["cpu_seconds"].as_f64().context("cpu_seconds")?;
        let failed = result["failed"].as_u64().unwrap_or(0);
        if failed > 0 {
            progress(format!("BullMQ: {failed} jobs failed (counted as done)"));
        }
        if self.tiny {
            check(failed == 0, format!("BullMQ: {failed} jobs failed"))?;
        }
        let (total, distinct) = self.sink.count().await?;
        check(
            distinct as usize == self.jobs,
            format!("BullMQ: {distinct} of {} jobs reached the sink", self.jobs),
        )?;
        if self.tiny {
            check(total == distinct, format!("BullMQ: {total} calls"))?;
        }
        Ok(Sample {
            jobs_per_second: self.jobs as f64 / seconds,
            cpu: vec![("node".into(), cpu)],
        })
    }
}

/// Runs of one row.
#[derive(Default)]
struct Row {
    samples: Vec<Sample>,
}

impl Row {
    fn rates(&self) -> Vec<f64> {
        self.samples.iter().map(|s| s.jobs_per_second).collect()
    }

    /// CPU µs per job of the process under test, per run.
    fn own_cpu_us(&self, jobs: usize) -> Vec<f64> {
        self.samples
            .iter()
            .map(|s| {
                s.cpu
                    .first()
                    .map_or(0.0, |(_, secs)| secs * 1e6 / jobs as f64)
            })
            .collect()
    }

    /// The other processes' CPU µs per job (medians).
    fn others(&self, jobs: usize) -> String {
        let runs: Vec<Vec<(String, f64)>> = self
            .samples
            .iter()
            .map(|s| s.cpu.iter().skip(1).cloned().collect())
            .collect();
        match runs.first() {
            Some(first) if !first.is_empty() => cpu_cell(&runs, jobs),
            _ => "not measured".into(),
        }
    }
}

/// Per-run ratios `a / b` (runs paired in order).
fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(a, b)| a / b).collect()
}

async fn run() -> Result<()> {
    let args = BenchArgs::parse();
    let jobs = args.size_or(100_000, 500);
    let have_bullmq = bullmq_dir().join("node_modules/bullmq").exists();
    progress(format!(
        "W2 execution: {jobs} jobs, pool {POOL}, {} run(s){}{}",
        args.runs,
        if args.tiny {
            ", tiny (counts only)"
        } else {
            ""
        },
        if have_bullmq {
            ""
        } else {
            "; benches/bullmq/node_modules missing (scripts/bench.sh installs it): BullMQ row skipped"
        }
    ));
    let vhost = Vhost::new("exec")?;
    let broker = AmqpBroker::connect(
        &vhost.url,
        AmqpOptions {
            delay_pump: false,
            ..AmqpOptions::default()
        },
    )
    .await?;
    broker.declare().await?;
    let bench = Bench {
        jobs,
        tiny: args.tiny,
        sink: Sink::start(true)?,
        http: reqwest::Client::new(),
        broker,
        servers: server_processes(),
        vhost,
    };
    let (mut worker, mut consume, mut post, mut bullmq): (Row, Row, Row, Row) = Default::default();
    for run in 1..=args.runs {
        // The order rotates, so no row always runs on a warm (or cold) box.
        for step in 0..4 {
            let (row, name): (&mut Row, &str) = match (step + run - 1) % 4 {
                0 => (&mut worker, "taskqueue worker"),
                1 => (&mut consume, "bare consume + ack"),
                2 => (&mut post, "bare reqwest"),
                _ if have_bullmq => (&mut bullmq, "BullMQ worker"),
                _ => continue,
            };
            let sample = match (step + run - 1) % 4 {
                0 => bench.worker_run().await?,
                1 => bench.bare_consume().await?,
                2 => bench.bare_post().await?,
                _ => bench.bullmq().await?,
            };
            progress(format!(
                "run {run}/{}: {name} {} jobs/s, {} µs CPU/job",
                args.runs,
                number(sample.jobs_per_second, 0),
                number(
                    sample
                        .cpu
                        .first()
                        .map_or(0.0, |(_, s)| s * 1e6 / jobs as f64),
                    1
                )
            ));
            row.samples.push(sample);
        }
    }
    if args.tiny {
        println!(
            "W2 tiny: {jobs} jobs, each reached the sink exactly once through `serve --role worker`{}; ceilings ran",
            if have_bullmq {
                " and through BullMQ"
            } else {
                ""
            }
        );
        return Ok(());
    }
    let ceiling = consume.rates();
    let mut table = Table::new(
        format!(
            "W2 execution: {jobs} jobs, pool / concurrency {POOL}, {} runs",
            args.runs
        ),
        &[
            "what",
            "jobs/s min / **median** / max",
            "ratio to bare consume + ack",
            "CPU µs per job of the process under test",
            "other CPU µs per job (median)",
        ],
    );
    let rows: [(&str, &Row); 4] = [
        ("`serve --role worker`, pool 50, POST to the sink", &worker),
        ("bare lapin consume + ack (prefetch 50, ceiling)", &consume),
        ("bare reqwest POST, concurrency 50", &post),
        ("BullMQ worker, concurrency 50, POST to the sink", &bullmq),
    ];
    for (name, row) in rows {
        if row.samples.is_empty() {
            table.row(vec![
                name.into(),
                "skipped".into(),
                String::new(),
                String::new(),
                String::new(),
            ]);
            continue;
        }
        table.row(vec![
            name.into(),
            spread_cell(&row.rates(), 0),
            spread_cell(&ratios(&row.rates(), &ceiling), 2),
            spread_cell(&row.own_cpu_us(jobs), 1),
            row.others(jobs),
        ]);
    }
    if !bullmq.samples.is_empty() {
        table.note(format!(
            "taskqueue worker / BullMQ worker, same run: {}",
            spread_cell(&ratios(&worker.rates(), &bullmq.rates()), 2)
        ));
    }
    table.note(
        "Ratios are per run (same run, same servers), then min / median / max. The BullMQ \
         row's CPU is node's own (`process.cpuUsage()` over its timed part); RabbitMQ and \
         Redis are shared servers.",
    );
    table.note(machine_line());
    table.print();
    Ok(())
}

fn main() -> Result<()> {
    run_sink_if_asked();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run())
}
