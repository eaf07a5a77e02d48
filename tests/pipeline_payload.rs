//! A task's `config.payload` template end to end on the real Redis and
//! RabbitMQ: `{{user_id}}` is filled when the job is made, the user's
//! `{{param.NAME}}` when the call is made, and the result is the body of
//! the PUT.

use crate::support;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use actors::{clock::SystemClock, domain::Settings};
use chrono::Utc;
use serde_json::json;
use support::*;

#[actix_rt::test]
async fn the_payload_template_is_the_body_of_each_users_call() {
    let sink = Sink::start();
    let backends = Backends::new("payload");
    let store = backends.store().await;
    enable_users(&store, "sync", &["user_plain".to_owned()]).await;
    let settings = Settings {
        custom_interval: None,
        parameters: BTreeMap::from([("lang".to_owned(), "de \"AT\"".to_owned())]),
        timezone: None,
    };
    enable_user_with(&store, "sync", "user_param", settings, Utc::now()).await;

    let sync = task(json!({
        "id": "sync", "name": "Sync",
        "interval": {"type": "daily", "value": 1},
        "timeout": "10s",
        "config": {
            "endpoint": sink.url("/ok/sync"), "method": "PUT",
            "payload": {"user": "{{user_id}}", "lang": "{{param.lang}}", "version": 2}
        }
    }));
    let app = spawn_app(config(&backends), vec![sync], Arc::new(SystemClock)).await;
    trigger_now(app.address, "sync").await;

    let calls = sink.wait_for("/ok/sync", 2, Duration::from_secs(30)).await;
    let mut bodies: Vec<_> = calls
        .iter()
        .map(|call| {
            assert_eq!(call.method, "PUT");
            assert_eq!(call.headers["content-type"], "application/json");
            call.body.clone()
        })
        .collect();
    bodies.sort_by_key(|body| body["user"].as_str().unwrap_or_default().to_owned());
    assert_eq!(
        bodies,
        [
            json!({"user": "user_param", "lang": "de \"AT\"", "version": 2}),
            json!({"user": "user_plain", "lang": "", "version": 2}),
        ]
    );
}
