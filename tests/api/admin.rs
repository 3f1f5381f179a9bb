//! The admin API: who may call it, and what each call does, on both engines.

use serde_json::{Value, json};

use crate::helpers::{Engine, on_both_engines};
use crate::revocation::{Fixture, add_user, fixture, form, introspect, login, login_with, refresh};

const ISSUER: &str = "http://127.0.0.1:8080";

pub(crate) async fn client_token(f: &Fixture, id: &str, secret: &str) -> String {
    let res = form(
        &f.app,
        &f.app.address,
        "/oauth/token",
        &[("grant_type", "client_credentials")],
        Some((id, secret)),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

pub(crate) async fn admin_token(f: &Fixture) -> String {
    client_token(f, "admin", &f.admin).await
}

async fn call(
    f: &Fixture,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = f
        .app
        .client
        .request(method, format!("{}/admin/v1{path}", f.app.address));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

async fn the_admin_api_needs_an_admin_token(engine: Engine) {
    let f = fixture(engine).await;
    use reqwest::Method as M;
    // No token: 401 with a bare challenge.
    let res = call(&f, M::GET, "/keys", None, None).await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    // A bad token: 401 invalid_token.
    let res = call(&f, M::GET, "/keys", Some("not-a-token"), None).await;
    assert_eq!(res.status(), 401);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    // A valid token for another audience: 401.
    let rs = client_token(&f, "rs", &f.rs).await;
    assert_eq!(
        call(&f, M::GET, "/keys", Some(&rs), None).await.status(),
        401
    );
    // A valid token for the issuer without the admin scope: 403.
    let (user_token, _) = login_at_issuer(&f).await;
    let res = call(&f, M::GET, "/keys", Some(&user_token), None).await;
    assert_eq!(res.status(), 403);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("insufficient_scope")
    );
    // The admin token works.
    let admin = admin_token(&f).await;
    let res = call(&f, M::GET, "/keys", Some(&admin), None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let keys: Value = res.json().await.unwrap();
    assert_eq!(keys["keys"][0]["state"], "active");
    // Revoked admin token: 401. Disabled admin client: 403 even with a fresh token.
    let second = admin_token(&f).await;
    let res = form(
        &f.app,
        &f.app.address,
        "/oauth/revoke",
        &[("token", &admin)],
        Some(("admin", &f.admin)),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        call(&f, M::GET, "/keys", Some(&admin), None).await.status(),
        401
    );
    assert_eq!(
        call(&f, M::GET, "/keys", Some(&second), None)
            .await
            .status(),
        200
    );
    f.app
        .store
        .set_client_disabled("admin", true)
        .await
        .unwrap();
    assert_eq!(
        call(&f, M::GET, "/keys", Some(&second), None)
            .await
            .status(),
        403
    );
    // Unknown admin paths are 404 only after authentication... or before: never 5xx.
    assert_eq!(call(&f, M::GET, "/nothing", None, None).await.status(), 404);
}

/// A user token whose audience is the issuer (a public client registered
/// with the default audience), without the admin scope.
async fn login_at_issuer(f: &Fixture) -> (String, String) {
    f.app
        .store
        .create_client(
            &tessera::store::NewClient {
                id: "console".into(),
                secret_digest: None,
                grant_types: vec!["password".into(), "refresh_token".into()],
                scopes: vec!["read".into()],
                audiences: vec![ISSUER.into()],
                origins: vec![],
                cookie: false,
                admin: false,
                resource_server: false,
                on_binding_change: tessera::store::BindingPolicy::Audit,
            },
            0,
        )
        .await
        .unwrap();
    let res = form(
        &f.app,
        &f.app.address,
        "/oauth/token",
        &[
            ("grant_type", "password"),
            ("client_id", "console"),
            ("username", "alice"),
            ("password", crate::revocation::PASSWORD),
        ],
        None,
    )
    .await;
    let body: Value = res.json().await.unwrap();
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

async fn logout_everywhere_kills_only_that_users_sessions(engine: Engine) {
    let f = fixture(engine).await;
    use reqwest::Method as M;
    add_user(&f.app, "bob").await;
    let (a1, r1) = login(&f.app, "alice").await;
    let (a2, r2) = login(&f.app, "alice").await;
    let (b1, rb) = login(&f.app, "bob").await;
    let admin = admin_token(&f).await;

    let res = call(&f, M::GET, "/users/alice/sessions", Some(&admin), None).await;
    assert_eq!(res.status(), 200);
    let list: Value = res.json().await.unwrap();
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0]["client_id"], "spa");
    assert_eq!(sessions[0]["network"], "127.0.0.0/24");
    assert!(sessions[0].get("user_agent").is_some());
    assert!(!list.to_string().contains(&r1), "no tokens in the listing");

    let res = call(&f, M::DELETE, "/users/alice/sessions", Some(&admin), None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["sessions_revoked"], 2);
    for (access, refresh_token) in [(&a1, &r1), (&a2, &r2)] {
        assert_eq!(refresh(&f.app, refresh_token).await.status(), 400);
        assert_eq!(introspect(&f, access).await["active"], false);
    }
    assert_eq!(introspect(&f, &b1).await["active"], true);
    assert_eq!(refresh(&f.app, &rb).await.status(), 200);
    // Alice can log in again at once: a token minted after the revocation
    // is never refused, even in the second it committed.
    let (fresh, _) = login(&f.app, "alice").await;
    assert_eq!(introspect(&f, &fresh).await["active"], true);
    let res = call(&f, M::GET, "/users/nobody/sessions", Some(&admin), None).await;
    assert_eq!(res.status(), 404);
}

async fn admin_actions_provision_revoke_and_are_audited(engine: Engine) {
    let f = fixture(engine).await;
    use reqwest::Method as M;
    let admin = admin_token(&f).await;

    // Users: create, change password (revokes sessions), enrol TOTP, disable.
    let res = call(
        &f,
        M::POST,
        "/users",
        Some(&admin),
        Some(json!({"username": "carol", "password": "a long password"})),
    )
    .await;
    assert_eq!(res.status(), 201);
    let carol: Value = res.json().await.unwrap();
    let res = call(
        &f,
        M::POST,
        "/users",
        Some(&admin),
        Some(json!({"username": "carol", "password": "a long password"})),
    )
    .await;
    assert_eq!(res.status(), 409);
    let res = call(
        &f,
        M::POST,
        "/users",
        Some(&admin),
        Some(json!({"username": "dave", "password": "short"})),
    )
    .await;
    assert_eq!(res.status(), 400);
    assert!(
        res.json::<Value>().await.unwrap()["error_description"]
            .as_str()
            .unwrap()
            .contains("at least")
    );
    let res = call(
        &f,
        M::POST,
        "/users",
        Some(&admin),
        Some(json!({"username": "dave", "pasword": "typo in the field"})),
    )
    .await;
    assert_eq!(res.status(), 400, "unknown fields are refused");

    let (_, alice_refresh) = login(&f.app, "alice").await;
    let res = call(
        &f,
        M::POST,
        "/users/alice/password",
        Some(&admin),
        Some(json!({"password": "another long one"})),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["sessions_revoked"], 1);
    assert_eq!(
        refresh(&f.app, &alice_refresh).await.status(),
        400,
        "privilege change revokes"
    );

    let res = call(&f, M::POST, "/users/carol/totp", Some(&admin), None).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.json::<Value>().await.unwrap()["totp_uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/")
    );

    let res = call(&f, M::POST, "/users/carol/disable", Some(&admin), None).await;
    assert_eq!(res.status(), 200);

    // Clients: create (secret once), revoke its tokens, disable.
    let res = call(
        &f,
        M::POST,
        "/clients",
        Some(&admin),
        Some(json!({"client_id": "batch", "confidential": true, "scopes": ["read"], "audiences": [ISSUER]})),
    )
    .await;
    assert_eq!(res.status(), 201);
    let batch: Value = res.json().await.unwrap();
    let secret = batch["client_secret"].as_str().unwrap().to_owned();
    let token = client_token(&f, "batch", &secret).await;
    assert_eq!(
        introspect(&f, &token).await["active"],
        false,
        "audience is the issuer, not rs's"
    );
    let res = call(&f, M::DELETE, "/clients/batch/tokens", Some(&admin), None).await;
    assert_eq!(res.status(), 200);
    let res = call(&f, M::POST, "/clients/batch/disable", Some(&admin), None).await;
    assert_eq!(res.status(), 200);
    let res = form(
        &f.app,
        &f.app.address,
        "/oauth/token",
        &[("grant_type", "client_credentials")],
        Some(("batch", &secret)),
    )
    .await;
    assert_eq!(res.status(), 401);
    let res = call(
        &f,
        M::POST,
        "/clients",
        Some(&admin),
        Some(json!({"client_id": "bad/id", "confidential": true})),
    )
    .await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        call(&f, M::DELETE, "/clients/nobody/tokens", Some(&admin), None)
            .await
            .status(),
        404
    );

    // Sessions and single tokens.
    let (access, refresh_token) = login_with(&f.app, "alice", "another long one").await;
    let sid = introspect(&f, &access).await["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = call(
        &f,
        M::DELETE,
        &format!("/sessions/{sid}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(res.status(), 204);
    assert_eq!(refresh(&f.app, &refresh_token).await.status(), 400);
    assert_eq!(
        call(&f, M::DELETE, "/sessions/not-a-uuid", Some(&admin), None)
            .await
            .status(),
        404
    );
    let (access, _) = login_with(&f.app, "alice", "another long one").await;
    let jti = introspect(&f, &access).await["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        call(&f, M::DELETE, &format!("/tokens/{jti}"), Some(&admin), None)
            .await
            .status(),
        204
    );
    assert_eq!(introspect(&f, &access).await["active"], false);

    // Keys.
    let res = call(&f, M::POST, "/keys/rotate", Some(&admin), None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["state"], "next");

    // Every action is in the audit log with the admin client as actor.
    let res = call(&f, M::GET, "/audit?limit=1000", Some(&admin), None).await;
    assert_eq!(res.status(), 200);
    let page: Value = res.json().await.unwrap();
    let entries = page["entries"].as_array().unwrap();
    for action in [
        "user_created",
        "user_password_changed",
        "user_totp_enrolled",
        "user_disabled",
        "client_created",
        "client_tokens_revoked",
        "client_disabled",
        "session_revoked",
        "token_revoked",
        "key_rotated",
    ] {
        let e = entries
            .iter()
            .find(|e| e["action"] == action && e["actor"] == "client:admin")
            .unwrap_or_else(|| panic!("{action} not audited"));
        assert!(e["seq"].as_i64().unwrap() >= 1);
    }
    assert_eq!(
        entries
            .iter()
            .find(|e| e["action"] == "user_created")
            .unwrap()["subject"],
        carol["id"],
        "users appear as their opaque sub"
    );
    let text = page.to_string();
    assert!(!text.contains("a long password") && !text.contains(&secret));
    // Paging.
    let res = call(&f, M::GET, "/audit?after=1&limit=2", Some(&admin), None).await;
    let page: Value = res.json().await.unwrap();
    assert_eq!(page["entries"][0]["seq"], 2);
    assert_eq!(page["next"], 3);
    assert_eq!(
        call(&f, M::GET, "/audit?limit=0", Some(&admin), None)
            .await
            .status(),
        400
    );
}

/// The review's high finding: `client add console --public --admin`, then
/// any user's password login through `console` read the admin API. Such a
/// client can no longer be registered; a row left from before (the
/// migration repairs those too) still yields no admin token to a user.
async fn a_user_token_never_reaches_the_admin_api(engine: Engine) {
    use reqwest::Method as M;
    let f = fixture(engine).await;
    let admin = admin_token(&f).await;
    for spec in [
        json!({"client_id": "console", "confidential": false, "admin": true, "audiences": [ISSUER]}),
        json!({"client_id": "console", "confidential": true, "admin": true, "grants": ["client_credentials", "password"]}),
    ] {
        let res = call(&f, M::POST, "/clients", Some(&admin), Some(spec)).await;
        assert_eq!(res.status(), 400);
        let body: Value = res.json().await.unwrap();
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("must be confidential with client_credentials as its only grant"),
            "{body}"
        );
    }
    // A row as the old validation let through.
    f.app
        .store
        .create_client(
            &tessera::store::NewClient {
                id: "console".into(),
                secret_digest: None,
                grant_types: vec!["password".into(), "refresh_token".into()],
                scopes: vec!["read".into(), "tessera:admin".into()],
                audiences: vec![ISSUER.into()],
                origins: vec![],
                cookie: false,
                admin: true,
                resource_server: false,
                on_binding_change: tessera::store::BindingPolicy::Audit,
            },
            0,
        )
        .await
        .unwrap();
    let password_login = |scope: Option<&'static str>| {
        let f = &f;
        async move {
            let mut pairs = vec![
                ("grant_type", "password"),
                ("client_id", "console"),
                ("username", "alice"),
                ("password", crate::revocation::PASSWORD),
            ];
            if let Some(scope) = scope {
                pairs.push(("scope", scope));
            }
            form(&f.app, &f.app.address, "/oauth/token", &pairs, None).await
        }
    };
    // Asked for, tessera:admin is refused to a user grant.
    let res = password_login(Some("tessera:admin")).await;
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_scope");
    // Not asked for, it is left out.
    let body: Value = password_login(None).await.json().await.unwrap();
    assert_eq!(body["scope"], "read", "{body}");
    let user_token = body["access_token"].as_str().unwrap().to_owned();
    for path in ["/keys", "/users/alice/sessions"] {
        assert_eq!(
            call(&f, M::GET, path, Some(&user_token), None)
                .await
                .status(),
            403,
            "{path}"
        );
    }
    // A session that still lists tessera:admin (opened before the fix)
    // refreshes without it, and its tokens are refused all the same.
    let refresh_token = body["refresh_token"].as_str().unwrap().to_owned();
    let sql = "UPDATE sessions SET scope = 'read tessera:admin'";
    match engine {
        Engine::Sqlite => {
            let pool = sqlx::SqlitePool::connect(f.app.database_url())
                .await
                .unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        Engine::Postgres => {
            let pool = sqlx::PgPool::connect(f.app.database_url()).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
    }
    let res = form(
        &f.app,
        &f.app.address,
        "/oauth/token",
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "console"),
            ("refresh_token", &refresh_token),
        ],
        None,
    )
    .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["scope"], "read", "{body}");
    let refreshed = body["access_token"].as_str().unwrap();
    assert_eq!(
        call(&f, M::GET, "/keys", Some(refreshed), None)
            .await
            .status(),
        403
    );
}

