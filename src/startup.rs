//! Builds the application: backends, actors and the HTTP server, and stops
//! them gracefully.
//!
//! `backend: embedded` runs on the in-process store and broker (one
//! process, nothing installed); `external` on Redis and RabbitMQ. `--role`
//! picks the scheduler side, the worker side or both; the API serves the
//! routes of the sides that run.
//!
//! At start-up a backend that cannot be reached is waited for (containers
//! start in any order): the first failure is logged once with the address
//! and what to do, the next attempt comes after a doubling pause (at most
//! [`CONNECT_BACKOFF_MAX`]).
//!
//! Shutdown (SIGTERM/SIGINT): the scheduler stops ticking and triggers are
//! refused (503) at once, the dispatcher stops taking jobs, in-flight jobs
//! get up to `worker.shutdown_timeout` to finish, the rest are requeued,
//! metrics are flushed, the HTTP server stops and the process exits 0.
//! SIGHUP re-reads the task definitions, in every role.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use actix_web::{App, HttpServer, dev::Server, web};
use actors::{
    broker::{
        JobBroker,
        amqp::{AmqpBroker, AmqpOptions, QueueType as AmqpQueueType},
        memory::MemoryBroker,
    },
    catalog::TaskCatalog,
    clock::{SharedClock, SystemClock},
    domain::{TaskType, TaskTypeId, UserId},
    executor::ExecutionSettings,
    health::{Dependency, Quarantine},
    pipeline::{Pipeline, PipelineConfig, PipelineDeps, TaskReloader},
    scheduler::{ReloadProblems, TaskSource, Trigger},
    store::{
        Keys, PreferenceWrite, StateStore, Stores,
        dead_letters::{DeadLetterStore, MemoryDeadLetters},
        durations::DurationStore,
        memory::MemoryStore,
        redis::{RedisOptions, RedisStore, RedisTarget},
        replicas::ReplicaStore,
        results::JobResultStore,
    },
};
use anyhow::Context;
use chrono::Utc;

use crate::{
    Role,
    configuration::{self, Backend, QueueType, RedisConfig, RedisMode, ServiceConfig},
    routes::{
        self,
        auth::{ApiToken, ProtectReads},
        sink::SinkCounts,
        state::ApiState,
    },
    ui,
};

/// Everything [`Application::build_with`] needs.
pub struct Setup {
    /// The service configuration.
    pub config: ServiceConfig,
    /// The task definitions to start with.
    pub tasks: Vec<TaskType>,
    /// Where reloads read the task definitions; `None` disables reloads.
    pub task_source: Option<TaskSource>,
    /// Which sides run.
    pub role: Role,
    /// Address of the API (port 0 picks a free port).
    pub bind: SocketAddr,
    /// Where the scheduler reads "now".
    pub clock: SharedClock,
}

/// A built, running service.
pub struct Application {
    address: SocketAddr,
    server: Server,
    pipeline: Pipeline,
    /// The SIGHUP listener, ended at shutdown.
    hangups: Option<actix_rt::task::JoinHandle<()>>,
}

impl Application {
    /// Builds from a service configuration whose `tasks.config_file` names
    /// the task definitions (none when the file does not exist).
    pub async fn build(
        config: ServiceConfig,
        role: Role,
        bind: SocketAddr,
    ) -> anyhow::Result<Application> {
        let path = config.tasks.config_file.clone();
        let tasks = read_tasks(&path, &config)?;
        let rate_limit = config.rate_limit.clone();
        let source: TaskSource = Arc::new(move || {
            configuration::load_tasks(&path, &rate_limit)
                .map(|(tasks, _)| tasks)
                .map_err(ReloadProblems::from)
        });
        Application::build_with(Setup {
            config,
            tasks,
            task_source: Some(source),
            role,
            bind,
            clock: Arc::new(SystemClock),
        })
        .await
    }

