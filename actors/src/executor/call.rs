//! The HTTP call of one attempt: the pool's shared client
//! ([`http_client`]), the call's timeout ([`call_timeout`]), the request
//! built from the task and the job ([`call_endpoint`]: headers, the JSON
//! body or a filled payload template, query parameters for GET and
//! DELETE, the user's parameters checked first), at most 1 KiB of the
//! answer read (`KEPT_RESPONSE_BYTES`), and error text with the call's
//! secrets redacted.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::ExecutionSettings;
use crate::{
    domain::{Job, TaskType, TaskTypeId, UserId},
    error::PipelineError,
};

/// Response bytes kept in a dead letter's `ExecutionResult`.
const KEPT_RESPONSE_BYTES: usize = 1024;

/// The HTTP client every executor of a pool shares: at most `pool_size`
/// idle connections kept per host (no more calls than executors are ever
/// in flight), redirects not followed (a 3xx is the endpoint's answer).
pub fn http_client(pool_size: usize) -> Result<reqwest::Client, PipelineError> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(pool_size.max(1))
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .build()
        .map_err(|err| PipelineError::HttpClient(err.to_string()))
}

/// The smallest of the task's `timeout`, its `config.max_duration` and
/// `execution.timeout`.
pub fn call_timeout(task: &TaskType, settings: &ExecutionSettings) -> Duration {
    let mut timeout = task.timeout.min(settings.timeout);
    if let Some(max) = task.config.max_duration {
        timeout = timeout.min(max);
    }
    timeout.max(Duration::from_millis(1))
}

/// The JSON body of a call (POST, PUT, PATCH), encoded straight from the
/// job.
#[derive(serde::Serialize)]
struct CallBody<'a> {
    job_id: Uuid,
    task_type_id: &'a TaskTypeId,
    user_id: &'a UserId,
    scheduled_at: DateTime<Utc>,
    attempt: u32,
    parameters: &'a BTreeMap<String, String>,
}

/// A random (version 4) id from the thread's generator, without a system
/// call.
pub(super) fn fresh_uuid() -> Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

/// What a call to an endpoint came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CallResult {
    /// The endpoint answered.
    Status {
        /// HTTP status code.
        code: u16,
        /// The `Retry-After` header, if any.
        retry_after: Option<String>,
        /// The start of the response body.
        body: Vec<u8>,
    },
    /// No answer within the timeout.
    Timeout,
    /// The connection could not be made or broke.
    Connect(String),
    /// The request could not be built (bad method, URL, header).
    Invalid(String),
}

