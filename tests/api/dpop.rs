//! DPoP-bound tokens at a resource server (RFC 9449 §7): the `verify`
//! library and its extractor, with tokens signed by hand as the issuer
//! would bind them and proofs made by a client key.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tessera::keys::signing::SigningKeyPair;
use tessera::verify::dpop::{DpopError, DpopOptions, NonceKey};
use tessera::verify::{Verifier, VerifyError};

use crate::helpers::now;

const ISS: &str = "https://issuer.example";
const AUD: &str = "https://api.example";
const URL: &str = "https://api.example/orders";

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn sign(key: &SigningKeyPair, header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    format!("{input}.{}", key.sign(input.as_bytes()).unwrap())
}

/// An access token from `issuer`, bound to `client`'s key if given.
fn token(issuer: &SigningKeyPair, client: Option<&SigningKeyPair>) -> String {
    let t = now();
    let mut claims = json!({
        "iss": ISS, "sub": "user-1", "aud": AUD, "exp": t + 900, "iat": t, "nbf": t,
        "jti": uuid::Uuid::new_v4().to_string(), "client_id": "spa", "scope": "read",
    });
    if let Some(client) = client {
        // A key's kid is its RFC 7638 thumbprint: the jkt.
        claims["cnf"] = json!({ "jkt": client.kid() });
    }
    sign(
        issuer,
        &json!({ "alg": "ES256", "typ": "at+jwt", "kid": issuer.kid() }),
        &claims,
    )
}

/// A proof by `client` for `method url`, carrying the hash of `token`;
/// `extra` is merged into the claims (`null` removes one).
fn proof(client: &SigningKeyPair, method: &str, url: &str, token: &str, extra: Value) -> String {
    let ath = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ));
    let mut claims = json!({
        "jti": uuid::Uuid::new_v4().to_string(), "htm": method, "htu": url, "iat": now(), "ath": ath,
    });
    for (k, v) in extra.as_object().unwrap() {
        match v {
            Value::Null => claims.as_object_mut().unwrap().remove(k),
            v => claims.as_object_mut().unwrap().insert(k.clone(), v.clone()),
        };
    }
    let mut jwk = serde_json::to_value(client.public_jwk()).unwrap();
    for member in ["kid", "alg", "use"] {
        jwk.as_object_mut().unwrap().remove(member);
    }
    sign(
        client,
        &json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": jwk }),
        &claims,
    )
}

