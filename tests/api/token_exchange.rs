//! RFC 8693 token exchange over HTTP: on-behalf-of exchange of tessera's
//! own access tokens, and upstream ID tokens from a local identity provider
//! (a JWKS server started by the test, signing with keys the test holds).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{AUD, ClientSpec, Engine, Fixture, TestApp, fixture, now, on_both_engines};

const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";
const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const PAYMENTS: &str = "https://payments.example";
const LEDGER: &str = "https://ledger.example";
/// What the upstream issuer's tokens are addressed to (its client id for tessera).
pub(crate) const UPSTREAM_AUD: &str = "tessera-at-idp";

// ---- a local upstream identity provider ----

/// How the JWKS endpoint answers.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Mode {
    Normal,
    /// Answers after this long (past tessera's fetch timeout).
    Slow(Duration),
    /// Answers with megabytes of JSON.
    Huge,
}

struct IdpState {
    jwks: std::sync::Mutex<Value>,
    mode: std::sync::Mutex<Mode>,
    hits: AtomicUsize,
}

/// A JWKS server on 127.0.0.1 with an RSA key the test signs with.
pub(crate) struct Upstream {
    pub(crate) base: String,
    state: Arc<IdpState>,
    pub(crate) key: openssl::rsa::Rsa<openssl::pkey::Private>,
    pub(crate) kid: String,
    _server: actix_web::dev::ServerHandle,
}

async fn jwks_endpoint(state: web::Data<IdpState>) -> HttpResponse {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let mode = *state.mode.lock().unwrap();
    match mode {
        Mode::Normal => {}
        Mode::Slow(d) => tokio::time::sleep(d).await,
        Mode::Huge => {
            let filler = "x".repeat(4 * 1024 * 1024);
            return HttpResponse::Ok()
                .content_type("application/json")
                .body(format!("{{\"keys\":[],\"filler\":\"{filler}\"}}"));
        }
    }
    let body = state.jwks.lock().unwrap().clone();
    HttpResponse::Ok().json(body)
}

fn rsa_jwk(key: &openssl::rsa::Rsa<openssl::pkey::Private>, kid: &str) -> Value {
    json!({
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
        "n": URL_SAFE_NO_PAD.encode(key.n().to_vec()),
        "e": URL_SAFE_NO_PAD.encode(key.e().to_vec()),
    })
}

impl Upstream {
    pub(crate) async fn start() -> Upstream {
        let key = openssl::rsa::Rsa::generate(2048).unwrap();
        let kid = "idp-key-1".to_owned();
        let state = Arc::new(IdpState {
            jwks: std::sync::Mutex::new(json!({ "keys": [rsa_jwk(&key, &kid)] })),
            mode: std::sync::Mutex::new(Mode::Normal),
            hits: AtomicUsize::new(0),
        });
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/jwks", web::get().to(jwks_endpoint))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Upstream {
            base: format!("http://127.0.0.1:{port}"),
            state,
            key,
            kid,
            _server: handle,
        }
    }

    pub(crate) fn issuer(&self) -> String {
        format!("{}/realms/test", self.base)
    }

    pub(crate) fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.base)
    }

    pub(crate) fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    pub(crate) fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Claims of a fresh ID token for upstream user `sub` (a new `jti`
    /// each time, as providers do: every token is a different one).
    pub(crate) fn claims(&self, sub: &str) -> Value {
        let now = now();
        json!({
            "iss": self.issuer(), "sub": sub, "aud": UPSTREAM_AUD,
            "iat": now, "exp": now + 300, "email": format!("{sub}@idp.example"),
            "jti": uuid::Uuid::new_v4().to_string(),
        })
    }

    /// `claims` signed with this issuer's key.
    pub(crate) fn sign(&self, claims: &Value) -> String {
        self.sign_with(
            claims,
            &self.key,
            jsonwebtoken::Header {
                kid: Some(self.kid.clone()),
                ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256)
            },
        )
    }

    pub(crate) fn sign_with(
        &self,
        claims: &Value,
        key: &openssl::rsa::Rsa<openssl::pkey::Private>,
        header: jsonwebtoken::Header,
    ) -> String {
        let pem = key.private_key_to_pem().unwrap();
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap();
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    pub(crate) fn id_token(&self, sub: &str) -> String {
        self.sign(&self.claims(sub))
    }
}

// ---- requests ----

async fn exchange(
    app: &TestApp,
    client: (&str, Option<&str>),
    subject: &str,
    subject_type: &str,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut pairs = vec![
        ("grant_type", GRANT),
        ("subject_token", subject),
        ("subject_token_type", subject_type),
    ];
    pairs.extend_from_slice(extra);
    match client {
        (id, Some(secret)) => app.form("/oauth/token", &pairs, Some((id, secret))).await,
        (id, None) => {
            pairs.push(("client_id", id));
            app.form("/oauth/token", &pairs, None).await
        }
    }
}

/// A refresh of a `bff` session: the response.
async fn refresh_bff(app: &TestApp, refresh_token: &str) -> reqwest::Response {
    let pairs = [
        ("grant_type", "refresh_token"),
        ("client_id", "bff"),
        ("refresh_token", refresh_token),
    ];
    app.form("/oauth/token", &pairs, None).await
}

/// The answer must be `status` with `error`: its description.
async fn refused(res: reqwest::Response, status: u16, error: &str) -> String {
    assert_eq!(res.status(), status);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    body["error_description"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("a JWS");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

async fn audit_actions(app: &TestApp) -> Vec<(String, Value)> {
    app.store
        .audit_page(0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.action,
                serde_json::from_str(&r.detail).unwrap_or(Value::Null),
            )
        })
        .collect()
}

// ---- on behalf of ----

