//! `taskqueue next-runs`, run as a user would run it.

use std::process::Command;

/// Runs `taskqueue next-runs ARGS` and checks the exit code and that
/// stdout is `stdout` exactly (on success) or stderr contains every one of
/// `stderr_mentions` (on failure).
fn check(args: &[&str], code: i32, stdout: &str, stderr_mentions: &[&str]) {
    let output = Command::new(env!("CARGO_BIN_EXE_taskqueue"))
        .arg("next-runs")
        .args(args)
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert_eq!(
        output.status.code(),
        Some(code),
        "{args:?}\nstdout: {out}\nstderr: {err}"
    );
    assert_eq!(out, stdout, "{args:?}");
    for mention in stderr_mentions {
        assert!(
            err.contains(mention),
            "{args:?}: stderr {err:?} lacks {mention:?}"
        );
    }
}

const NEW_YORK_0230: &str =
    r#"{"type":"daily","value":1,"timezone":"America/New_York","at_time":"02:30"}"#;

#[test]
fn us_spring_forward_fires_at_0330_edt() {
    check(
        &[
            "--interval",
            NEW_YORK_0230,
            "--after",
            "2026-03-07T00:00:00Z",
            "--count",
            "3",
        ],
        0,
        "2026-03-07T07:30:00Z\n2026-03-08T07:30:00Z\n2026-03-09T06:30:00Z\n",
        &[],
    );
    // Five by default; offsets in --after are honoured.
    check(
        &[
            "--interval",
            NEW_YORK_0230,
            "--after",
            "2026-03-06T19:00:00-05:00",
        ],
        0,
        "2026-03-07T07:30:00Z\n2026-03-08T07:30:00Z\n2026-03-09T06:30:00Z\n\
         2026-03-10T06:30:00Z\n2026-03-11T06:30:00Z\n",
        &[],
    );
}

#[test]
fn invalid_input_exits_2_naming_the_field() {
    let after = ["--after", "2026-03-07T00:00:00Z"];
    let with = |interval: &'static str| [&["--interval", interval][..], &after[..]].concat();
    check(
        &with(r#"{"type":"daily","value":1,"timezone":"Mars/Olympus_Mons"}"#),
        2,
        "",
        &["--interval", "timezone"],
    );
    check(
        &with(r#"{"type":"daily","value":0}"#),
        2,
        "",
        &["--interval", "value"],
    );
    check(
        &with(r#"{"type":"fortnightly","value":1}"#),
        2,
        "",
        &["type"],
    );
    check(
        &with(r#"{"type":"daily","value":1,"at_time":"25:00"}"#),
        2,
        "",
        &["at_time"],
    );
    check(
        &with(r#"{"type":"monthly","value":1,"day_of_month":32}"#),
        2,
        "",
        &["day_of_month"],
    );
    check(
        &with(r#"{"type":"daily","value":1,"timezon":"UTC"}"#),
        2,
        "",
        &["timezon"],
    );
    check(&with(r#"{"value":1}"#), 2, "", &["type"]);
    check(
        &["--interval", NEW_YORK_0230, "--after", "2026-03-07 00:00"],
        2,
        "",
        &["--after"],
    );
}

#[test]
fn configured_task_and_user_interval() {
    let dir = std::env::temp_dir().join(format!("taskqueue-next-runs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tasks = dir.join("tasks.yaml");
    std::fs::write(
        &tasks,
        "tasks:\n  - id: daily_report\n    name: Daily report\n    interval:\n      type: daily\n      value: 1\n      timezone: Europe/Berlin\n      at_time: \"02:30\"\n    timeout: 30s\n    config:\n      endpoint: http://127.0.0.1:9/report\n      method: POST\n",
    )
    .unwrap();
    let tasks = tasks.to_str().unwrap();
    let after = "2026-03-28T00:00:00Z";
    // 2026-03-29 02:30 does not exist in Berlin: it fires at 03:30 CEST.
    check(
        &[
            "--config",
            tasks,
            "--task",
            "daily_report",
            "--after",
            after,
            "--count",
            "2",
        ],
        0,
        "2026-03-28T01:30:00Z\n2026-03-29T01:30:00Z\n",
        &[],
    );
    // A user's interval replaces the task's, time zone included.
    check(
        &[
            "--config",
            tasks,
            "--task",
            "daily_report",
            "--user-interval",
            r#"{"type":"hourly","value":6}"#,
            "--after",
            after,
            "--count",
            "2",
        ],
        0,
        "2026-03-28T06:00:00Z\n2026-03-28T12:00:00Z\n",
        &[],
    );
    check(
        &["--config", tasks, "--task", "nightly", "--after", after],
        2,
        "",
        &["--task", "nightly"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_zone_reads_the_interval_in_the_users_time_zone() {
    // New York's 02:30 read in St. John's (NST -03:30 -> NDT -02:30 on
    // 2026-03-08): the gap's 02:30 is read as NST.
    check(
        &[
            "--interval",
            NEW_YORK_0230,
            "--zone",
            "America/St_Johns",
            "--after",
            "2026-03-07T00:00:00Z",
            "--count",
            "3",
        ],
        0,
        "2026-03-07T06:00:00Z\n2026-03-08T06:00:00Z\n2026-03-09T05:00:00Z\n",
        &[],
    );
    check(
        &["--interval", NEW_YORK_0230, "--zone", "Mars/Olympus"],
        2,
        "",
        &["--zone", "Mars/Olympus"],
    );
}
