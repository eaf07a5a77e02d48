//! `taskqueue users import`: bulk-load preferences.
//!
//! Reads a JSON-lines file, one spec `UserPreference` per line, and writes
//! it through the state store in batches (one atomic pipeline per batch),
//! showing a progress bar. A bad line never aborts the rest: it is
//! rejected, with its line number and the reason, in the summary. A line is
//! rejected when it is not a valid `UserPreference`, names no task, has an
//! invalid custom interval, or, when the task definitions are known (from
//! `--config` or `--tasks`), names a task they do not define. Blank lines
//! are skipped.
//!
//! With `--config`, the Redis connection, key prefix and task definitions
//! come from the configuration (validated as `taskqueue serve` does);
//! `--redis-url`, `--prefix` and `--tasks` override them.
//!
//! Exit status: 0 when every line was imported, 1 when some lines were
//! rejected (all others imported), 2 when the import could not run or
//! stopped (unreadable file, Redis unreachable).

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

use actors::{
    catalog::TaskCatalog,
    domain::{TaskType, TaskTypeId, UserPreference},
    store::{
        Keys, PreferenceWrite, StateStore, StoreError, TimezoneWrite,
        redis::{RedisOptions, RedisStore, RedisTarget},
    },
};
use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt, stream::FuturesUnordered};
use indicatif::{ProgressBar, ProgressStyle};

use crate::{
    commands::ConfigArgs,
    configuration::{self, RateLimitConfig},
    routes::preferences::check_interval,
    startup::redis_target,
};

/// Arguments of `taskqueue users import`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// JSON-lines file, one `UserPreference` per line.
    pub file: PathBuf,
    /// Configuration (for the Redis connection and the task list).
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Redis to import into (else the configuration's, else
    /// `redis://127.0.0.1:6379/`).
    #[arg(long, env = "TASKQUEUE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Key prefix (else the configuration's `redis.prefix`, else `taskqueue`).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Users per pipeline.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,
    /// Task file (`tasks.yaml`); when given, lines naming other tasks are
    /// rejected.
    #[arg(long)]
    pub tasks: Option<PathBuf>,
}

/// Where an import writes, and what it checks lines against.
struct ImportTarget {
    redis: RedisTarget,
    prefix: String,
    catalog: Option<TaskCatalog>,
}

impl ImportTarget {
    /// Flags first, then the configuration, then the defaults.
    fn resolve(args: &ImportArgs) -> Result<ImportTarget, String> {
        let loaded = if args.config.config.is_empty() {
            None
        } else {
            Some(configuration::load(&args.config.config).map_err(|errors| errors.to_string())?)
        };
        let catalog = match (&args.tasks, &loaded) {
            (Some(path), _) => {
                let (tasks, _warnings) =
                    configuration::load_tasks(path, &RateLimitConfig::default())
                        .map_err(|errors| errors.to_string())?;
                Some(TaskCatalog::new(tasks))
            }
            (None, Some(loaded)) => Some(TaskCatalog::new(loaded.tasks.clone())),
            (None, None) => None,
        };
        let redis = match (&args.redis_url, &loaded) {
            (Some(url), _) => RedisTarget::Url(url.clone()),
            (None, Some(loaded)) => redis_target(&loaded.service.redis),
            (None, None) => RedisTarget::Url("redis://127.0.0.1:6379/".to_owned()),
        };
        let prefix = match (&args.prefix, &loaded) {
            (Some(prefix), _) => prefix.clone(),
            (None, Some(loaded)) => loaded.service.redis.prefix.clone(),
            (None, None) => "taskqueue".to_owned(),
        };
        Ok(ImportTarget {
            redis,
            prefix,
            catalog,
        })
    }
}

/// A line that was not imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// 1-based line number in the file.
    pub line: u64,
    /// Why it was refused.
    pub reason: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Users written.
    pub imported: u64,
    /// Lines refused, in file order.
    pub rejected: Vec<Rejection>,
}

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportUsersError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The store refused a batch; lines before it were imported.
    #[error("writing to the store after {imported} users: {source}")]
    Store {
        /// Users imported before the failure.
        imported: u64,
        /// The store's error.
        source: StoreError,
    },
}

