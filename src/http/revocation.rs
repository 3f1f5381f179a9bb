//! `POST /oauth/revoke` (RFC 7009), `POST /oauth/introspect` (RFC 7662),
//! `POST /oauth/logout`, and `GET /v1/revocations` (the feed).

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};

use super::AppState;
use super::token::{
    browser_facts, client_ip, no_store, oauth_error, presented, read_form, refresh_cookie,
    unavailable,
};
use crate::revocation::RevokeError;
use crate::store::Client;
use crate::tokens::endpoint::{check_browser_request, check_rate};
use crate::tokens::{ErrorCode, OAuthError, Presented, refresh};

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Reads the form and authenticates the client (any client, or only
/// resource servers).
async fn form_and_client(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    resource_server: bool,
) -> Result<(HashMap<String, String>, Arc<Client>), HttpResponse> {
    let params = read_form(req, payload).await?;
    let basic = presented(req).map_err(|e| oauth_error(&e))?.basic;
    let client = if resource_server {
        state
            .clients
            .authenticate_resource_server(&params, basic)
            .await
    } else {
        state.clients.authenticate(&params, basic).await
    };
    client.map(|c| (params, c)).map_err(|e| oauth_error(&e))
}

fn required<'a>(params: &'a HashMap<String, String>, name: &str) -> Result<&'a str, OAuthError> {
    params
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| OAuthError::new(ErrorCode::InvalidRequest, format!("{name} is required")))
}

fn revoke_error(e: RevokeError) -> HttpResponse {
    match e {
        RevokeError::NotYourToken => oauth_error(&OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "the token was not issued to this client",
        )),
        RevokeError::NotFound(what) => oauth_error(&OAuthError::new(
            ErrorCode::InvalidRequest,
            format!("{what} not found"),
        )),
        RevokeError::Store(e) => unavailable(&e),
    }
}

/// `POST /oauth/revoke`: `token` (and an optional `token_type_hint`, which
/// is not needed: refresh and access tokens cannot be confused).
#[utoipa::path(post, path = "/oauth/revoke", tag = "oauth",
    request_body(content = super::openapi::RevokeForm, content_type = "application/x-www-form-urlencoded"),
    security((), ("client_basic" = [])),
    responses((status = 200, description = "revoked, or the token was unknown (RFC 7009)"), (status = 400, description = "invalid_request and other RFC 6749 errors", body = super::openapi::ErrorBody), (status = 401, description = "invalid_client (with a Basic challenge) or a missing/invalid admin bearer token", body = super::openapi::ErrorBody), (status = 413, description = "body over 16 KiB", body = super::openapi::ErrorBody), (status = 503, description = "temporarily_unavailable: the database is down; with Retry-After", body = super::openapi::ErrorBody)))]
pub async fn revoke(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (params, client) = match form_and_client(&req, payload, &state, false).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    if let Err(e) = check_rate(
        &state.revocation_limit,
        &client,
        client_ip(&req),
        "revocation",
    ) {
        return oauth_error(&e);
    }
    let token = match required(&params, "token") {
        Ok(t) => t,
        Err(e) => return oauth_error(&e),
    };
    let network = client_ip(&req).map(refresh::network_prefix);
    match state.revoker.revoke(&client, token, network, now()).await {
        Ok(()) => no_store(HttpResponse::Ok()).finish(),
        Err(e) => revoke_error(e),
    }
}

/// `POST /oauth/logout`: ends the session of `refresh_token` (from the
/// body, or the cookie for cookie-mode clients) and expires the cookie.
#[utoipa::path(post, path = "/oauth/logout", tag = "oauth",
    request_body(content = super::openapi::LogoutForm, content_type = "application/x-www-form-urlencoded"),
    security((), ("client_basic" = [])),
    responses((status = 204, description = "the session is ended (cookie mode: the cookie is expired)"), (status = 400, description = "invalid_request and other RFC 6749 errors", body = super::openapi::ErrorBody), (status = 401, description = "invalid_client (with a Basic challenge) or a missing/invalid admin bearer token", body = super::openapi::ErrorBody), (status = 403, description = "access_denied (cookie mode)", body = super::openapi::ErrorBody), (status = 413, description = "body over 16 KiB", body = super::openapi::ErrorBody), (status = 503, description = "temporarily_unavailable: the database is down; with Retry-After", body = super::openapi::ErrorBody)))]
