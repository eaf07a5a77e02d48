//! Who may use the dashboard, and the CSRF token of its forms.
//!
//! A browser cannot send the API's `Authorization` header when it follows
//! a link, so with `api.token` configured the dashboard asks for the token
//! once, in a login form (`POST /ui/login`), and answers with a session
//! cookie: a random id, `HttpOnly` (no script reads it), `SameSite=Strict`
//! (no other site's page sends it), `Path=/ui`, `Secure` when the request
//! came over HTTPS, valid for [`SESSION_TTL`]. The token itself is never
//! stored in the browser. The cookie is signed with the token
//! ([`UiSessions`]), so every replica configured with it accepts it, and a
//! restart does not sign anybody out.
//! Without a token the dashboard is open, like the API, which start-up
//! allows only on a loopback address.
//!
//! Every form that changes state (login, logout, pause, resume, replay,
//! purge) is a `POST` carrying a `csrf` field that must equal this
//! browser's `tq_csrf` cookie (double submit, the cookie `SameSite=Strict`
//! and `HttpOnly`); a request whose `Origin` names another host is refused
//! as well.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use actix_web::{
    HttpMessage, HttpRequest, HttpResponse,
    body::{BoxBody, MessageBody},
    cookie::{Cookie, SameSite},
    dev::{ServiceRequest, ServiceResponse},
    http::{Method, header},
    middleware::Next,
    web,
};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;
use uuid::Uuid;

use super::{PREFIX, UiError, render, see_other};
use crate::routes::auth::{ApiToken, same_secret};

/// How long a dashboard session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Most signed-out sessions one replica remembers.
const MAX_CLOSED: usize = 10_000;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "tq_session";

/// Name of the CSRF cookie.
pub const CSRF_COOKIE: &str = "tq_csrf";

/// Dashboard sessions: signed cookies every replica can check, and the
/// ones this replica saw signed out.
///
/// A session is `{expiry}.{nonce}.{mac}`: its end (Unix seconds), 16
/// random bytes, and the HMAC-SHA256 of both keyed with the API token. Any
/// replica configured with the same token accepts it until it ends, so a
/// browser behind a load balancer stays signed in; a different (rotated)
/// token ends every session. Signing out removes the cookie and refuses
/// that value on this replica until it would have ended; a copy of the
/// cookie taken before stays valid on the other replicas until then.
#[derive(Debug, Default)]
pub struct UiSessions {
    /// Signed-out values → when they would have ended.
    closed: Mutex<HashMap<String, SystemTime>>,
}

/// What the session MAC covers, before the expiry and nonce.
const SESSION_CONTEXT: &[u8] = b"taskqueue dashboard session\n";

