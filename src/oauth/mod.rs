//! OAuth 2.0 protocol types shared by every endpoint.

pub mod error;

pub use error::{ErrorCode, OAuthError, invalid_request, too_many_requests, unavailable};
