//! Helpers shared by the workload benchmarks (`fanout`, `ratelimit`,
//! `spread`, `memory`): command-line options, progress on stderr, a fast
//! loopback HTTP sink run as a child process (so its CPU time can be read
//! apart from the bench's), CPU seconds and RSS of processes from
//! `/proc`, throwaway RabbitMQ vhosts and Redis key prefixes, a
//! `taskqueue serve` process on a generated configuration, and
//! min/median/max tables.
//!
//! Every workload binary calls [`run_sink_if_asked`] first: the same
//! executable started as `<bench> __sink [--light]` becomes the sink.

#![allow(dead_code)]

pub mod sink;

use std::{
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use lapin::{
    Channel, Connection, ConnectionProperties, options::QueueDeclareOptions, types::FieldTable,
};

#[allow(unused_imports)]
pub use sink::{Record, Sink, run_sink_if_asked};

/// Linux reports CPU times in clock ticks of `USER_HZ`, which is 100 on
/// every architecture Linux runs on.
const CLOCK_TICKS: f64 = 100.0;

/// The three priority queues jobs wait in.
pub const JOB_QUEUES: [&str; 3] = [
    "taskqueue.jobs.high",
    "taskqueue.jobs.normal",
    "taskqueue.jobs.low",
];

/// Options every workload takes: `--tiny` (a few hundred jobs, one run,
/// counts asserted), `--runs N` (or `BENCH_RUNS`), `--size N` (or
/// `BENCH_SIZE`). Unknown arguments (cargo passes `--bench`) are ignored.
#[derive(Debug, Clone, Copy)]
pub struct BenchArgs {
    /// Tiny mode: counts only, never timings.
    pub tiny: bool,
    /// Runs per row.
    pub runs: usize,
    /// The workload's size (users or jobs), when given.
    pub size: Option<usize>,
}

impl BenchArgs {
    /// Reads the command line and the environment.
    pub fn parse() -> BenchArgs {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let value_of = |flag: &str, env: &str| -> Option<usize> {
            args.iter()
                .position(|a| a == flag)
                .and_then(|at| args.get(at + 1))
                .cloned()
                .or_else(|| std::env::var(env).ok())
                .and_then(|v| v.replace('_', "").parse().ok())
        };
        let tiny = args.iter().any(|a| a == "--tiny");
        let runs = if tiny {
            1
        } else {
            value_of("--runs", "BENCH_RUNS").unwrap_or(3).max(1)
        };
        BenchArgs {
            tiny,
            runs,
            size: value_of("--size", "BENCH_SIZE"),
        }
    }

    /// The size: `--size`, else `tiny` in tiny mode, else `full`.
    pub fn size_or(&self, full: usize, tiny: usize) -> usize {
        match (self.size, self.tiny) {
            (Some(size), _) => size,
            (None, true) => tiny,
            (None, false) => full,
        }
    }
}

fn started() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Writes one progress line to stderr, stamped with the time since start.
pub fn progress(message: impl AsRef<str>) {
    let elapsed = started().elapsed().as_secs_f64();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "[{elapsed:7.1}s] {}", message.as_ref());
}

/// Fails with `message` unless `condition` holds (the tiny runs' checks).
pub fn check(condition: bool, message: impl AsRef<str>) -> Result<()> {
    if condition {
        Ok(())
    } else {
        bail!("check failed: {}", message.as_ref())
    }
}

// ---------------------------------------------------------------- /proc

/// CPU seconds (user + system) `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let fields = stat_fields(&format!("/proc/{pid}/stat"))?;
    Ok((field(&fields, 11)? + field(&fields, 12)?) / CLOCK_TICKS)
}

/// CPU seconds of this process's children that have been waited for.
pub fn children_cpu_seconds() -> Result<f64> {
    let fields = stat_fields("/proc/self/stat")?;
    Ok((field(&fields, 13)? + field(&fields, 14)?) / CLOCK_TICKS)
}

/// Resident set size of `pid` in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?;
    Ok(kib * 1024)
}

/// The fields of a `/proc/*/stat` file after the command name, so index 0
/// is the state (field 3 in `proc(5)`).
fn stat_fields(path: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    let after = text
        .rfind(')')
        .map(|at| &text[at + 1..])
        .context("stat format")?;
    Ok(after.split_whitespace().map(str::to_owned).collect())
}

fn field(fields: &[String], index: usize) -> Result<f64> {
    fields
        .get(index)
        .context("stat field missing")?
        .parse()
        .context("stat field not a number")
}