/// `orders` serves [`AUD`] and may exchange for [`PAYMENTS`]; `payments`
/// serves [`PAYMENTS`] and may exchange for [`LEDGER`].
struct Services {
    f: Fixture,
    orders: String,
    payments: String,
}

async fn services(engine: Engine) -> Services {
    services_with(engine, &[]).await
}

async fn services_with(engine: Engine, extra: &[(&str, &str)]) -> Services {
    let f = crate::helpers::fixture_with(engine, extra).await;
    let orders = f
        .app
        .add_client(
            ClientSpec::confidential("orders", &["client_credentials"])
                .scopes(&["read", "write"])
                .exchange_audiences(&[PAYMENTS]),
        )
        .await;
    let payments = f
        .app
        .add_client(
            ClientSpec::confidential("payments", &[])
                .audiences(&[PAYMENTS])
                .exchange_audiences(&[LEDGER]),
        )
        .await;
    Services {
        f,
        orders,
        payments,
    }
}

async fn on_behalf_of_narrows_the_audience_and_names_the_actor(engine: Engine) {
    let s = services(engine).await;
    let app = &s.f.app;
    let (access, _refresh) = app.login("alice").await;
    let subject = payload(&access);
    let res = exchange(app, ("orders", Some(&s.orders)), &access, ACCESS, &[]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["issued_token_type"], ACCESS);
    assert_eq!(body["token_type"], "Bearer");
    assert!(body.get("refresh_token").is_none(), "{body}");
    let token = body["access_token"].as_str().unwrap();
    let claims = payload(token);
    assert_eq!(claims["aud"], PAYMENTS);
    assert_eq!(claims["sub"], subject["sub"]);
    assert_eq!(claims["sid"], subject["sid"]);
    assert_eq!(claims["client_id"], "orders");
    assert_eq!(claims["act"], json!({ "sub": "orders" }));
    // The subject token's scope (`read`), never the caller's wider one.
    assert_eq!(claims["scope"], "read");
    assert_eq!(body["scope"], "read");
    assert!(claims["exp"].as_i64() <= subject["exp"].as_i64());
    assert_eq!(
        body["expires_in"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap()
    );
    // The payments service sees it as active, with its actor.
    let res = app.introspect_as(("payments", &s.payments), token).await;
    let intro: Value = res.json().await.unwrap();
    assert_eq!(intro["active"], true, "{intro}");
    assert_eq!(intro["act"], json!({ "sub": "orders" }));

    // Exchanged again by payments: the actors nest, newest outside.
    let res = exchange(app, ("payments", Some(&s.payments)), token, ACCESS, &[]).await;
    assert_eq!(res.status(), 200);
    let again: Value = res.json().await.unwrap();
    let claims = payload(again["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], LEDGER);
    assert_eq!(
        claims["act"],
        json!({ "sub": "payments", "act": { "sub": "orders" } })
    );
    assert_eq!(claims["sid"], subject["sid"]);

    s.f.audit_written().await;
    let events = audit_actions(app).await;
    let exchanged: Vec<&Value> = events
        .iter()
        .filter(|(a, _)| a == "token_exchanged")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(exchanged.len(), 2);
    assert_eq!(exchanged[0]["audience"], PAYMENTS);
    assert_eq!(exchanged[0]["subject_client_id"], "spa");
    assert_eq!(exchanged[0]["subject_jti"], subject["jti"]);
    assert_eq!(exchanged[1]["actors"], 2);
}

async fn revoking_the_session_revokes_the_exchanged_tokens(engine: Engine) {
    let s = services(engine).await;
    let app = &s.f.app;
    let (access, refresh) = app.login("alice").await;
    let res = exchange(app, ("orders", Some(&s.orders)), &access, ACCESS, &[]).await;
    let body: Value = res.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    // The user signs out: the refresh token's session ends.
    let res = app.revoke(&refresh, "spa", None).await;
    assert_eq!(res.status(), 200);
    let res = app.introspect_as(("payments", &s.payments), &token).await;
    let intro: Value = res.json().await.unwrap();
    assert_eq!(
        intro["active"], false,
        "the exchanged token dies with its session"
    );
    // And the subject token can no longer be exchanged.
    let why = refused(
        exchange(app, ("orders", Some(&s.orders)), &access, ACCESS, &[]).await,
        400,
        "invalid_grant",
    )
    .await;
    assert!(why.contains("revoked") || why.contains("session"), "{why}");
}

async fn on_behalf_of_refusals(engine: Engine) {
    let s = services(engine).await;
    let app = &s.f.app;
    let (access, _) = app.login("alice").await;
    let orders = ("orders", Some(s.orders.as_str()));
    // An audience the client may not exchange for.
    let why = refused(
        exchange(app, orders, &access, ACCESS, &[("audience", LEDGER)]).await,
        400,
        "invalid_target",
    )
    .await;
    assert!(why.contains(LEDGER), "{why}");
    // A scope wider than the subject token's.
    refused(
        exchange(app, orders, &access, ACCESS, &[("scope", "read write")]).await,
        400,
        "invalid_scope",
    )
    .await;
    // A token not addressed to the caller: payments serves PAYMENTS only.
    let why = refused(
        exchange(app, ("payments", Some(&s.payments)), &access, ACCESS, &[]).await,
        400,
        "invalid_grant",
    )
    .await;
    assert!(why.contains("not addressed"), "{why}");
    // A client without the grant.
    refused(
        exchange(app, ("rs", Some(&s.f.rs)), &access, ACCESS, &[]).await,
        400,
        "unauthorized_client",
    )
    .await;
    // A public client cannot be an actor.
    app.add_client(
        ClientSpec::public("pub-exchanger", &["token-exchange"]).exchange_audiences(&[PAYMENTS]),
    )
    .await;
    refused(
        exchange(app, ("pub-exchanger", None), &access, ACCESS, &[]).await,
        400,
        "unauthorized_client",
    )
    .await;
    // A client's own token carries no user.
    let service_token = app.client_token("orders", &s.orders).await;
    let why = refused(
        exchange(app, orders, &service_token, ACCESS, &[]).await,
        400,
        "invalid_grant",
    )
    .await;
    assert!(why.contains("session"), "{why}");
    // Garbage, a tampered token, another type, an actor token.
    refused(
        exchange(app, orders, "not-a-token", ACCESS, &[]).await,
        400,
        "invalid_grant",
    )
    .await;
    let mut tampered = access.clone();
    tampered.pop();
    tampered.push(if access.ends_with('A') { 'B' } else { 'A' });
    refused(
        exchange(app, orders, &tampered, ACCESS, &[]).await,
        400,
        "invalid_grant",
    )
    .await;
    refused(
        exchange(
            app,
            orders,
            &access,
            "urn:ietf:params:oauth:token-type:refresh_token",
            &[],
        )
        .await,
        400,
        "invalid_request",
    )
    .await;
    refused(
        exchange(
            app,
            orders,
            &access,
            ACCESS,
            &[("actor_token", &access), ("actor_token_type", ACCESS)],
        )
        .await,
        400,
        "invalid_request",
    )
    .await;
    refused(
        app.form(
            "/oauth/token",
            &[("grant_type", GRANT), ("subject_token_type", ACCESS)],
            Some(("orders", &s.orders)),
        )
        .await,
        400,
        "invalid_request",
    )
    .await;
    // Each refusal past client authentication and the grant check is
    // audited with its reason: ten of the eleven above (rs lacks the grant).
    s.f.audit_written().await;
    let refusals: Vec<Value> = audit_actions(app)
        .await
        .into_iter()
        .filter(|(a, _)| a == "token_exchange_refused")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(refusals.len(), 10, "{refusals:?}");
    assert_eq!(refusals[0]["kind"], "on_behalf_of");
    assert_eq!(refusals[0]["error"], "invalid_target");
    assert!(
        refusals
            .iter()
            .any(|d| d["kind"] == "invalid" && d["error"] == "invalid_request")
    );
}

/// A chain of services, each exchanging the previous one's token: the
/// fifth actor is refused.
async fn the_actor_chain_is_bounded(engine: Engine) {
    let f = fixture(engine).await;
    let app = &f.app;
    let aud = |i: usize| format!("https://svc{i}.example");
    let mut secrets = Vec::new();
    for i in 0..6 {
        let first = if i == 0 { AUD.to_owned() } else { aud(i) };
        let next = aud(i + 1);
        secrets.push(
            app.add_client(
                ClientSpec::confidential(&format!("svc{i}"), &[])
                    .audiences(&[&first])
                    .exchange_audiences(&[&next]),
            )
            .await,
        );
    }
    let (mut token, _) = app.login("alice").await;
    for (i, secret) in secrets.iter().enumerate().take(4) {
        let res = exchange(app, (&format!("svc{i}"), Some(secret)), &token, ACCESS, &[]).await;
        assert_eq!(res.status(), 200, "exchange {i}");
        let body: Value = res.json().await.unwrap();
        token = body["access_token"].as_str().unwrap().to_owned();
    }
    let mut act = payload(&token)["act"].clone();
    let mut depth = 0;
    while act.is_object() {
        depth += 1;
        act = act["act"].clone();
    }
    assert_eq!(depth, 4);
    let why = refused(
        exchange(app, ("svc4", Some(&secrets[4])), &token, ACCESS, &[]).await,
        400,
        "invalid_grant",
    )
    .await;
    assert!(why.contains("at most 4 actors"), "{why}");
}

on_both_engines!(
    on_behalf_of_narrows_the_audience_and_names_the_actor,
    revoking_the_session_revokes_the_exchanged_tokens,
    on_behalf_of_refusals,
    the_actor_chain_is_bounded,
    upstream_tokens_open_sessions_for_linked_users,
    upstream_refusals,
    disabling_an_issuer_ends_its_sessions,
    unlinking_ends_the_sessions_of_that_identity_only,
    an_upstream_token_opens_one_session,
    parallel_first_exchanges_create_one_user,
    disabling_an_issuer_during_exchanges_leaves_no_live_session,
    a_service_revoking_its_exchanged_tokens_does_not_end_the_users_session,
    disabling_an_earlier_actor_revokes_what_later_services_obtained,
);

// ---- upstream issuers ----

/// An app with a public client `bff` allowed the exchange (and refresh),
/// and `upstream` registered through the admin API.
async fn with_upstream(engine: Engine, create_users: bool) -> (Fixture, Upstream, String) {
    let f = fixture(engine).await;
    f.app
        .add_client(ClientSpec::public(
            "bff",
            &["token-exchange", "refresh_token"],
        ))
        .await;
    let upstream = Upstream::start().await;
    let admin = f.admin_token().await;
    let res = f
        .app
        .admin_api(
            Method::POST,
            "/issuers",
            Some(&admin),
            Some(json!({
                "issuer": upstream.issuer(),
                "jwks_uri": upstream.jwks_uri(),
                "audience": UPSTREAM_AUD,
                "create_users": create_users,
            })),
        )
        .await;
    assert_eq!(res.status(), 201);
    (f, upstream, admin)
}

async fn upstream_tokens_open_sessions_for_linked_users(engine: Engine) {
    let (f, upstream, admin) = with_upstream(engine, true).await;
    let app = &f.app;
    let res = exchange(
        app,
        ("bff", None),
        &upstream.id_token("u-42"),
        ID_TOKEN,
        &[],
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["issued_token_type"], ACCESS);
    let claims = payload(body["access_token"].as_str().unwrap());
    let sub = claims["sub"].as_str().unwrap().to_owned();
    assert!(claims.get("act").is_none());
    assert_eq!(claims["aud"], AUD);
    // The session refreshes like any other.
    let refresh = body["refresh_token"].as_str().unwrap();
    let res = refresh_bff(app, refresh).await;
    assert_eq!(res.status(), 200);
    // The same upstream user again (a `jwt` this time): the same tessera user.
    let res = exchange(app, ("bff", None), &upstream.id_token("u-42"), JWT, &[]).await;
    let again: Value = res.json().await.unwrap();
    assert_eq!(payload(again["access_token"].as_str().unwrap())["sub"], sub);
    // Another upstream user: another tessera user.
    let res = exchange(
        app,
        ("bff", None),
        &upstream.id_token("u-43"),
        ID_TOKEN,
        &[],
    )
    .await;
    let other: Value = res.json().await.unwrap();
    assert_ne!(payload(other["access_token"].as_str().unwrap())["sub"], sub);
    // The admin sees the link.
    let user = app
        .store
        .user_by_id(sub.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(user.username.starts_with("ext-"));
    let res = app
        .admin_api(
            Method::GET,
            &format!("/users/{}/links", user.username),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(res.status(), 200);
    let links: Value = res.json().await.unwrap();
    assert_eq!(links["sub"], sub);
    assert_eq!(links["links"][0]["issuer"], upstream.issuer());
    assert_eq!(links["links"][0]["subject"], "u-42");
    // The federated user has no password to log in with.
    let res = app
        .password_grant(crate::helpers::Login::new(&user.username).password(&user.password_hash))
        .await;
    assert_eq!(res.status(), 400);
    // One JWKS fetch served all of it.
    assert_eq!(upstream.hits(), 1);

    f.audit_written().await;
    let events = audit_actions(app).await;
    let logins: Vec<&Value> = events
        .iter()
        .filter(|(a, _)| a == "upstream_login")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(logins.len(), 3);
    assert_eq!(logins[0]["upstream_sub"], "u-42");
    assert_eq!(logins[0]["user_created"], true);
    assert_eq!(logins[1]["user_created"], false);
    assert_eq!(logins[0]["issuer"], upstream.issuer());
}

async fn upstream_refusals(engine: Engine) {
    let (f, upstream, admin) = with_upstream(engine, false).await;
    let app = &f.app;
    let bff = ("bff", None);
    let refuse = |token: String| async move {
        refused(
            exchange(app, bff, &token, ID_TOKEN, &[]).await,
            400,
            "invalid_grant",
        )
        .await
    };
    // Not linked, and the issuer does not create users.
    let first = upstream.id_token("alice-at-idp");
    let why = refuse(first.clone()).await;
    assert!(why.contains("no tessera user is linked"), "{why}");
    // Once linked (as an operator would), alice's upstream account signs in as alice.
    let res = app
        .admin_api(
            Method::POST,
            "/users/alice/links",
            Some(&admin),
            Some(json!({ "issuer": upstream.issuer(), "subject": "alice-at-idp" })),
        )
        .await;
    assert_eq!(res.status(), 201);
    // The refused token was not used up: it opens alice's session now.
    let res = exchange(app, bff, &first, ID_TOKEN, &[]).await;
    assert_eq!(res.status(), 200);
    let alice = app.store.user_by_username("alice").await.unwrap().unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        payload(body["access_token"].as_str().unwrap())["sub"],
        alice.id.to_string()
    );

    // Signed by another key under the issuer's kid.
    let other = openssl::rsa::Rsa::generate(2048).unwrap();
    let forged = upstream.sign_with(
        &upstream.claims("alice-at-idp"),
        &other,
        jsonwebtoken::Header {
            kid: Some(upstream.kid.clone()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256)
        },
    );
    refuse(forged).await;
    // The attacker's key offered through jku (and x5u): never fetched.
    let attacker = Upstream::start().await;
    let via_jku = upstream.sign_with(
        &upstream.claims("alice-at-idp"),
        &attacker.key,
        jsonwebtoken::Header {
            kid: Some(attacker.kid.clone()),
            jku: Some(attacker.jwks_uri()),
            x5u: Some(format!("{}/x5u", attacker.base)),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256)
        },
    );
    refuse(via_jku).await;
    assert_eq!(attacker.hits(), 0, "a URL inside a token is never fetched");
    // Wrong audience, expired, not yet valid, wrong issuer inside a token
    // of a trusted one's key.
    let mut claims = upstream.claims("alice-at-idp");
    claims["aud"] = json!("someone-else");
    refuse(upstream.sign(&claims)).await;
    let mut claims = upstream.claims("alice-at-idp");
    claims["exp"] = json!(now() - 120);
    claims["iat"] = json!(now() - 600);
    let why = refuse(upstream.sign(&claims)).await;
    assert!(why.contains("expired"), "{why}");
    let mut claims = upstream.claims("alice-at-idp");
    claims["nbf"] = json!(now() + 600);
    refuse(upstream.sign(&claims)).await;
    // An unknown issuer.
    let mut claims = upstream.claims("alice-at-idp");
    claims["iss"] = json!("https://unknown.example");
    let why = refuse(upstream.sign(&claims)).await;
    assert!(why.contains("not trusted"), "{why}");
    // alg none, and HS256 keyed with the public key (the classic confusion).
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(upstream.claims("alice-at-idp").to_string())
    );
    refuse(unsigned).await;
    let public_pem = upstream.key.public_key_to_pem().unwrap();
    let hmac = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some(upstream.kid.clone()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &upstream.claims("alice-at-idp"),
        &jsonwebtoken::EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    refuse(hmac).await;
    // A tessera access token is not an upstream ID token.
    let (access, _) = app.login("alice").await;
    refuse(access).await;

    f.audit_written().await;
    let refusals: Vec<Value> = audit_actions(app)
        .await
        .into_iter()
        .filter(|(a, _)| a == "token_exchange_refused")
        .map(|(_, d)| d)
        .collect();
    assert!(refusals.len() >= 9, "{} refusals audited", refusals.len());
    assert!(refusals.iter().any(|d| d["issuer"] == upstream.issuer()));
}

async fn disabling_an_issuer_ends_its_sessions(engine: Engine) {
    let (f, upstream, admin) = with_upstream(engine, true).await;
    let app = &f.app;
    let res = exchange(app, ("bff", None), &upstream.id_token("u-1"), ID_TOKEN, &[]).await;
    let body: Value = res.json().await.unwrap();
    let access = body["access_token"].as_str().unwrap().to_owned();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    // A password session of alice is not the issuer's.
    let (alice_access, _) = app.login("alice").await;
    let res = app
        .admin_api(
            Method::POST,
            "/issuers/disable",
            Some(&admin),
            Some(json!({ "issuer": upstream.issuer() })),
        )
        .await;
    assert_eq!(res.status(), 200);
    let change: Value = res.json().await.unwrap();
    assert_eq!(change["sessions_revoked"], 1);
    assert_eq!(change["issuer"]["disabled"], true);
    assert_eq!(f.introspect(&access).await["active"], false);
    assert_eq!(f.introspect(&alice_access).await["active"], true);
    let res = refresh_bff(app, &refresh).await;
    refused(res, 400, "invalid_grant").await;
    let why = refused(
        exchange(app, ("bff", None), &upstream.id_token("u-1"), ID_TOKEN, &[]).await,
        400,
        "invalid_grant",
    )
    .await;
    assert!(why.contains("not trusted"), "{why}");
    // Listed as disabled; enabled again, its tokens work again.
    let res = app
        .admin_api(Method::GET, "/issuers", Some(&admin), None)
        .await;
    let list: Value = res.json().await.unwrap();
    assert_eq!(list["issuers"][0]["disabled"], true);
    let res = app
        .admin_api(
            Method::POST,
            "/issuers/enable",
            Some(&admin),
            Some(json!({ "issuer": upstream.issuer() })),
        )
        .await;
    assert_eq!(res.status(), 200);
    let res = exchange(app, ("bff", None), &upstream.id_token("u-1"), ID_TOKEN, &[]).await;
    assert_eq!(res.status(), 200);
}

/// Removing a link ends exactly the sessions that identity opened (not
/// those of the user's other link, not their password sessions), its tokens
/// then open nothing, and an unlink racing exchanges leaves none alive.
async fn unlinking_ends_the_sessions_of_that_identity_only(engine: Engine) {
    let (f, upstream, admin) = with_upstream(engine, false).await;
    let app = &f.app;
    let link = |subject: &'static str, path: &'static str| {
        let admin = admin.clone();
        let issuer = upstream.issuer();
        async move {
            app.admin_api(
                Method::POST,
                path,
                Some(&admin),
                Some(json!({ "issuer": issuer, "subject": subject })),
            )
            .await
        }
    };
    for subject in ["u-7", "u-8", "u-9"] {
        assert_eq!(link(subject, "/users/alice/links").await.status(), 201);
    }
    let session = async |subject: &str| -> (String, String) {
        let res = exchange(
            app,
            ("bff", None),
            &upstream.id_token(subject),
            ID_TOKEN,
            &[],
        )
        .await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        (
            body["access_token"].as_str().unwrap().to_owned(),
            body["refresh_token"].as_str().unwrap().to_owned(),
        )
    };
    let (access_7, refresh_7) = session("u-7").await;
    let (access_8, refresh_8) = session("u-8").await;
    let (alice_access, _) = app.login("alice").await;
    assert_eq!(payload(&access_7)["sub"], payload(&alice_access)["sub"]);
    // The admin sees which account opened which session.
    let res = app
        .admin_api(Method::GET, "/users/alice/sessions", Some(&admin), None)
        .await;
    let listed: Value = res.json().await.unwrap();
    let opened_by = |access: &str| {
        let sid = payload(access)["sid"].clone();
        listed["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["sid"] == sid)
            .unwrap_or_else(|| panic!("{listed}"))["upstream"]
            .clone()
    };
    assert_eq!(
        opened_by(&access_7),
        json!({ "issuer": upstream.issuer(), "subject": "u-7" })
    );
    assert_eq!(opened_by(&alice_access), Value::Null);

    let res = link("u-7", "/users/alice/links/remove").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["sessions_revoked"], 1);
    assert_eq!(f.introspect(&access_7).await["active"], false);
    refused(refresh_bff(app, &refresh_7).await, 400, "invalid_grant").await;
    assert_eq!(f.introspect(&access_8).await["active"], true);
    assert_eq!(refresh_bff(app, &refresh_8).await.status(), 200);
    assert_eq!(f.introspect(&alice_access).await["active"], true);
    // The identity opens nothing any more (this issuer creates no users).
    let why = refused(
        exchange(app, ("bff", None), &upstream.id_token("u-7"), ID_TOKEN, &[]).await,
        400,
        "invalid_grant",
    )
    .await;
    assert!(why.contains("no tessera user is linked"), "{why}");
    // Nothing to remove: a second removal, another user's link, an unknown user.
    app.add_user("bob").await;
    for (subject, path) in [
        ("u-7", "/users/alice/links/remove"),
        ("u-8", "/users/bob/links/remove"),
        ("u-8", "/users/nobody/links/remove"),
    ] {
        refused(link(subject, path).await, 404, "not_found").await;
    }
    let res = link("u-8", "/users/alice/links/remove").await;
    assert_eq!(res.status(), 200);
    let res = app
        .admin_api(Method::GET, "/users/alice/links", Some(&admin), None)
        .await;
    let links: Value = res.json().await.unwrap();
    assert_eq!(links["links"].as_array().unwrap().len(), 1, "{links}");
    assert_eq!(links["links"][0]["subject"], "u-9");

    // Exchanges of u-9 racing its unlink: none of what they got survives.
    let tokens: Vec<String> = (0..16).map(|_| upstream.id_token("u-9")).collect();
    let exchanges = futures_util::future::join_all(
        tokens
            .iter()
            .map(|t| exchange(app, ("bff", None), t, ID_TOKEN, &[])),
    );
    let unlink = async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        link("u-9", "/users/alice/links/remove").await
    };
    let (answers, unlinked) = tokio::join!(exchanges, unlink);
    assert_eq!(unlinked.status(), 200);
    for res in answers {
        match res.status().as_u16() {
            200 => {
                let body: Value = res.json().await.unwrap();
                let access = body["access_token"].as_str().unwrap();
                assert_eq!(
                    f.introspect(access).await["active"],
                    false,
                    "a session outlived the unlink"
                );
                let refresh = body["refresh_token"].as_str().unwrap();
                assert_eq!(refresh_bff(app, refresh).await.status(), 400);
            }
            400 => {
                let body: Value = res.json().await.unwrap();
                assert_eq!(body["error"], "invalid_grant", "{body}");
            }
            other => panic!("unexpected status {other}"),
        }
    }

    f.audit_written().await;
    let unlinks: Vec<Value> = audit_actions(app)
        .await
        .into_iter()
        .filter(|(a, _)| a == "user_unlinked")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(unlinks.len(), 3);
    assert_eq!(unlinks[0]["upstream_sub"], "u-7");
    assert_eq!(unlinks[0]["issuer"], upstream.issuer());
    assert_eq!(unlinks[0]["sessions_revoked"], 1);
}

/// An upstream token opens one session (RFC 7523 §3): presented again,
/// as an ID token or a JWT, one by one or eight at once, it is refused and
/// audited, and the session it opened lives on. Its use is remembered
/// until it expires, then purged.
async fn an_upstream_token_opens_one_session(engine: Engine) {
    let (f, upstream, admin) = with_upstream(engine, true).await;
    let app = &f.app;
    let token = upstream.id_token("once");
    let res = exchange(app, ("bff", None), &token, ID_TOKEN, &[]).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    for kind in [ID_TOKEN, JWT] {
        let why = refused(
            exchange(app, ("bff", None), &token, kind, &[]).await,
            400,
            "invalid_grant",
        )
        .await;
        assert!(why.contains("exchanged already"), "{why}");
    }
    assert_eq!(refresh_bff(app, &refresh).await.status(), 200);
    // Eight at once: exactly one opens a session.
    let token = upstream.id_token("once");
    let answers = futures_util::future::join_all(
        (0..8).map(|_| exchange(app, ("bff", None), &token, ID_TOKEN, &[])),
    )
    .await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [200, 400].contains(s)),
        "{statuses:?}"
    );

    f.audit_written().await;
    let replays = audit_actions(app)
        .await
        .into_iter()
        .filter(|(a, d)| {
            a == "token_exchange_refused"
                && d["reason"].as_str().unwrap().contains("exchanged already")
        })
        .count();
    assert_eq!(replays, 9);
    // Remembered until the token is no longer accepted, then purged.
    let (signed, _) = token.rsplit_once('.').unwrap();
    let digest = tessera::digest::sha256(signed.as_bytes());
    assert!(app.store.upstream_token_used(&digest).await.unwrap());
    let expires = payload(&token)["exp"].as_i64().unwrap();
    let kept_after_purge_at = async |now: i64| {
        app.store
            .purge_expired(expires - 86_400, now, 1000)
            .await
            .unwrap();
        app.store.upstream_token_used(&digest).await.unwrap()
    };
    assert!(
        kept_after_purge_at(expires).await,
        "kept while it is accepted"
    );
    assert!(
        kept_after_purge_at(expires + 31).await,
        "kept a margin longer, for instances whose clocks are behind"
    );
    assert!(!kept_after_purge_at(expires + 3600).await);

    // A used token is refused before it can create a user: alice's account
    // is unlinked, and its used token replayed; the next fresh token is the
    // one that gets the account an `ext-` user.
    let link = json!({ "issuer": upstream.issuer(), "subject": "alice-acct" });
    let res = app
        .admin_api(
            Method::POST,
            "/users/alice/links",
            Some(&admin),
            Some(link.clone()),
        )
        .await;
    assert_eq!(res.status(), 201);
    let used = upstream.id_token("alice-acct");
    assert_eq!(
        exchange(app, ("bff", None), &used, ID_TOKEN, &[])
            .await
            .status(),
        200
    );
    let res = app
        .admin_api(
            Method::POST,
            "/users/alice/links/remove",
            Some(&admin),
            Some(link),
        )
        .await;
    assert_eq!(res.status(), 200);
    refused(
        exchange(app, ("bff", None), &used, ID_TOKEN, &[]).await,
        400,
        "invalid_grant",
    )
    .await;
    let fresh = upstream.id_token("alice-acct");
    assert_eq!(
        exchange(app, ("bff", None), &fresh, ID_TOKEN, &[])
            .await
            .status(),
        200
    );
    f.audit_written().await;
    let created: Vec<bool> = audit_actions(app)
        .await
        .into_iter()
        .filter(|(a, d)| a == "upstream_login" && d["upstream_sub"] == "alice-acct")
        .map(|(_, d)| d["user_created"].as_bool().unwrap())
        .collect();
    assert_eq!(created, [false, true], "the replay created nobody");
}

