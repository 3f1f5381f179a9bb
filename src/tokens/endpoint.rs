//! The token endpoint's logic (RFC 6749 §3.2), free of HTTP types: client
//! authentication, grant dispatch, scope and audience rules, and the errors
//! of §5.2. `src/http/token.rs` only parses the request and renders the result.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use super::client_auth::ClientAuthenticator;
use super::mint::{MintError, Minter, TokenRequest};
use super::refresh;
use crate::audit::{Auditor, Event, client_actor, user_actor};
use crate::auth::accounts::ADMIN_SCOPE;
use crate::auth::gate::{LoginGate, Refusal};
use crate::auth::names::Username;
use crate::auth::password;
use crate::auth::rate_limit::RateLimiter;
use crate::auth::throttle::{LoginThrottle, NetworkCount};
use crate::revocation::RevocationCache;
use crate::store::{Client, NewSession, Rotation, RotationRequest, Store};

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

pub(crate) fn invalid_request(d: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidRequest, d)
}

/// What the request carried besides its form: client credentials from the
/// header, and the facts a session is bound to.
#[derive(Debug, Default)]
pub struct Presented {
    /// From `Authorization: Basic` (already form-decoded), if used.
    pub basic: Option<(String, String)>,
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
    /// The client's IP address.
    pub ip: Option<std::net::IpAddr>,
    /// The `__Host-tessera-rt` cookie (cookie-mode clients' refresh token).
    pub refresh_cookie: Option<String>,
    /// The `Origin` header.
    pub origin: Option<String>,
    /// Whether `X-Tessera-CSRF: 1` was sent.
    pub csrf_header: bool,
}

/// The cookie that carries a cookie-mode client's refresh token.
pub const REFRESH_COOKIE: &str = "__Host-tessera-rt";

/// A cookie-mode client accepts only requests from one of its origins that
/// carry `X-Tessera-CSRF: 1` (which a cross-site form cannot send, and which
/// forces a CORS preflight on fetches).
pub fn check_browser_request(client: &Client, presented: &Presented) -> Result<(), OAuthError> {
    if !client.cookie {
        return Ok(());
    }
    let denied = |why: &str| OAuthError::new(ErrorCode::AccessDenied, why);
    match &presented.origin {
        None => {
            return Err(denied(
                "client uses cookie mode: the Origin header is required",
            ));
        }
        Some(o) if !client.origins.iter().any(|allowed| allowed == o) => {
            return Err(denied(&format!(
                "origin {o} is not allowed for client {}",
                client.id
            )));
        }
        Some(_) => {}
    }
    if !presented.csrf_header {
        return Err(denied(
            "client uses cookie mode: send the X-Tessera-CSRF: 1 header",
        ));
    }
    Ok(())
}

/// Session lifetimes, in seconds.
#[derive(Clone, Copy, Debug)]
pub struct SessionPolicy {
    /// Sliding idle lifetime.
    pub idle_ttl: i64,
    /// Fixed lifetime from login.
    pub absolute_ttl: i64,
    /// Refresh-token reuse grace window (0: none).
    pub reuse_grace: i64,
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// The access token (JWS, or JWE for encrypted audiences).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// The session's next refresh token (password and refresh grants).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Cookie mode: the refresh token goes into the `__Host-tessera-rt`
    /// cookie with this `Max-Age` (the session's remaining idle lifetime)
    /// instead of the body.
    #[serde(skip)]
    pub refresh_cookie_max_age: Option<i64>,
}

/// What the token endpoint works with.
pub struct Collaborators {
    /// Persistence.
    pub store: Arc<dyn Store>,
    /// Mints access tokens.
    pub minter: Arc<Minter>,
    /// Authenticates clients.
    pub clients: Arc<ClientAuthenticator>,
    /// Session lifetimes and the reuse grace window.
    pub sessions: SessionPolicy,
    /// Opens sealed TOTP secrets.
    pub master: crate::keys::master::MasterKey,
    /// Records audit events.
    pub auditor: Auditor,
    /// Refreshed after a revocation.
    pub revocations: Arc<RevocationCache>,
    /// Failed-login limits.
    pub throttle: LoginThrottle,
    /// Requests per client.
    pub rate_limit: RateLimiter,
    /// Admission to password checks.
    pub gate: LoginGate,
}

