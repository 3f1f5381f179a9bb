//! Client authentication (RFC 6749 §2.3), shared by every endpoint a
//! client calls: token, revoke, introspect, logout and the feed.

use std::collections::HashMap;
use std::sync::Arc;

use super::endpoint::{ErrorCode, OAuthError, invalid_request};
use crate::auth::client::SecretDigester;
use crate::store::{Client, Store};

/// Checks client credentials against the store.
pub struct ClientAuthenticator {
    store: Arc<dyn Store>,
    digester: SecretDigester,
}

impl ClientAuthenticator {
    /// Checks secrets with `digester`.
    pub fn new(store: Arc<dyn Store>, digester: SecretDigester) -> ClientAuthenticator {
        ClientAuthenticator { store, digester }
    }

    /// The secret digester (to issue new secrets).
    pub fn digester(&self) -> &SecretDigester {
        &self.digester
    }

    /// Exactly one authentication method: `basic` (from the Authorization
    /// header, already form-decoded), `client_secret` in `params`, or
    /// `client_id` alone for a public client. Confidential clients must
    /// prove their secret; public clients must not send one.
    pub async fn authenticate(
        &self,
        params: &HashMap<String, String>,
        basic: Option<(String, String)>,
    ) -> Result<Client, OAuthError> {
        let used_basic = basic.is_some();
        let (id, secret) = match (basic, params.get("client_secret")) {
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
            basic_challenge: used_basic,
            retry_after: None,
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

    /// Like [`Self::authenticate`], but only confidential clients pass
    /// (introspection and the feed reveal more than a public app may see).
    pub async fn authenticate_confidential(
        &self,
        params: &HashMap<String, String>,
        basic: Option<(String, String)>,
    ) -> Result<Client, OAuthError> {
        let used_basic = basic.is_some();
        let client = self.authenticate(params, basic).await?;
        if !client.confidential {
            return Err(OAuthError {
                code: ErrorCode::InvalidClient,
                description: "this endpoint is for confidential clients (resource servers)".into(),
                basic_challenge: used_basic,
                retry_after: None,
            });
        }
        Ok(client)
    }
}
