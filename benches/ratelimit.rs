//! W3 rate-limit accuracy: three `taskqueue serve --role worker`
//! processes share Redis with `rate_limit.global: 50` and a per-task limit
//! of 10 on `rl_task`. Demand is twice the global limit for the whole
//! measured window: 2 × 50 × 60 jobs are preloaded (taskqueue-format
//! messages published with `AmqpBroker`), one in three of them for
//! `rl_task`, so that task too is offered twice its limit whenever the
//! global budget flows at its rate. The sink records every call's receipt
//! time and task; over the `--seconds` (default 60) after the first call:
//!
//! - the most calls in any sliding 1 s window, per limit (must never
//!   exceed limit + burst; the burst of every bucket equals its rate, see
//!   `actors::pipeline` and `docs/configuration.md`);
//! - utilisation = calls / (limit × seconds) (must be ≥ 0.95).
//!
//! CPU per job: the three workers together, RabbitMQ, Redis and the sink.
//!
//! `--without-task-limit` runs the same demand with the global limit only
//! (the per-task row then reads what `rl_task` got without a limit).
//!
//! `--tiny`: 150 jobs, one run; checks every job is called exactly once.

mod support;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use actors::{
    broker::{
        JobBroker,
        amqp::{AmqpBroker, AmqpOptions},
    },
    domain::{Job, JobEnvelope, JobMetadata, JobSource, Priority, TaskTypeId, UserId, job_id},
};
use anyhow::Result;
use support::*;

const GLOBAL: u32 = 50;
const PER_TASK: u32 = 10;
const WORKERS: usize = 3;

