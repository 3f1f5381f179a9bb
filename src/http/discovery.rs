//! `/.well-known/*`: the JWKS, RFC 8414 authorization-server metadata and
//! OpenID Connect discovery.

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

/// RFC 8414 metadata; OpenID Connect discovery adds its members to it.
fn server_metadata(issuer: &str) -> serde_json::Value {
    let base = issuer.trim_end_matches('/');
    let auth_methods = ["client_secret_basic", "client_secret_post", "none"];
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{base}/oauth/authorize"),
        "token_endpoint": format!("{base}/oauth/token"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "revocation_endpoint": format!("{base}/oauth/revoke"),
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint": format!("{base}/oauth/introspect"),
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "grant_types_supported": crate::tokens::grant::GrantType::ALL.map(|g| g.as_str()),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "dpop_signing_alg_values_supported": crate::verify::dpop::SUPPORTED_ALGS,
        "authorization_response_iss_parameter_supported": true,
        "prompt_values_supported": ["none", "login"],
        "scopes_supported": crate::authorize::request::OIDC_SCOPES,
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": [],
        "access_token_signing_alg_values_supported": ["ES256"],
    })
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414). Lists only
/// endpoints this build serves.
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "discovery", responses((status = 200, description = "RFC 8414 authorization server metadata")))]
pub async fn metadata(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "public, max-age=3600"))
        .json(server_metadata(&state.settings.issuer))
}

/// `GET /.well-known/openid-configuration` (OpenID Connect Discovery 1.0).
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "discovery", responses((status = 200, description = "OpenID Connect provider metadata")))]
pub async fn openid_configuration(state: web::Data<AppState>) -> HttpResponse {
    let issuer = &state.settings.issuer;
    let mut body = server_metadata(issuer);
    let extra = json!({
        "userinfo_endpoint": format!("{}/oauth/userinfo", issuer.trim_end_matches('/')),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "amr", "sid", "azp", "at_hash", "preferred_username"],
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
    });
    if let (Some(body), serde_json::Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "public, max-age=3600"))
        .json(body)
}
