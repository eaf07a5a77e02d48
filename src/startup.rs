//! Builds the application: backends, actors and the HTTP server.

use std::{net::SocketAddr, time::Instant};

use actix_web::{App, HttpServer, dev::Server, web};

use crate::{
    cli::Role,
    configuration::ServiceConfig,
    routes::{self, health::StartedAt},
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
        let _ = (&config, role);
        let started = web::Data::new(StartedAt(Instant::now()));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(started.clone())
                .app_data(routes::error::json_config())
                .app_data(routes::error::path_config())
                .service(routes::health::health)
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
