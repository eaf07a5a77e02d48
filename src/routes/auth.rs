//! The optional bearer token of the API.
//!
//! When the service is configured with `api.token`, handlers that change
//! state take an [`Authorized`] argument: the request must carry
//! `Authorization: Bearer <token>`, else it is refused with a 401 JSON
//! error before the handler runs. With `api.protect_reads` the
//! [`guard_reads`] middleware asks the same of every read (`GET`, `HEAD`)
//! but `/health` and the dashboard (`/ui`, guarded by its session cookie,
//! see `crate::ui::session`). Without a token the API is open, which start-up allows
//! only on a loopback address.

use std::future::{Ready, ready};

use actix_web::{
    FromRequest, HttpRequest,
    body::MessageBody,
    dev::{Payload, ServiceRequest, ServiceResponse},
    http::{Method, header},
    middleware::Next,
    web,
};

use super::ApiError;

/// The token mutating endpoints require, if any (`api.token`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ApiToken(pub Option<String>);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ApiToken")
            .field(&self.0.as_ref().map(|_| "redacted"))
            .finish()
    }
}

/// Whether reads need the token too (`api.protect_reads`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProtectReads(pub bool);

/// Middleware: with [`ProtectReads`] on and a token configured, a `GET` or
/// `HEAD` other than `/health` must carry the bearer token (401 JSON error
/// otherwise).
pub async fn guard_reads(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let protect = req
        .app_data::<web::Data<ProtectReads>>()
        .is_some_and(|protect| protect.0);
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    // The dashboard (`/ui`) has its own guard: a session cookie, since a
    // browser cannot send the header on navigation.
    let exempt = req.path() == "/health" || crate::ui::is_dashboard_path(req.path());
    if protect && read && !exempt && !token_presented(req.request()) {
        return Err(ApiError::Unauthorized.into());
    }
    next.call(req).await
}

/// Whether `req` carries the configured token (true when none is set).
fn token_presented(req: &HttpRequest) -> bool {
    let expected = req
        .app_data::<web::Data<ApiToken>>()
        .and_then(|token| token.0.clone());
    let Some(expected) = expected else {
        return true;
    };
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|presented| same_secret(presented.trim(), &expected))
}

/// Proof that the request may change state: extracting it checks the
/// bearer token against the app's [`ApiToken`] (no `ApiToken` registered
/// means no token required).
#[derive(Debug, Clone, Copy)]
pub struct Authorized;

impl FromRequest for Authorized {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(if token_presented(req) {
            Ok(Authorized)
        } else {
            Err(ApiError::Unauthorized)
        })
    }
}

/// Compares in time independent of where the values differ.
pub(crate) fn same_secret(presented: &str, expected: &str) -> bool {
    let (a, b) = (presented.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(presented: &str, expected: &str, same: bool) {
        assert_eq!(
            same_secret(presented, expected),
            same,
            "{presented:?} vs {expected:?}"
        );
    }

    #[test]
    fn secrets_compare_exactly() {
        check("s3cret", "s3cret", true);
        check("s3cret", "s3creT", false);
        check("s3cre", "s3cret", false);
        check("", "s3cret", false);
        check("", "", true);
    }
}
