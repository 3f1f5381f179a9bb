//! `GET|POST /oauth/authorize`: tessera's login page. The flow's rules live
//! in `crate::authorize`; this reads the query, the form and the cookies,
//! and renders HTML (maud templates, compiled in, escaped by construction).
//!
//! Every answer here is `no-store`, may not be framed (`frame-ancestors
//! 'none'`, `X-Frame-Options: DENY`), runs no script at all (the CSP has
//! no `script-src`), and sends no `Referer` (a code in a URL stays there).

use std::sync::LazyLock;

use actix_web::cookie::time::Duration as CookieDuration;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, LOCATION};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use base64::Engine as _;
use futures_util::StreamExt as _;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::AppState;
use super::errors::no_store;
use super::token::client_ip;
use crate::authorize::{
    Browser, Form, LOGIN_COOKIE, LOGIN_COOKIE_TTL, Outcome, RawParams, SSO_COOKIE, Step,
};

/// Longest query or form accepted (a real request is far shorter).
const MAX_REQUEST: usize = 8 * 1024;

/// The page's only style sheet; the CSP allows exactly this text by hash.
const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f4f5f7;color:#1b1d21;margin:0}\
main{max-width:22rem;margin:4rem auto;background:#fff;padding:2rem;border-radius:.5rem;box-shadow:0 1px 4px #0002}\
h1{font-size:1.4rem;margin:0 0 .5rem}p{line-height:1.4}label{display:block;margin:1rem 0 .25rem;font-weight:600}\
input{width:100%;box-sizing:border-box;padding:.6rem;font-size:1rem;border:1px solid #6b7280;border-radius:.3rem}\
button{margin-top:1.5rem;width:100%;padding:.7rem;font-size:1rem;background:#1d4ed8;color:#fff;border:0;border-radius:.3rem}\
.error{background:#fde8e8;color:#8a1c1c;padding:.6rem;border-radius:.3rem}.client{color:#4b5563}";

static STYLE_HASH: LazyLock<String> = LazyLock::new(|| {
    base64::engine::general_purpose::STANDARD.encode(crate::digest::sha256(STYLE.as_bytes()))
});

/// `GET /oauth/authorize`.
#[utoipa::path(get, path = "/oauth/authorize", tag = "oauth",
    params(
        ("response_type" = String, Query, description = "code"),
        ("client_id" = String, Query, description = "a client registered with --grant authorization_code"),
        ("redirect_uri" = Option<String>, Query, description = "exactly one of the client's --redirect-uri (may be omitted when it has one)"),
        ("code_challenge" = String, Query, description = "PKCE: base64url SHA-256 of the code verifier"),
        ("code_challenge_method" = String, Query, description = "S256 (plain is refused)"),
        ("state" = Option<String>, Query, description = "returned unchanged"),
        ("scope" = Option<String>, Query, description = "the client's scopes, plus openid and profile"),
        ("nonce" = Option<String>, Query, description = "OpenID Connect: put into the ID token"),
        ("prompt" = Option<String>, Query, description = "login (always show the form) or none (never: login_required)"),
    ),
    responses(
        (status = 200, description = "the login page (HTML)", content_type = "text/html"),
        (status = 303, description = "to the redirect URI with code, state and iss (the browser is signed in), or with error, error_description, state and iss"),
        (status = 400, description = "an unknown client or a redirect URI not registered for it: an HTML page, never a redirect", content_type = "text/html"),
    ))]
pub async fn authorize(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let query = req.query_string();
    if query.len() > MAX_REQUEST {
        return page(400, "The sign-in request is too long.");
    }
    let params = match crate::authorize::request::raw_params(query.as_bytes()) {
        Ok(params) => params,
        Err(message) => return page(400, &message),
    };
    let outcome = state
        .authorizer
        .begin(&params, &browser(&req), state.clock.now())
        .await;
    render(outcome)
}

/// `POST /oauth/authorize`: the login form.
#[utoipa::path(post, path = "/oauth/authorize", tag = "oauth",
    request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "signed in: to the redirect URI with code, state and iss"),
        (status = 200, description = "the next step (the TOTP code)", content_type = "text/html"),
        (status = 400, description = "not a form, an unknown client or redirect URI (an error page), or a missing field (the form again)", content_type = "text/html"),
        (status = 413, description = "a form over 8 KiB", content_type = "text/html"),
        (status = 401, description = "wrong username, password or code: the form again", content_type = "text/html"),
        (status = 403, description = "the anti-CSRF token does not belong to this browser: the form again", content_type = "text/html"),
        (status = 429, description = "too many failed logins, with Retry-After: the form again", content_type = "text/html"),
        (status = 503, description = "too many logins waiting to be checked, with Retry-After", content_type = "text/html"),
    ))]
pub async fn submit(
    req: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let form_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_type {
        return page(400, "The sign-in form was not sent as a form.");
    }
    // Already read whole, within the body limit and deadline (see `limits`).
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let Ok(chunk) = chunk else {
            return page(400, "The sign-in form could not be read.");
        };
        if body.len() + chunk.len() > MAX_REQUEST {
            return page(413, "The sign-in form is too long.");
        }
        body.extend_from_slice(&chunk);
    }
    let params: RawParams = match crate::authorize::request::raw_params(&body) {
        Ok(params) => params,
        Err(message) => return page(400, &message),
    };
    let outcome = state
        .authorizer
        .submit(&params, &browser(&req), state.clock.now())
        .await;
    render(outcome)
}