/// Eight first exchanges of one upstream user at once: one user is created
/// and every session is that user's.
async fn parallel_first_exchanges_create_one_user(engine: Engine) {
    let (f, upstream, _) = with_upstream(engine, true).await;
    let app = &f.app;
    let tokens: Vec<String> = (0..8).map(|_| upstream.id_token("racer")).collect();
    let answers = futures_util::future::join_all(
        tokens
            .iter()
            .map(|t| exchange(app, ("bff", None), t, ID_TOKEN, &[])),
    )
    .await;
    let mut subs = std::collections::HashSet::new();
    for res in answers {
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        subs.insert(payload(body["access_token"].as_str().unwrap())["sub"].clone());
    }
    assert_eq!(subs.len(), 1, "{subs:?}");
}

/// The JWKS server down, slow or huge: 503 `temporarily_unavailable`, not
/// `invalid_grant` (the client's token may be fine), and nothing opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_jwks_is_an_outage_not_a_refusal() {
    for mode in [Mode::Huge, Mode::Slow(Duration::from_secs(8))] {
        let (f, upstream, _) = with_upstream(Engine::Sqlite, true).await;
        upstream.set_mode(mode);
        let res = exchange(
            &f.app,
            ("bff", None),
            &upstream.id_token("u"),
            ID_TOKEN,
            &[],
        )
        .await;
        let why = refused(res, 503, "temporarily_unavailable").await;
        assert!(!why.is_empty());
        assert_eq!(upstream.hits(), 1);
    }
    // Down: nothing listens at the JWKS URL.
    let f = fixture(Engine::Sqlite).await;
    f.app
        .add_client(ClientSpec::public("bff", &["token-exchange"]))
        .await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let upstream = Upstream::start().await;
    f.app
        .store
        .add_issuer(
            &tessera::store::NewIssuer {
                issuer: upstream.issuer(),
                jwks_uri: format!("http://127.0.0.1:{port}/jwks"),
                audience: UPSTREAM_AUD.into(),
                create_users: true,
            },
            0,
        )
        .await
        .unwrap();
    let res = exchange(
        &f.app,
        ("bff", None),
        &upstream.id_token("u"),
        ID_TOKEN,
        &[],
    )
    .await;
    refused(res, 503, "temporarily_unavailable").await;
}

