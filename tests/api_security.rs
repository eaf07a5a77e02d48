//! The API's security edges, on the real Redis and RabbitMQ: with
//! `api.protect_reads` the read endpoints need the bearer token too (but
//! `/health`, for probes); every error, routed or not, is the API's JSON
//! error body (an empty path segment, an unknown route, a wrong method).

use crate::support;

use std::sync::Arc;

use actors::clock::SystemClock;
use reqwest::Method;
use serde_json::{Value, json};
use support::*;

/// (status, content type, body) of a request with an optional token.
async fn call(
    address: std::net::SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> (u16, String, Value) {
    let mut request = reqwest::Client::new().request(method, format!("http://{address}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, content_type, body)
}

fn report_task() -> actors::domain::TaskType {
    task(json!({
        "id": "report", "name": "Report",
        "interval": {"type": "daily", "value": 1},
        "timeout": "5s",
        "config": {"endpoint": "http://127.0.0.1:9/none", "method": "POST"}
    }))
}

#[actix_rt::test]
async fn protected_reads_need_the_token_and_health_stays_open() {
    let backends = Backends::new("security-reads");
    let mut config = config(&backends);
    config.api.token = Some("s3cret".to_owned());
    config.api.protect_reads = true;
    let app = spawn_app(config, vec![report_task()], Arc::new(SystemClock)).await;
    let reads = [
        "/users/ann/preferences",
        "/schedule/status/report",
        "/stats",
    ];
    for path in reads {
        let (status, _, body) = call(app.address, Method::GET, path, None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_error(&body, "unauthorized");
        let (status, _, body) = call(app.address, Method::GET, path, Some("wrong")).await;
        assert_eq!(status, 401, "{path} with a wrong token: {body}");
        let (status, _, body) = call(app.address, Method::GET, path, Some("s3cret")).await;
        assert_ne!(status, 401, "{path} with the token: {body}");
        assert!(status < 500, "{path} with the token: {status} {body}");
    }
    let (status, _, body) = call(app.address, Method::GET, "/health", None).await;
    assert_eq!(status, 200, "{body}");
}

#[actix_rt::test]
async fn reads_are_open_without_protect_reads() {
    let backends = Backends::new("security-open");
    let mut config = config(&backends);
    config.api.token = Some("s3cret".to_owned());
    let app = spawn_app(config, vec![report_task()], Arc::new(SystemClock)).await;
    let (status, _, body) = call(app.address, Method::GET, "/schedule/status/report", None).await;
    assert_eq!(status, 200, "{body}");
    // Writes still need it.
    let (status, _, body) = call(app.address, Method::PUT, "/users/ann/tasks/report", None).await;
    assert_eq!(status, 401, "{body}");
}

#[actix_rt::test]
async fn every_error_is_a_json_body() {
    let backends = Backends::new("security-json");
    let app = spawn_app(
        config(&backends),
        vec![report_task()],
        Arc::new(SystemClock),
    )
    .await;
    let cases = [
        (Method::GET, "/users//preferences", 404, "not_found"),
        (Method::GET, "/no/such/route", 404, "not_found"),
        (Method::GET, "/", 404, "not_found"),
        (Method::GET, "/users/ann/tasks/", 404, "not_found"),
        (
            Method::POST,
            "/users/ann/preferences",
            405,
            "method_not_allowed",
        ),
        (
            Method::PATCH,
            "/users/ann/tasks/report",
            405,
            "method_not_allowed",
        ),
    ];
    for (method, path, want_status, want_code) in cases {
        let (status, content_type, body) = call(app.address, method.clone(), path, None).await;
        assert_eq!(status, want_status, "{method} {path}: {body}");
        assert!(
            content_type.starts_with("application/json"),
            "{method} {path}: {content_type:?}"
        );
        assert_error(&body, want_code);
    }
}
