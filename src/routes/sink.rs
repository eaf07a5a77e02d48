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

/// Mounts the sink routes.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/sink", web::get().to(counts))
        .route("/sink/{name}", web::route().to(receive));
}

async fn receive(name: web::Path<String>, sink: web::Data<SinkCounts>) -> HttpResponse {
    let count = sink.add(&name);
    HttpResponse::Ok().json(serde_json::json!({ "received": count }))
}

async fn counts(sink: web::Data<SinkCounts>) -> HttpResponse {
    HttpResponse::Ok().json(sink.snapshot())
}