/// Registration rules: exchange audiences need the grant and a
/// confidential client; issuer URLs must be https (http on loopback only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_rules_are_enforced_by_the_admin_api() {
    let f = fixture(Engine::Sqlite).await;
    let admin = f.admin_token().await;
    let app = &f.app;
    for (body, needle) in [
        (
            json!({"client_id": "x1", "confidential": true, "audiences": [AUD], "exchange_audiences": [PAYMENTS]}),
            "token-exchange",
        ),
        (
            json!({"client_id": "x2", "confidential": false, "audiences": [AUD], "grants": ["token-exchange"], "exchange_audiences": [PAYMENTS]}),
            "confidential",
        ),
    ] {
        let res = app
            .admin_api(Method::POST, "/clients", Some(&admin), Some(body))
            .await;
        let why = refused(res, 400, "invalid_request").await;
        assert!(why.contains(needle), "{why}");
    }
    // The wire name of the grant is accepted and stored as token-exchange.
    let res = app
        .admin_api(
            Method::POST,
            "/clients",
            Some(&admin),
            Some(json!({"client_id": "x3", "confidential": true, "audiences": [AUD], "grants": [GRANT], "exchange_audiences": [PAYMENTS]})),
        )
        .await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["grants"], json!(["token-exchange"]));
    for body in [
        json!({"issuer": "http://idp.example", "jwks_uri": "https://idp.example/certs"}),
        json!({"issuer": "https://idp.example", "jwks_uri": "http://idp.example/certs"}),
        json!({"issuer": "https://idp.example", "jwks_uri": "https://idp.example/certs", "extra": 1}),
    ] {
        let res = app
            .admin_api(Method::POST, "/issuers", Some(&admin), Some(body))
            .await;
        assert_eq!(res.status(), 400);
    }
    let ok = json!({"issuer": "https://idp.example", "jwks_uri": "https://idp.example/certs"});
    let res = app
        .admin_api(Method::POST, "/issuers", Some(&admin), Some(ok.clone()))
        .await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    assert_eq!(
        created["audience"],
        crate::helpers::ISSUER,
        "default audience: tessera itself"
    );
    let res = app
        .admin_api(Method::POST, "/issuers", Some(&admin), Some(ok))
        .await;
    assert_eq!(res.status(), 409);
    // Only admin tokens reach it.
    let res = app.admin_api(Method::GET, "/issuers", None, None).await;
    assert_eq!(res.status(), 401);
    // Discovery lists the grant.
    let meta: Value = app
        .get("/.well-known/oauth-authorization-server")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        meta["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(GRANT))
    );
}

