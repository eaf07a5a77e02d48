//! Reads the service sections (`scheduler`, `redis`, `queue`, `tasks`,
//! `worker`, `rate_limit`, `execution`, `monitoring`, `api`, `backend`)
//! from the merged tree, over the defaults.

use std::{net::SocketAddr, path::PathBuf};

use actors::domain::TaskTypeId;

use super::{
    Backend, LogFormat, QueueType, RedisMode, ServiceConfig,
    node::{Node, Origin},
    read::{Ctx, Fields},
};

/// Every top-level section.
pub(crate) const SECTIONS: &[&str] = &[
    "scheduler",
    "redis",
    "queue",
    "tasks",
    "worker",
    "rate_limit",
    "execution",
    "monitoring",
    "api",
    "backend",
];

/// The service configuration and the facts the loader needs about where
/// things were written.
pub(crate) struct ServiceRead {
    /// The configuration (defaults where nothing was written or a value was
    /// refused).
    pub config: ServiceConfig,
    /// Where `tasks.config_file` was set, if anywhere.
    pub config_file_origin: Option<Origin>,
    /// Each `rate_limit.per_task` key and where it was written.
    pub per_task_keys: Vec<(TaskTypeId, Origin)>,
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// Reads the whole service configuration from `root`.
pub(crate) fn read_service(root: &Node, ctx: &mut Ctx<'_>) -> ServiceRead {
    let mut read = ServiceRead {
        config: ServiceConfig::default(),
        config_file_origin: None,
        per_task_keys: Vec::new(),
    };
    let Some(top) = ctx.fields(root, "", SECTIONS) else {
        return read;
    };
    let config = &mut read.config;

    if let Some(s) = section(ctx, &top, "scheduler", &SCHEDULER) {
        let c = &mut config.scheduler;
        if let Some((n, p)) = s.get("check_interval") {
            set(&mut c.check_interval, ctx.positive_duration(n, &p));
        }
        if let Some((n, p)) = s.get("distribution_window") {
            set(&mut c.distribution_window, ctx.duration(n, &p));
        }
        if let Some((n, p)) = s.get("batch_size") {
            set(&mut c.batch_size, ctx.count(n, &p, 1));
        }
    }

    if let Some(s) = section(ctx, &top, "redis", &REDIS) {
        let c = &mut config.redis;
        if let Some((n, p)) = s.get("addresses") {
            set(&mut c.addresses, addresses(ctx, n, &p));
        }
        if let Some((n, p)) = s.get("password") {
            set(&mut c.password, ctx.text(n, &p));
        }
        if let Some((n, p)) = s.get("db") {
            set(&mut c.db, ctx.count(n, &p, 0).map(i64::from));
        }
        if let Some((n, p)) = s.get("max_retries") {
            set(&mut c.max_retries, ctx.count(n, &p, 0));
        }
        let pool_size_read = s.get("pool_size").and_then(|(n, p)| ctx.count(n, &p, 1));
        set(&mut c.pool_size, pool_size_read);
        if let Some((n, p)) = s.get("prefix") {
            let prefix = ctx.text(n, &p).and_then(|text| {
                TaskTypeId::parse(text.clone())
                    .map_err(|err| ctx.error(&n.origin, &p, format!("key prefix {err}")))
                    .ok()
                    .map(|_| text)
            });
            set(&mut c.prefix, prefix);
        }
        if let Some((n, p)) = s.get("mode") {
            if matches!(&n.value, super::node::Value::Str(text) if text.trim() == "cluster") {
                ctx.error(
                    &n.origin,
                    &p,
                    "Redis Cluster is not supported: every Lua script touches several keys of \
                     one task (lock, fence, run, slot lists), which Cluster needs in one hash \
                     slot, and the spec's key names carry no hash tags; use standalone or sentinel",
                );
            } else {
                let mode = ctx.choice(
                    n,
                    &p,
                    "Redis mode",
                    &[
                        ("standalone", RedisMode::Standalone),
                        ("sentinel", RedisMode::Sentinel),
                    ],
                );
                set(&mut c.mode, mode);
            }
        }
        if let Some((n, p)) = s.get("master_name") {
            set(&mut c.master_name, ctx.text(n, &p));
        }
        match c.mode {
            RedisMode::Standalone if c.addresses.len() > 1 => {
                let (origin, path) = s
                    .get("addresses")
                    .map_or((s.node.origin.clone(), s.path.clone()), |(n, p)| {
                        (n.origin.clone(), p)
                    });
                ctx.error(
                    &origin,
                    &path,
                    format!(
                        "{} addresses need mode: sentinel (the addresses of the Sentinels, \
                         with master_name); standalone takes exactly one",
                        c.addresses.len()
                    ),
                );
            }
            RedisMode::Sentinel if c.master_name.is_empty() => {
                let (origin, path) = s
                    .get("master_name")
                    .or_else(|| s.get("mode"))
                    .map_or((s.node.origin.clone(), s.path.clone()), |(n, p)| {
                        (n.origin.clone(), p)
                    });
                ctx.error(
                    &origin,
                    &path,
                    "mode: sentinel needs master_name, the master's name in the Sentinels' \
                     configuration (sentinel monitor <name> ...)",
                );
            }
            _ => {}
        }
        if let Some((n, p)) = s.get("pool_size")
            && pool_size_read.is_some_and(|size| size != 1)
        {
            ctx.warning(
                &n.origin,
                &p,
                format!(
                    "{} is ignored: one multiplexed connection carries every call, pipelined \
                     (Redis runs commands on one thread; no measurement yet shows a pool \
                     helping); set 1 to silence this",
                    c.pool_size
                ),
            );
        }
    }

    if let Some(s) = section(ctx, &top, "queue", &QUEUE) {
        let c = &mut config.queue;
        if let Some((n, p)) = s.get("url") {
            let url = ctx.text(n, &p).and_then(|url| {
                if url.starts_with("amqp://") || url.starts_with("amqps://") {
                    Some(url)
                } else {
                    ctx.error(&n.origin, &p, "must be an amqp:// or amqps:// URL");
                    None
                }
            });
            set(&mut c.url, url);
        }
        if let Some((n, p)) = s.get("exchange") {
            let exchange = ctx.text(n, &p).filter(|e| {
                let ok = !e.is_empty() && !e.starts_with("amq.");
                if !ok {
                    ctx.error(
                        &n.origin,
                        &p,
                        "must be a non-empty name not starting with amq.",
                    );
                }
                ok
            });
            set(&mut c.exchange, exchange);
        }
        if let Some((n, p)) = s.get("durable") {
            set(&mut c.durable, ctx.boolean(n, &p));
        }
        if let Some((n, p)) = s.get("prefetch") {
            let prefetch = ctx.count(n, &p, 1).and_then(|v| {
                u16::try_from(v)
                    .map_err(|_| {
                        ctx.error(&n.origin, &p, format!("{v} is too large (at most 65535)"))
                    })
                    .ok()
            });
            set(&mut c.prefetch, prefetch);
        }
        if let Some((n, p)) = s.get("type") {
            let kind = ctx.choice(
                n,
                &p,
                "queue type",
                &[
                    ("classic", QueueType::Classic),
                    ("quorum", QueueType::Quorum),
                ],
            );
            set(&mut c.queue_type, kind);
        }
        if let Some((n, p)) = s.get("durable")
            && !c.durable
        {
            if c.queue_type == QueueType::Quorum {
                ctx.error(
                    &n.origin,
                    &p,
                    "quorum queues are always durable; remove durable: false or use type: classic",
                );
            } else {
                ctx.warning(
                    &n.origin,
                    &p,
                    "false declares transient queues and non-persistent messages: \
                     a RabbitMQ restart loses every queued job; use true in production",
                );
            }
        }
    }

    if let Some(s) = section(ctx, &top, "tasks", &TASKS) {
        let c = &mut config.tasks;
        if let Some((n, p)) = s.get("config_file")
            && let Some(file) = ctx.text(n, &p)
        {
            if file.is_empty() {
                ctx.error(&n.origin, &p, "must name a file");
            } else {
                c.config_file = PathBuf::from(file);
                read.config_file_origin = Some(n.origin.clone());
            }
        }
        if let Some((n, p)) = s.get("reload_interval") {
            set(&mut c.reload_interval, ctx.positive_duration(n, &p));
        }
    }

    if let Some(s) = section(ctx, &top, "worker", &WORKER) {
        let c = &mut config.worker;
        if let Some((n, p)) = s.get("pool_size") {
            set(&mut c.pool_size, ctx.count(n, &p, 1));
        }
        if let Some((n, p)) = s.get("shutdown_timeout") {
            set(&mut c.shutdown_timeout, ctx.duration(n, &p));
        }
    }

    if let Some(s) = section(ctx, &top, "rate_limit", &RATE_LIMIT) {
        let c = &mut config.rate_limit;
        if let Some((n, p)) = s.get("global") {
            set(&mut c.global, ctx.count(n, &p, 1));
        }
        if let Some((n, p)) = s.get("per_task")
            && let Some(map) = ctx.mapping(n, &p)
        {
            for (key, value) in map.entries() {
                let path = format!("{p}.{}", key.name);
                let id = TaskTypeId::parse(key.name.clone())
                    .map_err(|err| ctx.error(&key.origin, &path, format!("task id {err}")))
                    .ok();
                let limit = ctx.count(value, &path, 1);
                if let (Some(id), Some(limit)) = (id, limit) {
                    read.per_task_keys.push((id.clone(), key.origin.clone()));
                    c.per_task.insert(id, limit);
                }
            }
        }
    }

    if let Some(s) = section(ctx, &top, "execution", &EXECUTION) {
        let c = &mut config.execution;
        if let Some((n, p)) = s.get("timeout") {
            set(&mut c.timeout, ctx.positive_duration(n, &p));
        }
        if let Some((n, p)) = s.get("max_retries") {
            set(&mut c.max_retries, ctx.count(n, &p, 0));
        }
        if let Some((n, p)) = s.get("retry_delay") {
            set(&mut c.retry_delay, ctx.duration(n, &p));
        }
        if let Some((n, p)) = s.get("max_retry_delay") {
            set(&mut c.max_retry_delay, ctx.duration(n, &p));
        }
        if let Some((n, p)) = s.get("max_token_wait") {
            set(&mut c.max_token_wait, ctx.positive_duration(n, &p));
        }
        if let Some((n, p)) = s.get("throttles_per_attempt") {
            set(&mut c.throttles_per_attempt, ctx.count(n, &p, 0));
        }
        if let Some((n, p)) = s.get("max_throttled_age") {
            set(&mut c.max_throttled_age, ctx.positive_duration(n, &p));
        }
        if c.max_retry_delay < c.retry_delay {
            let (origin, path) = s
                .get("max_retry_delay")
                .or_else(|| s.get("retry_delay"))
                .map_or((s.node.origin.clone(), s.path.clone()), |(n, p)| {
                    (n.origin.clone(), p)
                });
            ctx.error(
                &origin,
                &path,
                format!(
                    "max_retry_delay ({}) is shorter than retry_delay ({})",
                    humantime::format_duration(c.max_retry_delay),
                    humantime::format_duration(c.retry_delay)
                ),
            );
        }
    }

    if let Some(s) = section(ctx, &top, "monitoring", &MONITORING) {
        let c = &mut config.monitoring;
        if let Some((n, p)) = s.get("metrics_interval") {
            set(&mut c.metrics_interval, ctx.positive_duration(n, &p));
        }
        if let Some((n, p)) = s.get("log_level") {
            let level = ctx.text(n, &p).and_then(|level| {
                match tracing_subscriber::EnvFilter::try_new(&level) {
                    Ok(_) => Some(level),
                    Err(err) => {
                        ctx.error(
                            &n.origin,
                            &p,
                            format!(
                                "{level:?} is not a log level or filter (trace, debug, info, warn, error): {err}"
                            ),
                        );
                        None
                    }
                }
            });
            set(&mut c.log_level, level);
        }
        if let Some((n, p)) = s.get("log_format") {
            let format = ctx.choice(
                n,
                &p,
                "log format",
                &[("pretty", LogFormat::Pretty), ("json", LogFormat::Json)],
            );
            set(&mut c.log_format, format);
        }
        if let Some((n, p)) = s.get("metrics_retention") {
            set(&mut c.metrics_retention, ctx.positive_duration(n, &p));
        }
        if let Some((n, p)) = s.get("result_retention") {
            set(&mut c.result_retention, ctx.positive_duration(n, &p));
        }
        if let Some((n, p)) = s.get("record_pending") {
            set(&mut c.record_pending, ctx.boolean(n, &p));
        }
    }

    if let Some(s) = section(ctx, &top, "api", &API) {
        let c = &mut config.api;
        if let Some((n, p)) = s.get("bind") {
            let bind = ctx.text(n, &p).and_then(|text| {
                text.parse::<SocketAddr>()
                    .map_err(|_| {
                        ctx.error(
                            &n.origin,
                            &p,
                            format!(
                                "{text:?} is not an address; expected IP:PORT, e.g. 127.0.0.1:8080"
                            ),
                        )
                    })
                    .ok()
            });
            set(&mut c.bind, bind);
        }
        if let Some((n, p)) = s.get("token")
            && !matches!(n.value, super::node::Value::Null)
        {
            match ctx.text(n, &p) {
                Some(token) if token.is_empty() => {
                    ctx.error(&n.origin, &p, "must not be empty (omit it to disable)");
                }
                Some(token) => c.token = Some(token),
                None => {}
            }
        }
        if let Some((n, p)) = s.get("protect_reads") {
            set(&mut c.protect_reads, ctx.boolean(n, &p));
        }
        if let Some((n, p)) = s.get("sink") {
            set(&mut c.sink, ctx.boolean(n, &p));
        }
        if let Some((n, p)) = s.get("demo_users") {
            set(&mut c.demo_users, ctx.count(n, &p, 0));
        }
    }

    if let Some((n, p)) = top.get("backend") {
        let backend = ctx.choice(
            n,
            &p,
            "backend",
            &[
                ("external", Backend::External),
                ("embedded", Backend::Embedded),
            ],
        );
        set(&mut config.backend, backend);
    }

    read
}

const SCHEDULER: [&str; 3] = ["check_interval", "distribution_window", "batch_size"];
const REDIS: [&str; 8] = [
    "addresses",
    "password",
    "db",
    "max_retries",
    "pool_size",
    "prefix",
    "mode",
    "master_name",
];
const QUEUE: [&str; 5] = ["url", "exchange", "durable", "prefetch", "type"];
const TASKS: [&str; 2] = ["config_file", "reload_interval"];
const WORKER: [&str; 2] = ["pool_size", "shutdown_timeout"];
const RATE_LIMIT: [&str; 2] = ["global", "per_task"];
const EXECUTION: [&str; 7] = [
    "timeout",
    "max_retries",
    "retry_delay",
    "max_retry_delay",
    "max_token_wait",
    "throttles_per_attempt",
    "max_throttled_age",
];
const MONITORING: [&str; 6] = [
    "metrics_interval",
    "log_level",
    "log_format",
    "metrics_retention",
    "result_retention",
    "record_pending",
];
const API: [&str; 5] = ["bind", "token", "protect_reads", "sink", "demo_users"];

fn section<'n>(
    ctx: &mut Ctx<'_>,
    top: &Fields<'n>,
    name: &str,
    known: &[&str],
) -> Option<Fields<'n>> {
    let (node, path) = top.get(name)?;
    ctx.fields(node, &path, known)
}

