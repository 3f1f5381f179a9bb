//! An example resource server that trusts tessera's access tokens.
//!
//! ```sh
//! # with tessera running on 127.0.0.1:8080:
//! cargo run --example resource_server
//! curl -H "Authorization: Bearer $ACCESS_TOKEN" http://127.0.0.1:9000/me
//! ```
//!
//! Environment: `ISSUER` (default `http://127.0.0.1:8080`), `AUDIENCE`
//! (default `https://api.example`), `LISTEN` (default `127.0.0.1:9000`),
//! `DECRYPTION_JWK_FILE` (the audience's private JWK, if tessera encrypts
//! its tokens).

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
    let verifier = web::Data::new(builder.build().map_err(std::io::Error::other)?);
    let listen = var("LISTEN", "127.0.0.1:9000");
    println!("resource server on http://{listen}");
    HttpServer::new(move || {
        App::new()
            .app_data(verifier.clone())
            .route("/me", web::get().to(me))
            .route("/write", web::post().to(write))
    })
    .bind(listen)?
    .run()
    .await
}
