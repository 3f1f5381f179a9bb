//! The authorization code flow over HTTP, as a browser drives it: the
//! login page, its TOTP step, the browser sign-in, PKCE, codes, the ID
//! token and userinfo; and every rule's attack.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    AUD, ClientSpec, Engine, Fixture, ISSUER, PASSWORD, TestApp, fixture, fixture_with,
    on_both_engines,
};

const REDIRECT: &str = "https://app.example/callback";
const OTHER_REDIRECT: &str = "https://other.example/cb";

/// A browser: its cookies (kept by hand: they are `Secure` and the test
/// server speaks plain HTTP on loopback) and no automatic redirects.
pub struct Browser<'a> {
    app: &'a TestApp,
    http: reqwest::Client,
    cookies: HashMap<String, String>,
}

/// A PKCE pair: (verifier, S256 challenge).
pub fn pkce() -> (String, String) {
    let verifier = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let challenge = URL_SAFE_NO_PAD.encode(tessera::digest::sha256(verifier.as_bytes()));
    (verifier, challenge)
}

fn query(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// The query parameters of a redirect's `Location`.
pub fn location_params(res: &reqwest::Response) -> (String, HashMap<String, String>) {
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let url = url::Url::parse(&location).unwrap();
    let params = url.query_pairs().into_owned().collect();
    let base = format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap(),
        url.path()
    );
    (base, params)
}

/// The form's fields (hidden ones, as rendered), HTML-unescaped.
pub fn hidden_fields(html: &str) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    for part in html.split("<input type=\"hidden\" ").skip(1) {
        let attr = |name: &str| {
            let start = part.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
            let end = start + part[start..].find('"').unwrap();
            part[start..end]
                .replace("&quot;", "\"")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&#39;", "'")
                .replace("&amp;", "&")
        };
        fields.push((attr("name"), attr("value")));
    }
    fields
}

impl<'a> Browser<'a> {
    pub fn new(app: &'a TestApp) -> Browser<'a> {
        Browser {
            app,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep_cookies(&mut self, res: &reqwest::Response) {
        for value in res.headers().get_all("set-cookie") {
            let value = value.to_str().unwrap();
            let (pair, _) = value.split_once(';').unwrap_or((value, ""));
            let (name, v) = pair.split_once('=').unwrap();
            if value.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), v.to_owned());
            }
        }
    }

    pub async fn authorize(&mut self, pairs: &[(&str, &str)]) -> reqwest::Response {
        let res = self
            .http
            .get(format!(
                "{}/oauth/authorize?{}",
                self.app.address,
                query(pairs)
            ))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep_cookies(&res);
        res
    }

    pub async fn post(&mut self, fields: &[(String, String)]) -> reqwest::Response {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let res = self
            .http
            .post(format!("{}/oauth/authorize", self.app.address))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", self.cookie_header())
            .body(body)
            .send()
            .await
            .unwrap();
        self.keep_cookies(&res);
        res
    }

    /// Submits the form of `page` with `extra` fields.
    pub async fn submit(&mut self, page: &str, extra: &[(&str, &str)]) -> reqwest::Response {
        let mut fields = hidden_fields(page);
        fields.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.post(&fields).await
    }

    /// Authorization request → login form → code (the redirect's parameters).
    pub async fn sign_in(
        &mut self,
        request: &[(&str, &str)],
        user: &str,
        password: &str,
    ) -> HashMap<String, String> {
        let res = self.authorize(request).await;
        assert_eq!(res.status(), 200, "the login form");
        let page = res.text().await.unwrap();
        let res = self
            .submit(&page, &[("username", user), ("password", password)])
            .await;
        assert_eq!(res.status(), 303, "signed in");
        location_params(&res).1
    }
}

/// The authorization request of `client` with `challenge`.
fn request<'a>(client: &'a str, challenge: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("response_type", "code"),
        ("client_id", client),
        ("redirect_uri", REDIRECT),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("state", "st-42"),
        ("scope", "openid profile read"),
        ("nonce", "n-0S6_WzA2Mj"),
    ]
}

