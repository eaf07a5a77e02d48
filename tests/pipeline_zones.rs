//! Users in their own time zones, end to end on the real Redis and
//! RabbitMQ, driven by an injected clock: a "daily at HH:MM:SS" task calls
//! each user when that wall time comes in the user's zone (a default zone,
//! a per-task zone, none: the task's zone), and a new `at_time` moves
//! every zone group.

use crate::support;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use actors::{
    clock::ManualClock,
    domain::{Settings, TaskType},
    schedule::Schedule,
    store::{PreferenceStore, TimezoneWrite},
};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use chrono_tz::{America, Asia, Tz};
use serde_json::json;
use support::*;

fn digest(endpoint: &str, at_time: &str) -> TaskType {
    task(json!({
        "id": "digest", "name": "Digest",
        "interval": {"type": "daily", "value": 1, "at_time": at_time},
        "timeout": "10s",
        "config": {"endpoint": endpoint, "method": "POST"}
    }))
}

/// Each user's zone (`None`: the task's, UTC).
const USERS: [(&str, Option<Tz>); 4] = [
    ("kathmandu_user", Some(Asia::Kathmandu)),
    ("st_johns_user", Some(America::St_Johns)),
    ("kolkata_user", Some(Asia::Kolkata)),
    ("utc_user", None),
];

/// The next fire of `task` for a user in `zone` after `after`.
fn next_fire(task: &TaskType, zone: Option<Tz>, after: DateTime<Utc>) -> DateTime<Utc> {
    let interval = match zone {
        Some(zone) => task.interval.in_zone(zone),
        None => task.interval.clone(),
    };
    Schedule::new(&interval).next_after(after)
}

