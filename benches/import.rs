//! Bulk-import throughput: `taskqueue users import` of 200,000 generated
//! users into the Redis at `TASKQUEUE_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379/`), next to a raw ceiling measured in the same
//! run: a bare pipelined `HSET` of each user's tasks hash through
//! redis-rs, one command per user, no indexes and no atomicity. Median of
//! 3 runs each, every run in a fresh key prefix deleted afterwards.
//!
//! Run: `cargo bench --bench import` (`IMPORT_BENCH_USERS` and
//! `IMPORT_BENCH_BATCH` change the user count and the batch size).

use std::{io::Write, time::Instant};

use actors::store::{
    Keys,
    redis::{RedisOptions, RedisStore},
};
use indicatif::ProgressBar;
use redis::aio::ConnectionManager;
use taskqueue::commands::users::import_file;
use uuid::Uuid;

const RUNS: usize = 3;

fn redis_url() -> String {
    std::env::var("TASKQUEUE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

/// One user's line: two tasks, one user in ten with a custom interval and
/// parameters.
fn user_line(n: usize) -> String {
    let settings = if n.is_multiple_of(10) {
        r#","task_settings":{"daily_report":{"custom_interval":{"type":"daily","value":1,"timezone":"Europe/Paris","at_time":"07:30"},"parameters":{"lang":"fr"}}}"#
    } else {
        ""
    };
    format!(
        r#"{{"user_id":"user_{n}","enabled_tasks":{{"daily_report":true,"weekly_digest":{}}}{settings},"last_modified":"2024-01-15T10:00:00Z"}}"#,
        n.is_multiple_of(3)
    )
}

async fn cleanup(connection: &mut ConnectionManager, prefix: &str) {
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(10_000)
            .query_async(connection)
            .await
            .expect("SCAN");
        if !keys.is_empty() {
            redis::cmd("UNLINK")
                .arg(keys)
                .query_async::<()>(connection)
                .await
                .expect("UNLINK");
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let users: usize = std::env::var("IMPORT_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let batch: usize = std::env::var("IMPORT_BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let path =
        std::env::temp_dir().join(format!("taskqueue-import-bench-{}.jsonl", Uuid::new_v4()));
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        for n in 0..users {
            writeln!(file, "{}", user_line(n)).expect("write");
        }
    }
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut raw = ConnectionManager::new(client).await.expect("connect");

    let mut import_rates = Vec::new();
    let mut raw_rates = Vec::new();
    for run in 1..=RUNS {
        let prefix = format!("tqbench-{}", Uuid::new_v4().simple());
        let store = RedisStore::connect(
            &redis_url(),
            Keys::new(prefix.clone()),
            RedisOptions::default(),
        )
        .await
        .expect("connect");
        let started = Instant::now();
        let summary = import_file(&path, &store, None, batch, &ProgressBar::hidden())
            .await
            .expect("import");
        let elapsed = started.elapsed().as_secs_f64();
        assert_eq!(summary.imported as usize, users);
        assert!(summary.rejected.is_empty());
        import_rates.push(users as f64 / elapsed);
        cleanup(&mut raw, &prefix).await;

        let prefix = format!("tqbench-{}", Uuid::new_v4().simple());
        let started = Instant::now();
        for chunk_start in (0..users).step_by(batch) {
            let mut pipe = redis::pipe();
            for n in chunk_start..(chunk_start + batch).min(users) {
                pipe.cmd("HSET")
                    .arg(format!("{prefix}:users:user_{n}:tasks"))
                    .arg("daily_report")
                    .arg("1")
                    .arg("weekly_digest")
                    .arg(if n.is_multiple_of(3) { "1" } else { "0" })
                    .ignore();
            }
            pipe.query_async::<()>(&mut raw).await.expect("HSET");
        }
        let elapsed = started.elapsed().as_secs_f64();
        raw_rates.push(users as f64 / elapsed);
        cleanup(&mut raw, &prefix).await;
        eprintln!(
            "run {run}: import {:.0} users/s, raw HSET {:.0} users/s",
            import_rates[run - 1],
            raw_rates[run - 1]
        );
    }
    let _ = std::fs::remove_file(&path);

    let import = median(import_rates);
    let ceiling = median(raw_rates);
    println!("| what ({users} users, median of {RUNS}) | users/s | of ceiling |");
    println!("|---|---:|---:|");
    println!(
        "| `taskqueue users import` (batches of {batch}, `MULTI`/`EXEC` with indexes) | {import:.0} | {:.0}% |",
        100.0 * import / ceiling
    );
    println!("| raw ceiling: pipelined `HSET` per user, nothing else | {ceiling:.0} | 100% |");
}