    /// Builds from a loaded configuration; reloads re-read `paths`.
    pub async fn build_loaded(
        loaded: configuration::LoadedConfig,
        paths: Vec<PathBuf>,
        role: Role,
        bind: SocketAddr,
    ) -> anyhow::Result<Application> {
        let source: TaskSource = Arc::new(move || {
            configuration::load(&paths)
                .map(|loaded| loaded.tasks)
                .map_err(ReloadProblems::from)
        });
        Application::build_with(Setup {
            config: loaded.service,
            tasks: loaded.tasks,
            task_source: Some(source),
            role,
            bind,
            clock: Arc::new(SystemClock),
        })
        .await
    }

    /// Connects the backends, starts the actor tree for the role, binds
    /// the API.
    pub async fn build_with(setup: Setup) -> anyhow::Result<Application> {
        let Setup {
            config,
            tasks,
            task_source,
            role,
            bind,
            clock,
        } = setup;
        check_exposure(bind, config.api.token.as_deref())?;
        let quarantine = Quarantine::default();
        let Backends {
            store,
            dead_letters,
            durations,
            results,
            replicas,
            broker,
            dependencies,
        } = connect_backends(&config, &quarantine).await?;
        let api_broker = broker.clone();
        let catalog = TaskCatalog::new(tasks);
        let pipeline = Pipeline::start(
            pipeline_config(&config, role),
            PipelineDeps {
                stores: Stores::new(store.clone()),
                broker,
                catalog: catalog.clone(),
                clock: clock.clone(),
                task_source,
                quarantine,
                dead_letters: dead_letters.clone(),
                results: results.clone(),
            },
        )
        .await
        .context("starting the actors")?;

        let hangups = listen_for_sighup(pipeline.reloader());
        let state = ApiState {
            started: Instant::now(),
            store: store.clone(),
            catalog: catalog.clone(),
            clock: clock.clone(),
            scheduler: pipeline.scheduler.clone(),
            distribution: pipeline.distribution.clone(),
            metrics: pipeline.metrics.clone(),
            families: pipeline.families.clone(),
            broker: api_broker,
            dead_letters,
            durations,
            results,
            replicas,
            worker: pipeline.worker.clone(),
            reload_health: pipeline.reload_health.clone(),
            dependencies,
            board: pipeline.board.clone(),
            quarantine: pipeline.quarantine.clone(),
            stopping: pipeline.stopping.clone(),
            pauses: pipeline.pauses.clone(),
        };
        if config.backend == Backend::Embedded && config.api.demo_users > 0 {
            seed_demo_users(&state, config.api.demo_users).await?;
        }

        let state = web::Data::new(state);
        let beacon_state = state.clone();
        let store_data = web::Data::new(store);
        let catalog_data = web::Data::new(catalog);
        let token = web::Data::new(ApiToken(config.api.token.clone()));
        let protect_reads = web::Data::new(ProtectReads(config.api.protect_reads));
        let scrape_cache = web::Data::new(routes::metrics::ScrapeCache::default());
        let throughput = std::sync::Arc::new(ui::throughput::Throughput::default());
        actix_rt::spawn(ui::throughput::sample(
            state.metrics.clone(),
            throughput.clone(),
        ));
        let throughput = web::Data::from(throughput);
        let ui_sessions = web::Data::new(ui::session::UiSessions::default());
        let sink = config
            .api
            .sink
            .then(|| web::Data::new(SinkCounts::default()));
        let sides = routes::api::Sides {
            scheduler: role.schedules(),
            worker: role.works(),
            sink: sink.is_some(),
        };
        let server = HttpServer::new(move || {
            let mut app = App::new()
                .app_data(state.clone())
                .app_data(store_data.clone())
                .app_data(catalog_data.clone())
                .app_data(token.clone())
                .app_data(protect_reads.clone())
                .app_data(scrape_cache.clone())
                .app_data(throughput.clone())
                .app_data(ui_sessions.clone())
                .app_data(routes::error::json_config())
                .app_data(routes::error::path_config())
                .wrap(actix_web::middleware::from_fn(routes::auth::guard_reads))
                .wrap(routes::error::json_errors())
                .default_service(web::to(routes::error::no_route));
            if let Some(sink) = &sink {
                app = app.app_data(sink.clone());
            }
            app.configure(|config| routes::api::configure(config, sides))
                .configure(ui::configure)
        })
        .shutdown_timeout(5)
        .disable_signals()
        .bind(bind)?;
        let address = server.addrs()[0];
        actix_rt::spawn(crate::beacon::run(
            beacon_state,
            role,
            address,
            config.monitoring.metrics_interval,
        ));
        Ok(Application {
            address,
            server: server.run(),
            pipeline,
            hangups,
        })
    }

