//! `POST /oauth/token`: client authentication, client_credentials, and the
//! RFC 6749 error for every bad request, over HTTP on both engines.

use serde_json::Value;
use tessera::keys::master::MasterKey;
use tessera::store::BindingPolicy;
use tessera::verify::Verifier;

use crate::helpers::{
    AUD, ClientSpec, Engine, ISSUER, PASSWORD, TestApp, on_both_engines, spawn_app,
};

/// A verifier for `AUD` holding the app's current JWKS.
async fn app_verifier(app: &TestApp) -> Verifier {
    let jwks = app
        .get("/.well-known/jwks.json")
        .await
        .text()
        .await
        .unwrap();
    Verifier::builder(ISSUER, AUD)
        .static_jwks(jwks)
        .build()
        .unwrap()
}

/// The clients of these tests: scopes `read` and `write`, two audiences.
fn client(id: &str, confidential: bool, grants: &[&str]) -> ClientSpec {
    let spec = if confidential {
        ClientSpec::confidential(id, grants)
    } else {
        ClientSpec::public(id, grants)
    };
    spec.scopes(&["read", "write"])
        .audiences(&[AUD, "https://other.example"])
}

/// `POST /oauth/token` with `form`, and Basic credentials if given.
async fn post(
    app: &TestApp,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> reqwest::Response {
    app.form("/oauth/token", form, basic).await
}

async fn error_of(res: reqwest::Response, status: u16) -> (String, String) {
    assert_eq!(res.status(), status);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(res.headers()["pragma"], "no-cache");
    let body: Value = res.json().await.unwrap();
    (
        body["error"].as_str().unwrap().to_owned(),
        body["error_description"].as_str().unwrap_or("").to_owned(),
    )
}

async fn client_credentials_issues_a_verifiable_token(engine: Engine) {
    let app = spawn_app(engine).await;
    let secret = app
        .add_client(client("backend", true, &["client_credentials"]))
        .await;

    let res = post(
        &app,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "read"),
            ("audience", AUD),
        ],
        Some(("backend", &secret)),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(res.headers()["pragma"], "no-cache");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "read");
    assert!(
        body.get("refresh_token").is_none(),
        "no refresh token for client_credentials"
    );

    let verifier = app_verifier(&app).await;
    let claims = verifier
        .verify(body["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(claims.sub, "backend");
    assert_eq!(claims.client_id, "backend");
    assert_eq!(claims.scope, "read");
    assert_eq!(claims.aud.as_slice(), [AUD]);
    assert!(claims.sid.is_none());

    // client_secret_post, every allowed scope and audience by default.
    let res = post(
        &app,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "backend"),
            ("client_secret", &secret),
        ],
        None,
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["scope"], "read write");
}

async fn client_authentication_failures(engine: Engine) {
    let app = spawn_app(engine).await;
    let secret = app
        .add_client(client("backend", true, &["client_credentials"]))
        .await;
    app.add_client(client("spa", false, &["client_credentials", "password"]))
        .await;
    let cc = ("grant_type", "client_credentials");

    let res = post(&app, &[cc], Some(("backend", "wrong"))).await;
    assert_eq!(
        res.headers()["www-authenticate"],
        "Basic realm=\"tessera\", charset=\"UTF-8\""
    );
    assert_eq!(error_of(res, 401).await.0, "invalid_client");
    assert_eq!(
        error_of(post(&app, &[cc], Some(("nobody", &secret))).await, 401)
            .await
            .0,
        "invalid_client"
    );
    assert_eq!(
        error_of(post(&app, &[cc, ("client_id", "backend")], None).await, 401)
            .await
            .0,
        "invalid_client",
        "secret required"
    );
    let both = post(
        &app,
        &[cc, ("client_secret", &secret)],
        Some(("backend", &secret)),
    )
    .await;
    assert_eq!(error_of(both, 400).await.0, "invalid_request");
    // RFC 6749 §5.2: no client authentication at all is invalid_client,
    // without a Basic challenge (Basic was not tried).
    let none = post(&app, &[cc], None).await;
    assert!(none.headers().get("www-authenticate").is_none());
    assert_eq!(
        error_of(none, 401).await.0,
        "invalid_client",
        "no client at all"
    );
    // A public client cannot use client_credentials, even if registered with it.
    assert_eq!(
        error_of(post(&app, &[cc, ("client_id", "spa")], None).await, 400)
            .await
            .0,
        "unauthorized_client"
    );
    // A public client sending a secret fails authentication.
    let res = post(
        &app,
        &[cc, ("client_id", "spa"), ("client_secret", "x")],
        None,
    )
    .await;
    assert_eq!(error_of(res, 401).await.0, "invalid_client");
}

