//! `GET /openapi.json`: the OpenAPI 3.1 description of every endpoint,
//! generated from the `#[utoipa::path]` attributes on the handlers
//! themselves. `tests/api/openapi.rs` compares it with the routes the app
//! actually registers (see [`super::registered_routes`]), so neither can
//! drift from the other.

use actix_web::HttpResponse;
use actix_web::http::header::CACHE_CONTROL;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{admin, discovery, health, metrics, revocation, token};

/// The RFC 6749 §5.2 error body every error response carries.
#[derive(ToSchema)]
#[allow(dead_code)] // A schema: rendered by `error_response`, never built.
pub struct ErrorBody {
    /// `invalid_request`, `invalid_client`, `invalid_grant`,
    /// `unauthorized_client`, `unsupported_grant_type`, `invalid_scope`,
    /// `invalid_target`, `access_denied`, `too_many_requests`,
    /// `temporarily_unavailable`, `not_found`, …
    error: String,
    /// What was wrong, for the developer; never echoes secrets.
    error_description: String,
}

/// `POST /oauth/token` form (parsed by `tokens::form`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TokenForm {
    /// `password`, `refresh_token` or `client_credentials`.
    grant_type: String,
    /// Public clients (or `client_secret_post`); confidential clients may use HTTP Basic instead.
    client_id: Option<String>,
    /// `client_secret_post`.
    client_secret: Option<String>,
    /// `password` grant.
    username: Option<String>,
    /// `password` grant.
    password: Option<String>,
    /// `password` grant, for users with TOTP (asked for only after the password is right).
    otp: Option<String>,
    /// `refresh_token` grant (cookie-mode clients send the cookie instead).
    refresh_token: Option<String>,
    /// Space-separated subset of the client's scopes.
    scope: Option<String>,
    /// One of the client's audiences (RFC 8707 `resource` is accepted too).
    audience: Option<String>,
}

/// `POST /oauth/revoke` form (RFC 7009).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RevokeForm {
    /// An access or refresh token of this client.
    token: String,
    /// Ignored: the two kinds cannot be confused.
    token_type_hint: Option<String>,
    /// Public clients.
    client_id: Option<String>,
}

/// `POST /oauth/introspect` form (RFC 7662).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct IntrospectForm {
    /// The token to look at.
    token: String,
}

/// `POST /oauth/logout` form.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LogoutForm {
    /// The session's current refresh token (cookie-mode clients send the cookie).
    refresh_token: Option<String>,
    /// Public clients.
    client_id: Option<String>,
}

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "client_basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
        components.add_security_scheme(
            "admin_bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "an access token of an admin client with scope tessera:admin and the issuer as audience",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "tessera", description = "Token service: ES256 access tokens, rotating refresh tokens, revocation, introspection, administration."),
    paths(
        health::healthz,
        health::readyz,
        metrics::metrics_endpoint,
        discovery::jwks,
        discovery::metadata,
        openapi_json,
        token::token,
        revocation::revoke,
        revocation::introspect,
        revocation::logout,
        revocation::feed,
        admin::create_user,
        admin::disable_user,
        admin::set_password,
        admin::enrol_totp,
        admin::list_sessions,
        admin::logout_everywhere,
        admin::revoke_session,
        admin::create_client,
        admin::show_client,
        admin::update_client,
        admin::disable_client,
        admin::revoke_client,
        admin::revoke_jti,
        admin::list_keys,
        admin::rotate_keys,
        admin::audit,
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "oauth", description = "RFC 6749, 7009, 7662 endpoints and the revocation feed"),
        (name = "admin", description = "administration over HTTP"),
        (name = "discovery", description = "keys and metadata"),
        (name = "operations", description = "probes and metrics"),
    )
)]
struct ApiDoc;

/// The document, rendered once.
pub fn document() -> &'static str {
    static DOC: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serializes")
    });
    &DOC
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "discovery", responses((status = 200, description = "this document (OpenAPI 3.1)")))]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "public, max-age=3600"))
        .content_type("application/json")
        .body(document())
}
