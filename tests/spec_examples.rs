//! The specification's documents parse verbatim and re-serialise to equal
//! JSON values: the scheduler config, the worker config, `tasks.yaml` and
//! the queue message; plus JSON round trips of the other spec types.

use std::{collections::BTreeMap, path::PathBuf};

use actors::domain::{ExecutionResult, JobEnvelope, UserPreference};
use serde_json::{Value, json};
use taskqueue::configuration::{TaskFile, load_tasks_with, load_with};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/spec")
        .join(name)
}

fn no_env() -> BTreeMap<String, String> {
    BTreeMap::new()
}

/// The document as generic YAML, converted to JSON: the reference.
fn reference(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

/// Fields the service configuration has beyond the spec (extensions,
/// written with their defaults when a document omits them).
const EXTENSIONS: &[&str] = &[
    "redis.prefix",
    "redis.mode",
    "redis.master_name",
    "queue.type",
    "execution.max_retry_delay",
    "execution.max_token_wait",
    "execution.throttles_per_attempt",
    "execution.max_throttled_age",
    "monitoring.metrics_retention",
    "monitoring.result_retention",
    "monitoring.log_format",
    "monitoring.record_pending",
    "api",
    "backend",
];

/// Every value of `reference` is in `typed` unchanged; anything more in
/// `typed` must be a documented extension. Returns the extensions seen.
fn check_contains(reference: &Value, typed: &Value, path: &str, extras: &mut Vec<String>) {
    match (reference, typed) {
        (Value::Object(want), Value::Object(have)) => {
            for (key, value) in want {
                let field = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                let found = have.get(key).unwrap_or_else(|| panic!("{field} lost"));
                check_contains(value, found, &field, extras);
            }
            for key in have.keys().filter(|k| !want.contains_key(*k)) {
                let field = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                assert!(
                    EXTENSIONS.contains(&field.as_str()),
                    "{field} is written back but is neither in the document nor an extension"
                );
                extras.push(field);
            }
        }
        _ => assert_eq!(reference, typed, "at {path}"),
    }
}

#[test]
fn scheduler_and_worker_configs_round_trip() {
    let loaded = load_with(
        &[fixture("scheduler.yaml"), fixture("worker.yaml")],
        &no_env(),
    )
    .unwrap_or_else(|errors| panic!("{errors}"));
    let typed = serde_json::to_value(&loaded.service).unwrap();
    // The two documents have disjoint sections: one service file.
    let mut both = reference("scheduler.yaml");
    let Value::Object(worker) = reference("worker.yaml") else {
        panic!("worker config is not a mapping")
    };
    both.as_object_mut().unwrap().extend(worker);
    let mut extras = Vec::new();
    check_contains(&both, &typed, "", &mut extras);
    // Together they name every spec field: only extensions remain.
    extras.sort();
    let mut expected: Vec<String> = EXTENSIONS.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(extras, expected);
    // The spec's scheduler config names tasks.yaml, found next to it.
    assert_eq!(loaded.tasks_file, fixture("tasks.yaml"));
    assert_eq!(loaded.tasks.len(), 2);
}

#[test]
fn scheduler_config_values_are_the_documented_ones() {
    let loaded = load_with(&[fixture("scheduler.yaml")], &no_env()).unwrap();
    let s = &loaded.service;
    assert_eq!(s.scheduler.check_interval.as_secs(), 60);
    assert_eq!(s.scheduler.distribution_window.as_secs(), 1800);
    assert_eq!(s.scheduler.batch_size, 1000);
    assert_eq!(s.redis.addresses, ["localhost:6379"]);
    assert_eq!(s.queue.url, "amqp://guest:guest@localhost:5672/");
    assert_eq!(s.tasks.reload_interval.as_secs(), 300);
}

#[test]
fn tasks_yaml_round_trips() {
    let (tasks, warnings) = load_tasks_with(&fixture("tasks.yaml"), &Default::default(), &no_env())
        .unwrap_or_else(|errors| panic!("{errors}"));
    assert!(warnings.is_empty(), "{warnings:?}");
    let typed = serde_json::to_value(TaskFile {
        tasks: tasks.clone(),
    })
    .unwrap();
    assert_eq!(typed, reference("tasks.yaml"));
    // The serde derive reads the same document to the same value.
    let text = std::fs::read_to_string(fixture("tasks.yaml")).unwrap();
    let derived: TaskFile = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(derived.tasks, tasks);
}

#[test]
fn message_example_round_trips() {
    let text = std::fs::read_to_string(fixture("message.json")).unwrap();
    let envelope: JobEnvelope = serde_json::from_str(&text).unwrap();
    assert_eq!(envelope.job.payload, br#"{"user_id":"12345"}"#);
    assert_eq!(envelope.metadata.distribution_slot, Some(93));
    let reference: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(serde_json::to_value(&envelope).unwrap(), reference);
}

fn check_round_trip<T>(document: Value)
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let typed: T = serde_json::from_value(document.clone()).unwrap();
    assert_eq!(serde_json::to_value(&typed).unwrap(), document);
}

#[test]
fn user_preference_round_trips() {
    check_round_trip::<UserPreference>(json!({
        "user_id": "user_12345",
        "enabled_tasks": {"daily_report": true, "hourly_sync": false},
        "task_settings": {
            "daily_report": {
                "custom_interval": {
                    "type": "daily", "value": 2,
                    "timezone": "America/New_York", "at_time": "07:30"
                },
                "parameters": {"format": "pdf"}
            },
            "hourly_sync": {}
        },
        "last_modified": "2024-01-15T10:00:00Z"
    }));
}

#[test]
fn execution_result_round_trips() {
    check_round_trip::<ExecutionResult>(json!({
        "job_id": "550e8400-e29b-41d4-a716-446655440000",
        "status": "retrying",
        "started_at": "2024-01-15T10:15:30Z",
        "completed_at": "2024-01-15T10:15:31.234Z",
        "duration": 1_234_000_000u64,
        "error": {"code": "http_503", "message": "service unavailable", "retry": true},
        "response": "eyJvayI6ZmFsc2V9",
        "next_attempt": "2024-01-15T10:17:31Z"
    }));
    check_round_trip::<ExecutionResult>(json!({
        "job_id": "550e8400-e29b-41d4-a716-446655440000",
        "status": "success",
        "started_at": "2024-01-15T10:15:30Z",
        "completed_at": "2024-01-15T10:15:30.500Z",
        "duration": 500_000_000u64
    }));
}

#[test]
fn example_configs_are_the_spec_documents_verbatim() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for name in ["scheduler.yaml", "worker.yaml", "tasks.yaml"] {
        let shipped = std::fs::read_to_string(root.join("config").join(name)).unwrap();
        let spec = std::fs::read_to_string(fixture(name)).unwrap();
        assert_eq!(shipped, spec, "config/{name} differs from the spec");
    }
}

