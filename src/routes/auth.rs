//! The optional bearer token of the mutating endpoints.
//!
//! When the service is configured with `api.token`, handlers that change
//! state take an [`Authorized`] argument: the request must carry
//! `Authorization: Bearer <token>`, else it is refused with a 401 JSON
//! error before the handler runs. Without a token the API is open (it binds
//! to loopback by default).

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};

use super::ApiError;

/// The token mutating endpoints require, if any (`api.token`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiToken(pub Option<String>);

/// Proof that the request may change state: extracting it checks the
/// bearer token against the app's [`ApiToken`] (no `ApiToken` registered
/// means no token required).
#[derive(Debug, Clone, Copy)]
pub struct Authorized;

impl FromRequest for Authorized {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let expected = req
            .app_data::<web::Data<ApiToken>>()
            .and_then(|token| token.0.clone());
        let Some(expected) = expected else {
            return ready(Ok(Authorized));
        };
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        ready(match presented {
            Some(presented) if same_secret(presented.trim(), &expected) => Ok(Authorized),
            _ => Err(ApiError::Unauthorized),
        })
    }
}

/// Compares in time independent of where the values differ.
fn same_secret(presented: &str, expected: &str) -> bool {
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
