//! `grant_type=refresh_token` (RFC 6749 §6): the session moves on to its
//! next generation, once per token (replay detection in the store).

use std::collections::HashMap;

use super::{TokenEndpoint, TokenResponse};
use crate::audit::{Action, Event, client_actor, user_actor};
use crate::auth::network;
use crate::oauth::{ErrorCode, OAuthError, invalid_request, unavailable};
use crate::store::{Client, Rotation, RotationRequest};
use crate::tokens::mint::TokenRequest;
use crate::tokens::policy::{REFRESH_COOKIE, audiences, grantable, narrow};
use crate::tokens::refresh::{Presented, RefreshTokens, SessionSecret};

impl TokenEndpoint {
    /// RFC 6749 §6: a refresh token is consumed and replaced, in its session.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn refresh(
        &self,
        client: &Client,
        params: &HashMap<String, String>,
        cookie: Option<String>,
        user_agent: Option<String>,
        ip: Option<std::net::IpAddr>,
        jkt: Option<&str>,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let presented = match (params.get("refresh_token"), client.cookie) {
            (Some(_), true) => {
                return Err(invalid_request(format!(
                    "client {} keeps its refresh token in the {REFRESH_COOKIE} cookie; do not send it in the body",
                    client.id
                )));
            }
            (Some(token), false) => token.clone(),
            (None, true) => cookie.ok_or_else(|| {
                invalid_request(format!("the {REFRESH_COOKIE} cookie is missing"))
            })?,
            (None, false) => return Err(invalid_request("refresh_token is required")),
        };
        let invalid = || {
            OAuthError::new(
                ErrorCode::InvalidGrant,
                "the refresh token is invalid, expired or revoked",
            )
        };
        // Refused before the token is consumed: it depends on the request alone.
        let audiences = audiences(client, params)?;
        // A forged or mangled token never reaches the database.
        let presented = self.refresh_tokens.parse(&presented).ok_or_else(invalid)?;
        // Nor does a bound token without a proof by its key: it consumes
        // nothing and revokes nothing, or a thief could end the session.
        if !self.refresh_tokens.binding_allows(&presented, jkt) {
            let session = match &presented {
                Presented::Current { sid, .. } => sid.to_string(),
                Presented::Legacy(_) => String::new(),
            };
            self.auditor
                .record_durable(
                    Event::new(client_actor(&client.id), Action::DpopProofRefused)
                        .subject(session)
                        .detail(
                            "reason",
                            match jkt {
                                None => "bound refresh token without a DPoP proof",
                                Some(_) => "bound refresh token with a proof by another key",
                            },
                        )
                        .network(ip.map(network::prefix)),
                )
                .await;
            return Err(OAuthError::new(
                ErrorCode::InvalidDpopProof,
                "this refresh token is bound to a DPoP key: send a DPoP proof signed by that key",
            ));
        }
        // A bound session stays bound to its key.
        let binding = jkt.filter(|_| RefreshTokens::is_bound(&presented));
        // Installed only if this is a legacy token moving its session over.
        let fresh = SessionSecret::generate();
        let revocation_relevant_until = crate::revocation::relevant_until(now, self.minter.ttl());
        let rotation = self
            .store
            .rotate_refresh_token(&RotationRequest {
                presented: presented.to_store(),
                fresh_secret: fresh.digest(),
                client_id: client.id.clone(),
                now,
                idle_ttl: self.sessions.idle_ttl,
                grace: self.sessions.reuse_grace,
                revocation_relevant_until,
            })
            .await
            .map_err(unavailable)?;
        let network = ip.map(network::prefix);
        let (session, grace_reuse) = match rotation {
            Rotation::Rotated {
                session,
                grace_reuse,
            } => (session, grace_reuse),
            Rotation::Replayed {
                session_id,
                user_id,
            } => {
                tracing::warn!(sid = %session_id, client_id = %client.id, "refresh token replay: session revoked");
                self.revocations.refresh_now().await;
                self.auditor
                    .record_durable(
                        Event::new(client_actor(&client.id), Action::RefreshReuseDetected)
                            .subject(session_id)
                            .detail("sub", user_id.to_string())
                            .detail("session_revoked", true)
                            .network(network),
                    )
                    .await;
                return Err(OAuthError::new(
                    ErrorCode::InvalidGrant,
                    "the refresh token was already used; the session has been revoked",
                ));
            }
            Rotation::Invalid => return Err(invalid()),
        };
        // From here on the presented token is consumed. If no answer goes
        // out for a fault of ours (the signer is gone, the database failed),
        // the rotation is undone, so the client's retry is not taken for a
        // replay (which would revoke the session). A refusal of the
        // request itself keeps the token consumed: otherwise a thief could
        // test a stolen token without leaving a trace.
        let (sid, generation) = (session.id, session.refresh_generation);
        let undoable = matches!(presented, Presented::Current { .. });
        let outcome = async {
            // The session is bound to the browser (User-Agent hash) and the
            // network (/24 or /48) it was opened from.
            let ua_changed = session.user_agent_hash.is_some()
                && user_agent.map(|ua| crate::digest::sha256(ua.as_bytes()).to_vec())
                    != session.user_agent_hash;
            let network_changed = session.network_prefix.is_some()
                && ip.map(network::prefix) != session.network_prefix;
            if ua_changed || network_changed {
                tracing::warn!(
                    sid = %session.id,
                    client_id = %client.id,
                    ua_changed,
                    network_changed,
                    "session used from a different browser or network"
                );
                let revoke = client.on_binding_change == crate::store::BindingPolicy::Revoke;
                let event = Event::new(user_actor(session.user_id), Action::SessionBindingChanged)
                    .subject(session.id)
                    .detail("client_id", client.id.clone())
                    .detail("user_agent_changed", ua_changed)
                    .detail("network_changed", network_changed)
                    .detail("session_revoked", revoke)
                    .network(network.clone());
                // A revocation is a security event, stored before the answer. A
                // kept session is routine: every refresh from the new browser
                // or network repeats the event, and waiting for each to reach
                // the disk would cost every such refresh a flush.
                if revoke {
                    self.auditor.record_durable(event).await;
                } else {
                    self.auditor.record(event).await;
                }
                if revoke {
                    self.store
                        .revoke_session(
                            session.id,
                            now,
                            "binding change",
                            revocation_relevant_until,
                        )
                        .await
                        .map_err(unavailable)?;
                    self.revocations.refresh_now().await;
                    return Err(OAuthError::new(
                        ErrorCode::InvalidGrant,
                        "the session was revoked: it was used from a different browser or network",
                    ));
                }
            }
            // A refresh may narrow the session's scopes, never widen them (and
            // never passes on tessera:admin, which a session opened before admin
            // clients were restricted may still list).
            let allowed = grantable(session.scope.split(' '), true);
            let scope = match params.get("scope") {
                None => allowed.join(" "),
                Some(requested) => narrow(&allowed, requested, "this session")?,
            };
            let secret = match presented {
                Presented::Current { secret, .. } => secret,
                Presented::Legacy(_) => fresh,
            };
            let next =
                self.refresh_tokens
                    .issue(session.id, session.refresh_generation, &secret, binding);
            let mut response = self
                .respond(
                    TokenRequest {
                        sub: session.user_id.to_string(),
                        audiences,
                        client_id: client.id.clone(),
                        scope,
                        sid: Some(session.id),
                        jkt: jkt.map(str::to_owned),
                        act: None,
                        expires_at: None,
                    },
                    Some(next.to_string()),
                    now,
                )
                .await?;
            if client.cookie {
                response.refresh_cookie_max_age = Some(session.idle_expires_at - now);
            }
            self.auditor
                .record(
                    Event::new(
                        user_actor(session.user_id),
                        if grace_reuse {
                            Action::RefreshGraceReuse
                        } else {
                            Action::Refresh
                        },
                    )
                    .subject(session.id)
                    .detail("client_id", client.id.clone())
                    .network(network),
                )
                .await;
            Ok(response)
        }
        .await;
        let our_fault = |e: &OAuthError| {
            matches!(
                e.code,
                ErrorCode::TemporarilyUnavailable | ErrorCode::ServerError
            )
        };
        if undoable && outcome.as_ref().err().is_some_and(our_fault) {
            match self.store.unrotate_refresh_token(sid, generation).await {
                Ok(stepped_back) => {
                    tracing::info!(sid = %sid, stepped_back, "refresh failed on our side: rotation undone")
                }
                Err(e) => {
                    tracing::warn!(sid = %sid, error = %e, "refresh failed on our side and its rotation could not be undone")
                }
            }
        }
        outcome
    }
}
