//! `GET /metrics` after a small run on the real Redis and RabbitMQ: the
//! text parses as the Prometheus format, every family is there, and the
//! outcome counts match what the sink received.

use crate::support;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use actors::clock::SystemClock;
use prometheus_parse::Scrape;
use serde_json::json;
use support::*;

fn task_to(id: &str, endpoint: String) -> actors::domain::TaskType {
    task(json!({
        "id": id, "name": id,
        "interval": {"type": "daily", "value": 1},
        "timeout": "10s", "retries": 3,
        "config": {"endpoint": endpoint, "method": "POST"}
    }))
}

async fn scrape(app: &RunningApp) -> (String, Scrape) {
    let response = reqwest::get(format!("http://{}/metrics", app.address))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let parsed = Scrape::parse(lines).unwrap_or_else(|err| panic!("{err}: {text}"));
    (text, parsed)
}

#[actix_rt::test]
async fn metrics_after_a_small_run_match_the_sink() {
    let sink = Sink::start();
    let backends = Backends::new("metrics");
    let tasks = vec![
        task_to("fine", sink.url("/ok/fine")),
        task_to("flaky", sink.url("/flaky/flaky")),
        task_to("gone", sink.url("/missing/gone")),
    ];
    let app = spawn_app(config(&backends), tasks, Arc::new(SystemClock)).await;
    let users: Vec<String> = (0..3).map(|n| format!("user{n}")).collect();
    for task in ["fine", "flaky", "gone"] {
        let (status, body) = post(
            app.address,
            "/schedule/trigger",
            &json!({"task_type_id": task, "user_ids": users, "execute_immediately": true}),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    // fine: 3 successes; flaky: 500, 500, then 200 for each user; gone: 404,
    // dead-lettered at once.
    let expected: BTreeMap<&str, (&str, usize)> = [
        ("fine", ("/ok/fine", 3)),
        ("flaky", ("/flaky/flaky", 9)),
        ("gone", ("/missing/gone", 3)),
    ]
    .into();
    for (prefix, count) in expected.values() {
        let got = sink.wait_for(prefix, *count, Duration::from_secs(60)).await;
        assert_eq!(got.len(), *count, "{prefix}");
    }

    // Counting happens after the call returns: poll until every call is
    // counted, then compare outcome by outcome.
    let mut last = None;
    for _ in 0..100 {
        let (text, parsed) = scrape(&app).await;
        let counted: f64 = sample(&parsed, "taskqueue_executions_total", &[]);
        if counted >= 15.0 {
            last = Some((text, parsed));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (text, parsed) = last.expect("all 15 calls counted in /metrics");

    for (task, (prefix, _)) in &expected {
        let calls = sink.received_at(prefix);
        let ok = calls.iter().filter(|c| c.answered_ok).count() as f64;
        let failed = calls.iter().filter(|c| !c.answered_ok).count() as f64;
        let outcome = |o: &str| {
            sample(
                &parsed,
                "taskqueue_executions_total",
                &[("task", task), ("outcome", o)],
            )
        };
        assert_eq!(outcome("success"), ok, "{task} successes\n{text}");
        assert_eq!(
            outcome("retry") + outcome("throttle") + outcome("dead_letter"),
            failed,
            "{task} failures\n{text}"
        );
        let task_only = [("task", *task)];
        assert_eq!(
            sample(&parsed, "taskqueue_failures_total", &task_only),
            failed
        );
        assert_eq!(
            sample(
                &parsed,
                "taskqueue_execution_duration_seconds_count",
                &task_only
            ),
            calls.len() as f64,
            "{task} duration samples"
        );
        assert_eq!(
            sample(
                &parsed,
                "taskqueue_execution_lateness_seconds_count",
                &task_only
            ),
            calls.len() as f64,
            "{task} lateness samples"
        );
    }
    assert_eq!(
        sample(&parsed, "taskqueue_retries_total", &[("task", "flaky")]),
        6.0
    );
    assert_eq!(
        sample(
            &parsed,
            "taskqueue_dead_letters_total",
            &[("task", "gone"), ("reason", "permanent_failure")]
        ),
        3.0
    );
    assert_eq!(
        sample(&parsed, "taskqueue_dead_letters_total", &[("task", "fine")]),
        0.0
    );

    // The families a dashboard reads are all there, with their types.
    let types: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    for (family, kind) in [
        ("taskqueue_executions_total", "counter"),
        ("taskqueue_failures_total", "counter"),
        ("taskqueue_retries_total", "counter"),
        ("taskqueue_throttles_total", "counter"),
        ("taskqueue_dead_letters_total", "counter"),
        ("taskqueue_deferrals_total", "counter"),
        ("taskqueue_execution_duration_seconds", "histogram"),
        ("taskqueue_execution_lateness_seconds", "histogram"),
        ("taskqueue_rate_limit_wait_seconds", "histogram"),
        ("taskqueue_queue_depth", "gauge"),
        ("taskqueue_active_jobs", "gauge"),
        ("taskqueue_fanout_jobs", "gauge"),
        ("taskqueue_fanout_runs_in_progress", "gauge"),
        ("taskqueue_last_run_timestamp_seconds", "gauge"),
    ] {
        assert_eq!(types.get(family), Some(&kind), "{family} in\n{text}");
    }
    // Queue depths come from the broker: the three dead letters wait in the
    // failed queue (the gauges are refreshed every few seconds).
    let mut failed_depth = 0.0;
    for _ in 0..80 {
        let (_, parsed) = scrape(&app).await;
        failed_depth = sample(
            &parsed,
            "taskqueue_queue_depth",
            &[("queue", "taskqueue.jobs.failed")],
        );
        let released = sample(
            &parsed,
            "taskqueue_fanout_jobs",
            &[("task", "fine"), ("run", "last"), ("stage", "released")],
        );
        if failed_depth == 3.0 && released == 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(failed_depth, 3.0);
    let (text, parsed) = scrape(&app).await;
    for stage in ["due", "planned", "released"] {
        assert_eq!(
            sample(
                &parsed,
                "taskqueue_fanout_jobs",
                &[("task", "fine"), ("run", "last"), ("stage", stage)]
            ),
            3.0,
            "{stage}\n{text}"
        );
    }
    for queue in ["high", "normal", "low", "delayed"] {
        let name = format!("taskqueue.jobs.{queue}");
        assert!(
            parsed
                .samples
                .iter()
                .any(|s| s.metric == "taskqueue_queue_depth"
                    && s.labels.get("queue") == Some(name.as_str())),
            "{name}\n{text}"
        );
    }
}
