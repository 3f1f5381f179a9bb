//! `grant_type=password` (RFC 6749 §4.3, legacy): the user's password
//! (and TOTP code) through the client opens a session. Each attempt passes
//! the login gate (a bounded wait for a check slot) and is counted against
//! the account and the network before the password is checked.

use std::collections::HashMap;

use super::{TokenEndpoint, TokenResponse};
use crate::audit::{Action, Event, client_actor, user_actor};
use crate::auth::gate::Refusal;
use crate::auth::names::Username;
use crate::auth::{network, password};
use crate::oauth::{ErrorCode, OAuthError, invalid_request, too_many_requests, unavailable};
use crate::store::{Client, NewSession};
use crate::tokens::mint::TokenRequest;
use crate::tokens::policy::{audiences, scopes};
use crate::tokens::refresh::SessionSecret;

impl TokenEndpoint {
    /// RFC 6749 §4.3: the user's password opens a session.
    pub(super) async fn password(
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
        let scope = scopes(client, params, true)?;
        let audiences = audiences(client, params)?;
        let bad_credentials =
            || OAuthError::new(ErrorCode::InvalidGrant, "wrong username or password");

        // Admitted to the bounded wait for a password check, or refused at
        // once (the queue is full, or this network has its share in
        // progress); then a check slot within the deadline, or 503. Nothing
        // is counted or read before the slot, so a refused login costs no
        // database work and counts against no account.
        let admitted = match self.gate.admit(ip.map(network::key)) {
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
                            Event::new("anonymous", Action::NetworkFailureCapReached)
                                .detail("failures", self.throttle.policy().network_failures)
                                .detail("until", now + t.retry_after)
                                .network(ip.map(network::prefix)),
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
        let network = ip.map(network::prefix);
        let failed = |user: Option<&crate::store::User>, reason: &'static str| {
            // Never the username: people type passwords into that field.
            let mut event = Event::new(client_actor(&client.id), Action::LoginFailed)
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
        let secret = SessionSecret::generate();
        let session = NewSession {
            id: uuid::Uuid::new_v4(),
            user_id: user.id,
            client_id: client.id.clone(),
            scope: scope.clone(),
            created_at: now,
            idle_expires_at: now + self.sessions.idle_ttl.min(self.sessions.absolute_ttl),
            absolute_expires_at: now + self.sessions.absolute_ttl,
            user_agent_summary: user_agent
                .as_deref()
                .map(crate::tokens::user_agent::summary),
            user_agent_hash: user_agent.map(|ua| crate::digest::sha256(ua.as_bytes()).to_vec()),
            network_prefix: network.clone(),
            credential_version: user.credential_version,
        };
        // Refused if the password changed, TOTP was enrolled or the user was
        // disabled while this login was being checked.
        if !self
            .store
            .create_session(&session, &secret.digest())
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
                Event::new(user_actor(user.id), Action::Login)
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
                Some(
                    self.refresh_tokens
                        .issue(session.id, 0, &secret)
                        .to_string(),
                ),
                now,
            )
            .await?;
        if client.cookie {
            response.refresh_cookie_max_age = Some(session.idle_expires_at - now);
        }
        Ok(response)
    }

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
            self.gate.failed(&network::key(ip));
        }
        if attempt.locks_account(&self.throttle.policy()) {
            let mut event = Event::new("system", Action::AccountLocked)
                .detail("failures", self.throttle.policy().account_failures)
                .network(network);
            if let Some(u) = user {
                event = event.subject(u.id);
            }
            self.auditor.record_durable(event).await;
        }
    }
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
