//! The fault suite's sink: a loopback endpoint that records every call by
//! job, and the ledger that turns the calls into `expected / delivered /
//! lost / duplicate successes / repeated calls`.
//!
//! Behaviour by path: `/ok/..` 200; `/delay/{ms}/..` answers 200 after
//! `ms` (a call whose connection is dropped before that is not a success);
//! `/hang/..` hangs while [`Ledger::hang_until`] is in the future, then
//! answers 503 (the caller gave up long before: never a success), else 200;
//! `/always429/..` 429 with `Retry-After: 1`; `/failfirst/..` 500 to the
//! first call of each run, then 200.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::Value;

/// One call the ledger saw.
#[derive(Debug, Clone)]
pub struct Call {
    /// Path, e.g. `/ok/work`.
    pub path: String,
    /// The `Idempotency-Key` header (the job id).
    pub key: String,
    /// (task, user, scheduled_at) from the body: one logical run.
    pub run: (String, String, String),
    /// The `X-Taskqueue-Attempt` header (0 when missing).
    pub attempt: u32,
    /// When the call arrived.
    pub at: Instant,
    /// HTTP status answered; `None` while the call is open or when the
    /// caller hung up before the answer.
    pub status: Option<u16>,
    /// The caller was killed while this call was open: its answer, even a
    /// 2xx, never reached taskqueue (see [`Ledger::orphan_open_calls`]).
    pub orphaned: bool,
    /// When the answer was made (`None` while open).
    pub answered_at: Option<Instant>,
}