/// `count` ready jobs, every third one for `rl_task`, the rest for
/// `rl_global`.
fn jobs(count: usize) -> Result<Vec<JobEnvelope>> {
    let now = chrono::Utc::now();
    let global = TaskTypeId::parse("rl_global")?;
    let limited = TaskTypeId::parse("rl_task")?;
    (0..count)
        .map(|n| {
            let task = if n % 3 == 2 { &limited } else { &global };
            let user = UserId::parse(user_id(n))?;
            Ok(JobEnvelope::new(
                Job {
                    id: job_id(task, &user, now),
                    task_type_id: task.clone(),
                    user_id: user,
                    scheduled_at: now,
                    execute_after: now - chrono::TimeDelta::seconds(1),
                    attempt: 1,
                    priority: Priority::Normal,
                    payload: Vec::new(),
                    created_at: now,
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

/// Preloads `jobs` into the vhost's queues.
async fn preload(vhost: &Vhost, jobs: &[JobEnvelope]) -> Result<()> {
    let broker = AmqpBroker::connect(
        &vhost.url,
        AmqpOptions {
            delay_pump: false,
            ..AmqpOptions::default()
        },
    )
    .await?;
    broker.declare().await?;
    for chunk in jobs.chunks(5000) {
        broker.publish(chunk).await?;
    }
    broker.close().await?;
    Ok(())
}

/// The most of `times` (sorted, nanoseconds) in any window of `width`.
fn max_in_window(times: &[i64], width: i64) -> usize {
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= width {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

/// One run's figures.
struct RunResult {
    global_max: f64,
    task_max: f64,
    global_use: f64,
    task_use: f64,
    calls: usize,
    duplicates: usize,
    cpu: Vec<(String, f64)>,
}

async fn run_once(seconds: u64, tiny: bool, task_limit: bool) -> Result<RunResult> {
    let total = if tiny {
        150
    } else {
        2 * GLOBAL as usize * seconds as usize
    };
    let sink = Sink::start(false)?;
    let vhost = Vhost::new("w3")?;
    let prefix = Prefix::new("w3");
    let scratch = Scratch::new()?;
    progress(format!("preloading {total} jobs"));
    preload(&vhost, &jobs(total)?).await?;
    let tasks = [
        BenchTask {
            id: "rl_global".into(),
            endpoint: sink.url("/rl/rl_global"),
        },
        BenchTask {
            id: "rl_task".into(),
            endpoint: sink.url("/rl/rl_task"),
        },
    ];
    let config = service_config(
        &prefix,
        &vhost,
        &tasks,
        &format!(
            "worker:\n  pool_size: 20\n  shutdown_timeout: 2s\nrate_limit:\n  global: {GLOBAL}\n{}",
            if task_limit {
                format!("  per_task:\n    rl_task: {PER_TASK}\n")
            } else {
                String::new()
            }
        ),
    );
    let path = scratch.write("taskqueue.yaml", &config)?;
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        workers.push(Service::start(&path, "worker").await?);
    }
    let mut watched: Vec<Watched> = workers.iter().map(|w| w.watched("taskqueue")).collect();
    watched.extend(server_processes());
    watched.push(sink.watched());
    let cpu_before = CpuSnapshot::take(&watched);
    progress(format!("{WORKERS} workers up"));

    // Wait for the first call, then let the limits work for `seconds`.
    let started = Instant::now();
    while sink.count().await?.0 == 0 {
        if started.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("no call reached the sink");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_call = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let (calls, _) = sink.count().await?;
        let done = if tiny {
            calls >= total as u64
        } else {
            first_call.elapsed() >= Duration::from_secs(seconds) + Duration::from_millis(500)
        };
        if done {
            break;
        }
        if tiny && first_call.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("only {calls} of {total} calls in 120 s");
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            progress(format!(
                "{calls} calls after {:.0} s",
                first_call.elapsed().as_secs_f64()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The workers' rows share the name `taskqueue`: add them up.
    let mut cpu: Vec<(String, f64)> = Vec::new();
    for (name, seconds) in CpuSnapshot::take(&watched).since(&cpu_before) {
        match cpu.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 += seconds,
            None => cpu.push((name, seconds)),
        }
    }
    for worker in &mut workers {
        worker.stop();
    }
    let records = sink.records().await?;
    let calls = records.len();
    let mut per_key: HashMap<&str, usize> = HashMap::new();
    for record in &records {
        *per_key.entry(record.key.as_str()).or_default() += 1;
    }
    let duplicates = per_key.values().filter(|n| **n > 1).count();
    if tiny {
        check(
            per_key.len() == total && duplicates == 0,
            format!(
                "{calls} calls for {} distinct jobs of {total}, {duplicates} called twice",
                per_key.len()
            ),
        )?;
    }
    let first_ns = records.iter().map(|r| r.at_ns).min().unwrap_or(0);
    let end_ns = first_ns + i64::try_from(seconds)? * 1_000_000_000;
    let mut all: Vec<i64> = records
        .iter()
        .filter(|r| r.at_ns < end_ns)
        .map(|r| r.at_ns)
        .collect();
    let mut limited: Vec<i64> = records
        .iter()
        .filter(|r| r.at_ns < end_ns && r.path.ends_with("/rl_task"))
        .map(|r| r.at_ns)
        .collect();
    all.sort_unstable();
    limited.sort_unstable();
    let window = 1_000_000_000;
    Ok(RunResult {
        global_max: max_in_window(&all, window) as f64,
        task_max: max_in_window(&limited, window) as f64,
        global_use: all.len() as f64 / (f64::from(GLOBAL) * seconds as f64),
        task_use: limited.len() as f64 / (f64::from(PER_TASK) * seconds as f64),
        calls,
        duplicates,
        cpu,
    })
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
    let seconds = args.size_or(60, 5) as u64;
    // `--without-task-limit`: the same demand with the global limit only,
    // to tell the per-task limiter's effect on the global budget apart.
    let task_limit = !std::env::args().any(|a| a == "--without-task-limit");
    progress(format!(
        "W3 rate limits: {WORKERS} workers, global {GLOBAL}/s, rl_task {PER_TASK}/s, {seconds} s, {} run(s){}",
        args.runs,
        if args.tiny {
            ", tiny (counts only)"
        } else {
            ""
        }
    ));
    let mut results = Vec::new();
    for run in 1..=args.runs {
        progress(format!("run {run}/{}", args.runs));
        let result = run_once(seconds, args.tiny, task_limit).await?;
        progress(format!(
            "run {run}: global max/1s {} utilisation {:.3}; rl_task max/1s {} utilisation {:.3}; {} duplicates",
            result.global_max,
            result.global_use,
            result.task_max,
            result.task_use,
            result.duplicates
        ));
        results.push(result);
    }
    if args.tiny {
        println!("W3 tiny: every job called exactly once under the global and per-task limits");
        return Ok(());
    }
    let pick = |f: fn(&RunResult) -> f64| results.iter().map(f).collect::<Vec<f64>>();
    let mut table = Table::new(
        format!(
            "W3 rate-limit accuracy, {WORKERS} workers, {seconds} s at 2x demand ({} runs){}",
            args.runs,
            if task_limit {
                ""
            } else {
                ", without the per-task limit"
            }
        ),
        &[
            "limit",
            "most calls in any 1 s, min / **median** / max",
            "bound (limit + burst)",
            "utilisation min / **median** / max",
            "target",
        ],
    );
    let verdict = |max: &[f64], bound: f64, uses: &[f64]| {
        let worst_max = Summary::of(max).max;
        let worst_use = Summary::of(uses).min;
        match (worst_max <= bound, worst_use >= 0.95) {
            (true, true) => "met".to_owned(),
            (over, under) => format!(
                "missed:{}{}",
                if over { "" } else { " over the bound" },
                if under { "" } else { " utilisation < 0.95" }
            ),
        }
    };
    let (gmax, guse, tmax, tuse) = (
        pick(|r| r.global_max),
        pick(|r| r.global_use),
        pick(|r| r.task_max),
        pick(|r| r.task_use),
    );
    table.row(vec![
        format!("global {GLOBAL}/s (all calls)"),
        spread_cell(&gmax, 0),
        (2 * GLOBAL).to_string(),
        spread_cell(&guse, 3),
        verdict(&gmax, f64::from(2 * GLOBAL), &guse),
    ]);
    table.row(vec![
        format!("per task `rl_task` {PER_TASK}/s"),
        spread_cell(&tmax, 0),
        (2 * PER_TASK).to_string(),
        spread_cell(&tuse, 3),
        verdict(&tmax, f64::from(2 * PER_TASK), &tuse),
    ]);
    let calls: Vec<f64> = pick(|r| r.calls as f64);
    let cpu: Vec<Vec<(String, f64)>> = results.iter().map(|r| r.cpu.clone()).collect();
    let median_calls = Summary::of(&calls).median as usize;
    table.note(format!(
        "CPU µs per call (median; workers together): {}. Calls per run (incl. after the window): {}; jobs called twice: {}.",
        cpu_cell(&cpu, median_calls),
        spread_cell(&calls, 0),
        results.iter().map(|r| r.duplicates).sum::<usize>()
    ));
    table.note(format!("Machine: {}.", machine_line()));
    table.print();
    Ok(())
}
