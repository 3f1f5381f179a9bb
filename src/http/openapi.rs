//! `GET /openapi.json`: the OpenAPI 3.1 description of every endpoint,
//! generated from the `#[utoipa::path]` attributes on the handlers
//! themselves, for exactly the routes of the route table the server
//! registers (`super::route_table`): a route cannot be served undocumented,
//! nor documented unserved.

use actix_web::HttpResponse;
use actix_web::http::header::CACHE_CONTROL;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::admin;

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
    // Paths come from the route table (`super::route_table`), not from a
    // list here: what is documented is what is registered.
    components(schemas(
        ErrorBody,
        TokenForm,
        RevokeForm,
        IntrospectForm,
        LogoutForm,
        crate::tokens::TokenResponse,
        crate::revocation::Introspection,
        crate::verify::FeedPage,
        crate::verify::FeedEntry,
        crate::verify::RevocationKind,
        crate::auth::accounts::ClientSpec,
        crate::store::BindingPolicy,
        admin::NewUserBody,
        admin::CreatedUser,
        admin::Revoked,
        admin::PasswordBody,
        admin::Enrolled,
        admin::SessionList,
        admin::SessionView,
        admin::CreatedClient,
        admin::ClientView,
        admin::ClientUpdate,
        admin::AuditPage,
        admin::AuditRow,
    )),
    modifiers(&SecuritySchemes),
    tags(
        (name = "oauth", description = "RFC 6749, 7009, 7662 endpoints and the revocation feed"),
        (name = "admin", description = "administration over HTTP"),
        (name = "discovery", description = "keys and metadata"),
        (name = "operations", description = "probes and metrics"),
    )
)]
struct ApiDoc;

/// The document, rendered once: the schemas and security schemes above,
/// and the paths of every route the server registers.
pub fn document() -> &'static str {
    static DOC: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let mut doc = ApiDoc::openapi();
        let mut paths = utoipa::openapi::path::PathsBuilder::new();
        for route in super::route_table() {
            paths = (route.document)(paths);
        }
        doc.paths = paths.build();
        doc.to_pretty_json()
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
