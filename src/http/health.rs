//! Liveness and readiness probes.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::CACHE_CONTROL;
use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;

/// How long readiness waits for the database before calling it unavailable.
const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /healthz`: the process is alive and serving HTTP.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "the process is alive")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the database answers and a signing key is loaded and can
/// sign (a key in a PKCS#11 token whose token is gone cannot). 503 (never a crash) while it does not;
/// the pool reconnects by itself, so readiness returns when the database does.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, description = "the database answers and a signing key is loaded"), (status = 503, description = "not ready")))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let database = match tokio::time::timeout(DATABASE_CHECK_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => "ok",
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database check failed");
            "unavailable"
        }
        Err(_) => {
            tracing::warn!("readiness: database check timed out");
            "unavailable"
        }
    };
    let now = state.clock.now();
    let signing_key = match state.keys.signer_at(now) {
        None => "missing",
        // A key in a PKCS#11 token whose last signature failed (re-probed
        // at most once a second, so readiness returns with the token).
        Some(signer) if !signer.ready() => "unavailable",
        Some(_) => "ok",
    };
    let ready = database == "ok" && signing_key == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    HttpResponse::build(status)
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(json!({
            "status": if ready { "ready" } else { "not_ready" },
            "checks": { "database": database, "signing_key": signing_key },
        }))
}
