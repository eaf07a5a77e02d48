//! The fault suite, retries under CPU load: two replicas (`--role all`),
//! 300 users triggered over a 10 s window, an endpoint that fails each
//! run's first call with 500 (`retries: 3`, `retry_delay: 1s`), and busy
//! loops on every core meanwhile. Every retry must arrive: nothing lost,
//! nothing succeeding twice. When one does not, the test prints where the
//! messages sit (each queue's ready and unacked counts), each replica's
//! heartbeats (`/health` actors) and which runs are missing, before
//! failing.
//!
//! A binary of its own: the busy loops slow whatever runs beside them.
//! `TASKQUEUE_STRESS_ROUNDS` sets the number of triggered runs (default 2).

mod support;

use std::{
    collections::BTreeMap,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DurationRound, TimeDelta, Utc};
use serde_json::json;
use support::*;

const USERS: usize = 300;

/// Spins one thread per core (and one more) until dropped.
struct CpuLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuLoad {
    fn start() -> CpuLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..=2 * cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x: u64 = 1;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..10_000 {
                            x = std::hint::black_box(x.wrapping_mul(6364136223846793005) + 1);
                        }
                    }
                })
            })
            .collect();
        CpuLoad { stop, threads }
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Each queue of the vhost with its ready and unacked messages.
fn queue_counts(vhost: &str) -> String {
    Command::new("/usr/sbin/rabbitmqctl")
        .args(["-q", "list_queues", "-p", vhost])
        .args([
            "name",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
        ])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_else(|error| format!("rabbitmqctl: {error}"))
}

/// Two fresh replicas on fresh backends, one triggered run under load;
/// the outcome over the ledger so far (`expected` runs in all).
async fn round(ledger: &Ledger, round: usize, expected: usize) -> Outcome {
    let backends = Backends::new("fault-retry-stress");
    let store = backends.store().await;
    let now = Utc::now().duration_trunc(TimeDelta::seconds(1)).unwrap();
    let users: Vec<String> = (0..USERS).map(|n| format!("user_{n:05}")).collect();
    enable_users(&store, "flaky", &users).await;
    // Fired just now: only the trigger runs.
    seed_last_fire(&store, "flaky", now).await;
    let config = config_file(
        &backends,
        "worker:\n  pool_size: 16",
        &hourly_task_with(
            "flaky",
            now,
            &ledger.url("/failfirst/flaky"),
            "timeout: 2s\nretries: 3",
        ),
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("distribution_window: 3s", "distribution_window: 10s")
        .replace("retry_delay: 200ms", "retry_delay: 1s");
    std::fs::write(&config, text).unwrap();
    let load = CpuLoad::start();
    let (first, second) = (free_address(), free_address());
    let mut replicas = vec![serve_on(&config, first), serve_on(&config, second)];
    wait_until_up(first).await;
    let started = Instant::now();
    let (status, body) = post(
        first,
        "/schedule/trigger",
        &json!({"task_type_id": "flaky"}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let delivered = ledger
        .wait_delivered(expected, Duration::from_secs(60), Duration::from_secs(2))
        .await;
    drop(load);
    if delivered < expected {
        println!(
            "stress round {round}: queues now\n{}",
            queue_counts(&backends.vhost.name)
        );
        // A lane whose executors hold their jobs shows stuck here.
        for address in [first, second] {
            let (_, health) = get(address, "/health").await;
            println!("{address} /health actors: {}", health["actors"]);
        }
        let calls = ledger.calls();
        let mut runs: BTreeMap<_, Vec<&Call>> = BTreeMap::new();
        for call in &calls {
            runs.entry(&call.run).or_default().push(call);
        }
        for (run, calls) in runs
            .iter()
            .filter(|(_, c)| !c.iter().any(|c| c.succeeded()))
        {
            let first = calls[0].at.saturating_duration_since(started);
            println!(
                "missing {run:?}: {} calls, the first {first:?} after the trigger",
                calls.len()
            );
        }
    }
    for replica in &mut replicas {
        assert_eq!(terminate(replica), 0);
    }
    let _ = std::fs::remove_file(config);
    ledger.outcome(expected)
}

#[actix_rt::test]
async fn retries_under_cpu_load_all_arrive() {
    let rounds: usize = std::env::var("TASKQUEUE_STRESS_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2);
    let ledger = Ledger::start();
    for n in 1..=rounds {
        round(&ledger, n, n * USERS)
            .await
            .report_and_check(&format!("retry stress round {n} under CPU load"));
    }
}
