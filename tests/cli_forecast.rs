//! `taskqueue forecast` end to end: the binary against a real Redis holding
//! a known population (users on the task's zone, in two zone groups, on a
//! custom interval), compared with a table computed by hand.

use crate::support;

use std::process::Command;

use actors::{
    domain::{Settings, UserId},
    store::{PreferenceStore, TimezoneWrite},
};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use support::*;

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

#[actix_rt::test]
async fn the_forecast_of_a_known_population_matches_the_hand_computed_table() {
    let backends = Backends::new("forecast");
    let store = backends.store().await;
    let now = at("2026-01-15T00:00:00Z");
    // 600 users on the task's zone (UTC) and 2 in London (UTC in January):
    // one run at 02:30Z. 4 in Kolkata: 02:30 IST is 21:00Z. 3 with the task
    // read in New York (their per-task zone): 02:30 EST is 07:30Z. 2 on a
    // custom interval, daily at 12:00 UTC.
    let plain: Vec<String> = (0..600).map(|n| format!("u{n:03}")).collect();
    enable_users(&store, "digest", &plain).await;
    let zoned: Vec<(String, &str)> = (0..2)
        .map(|n| (format!("lon{n}"), "Europe/London"))
        .chain((0..4).map(|n| (format!("kol{n}"), "Asia/Kolkata")))
        .collect();
    let zoned_ids: Vec<String> = zoned.iter().map(|(id, _)| id.clone()).collect();
    enable_users(&store, "digest", &zoned_ids).await;
    let writes: Vec<TimezoneWrite> = zoned
        .iter()
        .map(|(id, zone)| TimezoneWrite {
            user_id: UserId::parse(id.clone()).unwrap(),
            timezone: Some(zone.parse().unwrap()),
        })
        .collect();
    store.write_user_timezones(&writes).await.unwrap();
    for n in 0..3 {
        let settings = Settings {
            timezone: Some("America/New_York".parse().unwrap()),
            custom_interval: None,
            parameters: Default::default(),
        };
        enable_user_with(&store, "digest", &format!("ny{n}"), settings, now).await;
    }
    for n in 0..2 {
        let settings = Settings {
            timezone: None,
            custom_interval: Some(
                serde_json::from_value(json!({"type": "daily", "value": 1, "at_time": "12:00"}))
                    .unwrap(),
            ),
            parameters: Default::default(),
        };
        enable_user_with(&store, "digest", &format!("cus{n}"), settings, now).await;
    }

    // The new configuration: the task at 02:30 (the users follow it), a
    // 10-minute window (600 one-second slots), at most 1 call per second
    // (300 per bucket) for the task; a second task without users.
    let yaml = format!(
        r#"
redis:
  addresses: ["{redis}"]
  prefix: "{prefix}"
scheduler:
  distribution_window: 10m
rate_limit:
  global: 100
  per_task:
    digest: 1
tasks:
  - id: digest
    name: Digest
    interval: {{ type: daily, value: 1, at_time: "02:30" }}
    timeout: 30s
    config: {{ endpoint: "http://127.0.0.1:9/digest", method: POST }}
  - id: empty
    name: Empty
    interval: {{ type: hourly, value: 1 }}
    timeout: 30s
    config: {{ endpoint: "http://127.0.0.1:9/empty", method: POST }}
"#,
        redis = backends.redis_address(),
        prefix = backends.prefix,
    );
    let file = temp_file("forecast.yaml", &yaml);
    let run = |format: &str| {
        Command::new(env!("CARGO_BIN_EXE_taskqueue"))
            .args(["forecast", "--config"])
            .arg(&file)
            .args([
                "--hours",
                "24",
                "--start",
                "2026-01-15T00:01:30Z",
                "--format",
                format,
            ])
            .output()
            .unwrap()
    };
    let output = run("json");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["start"], "2026-01-15T00:00:00Z", "rounded down");
    assert_eq!(report["bucket_seconds"], 300);
    let digest = &report["tasks"][0];
    assert_eq!(digest["task_type_id"], "digest");
    assert_eq!(
        digest["users"],
        json!({"task_zone": 600, "zone_groups": 9, "zones": 3,
               "custom_interval": 2, "custom_intervals": 1, "unreadable": 0})
    );
    assert_eq!(digest["limit_per_bucket"], 300);
    // By hand: a run of n users over 600 slots puts ceil(300 n / 600) in
    // its first 5 minutes and the rest in the next 5.
    // 02:30Z: 602 users -> 301 + 301 (both over 300); 07:30Z: 3 -> 2 + 1;
    // 12:00Z: 2 -> 1 + 1; 21:00Z: 4 -> 2 + 2.
    let expected = json!([
        {"start": "2026-01-15T02:30:00Z", "jobs": 301, "over_limit": true},
        {"start": "2026-01-15T02:35:00Z", "jobs": 301, "over_limit": true},
        {"start": "2026-01-15T07:30:00Z", "jobs": 2, "over_limit": false},
        {"start": "2026-01-15T07:35:00Z", "jobs": 1, "over_limit": false},
        {"start": "2026-01-15T12:00:00Z", "jobs": 1, "over_limit": false},
        {"start": "2026-01-15T12:05:00Z", "jobs": 1, "over_limit": false},
        {"start": "2026-01-15T21:00:00Z", "jobs": 2, "over_limit": false},
        {"start": "2026-01-15T21:05:00Z", "jobs": 2, "over_limit": false},
    ]);
    assert_eq!(digest["buckets"], expected, "{report:#}");
    assert_eq!(digest["total"], 611);
    let empty = &report["tasks"][1];
    assert_eq!(
        (empty["task_type_id"].clone(), empty["total"].clone()),
        (json!("empty"), json!(0))
    );
    assert_eq!(report["global_limit_per_bucket"], 30000);
    assert_eq!(report["over_global"], json!([]));

    // The text report flags the same buckets.
    let output = run("text");
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let flagged: Vec<&str> = text.lines().filter(|l| l.ends_with("OVER LIMIT")).collect();
    assert_eq!(flagged.len(), 2, "{text}");
    assert!(
        flagged[0].contains("2026-01-15T02:30:00Z") && flagged[0].contains("301"),
        "{text}"
    );
    assert!(text.contains("total 611 jobs"), "{text}");

    // A bad horizon is refused, naming the flag.
    let output = Command::new(env!("CARGO_BIN_EXE_taskqueue"))
        .args(["forecast", "--config"])
        .arg(&file)
        .args(["--hours", "0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--hours"));
}
