//! Configuration validation: one test per rule (each through [`check`]),
//! layering, environment overrides, `${ENV}` secrets, the "every problem at
//! once" report, and `taskqueue validate` as a black box.

use std::{collections::BTreeMap, path::PathBuf, process::Command};

use taskqueue::configuration::{
    ConfigErrors, ConfigProblem, LoadedConfig, RateLimitConfig, RedisMode, load_tasks_with,
    load_with,
};

/// A valid tasks file; cases break one line of it.
/// Lines: 2 id, 5 type, 6 value, 7 timezone, 8 at_time, 9 timeout,
/// 10 retries, 12 endpoint, 13 method, 15 header, 16 max_duration.
const TASKS: &str = "\
tasks:
  - id: daily_report
    name: Daily report
    interval:
      type: daily
      value: 1
      timezone: UTC
      at_time: \"00:00\"
    timeout: 5m
    retries: 3
    config:
      endpoint: https://api.example.com/reports
      method: POST
      headers:
        Content-Type: application/json
      max_duration: 4m
";

/// A configuration set-up: files in a fresh directory and an environment.
struct Setup {
    /// (name, content), loaded in order with `--config`.
    layers: Vec<(&'static str, String)>,
    /// (name, content), written but not named on the command line (such as
    /// `tasks.yaml`, found next to the last layer by default).
    files: Vec<(&'static str, String)>,
    env: Vec<(&'static str, &'static str)>,
}

impl Setup {
    fn tasks(tasks: impl Into<String>) -> Setup {
        Setup {
            layers: vec![("service.yaml", String::new())],
            files: vec![("tasks.yaml", tasks.into())],
            env: Vec::new(),
        }
    }

    fn service(service: &str) -> Setup {
        Setup {
            layers: vec![("service.yaml", service.to_owned())],
            files: vec![("tasks.yaml", TASKS.to_owned())],
            env: Vec::new(),
        }
    }

    fn env(mut self, vars: &[(&'static str, &'static str)]) -> Setup {
        self.env.extend_from_slice(vars);
        self
    }

    fn layer(mut self, name: &'static str, content: &str) -> Setup {
        self.layers.push((name, content.to_owned()));
        self
    }

    fn load(&self) -> (tempfile::TempDir, Result<LoadedConfig, ConfigErrors>) {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for (name, content) in self.layers.iter().chain(&self.files) {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, content).unwrap();
            paths.push(path);
        }
        paths.truncate(self.layers.len());
        let env: BTreeMap<String, String> = self
            .env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let result = load_with(&paths, &env);
        (dir, result)
    }
}

/// Loads `setup` and asserts that the problems reported (errors and
/// warnings, rendered) are exactly one per `expected` entry, each
/// containing it. Returns the configuration when it loaded.
fn check(setup: Setup, expected: &[&str]) -> Option<LoadedConfig> {
    let (_dir, result) = setup.load();
    let (problems, loaded): (Vec<ConfigProblem>, _) = match result {
        Ok(loaded) => (loaded.warnings.clone(), Some(loaded)),
        Err(errors) => (errors.problems, None),
    };
    let rendered: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        rendered.len(),
        expected.len(),
        "expected {expected:#?}\nfound {rendered:#?}"
    );
    for want in expected {
        assert!(
            rendered.iter().any(|r| r.contains(want)),
            "no problem contains {want:?}\nfound {rendered:#?}"
        );
    }
    loaded
}

/// [`check`] on [`TASKS`] with `from` replaced by `to`.
fn check_task(from: &str, to: &str, expected: &[&str]) {
    assert!(TASKS.contains(from), "{from:?} not in the base tasks file");
    let loaded = check(Setup::tasks(TASKS.replace(from, to)), expected);
    let has_error = expected.iter().any(|e| !e.contains("warning:"));
    assert_eq!(loaded.is_none(), has_error, "load result for {to:?}");
}

/// [`check`] on a service file `service` (with the valid tasks).
fn check_service(service: &str, expected: &[&str]) -> Option<LoadedConfig> {
    check(Setup::service(service), expected)
}

// --- task rules -----------------------------------------------------------

#[test]
fn the_base_tasks_file_is_valid() {
    let loaded = check(Setup::tasks(TASKS), &[]).unwrap();
    assert_eq!(loaded.tasks.len(), 1);
    assert_eq!(loaded.tasks[0].id.as_str(), "daily_report");
}

