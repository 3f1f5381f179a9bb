//! The admin API: who may call it, and what each call does, on both engines.

use serde_json::{Value, json};

use crate::helpers::{ClientSpec, Engine, Fixture, ISSUER, Login, fixture, on_both_engines};

async fn the_admin_api_needs_an_admin_token(engine: Engine) {
    let f = fixture(engine).await;
    use reqwest::Method as M;
    // No token: 401 with a bare challenge.
    let res = f.app.admin_api(M::GET, "/keys", None, None).await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    // A bad token: 401 invalid_token.
    let res = f
        .app
        .admin_api(M::GET, "/keys", Some("not-a-token"), None)
        .await;
    assert_eq!(res.status(), 401);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    // A valid token for another audience: 401.
    let rs = f.app.client_token("rs", &f.rs).await;
    assert_eq!(
        f.app
            .admin_api(M::GET, "/keys", Some(&rs), None)
            .await
            .status(),
        401
    );
    // A valid token for the issuer without the admin scope: 403.
    let (user_token, _) = login_at_issuer(&f).await;
    let res = f
        .app
        .admin_api(M::GET, "/keys", Some(&user_token), None)
        .await;
    assert_eq!(res.status(), 403);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("insufficient_scope")
    );
    // The admin token works.
    let admin = f.admin_token().await;
    let res = f.app.admin_api(M::GET, "/keys", Some(&admin), None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let keys: Value = res.json().await.unwrap();
    assert_eq!(keys["keys"][0]["state"], "active");
    // Revoked admin token: 401. Disabled admin client: 403 even with a fresh token.
    let second = f.admin_token().await;
    let res = f.app.revoke(&admin, "admin", Some(&f.admin)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        f.app
            .admin_api(M::GET, "/keys", Some(&admin), None)
            .await
            .status(),
        401
    );
    assert_eq!(
        f.app
            .admin_api(M::GET, "/keys", Some(&second), None)
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
        f.app
            .admin_api(M::GET, "/keys", Some(&second), None)
            .await
            .status(),
        403
    );
    // Unknown admin paths are 404 only after authentication... or before: never 5xx.
    assert_eq!(
        f.app
            .admin_api(M::GET, "/nothing", None, None)
            .await
            .status(),
        404
    );
}

/// A user token whose audience is the issuer (a public client registered
/// with the default audience), without the admin scope.
async fn login_at_issuer(f: &Fixture) -> (String, String) {
    f.app
        .add_client(
            ClientSpec::public("console", &["password", "refresh_token"]).audiences(&[ISSUER]),
        )
        .await;
    f.app.login_as(Login::new("alice").client("console")).await
}

async fn logout_everywhere_kills_only_that_users_sessions(engine: Engine) {
    let f = fixture(engine).await;
    use reqwest::Method as M;
    f.app.add_user("bob").await;
    let (a1, r1) = f.app.login("alice").await;
    let (a2, r2) = f.app.login("alice").await;
    let (b1, rb) = f.app.login("bob").await;
    let admin = f.admin_token().await;

    let res = f
        .app
        .admin_api(M::GET, "/users/alice/sessions", Some(&admin), None)
        .await;
    assert_eq!(res.status(), 200);
    let list: Value = res.json().await.unwrap();
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[0]["client_id"], "spa");
    assert_eq!(sessions[0]["network"], "127.0.0.0/24");
    assert!(sessions[0].get("user_agent").is_some());
    assert!(!list.to_string().contains(&r1), "no tokens in the listing");

    let res = f
        .app
        .admin_api(M::DELETE, "/users/alice/sessions", Some(&admin), None)
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["sessions_revoked"], 2);
    for (access, refresh_token) in [(&a1, &r1), (&a2, &r2)] {
        assert_eq!(f.app.refresh(refresh_token).await.status(), 400);
        assert_eq!(f.introspect(access).await["active"], false);
    }
    assert_eq!(f.introspect(&b1).await["active"], true);
    assert_eq!(f.app.refresh(&rb).await.status(), 200);
    // Alice can log in again at once: a token minted after the revocation
    // is never refused, even in the second it committed.
    let (fresh, _) = f.app.login("alice").await;
    assert_eq!(f.introspect(&fresh).await["active"], true);
    let res = f
        .app
        .admin_api(M::GET, "/users/nobody/sessions", Some(&admin), None)
        .await;
    assert_eq!(res.status(), 404);
}

