//! `grant_type=urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693),
//! in two forms told apart by `subject_token_type`:
//!
//! - **On behalf of** (`…:access_token`): a service that received a user's
//!   tessera access token trades it for one with a narrower audience (one
//!   of its `--exchange-audience`s) and never a wider scope. The new token
//!   keeps `sub` and `sid` (revoking the session revokes it), names the
//!   caller in `act` (RFC 8693 §4.1, nested when exchanged again, at most
//!   [`MAX_ACTORS`] deep), and expires no later than the subject token.
//! - **Upstream login** (`…:id_token` or `…:jwt`): an ID token or JWT of a
//!   trusted upstream issuer (`tessera issuer add`), checked against the
//!   JWKS tessera fetched from the registered URL, opens a tessera session
//!   (access and refresh token) for the user linked to its (`iss`, `sub`),
//!   created on first use when the issuer allows it.

use std::collections::HashMap;

use super::{TokenEndpoint, TokenResponse, credentials_changed};
use crate::audit::{Action, Event, client_actor, clip, user_actor};
use crate::auth::network;
use crate::federation::upstream::{Expectations, UpstreamError, peek_issuer};
use crate::oauth::{ErrorCode, OAuthError, invalid_request, unavailable};
use crate::store::{Client, NewUser, TrustedIssuer, UpstreamAccount, UpstreamOrigin, User};
use crate::tokens::mint::TokenRequest;
use crate::tokens::policy::{
    addressed_to, audiences, grantable, narrow, requested_audience, scopes,
};
use crate::verify::{AccessClaims, Actor};

/// Characters of a value the client chose that messages and the audit log echo.
const MAX_ECHO: usize = 100;

/// RFC 8693 §3: a tessera access token.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// RFC 8693 §3: an OpenID Connect ID token.
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
/// RFC 8693 §3: a JWT.
pub const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// The longest delegation chain an exchanged token may carry: a token
/// already naming this many actors is not exchanged again.
pub const MAX_ACTORS: usize = 4;

/// The password hash of users created from an upstream identity: not a PHC
/// string, so no password ever matches it.
pub const NO_PASSWORD: &str = "!upstream";

/// Which form of exchange a request is, for audit and metrics.
#[derive(Clone, Copy)]
enum Kind {
    OnBehalfOf,
    Upstream,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::OnBehalfOf => "on_behalf_of",
            Kind::Upstream => "upstream",
        }
    }
}

impl TokenEndpoint {
    /// RFC 8693 §2.1: dispatches on `subject_token_type`; every refusal
    /// is audited and counted (a store or signer outage is not a refusal).
    pub(super) async fn token_exchange(
        &self,
        client: &Client,
        params: &HashMap<String, String>,
        user_agent: Option<String>,
        ip: Option<std::net::IpAddr>,
        jkt: Option<&str>,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let mut issuer = None;
        let kind = exchange_kind(params);
        let label = kind.as_ref().map_or("invalid", |(k, _)| k.as_str());
        let result = match kind {
            Err(e) => Err(e),
            Ok((Kind::OnBehalfOf, subject)) => {
                self.on_behalf_of(client, params, subject, jkt, ip, now)
                    .await
            }
            Ok((Kind::Upstream, subject)) => {
                self.upstream_login(
                    client,
                    params,
                    subject,
                    user_agent,
                    ip,
                    jkt,
                    now,
                    &mut issuer,
                )
                .await
            }
        };
        let kind = label;
        let outcome = if result.is_ok() { "issued" } else { "refused" };
        crate::metrics::metrics()
            .token_exchanges
            .with_label_values(&[kind, outcome])
            .inc();
        match result {
            Ok(mut response) => {
                response.issued_token_type = Some(ACCESS_TOKEN_TYPE);
                Ok(response)
            }
            Err(e) => {
                if !matches!(
                    e.code,
                    ErrorCode::TemporarilyUnavailable | ErrorCode::ServerError
                ) {
                    let mut event =
                        Event::new(client_actor(&client.id), Action::TokenExchangeRefused)
                            .detail("kind", kind)
                            .detail("error", e.code.as_str())
                            .detail("reason", clip(&e.description, 300))
                            .network(ip.map(network::prefix));
                    if let Some(issuer) = issuer {
                        event = event.detail("issuer", issuer);
                    }
                    self.auditor.record(event).await;
                }
                Err(e)
            }
        }
    }

