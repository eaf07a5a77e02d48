//! Redis implementation of the state-store port.
//!
//! One [`ConnectionManager`] (a multiplexed connection that reconnects by
//! itself after Redis restarts or drops it) carries every call. The server
//! is one address or the master named by Redis Sentinels
//! ([`RedisTarget`]). Each port
//! method is one command, one Lua script or one pipeline, whatever the size
//! of its batch. Scripts live in `actors/lua/` and run by `EVALSHA`, loaded
//! again on `NOSCRIPT`.
//!
//! # Value encodings
//!
//! - `{p}:users:{user}:tasks`: HASH task id -> `1` (enabled) / `0`.
//! - `{p}:users:{user}:settings:{task}`: HASH, present only when the user
//!   has settings for the task: `custom_interval` = JSON of the
//!   `TaskInterval`, `param:<name>` = parameter value (one field per
//!   parameter), `last_modified` = RFC 3339 instant the settings were
//!   written.
//! - `{p}:users:modified:{bucket}`: HASH user -> epoch ms: the
//!   `UserPreference.last_modified` of the users of one bucket (see
//!   [`Keys::user_modified`]). Older releases kept it in a STRING
//!   `{p}:users:{user}:last_modified` (RFC 3339): read when the bucket has
//!   no entry for the user, deleted by the user's next write.
//! - `{p}:schedule:{task}`: STRING `<RFC 3339 instant>|fence=<n>`, e.g.
//!   `2024-01-15T00:00:00Z|fence=7` (a bare instant reads as fence 0).
//! - `{p}:schedule:zones:{task}`: HASH zone name -> the zone group's last
//!   fire handled, encoded as `{p}:schedule:{task}`; the field `@checked`
//!   holds, in the same encoding, the instant up to which the scheduler
//!   last evaluated the task's zone groups.
//! - `{p}:index:enabled:{task}`: ZSET of users enabled on the task's
//!   default interval, score = the user's spread key (an integer below
//!   2^52; 0 for entries written before the index was scored, which walk
//!   first), paged by rank from the cursor's (score, id) in
//!   `enabled_page.lua`; `{p}:index:custom:{task}`: ZSET user -> next
//!   fire (epoch ms) of users on a custom interval. A preference write
//!   updates the hash, the settings and both indexes in one `MULTI`.
//! - `{p}:ratelimit:*`: HASH `tokens`, `last_refill` (seconds, float).
//! - `{p}:metrics:duration:{task}`: ZSET member `<job id>:<duration ms>`,
//!   score = completion instant (epoch ms).

use std::{
    collections::{BTreeMap, HashSet},
    sync::LazyLock,
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use redis::{Pipeline, Script, Value, aio::ConnectionManager};
use uuid::Uuid;

use super::{
    Bucket, ClaimOutcome, ClaimStore, DueUser, ExecutionClaim, ExecutionFinish, Keys, LockLease,
    LockName, LockStore, MetricsBatch, MetricsStore, PreferenceStore, PreferenceWrite, RunList,
    ScheduleState, ScheduleStore, SlotWrite, SpreadCursor, StoreError, Throttle, TimezoneWrite,
    TokenStore, ZoneGroups,
    memory::{DEFAULT_METRICS_MAX_SAMPLES, DEFAULT_METRICS_RETENTION, from_millis},
    results::{Ended, MAX_ATTEMPTS_KEPT, MAX_RUNS_KEPT, PeriodTally, ResultWrite},
};
use crate::{
    domain::{Settings, TaskInterval, TaskTypeId, UserId, UserPreference},
    fanout::Run,
    health::Quarantine,
};

static TOKEN_BUCKET: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/token_bucket.lua")));
static LOCK_ACQUIRE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/lock_acquire.lua")));
static LOCK_RENEW: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/lock_renew.lua")));
static LOCK_RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/lock_release.lua")));
static RUN_CREATE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/run_create.lua")));
static RUN_UPDATE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/run_update.lua")));
static RECORD_FIRE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/record_fire.lua")));
static ADVANCE_CUSTOM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/advance_custom.lua")));
static DUE_CUSTOM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/due_custom.lua")));
static PREFERENCE_DELETE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/preference_delete.lua")));
static CLAIM_EXECUTION: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/claim_execution.lua")));
static FINISH_EXECUTION: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/finish_execution.lua")));
static RECORD_THROTTLE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/record_throttle.lua")));
static ENABLED_PAGE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/enabled_page.lua")));
static USER_TIMEZONE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/user_timezone.lua")));
static RECORD_ZONE_FIRES: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/record_zone_fires.lua")));
/// `zone_place.lua`, sent whole (`EVAL`) because it runs inside a `MULTI`,
/// where a `NOSCRIPT` could not be retried.
const ZONE_PLACE: &str = include_str!("../../lua/zone_place.lua");

/// Settings-hash field holding the custom interval (JSON).
const FIELD_CUSTOM_INTERVAL: &str = "custom_interval";
/// Settings-hash field holding the per-task time zone (IANA name).
const FIELD_TIMEZONE: &str = "timezone";
/// Field of the zone-groups schedule hash (`{p}:schedule:zones:{task}`)
/// holding [`ZoneGroups::checked`]; no IANA zone name starts with `@`.
const FIELD_ZONES_CHECKED: &str = "@checked";
/// Settings-hash field holding when the settings were written.
const FIELD_LAST_MODIFIED: &str = "last_modified";
/// Prefix of the settings-hash fields holding parameters.
const FIELD_PARAM_PREFIX: &str = "param:";
/// Entries sharing the cursor's spread key that a page reads inline; a
/// longer run (only entries of older releases, all at key 0) is bisected by
/// `enabled_page.lua`.
const EQUAL_KEYS_INLINE: usize = 16;

/// Tuning of a [`RedisStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// How long metrics keys live after their last write, and how far back
    /// duration samples are kept (default 30 days).
    pub metrics_retention: Duration,
    /// At most this many duration samples per task (default 10,000).
    pub metrics_max_samples: usize,
    /// Longest wait for an answer before a call fails (default 5 s).
    pub response_timeout: Duration,
    /// Longest wait for a (re)connection (default 2 s).
    pub connection_timeout: Duration,
    /// Attempts of a lost connection's reconnect, with a doubling delay,
    /// before calls see the error (`redis.max_retries`, default 3). A
    /// command is never sent twice: a script whose reply was lost may
    /// have run, so the caller decides (every actor retries its round).
    pub max_retries: usize,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            metrics_retention: DEFAULT_METRICS_RETENTION,
            metrics_max_samples: DEFAULT_METRICS_MAX_SAMPLES,
            response_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(2),
            max_retries: 3,
        }
    }
}

/// The Redis state store. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    keys: Keys,
    options: RedisOptions,
    /// Where unreadable index entries and settings are reported (they are
    /// skipped, never fail a whole page).
    quarantine: Quarantine,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("keys", &self.keys)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Where the Redis server is.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server, `redis://[:password@]host:port/db`.
    Url(String),
    /// The master that Redis Sentinels name, asked of them at connect.
    Sentinel {
        /// `(host, port)` of each Sentinel; the first that answers is used.
        sentinels: Vec<(String, u16)>,
        /// The master's name in the Sentinels' configuration.
        master_name: String,
        /// `AUTH` password of the master (empty for none).
        password: String,
        /// Database number on the master.
        db: i64,
    },
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisTarget::Url(_) => f.write_str("Url([redacted])"),
            RedisTarget::Sentinel {
                sentinels,
                master_name,
                db,
                ..
            } => f
                .debug_struct("Sentinel")
                .field("sentinels", sentinels)
                .field("master_name", master_name)
                .field("db", db)
                .finish_non_exhaustive(),
        }
    }
}

