//! The API's error type: every failure is `{"error": {"code", "message"}}`,
//! routed or not: a path no route takes gets [`no_route`]'s JSON 404, and
//! [`json_errors`] gives the same shape to any other error the framework
//! answers by itself (a 405, a 413, ...).

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
    pub error: ErrorDetail,
}

/// The error of an [`ErrorBody`].
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
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
            error: ErrorDetail {
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
    /// A backend failed (503).
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// Anything else (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(ErrorBody::new(self.code(), self.to_string()))
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
            .is_some_and(|value| value.starts_with("application/json"));
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