/// Every field of the spec's example configuration reaches the component
/// that uses it: the actor tree's settings, the Redis client, the broker,
/// the executor's call timeouts, the logger; and `pool_size`, which has no
/// component, is reported as ignored.
#[test]
fn every_example_field_reaches_its_component() {
    use std::time::Duration;

    use actors::{executor::call_timeout, store::redis::RedisTarget};
    use taskqueue::{
        Role,
        startup::{amqp_options, amqp_url, pipeline_config, redis_options, redis_target},
    };

    let loaded = load_with(
        &[fixture("scheduler.yaml"), fixture("worker.yaml")],
        &no_env(),
    )
    .unwrap_or_else(|errors| panic!("{errors}"));
    let service = &loaded.service;
    let minutes = |m: u64| Duration::from_secs(60 * m);

    // scheduler, tasks, worker, rate_limit, execution, monitoring, queue.prefetch
    let pipeline = pipeline_config(service, Role::All);
    assert_eq!(pipeline.check_interval, minutes(1));
    assert_eq!(pipeline.distribution_window, minutes(30));
    assert_eq!(pipeline.batch_size, 1000);
    assert_eq!(pipeline.reload_interval, minutes(5));
    assert_eq!(pipeline.pool_size, 10);
    assert_eq!(pipeline.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(pipeline.prefetch, 10);
    assert_eq!(pipeline.global_rate, Some(100));
    let per_task: Vec<(String, u32)> = pipeline
        .per_task_rate
        .iter()
        .map(|(task, limit)| (task.to_string(), *limit))
        .collect();
    assert_eq!(
        per_task,
        [
            ("api_heavy".to_owned(), 10),
            ("report_generation".to_owned(), 50)
        ]
    );
    assert_eq!(pipeline.execution.timeout, minutes(5));
    assert_eq!(pipeline.execution.max_retries, 3);
    assert_eq!(pipeline.execution.retry_delay, minutes(1));
    assert_eq!(pipeline.metrics_interval, Duration::from_secs(10));
    assert_eq!(service.monitoring.log_level, "info");
    assert!(tracing_subscriber::EnvFilter::try_new(&service.monitoring.log_level).is_ok());

    // redis: the address, password and db make the client's target.
    assert_eq!(
        redis_target(&service.redis),
        RedisTarget::Url("redis://localhost:6379/0".to_owned())
    );
    assert_eq!(redis_options(service).max_retries, 3);
    let pool_warning = loaded
        .warnings
        .iter()
        .map(ToString::to_string)
        .find(|w| w.contains("redis.pool_size"))
        .expect("pool_size reported");
    assert!(pool_warning.contains("10 is ignored"), "{pool_warning}");

    // queue
    assert_eq!(
        amqp_url(&service.queue.url),
        "amqp://guest:guest@localhost:5672/%2f"
    );
    let broker = amqp_options(service);
    assert_eq!(broker.exchange, "taskqueue");
    assert!(broker.durable);
    assert_eq!(broker.prefetch, 10);

    // tasks.yaml, found through tasks.config_file: what the executor uses.
    assert_eq!(loaded.tasks_file, fixture("tasks.yaml"));
    let task = |id: &str| {
        loaded
            .tasks
            .iter()
            .find(|t| t.id.as_str() == id)
            .unwrap_or_else(|| panic!("{id} loaded"))
    };
    let daily = task("daily_report");
    assert_eq!(call_timeout(daily, &pipeline.execution), minutes(4));
    assert_eq!(daily.retries, Some(3));
    assert_eq!(daily.config.method, "POST");
    assert_eq!(
        daily.config.endpoint,
        "https://api.example.com/reports/daily"
    );
    assert_eq!(
        daily.config.headers.get("Content-Type").map(String::as_str),
        Some("application/json")
    );
    let hourly = task("hourly_sync");
    assert_eq!(call_timeout(hourly, &pipeline.execution), minutes(2));
    assert_eq!(hourly.retries, Some(2));
    assert_eq!(hourly.config.method, "GET");
}