impl RedisTarget {
    /// The client of the server to use: the URL's, or the master's
    /// address as the first Sentinel that answers reports it.
    async fn client(&self) -> Result<redis::Client, StoreError> {
        match self {
            RedisTarget::Url(url) => Ok(redis::Client::open(url.as_str())?),
            RedisTarget::Sentinel {
                sentinels,
                master_name,
                password,
                db,
            } => {
                let addresses = sentinels
                    .iter()
                    .map(|(host, port)| redis::ConnectionAddr::Tcp(host.clone(), *port));
                let mut builder = redis::sentinel::SentinelClientBuilder::new(
                    addresses,
                    master_name,
                    redis::sentinel::SentinelServerType::Master,
                )?
                .set_client_to_redis_db(*db);
                if !password.is_empty() {
                    builder = builder.set_client_to_redis_password(password);
                }
                Ok(builder.build()?.async_get_client().await?)
            }
        }
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://[:password@]host:port/db`); the
    /// connection re-establishes itself whenever it is lost.
    pub async fn connect(
        url: &str,
        keys: Keys,
        options: RedisOptions,
    ) -> Result<RedisStore, StoreError> {
        RedisStore::connect_to(&RedisTarget::Url(url.to_owned()), keys, options).await
    }

    /// Connects to `target`. With Sentinels, the master is the one they
    /// name at connect; the connection then re-establishes itself to that
    /// address whenever it is lost (after a failover the service must be
    /// restarted to follow the new master: see `docs/configuration.md`).
    pub async fn connect_to(
        target: &RedisTarget,
        keys: Keys,
        options: RedisOptions,
    ) -> Result<RedisStore, StoreError> {
        let client = target.client().await?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(options.response_timeout))
            .set_connection_timeout(Some(options.connection_timeout))
            .set_number_of_retries(options.max_retries);
        let connection = ConnectionManager::new_with_config(client, config).await?;
        Ok(RedisStore {
            connection,
            keys,
            options,
            quarantine: Quarantine::default(),
        })
    }

    /// The store reporting the records it skips to `quarantine`.
    pub fn with_quarantine(mut self, quarantine: Quarantine) -> RedisStore {
        self.quarantine = quarantine;
        self
    }

