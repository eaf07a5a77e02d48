//! The OpenAPI document against the running service: every route the
//! table registers is served at the documented path and methods and at no
//! other method, the bearer rule of each operation is the one the service
//! applies, every `$ref` resolves, the JSON the service writes for its
//! domain types conforms to their schemas, and docs/api.md is what the
//! document renders.

use crate::support;

use std::sync::Arc;

use actors::clock::SystemClock;
use reqwest::Method;
use serde_json::{Value, json};
use support::*;
use taskqueue::routes::api;

const TOKEN: &str = "s3cret-openapi";
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

fn report_task() -> actors::domain::TaskType {
    task(json!({
        "id": "report", "name": "Report",
        "interval": {"type": "daily", "value": 1},
        "timeout": "5s",
        "config": {"endpoint": "http://127.0.0.1:9/none", "method": "POST"}
    }))
}

fn document() -> Value {
    serde_json::to_value(api::openapi()).unwrap()
}

/// Every (method, path template) the document names.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut list = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            list.push((method.to_uppercase(), path.clone(), operation.clone()));
        }
    }
    list
}

/// A concrete path for a template: parameters get sample values.
fn concrete(template: &str) -> String {
    template
        .replace("{user_id}", "ann")
        .replace("{task_id}", "report")
        .replace("{task_type_id}", "report")
        .replace("{name}", "probe")
}

async fn call(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: bool,
) -> (u16, Value) {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = reqwest::Client::new().request(method, format!("http://{address}{path}"));
    if token {
        request = request.bearer_auth(TOKEN);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Whether an answer came from a route (not the JSON 404 of no route,
/// not a 405 of a path without that method).
fn routed(status: u16, body: &Value) -> bool {
    let no_route = status == 404
        && body["error"]["message"]
            .as_str()
            .is_some_and(|message| message.starts_with("no route for"));
    !no_route && status != 405
}

async fn spawn(test: &str) -> (Backends, RunningApp) {
    let backends = Backends::new(test);
    let mut config = config(&backends);
    config.api.sink = true;
    config.api.token = Some(TOKEN.to_owned());
    let app = spawn_app(config, vec![report_task()], Arc::new(SystemClock)).await;
    (backends, app)
}

#[actix_rt::test]
async fn the_served_document_is_the_route_table() {
    let (_backends, app) = spawn("openapi-served").await;
    let (status, served) = call(app.address, "GET", "/openapi.json", false).await;
    assert_eq!(status, 200, "{served}");
    assert_eq!(served, document());
    assert!(served["openapi"].as_str().unwrap().starts_with("3."));
}

#[actix_rt::test]
async fn every_documented_route_is_served_and_no_other_method() {
    let (_backends, app) = spawn("openapi-routes").await;
    let doc = document();
    let operations = operations(&doc);
    assert!(operations.len() >= 20, "{} operations", operations.len());
    for (method, template, _) in &operations {
        let path = concrete(template);
        let (status, body) = call(app.address, method, &path, true).await;
        assert!(
            routed(status, &body),
            "{method} {template} is documented but not served: {status} {body}"
        );
    }
    for template in doc["paths"].as_object().unwrap().keys() {
        assert!(
            !template.starts_with(api::HTML_PREFIX),
            "{template}: HTML pages are left out of the document"
        );
        let path = concrete(template);
        for method in METHODS {
            let documented = operations
                .iter()
                .any(|(m, t, _)| m == method && t == template);
            if documented {
                continue;
            }
            let (status, body) = call(app.address, method, &path, true).await;
            assert!(
                !routed(status, &body),
                "{method} {template} is served but not documented: {status} {body}"
            );
        }
    }
}

#[actix_rt::test]
async fn the_bearer_rule_of_each_operation_is_the_one_applied() {
    let (_backends, app) = spawn("openapi-auth").await;
    for (method, template, operation) in operations(&document()) {
        let required = operation["security"] == json!([{api::BEARER: []}]);
        let (status, body) = call(app.address, &method, &concrete(&template), false).await;
        if required {
            assert_eq!(status, 401, "{method} {template} without the token: {body}");
            assert_error(&body, "unauthorized");
        } else {
            assert_ne!(status, 401, "{method} {template} without the token: {body}");
        }
    }
}

#[test]
fn every_ref_resolves_and_every_error_is_the_error_shape() {
    let doc = document();
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for reference in refs {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{reference} is not local"));
        assert!(
            doc.pointer(pointer).is_some(),
            "{reference} does not resolve"
        );
    }
    for (method, template, operation) in operations(&doc) {
        for (status, response) in operation["responses"].as_object().unwrap() {
            // `/health`'s 503 is its own body (`status: unhealthy`).
            let error = status.starts_with('4') || (status == "503" && template != "/health");
            if error {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {template} {status}"
                );
            }
        }
    }
}

/// Whether `value` conforms to `schema` (resolving `$ref` in `doc`): the
/// JSON-schema keywords the document uses (`type`, with `null`; `oneOf`;
/// `enum`; `properties`, `required` and undeclared properties; `items`).
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    // The boolean schemas: `true` admits anything, `false` nothing.
    if let Value::Bool(admits) = schema {
        return if *admits {
            Ok(())
        } else {
            Err(format!("{at}: {value} is not admitted here"))
        };
    }
    if let Some(reference) = schema["$ref"].as_str() {
        let target = doc
            .pointer(reference.trim_start_matches('#'))
            .ok_or_else(|| format!("{at}: {reference} does not resolve"))?;
        return conforms(doc, target, value, at);
    }
    if let Some(options) = schema["oneOf"].as_array() {
        let fits = options
            .iter()
            .filter(|option| conforms(doc, option, value, at).is_ok())
            .count();
        return if fits == 1 {
            Ok(())
        } else {
            Err(format!("{at}: {value} fits {fits} of {}", schema["oneOf"]))
        };
    }
    if let Some(choices) = schema["enum"].as_array()
        && !choices.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {choices:?}"));
    }
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let allowed: Vec<&str> = match &schema["type"] {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let fits_type = allowed.is_empty()
        || allowed.contains(&kind)
        || (kind == "integer" && allowed.contains(&"number"));
    if !fits_type {
        return Err(format!(
            "{at}: {value} is {kind}, the schema says {allowed:?}"
        ));
    }
    match value {
        Value::Object(fields) => {
            let properties = schema["properties"].as_object();
            for name in schema["required"].as_array().into_iter().flatten() {
                let name = name.as_str().unwrap_or_default();
                if !fields.contains_key(name) {
                    return Err(format!("{at}: required {name} missing from {value}"));
                }
            }
            for (name, field) in fields {
                let field_at = format!("{at}.{name}");
                match properties.and_then(|p| p.get(name)) {
                    Some(property) => conforms(doc, property, field, &field_at)?,
                    None if schema.get("additionalProperties").is_some() => {
                        conforms(doc, &schema["additionalProperties"], field, &field_at)?
                    }
                    None => return Err(format!("{field_at} is not in the schema")),
                }
            }
            Ok(())
        }
        Value::Array(items) if schema.get("items").is_some() => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| conforms(doc, &schema["items"], item, &format!("{at}[{i}]"))),
        _ => Ok(()),
    }
}