fn session_mac(token: &str, expiry: u64, nonce: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(token.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(SESSION_CONTEXT);
    mac.update(format!("{expiry}.{nonce}").as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

impl UiSessions {
    fn open(&self, token: &str) -> String {
        let expiry = unix_seconds(SystemTime::now() + SESSION_TTL);
        let nonce = Uuid::new_v4().simple().to_string();
        let mac = session_mac(token, expiry, &nonce);
        format!("{expiry}.{nonce}.{mac}")
    }

    fn valid(&self, token: &str, value: &str) -> bool {
        let mut parts = value.splitn(3, '.');
        let (Some(expiry), Some(nonce), Some(mac)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Ok(expiry) = expiry.parse::<u64>() else {
            return false;
        };
        if expiry <= unix_seconds(SystemTime::now())
            || !same_secret(mac, &session_mac(token, expiry, nonce))
        {
            return false;
        }
        let closed = self
            .closed
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        !closed.contains_key(value)
    }

    fn close(&self, value: &str) {
        let mut closed = self
            .closed
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let now = SystemTime::now();
        closed.retain(|_, until| *until > now);
        if closed.len() < MAX_CLOSED {
            closed.insert(value.to_owned(), now + SESSION_TTL);
        }
    }
}

/// This browser's CSRF token, put in the request's extensions by
/// [`guard`] for the page to print in its forms.
#[derive(Debug, Clone)]
pub struct CsrfToken(pub String);

/// Whether the request carries a live session (always, when no token is
/// configured).
#[derive(Debug, Clone, Copy)]
pub struct Authenticated(pub bool);

fn configured_token(request: &HttpRequest) -> Option<String> {
    request
        .app_data::<web::Data<ApiToken>>()
        .and_then(|token| token.0.clone())
}

fn sessions(request: &HttpRequest) -> Option<web::Data<UiSessions>> {
    request.app_data::<web::Data<UiSessions>>().cloned()
}

fn has_session(request: &HttpRequest) -> bool {
    let (Some(cookie), Some(token)) = (request.cookie(SESSION_COOKIE), configured_token(request))
    else {
        return false;
    };
    sessions(request).is_some_and(|sessions| sessions.valid(&token, cookie.value()))
}

/// Paths open without a session: the login form and the assets it uses.
fn open_path(path: &str) -> bool {
    path == format!("{PREFIX}/login") || path.starts_with(&format!("{PREFIX}/assets/"))
}

fn cookie<'c>(request: &HttpRequest, name: &'c str, value: String) -> Cookie<'c> {
    Cookie::build(name, value)
        .path(PREFIX)
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(request.connection_info().scheme() == "https")
        .finish()
}

/// Middleware of the `/ui` scope: gives the browser a CSRF cookie, refuses
/// a cross-site `POST`, and, with a token configured, sends a browser
/// without a session to the login form.
pub async fn guard(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let (csrf, fresh) = match request.cookie(CSRF_COOKIE) {
        Some(cookie) if cookie.value().len() == 32 => (cookie.value().to_owned(), false),
        _ => (Uuid::new_v4().simple().to_string(), true),
    };
    request.extensions_mut().insert(CsrfToken(csrf.clone()));
    if request.method() == Method::POST && !same_origin(request.request()) {
        return Ok(request.error_response(UiError::Forbidden));
    }
    let token = configured_token(request.request());
    let authenticated = token.is_none() || has_session(request.request());
    request
        .extensions_mut()
        .insert(Authenticated(authenticated && token.is_some()));
    if !authenticated && !open_path(request.path()) {
        let response = if request.method() == Method::GET {
            see_other(&format!("{PREFIX}/login"))
        } else {
            HttpResponse::Unauthorized()
                .content_type("text/html; charset=utf-8")
                .body("<!doctype html><title>Sign in</title><p><a href=\"/ui/login\">Sign in</a> first.</p>")
        };
        let (request, _) = request.into_parts();
        return Ok(ServiceResponse::new(request, response));
    }
    let mut response = next.call(request).await?.map_into_boxed_body();
    if fresh {
        let cookie = cookie(response.request(), CSRF_COOKIE, csrf);
        response.response_mut().add_cookie(&cookie)?;
    }
    Ok(response)
}

/// A `POST` without `Origin` (older browsers, curl) passes; one whose
/// `Origin` is not this host is cross-site.
fn same_origin(request: &HttpRequest) -> bool {
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let host = request.connection_info().host().to_owned();
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest == host)
}

/// The CSRF token [`guard`] gave this request.
pub fn csrf_token(request: &HttpRequest) -> String {
    request
        .extensions()
        .get::<CsrfToken>()
        .map(|token| token.0.clone())
        .unwrap_or_default()
}

/// Whether the page should offer a "Sign out" button.
pub fn signed_in(request: &HttpRequest) -> bool {
    request
        .extensions()
        .get::<Authenticated>()
        .is_some_and(|authenticated| authenticated.0)
}

/// Checks a form's `csrf` field against this browser's cookie.
pub fn check_csrf(request: &HttpRequest, presented: &str) -> Result<(), UiError> {
    match request.cookie(CSRF_COOKIE) {
        Some(cookie) if !presented.is_empty() && same_secret(presented, cookie.value()) => Ok(()),
        _ => Err(UiError::Forbidden),
    }
}

/// What every page template receives besides its own data.
pub fn base_context(request: &HttpRequest, title: &str, nav: &str) -> serde_json::Value {
    json!({
        "title": title,
        "nav": nav,
        "csrf": csrf_token(request),
        "authenticated": signed_in(request),
    })
}

/// The login form.
pub async fn login_form(request: HttpRequest) -> Result<HttpResponse, UiError> {
    if configured_token(&request).is_none() {
        return Ok(see_other(&format!("{PREFIX}/")));
    }
    let context = base_context(&request, "Sign in", "login");
    render::page("login.html", &context)
}

/// Body of `POST /ui/login`.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    /// The API token.
    pub token: String,
    /// The form's CSRF token.
    #[serde(default)]
    pub csrf: String,
}