fn verifier(issuer: &SigningKeyPair) -> Verifier {
    let jwks = json!({ "keys": [issuer.public_jwk()] }).to_string();
    Verifier::builder(ISS, AUD)
        .static_jwks(jwks)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_bound_token_needs_a_proof_by_its_key() {
    let (issuer, client, thief) = (
        SigningKeyPair::generate(),
        SigningKeyPair::generate(),
        SigningKeyPair::generate(),
    );
    let v = verifier(&issuer);
    let bound = token(&issuer, Some(&client));

    let claims = v
        .verify_dpop(
            &bound,
            &proof(&client, "GET", URL, &bound, json!({})),
            "GET",
            URL,
        )
        .await
        .unwrap();
    assert_eq!(claims.cnf.unwrap().jkt, client.kid());

    // Stolen: as a bearer token, or with the thief's own proof.
    assert_eq!(v.verify(&bound).await, Err(VerifyError::DpopBound));
    let theirs = proof(&thief, "GET", URL, &bound, json!({}));
    assert_eq!(
        v.verify_dpop(&bound, &theirs, "GET", URL).await,
        Err(VerifyError::Dpop(DpopError::Jwk(
            "not the key the token is bound to"
        )))
    );
    // A proof made for another token, or for none.
    let other = token(&issuer, Some(&client));
    let for_other = proof(&client, "GET", URL, &other, json!({}));
    assert_eq!(
        v.verify_dpop(&bound, &for_other, "GET", URL).await,
        Err(VerifyError::Dpop(DpopError::AccessTokenHash))
    );
    let without_ath = proof(&client, "GET", URL, &bound, json!({ "ath": null }));
    assert_eq!(
        v.verify_dpop(&bound, &without_ath, "GET", URL).await,
        Err(VerifyError::Dpop(DpopError::AccessTokenHash))
    );
    // Another method or URL than the proof names.
    let get = proof(&client, "GET", URL, &bound, json!({}));
    assert_eq!(
        v.verify_dpop(&bound, &get, "DELETE", URL).await,
        Err(VerifyError::Dpop(DpopError::Method))
    );
    assert_eq!(
        v.verify_dpop(&bound, &get, "GET", "https://api.example/admin")
            .await,
        Err(VerifyError::Dpop(DpopError::Url))
    );
    // Replayed.
    let once = proof(&client, "GET", URL, &bound, json!({}));
    v.verify_dpop(&bound, &once, "GET", URL).await.unwrap();
    assert_eq!(
        v.verify_dpop(&bound, &once, "GET", URL).await,
        Err(VerifyError::Dpop(DpopError::Replayed))
    );
    // Stale or from the future.
    for iat in [now() - 300, now() + 300] {
        let p = proof(&client, "GET", URL, &bound, json!({ "iat": iat }));
        assert_eq!(
            v.verify_dpop(&bound, &p, "GET", URL).await,
            Err(VerifyError::Dpop(DpopError::IssuedAt))
        );
    }
    // The token's own checks still come first.
    let unbound = token(&issuer, None);
    let p = proof(&client, "GET", URL, &unbound, json!({}));
    assert_eq!(
        v.verify_dpop(&unbound, &p, "GET", URL).await,
        Err(VerifyError::NotDpopBound)
    );
    v.verify(&unbound).await.unwrap();
    let forged = token(&thief, Some(&thief));
    let p = proof(&thief, "GET", URL, &forged, json!({}));
    assert!(matches!(
        v.verify_dpop(&forged, &p, "GET", URL).await,
        Err(VerifyError::UnknownKey)
    ));
}

#[tokio::test]
async fn a_cnf_the_verifier_cannot_read_is_refused() {
    let issuer = SigningKeyPair::generate();
    let v = verifier(&issuer);
    let t = now();
    for cnf in [
        json!("x"),
        json!({ "x5t#S256": "abc" }),
        json!({ "jkt": 7 }),
    ] {
        let claims = json!({
            "iss": ISS, "sub": "user-1", "aud": AUD, "exp": t + 900, "iat": t, "nbf": t,
            "jti": "j", "client_id": "spa", "scope": "read", "cnf": cnf,
        });
        let tok = sign(
            &issuer,
            &json!({ "alg": "ES256", "typ": "at+jwt", "kid": issuer.kid() }),
            &claims,
        );
        assert_eq!(v.verify(&tok).await, Err(VerifyError::Claims), "{cnf}");
    }
}

#[tokio::test]
async fn the_extractor_takes_dpop_and_challenges_with_the_rfc_errors() {
    use actix_web::{App, HttpResponse, test, web};
    use tessera::verify::Authenticated;

    let (issuer, client) = (SigningKeyPair::generate(), SigningKeyPair::generate());
    let jwks = json!({ "keys": [issuer.public_jwk()] }).to_string();
    let nonces = || NonceKey::new(&[3; 32], std::time::Duration::from_secs(60));
    let v = Verifier::builder(ISS, AUD)
        .static_jwks(jwks)
        .dpop_base_url("https://api.example/")
        .dpop(
            DpopOptions {
                require_nonce: true,
                ..DpopOptions::default()
            },
            Some(nonces()),
        )
        .build()
        .unwrap();
    let app =
        test::init_service(App::new().app_data(web::Data::new(v)).route(
            "/orders",
            web::get().to(|u: Authenticated| async move {
                HttpResponse::Ok().body(u.claims().sub.clone())
            }),
        ))
        .await;
    let bound = token(&issuer, Some(&client));
    let call = |auth: String, proofs: Vec<String>| {
        let mut req = test::TestRequest::get()
            .uri("/orders")
            .insert_header(("Authorization", auth));
        for p in proofs {
            req = req.append_header(("DPoP", p));
        }
        req.to_request()
    };
    let www = |res: &actix_web::dev::ServiceResponse| {
        res.headers()
            .get("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };

    // Without a nonce: 401 use_dpop_nonce and a nonce to retry with.
    let res = test::call_service(
        &app,
        call(
            format!("DPoP {bound}"),
            vec![proof(&client, "GET", URL, &bound, json!({}))],
        ),
    )
    .await;
    assert_eq!(res.status(), 401);
    assert!(
        www(&res).starts_with("DPoP error=\"use_dpop_nonce\""),
        "{}",
        www(&res)
    );
    assert!(www(&res).contains("algs=\"ES256 ES384 EdDSA\""));
    let nonce = res
        .headers()
        .get("dpop-nonce")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = test::read_body_json(res).await;
    assert_eq!(body["error"], "use_dpop_nonce");

    let good = || proof(&client, "GET", URL, &bound, json!({ "nonce": nonce }));
    let res = test::call_service(&app, call(format!("DPoP {bound}"), vec![good()])).await;
    assert_eq!(res.status(), 200);
    assert_eq!(test::read_body(res).await, "user-1");
    let res = test::call_service(&app, call(format!("dpop {bound}"), vec![good()])).await;
    assert_eq!(res.status(), 200, "the scheme is case-insensitive");

    // As a bearer token: invalid_token.
    let res = test::call_service(&app, call(format!("Bearer {bound}"), vec![])).await;
    assert_eq!(res.status(), 401);
    assert!(www(&res).starts_with("Bearer error=\"invalid_token\""));
    assert!(www(&res).contains("DPoP-bound"), "{}", www(&res));

    // No proof, two proofs, a proof for another URL or by another key.
    let other_url = proof(
        &client,
        "GET",
        "https://other.example/orders",
        &bound,
        json!({ "nonce": nonce }),
    );
    let other_key = proof(
        &SigningKeyPair::generate(),
        "GET",
        URL,
        &bound,
        json!({ "nonce": nonce }),
    );
    for (proofs, says) in [
        (vec![], "a DPoP proof header is required"),
        (vec![good(), good()], "only one DPoP proof header"),
        (vec![other_url], "htu"),
        (vec![other_key], "not the key the token is bound to"),
        (vec!["not.a.proof".into()], "malformed DPoP proof"),
    ] {
        let res = test::call_service(&app, call(format!("DPoP {bound}"), proofs)).await;
        assert_eq!(res.status(), 401);
        let challenge = www(&res);
        assert!(
            challenge.starts_with("DPoP error=\"invalid_dpop_proof\""),
            "{challenge}"
        );
        assert!(challenge.contains(says), "{challenge}");
        let body: Value = test::read_body_json(res).await;
        assert_eq!(body["error"], "invalid_dpop_proof");
    }

    // An unbound token under the DPoP scheme: invalid_token.
    let unbound = token(&issuer, None);
    let p = proof(&client, "GET", URL, &unbound, json!({ "nonce": nonce }));
    let res = test::call_service(&app, call(format!("DPoP {unbound}"), vec![p])).await;
    assert_eq!(res.status(), 401);
    assert!(www(&res).starts_with("DPoP error=\"invalid_token\""));
}
