//! `GET /health`.

use std::time::Instant;

use actix_web::{HttpResponse, get, web};
use serde_json::json;

/// When the process started, for `uptime`.
#[derive(Debug, Clone, Copy)]
pub struct StartedAt(pub Instant);

/// Liveness and a summary of the service's state.
#[get("/health")]
pub async fn health(started: web::Data<StartedAt>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "status": "healthy",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime": started.0.elapsed().as_secs(),
    }))
}
