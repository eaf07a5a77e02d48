//! Builds the application: backends, actors and the HTTP server, and stops
//! them gracefully.
//!
//! `backend: embedded` runs on the in-process store and broker (one
//! process, nothing installed); `external` on Redis and RabbitMQ. `--role`
//! picks the scheduler side, the worker side or both; the API serves the
//! routes of the sides that run.
//!
//! Shutdown (SIGTERM/SIGINT): the HTTP server stops, the dispatcher stops
//! taking jobs, in-flight jobs get up to `worker.shutdown_timeout` to
//! finish, the rest are requeued, metrics are flushed, and the process
//! exits 0. SIGHUP re-reads the task definitions.

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
    scheduler::{ReloadTasks, TaskSource, Trigger},
    store::{
        Keys, PreferenceWrite, StateStore,
        memory::MemoryStore,
        redis::{RedisOptions, RedisStore},
    },
    supervisor::{Pipeline, PipelineConfig, PipelineDeps},
};
use anyhow::Context;
use chrono::Utc;

use crate::{
    cli::Role,
    configuration::{self, Backend, QueueType, RedisConfig, ServiceConfig},
    routes::{self, auth::ApiToken, sink::SinkCounts, state::ApiState},
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
                .map_err(|errors| errors.problems.iter().map(|p| p.to_string()).collect())
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
                .map_err(|errors| errors.problems.iter().map(|p| p.to_string()).collect())
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
        let (store, broker) = connect_backends(&config).await?;
        let catalog = TaskCatalog::new(tasks);
        let pipeline = Pipeline::start(
            pipeline_config(&config, role),
            PipelineDeps {
                store: store.clone(),
                broker,
                catalog: catalog.clone(),
                clock: clock.clone(),
                task_source,
            },
        )
        .await
        .context("starting the actors")?;

        listen_for_sighup(pipeline.scheduler.clone());
        let state = ApiState {
            started: Instant::now(),
            store: store.clone(),
            catalog: catalog.clone(),
            clock: clock.clone(),
            scheduler: pipeline.scheduler.clone(),
            distribution: pipeline.distribution.clone(),
            metrics: pipeline.metrics.clone(),
            worker: pipeline.worker.clone(),
            reload_health: pipeline.reload_health.clone(),
        };
        if config.backend == Backend::Embedded && config.api.demo_users > 0 {
            seed_demo_users(&state, config.api.demo_users).await?;
        }

        let state = web::Data::new(state);
        let store_data = web::Data::new(store);
        let catalog_data = web::Data::new(catalog);
        let token = web::Data::new(ApiToken(config.api.token.clone()));
        let sink = config
            .api
            .sink
            .then(|| web::Data::new(SinkCounts::default()));
        let server = HttpServer::new(move || {
            let mut app = App::new()
                .app_data(state.clone())
                .app_data(store_data.clone())
                .app_data(catalog_data.clone())
                .app_data(token.clone())
                .app_data(routes::error::json_config())
                .app_data(routes::error::path_config())
                .service(routes::health::health)
                .configure(routes::preferences::configure);
            if role.schedules() {
                app = app.configure(routes::schedule::configure);
            }
            if role.works() {
                app = app.service(routes::worker::stats);
            }
            if let Some(sink) = &sink {
                app = app
                    .app_data(sink.clone())
                    .configure(routes::sink::configure);
            }
            app
        })
        .shutdown_timeout(5)
        .disable_signals()
        .bind(bind)?;
        let address = server.addrs()[0];
        Ok(Application {
            address,
            server: server.run(),
            pipeline,
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
        },
        metrics_interval: config.monitoring.metrics_interval,
    }
}

/// The store and broker the configuration asks for.
async fn connect_backends(
    config: &ServiceConfig,
) -> anyhow::Result<(Arc<dyn StateStore>, Arc<dyn JobBroker>)> {
    Ok(match config.backend {
        Backend::Embedded => (Arc::new(MemoryStore::new()), Arc::new(MemoryBroker::new())),
        Backend::External => {
            let options = RedisOptions {
                metrics_retention: config.monitoring.metrics_retention,
                ..RedisOptions::default()
            };
            let keys = Keys::new(config.redis.prefix.clone());
            let store = RedisStore::connect(&redis_url(&config.redis), keys, options)
                .await
                .context("connecting to Redis")?;
            let options = AmqpOptions {
                exchange: config.queue.exchange.clone(),
                queue_type: match config.queue.queue_type {
                    QueueType::Classic => AmqpQueueType::Classic,
                    QueueType::Quorum => AmqpQueueType::Quorum,
                },
                prefetch: config.queue.prefetch,
                ..AmqpOptions::default()
            };
            let broker = AmqpBroker::connect(&amqp_url(&config.queue.url), options)
                .await
                .context("connecting to RabbitMQ")?;
            (Arc::new(store), Arc::new(broker))
        }
    })
}

/// `redis://[:password@]host:port/db` of the first configured address.
pub fn redis_url(redis: &RedisConfig) -> String {
    let address = redis
        .addresses
        .first()
        .map_or("localhost:6379", String::as_str);
    let auth = if redis.password.is_empty() {
        String::new()
    } else {
        format!(":{}@", redis.password)
    };
    format!("redis://{auth}{address}/{}", redis.db)
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

/// Re-reads the task definitions on every SIGHUP (a process without the
/// scheduler side ignores it rather than dying of it).
fn listen_for_sighup(scheduler: Option<actix::Addr<actors::scheduler::SchedulerActor>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // Registered before returning, so a SIGHUP never meets the default
        // action (terminate) once the API answers.
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("SIGHUP handler not installed; reloads only by interval");
            return;
        };
        actix_rt::spawn(async move {
            while hangups.recv().await.is_some() {
                if let Some(scheduler) = &scheduler {
                    tracing::info!("SIGHUP: reloading task definitions");
                    scheduler.do_send(ReloadTasks);
                }
            }
        });
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
