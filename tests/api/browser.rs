//! The example SPA (`examples/spa/`) in headless Chromium against a real
//! tessera: `tests/browser/spa_check.py` drives it with Selenium through
//! the whole journey: the app sends the browser to tessera's login page
//! (checked with axe-core), the password (and, for a TOTP user, the code)
//! is typed there, the app redeems the code (PKCE), shows the user, calls
//! its API, refreshes, logs out. `TESSERA_SCREENSHOTS=docs/img` saves the
//! screenshots of `docs/spa.md`.
//!
//! Needs Debian's `chromium` and `chromium-driver` and the Python packages of
//! `tests/browser/requirements.txt`; `scripts/test.sh` installs them and
//! sets `TESSERA_BROWSER_PYTHON`. Without that variable the test says it is
//! skipped and passes; with `TESSERA_BROWSER_TEST=required` it fails instead.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use tessera::verify::{Authenticated, Verifier};

use crate::helpers::{AUD, ClientSpec, PASSWORD, eventually, spawn_app_with};

const INDEX: &str = include_str!("../../examples/spa/index.html");
const APP_JS: &str = include_str!("../../examples/spa/app.js");

async fn me(user: Authenticated) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "sub": user.claims().sub }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_spa_works_in_a_real_browser() {
    let Ok(python) = std::env::var("TESSERA_BROWSER_PYTHON") else {
        assert_ne!(
            std::env::var("TESSERA_BROWSER_TEST").as_deref(),
            Ok("required"),
            "the browser test is required but TESSERA_BROWSER_PYTHON is not set"
        );
        eprintln!(
            "SKIPPED: browser test (TESSERA_BROWSER_PYTHON not set; scripts/test.sh sets it up)"
        );
        return;
    };
    // tessera on a port chosen here, so it can be told the issuer the
    // browser sees: the app checks the `iss` of every sign-in (RFC 9207).
    let tessera_port = {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let issuer_for_browser = format!("http://localhost:{tessera_port}");
    let listen = format!("127.0.0.1:{tessera_port}");
    let app = spawn_app_with(
        crate::helpers::Engine::Sqlite,
        &[
            ("TESSERA_LISTEN", listen.as_str()),
            ("TESSERA_ISSUER", issuer_for_browser.as_str()),
        ],
    )
    .await;
    // The page and the API on another port of localhost: another origin,
    // the same site (so the SameSite cookies travel).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let spa_port = listener.local_addr().unwrap().port();
    let spa_origin = format!("http://localhost:{spa_port}");
    let redirect_uri = format!("{spa_origin}/");

    app.add_client(
        ClientSpec::public("spa", &["authorization_code", "refresh_token"])
            .cookie_for(&[spa_origin.as_str()])
            .scopes(&["read"])
            .redirect_uris(&[redirect_uri.as_str()]),
    )
    .await;
    app.add_user("alice").await;
    // A user with TOTP.
    let master = tessera::keys::master::MasterKey::from_base64(app.master_key()).unwrap();
    let bob = uuid::Uuid::new_v4();
    let totp_secret = tessera::auth::totp::new_secret();
    app.store
        .create_user(
            &tessera::store::NewUser {
                id: bob,
                username: "bob".into(),
                password_hash: tessera::auth::password::hash(PASSWORD).unwrap(),
                totp_secret: Some(
                    master.seal(&totp_secret, &tessera::auth::totp::seal_context(bob)),
                ),
            },
            0,
        )
        .await
        .unwrap();
    let totp_hex: String = totp_secret.iter().map(|b| format!("{b:02x}")).collect();

    let jwks = app
        .get("/.well-known/jwks.json")
        .await
        .text()
        .await
        .unwrap();
    let verifier = web::Data::new(
        Verifier::builder(issuer_for_browser.clone(), AUD)
            .static_jwks(jwks)
            .build()
            .unwrap(),
    );
    let config = serde_json::json!({
        "issuer": issuer_for_browser,
        "client_id": "spa",
        "redirect_uri": redirect_uri,
        "scope": "openid profile read",
        "api": "/me",
    })
    .to_string();
    let server = HttpServer::new(move || {
        let config = config.clone();
        App::new()
            .app_data(verifier.clone())
            .route(
                "/",
                web::get()
                    .to(|| async { HttpResponse::Ok().content_type("text/html").body(INDEX) }),
            )
            .route(
                "/app.js",
                web::get().to(|| async {
                    HttpResponse::Ok()
                        .content_type("text/javascript")
                        .body(APP_JS)
                }),
            )
            .route(
                "/spa-config.json",
                web::get().to(move || {
                    let config = config.clone();
                    async move {
                        HttpResponse::Ok()
                            .content_type("application/json")
                            .body(config)
                    }
                }),
            )
            .route("/me", web::get().to(me))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let spa_handle = server.handle();
    tokio::spawn(server);

    // tessera re-reads client origins every second.
    eventually(
        Duration::from_secs(3),
        "the SPA's origin is allowed",
        async || {
            let res = app
                .client
                .request(
                    reqwest::Method::OPTIONS,
                    format!("{}/oauth/token", app.address),
                )
                .header("origin", &spa_origin)
                .header("access-control-request-method", "POST")
                .send()
                .await
                .unwrap();
            match res.status() {
                s if s == 204 => Ok(()),
                other => Err(other.to_string()),
            }
        },
    )
    .await;

    let output = tokio::process::Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/browser/spa_check.py"
        ))
        .arg(format!("{spa_origin}/"))
        .arg(format!("http://127.0.0.1:{spa_port}/"))
        .arg(&issuer_for_browser)
        .arg("alice")
        .arg(PASSWORD)
        .arg("bob")
        .arg(&totp_hex)
        .output()
        .await
        .expect("python runs");
    spa_handle.stop(false).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser check failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("browser check passed"), "{stdout}");
    println!("{stdout}");
}
