//! The fault suite, process faults: real `taskqueue serve` processes on the
//! real Redis and RabbitMQ, a ledger endpoint recording every call by job.
//! Each scenario prints `expected / delivered / lost / duplicate successes
//! / repeated calls` and asserts that nothing is lost and nothing succeeds
//! twice:
//!
//! 1. `kill -9` of a worker with 2,000 jobs queued and in flight, restarted;
//! 2. `kill -9` of the scheduler in the middle of a scheduled and of a
//!    triggered fan-out; the other replica finishes the same run;
//! 5. three replicas racing the same ticks for 5 periods;
//! 6. the endpoint hangs (longer than the call timeout), then recovers;
//! 7. one replica's clock 30 s ahead (`libfaketime`), every first call
//!    failing so retries are planned on both clocks;
//! 8. split roles: a task added and SIGHUP sent runs on the workers;
//! 9. an endpoint that always throttles is dead-lettered within its budget.
//!
//! Sizes are those of RELIABILITY.md, smaller than production's so the
//! suite fits in CI.

mod support;

use std::{collections::BTreeSet, time::Duration};

use chrono::{DurationRound, TimeDelta, Utc};
use serde_json::json;
use support::*;

/// How long before a kill a 2xx may have been answered and still repeat
/// (a crash between reading a success and recording it, one Redis round
/// trip, with room for a loaded machine's scheduling delays).
const CRASH_WINDOW: Duration = Duration::from_millis(100);

fn users(count: usize) -> Vec<String> {
    (0..count).map(|n| format!("user_{n:05}")).collect()
}

fn t0() -> chrono::DateTime<Utc> {
    Utc::now().duration_trunc(TimeDelta::seconds(1)).unwrap()
}

#[actix_rt::test]
async fn s1_a_worker_killed_with_2000_jobs_in_flight_loses_none_and_runs_none_twice() {
    // Runs alone on the shared servers: every other test process waits
    // (tests/kit/src/server_lock.rs).
    restarting_servers();
    const USERS: usize = 2_000;
    let ledger = Ledger::start();
    let backends = Backends::new("fault-worker-kill");
    let store = backends.store().await;
    let t0 = t0();
    enable_users(&store, "work", &users(USERS)).await;
    seed_last_fire(&store, "work", t0).await;
    let config = config_file(
        &backends,
        "worker:\n  pool_size: 32",
        &hourly_task_with(
            "work",
            t0 + TimeDelta::seconds(6),
            &ledger.url("/delay/200/work"),
            "timeout: 2s\nretries: 3",
        ),
    );
    let mut scheduler = serve_as(&config, free_address(), "scheduler");
    let mut worker = serve_as(&config, free_address(), "worker");

    // Killed while most of the run is queued and a pool's worth is open.
    assert!(
        ledger
            .wait_until(Duration::from_secs(60), |calls| calls.len() >= 300)
            .await,
        "the run never started"
    );
    signal(&worker, "KILL");
    ledger.note_kill();
    let _ = worker.wait();
    // The killed worker's open calls still get their 2xx from the ledger,
    // into closed connections: taskqueue never saw those successes.
    let orphaned = ledger.orphan_open_calls();
    let at_kill = ledger.delivered();
    let mut restarted = serve_as(&config, free_address(), "worker");

    // Settles past the claim of the killed worker's open calls (timeout
    // + 10 s), so a copy redelivered after it would show.
    ledger
        .wait_delivered(USERS, Duration::from_secs(120), Duration::from_secs(14))
        .await;
    println!("fault s1: killed after {at_kill} deliveries, {orphaned} calls open");
    // A success read but not yet recorded when the worker died is called
    // again with the same key; the window is one Redis round trip, so no
    // first 2xx answered longer than that before the kill may repeat.
    ledger.report_and_check_kill(USERS, "s1 worker kill -9", CRASH_WINDOW);
    assert_eq!(terminate(&mut restarted), 0);
    assert_eq!(terminate(&mut scheduler), 0);
    let _ = std::fs::remove_file(config);
}