async fn grant_scope_and_audience_errors(engine: Engine) {
    let app = spawn_app(engine).await;
    let secret = app
        .add_client(client("backend", true, &["client_credentials"]))
        .await;
    let auth = Some(("backend", secret.as_str()));
    let cc = ("grant_type", "client_credentials");
    assert_eq!(
        error_of(post(&app, &[], auth).await, 400).await.0,
        "invalid_request"
    );
    assert_eq!(
        error_of(post(&app, &[("grant_type", "implicit")], auth).await, 400)
            .await
            .0,
        "unsupported_grant_type"
    );
    assert_eq!(
        error_of(post(&app, &[("grant_type", "password")], auth).await, 400)
            .await
            .0,
        "unauthorized_client"
    );
    let (code, description) =
        error_of(post(&app, &[cc, ("scope", "read admin")], auth).await, 400).await;
    assert_eq!(code, "invalid_scope");
    assert!(description.contains("admin"), "{description}");
    assert_eq!(
        error_of(
            post(&app, &[cc, ("audience", "https://evil.example")], auth).await,
            400
        )
        .await
        .0,
        "invalid_target"
    );
}

async fn malformed_requests_get_clear_4xx(engine: Engine) {
    let app = spawn_app(engine).await;
    let url = format!("{}/oauth/token", app.address);
    let form = "application/x-www-form-urlencoded";
    let send = |ct: &'static str, body: Vec<u8>| {
        app.client
            .post(&url)
            .header("content-type", ct)
            .body(body)
            .send()
    };

    assert_eq!(
        error_of(send("application/json", b"{}".to_vec()).await.unwrap(), 400)
            .await
            .0,
        "invalid_request"
    );
    let (_, d) = error_of(
        send(form, b"grant_type=a&grant_type=b".to_vec())
            .await
            .unwrap(),
        400,
    )
    .await;
    assert!(d.contains("repeated"), "{d}");
    assert_eq!(
        error_of(
            send(form, b"grant_type=%FF%FE".to_vec()).await.unwrap(),
            400
        )
        .await
        .0,
        "invalid_request"
    );
    assert_eq!(
        error_of(
            send(form, b"grant_type=client_credentials%00".to_vec())
                .await
                .unwrap(),
            400
        )
        .await
        .0,
        "invalid_request"
    );
    let res = send(form, vec![b'a'; 64 * 1024]).await.unwrap();
    assert_eq!(res.status(), 413);
    let res = app.client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "POST");
    for auth in ["Basic !!!", "Basic", "Basic Zm9v", "Bearer abc"] {
        let res = app
            .client
            .post(&url)
            .header("content-type", form)
            .header("authorization", auth)
            .body("grant_type=client_credentials")
            .send()
            .await
            .unwrap();
        assert!(res.status().is_client_error(), "{auth}: {}", res.status());
    }
    // Nothing above hurt the server.
    assert_eq!(app.get("/readyz").await.status(), 200);
}

/// A user `alice` (password [`PASSWORD`]) and a public client `spa`.
async fn user_and_spa(app: &TestApp) -> String {
    let id = app.add_user("alice").await;
    app.add_client(client("spa", false, &["password", "refresh_token"]))
        .await;
    id.to_string()
}

fn login_form(password: &str) -> Vec<(&str, &str)> {
    vec![
        ("grant_type", "password"),
        ("client_id", "spa"),
        ("username", "alice"),
        ("password", password),
        ("audience", AUD),
    ]
}