/// `host:port` entries: a YAML list, or comma-separated text from an
/// environment override.
fn addresses(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Vec<String>> {
    use super::node::Value;
    let mut found = Vec::new();
    match &node.value {
        Value::Seq(items) => {
            for (index, item) in items.iter().enumerate() {
                let item_path = format!("{path}[{index}]");
                if let Some(address) = ctx.text(item, &item_path) {
                    found.push((address, item.origin.clone(), item_path));
                }
            }
        }
        Value::Str(text) if node.origin.is_env() => {
            for (index, part) in text.split(',').enumerate() {
                found.push((
                    part.trim().to_owned(),
                    node.origin.clone(),
                    format!("{path}[{index}]"),
                ));
            }
        }
        other => {
            ctx.error(
                &node.origin,
                path,
                format!("expected a list of host:port, found {}", other.kind()),
            );
            return None;
        }
    }
    if found.is_empty() {
        ctx.error(&node.origin, path, "must name at least one host:port");
        return None;
    }
    let mut ok = true;
    for (address, origin, item_path) in &found {
        let valid = address
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid {
            ctx.error(
                origin,
                item_path,
                format!("{address:?} is not host:port (e.g. localhost:6379)"),
            );
            ok = false;
        }
    }
    ok.then(|| found.into_iter().map(|(a, _, _)| a).collect())
}
