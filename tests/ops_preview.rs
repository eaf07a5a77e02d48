//! `GET /schedule/preview/{task}` on the real Redis and RabbitMQ: the
//! task's next fires (in its zone or another), and for a user the jobs
//! the scheduler then really makes: their fire, their zone (task zone,
//! default zone, custom interval) and their slot offset, checked against
//! the slot lists of the run the scheduler makes at that fire.

use crate::support;

use std::{collections::BTreeMap, time::Duration};

use actors::{
    clock::ManualClock,
    domain::{Settings, TaskTypeId, UserId},
    slot,
    store::{PreferenceStore, ScheduleStore, TimezoneWrite},
};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use support::*;

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

#[actix_rt::test]
async fn the_preview_matches_the_jobs_the_scheduler_makes() {
    let sink = Sink::start();
    let backends = Backends::new("preview");
    let store = backends.store().await;
    let t0 = at("2026-01-15T02:29:00Z");
    let clock = ManualClock::new(t0);
    let digest = task(json!({
        "id": "digest", "name": "Digest",
        "interval": {"type": "daily", "value": 1, "at_time": "02:30"},
        "timeout": "10s",
        "config": {"endpoint": sink.url("/ok/digest"), "method": "POST"}
    }));
    // Three users on the task's zone (UTC), one in London (UTC in
    // January: the same instant, so the same run), one in Kolkata (its
    // own run at 21:00Z), one on a custom interval.
    let plain: Vec<String> = ["ann", "bob", "cid"].map(String::from).to_vec();
    enable_users(&store, "digest", &plain).await;
    enable_users(&store, "digest", &["lon".to_owned(), "kol".to_owned()]).await;
    store
        .write_user_timezones(&[
            TimezoneWrite {
                user_id: UserId::parse("lon").unwrap(),
                timezone: Some("Europe/London".parse().unwrap()),
            },
            TimezoneWrite {
                user_id: UserId::parse("kol").unwrap(),
                timezone: Some("Asia/Kolkata".parse().unwrap()),
            },
        ])
        .await
        .unwrap();
    let custom = Settings {
        timezone: None,
        custom_interval: Some(
            serde_json::from_value(json!({
                "type": "daily", "value": 1, "timezone": "Europe/Paris", "at_time": "12:00"
            }))
            .unwrap(),
        ),
        parameters: Default::default(),
    };
    enable_user_with(&store, "digest", "cus", custom, t0).await;

    let window = Duration::from_secs(100);
    let mut config = config(&backends);
    config.scheduler.distribution_window = window;
    let app = spawn_app(config, vec![digest], clock.clone()).await;

    // The task's fires, in its zone and read in another.
    let (status, body) = get(app.address, "/schedule/preview/digest?count=3").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["timezone"], "UTC");
    assert_eq!(
        body["fires"],
        json!([
            "2026-01-15T02:30:00Z",
            "2026-01-16T02:30:00Z",
            "2026-01-17T02:30:00Z"
        ])
    );
    assert!(body.get("user").is_none());
    let (_, body) = get(
        app.address,
        "/schedule/preview/digest?count=2&zone=Asia/Kathmandu",
    )
    .await;
    assert_eq!(
        body["fires"],
        json!(["2026-01-15T20:45:00Z", "2026-01-16T20:45:00Z"]),
        "{body}"
    );

    // Users: the run of 02:30Z holds ann, bob, cid (in spread order), then
    // lon: 4 users over 100 slots, rank r in slot r * 100 / 4.
    let task_id = TaskTypeId::parse("digest").unwrap();
    let mut order: Vec<(u64, &str)> = plain
        .iter()
        .map(|user| {
            let id = UserId::parse(user.clone()).unwrap();
            (slot::spread_key(&task_id, &id), user.as_str())
        })
        .collect();
    order.sort();
    let mut expected: BTreeMap<&str, (&str, &str, &str, u32)> = BTreeMap::new();
    for (rank, (_, user)) in order.iter().enumerate() {
        expected.insert(
            user,
            ("task", "UTC", "2026-01-15T02:30:00Z", rank as u32 * 25),
        );
    }
    expected.insert(
        "lon",
        ("user_timezone", "Europe/London", "2026-01-15T02:30:00Z", 75),
    );
    expected.insert(
        "kol",
        ("user_timezone", "Asia/Kolkata", "2026-01-15T21:00:00Z", 0),
    );
    let custom_slot = slot::place(&task_id, &UserId::parse("cus").unwrap(), window).slot;
    expected.insert(
        "cus",
        (
            "custom_interval",
            "Europe/Paris",
            "2026-01-15T11:00:00Z",
            custom_slot,
        ),
    );
    for (user, (source, zone, fire, slot)) in &expected {
        let (status, body) = get(
            app.address,
            &format!("/schedule/preview/digest?user_id={user}&count=2"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let preview = &body["user"];
        assert_eq!(preview["source"], *source, "{user}: {body}");
        assert_eq!(preview["timezone"], *zone, "{user}: {body}");
        let runs = preview["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2, "{body}");
        assert_eq!(runs[0]["scheduled_at"], *fire, "{user}: {body}");
        assert_eq!(runs[0]["slot"], *slot, "{user}: {body}");
        let due = at(fire) + TimeDelta::seconds(i64::from(*slot));
        assert_eq!(runs[0]["execute_after"], json!(due), "{user}: {body}");
        assert_eq!(
            runs[1]["scheduled_at"],
            json!(at(fire) + TimeDelta::days(1)),
            "{user}"
        );
    }

    // Bad requests.
    for (path, code) in [
        ("/schedule/preview/nope", 404),
        ("/schedule/preview/digest?user_id=nobody", 404),
        ("/schedule/preview/digest?count=0", 400),
        ("/schedule/preview/digest?count=101", 400),
        ("/schedule/preview/digest?count=many", 400),
        ("/schedule/preview/digest?zone=Mars/Olympus", 400),
        ("/schedule/preview/digest?colour=red", 400),
    ] {
        let (status, body) = get(app.address, path).await;
        assert_eq!(status, code, "{path}: {body}");
        assert!(body["error"]["message"].is_string(), "{path}: {body}");
    }

    // The scheduler's run of 02:30Z, with the clock held at its fire:
    // slot 0 is released (its user called), every other user waits in
    // the slot list the preview named.
    let fire = at("2026-01-15T02:30:00Z");
    clock.set(fire);
    let mut run = None;
    for _ in 0..300 {
        let runs = store.runs(&task_id).await.unwrap().runs;
        if let Some(found) = runs
            .into_iter()
            .find(|r| r.scheduled_at == fire && r.planning_done)
        {
            run = Some(found);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run = run.expect("the run of 02:30Z is planned");
    assert_eq!(run.users, 4, "{run:?}");
    for (user, (_, _, fire_text, slot)) in &expected {
        if *fire_text != "2026-01-15T02:30:00Z" {
            continue;
        }
        if *slot == 0 {
            let calls = sink
                .wait_for("/ok/digest", 1, Duration::from_secs(30))
                .await;
            assert_eq!(calls.len(), 1);
            assert_eq!(calls[0].body["user_id"], *user);
            assert_eq!(calls[0].body["scheduled_at"], json!(fire));
        } else {
            let listed = store.slot_users(&run, *slot, 10).await.unwrap();
            assert_eq!(listed, vec![UserId::parse(*user).unwrap()], "slot {slot}");
        }
    }
}
