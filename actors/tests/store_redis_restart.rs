//! A Redis restart heals without restarting taskqueue: the store's managed
//! connection reconnects by itself. This test restarts the real server with
//! `scripts/services.sh restart redis`, so it holds the shared servers
//! exclusively (`tests/kit/src/server_lock.rs`): no other test process,
//! under cargo or cargo-nextest, sees the restart.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use actors::{
    domain::{TaskTypeId, UserId},
    store::{
        Keys, LockName, LockStore, PreferenceStore, PreferenceWrite, ScheduleStore,
        redis::{RedisOptions, RedisStore},
    },
};
use chrono::Utc;

fn restart_redis() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/services.sh");
    let status = Command::new("bash")
        .args([script, "restart", "redis"])
        .status()
        .expect("run scripts/services.sh");
    assert!(status.success(), "restarting redis failed: {status}");
}

#[tokio::test]
async fn the_store_heals_after_a_redis_restart() {
    // Restarts the shared Redis: every other test process waits.
    test_kit::server_lock::restarting_servers();
    let prefix = format!("tqrestart-{}", uuid::Uuid::new_v4().simple());
    let store = RedisStore::connect(
        &test_kit::redis_url(),
        Keys::new(prefix),
        RedisOptions::default(),
    )
    .await
    .expect("redis-server must be running: scripts/services.sh start");
    let task = TaskTypeId::parse("sync").unwrap();
    let user = UserId::parse("user_1").unwrap();
    let enable = PreferenceWrite {
        user_id: user.clone(),
        task_type_id: task.clone(),
        enabled: true,
        settings: None,
        custom_next_fire: None,
        modified_at: Utc::now(),
    };
    store
        .write_preferences(std::slice::from_ref(&enable))
        .await
        .unwrap();
    assert_eq!(store.enabled_user_count(&task).await.unwrap(), 1);

    restart_redis();

    // Calls may fail while the connection is re-established; within a few
    // seconds the same store must work again, with no new connect call.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut failures = 0;
    loop {
        match store.write_preferences(std::slice::from_ref(&enable)).await {
            Ok(()) => break,
            Err(err) if Instant::now() < deadline => {
                failures += 1;
                tracing::debug!(%err, failures, "still reconnecting");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("the store did not heal within 15 s: {err}"),
        }
    }
    // The restarted server keeps no data (it runs without persistence), so
    // what we see is what was written after the restart.
    assert_eq!(store.enabled_user_count(&task).await.unwrap(), 1);
    assert_eq!(
        store.enabled_users_after(&task, None, 10).await.unwrap(),
        vec![user.clone()]
    );
    let lock = LockName::Schedule(task.clone());
    let lease = store
        .acquire_lock(&lock, Duration::from_secs(5))
        .await
        .unwrap()
        .expect("the lock is free on the fresh server");
    assert!(store.release_lock(&lock, &lease).await.unwrap());
    assert!(store.delete_preference(&user, &task).await.unwrap());
}
