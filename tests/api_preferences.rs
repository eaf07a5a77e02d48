//! Black-box tests of the preferences API: a real server on a random port
//! over a real Redis and RabbitMQ, each test in its own key prefix and vhost
//! (`support::Backends`).

use crate::support;

use std::{net::SocketAddr, path::PathBuf};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::Backends;
use taskqueue::{Role, startup::Application};

const TASKS_YAML: &str = r#"
tasks:
  - id: daily_report
    name: Daily report
    interval: { type: daily, value: 1, at_time: "08:00" }
    timeout: 30s
    config: { endpoint: "http://127.0.0.1:9/report", method: POST }
  - id: weekly_digest
    name: Weekly digest
    interval: { type: weekly, value: 1 }
    timeout: 30s
    config: { endpoint: "http://127.0.0.1:9/digest", method: POST }
"#;

struct TestApp {
    address: SocketAddr,
    client: reqwest::Client,
    backends: Backends,
    tasks_file: PathBuf,
    token: Option<String>,
}

async fn spawn_app() -> TestApp {
    spawn_app_with_token(None).await
}

async fn spawn_app_with_token(token: Option<&str>) -> TestApp {
    let backends = Backends::new("api");
    let tasks_file = support::temp_file("tasks.yaml", TASKS_YAML);
    let mut config = support::config(&backends);
    config.tasks.config_file = tasks_file.clone();
    config.api.token = token.map(str::to_owned);
    let app = Application::build(config, Role::All, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let address = app.address();
    actix_rt::spawn(app.run_until_stopped());
    TestApp {
        address,
        client: reqwest::Client::new(),
        backends,
        tasks_file,
        token: token.map(str::to_owned),
    }
}

impl TestApp {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn put_task(&self, user: &str, task: &str, body: &Value) -> (StatusCode, Value) {
        let request = self
            .client
            .put(self.url(&format!("/users/{user}/tasks/{task}")))
            .json(body);
        let response = self.authorize(request).send().await.unwrap();
        (response.status(), json_body(response).await)
    }

    async fn put_raw(&self, user: &str, task: &str, body: &str) -> (StatusCode, Value) {
        let request = self
            .client
            .put(self.url(&format!("/users/{user}/tasks/{task}")))
            .header("content-type", "application/json")
            .body(body.to_owned());
        let response = self.authorize(request).send().await.unwrap();
        (response.status(), json_body(response).await)
    }

    async fn delete_task(&self, user: &str, task: &str) -> (StatusCode, Value) {
        let request = self
            .client
            .delete(self.url(&format!("/users/{user}/tasks/{task}")));
        let response = self.authorize(request).send().await.unwrap();
        (response.status(), json_body(response).await)
    }

    async fn get_preferences(&self, user: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(self.url(&format!("/users/{user}/preferences")))
            .send()
            .await
            .unwrap();
        (response.status(), json_body(response).await)
    }

    /// Removes the tasks file; the prefix and vhost go with `backends`.
    async fn cleanup(self) {
        let _ = std::fs::remove_file(&self.tasks_file);
        drop(self.backends);
    }
}

async fn json_body(response: reqwest::Response) -> Value {
    let text = response.text().await.unwrap();
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|err| panic!("not JSON ({err}): {text}"))
    }
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[actix_rt::test]
async fn put_then_get_returns_the_user_preference() {
    let app = spawn_app().await;
    let (status, body) = app
        .put_task("user_1", "daily_report", &json!({"enabled": true}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], "user_1");
    assert_eq!(body["enabled_tasks"], json!({"daily_report": true}));
    assert_eq!(body["task_settings"], json!({}));
    assert!(body["last_modified"].as_str().unwrap().ends_with('Z'));

    let settings = json!({
        "custom_interval": {"type": "daily", "value": 2, "timezone": "Europe/Paris", "at_time": "07:30"},
        "parameters": {"lang": "fr"}
    });
    let (status, body) = app
        .put_task(
            "user_1",
            "weekly_digest",
            &json!({"enabled": false, "settings": settings}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["enabled_tasks"],
        json!({"daily_report": true, "weekly_digest": false})
    );
    assert_eq!(body["task_settings"], json!({"weekly_digest": settings}));

    let (status, fetched) = app.get_preferences("user_1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, body);

    // PUT replaces: settings omitted removes them.
    let (status, body) = app
        .put_task("user_1", "weekly_digest", &json!({"enabled": true}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["task_settings"], json!({}));
    app.cleanup().await;
}

#[actix_rt::test]
async fn get_of_an_unknown_user_is_404() {
    let app = spawn_app().await;
    let (status, body) = app.get_preferences("nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nobody")
    );
    app.cleanup().await;
}

#[actix_rt::test]
async fn delete_removes_the_preference() {
    let app = spawn_app().await;
    app.put_task("user_1", "daily_report", &json!({"enabled": true}))
        .await;
    app.put_task("user_1", "weekly_digest", &json!({"enabled": true}))
        .await;
    let (status, body) = app.delete_task("user_1", "daily_report").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::Null);
    let (_, prefs) = app.get_preferences("user_1").await;
    assert_eq!(prefs["enabled_tasks"], json!({"weekly_digest": true}));
    let (status, body) = app.delete_task("user_1", "daily_report").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");
    let (status, _) = app.delete_task("user_1", "weekly_digest").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get_preferences("user_1").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no preference left");
    app.cleanup().await;
}

#[actix_rt::test]
async fn bad_requests_get_json_errors() {
    let app = spawn_app().await;
    let cases: [(&str, &str, &str, StatusCode, &str); 9] = [
        (
            "user_1",
            "no_such_task",
            r#"{"enabled":true}"#,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "user_1",
            "bad:task",
            r#"{"enabled":true}"#,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "bad:user",
            "daily_report",
            r#"{"enabled":true}"#,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "user_1",
            "daily_report",
            r#"{"enabled":"yes"}"#,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "user_1",
            "daily_report",
            r#"{}"#,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "user_1",
            "daily_report",
            r#"not json"#,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "user_1",
            "daily_report",
            r#"{"enabled":true,"extra":1}"#,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "user_1",
            "daily_report",
            r#"{"enabled":true,"settings":{"custom_interval":{"type":"daily","value":0}}}"#,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "user_1",
            "daily_report",
            r#"{"enabled":true,"settings":{"custom_interval":{"type":"fortnightly","value":1}}}"#,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ];
    for (user, task, body, want_status, want_code) in cases {
        let (status, response) = app.put_raw(user, task, body).await;
        assert_eq!(status, want_status, "PUT {user}/{task} {body}: {response}");
        assert_eq!(error_code(&response), want_code, "PUT {user}/{task} {body}");
    }
    let (status, body) = app.get_preferences("bad:user").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "bad_request");
    let (status, body) = app.delete_task("bad:user", "daily_report").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "bad_request");
    let (status, _) = app.get_preferences("user_1").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was written");
    app.cleanup().await;
}

#[actix_rt::test]
async fn mutations_need_the_bearer_token_when_one_is_configured() {
    let app = spawn_app_with_token(Some("s3cret")).await;
    let url = app.url("/users/user_1/tasks/daily_report");
    let cases = [
        (None, StatusCode::UNAUTHORIZED),
        (Some("Bearer wrong"), StatusCode::UNAUTHORIZED),
        (Some("Basic s3cret"), StatusCode::UNAUTHORIZED),
        (Some("Bearer s3cret"), StatusCode::OK),
    ];
    for (header, want) in cases {
        let mut request = app.client.put(&url).json(&json!({"enabled": true}));
        if let Some(header) = header {
            request = request.header("authorization", header);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body = json_body(response).await;
        assert_eq!(status, want, "authorization {header:?}: {body}");
        if want == StatusCode::UNAUTHORIZED {
            assert_eq!(error_code(&body), "unauthorized");
        }
    }
    let response = app.client.delete(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Reads stay open.
    let (status, _) = app.get_preferences("user_1").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.delete_task("user_1", "daily_report").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    app.cleanup().await;
}

#[actix_rt::test]
async fn time_zones_per_task_and_per_user_are_validated_and_kept() {
    let app = spawn_app().await;
    // A zone in the task's settings round-trips.
    let (status, body) = app
        .put_task(
            "user_tz",
            "daily_report",
            &json!({"enabled": true, "settings": {"timezone": "Asia/Tokyo"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["task_settings"]["daily_report"],
        json!({"timezone": "Asia/Tokyo"})
    );
    // An unknown settings field, and an unknown zone, are 400s naming them.
    let (status, body) = app
        .put_raw(
            "user_tz",
            "daily_report",
            r#"{"enabled":true,"settings":{"time_zone":"Asia/Tokyo"}}"#,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("time_zone"),
        "{body}"
    );
    let (status, body) = app
        .put_raw(
            "user_tz",
            "daily_report",
            r#"{"enabled":true,"settings":{"timezone":"Mars/Olympus"}}"#,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Mars/Olympus"),
        "{body}"
    );

    // The user's default zone: PUT, GET, unknown zone refused, null clears.
    let put_user = |body: &'static str| {
        let request = app
            .client
            .put(app.url("/users/user_tz"))
            .header("content-type", "application/json")
            .body(body);
        app.authorize(request).send()
    };
    let response = put_user(r#"{"timezone":"Europe/Paris"}"#).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        json_body(response).await,
        json!({"user_id": "user_tz", "timezone": "Europe/Paris"})
    );
    let response = app
        .client
        .get(app.url("/users/user_tz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_body(response).await,
        json!({"user_id": "user_tz", "timezone": "Europe/Paris"})
    );
    let (_, prefs) = app.get_preferences("user_tz").await;
    assert_eq!(prefs["timezone"], "Europe/Paris");
    let response = put_user(r#"{"timezone":"Europe/Parris"}"#).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = json_body(response).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Europe/Parris"),
        "{body}"
    );
    let response = put_user(r#"{"timezone":null}"#).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .client
        .get(app.url("/users/user_tz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_body(response).await,
        json!({"user_id": "user_tz", "timezone": null})
    );
    app.cleanup().await;
}
