//! The scheduler and worker API on the embedded backends (no Redis or
//! RabbitMQ needed): trigger validation, status, the merged `/health`,
//! `/stats` after the quick start's example users ran, the loopback sink,
//! and a tasks reload that fails and shows as degraded health.

use crate::support;

use std::{sync::Arc, time::Duration};

use actors::clock::SystemClock;
use serde_json::{Value, json};
use support::*;
use taskqueue::{Role, configuration::Backend, startup::Application};

fn embedded_config() -> taskqueue::configuration::ServiceConfig {
    let mut config = taskqueue::configuration::ServiceConfig {
        backend: Backend::Embedded,
        ..Default::default()
    };
    config.api.bind = "127.0.0.1:0".parse().unwrap();
    config.api.sink = true;
    config.scheduler.distribution_window = Duration::from_secs(2);
    config.execution.retry_delay = Duration::from_millis(100);
    config.monitoring.metrics_interval = Duration::from_secs(1);
    config
}

fn report_task(endpoint: String) -> actors::domain::TaskType {
    task(json!({
        "id": "report", "name": "Report",
        "interval": {"type": "daily", "value": 1, "timezone": "UTC"},
        "timeout": "5s",
        "config": {"endpoint": endpoint, "method": "POST"}
    }))
}

#[actix_rt::test]
async fn example_users_run_and_the_api_answers_with_the_spec_shapes() {
    let sink = Sink::start();
    let mut config = embedded_config();
    config.api.demo_users = 3;
    let app = spawn_app(
        config,
        vec![report_task(sink.url("/ok/report"))],
        Arc::new(SystemClock),
    )
    .await;

    // The example users were triggered at start.
    let calls = sink
        .wait_for("/ok/report", 3, Duration::from_secs(20))
        .await;
    assert_eq!(calls.len(), 3);
    let mut stats = Value::Null;
    for _ in 0..50 {
        stats = get(app.address, "/stats").await.1;
        if stats["processed"] == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stats["processed"], 3, "{stats}");
    assert_eq!(stats["failed"], 0);
    for field in ["avg_duration_ms", "current_rate", "uptime"] {
        assert!(stats[field].is_number(), "{field} in {stats}");
    }

    // /health of --role all: the scheduler's fields plus the worker's, and
    // what the process checked (dependencies, actors, quarantined).
    let (status, health) = get(app.address, "/health").await;
    assert_eq!(status, 200);
    let mut keys: Vec<&str> = health
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "active_jobs",
            "actors",
            "dependencies",
            "quarantined",
            "rate_limit",
            "status",
            "uptime",
            "version",
            "workers"
        ]
    );
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["workers"], 10);
    assert_eq!(health["rate_limit"]["max"], 100);

    // Status.
    let (status, body) = get(app.address, "/schedule/status/report").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["task_type_id"], "report");
    assert_eq!(body["enabled_users"], 3);
    assert_eq!(
        body["interval"],
        json!({"type": "daily", "value": 1, "timezone": "UTC"})
    );
    assert!(
        body["next_execution"]
            .as_str()
            .unwrap()
            .ends_with("T00:00:00Z"),
        "{body}"
    );
    let (status, body) = get(app.address, "/schedule/status/nope").await;
    assert_eq!(status, 404);
    assert_error(&body, "not_found");

    // Trigger: named users, immediately.
    let (status, body) = post(
        app.address,
        "/schedule/trigger",
        &json!({"task_type_id": "report", "user_ids": ["x1", "x2"], "execute_immediately": true}),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(
        (&body["jobs_created"], &body["distribution_window"]),
        (&json!(2), &json!("0s"))
    );
    assert!(
        body["run_id"]
            .as_str()
            .is_some_and(|id| id.parse::<i64>().is_ok()),
        "{body}"
    );
    let calls = sink
        .wait_for("/ok/report", 5, Duration::from_secs(10))
        .await;
    assert_eq!(calls.len(), 5);

    // Trigger: every enabled user, spread.
    let (status, body) = post(
        app.address,
        "/schedule/trigger",
        &json!({"task_type_id": "report"}),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(
        (&body["jobs_created"], &body["distribution_window"]),
        (&json!(3), &json!("2s"))
    );

    // Trigger: refusals.
    let (status, body) = post(
        app.address,
        "/schedule/trigger",
        &json!({"task_type_id": "nope"}),
    )
    .await;
    assert_eq!(status, 404);
    assert_error(&body, "not_found");
    let many: Vec<String> = (0..10_001).map(|n| format!("u{n}")).collect();
    let (status, body) = post(
        app.address,
        "/schedule/trigger",
        &json!({"task_type_id": "report", "user_ids": many}),
    )
    .await;
    assert_eq!(status, 400);
    assert_error(&body, "bad_request");
    let (status, body) = post(
        app.address,
        "/schedule/trigger",
        &json!({"task_type_id": "report", "user_ids": ["a:b"]}),
    )
    .await;
    assert_eq!(status, 400);
    assert_error(&body, "bad_request");
    let (status, body) = post(app.address, "/schedule/trigger", &json!({"user_ids": []})).await;
    assert_eq!(status, 400);
    assert_error(&body, "bad_request");

    // The loopback sink counts what it receives.
    let (status, _) = post(app.address, "/sink/demo", &json!({})).await;
    assert_eq!(status, 200);
    let (_, counts) = get(app.address, "/sink").await;
    assert_eq!(counts, json!({"demo": 1}));
}

#[actix_rt::test]
async fn a_bad_tasks_file_keeps_the_running_tasks_and_shows_as_degraded() {
    let good = "tasks:\n  - id: report\n    name: Report\n    interval: { type: daily, value: 1 }\n    timeout: 5s\n    config: { endpoint: \"http://127.0.0.1:9/x\", method: POST }\n".to_owned();
    let tasks_file = temp_file("tasks.yaml", &good);
    let mut config = embedded_config();
    config.tasks.config_file = tasks_file.clone();
    config.tasks.reload_interval = Duration::from_millis(500);
    let rate_limit = config.rate_limit.clone();
    let app = Application::build(config, Role::All, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let address = app.address();
    actix_rt::spawn(app.run_until_stopped());
    assert_eq!(get(address, "/health").await.1["status"], "healthy");

    std::fs::write(&tasks_file, "tasks:\n  - id: report\n    name: Report\n").unwrap();
    let health = wait_health(address, "degraded").await;
    assert_eq!(health["status"], "degraded", "{health}");
    // Every problem, in the text `taskqueue validate` prints: the file and
    // position, the task and the field.
    let problems = taskqueue::configuration::load_tasks(&tasks_file, &rate_limit).unwrap_err();
    let expected: Vec<String> = problems.problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(health["errors"], json!(expected), "{health}");
    let first = format!("{}:2:5: task report: ", tasks_file.display());
    assert!(expected[0].starts_with(&first), "{expected:?}");
    let (status, _) = get(address, "/schedule/status/report").await;
    assert_eq!(status, 200, "the running definitions stay");

    std::fs::write(&tasks_file, good).unwrap();
    let health = wait_health(address, "healthy").await;
    assert!(health.get("errors").is_none());
    let _ = std::fs::remove_file(tasks_file);
}

/// Waits (at most 30 s) until `/health` says `status` (200 either way);
/// answers with the body.
async fn wait_health(address: std::net::SocketAddr, status: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, health) = get(address, "/health").await;
        assert_eq!(code, 200, "{health}");
        if health["status"] == status {
            return health;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never {status}: {health}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_rt::test]
async fn status_warns_when_the_window_cannot_fit_the_users_at_the_rate_limit() {
    let sink = Sink::start();
    let mut config = embedded_config();
    config.api.demo_users = 3;
    config
        .rate_limit
        .per_task
        .insert(actors::domain::TaskTypeId::parse("report").unwrap(), 1);
    let roomy = task(json!({
        "id": "roomy", "name": "Roomy",
        "interval": {"type": "daily", "value": 1},
        "timeout": "5s",
        "config": {"endpoint": sink.url("/ok/roomy"), "method": "POST"}
    }));
    let app = spawn_app(
        config,
        vec![report_task(sink.url("/ok/report")), roomy],
        Arc::new(SystemClock),
    )
    .await;
    // 3 users at 1 per second do not fit a 2 s window.
    let (_, crowded) = get(app.address, "/schedule/status/report").await;
    let warnings = crowded["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{crowded}");
    assert!(
        warnings[0].as_str().unwrap().contains("3 users"),
        "{crowded}"
    );
    // At the global 100 per second they fit.
    let (_, fits) = get(app.address, "/schedule/status/roomy").await;
    assert!(fits.get("warnings").is_none(), "{fits}");
}

#[actix_rt::test]
async fn overlap_skip_drops_a_second_concurrent_run_for_a_user_and_allow_keeps_it() {
    let sink = Sink::start();
    let slow = |id: &str, overlap: &str| {
        task(json!({
            "id": id, "name": id,
            "interval": {"type": "daily", "value": 1},
            "timeout": "5s", "overlap": overlap,
            "config": {"endpoint": sink.url(&format!("/slow/1500/{id}")), "method": "POST"}
        }))
    };
    let app = spawn_app(
        embedded_config(),
        vec![slow("skipper", "skip"), slow("allower", "allow")],
        Arc::new(SystemClock),
    )
    .await;
    for task in ["skipper", "allower"] {
        for _ in 0..2 {
            // Two triggers: two runs (two job ids) for the same user.
            let (status, body) = post(
                app.address,
                "/schedule/trigger",
                &json!({"task_type_id": task, "user_ids": ["dana"], "execute_immediately": true}),
            )
            .await;
            assert_eq!(status, 202, "{body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The skipper's second job was skipped (counted as such), not held
    // back for later; the allower's two calls arrive.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, stats) = get(app.address, "/stats").await;
        if stats["skipped"]["overlap"] == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no skip: {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let allowed = sink
        .wait_for("/slow/1500/allower", 2, Duration::from_secs(30))
        .await;
    sink.wait_for("/slow/1500/skipper", 1, Duration::from_secs(30))
        .await;
    assert_eq!(sink.received_at("/slow/1500/skipper").len(), 1);
    assert_eq!(allowed.len(), 2);
    assert_ne!(allowed[0].key(), allowed[1].key());
}
