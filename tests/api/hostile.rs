//! Hostile load, bounded: each test drives the real server on loopback with
//! an attack from the denial-of-service review (issue #23) and checks the
//! bound that now holds. Full-size figures are `scripts/hostile.sh`'s.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{
    Engine, Login, PASSWORD, TestApp, fixture_with, on_both_engines, spawn_app_with,
};

fn addr(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// A password login of `user` from the network of `from` (the app trusts
/// the loopback proxy): the status and how long the answer took.
async fn password_login(app: &TestApp, user: &str, password: &str, from: &str) -> (u16, Duration) {
    let started = Instant::now();
    let login = Login::new(user).password(password).forwarded_for(from);
    let res = app.password_grant(login).await;
    let status = res.status().as_u16();
    let _ = res.bytes().await;
    (status, started.elapsed())
}

/// Many bad logins from many addresses queue for Argon2: a legitimate login
/// from elsewhere gets its answer (200, or 503 at once) within the queue
/// deadline plus its own check, never behind an unbounded queue. Logins the
/// gate turns away were not checked, so they count against no account.
async fn legitimate_logins_are_answered_under_a_login_flood(engine: Engine) {
    let f = fixture_with(
        engine,
        &[
            ("TESSERA_TRUSTED_PROXIES", "127.0.0.1"),
            ("TESSERA_LOGIN_QUEUE_LIMIT", "8"),
            ("TESSERA_LOGIN_QUEUE_TIMEOUT", "1"),
        ],
    )
    .await;
    let app = &f.app;
    let stop = Instant::now() + Duration::from_secs(6);
    let attackers: Vec<_> = (0..60)
        .map(|i| async move {
            let mut statuses = Vec::new();
            let mut n = 0;
            while Instant::now() < stop {
                let from = format!("10.0.{}.{}", i / 200, i % 200 + 1);
                let user = format!("nobody-{i}-{n}");
                statuses.push(password_login(app, &user, "wrong", &from).await.0);
                n += 1;
            }
            statuses
        })
        .collect();
    let legit = async {
        // Not a wait for anything: the legitimate logins start once the
        // flood is under way, and come at a user's pace.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut answers = Vec::new();
        while Instant::now() < stop {
            answers.push(password_login(app, "alice", PASSWORD, "192.0.2.1").await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        answers
    };
    let (attack, answers) = tokio::join!(futures_util::future::join_all(attackers), legit);
    let attack: Vec<u16> = attack.into_iter().flatten().collect();
    assert!(
        attack.contains(&503),
        "the queue bound was reached: {attack:?}"
    );
    assert!(!attack.iter().any(|s| *s >= 500 && *s != 503), "{attack:?}");
    for (status, took) in &answers {
        assert!([200, 503].contains(status), "{status}");
        assert!(
            *took < Duration::from_millis(2500),
            "a legitimate login took {took:?}"
        );
    }
    assert!(answers.iter().any(|(s, _)| *s == 200), "{answers:?}");
    // Turned away, not checked: a refused login counts against no account
    // (alice, whose logins were refused now and then, is not locked).
    let (status, _) = password_login(app, "alice", PASSWORD, "192.0.2.2").await;
    assert_eq!(status, 200);
}

/// One network gets at most `login_network_concurrency` logins in progress
/// at once; the rest are refused at once with 429.
async fn one_network_cannot_fill_the_login_queue(engine: Engine) {
    let f = fixture_with(
        engine,
        &[
            ("TESSERA_TRUSTED_PROXIES", "127.0.0.1"),
            ("TESSERA_LOGIN_NETWORK_CONCURRENCY", "2"),
        ],
    )
    .await;
    let app = &f.app;
    let requests = (0..20).map(|i| async move {
        password_login(app, &format!("u{i}"), "wrong", "203.0.113.5")
            .await
            .0
    });
    let statuses = futures_util::future::join_all(requests).await;
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!(refused > 0, "{statuses:?}");
    assert_eq!(refused + statuses.iter().filter(|s| **s == 400).count(), 20);
    // Another network is unaffected meanwhile.
    assert_eq!(
        password_login(app, "alice", PASSWORD, "198.51.100.1")
            .await
            .0,
        200
    );
}

/// The second request on a keep-alive connection used to have no head
/// deadline at all: half a head held the connection forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_second_head_on_a_keep_alive_connection_is_closed() {
    let app = spawn_app_with(
        Engine::Sqlite,
        &[
            ("TESSERA_CLIENT_REQUEST_TIMEOUT", "1"),
            ("TESSERA_KEEP_ALIVE", "1"),
        ],
    )
    .await;
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(addr(&app)).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        s.write_all(b"GET /healthz HTTP/1.1\r\nHo").await.unwrap();
        stalled.push(s);
    }
    let started = Instant::now();
    for mut s in stalled {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
            .await
            .expect("the stalled connection is closed")
            .ok();
    }
    // keep_alive + client_request_timeout + the watchdog's second.
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(app.get("/healthz").await.status(), 200);
}

/// Connections beyond `max_connections` wait in the listen queue instead of
/// taking descriptors (and are served once a place frees).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_budget_wait_their_turn() {
    let app = spawn_app_with(
        Engine::Sqlite,
        &[
            ("TESSERA_MAX_CONNECTIONS", "2"),
            ("TESSERA_CLIENT_REQUEST_TIMEOUT", "3"),
        ],
    )
    .await;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    // Each worker takes ceil(2 / workers) connections: fill them all.
    let mut held = Vec::new();
    for _ in 0..2usize.div_ceil(workers) * workers {
        let mut s = tokio::net::TcpStream::connect(addr(&app)).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        held.push(s);
    }
    // No signal says the held connections were accepted: give the workers
    // a moment. Too short a wait can only fail the test, never pass it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting = reqwest::Client::new()
        .get(format!("{}/healthz", app.address))
        .timeout(Duration::from_millis(700))
        .send()
        .await;
    assert!(waiting.is_err(), "served beyond the budget");
    drop(held);
    let res = reqwest::get(format!("{}/healthz", app.address))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// A client minting and revoking its own tokens one by one: rate-limited,
/// and past 64 relevant entries of one owner they are folded into one
/// entry, so the list and the feed stay bounded; every token stays revoked.
async fn revoking_one_by_one_is_bounded(engine: Engine) {
    let f = fixture_with(engine, &[("TESSERA_REVOCATION_RATE_LIMIT", "off")]).await;
    let mut tokens = Vec::new();
    for _ in 0..70 {
        let token = f.app.client_token("rs", &f.rs).await;
        let res = f.app.revoke(&token, "rs", Some(&f.rs)).await;
        assert_eq!(res.status(), 200);
        tokens.push(token);
    }
    for t in &tokens {
        assert_eq!(f.introspect(t).await["active"], false);
    }
    let now = chrono::Utc::now().timestamp();
    let entries = f.app.store.revocations_since(0, now, 1000).await.unwrap();
    let jti = entries
        .iter()
        .filter(|e| e.kind == tessera::store::RevocationKind::Jti)
        .count();
    assert!(jti <= 64, "{jti} jti entries");
    assert!(
        entries
            .iter()
            .any(|e| e.kind == tessera::store::RevocationKind::Client && e.value == "rs")
    );
    // A token issued after the fold works.
    let fresh = f.app.client_token("rs", &f.rs).await;
    assert_eq!(f.introspect(&fresh).await["active"], true);

    // A session's access tokens revoked one by one end the session past 64.
    let (mut access, mut refresh) = f.app.login("alice").await;
    for _ in 0..65 {
        let res = f.app.revoke(&access, "spa", None).await;
        assert_eq!(res.status(), 200);
        let res = f.app.refresh(&refresh).await;
        if res.status() != 200 {
            break;
        }
        let body: Value = res.json().await.unwrap();
        access = body["access_token"].as_str().unwrap().to_owned();
        refresh = body["refresh_token"].as_str().unwrap().to_owned();
    }
    assert_eq!(
        f.app.refresh(&refresh).await.status(),
        400,
        "the session was ended"
    );
}

/// `/oauth/revoke` and the feed have per-client budgets.
async fn revocation_and_the_feed_are_rate_limited(engine: Engine) {
    let f = fixture_with(
        engine,
        &[
            ("TESSERA_REVOCATION_RATE_LIMIT", "3/m"),
            ("TESSERA_FEED_RATE_LIMIT", "2/m"),
        ],
    )
    .await;
    let revoke = || f.app.revoke("x", "rs", Some(&f.rs));
    for _ in 0..3 {
        assert_eq!(revoke().await.status(), 200);
    }
    assert_eq!(revoke().await.status(), 429);
    for _ in 0..2 {
        assert_eq!(f.feed("").await.status(), 200);
    }
    let res = f.feed("").await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
}

/// A network that reaches its failure cap writes one summary audit row;
/// the refusals after it write nothing (logins and client authentications
/// alike), and failed-login counters are bounded by the same cap.
async fn a_capped_network_writes_one_summary_row(engine: Engine) {
    let f = fixture_with(
        engine,
        &[
            ("TESSERA_TRUSTED_PROXIES", "127.0.0.1"),
            ("TESSERA_LOGIN_NETWORK_FAILURE_LIMIT", "5"),
            ("TESSERA_LOGIN_FAILURE_WINDOW", "1h"),
        ],
    )
    .await;
    for n in 0..40 {
        let (status, _) =
            password_login(&f.app, &format!("name-{n}"), "wrong", "203.0.113.50").await;
        assert_eq!(status, if n < 5 { 400 } else { 429 }, "attempt {n}");
    }
    f.audit_written().await;
    let rows = f.app.store.audit_page(0, 1000).await.unwrap();
    let count = |action: &str| rows.iter().filter(|r| r.action == action).count();
    assert_eq!(count("login_failed"), 5);
    assert_eq!(count("network_failure_cap_reached"), 1);
}

/// A 16 KB form of thousands of parameters is refused before it is parsed
/// further, at the token endpoint and at the login page (query and form).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_of_many_parameters_are_refused() {
    let app = spawn_app_with(Engine::Sqlite, &[]).await;
    let body: String = (0..2000).map(|i| format!("p{i}=1&")).collect();
    assert!(body.len() < 16 * 1024);
    let res = app
        .client
        .post(format!("{}/oauth/token", app.address))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("too many parameters"),
        "{body}"
    );
    // The login page: an 8 KB query or form of a thousand parameters.
    let many: String = (0..1000).map(|i| format!("p{i}=1&")).collect();
    let many = &many[..many.len().min(8000)];
    let res = app
        .client
        .get(format!("{}/oauth/authorize?{many}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("too many parameters"));
    let res = app
        .client
        .post(format!("{}/oauth/authorize", app.address))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(many.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("too many parameters"));
}

on_both_engines!(
    legitimate_logins_are_answered_under_a_login_flood,
    one_network_cannot_fill_the_login_queue,
    revoking_one_by_one_is_bounded,
    revocation_and_the_feed_are_rate_limited,
    a_capped_network_writes_one_summary_row,
);