fn browser(req: &HttpRequest) -> Browser {
    Browser {
        sign_in: req.cookie(SSO_COOKIE).map(|c| c.value().to_owned()),
        login: req.cookie(LOGIN_COOKIE).map(|c| c.value().to_owned()),
        ip: client_ip(req),
    }
}

/// `__Host-`: this host only, over HTTPS, every path; `HttpOnly`: no
/// script reads it; `SameSite=Lax`: sent on the top-level navigation that
/// brings the browser back, never on another site's form post or fetch.
fn browser_cookie(name: &'static str, value: String, max_age: i64) -> Cookie<'static> {
    Cookie::build(name, value)
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Lax)
        .path("/")
        .max_age(CookieDuration::seconds(max_age))
        .finish()
}

/// The headers of every answer of the login page.
fn hardened(status: u16, form_target: Option<&str>) -> HttpResponseBuilder {
    let mut res = no_store(HttpResponse::build(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
    ));
    // `form-action` also governs the redirect that follows a post, so the
    // client's origin is allowed as a target besides this page itself.
    let form_action = match form_target {
        Some(origin) => format!("'self' {origin}"),
        None => "'self'".to_owned(),
    };
    res.insert_header((
        "Content-Security-Policy",
        format!(
            "default-src 'none'; style-src 'sha256-{}'; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'",
            *STYLE_HASH
        ),
    ))
    .insert_header(("X-Frame-Options", "DENY"))
    .insert_header(("Referrer-Policy", "no-referrer"));
    res
}

fn render(outcome: Outcome) -> HttpResponse {
    match outcome {
        Outcome::Redirect { location, sign_in } => {
            let mut res = hardened(303, None);
            res.insert_header((LOCATION, location));
            if let Some((value, ttl)) = sign_in {
                res.cookie(browser_cookie(SSO_COOKIE, value, ttl));
            }
            res.finish()
        }
        Outcome::Page { status, message } => page(status, &message),
        Outcome::Form(form) => login_form(*form),
    }
}

/// An error page: no form, no link back (the client is not trusted).
fn page(status: u16, message: &str) -> HttpResponse {
    let body = layout(
        "Sign-in error",
        html! {
            h1 { "Sign-in error" }
            p role="alert" { (message) }
            p { "Go back to the application and try again. If this keeps happening, tell its developers." }
        },
    );
    hardened(status, None)
        .content_type("text/html; charset=utf-8")
        .body(body.into_string())
}

fn layout(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " – tessera" }
                style { (PreEscaped(STYLE)) }
            }
            body { main { (content) } }
        }
    }
}

fn login_form(form: Form) -> HttpResponse {
    let origin = url::Url::parse(&form.redirect_uri)
        .map(|u| u.origin().ascii_serialization())
        .ok();
    let error = form.error.as_deref();
    let content = html! {
        h1 { "Sign in" }
        p.client { "to continue to " strong { (form.client_id) } }
        @if let Some(message) = error {
            p.error #error role="alert" { (message) }
        }
        form method="post" action="/oauth/authorize" {
            @for (name, value) in &form.fields {
                input type="hidden" name=(name) value=(value);
            }
            input type="hidden" name="csrf" value=(form.csrf);
            @match &form.step {
                Step::Password => {
                    label for="username" { "Username" }
                    input #username type="text" name="username" autocomplete="username"
                        autocapitalize="none" spellcheck="false" required autofocus
                        value=[form.username.as_deref()]
                        aria-describedby=[error.map(|_| "error")];
                    label for="password" { "Password" }
                    input #password type="password" name="password" autocomplete="current-password" required
                        aria-describedby=[error.map(|_| "error")];
                    button type="submit" { "Sign in" }
                }
                Step::Otp { pending } => {
                    input type="hidden" name="pending" value=(pending);
                    p #otp-help { "Enter the 6-digit code from your authenticator app." }
                    label for="otp" { "One-time code" }
                    input #otp type="text" name="otp" autocomplete="one-time-code" inputmode="numeric"
                        pattern="[0-9]{6}" maxlength="6" required autofocus aria-describedby="otp-help";
                    button type="submit" { "Verify" }
                }
            }
        }
    };
    let mut res = hardened(form.status, origin.as_deref());
    if let Some(seconds) = form.retry_after {
        res.insert_header(("Retry-After", seconds.max(1).to_string()));
    }
    if let Some(value) = form.set_login_cookie {
        res.cookie(browser_cookie(LOGIN_COOKIE, value, LOGIN_COOKIE_TTL));
    }
    res.content_type("text/html; charset=utf-8")
        .body(layout("Sign in", content).into_string())
}

/// The login form's fields (besides the authorization request's, carried
/// as hidden fields and validated again).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct LoginForm {
    /// The anti-CSRF token of the form (bound to the `__Host-tessera-login` cookie).
    csrf: String,
    /// First step.
    username: Option<String>,
    /// First step.
    password: Option<String>,
    /// Second step: the sealed first step.
    pending: Option<String>,
    /// Second step: the TOTP code.
    otp: Option<String>,
}