    /// A user's access token for one with a narrower audience, the caller
    /// named as the actor.
    async fn on_behalf_of(
        &self,
        client: &Client,
        params: &HashMap<String, String>,
        subject: &str,
        jkt: Option<&str>,
        ip: Option<std::net::IpAddr>,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        // The new token names the caller as its actor: only an
        // authenticated client can be one.
        if !client.confidential {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "exchanging an access token needs a confidential client: the new token names it as the actor",
            ));
        }
        let audience = exchange_audience(client, params)?;
        let claims = self.subject_claims(subject).await?;
        // Only a token addressed to the caller (an audience it serves) is
        // its to exchange; a token it merely saw is not.
        if !addressed_to(client, &claims.aud, &self.issuer) {
            return Err(invalid_grant(format!(
                "the subject token is not addressed to client {}: its audience is none of the client's (--audience)",
                client.id
            )));
        }
        let Some(sid) = claims.sid.as_deref() else {
            return Err(invalid_grant(
                "the subject token carries no user session: only tokens issued to users are exchanged",
            ));
        };
        let sid: uuid::Uuid = sid
            .parse()
            .map_err(|_| invalid_grant("the subject token's sid is not a session id"))?;
        let depth = claims.act.as_ref().map_or(0, Actor::depth);
        if depth >= MAX_ACTORS {
            return Err(invalid_grant(format!(
                "the subject token was exchanged {depth} times already (at most {MAX_ACTORS} actors)"
            )));
        }
        // The revocation list may lag another instance by a moment; the
        // session row does not.
        let session = self
            .store
            .session(sid)
            .await
            .map_err(unavailable)?
            .filter(|s| {
                s.revoked_at.is_none()
                    && s.idle_expires_at > now
                    && s.absolute_expires_at > now
                    && s.user_id.to_string() == claims.sub
            })
            .ok_or_else(|| invalid_grant("the subject token's session has ended"))?;
        let allowed: Vec<&str> = grantable(client.scopes.iter().map(String::as_str), true)
            .into_iter()
            .filter(|s| claims.has_scope(s))
            .collect();
        let scope = match params.get("scope") {
            None => allowed.join(" "),
            Some(requested) => narrow(
                &allowed,
                requested,
                &format!("client {} acting for this token", client.id),
            )?,
        };
        let act = Actor {
            sub: client.id.clone(),
            act: claims.act.clone().map(Box::new),
        };
        let expires_at = claims.exp.min(session.absolute_expires_at);
        let response = self
            .respond(
                TokenRequest {
                    sub: claims.sub.clone(),
                    audiences: vec![audience.clone()],
                    client_id: client.id.clone(),
                    scope: scope.clone(),
                    sid: Some(sid),
                    jkt: jkt.map(str::to_owned),
                    act: Some(act),
                    expires_at: Some(expires_at),
                },
                None,
                now,
            )
            .await?;
        self.auditor
            .record(
                Event::new(client_actor(&client.id), Action::TokenExchanged)
                    .subject(sid)
                    .detail("sub", claims.sub.clone())
                    .detail("audience", audience)
                    .detail("scope", scope)
                    .detail("subject_client_id", claims.client_id.clone())
                    .detail("subject_jti", claims.jti.clone())
                    .detail("actors", depth + 1)
                    .network(ip.map(network::prefix)),
            )
            .await;
        Ok(response)
    }

    /// The subject token's claims, if it is a live tessera access token
    /// (signature, issuer, expiry, revocations; any audience). A DPoP-bound
    /// token is accepted: the caller is its audience, which received it
    /// with a proof.
    async fn subject_claims(&self, subject: &str) -> Result<AccessClaims, OAuthError> {
        if subject.split('.').count() == 5 {
            return Err(invalid_grant(
                "an encrypted (JWE) subject token is not accepted: decrypt it and send the signed token inside",
            ));
        }
        use crate::verify::VerifyError;
        self.own_tokens
            .verify_ignoring_binding(subject)
            .await
            .map_err(|e| match e {
                // Our outage, not the user's token: the service retries
                // instead of treating the user as signed out.
                VerifyError::KeysUnavailable | VerifyError::RevocationsStale => OAuthError::new(
                    ErrorCode::TemporarilyUnavailable,
                    "the subject token cannot be checked right now; try again shortly",
                ),
                e => invalid_grant(format!(
                    "the subject token is not a valid access token: {e}"
                )),
            })
    }

    /// An upstream issuer's ID token or JWT for a tessera session.
    #[allow(clippy::too_many_arguments)]
    async fn upstream_login(
        &self,
        client: &Client,
        params: &HashMap<String, String>,
        subject: &str,
        user_agent: Option<String>,
        ip: Option<std::net::IpAddr>,
        jkt: Option<&str>,
        now: i64,
        audited_issuer: &mut Option<String>,
    ) -> Result<TokenResponse, OAuthError> {
        // Refused before anything is fetched: it depends on the request alone.
        let scope = scopes(client, params, true)?;
        let audiences = audiences(client, params)?;
        let claimed = peek_issuer(subject).map_err(upstream_error)?;
        let issuer = self.trusted_issuer(&claimed).await?.ok_or_else(|| {
            invalid_grant(format!(
                "issuer {:?} is not trusted",
                clip(&claimed, MAX_ECHO)
            ))
        })?;
        *audited_issuer = Some(issuer.issuer.clone());
        let identity = self
            .upstream
            .verify(
                subject,
                &Expectations {
                    issuer: &issuer.issuer,
                    jwks_uri: &issuer.jwks_uri,
                    audience: &issuer.audience,
                    version: issuer.updated_at,
                },
                now,
            )
            .await
            .map_err(upstream_error)?;
        // A replay is refused before it can create a user; the insert with
        // the session is what makes it one session, also in a race.
        if self.used_already(&identity.token_digest).await? {
            return Err(exchanged_already());
        }
        let (user, created) = self.upstream_user(&issuer, &identity.subject, now).await?;
        if user.disabled {
            return Err(invalid_grant("the linked user is disabled"));
        }
        let network = ip.map(network::prefix);
        let Some(session) = self
            .open_session(
                &user,
                client,
                &scope,
                user_agent,
                network.clone(),
                now,
                uuid::Uuid::new_v4(),
                jkt,
                Some(UpstreamOrigin {
                    account: UpstreamAccount {
                        issuer: issuer.issuer.clone(),
                        subject: identity.subject.clone(),
                    },
                    token_digest: identity.token_digest,
                    token_expires_at: identity.accepted_until,
                }),
            )
            .await?
        else {
            // The store refuses the session if the issuer was disabled or
            // the link removed meanwhile, if the token opened a session
            // already, or if the user's credentials changed.
            if self.trusted_issuer(&issuer.issuer).await?.is_none() {
                return Err(invalid_grant(format!(
                    "issuer {:?} is not trusted",
                    issuer.issuer
                )));
            }
            let linked = self
                .store
                .linked_user(&issuer.issuer, &identity.subject)
                .await
                .map_err(unavailable)?;
            if linked.is_none_or(|linked| linked.id != user.id) {
                return Err(invalid_grant(
                    "the upstream identity was unlinked from its user meanwhile",
                ));
            }
            if self.used_already(&identity.token_digest).await? {
                return Err(exchanged_already());
            }
            self.audit_credentials_changed(client, &user, ip).await;
            return Err(credentials_changed());
        };
        self.auditor
            .record(
                Event::new(user_actor(user.id), Action::UpstreamLogin)
                    .subject(session.id)
                    .detail("client_id", client.id.clone())
                    .detail("issuer", issuer.issuer.clone())
                    .detail("upstream_sub", identity.subject.clone())
                    .detail("user_created", created)
                    .network(network),
            )
            .await;
        self.session_response(client, &user, session, audiences, scope, jkt, now)
            .await
    }

    /// Whether the upstream token with this digest opened a session.
    async fn used_already(&self, digest: &[u8; 32]) -> Result<bool, OAuthError> {
        self.store
            .upstream_token_used(digest)
            .await
            .map_err(unavailable)
    }

    /// The enabled issuer registered as `iss`, if any.
    async fn trusted_issuer(&self, iss: &str) -> Result<Option<TrustedIssuer>, OAuthError> {
        Ok(self
            .store
            .issuer(iss)
            .await
            .map_err(unavailable)?
            .filter(|i| !i.disabled))
    }

    /// The user linked to `subject` at `issuer`, created (and linked) when
    /// the issuer allows it; whether it was created.
    async fn upstream_user(
        &self,
        issuer: &TrustedIssuer,
        subject: &str,
        now: i64,
    ) -> Result<(User, bool), OAuthError> {
        if let Some(user) = self
            .store
            .linked_user(&issuer.issuer, subject)
            .await
            .map_err(unavailable)?
        {
            return Ok((user, false));
        }
        if !issuer.create_users {
            return Err(invalid_grant(format!(
                "no tessera user is linked to subject {subject:?} of {:?}, and the issuer does not create users (link one with tessera user link)",
                issuer.issuer
            )));
        }
        let user = NewUser {
            id: uuid::Uuid::new_v4(),
            username: upstream_username(&issuer.issuer, subject),
            password_hash: NO_PASSWORD.to_owned(),
            totp_secret: None,
        };
        let (user, created) = self
            .store
            .link_new_user(&issuer.issuer, subject, &user, now)
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Conflict(_) => invalid_grant(
                    "a user with this account's generated name exists and is not linked to it",
                ),
                other => unavailable(other),
            })?;
        if created {
            self.auditor
                .record(
                    Event::new("system", Action::UserCreated)
                        .subject(user.id)
                        .detail("username", user.username.clone())
                        .detail("issuer", issuer.issuer.clone())
                        .detail("upstream_sub", subject.to_owned()),
                )
                .await;
        }
        Ok((user, created))
    }
}

