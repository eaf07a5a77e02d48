//! The API's error type: every failure is `{"error": {"code", "message"}}`,
//! routed or not: a path no route takes gets [`no_route`]'s JSON 404, and
//! [`json_errors`] gives the same shape to any other error the framework
//! answers by itself (a 405, a 413, ...).
//!
//! A backend failure ([`ApiError::Unavailable`]) or an internal one
//! ([`ApiError::Internal`]) carries its detail (backend error text, key
//! names) for the log only: the detail is logged when the response is
//! made, and the client gets a stable code and message.

use actix_web::{
    HttpRequest, HttpResponse, ResponseError,
    dev::ServiceResponse,
    http::{StatusCode, header},
    middleware::{ErrorHandlerResponse, ErrorHandlers},
};
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ApiErrorDetail,
}

/// The error of an [`ErrorBody`].
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiErrorDetail {
    /// A stable, machine-readable code: `bad_request`, `not_found`,
    /// `unauthorized`, `unavailable`, `internal`, or for errors the
    /// framework answers by itself the status's reason in snake case
    /// (`method_not_allowed`, `payload_too_large`, ...).
    #[schema(example = "not_found")]
    pub code: String,
    /// A sentence for people.
    #[schema(example = "no task type \"nightly\"")]
    pub message: String,
}

impl ErrorBody {
    fn new(code: &str, message: String) -> ErrorBody {
        ErrorBody {
            error: ApiErrorDetail {
                code: code.to_owned(),
                message,
            },
        }
    }
}

/// A failed API request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request was malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// No such resource (404).
    #[error("{0}")]
    NotFound(String),
    /// Missing or wrong bearer token (401).
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// A backend failed (503). The detail is logged, never sent.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// This process refuses the request for now (503), for a reason that
    /// is safe to tell the client (shutting down, no scheduler here).
    #[error("{0}")]
    Refused(&'static str),
    /// Anything else (500). The detail is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What a client is told of a backend failure.
pub const UNAVAILABLE_MESSAGE: &str = "a backend is unavailable; try again later";
/// What a client is told of an internal failure.
pub const INTERNAL_MESSAGE: &str = "internal error";

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Unavailable(_) | ApiError::Refused(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The message the client sees; the detail of a backend or internal
    /// failure is logged here instead.
    fn public_message(&self) -> String {
        match self {
            ApiError::Unavailable(detail) => {
                tracing::warn!(%detail, "request failed: backend unavailable");
                UNAVAILABLE_MESSAGE.to_owned()
            }
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "request failed: internal error");
                INTERNAL_MESSAGE.to_owned()
            }
            other => other.to_string(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Unavailable(_) | ApiError::Refused(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .json(ErrorBody::new(self.code(), self.public_message()))
    }
}

/// JSON extractor errors become 400s with the same body shape.
pub fn json_config() -> actix_web::web::JsonConfig {
    actix_web::web::JsonConfig::default()
        .error_handler(|err, _req| ApiError::BadRequest(format!("invalid JSON body: {err}")).into())
}

/// Path extractor errors become 400s with the same body shape.
pub fn path_config() -> actix_web::web::PathConfig {
    actix_web::web::PathConfig::default()
        .error_handler(|err, _req| ApiError::BadRequest(format!("invalid path: {err}")).into())
}

/// The default service: a request no route takes (an unknown path, an
/// empty segment such as `/users//preferences`) is a JSON 404.
pub async fn no_route(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        request.method(),
        request.path()
    )))
}

/// Middleware giving every error response without a JSON body (those the
/// framework makes by itself) the API's error shape, status kept.
pub fn json_errors<B: 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(|response: ServiceResponse<B>| {
        let is_json = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                // The dashboard's error pages are HTML on purpose.
                value.starts_with("application/json") || value.starts_with("text/html")
            });
        if is_json {
            return Ok(ErrorHandlerResponse::Response(
                response.map_into_left_body(),
            ));
        }
        let (request, old) = response.into_parts();
        let status = old.status();
        let reason = status.canonical_reason().unwrap_or("error");
        let code = reason.to_lowercase().replace([' ', '-'], "_");
        let body = HttpResponse::build(status).json(ErrorBody::new(&code, reason.to_owned()));
        Ok(ErrorHandlerResponse::Response(
            ServiceResponse::new(request, body).map_into_right_body(),
        ))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use actix_web::body::MessageBody;
    use serde_json::json;

    use super::*;

    /// A log sink the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log sink").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `f` answers, and what was logged while it ran.
    pub(crate) fn logged_while<R>(f: impl FnOnce() -> R) -> (R, String) {
        let log = Captured::default();
        let sink = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        let answer = tracing::subscriber::with_default(subscriber, f);
        let logged = String::from_utf8(log.0.lock().expect("log sink").clone()).expect("UTF-8");
        (answer, logged)
    }

    /// The response to `error` as (status, body), and what was logged.
    fn respond(error: &ApiError) -> (StatusCode, serde_json::Value, String) {
        let (response, logged) = logged_while(|| error.error_response());
        let status = response.status();
        let bytes = response
            .into_body()
            .try_into_bytes()
            .unwrap_or_else(|_| panic!("a JSON body"));
        let body = serde_json::from_slice(&bytes).expect("JSON");
        (status, body, logged)
    }

    #[test]
    fn a_backend_failure_is_logged_and_answered_with_a_stable_message() {
        let detail = "redis: Connection refused (os error 111) at 10.1.2.3:6379";
        let (status, body, logged) = respond(&ApiError::Unavailable(detail.to_owned()));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            json!({"error": {"code": "unavailable", "message": UNAVAILABLE_MESSAGE}})
        );
        assert!(logged.contains(detail), "not logged: {logged}");
    }

    #[test]
    fn an_internal_failure_is_logged_and_answered_with_a_stable_message() {
        let detail = "corrupt value at taskqueue:users:u1:settings:t";
        let (status, body, logged) = respond(&ApiError::Internal(detail.to_owned()));
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body,
            json!({"error": {"code": "internal", "message": INTERNAL_MESSAGE}})
        );
        assert!(logged.contains(detail), "not logged: {logged}");
    }

    #[test]
    fn a_refusal_and_a_bad_request_keep_their_message() {
        let (status, body, _) = respond(&ApiError::Refused("shutting down: triggers are refused"));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            json!({"error": {"code": "unavailable", "message": "shutting down: triggers are refused"}})
        );
        let (status, body, logged) = respond(&ApiError::BadRequest("user id \"\" is empty".into()));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["message"], "user id \"\" is empty");
        assert!(logged.is_empty(), "a client error is not logged: {logged}");
    }
}
