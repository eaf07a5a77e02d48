//! The route table: every route of the internal API, registered and
//! documented from one entry.
//!
//! Each handler carries a `#[utoipa::path(...)]` annotation (method, path,
//! parameters, body, responses, security), and [`table`] lists it once as
//! `route(Side::..., module::__path_handler, module::handler)`. Start-up
//! registers the table ([`configure`]): the path and methods of each route
//! are read from its annotation, so a route cannot be served at a path or
//! method its documentation does not name, and a handler without an
//! annotation cannot be put in the table. [`openapi`] builds the OpenAPI
//! document served at `GET /openapi.json` from the same table, every side
//! included (a route served only by some roles says so in its
//! description), and [`markdown`] renders it as `docs/api.md`.
//!
//! The one exclusion is named: HTML pages under [`HTML_PREFIX`] are for
//! people, not clients of the JSON API, and are registered by
//! `ui::configure` outside the document.

use std::sync::OnceLock;

use actix_web::{FromRequest, Handler, HttpResponse, Responder, Route, http::Method, web};
use utoipa::{
    Modify, OpenApi,
    openapi::{
        self, HttpMethod, PathItem, RefOr,
        path::{Operation, Parameter},
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use super::{
    dead_letters, durations, error, health, jobs, metrics, preferences, preview, schedule, sink,
    tasks, worker,
};

/// Paths under this prefix are HTML pages for people: they are served
/// but left out of the OpenAPI document on purpose.
pub const HTML_PREFIX: &str = "/ui";

/// Name of the bearer-token security scheme in the document.
pub const BEARER: &str = "bearer_token";

/// Which processes serve a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Every process.
    Any,
    /// Processes that run the scheduler (`--role scheduler` or `all`).
    Scheduler,
    /// Processes that run executors (`--role worker` or `all`).
    Worker,
    /// Processes with the loopback sink on (`api.sink: true`, the quick
    /// start).
    Sink,
}

impl Side {
    fn note(self) -> Option<&'static str> {
        match self {
            Side::Any => None,
            Side::Scheduler => {
                Some("Served by processes that run the scheduler (`--role scheduler` or `all`).")
            }
            Side::Worker => {
                Some("Served by processes that run executors (`--role worker` or `all`).")
            }
            Side::Sink => Some(
                "Served only with the loopback sink on (`api.sink: true`, as in the quick start).",
            ),
        }
    }
}

/// The sides one process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sides {
    /// The scheduler runs here.
    pub scheduler: bool,
    /// Executors run here.
    pub worker: bool,
    /// The loopback sink is on.
    pub sink: bool,
}

impl Sides {
    /// Every side: the whole API.
    pub const ALL: Sides = Sides {
        scheduler: true,
        worker: true,
        sink: true,
    };

    fn serves(self, side: Side) -> bool {
        match side {
            Side::Any => true,
            Side::Scheduler => self.scheduler,
            Side::Worker => self.worker,
            Side::Sink => self.sink,
        }
    }
}

/// One entry of the table: a handler with its documentation.
pub struct ApiRoute {
    /// The path template, the same for actix-web and OpenAPI
    /// (`/users/{user_id}/preferences`).
    pub path: String,
    /// Methods it answers, from its annotation.
    pub methods: Vec<HttpMethod>,
    /// Which processes serve it.
    pub side: Side,
    operation: Operation,
    route: Box<dyn Fn(Method) -> Route>,
}

/// A table entry: `doc` is the `__path_{handler}` value that
/// `#[utoipa::path]` generates beside `handler`.
pub fn route<P, F, Args>(side: Side, _doc: P, handler: F) -> ApiRoute
where
    P: utoipa::Path,
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    ApiRoute {
        path: P::path(),
        methods: P::methods(),
        side,
        operation: P::operation(),
        route: Box::new(move |method| web::method(method).to(handler.clone())),
    }
}

