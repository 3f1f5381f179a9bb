//! `grant_type=authorization_code` (RFC 6749 §4.1.3 with PKCE, RFC 7636):
//! a code from tessera's login page opens a session, and with `openid` in
//! its scope an ID token comes with the tokens.
//!
//! A code is bound to the client, the redirect URI and the PKCE challenge,
//! and expires after 60 s. It is single-use through the session it opens:
//! its id is chosen with the code, so the first redemption inserts that
//! session and any later one finds it, revokes it (RFC 6749 §4.1.2: the
//! code may have been stolen) and fails.

use std::collections::HashMap;

use super::{TokenEndpoint, TokenResponse, credentials_changed};
use crate::audit::{Action, Event, client_actor, user_actor};
use crate::auth::network;
use crate::authorize::pkce_matches;
use crate::oauth::{ErrorCode, OAuthError, invalid_request, unavailable};
use crate::store::Client;
use crate::tokens::mint::{IdClaims, at_hash};
use crate::tokens::policy::audiences;

impl TokenEndpoint {
    /// RFC 6749 §4.1.3: a code for the tokens.
    pub(super) async fn authorization_code(
        &self,
        client: &Client,
        params: &HashMap<String, String>,
        user_agent: Option<String>,
        ip: Option<std::net::IpAddr>,
        jkt: Option<&str>,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let required = |name: &str, why: &str| {
            params
                .get(name)
                .ok_or_else(|| invalid_request(format!("{name} is required{why}")))
        };
        let code = required("code", "")?;
        let verifier = required("code_verifier", " (PKCE)")?;
        let redirect_uri = required("redirect_uri", ": the one the authorization request used")?;
        let audiences = audiences(client, params)?;
        let invalid = |why: &str| OAuthError::new(ErrorCode::InvalidGrant, why);
        // The same answer whatever is wrong with the code itself.
        let grant = self
            .sealer
            .open_code(code, now)
            .ok_or_else(|| invalid("the code is invalid or expired"))?;
        if grant.client_id != client.id {
            return Err(invalid("the code was issued to another client"));
        }
        if grant.redirect_uri != *redirect_uri {
            return Err(invalid(
                "redirect_uri differs from the authorization request's",
            ));
        }
        if !pkce_matches(verifier, &grant.challenge) {
            return Err(invalid("code_verifier does not match the code_challenge"));
        }
        let user = self
            .store
            .user_by_id(grant.user)
            .await
            .map_err(unavailable)?
            .filter(|u| !u.disabled && u.credential_version == grant.credential_version)
            .ok_or_else(credentials_changed)?;
        let network = ip.map(network::prefix);
        let opened = self
            .open_session(
                &user,
                client,
                &grant.scope,
                user_agent,
                network.clone(),
                now,
                grant.sid,
                jkt,
                None,
            )
            .await?;
        let Some(session) = opened else {
            if self
                .store
                .session(grant.sid)
                .await
                .map_err(unavailable)?
                .is_none()
            {
                self.audit_credentials_changed(client, &user, ip).await;
                return Err(credentials_changed());
            }
            // Redeemed before: whoever holds the session may have stolen the code.
            let until = crate::revocation::relevant_until(now, self.minter.ttl());
            self.store
                .revoke_session(grant.sid, now, "authorization code reused", until)
                .await
                .map_err(unavailable)?;
            self.revocations.refresh_now().await;
            self.auditor
                .record_durable(
                    Event::new(client_actor(&client.id), Action::AuthorizationCodeReused)
                        .subject(grant.sid)
                        .network(network),
                )
                .await;
            return Err(invalid(
                "the code was already used; the session it opened is revoked",
            ));
        };
        self.auditor
            .record(
                Event::new(user_actor(user.id), Action::Login)
                    .subject(session.id)
                    .detail("client_id", client.id.clone())
                    .detail("amr", grant.amr.join(" "))
                    .network(network),
            )
            .await;
        let sid = session.id;
        let mut response = self
            .session_response(
                client,
                &user,
                session,
                audiences,
                grant.scope.clone(),
                jkt,
                now,
            )
            .await?;
        if grant.scope.split(' ').any(|s| s == "openid") {
            let id_token = self
                .minter
                .id_token(
                    IdClaims {
                        sub: user.id.to_string(),
                        aud: client.id.clone(),
                        azp: client.id.clone(),
                        auth_time: grant.auth_time,
                        nonce: grant.nonce,
                        amr: grant.amr,
                        sid: sid.to_string(),
                        at_hash: at_hash(&response.access_token),
                    },
                    now,
                )
                .map_err(super::mint_error)?;
            response.id_token = Some(id_token);
        }
        Ok(response)
    }
}
