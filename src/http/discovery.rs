//! `/.well-known/*`: the JWKS and RFC 8414 authorization-server metadata.

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;

/// `GET /.well-known/jwks.json`: public signing keys, cacheable for the
/// configured max-age (rotation publishes keys at least that long before use).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "discovery", responses((status = 200, description = "the published ES256 verification keys (RFC 7517), Cache-Control: public, max-age")))]
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    let max_age = state.settings.jwks_max_age.as_secs();
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "application/json"))
        .insert_header((CACHE_CONTROL, format!("public, max-age={max_age}")))
        .body(state.keys.jwks().to_vec())
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414). Lists only
/// endpoints this build serves.
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "discovery", responses((status = 200, description = "RFC 8414 authorization server metadata")))]
pub async fn metadata(state: web::Data<AppState>) -> HttpResponse {
    let issuer = &state.settings.issuer;
    let base = issuer.trim_end_matches('/');
    let auth_methods = ["client_secret_basic", "client_secret_post", "none"];
    let body = json!({
        "issuer": issuer,
        "token_endpoint": format!("{base}/oauth/token"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "revocation_endpoint": format!("{base}/oauth/revoke"),
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint": format!("{base}/oauth/introspect"),
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "grant_types_supported": ["password", "refresh_token", "client_credentials"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": [],
        "access_token_signing_alg_values_supported": ["ES256"],
    });
    HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "public, max-age=3600"))
        .json(body)
}
