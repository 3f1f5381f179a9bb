//! Signing keys: rotation that never breaks a caching verifier, JWKS,
//! discovery, and propagation between instances.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tessera::keys::keyring::{KeyRing, RotationPolicy};
use tessera::keys::master::MasterKey;
use tessera::tokens::{AccessClaims, AudienceKeys, Minter, TokenRequest};

use crate::helpers::{Engine, eventually, on_both_engines, spawn_app, test_store};

const T0: i64 = 1_800_000_000;

fn policy() -> RotationPolicy {
    RotationPolicy {
        jwks_max_age: Duration::from_secs(300),
        access_token_ttl: Duration::from_secs(900),
        rotation_period: Some(Duration::from_secs(86_400)),
    }
}

fn master() -> MasterKey {
    MasterKey::from_bytes(&[42; 32])
}

fn request() -> TokenRequest {
    TokenRequest {
        sub: "user-1".into(),
        audiences: vec!["https://api.example".into()],
        client_id: "spa".into(),
        scope: "read".into(),
        sid: None,
        jkt: None,
        act: None,
        expires_at: None,
    }
}

/// Verifies `token` against the JWKS the ring publishes, as a caching verifier would.
fn verify_with_jwks(jwks: &[u8], token: &str, now: i64) -> Result<AccessClaims, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(jwks).unwrap();
    let jwk = set
        .find(header.kid.as_deref().unwrap())
        .ok_or("kid not in JWKS")?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&["https://api.example"]);
    v.set_issuer(&["https://issuer.example"]);
    v.validate_exp = false; // time is simulated below
    let data = jsonwebtoken::decode::<AccessClaims>(token, &key, &v).map_err(|e| e.to_string())?;
    if data.claims.exp <= now {
        return Err("expired".into());
    }
    Ok(data.claims)
}

fn kids(ring: &KeyRing, now: i64) -> Vec<(String, &'static str)> {
    ring.status(now)
        .into_iter()
        .map(|k| (k.kid, k.state))
        .collect()
}

async fn rotation_publishes_before_signing_and_retires_after_expiry(engine: Engine) {
    let store = test_store(engine).await;
    let ring = Arc::new(
        KeyRing::open(store.store.clone(), master(), policy(), T0)
            .await
            .unwrap(),
    );
    let minter = Minter::new(
        ring.clone(),
        Arc::new(AudienceKeys::default()),
        "https://issuer.example".into(),
        Duration::from_secs(900),
    );
    // The first key signs at once.
    let first = ring
        .signer_at(T0)
        .expect("first key is active")
        .kid()
        .to_owned();
    assert_eq!(kids(&ring, T0), [(first.clone(), "active")]);
    let old_token = minter.mint(request(), T0 + 10).unwrap().token;

    // Rotate at T1: the new key is published but does not sign yet.
    let t1 = T0 + 1000;
    let next = ring.rotate(t1).await.unwrap();
    assert_eq!(next.state, "next");
    assert_eq!(next.activate_at, t1 + 300 + 60);
    let cached_jwks = ring.jwks(); // what a verifier caches right after the rotation
    assert!(String::from_utf8_lossy(&cached_jwks).contains(&next.kid));
    let during = minter.mint(request(), t1 + 1).unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(&during.token)
            .unwrap()
            .kid
            .unwrap(),
        first
    );

    // The last token the old key signs, just before the new key activates.
    let t2 = next.activate_at;
    let last_old = minter.mint(request(), t2 - 1).unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(&last_old.token)
            .unwrap()
            .kid
            .unwrap(),
        first
    );

    // Once active, the new key signs, and a verifier holding the JWKS cached
    // at rotation time verifies both old and new tokens.
    ring.refresh(t2).await.unwrap();
    assert_eq!(ring.signer_at(t2).unwrap().kid(), next.kid);
    assert_eq!(
        ring.signer_at(t2 - 1).unwrap().kid(),
        first,
        "the switch happens exactly at activate_at"
    );
    let new_token = minter.mint(request(), t2).unwrap().token;
    assert_eq!(
        jsonwebtoken::decode_header(&new_token)
            .unwrap()
            .kid
            .unwrap(),
        next.kid
    );
    verify_with_jwks(&cached_jwks, &new_token, t2).unwrap();
    verify_with_jwks(&cached_jwks, &during.token, t2).unwrap();
    assert_eq!(
        kids(&ring, t2),
        [(next.kid.clone(), "active"), (first.clone(), "retiring")]
    );

    // The old key stays published until the last token it signed has expired.
    let last_old_expiry = last_old.claims.exp;
    ring.refresh(last_old_expiry - 1).await.unwrap();
    verify_with_jwks(&ring.jwks(), &last_old.token, last_old_expiry - 1).unwrap();
    assert!(String::from_utf8_lossy(&ring.jwks()).contains(&first));
    let retire = t2 + 900 + 60;
    ring.refresh(retire).await.unwrap();
    assert!(!String::from_utf8_lossy(&ring.jwks()).contains(&first));
    assert!(verify_with_jwks(&ring.jwks(), &old_token, retire).is_err());
}