/// `grant_type=authorization_code` for `client`.
async fn redeem(app: &TestApp, client: &str, code: &str, verifier: &str) -> reqwest::Response {
    app.form(
        "/oauth/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", client),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
        None,
    )
    .await
}

async fn error_of(res: reqwest::Response) -> (u16, String, String) {
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
        body["error_description"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

async fn with_code_clients(engine: Engine) -> Fixture {
    let f = fixture(engine).await;
    code_clients(&f.app).await;
    f
}

async fn code_clients(app: &TestApp) {
    app.add_client(
        ClientSpec::public("app", &["authorization_code", "refresh_token"])
            .redirect_uris(&[REDIRECT]),
    )
    .await;
    app.add_client(
        ClientSpec::public("other-app", &["authorization_code", "refresh_token"])
            .redirect_uris(&[REDIRECT, OTHER_REDIRECT]),
    )
    .await;
}

fn decoding_key(jwks: &Value, kid: &str) -> DecodingKey {
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    DecodingKey::from_jwk(set.find(kid).unwrap()).unwrap()
}

fn cookie_attributes(res: &reqwest::Response, name: &str) -> String {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} is set"))
}

/// The whole journey: the form, the code, the tokens, the ID token,
/// userinfo, a refresh; then a second app signs in without the form,
/// `prompt=login` asks again and `prompt=none` without a sign-in answers
/// `login_required`.
async fn the_code_flow_signs_in_once_for_every_app(engine: Engine) {
    let f = with_code_clients(engine).await;
    let app = &f.app;
    let mut browser = Browser::new(app);
    let (verifier, challenge) = pkce();

    let res = browser.authorize(&request("app", &challenge)).await;
    assert_eq!(res.status(), 200);
    let h = res.headers();
    assert_eq!(h["cache-control"], "no-store");
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_eq!(h["x-frame-options"], "DENY");
    let csp = h["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(
        !csp.contains("script-src") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(
        csp.contains("form-action 'self' https://app.example"),
        "{csp}"
    );
    let login_cookie = cookie_attributes(&res, "__Host-tessera-login");
    for flag in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(login_cookie.contains(flag), "{login_cookie}");
    }
    let page = res.text().await.unwrap();
    assert!(!page.contains("<script"), "no script at all");
    for needle in [
        "<label for=\"username\">",
        "autocomplete=\"username\"",
        "<label for=\"password\">",
        "autocomplete=\"current-password\"",
        "lang=\"en\"",
    ] {
        assert!(page.contains(needle), "{needle} in {page}");
    }

    let res = browser
        .submit(&page, &[("username", "alice"), ("password", PASSWORD)])
        .await;
    assert_eq!(res.status(), 303);
    let sso = cookie_attributes(&res, "__Host-tessera-sso");
    for flag in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(sso.contains(flag), "{sso}");
    }
    let (base, params) = location_params(&res);
    assert_eq!(base, REDIRECT);
    assert_eq!(params["state"], "st-42");
    assert_eq!(params["iss"], ISSUER);
    let code = &params["code"];

    let res = redeem(app, "app", code, &verifier).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let tokens: Value = res.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(tokens["scope"], "openid profile read");
    let id_token = tokens["id_token"].as_str().unwrap();

    // The ID token, checked by an independent library against the JWKS.
    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(id_token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&["app"]);
    v.set_issuer(&[ISSUER]);
    let claims =
        jsonwebtoken::decode::<Value>(id_token, &decoding_key(&jwks, &header.kid.unwrap()), &v)
            .unwrap()
            .claims;
    let alice = app.store.user_by_username("alice").await.unwrap().unwrap();
    assert_eq!(claims["sub"], alice.id.to_string());
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(claims["amr"], json!(["pwd"]));
    assert!(claims["auth_time"].as_i64().unwrap() > 0);
    let at_hash = URL_SAFE_NO_PAD.encode(&tessera::digest::sha256(access.as_bytes())[..16]);
    assert_eq!(claims["at_hash"], at_hash);
    // The access token's sid is the ID token's.
    let active = f.introspect(access).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["sid"], claims["sid"]);
    assert_eq!(active["aud"], AUD);

    // Userinfo, with the profile scope.
    let info: Value = app
        .client
        .get(format!("{}/oauth/userinfo", app.address))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        info,
        json!({ "sub": alice.id.to_string(), "preferred_username": "alice" })
    );

    // The refresh token rotates like any other.
    let refreshed = app
        .form(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("client_id", "app"),
                ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ],
            None,
        )
        .await;
    assert_eq!(refreshed.status(), 200);

    // A second app in the same browser: no form.
    let (verifier2, challenge2) = pkce();
    let res = browser.authorize(&request("other-app", &challenge2)).await;
    assert_eq!(res.status(), 303, "signed in already");
    let (_, params) = location_params(&res);
    let res = redeem(app, "other-app", &params["code"], &verifier2).await;
    assert_eq!(res.status(), 200);
    // prompt=login shows the form anyway, and so does max_age=0; a
    // login_hint fills in the name.
    let mut forced = request("other-app", &challenge2);
    forced.push(("prompt", "login"));
    assert_eq!(browser.authorize(&forced).await.status(), 200);
    let mut recent = request("other-app", &challenge2);
    recent.extend([("max_age", "0"), ("login_hint", "alice")]);
    let res = browser.authorize(&recent).await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("value=\"alice\""));
    let mut recent = request("other-app", &challenge2);
    recent.push(("max_age", "3600"));
    assert_eq!(browser.authorize(&recent).await.status(), 303);
    // prompt=none in a browser without a sign-in: login_required, back to the app.
    let mut silent = request("app", &challenge);
    silent.push(("prompt", "none"));
    let res = Browser::new(app).authorize(&silent).await;
    assert_eq!(res.status(), 303);
    let (base, params) = location_params(&res);
    assert_eq!(base, REDIRECT);
    assert_eq!(params["error"], "login_required");
    assert_eq!(params["state"], "st-42");
    assert_eq!(params["iss"], ISSUER);
    // ... and with one: a code.
    let res = browser.authorize(&silent).await;
    assert!(location_params(&res).1.contains_key("code"));
}

