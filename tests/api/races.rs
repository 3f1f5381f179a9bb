//! Races between credential or revocation changes and requests in flight,
//! over HTTP on both engines (the review's findings 3 and 4).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::admin::{admin_token, client_token};
use crate::helpers::{Engine, on_both_engines};
use crate::revocation::{PASSWORD, fixture, form, introspect, login, refresh};

async fn password_login(f: &crate::revocation::Fixture, password: &str) -> Option<String> {
    let res = form(
        &f.app,
        &f.app.address,
        "/oauth/token",
        &[
            ("grant_type", "password"),
            ("client_id", "spa"),
            ("username", "alice"),
            ("password", password),
        ],
        None,
    )
    .await;
    if res.status() != 200 {
        return None;
    }
    let body: Value = res.json().await.unwrap();
    Some(body["refresh_token"].as_str().unwrap().to_owned())
}

/// The review reproduced 8 parallel logins with the old password and a
/// password change 20 ms later: 6 sessions survived, rotating for 30 days.
/// Now every session whose login checked the old password ends, including
/// those that commit after the change. Several rounds, zero survivors.
async fn a_password_change_ends_logins_in_flight(engine: Engine) {
    let f = fixture(engine).await;
    let admin = admin_token(&f).await;
    let passwords = [PASSWORD, "another horse battery"];
    let user: uuid::Uuid = f
        .app
        .store
        .user_by_username("alice")
        .await
        .unwrap()
        .unwrap()
        .id;
    let mut survivors = 0;
    for round in 0..5 {
        let old = passwords[round % 2];
        let new = passwords[(round + 1) % 2];
        let logins: Vec<_> = (0..8).map(|_| password_login(&f, old)).collect();
        let change = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let res = f
                .app
                .client
                .post(format!("{}/admin/v1/users/alice/password", f.app.address))
                .bearer_auth(&admin)
                .json(&json!({ "password": new }))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
        };
        let (tokens, ()) = tokio::join!(futures_util::future::join_all(logins), change);
        let live = f
            .app
            .store
            .user_sessions(user, chrono::Utc::now().timestamp())
            .await
            .unwrap();
        survivors += live.len();
        for token in tokens.into_iter().flatten() {
            assert_eq!(
                refresh(&f.app, &token).await.status(),
                400,
                "round {round}: a session opened with the old password still rotates"
            );
        }
    }
    assert_eq!(survivors, 0);
    // The new password works.
    assert!(password_login(&f, passwords[1]).await.is_some());
}

/// Sleeps until `ms` milliseconds before the next wall-clock second.
async fn until_just_before_a_second(ms: u64) {
    let into = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_millis() as u64;
    let wait = (1000 + 1000 - ms - into) % 1000;
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

/// "Logout everywhere" racing refreshes across a second boundary: a refresh
/// that started in the next second but committed before the revocation used
/// to mint a token that outlived it (its iat after the cut-off, its session
/// not listed). Every token minted from a session the revocation ended is
/// now refused, and a login after it works at once.
async fn no_token_from_a_revoked_session_survives_logout_everywhere(engine: Engine) {
    let f = fixture(engine).await;
    let admin = admin_token(&f).await;
    for round in 0..4 {
        let mut chains = Vec::new();
        for _ in 0..6 {
            chains.push(login(&f.app, "alice").await.1);
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let rotating: Vec<_> = chains
            .into_iter()
            .map(|mut current| {
                let app = &f.app;
                let stop = stop.clone();
                async move {
                    let mut minted = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        let res = refresh(app, &current).await;
                        if res.status() != 200 {
                            break;
                        }
                        let body: Value = res.json().await.unwrap();
                        current = body["refresh_token"].as_str().unwrap().to_owned();
                        minted.push(body["access_token"].as_str().unwrap().to_owned());
                    }
                    minted
                }
            })
            .collect();
        let revoke = async {
            until_just_before_a_second(4).await;
            let res = f
                .app
                .client
                .delete(format!("{}/admin/v1/users/alice/sessions", f.app.address))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            tokio::time::sleep(Duration::from_millis(50)).await;
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        };
        let (minted, ()) = tokio::join!(futures_util::future::join_all(rotating), revoke);
        let minted: Vec<String> = minted.into_iter().flatten().collect();
        assert!(!minted.is_empty());
        for token in &minted {
            assert_eq!(
                introspect(&f, token).await["active"],
                false,
                "round {round}: a token minted from a revoked session is still active"
            );
        }
        let (fresh, _) = login(&f.app, "alice").await;
        assert_eq!(
            introspect(&f, &fresh).await["active"],
            true,
            "round {round}"
        );
    }
}

/// Revoking a client's tokens: tokens issued before are refused, a token
/// requested right after (in the same second) is not.
async fn tokens_issued_after_a_client_revocation_are_not_refused(engine: Engine) {
    let f = fixture(engine).await;
    let admin = admin_token(&f).await;
    for round in 0..3 {
        let before = client_token(&f, "rs", &f.rs).await;
        let res = f
            .app
            .client
            .delete(format!("{}/admin/v1/clients/rs/tokens", f.app.address))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let after = client_token(&f, "rs", &f.rs).await;
        assert_eq!(
            introspect(&f, &before).await["active"],
            false,
            "round {round}"
        );
        assert_eq!(
            introspect(&f, &after).await["active"],
            true,
            "round {round}"
        );
    }
}

on_both_engines!(
    a_password_change_ends_logins_in_flight,
    no_token_from_a_revoked_session_survives_logout_everywhere,
    tokens_issued_after_a_client_revocation_are_not_refused,
);