#[test]
fn duplicate_task_ids() {
    let twice = format!("{TASKS}{}", TASKS.strip_prefix("tasks:\n").unwrap());
    check(
        Setup::tasks(twice),
        &[
            "tasks.yaml:17:9: task daily_report: id: duplicate task id \"daily_report\"; first defined at line 2",
        ],
    );
}

#[test]
fn unknown_interval_type() {
    check_task(
        "type: daily",
        "type: yearly",
        &[
            "tasks.yaml:5:13: task daily_report: interval.type: unknown interval type \"yearly\" (hourly, daily, weekly, monthly)",
        ],
    );
}

#[test]
fn interval_value_below_one() {
    check_task(
        "value: 1",
        "value: 0",
        &["tasks.yaml:6:14: task daily_report: interval.value: must be at least 1, found 0"],
    );
    check_task(
        "value: 1",
        "value: -2",
        &["task daily_report: interval.value: must be at least 1, found -2"],
    );
}

#[test]
fn unknown_time_zone() {
    check_task(
        "timezone: UTC",
        "timezone: Mars/Base",
        &[
            "tasks.yaml:7:17: task daily_report: interval.timezone: unknown time zone \"Mars/Base\" (IANA names, e.g. Europe/Berlin)",
        ],
    );
}

#[test]
fn malformed_at_time() {
    for bad in ["\"7:30\"", "\"24:00\"", "\"12:00:60\"", "noon"] {
        let expected = format!(
            "tasks.yaml:8:16: task daily_report: interval.at_time: \"{}\" is not a time of day; expected HH:MM or HH:MM:SS",
            bad.trim_matches('"')
        );
        check_task("\"00:00\"", bad, &[&expected]);
    }
}

#[test]
fn zero_timeout() {
    check_task(
        "timeout: 5m",
        "timeout: 0s",
        &["tasks.yaml:9:14: task daily_report: timeout: must be longer than zero"],
    );
}

#[test]
fn missing_timeout() {
    check_task(
        "    timeout: 5m\n",
        "",
        &["tasks.yaml:2:5: task daily_report: timeout: missing; a duration longer than zero"],
    );
}

#[test]
fn timeout_without_a_unit() {
    check_task(
        "timeout: 5m",
        "timeout: 300",
        &[
            "task daily_report: timeout: expected a duration with a unit (e.g. 30s, 5m, 1h), found the bare number 300",
        ],
    );
}

#[test]
fn max_duration_longer_than_timeout() {
    check_task(
        "max_duration: 4m",
        "max_duration: 6m",
        &[
            "tasks.yaml:16:21: task daily_report: config.max_duration: 6m exceeds the task's timeout (5m)",
        ],
    );
}

#[test]
fn endpoint_not_an_absolute_http_url() {
    for bad in [
        "ftp://example.com/x",
        "/reports",
        "api.example.com/reports",
        "https://",
    ] {
        let expected = format!(
            "tasks.yaml:12:17: task daily_report: config.endpoint: {bad:?} is not an absolute http(s) URL"
        );
        check_task("https://api.example.com/reports", bad, &[&expected]);
    }
}

#[test]
fn unknown_http_method() {
    check_task(
        "method: POST",
        "method: FETCH",
        &[
            "tasks.yaml:13:15: task daily_report: config.method: unknown HTTP method \"FETCH\" (GET, POST, PUT, PATCH, DELETE)",
        ],
    );
    check_task(
        "method: POST",
        "method: post",
        &["config.method: unknown HTTP method \"post\""],
    );
}

#[test]
fn unresolved_env_reference_in_a_header() {
    check_task(
        "Content-Type: application/json",
        "Authorization: \"Bearer ${API_TOKEN}\"",
        &[
            "tasks.yaml:15:24: task daily_report: config.headers.Authorization: ${API_TOKEN} is not set in the environment",
        ],
    );
}

#[test]
fn unresolved_env_reference_in_the_redis_password() {
    let errors = check_service(
        "redis:\n  password: \"${REDIS_PASSWORD}\"\n",
        &["service.yaml:2:13: redis.password: ${REDIS_PASSWORD} is not set in the environment"],
    );
    assert!(errors.is_none());
}

