//! The token endpoint's logic (RFC 6749 §3.2), free of HTTP types: client
//! authentication, grant dispatch, scope and audience rules, and the errors
//! of §5.2. `src/http/token.rs` only parses the request and renders the result.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use super::mint::{MintError, Minter, TokenRequest};
use crate::auth::client::SecretDigester;
use crate::store::{Client, Store};

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
}

impl OAuthError {
    /// An error with `code` and `description`.
    pub fn new(code: ErrorCode, description: impl Into<String>) -> OAuthError {
        OAuthError {
            code,
            description: description.into(),
            basic_challenge: false,
        }
    }
}

fn invalid_request(d: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidRequest, d)
}

/// Client credentials as presented, before checking.
#[derive(Debug, Default)]
pub struct Presented {
    /// From `Authorization: Basic` (already form-decoded), if used.
    pub basic: Option<(String, String)>,
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Clone, Debug, Serialize)]
pub struct TokenResponse {
    /// The access token (JWS, or JWE for encrypted audiences).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// Granted scopes, space-separated.
    pub scope: String,
}

/// The token endpoint.
pub struct TokenEndpoint {
    store: Arc<dyn Store>,
    minter: Arc<Minter>,
    digester: SecretDigester,
}

impl TokenEndpoint {
    /// An endpoint minting with `minter` and checking secrets with `digester`.
    pub fn new(
        store: Arc<dyn Store>,
        minter: Arc<Minter>,
        digester: SecretDigester,
    ) -> TokenEndpoint {
        TokenEndpoint {
            store,
            minter,
            digester,
        }
    }

    /// Handles one token request: `params` are the form parameters (each at
    /// most once, empty ones already dropped), `presented` the header credentials.
    pub async fn handle(
        &self,
        params: &HashMap<String, String>,
        presented: Presented,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let grant_type = params
            .get("grant_type")
            .ok_or_else(|| invalid_request("grant_type is required"))?;
        if !matches!(
            grant_type.as_str(),
            "client_credentials" | "password" | "refresh_token"
        ) {
            return Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                format!(
                    "grant_type {grant_type:?} is not supported (use client_credentials, password or refresh_token)"
                ),
            ));
        }
        let client = self.authenticate(params, presented).await?;
        if !client.grant_types.iter().any(|g| g == grant_type) {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                format!("client {} may not use the {grant_type} grant", client.id),
            ));
        }
        match grant_type.as_str() {
            "client_credentials" => self.client_credentials(&client, params, now),
            // Password and refresh-token grants open and rotate sessions; they
            // are not served yet (see docs/api.md).
            _ => Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                format!("the {grant_type} grant is not available yet on this server"),
            )),
        }
    }

    /// RFC 6749 §2.3: exactly one authentication method; confidential
    /// clients must prove their secret, public clients must not send one.
    async fn authenticate(
        &self,
        params: &HashMap<String, String>,
        presented: Presented,
    ) -> Result<Client, OAuthError> {
        let basic = presented.basic.is_some();
        let (id, secret) = match (presented.basic, params.get("client_secret")) {
            (Some(_), Some(_)) => {
                return Err(invalid_request(
                    "use one client authentication method, not both Basic and client_secret",
                ));
            }
            (Some((id, secret)), None) => {
                if params
                    .get("client_id")
                    .is_some_and(|body_id| *body_id != id)
                {
                    return Err(invalid_request(
                        "client_id in the body differs from the Basic credentials",
                    ));
                }
                (id, Some(secret))
            }
            (None, secret) => {
                let id = params
                    .get("client_id")
                    .ok_or_else(|| invalid_request("client authentication is required (Basic, client_secret_post, or client_id for public clients)"))?;
                (id.clone(), secret.cloned())
            }
        };
        let failed = || OAuthError {
            code: ErrorCode::InvalidClient,
            description: "client authentication failed".into(),
            basic_challenge: basic,
        };
        let client = match self.store.client_by_id(&id).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "client lookup failed");
                return Err(OAuthError::new(
                    ErrorCode::TemporarilyUnavailable,
                    "try again shortly",
                ));
            }
        };
        let Some(client) = client.filter(|c| !c.disabled) else {
            // Same work as a wrong secret, so unknown ids are not distinguishable by time.
            if let Some(s) = &secret {
                let _ = self.digester.verify(&[0u8; 32], s);
            }
            return Err(failed());
        };
        match (&client.secret_digest, secret) {
            (Some(digest), Some(secret)) if self.digester.verify(digest, &secret) => Ok(client),
            (None, None) => Ok(client),
            _ => Err(failed()),
        }
    }

    /// Scopes: each requested one must be allowed; none requested means all allowed.
    fn scopes(client: &Client, params: &HashMap<String, String>) -> Result<String, OAuthError> {
        match params.get("scope") {
            None => Ok(client.scopes.join(" ")),
            Some(requested) => {
                let mut granted: Vec<&str> = Vec::new();
                for s in requested.split(' ').filter(|s| !s.is_empty()) {
                    if !client.scopes.iter().any(|a| a == s) {
                        return Err(OAuthError::new(
                            ErrorCode::InvalidScope,
                            format!("scope {s:?} is not allowed for client {}", client.id),
                        ));
                    }
                    if !granted.contains(&s) {
                        granted.push(s);
                    }
                }
                Ok(granted.join(" "))
            }
        }
    }

    /// Audiences: `audience` (or RFC 8707 `resource`) picks one of the
    /// client's; otherwise all of them.
    fn audiences(
        client: &Client,
        params: &HashMap<String, String>,
    ) -> Result<Vec<String>, OAuthError> {
        let requested = match (params.get("audience"), params.get("resource")) {
            (Some(_), Some(_)) => {
                return Err(invalid_request("give audience or resource, not both"));
            }
            (a, r) => a.or(r),
        };
        match requested {
            None => Ok(client.audiences.clone()),
            Some(aud) if client.audiences.contains(aud) => Ok(vec![aud.clone()]),
            Some(aud) => Err(OAuthError::new(
                ErrorCode::InvalidTarget,
                format!("audience {aud:?} is not allowed for client {}", client.id),
            )),
        }
    }

    fn client_credentials(
        &self,
        client: &Client,
        params: &HashMap<String, String>,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        if !client.confidential {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "client_credentials needs a confidential client",
            ));
        }
        let scope = Self::scopes(client, params)?;
        let audiences = Self::audiences(client, params)?;
        let minted = self
            .minter
            .mint(
                TokenRequest {
                    sub: client.id.clone(),
                    audiences,
                    client_id: client.id.clone(),
                    scope: scope.clone(),
                    sid: None,
                },
                now,
            )
            .map_err(mint_error)?;
        Ok(TokenResponse {
            access_token: minted.token,
            token_type: "Bearer",
            expires_in: self.minter.ttl(),
            scope,
        })
    }
}

fn mint_error(e: MintError) -> OAuthError {
    match e {
        MintError::SharedEncryptedAudience(_) | MintError::NoAudience => OAuthError::new(
            ErrorCode::InvalidRequest,
            format!("{e}; request one audience with the audience parameter"),
        ),
        other => {
            tracing::error!(error = %other, "minting failed");
            OAuthError::new(ErrorCode::ServerError, "the token could not be issued")
        }
    }
}
