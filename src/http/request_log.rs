//! Request ids and one log line per request.
//!
//! Only the method, the path (never the query string, which could carry a
//! token; at most [`MAX_LOGGED_PATH`] bytes, so a 60 KB path cannot make a
//! 60 KB log line), the route it matched, the status and the latency are
//! logged.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Instrument;

/// Longest path written to the log, in bytes; longer ones are cut (and end in `…`).
pub const MAX_LOGGED_PATH: usize = 128;

/// `path` as logged: at most [`MAX_LOGGED_PATH`] bytes.
fn logged_path(path: &str) -> std::borrow::Cow<'_, str> {
    if path.len() <= MAX_LOGGED_PATH {
        return path.into();
    }
    let mut end = MAX_LOGGED_PATH;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &path[..end]).into()
}

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
        path = %logged_path(req.path()),
    );
    // The connection's head deadline (see `connections`) pauses while a
    // request is in progress.
    let connection = req
        .conn_data::<std::sync::Arc<super::connections::Connection>>()
        .cloned();
    if let Some(c) = &connection {
        c.request_started();
    }
    let started = Instant::now();
    let result = next.call(req).instrument(span.clone()).await;
    if let Some(c) = &connection {
        c.request_ended();
    }
    let seconds = started.elapsed().as_secs_f64();
    // Microseconds are plenty: 0.048 ms, not 0.048282000000000005.
    let latency_ms = (seconds * 1_000_000.0).round() / 1000.0;
    let _entered = span.enter();
    match result {
        Ok(mut res) => {
            let status = res.status().as_u16();
            let route = record_metrics(&res, status, seconds);
            // A 503 from /readyz is an answer, not a failure: probes log at debug.
            if probe {
                tracing::debug!(status, latency_ms, route, "request completed");
            } else if status >= 500 {
                tracing::error!(status, latency_ms, route, "request failed");
            } else {
                tracing::info!(status, latency_ms, route, "request completed");
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
/// never the concrete path) and a known method, so labels stay few; returns
/// the pattern for the log line.
fn record_metrics<B>(res: &ServiceResponse<B>, status: u16, seconds: f64) -> String {
    let req = res.request();
    let pattern = req.match_pattern();
    let route = pattern.as_deref().unwrap_or("unmatched");
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
    route.to_owned()
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

    #[test]
    fn long_paths_are_cut_for_the_log() {
        assert_eq!(super::logged_path("/oauth/token"), "/oauth/token");
        let long = format!("/{}", "é".repeat(30_000));
        let logged = super::logged_path(&long);
        assert!(logged.len() <= super::MAX_LOGGED_PATH + '…'.len_utf8());
        assert!(logged.ends_with('…'));
    }
}