/// The token endpoint.
pub struct TokenEndpoint {
    store: Arc<dyn Store>,
    minter: Arc<Minter>,
    clients: Arc<ClientAuthenticator>,
    sessions: SessionPolicy,
    master: crate::keys::master::MasterKey,
    auditor: Auditor,
    revocations: Arc<RevocationCache>,
    throttle: LoginThrottle,
    rate_limit: RateLimiter,
    /// Bounds Argon2 computations (one per core) and the wait for them.
    gate: LoginGate,
}

impl TokenEndpoint {
    /// An endpoint working with `c`.
    pub fn new(c: Collaborators) -> TokenEndpoint {
        TokenEndpoint {
            store: c.store,
            minter: c.minter,
            clients: c.clients,
            sessions: c.sessions,
            master: c.master,
            auditor: c.auditor,
            revocations: c.revocations,
            throttle: c.throttle,
            rate_limit: c.rate_limit,
            gate: c.gate,
        }
    }

    /// Handles one token request: `params` are the form parameters (each at
    /// most once, empty ones already dropped), `presented` the header credentials.
    pub async fn handle(
        &self,
        params: &HashMap<String, String>,
        mut presented: Presented,
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
        let user_agent = presented.user_agent.take();
        let ip = presented.ip;
        let client = match self
            .clients
            .authenticate(params, presented.basic.take())
            .await
        {
            Ok(c) => c,
            Err(e) => {
                if e.code == ErrorCode::InvalidClient {
                    self.failed_client_auth(grant_type, ip, now).await?;
                }
                return Err(e);
            }
        };
        check_rate(&self.rate_limit, &client, ip, "token")?;
        if !client.grant_types.iter().any(|g| g == grant_type) {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                format!("client {} may not use the {grant_type} grant", client.id),
            ));
        }
        // Before anything is consumed: a refused browser request changes nothing.
        check_browser_request(&client, &presented)?;
        let result = match grant_type.as_str() {
            "client_credentials" => {
                let issued = self.client_credentials(&client, params, now).await?;
                self.auditor
                    .record(
                        Event::new(client_actor(&client.id), "client_token_issued")
                            .detail("scope", issued.scope.clone())
                            .network(ip.map(refresh::network_prefix)),
                    )
                    .await;
                Ok(issued)
            }
            "password" => self.password(&client, params, user_agent, ip, now).await,
            _ => {
                let cookie = presented.refresh_cookie.take();
                self.refresh(&client, params, cookie, user_agent, ip, now)
                    .await
            }
        };
        if result.is_ok() {
            let m = crate::metrics::metrics();
            let grant = match grant_type.as_str() {
                "client_credentials" => "client_credentials",
                "password" => "password",
                _ => {
                    m.refresh_rotations.inc();
                    "refresh_token"
                }
            };
            m.tokens_issued.with_label_values(&[grant]).inc();
        }
        result
    }

    /// Counts a failed client authentication against its network and
    /// audits it while under the cap; past it the answer is 429, with one
    /// summary audit row when the cap is reached and nothing written after
    /// (an anonymous flood cannot grow the append-only log).
    async fn failed_client_auth(
        &self,
        grant_type: &str,
        ip: Option<std::net::IpAddr>,
        now: i64,
    ) -> Result<(), OAuthError> {
        let network = ip.map(refresh::network_prefix);
        let count = match ip {
            Some(ip) => self
                .throttle
                .failed_client_auth(ip, now)
                .await
                .map_err(unavailable)?,
            None => NetworkCount::Counted,
        };
        let refused = |t: crate::auth::throttle::Throttled| {
            too_many_requests(
                t.retry_after,
                "too many failed authentications from this network; retry later",
            )
        };
        match count {
            NetworkCount::Counted => {
                self.auditor
                    .record(
                        Event::new("anonymous", "client_auth_failed")
                            .detail("grant_type", grant_type.to_owned())
                            .network(network),
                    )
                    .await;
                Ok(())
            }
            NetworkCount::CapReached(t) => {
                self.auditor
                    .record(
                        Event::new("anonymous", "network_failure_cap_reached")
                            .detail("failures", self.throttle.policy().network_failures)
                            .detail("until", now + t.retry_after)
                            .network(network),
                    )
                    .await;
                Err(refused(t))
            }
            NetworkCount::Capped(t) => Err(refused(t)),
        }
    }

    /// Scopes: each requested one must be allowed; none requested means all allowed.
    /// `tessera:admin` is granted only to a client acting for itself
    /// (client_credentials): never to a token that carries a user.
    fn scopes(
        client: &Client,
        params: &HashMap<String, String>,
        for_user: bool,
    ) -> Result<String, OAuthError> {
        let allowed = grantable(client.scopes.iter().map(String::as_str), for_user);
        match params.get("scope") {
            None => Ok(allowed.join(" ")),
            Some(requested) => narrow(&allowed, requested, &format!("client {}", client.id)),
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

    async fn client_credentials(
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
        let scope = Self::scopes(client, params, false)?;
        let audiences = Self::audiences(client, params)?;
        self.respond(
            TokenRequest {
                sub: client.id.clone(),
                audiences,
                client_id: client.id.clone(),
                scope,
                sid: None,
            },
            None,
            now,
        )
        .await
    }

    /// RFC 6749 §4.3: the user's password opens a session.
    async fn password(
        &self,
        client: &Client,
        params: &HashMap<String, String>,
        user_agent: Option<String>,
        ip: Option<std::net::IpAddr>,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let username = params
            .get("username")
            .ok_or_else(|| invalid_request("username is required"))?;
        let secret = params
            .get("password")
            .ok_or_else(|| invalid_request("password is required"))?;
        let scope = Self::scopes(client, params, true)?;
        let audiences = Self::audiences(client, params)?;
        let bad_credentials =
            || OAuthError::new(ErrorCode::InvalidGrant, "wrong username or password");

        // Admitted to the bounded wait for a password check, or refused at
        // once (the queue is full, or this network has its share in
        // progress); then a check slot within the deadline, or 503. Nothing
        // is counted or read before the slot, so a refused login costs no
        // database work and counts against no account.
        let admitted = match self.gate.admit(ip.map(crate::auth::throttle::network_key)) {
            Ok(admission) => admission.slot().await.map(|slot| (admission, slot)),
            Err(refusal) => Err(refusal),
        };
        let (_admission, slot) = match admitted {
            Ok(admitted) => admitted,
            Err(refusal) => {
                if let Refusal::Busy { .. } = refusal {
                    tokio::time::sleep(crate::auth::gate::REFUSAL_DELAY).await;
                }
                return Err(gate_refusal(refusal));
            }
        };
        // Before any work: the attempt is counted (atomically, on every
        // instance), or refused if the account is locked or the network has
        // used up its failures, whether or not the password would be right.
        let attempt = match self
            .throttle
            .attempt(username, ip, now)
            .await
            .map_err(unavailable)?
        {
            Ok(attempt) => attempt,
            Err(t) => {
                if t.cap_reached {
                    self.auditor
                        .record(
                            Event::new("anonymous", "network_failure_cap_reached")
                                .detail("failures", self.throttle.policy().network_failures)
                                .detail("until", now + t.retry_after)
                                .network(ip.map(refresh::network_prefix)),
                        )
                        .await;
                }
                let from = if t.account {
                    "for this account"
                } else {
                    "from this network"
                };
                return Err(too_many_requests(
                    t.retry_after,
                    format!(
                        "too many failed logins {from}; retry in {} s",
                        t.retry_after
                    ),
                ));
            }
        };
        // An impossible username is looked up as nobody: the same Argon2 work is done.
        let user = match Username::parse(username) {
            Ok(name) => self
                .store
                .user_by_username(name.as_str())
                .await
                .map_err(unavailable)?,
            Err(_) => None,
        };
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let secret = zeroize::Zeroizing::new(secret.clone());
        // Argon2 takes tens of milliseconds of CPU and 19 MiB of memory: run
        // it off the I/O threads, in the slot taken above (one per core).
        let ok = tokio::task::spawn_blocking(move || password::verify(stored.as_deref(), &secret))
            .await
            .unwrap_or(false);
        drop(slot);
        let network = ip.map(refresh::network_prefix);
        let failed = |user: Option<&crate::store::User>, reason: &'static str| {
            // Never the username: people type passwords into that field.
            let mut event = Event::new(client_actor(&client.id), "login_failed")
                .detail("reason", reason)
                .network(network.clone());
            if let Some(u) = user {
                event = event.subject(u.id);
            }
            event
        };
        let user = match user {
            Some(u) if ok && !u.disabled => u,
            other => {
                let reason = match &other {
                    None => "unknown user",
                    Some(u) if u.disabled && ok => "user disabled",
                    Some(_) => "wrong password",
                };
                self.auditor.record(failed(other.as_ref(), reason)).await;
                self.failed_check(&attempt, other.as_ref(), ip, network.clone())
                    .await;
                return Err(bad_credentials());
            }
        };
        // The second factor is asked for only once the password is right.
        if let Some(sealed) = &user.totp_secret {
            let Some(code) = params.get("otp") else {
                // Nothing was guessed yet: the attempt is given back.
                self.throttle
                    .not_checked(attempt)
                    .await
                    .map_err(unavailable)?;
                return Err(OAuthError::new(
                    ErrorCode::InvalidGrant,
                    "a one-time password is required for this user: send it in the otp parameter",
                ));
            };
            let secret = self
                .master
                .open(sealed, &crate::auth::totp::seal_context(user.id))
                .map_err(|e| {
                    tracing::error!(error = %e, "cannot open a TOTP secret");
                    OAuthError::new(ErrorCode::ServerError, "the login could not be checked")
                })?;
            let wrong = || {
                OAuthError::new(
                    ErrorCode::InvalidGrant,
                    "wrong or already used one-time password",
                )
            };
            let Some(step) = crate::auth::totp::check(&secret, code, now, user.totp_last_step)
            else {
                self.auditor.record(failed(Some(&user), "wrong otp")).await;
                self.failed_check(&attempt, Some(&user), ip, network.clone())
                    .await;
                return Err(wrong());
            };
            // Atomic: two logins racing with the same code cannot both pass.
            if !self
                .store
                .use_totp_step(user.id, step)
                .await
                .map_err(unavailable)?
            {
                self.auditor.record(failed(Some(&user), "reused otp")).await;
                self.failed_check(&attempt, Some(&user), ip, network.clone())
                    .await;
                return Err(wrong());
            }
        }

        self.throttle
            .succeeded(attempt)
            .await
            .map_err(unavailable)?;
        let (refresh_token, hash) = refresh::generate();
        let session = NewSession {
            id: uuid::Uuid::new_v4(),
            user_id: user.id,
            client_id: client.id.clone(),
            scope: scope.clone(),
            created_at: now,
            idle_expires_at: now + self.sessions.idle_ttl.min(self.sessions.absolute_ttl),
            absolute_expires_at: now + self.sessions.absolute_ttl,
            user_agent_summary: user_agent.as_deref().map(super::user_agent::summary),
            user_agent_hash: user_agent.map(|ua| refresh::sha256(ua.as_bytes()).to_vec()),
            network_prefix: network.clone(),
            credential_version: user.credential_version,
        };
        // Refused if the password changed, TOTP was enrolled or the user was
        // disabled while this login was being checked.
        if !self
            .store
            .create_session(&session, &hash)
            .await
            .map_err(unavailable)?
        {
            self.auditor
                .record(failed(Some(&user), "credentials changed during login"))
                .await;
            return Err(OAuthError::new(
                ErrorCode::InvalidGrant,
                "the user's credentials changed while this login was checked; log in again",
            ));
        }
        self.auditor
            .record(
                Event::new(user_actor(user.id), "login")
                    .subject(session.id)
                    .detail("client_id", client.id.clone())
                    .detail("totp", user.totp_secret.is_some())
                    .network(network),
            )
            .await;
        let mut response = self
            .respond(
                TokenRequest {
                    sub: user.id.to_string(),
                    audiences,
                    client_id: client.id.clone(),
                    scope,
                    sid: Some(session.id),
                },
                Some(refresh_token.to_string()),
                now,
            )
            .await?;
        if client.cookie {
            response.refresh_cookie_max_age = Some(session.idle_expires_at - now);
        }
        Ok(response)
    }

    /// RFC 6749 §6: a refresh token is consumed and replaced, in its session.
    async fn refresh(
        &self,
        client: &Client,
        params: &HashMap<String, String>,
        cookie: Option<String>,
        user_agent: Option<String>,
        ip: Option<std::net::IpAddr>,
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
        let presented = refresh::hash_presented(&presented).ok_or_else(invalid)?;
        let (next, next_hash) = refresh::generate();
        let revocation_relevant_until = crate::revocation::relevant_until(now, self.minter.ttl());
        let rotation = self
            .store
            .rotate_refresh_token(&RotationRequest {
                presented,
                next: next_hash,
                client_id: client.id.clone(),
                now,
                idle_ttl: self.sessions.idle_ttl,
                grace: self.sessions.reuse_grace,
                revocation_relevant_until,
            })
            .await
            .map_err(unavailable)?;
        let network = ip.map(refresh::network_prefix);
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
                        Event::new(client_actor(&client.id), "refresh_reuse_detected")
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
        // The session is bound to the browser (User-Agent hash) and the
        // network (/24 or /48) it was opened from.
        let ua_changed = session.user_agent_hash.is_some()
            && user_agent.map(|ua| refresh::sha256(ua.as_bytes()).to_vec())
                != session.user_agent_hash;
        let network_changed = session.network_prefix.is_some()
            && ip.map(refresh::network_prefix) != session.network_prefix;
        if ua_changed || network_changed {
            tracing::warn!(
                sid = %session.id,
                client_id = %client.id,
                ua_changed,
                network_changed,
                "session used from a different browser or network"
            );
            let revoke = client.on_binding_change == "revoke";
            self.auditor
                .record_durable(
                    Event::new(user_actor(session.user_id), "session_binding_changed")
                        .subject(session.id)
                        .detail("client_id", client.id.clone())
                        .detail("user_agent_changed", ua_changed)
                        .detail("network_changed", network_changed)
                        .detail("session_revoked", revoke)
                        .network(network.clone()),
                )
                .await;
            if revoke {
                self.store
                    .revoke_session(session.id, now, "binding change", revocation_relevant_until)
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
        let audiences = Self::audiences(client, params)?;
        self.auditor
            .record(
                Event::new(
                    user_actor(session.user_id),
                    if grace_reuse {
                        "refresh_grace_reuse"
                    } else {
                        "refresh"
                    },
                )
                .subject(session.id)
                .detail("client_id", client.id.clone())
                .network(network),
            )
            .await;
        let mut response = self
            .respond(
                TokenRequest {
                    sub: session.user_id.to_string(),
                    audiences,
                    client_id: client.id.clone(),
                    scope,
                    sid: Some(session.id),
                },
                Some(next.to_string()),
                now,
            )
            .await?;
        if client.cookie {
            response.refresh_cookie_max_age = Some(session.idle_expires_at - now);
        }
        Ok(response)
    }
}

impl TokenEndpoint {
    /// After a failed check: its network waits in the gate's low lane for
    /// a while, and the lockout is audited if this `attempt` is the one that
    /// locked its account (the failure itself was counted before the check).
    async fn failed_check(
        &self,
        attempt: &crate::auth::throttle::Attempt,
        user: Option<&crate::store::User>,
        ip: Option<std::net::IpAddr>,
        network: Option<String>,
    ) {
        if let Some(ip) = ip {
            self.gate.failed(&crate::auth::throttle::network_key(ip));
        }
        if attempt.locks_account(&self.throttle.policy()) {
            let mut event = Event::new("system", "account_locked")
                .detail("failures", self.throttle.policy().account_failures)
                .network(network);
            if let Some(u) = user {
                event = event.subject(u.id);
            }
            self.auditor.record_durable(event).await;
        }
    }

    /// Mints the access token and builds the §5.1 response.
    ///
    /// A `sub` or `client` revocation covers tokens issued up to the second
    /// it committed. A token this request would issue in that second (or
    /// earlier: the request began before the revocation) would be revoked
    /// at birth although its session or client is live, so it is issued
    /// with the next second's `iat`, waiting for that second if need be
    /// (at most a second, and only right after such a revocation). A
    /// cut-off further ahead means the user or client is disabled.
    async fn respond(
        &self,
        request: TokenRequest,
        refresh_token: Option<String>,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let mut now = now;
        if let Some(cutoff) = self
            .revocations
            .set()
            .cutoff(&request.sub, &request.client_id)
            .filter(|cutoff| *cutoff >= now)
        {
            if cutoff > now + 2 {
                return Err(OAuthError::new(
                    ErrorCode::InvalidGrant,
                    "the tokens of this user or client are revoked",
                ));
            }
            now = cutoff + 1;
            let since_epoch = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let wait = std::time::Duration::from_secs(now as u64).saturating_sub(since_epoch);
            tokio::time::sleep(wait).await;
        }
        let scope = request.scope.clone();
        let minted = self.minter.mint(request, now).map_err(mint_error)?;
        Ok(TokenResponse {
            access_token: minted.token,
            token_type: "Bearer",
            expires_in: self.minter.ttl(),
            scope,
            refresh_token,
            refresh_cookie_max_age: None,
        })
    }
}

/// The scopes of `list` a token may carry: all of them for a client acting
/// for itself, all but `tessera:admin` for a token that carries a user.
fn grantable<'a>(list: impl Iterator<Item = &'a str>, for_user: bool) -> Vec<&'a str> {
    list.filter(|s| !(s.is_empty() || for_user && *s == ADMIN_SCOPE))
        .collect()
}

