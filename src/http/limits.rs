//! Request-head limits checked before any handler runs.
//!
//! The HTTP parser itself gives up at 128 KiB or 96 headers; tessera's
//! requests need a few hundred bytes of headers (a bearer token or a
//! refresh cookie being the largest), so anything far beyond that is
//! refused early with a clear 431 instead of being carried through.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;

use super::error_response;

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
