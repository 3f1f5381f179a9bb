//! `POST /oauth/revoke` (RFC 7009), `POST /oauth/introspect` (RFC 7662),
//! `POST /oauth/logout`, and `GET /v1/revocations` (the feed).

use std::collections::HashMap;

use actix_web::{HttpRequest, HttpResponse, web};

use super::AppState;
use super::errors::no_store;
use super::token::{ClientForm, browser_facts, client_ip, presented, refresh_cookie};
use crate::auth::network;
use crate::oauth::{ErrorCode, OAuthError, invalid_request};
use crate::tokens::Presented;
use crate::tokens::policy::{check_browser_request, check_rate};

/// `POST /oauth/revoke`: `token` (and an optional `token_type_hint`, which
/// is not needed: refresh and access tokens cannot be confused).
#[utoipa::path(post, path = "/oauth/revoke", tag = "oauth",
    request_body(content = RevokeForm, content_type = "application/x-www-form-urlencoded"),
    security((), ("client_basic" = [])),
    responses((status = 200, description = "revoked, or the token was unknown (RFC 7009)"), super::errors::ClientErrors, (status = 413, description = "body over 16 KiB", body = super::errors::ErrorBody)))]
pub async fn revoke(
    req: HttpRequest,
    form: ClientForm,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OAuthError> {
    let ip = client_ip(&req);
    check_rate(&state.revocation_limit, &form.client, ip, "revocation")?;
    let token = form.required("token")?;
    let jkt = dpop_key(&req, &state)?;
    state
        .revoker
        .revoke(
            &form.client,
            token,
            jkt.as_deref(),
            ip.map(network::prefix),
            state.clock.now(),
        )
        .await?;
    Ok(no_store(HttpResponse::Ok()).finish())
}

/// The key of the request's DPoP proof, if it sent one: a bound refresh
/// token is revoked (or logged out) only with a proof by its key.
fn dpop_key(req: &HttpRequest, state: &AppState) -> Result<Option<String>, OAuthError> {
    let refused = |why: String| OAuthError::new(ErrorCode::InvalidDpopProof, why);
    match crate::verify::dpop_header(req) {
        None => Ok(None),
        Some(Err(why)) => Err(refused(why.to_owned())),
        Some(Ok(proof)) => state
            .revoker
            .verifier()
            .check_dpop_proof(&proof, "POST", req.path())
            .map(|p| Some(p.jkt))
            .map_err(|e| refused(e.to_string())),
    }
}

/// `POST /oauth/logout`: ends the session of `refresh_token` (from the
/// body, or the cookie for cookie-mode clients) and expires the cookie.
#[utoipa::path(post, path = "/oauth/logout", tag = "oauth",
    request_body(content = LogoutForm, content_type = "application/x-www-form-urlencoded"),
    security((), ("client_basic" = [])),
    responses((status = 204, description = "the session is ended (cookie mode: the cookie is expired)"), super::errors::ClientErrors, (status = 403, description = "access_denied (cookie mode)", body = super::errors::ErrorBody), (status = 413, description = "body over 16 KiB", body = super::errors::ErrorBody)))]
pub async fn logout(
    req: HttpRequest,
    form: ClientForm,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OAuthError> {
    let client = &form.client;
    let ip = client_ip(&req);
    check_rate(&state.revocation_limit, client, ip, "revocation")?;
    let mut facts = Presented::default();
    browser_facts(&req, &mut facts);
    check_browser_request(client, &facts)?;
    let token = if client.cookie {
        facts.refresh_cookie.as_deref()
    } else {
        form.params.get("refresh_token").map(String::as_str)
    };
    let token = token.ok_or_else(|| {
        invalid_request(if client.cookie {
            "the __Host-tessera-rt cookie is missing"
        } else {
            "refresh_token is required"
        })
    })?;
    let jkt = dpop_key(&req, &state)?;
    state
        .revoker
        .logout(
            client,
            token,
            jkt.as_deref(),
            ip.map(network::prefix),
            state.clock.now(),
        )
        .await?;
    let mut res = no_store(HttpResponse::NoContent());
    if client.cookie {
        res.cookie(refresh_cookie(String::new(), 0));
    }
    Ok(res.finish())
}

/// `POST /oauth/introspect`, for resource servers.
#[utoipa::path(post, path = "/oauth/introspect", tag = "oauth",
    request_body(content = IntrospectForm, content_type = "application/x-www-form-urlencoded"),
    security(("client_basic" = [])),
    responses((status = 200, description = "RFC 7662 answer; {\"active\": false} for anything not valid now", body = crate::revocation::Introspection), super::errors::ClientErrors, (status = 413, description = "body over 16 KiB", body = super::errors::ErrorBody), (status = 429, description = "too_many_requests, with Retry-After", body = super::errors::ErrorBody)))]
pub async fn introspect(
    req: HttpRequest,
    form: ClientForm,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OAuthError> {
    state
        .clients
        .require_resource_server(&form.client, form.basic)?;
    check_rate(
        &state.introspection_limit,
        &form.client,
        client_ip(&req),
        "introspection",
    )?;
    let token = form.required("token")?;
    let answer = state
        .revoker
        .introspect(&form.client, token, state.clock.now())
        .await?;
    Ok(no_store(HttpResponse::Ok()).json(answer))
}

/// `GET /v1/revocations?since=CURSOR&limit=N`, for resource servers
/// (HTTP Basic).
#[utoipa::path(get, path = "/v1/revocations", tag = "oauth",
    params(("since" = Option<u64>, Query, description = "cursor from the previous page's next_cursor (default 0)"), ("limit" = Option<u32>, Query, description = "1 to 1000 (default 1000)")),
    security(("client_basic" = [])),
    responses((status = 200, description = "revocations after the cursor, oldest first", body = crate::verify::FeedPage), super::errors::ClientErrors))]
pub async fn feed(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OAuthError> {
    let basic = presented(&req)?.basic;
    if basic.is_none() {
        return Err(OAuthError {
            code: ErrorCode::InvalidClient,
            description: "authenticate with HTTP Basic (client_id and client_secret)".into(),
            basic_challenge: true,
            retry_after: None,
        });
    }
    let client = state.clients.authenticate(&HashMap::new(), basic).await?;
    state.clients.require_resource_server(&client, true)?;
    check_rate(&state.feed_limit, &client, client_ip(&req), "feed")?;
    let query = crate::revocation::FeedQuery::parse(req.query_string())
        .map_err(|e| invalid_request(e.0))?;
    let page = state
        .revoker
        .feed_json(query.since, query.limit, state.clock.now())
        .await?;
    Ok(no_store(HttpResponse::Ok())
        .content_type("application/json")
        .body(web::Bytes::from_owner(page)))
}

/// `POST /oauth/revoke` form (RFC 7009).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct RevokeForm {
    /// An access or refresh token of this client.
    token: String,
    /// Ignored: the two kinds cannot be confused.
    token_type_hint: Option<String>,
    /// Public clients.
    client_id: Option<String>,
}

/// `POST /oauth/introspect` form (RFC 7662).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct IntrospectForm {
    /// The token to look at.
    token: String,
}

/// `POST /oauth/logout` form.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct LogoutForm {
    /// The session's current refresh token (cookie-mode clients send the cookie).
    refresh_token: Option<String>,
    /// Public clients.
    client_id: Option<String>,
}