/// A code is single-use (a second use revokes the session the first
/// opened), bound to its client, redirect URI and PKCE verifier, and lives
/// 60 seconds.
async fn codes_are_single_use_bound_and_short_lived(engine: Engine) {
    let f = with_code_clients(engine).await;
    let app = &f.app;
    let mut browser = Browser::new(app);
    let (verifier, challenge) = pkce();
    let code = browser
        .sign_in(&request("app", &challenge), "alice", PASSWORD)
        .await["code"]
        .clone();

    // Wrong client, redirect URI or verifier: refused, and the code still works after.
    let (status, error, d) = error_of(redeem(app, "other-app", &code, &verifier).await).await;
    assert_eq!((status, error.as_str()), (400, "invalid_grant"), "{d}");
    let wrong_redirect = app
        .form(
            "/oauth/token",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", "app"),
                ("code", &code),
                ("redirect_uri", OTHER_REDIRECT),
                ("code_verifier", &verifier),
            ],
            None,
        )
        .await;
    assert_eq!(error_of(wrong_redirect).await.1, "invalid_grant");
    let (other_verifier, _) = pkce();
    let (_, error, d) = error_of(redeem(app, "app", &code, &other_verifier).await).await;
    assert_eq!(error, "invalid_grant");
    assert!(d.contains("code_verifier"), "{d}");
    // The challenge itself as verifier (what `plain` would accept).
    assert_eq!(
        error_of(redeem(app, "app", &code, &challenge).await)
            .await
            .1,
        "invalid_grant"
    );
    let no_verifier = app
        .form(
            "/oauth/token",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", "app"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
            ],
            None,
        )
        .await;
    assert_eq!(error_of(no_verifier).await.1, "invalid_request");
    // A forged or tampered code.
    let mut tampered = code.clone().into_bytes();
    tampered[40] = if tampered[40] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(
        error_of(redeem(app, "app", &tampered, &verifier).await)
            .await
            .1,
        "invalid_grant"
    );

    let tokens: Value = redeem(app, "app", &code, &verifier)
        .await
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(f.introspect(&access).await["active"], true);
    // Used again: refused, and the session the first use opened is revoked.
    let (_, error, d) = error_of(redeem(app, "app", &code, &verifier).await).await;
    assert_eq!(error, "invalid_grant");
    assert!(d.contains("already used"), "{d}");
    assert_eq!(f.introspect(&access).await["active"], false);
    let res = app
        .form(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("client_id", "app"),
                ("refresh_token", &refresh),
            ],
            None,
        )
        .await;
    assert_eq!(res.status(), 400);
    let audit = f
        .app
        .admin_api(
            Method::GET,
            "/audit?limit=1000",
            Some(&f.admin_token().await),
            None,
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(audit.contains("authorization_code_reused"), "{audit}");

    // Parallel redemptions of one code: exactly one gets tokens.
    let (verifier, challenge) = pkce();
    let code = Browser::new(app)
        .sign_in(&request("app", &challenge), "alice", PASSWORD)
        .await["code"]
        .clone();
    let results =
        futures_util::future::join_all((0..6).map(|_| redeem(app, "app", &code, &verifier))).await;
    assert_eq!(results.iter().filter(|r| r.status() == 200).count(), 1);
}

