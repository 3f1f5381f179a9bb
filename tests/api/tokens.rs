//! Minting: claims, the at+jwt header, and nested JWE for audiences that
//! registered an encryption key, decrypted with an independent library.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::jwk::KeyPair;
use josekit::jwk::alg::ec::{EcCurve, EcKeyPair};
use josekit::jwk::alg::rsa::RsaKeyPair;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tessera::keys::keyring::{KeyRing, RotationPolicy};
use tessera::keys::master::MasterKey;
use tessera::store::Audience;
use tessera::tokens::{AccessClaims, AudienceKeys, EncryptionKey, MintError, Minter, TokenRequest};

use crate::helpers::{Engine, test_store};

const NOW: i64 = 1_800_000_000;

struct Fixture {
    minter: Minter,
    ring: Arc<KeyRing>,
    audiences: Arc<AudienceKeys>,
    store: crate::helpers::TestStore,
}

async fn fixture() -> Fixture {
    let store = test_store(Engine::Sqlite).await;
    let policy = RotationPolicy {
        jwks_max_age: Duration::from_secs(300),
        access_token_ttl: Duration::from_secs(900),
        rotation_period: None,
    };
    let ring = Arc::new(
        KeyRing::open(
            store.store.clone(),
            MasterKey::from_bytes(&[7; 32]),
            policy,
            NOW,
        )
        .await
        .unwrap(),
    );
    let audiences = Arc::new(AudienceKeys::default());
    let minter = Minter::new(
        ring.clone(),
        audiences.clone(),
        "https://issuer.example".into(),
        Duration::from_secs(900),
    );
    Fixture {
        minter,
        ring,
        audiences,
        store,
    }
}

fn request(audiences: &[&str]) -> TokenRequest {
    TokenRequest {
        sub: "8a1c2e6e-2b4f-4d1e-9a47-0f1f2d3c4b5a".into(),
        audiences: audiences.iter().map(|a| a.to_string()).collect(),
        client_id: "spa".into(),
        scope: "read write".into(),
        sid: Some(uuid::Uuid::new_v4()),
        jkt: None,
        act: None,
        expires_at: None,
    }
}

fn decoding_key(f: &Fixture) -> DecodingKey {
    let jwk = f.ring.signer_at(NOW).unwrap().public_jwk().clone();
    DecodingKey::from_ec_components(&jwk.x, &jwk.y).unwrap()
}

fn header_json(part: &str) -> serde_json::Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn tokens_carry_the_rfc9068_header_and_claims() {
    let f = fixture().await;
    let req = request(&["https://api.example"]);
    let sid = req.sid.unwrap().to_string();
    let minted = f.minter.mint(req, NOW).unwrap();
    let parts: Vec<&str> = minted.token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header = header_json(parts[0]);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["kid"], f.ring.signer_at(NOW).unwrap().kid());
    assert_eq!(
        URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(),
        64,
        "r || s"
    );

    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&["https://api.example"]);
    v.set_issuer(&["https://issuer.example"]);
    v.validate_exp = false;
    let claims = jsonwebtoken::decode::<AccessClaims>(&minted.token, &decoding_key(&f), &v)
        .unwrap()
        .claims;
    assert_eq!(claims, minted.claims);
    assert_eq!((claims.iat, claims.nbf, claims.exp), (NOW, NOW, NOW + 900));
    assert_eq!(claims.aud.as_slice(), ["https://api.example"]);
    assert_eq!(claims.sid.as_deref(), Some(sid.as_str()));
    assert_eq!(claims.scope, "read write");
    assert_eq!(
        uuid::Uuid::parse_str(&claims.jti)
            .unwrap()
            .get_version_num(),
        4
    );
    // A single audience is a string, as most verifiers expect.
    let raw: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert!(raw["aud"].is_string());

    let other = f.minter.mint(request(&["a", "b"]), NOW).unwrap();
    assert_ne!(other.claims.jti, claims.jti, "jti is unique");
    assert_eq!(other.claims.aud.as_slice(), ["a", "b"]);
}

async fn register(f: &Fixture, name: &str, public_jwk: &josekit::jwk::Jwk) {
    f.store
        .put_audience(&Audience {
            name: name.into(),
            encrypt_jwk: Some(public_jwk.to_string()),
            created_at: NOW,
        })
        .await
        .unwrap();
    f.audiences.refresh(f.store.store.as_ref()).await.unwrap();
}

