//! Triggered runs end to end on the real Redis and RabbitMQ: every
//! enabled user called exactly once, with the right request, spread over
//! the window; and a per-task rate limit that holds.

mod support;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use actors::{
    clock::SystemClock,
    domain::{Settings, TaskTypeId, UserId, job_id},
};
use chrono::{DateTime, Utc};
use serde_json::json;
use support::*;

#[actix_rt::test]
async fn five_hundred_users_triggered_get_one_correct_call_each_spread_over_the_window() {
    let sink = Sink::start();
    let backends = Backends::new("trigger500");
    let store = backends.store().await;
    let users: Vec<String> = (0..500).map(|n| format!("user_{n:03}")).collect();
    enable_users(&store, "report", &users[1..]).await;
    let parameters = BTreeMap::from([("lang".to_owned(), "fr".to_owned())]);
    let settings = Settings {
        custom_interval: None,
        parameters: parameters.clone(),
    };
    enable_user_with(&store, "report", &users[0], settings, Utc::now()).await;

    let mut config = config(&backends);
    config.scheduler.distribution_window = Duration::from_secs(10);
    config.worker.pool_size = 16;
    let report = task(json!({
        "id": "report", "name": "Report",
        "interval": {"type": "daily", "value": 1},
        "timeout": "10s", "retries": 1,
        "config": {"endpoint": sink.url("/ok/report"), "method": "POST",
                   "headers": {"X-Team": "reports"}}
    }));
    let app = spawn_app(config, vec![report], Arc::new(SystemClock)).await;

    let (status, body) = post(
        app.address,
        "/schedule/trigger",
        &json!({"task_type_id": "report"}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body,
        json!({"jobs_created": 500, "distribution_window": "10s"})
    );

    sink.wait_for("/ok/report", 500, Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = sink.received_at("/ok/report");
    assert_eq!(calls.len(), 500, "exactly one call per user");

    let task_id = TaskTypeId::parse("report").unwrap();
    let scheduled_at: DateTime<Utc> = calls[0].body["scheduled_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut seen = BTreeMap::new();
    for call in &calls {
        let user = call.body["user_id"].as_str().unwrap().to_owned();
        let id = job_id(
            &task_id,
            &UserId::parse(user.clone()).unwrap(),
            scheduled_at,
        );
        assert_eq!(call.method, "POST");
        assert_eq!(call.headers["x-team"], "reports");
        assert_eq!(call.headers["content-type"], "application/json");
        assert_eq!(call.key(), id.to_string());
        assert_eq!(call.attempt(), 1);
        let expected_parameters = if user == users[0] {
            json!(parameters)
        } else {
            json!({})
        };
        assert_eq!(
            call.body,
            json!({
                "job_id": id,
                "task_type_id": "report",
                "user_id": user,
                "scheduled_at": scheduled_at,
                "attempt": 1,
                "parameters": expected_parameters,
            })
        );
        assert!(seen.insert(user, ()).is_none(), "a user was called twice");
    }
    assert_eq!(seen.len(), 500);

    // Spread: calls per second of the window; none holds more than 3x the mean.
    let mut per_second: BTreeMap<i64, u32> = BTreeMap::new();
    for call in &calls {
        let second = (call.at - scheduled_at).num_milliseconds().max(0) / 1000;
        *per_second.entry(second).or_default() += 1;
    }
    let mean = 500 / 10;
    let busiest = per_second.values().max().copied().unwrap_or(0);
    assert!(
        busiest <= 3 * mean,
        "busiest second had {busiest} calls: {per_second:?}"
    );
    assert!(per_second.len() >= 8, "calls bunched into {per_second:?}");

    // The spec's distribution lists hold every user once, in its slot; the
    // metrics reach Redis within a metrics interval.
    let keys = actors::store::Keys::new(backends.prefix.clone());
    let client = redis::Client::open(redis_url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let mut listed = Vec::new();
    for slot in 0..10 {
        let users: Vec<String> = redis::cmd("LRANGE")
            .arg(keys.distribution(&task_id, slot))
            .arg(0)
            .arg(-1)
            .query_async(&mut redis)
            .await
            .unwrap();
        for user in &users {
            let placed = actors::slot::place(
                &task_id,
                &UserId::parse(user.clone()).unwrap(),
                Duration::from_secs(10),
            );
            assert_eq!(placed.slot, slot);
        }
        listed.extend(users);
    }
    listed.sort();
    assert_eq!(listed, users);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let executions: Option<u64> = redis::cmd("HGET")
        .arg(keys.metrics_executions(Utc::now().date_naive()))
        .arg("report")
        .query_async(&mut redis)
        .await
        .unwrap();
    let yesterday: Option<u64> = redis::cmd("HGET")
        .arg(keys.metrics_executions(Utc::now().date_naive() - chrono::Days::new(1)))
        .arg("report")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(executions.unwrap_or(0) + yesterday.unwrap_or(0), 500);
    let samples: u64 = redis::cmd("ZCARD")
        .arg(keys.metrics_duration(&task_id))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(samples, 500);
    let (_, stats) = get(app.address, "/stats").await;
    assert_eq!(stats["processed"], 500);
    assert_eq!(stats["failed"], 0);
}

#[actix_rt::test]
async fn a_task_limited_to_five_per_second_never_gets_more_than_five_plus_burst_in_any_second() {
    let sink = Sink::start();
    let backends = Backends::new("ratelimit");
    let store = backends.store().await;
    let users: Vec<String> = (0..50).map(|n| format!("user_{n:02}")).collect();
    enable_users(&store, "limited", &users).await;

    let mut config = config(&backends);
    config
        .rate_limit
        .per_task
        .insert(TaskTypeId::parse("limited").unwrap(), 5);
    let limited = task(json!({
        "id": "limited", "name": "Limited",
        "interval": {"type": "daily", "value": 1},
        "timeout": "10s",
        "config": {"endpoint": sink.url("/ok/limited"), "method": "GET"}
    }));
    let app = spawn_app(config, vec![limited], Arc::new(SystemClock)).await;

    let (status, body) = post(
        app.address,
        "/schedule/trigger",
        &json!({"task_type_id": "limited", "execute_immediately": true}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["jobs_created"], 50);

    let calls = sink
        .wait_for("/ok/limited", 50, Duration::from_secs(60))
        .await;
    assert_eq!(calls.len(), 50);
    let mut instants: Vec<_> = calls.iter().map(|c| c.instant).collect();
    instants.sort();
    let burst = 5;
    for (i, start) in instants.iter().enumerate() {
        let in_second = instants[i..]
            .iter()
            .take_while(|t| t.duration_since(*start) < Duration::from_secs(1))
            .count();
        assert!(
            in_second <= 5 + burst,
            "{in_second} calls within one second"
        );
    }
    // GET carries the job as query parameters.
    assert!(
        calls
            .iter()
            .all(|c| c.method == "GET" && c.query.contains("task_type_id=limited"))
    );
}
