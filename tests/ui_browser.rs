//! The dashboard in headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by `scripts/services.sh`), driven over the
//! W3C WebDriver protocol, against a service on the real Redis and
//! RabbitMQ after a small run: each page loads and shows the numbers of
//! the run, the Pause button pauses the task (a trigger then releases
//! nothing) and Resume lets the held run go, a dead letter is replayed,
//! and a screenshot of each page is saved under `target/ui-screenshots/`.

use crate::support;

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use actors::clock::SystemClock;
use base64::Engine;
use serde_json::{Value, json};
use support::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session on it.
struct Browser {
    driver: Child,
    client: reqwest::Client,
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    async fn start() -> Browser {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(binary).exists(),
                "{binary} is missing: run scripts/services.sh start (it installs chromium and chromium-driver)"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let client = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = match client.get(format!("{base}/status")).send().await {
                Ok(response) => response
                    .json::<Value>()
                    .await
                    .ok()
                    .map(|s| s["value"]["ready"] == true),
                Err(_) => None,
            };
            if ready == Some(true) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,800",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let created: Value = client
            .post(format!("{base}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "goog:chromeOptions": {"binary": CHROMIUM, "args": args}
            }}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        Browser {
            driver,
            client,
            session: format!("{base}/session/{session}"),
            _profile: profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        assert!(answer["value"].get("error").is_none(), "{path}: {answer}");
        answer["value"].clone()
    }

    async fn open(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn find(&self, css: &str) -> String {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("{css}: {found}"))
            .to_owned()
    }

    /// Opens `url` again and again until the element `css` names reads
    /// `wanted` (the server renders the numbers; they change as the run's
    /// records arrive), for up to 30 s.
    async fn reload_until(&self, url: &str, css: &str, wanted: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.open(url).await;
            let text = self.text_if_any(css).await;
            if text.as_deref() == Some(wanted) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{url}: {css} never read {wanted:?} (last {text:?})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The text of the element `css` names, `None` when there is none.
    async fn text_if_any(&self, css: &str) -> Option<String> {
        let found = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found.as_array()?.first()?;
        Some(self.text(css).await)
    }

    async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        let text = self
            .call(
                reqwest::Method::GET,
                &format!("/element/{element}/text"),
                None,
            )
            .await;
        text.as_str().unwrap_or_default().trim().to_owned()
    }

    /// The text of `css` once `wanted` holds for it (the page a click
    /// opened may still be loading), within 10 seconds.
    async fn wait_text(&self, css: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        loop {
            let found: Value = self
                .client
                .post(format!("{}/element", self.session))
                .json(&json!({"using": "css selector", "value": css}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if let Some(element) = found["value"][ELEMENT].as_str() {
                let text: Value = self
                    .client
                    .get(format!("{}/element/{element}/text", self.session))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if let Some(text) = text["value"].as_str() {
                    last = text.trim().to_owned();
                    if wanted(&last) {
                        return last;
                    }
                }
            }
            assert!(Instant::now() < deadline, "{css}: last text {last:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `script` in the page and returns its value.
    async fn script(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn screenshot(&self, name: &str) {
        let shot = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot.as_str().unwrap())
            .unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

fn task_to(id: &str, interval: Value, endpoint: String) -> actors::domain::TaskType {
    task(json!({
        "id": id, "name": format!("Task {id}"),
        "interval": interval,
        "timeout": "10s", "retries": 0,
        "config": {"endpoint": endpoint, "method": "POST"}
    }))
}

/// Waits until the API lists `count` dead letters.
async fn wait_dead_letters(app: &RunningApp, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = get(app.address, "/dead-letters").await;
        let listed = body["dead_letters"].as_array().map_or(0, Vec::len);
        if listed >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{count} dead letters never listed: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_rt::test]
async fn every_page_shows_the_run_pause_and_replay_work_in_a_real_browser() {
    let sink = Sink::start();
    let backends = Backends::new("ui-browser");
    let mut config = config(&backends);
    // The first 429 of a job dead-letters it; the sink answers 200 to the
    // second call with the same key.
    config.execution.throttles_per_attempt = 0;
    let app = spawn_app(
        config,
        vec![
            task_to(
                "report",
                json!({"type": "daily", "value": 1, "at_time": "06:30"}),
                sink.url("/ok/report"),
            ),
            task_to(
                "busy",
                json!({"type": "hourly", "value": 1}),
                sink.url("/throttle/busy"),
            ),
        ],
        Arc::new(SystemClock),
    )
    .await;
    let store = backends.store().await;
    let users: Vec<String> = (0..4).map(|i| format!("user_{i}")).collect();
    enable_users(&store, "report", &users).await;
    enable_users(&store, "busy", &["alice".to_owned()]).await;
    for task in ["report", "busy"] {
        trigger_now(app.address, task).await;
    }
    let calls = sink
        .wait_for("/ok/report", 4, Duration::from_secs(60))
        .await;
    assert_eq!(calls.len(), 4);
    wait_dead_letters(&app, 1).await;

    let browser = Browser::start().await;
    let base = format!("http://{}", app.address);

    browser.open(&format!("{base}/ui/")).await;
    assert_eq!(browser.text("h1").await, "Overview");
    assert!(browser.text("[data-component=redis]").await.contains("up"));
    browser.screenshot("overview").await;

    // The period's tally counts each finish as it is recorded: reload
    // until the four successes and the dead letter's failure are in.
    let row = "tr[data-task=report]";
    let tasks = format!("{base}/ui/tasks");
    browser
        .reload_until(&tasks, &format!("{row} [data-field=succeeded]"), "4")
        .await;
    browser
        .reload_until(&tasks, "tr[data-task=busy] [data-field=failed]", "1")
        .await;
    assert_eq!(
        browser.text(&format!("{row} [data-field=failed]")).await,
        "0"
    );
    assert!(
        browser
            .text(&format!("{row} [data-field=late_p50]"))
            .await
            .starts_with('≤'),
        "a lateness bound"
    );
    assert_eq!(
        browser.text(&format!("{row} [data-field=missed]")).await,
        "0"
    );
    assert_eq!(
        browser
            .text(&format!("{row} [data-field=enabled_users]"))
            .await,
        "4"
    );
    assert_eq!(browser.text(&format!("{row} [data-field=due]")).await, "4");
    assert_eq!(
        browser.text(&format!("{row} [data-field=released]")).await,
        "4"
    );
    assert!(browser.text(row).await.contains("every day at 06:30"));
    browser.screenshot("tasks").await;

    browser.click(&format!("{row} button")).await;
    browser
        .wait_text(&format!("{row} [data-field=state]"), |text| {
            text.starts_with("paused")
        })
        .await;
    let (_, status) = get(app.address, "/schedule/status/report").await;
    assert_eq!(status["paused"], true, "{status}");

    // The day's executions, once the metrics flush has counted them.
    let today = format!(
        "#daily tr[data-day=\"{}\"] [data-field=executions]",
        chrono::Utc::now().date_naive()
    );
    browser
        .reload_until(&format!("{base}/ui/tasks/report"), &today, "4")
        .await;
    assert_eq!(
        browser
            .text(&today.replace("executions]", "failures]"))
            .await,
        "0"
    );
    assert_eq!(browser.text("#enabled-users").await, "4");
    assert_eq!(browser.text("#period [data-field=released]").await, "4");
    browser.screenshot("task-detail").await;

    // The user's last executions come from the kept job results: wait
    // until the API has user_2's finished run, then the page shows it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, runs) = get(app.address, "/users/user_2/tasks/report/runs").await;
        if runs.to_string().contains("\"success\"") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no finished run of user_2: {runs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser
        .open(&format!("{base}/ui/users?user_id=user_2"))
        .await;
    assert_eq!(
        browser
            .text("[data-task=report] [data-table=last] [data-field=status]")
            .await,
        "success"
    );
    assert!(
        browser
            .text("[data-task=report] [data-field=offset]")
            .await
            .starts_with('+')
    );
    browser.screenshot("user-lookup").await;

    // Replay: tick the dead letter, confirm, and the endpoint is called
    // again with the same key.
    browser.open(&format!("{base}/ui/dead-letters")).await;
    assert!(
        browser
            .text("#dead-letters")
            .await
            .contains("throttled_too_long")
    );
    browser.screenshot("dead-letters").await;
    browser.click("input[name=job_id]").await;
    browser.click("button[value=replay]").await;
    browser
        .wait_text("#question", |text| {
            text.starts_with("Replay 1 dead letter?")
        })
        .await;
    assert_eq!(
        sink.received_at("/throttle/").len(),
        1,
        "not before the confirmation"
    );
    browser
        .click("form[action='/ui/dead-letters/apply'] button")
        .await;
    browser
        .wait_text("#outcome", |text| text == "1 dead letter replayed.")
        .await;
    let calls = sink
        .wait_for("/throttle/", 2, Duration::from_secs(60))
        .await;
    assert_eq!(calls.len(), 2, "the replay reached the endpoint");
    assert_eq!(calls[1].key(), calls[0].key(), "same Idempotency-Key");

    // Paused, a trigger makes a run of the four users that plans and
    // releases nothing; the Resume button lets it go and the endpoint gets
    // its four calls.
    let body = trigger_now(app.address, "report").await;
    let run_id = body["run_id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, status) = get(app.address, "/schedule/status/report").await;
        let held = status["runs"]
            .as_array()
            .and_then(|runs| runs.iter().find(|run| run["run_id"] == run_id.as_str()));
        if let Some(run) = held {
            assert_eq!(run["users"], 4, "{status}");
            assert_eq!(run["released"], 0, "released while paused: {status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the trigger's run {run_id} never appeared: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.open(&format!("{base}/ui/tasks")).await;
    assert_eq!(
        browser.text(&format!("{row} [data-field=released]")).await,
        "0"
    );
    assert!(
        browser
            .text(&format!("{row} [data-field=state]"))
            .await
            .starts_with("paused")
    );
    browser.click(&format!("{row} button")).await;
    browser
        .wait_text(&format!("{row} [data-field=state]"), |text| {
            text.starts_with("running")
        })
        .await;
    let calls = sink
        .wait_for("/ok/report", 8, Duration::from_secs(60))
        .await;
    assert_eq!(calls.len(), 8, "the held run's four calls after the resume");

    // Phone width: the tasks page fits the screen (no sideways scrolling)
    // and its button stays inside it.
    browser
        .call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": 390, "height": 844})),
        )
        .await;
    browser.open(&format!("{base}/ui/tasks")).await;
    let widths = browser
        .script(
            "return [document.documentElement.clientWidth, document.documentElement.scrollWidth];",
        )
        .await;
    let (client, scroll) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
    assert!(client <= 420, "the window did not narrow: {widths}");
    assert!(
        scroll <= client,
        "the page scrolls sideways at phone width: {widths}"
    );
    let button = browser.find(&format!("{row} button")).await;
    let rect = browser
        .call(
            reqwest::Method::GET,
            &format!("/element/{button}/rect"),
            None,
        )
        .await;
    let right = rect["x"].as_f64().unwrap() + rect["width"].as_f64().unwrap();
    assert!(
        right <= client as f64,
        "the button leaves the screen: {rect}"
    );
    browser.screenshot("tasks-phone").await;
}
