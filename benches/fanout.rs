//! W1 fan-out: N users (default 1,000,000; `--size`), each row measured in
//! the same run, one after the other, on the same Redis and RabbitMQ:
//!
//! - **bare lapin** (the ceiling): N persistent messages published to a
//!   durable queue in a throwaway vhost, publisher confirms streamed
//!   (up to [`IN_FLIGHT`] unconfirmed);
//! - **BullMQ `addBulk`** (`benches/bullmq/addbulk.mjs`): N jobs into a
//!   queue under its own Redis key prefix;
//! - **(b) immediate trigger**: the users imported with `taskqueue users
//!   import`, then `POST /schedule/trigger {"execute_immediately": true}`
//!   to a `serve --role scheduler` process, timed until all N jobs are in
//!   the priority queues;
//! - **(a) spread planning**: `POST /schedule/trigger` without
//!   `execute_immediately`, timed until `GET /schedule/status/{task}`
//!   shows the run's planning done (needs a trigger that answers with a
//!   `run_id`; otherwise the row says so).
//!
//! CPU per job: each process's CPU seconds over the row (the publisher or
//! taskqueue process, Node, RabbitMQ's `beam.smp`, `redis-server`) / N.
//!
//! `--no-pending`: the service runs with `monitoring.record_pending: false`
//! (no `pending` record per published job), to measure what that write
//! costs the trigger.
//!
//! `--tiny`: 300 users, one run, counts checked (every user's job in the
//! queue exactly once), no timing judged; exits non-zero on a mismatch.

