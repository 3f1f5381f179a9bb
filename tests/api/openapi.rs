//! `GET /openapi.json` describes exactly the routes the application
//! registers: a route added without documentation, or documentation left
//! behind by a removed route, fails here.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::{Engine, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_registered_routes() {
    let app = spawn_app(Engine::Sqlite).await;
    let res = app.get("/openapi.json").await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let doc: Value = res.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );

    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            documented.insert((method.to_uppercase(), path.clone()));
            // Every operation says what it answers, including its errors.
            let responses = operation["responses"].as_object().unwrap();
            assert!(!responses.is_empty(), "{method} {path}");
        }
    }
    // The app has been built (it answered), so every route is recorded.
    let registered: BTreeSet<(String, String)> =
        tessera::http::registered_routes().into_iter().collect();
    assert!(registered.len() > 20, "{registered:?}");
    let undocumented: Vec<_> = registered.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&registered).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from /openapi.json: {undocumented:?}"
    );
    assert!(stale.is_empty(), "documented but not served: {stale:?}");

    // Security schemes and the error schema are declared and used.
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["client_basic"]["scheme"], "basic");
    assert_eq!(schemes["admin_bearer"]["scheme"], "bearer");
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    assert!(doc["components"]["schemas"]["TokenResponse"].is_object());
    let token = &doc["paths"]["/oauth/token"]["post"];
    assert!(token["requestBody"]["content"]["application/x-www-form-urlencoded"].is_object());
    for status in ["200", "400", "401", "429", "503"] {
        assert!(
            token["responses"][status].is_object(),
            "/oauth/token {status}"
        );
    }
}
