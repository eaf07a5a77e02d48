//! Builds the application: backends, actors and the HTTP server.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Instant};

use actix_web::{App, HttpServer, dev::Server, web};
use actors::{
    catalog::TaskCatalog,
    store::{
        Keys, StateStore,
        memory::MemoryStore,
        redis::{RedisOptions, RedisStore},
    },
};
use anyhow::Context;

use crate::{
    cli::Role,
    configuration::{Backend, RedisConfig, ServiceConfig, TaskFile},
    routes::{self, auth::ApiToken, health::StartedAt},
};

/// A built, not yet running, service.
pub struct Application {
    address: SocketAddr,
    server: Server,
}

impl Application {
    /// Binds the API (port 0 picks a free port) and starts what `role` asks for.
    pub async fn build(
        config: ServiceConfig,
        role: Role,
        bind: SocketAddr,
    ) -> anyhow::Result<Application> {
        let _ = role;
        let started = web::Data::new(StartedAt(Instant::now()));
        let store = web::Data::new(connect_store(&config).await?);
        let catalog = web::Data::new(load_catalog(&config.tasks.config_file)?);
        let token = web::Data::new(ApiToken(config.api.token.clone()));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(started.clone())
                .app_data(store.clone())
                .app_data(catalog.clone())
                .app_data(token.clone())
                .app_data(routes::error::json_config())
                .app_data(routes::error::path_config())
                .service(routes::health::health)
                .configure(routes::preferences::configure)
        })
        .bind(bind)?;
        let address = server.addrs()[0];
        Ok(Application {
            address,
            server: server.run(),
        })
    }

    /// The address the API listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves until the server stops (SIGTERM/SIGINT).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.server.await?;
        Ok(())
    }
}

/// The state store the configuration asks for.
async fn connect_store(config: &ServiceConfig) -> anyhow::Result<Arc<dyn StateStore>> {
    Ok(match config.backend {
        Backend::Embedded => Arc::new(MemoryStore::new()),
        Backend::External => {
            let options = RedisOptions {
                metrics_retention: config.monitoring.metrics_retention,
                ..RedisOptions::default()
            };
            let keys = Keys::new(config.redis.prefix.clone());
            let store = RedisStore::connect(&redis_url(&config.redis), keys, options)
                .await
                .context("connecting to Redis")?;
            Arc::new(store)
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

/// The task definitions of `path`; none when the file does not exist.
pub fn load_catalog(path: &Path) -> anyhow::Result<TaskCatalog> {
    if !path.exists() {
        tracing::warn!(path = %path.display(), "no task file: no tasks defined");
        return Ok(TaskCatalog::default());
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: TaskFile =
        serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(TaskCatalog::new(file.tasks))
}