/// Every route of the API, in the order of the document.
pub fn table() -> Vec<ApiRoute> {
    vec![
        route(Side::Any, health::__path_health, health::health),
        route(Side::Any, metrics::__path_metrics, metrics::metrics),
        route(Side::Any, __path_openapi_json, openapi_json),
        route(Side::Worker, worker::__path_stats, worker::stats),
        route(
            Side::Any,
            preferences::__path_put_preference,
            preferences::put_preference,
        ),
        route(
            Side::Any,
            preferences::__path_delete_preference,
            preferences::delete_preference,
        ),
        route(
            Side::Any,
            preferences::__path_get_preferences,
            preferences::get_preferences,
        ),
        route(
            Side::Any,
            preferences::__path_put_user,
            preferences::put_user,
        ),
        route(
            Side::Any,
            preferences::__path_get_user,
            preferences::get_user,
        ),
        route(Side::Scheduler, schedule::__path_trigger, schedule::trigger),
        route(Side::Scheduler, schedule::__path_status, schedule::status),
        route(
            Side::Any,
            preview::__path_preview_task,
            preview::preview_task,
        ),
        route(Side::Any, tasks::__path_pause, tasks::pause),
        route(Side::Any, tasks::__path_resume, tasks::resume),
        route(Side::Any, durations::__path_durations, durations::durations),
        route(Side::Any, dead_letters::__path_list, dead_letters::list),
        route(Side::Any, dead_letters::__path_delete, dead_letters::delete),
        route(Side::Any, dead_letters::__path_replay, dead_letters::replay),
        route(Side::Any, jobs::__path_job, jobs::job),
        route(Side::Any, jobs::__path_runs, jobs::runs),
        route(Side::Sink, sink::__path_counts, sink::counts),
        route(Side::Sink, sink::__path_receive, sink::receive),
    ]
}

fn actix_method(method: &HttpMethod) -> Method {
    match method {
        HttpMethod::Get => Method::GET,
        HttpMethod::Post => Method::POST,
        HttpMethod::Put => Method::PUT,
        HttpMethod::Delete => Method::DELETE,
        HttpMethod::Options => Method::OPTIONS,
        HttpMethod::Head => Method::HEAD,
        HttpMethod::Patch => Method::PATCH,
        HttpMethod::Trace => Method::TRACE,
    }
}

/// Registers the table's routes of `sides`: one resource per path, so a
/// method the path does not take is a 405.
pub fn configure(config: &mut web::ServiceConfig, sides: Sides) {
    let mut resources: Vec<(String, Vec<Route>)> = Vec::new();
    for entry in table().into_iter().filter(|entry| sides.serves(entry.side)) {
        let routes = entry
            .methods
            .iter()
            .map(|method| (entry.route)(actix_method(method)));
        match resources.iter_mut().find(|(path, _)| *path == entry.path) {
            Some((_, existing)) => existing.extend(routes),
            None => resources.push((entry.path.clone(), routes.collect())),
        }
    }
    for (path, routes) in resources {
        let resource = routes
            .into_iter()
            .fold(web::resource(path), |resource, route| resource.route(route));
        config.service(resource);
    }
}

/// The OpenAPI document's fixed part: info, shared schemas, the bearer
/// scheme. Paths come from [`table`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "taskqueue internal API",
        description = "Preferences, scheduling, operations and probes of a taskqueue process. \
Every error, routed or not, is `{\"error\": {\"code\", \"message\"}}` (schema `ErrorBody`). \
With `api.token` set, mutating routes require `Authorization: Bearer <token>` (401 otherwise); \
with `api.protect_reads` too, so do the reads, `/health` excepted. Reads list the bearer scheme \
as optional for that reason.",
        license(name = "MIT OR Apache-2.0")
    ),
    components(schemas(
        error::ErrorBody,
        error::ApiErrorDetail,
        preferences::PreferenceBody,
        preferences::UserBody,
        preferences::UserView,
        schedule::TriggerRequest,
        schedule::TriggerAccepted,
        tasks::PauseState,
        durations::DurationsView,
        durations::DurationSample,
        dead_letters::Selection,
        dead_letters::DeadLetterPage,
        dead_letters::DeadLetterView,
        dead_letters::ReplayOutcome,
        dead_letters::Refusal,
        dead_letters::DeleteOutcome,
        jobs::JobView,
        jobs::AttemptView,
        jobs::RunsView,
        jobs::RunView,
    )),
    modifiers(&BearerScheme)
)]
struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The `api.token` of the service."))
                    .build(),
            ),
        );
    }
}