async fn codes_expire_after_a_minute(engine: Engine) {
    let clock = tessera::clock::ManualClock::starting_now();
    let f = crate::helpers::fixture_on(engine, &[], clock.clone()).await;
    code_clients(&f.app).await;
    let (verifier, challenge) = pkce();
    let code = Browser::new(&f.app)
        .sign_in(&request("app", &challenge), "alice", PASSWORD)
        .await["code"]
        .clone();
    clock.advance(61);
    let (_, error, d) = error_of(redeem(&f.app, "app", &code, &verifier).await).await;
    assert_eq!(error, "invalid_grant");
    assert!(d.contains("expired"), "{d}");
}

/// Redirect URIs match exactly or there is no redirect at all: an HTML
/// error page, no `Location`.
async fn near_miss_redirect_uris_get_an_error_page(engine: Engine) {
    let f = with_code_clients(engine).await;
    let (_, challenge) = pkce();
    let mut browser = Browser::new(&f.app);
    for uri in [
        "https://app.example/callback/",
        "https://app.example/callback/../evil",
        "https://app.example/callbackx",
        "https://app.example/call",
        "https://app.example/callback?x=1",
        "https://app.example/callback#frag",
        "https://APP.example/callback",
        "https://app.example/CALLBACK",
        "https://app.example.evil.example/callback",
        "https://evil.example/callback",
        "http://app.example/callback",
        "https://app.example:8443/callback",
        "https://user@app.example/callback",
        OTHER_REDIRECT, // registered, but for another client
    ] {
        let mut q = request("app", &challenge);
        q[2] = ("redirect_uri", uri);
        let res = browser.authorize(&q).await;
        assert_eq!(res.status(), 400, "{uri}");
        assert!(res.headers().get("location").is_none(), "{uri}");
        assert!(res.text().await.unwrap().contains("redirect_uri"), "{uri}");
    }
    // An unknown or disabled client, or one not registered for the flow.
    for client in ["nobody", "spa"] {
        let res = browser.authorize(&request(client, &challenge)).await;
        assert_eq!(res.status(), 400, "{client}");
        assert!(res.headers().get("location").is_none());
    }
    // With several registered, redirect_uri is required.
    let mut q = request("other-app", &challenge);
    q.remove(2);
    assert_eq!(browser.authorize(&q).await.status(), 400);
    // The same request sent with its redirect URI twice.
    let mut q = request("app", &challenge);
    q.push(("redirect_uri", REDIRECT));
    assert_eq!(browser.authorize(&q).await.status(), 400);
}

