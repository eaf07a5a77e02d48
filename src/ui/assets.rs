//! The dashboard's stylesheet and script, embedded in the binary (no CDN,
//! nothing fetched at run time).

use actix_web::{HttpResponse, web};

use super::UiError;

/// The embedded assets: name, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("assets/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
];

/// `GET /ui/assets/{name}`.
pub async fn asset(name: web::Path<String>) -> Result<HttpResponse, UiError> {
    let name = name.into_inner();
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(asset, _, _)| *asset == name)
        .ok_or_else(|| UiError::NotFound(format!("no asset {name:?}")))?;
    Ok(HttpResponse::Ok()
        .content_type(*content_type)
        .insert_header(("Cache-Control", "public, max-age=300"))
        .body(*body))
}
