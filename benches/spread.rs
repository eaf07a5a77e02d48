//! W4 spread: 10,000 users (`--size`) over a 60 s distribution window,
//! one `taskqueue serve --role all` process (pool 50, no effective rate
//! limit), a spread `POST /schedule/trigger`. The sink records every
//! call; per run:
//!
//! - per-second dispatch: calls in each second of the window (from the
//!   run's `scheduled_at`) against the mean (users / window seconds); the
//!   worst second's deviation in % (target ±10%);
//! - lateness = sink receipt − the job's `execute_after`, p50 / p99 / max
//!   (target p99 ≤ 250 ms). `execute_after` is read from the
//!   `X-Taskqueue-Execute-After` request header when the service sends it
//!   (Unix milliseconds or RFC 3339); otherwise it is recomputed from the
//!   run's `scheduled_at` and the placement function
//!   (`actors::slot::place`), which is only right while the service
//!   places users that way.
//!
//! CPU per job: the taskqueue process, RabbitMQ, Redis and the sink.
//!
//! `--tiny`: 300 users over 5 s, one run; checks every user is called
//! exactly once.

mod support;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use actors::{
    domain::{TaskTypeId, UserId},
    slot,
};
use anyhow::{Context, Result, bail};
use serde_json::json;
use support::*;

const TASK: &str = "spread_bench";

