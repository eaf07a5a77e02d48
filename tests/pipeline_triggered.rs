//! Triggered runs end to end on the real Redis and RabbitMQ: every
//! enabled user called exactly once, with the right request, spread over
//! the window; and a per-task rate limit that holds.

use crate::support;

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
        timezone: None,
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
        (&body["jobs_created"], &body["distribution_window"]),
        (&json!(500), &json!("10s"))
    );

    sink.wait_for("/ok/report", 500, Duration::from_secs(60))
        .await;
    wait_passes(app.address, "report", "completed", 2).await;
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

    // Spread: users in spread order fill the ten one-second slots evenly
    // (50 each), and no job runs before its slot's second has come.
    let mut ranked: Vec<(u64, UserId)> = users
        .iter()
        .map(|user| {
            let user = UserId::parse(user.clone()).unwrap();
            (actors::slot::spread_key(&task_id, &user), user)
        })
        .collect();
    ranked.sort();
    let slot_of: BTreeMap<String, u32> = ranked
        .iter()
        .enumerate()
        .map(|(rank, (_, user))| {
            (
                user.to_string(),
                actors::fanout::slot_of_rank(rank as u64, 500, 10),
            )
        })
        .collect();
    let mut per_slot: BTreeMap<u32, u32> = BTreeMap::new();
    for call in &calls {
        let slot = slot_of[call.body["user_id"].as_str().unwrap()];
        *per_slot.entry(slot).or_default() += 1;
        let due = scheduled_at + chrono::Duration::seconds(i64::from(slot));
        let execute_after: DateTime<Utc> =
            call.headers["x-taskqueue-execute-after"].parse().unwrap();
        assert_eq!(execute_after, due, "user {}", call.body["user_id"]);
        assert!(
            call.at >= due - chrono::Duration::milliseconds(50),
            "slot {slot} ran at {} before it was due at {due}",
            call.at
        );
    }
    assert_eq!(per_slot.len(), 10);
    assert!(per_slot.values().all(|n| *n == 50), "{per_slot:?}");

    // The run is done: every user planned and released once, and its slot
    // lists are gone; the metrics reach Redis within a metrics interval.
    let (_, status_body) = get(app.address, "/schedule/status/report").await;
    assert_eq!(status_body["runs"], json!([]), "{status_body}");
    let last = &status_body["last_run"];
    assert_eq!(
        (
            &last["users"],
            &last["planned"],
            &last["released"],
            &last["done"]
        ),
        (&json!(500), &json!(500), &json!(500), &json!(true)),
        "{status_body}"
    );
    let keys = actors::store::Keys::new(backends.prefix.clone());
    let client = redis::Client::open(redis_url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let lists: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:distribution:*", backends.prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(lists, Vec::<String>::new());
    // The metrics reach Redis at the next flush (every metrics interval).
    let today = keys.metrics_executions(Utc::now().date_naive());
    let yesterday = keys.metrics_executions(Utc::now().date_naive() - chrono::Days::new(1));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (executions, before): (Option<u64>, Option<u64>) = redis::pipe()
            .hget(&today, "report")
            .hget(&yesterday, "report")
            .query_async(&mut redis)
            .await
            .unwrap();
        let flushed = executions.unwrap_or(0) + before.unwrap_or(0);
        if flushed == 500 {
            break;
        }
        assert!(
            flushed < 500 && std::time::Instant::now() < deadline,
            "{flushed} executions flushed, for 500 calls"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

    let body = trigger_now(app.address, "limited").await;
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

#[actix_rt::test]
async fn a_retried_trigger_with_the_same_idempotency_key_returns_the_same_run() {
    let sink = Sink::start();
    let backends = Backends::new("idempotent");
    let store = backends.store().await;
    let users: Vec<String> = (0..30).map(|n| format!("user_{n:02}")).collect();
    enable_users(&store, "digest", &users).await;
    let digest = task(json!({
        "id": "digest", "name": "Digest",
        "interval": {"type": "daily", "value": 1},
        "timeout": "10s",
        "config": {"endpoint": sink.url("/ok/digest"), "method": "POST"}
    }));
    let app = spawn_app(config(&backends), vec![digest], Arc::new(SystemClock)).await;
    let body = json!({"task_type_id": "digest", "execute_immediately": true});
    let key = [("Idempotency-Key", "nightly-2024-01-15")];
    let (status, first) = post_with(app.address, "/schedule/trigger", &body, &key).await;
    assert_eq!(status, 202, "{first}");
    let (status, again) = post_with(app.address, "/schedule/trigger", &body, &key).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(first, again, "the retry answers with the first run");
    assert_eq!(first["jobs_created"], 30);

    // Another key is another run.
    let other = [("Idempotency-Key", "nightly-2024-01-16")];
    let (_, second) = post_with(app.address, "/schedule/trigger", &body, &other).await;
    assert_ne!(second["run_id"], first["run_id"]);
    let calls = sink
        .wait_for("/ok/digest", 60, Duration::from_secs(30))
        .await;
    let runs: std::collections::BTreeSet<String> = calls
        .iter()
        .map(|call| call.body["scheduled_at"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(runs.len(), 2, "two runs, not three");

    // A key that is not printable text is refused.
    let (status, body) = post_with(
        app.address,
        "/schedule/trigger",
        &body,
        &[("Idempotency-Key", "")],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_error(&body, "bad_request");
}