/// The OpenAPI 3 document of the whole API (every side).
pub fn openapi() -> openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    for entry in table() {
        let mut operation = entry.operation;
        if let Some(note) = entry.side.note() {
            let description = operation.description.get_or_insert_with(String::new);
            if !description.is_empty() {
                description.push_str("\n\n");
            }
            description.push_str(note);
        }
        doc.paths
            .add_path_operation(entry.path, entry.methods, operation);
    }
    doc
}

/// The document as served: pretty JSON, built once.
pub fn openapi_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        openapi()
            .to_pretty_json()
            .unwrap_or_else(|err| format!("{{\"error\": \"{err}\"}}"))
    })
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "service",
    description = "The OpenAPI 3 document of the whole API (every role's routes).",
    responses((status = 200, description = "The document.", content_type = "application/json", body = Object),
        (status = 401, description = "`api.protect_reads` is on and the token is missing or wrong.", body = error::ErrorBody)),
    security((), ("bearer_token" = []))
)]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(openapi_text())
}

/// `docs/api.md`: the document rendered for people.
pub fn markdown(doc: &openapi::OpenApi) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "# The internal API\n");
    let _ = writeln!(
        out,
        "Generated from the OpenAPI document (`GET /openapi.json`, or `taskqueue openapi`) by \
`taskqueue openapi --markdown > docs/api.md`; a test fails when this file differs from it.\n"
    );
    if let Some(description) = &doc.info.description {
        let _ = writeln!(out, "{description}\n");
    }
    let _ = writeln!(out, "## Routes\n");
    let _ = writeln!(out, "| method | path | auth | summary |");
    let _ = writeln!(out, "|---|---|---|---|");
    let operations = operations(doc);
    for (method, path, operation) in &operations {
        let _ = writeln!(
            out,
            "| {} | [`{path}`](#{}) | {} | {} |",
            method_name(method),
            anchor(method, path),
            auth_rule(operation),
            first_line(operation.description.as_deref().unwrap_or(""))
        );
    }
    for (method, path, operation) in &operations {
        let _ = writeln!(out, "\n## {} {path}\n", method_name(method));
        if let Some(description) = &operation.description {
            let _ = writeln!(out, "{description}\n");
        }
        let _ = writeln!(out, "Auth: {}.\n", auth_rule(operation));
        if let Some(parameters) = &operation.parameters
            && !parameters.is_empty()
        {
            let _ = writeln!(out, "| parameter | in | required | schema | description |");
            let _ = writeln!(out, "|---|---|---|---|---|");
            for parameter in parameters {
                if let RefOr::T(parameter) = parameter {
                    write_parameter(&mut out, parameter);
                }
            }
            out.push('\n');
        }
        if let Some(RefOr::T(body)) = &operation.request_body {
            let required = matches!(body.required, Some(openapi::Required::True));
            for (content_type, content) in &body.content {
                let _ = writeln!(
                    out,
                    "Request body ({content_type}{}): {}\n",
                    if required { ", required" } else { "" },
                    match content {
                        RefOr::T(content) => schema_name(content.schema.as_ref()),
                        RefOr::Ref(reference) => reference.ref_location.clone(),
                    }
                );
            }
        }
        let _ = writeln!(out, "| status | description | body |");
        let _ = writeln!(out, "|---|---|---|");
        for (status, response) in &operation.responses.responses {
            let (description, body) = match response {
                RefOr::T(response) => (
                    response.description.clone(),
                    response
                        .content
                        .iter()
                        .map(|(content_type, content)| {
                            let schema = match content {
                                RefOr::T(content) => schema_name(content.schema.as_ref()),
                                RefOr::Ref(reference) => reference.ref_location.clone(),
                            };
                            format!("{content_type}: {schema}")
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                RefOr::Ref(reference) => (String::new(), reference.ref_location.clone()),
            };
            let _ = writeln!(out, "| {status} | {} | {body} |", one_line(&description));
        }
    }
    let _ = writeln!(out, "\n## Schemas\n");
    if let Some(components) = &doc.components {
        for (name, schema) in &components.schemas {
            let _ = writeln!(out, "### {name}\n");
            let text = serde_json::to_string_pretty(schema).unwrap_or_default();
            let _ = writeln!(out, "```json\n{text}\n```\n");
        }
    }
    out
}

fn operations(doc: &openapi::OpenApi) -> Vec<(HttpMethod, String, Operation)> {
    let mut list = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (method, operation) in path_operations(item) {
            list.push((method, path.clone(), operation.clone()));
        }
    }
    list
}

/// The operations of a path item, in method order.
pub fn path_operations(item: &PathItem) -> Vec<(HttpMethod, &Operation)> {
    [
        (HttpMethod::Get, &item.get),
        (HttpMethod::Put, &item.put),
        (HttpMethod::Post, &item.post),
        (HttpMethod::Delete, &item.delete),
        (HttpMethod::Options, &item.options),
        (HttpMethod::Head, &item.head),
        (HttpMethod::Patch, &item.patch),
        (HttpMethod::Trace, &item.trace),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.as_ref().map(|operation| (method, operation)))
    .collect()
}

fn method_name(method: &HttpMethod) -> &'static str {
    match method {
        HttpMethod::Get => "GET",
        HttpMethod::Post => "POST",
        HttpMethod::Put => "PUT",
        HttpMethod::Delete => "DELETE",
        HttpMethod::Options => "OPTIONS",
        HttpMethod::Head => "HEAD",
        HttpMethod::Patch => "PATCH",
        HttpMethod::Trace => "TRACE",
    }
}

