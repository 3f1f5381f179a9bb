//! `grant_type=client_credentials` (RFC 6749 §4.4): a confidential client
//! obtains a token for itself.

use std::collections::HashMap;

use super::{TokenEndpoint, TokenResponse};
use crate::oauth::{ErrorCode, OAuthError};
use crate::store::Client;
use crate::tokens::mint::TokenRequest;
use crate::tokens::policy::{audiences, scopes};

impl TokenEndpoint {
    pub(super) async fn client_credentials(
        &self,
        client: &Client,
        params: &HashMap<String, String>,
        jkt: Option<&str>,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        if !client.confidential {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "client_credentials needs a confidential client",
            ));
        }
        let scope = scopes(client, params, false)?;
        let audiences = audiences(client, params)?;
        self.respond(
            TokenRequest {
                sub: client.id.clone(),
                audiences,
                client_id: client.id.clone(),
                scope,
                sid: None,
                jkt: jkt.map(str::to_owned),
                act: None,
                expires_at: None,
            },
            None,
            now,
        )
        .await
    }
}
