//! SPA cookie mode over HTTP, on both engines: the refresh token only in a
//! hardened cookie, Origin and CSRF-header checks that consume nothing when
//! they fail, logout that expires the cookie, and CORS for exactly the
//! registered origins.

use std::time::Duration;

use reqwest::header::{HeaderMap, SET_COOKIE};
use serde_json::Value;

use crate::helpers::{ClientSpec, Engine, PASSWORD, TestApp, eventually, on_both_engines};

const ORIGIN: &str = "http://localhost:5555";

async fn app_with_spa(engine: Engine) -> TestApp {
    let app = crate::helpers::spawn_app(engine).await;
    app.add_client(
        ClientSpec::public("spa", &["password", "refresh_token"])
            .cookie_for(&[ORIGIN, "https://app.example"]),
    )
    .await;
    app.add_user("alice").await;
    // The CORS origin list is re-read every second.
    eventually(
        Duration::from_secs(3),
        "the origin is allowed",
        async || match preflight(&app, ORIGIN, "/oauth/token").await.status() {
            s if s == 204 => Ok(()),
            other => Err(other.to_string()),
        },
    )
    .await;
    app
}

async fn preflight(app: &TestApp, origin: &str, path: &str) -> reqwest::Response {
    app.client
        .request(reqwest::Method::OPTIONS, format!("{}{path}", app.address))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, x-tessera-csrf",
        )
        .send()
        .await
        .unwrap()
}

/// A browser-like POST: Origin, CSRF header and cookie as given.
async fn post(
    app: &TestApp,
    path: &str,
    form: &[(&str, &str)],
    origin: Option<&str>,
    csrf: bool,
    cookie: Option<&str>,
) -> reqwest::Response {
    let mut req = app.form_request(path, form);
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    if csrf {
        req = req.header("x-tessera-csrf", "1");
    }
    if let Some(c) = cookie {
        req = req.header("cookie", format!("__Host-tessera-rt={c}"));
    }
    req.send().await.unwrap()
}

const LOGIN: &[(&str, &str)] = &[
    ("grant_type", "password"),
    ("client_id", "spa"),
    ("username", "alice"),
    ("password", PASSWORD),
];
const REFRESH: &[(&str, &str)] = &[("grant_type", "refresh_token"), ("client_id", "spa")];

/// The refresh cookie set by a response: (value, attributes lower-cased).
fn refresh_cookie(headers: &HeaderMap) -> (String, String) {
    let set = headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("__Host-tessera-rt="))
        .expect("the refresh cookie is set");
    let (pair, attributes) = set.split_once(';').unwrap();
    (
        pair.trim_start_matches("__Host-tessera-rt=").to_owned(),
        attributes.to_ascii_lowercase(),
    )
}

