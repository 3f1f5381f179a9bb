//! The verifier's rules, each proven with a crafted attack token, and the
//! actix extractor over HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::jwk::KeyPair;
use josekit::jwk::alg::ec::{EcCurve, EcKeyPair};
use serde_json::{Value, json};
use tessera::keys::signing::SigningKeyPair;
use tessera::verify::{Verifier, VerifyError};

use crate::helpers::{eventually, now};

const ISS: &str = "https://issuer.example";
const AUD: &str = "https://api.example";

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn header(key: &SigningKeyPair) -> Value {
    json!({ "alg": "ES256", "typ": "at+jwt", "kid": key.kid() })
}

fn claims() -> Value {
    let t = now();
    json!({
        "iss": ISS, "sub": "user-1", "aud": AUD, "exp": t + 900, "iat": t, "nbf": t,
        "jti": "5b1d5e7e-7a0e-4b7e-9d59-2f8b2f0f3c11", "client_id": "spa", "scope": "read write",
        "sid": "0d7b5d1c-54c3-4b6f-8a3a-0d5e4b9f7a21"
    })
}

/// Signs any header and claims with `key`, as an attacker holding that key would.
fn sign(key: &SigningKeyPair, header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let sig = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{sig}")
}

fn jwks(keys: &[&SigningKeyPair]) -> String {
    json!({ "keys": keys.iter().map(|k| serde_json::to_value(k.public_jwk()).unwrap()).collect::<Vec<_>>() })
        .to_string()
}

fn verifier(key: &SigningKeyPair) -> Verifier {
    Verifier::builder(ISS, AUD)
        .static_jwks(jwks(&[key]))
        .build()
        .unwrap()
}

async fn refused(v: &Verifier, token: &str) -> VerifyError {
    v.verify(token).await.expect_err("token must be refused")
}

#[tokio::test]
async fn a_genuine_token_verifies() {
    let key = SigningKeyPair::generate();
    let claims = verifier(&key)
        .verify(&sign(&key, &header(&key), &claims()))
        .await
        .unwrap();
    assert_eq!(claims.sub, "user-1");
    assert!(claims.has_scope("write") && !claims.has_scope("wri"));
}

#[tokio::test]
async fn algorithm_is_pinned_to_es256() {
    let key = SigningKeyPair::generate();
    let v = verifier(&key);
    let good = sign(&key, &header(&key), &claims());
    let (_, rest) = good.split_once('.').unwrap();
    let (payload, _) = rest.split_once('.').unwrap();

    // alg: none, with and without a signature.
    for alg in ["none", "None", "NONE"] {
        let h = json!({ "alg": alg, "typ": "at+jwt", "kid": key.kid() });
        assert!(matches!(
            refused(&v, &format!("{}.{payload}.", b64(&h))).await,
            VerifyError::Algorithm(_)
        ));
        let sig = good.rsplit('.').next().unwrap();
        assert!(matches!(
            refused(&v, &format!("{}.{payload}.{sig}", b64(&h))).await,
            VerifyError::Algorithm(_)
        ));
    }

    // HS256 "signed" with the public key (key confusion): as PEM-ish text and as JWK JSON.
    let public_jwk = serde_json::to_vec(key.public_jwk()).unwrap();
    let h = json!({ "alg": "HS256", "typ": "at+jwt", "kid": key.kid() });
    let input = format!("{}.{payload}", b64(&h));
    let mac = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &public_jwk),
        input.as_bytes(),
    );
    let forged = format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()));
    assert!(matches!(refused(&v, &forged).await, VerifyError::Algorithm(a) if a == "HS256"));

    for alg in ["ES384", "ES512", "RS256", "PS256", "EdDSA", "es256"] {
        let h = json!({ "alg": alg, "typ": "at+jwt", "kid": key.kid() });
        assert!(
            matches!(
                refused(&v, &sign(&key, &h, &claims())).await,
                VerifyError::Algorithm(_)
            ),
            "{alg}"
        );
    }
}

