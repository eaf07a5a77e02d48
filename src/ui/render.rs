//! The template engine and the dashboard's error page.
//!
//! Templates are minijinja files under `src/ui/templates/`, embedded at
//! build time and parsed once; their names end in `.html`, so every value
//! they print is HTML-escaped.

use std::sync::OnceLock;

use actix_web::{HttpResponse, ResponseError, http::StatusCode};
use minijinja::Environment;
use serde::Serialize;

/// The embedded templates, by name.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("error.html", include_str!("templates/error.html")),
    ("login.html", include_str!("templates/login.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("tasks.html", include_str!("templates/tasks.html")),
    ("task.html", include_str!("templates/task.html")),
    (
        "dead_letters.html",
        include_str!("templates/dead_letters.html"),
    ),
    (
        "dead_letters_confirm.html",
        include_str!("templates/dead_letters_confirm.html"),
    ),
    ("users.html", include_str!("templates/users.html")),
];

fn environment() -> &'static Environment<'static> {
    static ENVIRONMENT: OnceLock<Environment<'static>> = OnceLock::new();
    ENVIRONMENT.get_or_init(|| {
        let mut environment = Environment::new();
        environment.add_filter("when", when);
        for (name, source) in TEMPLATES {
            // The templates are part of the binary: one that does not
            // parse is a build defect, caught by the unit test below.
            if let Err(err) = environment.add_template(name, source) {
                tracing::error!(template = name, error = %err, "dashboard template does not parse");
            }
        }
        environment
    })
}

/// Filter `when`: an RFC 3339 instant as `2024-01-15 09:00:00 UTC`
/// (anything else unchanged).
fn when(value: String) -> String {
    match chrono::DateTime::parse_from_rfc3339(&value) {
        Ok(at) => at
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string(),
        Err(_) => value,
    }
}

/// A failed dashboard request, shown as an HTML page with its status.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// The request was malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// A form came without the CSRF token of this browser (403).
    #[error(
        "the form has expired or did not come from this dashboard; reload the page and try again"
    )]
    Forbidden,
    /// No such page or resource (404).
    #[error("{0}")]
    NotFound(String),
    /// A backend failed (503). The detail is logged, never shown.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// This process refuses the request for now (503), for a reason that is
    /// safe to show (shutting down, no scheduler here).
    #[error("{0}")]
    Refused(&'static str),
    /// A page could not be rendered (500).
    #[error("rendering {0}")]
    Render(String),
}

impl UiError {
    /// A backend error, as a 503.
    pub fn unavailable(err: impl std::fmt::Display) -> Self {
        UiError::Unavailable(err.to_string())
    }
}

impl From<crate::routes::ApiError> for UiError {
    fn from(err: crate::routes::ApiError) -> Self {
        use crate::routes::ApiError;
        match err {
            ApiError::BadRequest(message) => UiError::BadRequest(message),
            ApiError::NotFound(message) => UiError::NotFound(message),
            ApiError::Unauthorized => UiError::Forbidden,
            ApiError::Unavailable(message) => UiError::Unavailable(message),
            ApiError::Refused(message) => UiError::Refused(message),
            ApiError::Internal(message) => UiError::Render(message),
        }
    }
}

impl ResponseError for UiError {
    fn status_code(&self) -> StatusCode {
        match self {
            UiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            UiError::Forbidden => StatusCode::FORBIDDEN,
            UiError::NotFound(_) => StatusCode::NOT_FOUND,
            UiError::Unavailable(_) | UiError::Refused(_) => StatusCode::SERVICE_UNAVAILABLE,
            UiError::Render(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let message = self.shown_message();
        let context = serde_json::json!({
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "message": message,
            "csrf": "",
            "authenticated": false,
        });
        let body = render_string("error.html", &context)
            .unwrap_or_else(|_| format!("{} {message}", status.as_u16()));
        HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .body(body)
    }
}

impl UiError {
    /// What the page says; the detail of a backend or rendering failure is
    /// logged here instead, like the API does.
    fn shown_message(&self) -> String {
        use crate::routes::error::{INTERNAL_MESSAGE, UNAVAILABLE_MESSAGE};
        match self {
            UiError::Unavailable(detail) => {
                tracing::warn!(detail = %detail, "dashboard: backend unavailable");
                UNAVAILABLE_MESSAGE.to_owned()
            }
            UiError::Render(detail) => {
                tracing::error!(detail = %detail, "dashboard: page failed");
                INTERNAL_MESSAGE.to_owned()
            }
            other => other.to_string(),
        }
    }
}

fn render_string(name: &str, context: &impl Serialize) -> Result<String, UiError> {
    environment()
        .get_template(name)
        .and_then(|template| template.render(context))
        .map_err(|err| {
            tracing::error!(template = name, error = %format!("{err:#}"), "dashboard page not rendered");
            UiError::Render(name.to_owned())
        })
}

/// Renders template `name` with `context` as a 200 HTML page.
pub fn page(name: &str, context: &impl Serialize) -> Result<HttpResponse, UiError> {
    let body = render_string(name, context)?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        let mut environment = Environment::new();
        environment.add_filter("when", when);
        for (name, source) in TEMPLATES {
            environment
                .add_template(name, source)
                .unwrap_or_else(|err| panic!("{name}: {err:#}"));
        }
    }

    #[test]
    fn instants_read_in_utc() {
        assert_eq!(
            when("2024-01-15T09:00:00.123Z".into()),
            "2024-01-15 09:00:00 UTC"
        );
        assert_eq!(
            when("2024-01-15T09:00:00+05:45".into()),
            "2024-01-15 03:15:00 UTC"
        );
        assert_eq!(when("soon".into()), "soon");
    }

    #[test]
    fn a_backend_or_internal_failure_shows_a_stable_message_and_logs_the_detail() {
        use actix_web::body::MessageBody;

        use crate::routes::{
            ApiError,
            error::{INTERNAL_MESSAGE, UNAVAILABLE_MESSAGE, tests::logged_while},
        };

        let detail = "redis: Connection refused (os error 111) at 10.1.2.3:6379";
        let cases = [
            (UiError::unavailable(detail), 503, UNAVAILABLE_MESSAGE),
            (
                ApiError::Unavailable(detail.to_owned()).into(),
                503,
                UNAVAILABLE_MESSAGE,
            ),
            (
                ApiError::Internal(detail.to_owned()).into(),
                500,
                INTERNAL_MESSAGE,
            ),
        ];
        for (error, status, message) in cases {
            let (response, logged) = logged_while(|| error.error_response());
            assert_eq!(response.status().as_u16(), status, "{error:?}");
            let body = response
                .into_body()
                .try_into_bytes()
                .unwrap_or_else(|_| panic!("a page"));
            let body = String::from_utf8(body.to_vec()).unwrap();
            assert!(body.contains(message), "{body}");
            for leak in ["Connection refused", "10.1.2.3"] {
                assert!(!body.contains(leak), "{leak} shown: {body}");
            }
            assert!(logged.contains(detail), "not logged: {logged}");
        }
    }

    #[test]
    fn printed_values_are_escaped() {
        let body = render_string(
            "error.html",
            &serde_json::json!({"title": "x", "status": 400, "message": "<script>alert(1)</script>", "csrf": ""}),
        )
        .unwrap();
        assert!(body.contains("&lt;script&gt;alert(1)"), "{body}");
        assert!(!body.contains("<script>alert(1)"));
    }
}