#[test]
fn malformed_env_reference() {
    check_service(
        "queue:\n  url: \"amqp://u:${PW@host/\"\n",
        &["service.yaml:2:8: queue.url: malformed ${...} reference"],
    );
}

#[test]
fn weekday_not_mon_to_sun() {
    check_task(
        "type: daily",
        "type: weekly\n      weekday: funday",
        &[
            "tasks.yaml:6:16: task daily_report: interval.weekday: unknown weekday \"funday\" (mon, tue, wed, thu, fri, sat, sun)",
        ],
    );
}

#[test]
fn weekday_on_a_daily_interval_is_a_warning() {
    check_task(
        "type: daily",
        "type: daily\n      weekday: fri",
        &[
            "warning: task daily_report: interval.weekday: ignored: weekday applies only to weekly intervals",
        ],
    );
}

#[test]
fn hour_of_an_hourly_at_time_is_a_warning() {
    check_task("type: daily", "type: hourly", &[]);
    check_task("\"00:00\"", "\"07:15\"", &[]);
    check_task(
        "type: daily\n      value: 1\n      timezone: UTC\n      at_time: \"00:00\"",
        "type: hourly\n      value: 1\n      timezone: UTC\n      at_time: \"07:15\"",
        &[
            "tasks.yaml:8:16: warning: task daily_report: interval.at_time: hourly intervals use only the minutes and seconds of at_time; the hour 07 is ignored",
        ],
    );
}

#[test]
fn day_of_month_outside_1_to_31() {
    for bad in ["0", "32", "-1"] {
        let expected = format!(
            "tasks.yaml:6:21: task daily_report: interval.day_of_month: must be a day of the month, 1 to 31, found {bad}"
        );
        check_task(
            "type: daily",
            &format!("type: monthly\n      day_of_month: {bad}"),
            &[&expected],
        );
    }
}

#[test]
fn negative_retries() {
    check_task(
        "retries: 3",
        "retries: -1",
        &["tasks.yaml:10:14: task daily_report: retries: must not be negative, found -1"],
    );
}

#[test]
fn misspelt_task_field() {
    check_task(
        "retries: 3",
        "retires: 3",
        &["tasks.yaml:10:5: task daily_report: retires: unknown field; did you mean `retries`?"],
    );
}

#[test]
fn task_id_that_cannot_be_a_key_part() {
    check_task(
        "id: daily_report",
        "id: \"daily:report\"",
        &["tasks.yaml:2:9: tasks[0].id: task id contains ':'"],
    );
}

#[test]
fn unknown_priority() {
    check_task(
        "retries: 3",
        "priority: urgent",
        &["task daily_report: priority: unknown priority; expected low, normal or high"],
    );
}

#[test]
fn missing_task_fields_are_each_named() {
    check(
        Setup::tasks("tasks:\n  - id: bare\n"),
        &[
            "tasks.yaml:2:5: task bare: name: missing",
            "tasks.yaml:2:5: task bare: interval: missing",
            "tasks.yaml:2:5: task bare: timeout: missing",
            "tasks.yaml:2:5: task bare: config: missing",
        ],
    );
}

// --- service rules ---------------------------------------------------------

#[test]
fn zero_and_negative_sizes_and_limits() {
    let cases = [
        (
            "scheduler:\n  batch_size: 0\n",
            "service.yaml:2:15: scheduler.batch_size: must be at least 1, found 0",
        ),
        (
            "scheduler:\n  batch_size: -5\n",
            "scheduler.batch_size: must be at least 1, found -5",
        ),
        (
            "worker:\n  pool_size: 0\n",
            "service.yaml:2:14: worker.pool_size: must be at least 1, found 0",
        ),
        (
            "redis:\n  pool_size: -1\n",
            "redis.pool_size: must be at least 1, found -1",
        ),
        (
            "queue:\n  prefetch: 0\n",
            "queue.prefetch: must be at least 1, found 0",
        ),
        (
            "queue:\n  prefetch: 70000\n",
            "queue.prefetch: 70000 is too large (at most 65535)",
        ),
        (
            "rate_limit:\n  global: 0\n",
            "rate_limit.global: must be at least 1, found 0",
        ),
        (
            "rate_limit:\n  per_task:\n    daily_report: 0\n",
            "service.yaml:3:19: rate_limit.per_task.daily_report: must be at least 1, found 0",
        ),
        (
            "scheduler:\n  check_interval: 0s\n",
            "scheduler.check_interval: must be longer than zero",
        ),
        (
            "execution:\n  max_retries: -1\n",
            "execution.max_retries: must not be negative, found -1",
        ),
        (
            "redis:\n  db: -1\n",
            "redis.db: must not be negative, found -1",
        ),
    ];
    for (service, expected) in cases {
        assert!(check_service(service, &[expected]).is_none());
    }
}