impl Call {
    /// Whether the endpoint answered 2xx.
    pub fn succeeded(&self) -> bool {
        !self.orphaned && self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    hang_until: Option<Instant>,
    /// When [`Ledger::orphan_open_calls`] ran (just after a kill).
    killed_at: Option<Instant>,
}

/// The recording endpoint (on its own thread and runtime).
#[derive(Clone)]
pub struct Ledger {
    /// Where it listens.
    pub address: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

/// What one scenario measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Logical runs that should have succeeded.
    pub expected: usize,
    /// Runs with at least one 2xx.
    pub delivered: usize,
    /// `expected - delivered`.
    pub lost: usize,
    /// Runs with more than one 2xx (or run under more than one job id).
    pub duplicate_successes: usize,
    /// Calls beyond the first of each run (retries and redeliveries).
    pub repeated_calls: usize,
}

impl Outcome {
    /// Prints the scenario's line and asserts nothing was lost and nothing
    /// succeeded twice.
    pub fn report_and_check(&self, scenario: &str) {
        println!(
            "fault {scenario}: expected {} / delivered {} / lost {} / duplicate successes {} / repeated calls {}",
            self.expected, self.delivered, self.lost, self.duplicate_successes, self.repeated_calls
        );
        assert_eq!(self.lost, 0, "{scenario}: {self:?}");
        assert_eq!(self.duplicate_successes, 0, "{scenario}: {self:?}");
    }
}

impl Outcome {
    /// Prints the scenario's line and asserts nothing was lost, and at most
    /// `bound` runs succeeded twice (a known gap: RELIABILITY.md).
    pub fn report_and_check_lost(&self, scenario: &str, bound: usize) {
        println!(
            "fault {scenario}: expected {} / delivered {} / lost {} / duplicate successes {} / repeated calls {}",
            self.expected, self.delivered, self.lost, self.duplicate_successes, self.repeated_calls
        );
        assert_eq!(self.lost, 0, "{scenario}: {self:?}");
        assert!(self.duplicate_successes <= bound, "{scenario}: {self:?}");
    }
}

impl Ledger {
    /// Starts the ledger on a free loopback port.
    pub fn start() -> Ledger {
        let inner: Arc<Mutex<Inner>> = Arc::default();
        let for_server = inner.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let data = web::Data::new(for_server);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .app_data(web::PayloadConfig::new(1 << 20))
                        .default_service(web::to(answer))
                })
                .workers(4)
                .backlog(4096)
                .max_connections(10_000)
                .disable_signals()
                .bind("127.0.0.1:0")
                .unwrap();
                tx.send(server.addrs()[0]).unwrap();
                server.run().await.unwrap();
            });
        });
        let address = rx.recv().unwrap();
        Ledger { address, inner }
    }

    /// The URL of `path` on the ledger.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Makes `/hang/..` hang for `duration` from now.
    pub fn hang_for(&self, duration: Duration) {
        self.inner.lock().unwrap().hang_until = Some(Instant::now() + duration);
    }

    /// Notes the instant of a kill: called as soon as `kill -9` has been
    /// delivered, before the process is reaped.
    pub fn note_kill(&self) {
        self.inner.lock().unwrap().killed_at = Some(Instant::now());
    }

    /// Marks as orphaned the calls open now and those answered after the
    /// kill noted by [`Ledger::note_kill`] (now, if none was noted): called
    /// right after the process making them was killed, whose answers went
    /// to a closed connection. The number marked.
    pub fn orphan_open_calls(&self) -> usize {
        let mut inner = self.inner.lock().unwrap();
        let killed_at = *inner.killed_at.get_or_insert_with(Instant::now);
        let mut marked = 0;
        for call in inner
            .calls
            .iter_mut()
            .filter(|c| c.answered_at.is_none_or(|at| at > killed_at))
        {
            call.orphaned = true;
            marked += 1;
        }
        marked
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// Distinct runs that succeeded at least once.
    pub fn delivered(&self) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.succeeded())
            .map(|c| &c.run)
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Waits until `count` distinct runs succeeded, or `timeout`; then a
    /// further `settle` for late duplicates. The number delivered.
    pub async fn wait_delivered(&self, count: usize, timeout: Duration, settle: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        while self.delivered() < count && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Late copies (a redelivery after a lost ack) would come now.
        tokio::time::sleep(settle).await;
        self.delivered()
    }

    /// Polls until `condition` holds on the calls so far, or `timeout`.
    pub async fn wait_until(&self, timeout: Duration, condition: impl Fn(&[Call]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if condition(&self.calls()) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The outcome against `expected` logical runs.
    pub fn outcome(&self, expected: usize) -> Outcome {
        let calls = self.calls();
        let mut successes: BTreeMap<&(String, String, String), usize> = BTreeMap::new();
        let mut keys: BTreeMap<&(String, String, String), BTreeSet<&str>> = BTreeMap::new();
        let mut runs = BTreeSet::new();
        for call in &calls {
            runs.insert(&call.run);
            keys.entry(&call.run).or_default().insert(&call.key);
            if call.succeeded() {
                *successes.entry(&call.run).or_default() += 1;
            }
        }
        let delivered = successes.len();
        let duplicate_successes = runs
            .iter()
            .filter(|run| {
                successes.get(*run).is_some_and(|n| *n > 1)
                    || keys.get(*run).is_some_and(|k| k.len() > 1)
            })
            .count();
        Outcome {
            expected,
            delivered,
            lost: expected.saturating_sub(delivered),
            duplicate_successes,
            repeated_calls: calls.len() - runs.len(),
        }
    }
}

impl Ledger {
    /// The runs that succeeded twice because of the kill's crash window:
    /// one `Idempotency-Key`, two 2xx, the first answered at most `window`
    /// before [`Ledger::orphan_open_calls`] ran (so the killed process may
    /// have read it without having had the time to record it). Any other
    /// duplicate success is a defect.
    pub fn crash_window_repeats(&self, window: Duration) -> usize {
        let inner = self.inner.lock().unwrap();
        let Some(killed_at) = inner.killed_at else {
            return 0;
        };
        let mut runs: BTreeMap<&(String, String, String), Vec<&Call>> = BTreeMap::new();
        for call in &inner.calls {
            runs.entry(&call.run).or_default().push(call);
        }
        runs.values()
            .filter(|calls| {
                let keys: BTreeSet<&str> = calls.iter().map(|c| c.key.as_str()).collect();
                let successes: Vec<Instant> = calls
                    .iter()
                    .filter(|c| c.succeeded())
                    .filter_map(|c| c.answered_at)
                    .collect();
                keys.len() == 1
                    && successes.len() == 2
                    && successes
                        .iter()
                        .min()
                        .is_some_and(|first| *first <= killed_at && killed_at - *first <= window)
            })
            .count()
    }

    /// Prints the scenario's line after a kill and asserts that nothing
    /// was lost and that no run succeeded twice beyond the kill's crash
    /// window (see [`Ledger::crash_window_repeats`]), which is reported.
    pub fn report_and_check_kill(&self, expected: usize, scenario: &str, window: Duration) {
        let outcome = self.outcome(expected);
        let repeats = self.crash_window_repeats(window);
        println!(
            "fault {scenario}: expected {} / delivered {} / lost {} / duplicate successes {} ({repeats} crash-window repeats, same key, first 2xx within {} ms of the kill) / repeated calls {}",
            outcome.expected,
            outcome.delivered,
            outcome.lost,
            outcome.duplicate_successes - repeats,
            window.as_millis(),
            outcome.repeated_calls
        );
        assert_eq!(outcome.lost, 0, "{scenario}: {outcome:?}");
        assert_eq!(
            outcome.duplicate_successes - repeats,
            0,
            "{scenario}: {outcome:?}, {repeats} of them in the crash window"
        );
    }
}

/// Marks the call's status when the handler completes; a handler dropped
/// with its connection leaves `None`.
struct Answer {
    inner: Arc<Mutex<Inner>>,
    index: usize,
}

impl Answer {
    fn finish(self, response: HttpResponse) -> HttpResponse {
        let mut inner = self.inner.lock().unwrap();
        let call = &mut inner.calls[self.index];
        call.status = Some(response.status().as_u16());
        call.answered_at = Some(Instant::now());
        drop(inner);
        response
    }
}

async fn answer(
    request: HttpRequest,
    body: web::Bytes,
    inner: web::Data<Arc<Mutex<Inner>>>,
) -> HttpResponse {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let text = |field: &str| body[field].as_str().unwrap_or_default().to_owned();
    let call = Call {
        path: request.path().to_owned(),
        key: request
            .headers()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        run: (text("task_type_id"), text("user_id"), text("scheduled_at")),
        attempt: request
            .headers()
            .get("x-taskqueue-attempt")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        at: Instant::now(),
        status: None,
        orphaned: false,
        answered_at: None,
    };
    let segments: Vec<String> = call
        .path
        .trim_start_matches('/')
        .split('/')
        .map(str::to_owned)
        .collect();
    let (index, hang_until, first_of_run) = {
        let mut all = inner.lock().unwrap();
        let first_of_run = !all.calls.iter().any(|c| c.run == call.run);
        all.calls.push(call);
        (all.calls.len() - 1, all.hang_until, first_of_run)
    };
    let answer = Answer {
        inner: inner.get_ref().clone(),
        index,
    };
    match segments.first().map(String::as_str) {
        Some("delay") => {
            let ms = segments.get(1).and_then(|s| s.parse().ok()).unwrap_or(100);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            answer.finish(HttpResponse::Ok().finish())
        }
        Some("hang") => match hang_until {
            Some(until) if until > Instant::now() => {
                tokio::time::sleep(until - Instant::now()).await;
                answer.finish(HttpResponse::ServiceUnavailable().finish())
            }
            _ => answer.finish(HttpResponse::Ok().finish()),
        },
        Some("always429") => answer.finish(
            HttpResponse::TooManyRequests()
                .insert_header(("Retry-After", "1"))
                .finish(),
        ),
        Some("failfirst") if first_of_run => {
            answer.finish(HttpResponse::InternalServerError().body("first call fails"))
        }
        _ => answer.finish(HttpResponse::Ok().finish()),
    }
}