/// Moves the clock through `fires` in order; after each, exactly the
/// users of the fires so far have been called (`before` calls earlier),
/// each with its own `scheduled_at`.
async fn walk_fires(
    address: std::net::SocketAddr,
    sink: &Sink,
    clock: &ManualClock,
    fires: &[(DateTime<Utc>, &str)],
    before: usize,
) {
    for (n, (fire, user)) in fires.iter().enumerate() {
        clock.set(*fire + TimeDelta::seconds(4));
        let calls = sink
            .wait_for("/ok/digest", before + n + 1, Duration::from_secs(30))
            .await;
        if calls.len() != before + n + 1 {
            let (_, status) = get(address, "/schedule/status/digest").await;
            panic!(
                "after the fire of {user} at {fire}: {} calls; status {status}",
                calls.len()
            );
        }
        let last = &calls[before + n];
        assert_eq!(last.body["user_id"], *user);
        let scheduled_at: DateTime<Utc> =
            last.body["scheduled_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(scheduled_at, *fire, "{user}");
    }
}

#[actix_rt::test]
async fn a_daily_task_calls_each_user_at_their_own_local_time_and_follows_a_new_at_time() {
    let sink = Sink::start();
    let backends = Backends::new("zones");
    let store = backends.store().await;
    // The scheduler's clock starts 34 hours back, so that every fire below
    // (within 33 hours of it) is in the past for the broker and the
    // workers, which run on real time: each job is due at once when its
    // fire comes on the scheduler's clock.
    let t0 = (Utc::now() - TimeDelta::hours(34))
        .duration_trunc(TimeDelta::seconds(1))
        .unwrap();
    let clock = ManualClock::new(t0);
    // The wall time of 8 s after the clock's start in Kathmandu
    // (UTC+05:45): the other zones reach it later.
    let at = (t0 + TimeDelta::seconds(8))
        .with_timezone(&Asia::Kathmandu)
        .format("%H:%M:%S")
        .to_string();
    let endpoint = sink.url("/ok/digest");
    let first = digest(&endpoint, &at);

    // Kathmandu and St. John's by the user's default zone, Kolkata by the
    // task's own setting; the UTC user has no zone.
    store
        .write_user_timezones(&[
            TimezoneWrite {
                user_id: actors::domain::UserId::parse("kathmandu_user").unwrap(),
                timezone: Some(Asia::Kathmandu),
            },
            TimezoneWrite {
                user_id: actors::domain::UserId::parse("st_johns_user").unwrap(),
                timezone: Some(America::St_Johns),
            },
        ])
        .await
        .unwrap();
    enable_users(
        &store,
        "digest",
        &[
            "kathmandu_user".to_owned(),
            "st_johns_user".to_owned(),
            "utc_user".to_owned(),
        ],
    )
    .await;
    let kolkata = Settings {
        timezone: Some(Asia::Kolkata),
        ..Settings::default()
    };
    enable_user_with(&store, "digest", "kolkata_user", kolkata, t0).await;

    let tasks = Arc::new(Mutex::new(vec![first.clone()]));
    let source = {
        let tasks = tasks.clone();
        Arc::new(move || Ok(tasks.lock().unwrap().clone()))
    };
    let mut config = config(&backends);
    config.scheduler.distribution_window = Duration::from_secs(2);
    config.tasks.reload_interval = Duration::from_secs(1);
    let app = taskqueue::startup::Application::build_with(taskqueue::startup::Setup {
        bind: config.api.bind,
        config,
        tasks: vec![first.clone()],
        task_source: Some(source),
        role: taskqueue::Role::All,
        clock: clock.clone(),
    })
    .await
    .unwrap();
    let address = app.address();
    actix_rt::spawn(app.run_until_stopped());

    let mut fires: Vec<(DateTime<Utc>, &str)> = USERS
        .iter()
        .map(|(user, zone)| (next_fire(&first, *zone, t0), *user))
        .collect();
    fires.sort();
    // Each fire is the task's at_time on the user's own clock.
    for ((fire, user), (_, zone)) in fires.iter().zip(
        fires
            .iter()
            .map(|(_, user)| USERS.iter().find(|(u, _)| u == user).unwrap()),
    ) {
        let local = fire.with_timezone(&zone.unwrap_or(Tz::UTC));
        assert_eq!(local.format("%H:%M:%S").to_string(), at, "{user}");
    }
    assert_eq!(fires[0].1, "kathmandu_user");

    // The status shows one group per zone with its next fire; the
    // scheduler's passes before the first of them run nothing.
    wait_passes(address, "digest", "completed", 2).await;
    assert!(sink.received().is_empty(), "{:?}", sink.received());
    let (status, body) = get(address, "/schedule/status/digest").await;
    assert_eq!(status, 200, "{body}");
    let groups: BTreeMap<String, (u64, DateTime<Utc>)> = body["zone_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|group| {
            (
                group["timezone"].as_str().unwrap().to_owned(),
                (
                    group["users"].as_u64().unwrap(),
                    group["next_execution"].as_str().unwrap().parse().unwrap(),
                ),
            )
        })
        .collect();
    let expected: BTreeMap<String, (u64, DateTime<Utc>)> = USERS
        .iter()
        .map(|(_, zone)| {
            (
                zone.unwrap_or(Tz::UTC).name().to_owned(),
                (1, next_fire(&first, *zone, t0)),
            )
        })
        .collect();
    assert_eq!(groups, expected, "{body}");

    walk_fires(address, &sink, &clock, &fires, 0).await;

    // An hour earlier: every zone group follows the task's new at_time.
    let earlier = (t0 + TimeDelta::seconds(8) - TimeDelta::hours(1))
        .with_timezone(&Asia::Kathmandu)
        .format("%H:%M:%S")
        .to_string();
    let second = digest(&endpoint, &earlier);
    *tasks.lock().unwrap() = vec![second.clone()];
    let (_, last) = *fires.last().unwrap();
    let now = fires.last().unwrap().0 + TimeDelta::seconds(4);
    let mut refires: Vec<(DateTime<Utc>, &str)> = USERS
        .iter()
        .map(|(user, zone)| (next_fire(&second, *zone, now), *user))
        .collect();
    refires.sort();
    for (fire, user) in &refires {
        let (old, _) = fires.iter().find(|(_, u)| u == user).unwrap();
        assert_eq!(*fire - *old, TimeDelta::hours(23), "{user} after {last}");
    }
    // Reloaded (the status reads the catalog in force)...
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = get(address, "/schedule/status/digest").await;
        let at_time = body["interval"]["at_time"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        // The status writes a time on a whole minute as `HH:MM`.
        let shown = chrono::NaiveTime::parse_from_str(&at_time, "%H:%M:%S")
            .or_else(|_| chrono::NaiveTime::parse_from_str(&at_time, "%H:%M"));
        if shown.ok() == chrono::NaiveTime::parse_from_str(&earlier, "%H:%M:%S").ok() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no reload: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ... and nothing runs before the new fires, then each user once.
    wait_passes(address, "digest", "completed", 2).await;
    assert_eq!(sink.received_at("/ok/digest").len(), USERS.len());
    walk_fires(address, &sink, &clock, &refires, USERS.len()).await;
    wait_passes(address, "digest", "completed", 2).await;
    assert_eq!(sink.received_at("/ok/digest").len(), 2 * USERS.len());
}
