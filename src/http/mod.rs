//! The HTTP edge: thin handlers, request ids and logging, JSON errors.
//!
//! Handlers translate between HTTP and the domain; they hold no SQL and no
//! cryptography.

mod health;
mod request_log;

use std::sync::Arc;

use actix_web::{HttpResponse, web};

use crate::config::Config;
use crate::store::Store;

pub use request_log::request_log;

/// Shared state handed to every handler.
#[derive(Clone)]
pub struct AppState {
    /// Persistence.
    pub store: Arc<dyn Store>,
    /// The validated configuration.
    pub config: Arc<Config>,
}

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/healthz", web::get().to(health::healthz)))
        .service(endpoint("/readyz", web::get().to(health::readyz)));
}

/// A resource that answers 405 (with `Allow`) to methods it does not serve.
fn endpoint(path: &str, route: actix_web::Route) -> actix_web::Resource {
    web::resource(path)
        .route(route)
        .default_service(web::to(method_not_allowed))
}

/// RFC 6749 §5.2-shaped error body used for every error tessera answers.
pub fn error_response(
    status: actix_web::http::StatusCode,
    error: &str,
    description: &str,
) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "error": error, "error_description": description }))
}

async fn method_not_allowed(req: actix_web::HttpRequest) -> HttpResponse {
    let mut res = error_response(
        actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        &format!("method {} is not allowed on {}", req.method(), req.path()),
    );
    if matches!(req.path(), "/healthz" | "/readyz") {
        res.headers_mut().insert(
            actix_web::http::header::ALLOW,
            actix_web::http::header::HeaderValue::from_static("GET"),
        );
    }
    res
}

/// The answer for paths tessera does not serve.
pub async fn not_found() -> HttpResponse {
    error_response(
        actix_web::http::StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see /openapi.json for the API",
    )
}
