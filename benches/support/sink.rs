//! A fast loopback HTTP sink for the workloads, run as a child process of
//! the bench (the same executable started as `<bench> __sink`), so its CPU
//! time is its own. It answers every request 200 with an empty body and
//! records it: receipt time (Unix nanoseconds), path, `Idempotency-Key`
//! (the job id), `X-Taskqueue-Execute-After` when sent, and the body. With
//! `--light` it only counts requests and distinct job ids (for runs of a
//! million jobs).
//!
//! Its own routes: `GET /_records` (JSON array of [`Record`]), `GET
//! /_count` (`{"total", "distinct"}`), `POST /_reset`.

use std::{
    collections::HashSet,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// One request the sink received.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Receipt time, Unix nanoseconds.
    pub at_ns: i64,
    /// Request path.
    pub path: String,
    /// The `Idempotency-Key` header (the job id).
    pub key: String,
    /// The `X-Taskqueue-Execute-After` header, when sent.
    pub execute_after: Option<String>,
    /// The body as text (empty in light mode).
    pub body: String,
}

impl Record {
    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// `execute_after` in Unix milliseconds, from the header (integer
    /// milliseconds or RFC 3339), when sent.
    pub fn execute_after_ms(&self) -> Option<i64> {
        let value = self.execute_after.as_deref()?.trim();
        value.parse::<i64>().ok().or_else(|| {
            chrono::DateTime::parse_from_rfc3339(value)
                .ok()
                .map(|t| t.timestamp_millis())
        })
    }
}

#[derive(Default)]
struct State {
    light: bool,
    records: Vec<Record>,
    total: u64,
    keys: HashSet<String>,
}

/// Becomes the sink and never returns when this process was started as
/// `<bench> __sink`; returns at once otherwise.
pub fn run_sink_if_asked() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some("__sink") {
        return;
    }
    let light = args.iter().any(|a| a == "--light");
    let code = match serve(light) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("sink: {err:#}");
            1
        }
    };
    std::process::exit(code);
}

fn serve(light: bool) -> Result<()> {
    let state = web::Data::new(Mutex::new(State {
        light,
        ..State::default()
    }));
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(1 << 20))
                .route("/_records", web::get().to(records))
                .route("/_count", web::get().to(count))
                .route("/_reset", web::post().to(reset))
                .default_service(web::to(record))
        })
        .workers(2)
        .disable_signals()
        .bind("127.0.0.1:0")?;
        let port = server.addrs().first().context("no address")?.port();
        println!("SINK_PORT={port}");
        use std::io::Write as _;
        std::io::stdout().flush()?;
        server.run().await?;
        Ok(())
    })
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

async fn record(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<Mutex<State>>,
) -> HttpResponse {
    let at_ns = now_ns();
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let key = header("idempotency-key").unwrap_or_default();
    let Ok(mut state) = state.lock() else {
        return HttpResponse::InternalServerError().finish();
    };
    state.total += 1;
    if state.light {
        state.keys.insert(key);
    } else {
        let entry = Record {
            at_ns,
            path: request.path().to_owned(),
            key,
            execute_after: header("x-taskqueue-execute-after"),
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        state.records.push(entry);
    }
    HttpResponse::Ok().finish()
}

async fn records(state: web::Data<Mutex<State>>) -> HttpResponse {
    match state.lock() {
        Ok(state) => HttpResponse::Ok().json(&state.records),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Count {
    total: u64,
    distinct: u64,
}

async fn count(state: web::Data<Mutex<State>>) -> HttpResponse {
    match state.lock() {
        Ok(state) => {
            let distinct = if state.light {
                state.keys.len()
            } else {
                state
                    .records
                    .iter()
                    .map(|r| r.key.as_str())
                    .collect::<HashSet<_>>()
                    .len()
            } as u64;
            HttpResponse::Ok().json(Count {
                total: state.total,
                distinct,
            })
        }
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

async fn reset(state: web::Data<Mutex<State>>) -> HttpResponse {
    match state.lock() {
        Ok(mut state) => {
            state.records.clear();
            state.keys.clear();
            state.total = 0;
            HttpResponse::Ok().finish()
        }
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

/// The sink child process; killed on drop.
pub struct Sink {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its pid (for its CPU time).
    pub pid: u32,
    client: reqwest::Client,
}

impl Sink {
    /// Starts a sink; `light` keeps counts only.
    pub fn start(light: bool) -> Result<Sink> {
        let mut command = Command::new(std::env::current_exe()?);
        command.arg("__sink");
        if light {
            command.arg("--light");
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawn the sink")?;
        let stdout = child.stdout.take().context("sink stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(port) = line
            .trim()
            .strip_prefix("SINK_PORT=")
            .and_then(|p| p.parse().ok())
        else {
            let _ = child.kill();
            bail!("the sink did not start: {line:?}");
        };
        Ok(Sink {
            pid: child.id(),
            child,
            port,
            client: reqwest::Client::new(),
        })
    }

    /// The URL of `path` on the sink.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request recorded so far.
    pub async fn records(&self) -> Result<Vec<Record>> {
        Ok(self
            .client
            .get(self.url("/_records"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// (requests, distinct job ids) so far.
    pub async fn count(&self) -> Result<(u64, u64)> {
        let count: Count = self
            .client
            .get(self.url("/_count"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok((count.total, count.distinct))
    }

    /// Forgets every request.
    pub async fn reset(&self) -> Result<()> {
        self.client
            .post(self.url("/_reset"))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// As a watched process.
    pub fn watched(&self) -> super::Watched {
        super::Watched {
            name: "sink".into(),
            pid: self.pid,
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
