//! Bulk-import throughput: `taskqueue users import` of 200,000 generated
//! users into the Redis at `TASKQUEUE_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379/`), next to a raw ceiling measured in the same
//! run: a bare pipelined `HSET` of each user's tasks hash through
//! redis-rs, one command per user, no indexes and no atomicity. Median of
//! 3 runs each, every run in a fresh key prefix deleted afterwards.
//!
//! Two more measurements follow, each in a private `redis-server` started
//! on a free loopback port (so other clients of the shared server do not
//! move `used_memory`; without `redis-server` on the PATH they use the
//! shared one):
//!
//! - memory: Redis bytes per enabled (user, task): `used_memory` (`INFO
//!   memory`) before and after importing `IMPORT_BENCH_MEMORY_USERS`
//!   (200,000) users with one task each under the default prefix.
//! - walk: an index of `IMPORT_BENCH_WALK_USERS` (1,000,000) enabled users,
//!   walked in spread order in pages of 1000 through
//!   `enabled_users_in_spread_order`: mean and worst page time.
//!
//! Run: `cargo bench --bench import` (`IMPORT_BENCH_USERS` and
//! `IMPORT_BENCH_BATCH` change the user count and the batch size;
//! `IMPORT_BENCH_ONLY=throughput,memory,walk` picks sections).

