//! Liveness and readiness over HTTP, including losing the database.

use std::time::Duration;

use crate::helpers::{
    Engine, TcpProxy, TestDb, eventually, on_both_engines, postgres_socket, spawn_app, spawn_app_on,
};

async fn healthz_and_readyz_answer(engine: Engine) {
    let app = spawn_app(engine).await;

    let res = app.get("/healthz").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert!(res.headers().contains_key("x-request-id"));
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["status"],
        "ok"
    );

    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"], "ok");
}

async fn unknown_paths_and_methods_get_json_errors(engine: Engine) {
    let app = spawn_app(engine).await;

    let res = app.get("/no/such/thing").await;
    assert_eq!(res.status(), 404);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "not_found");

    let res = app
        .client
        .delete(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "GET, HEAD");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
}

async fn request_ids_are_echoed_only_when_safe(engine: Engine) {
    let app = spawn_app(engine).await;
    let get = |id: &'static str| {
        app.client
            .get(format!("{}/healthz", app.address))
            .header("x-request-id", id)
            .send()
    };
    let res = get("trace-123").await.unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-123");
    let res = get("evil id with spaces").await.unwrap();
    let echoed = res.headers()["x-request-id"].to_str().unwrap();
    assert_ne!(echoed, "evil id with spaces");
    assert!(uuid::Uuid::parse_str(echoed).is_ok());
}

on_both_engines!(
    healthz_and_readyz_answer,
    unknown_paths_and_methods_get_json_errors,
    request_ids_are_echoed_only_when_safe,
);

/// PostgreSQL goes away under a running instance: readiness turns 503, the
/// process stays up, and readiness recovers by itself when it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_postgres_going_away_and_coming_back() {
    let db = TestDb::new(Engine::Postgres).await;
    let proxy = TcpProxy::start(postgres_socket(&db.url).await).await;
    let via_proxy = db.url_via(proxy.addr);
    let app = spawn_app_on(db, Some(via_proxy)).await;
    assert_eq!(app.get("/readyz").await.status(), 200);

    proxy.cut().await;
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["checks"]["database"], "unavailable");
    // Liveness is independent of the database.
    assert_eq!(app.get("/healthz").await.status(), 200);

    proxy.restore().await;
    eventually(
        Duration::from_secs(15),
        "readiness recovers after the database came back",
        async || match app.get("/readyz").await.status() {
            s if s == 200 => Ok(()),
            other => Err(other.to_string()),
        },
    )
    .await;
}