async fn rotation_is_automatic_when_due_and_only_once(engine: Engine) {
    let store = test_store(engine).await;
    let a = KeyRing::open(store.store.clone(), master(), policy(), T0)
        .await
        .unwrap();
    let b = KeyRing::open(store.store.clone(), master(), policy(), T0)
        .await
        .unwrap();
    // Two instances opening an empty database agree on one first key.
    assert_eq!(
        a.signer_at(T0).unwrap().kid(),
        b.signer_at(T0).unwrap().kid()
    );
    assert!(
        a.rotate_if_due(T0 + 100).await.unwrap().is_none(),
        "not due yet"
    );
    let due = T0 + 86_400;
    let (ra, rb) = tokio::join!(a.rotate_if_due(due), b.rotate_if_due(due));
    let rotated = [ra.unwrap(), rb.unwrap()].into_iter().flatten().count();
    assert_eq!(rotated, 1, "exactly one instance rotates");
    a.refresh(due).await.unwrap();
    b.refresh(due).await.unwrap();
    assert_eq!(a.status(due), b.status(due));
    assert_eq!(a.status(due).len(), 2);
}

async fn a_rotation_from_anywhere_follows_the_longest_schedule_in_force(engine: Engine) {
    let store = test_store(engine).await;
    let long = RotationPolicy {
        jwks_max_age: Duration::from_secs(3600),
        access_token_ttl: Duration::from_secs(3600),
        ..policy()
    };
    let _service = KeyRing::open(store.store.clone(), master(), long, T0)
        .await
        .unwrap();
    // An operator's CLI with the defaults (300 s, 900 s) rotates.
    let cli = KeyRing::open(store.store.clone(), master(), policy(), T0)
        .await
        .unwrap();
    let next = cli.rotate(T0 + 10).await.unwrap();
    assert_eq!(
        next.activate_at,
        T0 + 10 + 3600 + 60,
        "published for the service's JWKS max-age"
    );
    cli.refresh(T0 + 10).await.unwrap();
    let old = cli
        .status(T0 + 10)
        .into_iter()
        .find(|k| k.kid != next.kid)
        .unwrap();
    assert_eq!(
        old.retire_at,
        Some(next.activate_at + 3600 + 60),
        "kept for the service's token lifetime"
    );
}

