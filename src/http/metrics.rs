//! `GET /metrics`: the Prometheus text format.
//!
//! Gauges that describe state (key age, pool, revocation list) are read at
//! scrape time; counters are bumped where things happen (see `crate::metrics`).

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{HttpResponse, web};

use super::AppState;
use crate::metrics::metrics;

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format (version 0.0.4)", content_type = "text/plain")))]
pub async fn metrics_endpoint(state: web::Data<AppState>) -> HttpResponse {
    let m = metrics();
    let now = chrono::Utc::now().timestamp();
    let keys = state.keys.status(now);
    for key_state in ["next", "active", "retiring"] {
        let n = keys.iter().filter(|k| k.state == key_state).count();
        m.keys.with_label_values(&[key_state]).set(n as i64);
    }
    let active_since = keys
        .iter()
        .filter(|k| k.state == "active")
        .map(|k| k.activate_at)
        .max();
    m.signing_key_age
        .set(active_since.map_or(0, |at| (now - at).max(0)));
    let pool = state.store.pool_state();
    m.db_connections
        .with_label_values(&["idle"])
        .set(pool.idle.into());
    m.db_connections
        .with_label_values(&["in_use"])
        .set(pool.in_use.into());
    m.db_connections
        .with_label_values(&["max"])
        .set(pool.max.into());
    m.revocation_list_entries
        .set(state.revoker.list_len() as i64);
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8"))
        .insert_header((CACHE_CONTROL, "no-store"))
        .body(m.render())
}