    /// The address the API listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The executor pool (empty without the worker side).
    pub fn executors(&self) -> Vec<actix::Addr<actors::executor::ExecutorActor>> {
        self.pipeline.executors.clone()
    }

    /// Serves until SIGTERM/SIGINT, then shuts down gracefully: the
    /// workers drain first (the API keeps answering `/health` meanwhile),
    /// then the API stops.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let mut server = self.server;
        let served = tokio::select! {
            served = &mut server => Some(served),
            () = shutdown_signal() => None,
        };
        tracing::info!("shutting down: draining the workers");
        if let Some(hangups) = &self.hangups {
            hangups.abort();
        }
        self.pipeline.shutdown().await;
        match served {
            Some(served) => served?,
            None => {
                // The server future runs its own stop command: poll both.
                let (_, served) = futures::join!(handle.stop(true), server);
                served?;
            }
        }
        tracing::info!("taskqueue stopped");
        Ok(())
    }
}

/// Maps the service configuration onto the actor tree's.
pub fn pipeline_config(config: &ServiceConfig, role: Role) -> PipelineConfig {
    let window = config.scheduler.distribution_window;
    PipelineConfig {
        scheduler: role.schedules(),
        worker: role.works(),
        check_interval: config.scheduler.check_interval,
        distribution_window: window,
        batch_size: config.scheduler.batch_size as usize,
        reload_interval: config.tasks.reload_interval,
        lock_ttl: Duration::from_secs(30).max(config.scheduler.check_interval * 2),
        pool_size: config.worker.pool_size as usize,
        arbiters: 0,
        prefetch: config.queue.prefetch,
        shutdown_timeout: config.worker.shutdown_timeout,
        global_rate: Some(config.rate_limit.global).filter(|r| *r > 0),
        per_task_rate: config.rate_limit.per_task.clone(),
        execution: ExecutionSettings {
            timeout: config.execution.timeout,
            max_retries: config.execution.max_retries,
            retry_delay: config.execution.retry_delay,
            max_retry_delay: config.execution.max_retry_delay,
            success_ttl: (window * 2).max(Duration::from_secs(3600)),
            max_token_wait: config.execution.max_token_wait,
            throttles_per_attempt: config.execution.throttles_per_attempt,
            max_throttled_age: config.execution.max_throttled_age,
            result_retention: config.monitoring.result_retention,
            record_pending: config.monitoring.record_pending,
        },
        metrics_interval: config.monitoring.metrics_interval,
    }
}

/// First pause after a failed connect at start-up.
const CONNECT_BACKOFF_INITIAL: Duration = Duration::from_millis(250);
/// Longest pause between connect attempts at start-up.
pub const CONNECT_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The backends the configuration asks for, and what `/health` probes.
struct Backends {
    store: Arc<dyn StateStore>,
    dead_letters: Arc<dyn DeadLetterStore>,
    durations: Arc<dyn DurationStore>,
    results: Arc<dyn JobResultStore>,
    replicas: Arc<dyn ReplicaStore>,
    broker: Arc<dyn JobBroker>,
    dependencies: Vec<Arc<dyn Dependency>>,
}