#[test]
fn per_task_limit_for_an_unknown_task_is_a_warning() {
    let loaded = check_service(
        "rate_limit:\n  per_task:\n    api_heavy: 10\n    daily_report: 5\n",
        &["service.yaml:3:5: warning: rate_limit.per_task.api_heavy: no task \"api_heavy\" in"],
    )
    .unwrap();
    assert_eq!(loaded.service.rate_limit.per_task.len(), 2);
}

#[test]
fn transient_queues_are_a_warning_and_refused_with_quorum() {
    let loaded = check_service(
        "queue:\n  durable: false\n",
        &["service.yaml:2:12: warning: queue.durable: false declares transient queues and non-persistent messages: a RabbitMQ restart loses every queued job"],
    )
    .unwrap();
    assert!(!loaded.service.queue.durable);
    check_service("queue:\n  durable: true\n", &[]).unwrap();
    assert!(
        check_service(
            "queue:\n  type: quorum\n  durable: false\n",
            &["service.yaml:3:12: queue.durable: quorum queues are always durable"],
        )
        .is_none()
    );
}

#[test]
fn several_redis_addresses_need_sentinel_mode() {
    let two = "redis:\n  addresses:\n    - a:26379\n    - b:26379\n";
    assert!(
        check_service(
            two,
            &["service.yaml:3:5: redis.addresses: 2 addresses need mode: sentinel"]
        )
        .is_none()
    );
    assert!(
        check_service(
            &format!("{two}  mode: sentinel\n"),
            &["service.yaml:5:9: redis.mode: mode: sentinel needs master_name"],
        )
        .is_none()
    );
    let loaded =
        check_service(&format!("{two}  mode: sentinel\n  master_name: tq\n"), &[]).unwrap();
    assert_eq!(loaded.service.redis.mode, RedisMode::Sentinel);
    assert_eq!(loaded.service.redis.master_name, "tq");
    assert!(
        check_service(
            "redis:\n  mode: cluster\n",
            &["service.yaml:2:9: redis.mode: Redis Cluster is not supported: every Lua script touches several keys of one task"],
        )
        .is_none()
    );
    assert!(
        check_service(
            "redis:\n  mode: replicas\n",
            &["service.yaml:2:9: redis.mode: unknown Redis mode"],
        )
        .is_none()
    );
}

#[test]
fn redis_pool_size_other_than_one_is_a_warning() {
    let loaded = check_service(
        "redis:\n  pool_size: 10\n",
        &["service.yaml:2:14: warning: redis.pool_size: 10 is ignored: one multiplexed connection carries every call"],
    )
    .unwrap();
    assert_eq!(loaded.service.redis.pool_size, 10);
    check_service("redis:\n  pool_size: 1\n", &[]).unwrap();
}

#[test]
fn a_task_timeout_longer_than_execution_timeout_is_a_warning() {
    let loaded = check_service(
        "execution:\n  timeout: 2m\n",
        &["tasks.yaml:9:14: warning: task daily_report: timeout: 5m is longer than execution.timeout (2m), which bounds every call: this task's calls are cut at 2m"],
    )
    .unwrap();
    assert_eq!(loaded.tasks[0].timeout.as_secs(), 300);
    check_service("execution:\n  timeout: 5m\n", &[]).unwrap();
}

