//! DPoP (RFC 9449): bound tokens at a resource server (the `verify`
//! library and its extractor, with tokens signed by hand), and proofs at
//! the issuer's token endpoint binding access and refresh tokens.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tessera::keys::signing::SigningKeyPair;
use tessera::verify::dpop::{DpopError, DpopOptions, NonceKey};
use tessera::verify::{Verifier, VerifyError};

use crate::helpers::{AUD as APP_AUD, ClientSpec, Engine, ISSUER, fixture, now, on_both_engines};

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

// ---- the issuer: proofs at the token endpoint, bound tokens ----

fn token_url() -> String {
    format!("{ISSUER}/oauth/token")
}

/// A proof for `POST /oauth/token` by `key` (no `ath`).
fn token_proof(key: &SigningKeyPair) -> String {
    proof(key, "POST", &token_url(), "", json!({ "ath": null }))
}

/// `POST /oauth/token` with `pairs` and, if given, a `DPoP` header.
async fn token_request(
    app: &crate::helpers::TestApp,
    pairs: &[(&str, &str)],
    dpop: Option<String>,
) -> (u16, Value) {
    let mut req = app.form_request("/oauth/token", pairs);
    if let Some(p) = dpop {
        req = req.header("DPoP", p);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    if status == 200 {
        assert_eq!(res.headers()["cache-control"], "no-store");
    }
    (status, res.json().await.unwrap())
}

fn password_form<'a>() -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "password"),
        ("client_id", "spa"),
        ("username", "alice"),
        ("password", crate::helpers::PASSWORD),
    ]
}

fn refresh_form(token: &str) -> Vec<(&str, &str)> {
    vec![
        ("grant_type", "refresh_token"),
        ("client_id", "spa"),
        ("refresh_token", token),
    ]
}

/// The claims of a JWS, unverified (the tests check them elsewhere).
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

async fn a_proof_binds_the_access_token_and_the_sessions_refresh_tokens(engine: Engine) {
    let f = fixture(engine).await;
    let key = SigningKeyPair::generate();
    let (status, body) = token_request(&f.app, &password_form(), Some(token_proof(&key))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    let access = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims_of(&access)["cnf"]["jkt"], key.kid());
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();

    // Introspection tells the resource server what the token is bound to.
    let info = f.introspect(&access).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["token_type"], "DPoP");
    assert_eq!(info["cnf"]["jkt"], key.kid());

    // A resource server refuses it as a bearer token and takes it with a proof.
    let v = Verifier::builder(ISSUER, APP_AUD)
        .jwks_url(format!("{}/.well-known/jwks.json", f.app.address))
        .build()
        .unwrap();
    assert_eq!(v.verify(&access).await, Err(VerifyError::DpopBound));
    let at_rs = proof(&key, "GET", URL, &access, json!({}));
    v.verify_dpop(&access, &at_rs, "GET", URL).await.unwrap();

    // The refresh token without a proof, or with another key's: refused,
    // and nothing consumed or revoked.
    let thief = SigningKeyPair::generate();
    for dpop in [None, Some(token_proof(&thief))] {
        let (status, body) = token_request(&f.app, &refresh_form(&refresh), dpop).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "invalid_dpop_proof", "{body}");
    }
    // Cut off the binding: not a token at all.
    let (unbound, _) = refresh.rsplit_once('.').unwrap();
    let (status, body) = token_request(&f.app, &refresh_form(unbound), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    // The owner refreshes with the very token the thief tried.
    let (status, body) =
        token_request(&f.app, &refresh_form(&refresh), Some(token_proof(&key))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    assert_eq!(
        claims_of(body["access_token"].as_str().unwrap())["cnf"]["jkt"],
        key.kid()
    );
    let next = body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(next.split('.').count(), 4, "the next token is bound too");

    // The thief replaying the consumed token with their own key cannot
    // end the session either: the binding is checked first.
    let (status, body) =
        token_request(&f.app, &refresh_form(&refresh), Some(token_proof(&thief))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_dpop_proof"))
    );
    let (status, body) = token_request(&f.app, &refresh_form(&next), Some(token_proof(&key))).await;
    assert_eq!(status, 200, "the session is alive: {body}");
    let latest = body["refresh_token"].as_str().unwrap().to_owned();
    let latest_access = body["access_token"].as_str().unwrap().to_owned();

    // Nor can they revoke it or log it out without the key.
    let form = [("client_id", "spa"), ("token", latest.as_str())];
    let logout = [("client_id", "spa"), ("refresh_token", latest.as_str())];
    let revoke_proof = |k: &SigningKeyPair| {
        proof(
            k,
            "POST",
            &format!("{ISSUER}/oauth/revoke"),
            "",
            json!({ "ath": null }),
        )
    };
    for (path, pairs, dpop) in [
        ("/oauth/revoke", &form, None),
        ("/oauth/revoke", &form, Some(revoke_proof(&thief))),
        ("/oauth/logout", &logout, None),
    ] {
        let mut req = f.app.form_request(path, pairs);
        if let Some(p) = dpop {
            req = req.header("DPoP", p);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 400, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "invalid_dpop_proof", "{path}: {body}");
    }
    assert_eq!(f.introspect(&latest_access).await["active"], true);
    let res = f
        .app
        .form_request("/oauth/revoke", &form)
        .header("DPoP", revoke_proof(&key))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        f.introspect(&latest_access).await["active"],
        false,
        "the session ended"
    );
}

