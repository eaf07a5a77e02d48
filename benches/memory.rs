//! Memory: Redis bytes per enabled (user, task), and a worker's RSS over a
//! million jobs.
//!
//! - **Redis**: `taskqueue users import` of 200,000 users (`--size`) with
//!   one task into a fresh prefix of the same length as the default
//!   `taskqueue`; reported as the `INFO memory` `used_memory` delta per
//!   user (the server is shared, so other clients add noise) and as the
//!   sum of `MEMORY USAGE` over the prefix's keys per user (exact, no
//!   noise). The reference, measured in the same run: the spec's tasks
//!   hash alone (`HSET {p}:users:{id}:tasks task 1`, nothing else).
//! - **Worker RSS**: one `serve --role worker` (pool 50, no effective rate
//!   limit) runs 1,000,000 jobs (`--jobs`) against the sink (light mode);
//!   a feeder publishes taskqueue-format messages (`AmqpBroker`) keeping
//!   a backlog. RSS (`VmRSS`) is read when idle, after each tenth of the
//!   jobs and at the end; the worker's CPU per job over the run too.
//!
//! `--runs N` applies to both parts; `--rss-runs N` overrides it for the
//! RSS part (each run takes minutes). `--tiny`: 500 users and 500 jobs,
//! one run; checks every user is imported and every job called exactly
//! once.

mod support;

use std::time::{Duration, Instant};

use actors::{
    broker::{
        JobBroker,
        amqp::{AmqpBroker, AmqpOptions},
    },
    domain::{Job, JobEnvelope, JobMetadata, JobSource, Priority, TaskTypeId, UserId, job_id},
};
use anyhow::{Context, Result};
use support::*;
use uuid::Uuid;

const TASK: &str = "mem_bench";

/// A prefix as long as the default `taskqueue` (9 bytes), so key names
/// cost what they cost in a default deployment.
fn short_prefix() -> Prefix {
    Prefix::named(format!("tqm{}", &Uuid::new_v4().simple().to_string()[..6]))
}

/// Sum of `MEMORY USAGE` over every key of `prefix`, and the key count.
fn memory_usage(prefix: &Prefix) -> Result<(u64, u64)> {
    let mut connection = redis_connection()?;
    let mut cursor: u64 = 0;
    let (mut bytes, mut keys_seen) = (0u64, 0u64);
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}:*", prefix.name))
            .arg("COUNT")
            .arg(50_000)
            .query(&mut connection)?;
        if !keys.is_empty() {
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("MEMORY")
                    .arg("USAGE")
                    .arg(key)
                    .arg("SAMPLES")
                    .arg(0);
            }
            let sizes: Vec<Option<u64>> = pipe.query(&mut connection)?;
            bytes += sizes.into_iter().flatten().sum::<u64>();
            keys_seen += keys.len() as u64;
        }
        if next == 0 {
            return Ok((bytes, keys_seen));
        }
        cursor = next;
    }
}

/// One Redis run: (used_memory delta / user, MEMORY USAGE / user, keys /
/// user) for the import and for the bare tasks hash.
struct RedisRun {
    import: (f64, f64, f64),
    bare: (f64, f64, f64),
}

fn redis_run(users: usize, scratch: &Scratch, tiny: bool) -> Result<RedisRun> {
    let users_file = write_users(scratch, users, &[TASK])?;
    let tasks_path = scratch.write(
        "tasks.yaml",
        &tasks_file(&[BenchTask {
            id: TASK.into(),
            endpoint: "http://127.0.0.1:9/mem".into(),
        }]),
    )?;
    let prefix = short_prefix();
    let before = redis_used_memory()?;
    import_users(&users_file, &prefix, &tasks_path)?;
    let after = redis_used_memory()?;
    let (usage, keys) = memory_usage(&prefix)?;
    if tiny {
        let mut connection = redis_connection()?;
        let mut missing = 0;
        for n in 0..users {
            let enabled: Option<String> = redis::cmd("HGET")
                .arg(format!("{}:users:{}:tasks", prefix.name, user_id(n)))
                .arg(TASK)
                .query(&mut connection)?;
            if enabled.as_deref() != Some("1") {
                missing += 1;
            }
        }
        check(
            missing == 0,
            format!("{missing} of {users} users not imported"),
        )?;
    }
    let n = users as f64;
    let import = (
        (after as f64 - before as f64) / n,
        usage as f64 / n,
        keys as f64 / n,
    );
    drop(prefix);

    let prefix = short_prefix();
    let mut connection = redis_connection()?;
    let before = redis_used_memory()?;
    for start in (0..users).step_by(1000) {
        let mut pipe = redis::pipe();
        for u in start..(start + 1000).min(users) {
            pipe.cmd("HSET")
                .arg(format!("{}:users:{}:tasks", prefix.name, user_id(u)))
                .arg(TASK)
                .arg("1")
                .ignore();
        }
        pipe.query::<()>(&mut connection)?;
    }
    let after = redis_used_memory()?;
    let (usage, keys) = memory_usage(&prefix)?;
    let bare = (
        (after as f64 - before as f64) / n,
        usage as f64 / n,
        keys as f64 / n,
    );
    Ok(RedisRun { import, bare })
}