#[test]
fn a_payload_template_is_read_as_json() {
    let with_payload = TASKS.replace(
        "      max_duration: 4m\n",
        "      max_duration: 4m\n      payload:\n        user: \"{{user_id}}\"\n        token: \"${PAYLOAD_TOKEN}\"\n        tags: [a, 1, true]\n",
    );
    let loaded = check(
        Setup::tasks(with_payload.clone()).env(&[("PAYLOAD_TOKEN", "t0k")]),
        &[],
    )
    .unwrap();
    assert_eq!(
        loaded.tasks[0].config.payload,
        Some(serde_json::json!({"user": "{{user_id}}", "token": "t0k", "tags": ["a", 1, true]}))
    );
    check(
        Setup::tasks(with_payload.replace("method: POST", "method: GET"))
            .env(&[("PAYLOAD_TOKEN", "t0k")]),
        &["tasks.yaml:18:9: warning: task daily_report: config.payload: ignored: GET and DELETE calls carry no body"],
    )
    .unwrap();
}

#[test]
fn misspelt_section_and_field() {
    check_service(
        "schedular:\n  batch_size: 10\nredis:\n  pool_sise: 3\n",
        &[
            "service.yaml:1:1: schedular: unknown field; did you mean `scheduler`?",
            "service.yaml:4:3: redis.pool_sise: unknown field; did you mean `pool_size`?",
        ],
    );
}

#[test]
fn other_service_values() {
    let cases = [
        (
            "queue:\n  url: \"http://localhost\"\n",
            "queue.url: must be an amqp:// or amqps:// URL",
        ),
        (
            "queue:\n  type: lazy\n",
            "queue.type: unknown queue type \"lazy\" (classic, quorum)",
        ),
        (
            "redis:\n  addresses: [localhost]\n",
            "redis.addresses[0]: \"localhost\" is not host:port",
        ),
        (
            "redis:\n  prefix: \"a b\"\n",
            "redis.prefix: key prefix contains ' '",
        ),
        (
            "api:\n  bind: localhost\n",
            "api.bind: \"localhost\" is not an address",
        ),
        (
            "monitoring:\n  log_level: \"info,[\"\n",
            "monitoring.log_level: \"info,[\" is not a log level",
        ),
        (
            "backend: cloud\n",
            "backend: unknown backend \"cloud\" (external, embedded)",
        ),
        (
            "execution:\n  retry_delay: 2h\n",
            "execution.retry_delay: max_retry_delay (1h) is shorter than retry_delay (2h)",
        ),
        (
            "execution:\n  max_token_wait: 0s\n",
            "execution.max_token_wait: ",
        ),
        (
            "execution:\n  max_throttled_age: 0s\n",
            "execution.max_throttled_age: ",
        ),
        (
            "monitoring:\n  result_retention: 0s\n",
            "monitoring.result_retention: ",
        ),
        (
            "monitoring:\n  result_retention: soon\n",
            "monitoring.result_retention: ",
        ),
        (
            "execution:\n  throttles_per_attempt: -1\n",
            "execution.throttles_per_attempt: ",
        ),
        (
            "scheduler: 5\n",
            "service.yaml:1:12: scheduler: expected a mapping, found a number",
        ),
        (
            "scheduler:\n  batch_size: [1]\n",
            "scheduler.batch_size: expected a whole number, found a list",
        ),
    ];
    for (service, expected) in cases {
        assert!(check_service(service, &[expected]).is_none());
    }
}

#[test]
fn throttle_and_token_wait_settings_have_defaults_and_are_read() {
    let loaded = check_service("{}\n", &[]).unwrap();
    let execution = &loaded.service.execution;
    assert_eq!(execution.max_token_wait.as_secs(), 1);
    assert_eq!(execution.throttles_per_attempt, 10);
    assert_eq!(execution.max_throttled_age.as_secs(), 86_400);
    let loaded = check_service(
        "execution:\n  max_token_wait: 2s\n  throttles_per_attempt: 3\n  max_throttled_age: 1h\n",
        &[],
    )
    .unwrap();
    let execution = &loaded.service.execution;
    assert_eq!(execution.max_token_wait.as_secs(), 2);
    assert_eq!(execution.throttles_per_attempt, 3);
    assert_eq!(execution.max_throttled_age.as_secs(), 3600);
}

#[test]
fn yaml_syntax_errors_have_a_position() {
    check_service("scheduler:\n  batch_size: [1, 2\n", &["invalid YAML: "]);
    let (_dir, result) = Setup::service("scheduler:\n  batch_size: [1, 2\n").load();
    let errors = result.unwrap_err();
    assert!(errors.problems[0].line.is_some(), "{errors}");
    assert!(errors.to_string().contains("invalid YAML"), "{errors}");
}