fn anchor(method: &HttpMethod, path: &str) -> String {
    format!("{} {path}", method_name(method))
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn auth_rule(operation: &Operation) -> &'static str {
    let Some(requirements) = &operation.security else {
        return "none";
    };
    let json = serde_json::to_value(requirements).unwrap_or_default();
    let list = json.as_array().cloned().unwrap_or_default();
    let bearer = list.iter().any(|r| r.get(BEARER).is_some());
    let anonymous = list
        .iter()
        .any(|r| r.as_object().is_some_and(|o| o.is_empty()));
    match (bearer, anonymous) {
        (true, false) => "bearer token when `api.token` is set",
        (true, true) => "bearer token when `api.token` and `api.protect_reads` are set",
        _ => "none",
    }
}

fn write_parameter(out: &mut String, parameter: &Parameter) {
    use std::fmt::Write;
    let location = serde_json::to_value(&parameter.parameter_in)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default();
    let required = matches!(parameter.required, openapi::Required::True);
    let _ = writeln!(
        out,
        "| `{}` | {location} | {} | {} | {} |",
        parameter.name,
        if required { "yes" } else { "no" },
        schema_name(parameter.schema.as_ref()),
        one_line(parameter.description.as_deref().unwrap_or(""))
    );
}

fn schema_name(schema: Option<&RefOr<openapi::schema::Schema>>) -> String {
    match schema {
        None => "any".to_owned(),
        Some(RefOr::Ref(reference)) => {
            let name = reference.ref_location.rsplit('/').next().unwrap_or("");
            format!("[`{name}`](#{})", name.to_lowercase())
        }
        Some(RefOr::T(schema)) => {
            let text = serde_json::to_string(schema).unwrap_or_default();
            if text == "{}" {
                "any JSON".to_owned()
            } else {
                format!("`{text}`")
            }
        }
    }
}

fn first_line(text: &str) -> String {
    one_line(text.split("\n\n").next().unwrap_or(""))
}

fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}
