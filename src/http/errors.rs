//! Every error the HTTP edge answers, rendered in one place: the OAuth
//! errors of RFC 6749 §5.2 ([`OAuthError`]) and the admin API's
//! ([`AdminError`]). Handlers return `Result<HttpResponse, E>` and use `?`;
//! the status code, body, `Cache-Control`, `Retry-After` and challenge of
//! each error are decided here and nowhere else.

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, PRAGMA, WWW_AUTHENTICATE};
use actix_web::{HttpResponse, HttpResponseBuilder, ResponseError};

use crate::auth::accounts::AccountError;
use crate::oauth::{ErrorCode, OAuthError};
use crate::revocation::RevokeError;
use crate::store::StoreError;
use crate::verify::BearerError;

/// `Cache-Control: no-store` and `Pragma: no-cache` (RFC 6749 §5.1).
pub(super) fn no_store(mut builder: HttpResponseBuilder) -> HttpResponseBuilder {
    builder
        .insert_header((CACHE_CONTROL, "no-store"))
        .insert_header((PRAGMA, "no-cache"));
    builder
}

impl ResponseError for OAuthError {
    fn status_code(&self) -> StatusCode {
        match self.code {
            ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::AccessDenied => StatusCode::FORBIDDEN,
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = no_store(HttpResponse::build(self.status_code()));
        if self.basic_challenge {
            res.insert_header((
                WWW_AUTHENTICATE,
                "Basic realm=\"tessera\", charset=\"UTF-8\"",
            ));
        }
        if self.code == ErrorCode::TemporarilyUnavailable && self.retry_after.is_none() {
            res.insert_header(("Retry-After", "1"));
        }
        if let Some(seconds) = self.retry_after {
            res.insert_header(("Retry-After", seconds.max(1).to_string()));
        }
        res.json(serde_json::json!({ "error": self.code, "error_description": self.description }))
    }
}

/// A revocation refused at `/oauth/revoke` or `/oauth/logout`.
impl From<RevokeError> for OAuthError {
    fn from(e: RevokeError) -> OAuthError {
        match e {
            RevokeError::NotYourToken => OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "the token was not issued to this client",
            ),
            RevokeError::NotFound(what) => {
                OAuthError::new(ErrorCode::InvalidRequest, format!("{what} not found"))
            }
            RevokeError::DpopProofRequired => {
                OAuthError::new(ErrorCode::InvalidDpopProof, e.to_string())
            }
            RevokeError::Store(e) => crate::oauth::unavailable(e),
        }
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> OAuthError {
        crate::oauth::unavailable(e)
    }
}

/// The admin API's errors.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No usable bearer token: 401 as resource servers answer it (RFC 6750).
    #[error("{0}")]
    Unauthorized(BearerError),
    /// A valid token without the right: 403 `insufficient_scope`.
    #[error(
        "this API needs an access token with scope tessera:admin that an admin client obtained for itself (client_credentials)"
    )]
    Forbidden,
    /// The request is invalid: 400 `invalid_request`.
    #[error("{0}")]
    Invalid(String),
    /// The body is not JSON: 415.
    #[error("request body: Content-Type must be application/json")]
    NotJson,
    /// No such thing: 404 `not_found`.
    #[error("{0}")]
    NotFound(String),
    /// It exists already, or lost a race: 409 `conflict`.
    #[error("{0}")]
    Conflict(String),
    /// The database failed: 503 `temporarily_unavailable` (details logged).
    #[error("try again shortly")]
    Unavailable,
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            AdminError::Unauthorized(e) => e.status_code(),
            AdminError::Forbidden => StatusCode::FORBIDDEN,
            AdminError::Invalid(_) => StatusCode::BAD_REQUEST,
            AdminError::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let code = match self {
            // 401s exactly as resource servers answer them (RFC 6750).
            AdminError::Unauthorized(e) => return e.error_response(),
            AdminError::Forbidden => "insufficient_scope",
            AdminError::Invalid(_) | AdminError::NotJson => "invalid_request",
            AdminError::NotFound(_) => "not_found",
            AdminError::Conflict(_) => "conflict",
            AdminError::Unavailable => "temporarily_unavailable",
        };
        let mut res = super::error_response(self.status_code(), code, &self.to_string());
        let headers = res.headers_mut();
        match self {
            AdminError::Forbidden => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    "Bearer error=\"insufficient_scope\", scope=\"tessera:admin\""
                        .parse()
                        .expect("static header"),
                );
            }
            AdminError::Unavailable => {
                headers.insert(
                    actix_web::http::header::RETRY_AFTER,
                    actix_web::http::header::HeaderValue::from_static("1"),
                );
            }
            _ => {}
        }
        res
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> AdminError {
        tracing::error!(error = %e, "database error");
        AdminError::Unavailable
    }
}