#[test]
fn missing_files_are_reported() {
    let (_dir, result) = Setup {
        layers: vec![("service.yaml", String::new())],
        files: Vec::new(),
        env: Vec::new(),
    }
    .load();
    let errors = result.unwrap_err();
    assert!(
        errors.to_string().contains("tasks.yaml: cannot read file"),
        "{errors}"
    );
}

// --- layering, environment, secrets ---------------------------------------

#[test]
fn later_files_win_and_mappings_merge_deeply() {
    let loaded = check(
        Setup::service("scheduler:\n  batch_size: 1000\n  check_interval: 30s\nredis:\n  db: 1\n")
            .layer(
                "override.yaml",
                "scheduler:\n  batch_size: 500\nredis:\n  addresses: [\"r1:6379\"]\n",
            ),
        &[],
    )
    .unwrap();
    assert_eq!(loaded.service.scheduler.batch_size, 500);
    assert_eq!(loaded.service.scheduler.check_interval.as_secs(), 30);
    assert_eq!(loaded.service.redis.db, 1);
    assert_eq!(loaded.service.redis.addresses, ["r1:6379"]);
}

#[test]
fn environment_overrides_beat_files() {
    let loaded = check(
        Setup::service("scheduler:\n  batch_size: 1000\n").env(&[
            ("TASKQUEUE_SCHEDULER__BATCH_SIZE", "42"),
            ("TASKQUEUE_SCHEDULER__DISTRIBUTION_WINDOW", "10m"),
            ("TASKQUEUE_REDIS__ADDRESSES", "a:6379, b:6380"),
            ("TASKQUEUE_REDIS__MODE", "sentinel"),
            ("TASKQUEUE_REDIS__MASTER_NAME", "taskqueue"),
            ("TASKQUEUE_QUEUE__DURABLE", "false"),
            ("TASKQUEUE_RATE_LIMIT__PER_TASK__DAILY_REPORT", "7"),
            ("TASKQUEUE_CONFIG", "ignored.yaml"),
            ("TASKQUEUE_TEST_REDIS_URL", "redis://ignored/"),
        ]),
        &["$TASKQUEUE_QUEUE__DURABLE: warning: queue.durable: false declares transient queues"],
    )
    .unwrap();
    let s = &loaded.service;
    assert_eq!(s.scheduler.batch_size, 42);
    assert_eq!(s.scheduler.distribution_window.as_secs(), 600);
    assert_eq!(s.redis.addresses, ["a:6379", "b:6380"]);
    assert!(!s.queue.durable);
    assert_eq!(
        s.rate_limit.per_task.values().copied().collect::<Vec<_>>(),
        [7]
    );
}

#[test]
fn bad_environment_overrides_name_the_variable() {
    check(
        Setup::service("").env(&[
            ("TASKQUEUE_SCHEDULER__BATCH_SIZE", "0"),
            ("TASKQUEUE_WORKER__POOL_SIZE", "many"),
            ("TASKQUEUE_SCHEDULR__BATCH_SIZE", "1"),
        ]),
        &[
            "$TASKQUEUE_SCHEDULER__BATCH_SIZE: scheduler.batch_size: must be at least 1, found 0",
            "$TASKQUEUE_WORKER__POOL_SIZE: worker.pool_size: expected a whole number, found \"many\"",
            "$TASKQUEUE_SCHEDULR__BATCH_SIZE: schedulr: unknown field; did you mean `scheduler`?",
        ],
    );
}

