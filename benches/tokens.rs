//! Token hot paths beside the raw primitives they are built on, measured in
//! the same run so our overhead is a ratio:
//!
//! - `es256/raw_sign` vs `tessera/mint_jws`
//! - `es256/raw_verify_parsed` (key parsed once) vs `tessera/verify_jws`
//!   (every check, cache off) and `tessera/verify_jws_cached` (a token seen before)
//! - `jwe/raw_encrypt` + `jwe/raw_decrypt` (josekit ECDH-ES+A256KW, A256GCM)
//!   vs `tessera/mint_jwe` and `tessera/verify_jwe`
//! - `tessera/verify_dpop` (a DPoP-bound token and its proof) vs
//!   `tessera/verify_jws_cached`, and `tessera/dpop_check_proof` (the proof alone)
//! - `jsonwebtoken/encode` and `jsonwebtoken/decode` for reference.
//!
//! Run: `cargo bench --bench tokens` (figures: docs/performance.md).

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    ParsedPublicKey,
};
use criterion::{Criterion, criterion_group, criterion_main};
use josekit::jwk::KeyPair as _;
use josekit::jwk::alg::ec::{EcCurve, EcKeyPair as JoseEcKeyPair};
use std::hint::black_box;
use tessera::keys::keyring::{KeyRing, RotationPolicy};
use tessera::keys::master::MasterKey;
use tessera::store::{Audience, Store, sqlite::SqliteStore};
use tessera::tokens::{AccessClaims, AudienceKeys, Minter, TokenRequest};
use tessera::verify::Verifier;

const ISS: &str = "https://issuer.example";

struct Setup {
    minter: Minter,
    ring: Arc<KeyRing>,
    audience_key: JoseEcKeyPair,
    _dir: tempfile::TempDir,
}

fn request(aud: &str) -> TokenRequest {
    TokenRequest {
        sub: "3f0c7f8e-9a54-4b55-8c1c-6c0d1c2b3a4f".into(),
        audiences: vec![aud.into()],
        client_id: "backend".into(),
        scope: "read write".into(),
        sid: Some(uuid::Uuid::new_v4()),
        jkt: None,
        act: None,
        expires_at: None,
    }
}

