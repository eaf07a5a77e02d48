//! Rate limits and throttles on the in-process backends: a job that gets
//! no token within `execution.max_token_wait` is deferred instead of
//! holding its executor, so the jobs of other tasks go ahead; throttles
//! have their own budget; a `Retry-After` pauses its own task only; a
//! duplicate copy of a retried job does not start a second retry chain; a
//! user who disabled the task after the fan-out is not called, neither by
//! the scheduled job nor by its retry.

use crate::support;

use std::{sync::Arc, time::Duration};

use actors::{
    broker::{JobBroker, memory::MemoryBroker},
    catalog::TaskCatalog,
    clock::SystemClock,
    distributor::job_envelope,
    domain::{JobEnvelope, JobSource, TaskType, TaskTypeId, UserId},
    executor::ExecutionSettings,
    pipeline::{Pipeline, PipelineConfig, PipelineDeps},
    store::{ClaimStore, PreferenceStore, Stores, memory::MemoryStore},
};
use chrono::Utc;
use serde_json::json;
use support::*;

fn sink_task(id: &str, endpoint: String) -> TaskType {
    task(json!({
        "id": id, "name": id,
        "interval": {"type": "daily", "value": 1},
        "timeout": "5s", "retries": 3,
        "config": {"endpoint": endpoint, "method": "POST"}
    }))
}

/// One executor, the given per-task rates, a short token wait.
fn config(per_task: &[(&str, u32)]) -> PipelineConfig {
    config_with(None, per_task)
}

fn config_with(global: Option<u32>, per_task: &[(&str, u32)]) -> PipelineConfig {
    PipelineConfig {
        scheduler: false,
        worker: true,
        check_interval: Duration::from_secs(60),
        distribution_window: Duration::from_secs(1),
        batch_size: 10,
        reload_interval: Duration::ZERO,
        lock_ttl: Duration::from_secs(30),
        pool_size: 1,
        arbiters: 1,
        prefetch: 1,
        shutdown_timeout: Duration::from_secs(5),
        global_rate: global,
        per_task_rate: per_task
            .iter()
            .map(|(task, rate)| (TaskTypeId::parse(*task).unwrap(), *rate))
            .collect(),
        execution: ExecutionSettings {
            timeout: Duration::from_secs(5),
            max_retries: 3,
            retry_delay: Duration::from_millis(100),
            max_retry_delay: Duration::from_secs(60),
            success_ttl: Duration::from_secs(3600),
            throttles_per_attempt: 10,
            max_throttled_age: Duration::from_secs(86_400),
            result_retention: Duration::from_secs(3600),
            record_pending: true,
            max_token_wait: Duration::from_millis(100),
        },
        metrics_interval: Duration::from_secs(1),
    }
}

async fn start(
    config: PipelineConfig,
    tasks: Vec<TaskType>,
) -> (Pipeline, Arc<MemoryStore>, Arc<MemoryBroker>) {
    let store = Arc::new(MemoryStore::new());
    let broker = Arc::new(MemoryBroker::new());
    let pipeline = Pipeline::start(
        config,
        PipelineDeps {
            stores: Stores::new(store.clone()),
            broker: broker.clone(),
            catalog: TaskCatalog::new(tasks),
            clock: Arc::new(SystemClock),
            task_source: None,
            quarantine: Default::default(),
            dead_letters: Arc::new(actors::store::dead_letters::MemoryDeadLetters::default()),
            results: store.clone(),
        },
    )
    .await
    .unwrap();
    (pipeline, store, broker)
}

fn job(task: &TaskType, user: &str) -> JobEnvelope {
    let now = Utc::now();
    job_envelope(
        task,
        &UserId::parse(user).unwrap(),
        now,
        now,
        None,
        JobSource::Trigger,
        "test",
    )
}