#[test]
fn env_references_resolve_and_secrets_stay_out_of_debug_output() {
    let tasks = TASKS.replace(
        "Content-Type: application/json",
        "Authorization: \"Bearer ${API_TOKEN}\"",
    );
    let loaded = check(
        Setup {
            layers: vec![(
                "service.yaml",
                "redis:\n  password: \"${REDIS_PW}\"\nqueue:\n  url: \"amqp://app:${MQ_PW}@mq:5672/%2f\"\napi:\n  token: \"${API_ADMIN}\"\n"
                    .to_owned(),
            )],
            files: vec![("tasks.yaml", tasks)],
            env: vec![
                ("REDIS_PW", "hunter2-redis"),
                ("MQ_PW", "hunter2-mq"),
                ("API_ADMIN", "hunter2-admin"),
                ("API_TOKEN", "hunter2-header"),
            ],
        },
        &[],
    )
    .unwrap();
    assert_eq!(loaded.service.redis.password, "hunter2-redis");
    assert_eq!(
        loaded.service.queue.url,
        "amqp://app:hunter2-mq@mq:5672/%2f"
    );
    assert_eq!(loaded.service.api.token.as_deref(), Some("hunter2-admin"));
    assert_eq!(
        loaded.tasks[0].config.headers["Authorization"],
        "Bearer hunter2-header"
    );
    let debug = format!("{loaded:?}");
    assert!(
        !debug.contains("hunter2"),
        "a secret leaked into Debug: {debug}"
    );
    assert!(debug.contains("amqp://app:redacted@mq:5672/%2f"), "{debug}");
}

#[test]
fn unresolved_secret_messages_do_not_echo_the_value() {
    let (_dir, result) = Setup::service("redis:\n  password: \"hunter2 ${NOT_SET}\"\n").load();
    let text = result.unwrap_err().to_string();
    assert!(text.contains("${NOT_SET} is not set"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn tasks_file_is_relative_to_the_file_that_names_it() {
    let loaded = check(
        Setup {
            layers: vec![
                ("service.yaml", String::new()),
                (
                    "conf/more.yaml",
                    "tasks:\n  config_file: defs/t.yaml\n  reload_interval: 1m\n".to_owned(),
                ),
                ("other/last.yaml", String::new()),
            ],
            files: vec![("conf/defs/t.yaml", TASKS.to_owned())],
            env: Vec::new(),
        },
        &[],
    )
    .unwrap();
    assert!(
        loaded.tasks_file.ends_with("conf/defs/t.yaml"),
        "{:?}",
        loaded.tasks_file
    );
    assert_eq!(loaded.tasks.len(), 1);
    assert_eq!(loaded.service.tasks.reload_interval.as_secs(), 60);
}

#[test]
fn a_tasks_file_may_be_given_as_a_layer() {
    let loaded = check(
        Setup {
            layers: vec![
                ("service.yaml", "worker:\n  pool_size: 3\n".to_owned()),
                ("defs.yaml", TASKS.to_owned()),
            ],
            files: Vec::new(),
            env: Vec::new(),
        },
        &[],
    )
    .unwrap();
    assert_eq!(loaded.service.worker.pool_size, 3);
    assert!(loaded.tasks_file.ends_with("defs.yaml"));
}

#[test]
fn tasks_may_be_written_inline_in_a_service_file() {
    let service = format!("scheduler:\n  batch_size: 10\n{TASKS}");
    let loaded = check(
        Setup {
            layers: vec![("all.yaml", service)],
            files: Vec::new(),
            env: Vec::new(),
        },
        &[],
    )
    .unwrap();
    assert_eq!(loaded.service.scheduler.batch_size, 10);
    assert_eq!(loaded.tasks.len(), 1);
    assert!(loaded.tasks_file.ends_with("all.yaml"));
}

#[test]
fn reload_reads_the_tasks_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasks.yaml");
    std::fs::write(&path, TASKS).unwrap();
    let mut rate_limit = RateLimitConfig::default();
    rate_limit.per_task.insert("gone_task".parse().unwrap(), 3);
    let (tasks, warnings) =
        load_tasks_with(&path, &rate_limit, &BTreeMap::<String, String>::new()).unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0]
            .to_string()
            .contains("warning: rate_limit.per_task.gone_task")
    );

    std::fs::write(&path, TASKS.replace("value: 1", "value: 0")).unwrap();
    let errors =
        load_tasks_with(&path, &rate_limit, &BTreeMap::<String, String>::new()).unwrap_err();
    assert!(
        errors
            .to_string()
            .contains("interval.value: must be at least 1")
    );
}

#[test]
fn reload_accepts_a_service_file_with_inline_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.yaml");
    std::fs::write(&path, format!("scheduler:\n  batch_size: 10\n{TASKS}")).unwrap();
    let env = BTreeMap::<String, String>::new();
    let loaded = load_with(std::slice::from_ref(&path), &env).unwrap();
    assert_eq!(loaded.tasks_file, path);
    let (tasks, warnings) =
        load_tasks_with(&loaded.tasks_file, &loaded.service.rate_limit, &env).unwrap();
    assert_eq!(tasks, loaded.tasks);
    assert!(warnings.is_empty(), "{warnings:?}");
}

