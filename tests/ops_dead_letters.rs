//! Dead letters on the real Redis and RabbitMQ: listed with reason, last
//! error and attempts, paged; replayed with the same job id and attempts
//! reset (one successful call with the same `Idempotency-Key`), once even
//! when two replicas are asked at the same time; poison refused with a
//! reason; deleted by selection.

use crate::support;

use std::{sync::Arc, time::Duration};

use actors::{
    clock::SystemClock,
    domain::{Job, JobEnvelope, JobMetadata, JobSource, Priority, TaskTypeId, UserId},
    store::dead_letters::{DeadLetterRecord, DeadLetterStore},
};
use chrono::Utc;
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

async fn delete(address: std::net::SocketAddr, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .delete(format!("http://{address}/dead-letters"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn wait_listed(app: &RunningApp, query: &str, count: usize) -> Vec<Value> {
    let mut letters = Vec::new();
    for _ in 0..150 {
        let (status, body) = get(app.address, &format!("/dead-letters{query}")).await;
        assert_eq!(status, 200, "{body}");
        letters = body["dead_letters"].as_array().cloned().unwrap_or_default();
        if letters.len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    letters
}

fn job_of<'a>(letters: &'a [Value], user: &str) -> &'a Value {
    letters
        .iter()
        .find(|l| l["user_id"] == user)
        .unwrap_or_else(|| panic!("no dead letter of {user} in {letters:?}"))
}

#[actix_rt::test]
async fn dead_letters_are_listed_replayed_once_refused_when_poison_and_deleted() {
    let sink = Sink::start();
    let backends = Backends::new("dead-letters");
    let mut config = config(&backends);
    // The first 429 of a job dead-letters it (`throttled_too_long`); the
    // sink answers 200 to the second call with the same key.
    config.execution.throttles_per_attempt = 0;
    let tasks = vec![
        task_to("busy", sink.url("/throttle/busy")),
        task_to("gone", sink.url("/missing/gone")),
    ];
    let app = spawn_app(config.clone(), tasks.clone(), Arc::new(SystemClock)).await;
    let replica = spawn_app(config, tasks, Arc::new(SystemClock)).await;
    for (task, users) in [
        ("busy", json!(["alice", "bob"])),
        ("gone", json!(["carol"])),
    ] {
        let (status, body) = post(
            app.address,
            "/schedule/trigger",
            &json!({"task_type_id": task, "user_ids": users, "execute_immediately": true}),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    let first_calls = sink
        .wait_for("/throttle/", 2, Duration::from_secs(60))
        .await;
    assert_eq!(first_calls.len(), 2);

    // Listed with reason, last error and attempts, on either replica.
    let letters = wait_listed(&replica, "", 3).await;
    assert_eq!(letters.len(), 3, "{letters:?}");
    let alice = job_of(&letters, "alice");
    assert_eq!(alice["task_type_id"], "busy");
    assert_eq!(alice["reason"], "throttled_too_long", "{alice}");
    assert_eq!(alice["attempts"], 1);
    assert!(alice["last_error"]["code"].is_string(), "{alice}");
    let carol = job_of(&letters, "carol");
    assert_eq!(carol["reason"], "permanent_failure", "{carol}");
    assert!(carol["last_error"]["message"].is_string(), "{carol}");

    // Paging: two, then the last one; by task.
    let (_, page) = get(app.address, "/dead-letters?limit=2").await;
    assert_eq!(page["dead_letters"].as_array().unwrap().len(), 2, "{page}");
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, rest) = get(
        app.address,
        &format!("/dead-letters?limit=2&cursor={cursor}"),
    )
    .await;
    assert_eq!(rest["dead_letters"].as_array().unwrap().len(), 1, "{rest}");
    assert!(rest.get("next_cursor").is_none(), "{rest}");
    let mut paged: Vec<Value> = page["dead_letters"].as_array().unwrap().clone();
    paged.extend(rest["dead_letters"].as_array().unwrap().clone());
    let mut ids: Vec<&Value> = paged.iter().map(|l| &l["job_id"]).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "every dead letter once over the pages");
    let gone = wait_listed(&app, "?task_type_id=gone", 1).await;
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0]["user_id"], "carol");

    // Bad input is a 400 with the error shape.
    for query in [
        "?limit=0",
        "?limit=100000",
        "?cursor=nonsense",
        "?task_type_id=a:b",
    ] {
        let (status, body) = get(app.address, &format!("/dead-letters{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_error(&body, "bad_request");
    }
    for body in [
        json!({}),
        json!({"job_ids": ["x"], "task_type_id": "busy"}),
        json!({"job_ids": ["not-a-uuid"]}),
        json!({"job_ids": []}),
    ] {
        let (status, answer) = post(app.address, "/dead-letters/replay", &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_error(&answer, "bad_request");
    }

    // Replay of alice's job, asked of both replicas at once: one publishes
    // it, the other is refused; the endpoint sees one more call, with the
    // same key, attempt 1, and it succeeds.
    let alice_id = alice["job_id"].as_str().unwrap().to_owned();
    let body = json!({"job_ids": [alice_id]});
    let (one, two) = futures::join!(
        post(app.address, "/dead-letters/replay", &body),
        post(replica.address, "/dead-letters/replay", &body)
    );
    assert_eq!((one.0, two.0), (200, 200), "{one:?} {two:?}");
    let replayed: Vec<&Value> = [&one.1, &two.1]
        .iter()
        .flat_map(|b| b["replayed"].as_array().unwrap())
        .collect();
    assert_eq!(replayed, vec![&json!(alice_id)], "{one:?} {two:?}");
    let refused: Vec<&Value> = [&one.1, &two.1]
        .iter()
        .flat_map(|b| b["refused"].as_array().unwrap())
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    let alice_key = first_calls
        .iter()
        .find(|c| c.body["user_id"] == "alice")
        .unwrap()
        .key();
    let calls = sink
        .wait_for("/throttle/", 3, Duration::from_secs(60))
        .await;
    let alice_calls: Vec<&Received> = calls.iter().filter(|c| c.key() == alice_key).collect();
    assert_eq!(alice_calls.len(), 2, "{calls:?}");
    assert!(alice_calls[1].answered_ok);
    assert_eq!(alice_calls[1].attempt(), 1, "attempts reset");
    assert_eq!(alice_calls[1].body["job_id"], json!(alice_id));

    // Replayed jobs leave the index; a second replay is refused.
    let (_, again) = post(app.address, "/dead-letters/replay", &body).await;
    assert_eq!(again["replayed"], json!([]), "{again}");
    assert_eq!(
        again["refused"][0]["reason"], "not_dead_lettered",
        "{again}"
    );

    // Poison: a dead letter of a task no longer defined is refused.
    let store = backends.store().await;
    let poison = poison_record();
    store.record_dead_letter(&poison).await.unwrap();
    let (_, answer) = post(
        app.address,
        "/dead-letters/replay",
        &json!({"job_ids": [poison.envelope.job.id]}),
    )
    .await;
    assert_eq!(answer["replayed"], json!([]), "{answer}");
    assert_eq!(
        answer["refused"][0]["reason"], "unknown_task_type",
        "{answer}"
    );

    // Delete carol's (by task), then replay the rest of `busy` (bob).
    let (status, deleted) = delete(app.address, &json!({"task_type_id": "gone"})).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["deleted"], json!([carol["job_id"]]), "{deleted}");
    let (status, answer) = post(
        app.address,
        "/dead-letters/replay",
        &json!({"task_type_id": "busy"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let bob = job_of(&letters, "bob");
    assert_eq!(answer["replayed"], json!([bob["job_id"]]), "{answer}");
    let calls = sink
        .wait_for("/throttle/", 4, Duration::from_secs(60))
        .await;
    for user in ["alice", "bob"] {
        let key = first_calls
            .iter()
            .find(|c| c.body["user_id"] == user)
            .unwrap()
            .key();
        let ok = calls
            .iter()
            .filter(|c| c.key() == key && c.answered_ok)
            .count();
        assert_eq!(ok, 1, "{user}: one successful call with its key");
    }
    let left = wait_listed(&app, "", 1).await;
    assert_eq!(left.len(), 1, "only the poison is left: {left:?}");
    assert_eq!(left[0]["job_id"], json!(poison.envelope.job.id));
}

fn poison_record() -> DeadLetterRecord {
    let now = Utc::now();
    DeadLetterRecord {
        envelope: JobEnvelope::new(
            Job {
                id: Uuid::new_v4(),
                task_type_id: TaskTypeId::parse("retired").unwrap(),
                user_id: UserId::parse("dave").unwrap(),
                scheduled_at: now,
                execute_after: now,
                attempt: 1,
                priority: Priority::Normal,
                payload: Vec::new(),
                created_at: now,
            },
            JobMetadata {
                correlation_id: "test".into(),
                source: JobSource::Scheduler,
                distribution_slot: None,
                origin: None,
            },
        ),
        reason: actors::domain::DeadLetterReason::UnknownTaskType,
        last_error: None,
        attempts: 1,
        dead_lettered_at: now,
    }
}