fn decrypt_and_verify(
    f: &Fixture,
    jwe: &str,
    decrypter: &dyn josekit::jwe::JweDecrypter,
    alg: &str,
    aud: &str,
) {
    let parts: Vec<&str> = jwe.split('.').collect();
    assert_eq!(parts.len(), 5, "compact JWE");
    let header = header_json(parts[0]);
    assert_eq!(header["alg"], alg);
    assert_eq!(header["enc"], "A256GCM");
    assert_eq!(header["cty"], "JWT");
    assert!(header.get("zip").is_none());
    let (inner, _) = josekit::jwe::deserialize_compact(jwe, decrypter).unwrap();
    let inner = String::from_utf8(inner).unwrap();
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&[aud]);
    v.validate_exp = false;
    jsonwebtoken::decode::<AccessClaims>(&inner, &decoding_key(f), &v).unwrap();
}

#[tokio::test]
async fn encrypted_audiences_get_nested_jwe_only_they_can_read() {
    let f = fixture().await;
    let ec = EcKeyPair::generate(EcCurve::P256).unwrap();
    register(&f, "https://ec.example", &ec.to_jwk_public_key()).await;
    let rsa = RsaKeyPair::generate(2048).unwrap();
    register(&f, "https://rsa.example", &rsa.to_jwk_public_key()).await;

    let jwe = f
        .minter
        .mint(request(&["https://ec.example"]), NOW)
        .unwrap()
        .token;
    let decrypter = josekit::jwe::ECDH_ES_A256KW
        .decrypter_from_jwk(&ec.to_jwk_private_key())
        .unwrap();
    decrypt_and_verify(&f, &jwe, &decrypter, "ECDH-ES+A256KW", "https://ec.example");

    let jwe = f
        .minter
        .mint(request(&["https://rsa.example"]), NOW)
        .unwrap()
        .token;
    let decrypter = josekit::jwe::RSA_OAEP_256
        .decrypter_from_jwk(&rsa.to_jwk_private_key())
        .unwrap();
    decrypt_and_verify(&f, &jwe, &decrypter, "RSA-OAEP-256", "https://rsa.example");

    // Another key cannot read it.
    let stranger = EcKeyPair::generate(EcCurve::P256).unwrap();
    let wrong = josekit::jwe::ECDH_ES_A256KW
        .decrypter_from_jwk(&stranger.to_jwk_private_key())
        .unwrap();
    let jwe = f
        .minter
        .mint(request(&["https://ec.example"]), NOW)
        .unwrap()
        .token;
    assert!(josekit::jwe::deserialize_compact(&jwe, &wrong).is_err());

    // Unregistered audiences still get plain JWS.
    assert_eq!(
        f.minter
            .mint(request(&["https://plain.example"]), NOW)
            .unwrap()
            .token
            .split('.')
            .count(),
        3
    );
}

#[tokio::test]
async fn minting_refuses_what_would_leak_or_be_unusable() {
    let f = fixture().await;
    let ec = EcKeyPair::generate(EcCurve::P256).unwrap();
    register(&f, "https://ec.example", &ec.to_jwk_public_key()).await;
    assert!(matches!(
        f.minter.mint(request(&[]), NOW),
        Err(MintError::NoAudience)
    ));
    assert!(matches!(
        f.minter.mint(request(&["https://plain.example", "https://ec.example"]), NOW),
        Err(MintError::SharedEncryptedAudience(a)) if a == "https://ec.example"
    ));
}

#[test]
fn audience_keys_are_validated() {
    let ec = EcKeyPair::generate(EcCurve::P256).unwrap();
    assert_eq!(
        EncryptionKey::from_jwk_json(&ec.to_jwk_public_key().to_string())
            .unwrap()
            .alg,
        "ECDH-ES+A256KW"
    );
    let private = EncryptionKey::from_jwk_json(&ec.to_jwk_private_key().to_string()).unwrap_err();
    assert!(private.to_string().contains("private key material"));
    let p384 = EcKeyPair::generate(EcCurve::P384).unwrap();
    assert!(EncryptionKey::from_jwk_json(&p384.to_jwk_public_key().to_string()).is_err());
    let small = RsaKeyPair::generate(1024).unwrap();
    assert!(EncryptionKey::from_jwk_json(&small.to_jwk_public_key().to_string()).is_err());
    assert!(EncryptionKey::from_jwk_json(r#"{"kty":"oct","k":"AAAA"}"#).is_err());
    assert!(EncryptionKey::from_jwk_json("not json").is_err());
}
