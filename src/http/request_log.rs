//! Request ids and one log line per request.
//!
//! Only the method, the path (never the query string, which could carry a
//! token), the status and the latency are logged.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Instrument;

/// Header carrying the request id, accepted from a proxy or generated.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Middleware: assigns a request id, echoes it, and logs the outcome.
pub async fn request_log(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_safe_id(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let probe = matches!(req.path(), "/healthz" | "/readyz" | "/metrics");
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %req.method(),
        path = %req.path(),
    );
    let started = Instant::now();
    let result = next.call(req).instrument(span.clone()).await;
    let seconds = started.elapsed().as_secs_f64();
    let latency_ms = seconds * 1000.0;
    let _entered = span.enter();
    match result {
        Ok(mut res) => {
            let status = res.status().as_u16();
            record_metrics(&res, status, seconds);
            // A 503 from /readyz is an answer, not a failure: probes log at debug.
            if probe {
                tracing::debug!(status, latency_ms, "request completed");
            } else if status >= 500 {
                tracing::error!(status, latency_ms, "request failed");
            } else {
                tracing::info!(status, latency_ms, "request completed");
            }
            if let Ok(value) = HeaderValue::from_str(&request_id) {
                res.headers_mut().insert(REQUEST_ID, value);
            }
            Ok(res)
        }
        Err(e) => {
            let status = e.as_response_error().status_code().as_u16();
            tracing::info!(status, latency_ms, "request refused");
            Err(e)
        }
    }
}

/// Counts the request under its route pattern (`/admin/v1/users/{username}/…`,
/// never the concrete path) and a known method, so labels stay few.
fn record_metrics<B>(res: &ServiceResponse<B>, status: u16, seconds: f64) {
    let req = res.request();
    let route = req.match_pattern();
    let route = route.as_deref().unwrap_or("unmatched");
    let method = match req.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS") => m,
        _ => "other",
    };
    let m = crate::metrics::metrics();
    m.http_requests
        .with_label_values(&[route, method, &status.to_string()])
        .inc();
    m.http_duration
        .with_label_values(&[route, method])
        .observe(seconds);
}

/// A caller-supplied id is kept only if it cannot smuggle anything into logs.
fn is_safe_id(v: &str) -> bool {
    (1..=64).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_plain_ids_are_trusted() {
        assert!(super::is_safe_id("3f2a-b_c.d"));
        assert!(!super::is_safe_id(""));
        assert!(!super::is_safe_id("a b"));
        assert!(!super::is_safe_id("a\u{1b}[31m"));
        assert!(!super::is_safe_id(&"a".repeat(65)));
    }
}
