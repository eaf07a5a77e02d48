//! Failure handling end to end on the real Redis and RabbitMQ: retries
//! with backoff, dead letters with the error detail, `Retry-After` waits
//! that keep the attempt, and an executor killed mid-job.

use crate::support;

use std::{sync::Arc, time::Duration};

use actors::{
    clock::SystemClock,
    domain::{TaskTypeId, UserId, job_id},
    executor::RestartExecutor,
    store::ClaimStore,
};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use support::*;

fn failing_task(id: &str, endpoint: String, retries: u32) -> actors::domain::TaskType {
    task(json!({
        "id": id, "name": id,
        "interval": {"type": "daily", "value": 1},
        "timeout": "10s", "retries": retries,
        "config": {"endpoint": endpoint, "method": "POST"}
    }))
}

async fn trigger_one(app: &RunningApp, task: &str, user: &str) {
    let (status, body) = post(
        app.address,
        "/schedule/trigger",
        &json!({"task_type_id": task, "user_ids": [user], "execute_immediately": true}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["jobs_created"], 1);
}

/// Waits for `count` dead letters in the vhost's failed queue.
async fn dead_letters(
    backends: &Backends,
    count: usize,
) -> Vec<(std::collections::BTreeMap<String, String>, Value)> {
    let mut letters = Vec::new();
    for _ in 0..100 {
        letters.extend(backends.take_all("taskqueue.jobs.failed").await);
        if letters.len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    letters
}

#[actix_rt::test]
async fn retries_dead_letters_and_retry_after_follow_the_outcome_rules() {
    let sink = Sink::start();
    let backends = Backends::new("failures");
    let tasks = vec![
        failing_task("flaky", sink.url("/flaky/a"), 3),
        failing_task("broken", sink.url("/fail/b"), 2),
        failing_task("gone", sink.url("/missing/c"), 3),
        failing_task("busy", sink.url("/throttle/d"), 0),
    ];
    let app = spawn_app(config(&backends), tasks, Arc::new(SystemClock)).await;
    for task in ["flaky", "broken", "gone", "busy"] {
        trigger_one(&app, task, "alice").await;
    }

    // Fails twice, the third attempt succeeds: attempts 1, 2, 3, one key.
    let flaky = sink.wait_for("/flaky/", 3, Duration::from_secs(30)).await;
    let attempts: Vec<u32> = flaky.iter().map(|c| c.attempt()).collect();
    assert_eq!(attempts, vec![1, 2, 3]);
    assert!(flaky.iter().all(|c| c.key() == flaky[0].key()));
    assert_eq!(
        flaky
            .iter()
            .map(|c| c.body["attempt"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );

    // 429 with Retry-After: 1 waits a second and keeps the attempt, even
    // with no retries allowed.
    let busy = sink
        .wait_for("/throttle/", 2, Duration::from_secs(30))
        .await;
    assert_eq!(
        busy.iter().map(|c| c.attempt()).collect::<Vec<_>>(),
        vec![1, 1]
    );
    assert!(busy[1].instant.duration_since(busy[0].instant) >= Duration::from_millis(900));

    // Always 500: 1 + 2 retries, then dead-lettered; 404: dead-lettered at once.
    let broken = sink.wait_for("/fail/", 3, Duration::from_secs(30)).await;
    let letters = dead_letters(&backends, 2).await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    let by_task = |task: &str| {
        letters
            .iter()
            .find(|(_, body)| body["job"]["task_type_id"] == task)
            .cloned()
            .unwrap_or_else(|| panic!("no dead letter for {task}: {letters:?}"))
    };
    let (headers, body) = by_task("broken");
    assert_eq!(headers["x-taskqueue-reason"], "retries_exhausted");
    assert_eq!(headers["x-taskqueue-error-code"], "http_500");
    let result: Value = serde_json::from_str(&headers["x-taskqueue-result"]).unwrap();
    assert_eq!(result["status"], "failed");
    assert_eq!(
        result["error"],
        json!({"code": "http_500", "message": "endpoint answered 500", "retry": true})
    );
    assert_eq!(body["job"]["attempt"], 3);
    let (headers, body) = by_task("gone");
    assert_eq!(headers["x-taskqueue-reason"], "permanent_failure");
    assert_eq!(headers["x-taskqueue-error-code"], "http_404");
    assert_eq!(body["job"]["attempt"], 1);

    // Every call reached its outcome (3 flaky, 3 broken, 1 gone, 2
    // throttled): nothing is left to call.
    wait_processed(app.address, 9).await;
    assert_eq!(
        sink.received_at("/flaky/").len(),
        3,
        "no call after the success"
    );
    assert_eq!(sink.received_at("/fail/").len(), broken.len());
    assert_eq!(sink.received_at("/fail/").len(), 3, "1 attempt + 2 retries");
    assert_eq!(
        sink.received_at("/missing/").len(),
        1,
        "a 404 is never retried"
    );
    assert_eq!(sink.received_at("/throttle/").len(), 2);
}

#[actix_rt::test]
async fn an_executor_killed_mid_job_restarts_and_the_job_completes_once() {
    let sink = Sink::start();
    let backends = Backends::new("crash");
    let store = backends.store().await;
    let mut config = config(&backends);
    config.worker.pool_size = 2;
    let slow = failing_task("slow", sink.url("/slow/1500/x"), 0);
    let app = spawn_app(config, vec![slow], Arc::new(SystemClock)).await;
    trigger_one(&app, "slow", "bob").await;

    let first = sink.wait_for("/slow/", 1, Duration::from_secs(20)).await;
    assert_eq!(first.len(), 1);
    for executor in &app.executors {
        executor.send(RestartExecutor).await.unwrap();
    }
    let calls = sink.wait_for("/slow/", 2, Duration::from_secs(20)).await;
    assert_eq!(calls.len(), 2, "the job is redelivered after the restart");
    // The redelivered call is recorded and settled: no copy is left.
    wait_processed(app.address, 1).await;
    let calls = sink.received_at("/slow/");
    assert_eq!(calls.len(), 2, "and runs once more only");
    assert_eq!(calls[0].key(), calls[1].key());
    assert_eq!(calls[1].attempt(), 1, "a crash does not use up an attempt");
    let scheduled_at: DateTime<Utc> = calls[1].body["scheduled_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let id = job_id(
        &TaskTypeId::parse("slow").unwrap(),
        &UserId::parse("bob").unwrap(),
        scheduled_at,
    );
    assert_eq!(store.succeeded(&[id]).await.unwrap(), vec![true]);
    let (_, health) = get(app.address, "/health").await;
    assert_eq!(health["active_jobs"], 0);
    assert_eq!(health["workers"], 2);
}
