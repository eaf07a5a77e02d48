//! `taskqueue users import` end to end: the binary against a real Redis
//! (`TASKQUEUE_TEST_REDIS_URL`), each test in its own key prefix.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Command, Output},
};

use actors::{
    domain::{TaskTypeId, UserId},
    slot::spread_key,
    store::{
        Keys, PreferenceStore, ScheduleStore, SpreadCursor,
        redis::{RedisOptions, RedisStore},
    },
};
use support::{delete_prefix, redis_url};
use uuid::Uuid;

use crate::support;

const TASKS_YAML: &str = r#"
tasks:
  - id: daily_report
    name: Daily report
    interval: { type: daily, value: 1 }
    timeout: 30s
    config: { endpoint: "http://127.0.0.1:9/report", method: POST }
  - id: weekly_digest
    name: Weekly digest
    interval: { type: weekly, value: 1 }
    timeout: 30s
    config: { endpoint: "http://127.0.0.1:9/digest", method: POST }
"#;

const GOOD_1: &str = r#"{"user_id":"user_1","enabled_tasks":{"daily_report":true,"weekly_digest":false},"task_settings":{"daily_report":{"custom_interval":{"type":"daily","value":1,"timezone":"Europe/Paris","at_time":"07:30"},"parameters":{"lang":"fr"}}},"last_modified":"2024-01-15T10:00:00Z"}"#;
const GOOD_2: &str = r#"{"user_id":"user_2","enabled_tasks":{"weekly_digest":true},"task_settings":{},"last_modified":"2024-01-16T10:00:00Z"}"#;
const UNKNOWN_TASK: &str = r#"{"user_id":"user_3","enabled_tasks":{"no_such_task":true},"last_modified":"2024-01-15T10:00:00Z"}"#;
const BAD_USER: &str = r#"{"user_id":"user:4","enabled_tasks":{"daily_report":true},"last_modified":"2024-01-15T10:00:00Z"}"#;

struct Scratch {
    prefix: String,
    dir: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let prefix = format!("tqimport-{}", Uuid::new_v4().simple());
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tasks.yaml"), TASKS_YAML).unwrap();
        Scratch { prefix, dir }
    }

    fn write_lines(&self, lines: &[&str]) -> PathBuf {
        let path = self.dir.join("users.jsonl");
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    }

    fn import(&self, file: &PathBuf, extra: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_taskqueue"))
            .args(["users", "import"])
            .arg(file)
            .args(["--redis-url", &redis_url(), "--prefix", &self.prefix])
            .args(extra)
            .output()
            .unwrap()
    }

    async fn store(&self) -> RedisStore {
        RedisStore::connect(
            &redis_url(),
            Keys::new(self.prefix.clone()),
            RedisOptions::default(),
        )
        .await
        .unwrap()
    }

    async fn cleanup(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        delete_prefix(&self.prefix);
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

fn task(id: &str) -> TaskTypeId {
    TaskTypeId::parse(id).unwrap()
}

#[tokio::test]
async fn bad_lines_are_rejected_with_line_numbers_and_the_rest_imported() {
    let scratch = Scratch::new();
    let file = scratch.write_lines(&[
        GOOD_1,
        "{not json",
        "",
        UNKNOWN_TASK,
        BAD_USER,
        GOOD_2,
        r#"{"user_id":"user_5","enabled_tasks":{},"last_modified":"2024-01-15T10:00:00Z"}"#,
    ]);
    let tasks = scratch.dir.join("tasks.yaml");
    let output = scratch.import(&file, &["--tasks", tasks.to_str().unwrap(), "--batch", "1"]);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("imported 2 users, rejected 4 lines"), "{out}");
    let expected_rejections = [
        ("line 2:", "not a UserPreference"),
        ("line 4:", "unknown task id(s): no_such_task"),
        ("line 5:", "not a UserPreference"),
        ("line 7:", "names no task"),
    ];
    for (line, reason) in expected_rejections {
        let row = out
            .lines()
            .find(|row| row.trim_start().starts_with(line))
            .unwrap_or_else(|| panic!("no {line} in {out}"));
        assert!(row.contains(reason), "{row}");
    }

    let store = scratch.store().await;
    let first = store.preferences(&user("user_1")).await.unwrap().unwrap();
    let want: serde_json::Value = serde_json::from_str(GOOD_1).unwrap();
    assert_eq!(serde_json::to_value(&first).unwrap(), want);
    let second = store.preferences(&user("user_2")).await.unwrap().unwrap();
    assert_eq!(
        second.enabled_tasks,
        BTreeMap::from([(task("weekly_digest"), true)])
    );
    assert_eq!(store.preferences(&user("user_3")).await.unwrap(), None);
    // The scheduler's indexes came with the import.
    assert_eq!(
        store
            .enabled_users_after(&task("weekly_digest"), None, 10)
            .await
            .unwrap(),
        vec![user("user_2")]
    );
    assert_eq!(
        store
            .enabled_user_count(&task("daily_report"))
            .await
            .unwrap(),
        1
    );
    let far = "2999-01-01T00:00:00Z".parse().unwrap();
    let due = store
        .due_custom_users(&task("daily_report"), far, 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].user_id, user("user_1"));
    scratch.cleanup().await;
}

