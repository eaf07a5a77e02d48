//! Service configuration: the spec's scheduler config, worker config and
//! `tasks.yaml`, loaded from YAML layers and environment overrides.
//!
//! Everything is parsed and validated here, once; the rest of the service
//! receives typed values and never re-checks them.
//!
//! # Layout
//!
//! - this module: the typed configuration and [`load`] / [`load_tasks`].
//! - `node`: YAML as a tree of located values (file, line, column).
//! - `env`: [`EnvSource`], `TASKQUEUE_SECTION__KEY` overrides, `${ENV_NAME}`.
//! - `read`: typed readers that record a problem instead of stopping.
//! - `service`, `tasks`: the sections and the task definitions.
//! - `problem`: [`ConfigProblem`] and [`ConfigErrors`].
//!
//! **Secrets** (`redis.password`, the password in `queue.url`, `api.token`,
//! task header values) never appear in problems or in `Debug` output: the
//! section types redact them in their `Debug` impls, and readers never echo
//! a text value they could not use. `Serialize` writes them as they are,
//! so a configuration is never serialised into a log or a response.

mod env;
mod load;
mod node;
mod problem;
mod read;
mod service;
mod tasks;

use std::{collections::BTreeMap, fmt, net::SocketAddr, path::PathBuf, time::Duration};

use actors::domain::{TaskType, TaskTypeId};
use serde::{Deserialize, Serialize};

pub use env::{EnvSource, OVERRIDE_PREFIX, OVERRIDE_SEPARATOR, ProcessEnv};
pub use load::{LoadedConfig, load, load_tasks, load_tasks_with, load_with};
pub use problem::{ConfigErrors, ConfigProblem, Severity};
pub use tasks::METHODS;

/// Stands in for a secret in `Debug` output.
const REDACTED: &str = "[redacted]";

/// The whole service configuration (every section optional in files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// How the scheduler ticks and spreads runs.
    pub scheduler: SchedulerConfig,
    /// The Redis server holding shared state.
    pub redis: RedisConfig,
    /// The RabbitMQ broker carrying jobs.
    pub queue: QueueConfig,
    /// Where task definitions come from.
    pub tasks: TasksConfig,
    /// The executor pool.
    pub worker: WorkerConfig,
    /// Cluster-wide rate limits (executions per second).
    pub rate_limit: RateLimitConfig,
    /// Timeouts and retries.
    pub execution: ExecutionConfig,
    /// Metrics and logs.
    pub monitoring: MonitoringConfig,
    /// The internal HTTP API (extension).
    pub api: ApiConfig,
    /// Which backends to use (extension): `external` (Redis and RabbitMQ)
    /// or `embedded` (in-process, for the quick start).
    pub backend: Backend,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            scheduler: SchedulerConfig::default(),
            redis: RedisConfig::default(),
            queue: QueueConfig::default(),
            tasks: TasksConfig::default(),
            worker: WorkerConfig::default(),
            rate_limit: RateLimitConfig::default(),
            execution: ExecutionConfig::default(),
            monitoring: MonitoringConfig::default(),
            api: ApiConfig::default(),
            backend: Backend::External,
        }
    }
}

/// `scheduler:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// How often due tasks are looked for.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// Runs of one period are spread over this long.
    #[serde(with = "humantime_serde")]
    pub distribution_window: Duration,
    /// Users read and published per batch.
    pub batch_size: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            check_interval: Duration::from_secs(60),
            distribution_window: Duration::from_secs(30 * 60),
            batch_size: 1000,
        }
    }
}