/// The RabbitMQ server's Erlang VM (`beam.smp`), if it runs here.
pub fn rabbitmq_pid() -> Option<u32> {
    let out = Command::new("pgrep")
        .args(["-x", "beam.smp"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The Redis server's pid (`INFO server`).
pub fn redis_pid() -> Option<u32> {
    let mut connection = redis_connection().ok()?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut connection)
        .ok()?;
    info_field(&info, "process_id")?.parse().ok()
}

/// Redis `used_memory` in bytes.
pub fn redis_used_memory() -> Result<u64> {
    let mut connection = redis_connection()?;
    let info: String = redis::cmd("INFO").arg("memory").query(&mut connection)?;
    info_field(&info, "used_memory")
        .context("no used_memory")?
        .parse()
        .context("used_memory")
}

fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_owned())
}

/// A named process whose CPU time a workload reports.
#[derive(Debug, Clone)]
pub struct Watched {
    /// Column name (`taskqueue`, `RabbitMQ`, `Redis`, `sink`, ...).
    pub name: String,
    /// Its pid.
    pub pid: u32,
}

/// CPU seconds of a set of processes at one instant.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    seconds: Vec<(String, f64)>,
}

impl CpuSnapshot {
    /// Reads every watched process (a process that is gone reads 0).
    pub fn take(watched: &[Watched]) -> CpuSnapshot {
        CpuSnapshot {
            seconds: watched
                .iter()
                .map(|w| (w.name.clone(), cpu_seconds(w.pid).unwrap_or(0.0)))
                .collect(),
        }
    }

    /// CPU seconds used since `earlier`, per name.
    pub fn since(&self, earlier: &CpuSnapshot) -> Vec<(String, f64)> {
        self.seconds
            .iter()
            .map(|(name, now)| {
                let before = earlier
                    .seconds
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(0.0, |(_, s)| *s);
                (name.clone(), (now - before).max(0.0))
            })
            .collect()
    }
}

/// The shared servers (RabbitMQ, Redis) as watched processes.
pub fn server_processes() -> Vec<Watched> {
    let mut out = Vec::new();
    if let Some(pid) = rabbitmq_pid() {
        out.push(Watched {
            name: "RabbitMQ".into(),
            pid,
        });
    }
    if let Some(pid) = redis_pid() {
        out.push(Watched {
            name: "Redis".into(),
            pid,
        });
    }
    out
}

/// This bench process as a watched process.
pub fn this_process(name: &str) -> Watched {
    Watched {
        name: name.into(),
        pid: std::process::id(),
    }
}

// ---------------------------------------------------------------- Redis

pub use test_kit::{redis_address, redis_url};

/// A blocking Redis connection.
pub fn redis_connection() -> Result<redis::Connection> {
    Ok(redis::Client::open(redis_url())?.get_connection()?)
}

/// A fresh Redis key prefix, its keys deleted on drop.
pub use test_kit::Prefix;

// ------------------------------------------------------------- RabbitMQ

/// Runs `rabbitmqctl -q args` ([`test_kit::rabbitmqctl`]).
pub fn rabbitmqctl(args: &[&str]) -> Result<()> {
    Ok(test_kit::rabbitmqctl(args)?)
}

/// A throwaway RabbitMQ vhost (guest has every permission), deleted on
/// drop: the kit's ([`test_kit::Vhost`], its `name` and `url` through
/// `Deref`), with a lapin connection to it.
pub struct Vhost(test_kit::Vhost);

impl Vhost {
    /// A new vhost tagged with `tag`.
    pub fn new(tag: &str) -> Result<Vhost> {
        Ok(Vhost(test_kit::Vhost::new(&format!("bench-{tag}"))?))
    }

    /// A connection to the vhost.
    pub async fn connect(&self) -> Result<Connection> {
        Ok(Connection::connect(&self.0.url, ConnectionProperties::default()).await?)
    }
}

impl std::ops::Deref for Vhost {
    type Target = test_kit::Vhost;

    fn deref(&self) -> &test_kit::Vhost {
        &self.0
    }
}

/// Reads queue depths with passive declares on one channel.
pub struct QueueDepth {
    connection: Connection,
    channel: Channel,
}

impl QueueDepth {
    /// Opens a channel on `vhost`.
    pub async fn open(vhost: &Vhost) -> Result<QueueDepth> {
        let connection = vhost.connect().await?;
        let channel = connection.create_channel().await?;
        Ok(QueueDepth {
            connection,
            channel,
        })
    }

    /// Ready messages in `queue` (an error when it does not exist, which
    /// also closes the channel: reopen with [`QueueDepth::open`]).
    pub async fn of(&self, queue: &str) -> Result<u64> {
        let declared = self
            .channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(u64::from(declared.message_count()))
    }

