//! The web dashboard at `/ui`: server-rendered pages over the same state
//! the API reads, for operators who want queues, schedules, failures and
//! users at a glance.
//!
//! # Layout
//!
//! - [`session`]: who may see the dashboard (a login form that trades the
//!   API token for an HttpOnly `SameSite=Strict` session cookie) and the
//!   CSRF token every form posts back.
//! - [`render`]: the template engine (minijinja, templates embedded with
//!   `include_str!`) and [`UiError`], the HTML error page.
//! - [`assets`]: the stylesheet and the script, embedded in the binary.
//! - [`throughput`]: the samples behind the overview's chart.
//! - one module per page: [`overview`], [`tasks`], [`task_detail`],
//!   [`dead_letters`], [`users`].
//!
//! Every route lives under the one `/ui` scope built by [`configure`], so
//! the API's description can leave the dashboard out by that prefix.

pub mod assets;
pub mod dead_letters;
pub mod overview;
pub mod render;
pub mod session;
pub mod task_detail;
pub mod tasks;
pub mod throughput;
pub mod users;

use actix_web::{HttpResponse, http::header, middleware::from_fn, web};

pub use render::UiError;

/// The path every dashboard route starts with.
pub const PREFIX: &str = crate::routes::api::HTML_PREFIX;

/// Registers the dashboard: one scope, guarded by [`session::guard`].
pub fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::scope(PREFIX)
            .wrap(from_fn(session::guard))
            .route("", web::get().to(to_overview))
            .route("/", web::get().to(overview::page))
            .route("/login", web::get().to(session::login_form))
            .route("/login", web::post().to(session::login))
            .route("/logout", web::post().to(session::logout))
            .route("/assets/{name}", web::get().to(assets::asset))
            .route("/api/throughput", web::get().to(overview::throughput))
            .route("/tasks", web::get().to(tasks::page))
            .route("/tasks/{task_type_id}", web::get().to(task_detail::page))
            .route("/tasks/{task_type_id}/pause", web::post().to(tasks::pause))
            .route(
                "/tasks/{task_type_id}/resume",
                web::post().to(tasks::resume),
            )
            .route("/dead-letters", web::get().to(dead_letters::page))
            .route(
                "/dead-letters/confirm",
                web::post().to(dead_letters::confirm),
            )
            .route("/dead-letters/apply", web::post().to(dead_letters::apply))
            .route("/users", web::get().to(users::page))
            .default_service(web::to(not_found)),
    );
}

async fn to_overview() -> HttpResponse {
    see_other(&format!("{PREFIX}/"))
}

async fn not_found(request: actix_web::HttpRequest) -> Result<HttpResponse, UiError> {
    Err(UiError::NotFound(format!("no page {}", request.path())))
}

/// A `303 See Other` to `location` (the answer to every form post).
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// Whether `path` is one of the dashboard's.
pub fn is_dashboard_path(path: &str) -> bool {
    path == PREFIX
        || path
            .strip_prefix(PREFIX)
            .is_some_and(|rest| rest.starts_with('/'))
}