/// Calls `connect` until it succeeds, pausing a doubling delay in
/// between. The first failure is logged once, naming the address and what
/// to do; later ones only at debug level, and the success once reached.
async fn wait_for<T, E, F, Fut>(what: &str, address: &str, mut connect: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut delay = CONNECT_BACKOFF_INITIAL;
    let mut attempt = 1u32;
    loop {
        match connect().await {
            Ok(connected) => {
                if attempt > 1 {
                    tracing::info!(%address, attempts = attempt, "{what} reached");
                }
                return connected;
            }
            Err(err) => {
                let error = without_repeats(&err.to_string());
                if attempt == 1 {
                    tracing::warn!(
                        %address,
                        %error,
                        "{what} at {address} cannot be reached; waiting for it. Start it (scripts/services.sh start runs Redis and RabbitMQ on this machine), point the configuration at yours, or run `taskqueue serve` with no configuration for the in-memory quick start"
                    );
                } else {
                    tracing::debug!(%address, attempt, retry_in_ms = delay.as_millis() as u64, %error, "still waiting for {what}");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(CONNECT_BACKOFF_MAX);
                attempt += 1;
            }
        }
    }
}

/// `text` with consecutive repeats of a `: `-separated part dropped (error
/// chains often say the same cause three times).
fn without_repeats(text: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in text.split(": ") {
        if parts.last().is_none_or(|last| last.trim() != part.trim()) {
            parts.push(part);
        }
    }
    parts.join(": ")
}

/// The store and broker the configuration asks for, waiting for each to
/// be reachable.
async fn connect_backends(
    config: &ServiceConfig,
    quarantine: &Quarantine,
) -> anyhow::Result<Backends> {
    Ok(match config.backend {
        Backend::Embedded => {
            let store = Arc::new(MemoryStore::new());
            Backends {
                durations: store.clone(),
                results: store.clone(),
                replicas: store.clone(),
                store,
                dead_letters: Arc::new(MemoryDeadLetters::default()),
                broker: Arc::new(MemoryBroker::new()),
                dependencies: Vec::new(),
            }
        }
        Backend::External => {
            let options = redis_options(config);
            let target = redis_target(&config.redis);
            let address = config.redis.addresses.join(",");
            let store = wait_for("Redis", &address, || {
                RedisStore::connect_to(
                    &target,
                    Keys::new(config.redis.prefix.clone()),
                    options.clone(),
                )
            })
            .await
            .with_quarantine(quarantine.clone());
            let options = amqp_options(config);
            let url = amqp_url(&config.queue.url);
            let address = amqp_address(&url);
            let broker = wait_for("RabbitMQ", &address, || {
                AmqpBroker::connect(&url, options.clone())
            })
            .await;
            let store = Arc::new(store);
            let broker = Arc::new(broker);
            Backends {
                dependencies: vec![store.clone(), broker.clone()],
                dead_letters: store.clone(),
                durations: store.clone(),
                results: store.clone(),
                replicas: store.clone(),
                store,
                broker,
            }
        }
    })
}

/// `host:port/vhost` of an AMQP URL, without its credentials (for logs).
fn amqp_address(url: &str) -> String {
    let rest = url.find("://").map_or(url, |at| &url[at + 3..]);
    rest.rsplit_once('@')
        .map_or(rest, |(_, address)| address)
        .to_owned()
}

/// Refuses to serve the API beyond loopback without `api.token`: anyone
/// who can reach it could change preferences and trigger runs.
pub fn check_exposure(bind: SocketAddr, token: Option<&str>) -> anyhow::Result<()> {
    if bind.ip().is_loopback() || token.is_some_and(|token| !token.is_empty()) {
        return Ok(());
    }
    anyhow::bail!(
        "the API would listen on {bind}, beyond loopback, without api.token: \
         set api.token (TASKQUEUE_API__TOKEN) or bind to 127.0.0.1"
    )
}

/// The Redis client's tuning from the configuration.
pub fn redis_options(config: &ServiceConfig) -> RedisOptions {
    RedisOptions {
        metrics_retention: config.monitoring.metrics_retention,
        max_retries: config.redis.max_retries as usize,
        ..RedisOptions::default()
    }
}

/// The AMQP broker's settings from the configuration.
pub fn amqp_options(config: &ServiceConfig) -> AmqpOptions {
    AmqpOptions {
        exchange: config.queue.exchange.clone(),
        queue_type: match config.queue.queue_type {
            QueueType::Classic => AmqpQueueType::Classic,
            QueueType::Quorum => AmqpQueueType::Quorum,
        },
        prefetch: config.queue.prefetch,
        durable: config.queue.durable,
        ..AmqpOptions::default()
    }
}

/// The server `redis` names: its one address (`standalone`), or the
/// master its Sentinels name (`sentinel`).
pub fn redis_target(redis: &RedisConfig) -> RedisTarget {
    match redis.mode {
        RedisMode::Standalone => RedisTarget::Url(redis_url(redis)),
        RedisMode::Sentinel => RedisTarget::Sentinel {
            sentinels: redis
                .addresses
                .iter()
                .filter_map(|address| {
                    let (host, port) = address.rsplit_once(':')?;
                    Some((host.to_owned(), port.parse().ok()?))
                })
                .collect(),
            master_name: redis.master_name.clone(),
            password: redis.password.clone(),
            db: redis.db,
        },
    }
}

/// `redis://[:password@]host:port/db` of the first configured address, the
/// password percent-encoded (every byte but the URL's unreserved ones).
pub fn redis_url(redis: &RedisConfig) -> String {
    let address = redis
        .addresses
        .first()
        .map_or("localhost:6379", String::as_str);
    let auth = if redis.password.is_empty() {
        String::new()
    } else {
        format!(":{}@", percent_encode(&redis.password))
    };
    format!("redis://{auth}{address}/{}", redis.db)
}

/// `text` with every byte outside `A-Z a-z 0-9 - . _ ~` written `%XX`.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// `url` with an empty vhost (`amqp://host:5672/`, as the spec's example
/// writes it) read as the default vhost `/`: RabbitMQ has no vhost named
/// "".
pub fn amqp_url(url: &str) -> String {
    let authority_start = url.find("://").map_or(0, |at| at + 3);
    match url[authority_start..].find('/') {
        Some(slash) if authority_start + slash + 1 == url.len() => format!("{url}%2f"),
        _ => url.to_owned(),
    }
}

/// The task definitions of `path`; none when the file does not exist.
fn read_tasks(path: &Path, config: &ServiceConfig) -> anyhow::Result<Vec<TaskType>> {
    if !path.exists() {
        tracing::warn!(path = %path.display(), "no task file: no tasks defined");
        return Ok(Vec::new());
    }
    match configuration::load_tasks(path, &config.rate_limit) {
        Ok((tasks, _)) => Ok(tasks),
        Err(errors) => {
            let problems: Vec<String> = errors.problems.iter().map(|p| p.to_string()).collect();
            anyhow::bail!("{}", problems.join("\n"))
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Re-reads the task definitions on every SIGHUP, in every role. The
/// listener is returned so that shutdown can end it.
fn listen_for_sighup(reloader: TaskReloader) -> Option<actix_rt::task::JoinHandle<()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // Registered before returning, so a SIGHUP never meets the default
        // action (terminate) once the API answers.
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("SIGHUP handler not installed; reloads only by interval");
            return None;
        };
        Some(actix_rt::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading task definitions");
                if !reloader.reload() {
                    return;
                }
            }
        }))
    }
    #[cfg(not(unix))]
    {
        let _ = reloader;
        None
    }
}