/// An exchange for an audience whose tokens are encrypted gives a JWE (to
/// that audience's key), like every token for it; and a JWE sent as the
/// subject token is refused with a message saying what to send instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanged_tokens_for_an_encrypted_audience_are_encrypted() {
    use josekit::jwk::alg::ec::{EcCurve, EcKeyPair};
    let s = services(Engine::Sqlite).await;
    let app = &s.f.app;
    let key = EcKeyPair::generate(EcCurve::P256).unwrap();
    app.store
        .put_audience(&tessera::store::Audience {
            name: PAYMENTS.into(),
            encrypt_jwk: Some(key.to_jwk_public_key().to_string()),
            created_at: 0,
        })
        .await
        .unwrap();
    let (access, _) = app.login("alice").await;
    // Instances re-read audiences every second.
    let jwe = crate::helpers::eventually(
        Duration::from_secs(10),
        "the exchanged token is encrypted",
        async || {
            let res = exchange(app, ("orders", Some(&s.orders)), &access, ACCESS, &[]).await;
            let body: Value = res.json().await.unwrap();
            let token = body["access_token"].as_str().unwrap_or_default().to_owned();
            match token.split('.').count() {
                5 => Ok(token),
                n => Err(format!("{n} parts")),
            }
        },
    )
    .await;
    // The audience's verify library opens it: the exchanged token, which
    // it verifies and may pass on signed.
    let verifier = tessera::verify::Verifier::builder(crate::helpers::ISSUER, PAYMENTS)
        .jwks_url(format!("{}/.well-known/jwks.json", app.address))
        .decryption_key(key.to_jwk_private_key().to_string())
        .build()
        .unwrap();
    assert_eq!(
        verifier.verify(&jwe).await.unwrap().aud.as_slice(),
        [PAYMENTS]
    );
    let inner = verifier.signed_token(&jwe).unwrap();
    assert_eq!(inner.split('.').count(), 3);
    assert_eq!(verifier.signed_token(&inner).unwrap(), inner);
    let claims = payload(&inner);
    assert_eq!(claims["act"], json!({ "sub": "orders" }));
    assert_eq!(claims["aud"], PAYMENTS);
    // payments may pass the JWE on only after decrypting it.
    let why = refused(
        exchange(app, ("payments", Some(&s.payments)), &jwe, ACCESS, &[]).await,
        400,
        "invalid_grant",
    )
    .await;
    assert!(why.contains("decrypt it"), "{why}");
    let res = exchange(app, ("payments", Some(&s.payments)), &inner, ACCESS, &[]).await;
    assert_eq!(res.status(), 200);
}