use std::{
    io::Write,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use actors::{
    domain::{TaskTypeId, UserId},
    slot::spread_key,
    store::{
        Keys, ScheduleStore, SpreadCursor,
        redis::{RedisOptions, RedisStore},
    },
};
use indicatif::ProgressBar;
use redis::aio::ConnectionManager;
use taskqueue::commands::users::import_file;
use test_kit::redis_url;
use uuid::Uuid;

const RUNS: usize = 3;

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

/// Deletes the keys of `prefix` on the Redis at `url`.
fn cleanup(url: &str, prefix: &str) {
    test_kit::delete_prefix(url, prefix).expect("delete the bench's keys");
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A `redis-server` of our own, stopped on drop.
struct PrivateRedis {
    child: Child,
    url: String,
}

impl PrivateRedis {
    /// Starts one on a free loopback port; `None` without `redis-server`.
    async fn start() -> Option<PrivateRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let url = format!("redis://127.0.0.1:{port}/");
        let redis = PrivateRedis { child, url };
        let client = redis::Client::open(redis.url.as_str()).ok()?;
        for _ in 0..100 {
            if let Ok(mut connection) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
                    .is_ok()
            {
                return Some(redis);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn used_memory(connection: &mut ConnectionManager) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(connection)
        .await
        .expect("INFO memory");
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|value| value.trim().parse().ok())
        .expect("used_memory in INFO memory")
}

/// Bytes of Redis per user imported with one task: the memory section.
async fn memory_per_user(url: &str, users: usize) -> f64 {
    let path =
        std::env::temp_dir().join(format!("taskqueue-memory-bench-{}.jsonl", Uuid::new_v4()));
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        for n in 0..users {
            writeln!(
                file,
                r#"{{"user_id":"user_{n}","enabled_tasks":{{"daily_report":true}},"last_modified":"2024-01-15T10:00:00Z"}}"#
            )
            .expect("write");
        }
    }
    // The default prefix, as a deployment has it (on a shared server: one
    // of the same length).
    let prefix = if url == redis_url() {
        format!("tq{}", &Uuid::new_v4().simple().to_string()[..7])
    } else {
        "taskqueue".to_owned()
    };
    let client = redis::Client::open(url).expect("redis url");
    let mut raw = ConnectionManager::new(client).await.expect("connect");
    let store = RedisStore::connect(url, Keys::new(prefix.clone()), RedisOptions::default())
        .await
        .expect("connect");
    let before = used_memory(&mut raw).await;
    let summary = import_file(&path, &store, None, 1000, &ProgressBar::hidden())
        .await
        .expect("import");
    assert_eq!(summary.imported as usize, users);
    let after = used_memory(&mut raw).await;
    cleanup(url, &prefix);
    let _ = std::fs::remove_file(&path);
    (after - before) as f64 / users as f64
}

/// Page times (sorted) walking `users` enabled users in spread order,
/// pages of 1000: the walk section.
async fn walk_pages(url: &str, users: usize) -> Vec<Duration> {
    let prefix = format!("tqwalk-{}", Uuid::new_v4().simple());
    let task = TaskTypeId::parse("daily_report").expect("task id");
    let client = redis::Client::open(url).expect("redis url");
    let mut raw = ConnectionManager::new(client).await.expect("connect");
    let store = RedisStore::connect(url, Keys::new(prefix.clone()), RedisOptions::default())
        .await
        .expect("connect");
    let index = store.keys().enabled_index(&task);
    for chunk_start in (0..users).step_by(10_000) {
        let entries: Vec<(u64, String)> = (chunk_start..(chunk_start + 10_000).min(users))
            .map(|n| {
                let user = UserId::parse(format!("user_{n}")).expect("user id");
                (spread_key(&task, &user), user.to_string())
            })
            .collect();
        redis::cmd("ZADD")
            .arg(&index)
            .arg(entries)
            .query_async::<()>(&mut raw)
            .await
            .expect("ZADD");
    }
    let mut cursor: Option<SpreadCursor> = None;
    let mut walked = 0usize;
    let mut times = Vec::new();
    loop {
        let started = Instant::now();
        let page = store
            .enabled_users_in_spread_order(&task, cursor.as_ref(), 1000)
            .await
            .expect("page");
        let took = started.elapsed();
        if page.is_empty() {
            break;
        }
        times.push(took);
        walked += page.len();
        cursor = page.last().cloned();
    }
    assert_eq!(walked, users);
    cleanup(url, &prefix);
    times.sort();
    times
}

#[tokio::main]
async fn main() {
    let only =
        std::env::var("IMPORT_BENCH_ONLY").unwrap_or_else(|_| "throughput,memory,walk".to_owned());
    let sections: Vec<&str> = only.split(',').map(str::trim).collect();
    if sections.contains(&"throughput") {
        throughput().await;
    }
    if !sections.contains(&"memory") && !sections.contains(&"walk") {
        return;
    }
    let private = PrivateRedis::start().await;
    let url = private
        .as_ref()
        .map_or_else(redis_url, |redis| redis.url.clone());
    let server = if private.is_some() {
        "a private redis-server"
    } else {
        "the shared Redis (no redis-server on the PATH)"
    };
    if sections.contains(&"memory") {
        let users = env_usize("IMPORT_BENCH_MEMORY_USERS", 200_000);
        let bytes = memory_per_user(&url, users).await;
        println!();
        println!("| Redis memory ({users} users, one task, {server}) | bytes per user |");
        println!("|---|---:|");
        println!("| `used_memory` after import − before, ÷ users | {bytes:.0} |");
    }
    if sections.contains(&"walk") {
        let users = env_usize("IMPORT_BENCH_WALK_USERS", 1_000_000);
        let times = walk_pages(&url, users).await;
        let pages = times.len();
        let ms = |at: Duration| at.as_secs_f64() * 1e3;
        let total: Duration = times.iter().sum();
        let quantile = |q: f64| times[((pages - 1) as f64 * q).round() as usize];
        println!();
        println!("| spread-order walk ({users} users, {pages} pages of 1000, {server}) | ms |");
        println!("|---|---:|");
        println!("| whole walk | {:.0} |", ms(total));
        println!("| page, mean | {:.2} |", ms(total / pages as u32));
        println!("| page, median | {:.2} |", ms(quantile(0.5)));
        println!("| page, p99 | {:.2} |", ms(quantile(0.99)));
        println!("| page, max | {:.2} |", ms(quantile(1.0)));
    }
}

async fn throughput() {
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
        cleanup(&redis_url(), &prefix);

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
        cleanup(&redis_url(), &prefix);
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