    /// The key builder in use.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// One `PING` round trip (for `/health`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let _: String = redis::cmd("PING").query_async(&mut connection).await?;
        Ok(())
    }

    /// A handle on the shared connection, for callers that need raw
    /// commands (diagnostics, tests).
    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    async fn query<T: redis::FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, StoreError> {
        let mut connection = self.connection.clone();
        Ok(pipe.query_async(&mut connection).await?)
    }

    /// Appends a batch of preference writes, in which no (user, task) pair
    /// repeats, to an atomic pipeline as few multi-member commands: one
    /// `HSET` per user, one `HSET` per `last_modified` bucket, one
    /// multi-key `DEL` of the settings (and of the users' `last_modified`
    /// keys of older releases), one `HSET` per settings hash, and
    /// at most one `ZADD` and one `ZREM` per index. Inside `MULTI` this is
    /// the same as applying the writes one by one.
    fn push_distinct_writes(&self, pipe: &mut Pipeline, writes: &[PreferenceWrite]) {
        let keys = &self.keys;
        let mut tasks_by_user: BTreeMap<&UserId, Vec<(&str, &str)>> = BTreeMap::new();
        let mut modified_by_user: BTreeMap<&UserId, DateTime<Utc>> = BTreeMap::new();
        let mut stale_keys = Vec::with_capacity(writes.len());
        let mut settings_hashes = Vec::new();
        #[derive(Default)]
        struct IndexChanges<'a> {
            placed: Vec<&'a PreferenceWrite>,
            custom_add: Vec<(i64, &'a str)>,
            custom_rem: Vec<&'a str>,
        }
        let mut indexes: BTreeMap<&TaskTypeId, IndexChanges<'_>> = BTreeMap::new();
        for write in writes {
            let user = &write.user_id;
            let task = &write.task_type_id;
            tasks_by_user
                .entry(user)
                .or_default()
                .push((task.as_str(), if write.enabled { "1" } else { "0" }));
            modified_by_user.insert(user, write.modified_at);
            let settings_key = keys.user_settings(user, task);
            if let Some(settings) = &write.settings {
                let fields = settings_fields(settings, &rfc3339(write.modified_at));
                settings_hashes.push((settings_key.clone(), fields));
            }
            stale_keys.push(settings_key);
            let changes = indexes.entry(task).or_default();
            changes.placed.push(write);
            match (write.enabled, write.custom_next_fire) {
                (true, Some(next)) => {
                    changes
                        .custom_add
                        .push((next.timestamp_millis(), user.as_str()));
                }
                (true, None) | (false, _) => changes.custom_rem.push(user.as_str()),
            }
        }
        // First: the zone groups are left by the old per-task zone, read
        // from the settings hashes replaced below.
        for (task, changes) in &indexes {
            self.push_zone_place(pipe, task, &changes.placed);
        }
        for (user, fields) in &tasks_by_user {
            pipe.hset_multiple(keys.user_tasks(user), fields).ignore();
        }
        let mut modified_buckets: BTreeMap<String, Vec<(&str, i64)>> = BTreeMap::new();
        for (user, at) in &modified_by_user {
            modified_buckets
                .entry(keys.user_modified(user))
                .or_default()
                .push((user.as_str(), at.timestamp_millis()));
            // Moves the user off the layout of older releases.
            stale_keys.push(keys.legacy_user_modified(user));
        }
        for (bucket, fields) in &modified_buckets {
            pipe.hset_multiple(bucket, fields).ignore();
        }
        pipe.del(&stale_keys).ignore();
        for (key, fields) in &settings_hashes {
            pipe.hset_multiple(key, fields).ignore();
        }
        for (task, changes) in &indexes {
            let custom_index = keys.custom_index(task);
            if !changes.custom_rem.is_empty() {
                pipe.zrem(&custom_index, &changes.custom_rem).ignore();
            }
            if !changes.custom_add.is_empty() {
                pipe.zadd_multiple(&custom_index, &changes.custom_add)
                    .ignore();
            }
        }
    }

    /// One page of the enabled index in spread order: from the start, or
    /// strictly after `start` = (spread key, user); with `by_member`, the
    /// key is only a fallback and the cursor is placed by the user's entry
    /// (see `enabled_page.lua`). One round trip: a pipeline of plain range
    /// commands (the entries sharing the cursor's key, those with a greater
    /// key) answers unless the cursor sits in a run of more than
    /// [`EQUAL_KEYS_INLINE`] equal keys (entries of older releases, all at
    /// key 0) or must be placed among them; then the script does, once.
    /// A page of the enabled index in spread order (see
    /// `enabled_page.lua`). Entries that cannot be read (a member that is
    /// no user id, a score that is no spread key) are quarantined and
    /// skipped; the page is filled from the entries after them, so a short
    /// page still means the end of the index.
    async fn enabled_page(
        &self,
        key: &str,
        start: Option<(u64, &str)>,
        by_member: bool,
        limit: usize,
    ) -> Result<Vec<SpreadCursor>, StoreError> {
        let mut page = Vec::new();
        let mut cursor: Option<(u64, String)> =
            start.map(|(score, member)| (score, member.to_owned()));
        let mut by_member = by_member;
        loop {
            let wanted = limit - page.len();
            let raw = self
                .enabled_page_raw(
                    key,
                    cursor
                        .as_ref()
                        .map(|(score, member)| (*score, member.as_str())),
                    by_member,
                    wanted,
                )
                .await?;
            let mut last = None;
            for (member, score) in &raw {
                let entry = parse_spread_key(key, score)
                    .and_then(|spread| Ok((spread, parse_user(key, member)?)));
                match entry {
                    Ok((spread, user)) => page.push(SpreadCursor { key: spread, user }),
                    Err(err) => self
                        .quarantine
                        .add(&format!("{key} member {member:?}"), &err.to_string()),
                }
                last = Some((member, score));
            }
            if raw.len() < wanted || page.len() >= limit {
                return Ok(page);
            }
            let Some((member, score)) = last else {
                return Ok(page);
            };
            // Every entry after the page's good ones was bad: go on after
            // the last one read.
            let spread = match parse_spread_key(key, score) {
                Ok(spread) => spread,
                Err(_) => score.parse::<f64>().map_or(0, |s| s.max(0.0) as u64),
            };
            cursor = Some((spread, member.clone()));
            by_member = false;
        }
    }

    /// [`RedisStore::enabled_page`] before parsing: (member, score) pairs.
    async fn enabled_page_raw(
        &self,
        key: &str,
        start: Option<(u64, &str)>,
        by_member: bool,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let Some((score, member)) = start else {
            let mut connection = self.connection.clone();
            let flat: Vec<String> = redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(limit - 1)
                .arg("WITHSCORES")
                .query_async(&mut connection)
                .await?;
            return index_pairs(key, flat);
        };
        let mut pipe = redis::pipe();
        pipe.cmd("ZRANGE")
            .arg(key)
            .arg(score)
            .arg(score)
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(EQUAL_KEYS_INLINE + 1)
            .arg("WITHSCORES");
        pipe.cmd("ZRANGE")
            .arg(key)
            .arg(format!("({score}"))
            .arg("+inf")
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .arg("WITHSCORES");
        pipe.zscore(key, member).zcount(key, 0, 0);
        let (equal, greater, stored, legacy): (Vec<String>, Vec<String>, Option<f64>, u64) =
            self.query(&pipe).await?;
        let placed = !by_member
            || match stored {
                Some(stored) => stored == score as f64 && score != 0,
                None => legacy == 0,
            };
        if placed && equal.len() <= 2 * EQUAL_KEYS_INLINE {
            let mut page: Vec<(String, String)> = index_pairs(key, equal)?
                .into_iter()
                .filter(|(user, _)| user.as_bytes() > member.as_bytes())
                .collect();
            page.extend(index_pairs(key, greater)?);
            page.truncate(limit);
            return Ok(page);
        }
        let mut connection = self.connection.clone();
        let flat: Vec<String> = ENABLED_PAGE
            .key(key)
            .arg(score.to_string())
            .arg(member)
            .arg(limit)
            .arg(if by_member { "1" } else { "0" })
            .invoke_async(&mut connection)
            .await?;
        index_pairs(key, flat)
    }

    /// Appends `zone_place.lua` for `writes` (all of `task`) to an atomic
    /// pipeline: each user leaves the groups and indexes of its old place
    /// and, when on the task's own interval, enters the group of its zone.
    fn push_zone_place(&self, pipe: &mut Pipeline, task: &TaskTypeId, writes: &[&PreferenceWrite]) {
        if writes.is_empty() {
            return;
        }
        let keys = &self.keys;
        let cmd = pipe.cmd("EVAL").arg(ZONE_PLACE).arg(2 + 2 * writes.len());
        cmd.arg(keys.enabled_index(task)).arg(keys.zone_set(task));
        for write in writes {
            cmd.arg(keys.user_settings(&write.user_id, task))
                .arg(keys.user_timezone(&write.user_id));
        }
        cmd.arg(keys.zone_index(task, "{Z}"));
        for write in writes {
            let own = write.enabled && write.custom_next_fire.is_none();
            let zone = write
                .settings
                .as_ref()
                .and_then(|settings| settings.timezone)
                .map_or("", |zone| zone.name());
            cmd.arg(write.user_id.as_str())
                .arg(crate::slot::spread_key(task, &write.user_id))
                .arg(if own { "1" } else { "0" })
                .arg(zone);
        }
        cmd.ignore();
    }

    /// Appends the commands of one preference write to an atomic pipeline.
    fn push_preference_write(&self, pipe: &mut Pipeline, write: &PreferenceWrite) {
        let keys = &self.keys;
        let user = &write.user_id;
        let task = &write.task_type_id;
        let modified = rfc3339(write.modified_at);
        self.push_zone_place(pipe, task, &[write]);
        pipe.hset(
            keys.user_tasks(user),
            task.as_str(),
            if write.enabled { "1" } else { "0" },
        )
        .ignore();
        let settings_key = keys.user_settings(user, task);
        pipe.del(&[&settings_key, &keys.legacy_user_modified(user)])
            .ignore();
        if let Some(settings) = &write.settings {
            pipe.hset_multiple(&settings_key, &settings_fields(settings, &modified))
                .ignore();
        }
        pipe.hset(
            keys.user_modified(user),
            user.as_str(),
            write.modified_at.timestamp_millis(),
        )
        .ignore();
        let custom_index = keys.custom_index(task);
        match (write.enabled, write.custom_next_fire) {
            (true, Some(next)) => {
                pipe.zadd(&custom_index, user.as_str(), next.timestamp_millis())
                    .ignore();
            }
            (true, None) | (false, _) => {
                pipe.zrem(&custom_index, user.as_str()).ignore();
            }
        }
    }

    /// `EVALSHA claim_execution.lua` for one claim.
    fn claim_command(&self, claim: &ExecutionClaim) -> redis::Cmd {
        let keys = &self.keys;
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(CLAIM_EXECUTION.get_hash())
            .arg(9)
            .arg(keys.job_done(claim.job_id))
            .arg(keys.job_claim(&claim.task_type_id, claim.job_id))
            .arg(keys.running(&claim.task_type_id, &claim.user_id))
            .arg(keys.user_settings(&claim.user_id, &claim.task_type_id))
            .arg(keys.task_pause(&claim.task_type_id))
            .arg(keys.job_next(claim.job_id))
            .arg(keys.user_tasks(&claim.user_id))
            .arg(keys.job_result(claim.job_id))
            .arg(keys.user_runs(&claim.user_id, &claim.task_type_id))
            .arg(claim.execution.to_string())
            .arg(millis(claim.job_ttl).max(1))
            .arg(claim.job_id.to_string())
            .arg(claim.run_ttl.map_or(0, |ttl| millis(ttl).max(1)))
            .arg(claim.attempt)
            .arg(claim.execute_after_ms)
            .arg(claim.task_type_id.as_str())
            .arg(if claim.require_enabled { "1" } else { "0" })
            .arg(
                claim
                    .result
                    .as_ref()
                    .map(ResultWrite::json)
                    .unwrap_or_default(),
            )
            .arg(
                claim
                    .result
                    .as_ref()
                    .map_or(1, |write| millis(write.retention).max(1)),
            )
            .arg(MAX_RUNS_KEPT);
        cmd
    }

    /// Reads one reply of `claim_execution.lua`.
    fn claim_outcome(
        &self,
        claim: &ExecutionClaim,
        reply: Vec<String>,
    ) -> Result<ClaimOutcome, StoreError> {
        let mut reply = reply.into_iter();
        match reply.next().as_deref() {
            Some("succeeded") => Ok(ClaimOutcome::AlreadySucceeded),
            Some("job_busy") => Ok(ClaimOutcome::JobBusy),
            Some("stale") => Ok(ClaimOutcome::Stale),
            Some("disabled") => Ok(ClaimOutcome::Disabled),
            Some("paused") => {
                let ms = reply.next().and_then(|ms| ms.parse::<u64>().ok());
                match ms {
                    Some(ms) => Ok(ClaimOutcome::Paused(Duration::from_millis(ms))),
                    None => Err(corrupt(
                        &self.keys.task_pause(&claim.task_type_id),
                        "claim_execution answered a pause without its length".to_owned(),
                    )),
                }
            }
            Some("user_busy") => Ok(ClaimOutcome::UserBusy),
            Some("claimed") => {
                let mut parameters = BTreeMap::new();
                while let (Some(name), Some(value)) = (reply.next(), reply.next()) {
                    parameters.insert(name, value);
                }
                Ok(ClaimOutcome::Claimed { parameters })
            }
            other => Err(corrupt(
                &self.keys.job_claim(&claim.task_type_id, claim.job_id),
                format!("claim_execution answered {other:?}"),
            )),
        }
    }

    /// `EVALSHA finish_execution.lua` for one finish.
    fn finish_command(&self, finish: &ExecutionFinish) -> redis::Cmd {
        let keys = &self.keys;
        let run_holder = if finish.run_claimed {
            finish.job_id.to_string()
        } else {
            String::new()
        };
        // The period's tally, for a result that has a period (the key
        // passed otherwise is never written).
        let tallied = finish
            .result
            .as_ref()
            .filter(|write| write.period.is_some());
        let (outcome, late) = tallied.map_or((None, None), PeriodTally::fields);
        let period = tallied
            .and_then(|write| write.period)
            .map_or(DateTime::<Utc>::UNIX_EPOCH, |period| period.scheduled_at);
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(FINISH_EXECUTION.get_hash())
            .arg(7)
            .arg(keys.job_done(finish.job_id))
            .arg(keys.job_claim(&finish.task_type_id, finish.job_id))
            .arg(keys.running(&finish.task_type_id, &finish.user_id))
            .arg(keys.job_next(finish.job_id))
            .arg(keys.job_result(finish.job_id))
            .arg(keys.job_attempts(finish.job_id))
            .arg(keys.period_tally(&finish.task_type_id, period))
            .arg(finish.success_ttl.map_or(0, |ttl| millis(ttl).max(1)))
            .arg(finish.execution.to_string())
            .arg(run_holder)
            .arg(finish.next.map_or(0, |next| next.attempt))
            .arg(finish.next.map_or(0, |next| next.eligible_ms))
            .arg(finish.next.map_or(1, |next| millis(next.ttl).max(1)))
            .arg(
                finish
                    .result
                    .as_ref()
                    .map(ResultWrite::json)
                    .unwrap_or_default(),
            )
            .arg(
                finish
                    .result
                    .as_ref()
                    .map_or(1, |write| millis(write.retention).max(1)),
            )
            .arg(MAX_ATTEMPTS_KEPT)
            .arg(outcome.map(Ended::field).unwrap_or_default())
            .arg(
                late.map(|bucket| format!("late:{bucket}"))
                    .unwrap_or_default(),
            );
        cmd
    }

    /// Runs a pipeline of `EVALSHA`s of `script`; on `NOSCRIPT` (a Redis
    /// that restarted or flushed its script cache) loads the script and
    /// runs the pipeline once more (every script it holds is idempotent).
    pub(super) async fn query_scripts<T: redis::FromRedisValue>(
        &self,
        pipe: &Pipeline,
        script: &Script,
    ) -> Result<T, StoreError> {
        let mut connection = self.connection.clone();
        match pipe.query_async(&mut connection).await {
            Err(err)
                if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                script.load_async(&mut connection).await?;
                Ok(pipe.query_async(&mut connection).await?)
            }
            other => Ok(other?),
        }
    }
}