async fn admin_actions_provision_revoke_and_are_audited(engine: Engine) {
    let f = fixture(engine).await;
    use reqwest::Method as M;
    let admin = f.admin_token().await;

    // Users: create, change password (revokes sessions), enrol TOTP, disable.
    let res = f
        .app
        .admin_api(
            M::POST,
            "/users",
            Some(&admin),
            Some(json!({"username": "carol", "password": "a long password"})),
        )
        .await;
    assert_eq!(res.status(), 201);
    let carol: Value = res.json().await.unwrap();
    let res = f
        .app
        .admin_api(
            M::POST,
            "/users",
            Some(&admin),
            Some(json!({"username": "carol", "password": "a long password"})),
        )
        .await;
    assert_eq!(res.status(), 409);
    let res = f
        .app
        .admin_api(
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
    let res = f
        .app
        .admin_api(
            M::POST,
            "/users",
            Some(&admin),
            Some(json!({"username": "dave", "pasword": "typo in the field"})),
        )
        .await;
    assert_eq!(res.status(), 400, "unknown fields are refused");

    let (_, alice_refresh) = f.app.login("alice").await;
    let res = f
        .app
        .admin_api(
            M::POST,
            "/users/alice/password",
            Some(&admin),
            Some(json!({"password": "another long one"})),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["sessions_revoked"], 1);
    assert_eq!(
        f.app.refresh(&alice_refresh).await.status(),
        400,
        "privilege change revokes"
    );

    let res = f
        .app
        .admin_api(M::POST, "/users/carol/totp", Some(&admin), None)
        .await;
    assert_eq!(res.status(), 200);
    assert!(
        res.json::<Value>().await.unwrap()["totp_uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/")
    );

    let res = f
        .app
        .admin_api(M::POST, "/users/carol/disable", Some(&admin), None)
        .await;
    assert_eq!(res.status(), 200);

    // Clients: create (secret once), revoke its tokens, disable.
    let res = f.app.admin_api(M::POST,
        "/clients",
        Some(&admin),
        Some(json!({"client_id": "batch", "confidential": true, "scopes": ["read"], "audiences": [ISSUER]})),
    )
    .await;
    assert_eq!(res.status(), 201);
    let batch: Value = res.json().await.unwrap();
    let secret = batch["client_secret"].as_str().unwrap().to_owned();
    let token = f.app.client_token("batch", &secret).await;
    assert_eq!(
        f.introspect(&token).await["active"],
        false,
        "audience is the issuer, not rs's"
    );
    let res = f
        .app
        .admin_api(M::DELETE, "/clients/batch/tokens", Some(&admin), None)
        .await;
    assert_eq!(res.status(), 200);
    let res = f
        .app
        .admin_api(M::POST, "/clients/batch/disable", Some(&admin), None)
        .await;
    assert_eq!(res.status(), 200);
    let res = f.app.client_credentials("batch", &secret).await;
    assert_eq!(res.status(), 401);
    let res = f
        .app
        .admin_api(
            M::POST,
            "/clients",
            Some(&admin),
            Some(json!({"client_id": "bad/id", "confidential": true})),
        )
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        f.app
            .admin_api(M::DELETE, "/clients/nobody/tokens", Some(&admin), None)
            .await
            .status(),
        404
    );

    // Sessions and single tokens.
    let (access, refresh_token) = f
        .app
        .login_as(Login::new("alice").password("another long one"))
        .await;
    let sid = f.introspect(&access).await["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = f
        .app
        .admin_api(M::DELETE, &format!("/sessions/{sid}"), Some(&admin), None)
        .await;
    assert_eq!(res.status(), 204);
    assert_eq!(f.app.refresh(&refresh_token).await.status(), 400);
    assert_eq!(
        f.app
            .admin_api(M::DELETE, "/sessions/not-a-uuid", Some(&admin), None)
            .await
            .status(),
        404
    );
    let (access, _) = f
        .app
        .login_as(Login::new("alice").password("another long one"))
        .await;
    let jti = f.introspect(&access).await["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        f.app
            .admin_api(M::DELETE, &format!("/tokens/{jti}"), Some(&admin), None)
            .await
            .status(),
        204
    );
    assert_eq!(f.introspect(&access).await["active"], false);

    // Keys.
    let res = f
        .app
        .admin_api(M::POST, "/keys/rotate", Some(&admin), None)
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["state"], "next");

    // Every action is in the audit log with the admin client as actor.
    let res = f
        .app
        .admin_api(M::GET, "/audit?limit=1000", Some(&admin), None)
        .await;
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
    let res = f
        .app
        .admin_api(M::GET, "/audit?after=1&limit=2", Some(&admin), None)
        .await;
    let page: Value = res.json().await.unwrap();
    assert_eq!(page["entries"][0]["seq"], 2);
    assert_eq!(page["next"], 3);
    assert_eq!(
        f.app
            .admin_api(M::GET, "/audit?limit=0", Some(&admin), None)
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
    let admin = f.admin_token().await;
    for spec in [
        json!({"client_id": "console", "confidential": false, "admin": true, "audiences": [ISSUER]}),
        json!({"client_id": "console", "confidential": true, "admin": true, "grants": ["client_credentials", "password"]}),
    ] {
        let res = f
            .app
            .admin_api(M::POST, "/clients", Some(&admin), Some(spec))
            .await;
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
        .add_client(
            ClientSpec::public("console", &["password", "refresh_token"])
                .scopes(&["read", "tessera:admin"])
                .audiences(&[ISSUER])
                .with_admin(),
        )
        .await;
    let console = Login::new("alice").client("console");
    // Asked for, tessera:admin is refused to a user grant.
    let res = f
        .app
        .password_grant(console.clone().param("scope", "tessera:admin"))
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_scope");
    // Not asked for, it is left out.
    let body: Value = f.app.password_grant(console).await.json().await.unwrap();
    assert_eq!(body["scope"], "read", "{body}");
    let user_token = body["access_token"].as_str().unwrap().to_owned();
    for path in ["/keys", "/users/alice/sessions"] {
        assert_eq!(
            f.app
                .admin_api(M::GET, path, Some(&user_token), None)
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
    let res = f
        .app
        .form(
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
        f.app
            .admin_api(M::GET, "/keys", Some(refreshed), None)
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
    let admin = f.admin_token().await;
    let res = f
        .app
        .admin_api(
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
    let admin = f.admin_token().await;
    let res = f
        .app
        .admin_api(M::GET, "/clients/rs", Some(&admin), None)
        .await;
    assert_eq!(res.status(), 200);
    let view: Value = res.json().await.unwrap();
    assert_eq!(view["resource_server"], true);
    assert!(view.get("secret_digest").is_none() && !view.to_string().contains(&f.rs));
    let (access, _) = f.app.login("alice").await;
    assert_eq!(f.introspect(&access).await["active"], true);
    let res = f
        .app
        .admin_api(
            M::PATCH,
            "/clients/rs",
            Some(&admin),
            Some(json!({"resource_server": false})),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["resource_server"], false);
    let res = f.app.introspect_as(("rs", &f.rs), &access).await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "unauthorized_client"
    );
    // Public clients cannot be resource servers; unknown fields and clients are named.
    let res = f
        .app
        .admin_api(
            M::PATCH,
            "/clients/spa",
            Some(&admin),
            Some(json!({"resource_server": true})),
        )
        .await;
    assert_eq!(res.status(), 400);
    let res = f
        .app
        .admin_api(
            M::PATCH,
            "/clients/rs",
            Some(&admin),
            Some(json!({"admin": true})),
        )
        .await;
    assert_eq!(res.status(), 400);
    let res = f
        .app
        .admin_api(M::GET, "/clients/nobody", Some(&admin), None)
        .await;
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