#[actix_rt::test]
async fn s2a_the_scheduler_killed_mid_scheduled_fan_out_is_finished_by_another_replica() {
    // Runs alone on the shared servers: every other test process waits
    // (tests/kit/src/server_lock.rs).
    restarting_servers();
    const USERS: usize = 5_000;
    let ledger = Ledger::start();
    let backends = Backends::new("fault-sched-kill");
    let store = backends.store().await;
    let t0 = t0();
    enable_users(&store, "fan", &users(USERS)).await;
    seed_last_fire(&store, "fan", t0).await;
    let config = config_file(
        &backends,
        "worker:\n  pool_size: 32",
        &hourly_task("fan", t0 + TimeDelta::seconds(5), &ledger.url("/ok/fan")),
    );
    let config = window(&config, "15s");
    let mut first = serve_as(&config, free_address(), "scheduler");
    let mut worker = serve_as(&config, free_address(), "worker");
    assert!(
        ledger
            .wait_until(Duration::from_secs(60), |calls| calls.len() >= USERS / 10)
            .await,
        "the run never started"
    );
    // The standby replica is up before the leader dies.
    let mut second = serve_as(&config, free_address(), "scheduler");
    assert!(
        ledger
            .wait_until(Duration::from_secs(60), |calls| calls.len() >= USERS / 3)
            .await
    );
    kill9(&mut first);
    let at_kill = ledger.delivered();
    ledger
        .wait_delivered(USERS, Duration::from_secs(120), Duration::from_secs(3))
        .await;
    println!("fault s2a: killed after {at_kill} deliveries");
    same_run(&ledger.calls());
    ledger
        .outcome(USERS)
        .report_and_check("s2a scheduler kill -9, scheduled");
    assert_eq!(terminate(&mut second), 0);
    assert_eq!(terminate(&mut worker), 0);
    let _ = std::fs::remove_file(config);
}

