//! `POST /oauth/token`, and what every OAuth endpoint reads from a request:
//! the form, client credentials, the browser facts cookie-mode clients are
//! checked on, and the client address. The rules live in `tokens::grant`;
//! errors render themselves (`super::errors`).

use std::sync::Arc;

use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header::{AUTHORIZATION, CONTENT_TYPE};
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use futures_util::StreamExt as _;
use futures_util::future::LocalBoxFuture;

use super::AppState;
use super::errors::no_store;
use crate::oauth::{ErrorCode, OAuthError, invalid_request};
use crate::store::Client;
use crate::tokens::Presented;
use crate::tokens::form::Params;
use crate::tokens::policy::REFRESH_COOKIE;

/// `POST /oauth/token`.
#[utoipa::path(post, path = "/oauth/token", tag = "oauth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    security((), ("client_basic" = [])),
    responses((status = 200, description = "tokens issued (Cache-Control: no-store); in cookie mode the refresh token is set as the __Host-tessera-rt cookie instead", body = crate::tokens::TokenResponse),
        super::errors::ClientErrors, (status = 403, description = "access_denied: a cookie-mode request without an allowed Origin or X-Tessera-CSRF: 1", body = super::errors::ErrorBody), (status = 413, description = "body over 16 KiB", body = super::errors::ErrorBody), (status = 429, description = "too_many_requests, with Retry-After", body = super::errors::ErrorBody)))]
pub async fn token(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, OAuthError> {
    let params = read_form(&req, payload.into_inner()).await?;
    let mut presented = presented(&req)?;
    presented.user_agent = req
        .headers()
        .get(actix_web::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    presented.ip = client_ip(&req);
    browser_facts(&req, &mut presented);
    presented.dpop = crate::verify::dpop_header(&req);
    let now = state.clock.now();
    // RFC 9449 §8: with nonces on, every answer carries the current one.
    let nonce = state.token_endpoint.dpop_nonce(now);
    let mut body = match state.token_endpoint.handle(&params, presented, now).await {
        Ok(body) => body,
        Err(e) => {
            let mut res = actix_web::ResponseError::error_response(&e);
            if let Some(nonce) = nonce
                && let Ok(value) = actix_web::http::header::HeaderValue::from_str(&nonce)
            {
                res.headers_mut().insert(DPOP_NONCE, value);
            }
            return Ok(res);
        }
    };
    let mut res = no_store(HttpResponse::Ok());
    if let Some(nonce) = nonce {
        res.insert_header((DPOP_NONCE, nonce));
    }
    if let Some(max_age) = body.refresh_cookie_max_age {
        // Cookie mode: the refresh token never reaches JavaScript.
        if let Some(token) = body.refresh_token.take() {
            res.cookie(refresh_cookie(token, max_age));
        }
    }
    Ok(res.json(body))
}

const DPOP_NONCE: actix_web::http::header::HeaderName =
    actix_web::http::header::HeaderName::from_static("dpop-nonce");

/// A form request from an authenticated client (any client; the endpoint
/// checks what more it needs): the revocation, logout and introspection
/// endpoints take it as an argument.
pub struct ClientForm {
    /// The form parameters.
    pub params: Params,
    /// The authenticated client.
    pub client: Arc<Client>,
    /// Whether it authenticated with HTTP Basic.
    pub basic: bool,
}

impl FromRequest for ClientForm {
    type Error = OAuthError;
    type Future = LocalBoxFuture<'static, Result<ClientForm, OAuthError>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        let payload = payload.take();
        Box::pin(async move {
            let state = req
                .app_data::<web::Data<AppState>>()
                .expect("AppState is registered")
                .clone();
            let params = read_form(&req, payload).await?;
            let basic = presented(&req)?.basic;
            let used_basic = basic.is_some();
            let client = state.clients.authenticate(&params, basic).await?;
            Ok(ClientForm {
                params,
                client,
                basic: used_basic,
            })
        })
    }
}

impl ClientForm {
    /// The parameter `name`, or `invalid_request` naming it.
    pub fn required(&self, name: &str) -> Result<&str, OAuthError> {
        self.params
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| invalid_request(format!("{name} is required")))
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

/// Reads an `application/x-www-form-urlencoded` body into parameters:
/// repeated parameters are refused (RFC 6749 §3.2), empty ones dropped (§3.1).
async fn read_form(
    req: &HttpRequest,
    mut payload: actix_web::dev::Payload,
) -> Result<Params, OAuthError> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(invalid_request(
            "Content-Type must be application/x-www-form-urlencoded",
        ));
    }
    // Already read whole, within the body limit and deadline (see `limits`).
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| invalid_request("the request body could not be read"))?;
        body.extend_from_slice(&chunk);
    }
    crate::tokens::form::parse_form(&body).map_err(|e| invalid_request(e.0))
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
        Ok(None) => Err(invalid_request(
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
        .map(|s| s.settings.trusted_proxies.as_slice())
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

/// `POST /oauth/token` form (parsed by `tokens::form`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct TokenForm {
    /// `authorization_code`, `refresh_token`, `client_credentials`,
    /// `urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693) or (legacy) `password`.
    grant_type: String,
    /// `authorization_code` grant: the code from the redirect.
    code: Option<String>,
    /// `authorization_code` grant: the redirect URI of the authorization request.
    redirect_uri: Option<String>,
    /// `authorization_code` grant: the PKCE verifier.
    code_verifier: Option<String>,
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
    /// One of the client's audiences (RFC 8707 `resource` is accepted too);
    /// token exchange of an access token: one of its exchange audiences.
    audience: Option<String>,
    /// Token exchange: the token to exchange (a tessera access token, or an
    /// ID token or JWT of a trusted upstream issuer).
    subject_token: Option<String>,
    /// Token exchange: `urn:ietf:params:oauth:token-type:access_token`,
    /// `…:id_token` or `…:jwt`.
    subject_token_type: Option<String>,
    /// Token exchange: only `urn:ietf:params:oauth:token-type:access_token`.
    requested_token_type: Option<String>,
}
