//! The HTTP edge: thin handlers, request ids and logging, JSON errors.
//!
//! Handlers translate between HTTP and the domain; they hold no SQL and no
//! cryptography.

mod admin;
mod authorize;
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
mod userinfo;

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
    /// `/oauth/authorize` logic (the login page).
    pub authorizer: Arc<crate::authorize::Authorizer>,
    /// Client authentication for every endpoint.
    pub clients: Arc<ClientAuthenticator>,
    /// Revocation, introspection and the feed.
    pub revoker: Arc<Revoker>,
    /// Users and clients (the admin API).
    pub accounts: Arc<Accounts>,
    /// Trusted upstream issuers and users' links to them (the admin API).
    pub issuers: Arc<crate::federation::issuers::Issuers>,
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

/// One resource: its path, methods and handlers, and their documentation
/// (each handler's `#[utoipa::path]`), declared once in [`route_table`].
/// The path is the documented one and the OpenAPI document lists the table,
/// so what is served and what is documented cannot differ.
pub(crate) struct Route {
    /// Adds the resource's operations to the document.
    pub(crate) document:
        fn(utoipa::openapi::path::PathsBuilder) -> utoipa::openapi::path::PathsBuilder,
    /// Registers the resource.
    register: fn(&mut web::ServiceConfig),
}

/// Registers one resource whose methods are `get`, `post`, … handlers,
/// each with the `#[utoipa::path]` type utoipa generated beside it
/// (`__path_<handler>`); other methods get 405 with `Allow`.
macro_rules! route {
    ($($method:ident $handler:path => $doc:ty),+ $(,)?) => {
        Route {
            document: |paths| paths $(.path_from::<$doc>())+,
            register: |cfg| {
                let paths = [$(<$doc as utoipa::Path>::path()),+];
                debug_assert!(paths.iter().all(|p| *p == paths[0]), "one resource, one path: {paths:?}");
                let allow = allow(&[$(stringify!($method)),+]);
                let resource = web::resource(paths[0].clone())
                    $(.route(route!(@method $method).to($handler)))+;
                // GET is served for HEAD too.
                $(let resource = route!(@head $method resource $handler);)+
                cfg.service(resource.default_service(web::to(
                    move |req: actix_web::HttpRequest| {
                        let allow = allow.clone();
                        async move { method_not_allowed(req, &allow) }
                    },
                )));
            },
        }
    };
    (@method get) => { web::get() };
    (@method post) => { web::post() };
    (@method delete) => { web::delete() };
    (@method patch) => { web::patch() };
    (@head get $resource:ident $handler:path) => { $resource.route(web::head().to($handler)) };
    (@head $other:ident $resource:ident $handler:path) => { $resource };
}

/// The `Allow` header of a resource serving `methods` (lower case, as
/// written in the table); GET implies HEAD.
fn allow(methods: &[&str]) -> String {
    let mut allow: Vec<String> = methods.iter().map(|m| m.to_ascii_uppercase()).collect();
    if methods.contains(&"get") {
        allow.push("HEAD".into());
    }
    allow.join(", ")
}

/// Every resource tessera serves.
pub(crate) fn route_table() -> Vec<Route> {
    use admin as a;
    vec![
        route!(get health::healthz => health::__path_healthz),
        route!(get health::readyz => health::__path_readyz),
        route!(get metrics::metrics_endpoint => metrics::__path_metrics_endpoint),
        route!(get openapi::openapi_json => openapi::__path_openapi_json),
        route!(get discovery::jwks => discovery::__path_jwks),
        route!(get discovery::metadata => discovery::__path_metadata),
        route!(get discovery::openid_configuration => discovery::__path_openid_configuration),
        route!(
            get authorize::authorize => authorize::__path_authorize,
            post authorize::submit => authorize::__path_submit,
        ),
        route!(post token::token => token::__path_token),
        route!(get userinfo::userinfo => userinfo::__path_userinfo),
        route!(post revocation::revoke => revocation::__path_revoke),
        route!(post revocation::introspect => revocation::__path_introspect),
        route!(post revocation::logout => revocation::__path_logout),
        route!(get revocation::feed => revocation::__path_feed),
        route!(post a::create_user => a::__path_create_user),
        route!(post a::disable_user => a::__path_disable_user),
        route!(post a::set_password => a::__path_set_password),
        route!(post a::enrol_totp => a::__path_enrol_totp),
        route!(
            get a::list_sessions => a::__path_list_sessions,
            delete a::logout_everywhere => a::__path_logout_everywhere,
        ),
        route!(delete a::revoke_session => a::__path_revoke_session),
        route!(post a::create_client => a::__path_create_client),
        route!(
            get a::show_client => a::__path_show_client,
            patch a::update_client => a::__path_update_client,
        ),
        route!(post a::disable_client => a::__path_disable_client),
        route!(delete a::revoke_client => a::__path_revoke_client),
        route!(delete a::revoke_jti => a::__path_revoke_jti),
        route!(get a::list_keys => a::__path_list_keys),
        route!(post a::rotate_keys => a::__path_rotate_keys),
        route!(post a::retire_key => a::__path_retire_key),
        route!(get a::audit => a::__path_audit),
        route!(
            get a::federation::list_issuers => a::federation::__path_list_issuers,
            post a::federation::add_issuer => a::federation::__path_add_issuer,
        ),
        route!(post a::federation::disable_issuer => a::federation::__path_disable_issuer),
        route!(post a::federation::enable_issuer => a::federation::__path_enable_issuer),
        route!(
            get a::federation::list_links => a::federation::__path_list_links,
            post a::federation::add_link => a::federation::__path_add_link,
        ),
        route!(post a::federation::remove_link => a::federation::__path_remove_link),
    ]
}

/// Registers every route of [`route_table`].
pub fn routes(cfg: &mut web::ServiceConfig) {
    for route in route_table() {
        (route.register)(cfg);
    }
}

/// The (method, path) pairs tessera serves, HEAD left out: what the
/// OpenAPI document must list.
pub fn served_routes() -> Vec<(String, String)> {
    let mut paths = utoipa::openapi::path::PathsBuilder::new();
    for route in route_table() {
        paths = (route.document)(paths);
    }
    let mut served = Vec::new();
    for (path, item) in paths.build().paths {
        let methods = [
            ("GET", item.get.is_some()),
            ("POST", item.post.is_some()),
            ("DELETE", item.delete.is_some()),
            ("PATCH", item.patch.is_some()),
            ("PUT", item.put.is_some()),
        ];
        for (method, present) in methods {
            if present {
                served.push((method.to_owned(), path.clone()));
            }
        }
    }
    served
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

pub(crate) fn method_not_allowed(req: actix_web::HttpRequest, allow: &str) -> HttpResponse {
    let mut res = error_response(
        actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        &format!("method {} is not allowed on {}", req.method(), req.path()),
    );
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(allow) {
        res.headers_mut()
            .insert(actix_web::http::header::ALLOW, value);
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