/// Calls the endpoint of `task` for `job`: the task's method and headers,
/// `Idempotency-Key: <job id>`, `X-Taskqueue-Attempt: <n>`,
/// `X-Taskqueue-Execute-After: <RFC 3339 instant the job was due>` (so an
/// endpoint can tell how late it runs), and as the body, when the task has
/// a `config.payload` template, the job's payload with its
/// `{{param.NAME}}` filled from `parameters`, else the job as JSON (query
/// parameters for GET and DELETE).
pub(super) async fn call_endpoint(
    client: &reqwest::Client,
    task: &TaskType,
    job: &Job,
    parameters: &BTreeMap<String, String>,
    timeout: Duration,
) -> CallResult {
    let method = match reqwest::Method::from_bytes(task.config.method.to_uppercase().as_bytes()) {
        Ok(method) => method,
        Err(err) => return CallResult::Invalid(format!("method {:?}: {err}", task.config.method)),
    };
    let mut request = client
        .request(method.clone(), &task.config.endpoint)
        .timeout(timeout);
    for (name, value) in &task.config.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    request = request
        .header("Idempotency-Key", job.id.to_string())
        .header("X-Taskqueue-Attempt", job.attempt.to_string())
        .header(
            "X-Taskqueue-Execute-After",
            job.execute_after
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        );
    let in_query = method == reqwest::Method::GET || method == reqwest::Method::DELETE;
    if let Err(problem) = check_parameters(parameters, in_query) {
        return CallResult::Invalid(problem);
    }
    if in_query {
        let mut query: Vec<(String, String)> = vec![
            ("job_id".to_owned(), job.id.to_string()),
            ("task_type_id".to_owned(), job.task_type_id.to_string()),
            ("user_id".to_owned(), job.user_id.to_string()),
            ("scheduled_at".to_owned(), job.scheduled_at.to_rfc3339()),
            ("attempt".to_owned(), job.attempt.to_string()),
        ];
        query.extend(parameters.iter().map(|(k, v)| (k.clone(), v.clone())));
        request = request.query(&query);
    } else if let Some(template) = &task.config.payload {
        // The task has a payload template: the job's payload (rendered for
        // the user when the job was made, or brought by the message) is the
        // body; a job made before the template was added renders it now.
        let payload = if job.payload.is_empty() {
            crate::domain::payload::render_payload(template, &job.user_id)
        } else {
            job.payload.clone()
        };
        if !task
            .config
            .headers
            .keys()
            .any(|name| name.eq_ignore_ascii_case("content-type"))
        {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json");
        }
        request = request.body(crate::domain::payload::fill_parameters(
            &payload, parameters,
        ));
    } else {
        request = request.json(&CallBody {
            job_id: job.id,
            task_type_id: &job.task_type_id,
            user_id: &job.user_id,
            scheduled_at: job.scheduled_at,
            attempt: job.attempt,
            parameters,
        });
    }
    let call = async {
        let mut response = request.send().await?;
        let code = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Only the first KEPT_RESPONSE_BYTES are kept, so no more is read
        // (a longer body costs its connection, not its size in memory).
        let mut body = Vec::new();
        while body.len() < KEPT_RESPONSE_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = KEPT_RESPONSE_BYTES - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) | Err(_) => break,
            }
        }
        Ok::<_, reqwest::Error>(CallResult::Status {
            code,
            retry_after,
            body,
        })
    };
    // reqwest's error text names the URL (credentials, and every user
    // parameter of a GET): it is left out, and the task's secrets and the
    // user's parameter values are redacted from what remains.
    match tokio::time::timeout(timeout, call).await {
        Err(_) => CallResult::Timeout,
        Ok(Ok(result)) => result,
        Ok(Err(err)) if err.is_timeout() => CallResult::Timeout,
        Ok(Err(err)) if err.is_builder() => {
            CallResult::Invalid(redact(&error_chain(&err.without_url()), task, parameters))
        }
        Ok(Err(err)) => {
            CallResult::Connect(redact(&error_chain(&err.without_url()), task, parameters))
        }
    }
}

/// The fields taskqueue puts in every call's query string (GET, DELETE);
/// no user parameter may take one of these names.
const BUILT_IN_FIELDS: [&str; 5] = [
    "job_id",
    "task_type_id",
    "user_id",
    "scheduled_at",
    "attempt",
];

/// Most user parameters sent with one call.
const MAX_PARAMETERS: usize = 64;

/// Longest parameter name, in bytes.
const MAX_PARAMETER_NAME: usize = 128;

/// Most bytes of all parameter names and values of one call together.
const MAX_PARAMETER_BYTES: usize = 16 * 1024;

/// Checks a user's parameters before they are sent: at most
/// [`MAX_PARAMETERS`], names of at most [`MAX_PARAMETER_NAME`] bytes, all
/// together at most [`MAX_PARAMETER_BYTES`], and, when they go in the
/// query string (`in_query`), none named like a [`BUILT_IN_FIELDS`] entry
/// (it would shadow the real one). The problem names no value.
fn check_parameters(parameters: &BTreeMap<String, String>, in_query: bool) -> Result<(), String> {
    if parameters.len() > MAX_PARAMETERS {
        return Err(format!(
            "{} parameters, at most {MAX_PARAMETERS} allowed",
            parameters.len()
        ));
    }
    let mut bytes = 0usize;
    for (name, value) in parameters {
        if name.len() > MAX_PARAMETER_NAME {
            return Err(format!(
                "a parameter name of {} bytes, at most {MAX_PARAMETER_NAME} allowed",
                name.len()
            ));
        }
        if in_query && BUILT_IN_FIELDS.contains(&name.as_str()) {
            return Err(format!(
                "parameter {name:?} would shadow the built-in query field of that name"
            ));
        }
        bytes = bytes.saturating_add(name.len() + value.len());
    }
    if bytes > MAX_PARAMETER_BYTES {
        return Err(format!(
            "parameters of {bytes} bytes, at most {MAX_PARAMETER_BYTES} allowed"
        ));
    }
    Ok(())
}