fn exchanged_already() -> OAuthError {
    invalid_grant(
        "this token was exchanged already: each upstream token opens one session; sign in at the provider again for a new one",
    )
}

/// The name of a user created from an upstream identity: `ext-` and 16 hex
/// digits of SHA-256 over the issuer and subject. Stable (parallel first
/// exchanges pick the same name, so one wins), within the username
/// alphabet, and revealing nothing of the upstream account.
pub fn upstream_username(issuer: &str, subject: &str) -> String {
    let mut input = Vec::with_capacity(issuer.len() + subject.len() + 1);
    input.extend_from_slice(issuer.as_bytes());
    input.push(0);
    input.extend_from_slice(subject.as_bytes());
    let digest = crate::digest::sha256(&input);
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("ext-{hex}")
}

/// Which exchange the request asks for, and its subject token; refuses
/// what no exchange accepts (RFC 8693 §2.1).
fn exchange_kind(params: &HashMap<String, String>) -> Result<(Kind, &str), OAuthError> {
    let subject = params
        .get("subject_token")
        .ok_or_else(|| invalid_request("subject_token is required"))?;
    let subject_type = params
        .get("subject_token_type")
        .ok_or_else(|| invalid_request("subject_token_type is required"))?;
    if params.contains_key("actor_token") || params.contains_key("actor_token_type") {
        return Err(invalid_request(
            "actor_token is not supported: the authenticated client is the actor",
        ));
    }
    if let Some(requested) = params.get("requested_token_type")
        && requested != ACCESS_TOKEN_TYPE
    {
        return Err(invalid_request(format!(
            "requested_token_type {:?} is not supported (use {ACCESS_TOKEN_TYPE})",
            clip(requested, MAX_ECHO)
        )));
    }
    let kind = match subject_type.as_str() {
        ACCESS_TOKEN_TYPE => Kind::OnBehalfOf,
        ID_TOKEN_TYPE | JWT_TYPE => Kind::Upstream,
        other => {
            return Err(invalid_request(format!(
                "subject_token_type {:?} is not supported (use {ACCESS_TOKEN_TYPE}, {ID_TOKEN_TYPE} or {JWT_TYPE})",
                clip(other, MAX_ECHO)
            )));
        }
    };
    Ok((kind, subject.as_str()))
}