/// An instant as RFC 3339 in UTC, exact to the nanosecond.
impl RedisStore {
    /// `run_update.lua`: the fenced write of a run and its slot lists.
    async fn update_run(
        &self,
        run: &Run,
        lists: &[SlotWrite],
        ttl: Duration,
        fence: u64,
        op: &str,
    ) -> Result<bool, StoreError> {
        let task = &run.task_type_id;
        let mut invocation = RUN_UPDATE.prepare_invoke();
        invocation
            .key(self.keys.fanout(task))
            .key(self.keys.lock_fence(&LockName::Schedule(task.clone())))
            .key(self.keys.fanout_last(task))
            .arg(fence)
            .arg(run.id())
            .arg(encode_run(run)?)
            .arg(op)
            .arg(millis(ttl).max(1));
        for list in lists
            .iter()
            .filter(|list| list.trim > 0 || !list.append.is_empty())
        {
            invocation
                .key(self.keys.distribution(task, run.id(), list.slot))
                .arg(list.trim)
                .arg(list.append.len());
            for user in &list.append {
                invocation.arg(user.as_str());
            }
        }
        let mut connection = self.connection.clone();
        let written: i64 = invocation.invoke_async(&mut connection).await?;
        Ok(written == 1)
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(err: redis::RedisError) -> Self {
        StoreError::Backend {
            backend: "redis",
            detail: err.to_string(),
        }
    }
}

fn encode_run(run: &Run) -> Result<String, StoreError> {
    serde_json::to_string(run).map_err(|err| StoreError::Corrupt {
        key: format!("run {}", run.id()),
        reason: err.to_string(),
    })
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn corrupt(key: &str, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// A duration in whole milliseconds, saturating, as Redis expiries take it.
pub(super) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The settings hash of `settings` (see the module docs).
fn settings_fields(settings: &Settings, modified: &str) -> Vec<(String, String)> {
    let mut fields = vec![(FIELD_LAST_MODIFIED.to_owned(), modified.to_owned())];
    if let Some(interval) = &settings.custom_interval {
        // A TaskInterval always serialises.
        let json = serde_json::to_string(interval).unwrap_or_default();
        fields.push((FIELD_CUSTOM_INTERVAL.to_owned(), json));
    }
    if let Some(zone) = settings.timezone {
        fields.push((FIELD_TIMEZONE.to_owned(), zone.name().to_owned()));
    }
    for (name, value) in &settings.parameters {
        fields.push((format!("{FIELD_PARAM_PREFIX}{name}"), value.clone()));
    }
    fields
}

/// Reads a settings hash back.
fn parse_settings(key: &str, fields: Vec<(String, String)>) -> Result<Settings, StoreError> {
    let mut settings = Settings::default();
    for (field, value) in fields {
        if field == FIELD_CUSTOM_INTERVAL {
            let interval: TaskInterval = serde_json::from_str(&value)
                .map_err(|err| corrupt(key, format!("custom_interval: {err}")))?;
            settings.custom_interval = Some(interval);
        } else if field == FIELD_TIMEZONE {
            settings.timezone = Some(parse_zone(key, &value)?);
        } else if let Some(name) = field.strip_prefix(FIELD_PARAM_PREFIX) {
            settings.parameters.insert(name.to_owned(), value);
        }
    }
    Ok(settings)
}

/// `<RFC 3339>|fence=<n>`.
fn encode_schedule_state(last_fired: DateTime<Utc>, fence: u64) -> String {
    format!("{}|fence={fence}", rfc3339(last_fired))
}

fn decode_schedule_state(key: &str, value: &str) -> Result<ScheduleState, StoreError> {
    let (instant, fence) = match value.split_once("|fence=") {
        Some((instant, fence)) => {
            let fence = fence
                .parse()
                .map_err(|err| corrupt(key, format!("fence {fence:?}: {err}")))?;
            (instant, fence)
        }
        None => (value, 0),
    };
    let last_fired = DateTime::parse_from_rfc3339(instant)
        .map_err(|err| corrupt(key, format!("instant {instant:?}: {err}")))?
        .with_timezone(&Utc);
    Ok(ScheduleState { last_fired, fence })
}

fn parse_zone(key: &str, value: &str) -> Result<Tz, StoreError> {
    value
        .parse::<Tz>()
        .map_err(|err| corrupt(key, format!("time zone {value:?}: {err}")))
}

fn parse_user(key: &str, value: &str) -> Result<UserId, StoreError> {
    UserId::parse(value).map_err(|err| corrupt(key, format!("user id {value:?}: {err}")))
}

/// Index entries (`member, score, ...` as `ZRANGE ... WITHSCORES` answers)
/// as (member, score) pairs.
fn index_pairs(key: &str, flat: Vec<String>) -> Result<Vec<(String, String)>, StoreError> {
    if !flat.len().is_multiple_of(2) {
        return Err(corrupt(key, "an index entry without its score"));
    }
    let mut pairs = Vec::with_capacity(flat.len() / 2);
    let mut entries = flat.into_iter();
    while let (Some(member), Some(score)) = (entries.next(), entries.next()) {
        pairs.push((member, score));
    }
    Ok(pairs)
}

/// An enabled-index score back to the spread key it holds (an integer
/// below 2^52, which Redis may print as a double).
fn parse_spread_key(key: &str, score: &str) -> Result<u64, StoreError> {
    if let Ok(value) = score.parse::<u64>() {
        return Ok(value);
    }
    match score.parse::<f64>() {
        Ok(value) if value >= 0.0 && value.fract() == 0.0 && value < (1u64 << 53) as f64 => {
            Ok(value as u64)
        }
        _ => Err(corrupt(key, format!("spread key {score:?}"))),
    }
}

fn parse_instant(key: &str, value: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(value)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|err| corrupt(key, format!("instant {value:?}: {err}")))
}

#[async_trait]
impl PreferenceStore for RedisStore {
    async fn write_preferences(&self, writes: &[PreferenceWrite]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut pairs = HashSet::with_capacity(writes.len());
        let distinct = writes
            .iter()
            .all(|write| pairs.insert((&write.user_id, &write.task_type_id)));
        if distinct {
            self.push_distinct_writes(&mut pipe, writes);
        } else {
            for write in writes {
                self.push_preference_write(&mut pipe, write);
            }
        }
        self.query::<()>(&pipe).await
    }

    async fn write_user_timezones(&self, writes: &[TimezoneWrite]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let keys = &self.keys;
        let mut pipe = redis::pipe();
        for write in writes {
            let user = &write.user_id;
            pipe.cmd("EVALSHA")
                .arg(USER_TIMEZONE.get_hash())
                .arg(2)
                .arg(keys.user_timezone(user))
                .arg(keys.user_tasks(user))
                .arg(user.as_str())
                .arg(write.timezone.map_or("", |zone| zone.name()))
                .arg(keys.user_settings_template(user))
                .arg(keys.enabled_index_template())
                .arg(keys.zone_index_template())
                .arg(keys.zone_set_template())
                .ignore();
        }
        self.query_scripts::<()>(&pipe, &USER_TIMEZONE).await
    }

    async fn user_timezone(&self, user: &UserId) -> Result<Option<Tz>, StoreError> {
        let key = self.keys.user_timezone(user);
        let mut connection = self.connection.clone();
        let zone: Option<String> = redis::cmd("HGET")
            .arg(&key)
            .arg(user.as_str())
            .query_async(&mut connection)
            .await?;
        zone.map(|zone| parse_zone(&key, &zone)).transpose()
    }

    async fn zone_sizes(&self, task: &TaskTypeId, zones: &[Tz]) -> Result<Vec<u64>, StoreError> {
        if zones.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for zone in zones {
            pipe.zcard(self.keys.zone_index(task, zone.name()));
        }
        self.query(&pipe).await
    }

    async fn delete_preference(
        &self,
        user: &UserId,
        task: &TaskTypeId,
    ) -> Result<bool, StoreError> {
        let keys = &self.keys;
        let mut connection = self.connection.clone();
        let removed: i64 = PREFERENCE_DELETE
            .key(keys.user_tasks(user))
            .key(keys.user_settings(user, task))
            .key(keys.enabled_index(task))
            .key(keys.custom_index(task))
            .key(keys.user_modified(user))
            .key(keys.legacy_user_modified(user))
            .key(keys.user_timezone(user))
            .arg(task.as_str())
            .arg(user.as_str())
            .arg(keys.zone_index(task, "{Z}"))
            .invoke_async(&mut connection)
            .await?;
        Ok(removed == 1)
    }

    async fn preferences(&self, user: &UserId) -> Result<Option<UserPreference>, StoreError> {
        let keys = &self.keys;
        let tasks_key = keys.user_tasks(user);
        let modified_key = keys.user_modified(user);
        let legacy_key = keys.legacy_user_modified(user);
        let zone_key = keys.user_timezone(user);
        let mut pipe = redis::pipe();
        pipe.hgetall(&tasks_key)
            .hget(&modified_key, user.as_str())
            .get(&legacy_key)
            .hget(&zone_key, user.as_str());
        #[allow(clippy::type_complexity)]
        let (tasks, modified, legacy, zone): (
            Vec<(String, String)>,
            Option<String>,
            Option<String>,
            Option<String>,
        ) = self.query(&pipe).await?;
        if tasks.is_empty() {
            return Ok(None);
        }
        let mut enabled_tasks = BTreeMap::new();
        for (task, flag) in tasks {
            let task = TaskTypeId::parse(task.as_str())
                .map_err(|err| corrupt(&tasks_key, format!("task id {task:?}: {err}")))?;
            enabled_tasks.insert(task, flag == "1");
        }
        let mut pipe = redis::pipe();
        for task in enabled_tasks.keys() {
            pipe.hgetall(keys.user_settings(user, task));
        }
        let hashes: Vec<Vec<(String, String)>> = self.query(&pipe).await?;
        let mut task_settings = BTreeMap::new();
        for (task, fields) in enabled_tasks.keys().zip(hashes) {
            if fields.is_empty() {
                continue;
            }
            let key = keys.user_settings(user, task);
            task_settings.insert(task.clone(), parse_settings(&key, fields)?);
        }
        let last_modified = match (modified, legacy) {
            (Some(value), _) => {
                let ms: i64 = value
                    .parse()
                    .map_err(|err| corrupt(&modified_key, format!("{user}: {value:?}: {err}")))?;
                from_millis(ms)
            }
            (None, Some(value)) => parse_instant(&legacy_key, &value)?,
            (None, None) => DateTime::<Utc>::UNIX_EPOCH,
        };
        Ok(Some(UserPreference {
            user_id: user.clone(),
            enabled_tasks,
            task_settings,
            last_modified,
            timezone: zone.map(|zone| parse_zone(&zone_key, &zone)).transpose()?,
        }))
    }

    async fn enabled_user_count(&self, task: &TaskTypeId) -> Result<u64, StoreError> {
        let mut pipe = redis::pipe();
        pipe.zcard(self.keys.enabled_index(task))
            .zcard(self.keys.custom_index(task));
        pipe.smembers(self.keys.zone_set(task));
        let (default, custom, zones): (u64, u64, Vec<String>) = self.query(&pipe).await?;
        let mut pipe = redis::pipe();
        for zone in &zones {
            pipe.zcard(self.keys.zone_index(task, zone));
        }
        let zoned: Vec<u64> = if zones.is_empty() {
            Vec::new()
        } else {
            self.query(&pipe).await?
        };
        Ok(default + custom + zoned.iter().sum::<u64>())
    }

    async fn index_sizes(&self, task: &TaskTypeId) -> Result<(u64, u64), StoreError> {
        let mut pipe = redis::pipe();
        pipe.zcard(self.keys.enabled_index(task))
            .zcard(self.keys.custom_index(task));
        self.query(&pipe).await
    }

    async fn spread_rank(
        &self,
        task: &TaskTypeId,
        zone: Option<Tz>,
        user: &UserId,
    ) -> Result<Option<u64>, StoreError> {
        let key = match zone {
            Some(zone) => self.keys.zone_index(task, zone.name()),
            None => self.keys.enabled_index(task),
        };
        let mut connection = self.connection.clone();
        let rank: Option<u64> = redis::cmd("ZRANK")
            .arg(&key)
            .arg(user.as_str())
            .query_async(&mut connection)
            .await?;
        Ok(rank)
    }

    async fn custom_intervals_page(
        &self,
        task: &TaskTypeId,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<(UserId, Option<TaskInterval>)>, StoreError> {
        let users = self.custom_users_page(task, offset, limit).await?;
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for user in &users {
            pipe.hget(self.keys.user_settings(user, task), FIELD_CUSTOM_INTERVAL);
        }
        let intervals: Vec<Option<String>> = self.query(&pipe).await?;
        Ok(users
            .into_iter()
            .zip(intervals)
            .map(|(user, json)| {
                let interval = json.and_then(|json| serde_json::from_str(&json).ok());
                (user, interval)
            })
            .collect())
    }
}

#[async_trait]
impl LockStore for RedisStore {
    async fn acquire_lock(
        &self,
        lock: &LockName,
        ttl: Duration,
    ) -> Result<Option<LockLease>, StoreError> {
        let token = Uuid::new_v4().to_string();
        let mut connection = self.connection.clone();
        let fence: Option<u64> = LOCK_ACQUIRE
            .key(self.keys.lock(lock))
            .key(self.keys.lock_fence(lock))
            .arg(&token)
            .arg(millis(ttl).max(1))
            .invoke_async(&mut connection)
            .await?;
        Ok(fence.map(|fence| LockLease { token, fence }))
    }

    async fn renew_lock(
        &self,
        lock: &LockName,
        lease: &LockLease,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut connection = self.connection.clone();
        let renewed: i64 = LOCK_RENEW
            .key(self.keys.lock(lock))
            .arg(&lease.token)
            .arg(millis(ttl).max(1))
            .invoke_async(&mut connection)
            .await?;
        Ok(renewed == 1)
    }

    async fn release_lock(&self, lock: &LockName, lease: &LockLease) -> Result<bool, StoreError> {
        let mut connection = self.connection.clone();
        let released: i64 = LOCK_RELEASE
            .key(self.keys.lock(lock))
            .arg(&lease.token)
            .invoke_async(&mut connection)
            .await?;
        Ok(released == 1)
    }
}

#[async_trait]
impl ScheduleStore for RedisStore {
    async fn zone_groups(&self, task: &TaskTypeId) -> Result<ZoneGroups, StoreError> {
        let set_key = self.keys.zone_set(task);
        let schedule_key = self.keys.zone_schedule(task);
        let mut pipe = redis::pipe();
        pipe.smembers(&set_key).hgetall(&schedule_key);
        let (mut names, states): (Vec<String>, BTreeMap<String, String>) =
            self.query(&pipe).await?;
        names.sort_unstable();
        let mut groups = ZoneGroups::default();
        if let Some(value) = states.get(FIELD_ZONES_CHECKED) {
            match decode_schedule_state(&schedule_key, value) {
                Ok(state) => groups.checked = Some(state.last_fired),
                Err(err) => groups
                    .unreadable
                    .push(format!("{schedule_key} {FIELD_ZONES_CHECKED}: {err}")),
            }
        }
        for name in names {
            let Ok(zone) = name.parse::<Tz>() else {
                groups.unreadable.push(format!("{set_key} member {name:?}"));
                continue;
            };
            let state = match states.get(&name) {
                None => None,
                Some(value) => match decode_schedule_state(&schedule_key, value) {
                    Ok(state) => Some(state),
                    Err(err) => {
                        groups
                            .unreadable
                            .push(format!("{schedule_key} {name}: {err}"));
                        None
                    }
                },
            };
            groups.groups.push((zone, state));
        }
        Ok(groups)
    }

    async fn zone_users_in_spread_order(
        &self,
        task: &TaskTypeId,
        zone: Tz,
        after: Option<&SpreadCursor>,
        limit: usize,
    ) -> Result<Vec<SpreadCursor>, StoreError> {
        let start = after.map(|cursor| (cursor.key, cursor.user.as_str()));
        self.enabled_page(
            &self.keys.zone_index(task, zone.name()),
            start,
            false,
            limit,
        )
        .await
    }

    async fn record_zone_fires(
        &self,
        task: &TaskTypeId,
        fires: &[(Tz, DateTime<Utc>)],
        checked: DateTime<Utc>,
        lease: &LockLease,
    ) -> Result<bool, StoreError> {
        let mut invocation = RECORD_ZONE_FIRES.prepare_invoke();
        invocation
            .key(self.keys.zone_schedule(task))
            .key(self.keys.lock_fence(&LockName::Schedule(task.clone())))
            .arg(lease.fence)
            .arg(FIELD_ZONES_CHECKED)
            .arg(encode_schedule_state(checked, lease.fence));
        for (zone, at) in fires {
            invocation
                .arg(zone.name())
                .arg(encode_schedule_state(*at, lease.fence));
        }
        let mut connection = self.connection.clone();
        let written: i64 = invocation.invoke_async(&mut connection).await?;
        Ok(written == 1)
    }

    async fn enabled_users_in_spread_order(
        &self,
        task: &TaskTypeId,
        after: Option<&SpreadCursor>,
        limit: usize,
    ) -> Result<Vec<SpreadCursor>, StoreError> {
        let start = after.map(|cursor| (cursor.key, cursor.user.as_str()));
        self.enabled_page(&self.keys.enabled_index(task), start, false, limit)
            .await
    }

    async fn enabled_users_after(
        &self,
        task: &TaskTypeId,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Vec<UserId>, StoreError> {
        let start = after.map(|user| (crate::slot::spread_key(task, user), user.as_str()));
        let page = self
            .enabled_page(&self.keys.enabled_index(task), start, true, limit)
            .await?;
        Ok(page.into_iter().map(|cursor| cursor.user).collect())
    }

    async fn due_custom_users(
        &self,
        task: &TaskTypeId,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DueUser>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let key = self.keys.custom_index(task);
        let mut connection = self.connection.clone();
        // The due members first, then their settings in one script that
        // is handed every key it reads (a member that is no user id has
        // no settings key: it is parked below).
        let listed: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(now.timestamp_millis())
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut connection)
            .await?;
        if listed.is_empty() {
            return Ok(Vec::new());
        }
        let mut parked = Vec::new();
        let mut invocation = DUE_CUSTOM.prepare_invoke();
        invocation.key(&key).arg(now.timestamp_millis());
        for member in listed {
            match parse_user(&key, &member) {
                Ok(user) => {
                    invocation
                        .key(self.keys.user_settings(&user, task))
                        .arg(member);
                }
                Err(err) => {
                    // Never a user: parked past every fire, so it stops
                    // taking a place in each page of due users.
                    self.quarantine
                        .add(&format!("{key} member {member:?}"), &err.to_string());
                    parked.push(member);
                }
            }
        }
        let flat: Vec<Value> = invocation.invoke_async(&mut connection).await?;
        let mut due = Vec::with_capacity(flat.len() / 3);
        for entry in flat.chunks(3) {
            let [user, score, fields] = entry else {
                return Err(corrupt(&key, "due_custom.lua returned a partial entry"));
            };
            let user: String =
                redis::from_redis_value_ref(user).map_err(redis::RedisError::from)?;
            let score: String =
                redis::from_redis_value_ref(score).map_err(redis::RedisError::from)?;
            let fields: Vec<(String, String)> =
                redis::from_redis_value_ref(fields).map_err(redis::RedisError::from)?;
            let user = match parse_user(&key, &user) {
                Ok(parsed) => parsed,
                Err(err) => {
                    // Never a user: parked past every fire, so it stops
                    // taking a place in each page of due users.
                    self.quarantine
                        .add(&format!("{key} member {user:?}"), &err.to_string());
                    parked.push(user);
                    continue;
                }
            };
            let ms: f64 = score
                .parse()
                .map_err(|err| corrupt(&key, format!("score {score:?}: {err}")))?;
            let settings_key = self.keys.user_settings(&user, task);
            let settings = match parse_settings(&settings_key, fields.clone()) {
                Ok(settings) => settings,
                Err(err) => {
                    // Kept without its interval: the scheduler moves such
                    // an entry on instead of running it.
                    self.quarantine
                        .add(&format!("{settings_key} custom_interval"), &err.to_string());
                    let parameters = fields
                        .into_iter()
                        .filter(|(field, _)| field != FIELD_CUSTOM_INTERVAL)
                        .collect();
                    parse_settings(&settings_key, parameters)?
                }
            };
            due.push(DueUser {
                settings,
                user_id: user,
                scheduled_at: from_millis(ms as i64),
            });
        }
        if !parked.is_empty() {
            let mut pipe = redis::pipe();
            for member in &parked {
                pipe.cmd("ZADD")
                    .arg(&key)
                    .arg("XX")
                    .arg("+inf")
                    .arg(member)
                    .ignore();
            }
            self.query::<()>(&pipe).await?;
        }
        Ok(due)
    }

    async fn advance_custom_users(
        &self,
        task: &TaskTypeId,
        moves: &[(UserId, DateTime<Utc>, DateTime<Utc>)],
        fence: u64,
    ) -> Result<bool, StoreError> {
        if moves.is_empty() {
            return Ok(true);
        }
        let mut invocation = ADVANCE_CUSTOM.prepare_invoke();
        invocation
            .key(self.keys.custom_index(task))
            .key(self.keys.lock_fence(&LockName::Schedule(task.clone())))
            .arg(fence);
        for (user, from, to) in moves {
            invocation
                .arg(user.as_str())
                .arg(from.timestamp_millis())
                .arg(to.timestamp_millis());
        }
        let mut connection = self.connection.clone();
        let moved: i64 = invocation.invoke_async(&mut connection).await?;
        Ok(moved >= 0)
    }

    async fn schedule_state(&self, task: &TaskTypeId) -> Result<Option<ScheduleState>, StoreError> {
        let key = self.keys.schedule(task);
        let mut connection = self.connection.clone();
        let value: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut connection)
            .await?;
        value
            .map(|value| decode_schedule_state(&key, &value))
            .transpose()
    }

    async fn record_fire(
        &self,
        task: &TaskTypeId,
        last_fired: DateTime<Utc>,
        lease: &LockLease,
    ) -> Result<bool, StoreError> {
        let mut connection = self.connection.clone();
        let written: i64 = RECORD_FIRE
            .key(self.keys.schedule(task))
            .key(self.keys.lock_fence(&LockName::Schedule(task.clone())))
            .arg(encode_schedule_state(last_fired, lease.fence))
            .arg(lease.fence)
            .invoke_async(&mut connection)
            .await?;
        Ok(written == 1)
    }

    async fn runs(&self, task: &TaskTypeId) -> Result<RunList, StoreError> {
        let key = self.keys.fanout(task);
        let mut connection = self.connection.clone();
        let fields: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut connection)
            .await?;
        let mut list = RunList::default();
        for (field, value) in fields {
            match serde_json::from_str::<Run>(&value) {
                Ok(run) if run.id().to_string() == field => list.runs.push(run),
                _ => list.unreadable.push(field),
            }
        }
        list.runs.sort_by_key(Run::id);
        Ok(list)
    }

    async fn last_run(&self, task: &TaskTypeId) -> Result<Option<Run>, StoreError> {
        let key = self.keys.fanout_last(task);
        let mut connection = self.connection.clone();
        let value: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut connection)
            .await?;
        value
            .map(|value| serde_json::from_str(&value).map_err(|err| corrupt(&key, err.to_string())))
            .transpose()
    }