/// PKCE is required, and only S256; errors after the redirect URI is
/// trusted go back to it with `state` and `iss`.
async fn pkce_is_required_and_plain_refused(engine: Engine) {
    let f = with_code_clients(engine).await;
    let (_, challenge) = pkce();
    let mut browser = Browser::new(&f.app);
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            request("app", &challenge)
                .into_iter()
                .filter(|(k, _)| *k != "code_challenge")
                .collect(),
            "invalid_request",
        ),
        (
            request("app", &challenge)
                .into_iter()
                .map(|(k, v)| {
                    if k == "code_challenge_method" {
                        (k, "plain")
                    } else {
                        (k, v)
                    }
                })
                .collect(),
            "invalid_request",
        ),
        (
            request("app", &challenge)
                .into_iter()
                .filter(|(k, _)| *k != "code_challenge_method")
                .collect(),
            "invalid_request",
        ),
        (
            request("app", &challenge)
                .into_iter()
                .map(|(k, v)| {
                    if k == "response_type" {
                        (k, "token")
                    } else {
                        (k, v)
                    }
                })
                .collect(),
            "unsupported_response_type",
        ),
        (
            request("app", &challenge)
                .into_iter()
                .map(|(k, v)| {
                    if k == "scope" {
                        (k, "read admin")
                    } else {
                        (k, v)
                    }
                })
                .collect(),
            "invalid_scope",
        ),
    ];
    for (q, expected) in cases {
        let res = browser.authorize(&q).await;
        assert_eq!(res.status(), 303, "{q:?}");
        let (base, params) = location_params(&res);
        assert_eq!(base, REDIRECT);
        assert_eq!(params["error"], expected, "{q:?}");
        assert_eq!(params["state"], "st-42");
        assert_eq!(params["iss"], ISSUER);
        assert!(!params.contains_key("code"));
    }
}

/// Login CSRF: a form post without this browser's cookie, or with a token
/// made for another browser, signs nobody in.
async fn a_form_post_from_elsewhere_signs_nobody_in(engine: Engine) {
    let f = with_code_clients(engine).await;
    let (_, challenge) = pkce();
    let mut victim = Browser::new(&f.app);
    let mut attacker = Browser::new(&f.app);
    let page = attacker
        .authorize(&request("app", &challenge))
        .await
        .text()
        .await
        .unwrap();
    // The attacker's form (their token) posted from the victim's browser.
    victim.authorize(&request("app", &challenge)).await;
    let res = victim
        .submit(&page, &[("username", "alice"), ("password", PASSWORD)])
        .await;
    assert_eq!(res.status(), 403);
    assert!(res.headers().get("location").is_none());
    // No cookie at all (a cross-site post carries none: SameSite=Lax).
    let mut bare = Browser::new(&f.app);
    let res = bare
        .submit(&page, &[("username", "alice"), ("password", PASSWORD)])
        .await;
    assert_eq!(res.status(), 403);
    assert!(res.headers().get("location").is_none());
    // No token.
    let fields: Vec<(String, String)> = hidden_fields(&page)
        .into_iter()
        .filter(|(k, _)| k != "csrf")
        .chain([
            ("username".into(), "alice".into()),
            ("password".into(), PASSWORD.into()),
        ])
        .collect();
    assert_eq!(attacker.post(&fields).await.status(), 403);
}