/// One RSS run: (idle, after each tenth..., end) in bytes, CPU s.
struct RssRun {
    samples: Vec<(u64, u64)>,
    cpu: Vec<(String, f64)>,
}

fn envelopes(
    from: usize,
    to: usize,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<JobEnvelope>> {
    let task = TaskTypeId::parse(TASK)?;
    (from..to)
        .map(|n| {
            let user = UserId::parse(user_id(n))?;
            Ok(JobEnvelope::new(
                Job {
                    id: job_id(&task, &user, at),
                    task_type_id: task.clone(),
                    user_id: user,
                    scheduled_at: at,
                    execute_after: at,
                    attempt: 1,
                    priority: Priority::Normal,
                    payload: Vec::new(),
                    created_at: at,
                },
                JobMetadata {
                    correlation_id: format!("bench:{n}"),
                    source: JobSource::Trigger,
                    distribution_slot: None,
                    origin: None,
                },
            ))
        })
        .collect()
}

/// Keeps up to `backlog` jobs waiting until `jobs` are published.
async fn feed(vhost_url: String, jobs: usize, backlog: u64, depth: QueueDepth) -> Result<()> {
    let broker = AmqpBroker::connect(
        &vhost_url,
        AmqpOptions {
            delay_pump: false,
            ..AmqpOptions::default()
        },
    )
    .await?;
    let at = chrono::Utc::now() - chrono::TimeDelta::seconds(1);
    let mut published = 0;
    while published < jobs {
        if depth.jobs().await? > backlog {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let to = (published + 5000).min(jobs);
        broker.publish(&envelopes(published, to, at)?).await?;
        published = to;
    }
    broker.close().await?;
    depth.close().await;
    Ok(())
}

async fn rss_run(jobs: usize, tiny: bool) -> Result<RssRun> {
    let sink = Sink::start(true)?;
    let vhost = Vhost::new("memory")?;
    let prefix = Prefix::new("memory");
    let scratch = Scratch::new()?;
    let tasks = [BenchTask {
        id: TASK.into(),
        endpoint: sink.url(&format!("/mem/{TASK}")),
    }];
    let config = service_config(
        &prefix,
        &vhost,
        &tasks,
        "worker:\n  pool_size: 50\n  shutdown_timeout: 2s\nrate_limit:\n  global: 1000000\n",
    );
    let path = scratch.write("taskqueue.yaml", &config)?;
    let mut worker = Service::start(&path, "worker").await?;
    wait_for_queues(&vhost, Duration::from_secs(30)).await?;
    let mut samples = vec![(0, rss_bytes(worker.pid)?)];
    let watched = vec![worker.watched("taskqueue")];
    let cpu_before = CpuSnapshot::take(&watched);
    let mut feeder_done = false;
    let mut feeder = tokio::spawn(feed(
        vhost.url.clone(),
        jobs,
        50_000,
        QueueDepth::open(&vhost).await?,
    ));
    let tenth = (jobs / 10).max(1) as u64;
    let mut next_sample = tenth;
    let started = Instant::now();
    let mut last_report = Instant::now();
    let (total, distinct) = loop {
        let (total, distinct) = sink.count().await?;
        while total >= next_sample && next_sample <= jobs as u64 {
            samples.push((total, rss_bytes(worker.pid)?));
            next_sample += tenth;
        }
        if total >= jobs as u64 {
            break (total, distinct);
        }
        if !feeder_done && feeder.is_finished() {
            // A feeder that failed (broker gone) ends the run at once.
            if let Err(err) = (&mut feeder).await.context("feeder")? {
                return Err(err.context(format!("feeding stopped after {total} jobs")));
            }
            feeder_done = true;
        }
        if started.elapsed() > Duration::from_secs(3600) {
            anyhow::bail!("only {total} of {jobs} jobs ran in an hour");
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            progress(format!(
                "{total}/{jobs} jobs, worker RSS {:.1} MB",
                rss_bytes(worker.pid)? as f64 / 1e6
            ));
        }
        tokio::time::sleep(Duration::from_millis(if tiny { 20 } else { 200 })).await;
    };
    if !feeder_done {
        feeder.await.context("feeder")??;
    }
    samples.push((total, rss_bytes(worker.pid)?));
    let cpu = CpuSnapshot::take(&watched).since(&cpu_before);
    worker.stop();
    let (total_after, distinct_after) = sink.count().await?;
    check(
        total_after == jobs as u64 && distinct_after == jobs as u64,
        format!(
            "{total_after} calls for {distinct_after} distinct jobs of {jobs} (at the last count: {total}, {distinct})"
        ),
    )?;
    Ok(RssRun { samples, cpu })
}

fn mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}

fn main() -> Result<()> {
    run_sink_if_asked();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> Result<()> {
    let args = BenchArgs::parse();
    let users = args.size_or(200_000, 500);
    let cli: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        cli.iter()
            .position(|a| a == name)
            .and_then(|at| cli.get(at + 1))
            .and_then(|v| v.replace('_', "").parse::<usize>().ok())
    };
    let jobs = flag("--jobs").unwrap_or(if args.tiny { 500 } else { 1_000_000 });
    let rss_runs = if args.tiny {
        1
    } else {
        flag("--rss-runs").unwrap_or(args.runs)
    };
    progress(format!(
        "memory: {users} users imported, {jobs} jobs run; {} Redis run(s), {rss_runs} RSS run(s){}",
        args.runs,
        if args.tiny {
            ", tiny (counts only)"
        } else {
            ""
        }
    ));
    let scratch = Scratch::new()?;
    let mut redis_runs = Vec::new();
    for run in 1..=args.runs {
        progress(format!(
            "Redis run {run}/{}: import {users} users",
            args.runs
        ));
        let result = redis_run(users, &scratch, args.tiny)?;
        progress(format!(
            "Redis run {run}: import {:.0} B/user (used_memory), {:.0} B/user (MEMORY USAGE); tasks hash alone {:.0} / {:.0}",
            result.import.0, result.import.1, result.bare.0, result.bare.1
        ));
        redis_runs.push(result);
    }
    let mut rss_runs_done = Vec::new();
    for run in 1..=rss_runs {
        progress(format!("RSS run {run}/{rss_runs}: {jobs} jobs"));
        let result = rss_run(jobs, args.tiny).await?;
        progress(format!(
            "RSS run {run}: {}",
            result
                .samples
                .iter()
                .map(|(n, rss)| format!("{n}: {} MB", mb(*rss)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        rss_runs_done.push(result);
    }
    if args.tiny {
        println!("memory tiny: {users} users imported, {jobs} jobs each called exactly once");
        return Ok(());
    }

    let mut table = Table::new(
        format!(
            "Redis bytes per enabled (user, task), {users} users, one task ({} runs)",
            args.runs
        ),
        &[
            "what",
            "`used_memory` delta / user, min / **median** / max",
            "`MEMORY USAGE` sum / user, min / **median** / max",
            "keys / user",
            "target",
        ],
    );
    let col = |f: fn(&RedisRun) -> f64| redis_runs.iter().map(f).collect::<Vec<f64>>();
    table.row(vec![
        "`taskqueue users import`".into(),
        spread_cell(&col(|r| r.import.0), 0),
        spread_cell(&col(|r| r.import.1), 0),
        number(Summary::of(&col(|r| r.import.2)).median, 2),
        "≤ 250".into(),
    ]);
    table.row(vec![
        "reference: the spec's tasks hash alone".into(),
        spread_cell(&col(|r| r.bare.0), 0),
        spread_cell(&col(|r| r.bare.1), 0),
        number(Summary::of(&col(|r| r.bare.2)).median, 2),
        String::new(),
    ]);
    table.note("Key prefix of 9 bytes, like the default `taskqueue`. `MEMORY USAGE` counts each key's own allocations; `used_memory` also counts the index structures shared by all keys and is disturbed by other clients of the shared server.");
    table.print();

    let mut table = Table::new(
        format!("Worker RSS over {jobs} jobs, pool 50 ({rss_runs} runs)"),
        &["point", "RSS MB, min / **median** / max"],
    );
    let points = rss_runs_done
        .iter()
        .map(|r| r.samples.len())
        .min()
        .unwrap_or(0);
    for i in 0..points {
        let values: Vec<f64> = rss_runs_done
            .iter()
            .map(|r| r.samples[i].1 as f64 / 1e6)
            .collect();
        let label = match i {
            0 => "idle, before the first job".to_owned(),
            _ if i == points - 1 => format!("end ({jobs} jobs)"),
            _ => format!(
                "after {} jobs",
                number(rss_runs_done[0].samples[i].0 as f64, 0)
            ),
        };
        table.row(vec![label, spread_cell(&values, 1)]);
    }
    let growth: Vec<f64> = rss_runs_done
        .iter()
        .filter(|r| r.samples.len() > 2)
        .map(|r| (r.samples[r.samples.len() - 1].1 as f64 - r.samples[1].1 as f64) / 1e6)
        .collect();
    let cpu: Vec<Vec<(String, f64)>> = rss_runs_done.iter().map(|r| r.cpu.clone()).collect();
    table.note(format!(
        "Growth from the first tenth to the end: {} MB. Worker CPU µs per job (median): {}.",
        spread_cell(&growth, 1),
        cpu_cell(&cpu, jobs)
    ));
    table.note(format!("Machine: {}.", machine_line()));
    table.print();
    Ok(())
}
