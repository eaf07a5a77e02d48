//! The fault suite, scenario 4: Redis restarted, with AOF on as production
//! runs it, while executors run. The service heals without a restart,
//! `/health` shows the outage meanwhile (Redis down: `unhealthy`, 503, with
//! the reason), and nothing is lost or succeeds twice. The scenario runs
//! its own `redis-server` on a free port, so the shared server and every
//! other test are untouched.

mod support;

use std::time::{Duration, Instant};

use support::*;

#[actix_rt::test]
async fn s4_a_redis_restart_shows_in_health_heals_and_loses_nothing() {
    // Runs alone on the shared servers: every other test process waits
    // (tests/kit/src/server_lock.rs).
    restarting_servers();
    let mut redis = PrivateRedis::start();
    let run = RestartRun::start(
        RunShape {
            users: 1_000,
            pool: 8,
            window: "10s",
            path: "/delay/20/work",
        },
        Backends::on_redis("fault-redis-restart", &redis.address()),
    )
    .await;
    run.wait_started(5).await;
    let (status, health) = get(run.address, "/health").await;
    assert_eq!(health["status"], "healthy", "before the restart: {health}");
    assert_eq!(status, 200);

    // Down for 3 s, long enough for executors to meet the outage.
    redis.stop();
    let at_stop = run.ledger.delivered();
    let down_until = Instant::now() + Duration::from_secs(3);
    let mut during = Vec::new();
    while Instant::now() < down_until {
        during.push(get(run.address, "/health").await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    redis.start_again();
    let (status, health) = during
        .iter()
        .find(|(_, health)| health["status"] != "healthy")
        .cloned()
        .expect("/health never showed Redis down");
    assert_eq!(status, 503, "{health}");
    assert_eq!(
        health["dependencies"]["redis"]["status"], "down",
        "{health}"
    );
    assert!(
        health["errors"][0]
            .as_str()
            .is_some_and(|e| e.contains("redis")),
        "{health}"
    );

    // Heals by itself: healthy again, without a restart of the replica.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut healed = false;
    while !healed && Instant::now() < deadline {
        let (status, health) = get(run.address, "/health").await;
        healed = status == 200 && health["status"] == "healthy";
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healed, "/health never healthy again after the restart");
    assert!(at_stop < run.users, "the restart fell after the run");
    println!("fault s4: Redis stopped after {at_stop} deliveries, 3 s down");
    run.finish(
        "s4 Redis restart (AOF) during execution",
        Duration::from_secs(14),
    )
    .await;
}