async fn proofs_are_checked_at_the_token_endpoint(engine: Engine) {
    let f = fixture(engine).await;
    let key = SigningKeyPair::generate();
    let once = token_proof(&key);
    let (status, _) = token_request(&f.app, &password_form(), Some(once.clone())).await;
    assert_eq!(status, 200);
    let other_url = proof(
        &key,
        "POST",
        &format!("{ISSUER}/oauth/revoke"),
        "",
        json!({ "ath": null }),
    );
    let stale = proof(
        &key,
        "POST",
        &token_url(),
        "",
        json!({ "ath": null, "iat": now() - 600 }),
    );
    let get = proof(&key, "GET", &token_url(), "", json!({ "ath": null }));
    for (dpop, says) in [
        (once, "already used"),
        (other_url, "htu"),
        (stale, "iat"),
        (get, "htm"),
        ("x.y.z".into(), "malformed"),
    ] {
        let (status, body) = token_request(&f.app, &password_form(), Some(dpop)).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "invalid_dpop_proof");
        assert!(
            body["error_description"].as_str().unwrap().contains(says),
            "{body}"
        );
    }
    // Two DPoP headers.
    let res = f
        .app
        .form_request("/oauth/token", &password_form())
        .header("DPoP", token_proof(&key))
        .header("DPoP", token_proof(&key))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "invalid_dpop_proof");

    // client_credentials: a bound access token, no refresh token.
    let (status, body) = token_request(
        &f.app,
        &[("grant_type", "client_credentials")],
        Some(token_proof(&key)),
    )
    .await;
    assert_eq!(status, 401, "no client authentication: {body}");
    let res = f
        .app
        .form_request("/oauth/token", &[("grant_type", "client_credentials")])
        .basic_auth("rs", Some(&f.rs))
        .header("DPoP", token_proof(&key))
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP", "{body}");
    assert_eq!(
        claims_of(body["access_token"].as_str().unwrap())["cnf"]["jkt"],
        key.kid()
    );

    // Without a proof nothing changes: a bearer token.
    let (status, body) = token_request(&f.app, &password_form(), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["token_type"], "Bearer");
    assert!(claims_of(body["access_token"].as_str().unwrap())["cnf"].is_null());
    assert_eq!(
        body["refresh_token"].as_str().unwrap().split('.').count(),
        3
    );

    let meta: Value = f
        .app
        .get("/.well-known/oauth-authorization-server")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        meta["dpop_signing_alg_values_supported"],
        json!(["ES256", "ES384", "EdDSA"])
    );
}