    async fn create_run(
        &self,
        run: &Run,
        lists: &[SlotWrite],
        ttl: Duration,
        fence: Option<u64>,
    ) -> Result<bool, StoreError> {
        let task = &run.task_type_id;
        let mut invocation = RUN_CREATE.prepare_invoke();
        invocation
            .key(self.keys.fanout(task))
            .key(self.keys.lock_fence(&LockName::Schedule(task.clone())))
            .arg(run.id())
            .arg(encode_run(run)?)
            .arg(millis(ttl).max(1))
            .arg(fence.map_or_else(String::new, |fence| fence.to_string()));
        for list in lists.iter().filter(|list| !list.append.is_empty()) {
            invocation
                .key(self.keys.distribution(task, run.id(), list.slot))
                .arg(list.append.len());
            for user in &list.append {
                invocation.arg(user.as_str());
            }
        }
        let mut connection = self.connection.clone();
        let created: i64 = invocation.invoke_async(&mut connection).await?;
        Ok(created == 1)
    }

    async fn save_run(
        &self,
        run: &Run,
        lists: &[SlotWrite],
        ttl: Duration,
        fence: u64,
    ) -> Result<bool, StoreError> {
        self.update_run(run, lists, ttl, fence, "save").await
    }

    async fn finish_run(&self, run: &Run, fence: u64) -> Result<bool, StoreError> {
        self.update_run(run, &[], Duration::from_secs(1), fence, "finish")
            .await
    }