/// Imports the file.
pub fn import(args: ImportArgs) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("users import: {err}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: ImportArgs) -> ExitCode {
    let target = match ImportTarget::resolve(&args) {
        Ok(target) => target,
        Err(message) => {
            eprintln!("users import: {message}");
            return ExitCode::from(2);
        }
    };
    let catalog = target.catalog;
    let keys = Keys::new(target.prefix);
    let store = match RedisStore::connect_to(&target.redis, keys, RedisOptions::default()).await {
        Ok(store) => Arc::new(store),
        Err(err) => {
            // The URL may hold a password: name the server only by its role.
            eprintln!("users import: connecting to Redis: {err}");
            return ExitCode::from(2);
        }
    };
    let total = std::fs::metadata(&args.file).map(|m| m.len()).unwrap_or(0);
    let progress = ProgressBar::new(total);
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let result = import_file(
        &args.file,
        store.as_ref(),
        catalog.as_ref(),
        args.batch as usize,
        &progress,
    )
    .await;
    progress.finish_and_clear();
    match result {
        Ok(summary) => {
            print_summary(&summary);
            if summary.rejected.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(err) => {
            eprintln!("users import: {err}");
            ExitCode::from(2)
        }
    }
}

/// Most rejections listed one by one in the summary.
const LISTED_REJECTIONS: usize = 1000;

fn print_summary(summary: &ImportSummary) {
    println!(
        "imported {} users, rejected {} lines",
        summary.imported,
        summary.rejected.len()
    );
    for rejection in summary.rejected.iter().take(LISTED_REJECTIONS) {
        println!("  line {}: {}", rejection.line, rejection.reason);
    }
    if summary.rejected.len() > LISTED_REJECTIONS {
        println!(
            "  ... and {} more",
            summary.rejected.len() - LISTED_REJECTIONS
        );
    }
}

/// Batches written concurrently: while one batch travels to Redis and is
/// applied, the next ones are parsed and sent behind it on the same
/// connection (so they still apply in file order).
const BATCHES_IN_FLIGHT: usize = 4;

/// Imports `path` into `store`, `batch` users per pipeline, advancing
/// `progress` by bytes read. `catalog`, when given, is the set of tasks
/// lines may name.
pub async fn import_file(
    path: &Path,
    store: &dyn StateStore,
    catalog: Option<&TaskCatalog>,
    batch: usize,
    progress: &ProgressBar,
) -> Result<ImportSummary, ImportUsersError> {
    let read_error = |source| ImportUsersError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let now = Utc::now();
    let tasks = catalog.map(TaskCatalog::snapshot);
    let mut summary = ImportSummary::default();
    let mut in_flight = FuturesUnordered::new();
    let mut writes = Vec::with_capacity(batch * 2);
    let mut zones = Vec::new();
    let mut users_in_batch = 0u64;
    let mut line = String::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let read = reader.read_line(&mut line).map_err(read_error)?;
        if read == 0 {
            break;
        }
        number += 1;
        progress.inc(read as u64);
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(&line, tasks.as_deref(), now) {
            Ok((zone, user_writes)) => {
                zones.extend(zone);
                writes.extend(user_writes);
                users_in_batch += 1;
            }
            Err(reason) => summary.rejected.push(Rejection {
                line: number,
                reason,
            }),
        }
        if users_in_batch as usize >= batch {
            let full = std::mem::replace(&mut writes, Vec::with_capacity(batch * 2));
            let full_zones = std::mem::take(&mut zones);
            in_flight.push(write_batch(store, full_zones, full, users_in_batch));
            users_in_batch = 0;
            // Polls the new batch once, which sends it.
            while let Some(Some(done)) = in_flight.next().now_or_never() {
                count(done, &mut summary)?;
            }
            while in_flight.len() >= BATCHES_IN_FLIGHT {
                if let Some(done) = in_flight.next().await {
                    count(done, &mut summary)?;
                }
            }
            progress.set_message(format!(
                "{} imported, {} rejected",
                summary.imported,
                summary.rejected.len()
            ));
        }
    }
    if users_in_batch > 0 {
        in_flight.push(write_batch(store, zones, writes, users_in_batch));
    }
    while let Some(done) = in_flight.next().await {
        count(done, &mut summary)?;
    }
    Ok(summary)
}

/// Writes one batch; yields its user count.
async fn write_batch(
    store: &dyn StateStore,
    zones: Vec<TimezoneWrite>,
    writes: Vec<PreferenceWrite>,
    users: u64,
) -> Result<u64, StoreError> {
    // Zones first: the preference writes place each user in the group of
    // the default zone the store holds.
    store.write_user_timezones(&zones).await?;
    store.write_preferences(&writes).await?;
    Ok(users)
}

fn count(
    done: Result<u64, StoreError>,
    summary: &mut ImportSummary,
) -> Result<(), ImportUsersError> {
    match done {
        Ok(users) => {
            summary.imported += users;
            Ok(())
        }
        Err(source) => Err(ImportUsersError::Store {
            imported: summary.imported,
            source,
        }),
    }
}

