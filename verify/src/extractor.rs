//! The actix-web extractor: `Authenticated` in a handler's arguments means
//! the request carried a valid bearer token.

use actix_web::http::StatusCode;
use actix_web::http::header::{AUTHORIZATION, CACHE_CONTROL, WWW_AUTHENTICATE};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use futures_util::future::LocalBoxFuture;

use super::{AccessClaims, Verifier, VerifyError};

/// The validated claims of the request's bearer token.
#[derive(Clone, Debug)]
pub struct Authenticated(AccessClaims);

impl Authenticated {
    /// The token's claims.
    pub fn claims(&self) -> &AccessClaims {
        &self.0
    }

    /// Consumes the extractor, returning the claims.
    pub fn into_claims(self) -> AccessClaims {
        self.0
    }
}

/// Why a request was not authenticated (RFC 6750 §3).
#[derive(Debug, thiserror::Error)]
pub enum BearerError {
    /// No `Authorization: Bearer` header.
    #[error("a bearer token is required")]
    Missing,
    /// The token was refused.
    #[error("{0}")]
    Invalid(VerifyError),
    /// Keys could not be obtained to check the token.
    #[error("cannot verify tokens right now")]
    Unavailable,
    /// The application did not register a `web::Data<Verifier>`.
    #[error("no verifier configured")]
    NotConfigured,
}

impl ResponseError for BearerError {
    fn status_code(&self) -> StatusCode {
        match self {
            BearerError::Missing | BearerError::Invalid(_) => StatusCode::UNAUTHORIZED,
            BearerError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            BearerError::NotConfigured => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        res.insert_header((CACHE_CONTROL, "no-store"));
        match self {
            // RFC 6750 §3.1: no error code when no credentials were sent.
            BearerError::Missing => {
                res.insert_header((WWW_AUTHENTICATE, "Bearer"));
            }
            BearerError::Invalid(e) => {
                // Only our own fixed texts reach the header; quotes and
                // backslashes are dropped anyway so it can never be malformed.
                let description: String = e
                    .to_string()
                    .chars()
                    .filter(|c| !matches!(c, '"' | '\\'))
                    .collect();
                res.insert_header((
                    WWW_AUTHENTICATE,
                    format!("Bearer error=\"invalid_token\", error_description=\"{description}\""),
                ));
            }
            BearerError::Unavailable | BearerError::NotConfigured => {}
        }
        let error = match self {
            BearerError::Missing | BearerError::Invalid(_) => "invalid_token",
            _ => "temporarily_unavailable",
        };
        res.json(serde_json::json!({ "error": error, "error_description": self.to_string() }))
    }
}

/// The token of an `Authorization: Bearer …` header (scheme case-insensitive).
/// The bearer token of `Authorization: Bearer …`, if the request carries one.
pub fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

impl FromRequest for Authenticated {
    type Error = BearerError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let verifier = req.app_data::<web::Data<Verifier>>().cloned();
        let token = bearer(req);
        Box::pin(async move {
            let verifier = verifier.ok_or_else(|| {
                tracing::error!("Authenticated used without app_data(web::Data<Verifier>)");
                BearerError::NotConfigured
            })?;
            let token = token.ok_or(BearerError::Missing)?;
            match verifier.verify(&token).await {
                Ok(claims) => Ok(Authenticated(claims)),
                Err(VerifyError::KeysUnavailable | VerifyError::RevocationsStale) => {
                    Err(BearerError::Unavailable)
                }
                Err(e) => Err(BearerError::Invalid(e)),
            }
        })
    }
}