#[tokio::test]
async fn a_clean_file_imports_every_user_and_exits_zero() {
    let scratch = Scratch::new();
    let lines: Vec<String> = (0..2500)
        .map(|n| {
            format!(
                r#"{{"user_id":"u{n}","enabled_tasks":{{"daily_report":true}},"last_modified":"2024-01-15T10:00:00Z"}}"#
            )
        })
        .collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let file = scratch.write_lines(&refs);
    // Without --tasks, task ids are not checked against a catalog.
    let output = scratch.import(&file, &["--batch", "1000"]);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{out}");
    assert!(
        out.contains("imported 2500 users, rejected 0 lines"),
        "{out}"
    );
    let store = scratch.store().await;
    assert_eq!(
        store
            .enabled_user_count(&task("daily_report"))
            .await
            .unwrap(),
        2500
    );
    // The index is scored by spread key and walks in spread order.
    let report = task("daily_report");
    let mut walked: Vec<SpreadCursor> = Vec::new();
    loop {
        let page = store
            .enabled_users_in_spread_order(&report, walked.last(), 1000)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        walked.extend(page);
    }
    assert_eq!(walked.len(), 2500);
    assert!(walked.windows(2).all(|pair| pair[0] < pair[1]));
    assert!(
        walked
            .iter()
            .all(|entry| entry.key == spread_key(&report, &entry.user))
    );
    let one = store.preferences(&user("u1234")).await.unwrap().unwrap();
    assert_eq!(
        one.last_modified,
        "2024-01-15T10:00:00Z"
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    );
    scratch.cleanup().await;
}

#[tokio::test]
async fn an_unreachable_redis_or_missing_file_is_a_hard_failure() {
    let scratch = Scratch::new();
    let file = scratch.write_lines(&[GOOD_2]);
    let output = Command::new(env!("CARGO_BIN_EXE_taskqueue"))
        .args(["users", "import"])
        .arg(&file)
        .args([
            "--redis-url",
            "redis://127.0.0.1:1/",
            "--prefix",
            &scratch.prefix,
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("connecting to"));
    let output = scratch.import(&scratch.dir.join("missing.jsonl"), &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.jsonl"));
    scratch.cleanup().await;
}

#[tokio::test]
async fn a_configuration_names_the_redis_prefix_and_the_tasks() {
    let scratch = Scratch::new();
    let url = redis_url();
    let address = url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let config = scratch.dir.join("taskqueue.yaml");
    std::fs::write(
        &config,
        format!(
            "redis:\n  addresses: [\"{address}\"]\n  prefix: {}\ntasks:\n  config_file: tasks.yaml\n",
            scratch.prefix
        ),
    )
    .unwrap();
    let file = scratch.write_lines(&[GOOD_2, UNKNOWN_TASK]);
    let output = Command::new(env!("CARGO_BIN_EXE_taskqueue"))
        .args(["users", "import"])
        .arg(&file)
        .arg("--config")
        .arg(&config)
        .env_remove("TASKQUEUE_REDIS_URL")
        .output()
        .unwrap();
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("imported 1 users, rejected 1 lines"), "{out}");
    assert!(out.contains("unknown task id(s): no_such_task"), "{out}");
    let store = scratch.store().await;
    assert_eq!(
        store
            .enabled_users_after(&task("weekly_digest"), None, 10)
            .await
            .unwrap(),
        vec![user("user_2")]
    );
    scratch.cleanup().await;
}
