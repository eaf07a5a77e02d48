//! Pause and resume of a task type on the real Redis and RabbitMQ, driven
//! by an injected clock: while paused, a task makes no fan-out, releases
//! none of its planned slots and its queued jobs are deferred, not called,
//! while another task keeps running; the resume catches up under each
//! task's misfire policy (`run_once` runs the latest fire, `skip` counts
//! it as missed).

use crate::support;

use std::{collections::BTreeMap, time::Duration};

use actors::{
    broker::{
        JobBroker,
        amqp::{AmqpBroker, AmqpOptions},
    },
    clock::ManualClock,
    distributor::job_envelope,
    domain::{JobSource, UserId},
};
use chrono::{DurationRound, TimeDelta, Utc};
use serde_json::{Value, json};
use support::*;

/// Polls `/metrics` until `name{labels}` reaches `at_least`.
async fn wait_metric(app: &RunningApp, name: &str, labels: &[(&str, &str)], at_least: f64) {
    for _ in 0..300 {
        if sample(&scrape(app.address).await, name, labels) >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name}{labels:?} never reached {at_least}");
}

/// Polls the task's status until `done` holds for it.
async fn wait_status(app: &RunningApp, task: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..300 {
        let (status, body) = get(app.address, &format!("/schedule/status/{task}")).await;
        assert_eq!(status, 200, "{body}");
        if done(&body) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("status of {task} never reached the expected state");
}

#[actix_rt::test]
async fn a_paused_task_stops_fan_out_release_and_execution_and_the_resume_catches_up() {
    let sink = Sink::start();
    let backends = Backends::new("pause");
    let store = backends.store().await;

    let t0 = Utc::now().duration_trunc(TimeDelta::seconds(1)).unwrap();
    let clock = ManualClock::new(t0);
    let fire = t0 + TimeDelta::seconds(5);
    let hourly = |id: &str, misfire: &str| {
        task(json!({
            "id": id, "name": id,
            "interval": {"type": "hourly", "value": 1, "at_time": fire.format("%H:%M:%S").to_string()},
            "misfire": misfire,
            "timeout": "10s",
            "config": {"endpoint": sink.url(&format!("/ok/{id}")), "method": "POST"}
        }))
    };
    let held = hourly("held", "run_once");
    let tasks = vec![
        held.clone(),
        hourly("skipper", "skip"),
        hourly("other", "run_once"),
    ];
    let users: Vec<String> = (0..3).map(|n| format!("user_{n}")).collect();
    for task in ["held", "skipper", "other"] {
        enable_users(&store, task, &users).await;
    }
    let mut config = config(&backends);
    config.scheduler.distribution_window = Duration::from_secs(2);
    let app = spawn_app(config, tasks, clock.clone()).await;
    for task in ["held", "skipper", "other"] {
        wait_status(&app, task, |body| body["last_execution"] == json!(t0)).await;
    }

    // Pause two tasks; a second pause changes nothing; an unknown task is
    // a 404.
    for task in ["held", "skipper"] {
        let (status, body) = post(app.address, &format!("/tasks/{task}/pause"), &json!({})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            (body["paused"].clone(), body["changed"].clone()),
            (json!(true), json!(true))
        );
    }
    let (status, body) = post(app.address, "/tasks/held/pause", &json!({})).await;
    assert_eq!(
        (status, body["changed"].clone()),
        (200, json!(false)),
        "{body}"
    );
    let (status, body) = post(app.address, "/tasks/nope/pause", &json!({})).await;
    assert_eq!(status, 404, "{body}");
    assert_error(&body, "not_found");

    // While paused: a trigger of `held` is planned but not released, and
    // a job of `held` already in the broker is not called.
    let (status, body) = post(
        app.address,
        "/schedule/trigger",
        &json!({"task_type_id": "held", "user_ids": ["triggered"]}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let broker = AmqpBroker::connect(&backends.amqp_url, AmqpOptions::default())
        .await
        .unwrap();
    let queued = UserId::parse("queued").unwrap();
    broker
        .publish(&[job_envelope(
            &held,
            &queued,
            t0,
            t0,
            None,
            JobSource::Trigger,
            "queued-before-pause",
        )])
        .await
        .unwrap();

    // The period comes: `other` fans out and runs; the paused tasks do not.
    clock.set(fire + TimeDelta::seconds(1));
    let calls = sink.wait_for("/ok/other", 3, Duration::from_secs(30)).await;
    assert_eq!(calls.len(), 3);
    wait_metric(
        &app,
        "taskqueue_deferrals_total",
        &[("task", "held"), ("reason", "paused")],
        1.0,
    )
    .await;
    let other_done = wait_status(&app, "other", |body| {
        body["last_run"]["done"] == json!(true)
    })
    .await;
    assert_eq!(other_done["last_execution"], json!(fire));
    // A few more ticks with the paused tasks' fire long past.
    clock.set(fire + TimeDelta::seconds(10));
    wait_passes(app.address, "held", "paused", 2).await;
    wait_passes(app.address, "skipper", "paused", 2).await;
    assert!(
        sink.received_at("/ok/held").is_empty(),
        "{:?}",
        sink.received_at("/ok/held")
    );
    assert!(sink.received_at("/ok/skipper").is_empty());
    let (_, status) = get(app.address, "/schedule/status/held").await;
    assert_eq!(status["paused"], true, "{status}");
    assert!(status["paused_at"].is_string(), "{status}");
    assert_eq!(
        status["last_execution"],
        json!(t0),
        "no fire recorded while paused"
    );
    let runs = status["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "only the trigger's run: {status}");
    assert_eq!(
        (runs[0]["planned"].clone(), runs[0]["released"].clone()),
        (json!(1), json!(0))
    );
    let scraped = scrape(app.address).await;
    assert_eq!(
        sample(&scraped, "taskqueue_task_paused", &[("task", "held")]),
        1.0
    );
    assert_eq!(
        sample(&scraped, "taskqueue_task_paused", &[("task", "other")]),
        0.0
    );

    // Resume: `held` (run_once) runs its missed fire once for each user,
    // releases the trigger's run and calls the queued job, each once and
    // on its first attempt; `skipper` (skip) runs nothing and counts the
    // missed fire.
    for task in ["held", "skipper"] {
        let (status, body) = post(app.address, &format!("/tasks/{task}/resume"), &json!({})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            (body["paused"].clone(), body["changed"].clone()),
            (json!(false), json!(true))
        );
    }
    let calls = sink.wait_for("/ok/held", 5, Duration::from_secs(60)).await;
    let mut per_user: BTreeMap<String, Vec<(Value, u32)>> = BTreeMap::new();
    for call in &calls {
        per_user
            .entry(call.body["user_id"].as_str().unwrap().to_owned())
            .or_default()
            .push((call.body["scheduled_at"].clone(), call.attempt()));
    }
    for user in &users {
        assert_eq!(per_user[user], vec![(json!(fire), 1)], "{per_user:?}");
    }
    assert_eq!(per_user["queued"], vec![(json!(t0), 1)], "{per_user:?}");
    assert_eq!(per_user["triggered"].len(), 1, "{per_user:?}");
    let status = wait_status(&app, "held", |body| body["last_execution"] == json!(fire)).await;
    assert_eq!(status["paused"], false);
    let skipper = wait_status(&app, "skipper", |body| {
        body["last_execution"] == json!(fire)
    })
    .await;
    assert!(skipper["last_run"].is_null(), "skip made no run: {skipper}");
    wait_metric(
        &app,
        "taskqueue_missed_fires_total",
        &[("task", "skipper")],
        1.0,
    )
    .await;
    let scraped = scrape(app.address).await;
    assert_eq!(
        sample(
            &scraped,
            "taskqueue_missed_fires_total",
            &[("task", "skipper")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &scraped,
            "taskqueue_missed_fires_total",
            &[("task", "held")]
        ),
        0.0
    );
    // Every replica reads it from the period's tally too (the dashboard's
    // tasks page): the skipped fire is the one recorded.
    let skipper_id = actors::domain::TaskTypeId::parse("skipper").unwrap();
    let fired: chrono::DateTime<chrono::Utc> = serde_json::from_value(json!(fire)).unwrap();
    let tally = actors::store::results::JobResultStore::period_tally(
        &backends.store().await,
        &skipper_id,
        fired,
    )
    .await
    .unwrap();
    assert_eq!((tally.missed, tally.succeeded), (1, 0));
    wait_passes(app.address, "skipper", "completed", 2).await;
    wait_passes(app.address, "held", "completed", 2).await;
    assert!(sink.received_at("/ok/skipper").is_empty());
    assert_eq!(
        sink.received_at("/ok/held").len(),
        5,
        "nothing called twice"
    );
}