#[test]
fn the_json_of_the_domain_types_conforms_to_their_schemas() {
    use actors::{
        domain::{ErrorDetail, ExecutionResult, Settings, Status},
        store::results::AttemptRecord,
    };
    let doc = document();
    let schema = |name: &str| json!({ "$ref": format!("#/components/schemas/{name}") });
    let at = |text: &str| text.parse::<chrono::DateTime<chrono::Utc>>().unwrap();
    let failed = ExecutionResult {
        job_id: uuid::Uuid::new_v4(),
        status: Status::Retrying,
        started_at: at("2026-12-03T09:00:00Z"),
        completed_at: at("2026-12-03T09:00:01Z"),
        duration: std::time::Duration::from_millis(1_234),
        error: Some(ErrorDetail {
            code: "http_500".into(),
            message: "HTTP 500".into(),
            retry: true,
        }),
        response: Some(b"{}".to_vec()),
        next_attempt: Some(at("2026-12-03T09:01:00Z")),
    };
    let envelope = actors::distributor::job_envelope(
        &report_task(),
        &actors::domain::UserId::parse("alice").unwrap(),
        at("2026-12-03T09:00:00Z"),
        at("2026-12-03T09:00:00Z"),
        None,
        actors::domain::JobSource::Scheduler,
        "test",
    );
    let settings: Settings = serde_json::from_value(json!({
        "custom_interval": {"type": "weekly", "value": 2, "timezone": "Asia/Tokyo",
                            "at_time": "02:30", "weekday": "fri"},
        "parameters": {"report_type": "summary"},
        "timezone": "Europe/Paris"
    }))
    .unwrap();
    let samples = [
        ("ExecutionResult", serde_json::to_value(&failed).unwrap()),
        (
            "ExecutionResult",
            serde_json::to_value(AttemptRecord::pending(&envelope).result).unwrap(),
        ),
        ("Settings", serde_json::to_value(&settings).unwrap()),
        (
            "ErrorBody",
            json!({"error": {"code": "not_found", "message": "no job"}}),
        ),
    ];
    for (name, value) in samples {
        conforms(&doc, &schema(name), &value, name).unwrap();
    }
    // The check refuses what does not fit.
    let mut wrong = serde_json::to_value(&failed).unwrap();
    wrong["duration"] = json!("1.234s");
    assert!(conforms(&doc, &schema("ExecutionResult"), &wrong, "wrong").is_err());
    let mut extra = serde_json::to_value(&settings).unwrap();
    extra["color"] = json!("red");
    assert!(conforms(&doc, &schema("Settings"), &extra, "extra").is_err());
    assert!(
        conforms(
            &doc,
            &schema("ErrorBody"),
            &json!({"error": {"code": "x"}}),
            "short"
        )
        .is_err()
    );
}

fn collect_refs(value: &Value, refs: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(reference)) => refs.push(reference.clone()),
                    _ => collect_refs(value, refs),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, refs)),
        _ => {}
    }
}

#[test]
fn docs_api_md_is_what_the_document_renders() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md")).unwrap();
    let rendered = api::markdown(&api::openapi());
    assert!(
        committed == rendered,
        "docs/api.md differs from the OpenAPI document: run `cargo run -- openapi --markdown > docs/api.md`"
    );
}

#[test]
fn routes_are_registered_only_through_the_table() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
    let mut stack = vec![std::path::PathBuf::from(root)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            // The table itself, and the dashboard's HTML pages: the one
            // named exclusion, all under `api::HTML_PREFIX` (`ui::configure`).
            if path.ends_with("routes/api.rs")
                || path.starts_with(concat!(env!("CARGO_MANIFEST_DIR"), "/src/ui"))
            {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for registration in [
                "web::resource(",
                "web::scope(",
                ".route(\"",
                "web::get()",
                "web::post()",
                "#[get(",
                "#[post(",
                "#[put(",
                "#[delete(",
            ] {
                assert!(
                    !text.contains(registration),
                    "{}: `{registration}` registers a route outside routes::api::table",
                    path.display()
                );
            }
        }
    }
}
