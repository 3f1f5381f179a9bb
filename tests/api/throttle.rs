//! Failed-login limits over HTTP on both engines: lockout with back-off per
//! account (known or not), a cap per network, shared by every instance.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Engine, TestApp, on_both_engines, spawn_app_with, spawn_peer};
use crate::revocation::{PASSWORD, add_user};

async fn app(engine: Engine, extra: &[(&str, &str)]) -> TestApp {
    let app = spawn_app_with(engine, extra).await;
    app.store
        .create_client(
            &tessera::store::NewClient {
                id: "spa".into(),
                secret_digest: None,
                grant_types: vec!["password".into()],
                scopes: vec!["read".into()],
                audiences: vec!["https://api.example".into()],
                origins: vec![],
                cookie: false,
                admin: false,
                resource_server: false,
                on_binding_change: "audit".into(),
            },
            0,
        )
        .await
        .unwrap();
    add_user(&app, "alice").await;
    app
}

async fn login(base: &str, user: &str, password: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/oauth/token"))
        .form(&[
            ("grant_type", "password"),
            ("client_id", "spa"),
            ("username", user),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
}

async fn refused(res: reqwest::Response) -> (u64, String) {
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "too_many_requests");
    (
        retry,
        body["error_description"].as_str().unwrap().to_owned(),
    )
}

async fn failed_logins_lock_the_account_with_back_off(engine: Engine) {
    let app = app(engine, &[]).await;
    let peer = spawn_peer(&app).await;
    for _ in 0..5 {
        assert_eq!(
            login(&app.address, "alice", "guess-7f3a").await.status(),
            400
        );
    }
    // Locked: even the right password is refused, and so is a wrong one
    // (without extending the lock).
    let (retry, description) = refused(login(&app.address, "alice", PASSWORD).await).await;
    assert!(description.contains("this account"), "{description}");
    refused(login(&app.address, "alice", "guess-7f3a").await).await;
    // Another instance sees the same count.
    refused(login(&peer.address, "alice", PASSWORD).await).await;
    // Other accounts are unaffected.
    add_user(&app, "bob").await;
    assert_eq!(login(&app.address, "bob", PASSWORD).await.status(), 200);
    // After the lock, one more failure doubles it.
    tokio::time::sleep(Duration::from_secs(retry) + Duration::from_millis(100)).await;
    assert_eq!(
        login(&app.address, "alice", "guess-8b2c").await.status(),
        400
    );
    let (longer, _) = refused(login(&app.address, "alice", PASSWORD).await).await;
    assert!(longer > retry, "{longer} s after {retry} s");
    let retry = longer;
    tokio::time::sleep(Duration::from_secs(retry) + Duration::from_millis(100)).await;
    // The right password after the lock works and clears the count.
    assert_eq!(login(&app.address, "alice", PASSWORD).await.status(), 200);
    assert_eq!(
        login(&app.address, "alice", "guess-9d1e").await.status(),
        400
    );
    assert_eq!(login(&app.address, "alice", PASSWORD).await.status(), 200);
    // The lockout is audited, once.
    let rows = app.store.audit_page(0, 1000).await.unwrap();
    let locks: Vec<_> = rows
        .iter()
        .filter(|r| r.action == "account_locked")
        .collect();
    assert_eq!(locks.len(), 1);
    // No trace of the typed name or passwords in the counters' table.
    for r in &rows {
        let text = format!("{r:?}");
        assert!(!text.contains("guess-7f3a") && !text.contains(PASSWORD));
    }
}

async fn unknown_accounts_lock_the_same_way(engine: Engine) {
    let app = app(engine, &[]).await;
    for _ in 0..5 {
        assert_eq!(login(&app.address, "nobody", "guess").await.status(), 400);
    }
    refused(login(&app.address, "nobody", "guess").await).await;
}

async fn a_guessing_network_is_capped(engine: Engine) {
    let app = app(
        engine,
        &[
            ("TESSERA_LOGIN_NETWORK_FAILURE_LIMIT", "3"),
            ("TESSERA_LOGIN_FAILURE_WINDOW", "1h"),
        ],
    )
    .await;
    for user in ["u1", "u2", "u3"] {
        assert_eq!(login(&app.address, user, "guess").await.status(), 400);
    }
    let (retry, description) = refused(login(&app.address, "alice", PASSWORD).await).await;
    assert!(description.contains("this network"), "{description}");
    assert!(retry > 3000, "until the window ends: {retry}");
}

on_both_engines!(
    failed_logins_lock_the_account_with_back_off,
    unknown_accounts_lock_the_same_way,
    a_guessing_network_is_capped,
);
