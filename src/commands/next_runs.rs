//! `taskqueue next-runs`: the schedule calculus on the command line.
//!
//! Prints the next fire instants of an interval given as JSON, or of a
//! configured task (optionally with a user's `custom_interval`, which
//! replaces the task's interval entirely, time zone included), or of an
//! interval read in a user's time zone (`--zone`). Invalid
//! input exits 2 with a message naming the bad flag and field.

use std::{io::Write, path::PathBuf, process::ExitCode};

use actors::{
    domain::{AtTime, IntervalType, TaskInterval, TaskType, Weekday},
    preview,
    schedule::Schedule,
};
use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Arguments of `taskqueue next-runs`.
#[derive(Debug, Clone, clap::Args)]
pub struct NextRunsArgs {
    /// A `TaskInterval` as JSON, e.g.
    /// `{"type":"daily","value":1,"timezone":"Europe/Berlin","at_time":"09:00"}`.
    #[arg(long, required_unless_present = "task", conflicts_with_all = ["config", "task", "user_interval"])]
    pub interval: Option<String>,
    /// RFC 3339 instant; fires strictly after it are printed (default: now).
    #[arg(long)]
    pub after: Option<String>,
    /// How many fires to print.
    #[arg(long, default_value_t = 5)]
    pub count: usize,
    /// Tasks file holding the task; repeat to layer files (later ones win).
    #[arg(long = "config", short = 'c', requires = "task")]
    pub config: Vec<PathBuf>,
    /// Id of the configured task whose fires are printed.
    #[arg(long, requires = "config")]
    pub task: Option<String>,
    /// A user's `custom_interval` as JSON; replaces the task's interval
    /// entirely, time zone included.
    #[arg(long, requires = "task")]
    pub user_interval: Option<String>,
    /// A user's time zone (IANA name): the interval (the task's, or
    /// `--interval`) is read in it, as for a user whose own zone it is.
    /// A `--user-interval` carries its own zone, so the two conflict.
    #[arg(long, conflicts_with = "user_interval")]
    pub zone: Option<String>,
}

/// Prints the fires, one RFC 3339 UTC instant per line.
pub fn run(args: NextRunsArgs) -> ExitCode {
    match fires(&args) {
        Ok(fires) => {
            let mut out = std::io::stdout().lock();
            for fire in fires {
                if writeln!(out, "{}", fire.to_rfc3339_opts(SecondsFormat::Secs, true)).is_err() {
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

/// The fires the arguments ask for, or a message naming the bad input.
fn fires(args: &NextRunsArgs) -> Result<Vec<DateTime<Utc>>, String> {
    if args.count == 0 {
        return Err("--count: must be at least 1".to_owned());
    }
    let after = match &args.after {
        Some(text) => DateTime::parse_from_rfc3339(text)
            .map_err(|error| {
                format!(
                    "--after: {text:?} is not an RFC 3339 instant \
                     (such as 2026-03-07T00:00:00Z): {error}"
                )
            })?
            .to_utc(),
        None => Utc::now(),
    };
    let schedule = match (&args.interval, &args.task, &args.user_interval) {
        (Some(json), _, _) => compile("--interval", json)?,
        (None, Some(task), user_interval) => {
            let definition = configured_task(&args.config, task)?;
            match user_interval {
                Some(json) => compile("--user-interval", json)?,
                None => Schedule::try_new(&definition.interval)
                    .map_err(|error| format!("task {task:?}: interval field {error}"))?,
            }
        }
        (None, None, _) => return Err("--interval or --config with --task is required".to_owned()),
    };
    let zone = match &args.zone {
        Some(name) => Some(
            name.parse::<Tz>()
                .map_err(|error| format!("--zone: {name:?} is not an IANA time zone: {error}"))?,
        ),
        None => None,
    };
    Ok(preview::next_fires(&schedule, zone, after, args.count))
}

/// Parses a `TaskInterval` given as JSON with `flag`, field by field, so
/// that an error names the field.
fn compile(flag: &str, json: &str) -> Result<Schedule, String> {
    let value: Value =
        serde_json::from_str(json).map_err(|error| format!("{flag}: not valid JSON: {error}"))?;
    let Value::Object(fields) = &value else {
        return Err(format!(
            "{flag}: expected a JSON object such as {{\"type\":\"daily\",\"value\":1}}"
        ));
    };
    for required in ["type", "value"] {
        if fields.get(required).is_none_or(Value::is_null) {
            return Err(format!("{flag}: field {required} is missing"));
        }
    }
    for (name, field) in fields {
        let checked = match name.as_str() {
            "type" => check::<IntervalType>(field),
            "value" => check::<u32>(field),
            _ if field.is_null() => Ok(()),
            "timezone" => check::<Tz>(field),
            "at_time" => check::<AtTime>(field),
            "weekday" => check::<Weekday>(field),
            "day_of_month" => check::<u8>(field),
            _ => Err(
                "unknown field; expected type, value, timezone, at_time, weekday \
                      or day_of_month"
                    .to_owned(),
            ),
        };
        checked.map_err(|error| format!("{flag}: field {name}: {error}"))?;
    }
    let interval: TaskInterval =
        serde_json::from_value(value).map_err(|error| format!("{flag}: {error}"))?;
    Schedule::try_new(&interval).map_err(|error| format!("{flag}: field {error}"))
}

/// Whether `field` reads as a `T`, with serde's reason if not.
fn check<T: DeserializeOwned>(field: &Value) -> Result<(), String> {
    T::deserialize(field)
        .map(|_| ())
        .map_err(|error| error.to_string())
}

/// The task `task` as configured by the files `paths` (loaded and validated
/// like `taskqueue serve` does).
fn configured_task(paths: &[PathBuf], task: &str) -> Result<TaskType, String> {
    let loaded = crate::configuration::load(paths).map_err(|errors| errors.to_string())?;
    loaded
        .tasks
        .into_iter()
        .find(|definition| definition.id.as_str() == task)
        .ok_or_else(|| {
            format!(
                "--task: no task {task:?} in {}",
                loaded.tasks_file.display()
            )
        })
}