#[tokio::test]
async fn keys_come_only_from_the_issuer_key_set() {
    let key = SigningKeyPair::generate();
    let attacker = SigningKeyPair::generate();
    let v = verifier(&key);
    let attacker_jwk = serde_json::to_value(attacker.public_jwk()).unwrap();
    // Embedded jwk, jku and x5u pointing at the attacker's key are ignored.
    for (name, value) in [
        ("jwk", attacker_jwk.clone()),
        ("jku", json!("https://evil.example/jwks.json")),
        ("x5u", json!("https://evil.example/cert.pem")),
        (
            "x5c",
            json!(["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]),
        ),
    ] {
        let mut h = json!({ "alg": "ES256", "typ": "at+jwt", "kid": attacker.kid() });
        h[name] = value.clone();
        assert_eq!(
            refused(&v, &sign(&attacker, &h, &claims())).await,
            VerifyError::UnknownKey,
            "{name}"
        );
        // Claiming the genuine kid does not help either.
        h["kid"] = json!(key.kid());
        assert_eq!(
            refused(&v, &sign(&attacker, &h, &claims())).await,
            VerifyError::BadSignature,
            "{name}"
        );
    }
    let mut h = header(&key);
    h.as_object_mut().unwrap().remove("kid");
    assert!(matches!(
        refused(&v, &sign(&key, &h, &claims())).await,
        VerifyError::Malformed(_)
    ));
}

#[tokio::test]
async fn header_rules_typ_and_crit() {
    let key = SigningKeyPair::generate();
    let v = verifier(&key);
    for typ in [json!("JWT"), json!("jwt"), json!(null), json!(1)] {
        let mut h = header(&key);
        h["typ"] = typ.clone();
        assert_eq!(
            refused(&v, &sign(&key, &h, &claims())).await,
            VerifyError::WrongType,
            "{typ}"
        );
    }
    let mut h = header(&key);
    h["typ"] = json!("application/at+jwt");
    assert!(v.verify(&sign(&key, &h, &claims())).await.is_ok());

    let mut h = header(&key);
    h["crit"] = json!(["exp"]);
    assert_eq!(
        refused(&v, &sign(&key, &h, &claims())).await,
        VerifyError::UnknownCritical
    );
    let mut h = header(&key);
    h["zip"] = json!("DEF");
    assert!(matches!(
        refused(&v, &sign(&key, &h, &claims())).await,
        VerifyError::Malformed(_)
    ));
}

#[tokio::test]
async fn claims_rules_iss_aud_time() {
    let key = SigningKeyPair::generate();
    let v = verifier(&key);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        sign(&key, &header(&key), &c)
    };
    let t = now();
    assert_eq!(
        refused(&v, &with(&|c| c["iss"] = json!("https://evil.example"))).await,
        VerifyError::WrongIssuer
    );
    assert_eq!(
        refused(&v, &with(&|c| c["aud"] = json!("https://other.example"))).await,
        VerifyError::WrongAudience
    );
    assert!(
        v.verify(&with(&|c| c["aud"] = json!(["https://other.example", AUD])))
            .await
            .is_ok()
    );
    assert_eq!(
        refused(&v, &with(&|c| c["exp"] = json!(t - 60))).await,
        VerifyError::Expired
    );
    assert!(
        v.verify(&with(&|c| c["exp"] = json!(t - 10))).await.is_ok(),
        "within the 30 s leeway"
    );
    assert_eq!(
        refused(&v, &with(&|c| c["nbf"] = json!(t + 120))).await,
        VerifyError::NotYetValid
    );
    assert!(
        v.verify(&with(&|c| c["nbf"] = json!(t + 10))).await.is_ok(),
        "within the leeway"
    );
    // Issued in the future: it would slip past "revoke everything issued
    // before now" (sub and client revocations).
    assert_eq!(
        refused(&v, &with(&|c| c["iat"] = json!(t + 120))).await,
        VerifyError::NotYetValid
    );
    assert!(v.verify(&with(&|c| c["iat"] = json!(t + 10))).await.is_ok());
    for claim in [
        "exp",
        "nbf",
        "iss",
        "aud",
        "sub",
        "jti",
        "client_id",
        "scope",
        "iat",
    ] {
        let token = with(&|c| {
            c.as_object_mut().unwrap().remove(claim);
        });
        assert!(
            v.verify(&token).await.is_err(),
            "token without {claim} accepted"
        );
    }
    assert_eq!(
        refused(&v, &with(&|c| c["exp"] = json!("tomorrow"))).await,
        VerifyError::Claims
    );

    let strict = Verifier::builder(ISS, AUD)
        .static_jwks(jwks(&[&key]))
        .leeway(Duration::ZERO)
        .build()
        .unwrap();
    assert_eq!(
        refused(&strict, &with(&|c| c["exp"] = json!(t - 2))).await,
        VerifyError::Expired
    );
}

#[tokio::test]
async fn signatures_out_of_range_or_tampered_are_refused() {
    let key = SigningKeyPair::generate();
    let v = verifier(&key);
    let good = sign(&key, &header(&key), &claims());
    let (input, _) = good.rsplit_once('.').unwrap();
    // CVE-2022-21449: r = s = 0; and r = n.
    let zero = URL_SAFE_NO_PAD.encode([0u8; 64]);
    assert_eq!(
        refused(&v, &format!("{input}.{zero}")).await,
        VerifyError::BadSignature
    );
    let n = hex_order();
    let r_is_n = URL_SAFE_NO_PAD.encode([n.as_slice(), &[1u8; 32]].concat());
    assert_eq!(
        refused(&v, &format!("{input}.{r_is_n}")).await,
        VerifyError::BadSignature
    );
    // DER-encoded or truncated signatures.
    let short = URL_SAFE_NO_PAD.encode([1u8; 63]);
    assert_eq!(
        refused(&v, &format!("{input}.{short}")).await,
        VerifyError::BadSignature
    );
    // A changed payload.
    let mut c = claims();
    c["scope"] = json!("admin");
    let tampered = format!(
        "{}.{}.{}",
        b64(&header(&key)),
        b64(&c),
        good.rsplit('.').next().unwrap()
    );
    assert_eq!(refused(&v, &tampered).await, VerifyError::BadSignature);
}

fn hex_order() -> Vec<u8> {
    let hex = "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551";
    (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[tokio::test]
async fn malformed_and_oversized_input_is_refused_cleanly() {
    let key = SigningKeyPair::generate();
    let v = verifier(&key);
    let good = sign(&key, &header(&key), &claims());
    let huge = format!("{good}{}", "A".repeat(9000));
    assert_eq!(refused(&v, &huge).await, VerifyError::TooLong);
    let cases = [
        String::new(),
        ".".into(),
        "..".into(),
        "a.b".into(),
        "a.b.c.d".into(),
        format!("{good}="),
        good.replace('.', " "),
        format!("{}.e30.AA", URL_SAFE_NO_PAD.encode(b"[1,2]")),
        format!("{}.e30.AA", URL_SAFE_NO_PAD.encode(b"{not json")),
        "eyJhbGciOiJFUzI1NiJ9.\u{fe0f}.x".into(),
        format!(
            "{}.!!!.{}",
            good.split('.').next().unwrap(),
            good.rsplit('.').next().unwrap()
        ),
    ];
    for t in cases {
        let e = refused(&v, &t).await;
        assert!(
            matches!(
                e,
                VerifyError::Malformed(_) | VerifyError::Encryption(_) | VerifyError::BadSignature
            ),
            "{t:?} → {e:?}"
        );
    }
}

fn ec_audience() -> (EcKeyPair, String) {
    let pair = EcKeyPair::generate(EcCurve::P256).unwrap();
    let private = pair.to_jwk_private_key().to_string();
    (pair, private)
}

fn encrypt(
    inner: &str,
    alg: &dyn josekit::jwe::JweEncrypter,
    tweak: impl Fn(&mut josekit::jwe::JweHeader),
) -> String {
    let mut h = josekit::jwe::JweHeader::new();
    h.set_content_encryption("A256GCM");
    h.set_content_type("JWT");
    tweak(&mut h);
    josekit::jwe::serialize_compact(inner.as_bytes(), &h, alg).unwrap()
}

#[tokio::test]
async fn jwe_rules() {
    let key = SigningKeyPair::generate();
    let (pair, private) = ec_audience();
    let v = Verifier::builder(ISS, AUD)
        .static_jwks(jwks(&[&key]))
        .decryption_key(&private)
        .build()
        .unwrap();
    let inner = sign(&key, &header(&key), &claims());
    let enc = josekit::jwe::ECDH_ES_A256KW
        .encrypter_from_jwk(&pair.to_jwk_public_key())
        .unwrap();

    assert!(v.verify(&encrypt(&inner, &enc, |_| {})).await.is_ok());
    // A plain JWS where a JWE is expected, and the reverse.
    assert!(matches!(
        refused(&v, &inner).await,
        VerifyError::Encryption(_)
    ));
    assert!(matches!(
        refused(&verifier(&key), &encrypt(&inner, &enc, |_| {})).await,
        VerifyError::Encryption(_)
    ));
    // The nested token is still fully verified.
    let mut bad = claims();
    bad["aud"] = json!("https://other.example");
    let wrong_aud = sign(&key, &header(&key), &bad);
    assert_eq!(
        refused(&v, &encrypt(&wrong_aud, &enc, |_| {})).await,
        VerifyError::WrongAudience
    );
    // Compression and other content types are refused.
    let zipped = encrypt(&inner, &enc, |h| h.set_compression("DEF"));
    assert!(matches!(
        refused(&v, &zipped).await,
        VerifyError::Encryption(_)
    ));
    let cty = encrypt(&inner, &enc, |h| h.set_content_type("json"));
    assert!(matches!(
        refused(&v, &cty).await,
        VerifyError::Encryption(_)
    ));
    // Another key-management algorithm, even to the right key.
    let ecdh_direct = josekit::jwe::ECDH_ES
        .encrypter_from_jwk(&pair.to_jwk_public_key())
        .unwrap();
    assert!(matches!(
        refused(&v, &encrypt(&inner, &ecdh_direct, |_| {})).await,
        VerifyError::Algorithm(_)
    ));
    // PBES2 with a password is never accepted.
    let pbes2 = josekit::jwe::PBES2_HS256_A128KW
        .encrypter_from_bytes(b"password")
        .unwrap();
    assert!(
        matches!(refused(&v, &encrypt(&inner, &pbes2, |_| {})).await, VerifyError::Algorithm(a) if a == "PBES2-HS256+A128KW")
    );
    // A JWE whose payload is not a signed token.
    let not_jws = encrypt("{\"sub\":\"admin\"}", &enc, |_| {});
    assert!(matches!(
        refused(&v, &not_jws).await,
        VerifyError::Encryption(_)
    ));
}

#[tokio::test]
async fn jwe_with_an_off_curve_ephemeral_key_is_refused() {
    let key = SigningKeyPair::generate();
    let (pair, private) = ec_audience();
    let v = Verifier::builder(ISS, AUD)
        .static_jwks(jwks(&[&key]))
        .decryption_key(&private)
        .build()
        .unwrap();
    let enc = josekit::jwe::ECDH_ES_A256KW
        .encrypter_from_jwk(&pair.to_jwk_public_key())
        .unwrap();
    let good = encrypt(&sign(&key, &header(&key), &claims()), &enc, |_| {});
    let (h, rest) = good.split_once('.').unwrap();
    let mut header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap();
    // (1, 1) is not on P-256.
    let mut one = [0u8; 32];
    one[31] = 1;
    header["epk"]["x"] = json!(URL_SAFE_NO_PAD.encode(one));
    header["epk"]["y"] = json!(URL_SAFE_NO_PAD.encode(one));
    let evil = format!("{}.{rest}", b64(&header));
    assert!(
        matches!(refused(&v, &evil).await, VerifyError::Encryption(m) if m.contains("P-256 point"))
    );
    header["epk"]["crv"] = json!("P-384");
    let evil = format!("{}.{rest}", b64(&header));
    assert!(matches!(
        refused(&v, &evil).await,
        VerifyError::Encryption(_)
    ));
}

/// A JWKS server that counts how often it is asked.
async fn jwks_server(body: Arc<std::sync::Mutex<String>>, hits: Arc<AtomicUsize>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut sock, _)) = listener.accept().await {
            hits.fetch_add(1, Ordering::SeqCst);
            let body = body.lock().unwrap().clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let res = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: max-age=300\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(res.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/jwks.json")
}

#[tokio::test]
async fn unknown_kids_cannot_make_the_verifier_hammer_the_issuer() {
    let key = SigningKeyPair::generate();
    let body = Arc::new(std::sync::Mutex::new(jwks(&[&key])));
    let hits = Arc::new(AtomicUsize::new(0));
    let url = jwks_server(body.clone(), hits.clone()).await;
    let v = Verifier::builder(ISS, AUD)
        .jwks_url(url)
        .min_refresh_interval(Duration::from_millis(500))
        .build()
        .unwrap();
    assert!(
        v.verify(&sign(&key, &header(&key), &claims()))
            .await
            .is_ok()
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // A flood of random kids: at most one fetch per refresh interval.
    let flood = std::time::Instant::now();
    for i in 0..200 {
        let mut h = header(&key);
        h["kid"] = json!(format!("random-{i}"));
        assert_eq!(
            refused(&v, &sign(&key, &h, &claims())).await,
            VerifyError::UnknownKey
        );
    }
    let allowed = 1 + flood.elapsed().as_millis() as usize / 500 + 1;
    let fetched = hits.load(Ordering::SeqCst);
    assert!(
        fetched <= allowed,
        "{fetched} fetches for 200 unknown kids (allowed {allowed})"
    );

    // After a rotation, a token with the new kid triggers one refresh and verifies.
    let next = SigningKeyPair::generate();
    *body.lock().unwrap() = jwks(&[&next, &key]);
    // Refused without a fetch until the refresh interval (500 ms) since
    // the flood's last fetch has passed; then one fetch, and it verifies.
    let before = hits.load(Ordering::SeqCst);
    let rotated = sign(&next, &header(&next), &claims());
    eventually(
        Duration::from_millis(550),
        "the new key is fetched once the interval has passed",
        async || match v.verify(&rotated).await {
            Ok(_) => Ok(()),
            Err(VerifyError::UnknownKey) => Err("unknown key".into()),
            Err(e) => panic!("refused, but not for an unknown key: {e:?}"),
        },
    )
    .await;
    assert_eq!(hits.load(Ordering::SeqCst), before + 1);
    // Known keys are served from the cache.
    assert!(
        v.verify(&sign(&key, &header(&key), &claims()))
            .await
            .is_ok()
    );
    assert_eq!(hits.load(Ordering::SeqCst), before + 1);
}

#[tokio::test]
async fn the_extractor_answers_401_with_www_authenticate() {
    use actix_web::{App, HttpResponse, test, web};
    use tessera::verify::Authenticated;

    let key = SigningKeyPair::generate();
    let app =
        test::init_service(App::new().app_data(web::Data::new(verifier(&key))).route(
            "/me",
            web::get().to(|u: Authenticated| async move {
                HttpResponse::Ok().body(u.claims().sub.clone())
            }),
        ))
        .await;
    let call = |auth: Option<String>| {
        let mut req = test::TestRequest::get().uri("/me");
        if let Some(a) = auth {
            req = req.insert_header(("Authorization", a));
        }
        req.to_request()
    };
    let res = test::call_service(
        &app,
        call(Some(format!(
            "Bearer {}",
            sign(&key, &header(&key), &claims())
        ))),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(test::read_body(res).await, "user-1");
    let res = test::call_service(
        &app,
        call(Some(format!(
            "bearer {}",
            sign(&key, &header(&key), &claims())
        ))),
    )
    .await;
    assert_eq!(res.status(), 200, "the scheme is case-insensitive");

    let res = test::call_service(&app, call(None)).await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers().get("www-authenticate").unwrap(), "Bearer");

    let mut expired = claims();
    expired["exp"] = json!(now() - 3600);
    let res = test::call_service(
        &app,
        call(Some(format!(
            "Bearer {}",
            sign(&key, &header(&key), &expired)
        ))),
    )
    .await;
    assert_eq!(res.status(), 401);
    let www = res
        .headers()
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(www.starts_with("Bearer error=\"invalid_token\""), "{www}");
    assert!(www.contains("expired"), "{www}");
    let body: Value = test::read_body_json(res).await;
    assert_eq!(body["error"], "invalid_token");

    let res = test::call_service(&app, call(Some("Basic dXNlcjpwYXNz".into()))).await;
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn an_unreachable_issuer_means_unavailable_not_invalid() {
    let key = SigningKeyPair::generate();
    // Nothing listens on port 1.
    let v = Verifier::builder(ISS, AUD)
        .jwks_url("http://127.0.0.1:1/jwks.json")
        .build()
        .unwrap();
    assert_eq!(
        refused(&v, &sign(&key, &header(&key), &claims())).await,
        VerifyError::KeysUnavailable
    );
}

#[tokio::test]
async fn builder_refuses_unsafe_settings() {
    let b = || Verifier::builder(ISS, AUD);
    assert!(
        b().min_refresh_interval(Duration::ZERO).build().is_err(),
        "no rate limit"
    );
    assert!(
        b().min_refresh_interval(Duration::from_secs(100_000))
            .build()
            .is_err()
    );
    assert!(b().leeway(Duration::from_secs(3600)).build().is_err());
    assert!(b().static_jwks("{\"keys\":[]}").build().is_err());
    assert!(b().static_jwks("{}").jwks_url("http://x").build().is_err());
    assert!(
        b().decryption_key("{\"kty\":\"oct\",\"k\":\"AA\"}")
            .build()
            .is_err()
    );
    assert!(Verifier::builder("", AUD).build().is_err());
}

#[tokio::test]
async fn attacker_text_never_reaches_www_authenticate() {
    use actix_web::{App, HttpResponse, test, web};
    use tessera::verify::Authenticated;
    let key = SigningKeyPair::generate();
    let app = test::init_service(App::new().app_data(web::Data::new(verifier(&key))).route(
        "/me",
        web::get().to(|_: Authenticated| async { HttpResponse::Ok().finish() }),
    ))
    .await;
    let h = json!({ "alg": "x\", error=\"injected", "typ": "at+jwt", "kid": key.kid() });
    let token = sign(&key, &h, &claims());
    let req = test::TestRequest::get()
        .uri("/me")
        .insert_header(("Authorization", format!("Bearer {token}")))
        .to_request();
    let res = test::call_service(&app, req).await;
    assert_eq!(res.status(), 401);
    let www = res
        .headers()
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!www.contains("injected"), "{www}");
    assert_eq!(www.matches('"').count(), 4, "{www}");
}

#[tokio::test]
async fn a_feed_that_never_advances_cannot_trap_the_poller() {
    let key = SigningKeyPair::generate();
    // Always "more follows", always the same cursor.
    let body = Arc::new(std::sync::Mutex::new(
        json!({"revocations": [], "next_cursor": "5", "has_more": true}).to_string(),
    ));
    let hits = Arc::new(AtomicUsize::new(0));
    let url = jwks_server(body.clone(), hits.clone()).await;
    let v = Verifier::builder(ISS, AUD)
        .static_jwks(jwks(&[&key]))
        .revocation_feed("rs", "secret")
        .revocation_feed_url(url)
        .build()
        .unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), v.poll_revocations())
        .await
        .expect("the poll ends")
        .unwrap_err();
    assert!(e.to_string().contains("did not advance"), "{e}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "the first page, then the stuck one"
    );
    // A cursor that could smuggle query parameters or fill memory is refused.
    *body.lock().unwrap() =
        json!({"revocations": [], "next_cursor": "9".repeat(10_000), "has_more": false})
            .to_string();
    assert!(v.poll_revocations().await.is_err());
    // A malformed page's text never reaches the error (and so the logs).
    *body.lock().unwrap() =
        json!({"revocations": [{"kind": "evil\u{1b}[31m-injected", "value": "x",
        "revoked_at": 1, "relevant_until": 2}], "next_cursor": "1", "has_more": false})
        .to_string();
    let e = v.poll_revocations().await.unwrap_err();
    assert!(
        matches!(&e, tessera::verify::FeedError::Malformed(m)
            if m.starts_with("not a revocation feed page") && !m.contains("injected")),
        "{e}"
    );
    // The verifier keeps working on its last list.
    assert!(
        v.verify(&sign(&key, &header(&key), &claims()))
            .await
            .is_ok()
    );
}
