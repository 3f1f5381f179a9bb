//! The errors of RFC 6749 §5.2 (plus §4.1.2.1's `temporarily_unavailable`
//! and 429), as the OAuth endpoints answer them. Free of HTTP types: the
//! HTTP edge renders them (`impl ResponseError` in `src/http/errors.rs`).

use serde::Serialize;

/// RFC 6749 §5.2 error codes (plus §4.1.2.1's `temporarily_unavailable`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Missing, repeated or malformed parameter.
    InvalidRequest,
    /// Client authentication failed.
    InvalidClient,
    /// The grant (password, refresh token) is invalid or expired.
    InvalidGrant,
    /// The client may not use this grant type.
    UnauthorizedClient,
    /// The grant type is not supported.
    UnsupportedGrantType,
    /// The requested scope is not allowed.
    InvalidScope,
    /// The requested audience/resource is not allowed (RFC 8707).
    InvalidTarget,
    /// The server failed (never details).
    ServerError,
    /// The server cannot answer now (database down); retry later.
    TemporarilyUnavailable,
    /// A browser request without an allowed `Origin` or the CSRF header
    /// (cookie-mode clients): 403.
    AccessDenied,
    /// Too many failed logins (account or network) or requests by one
    /// client: 429 with `Retry-After`.
    TooManyRequests,
    /// The authorization endpoint serves only `response_type=code`.
    UnsupportedResponseType,
    /// `prompt=none` and the browser has no sign-in (OpenID Connect).
    LoginRequired,
    /// OpenID Connect request objects (`request`) are not supported.
    RequestNotSupported,
    /// OpenID Connect `request_uri` is not supported.
    RequestUriNotSupported,
    /// RFC 9449: the `DPoP` proof is missing, malformed or refused, or a
    /// DPoP-bound refresh token came without a proof by its key.
    InvalidDpopProof,
    /// RFC 9449 §8: the proof lacks a current server nonce; the answer
    /// carries one in `DPoP-Nonce`.
    UseDpopNonce,
}

impl ErrorCode {
    /// The code as sent (`invalid_request`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::ServerError => "server_error",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::UnsupportedResponseType => "unsupported_response_type",
            ErrorCode::LoginRequired => "login_required",
            ErrorCode::RequestNotSupported => "request_not_supported",
            ErrorCode::RequestUriNotSupported => "request_uri_not_supported",
            ErrorCode::InvalidDpopProof => "invalid_dpop_proof",
            ErrorCode::UseDpopNonce => "use_dpop_nonce",
        }
    }
}

/// An RFC 6749 error with a description safe to show the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {description}")]
pub struct OAuthError {
    /// The error code.
    pub code: ErrorCode,
    /// What was wrong, for the client developer.
    pub description: String,
    /// The client tried HTTP Basic authentication (the 401 must challenge it).
    pub basic_challenge: bool,
    /// Seconds to wait, for `too_many_requests`.
    pub retry_after: Option<i64>,
}

impl OAuthError {
    /// An error with `code` and `description`.
    pub fn new(code: ErrorCode, description: impl Into<String>) -> OAuthError {
        OAuthError {
            code,
            description: description.into(),
            basic_challenge: false,
            retry_after: None,
        }
    }
}

/// 400 `invalid_request` with `description`.
pub fn invalid_request(d: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidRequest, d)
}

/// 429 `too_many_requests` with `Retry-After: retry_after` seconds.
pub fn too_many_requests(retry_after: i64, description: impl Into<String>) -> OAuthError {
    OAuthError {
        retry_after: Some(retry_after),
        ..OAuthError::new(ErrorCode::TooManyRequests, description)
    }
}

/// A store failure as a client sees it: 503 `temporarily_unavailable`
/// (logged here, never shown).
pub fn unavailable(e: crate::store::StoreError) -> OAuthError {
    tracing::error!(error = %e, "database error at the token endpoint");
    OAuthError::new(ErrorCode::TemporarilyUnavailable, "try again shortly")
}