impl From<AccountError> for AdminError {
    fn from(e: AccountError) -> AdminError {
        match e {
            AccountError::Invalid(m) => AdminError::Invalid(m),
            AccountError::NotFound(m) => AdminError::NotFound(m),
            AccountError::Conflict(m) => AdminError::Conflict(m),
            AccountError::Store(e) => e.into(),
        }
    }
}

impl From<RevokeError> for AdminError {
    fn from(e: RevokeError) -> AdminError {
        match e {
            RevokeError::NotFound(what) => AdminError::NotFound(format!("no such {what}")),
            RevokeError::NotYourToken | RevokeError::DpopProofRequired => {
                AdminError::Invalid(e.to_string())
            }
            RevokeError::Store(e) => e.into(),
        }
    }
}

/// The RFC 6749 §5.2 error body every error response carries.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // A schema: rendered by `error_response`, never built.
pub(crate) struct ErrorBody {
    /// `invalid_request`, `invalid_client`, `invalid_grant`,
    /// `unauthorized_client`, `unsupported_grant_type`, `invalid_scope`,
    /// `invalid_target`, `access_denied`, `too_many_requests`,
    /// `invalid_dpop_proof`, `use_dpop_nonce`,
    /// `temporarily_unavailable`, `not_found`, …
    error: String,
    /// What was wrong, for the developer; never echoes secrets.
    error_description: String,
}

/// How every admin endpoint answers a caller who may not call it, or when
/// the database is down (the statuses [`AdminError`] renders for
/// `Unauthorized`, `Forbidden` and `Unavailable`).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Documentation: the answers are rendered by `AdminError`.
pub(crate) enum AdminCallerErrors {
    /// No bearer token, or an invalid one.
    #[response(
        status = 401,
        description = "invalid_token, or no bearer token: the RFC 6750 challenge resource servers answer"
    )]
    Unauthorized(ErrorBody),
    /// A valid token without the right.
    #[response(
        status = 403,
        description = "insufficient_scope: the token lacks tessera:admin, carries a user, or its client is no longer an enabled admin"
    )]
    Forbidden(ErrorBody),
    /// The database failed.
    #[response(
        status = 503,
        description = "temporarily_unavailable: the database is down; with Retry-After"
    )]
    Unavailable(ErrorBody),
}

/// How every client-authenticated OAuth endpoint answers a bad request, a
/// failed client authentication, or the database down ([`OAuthError`]).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Documentation: the answers are rendered by `OAuthError`.
pub(crate) enum ClientErrors {
    /// A malformed request or one the client may not make.
    #[response(
        status = 400,
        description = "invalid_request and the other RFC 6749 §5.2 errors"
    )]
    BadRequest(ErrorBody),
    /// Client authentication failed.
    #[response(
        status = 401,
        description = "invalid_client; with a Basic challenge when the client tried HTTP Basic"
    )]
    InvalidClient(ErrorBody),
    /// The database failed.
    #[response(
        status = 503,
        description = "temporarily_unavailable: the database is down; with Retry-After"
    )]
    Unavailable(ErrorBody),
}