/// Creates `count` example users (`user_1` ..) with every task enabled and
/// triggers each task once for them, so the first runs come within one
/// distribution window of start.
async fn seed_demo_users(state: &ApiState, count: u32) -> anyhow::Result<()> {
    let now = Utc::now();
    let tasks = state.catalog.snapshot();
    let users: Vec<UserId> = (1..=count)
        .map(|n| UserId::parse(format!("user_{n}")))
        .collect::<Result<_, _>>()?;
    let writes: Vec<PreferenceWrite> = users
        .iter()
        .flat_map(|user| {
            tasks.keys().map(move |task: &TaskTypeId| {
                PreferenceWrite::new(user.clone(), task.clone(), true, None, now)
            })
        })
        .collect();
    state.store.write_preferences(&writes).await?;
    let Some(scheduler) = &state.scheduler else {
        return Ok(());
    };
    for task in tasks.values() {
        let accepted = scheduler
            .send(Trigger {
                task: task.clone(),
                users: Some(users.clone()),
                immediate: false,
                idempotency_key: None,
                correlation_id: Some("quickstart".to_owned()),
            })
            .await??;
        tracing::info!(task = %task.id, jobs = accepted.jobs_created, "quick start: example users triggered");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        assert_eq!(amqp_url(input), expected, "input {input:?}");
    }

    fn redis_with_password(password: &str) -> RedisConfig {
        RedisConfig {
            addresses: vec!["cache:6380".to_owned()],
            password: password.to_owned(),
            db: 2,
            ..RedisConfig::default()
        }
    }

    #[test]
    fn the_redis_password_is_percent_encoded() {
        let cases = [
            ("", "redis://cache:6380/2"),
            ("plain-Pass_1.~", "redis://:plain-Pass_1.~@cache:6380/2"),
            (
                "p@ss:w/rd#?%",
                "redis://:p%40ss%3Aw%2Frd%23%3F%25@cache:6380/2",
            ),
            ("é ", "redis://:%C3%A9%20@cache:6380/2"),
        ];
        for (password, expected) in cases {
            let url = redis_url(&redis_with_password(password));
            assert_eq!(url, expected, "password {password:?}");
            let parsed = url::Url::parse(&url).unwrap();
            let decoded = parsed.password().map(percent_decode).unwrap_or_default();
            assert_eq!(decoded, password, "round trip of {password:?}");
        }
    }

    fn percent_decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn repeated_causes_are_said_once() {
        let cases = [
            (
                "redis: Connection refused (os error 111): Connection refused (os error 111): Connection refused (os error 111)",
                "redis: Connection refused (os error 111)",
            ),
            ("amqp: timeout", "amqp: timeout"),
            ("a: b: a", "a: b: a"),
        ];
        for (input, expected) in cases {
            assert_eq!(without_repeats(input), expected, "{input}");
        }
    }

    #[test]
    fn a_non_loopback_bind_needs_a_token() {
        let cases = [
            ("127.0.0.1:8080", None, true),
            ("[::1]:8080", None, true),
            ("0.0.0.0:8080", None, false),
            ("0.0.0.0:8080", Some(""), false),
            ("0.0.0.0:8080", Some("s3cret"), true),
            ("10.0.0.5:8080", None, false),
        ];
        for (bind, token, allowed) in cases {
            let bind: SocketAddr = bind.parse().unwrap();
            assert_eq!(
                check_exposure(bind, token).is_ok(),
                allowed,
                "{bind} with {token:?}"
            );
        }
    }

    #[test]
    fn an_empty_vhost_means_the_default_one() {
        check(
            "amqp://guest:guest@localhost:5672/",
            "amqp://guest:guest@localhost:5672/%2f",
        );
        check(
            "amqp://guest:guest@localhost:5672/%2f",
            "amqp://guest:guest@localhost:5672/%2f",
        );
        check("amqp://h:5672/jobs", "amqp://h:5672/jobs");
        check("amqp://h:5672", "amqp://h:5672");
    }
}
