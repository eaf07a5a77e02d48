//! Zone groups: N users (default 1,000,000; `--size`) of one task spread
//! over 50 time zones (a per-task `timezone` each), in a throwaway Redis
//! key prefix. Two rows, each the median of `--runs` runs (default 3):
//!
//! - **idle tick**: what a scheduler tick does for the task when nothing
//!   is due: the schedule state and the zone groups read from Redis (one
//!   round trip each), then one calculus step per zone group. Ceiling:
//!   5 ms.
//! - **zone-grouped planning**: one run walking every zone group, planned
//!   by the DistributorActor into the slot lists (the window of 1800
//!   slots), timed until its planning is done. Ceiling: 10 s.
//!
//! - **raw Redis ceiling**: the least Redis work a planning can do, timed
//!   after each planning run: every zone index read in pages of 1,000 by
//!   rank (`ZRANGE`) and each page appended to one list (`RPUSH`), two
//!   round trips one after the other per page over a blocking connection,
//!   no run record, no slot assignment, no fence. The planning row's
//!   ratio to it is printed beside.
//!
//! Each row prints min / median / max over the runs.
//!
//! `--tiny`: 500 users in 5 zones, one run, counts checked (every user
//! planned into exactly one slot), no timing judged; exits non-zero on a
//! mismatch.

mod support;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use actix::Actor;
use actors::{
    broker::memory::MemoryBroker,
    distributor::{AdvanceRun, DistributionSettings, DistributorActor},
    domain::{MisfirePolicy, Settings, TaskType, TaskTypeId, UserId},
    fanout::{Audience, Run, RunSource, ZoneWalk, run_slots},
    health::HealthBoard,
    schedule::{self, Schedule},
    store::{
        Keys, LockName, PreferenceWrite, StateStore,
        redis::{RedisOptions, RedisStore},
    },
};
use anyhow::{Context, Result};
use chrono::Utc;
use chrono_tz::{TZ_VARIANTS, Tz};
use serde_json::json;
use support::*;

const TASK: &str = "zones_bench";
const IDLE_TICK_CEILING: Duration = Duration::from_millis(5);
const PLANNING_CEILING: Duration = Duration::from_secs(10);