/// Wrong passwords through the form count like every login: the account
/// locks after the limit, even against a burst, and then the right
/// password is refused too (429 with Retry-After).
async fn the_form_counts_failures_like_every_login(engine: Engine) {
    let f = fixture_with(engine, &[("TESSERA_LOGIN_NETWORK_CONCURRENCY", "64")]).await;
    code_clients(&f.app).await;
    let (_, challenge) = pkce();
    let mut browser = Browser::new(&f.app);
    let page = browser
        .authorize(&request("app", &challenge))
        .await
        .text()
        .await
        .unwrap();
    let res = browser
        .submit(
            &page,
            &[("username", "alice"), ("password", "wrong guess 1")],
        )
        .await;
    assert_eq!(res.status(), 401);
    let again = res.text().await.unwrap();
    assert!(again.contains("role=\"alert\""), "{again}");
    assert!(again.contains("value=\"alice\""), "the name is kept");
    // A burst of 20 wrong passwords at once: at most the limit are checked.
    let cookies = browser.cookies.clone();
    let burst = (0..20).map(|i| {
        let mut b = Browser::new(&f.app);
        b.cookies = cookies.clone();
        let page = page.clone();
        async move {
            b.submit(
                &page,
                &[("username", "alice"), ("password", &format!("guess {i}"))],
            )
            .await
            .status()
            .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(burst).await;
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!(checked <= 4, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| matches!(s, 401 | 429)),
        "{statuses:?}"
    );
    let res = browser
        .submit(&page, &[("username", "alice"), ("password", PASSWORD)])
        .await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    assert!(res.headers().get("location").is_none());
}

/// A user with TOTP: the password step leads to the code step; a wrong
/// code is refused; the right one signs in with `amr` pwd + otp. The step
/// belongs to the browser that passed the password.
async fn totp_users_sign_in_in_two_steps(engine: Engine) {
    let f = with_code_clients(engine).await;
    let app = &f.app;
    let master = tessera::keys::master::MasterKey::from_base64(app.master_key()).unwrap();
    let id = uuid::Uuid::new_v4();
    let secret = tessera::auth::totp::new_secret();
    app.store
        .create_user(
            &tessera::store::NewUser {
                id,
                username: "bob".into(),
                password_hash: tessera::auth::password::hash(PASSWORD).unwrap(),
                totp_secret: Some(master.seal(&secret, &tessera::auth::totp::seal_context(id))),
            },
            0,
        )
        .await
        .unwrap();
    let (verifier, challenge) = pkce();
    let mut browser = Browser::new(app);
    let page = browser
        .authorize(&request("app", &challenge))
        .await
        .text()
        .await
        .unwrap();
    let res = browser
        .submit(&page, &[("username", "bob"), ("password", PASSWORD)])
        .await;
    assert_eq!(res.status(), 200, "the code step");
    let step = res.text().await.unwrap();
    assert!(step.contains("autocomplete=\"one-time-code\""), "{step}");
    assert!(step.contains("<label for=\"otp\">"));

    let now = chrono::Utc::now().timestamp();
    let otp = tessera::auth::totp::code_at(&secret, now);
    let wrong = if otp == "000000" { "111111" } else { "000000" };
    let res = browser.submit(&step, &[("otp", wrong)]).await;
    assert_eq!(res.status(), 401);
    assert!(res.headers().get("location").is_none());
    // Another browser cannot finish this browser's step.
    let mut other = Browser::new(app);
    other.authorize(&request("app", &challenge)).await;
    let res = other.submit(&step, &[("otp", &otp)]).await;
    assert_ne!(res.status(), 303);

    let res = browser.submit(&step, &[("otp", &otp)]).await;
    assert_eq!(res.status(), 303);
    let (_, params) = location_params(&res);
    let tokens: Value = redeem(app, "app", &params["code"], &verifier)
        .await
        .json()
        .await
        .unwrap();
    let id_token = tokens["id_token"].as_str().unwrap();
    let payload: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(id_token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(payload["amr"], json!(["pwd", "otp"]));
    // The code is spent: the step cannot be replayed.
    let res = browser.submit(&step, &[("otp", &otp)]).await;
    assert_ne!(res.status(), 303);
}

/// Logout everywhere and a password change end the browser sign-in too.
async fn logout_everywhere_ends_the_browser_sign_in(engine: Engine) {
    let f = with_code_clients(engine).await;
    let app = &f.app;
    let admin = f.admin_token().await;
    let (_, challenge) = pkce();
    let mut browser = Browser::new(app);
    browser
        .sign_in(&request("app", &challenge), "alice", PASSWORD)
        .await;
    let mut silent = request("app", &challenge);
    silent.push(("prompt", "none"));
    assert!(
        location_params(&browser.authorize(&silent).await)
            .1
            .contains_key("code")
    );
    // The sign-in's second and the revocation's may be the same one.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let res = app
        .admin_api(Method::DELETE, "/users/alice/sessions", Some(&admin), None)
        .await;
    assert!(res.status().is_success());
    let (_, params) = location_params(&browser.authorize(&silent).await);
    assert_eq!(params["error"], "login_required");

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    browser
        .sign_in(&request("app", &challenge), "alice", PASSWORD)
        .await;
    assert!(
        location_params(&browser.authorize(&silent).await)
            .1
            .contains_key("code")
    );
    let res = app
        .admin_api(
            Method::POST,
            "/users/alice/password",
            Some(&admin),
            Some(json!({ "password": "a brand new passphrase" })),
        )
        .await;
    assert_eq!(res.status(), 200);
    let (_, params) = location_params(&browser.authorize(&silent).await);
    assert_eq!(params["error"], "login_required");
}

/// Userinfo wants a user's token with `openid`.
async fn userinfo_needs_an_openid_user_token(engine: Engine) {
    let f = with_code_clients(engine).await;
    let app = &f.app;
    let get = async |token: Option<&str>| {
        let mut req = app.client.get(format!("{}/oauth/userinfo", app.address));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    };
    let res = get(None).await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    let res = get(Some("not.a.token")).await;
    assert_eq!(res.status(), 401);
    // A password login without openid, and a client's own token.
    let (access, _) = app.login("alice").await;
    assert_eq!(get(Some(&access)).await.status(), 403);
    let client_token = app.client_token("rs", &f.rs).await;
    assert_eq!(get(Some(&client_token)).await.status(), 403);
    // With openid but not profile: sub alone.
    let (verifier, challenge) = pkce();
    let mut q = request("app", &challenge);
    q[6] = ("scope", "openid");
    let code = Browser::new(app).sign_in(&q, "alice", PASSWORD).await["code"].clone();
    let tokens: Value = redeem(app, "app", &code, &verifier)
        .await
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    let info: Value = get(Some(access)).await.json().await.unwrap();
    assert!(info["sub"].is_string());
    assert!(info.get("preferred_username").is_none(), "{info}");
    // Revoked: refused.
    let res = app
        .form(
            "/oauth/revoke",
            &[
                ("client_id", "app"),
                ("token", tokens["refresh_token"].as_str().unwrap()),
            ],
            None,
        )
        .await;
    assert_eq!(res.status(), 200);
    crate::helpers::eventually(
        std::time::Duration::from_secs(3),
        "userinfo refuses a revoked token",
        async || match get(Some(access)).await.status().as_u16() {
            401 => Ok(()),
            other => Err(other.to_string()),
        },
    )
    .await;
}

on_both_engines!(
    the_code_flow_signs_in_once_for_every_app,
    codes_are_single_use_bound_and_short_lived,
    codes_expire_after_a_minute,
    near_miss_redirect_uris_get_an_error_page,
    pkce_is_required_and_plain_refused,
    a_form_post_from_elsewhere_signs_nobody_in,
    the_form_counts_failures_like_every_login,
    totp_users_sign_in_in_two_steps,
    logout_everywhere_ends_the_browser_sign_in,
    userinfo_needs_an_openid_user_token,
);

#[tokio::test]
async fn discovery_describes_the_code_flow_and_openid_connect() {
    let app = crate::helpers::spawn_app(Engine::Sqlite).await;
    let oidc: Value = app
        .get("/.well-known/openid-configuration")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(oidc["issuer"], ISSUER);
    assert_eq!(
        oidc["authorization_endpoint"],
        format!("{ISSUER}/oauth/authorize")
    );
    assert_eq!(
        oidc["userinfo_endpoint"],
        format!("{ISSUER}/oauth/userinfo")
    );
    assert_eq!(oidc["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(oidc["response_types_supported"], json!(["code"]));
    assert_eq!(
        oidc["id_token_signing_alg_values_supported"],
        json!(["ES256"])
    );
    assert_eq!(oidc["authorization_response_iss_parameter_supported"], true);
    let oauth: Value = app
        .get("/.well-known/oauth-authorization-server")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        oauth["authorization_endpoint"],
        oidc["authorization_endpoint"]
    );
    assert!(
        oauth["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("authorization_code"))
    );
}