    async fn slot_users(
        &self,
        run: &Run,
        slot: u32,
        limit: usize,
    ) -> Result<Vec<UserId>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let key = self.keys.distribution(&run.task_type_id, run.id(), slot);
        let mut connection = self.connection.clone();
        let users: Vec<String> = redis::cmd("LRANGE")
            .arg(&key)
            .arg(0)
            .arg(limit - 1)
            .query_async(&mut connection)
            .await?;
        users.iter().map(|user| parse_user(&key, user)).collect()
    }

    async fn trigger_run(
        &self,
        task: &TaskTypeId,
        key: &str,
        run: i64,
        ttl: Duration,
    ) -> Result<Option<i64>, StoreError> {
        let key = self.keys.trigger(task, key);
        let mut connection = self.connection.clone();
        // SET NX GET: the earlier value when there is one, nil after setting.
        let earlier: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(run)
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(millis(ttl).max(1))
            .query_async(&mut connection)
            .await?;
        earlier
            .map(|value| {
                value
                    .parse::<i64>()
                    .map_err(|_| corrupt(&key, format!("run id {value:?}")))
            })
            .transpose()
    }

    async fn custom_users_page(
        &self,
        task: &TaskTypeId,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<UserId>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let key = self.keys.custom_index(task);
        let mut connection = self.connection.clone();
        let users: Vec<String> = redis::cmd("ZRANGE")
            .arg(&key)
            .arg(offset)
            .arg(offset + limit as u64 - 1)
            .query_async(&mut connection)
            .await?;
        users.iter().map(|user| parse_user(&key, user)).collect()
    }

    async fn set_task_paused(
        &self,
        task: &TaskTypeId,
        since: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        let key = self.keys.operator_pauses();
        let mut connection = self.connection.clone();
        let changed: u64 = match since {
            Some(at) => {
                redis::cmd("HSETNX")
                    .arg(&key)
                    .arg(task.as_str())
                    .arg(rfc3339(at))
                    .query_async(&mut connection)
                    .await?
            }
            None => {
                redis::cmd("HDEL")
                    .arg(&key)
                    .arg(task.as_str())
                    .query_async(&mut connection)
                    .await?
            }
        };
        Ok(changed > 0)
    }

    async fn paused_tasks(&self) -> Result<BTreeMap<TaskTypeId, DateTime<Utc>>, StoreError> {
        let key = self.keys.operator_pauses();
        let mut connection = self.connection.clone();
        let entries: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut connection)
            .await?;
        let mut paused = BTreeMap::new();
        for (task, since) in entries {
            let id = TaskTypeId::parse(task.clone())
                .map_err(|err| corrupt(&key, format!("task id {task:?}: {err}")))?;
            paused.insert(id, parse_instant(&key, &since)?);
        }
        Ok(paused)
    }
}

