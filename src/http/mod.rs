//! The HTTP edge: thin handlers, request ids and logging, JSON errors.
//!
//! Handlers translate between HTTP and the domain; they hold no SQL and no
//! cryptography.

mod admin;
pub mod connections;
pub mod cors;
mod discovery;
pub mod errors;
mod health;
mod limits;
mod metrics;
mod openapi;
pub mod proxy;
mod request_log;
mod revocation;
pub mod tls;
mod token;

use std::sync::Arc;

use actix_web::{HttpResponse, web};

use crate::audit::Auditor;
use crate::auth::accounts::Accounts;
use crate::config::Config;
use crate::keys::keyring::KeyRing;
use crate::revocation::Revoker;
use crate::store::Store;
use crate::tokens::{ClientAuthenticator, TokenEndpoint};

pub use cors::cors;
pub use limits::{limit_headers, read_body};
pub use request_log::request_log;

/// What the HTTP layer needs to know of the configuration, and nothing
/// more (the master key, database URL and the rest stay in `startup`).
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// The issuer (`iss`, and the admin API's audience).
    pub issuer: String,
    /// How long verifiers may cache the JWKS.
    pub jwks_max_age: std::time::Duration,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Time a client has to send a whole body.
    pub client_body_timeout: std::time::Duration,
}

impl HttpSettings {
    /// The settings of `config`.
    pub fn of(config: &Config) -> HttpSettings {
        HttpSettings {
            issuer: config.issuer.clone(),
            jwks_max_age: config.jwks_max_age,
            trusted_proxies: config.trusted_proxies.clone(),
            client_body_timeout: config.client_body_timeout,
        }
    }
}

/// Shared state handed to every handler.
#[derive(Clone)]
pub struct AppState {
    /// Persistence.
    pub store: Arc<dyn Store>,
    /// The few settings request handling reads.
    pub settings: Arc<HttpSettings>,
    /// Signing keys and the JWKS.
    pub keys: Arc<KeyRing>,
    /// `POST /oauth/token` logic.
    pub token_endpoint: Arc<TokenEndpoint>,
    /// Client authentication for every endpoint.
    pub clients: Arc<ClientAuthenticator>,
    /// Revocation, introspection and the feed.
    pub revoker: Arc<Revoker>,
    /// Users and clients (the admin API).
    pub accounts: Arc<Accounts>,
    /// The audit trail.
    pub auditor: Auditor,
    /// Browser origins registered for clients (CORS).
    pub origins: Arc<cors::AllowedOrigins>,
    /// Introspection requests per client.
    pub introspection_limit: Arc<crate::auth::rate_limit::RateLimiter>,
    /// Revocation and logout requests per client.
    pub revocation_limit: Arc<crate::auth::rate_limit::RateLimiter>,
    /// Feed requests per client.
    pub feed_limit: Arc<crate::auth::rate_limit::RateLimiter>,
    /// The time.
    pub clock: Arc<dyn crate::clock::Clock>,
}

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(get("/healthz", health::healthz))
        .service(get("/readyz", health::readyz))
        .service(get("/metrics", metrics::metrics_endpoint))
        .service(get("/openapi.json", openapi::openapi_json))
        .service(get("/.well-known/jwks.json", discovery::jwks))
        .service(get(
            "/.well-known/oauth-authorization-server",
            discovery::metadata,
        ))
        .service(post("/oauth/token", token::token))
        .service(post("/oauth/revoke", revocation::revoke))
        .service(post("/oauth/introspect", revocation::introspect))
        .service(post("/oauth/logout", revocation::logout))
        .service(get("/v1/revocations", revocation::feed))
        .configure(admin::routes);
}

/// Every (method, path) registered, recorded by the helpers that register
/// them, so a test can hold the OpenAPI document against the real routes.
static REGISTERED: std::sync::Mutex<std::collections::BTreeSet<(String, String)>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

fn record(methods: &str, path: &str) {
    let mut set = REGISTERED.lock().unwrap_or_else(|e| e.into_inner());
    for method in methods.split(", ").filter(|m| *m != "HEAD") {
        set.insert((method.to_owned(), path.to_owned()));
    }
}

/// The (method, path) pairs registered so far (every route once an app has
/// been built), HEAD left out.
pub fn registered_routes() -> Vec<(String, String)> {
    REGISTERED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect()
}

/// A GET (and HEAD) resource that answers 405 with `Allow` to other methods.
fn get<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args> + Clone,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    record("GET", path);
    web::resource(path)
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
        .default_service(web::to(|req: actix_web::HttpRequest| async move {
            method_not_allowed(req, "GET, HEAD")
        }))
}

/// A POST resource that answers 405 with `Allow` to other methods.
fn post<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    record("POST", path);
    web::resource(path)
        .route(web::post().to(handler))
        .default_service(web::to(|req: actix_web::HttpRequest| async move {
            method_not_allowed(req, "POST")
        }))
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

pub(crate) fn method_not_allowed(req: actix_web::HttpRequest, allow: &'static str) -> HttpResponse {
    let mut res = error_response(
        actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        &format!("method {} is not allowed on {}", req.method(), req.path()),
    );
    res.headers_mut().insert(
        actix_web::http::header::ALLOW,
        actix_web::http::header::HeaderValue::from_static(allow),
    );
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
