//! `GET /openapi.json`: the OpenAPI 3.1 description of every endpoint,
//! generated from the `#[utoipa::path]` attributes on the handlers
//! themselves, for exactly the routes of the route table the server
//! registers (`super::route_table`): a route cannot be served undocumented,
//! nor documented unserved.

use actix_web::HttpResponse;
use actix_web::http::header::CACHE_CONTROL;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::admin;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "client_basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("a user's access token with the openid scope"))
                    .build(),
            ),
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
        super::errors::ErrorBody,
        super::token::TokenForm,
        super::authorize::LoginForm,
        super::userinfo::UserInfo,
        super::revocation::RevokeForm,
        super::revocation::IntrospectForm,
        super::revocation::LogoutForm,
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
        admin::federation::IssuerList,
        admin::federation::IssuerName,
        admin::federation::LinkBody,
        admin::federation::LinkList,
        crate::federation::issuers::IssuerSpec,
        crate::federation::issuers::IssuerChange,
        crate::store::TrustedIssuer,
        crate::store::UserLink,
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