mod support;

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use actors::domain::{
    Job, JobEnvelope, JobMetadata, JobSource, Priority, TaskTypeId, UserId, job_id,
};
use anyhow::{Context, Result, bail};
use futures::{StreamExt, stream::FuturesUnordered};
use lapin::{
    BasicProperties, Confirmation, ExchangeKind,
    options::{
        BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
        QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};
use serde_json::{Value, json};
use support::*;

/// The fanned-out task.
const TASK: &str = "fanout_bench";
/// Most unconfirmed publishes of the bare publisher.
const IN_FLIGHT: usize = 4096;
/// The bare publisher's queue.
const BARE_QUEUE: &str = "bench.bare";

/// What a bare publish sends, beyond the ceiling's minimal message: for
/// the field-by-field comparison of `--messages`.
#[derive(Debug, Clone, Copy, Default)]
struct Message {
    /// Through a durable direct exchange bound under the queue's name, not
    /// the default exchange.
    exchange: bool,
    /// `mandatory` set.
    mandatory: bool,
    /// taskqueue's job properties: `message-id`, `correlation-id`,
    /// `timestamp` and its four `x-*` headers.
    headers: bool,
}

/// The bare publisher's exchange under `--messages`.
const BARE_EXCHANGE: &str = "bench.direct";

/// One row's measurements over the runs.
#[derive(Default)]
struct Row {
    rates: Vec<f64>,
    cpu: Vec<Vec<(String, f64)>>,
    skipped: Option<String>,
    /// Extra per-run figures (trigger answer time, bytes per user).
    extra: Vec<f64>,
}

impl Row {
    fn push(&mut self, jobs: usize, seconds: f64, cpu: Vec<(String, f64)>) {
        self.rates.push(jobs as f64 / seconds.max(1e-9));
        self.cpu.push(cpu);
    }
}

/// Per-run ratios of `rates` to `ceilings` (same run, same index).
fn ratios(rates: &[f64], ceilings: &[f64]) -> Vec<f64> {
    rates.iter().zip(ceilings).map(|(r, c)| r / c).collect()
}

fn sample_body(n: usize) -> Result<Vec<u8>> {
    let task = TaskTypeId::parse(TASK)?;
    let user = UserId::parse(user_id(n))?;
    let now = chrono::Utc::now();
    let envelope = JobEnvelope::new(
        Job {
            id: job_id(&task, &user, now),
            task_type_id: task,
            user_id: user,
            scheduled_at: now,
            execute_after: now,
            attempt: 1,
            priority: Priority::Normal,
            payload: Vec::new(),
            created_at: now,
        },
        JobMetadata {
            correlation_id: format!("trigger:{TASK}:{}", now.timestamp_millis()),
            source: JobSource::Trigger,
            distribution_slot: None,
            origin: None,
        },
    );
    Ok(serde_json::to_vec(&envelope)?)
}

/// The ceiling: bare lapin, persistent messages, confirms streamed.
async fn bare_publish(
    users: usize,
    tiny: bool,
    message: Message,
) -> Result<(f64, Vec<(String, f64)>)> {
    let vhost = Vhost::new("w1-bare")?;
    let connection = vhost.connect().await?;
    let channel = connection.create_channel().await?;
    channel
        .queue_declare(
            BARE_QUEUE.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let exchange = if message.exchange {
        channel
            .exchange_declare(
                BARE_EXCHANGE.into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                BARE_QUEUE.into(),
                BARE_EXCHANGE.into(),
                BARE_QUEUE.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        BARE_EXCHANGE
    } else {
        ""
    };
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let body = sample_body(0)?;
    let mut properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    if message.headers {
        let text = |t: &str| AMQPValue::LongString(t.as_bytes().to_vec().into());
        let mut headers = FieldTable::default();
        headers.insert("x-task-type".into(), text(TASK));
        headers.insert("x-attempt".into(), AMQPValue::LongLongInt(1));
        headers.insert(
            "x-execute-after".into(),
            AMQPValue::LongLongInt(chrono::Utc::now().timestamp_millis()),
        );
        headers.insert("x-taskqueue-target".into(), text("taskqueue.jobs.normal"));
        properties = properties
            .with_message_id(uuid::Uuid::new_v4().to_string().into())
            .with_correlation_id(format!("trigger:{TASK}:1764640000000").into())
            .with_timestamp(1_764_640_000)
            .with_headers(headers);
    }
    let mut watched = server_processes();
    watched.push(this_process("publisher"));
    let cpu_before = CpuSnapshot::take(&watched);
    let start = Instant::now();
    let mut confirms = FuturesUnordered::new();
    let mut confirmed = 0usize;
    for n in 0..users {
        let confirm = channel
            .basic_publish(
                exchange.into(),
                BARE_QUEUE.into(),
                BasicPublishOptions {
                    mandatory: message.mandatory,
                    immediate: false,
                },
                &body,
                properties.clone(),
            )
            .await?;
        confirms.push(confirm);
        while confirms.len() >= IN_FLIGHT {
            if let Some(confirmation) = confirms.next().await {
                if !matches!(confirmation?, Confirmation::Ack(None)) {
                    bail!("the broker nacked or returned a publish");
                }
                confirmed += 1;
            }
        }
        if n > 0 && n % 100_000 == 0 {
            progress(format!("bare lapin: {n}/{users} published"));
        }
    }
    while let Some(confirmation) = confirms.next().await {
        if !matches!(confirmation?, Confirmation::Ack(None)) {
            bail!("the broker nacked or returned a publish");
        }
        confirmed += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu = CpuSnapshot::take(&watched).since(&cpu_before);
    check(
        confirmed == users,
        format!("bare: {confirmed} of {users} confirmed"),
    )?;
    if tiny {
        let depth = QueueDepth::open(&vhost).await?;
        let in_queue = depth.of(BARE_QUEUE).await?;
        depth.close().await;
        check(
            in_queue == users as u64,
            format!("bare: {in_queue} of {users} messages in the queue"),
        )?;
    }
    let _ = connection.close(0, "done".into()).await;
    Ok((seconds, cpu))
}

fn bullmq_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/bullmq")
}

/// BullMQ `addBulk` of `users` jobs under a prefix of its own.
fn bullmq_add_bulk(users: usize, tiny: bool) -> Result<(f64, Vec<(String, f64)>)> {
    let prefix = Prefix::new("w1-bullmq");
    let watched: Vec<Watched> = server_processes()
        .into_iter()
        .filter(|w| w.name == "Redis")
        .collect();
    let cpu_before = CpuSnapshot::take(&watched);
    let output = Command::new("node")
        .arg(bullmq_dir().join("addbulk.mjs"))
        .args(["--count", &users.to_string(), "--prefix", &prefix.name])
        .args(["--redis", &redis_address()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("run node addbulk.mjs")?;
    let mut cpu = CpuSnapshot::take(&watched).since(&cpu_before);
    if !output.status.success() {
        bail!("addbulk.mjs failed: {}", output.status);
    }
    let result: Value = serde_json::from_slice(&output.stdout).context("addbulk.mjs output")?;
    let seconds = result["seconds"].as_f64().context("seconds")?;
    cpu.insert(
        0,
        (
            "node".into(),
            result["cpu_seconds"].as_f64().context("cpu_seconds")?,
        ),
    );
    if tiny {
        let waiting = result["waiting"].as_u64().unwrap_or(0);
        check(
            waiting == users as u64,
            format!("BullMQ: {waiting} of {users} jobs waiting"),
        )?;
    }
    Ok((seconds, cpu))
}

struct Ours {
    prefix: Prefix,
    scratch: Scratch,
    users: usize,
}

impl Ours {
    /// Imports the users into a fresh prefix.
    fn import(users: usize, users_file: &Path, tasks_file: &Path) -> Result<(Ours, ImportRun)> {
        let prefix = Prefix::new("w1-ours");
        let run = import_users(users_file, &prefix, tasks_file)?;
        Ok((
            Ours {
                prefix,
                scratch: Scratch::new()?,
                users,
            },
            run,
        ))
    }

    async fn service(&self, vhost: &Vhost) -> Result<Service> {
        let config = service_config(
            &self.prefix,
            vhost,
            &[BenchTask {
                id: TASK.into(),
                endpoint: "http://127.0.0.1:9/fanout".into(),
            }],
            &format!(
                "{}scheduler:\n  check_interval: 1s\n  distribution_window: 30m\n  batch_size: 1000\nrate_limit:\n  global: 1000000\n",
                // Continues the template's `monitoring:` section.
                if std::env::args().any(|arg| arg == "--no-pending") {
                    "  record_pending: false\n"
                } else {
                    ""
                }
            ),
        );
        let path = self.scratch.write("taskqueue.yaml", &config)?;
        let service = Service::start(&path, "scheduler").await?;
        wait_for_queues(vhost, Duration::from_secs(30)).await?;
        Ok(service)
    }
}

/// What a trigger answered, and when.
struct Answer {
    status: u16,
    body: Value,
    after: Duration,
}

fn trigger(service: &Service, immediate: bool) -> tokio::task::JoinHandle<Result<Answer>> {
    let url = service.url("/schedule/trigger");
    tokio::spawn(async move {
        let start = Instant::now();
        let mut body = json!({"task_type_id": TASK});
        if immediate {
            body["execute_immediately"] = json!(true);
        }
        let response = reqwest::Client::builder()
            .timeout(Duration::from_secs(3600))
            .build()?
            .post(url)
            .json(&body)
            .send()
            .await?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok(Answer {
            status,
            body,
            after: start.elapsed(),
        })
    })
}

/// (b): an immediate trigger, until every job is in the priority queues.
/// Returns (seconds, cpu, answer).
async fn ours_immediate(ours: &Ours, tiny: bool) -> Result<(f64, Vec<(String, f64)>, Answer)> {
    let vhost = Vhost::new("w1-ours")?;
    let mut service = ours.service(&vhost).await?;
    let mut watched = vec![service.watched("taskqueue")];
    watched.extend(server_processes());
    let depth = QueueDepth::open(&vhost).await?;
    let cpu_before = CpuSnapshot::take(&watched);
    let start = Instant::now();
    let mut answer = trigger(&service, true);
    let mut answered: Option<Answer> = None;
    let mut last_report = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(3600);
    let seconds = loop {
        if answered.is_none() && answer.is_finished() {
            let got = (&mut answer).await??;
            if got.status != 202 {
                bail!("trigger answered {}: {}", got.status, got.body);
            }
            answered = Some(got);
        }
        let in_queues = depth.jobs().await?;
        if in_queues >= ours.users as u64 {
            break start.elapsed().as_secs_f64();
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            last_report = Instant::now();
            progress(format!(
                "immediate trigger: {in_queues}/{} in the queues",
                ours.users
            ));
        }
        if Instant::now() > deadline {
            bail!("only {in_queues} of {} jobs reached the queues", ours.users);
        }
        tokio::time::sleep(Duration::from_millis(if tiny { 20 } else { 100 })).await;
    };
    let cpu = CpuSnapshot::take(&watched).since(&cpu_before);
    let answer = match answered {
        Some(answer) => answer,
        None => {
            let got = answer.await??;
            if got.status != 202 {
                bail!("trigger answered {}: {}", got.status, got.body);
            }
            got
        }
    };
    check(
        answer.body["jobs_created"].as_u64() == Some(ours.users as u64),
        format!(
            "jobs_created {} for {} users",
            answer.body["jobs_created"], ours.users
        ),
    )?;
    service.stop();
    let in_queues = depth.jobs().await?;
    depth.close().await;
    check(
        in_queues == ours.users as u64,
        format!("{in_queues} jobs in the queues for {} users", ours.users),
    )?;
    if tiny {
        check_each_user_once(&vhost, ours.users).await?;
    }
    Ok((seconds, cpu, answer))
}

/// Takes every job out of the queues: each user exactly once.
async fn check_each_user_once(vhost: &Vhost, users: usize) -> Result<()> {
    let connection = vhost.connect().await?;
    let channel = connection.create_channel().await?;
    let mut seen = HashSet::new();
    let mut messages = 0;
    for queue in JOB_QUEUES {
        while let Some(message) = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await?
        {
            messages += 1;
            let envelope: JobEnvelope = serde_json::from_slice(&message.delivery.data)?;
            seen.insert(envelope.job.user_id.to_string());
        }
    }
    let _ = connection.close(0, "done".into()).await;
    check(
        messages == users && seen.len() == users,
        format!(
            "{messages} jobs for {} distinct users of {users}",
            seen.len()
        ),
    )?;
    for n in 0..users {
        check(
            seen.contains(&user_id(n)),
            format!("no job for {}", user_id(n)),
        )?;
    }
    Ok(())
}

/// The run in `status` (in progress or last) with `run_id`.
fn find_run<'a>(status: &'a Value, run_id: &str) -> Option<&'a Value> {
    status["runs"]
        .as_array()
        .and_then(|runs| runs.iter().find(|r| r["run_id"].as_str() == Some(run_id)))
        .or_else(|| {
            let last = &status["last_run"];
            (last["run_id"].as_str() == Some(run_id)).then_some(last)
        })
}

/// (a): a spread trigger, until its planning is done. Returns (seconds,
/// cpu, Redis bytes per planned user).
async fn ours_plan(ours: &Ours, tiny: bool) -> Result<(f64, Vec<(String, f64)>, f64)> {
    let vhost = Vhost::new("w1-plan")?;
    let mut service = ours.service(&vhost).await?;
    let mut watched = vec![service.watched("taskqueue")];
    watched.extend(server_processes());
    let memory_before = redis_used_memory()?;
    let cpu_before = CpuSnapshot::take(&watched);
    let start = Instant::now();
    let answer = trigger(&service, false).await??;
    if answer.status != 202 {
        bail!("spread trigger answered {}: {}", answer.status, answer.body);
    }
    let run_id = answer.body["run_id"]
        .as_str()
        .context("the trigger answered no run_id")?
        .to_owned();
    let client = reqwest::Client::new();
    let status_url = service.url(&format!("/schedule/status/{TASK}"));
    let mut last_report = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(1800);
    let (seconds, run) = loop {
        let status: Value = client.get(&status_url).send().await?.json().await?;
        if let Some(run) = find_run(&status, &run_id)
            && run["planning_done"].as_bool() == Some(true)
        {
            break (start.elapsed().as_secs_f64(), run.clone());
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            last_report = Instant::now();
            let planned = find_run(&status, &run_id).map_or(Value::Null, |r| r["planned"].clone());
            progress(format!("spread planning: {planned}/{} planned", ours.users));
        }
        if Instant::now() > deadline {
            bail!("the spread run {run_id} never finished planning");
        }
        tokio::time::sleep(Duration::from_millis(if tiny { 20 } else { 100 })).await;
    };
    let cpu = CpuSnapshot::take(&watched).since(&cpu_before);
    service.stop();
    let memory_after = redis_used_memory()?;
    let planned = run["planned"].as_u64().unwrap_or(0);
    check(
        planned == ours.users as u64 && run["users"].as_u64() == Some(ours.users as u64),
        format!(
            "run {run_id}: planned {planned}, users {} of {}",
            run["users"], ours.users
        ),
    )?;
    let per_user = (memory_after as f64 - memory_before as f64) / ours.users as f64;
    Ok((seconds, cpu, per_user))
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
    let users = args.size_or(1_000_000, 300);
    progress(format!(
        "W1 fan-out: {users} users, {} run(s){}",
        args.runs,
        if args.tiny {
            ", tiny (counts only)"
        } else {
            ""
        }
    ));
    if std::env::args().any(|a| a == "--messages") {
        return compare_messages(users, &args).await;
    }
    let scratch = Scratch::new()?;
    let users_file = write_users(&scratch, users, &[TASK])?;
    let tasks_path = scratch.write(
        "tasks.yaml",
        &tasks_file(&[BenchTask {
            id: TASK.into(),
            endpoint: "http://127.0.0.1:9/fanout".into(),
        }]),
    )?;
    let have_bullmq = bullmq_dir().join("node_modules/bullmq").exists();
    if !have_bullmq {
        progress(
            "benches/bullmq/node_modules missing (scripts/bench.sh installs it): BullMQ row skipped",
        );
    }

    let (mut bare, mut bullmq, mut immediate, mut plan) = (
        Row::default(),
        Row::default(),
        Row::default(),
        Row::default(),
    );
    let mut imports = Vec::new();
    let mut new_api = true;
    for run in 1..=args.runs {
        // Who goes first rotates between runs, so no row always meets a
        // broker still busy with the previous row's work.
        for step in 0..3 {
            match (step + run - 1) % 3 {
                0 => {
                    progress(format!("run {run}/{}: bare lapin", args.runs));
                    let (seconds, cpu) = bare_publish(users, args.tiny, Message::default()).await?;
                    bare.push(users, seconds, cpu);
                }
                1 if have_bullmq => {
                    progress(format!("run {run}/{}: BullMQ addBulk", args.runs));
                    let (seconds, cpu) = bullmq_add_bulk(users, args.tiny)?;
                    bullmq.push(users, seconds, cpu);
                }
                1 => bullmq.skipped = Some("node_modules not installed".into()),
                _ => {
                    progress(format!("run {run}/{}: taskqueue users import", args.runs));
                    let (ours, import) = Ours::import(users, &users_file, &tasks_path)?;
                    imports.push(users as f64 / import.seconds);
                    progress(format!("run {run}/{}: immediate trigger", args.runs));
                    let (seconds, cpu, answer) = ours_immediate(&ours, args.tiny).await?;
                    immediate.push(users, seconds, cpu);
                    immediate.extra.push(answer.after.as_secs_f64());
                    new_api &= answer.body.get("run_id").is_some();
                    if new_api {
                        progress(format!("run {run}/{}: spread planning", args.runs));
                        let (seconds, cpu, per_user) = ours_plan(&ours, args.tiny).await?;
                        plan.push(users, seconds, cpu);
                        plan.extra.push(per_user);
                    } else {
                        plan.skipped = Some(
                            "needs the new fan-out (a trigger that answers with a `run_id`)".into(),
                        );
                    }
                }
            }
        }
        let last = |row: &Row| row.rates.last().map_or("n/a".to_owned(), |r| number(*r, 0));
        progress(format!(
            "run {run}/{}: bare {} jobs/s, BullMQ {}, immediate trigger {} (answered after {:.2} s), spread planning {}",
            args.runs,
            last(&bare),
            last(&bullmq),
            last(&immediate),
            immediate.extra.last().copied().unwrap_or(f64::NAN),
            last(&plan)
        ));
    }

    if args.tiny {
        println!(
            "W1 tiny: {users} users; bare, BullMQ{} and immediate trigger{} delivered every job exactly once",
            if have_bullmq { "" } else { " (skipped)" },
            if new_api { ", spread planning" } else { "" }
        );
        return Ok(());
    }
    let mut table = Table::new(
        format!("W1 fan-out, {users} users ({} runs)", args.runs),
        &[
            "what",
            "jobs/s min / **median** / max",
            "ratio to bare in the same run, min / **median** / max",
            "CPU µs per job (median)",
        ],
    );
    let rows = [
        ("bare lapin, persistent, confirms streamed (ceiling)", &bare),
        ("BullMQ 6.7.0 `addBulk` (Redis, not durable)", &bullmq),
        (
            "(b) `POST /schedule/trigger`, `execute_immediately`, until all in the queues",
            &immediate,
        ),
        (
            "(a) spread trigger, until planning done (`/schedule/status`)",
            &plan,
        ),
    ];
    for (label, row) in rows {
        if let Some(reason) = &row.skipped {
            table.row(vec![
                label.into(),
                format!("n/a: {reason}"),
                String::new(),
                String::new(),
            ]);
            continue;
        }
        table.row(vec![
            label.into(),
            spread_cell(&row.rates, 0),
            spread_cell(&ratios(&row.rates, &bare.rates), 2),
            cpu_cell(&row.cpu, users),
        ]);
    }
    if bullmq.skipped.is_none() {
        table.note(format!(
            "(b) against BullMQ `addBulk` in the same run: {} (min / median / max).",
            spread_cell(&ratios(&immediate.rates, &bullmq.rates), 2)
        ));
    }
    table.note(format!(
        "The trigger answered after {} s (min / median / max); `taskqueue users import` ran at {} users/s (median).",
        spread_cell(&immediate.extra, 2),
        number(Summary::of(&imports).median, 0)
    ));
    if plan.skipped.is_none() {
        table.note(format!(
            "Redis `used_memory` per planned user (shared server, noisy): {} B.",
            spread_cell(&plan.extra, 0)
        ));
    }
    table.note(format!("Machine: {}.", machine_line()));
    table.print();
    Ok(())
}

/// `--messages`: the bare publisher with each of taskqueue's differences
/// from the ceiling's message, one at a time and all together, the order
/// rotating between runs: where the broker's CPU per job goes.
async fn compare_messages(users: usize, args: &BenchArgs) -> Result<()> {
    let variants = [
        (
            "default exchange, minimal properties (the ceiling)",
            Message::default(),
        ),
        (
            "+ taskqueue's properties and headers",
            Message {
                headers: true,
                ..Message::default()
            },
        ),
        (
            "+ direct exchange, `mandatory`",
            Message {
                exchange: true,
                mandatory: true,
                ..Message::default()
            },
        ),
        (
            "all of taskqueue's (exchange, `mandatory`, properties, headers)",
            Message {
                exchange: true,
                mandatory: true,
                headers: true,
            },
        ),
    ];
    let mut rows: Vec<Row> = variants.iter().map(|_| Row::default()).collect();
    for run in 1..=args.runs {
        for step in 0..variants.len() {
            let at = (step + run - 1) % variants.len();
            let (label, message) = variants[at];
            progress(format!("run {run}/{}: bare lapin, {label}", args.runs));
            let (seconds, cpu) = bare_publish(users, args.tiny, message).await?;
            rows[at].push(users, seconds, cpu);
        }
    }
    if args.tiny {
        println!("W1 messages tiny: {users} messages per variant, all confirmed and queued");
        return Ok(());
    }
    let mut table = Table::new(
        format!(
            "W1 bare publish, message by message, {users} messages ({} runs)",
            args.runs
        ),
        &[
            "message",
            "msgs/s min / **median** / max",
            "ratio to the ceiling, same run",
            "CPU µs per message (median)",
        ],
    );
    for ((label, _), row) in variants.iter().zip(&rows) {
        table.row(vec![
            (*label).into(),
            spread_cell(&row.rates, 0),
            spread_cell(&ratios(&row.rates, &rows[0].rates), 2),
            cpu_cell(&row.cpu, users),
        ]);
    }
    table.note(format!("Machine: {}.", machine_line()));
    table.print();
    Ok(())
}