/// The target audience: `audience` (or RFC 8707 `resource`), one of the
/// client's exchange audiences; without one, the client's only one.
fn exchange_audience(
    client: &Client,
    params: &HashMap<String, String>,
) -> Result<String, OAuthError> {
    let target = |m: String| OAuthError::new(ErrorCode::InvalidTarget, m);
    match (
        requested_audience(params)?,
        client.exchange_audiences.as_slice(),
    ) {
        (_, []) => Err(target(format!(
            "client {} may exchange tokens for no audience (register one with --exchange-audience)",
            client.id
        ))),
        (None, [only]) => Ok(only.clone()),
        (None, _) => Err(target(format!(
            "client {} may exchange tokens for several audiences: name one with the audience parameter",
            client.id
        ))),
        (Some(aud), list) if list.contains(aud) => Ok(aud.clone()),
        (Some(aud), _) => Err(target(format!(
            "audience {aud:?} is not one client {} may exchange tokens for",
            client.id
        ))),
    }
}

fn invalid_grant(message: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidGrant, message)
}

/// A refused upstream token is `invalid_grant`; an issuer whose keys could
/// never be fetched is our outage (503), not the client's fault.
fn upstream_error(e: UpstreamError) -> OAuthError {
    if e.is_unavailable() {
        // The reason (addresses, connection errors) is for the operator.
        tracing::warn!(error = %e, "upstream issuer keys unavailable");
        return OAuthError::new(
            ErrorCode::TemporarilyUnavailable,
            "the issuer's keys cannot be fetched right now; try again shortly",
        );
    }
    invalid_grant(format!("the subject token was refused: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_usernames_are_stable_valid_and_distinct() {
        let a = upstream_username("https://idp.example", "alice");
        assert_eq!(a, upstream_username("https://idp.example", "alice"));
        assert!(crate::auth::names::Username::parse(&a).is_ok());
        assert_ne!(a, upstream_username("https://idp.example", "alice2"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(
            upstream_username("https://idp.example/ab", "c"),
            upstream_username("https://idp.example/a", "bc")
        );
    }
}
