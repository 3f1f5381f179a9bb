//! `POST /oauth/token`: parses the form and client credentials, renders the
//! result. The rules live in `tokens::endpoint`.

use actix_web::http::StatusCode;
use actix_web::http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, PRAGMA, WWW_AUTHENTICATE,
};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt as _;

use super::AppState;
use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::cookie::{Cookie, SameSite};

use crate::tokens::endpoint::REFRESH_COOKIE;
use crate::tokens::{ErrorCode, OAuthError, Presented};

/// `POST /oauth/token`.
#[utoipa::path(post, path = "/oauth/token", tag = "oauth",
    request_body(content = super::openapi::TokenForm, content_type = "application/x-www-form-urlencoded"),
    security((), ("client_basic" = [])),
    responses((status = 200, description = "tokens issued (Cache-Control: no-store); in cookie mode the refresh token is set as the __Host-tessera-rt cookie instead", body = crate::tokens::TokenResponse),
        (status = 400, description = "invalid_request and other RFC 6749 errors", body = super::openapi::ErrorBody), (status = 401, description = "invalid_client (with a Basic challenge) or a missing/invalid admin bearer token", body = super::openapi::ErrorBody), (status = 403, description = "access_denied: a cookie-mode request without an allowed Origin or X-Tessera-CSRF: 1", body = super::openapi::ErrorBody), (status = 413, description = "body over 16 KiB", body = super::openapi::ErrorBody), (status = 429, description = "too_many_requests, with Retry-After", body = super::openapi::ErrorBody), (status = 503, description = "temporarily_unavailable: the database is down; with Retry-After", body = super::openapi::ErrorBody)))]
pub async fn token(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let result = match read_form(&req, payload).await {
        Ok(params) => match presented(&req) {
            Ok(mut presented) => {
                presented.user_agent = req
                    .headers()
                    .get(actix_web::http::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                presented.ip = client_ip(&req);
                browser_facts(&req, &mut presented);
                let now = chrono::Utc::now().timestamp();
                state.token_endpoint.handle(&params, presented, now).await
            }
            Err(e) => Err(e),
        },
        Err(response) => return response,
    };
    match result {
        Ok(mut body) => {
            let mut res = no_store(HttpResponse::Ok());
            if let Some(max_age) = body.refresh_cookie_max_age {
                // Cookie mode: the refresh token never reaches JavaScript.
                if let Some(token) = body.refresh_token.take() {
                    res.cookie(refresh_cookie(token, max_age));
                }
            }
            res.json(body)
        }
        Err(e) => oauth_error(&e),
    }
}

/// The `__Host-` prefix pins the cookie to this exact host, over HTTPS,
/// for every path; `HttpOnly` hides it from JavaScript; `SameSite=Strict`
/// keeps other sites' pages from sending it.
pub(super) fn refresh_cookie(value: String, max_age: i64) -> Cookie<'static> {
    Cookie::build(REFRESH_COOKIE, value)
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .max_age(CookieDuration::seconds(max_age.max(0)))
        .finish()
}

/// The facts a cookie-mode client is checked on: the cookie, `Origin`, and
/// the CSRF header.
pub(super) fn browser_facts(req: &HttpRequest, presented: &mut Presented) {
    presented.refresh_cookie = req.cookie(REFRESH_COOKIE).map(|c| c.value().to_owned());
    presented.origin = req
        .headers()
        .get(actix_web::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    presented.csrf_header = req
        .headers()
        .get("x-tessera-csrf")
        .is_some_and(|v| v.as_bytes() == b"1");
}

pub(super) fn no_store(
    mut builder: actix_web::HttpResponseBuilder,
) -> actix_web::HttpResponseBuilder {
    builder
        .insert_header((CACHE_CONTROL, "no-store"))
        .insert_header((PRAGMA, "no-cache"));
    builder
}

/// Renders an RFC 6749 §5.2 error with its status code.
pub fn oauth_error(e: &OAuthError) -> HttpResponse {
    let status = match e.code {
        ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
        ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::AccessDenied => StatusCode::FORBIDDEN,
        ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut res = no_store(HttpResponse::build(status));
    if e.basic_challenge {
        res.insert_header((
            WWW_AUTHENTICATE,
            "Basic realm=\"tessera\", charset=\"UTF-8\"",
        ));
    }
    if e.code == ErrorCode::TemporarilyUnavailable {
        res.insert_header(("Retry-After", "1"));
    }
    if let Some(seconds) = e.retry_after {
        res.insert_header(("Retry-After", seconds.max(1).to_string()));
    }
    res.json(serde_json::json!({ "error": e.code, "error_description": e.description }))
}

fn bad_request(description: &str) -> HttpResponse {
    oauth_error(&OAuthError::new(ErrorCode::InvalidRequest, description))
}

/// Reads an `application/x-www-form-urlencoded` body into parameters:
/// repeated parameters are refused (RFC 6749 §3.2), empty ones dropped (§3.1).
pub(super) async fn read_form(
    req: &HttpRequest,
    mut payload: web::Payload,
) -> Result<crate::tokens::form::Params, HttpResponse> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(bad_request(
            "Content-Type must be application/x-www-form-urlencoded",
        ));
    }
    // Already read whole, within the body limit and deadline (see `limits`).
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| bad_request("the request body could not be read"))?;
        body.extend_from_slice(&chunk);
    }
    crate::tokens::form::parse_form(&body).map_err(|e| bad_request(&e.0))
}

/// Client credentials from `Authorization: Basic` (RFC 6749 §2.3.1: the id
/// and secret are form-urlencoded before Basic encoding).
pub(super) fn presented(req: &HttpRequest) -> Result<Presented, OAuthError> {
    let Some(value) = req.headers().get(AUTHORIZATION) else {
        return Ok(Presented::default());
    };
    match crate::tokens::form::parse_basic(value.as_bytes()) {
        Ok(Some(credentials)) => Ok(Presented {
            basic: Some(credentials),
            ..Presented::default()
        }),
        Ok(None) => Err(OAuthError::new(
            ErrorCode::InvalidRequest,
            "the token endpoint accepts only Basic client authentication in the Authorization header",
        )),
        Err(e) => Err(OAuthError {
            code: ErrorCode::InvalidClient,
            description: e.0,
            basic_challenge: true,
            retry_after: None,
        }),
    }
}

/// The client's IP address: the peer, or what our trusted proxies say in
/// `X-Forwarded-For` (see `http::proxy`).
pub(super) fn client_ip(req: &HttpRequest) -> Option<std::net::IpAddr> {
    let peer = req.peer_addr()?.ip().to_canonical();
    let trusted = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.config.trusted_proxies.as_slice())
        .unwrap_or_default();
    if trusted.is_empty() {
        return Some(peer);
    }
    let forwarded: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        // A value that is not visible ASCII ends the walk like any garbage.
        .map(|v| v.to_str().unwrap_or(""))
        .collect();
    Some(super::proxy::client_ip(peer, &forwarded, trusted))
}

/// A store failure as the client sees it: 503, try again.
pub(super) fn unavailable(e: &crate::store::StoreError) -> HttpResponse {
    tracing::error!(error = %e, "database error");
    oauth_error(&OAuthError::new(
        ErrorCode::TemporarilyUnavailable,
        "try again shortly",
    ))
}
