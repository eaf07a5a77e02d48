//! One conformance suite for every state store: each test below runs
//! against [`MemoryStore`] and against [`RedisStore`] on a real Redis
//! (`TASKQUEUE_TEST_REDIS_URL`, default `redis://127.0.0.1:6379/`), the
//! latter in a random key prefix removed at the end.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use actors::{
    domain::{
        ErrorDetail, ExecutionResult, Job, JobEnvelope, JobMetadata, JobSource, Priority, Settings,
        Status, TaskInterval, TaskTypeId, UserId,
    },
    fanout::{Audience, Run, RunSource},
    slot::spread_key,
    store::{
        Bucket, BucketName, ClaimOutcome, DurationSample, ExecutionClaim, ExecutionFinish, Keys,
        LockName, LockStore, MetricsBatch, MetricsStore, NextTry, PreferenceStore, PreferenceWrite,
        ScheduleStore, SlotWrite, SpreadCursor, StateStore, Throttle, TimezoneWrite, TokenStore,
        durations::DurationStore,
        memory::MemoryStore,
        redis::{RedisOptions, RedisStore},
        replicas::{ReplicaReport, ReplicaStore},
        results::{
            AttemptRecord, JobResultStore, LATENESS_BOUNDS_MS, LATENESS_BUCKETS, MAX_ATTEMPTS_KEPT,
            MAX_RUNS_KEPT, PeriodOf, PeriodTally, ResultWrite, zero_time,
        },
    },
};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use rand::{Rng, SeedableRng, rngs::StdRng};
use redis::{AsyncCommands, aio::ConnectionManager};
use uuid::Uuid;

/// Metrics limits every fixture uses, small enough to test trimming.
const RETENTION: Duration = Duration::from_secs(3600);
const MAX_SAMPLES: usize = 5;

// ---------------------------------------------------------------- harness

/// Reads what the port only writes (distribution lists, metrics).
#[async_trait]
trait Probe: Send + Sync {
    async fn executions(&self, date: NaiveDate, task: &TaskTypeId) -> u64;
    async fn failures(&self, date: NaiveDate, task: &TaskTypeId) -> u64;
    async fn durations(&self, task: &TaskTypeId) -> Vec<(i64, String)>;
    /// Puts a raw entry in the enabled index (as an older release wrote
    /// it: key 0), touching nothing else.
    async fn index_enabled_at(&self, task: &TaskTypeId, user: &UserId, key: u64);
    /// The holder of the `running` claim of `task` for `who` (a user, or a
    /// job's claimant), `None` when free.
    async fn claim_holder(&self, task: &TaskTypeId, who: &str) -> Option<String>;
}

struct Fixture {
    store: Arc<dyn StateStore>,
    results: Arc<dyn JobResultStore>,
    durations: Arc<dyn DurationStore>,
    replicas: Arc<dyn ReplicaStore>,
    probe: Box<dyn Probe>,
}

struct MemoryProbe(Arc<MemoryStore>);

#[async_trait]
impl Probe for MemoryProbe {
    async fn executions(&self, date: NaiveDate, task: &TaskTypeId) -> u64 {
        self.0.executions(date, task)
    }
    async fn failures(&self, date: NaiveDate, task: &TaskTypeId) -> u64 {
        self.0.failures(date, task)
    }
    async fn durations(&self, task: &TaskTypeId) -> Vec<(i64, String)> {
        self.0.durations(task)
    }
    async fn index_enabled_at(&self, task: &TaskTypeId, user: &UserId, key: u64) {
        self.0.insert_enabled_entry(task, user, key);
    }
    async fn claim_holder(&self, task: &TaskTypeId, who: &str) -> Option<String> {
        self.0
            .claim_holder(task, who)
            .map(|holder| holder.to_string())
    }
}

struct RedisProbe {
    connection: ConnectionManager,
    keys: Keys,
}

#[async_trait]
impl Probe for RedisProbe {
    async fn executions(&self, date: NaiveDate, task: &TaskTypeId) -> u64 {
        let mut connection = self.connection.clone();
        let count: Option<u64> = connection
            .hget(self.keys.metrics_executions(date), task.as_str())
            .await
            .unwrap();
        count.unwrap_or(0)
    }
    async fn failures(&self, date: NaiveDate, task: &TaskTypeId) -> u64 {
        let mut connection = self.connection.clone();
        let count: Option<u64> = connection
            .hget(self.keys.metrics_failures(date), task.as_str())
            .await
            .unwrap();
        count.unwrap_or(0)
    }
    async fn durations(&self, task: &TaskTypeId) -> Vec<(i64, String)> {
        let mut connection = self.connection.clone();
        let samples: Vec<(String, f64)> = connection
            .zrange_withscores(self.keys.metrics_duration(task), 0, -1)
            .await
            .unwrap();
        samples
            .into_iter()
            .map(|(member, score)| (score as i64, member))
            .collect()
    }
    async fn index_enabled_at(&self, task: &TaskTypeId, user: &UserId, key: u64) {
        let mut connection = self.connection.clone();
        let _: () = connection
            .zadd(self.keys.enabled_index(task), user.as_str(), key)
            .await
            .unwrap();
    }
    async fn claim_holder(&self, task: &TaskTypeId, who: &str) -> Option<String> {
        let mut connection = self.connection.clone();
        connection
            .get(self.keys.running(task, &user(who)))
            .await
            .unwrap()
    }
}

/// The tests' Redis, the server lock taken shared.
fn redis_url() -> String {
    test_kit::server_lock::shared_servers();
    test_kit::redis_url()
}

fn options() -> RedisOptions {
    RedisOptions {
        metrics_retention: RETENTION,
        metrics_max_samples: MAX_SAMPLES,
        ..RedisOptions::default()
    }
}

async fn redis_store() -> (RedisStore, String) {
    let prefix = format!("tqtest-{}", Uuid::new_v4().simple());
    let store = RedisStore::connect(&redis_url(), Keys::new(prefix.clone()), options())
        .await
        .unwrap();
    (store, prefix)
}

/// Deletes every key under `prefix`.
fn cleanup(prefix: &str) {
    test_kit::delete_prefix(&redis_url(), prefix).unwrap();
}

async fn run_memory<F, Fut>(test: F)
where
    F: FnOnce(Arc<Fixture>) -> Fut,
    Fut: Future<Output = ()>,
{
    let store = Arc::new(MemoryStore::with_metrics_limits(RETENTION, MAX_SAMPLES));
    let fixture = Fixture {
        store: store.clone(),
        results: store.clone(),
        durations: store.clone(),
        replicas: store.clone(),
        probe: Box::new(MemoryProbe(store)),
    };
    test(Arc::new(fixture)).await;
}

async fn run_redis<F, Fut>(test: F)
where
    F: FnOnce(Arc<Fixture>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (store, prefix) = redis_store().await;
    let store = Arc::new(store);
    let fixture = Fixture {
        probe: Box::new(RedisProbe {
            connection: store.connection(),
            keys: store.keys().clone(),
        }),
        results: store.clone(),
        durations: store.clone(),
        replicas: store.clone(),
        store,
    };
    // Run the body as a task so a failing assertion still cleans up.
    let outcome = tokio::spawn(test(Arc::new(fixture))).await;
    cleanup(&prefix);
    if let Err(err) = outcome {
        std::panic::resume_unwind(err.into_panic());
    }
}

/// Instantiates every listed test for both stores.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::run_memory(super::$name).await;
                }
            )*
        }
        mod redis_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::run_redis(super::$name).await;
                }
            )*
        }
    };
}

conformance!(
    preferences_round_trip,
    preference_writes_keep_the_indexes,
    enabled_users_after_pages_by_user_cursor,
    spread_order_pages,
    spread_order_equal_and_legacy_keys,
    spread_order_many_legacy_keys,
    spread_order_pages_under_concurrent_writes,
    due_custom_users_and_advance,
    delete_preference_cleans_everything,
    lock_acquire_renew_release,
    lock_expiry_ends_the_old_lease,
    lock_with_16_contenders,
    schedule_state_is_fenced,
    token_bucket_burst_and_multi_token_requests,
    token_bucket_refills_at_its_rate,
    token_bucket_clock_behind_does_not_hurt_others,
    token_bucket_concurrent_callers_stay_within_budget,
    runs_are_created_once_and_kept_in_order,
    run_writes_are_fenced_and_move_the_slot_lists,
    custom_moves_and_fenced_run_creation_reject_a_stale_holder,
    a_fire_is_not_recorded_by_a_holder_fenced_out_before_any_write,
    slot_lists_expire,
    trigger_keys_remember_their_run,
    custom_index_pages_by_rank,
    success_markers,
    execution_claim_outcomes,
    execution_claim_reads_the_task_parameters,
    execution_claim_without_overlap_guard,
    finish_releases_only_claims_it_holds,
    finish_records_success_with_its_ttl,
    execution_claims_expire,
    batched_claims_and_finishes_keep_per_job_semantics,
    throttles_count_per_job_and_pause_their_task,
    copies_older_than_the_next_try_are_stale,
    claims_check_that_the_user_still_has_the_task_enabled,
    metrics_batches,
    index_matches_enabled_users_after_concurrent_writes,
    zone_groups_follow_the_per_task_zone_then_the_default,
    a_default_zone_change_moves_only_tasks_that_follow_it,
    zone_groups_page_in_spread_order_and_leave_on_delete,
    zone_fires_are_fenced,
    operator_pauses_are_shared_and_idempotent,
    spread_ranks_and_custom_interval_pages,
    job_results_follow_claims_and_finishes,
    job_results_are_recorded_once_per_execution,
    job_results_cap_attempts_and_runs,
    job_results_expire_with_their_retention,
    job_results_start_pending_and_a_republish_keeps_what_is_kept,
    period_tallies_count_each_final_outcome_and_first_start_once,
    replica_reports_are_listed_while_renewed,
);

// ---------------------------------------------------------------- helpers

fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

fn task(id: &str) -> TaskTypeId {
    TaskTypeId::parse(id).unwrap()
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn daily() -> TaskInterval {
    serde_json::from_str(
        r#"{"type":"daily","value":1,"timezone":"Europe/Paris","at_time":"08:30"}"#,
    )
    .unwrap()
}

fn enable(user_id: &str, task_id: &str, modified: &str) -> PreferenceWrite {
    PreferenceWrite {
        user_id: user(user_id),
        task_type_id: task(task_id),
        enabled: true,
        settings: None,
        custom_next_fire: None,
        modified_at: at(modified),
    }
}

fn custom(user_id: &str, task_id: &str, next: &str) -> PreferenceWrite {
    PreferenceWrite {
        settings: Some(Settings {
            timezone: None,
            custom_interval: Some(daily()),
            parameters: BTreeMap::from([("lang".to_owned(), "fr".to_owned())]),
        }),
        custom_next_fire: Some(at(next)),
        ..enable(user_id, task_id, "2024-01-15T00:00:00Z")
    }
}

fn disable(user_id: &str, task_id: &str) -> PreferenceWrite {
    PreferenceWrite {
        enabled: false,
        ..enable(user_id, task_id, "2024-01-15T00:00:00Z")
    }
}

/// Every user of the enabled index, walked by user cursor in pages of 7,
/// sorted by id (each must come out once).
async fn all_enabled(store: &dyn StateStore, task_id: &TaskTypeId) -> Vec<UserId> {
    let mut users = Vec::new();
    loop {
        let page = store
            .enabled_users_after(task_id, users.last(), 7)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        users.extend(page);
    }
    let count = users.len();
    users.sort();
    users.dedup();
    assert_eq!(users.len(), count, "a user came out twice: {users:?}");
    users
}

/// The whole index in spread order, in pages of `limit`.
async fn walk_spread(
    store: &dyn StateStore,
    task_id: &TaskTypeId,
    limit: usize,
) -> Vec<SpreadCursor> {
    let mut entries: Vec<SpreadCursor> = Vec::new();
    loop {
        let page = store
            .enabled_users_in_spread_order(task_id, entries.last(), limit)
            .await
            .unwrap();
        assert!(page.len() <= limit);
        if page.is_empty() {
            return entries;
        }
        entries.extend(page);
    }
}

fn cursor(key: u64, user_id: &str) -> SpreadCursor {
    SpreadCursor {
        key,
        user: user(user_id),
    }
}

async fn all_custom(store: &dyn StateStore, task_id: &TaskTypeId) -> Vec<UserId> {
    let far = at("2999-01-01T00:00:00Z");
    let mut users: Vec<UserId> = store
        .due_custom_users(task_id, far, 1_000_000)
        .await
        .unwrap()
        .into_iter()
        .map(|due| due.user_id)
        .collect();
    users.sort();
    users
}

fn epoch_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

// ---------------------------------------------------------------- preferences

async fn preferences_round_trip(fx: Arc<Fixture>) {
    let store = &*fx.store;
    assert_eq!(store.preferences(&user("u1")).await.unwrap(), None);
    let with_settings = PreferenceWrite {
        modified_at: at("2024-01-15T10:00:00.123Z"),
        ..custom("u1", "report", "2024-01-16T07:30:00Z")
    };
    store
        .write_preferences(&[
            enable("u1", "digest", "2024-01-15T09:00:00Z"),
            with_settings.clone(),
            disable("u2", "digest"),
        ])
        .await
        .unwrap();
    let prefs = store.preferences(&user("u1")).await.unwrap().unwrap();
    assert_eq!(prefs.user_id, user("u1"));
    assert_eq!(
        prefs.enabled_tasks,
        BTreeMap::from([(task("digest"), true), (task("report"), true)])
    );
    assert_eq!(
        prefs.task_settings,
        BTreeMap::from([(task("report"), with_settings.settings.clone().unwrap())])
    );
    assert_eq!(prefs.last_modified, at("2024-01-15T10:00:00.123Z"));
    let disabled = store.preferences(&user("u2")).await.unwrap().unwrap();
    assert_eq!(
        disabled.enabled_tasks,
        BTreeMap::from([(task("digest"), false)])
    );
    assert!(disabled.task_settings.is_empty());

    // A write without settings removes the old ones.
    store
        .write_preferences(&[enable("u1", "report", "2024-01-17T00:00:00Z")])
        .await
        .unwrap();
    let prefs = store.preferences(&user("u1")).await.unwrap().unwrap();
    assert!(prefs.task_settings.is_empty());
    assert_eq!(prefs.last_modified, at("2024-01-17T00:00:00Z"));

    // Kept to the millisecond.
    store
        .write_preferences(&[enable("u2", "digest", "2024-01-17T00:00:00.123456789Z")])
        .await
        .unwrap();
    let prefs = store.preferences(&user("u2")).await.unwrap().unwrap();
    assert_eq!(prefs.last_modified, at("2024-01-17T00:00:00.123Z"));

    // Empty settings are kept as such.
    store
        .write_preferences(&[PreferenceWrite {
            settings: Some(Settings::default()),
            ..enable("u1", "report", "2024-01-18T00:00:00Z")
        }])
        .await
        .unwrap();
    let prefs = store.preferences(&user("u1")).await.unwrap().unwrap();
    assert_eq!(
        prefs.task_settings,
        BTreeMap::from([(task("report"), Settings::default())])
    );
}

async fn preference_writes_keep_the_indexes(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let report = task("report");
    let check = |label: &'static str,
                 enabled: &'static [&'static str],
                 customs: &'static [&'static str]| {
        let store = fx.store.clone();
        let report = report.clone();
        async move {
            let want_enabled: Vec<UserId> = enabled.iter().map(|u| user(u)).collect();
            let want_custom: Vec<UserId> = customs.iter().map(|u| user(u)).collect();
            assert_eq!(
                all_enabled(&*store, &report).await,
                want_enabled,
                "{label}: enabled"
            );
            assert_eq!(
                all_custom(&*store, &report).await,
                want_custom,
                "{label}: custom"
            );
            assert_eq!(
                store.enabled_user_count(&report).await.unwrap(),
                (enabled.len() + customs.len()) as u64,
                "{label}: count"
            );
        }
    };
    check("empty", &[], &[]).await;
    store
        .write_preferences(&[
            enable("a", "report", "2024-01-15T00:00:00Z"),
            enable("b", "report", "2024-01-15T00:00:00Z"),
            custom("c", "report", "2024-01-16T00:00:00Z"),
            enable("a", "other", "2024-01-15T00:00:00Z"),
        ])
        .await
        .unwrap();
    check("first writes", &["a", "b"], &["c"]).await;
    store
        .write_preferences(&[custom("a", "report", "2024-01-16T00:00:00Z")])
        .await
        .unwrap();
    check("a overrides", &["b"], &["a", "c"]).await;
    store
        .write_preferences(&[
            disable("c", "report"),
            enable("a", "report", "2024-01-15T00:00:00Z"),
        ])
        .await
        .unwrap();
    check("c disabled, a back to default", &["a", "b"], &[]).await;
    store
        .write_preferences(&[disable("a", "report"), disable("b", "report")])
        .await
        .unwrap();
    check("all disabled", &[], &[]).await;
    // One batch may change the same (user, task) twice: the last write wins.
    store
        .write_preferences(&[
            enable("b", "report", "2024-01-15T00:00:00Z"),
            custom("b", "report", "2024-01-16T00:00:00Z"),
            disable("a", "report"),
            enable("a", "report", "2024-01-15T00:00:00Z"),
            enable("c", "report", "2024-01-15T00:00:00Z"),
            disable("c", "report"),
        ])
        .await
        .unwrap();
    check("repeated pairs in one batch", &["a"], &["b"]).await;
    assert_eq!(all_enabled(store, &task("other")).await, vec![user("a")]);
}