async fn login_sets_a_hardened_cookie_and_no_body_token(engine: Engine) {
    let app = app_with_spa(engine).await;
    let res = post(&app, "/oauth/token", LOGIN, Some(ORIGIN), true, None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(res.headers()["access-control-allow-origin"], ORIGIN);
    assert_eq!(res.headers()["access-control-allow-credentials"], "true");
    let (value, attributes) = refresh_cookie(res.headers());
    // `sid.0.secret‖tag`: cookie-safe characters only.
    assert_eq!(value.len(), 36 + 3 + 43);
    assert!(value.contains(".0."), "{value}");
    for a in [
        "secure",
        "httponly",
        "samesite=strict",
        "path=/",
        "max-age=1209600",
    ] {
        assert!(attributes.contains(a), "{a} missing from {attributes}");
    }
    assert!(
        !attributes.contains("domain"),
        "__Host- cookies have no Domain"
    );
    let body: Value = res.json().await.unwrap();
    assert!(body.get("refresh_token").is_none(), "never in the body");
    assert!(body["access_token"].is_string());
}

async fn browser_checks_refuse_and_consume_nothing(engine: Engine) {
    let app = app_with_spa(engine).await;
    // Login: Origin and CSRF header required.
    for (origin, csrf) in [
        (None, true),
        (Some("https://evil.example"), true),
        (Some(ORIGIN), false),
    ] {
        let res = post(&app, "/oauth/token", LOGIN, origin, csrf, None).await;
        assert_eq!(res.status(), 403, "{origin:?} {csrf}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "access_denied");
        assert!(!body["error_description"].as_str().unwrap().is_empty());
    }
    let res = post(&app, "/oauth/token", LOGIN, Some(ORIGIN), true, None).await;
    let (cookie, _) = refresh_cookie(res.headers());
    // Refresh with a wrong origin or without the header: 403, token kept.
    for (origin, csrf) in [
        (Some("https://evil.example"), true),
        (Some(ORIGIN), false),
        (None, true),
    ] {
        let res = post(&app, "/oauth/token", REFRESH, origin, csrf, Some(&cookie)).await;
        assert_eq!(res.status(), 403, "{origin:?} {csrf}");
        assert!(res.headers().get(SET_COOKIE).is_none());
    }
    // The refresh token in the body is refused for a cookie client.
    let mut in_body = REFRESH.to_vec();
    in_body.push(("refresh_token", &cookie));
    let res = post(&app, "/oauth/token", &in_body, Some(ORIGIN), true, None).await;
    assert_eq!(res.status(), 400);
    // No cookie at all.
    let res = post(&app, "/oauth/token", REFRESH, Some(ORIGIN), true, None).await;
    assert_eq!(res.status(), 400);
    // The token was not consumed by any of that.
    let res = post(
        &app,
        "/oauth/token",
        REFRESH,
        Some(ORIGIN),
        true,
        Some(&cookie),
    )
    .await;
    assert_eq!(res.status(), 200);
    let (next, attributes) = refresh_cookie(res.headers());
    assert_ne!(next, cookie);
    assert!(attributes.contains("httponly"));
    let body: Value = res.json().await.unwrap();
    assert!(body.get("refresh_token").is_none());
}

async fn logout_expires_the_cookie_and_kills_the_session(engine: Engine) {
    let app = app_with_spa(engine).await;
    let res = post(&app, "/oauth/token", LOGIN, Some(ORIGIN), true, None).await;
    let (first, _) = refresh_cookie(res.headers());
    let res = post(
        &app,
        "/oauth/token",
        REFRESH,
        Some(ORIGIN),
        true,
        Some(&first),
    )
    .await;
    let (current, _) = refresh_cookie(res.headers());
    // Logout needs the browser checks too.
    let res = post(
        &app,
        "/oauth/logout",
        &[("client_id", "spa")],
        Some("https://evil.example"),
        true,
        Some(&current),
    )
    .await;
    assert_eq!(res.status(), 403);
    let res = post(
        &app,
        "/oauth/logout",
        &[("client_id", "spa")],
        Some(ORIGIN),
        true,
        Some(&current),
    )
    .await;
    assert_eq!(res.status(), 204);
    assert_eq!(res.headers()["access-control-allow-origin"], ORIGIN);
    let (value, attributes) = refresh_cookie(res.headers());
    assert!(value.is_empty());
    assert!(attributes.contains("max-age=0"), "{attributes}");
    // The current and an older cookie replayed afterwards: refused.
    for cookie in [&current, &first] {
        let res = post(
            &app,
            "/oauth/token",
            REFRESH,
            Some(ORIGIN),
            true,
            Some(cookie),
        )
        .await;
        assert_eq!(res.status(), 400);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "invalid_grant");
    }
}

async fn cors_allows_exactly_the_registered_origins(engine: Engine) {
    let app = app_with_spa(engine).await;
    for path in ["/oauth/token", "/oauth/logout", "/oauth/revoke"] {
        let res = preflight(&app, ORIGIN, path).await;
        assert_eq!(res.status(), 204, "{path}");
        let h = res.headers();
        assert_eq!(h["access-control-allow-origin"], ORIGIN);
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-allow-methods"], "GET, POST");
        assert!(
            h["access-control-allow-headers"]
                .to_str()
                .unwrap()
                .contains("x-tessera-csrf")
        );
        assert!(h["vary"].to_str().unwrap().contains("Origin"));
        let res = preflight(&app, "https://evil.example", path).await;
        assert_eq!(res.status(), 403);
        assert!(res.headers().get("access-control-allow-origin").is_none());
    }
    // The second registered origin is allowed too; a prefix of one is not.
    assert_eq!(
        preflight(&app, "https://app.example", "/oauth/token")
            .await
            .status(),
        204
    );
    assert_eq!(
        preflight(&app, "http://localhost:555", "/oauth/token")
            .await
            .status(),
        403
    );
    // Responses to other origins carry no CORS grant, whatever the outcome.
    let res = post(
        &app,
        "/oauth/token",
        LOGIN,
        Some("https://evil.example"),
        true,
        None,
    )
    .await;
    assert!(res.headers().get("access-control-allow-origin").is_none());
    // Endpoints that are not for browsers never answer CORS.
    let res = app
        .client
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            app.address
        ))
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
}

on_both_engines!(
    login_sets_a_hardened_cookie_and_no_body_token,
    browser_checks_refuse_and_consume_nothing,
    logout_expires_the_cookie_and_kills_the_session,
    cors_allows_exactly_the_registered_origins,
);