/// `redis:` section. `Debug` redacts the password.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `host:port` of the server (`standalone`, exactly one) or of each
    /// Sentinel (`sentinel`).
    pub addresses: Vec<String>,
    /// Password; write `${ENV_NAME}` to read it from the environment.
    pub password: String,
    /// Database number.
    pub db: i64,
    /// Attempts of a failed command before the error surfaces.
    pub max_retries: u32,
    /// Connections (multiplexed; 1 is usually enough).
    pub pool_size: u32,
    /// Prefix of every key (extension; default `taskqueue`).
    pub prefix: String,
    /// `standalone` or `sentinel` (extension; default `standalone`).
    pub mode: RedisMode,
    /// With `mode: sentinel`, the master's name in the Sentinels'
    /// configuration (extension; required then).
    pub master_name: String,
}

/// How `redis.addresses` are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One Redis server (the default).
    #[default]
    Standalone,
    /// Redis Sentinels, which name the master.
    Sentinel,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            addresses: vec!["localhost:6379".to_owned()],
            password: String::new(),
            db: 0,
            max_retries: 3,
            pool_size: 10,
            prefix: "taskqueue".to_owned(),
            mode: RedisMode::Standalone,
            master_name: String::new(),
        }
    }
}

/// `queue:` section. `Debug` redacts the password in the URL.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// AMQP URL; write `${ENV_NAME}` for a secret.
    pub url: String,
    /// Exchange name.
    pub exchange: String,
    /// Durable exchange and queues.
    pub durable: bool,
    /// Unacknowledged deliveries per consumer.
    pub prefetch: u16,
    /// `classic` or `quorum` (extension).
    #[serde(rename = "type")]
    pub queue_type: QueueType,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            url: "amqp://guest:guest@localhost:5672/".to_owned(),
            exchange: "taskqueue".to_owned(),
            durable: true,
            prefetch: 10,
            queue_type: QueueType::Classic,
        }
    }
}

/// RabbitMQ queue type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// Classic queues (the default).
    #[default]
    Classic,
    /// Replicated quorum queues.
    Quorum,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event, coloured only on a terminal.
    #[default]
    Pretty,
    /// One JSON object per line, the event's fields at the top level.
    Json,
}

/// `tasks:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TasksConfig {
    /// Path of `tasks.yaml`, relative to the config file that names it.
    pub config_file: PathBuf,
    /// How often the file is re-read (also on SIGHUP).
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl Default for TasksConfig {
    fn default() -> Self {
        TasksConfig {
            config_file: PathBuf::from("tasks.yaml"),
            reload_interval: Duration::from_secs(5 * 60),
        }
    }
}

/// `worker:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Executor actors.
    pub pool_size: u32,
    /// How long in-flight jobs may finish on shutdown.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            pool_size: 10,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// `rate_limit:` section (executions per second, across all replicas).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Limit over all tasks.
    pub global: u32,
    /// Limits per task id.
    pub per_task: BTreeMap<TaskTypeId, u32>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            global: 100,
            per_task: BTreeMap::new(),
        }
    }
}

/// `execution:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutionConfig {
    /// Upper bound of any one call.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries of a task that does not set its own.
    pub max_retries: u32,
    /// Base of the exponential backoff.
    #[serde(with = "humantime_serde")]
    pub retry_delay: Duration,
    /// Cap of the backoff (extension; default 1h).
    #[serde(with = "humantime_serde")]
    pub max_retry_delay: Duration,
    /// Longest a delivery waits for a rate-limit token before its job is
    /// deferred (extension; default 1s).
    #[serde(with = "humantime_serde")]
    pub max_token_wait: Duration,
    /// Throttles (429/503 with `Retry-After`) a job may take per allowed
    /// attempt before it is dead-lettered as `throttled_too_long`
    /// (extension; default 10).
    pub throttles_per_attempt: u32,
    /// A throttled job is dead-lettered as `throttled_too_long` rather
    /// than tried again later than this after it was created (extension;
    /// default 1 day).
    #[serde(with = "humantime_serde")]
    pub max_throttled_age: Duration,
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        ExecutionConfig {
            timeout: Duration::from_secs(5 * 60),
            max_retries: 3,
            retry_delay: Duration::from_secs(60),
            max_retry_delay: Duration::from_secs(3600),
            max_token_wait: Duration::from_secs(1),
            throttles_per_attempt: 10,
            max_throttled_age: Duration::from_secs(86_400),
        }
    }
}

