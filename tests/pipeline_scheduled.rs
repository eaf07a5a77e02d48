//! A scheduled (not triggered) period end to end on the real Redis and
//! RabbitMQ, driven by an injected clock: a new task starts at its next
//! fire, the period fans out once, and a user whose custom interval lives
//! in another time zone runs on their own schedule.

use crate::support;

use std::time::Duration;

use actors::{
    clock::ManualClock,
    domain::{JobSource, Settings, TaskInterval, TaskTypeId, UserId, job_id},
};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use chrono_tz::Tz;
use serde_json::json;
use support::*;

fn daily_at(local: DateTime<Tz>) -> TaskInterval {
    serde_json::from_value(json!({
        "type": "daily", "value": 1,
        "timezone": local.timezone().name(),
        "at_time": local.format("%H:%M:%S").to_string(),
    }))
    .unwrap()
}

#[actix_rt::test]
async fn a_scheduled_period_runs_once_through_the_injected_clock_with_a_custom_zone_user() {
    let sink = Sink::start();
    let backends = Backends::new("scheduled");
    let store = backends.store().await;

    let t0 = Utc::now().duration_trunc(TimeDelta::seconds(1)).unwrap();
    let clock = ManualClock::new(t0);
    let fire = t0 + TimeDelta::seconds(6);
    let sync = task(json!({
        "id": "sync", "name": "Sync",
        "interval": {"type": "hourly", "value": 1, "at_time": fire.format("%H:%M:%S").to_string()},
        "timeout": "10s",
        "config": {"endpoint": sink.url("/ok/sync"), "method": "POST"}
    }));
    let users: Vec<String> = (0..20).map(|n| format!("user_{n:02}")).collect();
    enable_users(&store, "sync", &users).await;
    let custom_fire = fire + TimeDelta::seconds(2);
    let kolkata: Tz = "Asia/Kolkata".parse().unwrap();
    let in_kolkata = Settings {
        timezone: None,
        custom_interval: Some(daily_at(custom_fire.with_timezone(&kolkata))),
        parameters: Default::default(),
    };
    enable_user_with(&store, "sync", "kolkata_user", in_kolkata, t0).await;
    let new_york: Tz = "America/New_York".parse().unwrap();
    let later = Settings {
        timezone: None,
        custom_interval: Some(daily_at(
            (fire + TimeDelta::hours(3)).with_timezone(&new_york),
        )),
        parameters: Default::default(),
    };
    enable_user_with(&store, "sync", "new_york_user", later, t0).await;

    let mut config = config(&backends);
    config.scheduler.distribution_window = Duration::from_secs(3);
    let app = spawn_app(config, vec![sync], clock.clone()).await;

    // A new task type starts at its next fire: with the clock held before
    // it, the scheduler's passes run nothing.
    wait_passes(app.address, "sync", "completed", 2).await;
    assert!(sink.received().is_empty(), "{:?}", sink.received());
    let (status, body) = get(app.address, "/schedule/status/sync").await;
    assert_eq!(status, 200);
    assert_eq!(body["next_execution"], json!(fire));
    assert_eq!(body["enabled_users"], 22);
    assert_eq!(body["interval"]["type"], "hourly");

    // Move the clock past the period's window and the custom user's
    // (slots are released when the scheduler's clock says they are due).
    clock.set(fire + TimeDelta::seconds(6));
    let calls = sink.wait_for("/ok/sync", 21, Duration::from_secs(30)).await;
    wait_passes(app.address, "sync", "completed", 2).await;
    let calls_after = sink.received_at("/ok/sync");
    assert_eq!(calls_after.len(), calls.len());
    assert_eq!(
        calls.len(),
        21,
        "20 default users + the Kolkata user, once each"
    );

    let task_id = TaskTypeId::parse("sync").unwrap();
    for call in &calls {
        let user = call.body["user_id"].as_str().unwrap();
        let scheduled_at: DateTime<Utc> =
            call.body["scheduled_at"].as_str().unwrap().parse().unwrap();
        let expected = if user == "kolkata_user" {
            custom_fire
        } else {
            fire
        };
        assert_eq!(scheduled_at, expected, "user {user}");
        assert_ne!(user, "new_york_user");
        let id = job_id(&task_id, &UserId::parse(user).unwrap(), scheduled_at);
        assert_eq!(call.key(), id.to_string());
    }
    let (_, body) = get(app.address, "/schedule/status/sync").await;
    assert_eq!(body["last_execution"], json!(fire));
    assert_eq!(body["next_execution"], json!(fire + TimeDelta::hours(1)));

    // Later in the same hour: nothing is due again.
    clock.set(fire + TimeDelta::minutes(30));
    wait_passes(app.address, "sync", "completed", 2).await;
    assert_eq!(sink.received_at("/ok/sync").len(), 21);
}