#[actix_rt::test]
async fn a_job_without_a_token_is_deferred_and_does_not_block_other_tasks() {
    let sink = Sink::start();
    let slow = sink_task("slow", sink.url("/ok/slow"));
    let fast = sink_task("fast", sink.url("/ok/fast"));
    // `slow` allows one call a second (burst 1); the one executor takes
    // the queue in order: three `slow` jobs, then one `fast`.
    let (pipeline, store, broker) =
        start(config(&[("slow", 1)]), vec![slow.clone(), fast.clone()]).await;
    let jobs = vec![
        job(&slow, "a"),
        job(&slow, "b"),
        job(&slow, "c"),
        job(&fast, "d"),
    ];
    broker.publish(&jobs).await.unwrap();

    let calls = sink.wait_for("/ok/", 4, Duration::from_secs(20)).await;
    let order: Vec<(String, String)> = calls
        .iter()
        .map(|c| {
            (
                c.path.clone(),
                c.body["user_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // Held deliveries would call a, b, c, then d; deferred ones let d
    // pass b and c, which wait for their tokens out of the queue.
    assert_eq!(order[0], ("/ok/slow".to_owned(), "a".to_owned()));
    assert_eq!(
        order[1],
        ("/ok/fast".to_owned(), "d".to_owned()),
        "{order:?}"
    );
    let mut rest: Vec<&str> = order[2..].iter().map(|(_, user)| user.as_str()).collect();
    rest.sort();
    assert_eq!(rest, vec!["b", "c"]);
    // A deferral is no attempt: every job is called once, as attempt 1.
    assert!(calls.iter().all(|c| c.attempt() == 1), "{calls:?}");
    let ids: Vec<_> = jobs.iter().map(|j| j.job.id).collect();
    assert_eq!(store.succeeded(&ids).await.unwrap(), vec![true; 4]);
    assert!(broker.dead_letters().is_empty());
    pipeline.shutdown().await;
}

#[actix_rt::test]
async fn a_job_always_throttled_is_dead_lettered_past_its_throttle_budget() {
    let sink = Sink::start();
    // Retry-After: 0, every time: without a budget this loops forever.
    let busy = task(json!({
        "id": "busy", "name": "busy",
        "interval": {"type": "daily", "value": 1},
        "timeout": "5s", "retries": 1,
        "config": {"endpoint": sink.url("/always429/0/busy"), "method": "POST"}
    }));
    let mut config = config(&[]);
    config.execution.throttles_per_attempt = 2;
    let (pipeline, store, broker) = start(config, vec![busy.clone()]).await;
    let job = job(&busy, "alice");
    broker.publish(std::slice::from_ref(&job)).await.unwrap();

    let mut letters = Vec::new();
    for _ in 0..200 {
        letters = broker.dead_letters();
        if !letters.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(letters.len(), 1, "dead-lettered once");
    assert_eq!(
        letters[0].letter.reason,
        actors::domain::DeadLetterReason::ThrottledTooLong
    );
    let result = letters[0].letter.result.as_ref().unwrap();
    assert_eq!(result.error.as_ref().unwrap().code, "http_429");
    // 2 throttles per allowed attempt, 1 + 1 attempts: 4 throttled calls
    // pass, the fifth is dead-lettered; throttles never use up an attempt.
    let calls = sink.received_at("/always429/");
    assert_eq!(calls.len(), 5, "{calls:?}");
    assert!(calls.iter().all(|c| c.attempt() == 1));
    assert_eq!(store.succeeded(&[job.job.id]).await.unwrap(), vec![false]);
    pipeline.shutdown().await;
}

#[actix_rt::test]
async fn a_retry_after_pauses_its_task_not_the_others() {
    let sink = Sink::start();
    let busy = sink_task("busy", sink.url("/always429/30/busy"));
    let calm = sink_task("calm", sink.url("/ok/calm"));
    // Both tasks pass the global limit only (no limit of their own).
    let (pipeline, store, broker) = start(
        config_with(Some(100), &[]),
        vec![busy.clone(), calm.clone()],
    )
    .await;
    broker.publish(&[job(&busy, "a")]).await.unwrap();
    assert_eq!(
        sink.wait_for("/always429/", 1, Duration::from_secs(10))
            .await
            .len(),
        1
    );
    // The pause is in the store, for every replica: a claim of a busy job
    // is held, one of a calm job is not.
    let claim = |task: &TaskType, user: &str| actors::store::ExecutionClaim {
        task_type_id: task.id.clone(),
        user_id: UserId::parse(user).unwrap(),
        job_id: uuid::Uuid::new_v4(),
        execution: uuid::Uuid::new_v4(),
        job_ttl: Duration::from_secs(5),
        run_ttl: None,
        attempt: 1,
        execute_after_ms: 0,
        require_enabled: false,
        result: None,
    };
    let mut paused = false;
    for _ in 0..100 {
        if matches!(
            store.claim_execution(&claim(&busy, "x")).await.unwrap(),
            actors::store::ClaimOutcome::Paused(_)
        ) {
            paused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(paused, "the busy task is paused in the store");
    assert!(matches!(
        store.claim_execution(&claim(&calm, "y")).await.unwrap(),
        actors::store::ClaimOutcome::Claimed { .. }
    ));
    // The calm task is called at once, well within busy's 30 s pause
    // (pausing the global limiter would hold it that long).
    broker.publish(&[job(&calm, "b")]).await.unwrap();
    let calm_calls = sink.wait_for("/ok/calm", 1, Duration::from_secs(10)).await;
    assert_eq!(calm_calls.len(), 1);
    assert_eq!(sink.received_at("/always429/").len(), 1);
    pipeline.shutdown().await;
}

#[actix_rt::test]
async fn a_duplicate_copy_of_a_failed_attempt_starts_no_second_retry_chain() {
    let sink = Sink::start();
    let broken = task(json!({
        "id": "broken", "name": "broken",
        "interval": {"type": "daily", "value": 1},
        "timeout": "5s", "retries": 2,
        "config": {"endpoint": sink.url("/fail/broken"), "method": "POST"}
    }));
    let (pipeline, _store, broker) = start(config(&[]), vec![broken.clone()]).await;
    let job = job(&broken, "alice");
    broker.publish(std::slice::from_ref(&job)).await.unwrap();
    // Attempt 1 failed: a second copy of it arrives (a redelivery). On a
    // busy machine attempt 2 may already have been called by the time the
    // sink is read; the copy of attempt 1 is then stale all the more.
    let first = sink.wait_for("/fail/", 1, Duration::from_secs(10)).await;
    assert_eq!(first.first().map(|c| c.attempt()), Some(1));
    broker.publish(std::slice::from_ref(&job)).await.unwrap();

    // Wait until everything settled: dead letter, queues empty, nothing
    // in hand.
    let gauge = pipeline.worker.clone().unwrap();
    let mut settled = false;
    for _ in 0..300 {
        if !broker.dead_letters().is_empty() && broker.pending() == 0 && gauge.active_jobs() == 0 {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(settled, "the job settled");
    // One chain: attempts 1, 2, 3 and one dead letter (a second chain
    // would call attempts 1, 2, 3 again and dead-letter twice).
    let attempts: Vec<u32> = sink
        .received_at("/fail/")
        .iter()
        .map(|c| c.attempt())
        .collect();
    assert_eq!(attempts, vec![1, 2, 3]);
    let letters = broker.dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0].letter.reason,
        actors::domain::DeadLetterReason::RetriesExhausted
    );
    pipeline.shutdown().await;
}

#[actix_rt::test]
async fn a_user_who_disabled_the_task_or_is_gone_after_the_fan_out_is_not_called() {
    let sink = Sink::start();
    let report = sink_task("report", sink.url("/ok/report"));
    let (pipeline, store, broker) = start(config(&[]), vec![report.clone()]).await;
    enable_users(
        store.as_ref(),
        "report",
        &["carol".to_owned(), "dan".to_owned()],
    )
    .await;
    let now = Utc::now();
    let scheduled = |user: &str| {
        job_envelope(
            &report,
            &UserId::parse(user).unwrap(),
            now,
            now,
            None,
            JobSource::Scheduler,
            "test",
        )
    };
    let (carol, dan) = (scheduled("carol"), scheduled("dan"));
    // Erin has no preferences at all (removed after the fan-out).
    let erin = scheduled("erin");
    // Carol disables the task after her job was published.
    store
        .write_preferences(&[actors::store::PreferenceWrite::new(
            UserId::parse("carol").unwrap(),
            report.id.clone(),
            false,
            None,
            Utc::now(),
        )])
        .await
        .unwrap();
    // One executor, in order: carol's and erin's jobs are settled before
    // dan's runs.
    broker
        .publish(&[carol.clone(), erin.clone(), dan.clone()])
        .await
        .unwrap();
    let calls = sink
        .wait_for("/ok/report", 1, Duration::from_secs(10))
        .await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].body["user_id"], "dan");
    assert_eq!(
        store
            .succeeded(&[carol.job.id, erin.job.id, dan.job.id])
            .await
            .unwrap(),
        vec![false, false, true]
    );
    assert!(broker.dead_letters().is_empty());
    // Counted apart from the attempts.
    let stats = pipeline
        .metrics
        .send(actors::metrics::GetStats)
        .await
        .unwrap();
    assert_eq!(stats.skipped.disabled, 2, "{stats:?}");
    pipeline.shutdown().await;
}

#[actix_rt::test]
async fn the_retry_of_a_scheduled_job_skips_a_user_who_dropped_the_task_meanwhile() {
    let sink = Sink::start();
    // Attempt 1 is answered (500) 2 s after it arrives: the preferences
    // change while it runs, before its retry is claimed.
    let report = sink_task("report", sink.url("/slowfail/2000/report"));
    let (pipeline, store, broker) = start(config(&[]), vec![report.clone()]).await;
    enable_users(store.as_ref(), "report", &["grace".to_owned()]).await;
    let now = Utc::now();
    let grace = job_envelope(
        &report,
        &UserId::parse("grace").unwrap(),
        now,
        now,
        None,
        JobSource::Scheduler,
        "test",
    );
    broker.publish(std::slice::from_ref(&grace)).await.unwrap();
    let first = sink
        .wait_for("/slowfail/", 1, Duration::from_secs(10))
        .await;
    assert_eq!(first.len(), 1, "attempt 1 arrived");
    // Grace removes the task from her preferences while attempt 1 runs.
    assert!(
        store
            .delete_preference(&UserId::parse("grace").unwrap(), &report.id)
            .await
            .unwrap()
    );
    // The retry is published, then claimed and skipped.
    let mut skipped = 0;
    for _ in 0..400 {
        let stats = pipeline
            .metrics
            .send(actors::metrics::GetStats)
            .await
            .unwrap();
        skipped = stats.skipped.disabled;
        if skipped > 0 || sink.received_at("/slowfail/").len() > 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let attempts: Vec<u32> = sink
        .received_at("/slowfail/")
        .iter()
        .map(|c| c.attempt())
        .collect();
    assert_eq!(attempts, vec![1], "the retry did not call the endpoint");
    assert_eq!(skipped, 1, "the retry counted in skipped.disabled");
    assert_eq!(store.succeeded(&[grace.job.id]).await.unwrap(), vec![false]);
    assert!(broker.dead_letters().is_empty());
    pipeline.shutdown().await;
}