async fn ok_json(res: reqwest::Response) -> Value {
    let status = res.status();
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

fn refresh_form(token: &str) -> Vec<(&str, &str)> {
    vec![
        ("grant_type", "refresh_token"),
        ("client_id", "spa"),
        ("refresh_token", token),
        ("audience", AUD),
    ]
}

async fn password_login_then_refresh_chain(engine: Engine) {
    let app = spawn_app(engine).await;
    let user_id = user_and_spa(&app).await;
    let verifier = app_verifier(&app).await;

    let login = ok_json(post(&app, &login_form(PASSWORD), None).await).await;
    let claims = verifier
        .verify(login["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(claims.sub, user_id);
    assert_eq!(claims.client_id, "spa");
    let sid = claims.sid.clone().expect("user tokens carry sid");
    let mut refresh = login["refresh_token"].as_str().unwrap().to_owned();
    // `sid.generation.secret‖tag`: it names its session and generation.
    assert!(refresh.starts_with(&format!("{sid}.0.")), "{refresh}");
    assert_eq!(refresh.len(), 36 + 3 + 43);

    for _ in 0..3 {
        let next = ok_json(post(&app, &refresh_form(&refresh), None).await).await;
        let c = verifier
            .verify(next["access_token"].as_str().unwrap())
            .await
            .unwrap();
        assert_eq!(c.sid.as_deref(), Some(sid.as_str()), "same session");
        assert_ne!(c.jti, claims.jti);
        let new = next["refresh_token"].as_str().unwrap().to_owned();
        assert_ne!(new, refresh, "rotated");
        refresh = new;
    }
    // Narrowing scope on refresh works; widening does not.
    let narrow = ok_json(
        post(
            &app,
            &[refresh_form(&refresh), vec![("scope", "read")]].concat(),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(narrow["scope"], "read");
    let refresh = narrow["refresh_token"].as_str().unwrap();
    let (code, _) = error_of(
        post(
            &app,
            &[refresh_form(refresh), vec![("scope", "read admin")]].concat(),
            None,
        )
        .await,
        400,
    )
    .await;
    assert_eq!(code, "invalid_scope");
}

async fn replayed_refresh_token_kills_the_session(engine: Engine) {
    let app = spawn_app(engine).await;
    user_and_spa(&app).await;
    let login = ok_json(post(&app, &login_form(PASSWORD), None).await).await;
    let first = login["refresh_token"].as_str().unwrap().to_owned();
    let second = ok_json(post(&app, &refresh_form(&first), None).await).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let (code, description) = error_of(post(&app, &refresh_form(&first), None).await, 400).await;
    assert_eq!(code, "invalid_grant");
    assert!(description.contains("already used"), "{description}");
    // The child token of the replayed one is revoked with the session.
    assert_eq!(
        error_of(post(&app, &refresh_form(&second), None).await, 400)
            .await
            .0,
        "invalid_grant"
    );
}

async fn concurrent_refreshes_over_http_yield_one_success(engine: Engine) {
    let app = spawn_app(engine).await;
    user_and_spa(&app).await;
    let login = ok_json(post(&app, &login_form(PASSWORD), None).await).await;
    let token = login["refresh_token"].as_str().unwrap().to_owned();
    let form = refresh_form(&token);
    let results = futures_util::future::join_all((0..32).map(|_| post(&app, &form, None))).await;
    let statuses: Vec<u16> = results.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 400),
        "{statuses:?}"
    );
}

async fn bad_logins_and_refresh_input(engine: Engine) {
    let app = spawn_app(engine).await;
    user_and_spa(&app).await;
    let (code, wrong) = error_of(post(&app, &login_form("wrong password"), None).await, 400).await;
    assert_eq!(code, "invalid_grant");
    let mut unknown = login_form(PASSWORD);
    unknown[2] = ("username", "mallory");
    let (code, nobody) = error_of(post(&app, &unknown, None).await, 400).await;
    assert_eq!(code, "invalid_grant");
    assert_eq!(wrong, nobody, "no hint whether the user exists");
    let mut weird = login_form("x");
    weird[2] = ("username", "аdmin");
    assert_eq!(
        error_of(post(&app, &weird, None).await, 400).await.0,
        "invalid_grant"
    );
    let missing = [
        ("grant_type", "password"),
        ("client_id", "spa"),
        ("username", "alice"),
    ];
    assert_eq!(
        error_of(post(&app, &missing, None).await, 400).await.0,
        "invalid_request"
    );
    for garbage in ["x", &"A".repeat(43), &"!".repeat(43), &"A".repeat(5000)] {
        assert_eq!(
            error_of(post(&app, &refresh_form(garbage), None).await, 400)
                .await
                .0,
            "invalid_grant",
            "{garbage}"
        );
    }
    let missing = [("grant_type", "refresh_token"), ("client_id", "spa")];
    assert_eq!(
        error_of(post(&app, &missing, None).await, 400).await.0,
        "invalid_request"
    );

    // A disabled user can neither log in nor refresh.
    let login = ok_json(post(&app, &login_form(PASSWORD), None).await).await;
    app.store.set_user_disabled("alice", true, 1).await.unwrap();
    assert_eq!(
        error_of(post(&app, &login_form(PASSWORD), None).await, 400)
            .await
            .0,
        "invalid_grant"
    );
    let refresh = login["refresh_token"].as_str().unwrap();
    assert_eq!(
        error_of(post(&app, &refresh_form(refresh), None).await, 400)
            .await
            .0,
        "invalid_grant"
    );
}

async fn totp_users_need_a_fresh_code(engine: Engine) {
    let app = spawn_app(engine).await;
    let master = MasterKey::from_base64(app.master_key()).unwrap();
    let id = uuid::Uuid::new_v4();
    let secret = tessera::auth::totp::new_secret();
    let user = tessera::store::NewUser {
        id,
        username: "alice".into(),
        password_hash: tessera::auth::password::hash(PASSWORD).unwrap(),
        totp_secret: Some(master.seal(&secret, &tessera::auth::totp::seal_context(id))),
    };
    app.store.create_user(&user, 0).await.unwrap();
    app.add_client(client("spa", false, &["password", "refresh_token"]))
        .await;

    // Without a code, and with a wrong password, the errors differ only after the password.
    let (code, d) = error_of(post(&app, &login_form(PASSWORD), None).await, 400).await;
    assert_eq!(code, "invalid_grant");
    assert!(d.contains("one-time password is required"), "{d}");
    let (_, d) = error_of(post(&app, &login_form("wrong password"), None).await, 400).await;
    assert!(
        !d.contains("one-time"),
        "no hint about the second factor before the password: {d}"
    );

    let now = chrono::Utc::now().timestamp();
    let otp = tessera::auth::totp::code_at(&secret, now);
    let wrong = if otp == "000000" { "111111" } else { "000000" };
    let with_wrong = [login_form(PASSWORD), vec![("otp", wrong)]].concat();
    let with_right = [login_form(PASSWORD), vec![("otp", otp.as_str())]].concat();
    assert_eq!(
        error_of(post(&app, &with_wrong, None).await, 400).await.0,
        "invalid_grant"
    );
    let ok = ok_json(post(&app, &with_right, None).await).await;
    assert!(ok["refresh_token"].is_string());
    // The same code cannot be used twice.
    let (code, d) = error_of(post(&app, &with_right, None).await, 400).await;
    assert_eq!(code, "invalid_grant");
    assert!(d.contains("already used"), "{d}");
}

async fn a_changed_browser_revokes_when_the_client_says_so(engine: Engine) {
    let app = spawn_app(engine).await;
    user_and_spa(&app).await;
    app.add_client(
        ClientSpec::public("strict", &["password", "refresh_token"])
            .on_binding_change(BindingPolicy::Revoke),
    )
    .await;

    let send = async |ua: &str, form: &[(&str, &str)]| {
        app.form_request("/oauth/token", form)
            .header("user-agent", ua)
            .send()
            .await
    };
    for (client, expect_revoke) in [("spa", false), ("strict", true)] {
        let mut login = login_form(PASSWORD);
        login[1] = ("client_id", client);
        let res = send("Browser A", &login).await;
        let body = ok_json(res.unwrap()).await;
        let rt = body["refresh_token"].as_str().unwrap().to_owned();
        let mut form = refresh_form(&rt);
        form[1] = ("client_id", client);
        let res = send("Browser B", &form).await;
        let res = res.unwrap();
        if expect_revoke {
            let (code, d) = error_of(res, 400).await;
            assert_eq!(code, "invalid_grant");
            assert!(d.contains("different browser"), "{d}");
        } else {
            let next = ok_json(res).await;
            assert!(
                next["refresh_token"].is_string(),
                "audit-only policy keeps the session"
            );
        }
    }
    // Both changes are anomaly events in the audit log, with what changed.
    let rows = app.store.audit_page(0, 1000).await.unwrap();
    let changes: Vec<_> = rows
        .iter()
        .filter(|r| r.action == "session_binding_changed")
        .collect();
    assert_eq!(changes.len(), 2);
    for (row, revoked) in changes.iter().zip([false, true]) {
        let detail: Value = serde_json::from_str(&row.detail).unwrap();
        assert_eq!(detail["user_agent_changed"], true);
        assert_eq!(detail["network_changed"], false);
        assert_eq!(detail["session_revoked"], revoked);
    }
}

on_both_engines!(
    a_changed_browser_revokes_when_the_client_says_so,
    totp_users_need_a_fresh_code,
    password_login_then_refresh_chain,
    replayed_refresh_token_kills_the_session,
    concurrent_refreshes_over_http_yield_one_success,
    bad_logins_and_refresh_input,
    client_credentials_issues_a_verifiable_token,
    client_authentication_failures,
    grant_scope_and_audience_errors,
    malformed_requests_get_clear_4xx,
);
