//! Revocation everywhere, over HTTP on both engines: RFC 7009 revoke,
//! RFC 7662 introspection, logout, the feed, the `verify` library polling
//! it, and two instances sharing one database.

use std::time::{Duration, Instant};

use serde_json::Value;
use tessera::auth::client::SecretDigester;
use tessera::keys::master::MasterKey;
use tessera::store::{NewClient, NewUser};
use tessera::verify::{Verifier, VerifyError};

use crate::helpers::{Engine, TestApp, on_both_engines, spawn_app_with, spawn_peer};

pub const AUD: &str = "https://api.example";
pub const PASSWORD: &str = "correct horse battery";

/// An app with a public SPA client, a resource server (confidential,
/// audience `AUD`), an unrelated confidential client, and an admin client.
pub struct Fixture {
    pub app: TestApp,
    /// Secret of `rs`.
    pub rs: String,
    /// Secret of `other`.
    pub other: String,
    /// Secret of `admin`.
    pub admin: String,
}

async fn add_client(
    app: &TestApp,
    id: &str,
    confidential: bool,
    grants: &[&str],
    scopes: &[&str],
    audiences: &[&str],
    admin: bool,
) -> String {
    let digester = SecretDigester::new(&MasterKey::from_base64(app.master_key()).unwrap());
    let (secret, digest) = digester.generate();
    let client = NewClient {
        id: id.into(),
        secret_digest: confidential.then_some(digest),
        grant_types: grants.iter().map(|g| g.to_string()).collect(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        audiences: audiences.iter().map(|s| s.to_string()).collect(),
        origins: vec![],
        cookie: false,
        admin,
        // Every confidential fixture client but the admin reads the feed.
        resource_server: confidential && !admin,
        on_binding_change: tessera::store::BindingPolicy::Audit,
    };
    app.store.create_client(&client, 0).await.unwrap();
    secret.to_string()
}

pub async fn add_user(app: &TestApp, name: &str) -> uuid::Uuid {
    let id = uuid::Uuid::new_v4();
    app.store
        .create_user(
            &NewUser {
                id,
                username: name.into(),
                password_hash: tessera::auth::password::hash(PASSWORD).unwrap(),
                totp_secret: None,
            },
            0,
        )
        .await
        .unwrap();
    id
}

pub async fn fixture(engine: Engine) -> Fixture {
    fixture_with(engine, &[]).await
}

/// [`fixture`] with further `TESSERA_*` settings.
pub async fn fixture_with(engine: Engine, extra: &[(&str, &str)]) -> Fixture {
    let app = spawn_app_with(engine, extra).await;
    add_client(
        &app,
        "spa",
        false,
        &["password", "refresh_token"],
        &["read"],
        &[AUD],
        false,
    )
    .await;
    let rs = add_client(
        &app,
        "rs",
        true,
        &["client_credentials"],
        &["read"],
        &[AUD],
        false,
    )
    .await;
    let other = add_client(
        &app,
        "other",
        true,
        &["client_credentials"],
        &["read"],
        &["https://elsewhere.example"],
        false,
    )
    .await;
    let admin = add_client(
        &app,
        "admin",
        true,
        &["client_credentials"],
        &["tessera:admin"],
        &["http://127.0.0.1:8080"],
        true,
    )
    .await;
    add_user(&app, "alice").await;
    Fixture {
        app,
        rs,
        other,
        admin,
    }
}

/// POSTs a form to `path` on `base`, with optional Basic credentials.
pub async fn form(
    app: &TestApp,
    base: &str,
    path: &str,
    pairs: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> reqwest::Response {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let mut req = app
        .client
        .post(format!("{base}{path}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    req.send().await.unwrap()
}

/// Password login through `spa`: (access token, refresh token).
pub async fn login(app: &TestApp, user: &str) -> (String, String) {
    login_with(app, user, PASSWORD).await
}

/// Password login through `spa` with `password`: (access token, refresh token).
pub async fn login_with(app: &TestApp, user: &str, password: &str) -> (String, String) {
    let res = form(
        app,
        &app.address,
        "/oauth/token",
        &[
            ("grant_type", "password"),
            ("client_id", "spa"),
            ("username", user),
            ("password", password),
        ],
        None,
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

/// A refresh through `spa`: the response.
pub async fn refresh(app: &TestApp, refresh_token: &str) -> reqwest::Response {
    form(
        app,
        &app.address,
        "/oauth/token",
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "spa"),
            ("refresh_token", refresh_token),
        ],
        None,
    )
    .await
}

/// Introspection by the resource server on `base`.
pub async fn introspect_at(f: &Fixture, base: &str, token: &str) -> Value {
    let res = form(
        &f.app,
        base,
        "/oauth/introspect",
        &[("token", token)],
        Some(("rs", &f.rs)),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    res.json().await.unwrap()
}

pub async fn introspect(f: &Fixture, token: &str) -> Value {
    introspect_at(f, &f.app.address, token).await
}

async fn revoke(f: &Fixture, token: &str, as_client: (&str, Option<&str>)) -> reqwest::Response {
    let (id, secret) = as_client;
    match secret {
        Some(secret) => {
            form(
                &f.app,
                &f.app.address,
                "/oauth/revoke",
                &[("token", token)],
                Some((id, secret)),
            )
            .await
        }
        None => {
            form(
                &f.app,
                &f.app.address,
                "/oauth/revoke",
                &[("token", token), ("client_id", id)],
                None,
            )
            .await
        }
    }
}

async fn introspection_reports_live_tokens_and_nothing_else(engine: Engine) {
    let f = fixture(engine).await;
    let (access, refresh_token) = login(&f.app, "alice").await;
    let active = introspect(&f, &access).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["token_type"], "Bearer");
    assert_eq!(active["client_id"], "spa");
    assert_eq!(active["scope"], "read");
    assert_eq!(active["aud"], AUD);
    for claim in ["sub", "exp", "iat", "jti", "sid", "iss"] {
        assert!(active.get(claim).is_some(), "{claim} missing");
    }
    // A refresh token is active only for the client it was issued to.
    assert_eq!(
        introspect(&f, &refresh_token).await,
        serde_json::json!({"active": false})
    );
    // Garbage, a tampered token, and a token for another audience: inactive, no hint why.
    let mut tampered = access.clone();
    tampered.pop();
    tampered.push(if access.ends_with('A') { 'B' } else { 'A' });
    for token in ["garbage", "a.b.c", tampered.as_str()] {
        assert_eq!(
            introspect(&f, token).await,
            serde_json::json!({"active": false}),
            "{token}"
        );
    }
    let res = form(
        &f.app,
        &f.app.address,
        "/oauth/introspect",
        &[("token", &access)],
        Some(("other", &f.other)),
    )
    .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"active": false}),
        "not other's audience"
    );
    // Only authenticated confidential clients may ask.
    let res = form(
        &f.app,
        &f.app.address,
        "/oauth/introspect",
        &[("token", &access), ("client_id", "spa")],
        None,
    )
    .await;
    assert_eq!(res.status(), 401);
    let res = form(
        &f.app,
        &f.app.address,
        "/oauth/introspect",
        &[("token", &access)],
        Some(("rs", "wrong")),
    )
    .await;
    assert_eq!(res.status(), 401);
    let res = form(
        &f.app,
        &f.app.address,
        "/oauth/introspect",
        &[],
        Some(("rs", &f.rs)),
    )
    .await;
    assert_eq!(res.status(), 400);
}

async fn revoking_a_refresh_token_ends_its_session(engine: Engine) {
    let f = fixture(engine).await;
    let (access, refresh_token) = login(&f.app, "alice").await;
    let res = revoke(&f, &refresh_token, ("spa", None)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let res = refresh(&f.app, &refresh_token).await;
    assert_eq!(res.status(), 400);
    // The access token minted in the session stops at introspection (sid).
    assert_eq!(introspect(&f, &access).await["active"], false);
    // Revoking again, or an unknown token, is still 200.
    assert_eq!(
        revoke(&f, &refresh_token, ("spa", None)).await.status(),
        200
    );
    assert_eq!(
        revoke(&f, "unknown-token", ("spa", None)).await.status(),
        200
    );
    assert_eq!(
        revoke(&f, &"A".repeat(43), ("spa", None)).await.status(),
        200,
        "well-formed but unknown refresh token"
    );
}

async fn revoking_an_access_token_revokes_only_its_jti(engine: Engine) {
    let f = fixture(engine).await;
    let (access, refresh_token) = login(&f.app, "alice").await;
    assert_eq!(revoke(&f, &access, ("spa", None)).await.status(), 200);
    assert_eq!(introspect(&f, &access).await["active"], false);
    // The session lives on: a refresh gives a new, active access token.
    let res = refresh(&f.app, &refresh_token).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        introspect(&f, body["access_token"].as_str().unwrap()).await["active"],
        true
    );
}

async fn another_clients_token_is_not_revoked(engine: Engine) {
    let f = fixture(engine).await;
    let (access, refresh_token) = login(&f.app, "alice").await;
    for token in [&access, &refresh_token] {
        let res = revoke(&f, token, ("other", Some(&f.other))).await;
        assert_eq!(res.status(), 400);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized_client");
    }
    assert_eq!(introspect(&f, &access).await["active"], true);
    assert_eq!(refresh(&f.app, &refresh_token).await.status(), 200);
    // Client authentication is required (RFC 6749 §5.2: invalid_client) and checked.
    let res = form(
        &f.app,
        &f.app.address,
        "/oauth/revoke",
        &[("token", &access)],
        None,
    )
    .await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );
    let res = revoke(&f, &access, ("other", Some("wrong"))).await;
    assert_eq!(res.status(), 401);
    let res = form(
        &f.app,
        &f.app.address,
        "/oauth/revoke",
        &[("client_id", "spa")],
        None,
    )
    .await;
    assert_eq!(res.status(), 400, "token is required");
}