    /// Ready messages in the three priority queues together.
    pub async fn jobs(&self) -> Result<u64> {
        let mut total = 0;
        for queue in JOB_QUEUES {
            total += self.of(queue).await?;
        }
        Ok(total)
    }

    /// Closes the connection.
    pub async fn close(self) {
        let _ = self.connection.close(0, "done".into()).await;
    }
}

/// Waits until `vhost` has the job queues (a service declared them).
pub async fn wait_for_queues(vhost: &Vhost, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let depth = QueueDepth::open(vhost).await?;
        let found = depth.jobs().await.is_ok();
        depth.close().await;
        if found {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the job queues never appeared in {}", vhost.name);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ------------------------------------------------------------ taskqueue

/// The taskqueue binary (`TASKQUEUE_BIN` overrides the one cargo built).
pub fn taskqueue_bin() -> PathBuf {
    std::env::var_os("TASKQUEUE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_taskqueue")))
}

/// A scratch directory for configuration and data files, removed on drop.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// A new directory.
    pub fn new() -> Result<Scratch> {
        Ok(Scratch {
            dir: tempfile::Builder::new().prefix("tqbench-").tempdir()?,
        })
    }

    /// Writes `text` to `name` in the directory; its path.
    pub fn write(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// The path of `name` in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// One task of a generated configuration.
#[derive(Debug, Clone)]
pub struct BenchTask {
    /// Task id.
    pub id: String,
    /// Endpoint URL.
    pub endpoint: String,
}

/// A service configuration on `prefix` and `vhost`: `tasks` (daily, at a
/// time twelve hours away so the scheduler never fires them on its own),
/// then `extra` YAML sections appended verbatim.
pub fn service_config(prefix: &Prefix, vhost: &Vhost, tasks: &[BenchTask], extra: &str) -> String {
    let at = (chrono::Utc::now() + chrono::TimeDelta::hours(12)).format("%H:%M");
    let mut text = format!(
        r#"backend: external
redis:
  addresses: ["{redis}"]
  prefix: "{prefix}"
queue:
  url: "{amqp}"
monitoring:
  metrics_interval: 1s
  log_level: warn
{extra}
tasks:
"#,
        redis = redis_address(),
        prefix = prefix.name,
        amqp = vhost.url,
    );
    for task in tasks {
        text.push_str(&format!(
            r#"  - id: {id}
    name: {id}
    interval: {{ type: daily, value: 1, at_time: "{at}" }}
    timeout: 30s
    retries: 3
    config: {{ endpoint: "{endpoint}", method: POST }}
"#,
            id = task.id,
            endpoint = task.endpoint,
        ));
    }
    text
}

/// A task file (`tasks:` only) for `taskqueue users import --tasks`.
pub fn tasks_file(tasks: &[BenchTask]) -> String {
    let mut text = String::from("tasks:\n");
    for task in tasks {
        text.push_str(&format!(
            "  - id: {id}\n    name: {id}\n    interval: {{ type: daily, value: 1 }}\n    timeout: 30s\n    config: {{ endpoint: \"{endpoint}\", method: POST }}\n",
            id = task.id,
            endpoint = task.endpoint,
        ));
    }
    text
}

/// Writes a JSON-lines file of `users` users (`u0000000`, ...) with every
/// task of `tasks` enabled; its path.
pub fn write_users(scratch: &Scratch, users: usize, tasks: &[&str]) -> Result<PathBuf> {
    let path = scratch.path("users.jsonl");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
    let enabled: Vec<String> = tasks.iter().map(|t| format!("\"{t}\":true")).collect();
    let enabled = enabled.join(",");
    for n in 0..users {
        writeln!(
            file,
            r#"{{"user_id":"{}","enabled_tasks":{{{enabled}}},"last_modified":"2024-01-15T10:00:00Z"}}"#,
            user_id(n)
        )?;
    }
    file.flush()?;
    Ok(path)
}

/// The id of generated user `n`.
pub fn user_id(n: usize) -> String {
    format!("u{n:07}")
}

/// What one `taskqueue users import` took.
#[derive(Debug, Clone, Copy)]
pub struct ImportRun {
    /// Wall time.
    pub seconds: f64,
    /// CPU seconds of the import process.
    pub cpu_seconds: f64,
}

/// Runs `taskqueue users import` of `file` into `prefix`, checked against
/// `tasks_file`.
pub fn import_users(file: &Path, prefix: &Prefix, tasks_file: &Path) -> Result<ImportRun> {
    let cpu_before = children_cpu_seconds()?;
    let start = Instant::now();
    let output = Command::new(taskqueue_bin())
        .args(["users", "import"])
        .arg(file)
        .args(["--redis-url", &redis_url(), "--prefix", &prefix.name])
        .arg("--tasks")
        .arg(tasks_file)
        .stdin(Stdio::null())
        .output()
        .context("run taskqueue users import")?;
    let seconds = start.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!(
            "taskqueue users import failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(ImportRun {
        seconds,
        cpu_seconds: children_cpu_seconds()? - cpu_before,
    })
}