/// One line's writes, or why it is refused.
fn parse_line(
    line: &str,
    tasks: Option<&BTreeMap<TaskTypeId, TaskType>>,
    now: DateTime<Utc>,
) -> Result<(Option<TimezoneWrite>, Vec<PreferenceWrite>), String> {
    let preference: UserPreference =
        serde_json::from_str(line).map_err(|err| format!("not a UserPreference: {err}"))?;
    let named = preference
        .enabled_tasks
        .keys()
        .chain(preference.task_settings.keys());
    if let Some(tasks) = tasks {
        let mut unknown: Vec<&str> = named
            .filter(|task| !tasks.contains_key(*task))
            .map(|task| task.as_str())
            .collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            unknown.dedup();
            return Err(format!("unknown task id(s): {}", unknown.join(", ")));
        }
    }
    for (task, settings) in &preference.task_settings {
        if let Some(interval) = &settings.custom_interval {
            check_interval(interval).map_err(|err| format!("task {task}: {err}"))?;
        }
    }
    let writes = PreferenceWrite::from_preference(&preference, now);
    if writes.is_empty() {
        return Err("names no task: nothing to import".to_owned());
    }
    // A line's `timezone` sets the user's default zone; without one, a
    // default set earlier is kept.
    let zone = preference.timezone.map(|zone| TimezoneWrite {
        user_id: preference.user_id.clone(),
        timezone: Some(zone),
    });
    Ok((zone, writes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> BTreeMap<TaskTypeId, TaskType> {
        let task: TaskType = serde_json::from_value(serde_json::json!({
            "id": "daily_report",
            "name": "Daily report",
            "interval": {"type": "daily", "value": 1},
            "timeout": "30s",
            "config": {"endpoint": "http://127.0.0.1:9/", "method": "POST"}
        }))
        .unwrap();
        [(task.id.clone(), task)].into()
    }

    fn check(line: &str, expected: Result<usize, &str>) {
        let now = "2024-01-15T00:00:00Z".parse().unwrap();
        let tasks = catalog();
        match (parse_line(line, Some(&tasks), now), expected) {
            (Ok((_, writes)), Ok(count)) => assert_eq!(writes.len(), count, "{line}"),
            (Err(reason), Err(fragment)) => {
                assert!(reason.contains(fragment), "{line}: {reason}")
            }
            (got, want) => panic!("{line}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn lines_are_parsed_or_rejected_with_a_reason() {
        let ok = r#"{"user_id":"u1","enabled_tasks":{"daily_report":true},"task_settings":{},"last_modified":"2024-01-15T10:00:00Z"}"#;
        check(ok, Ok(1));
        check(
            r#"{"user_id":"u1","enabled_tasks":{},"task_settings":{"daily_report":{"parameters":{"a":"b"}}},"last_modified":"2024-01-15T10:00:00Z"}"#,
            Ok(1),
        );
        check("{", Err("not a UserPreference"));
        check(
            r#"{"user_id":"u:1","enabled_tasks":{},"last_modified":"2024-01-15T10:00:00Z"}"#,
            Err("not a UserPreference"),
        );
        check(
            r#"{"user_id":"u1","enabled_tasks":{"nope":true},"last_modified":"2024-01-15T10:00:00Z"}"#,
            Err("unknown task id(s): nope"),
        );
        check(
            r#"{"user_id":"u1","enabled_tasks":{},"last_modified":"2024-01-15T10:00:00Z"}"#,
            Err("names no task"),
        );
        check(
            r#"{"user_id":"u1","enabled_tasks":{"daily_report":true},"task_settings":{"daily_report":{"custom_interval":{"type":"daily","value":0}}},"last_modified":"2024-01-15T10:00:00Z"}"#,
            Err("at least 1"),
        );
        check(
            r#"{"user_id":"u1","enabled_tasks":{"daily_report":true},"timezone":"Mars/Olympus","last_modified":"2024-01-15T10:00:00Z"}"#,
            Err("Mars/Olympus"),
        );
        check(
            r#"{"user_id":"u1","enabled_tasks":{"daily_report":true},"task_settings":{"daily_report":{"timezone":"Asia/Tokyo","colour":"red"}},"last_modified":"2024-01-15T10:00:00Z"}"#,
            Err("colour"),
        );
    }

    #[test]
    fn a_line_with_a_timezone_sets_the_users_default_zone() {
        let now = "2024-01-15T00:00:00Z".parse().unwrap();
        let tasks = catalog();
        let line = r#"{"user_id":"u1","enabled_tasks":{"daily_report":true},"timezone":"Asia/Kathmandu","last_modified":"2024-01-15T10:00:00Z"}"#;
        let (zone, writes) = parse_line(line, Some(&tasks), now).unwrap();
        let zone = zone.expect("a zone write");
        assert_eq!(zone.user_id.as_str(), "u1");
        assert_eq!(zone.timezone, Some(chrono_tz::Asia::Kathmandu));
        assert_eq!(writes.len(), 1);
        let without = r#"{"user_id":"u1","enabled_tasks":{"daily_report":true},"last_modified":"2024-01-15T10:00:00Z"}"#;
        assert_eq!(parse_line(without, Some(&tasks), now).unwrap().0, None);
    }
}