// --- the shipped examples ---------------------------------------------------

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Every mistake in `config/tasks-broken.yaml`, as `validate` names it.
const BROKEN: &[&str] = &[
    "tasks-broken.yaml:12:17: task daily_report: interval.timezone: unknown time zone \"Mars/Base\"",
    "tasks-broken.yaml:13:16: task daily_report: interval.at_time: \"25:00\" is not a time of day",
    "tasks-broken.yaml:18:21: task daily_report: config.max_duration: 10m exceeds the task's timeout (5m)",
    "tasks-broken.yaml:23:13: task hourly_sync: interval.type: unknown interval type \"fortnightly\"",
    "tasks-broken.yaml:24:14: task hourly_sync: interval.value: must be at least 1, found 0",
    "tasks-broken.yaml:25:14: task hourly_sync: timeout: must be longer than zero",
    "tasks-broken.yaml:27:17: task hourly_sync: config.endpoint: \"api.example.com/sync\" is not an absolute http(s) URL",
    "tasks-broken.yaml:28:15: task hourly_sync: config.method: unknown HTTP method \"FETCH\"",
    "tasks-broken.yaml:30:24: task hourly_sync: config.headers.Authorization: ${TASKQUEUE_DEMO_UNSET_TOKEN} is not set",
    "tasks-broken.yaml:32:5: task daily_report: timeout: missing",
    "tasks-broken.yaml:32:9: task daily_report: id: duplicate task id \"daily_report\"; first defined at line 7",
    "tasks-broken.yaml:37:16: task daily_report: interval.weekday: unknown weekday \"funday\"",
    "tasks-broken.yaml:38:14: task daily_report: retries: must not be negative, found -1",
    "tasks-broken.yaml:42:7: task daily_report: config.timout: unknown field",
];

#[test]
fn every_problem_of_the_broken_example_is_reported_at_once() {
    let paths = [
        repo("config/scheduler.yaml"),
        repo("config/worker.yaml"),
        repo("config/tasks-broken.yaml"),
    ];
    let errors = load_with(&paths, &BTreeMap::<String, String>::new()).unwrap_err();
    let rendered: Vec<String> = errors.errors().map(ToString::to_string).collect();
    assert_eq!(rendered.len(), BROKEN.len(), "{rendered:#?}");
    for want in BROKEN {
        assert!(
            rendered.iter().any(|r| r.contains(want)),
            "missing {want:?} in {rendered:#?}"
        );
    }
}

fn validate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_taskqueue"))
        .arg("validate")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("TASKQUEUE_CONFIG")
        .env_remove("TASKQUEUE_DEMO_UNSET_TOKEN")
        .output()
        .unwrap()
}

#[test]
fn validate_accepts_the_examples() {
    for args in [
        &["--config", "config/taskqueue.yaml"][..],
        &[
            "--config",
            "config/scheduler.yaml",
            "--config",
            "config/worker.yaml",
        ][..],
    ] {
        let output = validate(args);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{args:?}: {stdout}{stderr}");
        assert!(stdout.contains("configuration valid"), "{stdout}");
        assert!(
            stdout.contains("2 task(s) from config/tasks.yaml"),
            "{stdout}"
        );
        // The spec's per-task limits name tasks the spec's tasks.yaml lacks.
        assert!(
            stderr.contains("warning: rate_limit.per_task.api_heavy"),
            "{stderr}"
        );
    }
}

#[test]
fn validate_rejects_the_broken_example_naming_each_problem() {
    let output = validate(&[
        "--config",
        "config/scheduler.yaml",
        "--config",
        "config/worker.yaml",
        "--config",
        "config/tasks-broken.yaml",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for want in BROKEN {
        assert!(
            stderr.contains(&format!("config/{want}")),
            "missing {want:?} in\n{stderr}"
        );
    }
    assert!(
        stderr.contains(&format!("configuration invalid: {} error(s)", BROKEN.len())),
        "{stderr}"
    );
}