/// One run's figures.
struct RunResult {
    max_deviation_pct: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    min_ms: f64,
    outside_window: usize,
    header_used: bool,
    cpu: Vec<(String, f64)>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn run_once(users: usize, window_secs: u64, tiny: bool) -> Result<RunResult> {
    let sink = Sink::start(false)?;
    let vhost = Vhost::new("w4")?;
    let prefix = Prefix::new("w4");
    let scratch = Scratch::new()?;
    let tasks = [BenchTask {
        id: TASK.into(),
        endpoint: sink.url(&format!("/spread/{TASK}")),
    }];
    let users_file = write_users(&scratch, users, &[TASK])?;
    let tasks_path = scratch.write("tasks.yaml", &tasks_file(&tasks))?;
    progress(format!("importing {users} users"));
    import_users(&users_file, &prefix, &tasks_path)?;
    let config = service_config(
        &prefix,
        &vhost,
        &tasks,
        &format!(
            "scheduler:\n  check_interval: 1s\n  distribution_window: {window_secs}s\n  batch_size: 1000\nworker:\n  pool_size: 50\n  shutdown_timeout: 2s\nrate_limit:\n  global: 1000000\n"
        ),
    );
    let path = scratch.write("taskqueue.yaml", &config)?;
    let mut service = Service::start(&path, "all").await?;
    wait_for_queues(&vhost, Duration::from_secs(30)).await?;
    let mut watched = vec![service.watched("taskqueue")];
    watched.extend(server_processes());
    watched.push(sink.watched());
    let cpu_before = CpuSnapshot::take(&watched);
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?
        .post(service.url("/schedule/trigger"))
        .json(&json!({"task_type_id": TASK}))
        .send()
        .await?;
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if status != 202 {
        bail!("trigger answered {status}: {body}");
    }
    progress(format!("spread trigger answered: {body}"));
    let started = Instant::now();
    let deadline = Duration::from_secs(window_secs + 120);
    let mut last_report = Instant::now();
    loop {
        let (calls, _) = sink.count().await?;
        if calls >= users as u64 {
            break;
        }
        if started.elapsed() > deadline {
            bail!("only {calls} of {users} calls arrived");
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            progress(format!("{calls}/{users} calls"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu = CpuSnapshot::take(&watched).since(&cpu_before);
    service.stop();
    let records = sink.records().await?;

    let mut per_user: HashMap<String, usize> = HashMap::new();
    let task = TaskTypeId::parse(TASK)?;
    let window = Duration::from_secs(window_secs);
    let mut lateness = Vec::with_capacity(records.len());
    let mut header_used = true;
    let mut scheduled_ms = None;
    for record in &records {
        let body = record.json();
        let user = body["user_id"].as_str().context("user_id in the body")?;
        *per_user.entry(user.to_owned()).or_default() += 1;
        let scheduled = chrono::DateTime::parse_from_rfc3339(
            body["scheduled_at"]
                .as_str()
                .context("scheduled_at in the body")?,
        )?
        .timestamp_millis();
        scheduled_ms.get_or_insert(scheduled);
        let execute_after = match record.execute_after_ms() {
            Some(ms) => ms,
            None => {
                header_used = false;
                let offset = slot::place(&task, &UserId::parse(user)?, window).offset;
                scheduled + i64::try_from(offset.as_millis())?
            }
        };
        lateness.push((record.at_ns as f64 / 1e6) - execute_after as f64);
    }
    let duplicates = per_user.values().filter(|n| **n > 1).count();
    check(
        per_user.len() == users && duplicates == 0,
        format!(
            "{} calls for {} distinct users of {users}, {duplicates} called twice",
            records.len(),
            per_user.len()
        ),
    )?;
    if tiny {
        for n in 0..users {
            check(
                per_user.contains_key(&user_id(n)),
                format!("{} never called", user_id(n)),
            )?;
        }
    }
    let scheduled_ms = scheduled_ms.context("no calls")?;
    let mut per_second = vec![0usize; usize::try_from(window_secs)?.max(1)];
    let mut outside_window = 0;
    for record in &records {
        let since = (record.at_ns / 1_000_000) - scheduled_ms;
        match usize::try_from(since / 1000)
            .ok()
            .filter(|s| *s < per_second.len())
        {
            Some(second) => per_second[second] += 1,
            None => outside_window += 1,
        }
    }
    let mean = users as f64 / per_second.len() as f64;
    let max_deviation_pct = per_second
        .iter()
        .map(|c| (*c as f64 - mean).abs() / mean * 100.0)
        .fold(0.0, f64::max);
    lateness.sort_by(f64::total_cmp);
    Ok(RunResult {
        max_deviation_pct,
        p50_ms: percentile(&lateness, 50.0),
        p99_ms: percentile(&lateness, 99.0),
        max_ms: lateness.last().copied().unwrap_or(f64::NAN),
        min_ms: lateness.first().copied().unwrap_or(f64::NAN),
        outside_window,
        header_used,
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
    let users = args.size_or(10_000, 300);
    let window_secs = if args.tiny { 5 } else { 60 };
    progress(format!(
        "W4 spread: {users} users over {window_secs} s, {} run(s){}",
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
        let result = run_once(users, window_secs, args.tiny).await?;
        progress(format!(
            "run {run}: worst second {:.1}% off the mean; lateness p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (min {:.0} ms); {} calls outside the window",
            result.max_deviation_pct,
            result.p50_ms,
            result.p99_ms,
            result.max_ms,
            result.min_ms,
            result.outside_window
        ));
        results.push(result);
    }
    if args.tiny {
        println!("W4 tiny: {users} users spread over {window_secs} s, each called exactly once");
        return Ok(());
    }
    let pick = |f: fn(&RunResult) -> f64| results.iter().map(f).collect::<Vec<f64>>();
    let mut table = Table::new(
        format!(
            "W4 spread, {users} users over {window_secs} s ({} runs)",
            args.runs
        ),
        &["measure", "min / **median** / max", "target"],
    );
    table.row(vec![
        "worst second vs the mean (%)".into(),
        spread_cell(&pick(|r| r.max_deviation_pct), 1),
        "≤ 10".into(),
    ]);
    table.row(vec![
        "lateness p50 (ms)".into(),
        spread_cell(&pick(|r| r.p50_ms), 0),
        String::new(),
    ]);
    table.row(vec![
        "lateness p99 (ms)".into(),
        spread_cell(&pick(|r| r.p99_ms), 0),
        "≤ 250".into(),
    ]);
    table.row(vec![
        "lateness max (ms)".into(),
        spread_cell(&pick(|r| r.max_ms), 0),
        String::new(),
    ]);
    table.row(vec![
        "earliest call vs `execute_after` (ms)".into(),
        spread_cell(&pick(|r| r.min_ms), 0),
        "≥ 0".into(),
    ]);
    table.row(vec![
        "calls outside the window".into(),
        spread_cell(&pick(|r| r.outside_window as f64), 0),
        String::new(),
    ]);
    let cpu: Vec<Vec<(String, f64)>> = results.iter().map(|r| r.cpu.clone()).collect();
    table.note(format!(
        "CPU µs per job (median): {}.",
        cpu_cell(&cpu, users)
    ));
    table.note(if results.iter().all(|r| r.header_used) {
        "`execute_after` read from the `X-Taskqueue-Execute-After` header.".to_owned()
    } else {
        "`execute_after` recomputed from `scheduled_at` + `actors::slot::place` (the service sent no `X-Taskqueue-Execute-After` header).".to_owned()
    });
    table.note(format!("Machine: {}.", machine_line()));
    table.print();
    Ok(())
}