/// A free loopback address (the port is released for a process to take).
pub fn free_address() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A running `taskqueue serve` process, stopped (SIGTERM) on drop.
pub struct Service {
    child: Child,
    /// Where its API listens.
    pub address: SocketAddr,
    /// Its pid.
    pub pid: u32,
}

impl Service {
    /// Starts `taskqueue serve --config config --role role` and waits until
    /// it answers `/health`.
    pub async fn start(config: &Path, role: &str) -> Result<Service> {
        let address = free_address()?;
        let child = Command::new(taskqueue_bin())
            .args(["serve", "--config"])
            .arg(config)
            .args(["--role", role, "--bind", &address.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawn taskqueue serve")?;
        let pid = child.id();
        let mut service = Service {
            child,
            address,
            pid,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = service.child.try_wait()? {
                bail!("taskqueue serve exited at start: {status}");
            }
            if client
                .get(service.url("/health"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(service);
            }
            if Instant::now() > deadline {
                bail!("taskqueue serve never answered /health");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The URL of `path` on its API.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// As a watched process named `name`.
    pub fn watched(&self, name: &str) -> Watched {
        Watched {
            name: name.into(),
            pid: self.pid,
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid.to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

// --------------------------------------------------------------- tables

/// Min, median and max of a row's runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    /// Smallest.
    pub min: f64,
    /// Median (the upper one of an even count).
    pub median: f64,
    /// Largest.
    pub max: f64,
}

impl Summary {
    /// Of `values` (all zero when empty).
    pub fn of(values: &[f64]) -> Summary {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        match sorted.len() {
            0 => Summary::default(),
            n => Summary {
                min: sorted[0],
                median: sorted[n / 2],
                max: sorted[n - 1],
            },
        }
    }
}

/// Formats a number with thousands separators (`8,981`) or, below 100,
/// with up to `decimals` decimals.
pub fn number(value: f64, decimals: usize) -> String {
    if !value.is_finite() {
        return "n/a".into();
    }
    if value.abs() >= 100.0 {
        let whole = value.round() as i64;
        let digits = whole.abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        if whole < 0 {
            out.insert(0, '-');
        }
        out
    } else {
        format!("{value:.decimals$}")
    }
}

/// A markdown table printed to stdout.
pub struct Table {
    title: String,
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    /// A table with a title line and column headers.
    pub fn new(title: impl Into<String>, columns: &[&str]) -> Table {
        Table {
            title: title.into(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Adds a note printed under the table.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Prints it.
    pub fn print(&self) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "\n### {}\n", self.title);
        let _ = writeln!(out, "| {} |", self.columns.join(" | "));
        let align: Vec<&str> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { "---" } else { "---:" })
            .collect();
        let _ = writeln!(out, "|{}|", align.join("|"));
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        for note in &self.notes {
            let _ = writeln!(out, "\n{note}");
        }
        let _ = out.flush();
    }
}

/// `min / median / max` of `values` as one cell.
pub fn spread_cell(values: &[f64], decimals: usize) -> String {
    let s = Summary::of(values);
    format!(
        "{} / **{}** / {}",
        number(s.min, decimals),
        number(s.median, decimals),
        number(s.max, decimals)
    )
}

/// CPU µs per job of each named process: median over runs of
/// `seconds / jobs`, as `name N` joined by `, `.
pub fn cpu_cell(runs: &[Vec<(String, f64)>], jobs: usize) -> String {
    let Some(first) = runs.first() else {
        return "n/a".into();
    };
    first
        .iter()
        .map(|(name, _)| {
            let per_job: Vec<f64> = runs
                .iter()
                .filter_map(|run| run.iter().find(|(n, _)| n == name))
                .map(|(_, s)| s * 1e6 / jobs.max(1) as f64)
                .collect();
            format!("{name} {}", number(Summary::of(&per_job).median, 0))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The machine in one line (cores, memory, kernel) for the tables' notes.
pub fn machine_line() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0.0, |kib| kib as f64 / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{cores} cores, {memory:.0} GiB, Linux {}, load average at the end {}",
        kernel.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}
