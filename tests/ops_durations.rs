//! `GET /tasks/{task_type_id}/durations?since=` on the real Redis and
//! RabbitMQ: the durations of real executions show up after a metrics
//! flush; `since` selects by completion time, with nearest-rank
//! percentiles; a bad `since` is a 400 and an unknown task a 404, both
//! JSON.

use crate::support;

use std::{sync::Arc, time::Duration};

use actors::{
    clock::SystemClock,
    domain::TaskTypeId,
    store::{DurationSample, MetricsBatch, MetricsStore},
};
use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use support::*;
use uuid::Uuid;

fn task_to(id: &str, endpoint: String) -> actors::domain::TaskType {
    task(json!({
        "id": id, "name": id,
        "interval": {"type": "daily", "value": 1},
        "timeout": "10s", "retries": 0,
        "config": {"endpoint": endpoint, "method": "POST"}
    }))
}

fn instant(at: chrono::DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[actix_rt::test]
async fn durations_since_an_instant_with_percentiles() {
    let sink = Sink::start();
    let backends = Backends::new("durations");
    let tasks = vec![
        task_to("slow", sink.url("/slow/200/slow")),
        task_to("known", sink.url("/ok/known")),
    ];
    let app = spawn_app(config(&backends), tasks, Arc::new(SystemClock)).await;
    let started = Utc::now();

    // Real executions: each call takes at least 200 ms.
    let (status, body) = post(
        app.address,
        "/schedule/trigger",
        &json!({"task_type_id": "slow", "user_ids": ["a", "b", "c"], "execute_immediately": true}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let path = format!("/tasks/slow/durations?since={}", instant(started));
    let mut answer = Value::Null;
    for _ in 0..300 {
        let (status, body) = get(app.address, &path).await;
        assert_eq!(status, 200, "{body}");
        answer = body;
        if answer["count"].as_u64() >= Some(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer["count"], 3, "{answer}");
    assert_eq!(answer["task_type_id"], "slow");
    let samples = answer["durations"].as_array().unwrap();
    assert_eq!(samples.len(), 3, "{answer}");
    for sample in samples {
        assert!(sample["duration_ms"].as_u64().unwrap() >= 200, "{sample}");
        let completed: chrono::DateTime<Utc> =
            sample["completed_at"].as_str().unwrap().parse().unwrap();
        assert!(completed >= started, "{sample}");
    }
    assert!(answer["p50_ms"].as_u64().unwrap() >= 200, "{answer}");

    // Known samples, one second apart, written as the metrics flush writes
    // them: `since` keeps the last three.
    let store = backends.store().await;
    let known = TaskTypeId::parse("known").unwrap();
    let base = Utc::now() - chrono::Duration::minutes(10);
    let at = |s: i64| base + chrono::Duration::seconds(s);
    let durations: Vec<DurationSample> = [10u64, 20, 30, 40]
        .iter()
        .enumerate()
        .map(|(n, &ms)| DurationSample {
            task_type_id: known.clone(),
            job_id: Uuid::new_v4(),
            completed_at: at(n as i64),
            duration_ms: ms,
        })
        .collect();
    store
        .record_metrics(&MetricsBatch {
            durations,
            ..MetricsBatch::default()
        })
        .await
        .unwrap();
    let (status, body) = get(
        app.address,
        &format!("/tasks/known/durations?since={}", instant(at(1))),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 3, "{body}");
    assert_eq!(
        (
            &body["p50_ms"],
            &body["p90_ms"],
            &body["p99_ms"],
            &body["max_ms"]
        ),
        (&json!(30), &json!(40), &json!(40), &json!(40)),
        "{body}"
    );
    let listed: Vec<u64> = body["durations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["duration_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, vec![20, 30, 40]);
    // Nothing since a later instant: no percentiles.
    let (status, body) = get(
        app.address,
        &format!("/tasks/known/durations?since={}", instant(at(60))),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 0, "{body}");
    assert!(body["p50_ms"].is_null(), "{body}");

    // Bad input: JSON errors.
    for bad in ["yesterday", "2024-13-01T00:00:00Z", "2024-01-15"] {
        let (status, body) = get(app.address, &format!("/tasks/known/durations?since={bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("since"),
            "{body}"
        );
    }
    let (status, body) = get(app.address, "/tasks/nope/durations").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
}
