//! Bad records on the real Redis do not stop a task: an index member that
//! is no user id, a custom interval that does not parse, a custom-index
//! entry without an interval. Each is skipped and quarantined (counted and
//! shown in `/health`), every good user still gets its call, and
//! custom-index entries that cannot run are moved on.

use crate::support;

use std::{sync::Arc, time::Duration};

use actors::{
    clock::SystemClock,
    domain::{Settings, TaskTypeId, UserId},
    store::Keys,
};
use chrono::Utc;
use redis::AsyncCommands;
use serde_json::json;
use support::*;

async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn report_task(sink: &Sink) -> actors::domain::TaskType {
    task(json!({
        "id": "report", "name": "Report",
        "interval": {"type": "daily", "value": 1},
        "timeout": "5s",
        "config": {"endpoint": sink.url("/ok/report"), "method": "POST"}
    }))
}

#[actix_rt::test]
async fn bad_enabled_index_members_are_skipped_and_quarantined() {
    let backends = Backends::new("quarantine-index");
    let sink = Sink::start();
    let store = backends.store().await;
    let users: Vec<String> = (0..7).map(|n| format!("user{n}")).collect();
    enable_users(&store, "report", &users).await;
    // Three members that are no user ids, first in the walk (a page of two
    // holds nothing else), and one among the good ones.
    let keys = Keys::new(backends.prefix.clone());
    let index = keys.enabled_index(&TaskTypeId::parse("report").unwrap());
    let mut connection = raw().await;
    for (score, member) in [(1, "bad one"), (2, "bad:two"), (3, "bad*three")] {
        let _: () = connection.zadd(&index, member, score).await.unwrap();
    }
    let _: () = connection
        .zadd(&index, "bad\tamong", 1u64 << 40)
        .await
        .unwrap();

    let mut config = config(&backends);
    config.scheduler.batch_size = 2;
    let app = spawn_app(config, vec![report_task(&sink)], Arc::new(SystemClock)).await;
    trigger_now(app.address, "report").await;

    let calls = sink
        .wait_for("/ok/report", 7, Duration::from_secs(30))
        .await;
    let mut called: Vec<String> = calls
        .iter()
        .map(|call| call.body["user_id"].as_str().unwrap().to_owned())
        .collect();
    called.sort();
    assert_eq!(called, users, "every good user called once");

    let (status, health) = get(app.address, "/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["quarantined"]["count"], 4, "{health}");
    let locations: Vec<&str> = health["quarantined"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["location"].as_str().unwrap())
        .collect();
    assert!(
        locations.iter().any(|l| l.contains("\"bad one\"")),
        "{health}"
    );
}

#[actix_rt::test]
async fn bad_custom_interval_entries_are_moved_on_and_good_users_run() {
    let backends = Backends::new("quarantine-custom");
    let sink = Sink::start();
    let store = backends.store().await;
    let report = TaskTypeId::parse("report").unwrap();
    let keys = Keys::new(backends.prefix.clone());
    let index = keys.custom_index(&report);
    let hourly: actors::domain::TaskInterval =
        serde_json::from_value(json!({"type": "hourly", "value": 1})).unwrap();
    let now = Utc::now();
    for user in ["good", "garbled", "bare"] {
        let settings = Settings {
            timezone: None,
            custom_interval: Some(hourly.clone()),
            parameters: Default::default(),
        };
        enable_user_with(&store, "report", user, settings, now).await;
    }
    let mut connection = raw().await;
    // "garbled" has an interval that does not parse, "bare" none at all,
    // and one member is no user id; all are due, with "good".
    let garbled = keys.user_settings(&UserId::parse("garbled").unwrap(), &report);
    let _: () = connection
        .hset(&garbled, "custom_interval", "{not json")
        .await
        .unwrap();
    let bare = keys.user_settings(&UserId::parse("bare").unwrap(), &report);
    let _: () = connection.hdel(&bare, "custom_interval").await.unwrap();
    let due = now.timestamp_millis() - 1000;
    for (member, score) in [
        ("bad member", due - 3),
        ("garbled", due - 2),
        ("bare", due - 1),
        ("good", due),
    ] {
        let _: () = connection.zadd(&index, member, score).await.unwrap();
    }

    let mut config = config(&backends);
    config.scheduler.batch_size = 2;
    let app = spawn_app(config, vec![report_task(&sink)], Arc::new(SystemClock)).await;

    let calls = sink
        .wait_for("/ok/report", 1, Duration::from_secs(30))
        .await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].body["user_id"], "good");

    // Every bad entry is out of the due range.
    let still_due: Vec<String> = connection
        .zrangebyscore(&index, "-inf", Utc::now().timestamp_millis())
        .await
        .unwrap();
    assert!(still_due.is_empty(), "{still_due:?}");
    let (status, health) = get(app.address, "/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["quarantined"]["count"], 4, "{health}");
}