async fn enabled_users_after_pages_by_user_cursor(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let report = &task("report");
    let ids = ["u10", "u2", "u1", "a", "Z", "u3", "ü", "user_long_id"];
    let writes: Vec<_> = ids
        .iter()
        .map(|id| enable(id, "report", "2024-01-15T00:00:00Z"))
        .collect();
    store.write_preferences(&writes).await.unwrap();
    let mut order: Vec<SpreadCursor> = ids
        .iter()
        .map(|id| cursor(spread_key(report, &user(id)), id))
        .collect();
    order.sort();
    let order: Vec<UserId> = order.into_iter().map(|c| c.user).collect();
    // Pages follow the index's walk order (spread order), each strictly
    // after the user given as cursor.
    for limit in [1, 3, 100] {
        let mut walked: Vec<UserId> = Vec::new();
        loop {
            let page = store
                .enabled_users_after(report, walked.last(), limit)
                .await
                .unwrap();
            assert!(page.len() <= limit);
            if page.is_empty() {
                break;
            }
            walked.extend(page);
        }
        assert_eq!(walked, order, "limit {limit}");
    }
    let check = |after: Option<usize>, limit: usize, expected: Vec<UserId>| {
        let after = after.map(|n| order[n].clone());
        async move {
            let got = store
                .enabled_users_after(report, after.as_ref(), limit)
                .await
                .unwrap();
            assert_eq!(got, expected, "after {after:?}, limit {limit}");
        }
    };
    check(None, 2, order[..2].to_vec()).await;
    check(Some(2), 3, order[3..6].to_vec()).await;
    check(Some(7), 10, vec![]).await;
    check(None, 0, vec![]).await;
    // A cursor user that left the index meanwhile keeps its place.
    store
        .write_preferences(&[disable(order[3].as_str(), "report")])
        .await
        .unwrap();
    check(Some(3), 2, order[4..6].to_vec()).await;
    let stranger = user("never_enabled");
    let stranger_key = spread_key(report, &stranger);
    let expected: Vec<UserId> = order
        .iter()
        .filter(|u| {
            **u != order[3]
                && cursor(spread_key(report, u), u.as_str()) > cursor(stranger_key, "never_enabled")
        })
        .cloned()
        .collect();
    let got = store
        .enabled_users_after(report, Some(&stranger), 100)
        .await
        .unwrap();
    assert_eq!(got, expected);
}

async fn spread_order_pages(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let report = &task("report");
    assert_eq!(walk_spread(store, report, 5).await, vec![]);
    let writes: Vec<_> = (0..60)
        .map(|n| enable(&format!("user_{n}"), "report", "2024-01-15T00:00:00Z"))
        .chain([
            custom("custom_user", "report", "2024-01-16T00:00:00Z"),
            disable("disabled_user", "report"),
            enable("other_task_user", "digest", "2024-01-15T00:00:00Z"),
        ])
        .collect();
    store.write_preferences(&writes).await.unwrap();
    // One single write too (the unbatched path).
    store
        .write_preferences(&[
            enable("single", "report", "2024-01-15T00:00:00Z"),
            enable("single", "report", "2024-01-15T00:00:01Z"),
        ])
        .await
        .unwrap();
    let mut expected: Vec<SpreadCursor> = (0..60)
        .map(|n| format!("user_{n}"))
        .chain(["single".to_owned()])
        .map(|id| cursor(spread_key(report, &user(&id)), &id))
        .collect();
    expected.sort();
    for limit in [1, 7, 61, 1000] {
        assert_eq!(
            walk_spread(store, report, limit).await,
            expected,
            "limit {limit}"
        );
    }
    let last = expected.last().unwrap();
    let check = |after: Option<SpreadCursor>, limit: usize, want: Vec<SpreadCursor>| async move {
        let got = store
            .enabled_users_in_spread_order(report, after.as_ref(), limit)
            .await
            .unwrap();
        assert_eq!(got, want, "after {after:?}, limit {limit}");
    };
    check(None, 0, vec![]).await;
    check(Some(expected[3].clone()), 0, vec![]).await;
    check(None, 4, expected[..4].to_vec()).await;
    check(Some(expected[9].clone()), 3, expected[10..13].to_vec()).await;
    check(Some(last.clone()), 10, vec![]).await;
    check(Some(cursor(1 << 52, "!")), 10, vec![]).await;
    // A cursor between entries: same key, smaller or greater id.
    let mut before = expected[20].clone();
    before.user = user("!");
    check(Some(before), 2, expected[20..22].to_vec()).await;
    let mut beyond = expected[20].clone();
    beyond.user = user(&format!("{}~", expected[20].user));
    check(Some(beyond), 2, expected[21..23].to_vec()).await;
    // A cursor that left the index.
    store
        .write_preferences(&[disable(expected[30].user.as_str(), "report")])
        .await
        .unwrap();
    check(Some(expected[30].clone()), 2, expected[31..33].to_vec()).await;
    assert_eq!(
        store.enabled_user_count(report).await.unwrap(),
        expected.len() as u64
    );
}

async fn spread_order_equal_and_legacy_keys(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let report = &task("report");
    // Entries written before the index was scored sit at key 0; a few
    // entries share one key; the rest are where a write puts them.
    let legacy = ["legacy_b", "Legacy_a", "legacy_c", "legacy_é", "legacy_a1"];
    let shared = ["same_2", "same_10", "same_1"];
    let shared_key = 1u64 << 40;
    for id in legacy {
        fx.probe.index_enabled_at(report, &user(id), 0).await;
    }
    for id in shared {
        fx.probe
            .index_enabled_at(report, &user(id), shared_key)
            .await;
    }
    let regular: Vec<String> = (0..20).map(|n| format!("user_{n}")).collect();
    let writes: Vec<_> = regular
        .iter()
        .map(|id| enable(id, "report", "2024-01-15T00:00:00Z"))
        .collect();
    store.write_preferences(&writes).await.unwrap();
    let mut expected: Vec<SpreadCursor> = legacy
        .iter()
        .map(|id| cursor(0, id))
        .chain(shared.iter().map(|id| cursor(shared_key, id)))
        .chain(
            regular
                .iter()
                .map(|id| cursor(spread_key(report, &user(id)), id)),
        )
        .collect();
    expected.sort();
    // Legacy entries first, in byte order of their ids.
    let firsts: Vec<&str> = expected[..5].iter().map(|c| c.user.as_str()).collect();
    assert_eq!(
        firsts,
        ["Legacy_a", "legacy_a1", "legacy_b", "legacy_c", "legacy_é"]
    );
    for limit in [1, 2, 3, 100] {
        assert_eq!(
            walk_spread(store, report, limit).await,
            expected,
            "limit {limit}"
        );
    }
    let check = |after: SpreadCursor, limit: usize, want: Vec<SpreadCursor>| async move {
        let got = store
            .enabled_users_in_spread_order(report, Some(&after), limit)
            .await
            .unwrap();
        assert_eq!(got, want, "after {after:?}, limit {limit}");
    };
    check(
        cursor(0, "legacy_a"),
        2,
        vec![cursor(0, "legacy_a1"), cursor(0, "legacy_b")],
    )
    .await;
    check(cursor(0, "legacy_éz"), 1, vec![expected[5].clone()]).await;
    check(
        cursor(shared_key, "same_10"),
        2,
        vec![cursor(shared_key, "same_2"), expected[8].clone()],
    )
    .await;
    check(
        cursor(shared_key, "same_0"),
        1,
        vec![cursor(shared_key, "same_1")],
    )
    .await;
    // The user-cursor walk sees every entry once as well, and a removed
    // legacy cursor never skips the legacy entries after it.
    let by_user: Vec<UserId> = expected.iter().map(|c| c.user.clone()).collect();
    let mut walked: Vec<UserId> = Vec::new();
    loop {
        let page = store
            .enabled_users_after(report, walked.last(), 2)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        walked.extend(page);
    }
    assert_eq!(walked, by_user);
    store
        .delete_preference(&user("legacy_b"), report)
        .await
        .unwrap();
    let page = store
        .enabled_users_after(report, Some(&user("legacy_b")), 2)
        .await
        .unwrap();
    assert_eq!(page, vec![user("legacy_c"), user("legacy_é")]);
    // A legacy entry written again moves to its spread key.
    store
        .write_preferences(&[enable("legacy_c", "report", "2024-01-15T00:00:00Z")])
        .await
        .unwrap();
    let walked = walk_spread(store, report, 4).await;
    assert!(walked.contains(&cursor(spread_key(report, &user("legacy_c")), "legacy_c")));
    assert!(!walked.contains(&cursor(0, "legacy_c")));
    assert_eq!(walked.len(), expected.len() - 1);
}

async fn spread_order_many_legacy_keys(fx: Arc<Fixture>) {
    // More entries at key 0 than a page reads inline: the cursor is placed
    // among them by bisection.
    let store = &*fx.store;
    let report = &task("report");
    let legacy: Vec<String> = (0..100).map(|n| format!("old_{n}")).collect();
    for id in &legacy {
        fx.probe.index_enabled_at(report, &user(id), 0).await;
    }
    let writes: Vec<_> = (0..20)
        .map(|n| enable(&format!("new_{n}"), "report", "2024-01-15T00:00:00Z"))
        .collect();
    store.write_preferences(&writes).await.unwrap();
    let mut expected: Vec<SpreadCursor> = legacy.iter().map(|id| cursor(0, id)).collect();
    expected.sort();
    let mut scored: Vec<SpreadCursor> = (0..20)
        .map(|n| format!("new_{n}"))
        .map(|id| cursor(spread_key(report, &user(&id)), &id))
        .collect();
    scored.sort();
    expected.extend(scored);
    for limit in [1, 7, 1000] {
        assert_eq!(
            walk_spread(store, report, limit).await,
            expected,
            "limit {limit}"
        );
    }
    let after = |c: &SpreadCursor, n: usize| -> Vec<SpreadCursor> {
        expected
            .iter()
            .filter(|e| *e > c)
            .take(n)
            .cloned()
            .collect()
    };
    for probe in [
        cursor(0, "old_5"),
        cursor(0, "old_50x"),
        cursor(0, "!"),
        cursor(0, "zzz"),
        cursor(1, "!"),
    ] {
        let got = store
            .enabled_users_in_spread_order(report, Some(&probe), 3)
            .await
            .unwrap();
        assert_eq!(got, after(&probe, 3), "after {probe:?}");
    }
    // By user cursor: the whole walk, and a legacy cursor that is gone.
    let by_user: Vec<UserId> = expected.iter().map(|c| c.user.clone()).collect();
    let mut walked: Vec<UserId> = Vec::new();
    loop {
        let page = store
            .enabled_users_after(report, walked.last(), 9)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        walked.extend(page);
    }
    assert_eq!(walked, by_user);
    store
        .write_preferences(&[disable("old_42", "report")])
        .await
        .unwrap();
    let got = store
        .enabled_users_after(report, Some(&user("old_42")), 2)
        .await
        .unwrap();
    let want: Vec<UserId> = after(&cursor(0, "old_42"), 2)
        .into_iter()
        .map(|c| c.user)
        .collect();
    assert_eq!(got, want);
}