/// The requested scopes if each is in `allowed` (deduplicated, in request
/// order), else `invalid_scope` naming the first that is not.
fn narrow(allowed: &[&str], requested: &str, whose: &str) -> Result<String, OAuthError> {
    let mut granted: Vec<&str> = Vec::new();
    for s in requested.split(' ').filter(|s| !s.is_empty()) {
        if !allowed.contains(&s) {
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                format!("scope {s:?} is not allowed for {whose}"),
            ));
        }
        if !granted.contains(&s) {
            granted.push(s);
        }
    }
    Ok(granted.join(" "))
}

/// The answer to a login the gate did not admit.
fn gate_refusal(refusal: Refusal) -> OAuthError {
    let m = crate::metrics::metrics();
    match refusal {
        Refusal::Busy { .. } => {
            m.rate_limited.with_label_values(&["login_queue"]).inc();
            OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                "too many logins are waiting to be checked; retry shortly",
            )
        }
        Refusal::NetworkBusy => {
            m.rate_limited
                .with_label_values(&["login_network_concurrency"])
                .inc();
            too_many_requests(
                1,
                "too many logins from this network are in progress; retry shortly",
            )
        }
    }
}

/// 429 `too_many_requests` with `Retry-After: retry_after` seconds.
fn too_many_requests(retry_after: i64, description: impl Into<String>) -> OAuthError {
    OAuthError {
        retry_after: Some(retry_after),
        ..OAuthError::new(ErrorCode::TooManyRequests, description)
    }
}

