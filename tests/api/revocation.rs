//! Revocation everywhere, over HTTP on both engines: RFC 7009 revoke,
//! RFC 7662 introspection, logout, the feed, the `verify` library polling
//! it, and two instances sharing one database.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use tessera::verify::{Verifier, VerifyError};

use crate::helpers::{
    AUD, ClientSpec, Engine, ISSUER, PASSWORD, eventually, fixture, on_both_engines, spawn_peer,
};

async fn introspection_reports_live_tokens_and_nothing_else(engine: Engine) {
    let f = fixture(engine).await;
    let (access, refresh_token) = f.app.login("alice").await;
    let active = f.introspect(&access).await;
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
        f.introspect(&refresh_token).await,
        serde_json::json!({"active": false})
    );
    // Garbage, a tampered token, and a token for another audience: inactive, no hint why.
    let mut tampered = access.clone();
    tampered.pop();
    tampered.push(if access.ends_with('A') { 'B' } else { 'A' });
    for token in ["garbage", "a.b.c", tampered.as_str()] {
        assert_eq!(
            f.introspect(token).await,
            serde_json::json!({"active": false}),
            "{token}"
        );
    }
    let res = f.app.introspect_as(("other", &f.other), &access).await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"active": false}),
        "not other's audience"
    );
    // Only authenticated confidential clients may ask.
    let res = f
        .app
        .form(
            "/oauth/introspect",
            &[("token", &access), ("client_id", "spa")],
            None,
        )
        .await;
    assert_eq!(res.status(), 401);
    // No client authentication at all: invalid_client (RFC 6749 §5.2), 401.
    let res = f
        .app
        .form("/oauth/introspect", &[("token", &access)], None)
        .await;
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    let res = f.app.introspect_as(("rs", "wrong"), &access).await;
    assert_eq!(res.status(), 401);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic"),
        "Basic was tried: the 401 challenges it"
    );
    let res = f
        .app
        .form("/oauth/introspect", &[], Some(("rs", &f.rs)))
        .await;
    assert_eq!(res.status(), 400);
}

async fn revoking_a_refresh_token_ends_its_session(engine: Engine) {
    let f = fixture(engine).await;
    let (access, refresh_token) = f.app.login("alice").await;
    let res = f.app.revoke(&refresh_token, "spa", None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let res = f.app.refresh(&refresh_token).await;
    assert_eq!(res.status(), 400);
    // The access token minted in the session stops at introspection (sid).
    assert_eq!(f.introspect(&access).await["active"], false);
    // Revoking again, or an unknown token, is still 200.
    assert_eq!(
        f.app.revoke(&refresh_token, "spa", None).await.status(),
        200
    );
    assert_eq!(
        f.app.revoke("unknown-token", "spa", None).await.status(),
        200
    );
    assert_eq!(
        f.app.revoke(&"A".repeat(43), "spa", None).await.status(),
        200,
        "well-formed but unknown refresh token"
    );
}

async fn revoking_an_access_token_revokes_only_its_jti(engine: Engine) {
    let f = fixture(engine).await;
    let (access, refresh_token) = f.app.login("alice").await;
    assert_eq!(f.app.revoke(&access, "spa", None).await.status(), 200);
    assert_eq!(f.introspect(&access).await["active"], false);
    // The session lives on: a refresh gives a new, active access token.
    let res = f.app.refresh(&refresh_token).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        f.introspect(body["access_token"].as_str().unwrap()).await["active"],
        true
    );
}

async fn another_clients_token_is_not_revoked(engine: Engine) {
    let f = fixture(engine).await;
    let (access, refresh_token) = f.app.login("alice").await;
    for token in [&access, &refresh_token] {
        let res = f.app.revoke(token, "other", Some(&f.other)).await;
        assert_eq!(res.status(), 400);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized_client");
    }
    assert_eq!(f.introspect(&access).await["active"], true);
    assert_eq!(f.app.refresh(&refresh_token).await.status(), 200);
    // Client authentication is required (RFC 6749 §5.2: invalid_client) and checked.
    let res = f
        .app
        .form("/oauth/revoke", &[("token", &access)], None)
        .await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );
    let res = f.app.revoke(&access, "other", Some("wrong")).await;
    assert_eq!(res.status(), 401);
    let res = f
        .app
        .form("/oauth/revoke", &[("client_id", "spa")], None)
        .await;
    assert_eq!(res.status(), 400, "token is required");
}

