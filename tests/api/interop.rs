//! Tokens minted by tessera verify and decrypt in independent JOSE
//! libraries (PyJWT, jwcrypto), and a JWE made by jwcrypto opens with ours.
//! The Python side is `tests/interop/jose_check.py`; `scripts/test.sh`
//! installs its pinned requirements into a virtualenv and points
//! `TESSERA_INTEROP_PYTHON` at it.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use josekit::jwk::KeyPair;
use josekit::jwk::alg::ec::{EcCurve, EcKeyPair};
use josekit::jwk::alg::rsa::RsaKeyPair;
use serde_json::{Value, json};
use tessera::keys::keyring::{KeyRing, RotationPolicy};
use tessera::keys::master::MasterKey;
use tessera::store::{Audience, postgres::PgStore};
use tessera::tokens::{AudienceKeys, Minter, TokenRequest};
use tessera::verify::Verifier;

use crate::helpers::{Engine, spawn_app};

/// A free loopback port as (`TESSERA_LISTEN`, `TESSERA_ISSUER`): for
/// clients that use the URLs the metadata publishes, the app must be
/// served at its issuer URL.
fn served_where_published() -> (String, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    (
        format!("127.0.0.1:{port}"),
        format!("http://127.0.0.1:{port}"),
    )
}

fn python() -> String {
    std::env::var("TESSERA_INTEROP_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn run_python(job: &Value) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/jose_check.py");
    let mut child = Command::new(python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); run scripts/test.sh, which installs the interop tools",
                python()
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(job.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "independent JOSE check failed (PyJWT and jwcrypto must be installed: pip install -r tests/interop/requirements.txt):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn request(aud: &str) -> TokenRequest {
    TokenRequest {
        sub: "3f0c7f8e-9a54-4b55-8c1c-6c0d1c2b3a4f".into(),
        audiences: vec![aud.into()],
        client_id: "backend".into(),
        scope: "read".into(),
        sid: Some(uuid::Uuid::new_v4()),
        jkt: None,
        act: None,
        expires_at: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_interoperate_with_pyjwt_and_jwcrypto() {
    let app = spawn_app(Engine::Postgres).await;
    let store: Arc<dyn tessera::store::Store> =
        Arc::new(PgStore::connect(app.database_url(), 2).await.unwrap());
    store.migrate().await.unwrap();
    let master = MasterKey::from_base64(app.master_key()).unwrap();
    let policy = RotationPolicy {
        jwks_max_age: Duration::from_secs(300),
        access_token_ttl: Duration::from_secs(900),
        rotation_period: None,
    };
    let now = chrono::Utc::now().timestamp();
    // Same database and master key as the running app: the same signing key.
    let ring = Arc::new(
        KeyRing::open(store.clone(), master, policy, now)
            .await
            .unwrap(),
    );

    let ec = EcKeyPair::generate(EcCurve::P256).unwrap();
    let rsa = RsaKeyPair::generate(2048).unwrap();
    for (name, public) in [
        ("https://ec.example", ec.to_jwk_public_key()),
        ("https://rsa.example", rsa.to_jwk_public_key()),
    ] {
        store
            .put_audience(&Audience {
                name: name.into(),
                encrypt_jwk: Some(public.to_string()),
                created_at: now,
            })
            .await
            .unwrap();
    }
    let audiences = Arc::new(AudienceKeys::default());
    audiences.refresh(store.as_ref()).await.unwrap();
    let issuer = "http://127.0.0.1:8080".to_string();
    let minter = Minter::new(ring, audiences, issuer.clone(), Duration::from_secs(900));

    let jws = minter.mint(request("https://api.example"), now).unwrap();
    let jwe_ec = minter.mint(request("https://ec.example"), now).unwrap();
    let jwe_rsa = minter.mint(request("https://rsa.example"), now).unwrap();
    // jwcrypto wraps a plain signed token of ours into a JWE.
    let inner_jws = minter
        .mint(request("https://api.example"), now)
        .unwrap()
        .token;
    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();

    let to_json =
        |jwk: josekit::jwk::Jwk| -> Value { serde_json::from_str(&jwk.to_string()).unwrap() };
    let job = json!({
        "issuer": issuer,
        "audience": "https://api.example",
        "jwks": jwks,
        "jws": jws.token,
        "jwe": [
            { "token": jwe_ec.token, "private_jwk": to_json(ec.to_jwk_key_pair()), "audience": "https://ec.example" },
            { "token": jwe_rsa.token, "private_jwk": to_json(rsa.to_jwk_key_pair()), "audience": "https://rsa.example" },
        ],
        "wrap": { "jws": inner_jws, "public_jwk": to_json(ec.to_jwk_public_key()) },
    });
    let report = run_python(&job);

    assert_eq!(report["jws_claims"]["jti"], json!(jws.claims.jti));
    assert_eq!(report["jws_claims"]["sub"], json!(jws.claims.sub));
    assert_eq!(report["jwe_claims"][0]["jti"], json!(jwe_ec.claims.jti));
    assert_eq!(report["jwe_claims"][1]["jti"], json!(jwe_rsa.claims.jti));

    // Our verifier, fetching the running issuer's JWKS over HTTP, accepts the
    // plain token, and opens the JWE that jwcrypto made.
    let jwks_url = format!("{}/.well-known/jwks.json", app.address);
    let v = Verifier::builder(&issuer, "https://api.example")
        .jwks_url(&jwks_url)
        .build()
        .unwrap();
    assert_eq!(v.verify(&jws.token).await.unwrap().jti, jws.claims.jti);
    let wrapped = report["wrapped"].as_str().unwrap();
    assert_eq!(wrapped.split('.').count(), 5);
    let v = Verifier::builder(&issuer, "https://api.example")
        .jwks_url(&jwks_url)
        .decryption_key(ec.to_jwk_key_pair().to_string())
        .build()
        .unwrap();
    assert_eq!(v.verify(wrapped).await.unwrap().sub, jws.claims.sub);
}

/// Authlib, an independent OAuth/OIDC client library, through the code
/// flow with PKCE: the authorization request, tessera's login page, the
/// code exchange, the ID token checked against the JWKS (signature, iss,
/// aud, nonce, at_hash), userinfo and a refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmodified_oidc_client_library_completes_the_code_flow() {
    let app = spawn_app(Engine::Sqlite).await;
    app.add_client(
        crate::helpers::ClientSpec::public("py", &["authorization_code", "refresh_token"])
            .redirect_uris(&["https://app.example/callback"]),
    )
    .await;
    let alice = app.add_user("alice").await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/oidc_client.py");
    let out = tokio::process::Command::new(python())
        .arg(script)
        .args([
            app.address.as_str(),
            crate::helpers::ISSUER,
            "py",
            "https://app.example/callback",
            "alice",
            crate::helpers::PASSWORD,
        ])
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {} ({e}); run scripts/test.sh", python()));
    assert!(
        out.status.success(),
        "Authlib could not complete the flow (pip install -r tests/interop/requirements.txt):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["sub"], alice.to_string());
    assert_eq!(summary["aud"], "py");
    assert_eq!(summary["amr"], json!(["pwd"]));
    assert_eq!(summary["preferred_username"], "alice");
    assert_eq!(summary["scope"], "openid profile read");
}

/// oauth4webapi (panva), an unmodified DPoP client library run with
/// Node.js: DPoP-bound tokens from a password grant, a refresh, and a
/// client_credentials token used at the admin API, with server nonces on.
/// `scripts/test.sh` installs it (`tests/interop/package.json`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmodified_dpop_client_library_obtains_refreshes_and_uses_bound_tokens() {
    use base64::Engine as _;
    let modules = std::path::PathBuf::from(
        std::env::var("TESSERA_INTEROP_NODE_PATH")
            .expect("TESSERA_INTEROP_NODE_PATH: run scripts/test.sh, which installs oauth4webapi"),
    );
    // The proofs name the issuer's URLs, so the app must be served there.
    let (listen, issuer) = served_where_published();
    let app = crate::helpers::spawn_app_with(
        Engine::Sqlite,
        &[
            ("TESSERA_LISTEN", listen.as_str()),
            ("TESSERA_ISSUER", issuer.as_str()),
            ("TESSERA_DPOP_NONCE", "on"),
        ],
    )
    .await;
    assert_eq!(app.address, issuer);
    app.add_client(crate::helpers::ClientSpec::public(
        "spa",
        &["password", "refresh_token"],
    ))
    .await;
    let admin = app
        .add_client(crate::helpers::ClientSpec::admin("admin").audiences(&[issuer.as_str()]))
        .await;
    app.add_user("alice").await;

    // A resource server with the verify library's extractor, as
    // examples/resource_server.rs has it.
    let rs_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let rs_url = format!(
        "http://127.0.0.1:{}",
        rs_listener.local_addr().unwrap().port()
    );
    let verifier = actix_web::web::Data::new(
        Verifier::builder(issuer.as_str(), crate::helpers::AUD)
            .jwks_url(format!("{issuer}/.well-known/jwks.json"))
            .dpop_base_url(rs_url.as_str())
            .build()
            .unwrap(),
    );
    let rs = actix_web::HttpServer::new(move || {
        actix_web::App::new().app_data(verifier.clone()).route(
            "/me",
            actix_web::web::get().to(|user: tessera::verify::Authenticated| async move {
                actix_web::HttpResponse::Ok().json(json!({ "sub": user.claims().sub }))
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .listen(rs_listener)
    .unwrap()
    .run();
    let rs_handle = rs.handle();
    tokio::spawn(rs);

    // Next to its node_modules, where ESM resolution finds the library.
    let script = modules.parent().unwrap().join("dpop_client.mjs");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/dpop_client.mjs"),
        &script,
    )
    .unwrap();
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .args([
            issuer.as_str(),
            "alice",
            crate::helpers::PASSWORD,
            &admin,
            &rs_url,
        ])
        .output()
        .await
        .expect("node runs (scripts/test.sh checks for it)");
    rs_handle.stop(false).await;
    assert!(
        out.status.success(),
        "oauth4webapi could not complete the DPoP flows:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["login_token_type"], "dpop", "{summary}");
    assert_eq!(summary["refreshed_token_type"], "dpop");
    assert_eq!(
        summary["refresh_token_parts"], 4,
        "the refresh token is bound"
    );
    assert_eq!(summary["admin_token_type"], "dpop");
    assert_eq!(summary["admin_keys_status"], 200);
    assert_eq!(summary["rs_status"], 200, "{summary}");
    assert!(summary["rs_sub"].is_string(), "{summary}");
    let cnf = |token: &str| -> Value {
        let payload = token.split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        claims["cnf"]["jkt"].clone()
    };
    let first = cnf(summary["login_access_token"].as_str().unwrap());
    assert!(first.is_string(), "{summary}");
    assert_eq!(
        cnf(summary["refreshed_access_token"].as_str().unwrap()),
        first
    );
}

/// Authlib's OAuth2Session through RFC 8693 token exchange: a public
/// client trades an upstream issuer's ID token for a tessera session (and
/// refreshes it with Authlib's own refresh), a confidential client trades a
/// user's access token for one addressed to another audience, naming
/// itself as the actor; each token checked against the JWKS by authlib.jose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmodified_client_library_exchanges_tokens() {
    use base64::Engine as _;
    const PAYMENTS: &str = "https://payments.example";
    // The script uses the endpoints the metadata publishes: serve them there.
    let (listen, issuer) = served_where_published();
    let f = crate::helpers::fixture_with(
        Engine::Sqlite,
        &[
            ("TESSERA_LISTEN", listen.as_str()),
            ("TESSERA_ISSUER", issuer.as_str()),
        ],
    )
    .await;
    let app = &f.app;
    assert_eq!(app.address, issuer);

    let upstream = crate::token_exchange::Upstream::start().await;
    app.store
        .add_issuer(
            &tessera::store::NewIssuer {
                issuer: upstream.issuer(),
                jwks_uri: upstream.jwks_uri(),
                audience: crate::token_exchange::UPSTREAM_AUD.into(),
                create_users: true,
            },
            0,
        )
        .await
        .unwrap();
    app.add_client(crate::helpers::ClientSpec::public(
        "py-bff",
        &["token-exchange", "refresh_token"],
    ))
    .await;
    let secret = app
        .add_client(
            crate::helpers::ClientSpec::confidential("py-orders", &[])
                .audiences(&[crate::helpers::AUD])
                .exchange_audiences(&[PAYMENTS]),
        )
        .await;
    let (access, _refresh) = app.login("alice").await;
    let id_token = upstream.id_token("py-upstream-user");

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/token_exchange_client.py"
    );
    let out = tokio::process::Command::new(python())
        .arg(script)
        .args([
            issuer.as_str(),
            "py-bff",
            &id_token,
            crate::helpers::AUD,
            "py-orders",
            &secret,
            &access,
            PAYMENTS,
        ])
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {} ({e}); run scripts/test.sh", python()));
    assert!(
        out.status.success(),
        "Authlib could not complete the exchanges (pip install -r tests/interop/requirements.txt):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();

    // The upstream login: a session of a new tessera user linked to the
    // upstream (iss, sub), verified with the JWKS tessera fetched.
    let linked = app
        .store
        .linked_user(&upstream.issuer(), "py-upstream-user")
        .await
        .unwrap()
        .expect("the upstream user is linked");
    let alice = app.store.user_by_username("alice").await.unwrap().unwrap();
    assert_eq!(
        summary["upstream"]["sub"],
        linked.id.to_string(),
        "{summary}"
    );
    assert_ne!(linked.id, alice.id);
    assert_eq!(summary["upstream"]["aud"], crate::helpers::AUD);
    assert_eq!(summary["upstream"]["client_id"], "py-bff");
    assert_eq!(summary["upstream"]["scope"], "read");
    assert!(summary["upstream"]["sid"].is_string());
    assert_eq!(summary["refreshed"], true);
    assert!(upstream.hits() >= 1, "tessera fetched the upstream JWKS");

    // On behalf of alice: her user and session, the payments audience,
    // py-orders as the actor, no refresh token.
    let part = access.split('.').nth(1).unwrap();
    let subject: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap();
    let exchanged = &summary["exchanged"];
    assert_eq!(exchanged["sub"], alice.id.to_string(), "{summary}");
    assert_eq!(exchanged["sub"], subject["sub"]);
    assert_eq!(exchanged["sid"], subject["sid"]);
    assert_eq!(summary["subject"]["sid"], subject["sid"]);
    assert_ne!(exchanged["sid"], summary["upstream"]["sid"]);
    assert_eq!(exchanged["aud"], PAYMENTS);
    assert_eq!(exchanged["act"], json!({ "sub": "py-orders" }));
    assert_eq!(exchanged["client_id"], "py-orders");
    assert_eq!(exchanged["scope"], "read");
    assert_eq!(exchanged["refresh_token"], false);
    assert_eq!(summary["refused_audience_error"], "invalid_target");
}