fn setup(rt: &tokio::runtime::Runtime) -> Setup {
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/bench.db", dir.path().display());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::connect(&url, 2).await.unwrap());
        store.migrate().await.unwrap();
        let now = chrono::Utc::now().timestamp();
        let policy = RotationPolicy {
            jwks_max_age: Duration::from_secs(300),
            access_token_ttl: Duration::from_secs(900),
            rotation_period: None,
        };
        let ring = Arc::new(
            KeyRing::open(store.clone(), MasterKey::from_bytes(&[1; 32]), policy, now)
                .await
                .unwrap(),
        );
        let audience_key = JoseEcKeyPair::generate(EcCurve::P256).unwrap();
        store
            .put_audience(&Audience {
                name: "https://enc.example".into(),
                encrypt_jwk: Some(audience_key.to_jwk_public_key().to_string()),
                created_at: now,
            })
            .await
            .unwrap();
        let audiences = Arc::new(AudienceKeys::default());
        audiences.refresh(store.as_ref()).await.unwrap();
        let minter = Minter::new(
            ring.clone(),
            audiences,
            ISS.into(),
            Duration::from_secs(900),
        );
        Setup {
            minter,
            ring,
            audience_key,
            _dir: dir,
        }
    })
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = setup(&rt);
    let now = chrono::Utc::now().timestamp();
    let signer = s.ring.signer_at(now).unwrap();
    let jwks = serde_json::json!({ "keys": [signer.public_jwk()] }).to_string();

    // --- ES256: raw primitive vs our JWS ---
    let raw = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, signer.pkcs8().unwrap())
        .unwrap();
    let rng = SystemRandom::new();
    let jws = s
        .minter
        .mint(request("https://api.example"), now)
        .unwrap()
        .token;
    let (input, sig_b64) = jws.rsplit_once('.').unwrap();
    let sig =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig_b64).unwrap();
    let parsed = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, raw.public_key().as_ref()).unwrap();

    let mut g = c.benchmark_group("es256");
    g.bench_function("raw_sign", |b| {
        b.iter(|| raw.sign(&rng, black_box(input.as_bytes())).unwrap())
    });
    g.bench_function("raw_verify_parsed", |b| {
        b.iter(|| {
            parsed
                .verify_sig(black_box(input.as_bytes()), black_box(&sig))
                .unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("tessera");
    g.bench_function("mint_jws", |b| {
        b.iter(|| s.minter.mint(request("https://api.example"), now).unwrap())
    });
    // Every check on every call (the cache of verified tokens is off), so
    // the ratio to the primitive is the cost of our rules.
    let verifier = Verifier::builder(ISS, "https://api.example")
        .static_jwks(jwks.clone())
        .verified_cache(0)
        .build()
        .unwrap();
    g.bench_function("verify_jws", |b| {
        b.to_async(&rt)
            .iter(|| async { verifier.verify(black_box(&jws)).await.unwrap() })
    });
    // The same token again with the cache on (the default): what a
    // resource server or introspection pays for a token it has seen.
    let cached = Verifier::builder(ISS, "https://api.example")
        .static_jwks(jwks.clone())
        .build()
        .unwrap();
    g.bench_function("verify_jws_cached", |b| {
        b.to_async(&rt)
            .iter(|| async { cached.verify(black_box(&jws)).await.unwrap() })
    });

    // DPoP (RFC 9449): a bound token with a fresh proof per request (each
    // proof is single-use, so they are made outside the timing).
    let client_key = tessera::keys::signing::SigningKeyPair::generate();
    let mut bound_request = request("https://api.example");
    bound_request.jkt = Some(client_key.kid().to_owned());
    let bound = s.minter.mint(bound_request, now).unwrap().token;
    let url = "https://api.example/orders";
    let proof = |token: &str| dpop_proof(&client_key, "GET", url, token);
    let dpop_verifier = Verifier::builder(ISS, "https://api.example")
        .static_jwks(jwks.clone())
        .build()
        .unwrap();
    g.bench_function("verify_dpop", |b| {
        b.to_async(&rt).iter_batched(
            || proof(&bound),
            |p| async {
                let p = p;
                dpop_verifier
                    .verify_dpop(black_box(&bound), &p, "GET", url)
                    .await
                    .unwrap()
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let validator = tessera::verify::dpop::DpopValidator::new(Default::default(), None);
    g.bench_function("dpop_check_proof", |b| {
        b.iter_batched(
            || proof(&bound),
            |p| {
                let request = tessera::verify::dpop::Request {
                    method: "GET",
                    url,
                    access_token: Some(&bound),
                    now: chrono::Utc::now().timestamp(),
                };
                validator.check(black_box(&p), &request).unwrap()
            },
            criterion::BatchSize::SmallInput,
        )
    });

    let jwe = s
        .minter
        .mint(request("https://enc.example"), now)
        .unwrap()
        .token;
    g.bench_function("mint_jwe", |b| {
        b.iter(|| s.minter.mint(request("https://enc.example"), now).unwrap())
    });
    let jwe_verifier = Verifier::builder(ISS, "https://enc.example")
        .static_jwks(jwks.clone())
        .decryption_key(s.audience_key.to_jwk_key_pair().to_string())
        .verified_cache(0)
        .build()
        .unwrap();
    g.bench_function("verify_jwe", |b| {
        b.to_async(&rt)
            .iter(|| async { jwe_verifier.verify(black_box(&jwe)).await.unwrap() })
    });
    g.finish();

    // --- JWE: the raw josekit operations ---
    let encrypter = josekit::jwe::ECDH_ES_A256KW
        .encrypter_from_jwk(&s.audience_key.to_jwk_public_key())
        .unwrap();
    let decrypter = josekit::jwe::ECDH_ES_A256KW
        .decrypter_from_jwk(&s.audience_key.to_jwk_key_pair())
        .unwrap();
    let mut header = josekit::jwe::JweHeader::new();
    header.set_content_encryption("A256GCM");
    header.set_content_type("JWT");
    let mut g = c.benchmark_group("jwe");
    g.bench_function("raw_encrypt", |b| {
        b.iter(|| {
            josekit::jwe::serialize_compact(black_box(jws.as_bytes()), &header, &encrypter).unwrap()
        })
    });
    g.bench_function("raw_decrypt", |b| {
        b.iter(|| josekit::jwe::deserialize_compact(black_box(&jwe), &decrypter).unwrap())
    });
    g.finish();

    // --- jsonwebtoken as a library, for reference ---
    let enc_key = jsonwebtoken::EncodingKey::from_ec_der(signer.pkcs8().unwrap());
    let pk = signer.public_jwk();
    let dec_key = jsonwebtoken::DecodingKey::from_ec_components(&pk.x, &pk.y).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.typ = Some("at+jwt".into());
    header.kid = Some(signer.kid().into());
    let claims = s
        .minter
        .mint(request("https://api.example"), now)
        .unwrap()
        .claims;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["https://api.example"]);
    validation.set_issuer(&[ISS]);
    let mut g = c.benchmark_group("jsonwebtoken");
    g.bench_function("encode", |b| {
        b.iter(|| jsonwebtoken::encode(&header, black_box(&claims), &enc_key).unwrap())
    });
    g.bench_function("decode", |b| {
        b.iter(|| {
            jsonwebtoken::decode::<AccessClaims>(black_box(&jws), &dec_key, &validation).unwrap()
        })
    });
    g.finish();
}

/// A DPoP proof by `key` for `method url`, carrying the hash of `token`.
fn dpop_proof(
    key: &tessera::keys::signing::SigningKeyPair,
    method: &str,
    url: &str,
    token: &str,
) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let jwk = key.public_jwk();
    let header = serde_json::json!({
        "typ": "dpop+jwt", "alg": "ES256",
        "jwk": { "kty": "EC", "crv": "P-256", "x": jwk.x, "y": jwk.y },
    });
    let ath = base64::Engine::encode(
        &B64,
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()),
    );
    let claims = serde_json::json!({
        "jti": uuid::Uuid::new_v4().to_string(), "htm": method, "htu": url,
        "iat": chrono::Utc::now().timestamp(), "ath": ath,
    });
    let input = format!(
        "{}.{}",
        base64::Engine::encode(&B64, header.to_string()),
        base64::Engine::encode(&B64, claims.to_string())
    );
    format!("{input}.{}", key.sign(input.as_bytes()).unwrap())
}

criterion_group! {
    name = tokens;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(tokens);