/// Exchanges racing the issuer's disable: whatever each one got, no session
/// of the issuer is live afterwards (the disable either refuses the
/// exchange or sweeps its session; on PostgreSQL a share lock on the
/// issuer's row decides which).
async fn disabling_an_issuer_during_exchanges_leaves_no_live_session(engine: Engine) {
    let (f, upstream, admin) = with_upstream(engine, true).await;
    let app = &f.app;
    let tokens: Vec<String> = (0..16)
        .map(|i| upstream.id_token(&format!("u{i}")))
        .collect();
    // The JWKS is cached first, so the exchanges race the disable itself.
    let res = exchange(
        app,
        ("bff", None),
        &upstream.id_token("warm"),
        ID_TOKEN,
        &[],
    )
    .await;
    assert_eq!(res.status(), 200);
    let exchanges = futures_util::future::join_all(
        tokens
            .iter()
            .map(|t| exchange(app, ("bff", None), t, ID_TOKEN, &[])),
    );
    let disable = async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        app.admin_api(
            Method::POST,
            "/issuers/disable",
            Some(&admin),
            Some(json!({ "issuer": upstream.issuer() })),
        )
        .await
    };
    let (answers, disabled) = tokio::join!(exchanges, disable);
    assert_eq!(disabled.status(), 200);
    let mut issued = Vec::new();
    for res in answers {
        match res.status().as_u16() {
            200 => issued.push(res.json::<Value>().await.unwrap()),
            400 => {
                let body: Value = res.json().await.unwrap();
                assert_eq!(body["error"], "invalid_grant", "{body}");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    for body in issued {
        let access = body["access_token"].as_str().unwrap();
        assert_eq!(
            f.introspect(access).await["active"],
            false,
            "a session outlived the disable"
        );
        let refresh = body["refresh_token"].as_str().unwrap();
        let res = refresh_bff(app, refresh).await;
        assert_eq!(res.status(), 400);
    }
}

/// A service revoking every token it obtained by exchange (more than the
/// revocation list keeps per owner) folds them into its own tokens, never
/// into the session of the user it acted for.
async fn a_service_revoking_its_exchanged_tokens_does_not_end_the_users_session(engine: Engine) {
    let s = services_with(engine, &[("TESSERA_REVOCATION_RATE_LIMIT", "off")]).await;
    let app = &s.f.app;
    let (access, refresh) = app.login("alice").await;
    let fold_after = tessera::revocation::FOLD_AFTER as usize;
    for _ in 0..fold_after + 1 {
        let res = exchange(app, ("orders", Some(&s.orders)), &access, ACCESS, &[]).await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        let token = body["access_token"].as_str().unwrap();
        let res = app.revoke(token, "orders", Some(&s.orders)).await;
        assert_eq!(res.status(), 200);
    }
    assert_eq!(s.f.introspect(&access).await["active"], true);
    assert_eq!(
        app.refresh(&refresh).await.status(),
        200,
        "alice's session lives on"
    );
}

/// orders exchanges alice's token, payments exchanges the result: when
/// orders is disabled, payments' token (whose `act` names orders inside)
/// is refused too, by introspection and the verify library alike.
async fn disabling_an_earlier_actor_revokes_what_later_services_obtained(engine: Engine) {
    let s = services(engine).await;
    let app = &s.f.app;
    let (access, _) = app.login("alice").await;
    let res = exchange(app, ("orders", Some(&s.orders)), &access, ACCESS, &[]).await;
    let t2: Value = res.json().await.unwrap();
    let t2 = t2["access_token"].as_str().unwrap().to_owned();
    let res = exchange(app, ("payments", Some(&s.payments)), &t2, ACCESS, &[]).await;
    let t3: Value = res.json().await.unwrap();
    let t3 = t3["access_token"].as_str().unwrap().to_owned();
    let admin = s.f.admin_token().await;
    let res = app
        .admin_api(Method::POST, "/clients/orders/disable", Some(&admin), None)
        .await;
    assert_eq!(res.status(), 200);
    // payments introspects its own audience's tokens: t3 is now inactive,
    // while alice's own token (no actor) stays active.
    let res = app.introspect_as(("payments", &s.payments), &t3).await;
    let intro: Value = res.json().await.unwrap();
    assert_eq!(intro["active"], false, "{intro}");
    assert_eq!(s.f.introspect(&access).await["active"], true);
}
