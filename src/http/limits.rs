//! Request limits checked before any handler runs.
//!
//! The HTTP parser itself gives up at 128 KiB or 96 headers; tessera's
//! requests need a few hundred bytes of headers (a bearer token or a
//! refresh cookie being the largest), so anything far beyond that is
//! refused early with a clear 431 instead of being carried through.
//!
//! Bodies are read here, whole, before routing: at most
//! [`MAX_BODY_BYTES`] (413 beyond) and within `client_body_timeout` of the
//! head (408 beyond), so a client that announces a body and then trickles
//! it, or never sends it, holds its connection and a worker for a bounded
//! time whatever route it aims at. Handlers then read the body from memory.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use actix_web::http::{ConnectionType, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpMessage as _, web};
use futures_util::StreamExt as _;

use super::{AppState, error_response};

/// Largest request body tessera reads (token forms and admin JSON are a few
/// hundred bytes).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Largest total size of the header names and values of one request.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Middleware: 431 when the headers together exceed [`MAX_HEADER_BYTES`].
pub async fn limit_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let size: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if size > MAX_HEADER_BYTES {
        let response = error_response(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "invalid_request",
            &format!("the request headers are larger than {MAX_HEADER_BYTES} bytes"),
        );
        return Ok(req.into_response(response));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// An error answer after which the connection is closed (its unread body
/// cannot be skipped safely).
fn closing(status: StatusCode, description: &str) -> actix_web::HttpResponse {
    let mut response = error_response(status, "invalid_request", description);
    response
        .head_mut()
        .set_connection_type(ConnectionType::Close);
    response
}

/// Middleware: reads the body within `client_body_timeout` and at most
/// [`MAX_BODY_BYTES`], then hands it on in memory.
pub async fn read_body(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let announced = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let chunked = req.headers().contains_key(TRANSFER_ENCODING);
    if announced.unwrap_or(0) == 0 && !chunked {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let too_large = || {
        closing(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
        )
    };
    if announced.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Ok(req.into_response(too_large()));
    }
    let timeout = req
        .app_data::<web::Data<AppState>>()
        .map_or(std::time::Duration::from_secs(10), |s| {
            s.settings.client_body_timeout
        });
    let deadline = tokio::time::Instant::now() + timeout;
    let mut payload = req.take_payload();
    let mut body = web::BytesMut::new();
    loop {
        match tokio::time::timeout_at(deadline, payload.next()).await {
            Err(_) => {
                let response = closing(
                    StatusCode::REQUEST_TIMEOUT,
                    &format!(
                        "the request body did not arrive within {} s",
                        timeout.as_secs()
                    ),
                );
                return Ok(req.into_response(response));
            }
            Ok(None) => break,
            Ok(Some(Err(_))) => {
                let response = closing(
                    StatusCode::BAD_REQUEST,
                    "the request body could not be read",
                );
                return Ok(req.into_response(response));
            }
            Ok(Some(Ok(chunk))) => {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Ok(req.into_response(too_large()));
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
    req.set_payload(actix_web::dev::Payload::from(body.freeze()));
    Ok(next.call(req).await?.map_into_boxed_body())
}