async fn logout_ends_the_session_server_side(engine: Engine) {
    let f = fixture(engine).await;
    let (access, refresh_token) = login(&f.app, "alice").await;
    let logout = |token: String| {
        let f = &f;
        async move {
            form(
                &f.app,
                &f.app.address,
                "/oauth/logout",
                &[("client_id", "spa"), ("refresh_token", &token)],
                None,
            )
            .await
        }
    };
    let res = logout(refresh_token.clone()).await;
    assert_eq!(res.status(), 204);
    assert_eq!(refresh(&f.app, &refresh_token).await.status(), 400);
    assert_eq!(introspect(&f, &access).await["active"], false);
    assert_eq!(logout(refresh_token).await.status(), 204, "idempotent");
}

async fn feed(f: &Fixture, query: &str) -> reqwest::Response {
    f.app
        .client
        .get(format!("{}/v1/revocations{query}", f.app.address))
        .basic_auth("rs", Some(&f.rs))
        .send()
        .await
        .unwrap()
}

async fn the_feed_pages_relevant_revocations(engine: Engine) {
    let f = fixture(engine).await;
    let now = chrono::Utc::now().timestamp();
    for jti in ["j1", "j2", "j3"] {
        assert_eq!(
            f.app
                .store
                .revoke_jti(jti, now, now + 900, None, 64)
                .await
                .unwrap(),
            tessera::store::JtiRevocation::Listed
        );
    }
    // No longer relevant: never listed.
    f.app
        .store
        .revoke_jti("old", now - 1000, now - 10, None, 64)
        .await
        .unwrap();
    let res = feed(&f, "?limit=2").await;
    assert_eq!(res.status(), 200);
    let page: Value = res.json().await.unwrap();
    let values = |page: &Value| -> Vec<String> {
        page["revocations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["value"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(values(&page), ["j1", "j2"]);
    assert_eq!(page["has_more"], true);
    assert_eq!(page["revocations"][0]["kind"], "jti");
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let page: Value = feed(&f, &format!("?since={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(values(&page), ["j3"]);
    assert_eq!(page["has_more"], false);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let page: Value = feed(&f, &format!("?since={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    assert!(values(&page).is_empty());
    assert_eq!(
        page["next_cursor"], cursor,
        "an empty page keeps the cursor"
    );
    // Authentication and parameters.
    let res = f.app.get("/v1/revocations").await;
    assert_eq!(res.status(), 401);
    assert!(res.headers().contains_key("www-authenticate"));
    for bad in ["?since=-1", "?since=x", "?limit=0", "?cursor=1"] {
        assert_eq!(feed(&f, bad).await.status(), 400, "{bad}");
    }
}

async fn the_verify_library_honours_the_feed(engine: Engine) {
    let f = fixture(engine).await;
    let (access, _) = login(&f.app, "alice").await;
    let jwks = f
        .app
        .get("/.well-known/jwks.json")
        .await
        .text()
        .await
        .unwrap();
    let verifier = Verifier::builder("http://127.0.0.1:8080", AUD)
        .static_jwks(jwks)
        .revocation_feed("rs", f.rs.clone())
        .revocation_feed_url(format!("{}/v1/revocations", f.app.address))
        .build()
        .unwrap();
    verifier
        .verify(&access)
        .await
        .expect("valid before revocation");
    assert_eq!(revoke(&f, &access, ("spa", None)).await.status(), 200);
    assert_eq!(verifier.poll_revocations().await.unwrap(), 1);
    assert_eq!(verifier.verify(&access).await, Err(VerifyError::Revoked));
}

async fn a_revocation_on_one_instance_is_honoured_by_another_within_a_second(engine: Engine) {
    let f = fixture(engine).await;
    let peer = spawn_peer(&f.app).await;
    let (access, refresh_token) = login(&f.app, "alice").await;
    assert_eq!(
        introspect_at(&f, &peer.address, &access).await["active"],
        true
    );
    assert_eq!(
        revoke(&f, &refresh_token, ("spa", None)).await.status(),
        200
    );
    let revoked_at = Instant::now();
    loop {
        if introspect_at(&f, &peer.address, &access).await["active"] == false {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "the other instance still accepts the token after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn replay_is_audited_and_listed(engine: Engine) {
    let f = fixture(engine).await;
    let (access, first) = login(&f.app, "alice").await;
    assert_eq!(refresh(&f.app, &first).await.status(), 200);
    let res = refresh(&f.app, &first).await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
    assert_eq!(introspect(&f, &access).await["active"], false);
    let page: Value = feed(&f, "").await.json().await.unwrap();
    assert_eq!(page["revocations"][0]["kind"], "sid");
    let rows = f.app.store.audit_page(0, 100).await.unwrap();
    let reuse = rows
        .iter()
        .find(|r| r.action == "refresh_reuse_detected")
        .expect("reuse audited");
    assert_eq!(reuse.actor, "client:spa");
    for action in ["login", "refresh"] {
        assert!(rows.iter().any(|r| r.action == action), "{action} audited");
    }
    // Nothing secret in the trail.
    for r in &rows {
        let text = format!("{r:?}");
        assert!(!text.contains(&first) && !text.contains(PASSWORD) && !text.contains(&access));
    }
}

/// The review's low finding: any confidential client introspected any
/// token (every client had the issuer as a default audience) and read the
/// whole feed. Only resource servers may, and only for their audiences.
async fn only_resource_servers_introspect_and_only_their_audiences(engine: Engine) {
    let f = fixture(engine).await;
    let not_rs = add_client(
        &f.app,
        "backend",
        true,
        &["client_credentials"],
        &["read"],
        &[AUD],
        false,
    )
    .await;
    // add_client makes every non-admin confidential client a resource server.
    f.app
        .store
        .set_client_resource_server("backend", false)
        .await
        .unwrap();
    let (access, _) = login(&f.app, "alice").await;
    let res = form(
        &f.app,
        &f.app.address,
        "/oauth/introspect",
        &[("token", &access)],
        Some(("backend", &not_rs)),
    )
    .await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized_client");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("--resource-server")
    );
    let res = f
        .app
        .client
        .get(format!("{}/v1/revocations", f.app.address))
        .basic_auth("backend", Some(&not_rs))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    // A resource server sees tokens for its audience only: not the admin
    // API's (the issuer's), not even its own for another audience.
    assert_eq!(introspect(&f, &access).await["active"], true);
    let admin_token = crate::admin::admin_token(&f).await;
    assert_eq!(introspect(&f, &admin_token).await["active"], false);
    let other = form(
        &f.app,
        &f.app.address,
        "/oauth/introspect",
        &[("token", &access)],
        Some(("other", &f.other)),
    )
    .await;
    assert_eq!(other.json::<Value>().await.unwrap()["active"], false);
}

on_both_engines!(
    only_resource_servers_introspect_and_only_their_audiences,
    introspection_reports_live_tokens_and_nothing_else,
    revoking_a_refresh_token_ends_its_session,
    revoking_an_access_token_revokes_only_its_jti,
    another_clients_token_is_not_revoked,
    logout_ends_the_session_server_side,
    the_feed_pages_relevant_revocations,
    the_verify_library_honours_the_feed,
    a_revocation_on_one_instance_is_honoured_by_another_within_a_second,
    replay_is_audited_and_listed,
);
