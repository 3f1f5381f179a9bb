//! The hot-path caches never outlive what they cache: the client records
//! behind every token and introspection request, and verified tokens
//! (introspection and the `verify` library).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tessera::keys::signing::SigningKeyPair;
use tessera::verify::{KeyProvider, Verifier, VerifyError, VerifyingKey};

use reqwest::Method;

use crate::helpers::{Engine, TestApp, eventually, fixture, now, on_both_engines, spawn_peer};

/// A client record cached by both instances stops working on both as soon
/// as the revocation that disabling it writes reaches them; a client
/// created after a failed attempt works at once (misses are not cached).
async fn a_disabled_client_is_refused_at_once_on_every_instance(engine: Engine) {
    let f = fixture(engine).await;
    let peer = spawn_peer(&f.app).await;
    let (access, _) = f.app.login("alice").await;
    let status = async |instance: &TestApp, id: &str, secret: &str| {
        instance.client_credentials(id, secret).await.status()
    };
    for instance in [&f.app, &peer] {
        assert_eq!(status(instance, "rs", &f.rs).await, 200);
        assert_eq!(f.introspect_on(instance, &access).await["active"], true);
    }

    let admin = f.admin_token().await;
    let disable = f
        .app
        .admin_api(Method::POST, "/clients/rs/disable", Some(&admin), None)
        .await;
    assert_eq!(disable.status(), 200);
    assert_eq!(
        status(&f.app, "rs", &f.rs).await,
        401,
        "the instance that disabled it refuses at once"
    );
    eventually(
        Duration::from_secs(1),
        "the other instance refuses the disabled client",
        async || match status(&peer, "rs", &f.rs).await {
            s if s == 401 => Ok(()),
            other => Err(other.to_string()),
        },
    )
    .await;
    for instance in [&f.app, &peer] {
        let res = instance.introspect_as(("rs", &f.rs), &access).await;
        assert_eq!(res.status(), 401, "introspection too");
    }

    // Unknown, then created: works at once everywhere.
    assert_eq!(status(&peer, "late", "whatever").await, 401);
    let admin = f.admin_token().await;
    let res = f
        .app
        .admin_api(
            Method::POST,
            "/clients",
            Some(&admin),
            Some(json!({"client_id": "late", "confidential": true, "scopes": ["read"], "audiences": [AUD]})),
        )
        .await;
    assert_eq!(res.status(), 201);
    let secret = res.json::<Value>().await.unwrap()["client_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    for instance in [&f.app, &peer] {
        assert_eq!(status(instance, "late", &secret).await, 200);
        assert_eq!(status(instance, "late", "wrong").await, 401);
    }
}

on_both_engines!(a_disabled_client_is_refused_at_once_on_every_instance);

// ---- the verify library's cache of verified tokens ----

const ISS: &str = "https://issuer.example";
const AUD: &str = "https://api.example";

fn token(key: &SigningKeyPair, exp: i64, jti: &str) -> String {
    let b64 = |v: Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap());
    let t = now();
    let input = format!(
        "{}.{}",
        b64(json!({ "alg": "ES256", "typ": "at+jwt", "kid": key.kid() })),
        b64(json!({
            "iss": ISS, "sub": "user-1", "aud": AUD, "exp": exp, "iat": t, "nbf": t,
            "jti": jti, "client_id": "spa", "scope": "read"
        }))
    );
    let sig = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{sig}")
}

/// Keys the test can withdraw, as the issuer does when a key is retired.
#[derive(Default)]
struct Keys(Mutex<HashMap<String, Arc<VerifyingKey>>>);

impl Keys {
    fn publish(&self, key: &SigningKeyPair) {
        let jwk = key.public_jwk();
        let parsed = VerifyingKey::from_ec_components(&jwk.x, &jwk.y).unwrap();
        self.0
            .lock()
            .unwrap()
            .insert(key.kid().to_owned(), Arc::new(parsed));
    }

    fn withdraw(&self, kid: &str) {
        self.0.lock().unwrap().remove(kid);
    }
}

impl KeyProvider for Keys {
    fn verifying_key(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        self.0.lock().unwrap().get(kid).cloned()
    }
}

/// A token seen before is answered from the cache only while its key is
/// still published, it has not expired, and it is not revoked; each of
/// those is checked again on every hit.
#[tokio::test]
async fn a_verified_token_is_remembered_only_while_it_stays_valid() {
    let key = SigningKeyPair::generate();
    let keys = Arc::new(Keys::default());
    keys.publish(&key);
    let revocations = Arc::new(tessera::verify::RevocationSet::new());
    let verifier = Verifier::builder(ISS, AUD)
        .key_provider(keys.clone())
        .revocations(revocations.clone())
        .leeway(Duration::ZERO)
        .build()
        .unwrap();

    // Withdrawn key: refused although the token was verified before.
    let t1 = token(&key, now() + 900, "j1");
    assert!(verifier.verify(&t1).await.is_ok());
    assert!(verifier.verify(&t1).await.is_ok());
    keys.withdraw(key.kid());
    assert_eq!(verifier.verify(&t1).await, Err(VerifyError::UnknownKey));
    keys.publish(&key);
    assert!(verifier.verify(&t1).await.is_ok());

    // Revoked: refused on the next presentation.
    revocations.apply(&[tessera::verify::FeedEntry {
        kind: tessera::verify::RevocationKind::Jti,
        value: "j1".into(),
        revoked_at: now(),
        relevant_until: now() + 900,
    }]);
    assert_eq!(verifier.verify(&t1).await, Err(VerifyError::Revoked));

    // Expired while cached.
    let t2 = token(&key, now() + 1, "j2");
    assert!(verifier.verify(&t2).await.is_ok());
    // Its `exp` is under 2 s away by the system clock, which the library reads.
    eventually(
        Duration::from_millis(2100),
        "the cached token is refused as expired",
        async || match verifier.verify(&t2).await {
            Err(VerifyError::Expired) => Ok(()),
            Ok(_) => Err("still accepted".into()),
            Err(e) => panic!("refused, but not as expired: {e:?}"),
        },
    )
    .await;

    // A cached token does not vouch for a tampered copy of itself.
    let t3 = token(&key, now() + 900, "j3");
    assert!(verifier.verify(&t3).await.is_ok());
    let mut tampered = t3.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert!(verifier.verify(&tampered).await.is_err());

    // Without the cache, the same answers.
    let uncached = Verifier::builder(ISS, AUD)
        .key_provider(keys.clone())
        .verified_cache(0)
        .build()
        .unwrap();
    assert!(uncached.verify(&t3).await.is_ok());
    keys.withdraw(key.kid());
    assert_eq!(uncached.verify(&t3).await, Err(VerifyError::UnknownKey));
}