pub(crate) fn unavailable(e: crate::store::StoreError) -> OAuthError {
    tracing::error!(error = %e, "database error at the token endpoint");
    OAuthError::new(ErrorCode::TemporarilyUnavailable, "try again shortly")
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

/// Spends one request of `client`'s budget at `endpoint`, or answers 429
/// with how long to wait.
///
/// A public client is identified by its id alone, which anyone can send, so
/// its budget is kept per client network: a flood from one place cannot
/// starve the client's users elsewhere.
pub fn check_rate(
    limiter: &RateLimiter,
    client: &Client,
    ip: Option<std::net::IpAddr>,
    endpoint: &str,
) -> Result<(), OAuthError> {
    let key = if client.confidential {
        std::borrow::Cow::Borrowed(client.id.as_str())
    } else {
        let network = ip.map_or_else(|| "unknown".to_owned(), refresh::network_prefix);
        std::borrow::Cow::Owned(format!("{} {network}", client.id))
    };
    limiter
        .check(&key, std::time::Instant::now())
        .map_err(|wait| {
            tracing::debug!(client = %client.id, endpoint, "client rate limit reached");
            crate::metrics::metrics()
                .rate_limited
                .with_label_values(&[endpoint])
                .inc();
            let rate = limiter.rate().map_or_else(String::new, |r| r.to_string());
            too_many_requests(
                crate::auth::rate_limit::retry_after_secs(wait),
                format!(
                    "client {} is over its {endpoint} request limit ({rate}); retry later",
                    client.id
                ),
            )
        })
}