async fn require_dpop_clients_get_no_token_without_a_proof(engine: Engine) {
    let f = fixture(engine).await;
    f.app
        .add_client(ClientSpec::public("strict", &["password", "refresh_token"]).require_dpop())
        .await;
    let mut form = password_form();
    form[1] = ("client_id", "strict");
    let (status, body) = token_request(&f.app, &form, None).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_dpop_proof");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("requires DPoP"),
        "{body}"
    );
    let key = SigningKeyPair::generate();
    let (status, body) = token_request(&f.app, &form, Some(token_proof(&key))).await;
    assert_eq!(status, 200, "{body}");
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let mut again = refresh_form(&refresh);
    again[1] = ("client_id", "strict");
    let (status, body) = token_request(&f.app, &again, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_dpop_proof"))
    );
    let (status, _) = token_request(&f.app, &again, Some(token_proof(&key))).await;
    assert_eq!(status, 200);
}

async fn our_own_endpoints_take_bound_tokens_with_their_proofs(engine: Engine) {
    let f = fixture(engine).await;
    let key = SigningKeyPair::generate();
    let res = f
        .app
        .form_request("/oauth/token", &[("grant_type", "client_credentials")])
        .basic_auth("admin", Some(&f.admin))
        .header("DPoP", token_proof(&key))
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP", "{body}");
    let admin = body["access_token"].as_str().unwrap().to_owned();
    let keys = format!("{}/admin/v1/keys", f.app.address);
    let htu = format!("{ISSUER}/admin/v1/keys");
    let call = |auth: String, dpop: Option<String>| {
        let mut req = f.app.client.get(&keys).header("Authorization", auth);
        if let Some(p) = dpop {
            req = req.header("DPoP", p);
        }
        req.send()
    };
    let res = call(format!("Bearer {admin}"), None).await.unwrap();
    assert_eq!(res.status(), 401, "a bound token is no bearer token");
    let res = call(
        format!("DPoP {admin}"),
        Some(proof(&key, "GET", &htu, &admin, json!({}))),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let res = call(
        format!("DPoP {admin}"),
        Some(proof(
            &SigningKeyPair::generate(),
            "GET",
            &htu,
            &admin,
            json!({}),
        )),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 401);
    let challenge = res.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.starts_with("DPoP error=\"invalid_dpop_proof\""),
        "{challenge}"
    );
}

async fn server_nonces_are_required_when_configured(engine: Engine) {
    let f = crate::helpers::fixture_with(engine, &[("TESSERA_DPOP_NONCE", "on")]).await;
    let key = SigningKeyPair::generate();
    let res = f
        .app
        .form_request("/oauth/token", &password_form())
        .header("DPoP", token_proof(&key))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let nonce = res.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "use_dpop_nonce", "{body}");

    let with_nonce = |nonce: &str| {
        proof(
            &key,
            "POST",
            &token_url(),
            "",
            json!({ "ath": null, "nonce": nonce }),
        )
    };
    let res = f
        .app
        .form_request("/oauth/token", &password_form())
        .header("DPoP", with_nonce(&nonce))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers().contains_key("dpop-nonce"),
        "each answer carries the nonce"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP");

    // A nonce of another deployment (another master key), or made up.
    let other = crate::helpers::fixture_with(engine, &[("TESSERA_DPOP_NONCE", "on")]).await;
    let res = other
        .app
        .form_request("/oauth/token", &password_form())
        .send()
        .await
        .unwrap();
    let foreign = res.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    for bad in [foreign.as_str(), "1.AAAAAAAAAAAAAAAAAAAAAA"] {
        let (status, body) = token_request(&f.app, &password_form(), Some(with_nonce(bad))).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("use_dpop_nonce")),
            "{bad}"
        );
    }
}

on_both_engines!(
    server_nonces_are_required_when_configured,
    our_own_endpoints_take_bound_tokens_with_their_proofs,
    a_proof_binds_the_access_token_and_the_sessions_refresh_tokens,
    proofs_are_checked_at_the_token_endpoint,
    require_dpop_clients_get_no_token_without_a_proof,
);