/// `text` with every secret of the call replaced by `[redacted]`: the
/// task's header values, the endpoint's user info and query, and the
/// user's parameter values.
fn redact(text: &str, task: &TaskType, parameters: &BTreeMap<String, String>) -> String {
    let mut secrets: Vec<String> = task
        .config
        .headers
        .values()
        .chain(parameters.values())
        .cloned()
        .collect();
    if let Ok(url) = reqwest::Url::parse(&task.config.endpoint) {
        secrets.push(url.username().to_owned());
        secrets.extend(url.password().map(str::to_owned));
        secrets.extend(url.query().map(str::to_owned));
        secrets.extend(url.query_pairs().map(|(_, value)| value.into_owned()));
    }
    // Longest first, so a secret containing another is replaced whole;
    // very short values (a `1`, a `true`) would redact ordinary words.
    secrets.retain(|secret| secret.len() >= 4);
    secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    let mut text = text.to_owned();
    for secret in &secrets {
        text = text.replace(secret.as_str(), "[redacted]");
    }
    text
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn parameters_are_bounded_and_never_shadow_built_in_fields() {
        let check = |parameters: BTreeMap<String, String>, in_query: bool, ok: bool| {
            let got = check_parameters(&parameters, in_query);
            assert_eq!(got.is_ok(), ok, "{got:?}");
        };
        check(params(&[("lang", "fr")]), true, true);
        check(params(&[("user_id", "mallory")]), true, false);
        check(params(&[("attempt", "1")]), true, false);
        // In a JSON body they sit under `parameters`: nothing to shadow.
        check(params(&[("user_id", "mallory")]), false, true);
        let many: BTreeMap<String, String> = (0..=MAX_PARAMETERS)
            .map(|n| (format!("p{n}"), "v".to_owned()))
            .collect();
        check(many, false, false);
        check(
            params(&[(&"n".repeat(MAX_PARAMETER_NAME + 1), "v")]),
            false,
            false,
        );
        check(
            params(&[("big", &"v".repeat(MAX_PARAMETER_BYTES))]),
            false,
            false,
        );
        check(
            params(&[("ok", &"v".repeat(MAX_PARAMETER_BYTES - 2))]),
            false,
            true,
        );
    }

    fn secret_task(endpoint: &str) -> TaskType {
        serde_json::from_value(serde_json::json!({
            "id": "report", "name": "report",
            "interval": {"type": "daily", "value": 1}, "timeout": "5s",
            "config": {
                "endpoint": endpoint, "method": "GET",
                "headers": {"Authorization": "Bearer hunter2-token"}
            }
        }))
        .unwrap()
    }

    #[actix::test]
    async fn connection_errors_name_no_url_and_no_secret() {
        // Nothing listens on port 1 of loopback: the connection is refused.
        let task = secret_task("http://admin:s3cret-pass@127.0.0.1:1/hook?api_key=k3y-value");
        let job = Job {
            id: Uuid::new_v4(),
            task_type_id: task.id.clone(),
            user_id: UserId::parse("alice").unwrap(),
            scheduled_at: now(),
            execute_after: now(),
            attempt: 1,
            priority: crate::domain::Priority::Normal,
            payload: Vec::new(),
            created_at: now(),
        };
        let parameters = params(&[("email", "alice@example.com")]);
        let client = http_client(1).unwrap();
        let call = call_endpoint(&client, &task, &job, &parameters, Duration::from_secs(5)).await;
        let CallResult::Connect(text) = call else {
            panic!("expected a connection error, got {call:?}");
        };
        for secret in [
            "s3cret-pass",
            "k3y-value",
            "alice@example.com",
            "127.0.0.1:1/hook",
            "admin",
        ] {
            assert!(!text.contains(secret), "{secret:?} in {text:?}");
        }
    }

    #[test]
    fn redaction_replaces_every_secret_of_the_call() {
        let task = secret_task("https://bot:pa55word@api.example/x?sig=abcdef");
        let text = "failed: pa55word abcdef Bearer hunter2-token alice@example.com 1";
        let got = redact(
            text,
            &task,
            &params(&[("email", "alice@example.com"), ("n", "1")]),
        );
        assert_eq!(got, "failed: [redacted] [redacted] [redacted] [redacted] 1");
    }
}