/// An anonymous caller with a malformed body gets 401, not a 400 quoting
/// the schema: the body is read only after authorization.
async fn anonymous_callers_learn_nothing_about_bodies(engine: Engine) {
    let f = fixture(engine).await;
    let url = format!("{}/admin/v1/users", f.app.address);
    for (content_type, body) in [
        ("application/json", "{\"nonsense\": 1}"),
        ("application/json", "not json"),
        ("text/plain", "hello"),
    ] {
        let res = f
            .app
            .client
            .post(&url)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{content_type} {body}");
        let text = res.text().await.unwrap();
        assert!(
            !text.contains("unknown field") && !text.contains("username"),
            "{text}"
        );
    }
    // Authorized, the same body gets the schema error.
    let admin = admin_token(&f).await;
    let res = call(
        &f,
        reqwest::Method::POST,
        "/users",
        Some(&admin),
        Some(json!({"nonsense": 1})),
    )
    .await;
    assert_eq!(res.status(), 400);
}

/// `resource_server` is shown and set through the admin API, and takes
/// effect at once on the instance that changed it.
async fn the_resource_server_flag_is_shown_and_set(engine: Engine) {
    use reqwest::Method as M;
    let f = fixture(engine).await;
    let admin = admin_token(&f).await;
    let res = call(&f, M::GET, "/clients/rs", Some(&admin), None).await;
    assert_eq!(res.status(), 200);
    let view: Value = res.json().await.unwrap();
    assert_eq!(view["resource_server"], true);
    assert!(view.get("secret_digest").is_none() && !view.to_string().contains(&f.rs));
    let (access, _) = login(&f.app, "alice").await;
    assert_eq!(introspect(&f, &access).await["active"], true);
    let res = call(
        &f,
        M::PATCH,
        "/clients/rs",
        Some(&admin),
        Some(json!({"resource_server": false})),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["resource_server"], false);
    let res = form(
        &f.app,
        &f.app.address,
        "/oauth/introspect",
        &[("token", &access)],
        Some(("rs", &f.rs)),
    )
    .await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "unauthorized_client"
    );
    // Public clients cannot be resource servers; unknown fields and clients are named.
    let res = call(
        &f,
        M::PATCH,
        "/clients/spa",
        Some(&admin),
        Some(json!({"resource_server": true})),
    )
    .await;
    assert_eq!(res.status(), 400);
    let res = call(
        &f,
        M::PATCH,
        "/clients/rs",
        Some(&admin),
        Some(json!({"admin": true})),
    )
    .await;
    assert_eq!(res.status(), 400);
    let res = call(&f, M::GET, "/clients/nobody", Some(&admin), None).await;
    assert_eq!(res.status(), 404);
    let rows = f.app.store.audit_page(0, 1000).await.unwrap();
    assert!(rows.iter().any(|r| r.action == "client_updated"
        && r.subject.as_deref() == Some("rs")
        && r.detail.contains("\"resource_server\":false")));
}

on_both_engines!(
    the_admin_api_needs_an_admin_token,
    logout_everywhere_kills_only_that_users_sessions,
    admin_actions_provision_revoke_and_are_audited,
    a_user_token_never_reaches_the_admin_api,
    anonymous_callers_learn_nothing_about_bodies,
    the_resource_server_flag_is_shown_and_set,
);