/// `monitoring:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitoringConfig {
    /// How often metrics are flushed to Redis.
    #[serde(with = "humantime_serde")]
    pub metrics_interval: Duration,
    /// `trace`, `debug`, `info`, `warn` or `error` (or a tracing filter).
    pub log_level: String,
    /// How log lines are written (extension; default `pretty`).
    pub log_format: LogFormat,
    /// How long Redis metrics are kept (extension; default 30 days).
    #[serde(with = "humantime_serde")]
    pub metrics_retention: Duration,
    /// How long a job's results (`GET /jobs/{job_id}`, the runs lists) are
    /// kept after its last attempt (extension; default 7 days).
    #[serde(with = "humantime_serde")]
    pub result_retention: Duration,
    /// Whether a job the distributor publishes reads `pending` until it
    /// starts (extension; default true). Off saves a Redis write per
    /// published job; such a job then has no record until its claim.
    pub record_pending: bool,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            metrics_interval: Duration::from_secs(10),
            log_level: "info".to_owned(),
            log_format: LogFormat::Pretty,
            metrics_retention: Duration::from_secs(30 * 86_400),
            result_retention: Duration::from_secs(7 * 86_400),
            record_pending: true,
        }
    }
}

/// `api:` section (extension). `Debug` redacts the token.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Address of the internal API; loopback by default.
    pub bind: SocketAddr,
    /// When set, mutating endpoints require `Authorization: Bearer <token>`.
    /// Write `${ENV_NAME}`. Required when `bind` is not a loopback
    /// address.
    pub token: Option<String>,
    /// Put the read endpoints (`GET /users/..`, `/schedule/status/..`,
    /// `/stats`, `/sink`) behind the token too; `/health` stays open for
    /// probes (default false).
    pub protect_reads: bool,
    /// Serve a loopback HTTP sink at `/sink/{name}` that answers 200 and
    /// counts calls (quick start; default false).
    pub sink: bool,
    /// With `backend: embedded`, create this many example users with every
    /// task enabled at start, and trigger each task once for them (quick
    /// start; default 0).
    pub demo_users: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            protect_reads: false,
            sink: false,
            demo_users: 0,
        }
    }
}

/// Which backends the service runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Redis and RabbitMQ (production).
    #[default]
    External,
    /// In-process store and broker (quick start, one process only).
    Embedded,
}

/// The task definitions of `tasks.yaml`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TaskFile {
    /// Every task type, ids unique.
    pub tasks: Vec<TaskType>,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let password = if self.password.is_empty() {
            ""
        } else {
            REDACTED
        };
        f.debug_struct("RedisConfig")
            .field("addresses", &self.addresses)
            .field("password", &password)
            .field("db", &self.db)
            .field("max_retries", &self.max_retries)
            .field("pool_size", &self.pool_size)
            .field("prefix", &self.prefix)
            .field("mode", &self.mode)
            .field("master_name", &self.master_name)
            .finish()
    }
}

impl fmt::Debug for QueueConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueConfig")
            .field("url", &redact_url(&self.url))
            .field("exchange", &self.exchange)
            .field("durable", &self.durable)
            .field("prefetch", &self.prefetch)
            .field("queue_type", &self.queue_type)
            .finish()
    }
}

impl fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiConfig")
            .field("bind", &self.bind)
            .field("token", &self.token.as_ref().map(|_| REDACTED))
            .field("protect_reads", &self.protect_reads)
            .field("sink", &self.sink)
            .field("demo_users", &self.demo_users)
            .finish()
    }
}

/// `url` with its password (if any) replaced by `redacted`; a URL that
/// does not parse is redacted whole.
pub fn redact_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("redacted"));
            }
            url.to_string()
        }
        Err(_) => REDACTED.to_owned(),
    }
}
