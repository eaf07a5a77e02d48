//! `taskqueue serve` processes on the real Redis and RabbitMQ: two
//! replicas share the work of five periods (three scheduled, two triggered
//! through either replica) with every (user, period) called exactly once,
//! and a SIGTERM lets in-flight jobs finish, loses none and runs none twice.

use crate::support;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use actors::{
    domain::TaskTypeId,
    store::{ScheduleStore, redis::RedisStore},
};
use chrono::{DurationRound, TimeDelta, Utc};
use support::*;

#[actix_rt::test]
async fn two_replicas_call_every_user_once_per_period() {
    let sink = Sink::start();
    let backends = Backends::new("replicas");
    let store = backends.store().await;
    let t0 = Utc::now().duration_trunc(TimeDelta::seconds(1)).unwrap();
    let mut tasks = String::new();
    let users: Vec<String> = (0..30).map(|n| format!("user_{n:02}")).collect();
    for (n, offset) in [8, 12, 16].into_iter().enumerate() {
        let id = format!("period_{n}");
        tasks.push_str(&hourly_task(
            &id,
            t0 + TimeDelta::seconds(offset),
            &sink.url(&format!("/ok/{id}")),
        ));
        enable_users(&store, &id, &users).await;
        seed_last_fire(&store, &id, t0).await;
    }
    let config = config_file(&backends, "worker:\n  pool_size: 4", &tasks);
    let (first_address, second_address) = (free_address(), free_address());
    let mut first = serve_on(&config, first_address);
    let mut second = serve_on(&config, second_address);

    // Three scheduled periods (one per task)...
    sink.wait_for("/ok/", 90, Duration::from_secs(60)).await;
    // ...and two triggered ones, one through each replica.
    for address in [first_address, second_address] {
        wait_until_up(address).await;
        let (status, body) = post(
            address,
            "/schedule/trigger",
            &serde_json::json!({"task_type_id": "period_0"}),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["jobs_created"], 30);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let calls = sink.wait_for("/ok/", 150, Duration::from_secs(60)).await;
    // Every attempt settled and nothing is left that could call a user
    // again; a late duplicate would have come by now.
    let processed = wait_settled(
        &[first_address, second_address],
        &store,
        &["period_0", "period_1", "period_2"],
        150,
    )
    .await;
    let calls_after = sink.received_at("/ok/");
    assert_eq!(processed.iter().sum::<u64>(), 150, "{processed:?}");
    assert!(
        processed.iter().all(|n| *n > 0),
        "both replicas worked: {processed:?}"
    );
    assert_eq!(terminate(&mut first), 0);
    assert_eq!(terminate(&mut second), 0);

    assert_eq!(calls.len(), calls_after.len(), "late duplicates");
    let mut per_run: BTreeMap<(String, String, String), u32> = BTreeMap::new();
    for call in &calls_after {
        let key = (
            call.body["task_type_id"].as_str().unwrap().to_owned(),
            call.body["user_id"].as_str().unwrap().to_owned(),
            call.body["scheduled_at"].as_str().unwrap().to_owned(),
        );
        *per_run.entry(key).or_default() += 1;
    }
    assert_eq!(per_run.len(), 150, "5 periods x 30 users");
    assert!(per_run.values().all(|n| *n == 1), "{per_run:?}");
    let _ = std::fs::remove_file(config);
}

/// Waits (at most 30 s) until the replicas at `addresses` have counted
/// `attempts` attempts between them (`/stats` `processed`: each recorded and
/// its delivery settled) and nothing is left that could call an endpoint:
/// every run of `tasks` finished, no job queued (ready, delayed or failed)
/// and none in flight. Then until each task's scheduler completed two more
/// passes (one started after everything settled, and published nothing),
/// and answers each replica's count.
async fn wait_settled(
    addresses: &[SocketAddr],
    store: &RedisStore,
    tasks: &[&str],
    attempts: u64,
) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = settled(addresses, store, tasks).await;
        match &state {
            Ok(processed) if processed.iter().sum::<u64>() >= attempts => break,
            _ => assert!(Instant::now() < deadline, "never settled: {state:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for task in tasks {
        wait_passes_of(addresses, task, "completed", 2).await;
    }
    settled(addresses, store, tasks)
        .await
        .unwrap_or_else(|state| panic!("work after the passes: {state}"))
}

/// Each replica's `processed` when no run of `tasks` is under way, no job
/// is queued and none is in flight; else what is left.
async fn settled(
    addresses: &[SocketAddr],
    store: &RedisStore,
    tasks: &[&str],
) -> Result<Vec<u64>, String> {
    for task in tasks {
        let runs = store
            .runs(&TaskTypeId::parse(*task).unwrap())
            .await
            .unwrap();
        if !runs.runs.is_empty() {
            return Err(format!("{task}: {} runs under way", runs.runs.len()));
        }
    }
    let mut processed = Vec::new();
    for address in addresses {
        let metrics = scrape(*address).await;
        let queued = sample(&metrics, "taskqueue_queue_depth", &[]);
        let active = sample(&metrics, "taskqueue_active_jobs", &[]);
        let (_, stats) = get(*address, "/stats").await;
        processed.push(stats["processed"].as_u64().unwrap());
        if queued > 0.0 || active > 0.0 {
            return Err(format!(
                "{address}: {queued} jobs queued, {active} in flight, {processed:?} processed"
            ));
        }
    }
    Ok(processed)
}

#[actix_rt::test]
async fn sigterm_lets_in_flight_jobs_finish_and_the_rest_wait_for_the_next_process() {
    let sink = Sink::start();
    let backends = Backends::new("shutdown");
    let store = backends.store().await;
    let t0 = Utc::now().duration_trunc(TimeDelta::seconds(1)).unwrap();
    let users: Vec<String> = (0..8).map(|n| format!("user_{n}")).collect();
    enable_users(&store, "slow", &users).await;
    seed_last_fire(&store, "slow", t0).await;
    let tasks = hourly_task(
        "slow",
        t0 + TimeDelta::seconds(4),
        &sink.url("/slow/2000/s"),
    );
    let config = config_file(
        &backends,
        "worker:\n  pool_size: 4\n  shutdown_timeout: 20s",
        &tasks,
    );

    let mut first = serve(&config);
    let in_flight = sink.wait_for("/slow/", 4, Duration::from_secs(30)).await;
    assert_eq!(in_flight.len(), 4, "the pool is busy");
    assert_eq!(terminate(&mut first), 0, "exits 0 after draining");
    let finished_before_exit = sink.received_at("/slow/");
    assert_eq!(
        finished_before_exit.len(),
        4,
        "no new job was taken after SIGTERM"
    );

    let second_address = free_address();
    let mut second = serve_on(&config, second_address);
    let calls = sink.wait_for("/slow/", 8, Duration::from_secs(30)).await;
    // The second process ran the other four, and nothing is left that
    // could call a user again.
    let processed = wait_settled(&[second_address], &store, &["slow"], 4).await;
    assert_eq!(processed, [4]);
    assert_eq!(terminate(&mut second), 0);
    let calls_after = sink.received_at("/slow/");
    assert_eq!(calls.len(), calls_after.len());
    let mut per_user: BTreeMap<String, u32> = BTreeMap::new();
    for call in &calls_after {
        *per_user
            .entry(call.body["user_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_user.len(), 8, "none lost: {per_user:?}");
    assert!(
        per_user.values().all(|n| *n == 1),
        "none twice: {per_user:?}"
    );
    let _ = std::fs::remove_file(config);
}

#[actix_rt::test]
async fn sighup_reloads_the_tasks_file_and_a_bad_one_shows_as_degraded() {
    let good = "tasks:\n  - id: report\n    name: Report\n    interval: { type: daily, value: 1 }\n    timeout: 5s\n    config: { endpoint: \"http://127.0.0.1:9/x\", method: POST }\n";
    let tasks_file = temp_file("tasks.yaml", good);
    let config = temp_file(
        "taskqueue.yaml",
        &format!(
            "backend: embedded\ntasks:\n  config_file: \"{}\"\n  reload_interval: 1h\nmonitoring:\n  log_level: warn\n",
            tasks_file.display()
        ),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskqueue"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--bind", &address.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let health = |want: &'static str| async move {
        for _ in 0..100 {
            if let Ok(response) = reqwest::get(format!("http://{address}/health")).await {
                let body: serde_json::Value = response.json().await.unwrap();
                if body["status"] == want {
                    return body;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("/health never became {want}");
    };
    health("healthy").await;

    std::fs::write(&tasks_file, "tasks:\n  - id: report\n").unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let degraded = health("degraded").await;
    assert!(
        !degraded["errors"].as_array().unwrap().is_empty(),
        "{degraded}"
    );

    std::fs::write(&tasks_file, good).unwrap();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    let healthy = health("healthy").await;
    assert!(healthy.get("errors").is_none());
    assert_eq!(terminate(&mut child), 0);
    let _ = std::fs::remove_file(config);
    let _ = std::fs::remove_file(tasks_file);
}