#[async_trait]
impl ClaimStore for RedisStore {
    async fn succeeded(&self, jobs: &[Uuid]) -> Result<Vec<bool>, StoreError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = jobs.iter().map(|job| self.keys.job_done(*job)).collect();
        let mut connection = self.connection.clone();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut connection)
            .await?;
        Ok(values.iter().map(Option::is_some).collect())
    }

    async fn claim_execution(&self, claim: &ExecutionClaim) -> Result<ClaimOutcome, StoreError> {
        let mut outcomes = self.claim_executions(std::slice::from_ref(claim)).await?;
        outcomes.pop().ok_or_else(|| {
            corrupt(
                &self.keys.job_claim(&claim.task_type_id, claim.job_id),
                "claim_execution answered nothing".to_owned(),
            )
        })
    }

    async fn finish_execution(&self, finish: &ExecutionFinish) -> Result<(), StoreError> {
        self.finish_executions(std::slice::from_ref(finish)).await
    }

    async fn claim_executions(
        &self,
        claims: &[ExecutionClaim],
    ) -> Result<Vec<ClaimOutcome>, StoreError> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for claim in claims {
            pipe.add_command(self.claim_command(claim));
        }
        let replies: Vec<Vec<String>> = self.query_scripts(&pipe, &CLAIM_EXECUTION).await?;
        if replies.len() != claims.len() {
            return Err(corrupt(
                &self
                    .keys
                    .job_claim(&claims[0].task_type_id, claims[0].job_id),
                format!("{} claims answered {} times", claims.len(), replies.len()),
            ));
        }
        claims
            .iter()
            .zip(replies)
            .map(|(claim, reply)| self.claim_outcome(claim, reply))
            .collect()
    }

    async fn finish_executions(&self, finishes: &[ExecutionFinish]) -> Result<(), StoreError> {
        if finishes.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for finish in finishes {
            pipe.add_command(self.finish_command(finish)).ignore();
        }
        let () = self.query_scripts(&pipe, &FINISH_EXECUTION).await?;
        Ok(())
    }

    async fn record_throttle(&self, throttle: &Throttle) -> Result<u32, StoreError> {
        let mut connection = self.connection.clone();
        let count: u32 = RECORD_THROTTLE
            .key(self.keys.job_throttles(throttle.job_id))
            .key(self.keys.task_pause(&throttle.task_type_id))
            .arg(millis(throttle.count_ttl).max(1))
            .arg(millis(throttle.pause))
            .invoke_async(&mut connection)
            .await?;
        Ok(count)
    }
}