/// Trades the API token for a session cookie.
pub async fn login(
    request: HttpRequest,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, UiError> {
    check_csrf(&request, &form.csrf)?;
    let Some(expected) = configured_token(&request) else {
        return Ok(see_other(&format!("{PREFIX}/")));
    };
    if !same_secret(form.token.trim(), &expected) {
        tracing::warn!("dashboard sign-in refused: wrong token");
        let mut context = base_context(&request, "Sign in", "login");
        context["error"] = json!("That token is not the one this service is configured with.");
        let mut response = render::page("login.html", &context)?;
        *response.status_mut() = actix_web::http::StatusCode::UNAUTHORIZED;
        return Ok(response);
    }
    let sessions = sessions(&request)
        .ok_or_else(|| UiError::Render("the session store is not registered".into()))?;
    let id = sessions.open(&expected);
    let mut response = see_other(&format!("{PREFIX}/"));
    response
        .add_cookie(&cookie(&request, SESSION_COOKIE, id))
        .map_err(|err| UiError::Render(err.to_string()))?;
    Ok(response)
}

/// Body of a form that carries only its CSRF token.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    /// The form's CSRF token.
    #[serde(default)]
    pub csrf: String,
}

/// Ends the session.
pub async fn logout(
    request: HttpRequest,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, UiError> {
    check_csrf(&request, &form.csrf)?;
    if let (Some(cookie), Some(sessions)) = (request.cookie(SESSION_COOKIE), sessions(&request)) {
        sessions.close(cookie.value());
    }
    let mut response = see_other(&format!("{PREFIX}/login"));
    let mut expired = cookie(&request, SESSION_COOKIE, String::new());
    expired.make_removal();
    response
        .add_cookie(&expired)
        .map_err(|err| UiError::Render(err.to_string()))?;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_open_check_and_close() {
        let sessions = UiSessions::default();
        let id = sessions.open("s3cret");
        assert!(sessions.valid("s3cret", &id));
        assert!(!sessions.valid("s3cret", "not-a-session"));
        assert!(!sessions.valid("other", &id), "another token ends it");
        sessions.close(&id);
        assert!(!sessions.valid("s3cret", &id));
    }

    #[test]
    fn a_session_made_by_one_replica_is_valid_on_another_until_it_ends() {
        let (made, other) = (UiSessions::default(), UiSessions::default());
        let id = made.open("s3cret");
        assert!(other.valid("s3cret", &id));
        // Tampered with: a later expiry, or another nonce, breaks the MAC.
        let (expiry, rest) = id.split_once('.').unwrap();
        let later = format!("{}.{rest}", expiry.parse::<u64>().unwrap() + 3600);
        assert!(!other.valid("s3cret", &later));
        let (head, mac) = id.rsplit_once('.').unwrap();
        let (expiry, _) = head.split_once('.').unwrap();
        assert!(!other.valid("s3cret", &format!("{expiry}.{}.{mac}", "0".repeat(32))));
        // Ended: a correctly signed value whose time is past.
        let nonce = "1".repeat(32);
        let past = unix_seconds(SystemTime::now()) - 1;
        let ended = format!("{past}.{nonce}.{}", session_mac("s3cret", past, &nonce));
        assert!(!other.valid("s3cret", &ended));
        let future = past + 60;
        let live = format!("{future}.{nonce}.{}", session_mac("s3cret", future, &nonce));
        assert!(
            other.valid("s3cret", &live),
            "the same value, not yet ended"
        );
    }

    #[test]
    fn only_the_login_form_and_assets_are_open() {
        assert!(open_path("/ui/login"));
        assert!(open_path("/ui/assets/app.css"));
        assert!(!open_path("/ui/"));
        assert!(!open_path("/ui/tasks"));
        assert!(!open_path("/ui/loginx"));
    }
}
