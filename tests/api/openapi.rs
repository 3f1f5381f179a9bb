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
    // The route table the server registers is what is documented...
    let registered: BTreeSet<(String, String)> =
        tessera::http::served_routes().into_iter().collect();
    assert!(registered.len() > 20, "{registered:?}");
    let undocumented: Vec<_> = registered.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&registered).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from /openapi.json: {undocumented:?}"
    );
    assert!(stale.is_empty(), "documented but not served: {stale:?}");
    // ...and the running server answers every documented operation (not
    // the 404 of an unknown path, nor a 405).
    for (method, path) in &documented {
        let concrete = path.replace(['{', '}'], "");
        let res = app
            .client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{concrete}", app.address),
            )
            .send()
            .await
            .unwrap();
        assert_ne!(res.status(), 405, "{method} {path}");
        // What an anonymous, empty request gets is one of the documented
        // answers (documented responses come from the error types).
        let status = res.status().as_str().to_owned();
        assert!(
            doc["paths"][path][method.to_lowercase()]["responses"][&status].is_object(),
            "{method} {path} answered {status}, which it does not document"
        );
        if res.status() == 404 {
            let body: Value = res.json().await.unwrap();
            assert_ne!(body["error"], "not_found_path", "{method} {path}");
            assert!(
                !body["error_description"]
                    .as_str()
                    .unwrap_or("")
                    .contains("no such endpoint"),
                "{method} {path} is not served"
            );
        }
    }
    // Every schema a document refers to is in it.
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling schema reference {name}"
        );
    }

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
