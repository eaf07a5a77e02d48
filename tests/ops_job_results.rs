//! Job results on the real Redis and RabbitMQ: `GET /jobs/{job_id}` reads
//! success with its duration and attempts, both attempts of a job that
//! failed before it succeeded, `failed` with the last error for a
//! dead-lettered job, `retrying` with `next_attempt` for a throttled try;
//! `GET /users/{u}/tasks/{t}/runs` lists newest first
//! and honours `limit`; bad ids and limits are 400s, unknown jobs 404s.

use crate::support;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use actors::clock::SystemClock;
use serde_json::{Value, json};
use support::*;

fn task_to(id: &str, endpoint: String, retries: u32) -> actors::domain::TaskType {
    task(json!({
        "id": id, "name": id,
        "interval": {"type": "daily", "value": 1},
        "timeout": "10s", "retries": retries,
        "config": {"endpoint": endpoint, "method": "POST"}
    }))
}

/// Waits until `GET /jobs/{job}` reads `status`; returns the body.
async fn wait_status(app: &RunningApp, job: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = get(app.address, &format!("/jobs/{job}")).await;
        if code == 200 && body["result"]["status"] == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "job {job} never read {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn trigger(app: &RunningApp, task: &str, users: Value) {
    let (status, body) = post(
        app.address,
        "/schedule/trigger",
        &json!({"task_type_id": task, "user_ids": users, "execute_immediately": true}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
}

#[actix_rt::test]
async fn job_results_and_runs_are_served_from_the_store() {
    let sink = Sink::start();
    let backends = Backends::new("job-results");
    let config = config(&backends);
    let tasks = vec![
        task_to("fine", sink.url("/ok/fine"), 3),
        task_to("flaky", sink.url("/flaky/flaky"), 3),
        task_to("gone", sink.url("/missing/gone"), 3),
        task_to("busy", sink.url("/throttle/busy"), 3),
    ];
    let app = spawn_app(config, tasks, Arc::new(SystemClock)).await;

    // A job that succeeds: success with its duration, one attempt.
    trigger(&app, "fine", json!(["alice"])).await;
    let call = sink.wait_for("/ok/fine", 1, Duration::from_secs(60)).await;
    let fine = call[0].key();
    let body = wait_status(&app, &fine, "success").await;
    assert_eq!(body["job_id"], fine.as_str());
    assert_eq!(body["task_type_id"], "fine");
    assert_eq!(body["user_id"], "alice");
    assert!(body["result"]["duration"].is_u64(), "{body}");
    assert!(body["result"]["started_at"].is_string(), "{body}");
    let attempts = body["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{body}");
    assert_eq!(attempts[0]["attempt"], 1);

    // A job that fails twice, then succeeds: three attempts, the first
    // two retrying with their error and next attempt.
    trigger(&app, "flaky", json!(["bob"])).await;
    let calls = sink
        .wait_for("/flaky/flaky", 3, Duration::from_secs(60))
        .await;
    let flaky = calls[0].key();
    let body = wait_status(&app, &flaky, "success").await;
    let attempts = body["attempts"].as_array().unwrap();
    let seen: Vec<(u64, &str)> = attempts
        .iter()
        .map(|a| {
            (
                a["attempt"].as_u64().unwrap(),
                a["result"]["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![(1, "retrying"), (2, "retrying"), (3, "success")],
        "{body}"
    );
    assert!(attempts[0]["result"]["next_attempt"].is_string(), "{body}");
    assert_eq!(attempts[0]["result"]["error"]["code"], "http_500", "{body}");

    // A dead-lettered job: failed with the last error.
    trigger(&app, "gone", json!(["carol"])).await;
    let call = sink
        .wait_for("/missing/gone", 1, Duration::from_secs(60))
        .await;
    let gone = call[0].key();
    let body = wait_status(&app, &gone, "failed").await;
    assert!(body["result"]["error"]["code"].is_string(), "{body}");
    assert!(body["result"].get("next_attempt").is_none(), "{body}");

    // A throttled job (429 with `Retry-After`, then 200): the throttled
    // try reads retrying with its next attempt, the same attempt number.
    trigger(&app, "busy", json!(["erin"])).await;
    let calls = sink
        .wait_for("/throttle/busy", 2, Duration::from_secs(60))
        .await;
    let busy = calls[0].key();
    let body = wait_status(&app, &busy, "success").await;
    let attempts = body["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{body}");
    assert_eq!(attempts[0]["attempt"], 1);
    assert_eq!(attempts[0]["result"]["status"], "retrying", "{body}");
    assert!(attempts[0]["result"]["next_attempt"].is_string(), "{body}");
    assert_eq!(attempts[1]["attempt"], 1);
    assert_eq!(attempts[1]["result"]["status"], "success", "{body}");

    // Runs: newest first, limit honoured.
    trigger(&app, "fine", json!(["dave"])).await;
    sink.wait_for("/ok/fine", 2, Duration::from_secs(60)).await;
    let (_, dave) = get(app.address, "/users/dave/tasks/fine/runs").await;
    assert_eq!(dave["runs"].as_array().map(Vec::len), Some(1), "{dave}");
    let first = sink.received_at("/ok/fine")[0].key();
    assert_eq!(first, fine);
    let (status, body) = get(app.address, "/users/alice/tasks/fine/runs").await;
    assert_eq!(status, 200, "{body}");
    let runs = body["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{body}");
    assert_eq!(runs[0]["job_id"], fine.as_str());
    trigger(&app, "flaky", json!(["alice"])).await;
    trigger(&app, "gone", json!(["alice"])).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (first_flaky, first_gone) = loop {
        let (_, flaky_runs) = get(app.address, "/users/alice/tasks/flaky/runs").await;
        let (_, gone_runs) = get(app.address, "/users/alice/tasks/gone/runs").await;
        if flaky_runs["runs"].as_array().is_some_and(|r| !r.is_empty())
            && gone_runs["runs"].as_array().is_some_and(|r| !r.is_empty())
        {
            break (flaky_runs, gone_runs);
        }
        assert!(Instant::now() < deadline, "alice's runs never listed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(first_flaky["task_type_id"], "flaky");
    assert_eq!(
        first_gone["runs"][0]["result"]["job_id"],
        first_gone["runs"][0]["job_id"]
    );

    // Newest first, limit honoured: a second trigger is a new job of alice.
    trigger(&app, "fine", json!(["alice"])).await;
    let calls = sink.wait_for("/ok/fine", 3, Duration::from_secs(60)).await;
    // Calls come in arrival order: alice's first, dave's, alice's second.
    let second = calls[2].key();
    assert_ne!(second, fine);
    wait_status(&app, &second, "success").await;
    let (_, all) = get(app.address, "/users/alice/tasks/fine/runs").await;
    let ids: Vec<&str> = all["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![second.as_str(), fine.as_str()], "{all}");
    let (_, limited) = get(app.address, "/users/alice/tasks/fine/runs?limit=1").await;
    let limited = limited["runs"].as_array().unwrap();
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0]["job_id"], second.as_str());

    // Bad input and unknown jobs.
    for path in [
        "/jobs/not-a-uuid",
        "/users/alice/tasks/fine/runs?limit=0",
        "/users/alice/tasks/fine/runs?limit=101",
        "/users/alice/tasks/fine/runs?limit=many",
        "/users/a:b/tasks/fine/runs",
    ] {
        let (status, body) = get(app.address, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_error(&body, "bad_request");
    }
    let (status, body) = get(app.address, "/jobs/00000000-0000-0000-0000-000000000000").await;
    assert_eq!(status, 404, "{body}");
    assert_error(&body, "not_found");
}

#[actix_rt::test]
async fn a_published_job_reads_pending_until_a_worker_starts_it() {
    let sink = Sink::start();
    let backends = Backends::new("job-pending");
    // A scheduler alone: the job is published and confirmed, nobody takes it.
    let app = spawn_app_as(
        taskqueue::Role::Scheduler,
        config(&backends),
        vec![task_to("queued", sink.url("/ok/queued"), 3)],
        Arc::new(SystemClock),
    )
    .await;
    trigger(&app, "queued", json!(["dora"])).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let message = loop {
        let mut messages = backends.take_all("taskqueue.jobs.normal").await;
        if let Some((_, body)) = messages.pop() {
            assert!(messages.is_empty(), "one job: {messages:?}");
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the trigger's job was never queued"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let job = message["job"]["id"].as_str().unwrap().to_owned();

    let body = wait_status(&app, &job, "pending").await;
    assert_eq!(body["task_type_id"], "queued", "{body}");
    assert_eq!(body["user_id"], "dora", "{body}");
    assert_eq!(body["attempt"], 1, "{body}");
    assert_eq!(body["result"]["job_id"], job.as_str(), "{body}");
    assert_eq!(
        body["result"]["next_attempt"], message["job"]["execute_after"],
        "a pending job's next attempt is when it is due: {body}"
    );
    assert_eq!(body["attempts"], json!([]), "{body}");
    assert!(sink.received().is_empty(), "nobody ran it");
}
