//! An example resource server that trusts tessera's access tokens.
//!
//! ```sh
//! # with tessera running on 127.0.0.1:8080:
//! cargo run --example resource_server
//! curl -H "Authorization: Bearer $ACCESS_TOKEN" http://127.0.0.1:9000/me
//! ```
//!
//! It also serves the example SPA (`examples/spa/`) at `/`; see
//! `docs/spa.md` for the walk-through.
//!
//! Environment: `ISSUER` (default `http://127.0.0.1:8080`), `AUDIENCE`
//! (default `https://api.example`), `LISTEN` (default `127.0.0.1:9000`),
//! `DECRYPTION_JWK_FILE` (the audience's private JWK, if tessera encrypts
//! its tokens), `SPA_ISSUER` (tessera's URL as the browser reaches it, and
//! its `TESSERA_ISSUER`: the app checks the `iss` of every sign-in;
//! default `http://localhost:8080`), `SPA_CLIENT_ID` (default `spa`),
//! `SPA_REDIRECT_URI` (the client's `--redirect-uri`, this page; default
//! `http://localhost:9000/`),
//! `FEED_CLIENT_ID` and `FEED_CLIENT_SECRET` (a confidential client whose
//! credentials let the verifier poll the revocation feed), `FAIL_CLOSED_AFTER`
//! (seconds: refuse every token once the feed has not been read that long).
//! `GET /metrics` exports the revocation list's age.

use actix_web::{App, HttpResponse, HttpServer, web};
use tessera::verify::{Authenticated, Verifier};

/// Anyone with a valid token.
async fn me(user: Authenticated) -> HttpResponse {
    let c = user.claims();
    HttpResponse::Ok().json(serde_json::json!({
        "sub": c.sub,
        "client_id": c.client_id,
        "scope": c.scope,
        "expires_at": c.exp,
    }))
}

/// Only tokens with the `write` scope (403 otherwise, per RFC 6750 §3.1).
async fn write(user: Authenticated) -> HttpResponse {
    if !user.claims().has_scope("write") {
        return HttpResponse::Forbidden()
            .insert_header((
                "WWW-Authenticate",
                "Bearer error=\"insufficient_scope\", scope=\"write\"",
            ))
            .json(serde_json::json!({ "error": "insufficient_scope" }));
    }
    HttpResponse::Ok().json(serde_json::json!({ "written": true }))
}

/// Prometheus: how old the revocation list is (alert well before a
/// fail-closed limit, or on a fail-open verifier that stopped hearing from
/// the issuer).
async fn metrics(verifier: web::Data<Verifier>) -> HttpResponse {
    let age = verifier
        .revocation_feed_age()
        .map_or(-1.0, |a| a.as_secs_f64());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(format!(
            "# HELP tessera_verify_revocation_feed_age_seconds Seconds since the revocation feed was last read to its end (-1: never, or no feed).\n\
             # TYPE tessera_verify_revocation_feed_age_seconds gauge\n\
             tessera_verify_revocation_feed_age_seconds {age}\n"
        ))
}

const SPA_INDEX: &str = include_str!("spa/index.html");
const SPA_APP: &str = include_str!("spa/app.js");

async fn static_file(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok().content_type(content_type).body(body)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let mut builder = Verifier::builder(
        var("ISSUER", "http://127.0.0.1:8080"),
        var("AUDIENCE", "https://api.example"),
    );
    if let Ok(path) = std::env::var("DECRYPTION_JWK_FILE") {
        builder = builder.decryption_key(std::fs::read_to_string(path)?);
    }
    if let (Ok(id), Ok(secret)) = (
        std::env::var("FEED_CLIENT_ID"),
        std::env::var("FEED_CLIENT_SECRET"),
    ) {
        builder = builder.revocation_feed(id, secret);
        // Fail closed: refuse every token (503) once the feed has not been
        // read for this many seconds. Unset: fail open (the default).
        if let Ok(seconds) = std::env::var("FAIL_CLOSED_AFTER") {
            let seconds: u64 = seconds
                .parse()
                .map_err(|_| std::io::Error::other("FAIL_CLOSED_AFTER: a number of seconds"))?;
            builder = builder.fail_closed_after(std::time::Duration::from_secs(seconds));
        }
    }
    let spa_config = serde_json::json!({
        "issuer": var("SPA_ISSUER", "http://localhost:8080"),
        "client_id": var("SPA_CLIENT_ID", "spa"),
        // Registered with `client add spa --redirect-uri http://localhost:9000/`.
        "redirect_uri": var("SPA_REDIRECT_URI", "http://localhost:9000/"),
        "scope": "openid profile read",
        "api": "/me",
    })
    .to_string();
    let verifier = web::Data::new(builder.build().map_err(std::io::Error::other)?);
    let listen = var("LISTEN", "127.0.0.1:9000");
    println!("resource server on http://{listen}");
    HttpServer::new(move || {
        let spa_config = spa_config.clone();
        App::new()
            .app_data(verifier.clone())
            .route("/", web::get().to(|| static_file("text/html", SPA_INDEX)))
            .route(
                "/app.js",
                web::get().to(|| static_file("text/javascript", SPA_APP)),
            )
            .route(
                "/spa-config.json",
                web::get().to(move || {
                    let body = spa_config.clone();
                    async move {
                        HttpResponse::Ok()
                            .content_type("application/json")
                            .body(body)
                    }
                }),
            )
            .route("/me", web::get().to(me))
            .route("/metrics", web::get().to(metrics))
            .route("/write", web::post().to(write))
    })
    .bind(listen)?
    .run()
    .await
}
