//! `redis.mode: sentinel`: the service finds its Redis through the Redis
//! Sentinel that `scripts/services.sh` runs (127.0.0.1:26379, master
//! `taskqueue`, monitoring the shared Redis), and its writes land there.

mod support;

use std::sync::Arc;

use actors::{clock::SystemClock, store::PreferenceStore};
use serde_json::json;
use support::*;
use taskqueue::configuration::RedisMode;

/// `host:port` of the test Sentinel.
fn sentinel_address() -> String {
    std::env::var("TASKQUEUE_TEST_SENTINEL_ADDR").unwrap_or_else(|_| "127.0.0.1:26379".into())
}

#[actix_rt::test]
async fn the_service_reaches_redis_through_sentinel() {
    // Runs alone on the shared servers: every other test process waits
    // (tests/kit/src/server_lock.rs).
    restarting_servers();
    let backends = Backends::new("sentinel");
    let mut config = config(&backends);
    config.redis.mode = RedisMode::Sentinel;
    // An unreachable Sentinel first: the next one answers.
    config.redis.addresses = vec!["127.0.0.1:1".to_owned(), sentinel_address()];
    config.redis.master_name = "taskqueue".to_owned();

    let direct = backends.store().await;
    enable_users(&direct, "daily_report", &["user_1".to_owned()]).await;

    let daily = task(json!({
        "id": "daily_report", "name": "Daily report",
        "interval": {"type": "daily", "value": 1},
        "timeout": "5s",
        "config": {"endpoint": "http://127.0.0.1:9/never", "method": "POST"}
    }));
    let app = spawn_app(config, vec![daily], Arc::new(SystemClock)).await;
    let (status, body) = get(app.address, "/users/user_1/preferences").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["enabled_tasks"], json!({"daily_report": true}));

    // A write through the service is read back on the Redis directly.
    let response = reqwest::Client::new()
        .put(format!(
            "http://{}/users/user_2/tasks/daily_report",
            app.address
        ))
        .json(&json!({"enabled": true}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let user = actors::domain::UserId::parse("user_2").unwrap();
    let stored = direct.preferences(&user).await.unwrap().unwrap();
    let task = actors::domain::TaskTypeId::parse("daily_report").unwrap();
    assert_eq!(stored.enabled_tasks.get(&task), Some(&true));
    delete_prefix(&backends.prefix);
}
