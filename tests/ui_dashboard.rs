//! The dashboard (`/ui`) on the real Redis and RabbitMQ, driven over HTTP
//! as a browser would (cookies kept, redirects not followed): the login
//! form and its session cookie, CSRF on every mutating form, the numbers
//! the pages show, a pause from the tasks page, and a dead letter replayed
//! through the confirmation step reaching the endpoint again.

use crate::support;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use actors::clock::SystemClock;
use serde_json::{Value, json};
use support::*;

/// A browser: a cookie jar over a client that does not follow redirects.
struct Browser {
    client: reqwest::Client,
    base: String,
    cookies: BTreeMap<String, String>,
}

/// What a request answered.
struct Page {
    status: u16,
    location: String,
    body: String,
}

impl Browser {
    fn new(app: &RunningApp) -> Browser {
        Browser {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: format!("http://{}", app.address),
            cookies: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let response = request
            .header("Cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        for value in response.headers().get_all("set-cookie") {
            let text = value.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || text.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
            .to_owned();
        Page {
            status,
            location,
            body: response.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let request = self.client.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(request).await
    }

    fn csrf(&self) -> String {
        self.cookies.get("tq_csrf").cloned().expect("a CSRF cookie")
    }
}

/// The text of the first element of `page` carrying `marker` (an
/// attribute such as `data-field="enabled_users"`), tags stripped.
fn text_at(page: &str, marker: &str) -> String {
    let start = page
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in {page}"));
    let rest = &page[start..];
    let open = rest.find('>').unwrap() + 1;
    let mut text = String::new();
    let mut in_tag = false;
    for c in rest[open..].chars() {
        match c {
            '<' if !in_tag && rest[open..].starts_with("</") => break,
            '<' => in_tag = true,
            '>' => in_tag = false,
            _ if !in_tag => text.push(c),
            _ => {}
        }
        if !in_tag && text.ends_with('\n') {
            break;
        }
    }
    text.trim().to_owned()
}

fn task_to(id: &str, endpoint: String) -> actors::domain::TaskType {
    task(json!({
        "id": id, "name": id,
        "interval": {"type": "daily", "value": 1},
        "timeout": "10s", "retries": 0,
        "config": {"endpoint": endpoint, "method": "POST"}
    }))
}

#[actix_rt::test]
async fn the_token_is_asked_once_and_every_form_needs_its_csrf_token() {
    let sink = Sink::start();
    let backends = Backends::new("ui-login");
    let mut config = config(&backends);
    config.api.token = Some("s3cret".to_owned());
    config.api.protect_reads = true;
    let replica_config = config.clone();
    let app = spawn_app(
        config,
        vec![task_to("report", sink.url("/ok/report"))],
        Arc::new(SystemClock),
    )
    .await;
    let store = backends.store().await;
    let users: Vec<String> = (0..7).map(|i| format!("u{i}")).collect();
    enable_users(&store, "report", &users).await;

    let mut browser = Browser::new(&app);
    let page = browser.get("/ui/tasks").await;
    assert_eq!((page.status, page.location.as_str()), (303, "/ui/login"));
    let page = browser.get("/ui/login").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains(r#"<label for="token">API token</label>"#)
    );
    let csrf = browser.csrf();

    // A login without the form's CSRF token, or with a wrong token, fails.
    let page = browser.post("/ui/login", &[("token", "s3cret")]).await;
    assert_eq!(page.status, 403, "{}", page.body);
    let page = browser
        .post("/ui/login", &[("token", "wrong"), ("csrf", &csrf)])
        .await;
    assert_eq!(page.status, 401, "{}", page.body);
    assert!(!browser.cookies.contains_key("tq_session"));
    let page = browser
        .post("/ui/login", &[("token", "s3cret"), ("csrf", &csrf)])
        .await;
    assert_eq!((page.status, page.location.as_str()), (303, "/ui/"));
    let session = browser.cookies.get("tq_session").cloned().unwrap();
    assert_ne!(session, "s3cret", "the cookie is not the token");

    // Signed in: the pages show the store's numbers (reads need no header).
    let page = browser.get("/ui/tasks").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(text_at(&page.body, r#"data-field="enabled_users""#), "7");
    assert!(page.body.contains("every day at 00:00"));
    let page = browser.get("/ui/tasks/report").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(text_at(&page.body, r#"id="enabled-users""#), "7");
    let page = browser.get("/ui/users?user_id=u3").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(r#"data-task="report""#), "{}", page.body);
    assert!(text_at(&page.body, r#"data-field="offset""#).starts_with('+'));
    for path in [
        "/ui/",
        "/ui/dead-letters",
        "/ui/assets/app.css",
        "/ui/assets/app.js",
    ] {
        let page = browser.get(path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
    }
    let page = browser.get("/ui/users?user_id=a:b").await;
    assert_eq!(page.status, 400, "{}", page.body);

    // Pause: refused without the CSRF token or from another origin, done
    // with it, and every replica sees it in the status.
    let page = browser.post("/ui/tasks/report/pause", &[]).await;
    assert_eq!(page.status, 403);
    let request = browser
        .client
        .post(format!("{}/ui/tasks/report/pause", browser.base))
        .header("Origin", "http://elsewhere.example")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"));
    assert_eq!(browser.send(request).await.status, 403);
    let (_, status) = get_with_token(&app, "/schedule/status/report").await;
    assert_eq!(status["paused"], false, "{status}");
    let page = browser
        .post("/ui/tasks/report/pause", &[("csrf", &csrf)])
        .await;
    assert_eq!((page.status, page.location.as_str()), (303, "/ui/tasks"));
    let (_, status) = get_with_token(&app, "/schedule/status/report").await;
    assert_eq!(status["paused"], true, "{status}");
    let page = browser.get("/ui/tasks").await;
    assert!(page.body.contains("Resume report"), "{}", page.body);

    // Another replica with the same token accepts the session (the
    // cookie is signed, not kept in one replica's memory) and shows the
    // pause made through the first.
    let replica = spawn_app(
        replica_config,
        vec![task_to("report", sink.url("/ok/report"))],
        Arc::new(SystemClock),
    )
    .await;
    let mut other = Browser::new(&replica);
    other.cookies = browser.cookies.clone();
    let page = other.get("/ui/tasks").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Resume report"), "{}", page.body);
    // The overview lists both replicas from their reports.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let page = other.get("/ui/").await;
        assert_eq!(page.status, 200, "{}", page.body);
        let listed = page.body.matches(r#"data-role="all""#).count();
        if listed == 2 {
            assert!(
                page.body.contains(&replica.address.to_string()),
                "{}",
                page.body
            );
            assert!(
                page.body.contains(&app.address.to_string()),
                "{}",
                page.body
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the overview lists {listed} replicas: {}",
            page.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    other
        .cookies
        .insert("tq_session".to_owned(), format!("{session}0"));
    let page = other.get("/ui/tasks").await;
    assert_eq!(
        (page.status, page.location.as_str()),
        (303, "/ui/login"),
        "an altered cookie is refused"
    );

    // Signing out ends the session.
    let page = browser.post("/ui/logout", &[("csrf", &csrf)]).await;
    assert_eq!(page.status, 303);
    browser
        .cookies
        .insert("tq_session".to_owned(), session.clone());
    let page = browser.get("/ui/tasks").await;
    assert_eq!((page.status, page.location.as_str()), (303, "/ui/login"));
}

async fn get_with_token(app: &RunningApp, path: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("http://{}{path}", app.address))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[actix_rt::test]
async fn a_dead_letter_replayed_from_the_page_reaches_the_endpoint_again() {
    let sink = Sink::start();
    let backends = Backends::new("ui-dead-letters");
    let mut config = config(&backends);
    // The first 429 of a job dead-letters it; the sink answers 200 to the
    // second call with the same key.
    config.execution.throttles_per_attempt = 0;
    let app = spawn_app(
        config,
        vec![task_to("busy", sink.url("/throttle/busy"))],
        Arc::new(SystemClock),
    )
    .await;
    let (status, body) = post(
        app.address,
        "/schedule/trigger",
        &json!({"task_type_id": "busy", "user_ids": ["alice"], "execute_immediately": true}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let first = sink
        .wait_for("/throttle/", 1, Duration::from_secs(60))
        .await;
    assert_eq!(first.len(), 1);

    let mut browser = Browser::new(&app);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let page = browser.get("/ui/dead-letters?task_type_id=busy").await;
        assert_eq!(page.status, 200, "{}", page.body);
        if page.body.contains("data-job=") || std::time::Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let marker = r#"data-job=""#;
    let at = listed.body.find(marker).expect("the dead letter is listed") + marker.len();
    let job_id = listed.body[at..at + 36].to_owned();
    assert!(
        listed.body.contains("throttled_too_long"),
        "{}",
        listed.body
    );
    let csrf = browser.csrf();

    // The first post only asks for confirmation: nothing is published.
    let page = browser
        .post(
            "/ui/dead-letters/confirm",
            &[("csrf", &csrf), ("action", "replay"), ("job_id", &job_id)],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Replay 1 dead letter?"), "{}", page.body);
    assert_eq!(sink.received_at("/throttle/").len(), 1);
    let page = browser
        .post(
            "/ui/dead-letters/apply",
            &[("action", "replay"), ("job_id", &job_id)],
        )
        .await;
    assert_eq!(page.status, 403, "no CSRF token, no replay");

    let page = browser
        .post(
            "/ui/dead-letters/apply",
            &[("csrf", &csrf), ("action", "replay"), ("job_id", &job_id)],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("1 dead letter replayed."),
        "{}",
        page.body
    );
    let calls = sink
        .wait_for("/throttle/", 2, Duration::from_secs(60))
        .await;
    assert_eq!(calls.len(), 2, "the replay reached the endpoint");
    assert_eq!(calls[1].key(), calls[0].key(), "same Idempotency-Key");
    assert_eq!(calls[1].key(), job_id);
    let page = browser.get("/ui/dead-letters?task_type_id=busy").await;
    assert!(
        page.body.contains(r#"id="no-dead-letters""#),
        "{}",
        page.body
    );
}
