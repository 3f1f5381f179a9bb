//! Races between credential or revocation changes and requests in flight,
//! over HTTP on both engines (the review's findings 3 and 4).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Engine, Fixture, Login, PASSWORD, fixture, fixture_with, on_both_engines};

/// A password login of `alice`: the refresh token, if it succeeded.
async fn password_login(f: &Fixture, password: &str) -> Option<String> {
    let res = f
        .app
        .password_grant(Login::new("alice").password(password))
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
    // Logins that check the old password after the change fail and count:
    // on a slow machine most of them do, and the default limits would lock
    // alice out before the last assertion. Lockout is not under test here.
    let f = fixture_with(
        engine,
        &[
            ("TESSERA_LOGIN_FAILURE_LIMIT", "1000"),
            ("TESSERA_LOGIN_NETWORK_FAILURE_LIMIT", "1000"),
        ],
    )
    .await;
    let admin = f.admin_token().await;
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
            // The race under test: the change lands while the logins run.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let res = f
                .app
                .admin_api(
                    Method::POST,
                    "/users/alice/password",
                    Some(&admin),
                    Some(json!({ "password": new })),
                )
                .await;
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
                f.app.refresh(&token).await.status(),
                400,
                "round {round}: a session opened with the old password still rotates"
            );
        }
    }
    assert_eq!(survivors, 0);
    // The new password works.
    assert!(password_login(&f, passwords[1]).await.is_some());
}

/// Sleeps until `ms` milliseconds before the next wall-clock second: the
/// race under test crosses a second boundary of the system clock, which the
/// store reads for revocation cut-offs at commit (no injected clock does).
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
    let admin = f.admin_token().await;
    for round in 0..4 {
        let mut chains = Vec::new();
        for _ in 0..6 {
            chains.push(f.app.login("alice").await.1);
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
                        let res = app.refresh(&current).await;
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
                .admin_api(Method::DELETE, "/users/alice/sessions", Some(&admin), None)
                .await;
            assert_eq!(res.status(), 200);
            // Refreshes keep racing the revocation for a while after it.
            tokio::time::sleep(Duration::from_millis(50)).await;
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        };
        let (minted, ()) = tokio::join!(futures_util::future::join_all(rotating), revoke);
        let minted: Vec<String> = minted.into_iter().flatten().collect();
        assert!(!minted.is_empty());
        for token in &minted {
            assert_eq!(
                f.introspect(token).await["active"],
                false,
                "round {round}: a token minted from a revoked session is still active"
            );
        }
        let (fresh, _) = f.app.login("alice").await;
        assert_eq!(f.introspect(&fresh).await["active"], true, "round {round}");
    }
}

/// Revoking a client's tokens: tokens issued before are refused, a token
/// requested right after (in the same second) is not.
async fn tokens_issued_after_a_client_revocation_are_not_refused(engine: Engine) {
    let f = fixture(engine).await;
    let admin = f.admin_token().await;
    for round in 0..3 {
        let before = f.app.client_token("rs", &f.rs).await;
        let res = f
            .app
            .admin_api(Method::DELETE, "/clients/rs/tokens", Some(&admin), None)
            .await;
        assert_eq!(res.status(), 200);
        let after = f.app.client_token("rs", &f.rs).await;
        assert_eq!(
            f.introspect(&before).await["active"],
            false,
            "round {round}"
        );
        assert_eq!(f.introspect(&after).await["active"], true, "round {round}");
    }
}

on_both_engines!(
    a_password_change_ends_logins_in_flight,
    no_token_from_a_revoked_session_survives_logout_everywhere,
    tokens_issued_after_a_client_revocation_are_not_refused,
);