async fn logout_ends_the_session_server_side(engine: Engine) {
    let f = fixture(engine).await;
    let (access, refresh_token) = f.app.login("alice").await;
    let logout = |token: String| {
        let f = &f;
        async move {
            f.app
                .form(
                    "/oauth/logout",
                    &[("client_id", "spa"), ("refresh_token", &token)],
                    None,
                )
                .await
        }
    };
    let res = logout(refresh_token.clone()).await;
    assert_eq!(res.status(), 204);
    assert_eq!(f.app.refresh(&refresh_token).await.status(), 400);
    assert_eq!(f.introspect(&access).await["active"], false);
    assert_eq!(logout(refresh_token).await.status(), 204, "idempotent");
}

/// Full feed pages are served from memory once read (#23 item 6): a page
/// whose rows were purged since is still answered from the cache, while a
/// page that was not full is read again.
async fn full_feed_pages_are_cached_by_cursor(engine: Engine) {
    let f = fixture(engine).await;
    let now = chrono::Utc::now().timestamp();
    for jti in ["c1", "c2", "c3"] {
        f.app
            .store
            .revoke_jti(jti, now, now + 900, None, 64)
            .await
            .unwrap();
    }
    let full = f.feed("?limit=2").await.text().await.unwrap();
    let partial = f.feed("?limit=5").await.text().await.unwrap();
    assert!(full.contains("\"has_more\":true"), "{full}");
    assert!(partial.contains("c3"), "{partial}");
    // Every row gone from the database.
    f.app
        .store
        .purge_expired(now + 10_000, now + 10_000, 1000)
        .await
        .unwrap();
    assert_eq!(
        f.feed("?limit=2").await.text().await.unwrap(),
        full,
        "the full page, from memory"
    );
    let reread = f.feed("?limit=5").await.text().await.unwrap();
    assert!(
        !reread.contains("c3"),
        "the partial page is read again: {reread}"
    );
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
    let res = f.feed("?limit=2").await;
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
    let page: Value = f
        .feed(&format!("?since={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(values(&page), ["j3"]);
    assert_eq!(page["has_more"], false);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let page: Value = f
        .feed(&format!("?since={cursor}"))
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
        assert_eq!(f.feed(bad).await.status(), 400, "{bad}");
    }
}

async fn the_verify_library_honours_the_feed(engine: Engine) {
    let f = fixture(engine).await;
    let (access, _) = f.app.login("alice").await;
    let jwks = f
        .app
        .get("/.well-known/jwks.json")
        .await
        .text()
        .await
        .unwrap();
    let verifier = Verifier::builder(ISSUER, AUD)
        .static_jwks(jwks)
        .revocation_feed("rs", f.rs.clone())
        .revocation_feed_url(format!("{}/v1/revocations", f.app.address))
        .build()
        .unwrap();
    verifier
        .verify(&access)
        .await
        .expect("valid before revocation");
    assert_eq!(f.app.revoke(&access, "spa", None).await.status(), 200);
    assert_eq!(verifier.poll_revocations().await.unwrap(), 1);
    assert_eq!(verifier.verify(&access).await, Err(VerifyError::Revoked));
}

async fn a_revocation_on_one_instance_is_honoured_by_another_within_a_second(engine: Engine) {
    let f = fixture(engine).await;
    let peer = spawn_peer(&f.app).await;
    let (access, refresh_token) = f.app.login("alice").await;
    assert_eq!(f.introspect_on(&peer, &access).await["active"], true);
    assert_eq!(
        f.app.revoke(&refresh_token, "spa", None).await.status(),
        200
    );
    eventually(
        Duration::from_secs(1),
        "the other instance refuses the revoked session's token",
        async || match f.introspect_on(&peer, &access).await {
            answer if answer["active"] == false => Ok(()),
            answer => Err(answer.to_string()),
        },
    )
    .await;
}

/// A compromised key retired at once through the admin API: it leaves the
/// JWKS on every instance, its tokens are refused by introspection (here
/// and on another instance) and, through the feed's `kid` entry, by a
/// verifier that still holds the old JWKS; a new key signs at once and its
/// tokens verify (the verifier fetches the JWKS again for the new `kid`).
async fn a_retired_key_is_refused_everywhere_at_once(engine: Engine) {
    let f = fixture(engine).await;
    let peer = spawn_peer(&f.app).await;
    let admin = f.admin_token().await;
    let (access, _) = f.app.login("alice").await;
    let kid = jsonwebtoken::decode_header(&access).unwrap().kid.unwrap();
    let verifier = Verifier::builder(ISSUER, AUD)
        .jwks_url(format!("{}/.well-known/jwks.json", f.app.address))
        .min_refresh_interval(Duration::from_millis(100))
        .revocation_feed("rs", f.rs.clone())
        .revocation_feed_url(format!("{}/v1/revocations", f.app.address))
        .build()
        .unwrap();
    verifier
        .verify(&access)
        .await
        .expect("valid before the retirement");

    // An unknown kid, and a caller without the admin scope.
    let res = f
        .app
        .admin_api(Method::POST, "/keys/no-such-kid/retire", Some(&admin), None)
        .await;
    assert_eq!(res.status(), 404);
    let res = f
        .app
        .admin_api(
            Method::POST,
            &format!("/keys/{kid}/retire"),
            Some(&access),
            None,
        )
        .await;
    assert_eq!(res.status(), 401, "a user's token is not for the admin API");

    let res = f
        .app
        .admin_api(
            Method::POST,
            &format!("/keys/{kid}/retire"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(res.status(), 200);
    let retired: Value = res.json().await.unwrap();
    assert_eq!(retired["kid"], kid.as_str());
    let successor = retired["successor"].as_str().unwrap().to_owned();
    assert_ne!(successor, kid);

    // Here: gone from the JWKS, its token inactive, at once.
    let jwks = f
        .app
        .get("/.well-known/jwks.json")
        .await
        .text()
        .await
        .unwrap();
    assert!(!jwks.contains(&kid) && jwks.contains(&successor), "{jwks}");
    assert_eq!(f.introspect(&access).await["active"], false);
    // The other instance within a second.
    eventually(
        Duration::from_secs(2),
        "the other instance drops the key",
        async || {
            let jwks = peer
                .get("/.well-known/jwks.json")
                .await
                .text()
                .await
                .unwrap();
            match f.introspect_on(&peer, &access).await {
                answer if answer["active"] == false && !jwks.contains(&kid) => Ok(()),
                answer => Err(format!("{answer} {jwks}")),
            }
        },
    )
    .await;
    // The verifier still caches the old JWKS: the feed's kid entry refuses the token.
    assert!(verifier.poll_revocations().await.unwrap() >= 1);
    assert_eq!(verifier.verify(&access).await, Err(VerifyError::Revoked));
    let page: Value = f.feed("").await.json().await.unwrap();
    assert!(
        page["revocations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "kid" && e["value"] == kid.as_str()),
        "{page}"
    );

    // The new key signs at once (on both instances), and its tokens verify.
    let (fresh, _) = f.app.login("alice").await;
    assert_eq!(
        jsonwebtoken::decode_header(&fresh).unwrap().kid.unwrap(),
        successor
    );
    assert_eq!(f.introspect_on(&peer, &fresh).await["active"], true);
    // The verifier re-reads the JWKS for an unknown kid at most once per
    // min_refresh_interval (100 ms here) since its last fetch, its first
    // verification above; on a fast run everything since took less than
    // that, so wait it out.
    tokio::time::sleep(Duration::from_millis(300)).await;
    verifier
        .verify(&fresh)
        .await
        .expect("the successor's token verifies");
    // The admin's own token was signed by the retired key too: refused.
    let res = f
        .app
        .admin_api(Method::GET, "/keys", Some(&admin), None)
        .await;
    assert_eq!(res.status(), 401);
    let admin = f.admin_token().await;
    // Retiring it again is a 404 (it is no longer published).
    let res = f
        .app
        .admin_api(
            Method::POST,
            &format!("/keys/{kid}/retire"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(res.status(), 404);
    let audit = f
        .app
        .admin_api(Method::GET, "/audit?limit=1000", Some(&admin), None)
        .await
        .text()
        .await
        .unwrap();
    assert!(audit.contains("key_retired"), "{audit}");
}

/// Fail-open by default, fail-closed when asked: with the feed out of
/// reach, a verifier built with `fail_closed_after` refuses every token
/// once its list is older than that (the extractor answers 503), and
/// accepts again as soon as a poll succeeds; one without keeps verifying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_fails_closed_when_its_list_is_stale_if_asked() {
    let f = fixture(Engine::Sqlite).await;
    let (access, _) = f.app.login("alice").await;
    let jwks = f
        .app
        .get("/.well-known/jwks.json")
        .await
        .text()
        .await
        .unwrap();
    let app_addr: std::net::SocketAddr =
        f.app.address.trim_start_matches("http://").parse().unwrap();
    let proxy = crate::helpers::TcpProxy::start(app_addr).await;
    let feed_url = format!("http://{}/v1/revocations", proxy.addr);
    let build = |closed: bool| {
        let mut b = Verifier::builder(ISSUER, AUD)
            .static_jwks(jwks.clone())
            .revocation_feed("rs", f.rs.clone())
            .revocation_feed_url(feed_url.clone())
            .revocation_poll_interval(Duration::from_millis(200));
        if closed {
            b = b.fail_closed_after(Duration::from_millis(800));
        }
        b.build().unwrap()
    };
    let (closed, open) = (build(true), build(false));
    assert!(
        Verifier::builder(ISSUER, AUD)
            .static_jwks(jwks.clone())
            .fail_closed_after(Duration::from_secs(10))
            .build()
            .is_err(),
        "fail_closed_after without a feed is refused"
    );
    closed.verify(&access).await.expect("fresh list");
    open.verify(&access).await.expect("fresh list");
    assert!(closed.revocation_feed_age().unwrap() < Duration::from_secs(1));

    proxy.cut().await;
    eventually(
        Duration::from_secs(5),
        "the closed verifier refuses",
        async || match closed.verify(&access).await {
            Err(VerifyError::RevocationsStale) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    open.verify(&access)
        .await
        .expect("fail-open keeps verifying");
    assert!(closed.revocation_feed_age().unwrap() > Duration::from_millis(800));

    proxy.restore().await;
    eventually(
        Duration::from_secs(5),
        "the closed verifier accepts again",
        async || match closed.verify(&access).await {
            Ok(_) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
}

async fn replay_is_audited_and_listed(engine: Engine) {
    let f = fixture(engine).await;
    let (access, first) = f.app.login("alice").await;
    assert_eq!(f.app.refresh(&first).await.status(), 200);
    let res = f.app.refresh(&first).await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
    assert_eq!(f.introspect(&access).await["active"], false);
    let page: Value = f.feed("").await.json().await.unwrap();
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
    let not_rs = f
        .app
        .add_client(
            ClientSpec::confidential("backend", &["client_credentials"]).resource_server(false),
        )
        .await;
    let (access, _) = f.app.login("alice").await;
    let res = f.app.introspect_as(("backend", &not_rs), &access).await;
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
    assert_eq!(f.introspect(&access).await["active"], true);
    let admin_token = f.admin_token().await;
    assert_eq!(f.introspect(&admin_token).await["active"], false);
    let other = f.app.introspect_as(("other", &f.other), &access).await;
    assert_eq!(other.json::<Value>().await.unwrap()["active"], false);
}

on_both_engines!(
    full_feed_pages_are_cached_by_cursor,
    a_retired_key_is_refused_everywhere_at_once,
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