fn main() -> Result<()> {
    run_sink_if_asked();
    let args = BenchArgs::parse();
    let users = args.size_or(1_000_000, 500);
    let zone_count = if args.tiny { 5 } else { 50 };
    actix::System::new().block_on(bench(args, users, zone_count))
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// `min / median / max` of `values`, in seconds with `digits` decimals.
fn spread(values: &[Duration], scale: f64, digits: usize) -> String {
    let mut sorted = values.to_vec();
    sorted.sort();
    let at = |d: Duration| format!("{:.*}", digits, d.as_secs_f64() * scale);
    format!(
        "{} / **{}** / {}",
        at(sorted[0]),
        at(sorted[sorted.len() / 2]),
        at(sorted[sorted.len() - 1])
    )
}

/// The raw ceiling (see the module docs): the users moved and the time.
fn raw_ceiling(keys: &Keys, task: &TaskTypeId, zones: &[Tz]) -> Result<(usize, Duration)> {
    const PAGE: isize = 1000;
    let mut connection = redis_connection()?;
    // A list no run uses (run id -1).
    let target = keys.distribution(task, -1, 0);
    let started = Instant::now();
    let mut moved = 0;
    for zone in zones {
        let index = keys.zone_index(task, zone.name());
        let mut rank = 0;
        loop {
            let page: Vec<String> = redis::cmd("ZRANGE")
                .arg(&index)
                .arg(rank)
                .arg(rank + PAGE - 1)
                .query(&mut connection)?;
            if page.is_empty() {
                break;
            }
            let _: i64 = redis::cmd("RPUSH")
                .arg(&target)
                .arg(&page)
                .query(&mut connection)?;
            moved += page.len();
            rank += page.len() as isize;
            if (page.len() as isize) < PAGE {
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    let _: i64 = redis::cmd("DEL").arg(&target).query(&mut connection)?;
    Ok((moved, elapsed))
}

async fn bench(args: BenchArgs, users: usize, zone_count: usize) -> Result<()> {
    let prefix = Prefix::new("zones");
    let store: Arc<dyn StateStore> = Arc::new(
        RedisStore::connect(
            &redis_url(),
            Keys::new(prefix.name.clone()),
            RedisOptions::default(),
        )
        .await
        .context("redis")?,
    );
    let task: TaskType = serde_json::from_value(json!({
        "id": TASK, "name": "Zones",
        "interval": {"type": "daily", "value": 1, "at_time": "08:00"},
        "timeout": "10s",
        "config": {"endpoint": "http://127.0.0.1:9/", "method": "POST"}
    }))?;
    let task_id = TaskTypeId::parse(TASK)?;
    // Every 8th zone of the database, for a spread of offsets.
    let zones: Vec<Tz> = TZ_VARIANTS
        .iter()
        .copied()
        .step_by(8)
        .take(zone_count)
        .collect();
    progress(format!("writing {users} users in {} zones", zones.len()));
    let now = Utc::now();
    let mut expected: HashMap<Tz, u64> = HashMap::new();
    let mut batch = Vec::with_capacity(1000);
    for n in 0..users {
        let zone = zones[n % zones.len()];
        *expected.entry(zone).or_default() += 1;
        batch.push(PreferenceWrite::new(
            UserId::parse(format!("user_{n}"))?,
            task_id.clone(),
            true,
            Some(Settings {
                timezone: Some(zone),
                ..Settings::default()
            }),
            now,
        ));
        if batch.len() == 1000 || n + 1 == users {
            store.write_preferences(&batch).await?;
            batch.clear();
        }
    }
    let groups = store.zone_groups(&task_id).await?;
    check(groups.groups.len() == zones.len(), "one group per zone")?;
    let sizes = store.zone_sizes(&task_id, &zones).await?;
    for (zone, size) in zones.iter().zip(&sizes) {
        check(
            expected.get(zone) == Some(size),
            format!("{zone}: {size} users"),
        )?;
    }

    // Idle tick: the last fires recorded as now, so nothing is due.
    let lock = LockName::Schedule(task_id.clone());
    let lease = store
        .acquire_lock(&lock, Duration::from_secs(600))
        .await?
        .context("lock")?;
    store.record_fire(&task_id, now, &lease).await?;
    let fires: Vec<(Tz, chrono::DateTime<Utc>)> = zones.iter().map(|zone| (*zone, now)).collect();
    store
        .record_zone_fires(&task_id, &fires, now, &lease)
        .await?;
    let mut ticks = Vec::new();
    for _ in 0..args.runs.max(3) {
        let started = Instant::now();
        let state = store.schedule_state(&task_id).await?.context("state")?;
        let groups = store.zone_groups(&task_id).await?;
        let mut due = 0;
        for (zone, zone_state) in
            std::iter::once((task.interval.tz(), Some(state))).chain(groups.groups)
        {
            let last = zone_state.map_or(now, |s| s.last_fired);
            let schedule = Schedule::new(&task.interval.in_zone(zone));
            let found = schedule::due_with_tolerance(
                &schedule,
                last,
                now,
                task.catchup_window(),
                MisfirePolicy::RunOnce,
                Duration::from_secs(2),
            );
            due += usize::from(found.fire.is_some());
        }
        ticks.push(started.elapsed());
        check(due == 0, "nothing is due on an idle tick")?;
    }

    // Zone-grouped planning.
    let board = HealthBoard::default();
    let window = Duration::from_secs(1800);
    let distributor = DistributorActor::new(
        store.clone(),
        Arc::new(MemoryBroker::new()),
        DistributionSettings {
            window,
            batch_size: 1000,
            lock_ttl: Duration::from_secs(600),
            task_rates: BTreeMap::new(),
            global_rate: None,
        },
        board,
    )
    .start();
    let mut plans = Vec::new();
    let mut ceilings = Vec::new();
    for run_number in 0..args.runs {
        let scheduled_at = now + chrono::Duration::days(1 + run_number as i64);
        let mut run = Run {
            task_type_id: task_id.clone(),
            scheduled_at,
            source: RunSource::Scheduler,
            audience: Audience::Enabled { with_custom: false },
            immediate: false,
            slots: run_slots(window, false),
            users: users as u64,
            planned: 0,
            cursor: None,
            custom_offset: None,
            zone_walk: ZoneWalk::of(zones.iter().copied().map(Some).collect()),
            planning_done: false,
            next_slot: 0,
            released: 0,
            correlation_id: "bench".to_owned(),
            created_at: now,
        };
        store
            .create_run(&run, &[], Duration::from_secs(3600), Some(lease.fence))
            .await?;
        let started = Instant::now();
        while !run.planning_done {
            run = distributor
                .send(AdvanceRun {
                    task: task.clone(),
                    run,
                    now,
                    fence: lease.fence,
                })
                .await??
                .run;
        }
        plans.push(started.elapsed());
        check(
            run.planned == users as u64,
            format!("{} planned", run.planned),
        )?;
        let (moved, ceiling) = raw_ceiling(&Keys::new(prefix.name.clone()), &task_id, &zones)?;
        check(
            moved == users,
            format!("{moved} users moved by the ceiling"),
        )?;
        ceilings.push(ceiling);
        if args.tiny {
            let mut seen = std::collections::BTreeSet::new();
            let mut listed = 0usize;
            for slot in 0..run.slots {
                let page = store.slot_users(&run, slot, users + 1).await?;
                listed += page.len();
                seen.extend(page);
            }
            check(listed == users, format!("{listed} users in the slot lists"))?;
            check(seen.len() == users, "every user in exactly one slot")?;
        }
    }
    if args.tiny {
        println!("zones --tiny: {users} users in {zone_count} zones planned once each");
        return Ok(());
    }
    let tick = median(ticks.clone());
    let plan = median(plans.clone());
    let ratios: Vec<Duration> = plans
        .iter()
        .zip(&ceilings)
        .map(|(plan, ceiling)| Duration::from_secs_f64(plan.as_secs_f64() / ceiling.as_secs_f64()))
        .collect();
    println!("| row | min / median / max | target | median / target |");
    println!("|---|---|---|---|");
    println!(
        "| idle tick, {} zone groups | {} ms | {} ms | {:.2} |",
        zone_count,
        spread(&ticks, 1e3, 3),
        IDLE_TICK_CEILING.as_millis(),
        tick.as_secs_f64() / IDLE_TICK_CEILING.as_secs_f64()
    );
    println!(
        "| zone-grouped planning, {users} users | {} s | {} s | {:.2} |",
        spread(&plans, 1.0, 2),
        PLANNING_CEILING.as_secs(),
        plan.as_secs_f64() / PLANNING_CEILING.as_secs_f64()
    );
    println!(
        "| raw Redis ceiling, same users, same runs | {} s | | |",
        spread(&ceilings, 1.0, 2)
    );
    println!(
        "| planning / ceiling, run by run | {} | | |",
        spread(&ratios, 1.0, 2)
    );
    Ok(())
}
