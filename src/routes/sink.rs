//! A loopback HTTP sink for the quick start (`api.sink: true`): every
//! request to `/sink/{name}` answers 200 and is counted per name;
//! `GET /sink` shows the counts. Lets the example tasks run with nothing
//! else installed and nothing sent off the machine.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use actix_web::{HttpResponse, web};

/// Calls received, per sink name.
#[derive(Debug, Clone, Default)]
pub struct SinkCounts(Arc<Mutex<BTreeMap<String, u64>>>);

impl SinkCounts {
    fn add(&self, name: &str) -> u64 {
        let mut counts = match self.0.lock() {
            Ok(counts) => counts,
            Err(poisoned) => poisoned.into_inner(),
        };
        let count = counts.entry(name.to_owned()).or_default();
        *count += 1;
        *count
    }

    fn snapshot(&self) -> BTreeMap<String, u64> {
        match self.0.lock() {
            Ok(counts) => counts.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Counts a call (any method) to the named sink.
#[utoipa::path(
    method(get, post, put, patch, delete),
    path = "/sink/{name}",
    tag = "sink",
    description = "The quick start's example endpoint: answers 200 to any call and counts it per name.",
    params(("name" = String, Path, description = "Any name; calls are counted per name.")),
    responses(
        (status = 200, description = "The calls received by this name so far.", body = Object, example = json!({"received": 3})),
        (status = 401, description = "A `GET` while `api.protect_reads` is on, without the token.", body = super::error::ErrorBody),
    ),
    security((), ("bearer_token" = []))
)]
pub async fn receive(name: web::Path<String>, sink: web::Data<SinkCounts>) -> HttpResponse {
    let count = sink.add(&name);
    HttpResponse::Ok().json(serde_json::json!({ "received": count }))
}

/// The calls received, per sink name.
#[utoipa::path(
    get,
    path = "/sink",
    tag = "sink",
    description = "Calls the loopback sink received, per name.",
    responses(
        (status = 200, description = "Counts per name.", body = Object, example = json!({"daily_report": 12})),
        (status = 401, description = "`api.protect_reads` is on and the token is missing or wrong.", body = super::error::ErrorBody),
    ),
    security((), ("bearer_token" = []))
)]
pub async fn counts(sink: web::Data<SinkCounts>) -> HttpResponse {
    HttpResponse::Ok().json(sink.snapshot())
}
