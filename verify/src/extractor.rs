//! The actix-web extractor: `Authenticated` in a handler's arguments means
//! the request carried a valid bearer token, or a valid DPoP-bound token
//! with its proof (RFC 9449 §7).

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

/// Why a request was not authenticated (RFC 6750 §3, RFC 9449 §7.1).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BearerError {
    /// No `Authorization: Bearer` or `DPoP` header.
    #[error("a bearer token is required")]
    Missing,
    /// The token was refused.
    #[error("{0}")]
    Invalid(VerifyError),
    /// A token presented with `Authorization: DPoP` was refused.
    #[error("{0}")]
    InvalidDpopToken(VerifyError),
    /// The DPoP proof was missing, repeated or refused.
    #[error("{0}")]
    InvalidDpopProof(String),
    /// The proof lacks a fresh server nonce: retry with this one.
    #[error("a fresh DPoP nonce is required")]
    UseDpopNonce(String),
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
            BearerError::Missing
            | BearerError::Invalid(_)
            | BearerError::InvalidDpopToken(_)
            | BearerError::InvalidDpopProof(_)
            | BearerError::UseDpopNonce(_) => StatusCode::UNAUTHORIZED,
            BearerError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            BearerError::NotConfigured => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        res.insert_header((CACHE_CONTROL, "no-store"));
        // Only our own fixed texts reach the header; quotes and
        // backslashes are dropped anyway so it can never be malformed.
        let description: String = self
            .to_string()
            .chars()
            .filter(|c| !matches!(c, '"' | '\\'))
            .collect();
        let algs = crate::dpop::SUPPORTED_ALGS.join(" ");
        let challenge = |scheme: &str, error: &str| {
            format!("{scheme} error=\"{error}\", error_description=\"{description}\"")
        };
        match self {
            // RFC 6750 §3.1: no error code when no credentials were sent.
            // (The issuer's own endpoints answer with this too, and take
            // only bearer tokens, so DPoP is not offered here.)
            BearerError::Missing => {
                res.insert_header((WWW_AUTHENTICATE, "Bearer"));
            }
            BearerError::Invalid(_) => {
                res.insert_header((WWW_AUTHENTICATE, challenge("Bearer", "invalid_token")));
            }
            BearerError::InvalidDpopToken(_) => {
                let value = format!("{}, algs=\"{algs}\"", challenge("DPoP", "invalid_token"));
                res.insert_header((WWW_AUTHENTICATE, value));
            }
            BearerError::InvalidDpopProof(_) => {
                let value = format!(
                    "{}, algs=\"{algs}\"",
                    challenge("DPoP", "invalid_dpop_proof")
                );
                res.insert_header((WWW_AUTHENTICATE, value));
            }
            BearerError::UseDpopNonce(nonce) => {
                let value = format!("{}, algs=\"{algs}\"", challenge("DPoP", "use_dpop_nonce"));
                res.insert_header((WWW_AUTHENTICATE, value));
                res.insert_header(("DPoP-Nonce", nonce.as_str()));
            }
            BearerError::Unavailable | BearerError::NotConfigured => {}
        }
        let error = match self {
            BearerError::Missing | BearerError::Invalid(_) | BearerError::InvalidDpopToken(_) => {
                "invalid_token"
            }
            BearerError::InvalidDpopProof(_) => "invalid_dpop_proof",
            BearerError::UseDpopNonce(_) => "use_dpop_nonce",
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

/// The token of `Authorization: DPoP …` and the request's single `DPoP`
/// proof header; `None` if the scheme is not DPoP.
fn dpop(req: &HttpRequest) -> Option<Result<(String, String), BearerError>> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("dpop") {
        return None;
    }
    let token = token.trim();
    if token.is_empty() {
        return Some(Err(BearerError::Missing));
    }
    let proof = dpop_header(req).unwrap_or(Err("a DPoP proof header is required"));
    Some(
        proof
            .map(|p| (token.to_owned(), p))
            .map_err(|e| BearerError::InvalidDpopProof(e.to_owned())),
    )
}

/// The request's `DPoP` proof header, if it sent one: at most one
/// (RFC 9449 §4.3), ASCII; the error says which rule the header broke.
pub fn dpop_header(req: &HttpRequest) -> Option<Result<String, &'static str>> {
    let mut values = req.headers().get_all("dpop");
    match (values.next(), values.next()) {
        (None, _) => None,
        (Some(_), Some(_)) => Some(Err("only one DPoP proof header is allowed")),
        (Some(v), None) => Some(
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| "the DPoP header is not ASCII"),
        ),
    }
}

/// The absolute URL the client addressed: the verifier's public base URL
/// if set (behind a proxy), else what the connection says.
fn request_url(req: &HttpRequest, base: Option<&str>) -> String {
    match base {
        Some(base) => format!("{}{}", base.trim_end_matches('/'), req.path()),
        None => {
            let info = req.connection_info();
            format!("{}://{}{}", info.scheme(), info.host(), req.path())
        }
    }
}

/// Authenticates `req` as the [`Authenticated`] extractor does: a bearer
/// token, or a DPoP-bound token with its proof. For handlers (and servers)
/// that answer errors their own way.
pub async fn authenticate(
    req: &HttpRequest,
    verifier: &Verifier,
) -> Result<AccessClaims, BearerError> {
    if let Some(presented) = dpop(req) {
        let (token, proof) = presented?;
        let url = request_url(req, verifier.dpop_base_url());
        return match verifier
            .verify_dpop(&token, &proof, req.method().as_str(), &url)
            .await
        {
            Ok(claims) => Ok(claims),
            Err(VerifyError::KeysUnavailable | VerifyError::RevocationsStale) => {
                Err(BearerError::Unavailable)
            }
            Err(VerifyError::Dpop(crate::dpop::DpopError::UseNonce)) => Err(
                BearerError::UseDpopNonce(verifier.dpop_nonce().unwrap_or_default()),
            ),
            Err(VerifyError::Dpop(e)) => Err(BearerError::InvalidDpopProof(e.to_string())),
            Err(e) => Err(BearerError::InvalidDpopToken(e)),
        };
    }
    let token = bearer(req).ok_or(BearerError::Missing)?;
    match verifier.verify(&token).await {
        Ok(claims) => Ok(claims),
        Err(VerifyError::KeysUnavailable | VerifyError::RevocationsStale) => {
            Err(BearerError::Unavailable)
        }
        Err(e) => Err(BearerError::Invalid(e)),
    }
}

impl FromRequest for Authenticated {
    type Error = BearerError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let verifier = req.app_data::<web::Data<Verifier>>().cloned();
        let req = req.clone();
        Box::pin(async move {
            let verifier = verifier.ok_or_else(|| {
                tracing::error!("Authenticated used without app_data(web::Data<Verifier>)");
                BearerError::NotConfigured
            })?;
            authenticate(&req, &verifier).await.map(Authenticated)
        })
    }
}