async fn spread_order_pages_under_concurrent_writes(fx: Arc<Fixture>) {
    const STABLE: u32 = 400;
    const CHURN: u32 = 200;
    const WRITERS: u64 = 4;
    const OPS: u64 = 2_000;
    let report = task("report");
    let stable: Vec<_> = (0..STABLE)
        .map(|n| enable(&format!("stable_{n}"), "report", "2024-01-15T00:00:00Z"))
        .collect();
    fx.store.write_preferences(&stable).await.unwrap();
    let done = Arc::new(AtomicU32::new(0));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let store = fx.store.clone();
        let done = done.clone();
        writers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(writer);
            for _ in 0..OPS / WRITERS {
                let id = format!("churn_{}", rng.random_range(0..CHURN));
                let write = match rng.random_range(0..4) {
                    0 | 1 => enable(&id, "report", "2024-01-15T00:00:00Z"),
                    2 => disable(&id, "report"),
                    _ => custom(&id, "report", "2024-01-16T00:00:00Z"),
                };
                store.write_preferences(&[write]).await.unwrap();
            }
            done.fetch_add(1, Ordering::SeqCst);
        }));
    }
    // Walk again and again while the writers run (at least twice).
    let mut walks = 0;
    while walks < 2 || done.load(Ordering::SeqCst) < WRITERS as u32 {
        walks += 1;
        let walked = walk_spread(&*fx.store, &report, 9).await;
        assert!(
            walked.windows(2).all(|pair| pair[0] < pair[1]),
            "pages overlap or go back"
        );
        let users: BTreeSet<String> = walked.iter().map(|c| c.user.to_string()).collect();
        for n in 0..STABLE {
            assert!(users.contains(&format!("stable_{n}")), "stable_{n} missed");
        }
        for entry in &walked {
            assert_eq!(entry.key, spread_key(&report, &entry.user));
            assert!(
                entry.user.as_str().starts_with("stable_")
                    || entry.user.as_str().starts_with("churn_")
            );
        }
        let by_user = all_enabled(&*fx.store, &report).await;
        for n in 0..STABLE {
            assert!(
                by_user.contains(&user(&format!("stable_{n}"))),
                "stable_{n} missed by user cursor"
            );
        }
    }
    for writer in writers {
        writer.await.unwrap();
    }
}

async fn due_custom_users_and_advance(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let report = task("report");
    store
        .write_preferences(&[
            custom("late", "report", "2024-01-16T12:00:00Z"),
            custom("early", "report", "2024-01-16T06:00:00Z"),
            custom("mid", "report", "2024-01-16T08:00:00.250Z"),
            custom("future", "report", "2024-02-01T00:00:00Z"),
        ])
        .await
        .unwrap();
    let due = store
        .due_custom_users(&report, at("2024-01-16T12:00:00Z"), 10)
        .await
        .unwrap();
    let got: Vec<(String, DateTime<Utc>)> = due
        .iter()
        .map(|d| (d.user_id.to_string(), d.scheduled_at))
        .collect();
    assert_eq!(
        got,
        vec![
            ("early".to_owned(), at("2024-01-16T06:00:00Z")),
            ("mid".to_owned(), at("2024-01-16T08:00:00.250Z")),
            ("late".to_owned(), at("2024-01-16T12:00:00Z")),
        ]
    );
    assert_eq!(due[0].settings.custom_interval, Some(daily()));
    assert_eq!(due[0].settings.parameters["lang"], "fr");
    let limited = store
        .due_custom_users(&report, at("2024-01-16T12:00:00Z"), 1)
        .await
        .unwrap();
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].user_id, user("early"));

    // "mid" changed its interval meanwhile: its move is stale.
    store
        .write_preferences(&[custom("mid", "report", "2024-01-20T00:00:00Z")])
        .await
        .unwrap();
    store
        .advance_custom_users(
            &report,
            &[
                (
                    user("early"),
                    at("2024-01-16T06:00:00Z"),
                    at("2024-01-17T06:00:00Z"),
                ),
                (
                    user("mid"),
                    at("2024-01-16T08:00:00.250Z"),
                    at("2024-01-17T08:00:00Z"),
                ),
                (
                    user("late"),
                    at("2024-01-16T12:00:00Z"),
                    at("2024-01-17T12:00:00Z"),
                ),
                (
                    user("nobody"),
                    at("2024-01-16T12:00:00Z"),
                    at("2024-01-17T12:00:00Z"),
                ),
            ],
            0,
        )
        .await
        .unwrap();
    let due = store
        .due_custom_users(&report, at("2024-01-31T00:00:00Z"), 10)
        .await
        .unwrap();
    let got: Vec<(String, DateTime<Utc>)> = due
        .iter()
        .map(|d| (d.user_id.to_string(), d.scheduled_at))
        .collect();
    assert_eq!(
        got,
        vec![
            ("early".to_owned(), at("2024-01-17T06:00:00Z")),
            ("late".to_owned(), at("2024-01-17T12:00:00Z")),
            ("mid".to_owned(), at("2024-01-20T00:00:00Z")),
        ]
    );
    assert_eq!(
        all_custom(store, &report).await.len(),
        4,
        "nobody was not added"
    );
    assert!(store.advance_custom_users(&report, &[], 0).await.unwrap());
}