#[actix_rt::test]
async fn s2b_the_scheduler_killed_mid_triggered_fan_out_is_finished_by_another_replica() {
    // Runs alone on the shared servers: every other test process waits
    // (tests/kit/src/server_lock.rs).
    restarting_servers();
    const USERS: usize = 5_000;
    let ledger = Ledger::start();
    let backends = Backends::new("fault-trigger-kill");
    let store = backends.store().await;
    let now = t0();
    enable_users(&store, "manual", &users(USERS)).await;
    // Fired just now: the next scheduled period is an hour away.
    seed_last_fire(&store, "manual", now).await;
    let config = config_file(
        &backends,
        "worker:\n  pool_size: 32",
        &hourly_task("manual", now, &ledger.url("/ok/manual")),
    );
    let config = window(&config, "15s");
    let first_address = free_address();
    let mut first = serve_as(&config, first_address, "scheduler");
    let mut second = serve_as(&config, free_address(), "scheduler");
    let mut worker = serve_as(&config, free_address(), "worker");
    wait_until_up(first_address).await;
    let (status, body) = post(
        first_address,
        "/schedule/trigger",
        &json!({"task_type_id": "manual"}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["jobs_created"], USERS);
    assert!(
        ledger
            .wait_until(Duration::from_secs(60), |calls| calls.len() >= USERS / 3)
            .await,
        "the run never started"
    );
    kill9(&mut first);
    let at_kill = ledger.delivered();
    ledger
        .wait_delivered(USERS, Duration::from_secs(120), Duration::from_secs(3))
        .await;
    println!("fault s2b: killed after {at_kill} deliveries");
    same_run(&ledger.calls());
    ledger
        .outcome(USERS)
        .report_and_check("s2b scheduler kill -9, triggered");
    assert_eq!(terminate(&mut second), 0);
    assert_eq!(terminate(&mut worker), 0);
    let _ = std::fs::remove_file(config);
}

#[actix_rt::test]
async fn s5_three_replicas_racing_the_same_ticks_for_5_periods_run_each_once() {
    // Runs alone on the shared servers: every other test process waits
    // (tests/kit/src/server_lock.rs).
    restarting_servers();
    const USERS: usize = 200;
    let ledger = Ledger::start();
    let backends = Backends::new("fault-race");
    let store = backends.store().await;
    let t0 = t0();
    let mut tasks = String::new();
    for (n, offset) in [8, 10, 12, 14, 16].into_iter().enumerate() {
        let id = format!("period_{n}");
        tasks.push_str(&hourly_task(
            &id,
            t0 + TimeDelta::seconds(offset),
            &ledger.url(&format!("/ok/{id}")),
        ));
        enable_users(&store, &id, &users(USERS)).await;
        seed_last_fire(&store, &id, t0).await;
    }
    let config = config_file(&backends, "worker:\n  pool_size: 8", &tasks);
    let mut replicas: Vec<_> = (0..3).map(|_| serve(&config)).collect();
    ledger
        .wait_delivered(5 * USERS, Duration::from_secs(90), Duration::from_secs(3))
        .await;
    ledger
        .outcome(5 * USERS)
        .report_and_check("s5 three replicas, 5 periods");
    for replica in &mut replicas {
        assert_eq!(terminate(replica), 0);
    }
    let _ = std::fs::remove_file(config);
}

#[actix_rt::test]
async fn s6_an_endpoint_that_hangs_then_recovers_gets_every_job_once() {
    // Runs alone on the shared servers: every other test process waits
    // (tests/kit/src/server_lock.rs).
    restarting_servers();
    const USERS: usize = 100;
    let ledger = Ledger::start();
    let backends = Backends::new("fault-hang");
    let store = backends.store().await;
    let t0 = t0();
    enable_users(&store, "hang", &users(USERS)).await;
    seed_last_fire(&store, "hang", t0).await;
    let config = config_file(
        &backends,
        "worker:\n  pool_size: 50",
        &hourly_task_with(
            "hang",
            t0 + TimeDelta::seconds(4),
            &ledger.url("/hang/h"),
            "timeout: 2s\nretries: 10",
        ),
    );
    // Hangs from before the first call until 10 s after it.
    ledger.hang_for(Duration::from_secs(3600));
    let mut replica = serve(&config);
    assert!(
        ledger
            .wait_until(Duration::from_secs(60), |calls| !calls.is_empty())
            .await
    );
    ledger.hang_for(Duration::from_secs(10));
    ledger
        .wait_delivered(USERS, Duration::from_secs(120), Duration::from_secs(3))
        .await;
    let outcome = ledger.outcome(USERS);
    outcome.report_and_check("s6 endpoint hangs 10 s, call timeout 2 s");
    assert!(outcome.repeated_calls > 0, "the hang timed calls out");
    assert_eq!(terminate(&mut replica), 0);
    let _ = std::fs::remove_file(config);
}

#[actix_rt::test]
async fn s7_a_replica_whose_clock_is_30s_ahead_loses_nothing_and_runs_nothing_twice() {
    // Runs alone on the shared servers: every other test process waits
    // (tests/kit/src/server_lock.rs).
    restarting_servers();
    const USERS: usize = 200;
    let ledger = Ledger::start();
    let backends = Backends::new("fault-clock-ahead");
    let store = backends.store().await;
    let t0 = t0();
    let fire = t0 + TimeDelta::seconds(25);
    enable_users(&store, "skew", &users(USERS)).await;
    seed_last_fire(&store, "skew", t0).await;
    // Every first call fails: retries are planned on both clocks.
    let config = config_file(
        &backends,
        "worker:\n  pool_size: 8",
        &hourly_task_with(
            "skew",
            fire,
            &ledger.url("/failfirst/skew"),
            "timeout: 2s\nretries: 3",
        ),
    );
    let mut honest = serve_as(&config, free_address(), "all");
    let mut ahead = serve_skewed(&config, free_address(), "all", "+30s");
    assert!(
        ledger
            .wait_until(Duration::from_secs(60), |calls| !calls.is_empty())
            .await,
        "the run never started"
    );
    // The replica ahead saw the fire first and made the run: it started
    // before the fire on the true clock.
    let first_call_at = Utc::now();
    assert!(
        first_call_at < fire,
        "the skew did not take: {first_call_at} >= {fire}"
    );
    ledger
        .wait_delivered(USERS, Duration::from_secs(120), Duration::from_secs(3))
        .await;
    same_run(&ledger.calls());
    let outcome = ledger.outcome(USERS);
    outcome.report_and_check("s7 one replica's clock 30 s ahead");
    assert!(outcome.repeated_calls >= USERS, "every first call failed");
    assert_eq!(terminate(&mut ahead), 0);
    assert_eq!(terminate(&mut honest), 0);
    let _ = std::fs::remove_file(config);
}

/// Rewrites the config's distribution window (a longer window keeps the
/// fan-out running long enough to be killed in the middle).
fn window(config: &std::path::Path, window: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(config).unwrap();
    let _ = std::fs::remove_file(config);
    temp_file(
        "taskqueue.yaml",
        &text.replace(
            "distribution_window: 3s",
            &format!("distribution_window: {window}"),
        ),
    )
}

/// Every call belongs to one run: one `scheduled_at`.
fn same_run(calls: &[Call]) {
    let runs: BTreeSet<&str> = calls.iter().map(|c| c.run.2.as_str()).collect();
    assert_eq!(runs.len(), 1, "one run, finished by the survivor: {runs:?}");
}

/// Scenario 8: a task added to the tasks file and announced with SIGHUP
/// runs its first period on `--role worker` processes (no
/// `unknown_task_type`).
#[actix_rt::test]
async fn s8_split_roles_a_task_added_and_reloaded_runs_its_first_period_on_the_workers() {
    // Runs alone on the shared servers: every other test process waits
    // (tests/kit/src/server_lock.rs).
    restarting_servers();
    const USERS: usize = 100;
    let ledger = Ledger::start();
    let backends = Backends::new("fault-reload");
    let store = backends.store().await;
    let t0 = t0();
    let base = hourly_task("base", t0, &ledger.url("/ok/base"));
    let tasks_file = temp_file("tasks.yaml", &format!("tasks:\n{base}"));
    let config = config_file(
        &backends,
        "",
        &format!(
            "  config_file: \"{}\"\n  reload_interval: 1h\n",
            tasks_file.display()
        ),
    );
    seed_last_fire(&store, "base", t0).await;
    let mut scheduler = serve_as(&config, free_address(), "scheduler");
    let worker_address = free_address();
    let mut worker = serve_as(&config, worker_address, "worker");
    wait_until_up(worker_address).await;

    enable_users(&store, "fresh", &users(USERS)).await;
    seed_last_fire(&store, "fresh", t0).await;
    let fresh = hourly_task(
        "fresh",
        t0 + TimeDelta::seconds(8),
        &ledger.url("/ok/fresh"),
    );
    std::fs::write(&tasks_file, format!("tasks:\n{base}{fresh}")).unwrap();
    signal(&scheduler, "HUP");
    signal(&worker, "HUP");
    ledger
        .wait_delivered(USERS, Duration::from_secs(60), Duration::from_secs(2))
        .await;
    ledger
        .outcome(USERS)
        .report_and_check("s8 split roles, SIGHUP");
    let failed = backends.take_all(actors::broker::QUEUE_FAILED).await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(terminate(&mut worker), 0);
    assert_eq!(terminate(&mut scheduler), 0);
    let _ = std::fs::remove_file(config);
    let _ = std::fs::remove_file(tasks_file);
}

/// Scenario 9: an endpoint that always answers 429 `Retry-After: 1` is
/// dead-lettered `throttled_too_long`, each job called at most its budget
/// (3 throttles for each of its 2 allowed attempts) and once more.
#[actix_rt::test]
async fn s9_an_endpoint_that_always_throttles_is_dead_lettered_within_its_budget() {
    // Runs alone on the shared servers: every other test process waits
    // (tests/kit/src/server_lock.rs).
    restarting_servers();
    const USERS: usize = 5;
    let ledger = Ledger::start();
    let backends = Backends::new("fault-throttle");
    let store = backends.store().await;
    let t0 = t0();
    enable_users(&store, "throttled", &users(USERS)).await;
    seed_last_fire(&store, "throttled", t0).await;
    let config = config_file(
        &backends,
        "",
        &hourly_task_with(
            "throttled",
            t0 + TimeDelta::seconds(4),
            &ledger.url("/always429/t"),
            "timeout: 2s\nretries: 1",
        ),
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "\nexecution:\n",
        "\nexecution:\n  throttles_per_attempt: 3\n",
    );
    std::fs::write(&config, text).unwrap();
    let address = free_address();
    let mut replica = serve_on(&config, address);
    // The queues exist once the process answers.
    wait_until_up(address).await;
    let mut failed = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while failed.len() < USERS && std::time::Instant::now() < deadline {
        failed.extend(backends.take_all(actors::broker::QUEUE_FAILED).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let outcome = ledger.outcome(0);
    println!(
        "fault s9 always 429: expected {USERS} dead-lettered / dead-lettered {} / calls {}",
        failed.len(),
        ledger.calls().len()
    );
    assert_eq!(failed.len(), USERS);
    assert!(
        failed.iter().all(
            |(headers, _)| headers.get("x-taskqueue-reason").map(String::as_str)
                == Some("throttled_too_long")
        ),
        "{failed:?}"
    );
    assert_eq!(outcome.delivered, 0);
    let mut per_job: std::collections::BTreeMap<String, usize> = Default::default();
    for call in ledger.calls() {
        *per_job.entry(call.key).or_default() += 1;
    }
    assert_eq!(per_job.len(), USERS);
    assert!(
        per_job.values().all(|calls| *calls <= 2 * 3 + 1),
        "over the budget: {per_job:?}"
    );
    assert_eq!(terminate(&mut replica), 0);
    let _ = std::fs::remove_file(config);
}