async fn jwks_and_metadata_are_served(engine: Engine) {
    let app = spawn_app(engine).await;
    let res = app.get("/.well-known/jwks.json").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "public, max-age=300");
    let jwks: serde_json::Value = res.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let k = &keys[0];
    assert_eq!(
        (k["kty"].as_str(), k["crv"].as_str()),
        (Some("EC"), Some("P-256"))
    );
    assert_eq!(
        (k["alg"].as_str(), k["use"].as_str()),
        (Some("ES256"), Some("sig"))
    );
    for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
        assert!(k.get(private).is_none(), "JWKS leaks {private}");
    }
    let kid =
        tessera::keys::signing::thumbprint(k["x"].as_str().unwrap(), k["y"].as_str().unwrap());
    assert_eq!(k["kid"].as_str().unwrap(), kid);

    let res = app.get("/.well-known/oauth-authorization-server").await;
    assert_eq!(res.status(), 200);
    let meta: serde_json::Value = res.json().await.unwrap();
    assert_eq!(meta["issuer"], "http://127.0.0.1:8080");
    assert_eq!(
        meta["jwks_uri"],
        "http://127.0.0.1:8080/.well-known/jwks.json"
    );
    assert_eq!(meta["token_endpoint"], "http://127.0.0.1:8080/oauth/token");
    assert_eq!(
        meta["grant_types_supported"],
        serde_json::json!([
            "authorization_code",
            "client_credentials",
            "password",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:token-exchange"
        ])
    );
    assert_eq!(
        meta["revocation_endpoint"],
        "http://127.0.0.1:8080/oauth/revoke"
    );
    assert_eq!(
        meta["introspection_endpoint"],
        "http://127.0.0.1:8080/oauth/introspect"
    );

    let ready: serde_json::Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["checks"]["signing_key"], "ok");
}

on_both_engines!(
    rotation_publishes_before_signing_and_retires_after_expiry,
    rotation_is_automatic_when_due_and_only_once,
    a_rotation_from_anywhere_follows_the_longest_schedule_in_force,
    jwks_and_metadata_are_served,
);

/// A rotation made elsewhere (here: the CLI) reaches a running instance's
/// JWKS within about a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_by_the_cli_reaches_a_running_instance_within_a_second() {
    let app = spawn_app(Engine::Postgres).await;
    let before: serde_json::Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(before["keys"].as_array().unwrap().len(), 1);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["keys", "rotate"])
        .env_clear()
        .env("TESSERA_DATABASE_URL", app.database_url())
        .env("TESSERA_MASTER_KEY", app.master_key())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    let new_kid = printed.split_whitespace().next().unwrap().to_owned();
    assert!(printed.contains("published now, signs from"), "{printed}");

    eventually(
        Duration::from_millis(1500),
        "the rotation is picked up",
        async || {
            let jwks: serde_json::Value = app
                .get("/.well-known/jwks.json")
                .await
                .json()
                .await
                .unwrap();
            let keys = jwks["keys"].as_array().unwrap();
            match keys.iter().any(|k| k["kid"] == new_kid.as_str()) {
                true => Ok(()),
                false => Err(jwks.to_string()),
            }
        },
    )
    .await;
}

/// `tessera keys retire KID --now` against a running instance: it needs
/// `--now`, names an unknown kid, and otherwise unpublishes the key there
/// within about a second while its successor signs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_retires_a_key_at_once() {
    let app = spawn_app(Engine::Postgres).await;
    let jwks: serde_json::Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let kid = jwks["keys"][0]["kid"].as_str().unwrap().to_owned();
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(args)
            .env_clear()
            .env("TESSERA_DATABASE_URL", app.database_url())
            .env("TESSERA_MASTER_KEY", app.master_key())
            .output()
            .unwrap()
    };
    let out = cli(&["keys", "retire", &kid]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("needs --now"), "{said}");
    let out = cli(&["keys", "retire", "nope", "--now"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("no published signing key has kid nope"),
        "{said}"
    );

    let out = cli(&["keys", "retire", &kid, "--now"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(printed.contains(&format!("retired={kid}\n")), "{printed}");
    let successor = printed
        .lines()
        .find_map(|l| l.strip_prefix("signing="))
        .unwrap()
        .to_owned();
    eventually(
        Duration::from_millis(1500),
        "the retirement is picked up",
        async || {
            let jwks = app
                .get("/.well-known/jwks.json")
                .await
                .text()
                .await
                .unwrap();
            match !jwks.contains(&kid) && jwks.contains(&successor) {
                true => Ok(()),
                false => Err(jwks),
            }
        },
    )
    .await;
}