async fn delete_preference_cleans_everything(fx: Arc<Fixture>) {
    let store = &*fx.store;
    store
        .write_preferences(&[
            enable("u1", "digest", "2024-01-15T00:00:00Z"),
            custom("u1", "report", "2024-01-16T00:00:00Z"),
        ])
        .await
        .unwrap();
    assert!(
        store
            .delete_preference(&user("u1"), &task("report"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_preference(&user("u1"), &task("report"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_preference(&user("ghost"), &task("report"))
            .await
            .unwrap()
    );
    assert_eq!(all_custom(store, &task("report")).await, vec![]);
    let prefs = store.preferences(&user("u1")).await.unwrap().unwrap();
    assert_eq!(
        prefs.enabled_tasks,
        BTreeMap::from([(task("digest"), true)])
    );
    assert!(prefs.task_settings.is_empty());
    assert!(
        store
            .delete_preference(&user("u1"), &task("digest"))
            .await
            .unwrap()
    );
    assert_eq!(all_enabled(store, &task("digest")).await, vec![]);
    assert_eq!(store.preferences(&user("u1")).await.unwrap(), None);
}

async fn index_matches_enabled_users_after_concurrent_writes(fx: Arc<Fixture>) {
    const WRITERS: u64 = 8;
    const OPS: u64 = 10_000;
    const USERS: u32 = 300;
    let tasks = [task("report"), task("digest")];
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let store = fx.store.clone();
        let tasks = tasks.clone();
        writers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(writer);
            for _ in 0..OPS / WRITERS {
                let user_id = user(&format!("user_{}", rng.random_range(0..USERS)));
                let task_id = tasks[rng.random_range(0..tasks.len())].clone();
                let mut write = PreferenceWrite {
                    user_id: user_id.clone(),
                    task_type_id: task_id.clone(),
                    enabled: true,
                    settings: None,
                    custom_next_fire: None,
                    modified_at: at("2024-01-15T00:00:00Z"),
                };
                match rng.random_range(0..10) {
                    0..=3 => {}
                    4..=6 => write.enabled = false,
                    7..=8 => {
                        write.settings = Some(Settings {
                            timezone: None,
                            custom_interval: Some(daily()),
                            parameters: BTreeMap::new(),
                        });
                        let offset = rng.random_range(0..86_400_000);
                        write.custom_next_fire = Some(
                            at("2024-01-16T00:00:00Z") + chrono::Duration::milliseconds(offset),
                        );
                    }
                    _ => {
                        store.delete_preference(&user_id, &task_id).await.unwrap();
                        continue;
                    }
                }
                store.write_preferences(&[write]).await.unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let store = &*fx.store;
    for task_id in &tasks {
        let mut want_default = BTreeSet::new();
        let mut want_custom = BTreeSet::new();
        for n in 0..USERS {
            let user_id = user(&format!("user_{n}"));
            let Some(prefs) = store.preferences(&user_id).await.unwrap() else {
                continue;
            };
            if prefs.enabled_tasks.get(task_id) != Some(&true) {
                continue;
            }
            let has_custom = prefs
                .task_settings
                .get(task_id)
                .is_some_and(|s| s.custom_interval.is_some());
            if has_custom {
                want_custom.insert(user_id);
            } else {
                want_default.insert(user_id);
            }
        }
        let got_default: BTreeSet<UserId> = all_enabled(store, task_id).await.into_iter().collect();
        let got_custom: BTreeSet<UserId> = all_custom(store, task_id).await.into_iter().collect();
        assert!(!want_default.is_empty() && !want_custom.is_empty());
        assert_eq!(got_default, want_default, "{task_id}: default index");
        assert_eq!(got_custom, want_custom, "{task_id}: custom index");
        assert_eq!(
            store.enabled_user_count(task_id).await.unwrap(),
            (want_default.len() + want_custom.len()) as u64
        );
    }
}

// ---------------------------------------------------------------- locks

async fn lock_acquire_renew_release(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let ttl = Duration::from_secs(10);
    for lock in [
        LockName::Schedule(task("report")),
        LockName::Schedule(task("sync")),
    ] {
        let first = store.acquire_lock(&lock, ttl).await.unwrap().unwrap();
        assert_eq!(store.acquire_lock(&lock, ttl).await.unwrap(), None);
        assert!(store.renew_lock(&lock, &first, ttl).await.unwrap());
        let forged = actors::store::LockLease {
            token: "forged".into(),
            fence: first.fence,
        };
        assert!(!store.renew_lock(&lock, &forged, ttl).await.unwrap());
        assert!(!store.release_lock(&lock, &forged).await.unwrap());
        assert!(store.release_lock(&lock, &first).await.unwrap());
        assert!(
            !store.release_lock(&lock, &first).await.unwrap(),
            "released twice"
        );
        assert!(
            !store.renew_lock(&lock, &first, ttl).await.unwrap(),
            "renewed after release"
        );
        let second = store.acquire_lock(&lock, ttl).await.unwrap().unwrap();
        assert!(second.fence > first.fence);
        assert_ne!(second.token, first.token);
        assert!(!store.release_lock(&lock, &first).await.unwrap());
        assert_eq!(
            store.acquire_lock(&lock, ttl).await.unwrap(),
            None,
            "still held"
        );
    }
    // Locks of different tasks are independent.
    let other = LockName::Schedule(task("digest"));
    assert!(store.acquire_lock(&other, ttl).await.unwrap().is_some());
}

async fn lock_expiry_ends_the_old_lease(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let lock = LockName::Schedule(task("report"));
    let old = store
        .acquire_lock(&lock, Duration::from_millis(100))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(
        !store
            .renew_lock(&lock, &old, Duration::from_secs(10))
            .await
            .unwrap()
    );
    let new = store
        .acquire_lock(&lock, Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert!(new.fence > old.fence);
    assert!(
        !store
            .renew_lock(&lock, &old, Duration::from_secs(10))
            .await
            .unwrap()
    );
    assert!(!store.release_lock(&lock, &old).await.unwrap());
    assert!(
        store
            .renew_lock(&lock, &new, Duration::from_secs(10))
            .await
            .unwrap()
    );
    // The stale holder's schedule write loses once the new holder wrote.
    let report = task("report");
    assert!(
        store
            .record_fire(&report, at("2024-01-15T10:00:00Z"), &new)
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_fire(&report, at("2024-01-15T11:00:00Z"), &old)
            .await
            .unwrap()
    );
    let state = store.schedule_state(&report).await.unwrap().unwrap();
    assert_eq!(
        (state.last_fired, state.fence),
        (at("2024-01-15T10:00:00Z"), new.fence)
    );
}

async fn lock_with_16_contenders(fx: Arc<Fixture>) {
    let lock = LockName::Schedule(task("report"));
    let holders = Arc::new(AtomicU32::new(0));
    let fences = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut contenders = Vec::new();
    for _ in 0..16 {
        let store = fx.store.clone();
        let lock = lock.clone();
        let holders = holders.clone();
        let fences = fences.clone();
        contenders.push(tokio::spawn(async move {
            let mut last = None;
            while Instant::now() < deadline {
                let ttl = Duration::from_secs(5);
                let Some(lease) = store.acquire_lock(&lock, ttl).await.unwrap() else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                };
                assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                fences.lock().unwrap().push(lease.fence);
                tokio::time::sleep(Duration::from_millis(2)).await;
                assert!(store.renew_lock(&lock, &lease, ttl).await.unwrap());
                holders.fetch_sub(1, Ordering::SeqCst);
                assert!(store.release_lock(&lock, &lease).await.unwrap());
                assert!(!store.renew_lock(&lock, &lease, ttl).await.unwrap());
                last = Some(lease);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            last
        }));
    }
    let mut leases = Vec::new();
    for contender in contenders {
        leases.extend(contender.await.unwrap());
    }
    let fences = fences.lock().unwrap().clone();
    assert!(fences.len() > 16, "only {} acquisitions", fences.len());
    assert!(
        fences.windows(2).all(|pair| pair[0] < pair[1]),
        "fences not increasing: {fences:?}"
    );
    assert!(leases.len() > 1, "only one contender ever won");
    // Every old lease is stale now: none can release or renew.
    for lease in &leases {
        assert!(!fx.store.release_lock(&lock, lease).await.unwrap());
    }
}

async fn schedule_state_is_fenced(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let report = task("report");
    assert_eq!(store.schedule_state(&report).await.unwrap(), None);
    let lease = |fence| actors::store::LockLease {
        token: "t".into(),
        fence,
    };
    let cases = [
        (5, "2024-01-15T10:00:00Z", true, (5, "2024-01-15T10:00:00Z")),
        (
            5,
            "2024-01-15T11:00:00.5Z",
            true,
            (5, "2024-01-15T11:00:00.5Z"),
        ),
        (
            4,
            "2024-01-15T12:00:00Z",
            false,
            (5, "2024-01-15T11:00:00.5Z"),
        ),
        (9, "2024-01-15T13:00:00Z", true, (9, "2024-01-15T13:00:00Z")),
        (
            5,
            "2024-01-15T14:00:00Z",
            false,
            (9, "2024-01-15T13:00:00Z"),
        ),
    ];
    for (fence, fired, accepted, (want_fence, want_fired)) in cases {
        assert_eq!(
            store
                .record_fire(&report, at(fired), &lease(fence))
                .await
                .unwrap(),
            accepted,
            "fence {fence} at {fired}"
        );
        let state = store.schedule_state(&report).await.unwrap().unwrap();
        assert_eq!(
            (state.fence, state.last_fired),
            (want_fence, at(want_fired))
        );
    }
    assert_eq!(store.schedule_state(&task("digest")).await.unwrap(), None);
}

// ---------------------------------------------------------------- token buckets

fn bucket(name: BucketName, max_tokens: f64, refill_rate: f64) -> Bucket {
    Bucket {
        name,
        max_tokens,
        refill_rate,
    }
}

async fn token_bucket_burst_and_multi_token_requests(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let global = bucket(BucketName::Global, 10.0, 1.0);
    let now = 1_700_000_000.0;
    for n in 0..10 {
        assert!(
            store.take_tokens(&global, 1, now).await.unwrap(),
            "token {n}"
        );
    }
    assert!(
        !store.take_tokens(&global, 1, now).await.unwrap(),
        "burst exceeded"
    );
    // Buckets are independent.
    let heavy = bucket(BucketName::Task(task("api_heavy")), 5.0, 0.5);
    assert!(store.take_tokens(&heavy, 3, now).await.unwrap());
    assert!(
        !store.take_tokens(&heavy, 3, now).await.unwrap(),
        "only 2 left"
    );
    assert!(store.take_tokens(&heavy, 2, now).await.unwrap());
    assert!(!store.take_tokens(&heavy, 1, now).await.unwrap());
    // 4 s at 0.5/s refill 2 tokens: a request for 3 waits, one for 2 passes.
    assert!(!store.take_tokens(&heavy, 3, now + 4.0).await.unwrap());
    assert!(store.take_tokens(&heavy, 2, now + 4.0).await.unwrap());
    // More than the capacity is never granted.
    assert!(!store.take_tokens(&heavy, 6, now + 1000.0).await.unwrap());
    assert!(store.take_tokens(&heavy, 5, now + 1000.0).await.unwrap());
}

async fn token_bucket_refills_at_its_rate(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let limit = bucket(BucketName::Global, 10.0, 100.0);
    let start = 1_700_000_000.0;
    let mut burst = 0;
    while store.take_tokens(&limit, 1, start).await.unwrap() {
        burst += 1;
    }
    assert_eq!(burst, 10);
    // Drive the bucket's clock over 5 s in 1 ms steps, draining every step.
    let mut admitted = 0u32;
    for step in 1..=5000 {
        let now = start + f64::from(step) * 0.001;
        while store.take_tokens(&limit, 1, now).await.unwrap() {
            admitted += 1;
        }
    }
    let expected = 100.0 * 5.0;
    let error = (f64::from(admitted) - expected).abs() / expected;
    assert!(
        error <= 0.02,
        "admitted {admitted} in 5 s, expected {expected}"
    );
}

async fn token_bucket_clock_behind_does_not_hurt_others(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let limit = bucket(BucketName::Global, 10.0, 1.0);
    let now = 1_700_000_000.0;
    let behind = now - 10.0;
    assert!(store.take_tokens(&limit, 5, now).await.unwrap());
    // The caller 10 s behind takes what it asks for, nothing more.
    assert!(store.take_tokens(&limit, 1, behind).await.unwrap());
    assert!(
        store.take_tokens(&limit, 4, now).await.unwrap(),
        "4 left for the others"
    );
    assert!(!store.take_tokens(&limit, 1, now).await.unwrap());
    // Refused when empty, and the bucket is unchanged by the refusal.
    assert!(!store.take_tokens(&limit, 1, behind).await.unwrap());
    // last_refill did not move back: one second later exactly one token.
    assert!(store.take_tokens(&limit, 1, now + 1.0).await.unwrap());
    assert!(!store.take_tokens(&limit, 1, now + 1.0).await.unwrap());
}

async fn token_bucket_concurrent_callers_stay_within_budget(fx: Arc<Fixture>) {
    let limit = bucket(BucketName::Task(task("api_heavy")), 20.0, 50.0);
    let admitted = Arc::new(AtomicU64::new(0));
    let started = epoch_secs();
    let deadline = Instant::now() + Duration::from_millis(1000);
    let mut callers = Vec::new();
    for _ in 0..8 {
        let store = fx.store.clone();
        let limit = limit.clone();
        let admitted = admitted.clone();
        callers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                if store.take_tokens(&limit, 1, epoch_secs()).await.unwrap() {
                    admitted.fetch_add(1, Ordering::SeqCst);
                } else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }));
    }
    for caller in callers {
        caller.await.unwrap();
    }
    let elapsed = epoch_secs() - started;
    let admitted = admitted.load(Ordering::SeqCst) as f64;
    let budget = limit.max_tokens + limit.refill_rate * elapsed;
    assert!(
        admitted <= budget,
        "admitted {admitted} > budget {budget} over {elapsed} s"
    );
    assert!(admitted >= limit.max_tokens, "admitted only {admitted}");
}

// ---------------------------------------------------------------- distribution and fan-out

fn run_at(task_id: &str, at_text: &str, users: u64, slots: u32) -> Run {
    Run {
        task_type_id: task(task_id),
        scheduled_at: at(at_text),
        source: RunSource::Scheduler,
        audience: Audience::Enabled { with_custom: false },
        immediate: false,
        slots,
        users,
        planned: 0,
        cursor: None,
        custom_offset: None,
        zone_walk: Default::default(),
        planning_done: false,
        next_slot: 0,
        released: 0,
        correlation_id: "test".into(),
        created_at: at(at_text),
    }
}

fn users(ids: &[&str]) -> Vec<UserId> {
    ids.iter().map(|id| user(id)).collect()
}

fn append(slot: u32, ids: &[&str]) -> SlotWrite {
    SlotWrite {
        slot,
        trim: 0,
        append: users(ids),
    }
}

async fn runs_are_created_once_and_kept_in_order(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let ttl = Duration::from_secs(60);
    let later = run_at("report", "2024-01-15T11:00:00Z", 3, 10);
    let earlier = run_at("report", "2024-01-15T10:00:00Z", 2, 10);
    assert!(store.runs(&task("report")).await.unwrap().runs.is_empty());
    assert!(
        store
            .create_run(&later, &[append(0, &["a"])], ttl, None)
            .await
            .unwrap()
    );
    assert!(store.create_run(&earlier, &[], ttl, None).await.unwrap());
    let mut again = later.clone();
    again.users = 99;
    assert!(
        !store
            .create_run(&again, &[append(0, &["z"])], ttl, None)
            .await
            .unwrap(),
        "a run with the same id exists"
    );
    let list = store.runs(&task("report")).await.unwrap();
    assert_eq!(list.runs, vec![earlier.clone(), later.clone()]);
    assert!(list.unreadable.is_empty());
    assert_eq!(
        store.slot_users(&later, 0, 10).await.unwrap(),
        users(&["a"]),
        "the refused create wrote no list"
    );
    assert!(store.runs(&task("digest")).await.unwrap().runs.is_empty());
    assert_eq!(store.last_run(&task("report")).await.unwrap(), None);
}

async fn run_writes_are_fenced_and_move_the_slot_lists(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let ttl = Duration::from_secs(60);
    let lock = LockName::Schedule(task("report"));
    let first = store.acquire_lock(&lock, ttl).await.unwrap().unwrap();
    let mut run = run_at("report", "2024-01-15T10:00:00Z", 5, 4);
    assert!(
        store
            .create_run(&run, &[], ttl, Some(first.fence))
            .await
            .unwrap()
    );
    run.planned = 4;
    let lists = [append(0, &["a", "b"]), append(1, &["c"]), append(3, &["d"])];
    assert!(
        store
            .save_run(&run, &lists, ttl, first.fence)
            .await
            .unwrap()
    );
    assert!(
        store
            .save_run(&run, &[append(0, &["e"])], ttl, first.fence)
            .await
            .unwrap()
    );
    assert_eq!(
        store.slot_users(&run, 0, 10).await.unwrap(),
        users(&["a", "b", "e"])
    );
    assert_eq!(
        store.slot_users(&run, 0, 2).await.unwrap(),
        users(&["a", "b"])
    );
    assert_eq!(store.slot_users(&run, 2, 10).await.unwrap(), vec![]);
    // Release: trim the head that was published.
    run.released = 2;
    let trim = SlotWrite {
        slot: 0,
        trim: 2,
        append: Vec::new(),
    };
    assert!(
        store
            .save_run(&run, &[trim], ttl, first.fence)
            .await
            .unwrap()
    );
    assert_eq!(store.slot_users(&run, 0, 10).await.unwrap(), users(&["e"]));
    assert_eq!(
        store.runs(&task("report")).await.unwrap().runs,
        vec![run.clone()]
    );

    // A later holder of the lock fences the first one out.
    assert!(store.release_lock(&lock, &first).await.unwrap());
    let second = store.acquire_lock(&lock, ttl).await.unwrap().unwrap();
    let mut stale = run.clone();
    stale.released = 4;
    assert!(
        !store
            .save_run(&stale, &[append(1, &["x"])], ttl, first.fence)
            .await
            .unwrap()
    );
    assert!(!store.finish_run(&stale, first.fence).await.unwrap());
    assert_eq!(store.slot_users(&run, 1, 10).await.unwrap(), users(&["c"]));
    assert_eq!(
        store.runs(&task("report")).await.unwrap().runs,
        vec![run.clone()]
    );

    run.released = 5;
    run.planning_done = true;
    run.next_slot = 4;
    assert!(store.finish_run(&run, second.fence).await.unwrap());
    assert!(store.runs(&task("report")).await.unwrap().runs.is_empty());
    assert_eq!(store.last_run(&task("report")).await.unwrap(), Some(run));
}

async fn slot_lists_expire(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let run = run_at("report", "2024-01-15T10:00:00Z", 1, 4);
    assert!(
        store
            .create_run(&run, &[append(3, &["e"])], Duration::from_millis(50), None)
            .await
            .unwrap()
    );
    assert_eq!(store.slot_users(&run, 3, 10).await.unwrap(), users(&["e"]));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !store.slot_users(&run, 3, 10).await.unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the list never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn trigger_keys_remember_their_run(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let ttl = Duration::from_secs(60);
    let report = task("report");
    assert_eq!(
        store.trigger_run(&report, "k 1/é", 100, ttl).await.unwrap(),
        None
    );
    assert_eq!(
        store.trigger_run(&report, "k 1/é", 200, ttl).await.unwrap(),
        Some(100)
    );
    assert_eq!(
        store.trigger_run(&report, "k2", 300, ttl).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .trigger_run(&task("digest"), "k 1/é", 400, ttl)
            .await
            .unwrap(),
        None,
        "keys are per task"
    );
}

async fn custom_index_pages_by_rank(fx: Arc<Fixture>) {
    let store = &*fx.store;
    store
        .write_preferences(&[
            custom("c", "report", "2024-01-15T12:00:00Z"),
            custom("a", "report", "2024-01-15T13:00:00Z"),
            custom("b", "report", "2024-01-15T11:00:00Z"),
            enable("d", "report", "2024-01-15T10:00:00Z"),
        ])
        .await
        .unwrap();
    let report = task("report");
    assert_eq!(store.index_sizes(&report).await.unwrap(), (1, 3));
    assert_eq!(
        store.custom_users_page(&report, 0, 2).await.unwrap(),
        users(&["b", "c"])
    );
    assert_eq!(
        store.custom_users_page(&report, 2, 2).await.unwrap(),
        users(&["a"])
    );
    assert_eq!(
        store.custom_users_page(&report, 3, 2).await.unwrap(),
        vec![]
    );
    assert_eq!(
        store.custom_users_page(&report, 0, 0).await.unwrap(),
        vec![]
    );
    assert_eq!(store.index_sizes(&task("digest")).await.unwrap(), (0, 0));
}

// ---------------------------------------------------------------- execution bookkeeping

async fn success_markers(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let jobs: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    assert_eq!(store.succeeded(&jobs).await.unwrap(), vec![false; 4]);
    assert_eq!(store.succeeded(&[]).await.unwrap(), Vec::<bool>::new());
    mark_done(store, jobs[0], Duration::from_secs(60)).await;
    mark_done(store, jobs[2], Duration::from_secs(60)).await;
    mark_done(store, jobs[3], Duration::from_millis(50)).await;
    assert_eq!(
        store.succeeded(&jobs).await.unwrap(),
        vec![true, false, true, true]
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        store.succeeded(&jobs).await.unwrap(),
        vec![true, false, true, false]
    );
}

/// A claim of `job` by `execution` for (report, alice), guarded (run
/// claim taken) or not.
fn claim(job: Uuid, execution: Uuid, guarded: bool) -> ExecutionClaim {
    ExecutionClaim {
        task_type_id: task("report"),
        user_id: user("alice"),
        job_id: job,
        execution,
        job_ttl: Duration::from_secs(60),
        run_ttl: guarded.then(|| Duration::from_secs(60)),
        attempt: 1,
        execute_after_ms: 1_000,
        require_enabled: false,
        result: None,
    }
}

/// The finish of `claim`, releasing the run claim when it was guarded.
fn finish(claim: &ExecutionClaim, success_ttl: Option<Duration>) -> ExecutionFinish {
    ExecutionFinish {
        task_type_id: claim.task_type_id.clone(),
        user_id: claim.user_id.clone(),
        job_id: claim.job_id,
        execution: claim.execution,
        run_claimed: claim.run_ttl.is_some(),
        success_ttl,
        next: None,
        result: None,
    }
}

fn claimed(parameters: &[(&str, &str)]) -> ClaimOutcome {
    ClaimOutcome::Claimed {
        parameters: parameters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

/// Whether the execution claim of `job` on report is free (its
/// `running` key, under the job's claimant, holds nothing).
async fn job_claim_free(fx: &Fixture, job: Uuid) -> bool {
    fx.probe
        .claim_holder(&task("report"), &Keys::job_claimant(job))
        .await
        .is_none()
}

/// The job holding the (report, alice) run claim, if any.
async fn run_claim_holder(fx: &Fixture) -> Option<String> {
    fx.probe.claim_holder(&task("report"), "alice").await
}

/// Records a success of `job`, kept for `ttl`, as the executor does: a
/// claim, then a finish with the success marker. The claim is made under a
/// task of its own (the marker is the job's alone), so a pause or a claim
/// of report that the test set up does not stand in its way.
async fn mark_done(store: &dyn StateStore, job: Uuid, ttl: Duration) {
    let running = ExecutionClaim {
        task_type_id: task("marker"),
        ..claim(job, Uuid::new_v4(), false)
    };
    assert_eq!(store.claim_execution(&running).await.unwrap(), claimed(&[]));
    store
        .finish_execution(&finish(&running, Some(ttl)))
        .await
        .unwrap();
}

async fn claims_check_that_the_user_still_has_the_task_enabled(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let outcome = |require_enabled: bool| {
        let claim = ExecutionClaim {
            require_enabled,
            ..claim(Uuid::new_v4(), Uuid::new_v4(), false)
        };
        async move {
            let outcome = store.claim_execution(&claim).await.unwrap();
            store.finish_execution(&finish(&claim, None)).await.unwrap();
            outcome
        }
    };
    // No preferences at all: a trigger may name any user, but a scheduled
    // fan-out's job is for a user who is gone.
    assert_eq!(outcome(false).await, claimed(&[]));
    assert_eq!(outcome(true).await, ClaimOutcome::Disabled);
    // Preferences that do not name the task: only a trigger's job runs.
    store
        .write_preferences(&[enable("alice", "digest", "2024-01-15T00:00:00Z")])
        .await
        .unwrap();
    assert_eq!(outcome(false).await, claimed(&[]));
    assert_eq!(outcome(true).await, ClaimOutcome::Disabled);
    store
        .write_preferences(&[enable("alice", "report", "2024-01-15T00:00:00Z")])
        .await
        .unwrap();
    assert_eq!(outcome(false).await, claimed(&[]));
    assert_eq!(outcome(true).await, claimed(&[]));
    // Disabled after the fan-out: no job of the task runs for the user.
    store
        .write_preferences(&[PreferenceWrite {
            enabled: false,
            ..enable("alice", "report", "2024-01-16T00:00:00Z")
        }])
        .await
        .unwrap();
    assert_eq!(outcome(false).await, ClaimOutcome::Disabled);
    assert_eq!(outcome(true).await, ClaimOutcome::Disabled);
}

async fn copies_older_than_the_next_try_are_stale(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let job = Uuid::new_v4();
    let first = claim(job, Uuid::new_v4(), false);
    assert_eq!(store.claim_execution(&first).await.unwrap(), claimed(&[]));
    // Attempt 1 failed and published attempt 2, due at 5_000.
    let next = NextTry {
        attempt: 2,
        eligible_ms: 5_000,
        ttl: Duration::from_secs(60),
    };
    store
        .finish_execution(&ExecutionFinish {
            next: Some(next),
            ..finish(&first, None)
        })
        .await
        .unwrap();
    let copy = |attempt: u32, execute_after_ms: i64| ExecutionClaim {
        attempt,
        execute_after_ms,
        ..claim(job, Uuid::new_v4(), false)
    };
    // Another copy of attempt 1 (a redelivery, a deferred duplicate).
    assert_eq!(
        store.claim_execution(&copy(1, 1_000)).await.unwrap(),
        ClaimOutcome::Stale
    );
    assert_eq!(
        store.claim_execution(&copy(1, 9_000)).await.unwrap(),
        ClaimOutcome::Stale
    );
    // Attempt 2 due before the chain's try: a copy from an older chain.
    assert_eq!(
        store.claim_execution(&copy(2, 4_999)).await.unwrap(),
        ClaimOutcome::Stale
    );
    assert!(
        job_claim_free(&fx, job).await,
        "a stale copy claims nothing"
    );
    // The chain's own try, and a deferral of it, run.
    let own = copy(2, 5_000);
    assert_eq!(store.claim_execution(&own).await.unwrap(), claimed(&[]));
    store.finish_execution(&finish(&own, None)).await.unwrap();
    assert_eq!(
        store.claim_execution(&copy(2, 7_000)).await.unwrap(),
        claimed(&[])
    );
}

async fn throttles_count_per_job_and_pause_their_task(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let (throttled, other) = (Uuid::new_v4(), Uuid::new_v4());
    let throttle = |job: Uuid, pause_ms: u64| Throttle {
        task_type_id: task("report"),
        job_id: job,
        pause: Duration::from_millis(pause_ms),
        count_ttl: Duration::from_secs(60),
    };
    // Each job's throttles are counted on their own.
    assert_eq!(
        store
            .record_throttle(&throttle(throttled, 0))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .record_throttle(&throttle(throttled, 0))
            .await
            .unwrap(),
        2
    );
    assert_eq!(store.record_throttle(&throttle(other, 0)).await.unwrap(), 1);
    // No pause asked: claims go ahead.
    let free = claim(Uuid::new_v4(), Uuid::new_v4(), false);
    assert_eq!(store.claim_execution(&free).await.unwrap(), claimed(&[]));
    // A pause holds every claim of the task (claiming nothing), and only
    // of that task; a shorter pause does not cut a longer one short.
    assert_eq!(
        store
            .record_throttle(&throttle(throttled, 60_000))
            .await
            .unwrap(),
        3
    );
    assert_eq!(store.record_throttle(&throttle(other, 1)).await.unwrap(), 2);
    let held = claim(Uuid::new_v4(), Uuid::new_v4(), true);
    match store.claim_execution(&held).await.unwrap() {
        ClaimOutcome::Paused(left) => assert!(
            left > Duration::from_secs(50) && left <= Duration::from_secs(60),
            "{left:?}"
        ),
        outcome => panic!("a paused task claimed: {outcome:?}"),
    }
    assert!(job_claim_free(&fx, held.job_id).await, "nothing claimed");
    let elsewhere = ExecutionClaim {
        task_type_id: task("digest"),
        ..claim(Uuid::new_v4(), Uuid::new_v4(), true)
    };
    assert_eq!(
        store.claim_execution(&elsewhere).await.unwrap(),
        claimed(&[])
    );
    // A recorded success still wins over the pause (the copy is skipped).
    let done = Uuid::new_v4();
    mark_done(store, done, Duration::from_secs(60)).await;
    assert_eq!(
        store
            .claim_execution(&claim(done, Uuid::new_v4(), false))
            .await
            .unwrap(),
        ClaimOutcome::AlreadySucceeded
    );
}

async fn execution_claim_outcomes(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let (first, second, done) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let running = claim(first, Uuid::new_v4(), true);
    assert_eq!(
        store.claim_execution(&running).await.unwrap(),
        claimed(&[]),
        "no settings: no parameters"
    );
    assert!(!job_claim_free(&fx, first).await, "the job is claimed");
    assert_eq!(
        run_claim_holder(&fx).await,
        Some(first.to_string()),
        "the run claim is held by the job"
    );
    assert_eq!(
        store
            .claim_execution(&claim(first, Uuid::new_v4(), true))
            .await
            .unwrap(),
        ClaimOutcome::JobBusy,
        "another execution of the same job"
    );
    assert_eq!(
        store
            .claim_execution(&claim(second, Uuid::new_v4(), true))
            .await
            .unwrap(),
        ClaimOutcome::UserBusy,
        "another job of the same (task, user)"
    );
    assert!(
        job_claim_free(&fx, second).await,
        "a user-busy claim releases the job claim it took"
    );
    let other_user = ExecutionClaim {
        user_id: user("bob"),
        ..claim(second, Uuid::new_v4(), true)
    };
    assert_eq!(
        store.claim_execution(&other_user).await.unwrap(),
        claimed(&[])
    );

    mark_done(store, done, Duration::from_secs(60)).await;
    store
        .finish_execution(&finish(&running, None))
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_execution(&claim(done, Uuid::new_v4(), true))
            .await
            .unwrap(),
        ClaimOutcome::AlreadySucceeded
    );
    assert!(
        job_claim_free(&fx, done).await,
        "already succeeded claims nothing"
    );
    assert_eq!(
        run_claim_holder(&fx).await,
        None,
        "already succeeded leaves the run claim alone"
    );
}

async fn execution_claim_reads_the_task_parameters(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let with_params = |task_id: &str, params: &[(&str, &str)]| PreferenceWrite {
        settings: Some(Settings {
            timezone: None,
            custom_interval: None,
            parameters: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }),
        ..enable("alice", task_id, "2024-01-15T00:00:00Z")
    };
    store
        .write_preferences(&[
            with_params("report", &[("lang", "fr"), ("format", "pdf")]),
            with_params("digest", &[("lang", "de")]),
            custom("alice", "weekly", "2024-01-16T07:30:00Z"),
        ])
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_execution(&claim(Uuid::new_v4(), Uuid::new_v4(), true))
            .await
            .unwrap(),
        claimed(&[("format", "pdf"), ("lang", "fr")]),
        "only this task's parameters, no other settings fields"
    );
    let weekly = ExecutionClaim {
        task_type_id: task("weekly"),
        ..claim(Uuid::new_v4(), Uuid::new_v4(), false)
    };
    assert_eq!(
        store.claim_execution(&weekly).await.unwrap(),
        claimed(&[("lang", "fr")]),
        "a custom interval is not a parameter"
    );
    let bob = ExecutionClaim {
        user_id: user("bob"),
        ..claim(Uuid::new_v4(), Uuid::new_v4(), false)
    };
    assert_eq!(store.claim_execution(&bob).await.unwrap(), claimed(&[]));
}

async fn execution_claim_without_overlap_guard(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let (holder, job) = (Uuid::new_v4(), Uuid::new_v4());
    let guarded = claim(holder, Uuid::new_v4(), true);
    assert_eq!(store.claim_execution(&guarded).await.unwrap(), claimed(&[]));
    assert_eq!(run_claim_holder(&fx).await, Some(holder.to_string()));
    let allow = claim(job, Uuid::new_v4(), false);
    assert_eq!(
        store.claim_execution(&allow).await.unwrap(),
        claimed(&[]),
        "overlap allow ignores the run claim"
    );
    assert!(!job_claim_free(&fx, job).await, "the job is still claimed");
    store.finish_execution(&finish(&allow, None)).await.unwrap();
    assert!(job_claim_free(&fx, job).await);
    assert_eq!(
        run_claim_holder(&fx).await,
        Some(holder.to_string()),
        "the other job's run claim is untouched"
    );
}

async fn finish_releases_only_claims_it_holds(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let (job, other) = (Uuid::new_v4(), Uuid::new_v4());
    let running = claim(job, Uuid::new_v4(), true);
    assert_eq!(store.claim_execution(&running).await.unwrap(), claimed(&[]));

    let stale = ExecutionFinish {
        execution: Uuid::new_v4(),
        run_claimed: false,
        ..finish(&running, None)
    };
    store.finish_execution(&stale).await.unwrap();
    assert!(
        !job_claim_free(&fx, job).await,
        "another execution of the job frees nothing"
    );
    store
        .finish_execution(&finish(&claim(other, Uuid::new_v4(), true), None))
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_execution(&claim(other, Uuid::new_v4(), true))
            .await
            .unwrap(),
        ClaimOutcome::UserBusy,
        "another job does not free the run claim"
    );
    assert_eq!(store.succeeded(&[job]).await.unwrap(), vec![false]);

    store
        .finish_execution(&finish(&running, None))
        .await
        .unwrap();
    assert!(job_claim_free(&fx, job).await);
    assert_eq!(
        store
            .claim_execution(&claim(other, Uuid::new_v4(), true))
            .await
            .unwrap(),
        claimed(&[]),
        "both claims released"
    );
    assert_eq!(
        store.succeeded(&[job]).await.unwrap(),
        vec![false],
        "no success recorded without a ttl"
    );
}

async fn finish_records_success_with_its_ttl(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let (kept, brief) = (Uuid::new_v4(), Uuid::new_v4());
    for (job, ttl) in [
        (kept, Duration::from_secs(60)),
        (brief, Duration::from_millis(50)),
    ] {
        let running = claim(job, Uuid::new_v4(), true);
        assert_eq!(store.claim_execution(&running).await.unwrap(), claimed(&[]));
        store
            .finish_execution(&finish(&running, Some(ttl)))
            .await
            .unwrap();
        assert!(job_claim_free(&fx, job).await);
    }
    assert_eq!(
        store.succeeded(&[kept, brief]).await.unwrap(),
        vec![true, true]
    );
    assert_eq!(
        store
            .claim_execution(&claim(brief, Uuid::new_v4(), true))
            .await
            .unwrap(),
        ClaimOutcome::AlreadySucceeded
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        store.succeeded(&[kept, brief]).await.unwrap(),
        vec![true, false]
    );
    assert_eq!(
        store
            .claim_execution(&claim(kept, Uuid::new_v4(), true))
            .await
            .unwrap(),
        ClaimOutcome::AlreadySucceeded
    );
    let again = claim(brief, Uuid::new_v4(), true);
    assert_eq!(store.claim_execution(&again).await.unwrap(), claimed(&[]));
}

/// One `claim_executions` pipeline answers each claim as if it were made
/// alone, in order (a later claim in the batch sees an earlier one), and
/// one `finish_executions` pipeline records each finish.
async fn batched_claims_and_finishes_keep_per_job_semantics(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let (done, fresh, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    mark_done(store, done, Duration::from_secs(60)).await;
    store
        .write_preferences(&[PreferenceWrite {
            settings: Some(Settings {
                timezone: None,
                custom_interval: None,
                parameters: BTreeMap::from([("lang".to_owned(), "fr".to_owned())]),
            }),
            ..enable("bob", "report", "2024-01-15T00:00:00Z")
        }])
        .await
        .unwrap();
    let first = claim(fresh, Uuid::new_v4(), true);
    let bob = ExecutionClaim {
        user_id: user("bob"),
        ..claim(Uuid::new_v4(), Uuid::new_v4(), true)
    };
    let batch = [
        claim(done, Uuid::new_v4(), true),
        first.clone(),
        claim(fresh, Uuid::new_v4(), true),
        claim(other, Uuid::new_v4(), true),
        bob.clone(),
    ];
    assert_eq!(
        store.claim_executions(&batch).await.unwrap(),
        vec![
            ClaimOutcome::AlreadySucceeded,
            claimed(&[]),
            ClaimOutcome::JobBusy,
            ClaimOutcome::UserBusy,
            claimed(&[("lang", "fr")]),
        ]
    );
    assert_eq!(store.claim_executions(&[]).await.unwrap(), vec![]);
    store
        .finish_executions(&[
            finish(&first, Some(Duration::from_secs(60))),
            finish(&bob, None),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.succeeded(&[fresh, bob.job_id]).await.unwrap(),
        vec![true, false]
    );
    assert!(
        job_claim_free(&fx, bob.job_id).await,
        "bob's claim released"
    );
    assert_eq!(
        store
            .claim_execution(&claim(other, Uuid::new_v4(), true))
            .await
            .unwrap(),
        claimed(&[]),
        "alice's run claim released"
    );
}

async fn execution_claims_expire(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let (job, other) = (Uuid::new_v4(), Uuid::new_v4());
    let brief = ExecutionClaim {
        job_ttl: Duration::from_millis(50),
        run_ttl: Some(Duration::from_millis(50)),
        ..claim(job, Uuid::new_v4(), true)
    };
    assert_eq!(store.claim_execution(&brief).await.unwrap(), claimed(&[]));
    assert_eq!(
        store
            .claim_execution(&claim(job, Uuid::new_v4(), true))
            .await
            .unwrap(),
        ClaimOutcome::JobBusy
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        store
            .claim_execution(&claim(job, Uuid::new_v4(), true))
            .await
            .unwrap(),
        claimed(&[]),
        "a crashed execution's claims expire"
    );
    assert_eq!(
        store
            .claim_execution(&claim(other, Uuid::new_v4(), true))
            .await
            .unwrap(),
        ClaimOutcome::UserBusy,
        "held again by the new execution"
    );
}

// ---------------------------------------------------------------- metrics

async fn metrics_batches(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let (report, digest) = (task("report"), task("digest"));
    let day = NaiveDate::from_ymd_opt(2024, 1, 15).unwrap();
    let next_day = day.succ_opt().unwrap();
    let base = at("2024-01-15T10:00:00Z");
    let sample = |task_id: &TaskTypeId, minutes: i64, duration_ms| DurationSample {
        task_type_id: task_id.clone(),
        job_id: Uuid::new_v4(),
        completed_at: base + chrono::Duration::minutes(minutes),
        duration_ms,
    };
    let first = MetricsBatch {
        executions: vec![(day, report.clone(), 3), (day, digest.clone(), 1)],
        failures: vec![(day, report.clone(), 1)],
        durations: vec![
            sample(&report, 0, 120),
            sample(&report, 1, 120),
            sample(&digest, 0, 7),
        ],
    };
    store.record_metrics(&first).await.unwrap();
    store
        .record_metrics(&MetricsBatch {
            executions: vec![(day, report.clone(), 2), (next_day, report.clone(), 1)],
            failures: vec![],
            durations: vec![],
        })
        .await
        .unwrap();
    store
        .record_metrics(&MetricsBatch::default())
        .await
        .unwrap();
    let counts = [
        (fx.probe.executions(day, &report).await, 5),
        (fx.probe.executions(day, &digest).await, 1),
        (fx.probe.executions(next_day, &report).await, 1),
        (fx.probe.failures(day, &report).await, 1),
        (fx.probe.failures(day, &digest).await, 0),
    ];
    for (n, (got, want)) in counts.into_iter().enumerate() {
        assert_eq!(got, want, "counter {n}");
    }
    // Read back per day, in the order asked, zero for a day without counts.
    let empty_day = next_day + chrono::Duration::days(1);
    let daily = fx
        .durations
        .daily_counts(&report, &[next_day, day, empty_day])
        .await
        .unwrap();
    let read: Vec<(NaiveDate, u64, u64)> = daily
        .iter()
        .map(|d| (d.date, d.executions, d.failures))
        .collect();
    assert_eq!(read, vec![(next_day, 1, 0), (day, 5, 1), (empty_day, 0, 0)]);
    let durations = fx.probe.durations(&report).await;
    assert_eq!(
        durations.len(),
        2,
        "same duration, distinct members: {durations:?}"
    );
    assert_eq!(durations[0].0, base.timestamp_millis());
    assert!(durations[0].1.ends_with(":120"), "{durations:?}");

    // Trim by count: at most MAX_SAMPLES, the newest kept.
    let batch = MetricsBatch {
        durations: (2..10).map(|m| sample(&report, m, 10)).collect(),
        ..MetricsBatch::default()
    };
    store.record_metrics(&batch).await.unwrap();
    let durations = fx.probe.durations(&report).await;
    let minutes: Vec<i64> = durations
        .iter()
        .map(|(ms, _)| (ms - base.timestamp_millis()) / 60_000)
        .collect();
    assert_eq!(minutes, vec![5, 6, 7, 8, 9]);

    // Trim by age: samples older than the retention before the newest go.
    let batch = MetricsBatch {
        durations: vec![sample(&report, 60 + 7, 10)],
        ..MetricsBatch::default()
    };
    store.record_metrics(&batch).await.unwrap();
    let durations = fx.probe.durations(&report).await;
    let minutes: Vec<i64> = durations
        .iter()
        .map(|(ms, _)| (ms - base.timestamp_millis()) / 60_000)
        .collect();
    assert_eq!(minutes, vec![7, 8, 9, 67]);
    assert_eq!(fx.probe.durations(&digest).await.len(), 1);
}

// ---------------------------------------------------------------- Redis only

#[tokio::test]
async fn redis_key_layout_and_encodings() {
    let (store, prefix) = redis_store().await;
    let mut raw = store.connection();
    let write = PreferenceWrite {
        modified_at: at("2024-01-15T10:00:00Z"),
        ..custom("u1", "report", "2024-01-16T07:30:00Z")
    };
    store
        .write_preferences(&[disable("u1", "digest"), write])
        .await
        .unwrap();
    let lease = store
        .acquire_lock(&LockName::Schedule(task("report")), Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    store
        .record_fire(&task("report"), at("2024-01-15T00:00:00Z"), &lease)
        .await
        .unwrap();
    store
        .take_tokens(&bucket(BucketName::Global, 10.0, 1.0), 3, 1_700_000_000.5)
        .await
        .unwrap();
    let day = NaiveDate::from_ymd_opt(2024, 1, 15).unwrap();
    store
        .record_metrics(&MetricsBatch {
            executions: vec![(day, task("report"), 1)],
            ..MetricsBatch::default()
        })
        .await
        .unwrap();

    let p = &prefix;
    let tasks: BTreeMap<String, String> = raw.hgetall(format!("{p}:users:u1:tasks")).await.unwrap();
    assert_eq!(
        tasks,
        BTreeMap::from([("report".into(), "1".into()), ("digest".into(), "0".into())])
    );
    let settings: BTreeMap<String, String> = raw
        .hgetall(format!("{p}:users:u1:settings:report"))
        .await
        .unwrap();
    assert_eq!(settings["last_modified"], "2024-01-15T10:00:00Z");
    assert_eq!(settings["param:lang"], "fr");
    let interval: TaskInterval = serde_json::from_str(&settings["custom_interval"]).unwrap();
    assert_eq!(interval, daily());
    let bucket = Keys::modified_bucket(&user("u1"));
    let modified: BTreeMap<String, String> = raw
        .hgetall(format!("{p}:users:modified:{bucket}"))
        .await
        .unwrap();
    assert_eq!(
        modified,
        BTreeMap::from([(
            "u1".into(),
            at("2024-01-15T10:00:00Z").timestamp_millis().to_string()
        )])
    );
    let legacy: bool = raw
        .exists(format!("{p}:users:u1:last_modified"))
        .await
        .unwrap();
    assert!(!legacy, "no key per user");
    store
        .write_preferences(&[enable("u2", "report", "2024-01-15T00:00:00Z")])
        .await
        .unwrap();
    let enabled: Vec<(String, f64)> = raw
        .zrange_withscores(format!("{p}:index:enabled:report"), 0, -1)
        .await
        .unwrap();
    assert_eq!(
        enabled,
        vec![("u2".into(), spread_key(&task("report"), &user("u2")) as f64)]
    );
    let schedule: String = raw.get(format!("{p}:schedule:report")).await.unwrap();
    assert_eq!(
        schedule,
        format!("2024-01-15T00:00:00Z|fence={}", lease.fence)
    );
    let fence: u64 = raw
        .get(format!("{p}:schedule:lock:report:fence"))
        .await
        .unwrap();
    assert_eq!(fence, lease.fence);
    let holder: String = raw.get(format!("{p}:schedule:lock:report")).await.unwrap();
    assert_eq!(holder, lease.token);
    let due: Vec<(String, f64)> = raw
        .zrange_withscores(format!("{p}:index:custom:report"), 0, -1)
        .await
        .unwrap();
    assert_eq!(
        due,
        vec![(
            "u1".into(),
            at("2024-01-16T07:30:00Z").timestamp_millis() as f64
        )]
    );
    let bucket_state: BTreeMap<String, f64> =
        raw.hgetall(format!("{p}:ratelimit:global")).await.unwrap();
    assert_eq!(
        bucket_state,
        BTreeMap::from([
            ("tokens".into(), 7.0),
            ("last_refill".into(), 1_700_000_000.5)
        ])
    );
    let bucket_ttl: i64 = raw.ttl(format!("{p}:ratelimit:global")).await.unwrap();
    assert!((1..=3600).contains(&bucket_ttl), "bucket ttl {bucket_ttl}");
    let metrics_ttl: i64 = raw
        .ttl(format!("{p}:metrics:executions:2024-01-15"))
        .await
        .unwrap();
    assert!(
        (1..=3600).contains(&metrics_ttl),
        "metrics ttl {metrics_ttl}"
    );
    cleanup(&prefix);
}

#[tokio::test]
async fn redis_reads_and_moves_the_last_modified_of_older_releases() {
    let (store, prefix) = redis_store().await;
    let mut raw = store.connection();
    let p = &prefix;
    // What an older release left: the tasks hash, a STRING last_modified
    // and an unscored index entry.
    let _: () = raw
        .hset(format!("{p}:users:old:tasks"), "report", "1")
        .await
        .unwrap();
    let _: () = raw
        .set(
            format!("{p}:users:old:last_modified"),
            "2023-05-01T12:00:00.5Z",
        )
        .await
        .unwrap();
    let _: () = raw
        .zadd(format!("{p}:index:enabled:report"), "old", 0)
        .await
        .unwrap();
    let prefs = store.preferences(&user("old")).await.unwrap().unwrap();
    assert_eq!(prefs.last_modified, at("2023-05-01T12:00:00.5Z"));
    assert_eq!(
        prefs.enabled_tasks,
        BTreeMap::from([(task("report"), true)])
    );
    // The next write moves the user to the new layout.
    store
        .write_preferences(&[enable("old", "digest", "2024-02-01T00:00:00Z")])
        .await
        .unwrap();
    let legacy: bool = raw
        .exists(format!("{p}:users:old:last_modified"))
        .await
        .unwrap();
    assert!(!legacy);
    let prefs = store.preferences(&user("old")).await.unwrap().unwrap();
    assert_eq!(prefs.last_modified, at("2024-02-01T00:00:00Z"));
    // Deleting the last preference removes the bucket entry and any legacy key.
    let _: () = raw
        .set(
            format!("{p}:users:old:last_modified"),
            "2023-05-01T12:00:00Z",
        )
        .await
        .unwrap();
    assert!(
        store
            .delete_preference(&user("old"), &task("report"))
            .await
            .unwrap()
    );
    assert!(
        store
            .delete_preference(&user("old"), &task("digest"))
            .await
            .unwrap()
    );
    let bucket = format!("{p}:users:modified:{}", Keys::modified_bucket(&user("old")));
    let field: Option<String> = raw.hget(&bucket, "old").await.unwrap();
    assert_eq!(field, None);
    let legacy: bool = raw
        .exists(format!("{p}:users:old:last_modified"))
        .await
        .unwrap();
    assert!(!legacy);
    assert_eq!(store.preferences(&user("old")).await.unwrap(), None);
    cleanup(&prefix);
}

#[tokio::test]
async fn redis_store_heals_after_its_connection_is_killed() {
    let (store, prefix) = redis_store().await;
    let mut own = store.connection();
    let before: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut own)
        .await
        .unwrap();
    let client = redis::Client::open(redis_url()).unwrap();
    let mut killer = client.get_multiplexed_async_connection().await.unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(before)
        .query_async(&mut killer)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    let mut healed = false;
    for _ in 0..50 {
        if store
            .write_preferences(&[enable("u1", "report", "2024-01-15T00:00:00Z")])
            .await
            .is_ok()
        {
            healed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healed, "the store never reconnected");
    let after: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut own)
        .await
        .unwrap();
    assert_ne!(before, after, "a new connection carries the calls");
    assert_eq!(store.enabled_user_count(&task("report")).await.unwrap(), 1);
    cleanup(&prefix);
}

async fn custom_moves_and_fenced_run_creation_reject_a_stale_holder(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let report = task("report");
    let ttl = Duration::from_secs(60);
    store
        .write_preferences(&[custom("early", "report", "2024-01-16T06:00:00Z")])
        .await
        .unwrap();
    let lock = LockName::Schedule(report.clone());
    let first = store.acquire_lock(&lock, ttl).await.unwrap().unwrap();
    assert!(store.release_lock(&lock, &first).await.unwrap());
    let second = store.acquire_lock(&lock, ttl).await.unwrap().unwrap();
    let moves = [(
        user("early"),
        at("2024-01-16T06:00:00Z"),
        at("2024-01-17T06:00:00Z"),
    )];

    // The stale holder writes nothing.
    assert!(
        !store
            .advance_custom_users(&report, &moves, first.fence)
            .await
            .unwrap()
    );
    let due = store
        .due_custom_users(&report, at("2024-01-16T06:00:00Z"), 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 1, "the stale move was rejected");
    let run = run_at("report", "2024-01-16T06:00:00Z", 5, 1);
    assert!(
        !store
            .create_run(&run, &[append(0, &["early"])], ttl, Some(first.fence))
            .await
            .unwrap()
    );
    assert!(store.runs(&report).await.unwrap().runs.is_empty());
    assert_eq!(store.slot_users(&run, 0, 10).await.unwrap(), vec![]);

    // The current holder's writes go through.
    assert!(
        store
            .advance_custom_users(&report, &moves, second.fence)
            .await
            .unwrap()
    );
    assert!(
        store
            .due_custom_users(&report, at("2024-01-16T06:00:00Z"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .create_run(&run, &[append(0, &["early"])], ttl, Some(second.fence))
            .await
            .unwrap()
    );
    assert_eq!(store.runs(&report).await.unwrap().runs, vec![run]);
}

async fn a_fire_is_not_recorded_by_a_holder_fenced_out_before_any_write(fx: Arc<Fixture>) {
    let store = &*fx.store;
    let report = task("report");
    let lock = LockName::Schedule(report.clone());
    let ttl = Duration::from_secs(60);
    let first = store.acquire_lock(&lock, ttl).await.unwrap().unwrap();
    assert!(store.release_lock(&lock, &first).await.unwrap());
    let second = store.acquire_lock(&lock, ttl).await.unwrap().unwrap();
    // The new holder has not written yet; the old one is refused anyway.
    assert!(
        !store
            .record_fire(&report, at("2024-01-15T10:00:00Z"), &first)
            .await
            .unwrap()
    );
    assert_eq!(store.schedule_state(&report).await.unwrap(), None);
    assert!(
        store
            .record_fire(&report, at("2024-01-15T10:00:00Z"), &second)
            .await
            .unwrap()
    );
}

// ---------------------------------------------------------------- zones

fn zoned(user_id: &str, task_id: &str, zone: chrono_tz::Tz) -> PreferenceWrite {
    PreferenceWrite {
        settings: Some(Settings {
            timezone: Some(zone),
            ..Settings::default()
        }),
        ..enable(user_id, task_id, "2024-01-15T00:00:00Z")
    }
}

fn default_zone(user_id: &str, zone: Option<chrono_tz::Tz>) -> TimezoneWrite {
    TimezoneWrite {
        user_id: user(user_id),
        timezone: zone,
    }
}

/// Every group of `task` and its members (sorted), the enabled index
/// first under the name "-".
async fn groups_of(store: &dyn StateStore, task_id: &str) -> BTreeMap<String, Vec<String>> {
    let task = task(task_id);
    let mut groups = BTreeMap::new();
    let users = |page: Vec<SpreadCursor>| {
        let mut ids: Vec<String> = page.into_iter().map(|c| c.user.to_string()).collect();
        ids.sort();
        ids
    };
    let default = store
        .enabled_users_in_spread_order(&task, None, 1000)
        .await
        .unwrap();
    if !default.is_empty() {
        groups.insert("-".to_owned(), users(default));
    }
    let zones = store.zone_groups(&task).await.unwrap();
    assert!(zones.unreadable.is_empty(), "{:?}", zones.unreadable);
    let names: Vec<chrono_tz::Tz> = zones.groups.iter().map(|(zone, _)| *zone).collect();
    let sizes = store.zone_sizes(&task, &names).await.unwrap();
    for (zone, size) in names.into_iter().zip(sizes) {
        let page = store
            .zone_users_in_spread_order(&task, zone, None, 1000)
            .await
            .unwrap();
        assert_eq!(page.len() as u64, size, "{zone}");
        if !page.is_empty() {
            groups.insert(zone.name().to_owned(), users(page));
        }
    }
    groups
}

fn expect(groups: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    groups
        .iter()
        .map(|(name, users)| {
            (
                (*name).to_owned(),
                users.iter().map(|u| (*u).to_owned()).collect(),
            )
        })
        .collect()
}

async fn zone_groups_follow_the_per_task_zone_then_the_default(f: Arc<Fixture>) {
    use chrono_tz::{America, Asia, Europe};
    let store = f.store.as_ref();
    store
        .write_user_timezones(&[default_zone("bob", Some(Europe::Paris))])
        .await
        .unwrap();
    assert_eq!(
        store.user_timezone(&user("bob")).await.unwrap(),
        Some(Europe::Paris)
    );
    store
        .write_preferences(&[
            enable("alice", "t", "2024-01-15T00:00:00Z"),
            enable("bob", "t", "2024-01-15T00:00:00Z"),
            zoned("carol", "t", Asia::Kathmandu),
            zoned("bob", "u", America::St_Johns),
            custom("dave", "t", "2024-01-16T07:30:00Z"),
        ])
        .await
        .unwrap();
    assert_eq!(
        groups_of(store, "t").await,
        expect(&[
            ("-", &["alice"]),
            ("Europe/Paris", &["bob"]),
            ("Asia/Kathmandu", &["carol"]),
        ])
    );
    assert_eq!(
        groups_of(store, "u").await,
        expect(&[("America/St_Johns", &["bob"])])
    );
    assert_eq!(store.enabled_user_count(&task("t")).await.unwrap(), 4);
    // The per-task zone round-trips in the settings, the default in the
    // preference.
    let bob = store.preferences(&user("bob")).await.unwrap().unwrap();
    assert_eq!(bob.timezone, Some(Europe::Paris));
    assert_eq!(
        bob.task_settings[&task("u")].timezone,
        Some(America::St_Johns)
    );
    // A custom interval wins over every zone; dropping the per-task zone
    // goes back to the default; disabling leaves every group.
    store
        .write_preferences(&[
            custom("carol", "t", "2024-01-16T07:30:00Z"),
            enable("bob", "u", "2024-01-15T00:00:00Z"),
            PreferenceWrite {
                enabled: false,
                ..enable("alice", "t", "2024-01-15T00:00:00Z")
            },
        ])
        .await
        .unwrap();
    assert_eq!(
        groups_of(store, "t").await,
        expect(&[("Europe/Paris", &["bob"])])
    );
    assert_eq!(
        groups_of(store, "u").await,
        expect(&[("Europe/Paris", &["bob"])])
    );
    // The same user and task twice in one batch: the last write wins.
    store
        .write_preferences(&[
            zoned("erin", "t", Asia::Kathmandu),
            zoned("erin", "t", America::St_Johns),
        ])
        .await
        .unwrap();
    assert_eq!(
        groups_of(store, "t").await,
        expect(&[("Europe/Paris", &["bob"]), ("America/St_Johns", &["erin"])])
    );
}

async fn a_default_zone_change_moves_only_tasks_that_follow_it(f: Arc<Fixture>) {
    use chrono_tz::{Asia, Australia, Europe};
    let store = f.store.as_ref();
    store
        .write_preferences(&[
            enable("amy", "t", "2024-01-15T00:00:00Z"),
            enable("amy", "u", "2024-01-15T00:00:00Z"),
            zoned("amy", "v", Asia::Kathmandu),
            custom("amy", "w", "2024-01-16T07:30:00Z"),
            PreferenceWrite {
                enabled: false,
                ..enable("amy", "x", "2024-01-15T00:00:00Z")
            },
        ])
        .await
        .unwrap();
    store
        .write_user_timezones(&[default_zone("amy", Some(Australia::Adelaide))])
        .await
        .unwrap();
    for t in ["t", "u"] {
        assert_eq!(
            groups_of(store, t).await,
            expect(&[("Australia/Adelaide", &["amy"])]),
            "{t}"
        );
    }
    assert_eq!(
        groups_of(store, "v").await,
        expect(&[("Asia/Kathmandu", &["amy"])])
    );
    assert!(groups_of(store, "w").await.is_empty());
    assert!(groups_of(store, "x").await.is_empty());
    // Moving again leaves the old group empty; removing the default
    // brings the tasks back to the enabled index.
    store
        .write_user_timezones(&[default_zone("amy", Some(Europe::Berlin))])
        .await
        .unwrap();
    assert_eq!(
        groups_of(store, "t").await,
        expect(&[("Europe/Berlin", &["amy"])])
    );
    store
        .write_user_timezones(&[default_zone("amy", None)])
        .await
        .unwrap();
    assert_eq!(store.user_timezone(&user("amy")).await.unwrap(), None);
    assert_eq!(groups_of(store, "t").await, expect(&[("-", &["amy"])]));
    assert_eq!(
        groups_of(store, "v").await,
        expect(&[("Asia/Kathmandu", &["amy"])])
    );
}

async fn zone_groups_page_in_spread_order_and_leave_on_delete(f: Arc<Fixture>) {
    let store = f.store.as_ref();
    let zone = chrono_tz::Asia::Kathmandu;
    let writes: Vec<PreferenceWrite> = (0..25)
        .map(|i| zoned(&format!("k{i}"), "t", zone))
        .collect();
    store.write_preferences(&writes).await.unwrap();
    let mut walked = Vec::new();
    let mut cursor: Option<SpreadCursor> = None;
    loop {
        let page = store
            .zone_users_in_spread_order(&task("t"), zone, cursor.as_ref(), 4)
            .await
            .unwrap();
        walked.extend(page.iter().cloned());
        if page.len() < 4 {
            break;
        }
        cursor = page.last().cloned();
    }
    let mut expected: Vec<SpreadCursor> = (0..25)
        .map(|i| {
            let u = user(&format!("k{i}"));
            SpreadCursor {
                key: spread_key(&task("t"), &u),
                user: u,
            }
        })
        .collect();
    expected.sort();
    assert_eq!(walked, expected);
    assert!(
        store
            .delete_preference(&user("k3"), &task("t"))
            .await
            .unwrap()
    );
    let sizes = store.zone_sizes(&task("t"), &[zone]).await.unwrap();
    assert_eq!(sizes, vec![24]);
    // A user following a default zone leaves that group on delete too.
    store
        .write_user_timezones(&[default_zone("k4", Some(chrono_tz::Europe::Paris))])
        .await
        .unwrap();
    store
        .write_preferences(&[enable("k4", "t", "2024-01-15T00:00:00Z")])
        .await
        .unwrap();
    assert!(
        store
            .delete_preference(&user("k4"), &task("t"))
            .await
            .unwrap()
    );
    let sizes = store
        .zone_sizes(&task("t"), &[zone, chrono_tz::Europe::Paris])
        .await
        .unwrap();
    assert_eq!(sizes, vec![23, 0]);
}

async fn zone_fires_are_fenced(f: Arc<Fixture>) {
    let store = f.store.as_ref();
    let zone = chrono_tz::Asia::Kathmandu;
    store
        .write_preferences(&[zoned("a", "t", zone)])
        .await
        .unwrap();
    let lock = LockName::Schedule(task("t"));
    let first = store
        .acquire_lock(&lock, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let groups = store.zone_groups(&task("t")).await.unwrap();
    assert_eq!(groups.groups, vec![(zone, None)]);
    assert_eq!(groups.checked, None, "no pass on record yet");
    assert!(
        store
            .record_zone_fires(
                &task("t"),
                &[(zone, at("2024-01-15T02:15:00Z"))],
                at("2024-01-15T02:15:01Z"),
                &first
            )
            .await
            .unwrap()
    );
    let groups = store.zone_groups(&task("t")).await.unwrap();
    assert_eq!(
        groups.groups[0].1.unwrap().last_fired,
        at("2024-01-15T02:15:00Z")
    );
    assert_eq!(groups.checked, Some(at("2024-01-15T02:15:01Z")));
    assert!(
        store
            .record_zone_fires(&task("t"), &[], at("2024-01-15T02:15:02Z"), &first)
            .await
            .unwrap(),
        "the pass instant is recorded without any fire"
    );
    let groups = store.zone_groups(&task("t")).await.unwrap();
    assert_eq!(groups.checked, Some(at("2024-01-15T02:15:02Z")));
    assert_eq!(
        groups.groups[0].1.unwrap().last_fired,
        at("2024-01-15T02:15:00Z"),
        "a group not written keeps its fire"
    );
    assert_eq!(groups.groups[0].1.unwrap().fence, first.fence);
    store.release_lock(&lock, &first).await.unwrap();
    let second = store
        .acquire_lock(&lock, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert!(
        !store
            .record_zone_fires(
                &task("t"),
                &[(zone, at("2024-01-16T02:15:00Z"))],
                at("2024-01-16T02:15:01Z"),
                &first
            )
            .await
            .unwrap(),
        "a stale holder is fenced out"
    );
    assert!(
        !store
            .record_zone_fires(&task("t"), &[], at("2024-01-16T02:15:01Z"), &first)
            .await
            .unwrap(),
        "a stale holder is fenced out of the pass instant too"
    );
    assert_eq!(
        store.zone_groups(&task("t")).await.unwrap().checked,
        Some(at("2024-01-15T02:15:02Z"))
    );
    assert!(
        store
            .record_zone_fires(
                &task("t"),
                &[(zone, at("2024-01-16T02:15:00Z"))],
                at("2024-01-16T02:15:03Z"),
                &second
            )
            .await
            .unwrap()
    );
    let groups = store.zone_groups(&task("t")).await.unwrap();
    assert_eq!(
        groups.groups[0].1.unwrap().last_fired,
        at("2024-01-16T02:15:00Z")
    );
    assert_eq!(groups.checked, Some(at("2024-01-16T02:15:03Z")));
    assert_eq!(groups.groups.len(), 1, "the pass instant is no zone group");
}

async fn operator_pauses_are_shared_and_idempotent(f: Arc<Fixture>) {
    let store = f.store.as_ref();
    let first = at("2024-01-15T10:00:00Z");
    assert!(store.paused_tasks().await.unwrap().is_empty());
    assert!(
        store
            .set_task_paused(&task("a"), Some(first))
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_task_paused(&task("a"), Some(at("2024-01-15T11:00:00Z")))
            .await
            .unwrap(),
        "a second pause changes nothing"
    );
    assert!(
        store
            .set_task_paused(&task("b"), Some(first))
            .await
            .unwrap()
    );
    assert_eq!(
        store.paused_tasks().await.unwrap(),
        BTreeMap::from([(task("a"), first), (task("b"), first)])
    );
    assert!(store.set_task_paused(&task("a"), None).await.unwrap());
    assert!(!store.set_task_paused(&task("a"), None).await.unwrap());
    assert_eq!(
        store.paused_tasks().await.unwrap(),
        BTreeMap::from([(task("b"), first)])
    );
}

async fn spread_ranks_and_custom_interval_pages(f: Arc<Fixture>) {
    let store = f.store.as_ref();
    let zone = chrono_tz::Asia::Kathmandu;
    let plain = ["p1", "p2", "p3", "p4"];
    let mut writes: Vec<PreferenceWrite> = plain
        .iter()
        .map(|id| enable(id, "t", "2024-01-15T00:00:00Z"))
        .collect();
    writes.push(zoned("z1", "t", zone));
    writes.push(custom("c1", "t", "2024-01-16T00:00:00Z"));
    writes.push(custom("c2", "t", "2024-01-17T00:00:00Z"));
    store.write_preferences(&writes).await.unwrap();
    let mut order: Vec<(u64, &str)> = plain
        .iter()
        .map(|id| (spread_key(&task("t"), &user(id)), *id))
        .collect();
    order.sort();
    for (rank, (_, id)) in order.iter().enumerate() {
        assert_eq!(
            store
                .spread_rank(&task("t"), None, &user(id))
                .await
                .unwrap(),
            Some(rank as u64),
            "{id}"
        );
    }
    assert_eq!(
        store
            .spread_rank(&task("t"), Some(zone), &user("z1"))
            .await
            .unwrap(),
        Some(0)
    );
    assert_eq!(
        store
            .spread_rank(&task("t"), None, &user("z1"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .spread_rank(&task("t"), None, &user("c1"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .spread_rank(&task("other"), None, &user("p1"))
            .await
            .unwrap(),
        None
    );
    let page = store
        .custom_intervals_page(&task("t"), 0, 10)
        .await
        .unwrap();
    assert_eq!(
        page,
        vec![(user("c1"), Some(daily())), (user("c2"), Some(daily()))]
    );
    let page = store
        .custom_intervals_page(&task("t"), 1, 10)
        .await
        .unwrap();
    assert_eq!(page, vec![(user("c2"), Some(daily()))]);
    assert!(
        store
            .custom_intervals_page(&task("t"), 2, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

// ---------------------------------------------------------- job results

/// The record of `attempt` of `job` (report, alice) at `status`.
fn attempt_write(job: Uuid, attempt: u32, status: Status, retention: Duration) -> ResultWrite {
    let started = at("2024-01-15T10:00:00Z");
    ResultWrite {
        record: AttemptRecord {
            task_type_id: task("report"),
            user_id: user("alice"),
            attempt,
            result: ExecutionResult {
                job_id: job,
                status,
                started_at: started,
                completed_at: started + chrono::Duration::milliseconds(5),
                duration: Duration::from_millis(5),
                error: (status != Status::Success && status != Status::Running).then(|| {
                    ErrorDetail {
                        code: "http_500".to_owned(),
                        message: "HTTP 500".to_owned(),
                        retry: true,
                    }
                }),
                response: None,
                next_attempt: (status == Status::Retrying).then(|| at("2024-01-15T10:01:00Z")),
            },
        },
        retention,
        period: None,
    }
}

/// Claims and finishes attempt `attempt` of `job`, ending at `status`.
async fn run_attempt(store: &dyn StateStore, job: Uuid, attempt: u32, status: Status) -> Uuid {
    let execution = Uuid::new_v4();
    let hour = Duration::from_secs(3600);
    let claim = ExecutionClaim {
        attempt,
        result: Some(attempt_write(job, attempt, Status::Running, hour)),
        ..claim(job, execution, false)
    };
    assert_eq!(store.claim_execution(&claim).await.unwrap(), claimed(&[]));
    store
        .finish_execution(&ExecutionFinish {
            result: Some(attempt_write(job, attempt, status, hour)),
            ..finish(&claim, None)
        })
        .await
        .unwrap();
    execution
}

fn statuses(records: &[AttemptRecord]) -> Vec<(u32, Status)> {
    records
        .iter()
        .map(|r| (r.attempt, r.result.status))
        .collect()
}

async fn job_results_follow_claims_and_finishes(fx: Arc<Fixture>) {
    let (store, results) = (&*fx.store, &*fx.results);
    let job = Uuid::new_v4();
    assert_eq!(results.job_results(job).await.unwrap(), None);

    // Claimed: running, no finished attempt yet, listed as the user's run.
    let hour = Duration::from_secs(3600);
    let first = ExecutionClaim {
        result: Some(attempt_write(job, 1, Status::Running, hour)),
        ..claim(job, Uuid::new_v4(), false)
    };
    assert_eq!(store.claim_execution(&first).await.unwrap(), claimed(&[]));
    let kept = results.job_results(job).await.unwrap().unwrap();
    assert_eq!(kept.latest.result.status, Status::Running);
    assert!(kept.attempts.is_empty());
    let runs = results
        .user_runs(&user("alice"), &task("report"), 10)
        .await
        .unwrap();
    assert_eq!(statuses(&runs), vec![(1, Status::Running)]);

    // A busy copy writes nothing.
    let copy = ExecutionClaim {
        result: Some(attempt_write(job, 1, Status::Running, hour)),
        ..claim(job, Uuid::new_v4(), false)
    };
    assert_eq!(
        store.claim_execution(&copy).await.unwrap(),
        ClaimOutcome::JobBusy
    );

    // Retrying, then success: both attempts, the job listed once.
    store
        .finish_execution(&ExecutionFinish {
            result: Some(attempt_write(job, 1, Status::Retrying, hour)),
            ..finish(&first, None)
        })
        .await
        .unwrap();
    let kept = results.job_results(job).await.unwrap().unwrap();
    assert_eq!(kept.latest.result.status, Status::Retrying);
    assert_eq!(
        kept.latest.result.next_attempt,
        Some(at("2024-01-15T10:01:00Z"))
    );
    run_attempt(store, job, 2, Status::Success).await;
    let kept = results.job_results(job).await.unwrap().unwrap();
    assert_eq!(kept.latest.attempt, 2);
    assert_eq!(kept.latest.result.status, Status::Success);
    assert_eq!(
        statuses(&kept.attempts),
        vec![(1, Status::Retrying), (2, Status::Success)]
    );
    assert_eq!(kept.latest.task_type_id, task("report"));
    assert_eq!(kept.latest.user_id, user("alice"));

    // A second job comes first in the runs list; limit honoured; another
    // task's list is apart.
    let later = Uuid::new_v4();
    run_attempt(store, later, 1, Status::Failed).await;
    let runs = results
        .user_runs(&user("alice"), &task("report"), 10)
        .await
        .unwrap();
    let ids: Vec<Uuid> = runs.iter().map(|r| r.result.job_id).collect();
    assert_eq!(ids, vec![later, job]);
    assert_eq!(runs[0].result.status, Status::Failed);
    let one = results
        .user_runs(&user("alice"), &task("report"), 1)
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].result.job_id, later);
    assert!(
        results
            .user_runs(&user("alice"), &task("other"), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn job_results_are_recorded_once_per_execution(fx: Arc<Fixture>) {
    let (store, results) = (&*fx.store, &*fx.results);
    let job = Uuid::new_v4();
    let hour = Duration::from_secs(3600);
    let running = ExecutionClaim {
        result: Some(attempt_write(job, 1, Status::Running, hour)),
        ..claim(job, Uuid::new_v4(), false)
    };
    store.claim_execution(&running).await.unwrap();
    let done = ExecutionFinish {
        result: Some(attempt_write(job, 1, Status::Success, hour)),
        ..finish(&running, None)
    };
    // A finish sent twice (a retried round) is one attempt.
    store.finish_execution(&done).await.unwrap();
    store.finish_execution(&done).await.unwrap();
    let kept = results.job_results(job).await.unwrap().unwrap();
    assert_eq!(statuses(&kept.attempts), vec![(1, Status::Success)]);

    // A finish of an execution that does not hold the job records nothing.
    let stranger = ExecutionFinish {
        execution: Uuid::new_v4(),
        result: Some(attempt_write(job, 7, Status::Failed, hour)),
        ..finish(&running, None)
    };
    store.finish_execution(&stranger).await.unwrap();
    let kept = results.job_results(job).await.unwrap().unwrap();
    assert_eq!(kept.latest.result.status, Status::Success);
    assert_eq!(kept.attempts.len(), 1);
}

async fn job_results_cap_attempts_and_runs(fx: Arc<Fixture>) {
    let (store, results) = (&*fx.store, &*fx.results);
    let job = Uuid::new_v4();
    let total = MAX_ATTEMPTS_KEPT as u32 + 3;
    for attempt in 1..=total {
        run_attempt(store, job, attempt, Status::Retrying).await;
    }
    let kept = results.job_results(job).await.unwrap().unwrap();
    let attempts: Vec<u32> = kept.attempts.iter().map(|r| r.attempt).collect();
    assert_eq!(
        attempts,
        (4..=total).collect::<Vec<_>>(),
        "the newest, oldest first"
    );

    let mut jobs = Vec::new();
    for _ in 0..MAX_RUNS_KEPT + 2 {
        let job = Uuid::new_v4();
        run_attempt(store, job, 1, Status::Success).await;
        jobs.push(job);
    }
    let runs = results
        .user_runs(&user("alice"), &task("report"), MAX_RUNS_KEPT + 50)
        .await
        .unwrap();
    let ids: Vec<Uuid> = runs.iter().map(|r| r.result.job_id).collect();
    let newest: Vec<Uuid> = jobs.iter().rev().take(MAX_RUNS_KEPT).copied().collect();
    assert_eq!(ids, newest);
}

async fn job_results_expire_with_their_retention(fx: Arc<Fixture>) {
    let (store, results) = (&*fx.store, &*fx.results);
    let job = Uuid::new_v4();
    let brief = Duration::from_millis(100);
    let running = ExecutionClaim {
        result: Some(attempt_write(job, 1, Status::Running, brief)),
        ..claim(job, Uuid::new_v4(), false)
    };
    store.claim_execution(&running).await.unwrap();
    store
        .finish_execution(&ExecutionFinish {
            result: Some(attempt_write(job, 1, Status::Success, brief)),
            ..finish(&running, None)
        })
        .await
        .unwrap();
    assert!(results.job_results(job).await.unwrap().is_some());
    let deadline = Instant::now() + Duration::from_secs(5);
    while results.job_results(job).await.unwrap().is_some()
        || !results
            .user_runs(&user("alice"), &task("report"), 10)
            .await
            .unwrap()
            .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "results outlived their retention"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A queued first try of `job` (report, alice), due at `due`.
fn queued(job: Uuid, due: DateTime<Utc>) -> JobEnvelope {
    JobEnvelope::new(
        Job {
            id: job,
            task_type_id: task("report"),
            user_id: user("alice"),
            scheduled_at: due,
            execute_after: due,
            attempt: 1,
            priority: Priority::Normal,
            payload: Vec::new(),
            created_at: due,
        },
        JobMetadata {
            correlation_id: "conformance".to_owned(),
            source: JobSource::Scheduler,
            distribution_slot: None,
            origin: None,
        },
    )
}

async fn job_results_start_pending_and_a_republish_keeps_what_is_kept(fx: Arc<Fixture>) {
    let (store, results) = (&*fx.store, &*fx.results);
    let hour = Duration::from_secs(3600);
    let (job, other) = (Uuid::new_v4(), Uuid::new_v4());
    let due = at("2024-01-15T10:00:00Z");
    results
        .record_pending(&[queued(job, due), queued(other, due)], hour)
        .await
        .unwrap();
    let kept = results.job_results(job).await.unwrap().unwrap();
    assert_eq!(kept.latest.result.status, Status::Pending);
    assert_eq!(kept.latest.result.job_id, job);
    assert_eq!(kept.latest.result.next_attempt, Some(due));
    assert_eq!(kept.latest.result.started_at, zero_time());
    assert_eq!((kept.latest.attempt, kept.attempts.len()), (1, 0));
    // Not a run of the user's until it starts.
    assert!(
        results
            .user_runs(&user("alice"), &task("report"), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Claimed: running; published again (a crash before the trim): still running.
    let first = ExecutionClaim {
        result: Some(attempt_write(job, 1, Status::Running, hour)),
        ..claim(job, Uuid::new_v4(), false)
    };
    assert_eq!(store.claim_execution(&first).await.unwrap(), claimed(&[]));
    results
        .record_pending(&[queued(job, due)], hour)
        .await
        .unwrap();
    let kept = results.job_results(job).await.unwrap().unwrap();
    assert_eq!(kept.latest.result.status, Status::Running);

    // Finished: the result stays too; the other job is still pending.
    store
        .finish_execution(&ExecutionFinish {
            result: Some(attempt_write(job, 1, Status::Success, hour)),
            ..finish(&first, None)
        })
        .await
        .unwrap();
    results
        .record_pending(&[queued(job, due)], hour)
        .await
        .unwrap();
    let kept = results.job_results(job).await.unwrap().unwrap();
    assert_eq!(kept.latest.result.status, Status::Success);
    assert_eq!(statuses(&kept.attempts), vec![(1, Status::Success)]);
    let waiting = results.job_results(other).await.unwrap().unwrap();
    assert_eq!(waiting.latest.result.status, Status::Pending);

    // A pending record expires with its retention (Redis counts in seconds).
    let brief = Uuid::new_v4();
    results
        .record_pending(&[queued(brief, due)], Duration::from_secs(1))
        .await
        .unwrap();
    assert!(results.job_results(brief).await.unwrap().is_some());
    let deadline = Instant::now() + Duration::from_secs(5);
    while results.job_results(brief).await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "a pending record outlived its retention"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn period_tallies_count_each_final_outcome_and_first_start_once(fx: Arc<Fixture>) {
    let (store, results) = (&*fx.store, &*fx.results);
    let hour = Duration::from_secs(3600);
    let period = at("2024-01-15T09:00:00Z");
    // `attempt_write` starts every attempt at 10:00:00.
    let due = |late_ms: i64| PeriodOf {
        scheduled_at: period,
        execute_after: at("2024-01-15T10:00:00Z") - chrono::Duration::milliseconds(late_ms),
    };
    let tallied = |job: Uuid, attempt: u32, status: Status, late_ms: i64| ResultWrite {
        period: Some(due(late_ms)),
        ..attempt_write(job, attempt, status, hour)
    };
    let run = |job: Uuid, attempt: u32, status: Status, late_ms: i64| async move {
        let claim = ExecutionClaim {
            attempt,
            ..claim(job, Uuid::new_v4(), false)
        };
        assert_eq!(store.claim_execution(&claim).await.unwrap(), claimed(&[]));
        let finished = ExecutionFinish {
            result: Some(tallied(job, attempt, status, late_ms)),
            ..finish(&claim, None)
        };
        store.finish_execution(&finished).await.unwrap();
        finished
    };
    let empty = results.period_tally(&task("report"), period).await.unwrap();
    assert_eq!((empty.succeeded, empty.failed), (0, 0));
    assert_eq!(empty.lateness, [0; LATENESS_BUCKETS]);
    assert_eq!(empty.lateness_quantile(0.5), None);

    // A success 80 ms late; a finish sent twice counts once.
    let twice = run(Uuid::new_v4(), 1, Status::Success, 80).await;
    store.finish_execution(&twice).await.unwrap();
    // A job retried (its first try 3 s late), then failed for good: one
    // failure, one lateness sample.
    let failing = Uuid::new_v4();
    run(failing, 1, Status::Retrying, 3_000).await;
    run(failing, 2, Status::Failed, 0).await;
    // Far late: past every bound.
    run(Uuid::new_v4(), 1, Status::Success, 7_200_000).await;

    // Two fires skipped before this one, counted by its scheduler.
    results
        .add_missed(&task("report"), period, 2, hour)
        .await
        .unwrap();

    let tally: PeriodTally = results.period_tally(&task("report"), period).await.unwrap();
    assert_eq!((tally.succeeded, tally.failed, tally.missed), (2, 1, 2));
    let mut expected = [0; LATENESS_BUCKETS];
    expected[1] = 1; // <= 100 ms
    expected[6] = 1; // <= 5 s
    expected[LATENESS_BOUNDS_MS.len()] = 1; // past 1 h
    assert_eq!(tally.lateness, expected);
    assert_eq!(tally.lateness_quantile(0.3), Some(Some(100)));
    assert_eq!(tally.lateness_quantile(0.5), Some(Some(5_000)));
    assert_eq!(tally.lateness_quantile(0.99), Some(None));
    // Other periods and tasks are apart.
    let other = results
        .period_tally(&task("report"), at("2024-01-16T09:00:00Z"))
        .await
        .unwrap();
    assert_eq!((other.succeeded, other.failed), (0, 0));
    let digest = results.period_tally(&task("digest"), period).await.unwrap();
    assert_eq!(digest.succeeded, 0);
}

async fn replica_reports_are_listed_while_renewed(fx: Arc<Fixture>) {
    let replicas = &*fx.replicas;
    assert!(replicas.replicas().await.unwrap().is_empty());
    let report = |id: &str, name: &str, active: Option<usize>| ReplicaReport {
        id: id.to_owned(),
        name: name.to_owned(),
        role: if active.is_some() {
            "worker"
        } else {
            "scheduler"
        }
        .to_owned(),
        api: "127.0.0.1:8080".to_owned(),
        workers: active.map(|_| 50),
        active_jobs: active,
        rate_current: active.map(|_| 12),
        rate_max: Some(100),
        processed: 7,
        failed: 1,
        reported_at: Utc::now(),
    };
    let minute = Duration::from_secs(60);
    replicas
        .report_replica(&report("b", "host-b:2", Some(3)), minute)
        .await
        .unwrap();
    replicas
        .report_replica(&report("a", "host-a:1", None), minute)
        .await
        .unwrap();
    // A later report replaces the earlier one of the same id.
    replicas
        .report_replica(&report("b", "host-b:2", Some(5)), minute)
        .await
        .unwrap();
    let brief = Duration::from_millis(100);
    replicas
        .report_replica(&report("c", "host-c:3", Some(0)), brief)
        .await
        .unwrap();
    let listed = replicas.replicas().await.unwrap();
    let seen: Vec<(&str, Option<usize>)> = listed
        .iter()
        .map(|r| (r.name.as_str(), r.active_jobs))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("host-a:1", None),
            ("host-b:2", Some(5)),
            ("host-c:3", Some(0))
        ]
    );
    let expected = ReplicaReport {
        reported_at: listed[1].reported_at,
        ..report("b", "host-b:2", Some(5))
    };
    assert_eq!(listed[1], expected, "the report as written");
    // Not renewed: gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    while replicas.replicas().await.unwrap().len() != 2 {
        assert!(
            Instant::now() < deadline,
            "an expired report is still listed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