#[async_trait]
impl TokenStore for RedisStore {
    async fn take_tokens(
        &self,
        bucket: &Bucket,
        requested: u32,
        now: f64,
    ) -> Result<bool, StoreError> {
        let mut connection = self.connection.clone();
        let taken: i64 = TOKEN_BUCKET
            .key(self.keys.bucket(&bucket.name))
            .arg(bucket.max_tokens)
            .arg(bucket.refill_rate)
            .arg(requested)
            .arg(format!("{now:.6}"))
            .invoke_async(&mut connection)
            .await?;
        Ok(taken == 1)
    }
}

#[async_trait]
impl MetricsStore for RedisStore {
    async fn record_metrics(&self, batch: &MetricsBatch) -> Result<(), StoreError> {
        let retention_secs = i64::try_from(self.options.metrics_retention.as_secs())
            .unwrap_or(i64::MAX)
            .max(1);
        let retention_ms =
            i64::try_from(millis(self.options.metrics_retention)).unwrap_or(i64::MAX);
        let mut pipe = redis::pipe();
        let counters = batch
            .executions
            .iter()
            .map(|(date, task, count)| (self.keys.metrics_executions(*date), task, count))
            .chain(
                batch
                    .failures
                    .iter()
                    .map(|(date, task, count)| (self.keys.metrics_failures(*date), task, count)),
            );
        for (key, task, count) in counters {
            pipe.hincr(&key, task.as_str(), *count).ignore();
            pipe.expire(&key, retention_secs).ignore();
        }
        let mut newest = BTreeMap::<&TaskTypeId, i64>::new();
        for sample in &batch.durations {
            let ms = sample.completed_at.timestamp_millis();
            pipe.zadd(
                self.keys.metrics_duration(&sample.task_type_id),
                format!("{}:{}", sample.job_id, sample.duration_ms),
                ms,
            )
            .ignore();
            let entry = newest.entry(&sample.task_type_id).or_insert(ms);
            *entry = (*entry).max(ms);
        }
        let max_samples = isize::try_from(self.options.metrics_max_samples).unwrap_or(isize::MAX);
        for (task, newest_ms) in newest {
            let key = self.keys.metrics_duration(task);
            let cutoff = newest_ms.saturating_sub(retention_ms);
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(&key)
                .arg("-inf")
                .arg(format!("({cutoff}"))
                .ignore();
            pipe.zremrangebyrank(&key, 0, -(max_samples + 1)).ignore();
            pipe.expire(&key, retention_secs).ignore();
        }
        if pipe.cmd_iter().next().is_none() {
            return Ok(());
        }
        self.query::<()>(&pipe).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn check_schedule(value: &str, expected: Option<(&str, u64)>) {
        let got = decode_schedule_state("k", value).ok();
        let expected = expected.map(|(at, fence)| ScheduleState {
            last_fired: at.parse().unwrap(),
            fence,
        });
        assert_eq!(got, expected, "value {value:?}");
        if let Some(state) = expected
            && value.contains("|fence=")
        {
            assert_eq!(encode_schedule_state(state.last_fired, state.fence), value);
        }
    }

    #[test]
    fn schedule_state_encoding() {
        check_schedule(
            "2024-01-15T00:00:00Z|fence=7",
            Some(("2024-01-15T00:00:00Z", 7)),
        );
        check_schedule(
            "2024-01-15T00:00:00.123Z|fence=12",
            Some(("2024-01-15T00:00:00.123Z", 12)),
        );
        check_schedule("2024-01-15T00:00:00Z", Some(("2024-01-15T00:00:00Z", 0)));
        check_schedule("2024-01-15T00:00:00Z|fence=x", None);
        check_schedule("yesterday|fence=1", None);
    }

    #[test]
    fn settings_hash_round_trip() {
        let interval: TaskInterval =
            serde_json::from_str(r#"{"type":"daily","value":2,"timezone":"Europe/Paris"}"#)
                .unwrap();
        let cases = [
            Settings::default(),
            Settings {
                timezone: None,
                custom_interval: Some(interval),
                parameters: BTreeMap::from([
                    ("lang".to_owned(), "fr".to_owned()),
                    ("param:odd".to_owned(), "x".to_owned()),
                ]),
            },
        ];
        for settings in cases {
            let fields = settings_fields(&settings, "2024-01-15T00:00:00Z");
            assert!(fields.contains(&("last_modified".to_owned(), "2024-01-15T00:00:00Z".into())));
            assert_eq!(parse_settings("k", fields).unwrap(), settings);
        }
    }
}