/// The replica that ran a spread fan-out planned half the users into the
/// slot lists, published the first slot and died before trimming it;
/// another replica carries the same run on from the store: it plans the
/// rest, publishes the first slot again (the same job ids) and the second
/// once. Every user is still called exactly once.
#[actix_rt::test]
async fn an_interrupted_fan_out_is_finished_elsewhere_with_none_lost_and_none_doubled() {
    use actors::{
        broker::{
            JobBroker,
            amqp::{AmqpBroker, AmqpOptions},
        },
        distributor::job_envelope,
        fanout::{Audience, Run, RunSource, slot_of_rank},
        store::{LockName, LockStore, ScheduleStore, SlotWrite},
    };

    let sink = Sink::start();
    let backends = Backends::new("resume");
    let store = backends.store().await;
    let users: Vec<String> = (0..40).map(|n| format!("user_{n:02}")).collect();
    enable_users(&store, "sync", &users).await;
    let sync = task(json!({
        "id": "sync", "name": "Sync",
        "interval": {"type": "hourly", "value": 1},
        "timeout": "10s",
        "config": {"endpoint": sink.url("/slow/300/sync"), "method": "POST"}
    }));
    let task_id = TaskTypeId::parse("sync").unwrap();
    let scheduled_at = Utc::now().duration_trunc(TimeDelta::seconds(1)).unwrap();
    let window = Duration::from_secs(2);

    // What the crashed replica did, under the task's lock.
    let lock = LockName::Schedule(task_id.clone());
    let lease = store
        .acquire_lock(&lock, Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .record_fire(&task_id, scheduled_at, &lease)
            .await
            .unwrap()
    );
    let mut run = Run {
        task_type_id: task_id.clone(),
        scheduled_at,
        source: RunSource::Scheduler,
        audience: Audience::Enabled { with_custom: false },
        immediate: false,
        slots: 2,
        users: 40,
        planned: 0,
        cursor: None,
        custom_offset: None,
        zone_walk: Default::default(),
        planning_done: false,
        next_slot: 0,
        released: 0,
        correlation_id: "crashed".into(),
        created_at: scheduled_at,
    };
    let ttl = Duration::from_secs(600);
    assert!(store.create_run(&run, &[], ttl, None).await.unwrap());
    let page = store
        .enabled_users_in_spread_order(&task_id, None, 20)
        .await
        .unwrap();
    assert!(
        page.iter()
            .enumerate()
            .all(|(rank, _)| slot_of_rank(rank as u64, 40, 2) == 0)
    );
    run.planned = 20;
    run.cursor = page.last().cloned();
    let first_slot: Vec<UserId> = page.into_iter().map(|cursor| cursor.user).collect();
    let lists = [SlotWrite {
        slot: 0,
        trim: 0,
        append: first_slot.clone(),
    }];
    assert!(
        store
            .save_run(&run, &lists, ttl, lease.fence)
            .await
            .unwrap()
    );
    let broker = AmqpBroker::connect(&backends.amqp_url, AmqpOptions::default())
        .await
        .unwrap();
    broker.declare().await.unwrap();
    let published: Vec<_> = first_slot
        .iter()
        .map(|user| {
            job_envelope(
                &sync,
                user,
                scheduled_at,
                scheduled_at,
                Some(0),
                JobSource::Scheduler,
                "crashed",
            )
        })
        .collect();
    broker.publish(&published).await.unwrap();
    store.release_lock(&lock, &lease).await.unwrap();

    let mut config = config(&backends);
    config.scheduler.distribution_window = window;
    config.scheduler.batch_size = 20;
    let app = spawn_app(
        config,
        vec![sync],
        std::sync::Arc::new(actors::clock::SystemClock),
    )
    .await;

    sink.wait_for("/slow/", 40, Duration::from_secs(40)).await;
    // The run is finished, and the scheduler passed over the task twice
    // after: every copy was released long before.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !store.runs(&task_id).await.unwrap().runs.is_empty() {
        assert!(std::time::Instant::now() < deadline, "the run never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_passes(app.address, "sync", "completed", 2).await;
    let calls = sink.received_at("/slow/");
    let mut per_user = std::collections::BTreeMap::new();
    for call in &calls {
        *per_user
            .entry(call.body["user_id"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
        assert_eq!(call.body["scheduled_at"], json!(scheduled_at));
    }
    assert_eq!(per_user.len(), 40, "none lost: {per_user:?}");
    assert!(
        per_user.values().all(|n| *n == 1),
        "none doubled: {per_user:?}"
    );
    assert!(store.runs(&task_id).await.unwrap().runs.is_empty());
    let last = store.last_run(&task_id).await.unwrap().unwrap();
    // The crashed replica's publish of slot 0 was never recorded: the slot
    // went out again, and the executors dropped the copies by job id.
    assert_eq!((last.planned, last.released), (40, 40));
}