pub async fn logout(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (params, client) = match form_and_client(&req, payload, &state, false).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    if let Err(e) = check_rate(
        &state.revocation_limit,
        &client,
        client_ip(&req),
        "revocation",
    ) {
        return oauth_error(&e);
    }
    let mut facts = Presented::default();
    browser_facts(&req, &mut facts);
    if let Err(e) = check_browser_request(&client, &facts) {
        return oauth_error(&e);
    }
    let token = if client.cookie {
        facts.refresh_cookie.as_deref()
    } else {
        params.get("refresh_token").map(String::as_str)
    };
    let Some(token) = token else {
        return oauth_error(&OAuthError::new(
            ErrorCode::InvalidRequest,
            if client.cookie {
                "the __Host-tessera-rt cookie is missing"
            } else {
                "refresh_token is required"
            },
        ));
    };
    let network = client_ip(&req).map(refresh::network_prefix);
    match state.revoker.logout(&client, token, network, now()).await {
        Ok(()) => {
            let mut res = no_store(HttpResponse::NoContent());
            if client.cookie {
                res.cookie(refresh_cookie(String::new(), 0));
            }
            res.finish()
        }
        Err(e) => revoke_error(e),
    }
}

/// `POST /oauth/introspect`, for resource servers.
#[utoipa::path(post, path = "/oauth/introspect", tag = "oauth",
    request_body(content = super::openapi::IntrospectForm, content_type = "application/x-www-form-urlencoded"),
    security(("client_basic" = [])),
    responses((status = 200, description = "RFC 7662 answer; {\"active\": false} for anything not valid now", body = crate::revocation::Introspection), (status = 400, description = "invalid_request and other RFC 6749 errors", body = super::openapi::ErrorBody), (status = 401, description = "invalid_client (with a Basic challenge) or a missing/invalid admin bearer token", body = super::openapi::ErrorBody), (status = 413, description = "body over 16 KiB", body = super::openapi::ErrorBody), (status = 429, description = "too_many_requests, with Retry-After", body = super::openapi::ErrorBody), (status = 503, description = "temporarily_unavailable: the database is down; with Retry-After", body = super::openapi::ErrorBody)))]
pub async fn introspect(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (params, client) = match form_and_client(&req, payload, &state, true).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    if let Err(e) = check_rate(
        &state.introspection_limit,
        &client,
        client_ip(&req),
        "introspection",
    ) {
        return oauth_error(&e);
    }
    let token = match required(&params, "token") {
        Ok(t) => t,
        Err(e) => return oauth_error(&e),
    };
    match state.revoker.introspect(&client, token, now()).await {
        Ok(answer) => no_store(HttpResponse::Ok()).json(answer),
        Err(e) => unavailable(&e),
    }
}

/// `GET /v1/revocations?since=CURSOR&limit=N`, for resource servers
/// (HTTP Basic).
#[utoipa::path(get, path = "/v1/revocations", tag = "oauth",
    params(("since" = Option<u64>, Query, description = "cursor from the previous page's next_cursor (default 0)"), ("limit" = Option<u32>, Query, description = "1 to 1000 (default 1000)")),
    security(("client_basic" = [])),
    responses((status = 200, description = "revocations after the cursor, oldest first", body = crate::verify::FeedPage), (status = 400, description = "invalid_request and other RFC 6749 errors", body = super::openapi::ErrorBody), (status = 401, description = "invalid_client (with a Basic challenge) or a missing/invalid admin bearer token", body = super::openapi::ErrorBody), (status = 503, description = "temporarily_unavailable: the database is down; with Retry-After", body = super::openapi::ErrorBody)))]
pub async fn feed(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let basic = match presented(&req) {
        Ok(p) => p.basic,
        Err(e) => return oauth_error(&e),
    };
    if basic.is_none() {
        return oauth_error(&OAuthError {
            code: ErrorCode::InvalidClient,
            description: "authenticate with HTTP Basic (client_id and client_secret)".into(),
            basic_challenge: true,
            retry_after: None,
        });
    }
    let client = match state
        .clients
        .authenticate_resource_server(&HashMap::new(), basic)
        .await
    {
        Ok(client) => client,
        Err(e) => return oauth_error(&e),
    };
    if let Err(e) = check_rate(&state.feed_limit, &client, client_ip(&req), "feed") {
        return oauth_error(&e);
    }
    let query = match crate::revocation::FeedQuery::parse(req.query_string()) {
        Ok(q) => q,
        Err(e) => return oauth_error(&OAuthError::new(ErrorCode::InvalidRequest, e.0)),
    };
    match state
        .revoker
        .feed_json(query.since, query.limit, now())
        .await
    {
        Ok(page) => no_store(HttpResponse::Ok())
            .content_type("application/json")
            .body(web::Bytes::from_owner(page)),
        Err(e) => unavailable(&e),
    }
}
