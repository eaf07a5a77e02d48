//! The fault suite, bad input: the corpus of malformed tasks files under
//! `tests/corpus/tasks/` (each names the error `taskqueue validate` must
//! report: file, task, field), property tests of the config parser and of
//! the job message decoder (never a panic, garbage is an error), a property
//! test over the API (never a 5xx, every 4xx a JSON error), and poison
//! messages of every kind through a running worker (each in the failed
//! queue with a reason, the worker going on).

use crate::support;

use std::{collections::BTreeMap, path::PathBuf, process::Command, sync::Arc, time::Duration};

use actors::{
    broker::{QUEUE_FAILED, QUEUE_NORMAL},
    clock::SystemClock,
    domain::{Job, JobEnvelope, JobMetadata, JobSource, Priority, TaskTypeId, UserId},
};
use chrono::Utc;
use proptest::prelude::*;
use serde_json::{Value, json};
use support::*;

fn corpus() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/tasks");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_malformed_tasks_file_of_the_corpus_is_rejected_naming_file_task_and_field() {
    let files = corpus();
    assert!(files.len() >= 20, "{} files", files.len());
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: no `# expect:` line", file.display()));
        let output = Command::new(env!("CARGO_BIN_EXE_taskqueue"))
            .arg("validate")
            .arg("--config")
            .arg(file)
            .env_remove("TASKQUEUE_CONFIG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{}: {stderr}",
            file.display()
        );
        let name = file.display().to_string();
        assert!(
            stderr
                .lines()
                .any(|line| line.starts_with(&format!("{name}:")) && line.contains(expect)),
            "{}: no `{name}:..: {expect}` in\n{stderr}",
            file.display()
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

const VALID_TASKS: &str = "\
tasks:
  - id: daily_report
    name: Daily report
    interval: { type: daily, value: 1, timezone: UTC, at_time: \"00:00\" }
    timeout: 5m
    retries: 3
    config: { endpoint: \"https://api.example.com/reports\", method: POST }
";

fn load_text(text: &str) -> Result<taskqueue::configuration::LoadedConfig, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("taskqueue.yaml");
    std::fs::write(&path, text).unwrap();
    taskqueue::configuration::load_with(&[path], &BTreeMap::<String, String>::new())
        .map_err(|errors| format!("{} problem(s)", errors.problems.len()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary bytes never make the config parser panic.
    #[test]
    fn the_config_parser_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("taskqueue.yaml");
        std::fs::write(&path, &bytes).unwrap();
        let _ = taskqueue::configuration::load_with(&[path], &BTreeMap::<String, String>::new());
    }

    /// A valid file with any span overwritten by garbage never panics, and
    /// when it still loads its tasks are the valid one or none.
    #[test]
    fn a_corrupted_tasks_file_is_an_error_or_still_valid(
        at in 0..VALID_TASKS.len(),
        len in 0..24usize,
        garbage in "[ -~\\n\\t]{0,24}",
    ) {
        let mut bytes = VALID_TASKS.as_bytes().to_vec();
        let end = (at + len).min(bytes.len());
        bytes.splice(at..end, garbage.bytes());
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if let Ok(loaded) = load_text(&text) {
            prop_assert!(loaded.tasks.len() <= 1, "{text}");
        }
    }

    /// An unknown field anywhere in a task is always an error, never a
    /// silently ignored success.
    #[test]
    fn an_unknown_task_field_is_always_an_error(field in "[a-z]{3,12}", value in "[a-z0-9]{1,8}") {
        prop_assume!(![
            "id", "name", "description", "interval", "timeout", "retries", "config",
            "priority", "catchup_window", "misfire", "overlap",
        ].contains(&field.as_str()));
        let text = VALID_TASKS.replace("    retries: 3\n", &format!("    retries: 3\n    {field}: {value}\n"));
        prop_assert!(load_text(&text).is_err(), "{text}");
    }

    /// The job decoder (the envelope's serde) never panics on bytes.
    #[test]
    fn the_message_decoder_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = serde_json::from_slice::<JobEnvelope>(&bytes);
    }

    /// A valid envelope with one field replaced by a wrong-typed value, or
    /// removed, does not decode.
    #[test]
    fn an_envelope_with_a_broken_field_does_not_decode(
        field in prop::sample::select(vec![
            "id", "task_type_id", "user_id", "scheduled_at", "execute_after", "attempt",
            "priority", "payload", "created_at",
        ]),
        replacement in prop_oneof![
            Just(None),
            Just(Some(json!(null))),
            Just(Some(json!([1, 2]))),
            Just(Some(json!({"x": 1}))),
            Just(Some(json!(-1.5))),
            Just(Some(json!("not valid!! *:"))),
        ],
    ) {
        let mut value = serde_json::to_value(envelope("daily_report", "user_1")).unwrap();
        match &replacement {
            None => { value["job"].as_object_mut().unwrap().remove(field); }
            Some(v) => value["job"][field] = v.clone(),
        }
        let decoded = serde_json::from_value::<JobEnvelope>(value.clone());
        prop_assert!(decoded.is_err(), "{field} = {replacement:?} decoded: {value}");
    }
}

fn envelope(task: &str, user: &str) -> JobEnvelope {
    let now = Utc::now();
    let task = TaskTypeId::parse(task).unwrap();
    let user = UserId::parse(user).unwrap();
    JobEnvelope::new(
        Job {
            id: actors::domain::job_id(&task, &user, now),
            task_type_id: task,
            user_id: user,
            scheduled_at: now,
            execute_after: now,
            attempt: 1,
            priority: Priority::Normal,
            payload: b"{}".to_vec(),
            created_at: now,
        },
        JobMetadata {
            correlation_id: "fault-suite".into(),
            source: JobSource::Trigger,
            distribution_slot: None,
            origin: None,
        },
    )
}

/// One random request: method, path, body.
fn request() -> impl Strategy<Value = (String, String, Option<String>)> {
    let segment = prop_oneof![
        Just(String::new()),
        Just("users".to_owned()),
        Just("tasks".to_owned()),
        Just("preferences".to_owned()),
        Just("schedule".to_owned()),
        Just("trigger".to_owned()),
        Just("status".to_owned()),
        Just("report".to_owned()),
        Just("user_1".to_owned()),
        Just("%00".to_owned()),
        Just("%2F".to_owned()),
        Just("a%20b".to_owned()),
        Just("..".to_owned()),
        Just("x".repeat(300)),
        "[a-z0-9_*:-]{1,12}",
    ];
    let template = prop_oneof![
        Just("/users/{}/tasks/{}".to_owned()),
        Just("/users/{}/preferences".to_owned()),
        Just("/schedule/trigger".to_owned()),
        Just("/schedule/status/{}".to_owned()),
        Just("/health".to_owned()),
        Just("/stats".to_owned()),
        Just("/{}/{}".to_owned()),
    ];
    let path = (template, segment.clone(), segment)
        .prop_map(|(template, a, b)| template.replacen("{}", &a, 1).replacen("{}", &b, 1));
    let method = prop::sample::select(vec![
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS",
    ]);
    let body = prop_oneof![
        Just(None),
        Just(Some(String::new())),
        Just(Some("{".to_owned())),
        Just(Some("null".to_owned())),
        Just(Some("[]".to_owned())),
        Just(Some(r#"{"enabled": "yes"}"#.to_owned())),
        Just(Some(
            r#"{"enabled": true, "settings": {"interval": {"type": "fortnightly", "value": 0}}}"#
                .to_owned()
        )),
        Just(Some(
            r#"{"task_type_id": "report", "user_ids": [""]}"#.to_owned()
        )),
        Just(Some(r#"{"task_type_id": "nope"}"#.to_owned())),
        Just(Some(r#"{"task_type_id": 5, "extra": 1}"#.to_owned())),
        Just(Some(format!(
            r#"{{"task_type_id": "report", "user_ids": ["{}"]}}"#,
            "u".repeat(5000)
        ))),
        any::<String>().prop_map(Some),
    ];
    (method.prop_map(str::to_owned), path, body)
}

#[actix_rt::test]
async fn the_api_answers_random_requests_without_a_5xx_and_with_json_errors() {
    let mut config = taskqueue::configuration::ServiceConfig {
        backend: taskqueue::configuration::Backend::Embedded,
        ..Default::default()
    };
    config.api.bind = "127.0.0.1:0".parse().unwrap();
    let report = task(json!({
        "id": "report", "name": "Report",
        "interval": {"type": "daily", "value": 1, "timezone": "UTC"},
        "timeout": "5s",
        "config": {"endpoint": "http://127.0.0.1:9/never", "method": "POST"}
    }));
    let app = spawn_app(config, vec![report], Arc::new(SystemClock)).await;
    let address = app.address;
    let result = tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = reqwest::Client::new();
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 400,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        runner.run(&request(), |(method, path, body)| {
            let (status, text, content_type) = runtime.block_on(async {
                let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
                let mut request = client.request(method, format!("http://{address}{path}"));
                if let Some(body) = &body {
                    request = request
                        .header("content-type", "application/json")
                        .body(body.clone());
                }
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let content_type = response
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                (
                    status,
                    response.text().await.unwrap_or_default(),
                    content_type,
                )
            });
            prop_assert!(status < 500, "{path}: {status} {text}");
            if (400..500).contains(&status) {
                // A HEAD answer has no body (RFC 9110, 9.3.2): it is a JSON
                // error by its content type alone.
                if method != "HEAD" {
                    let value: Value = serde_json::from_str(&text).map_err(|e| {
                        TestCaseError::fail(format!("{method} {path}: {status} {text}: {e}"))
                    })?;
                    prop_assert!(value["error"]["code"].is_string(), "{path}: {text}");
                }
                prop_assert!(
                    content_type.starts_with("application/json"),
                    "{method} {path}: {status} {content_type}"
                );
            }
            Ok(())
        })
    })
    .await
    .unwrap();
    if let Err(error) = result {
        panic!("{error}");
    }
}

#[actix_rt::test]
async fn poison_messages_of_every_kind_reach_the_failed_queue_with_a_reason_and_the_worker_goes_on()
{
    use lapin::{BasicProperties, Connection, ConnectionProperties, options::BasicPublishOptions};
    let ledger = Ledger::start();
    let backends = Backends::new("fault-poison");
    let now = Utc::now();
    let config = config_file(
        &backends,
        "",
        &hourly_task("work", now, &ledger.url("/ok/work")),
    );
    let address = free_address();
    let mut worker = serve_as(&config, address, "worker");
    wait_until_up(address).await;

    let good = |user: &str| serde_json::to_vec(&envelope("work", user)).unwrap();
    let valid = serde_json::to_value(envelope("work", "user_x")).unwrap();
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut value = valid.clone();
        edit(&mut value);
        serde_json::to_vec(&value).unwrap()
    };
    let poisons: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "bad json",
            "malformed",
            b"{\"version\": \"1.0\", \"job\": ".to_vec(),
        ),
        ("not json", "malformed", b"\xff\xfe garbage".to_vec()),
        ("empty", "malformed", Vec::new()),
        (
            "missing user_id",
            "malformed",
            with(&|v| {
                v["job"].as_object_mut().unwrap().remove("user_id");
            }),
        ),
        (
            "missing job",
            "malformed",
            with(&|v| {
                v.as_object_mut().unwrap().remove("job");
            }),
        ),
        (
            "wrong type attempt",
            "malformed",
            with(&|v| v["job"]["attempt"] = json!("one")),
        ),
        (
            "wrong type id",
            "malformed",
            with(&|v| v["job"]["id"] = json!(42)),
        ),
        (
            "bad payload",
            "malformed",
            with(&|v| v["job"]["payload"] = json!("%%%")),
        ),
        (
            "wrong version",
            "unsupported_version",
            with(&|v| v["version"] = json!("9.9")),
        ),
        (
            "huge",
            "malformed",
            format!(
                "{{\"version\": \"1.0\", \"junk\": \"{}\"}}",
                "x".repeat(4 << 20)
            )
            .into_bytes(),
        ),
        (
            // A job of an unknown task is deferred while a reload may still
            // bring its task; one created past that grace is dead-lettered.
            "unknown task, past its grace",
            "unknown_task_type",
            serde_json::to_vec(&{
                let mut stale = envelope("no_such_task", "user_y");
                stale.job.created_at -= chrono::Duration::from_std(
                    actors::executor::UNKNOWN_TASK_GRACE + Duration::from_secs(60),
                )
                .unwrap();
                stale
            })
            .unwrap(),
        ),
    ];
    let connection = Connection::connect(&backends.amqp_url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut bodies = vec![good("before")];
    bodies.extend(poisons.iter().map(|(_, _, body)| body.clone()));
    bodies.push(good("after"));
    for body in &bodies {
        channel
            .basic_publish(
                "taskqueue".into(),
                QUEUE_NORMAL.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
    }
    assert_eq!(
        ledger
            .wait_delivered(2, Duration::from_secs(30), Duration::ZERO)
            .await,
        2,
        "the good jobs before and after the poison ran"
    );
    let mut failed = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while failed.len() < poisons.len() && std::time::Instant::now() < deadline {
        failed.extend(backends.take_all(QUEUE_FAILED).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut got: Vec<String> = failed
        .iter()
        .map(|(headers, _)| {
            headers
                .get("x-taskqueue-reason")
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    let mut want: Vec<String> = poisons
        .iter()
        .map(|(_, reason, _)| reason.to_string())
        .collect();
    got.sort();
    want.sort();
    println!(
        "poison: {} messages, failed-queue reasons {got:?}",
        poisons.len()
    );
    assert_eq!(got, want);
    let (status, health) = get(address, "/health").await;
    assert_eq!(status, 200, "{health}");
    let _ = connection.close(0, "done".into()).await;
    assert_eq!(terminate(&mut worker), 0);
    let _ = std::fs::remove_file(config);
}
