//! CORS for the endpoints browsers call (token, logout, revoke): preflights
//! and responses allow exactly the origins registered for clients, with
//! credentials; never a wildcard.
//!
//! A preflight names no client, so the allowed set is every origin of every
//! enabled client, re-read from the database each second. Whether a given
//! client accepts a given origin is decided at the endpoint (cookie-mode
//! clients refuse requests from other origins with 403).

use std::collections::HashSet;
use std::sync::Arc;

use arc_swap::ArcSwap;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::web;

use super::{AppState, error_response};
use crate::store::{Store, StoreResult};

/// Paths that answer cross-origin requests.
const CORS_PATHS: [&str; 6] = [
    "/oauth/token",
    "/oauth/logout",
    "/oauth/revoke",
    "/oauth/userinfo",
    "/.well-known/openid-configuration",
    "/.well-known/jwks.json",
];

/// The origins registered for enabled clients: a snapshot, read without a
/// lock on every request and replaced whole when the set changes.
#[derive(Default)]
pub struct AllowedOrigins(ArcSwap<HashSet<String>>);

impl AllowedOrigins {
    /// Re-reads the set.
    pub async fn refresh(&self, store: &dyn Store) -> StoreResult<()> {
        let origins: HashSet<String> = store.client_origins().await?.into_iter().collect();
        if **self.0.load() != origins {
            self.0.store(Arc::new(origins));
        }
        Ok(())
    }

    /// Whether `origin` belongs to some enabled client.
    pub fn contains(&self, origin: &str) -> bool {
        self.0.load().contains(origin)
    }
}

/// Middleware: answers preflights and adds CORS headers for allowed origins.
pub async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if !CORS_PATHS.contains(&req.path()) {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let allowed = match (&origin, req.app_data::<web::Data<AppState>>()) {
        (Some(o), Some(state)) => state.origins.contains(o),
        _ => false,
    };
    if req.method() == Method::OPTIONS {
        let mut res = if allowed {
            let mut res = actix_web::HttpResponse::NoContent().finish();
            let h = res.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("content-type, x-tessera-csrf, authorization, dpop"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            res
        } else {
            error_response(
                StatusCode::FORBIDDEN,
                "access_denied",
                "this origin is not registered for any client",
            )
        };
        add_headers(&mut res, origin.as_deref().filter(|_| allowed));
        return Ok(req.into_response(res));
    }
    let mut res = next.call(req).await?.map_into_boxed_body();
    add_headers(res.response_mut(), origin.as_deref().filter(|_| allowed));
    Ok(res)
}

fn add_headers(res: &mut actix_web::HttpResponse, origin: Option<&str>) {
    let h = res.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(value) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        // DPoP clients read the server nonce (RFC 9449 §8).
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("dpop-nonce, www-authenticate"),
        );
    }
}
