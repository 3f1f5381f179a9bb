//! Checking a user's password and second factor: one path for every way
//! of logging in (tessera's login page and the legacy password grant), so
//! the gate, the limits and the audit trail are the same for both.
//!
//! Each password check passes the login gate (a bounded wait for one of
//! the Argon2 slots) and is counted against the account and the network
//! before the password is checked; a right login gives its attempt back.

use std::net::IpAddr;
use std::sync::Arc;

use crate::audit::{Action, Auditor, Event, client_actor};
use crate::auth::gate::{LoginGate, Refusal};
use crate::auth::names::Username;
use crate::auth::throttle::{Attempt, LoginThrottle};
use crate::auth::{network, password};
use crate::keys::master::MasterKey;
use crate::store::{Store, StoreError, User};

/// Why a login did not pass.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Too many logins are waiting for a check slot (or the wait ran out).
    #[error("too many logins are waiting to be checked; retry shortly")]
    Busy,
    /// This network has its share of logins in progress.
    #[error("too many logins from this network are in progress; retry shortly")]
    NetworkBusy,
    /// The account is locked or the network used up its failures.
    #[error("too many failed logins {}; retry in {retry_after} s", if *account { "for this account" } else { "from this network" })]
    Throttled {
        /// Seconds until the next attempt is considered.
        retry_after: i64,
        /// The account (rather than the network) is the limit reached.
        account: bool,
    },
    /// Unknown user, wrong password or disabled user (not told apart).
    #[error("wrong username or password")]
    BadCredentials,
    /// The password is right and the user has TOTP: a code is needed.
    #[error("a one-time password is required for this user")]
    OtpRequired,
    /// A wrong or already used TOTP code.
    #[error("wrong or already used one-time password")]
    WrongOtp,
    /// The database failed.
    #[error("the login could not be checked: {0}")]
    Unavailable(#[from] StoreError),
    /// A stored secret could not be opened (logged; never shown).
    #[error("the login could not be checked")]
    Internal,
}

/// A right password: the user, and the attempt still counted against the
/// account until the login completes ([`Credentials::succeeded`]) or stops
/// before a code was guessed ([`Credentials::not_checked`]).
#[derive(Debug)]
pub struct PasswordOk {
    /// The user whose password it is.
    pub user: User,
    /// The counted attempt.
    pub attempt: Attempt,
}

/// The credential checks every login shares.
pub struct Credentials {
    store: Arc<dyn Store>,
    throttle: LoginThrottle,
    gate: LoginGate,
    master: MasterKey,
    auditor: Auditor,
}

impl Credentials {
    /// Checks over `store`, limited by `throttle` and `gate`.
    pub fn new(
        store: Arc<dyn Store>,
        throttle: LoginThrottle,
        gate: LoginGate,
        master: MasterKey,
        auditor: Auditor,
    ) -> Credentials {
        Credentials {
            store,
            throttle,
            gate,
            master,
            auditor,
        }
    }

    /// The failed-login limits.
    pub fn throttle(&self) -> &LoginThrottle {
        &self.throttle
    }

    /// Checks `username`'s password for a login through `client_id`.
    ///
    /// Admitted to the bounded wait for a check slot, or refused at once
    /// (the queue is full, or this network has its share in progress);
    /// then a slot within the deadline, or [`LoginError::Busy`]. Nothing is
    /// counted or read before the slot, so a refused login costs no
    /// database work and counts against no account. Then the attempt is
    /// counted (atomically, on every instance) or refused if the account is
    /// locked or the network has used up its failures, whether or not the
    /// password would be right.
    pub async fn password(
        &self,
        client_id: &str,
        username: &str,
        secret: &str,
        ip: Option<IpAddr>,
        now: i64,
    ) -> Result<PasswordOk, LoginError> {
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
        let attempt = self.attempt(username, ip, now).await?;
        // An impossible username is looked up as nobody: the same Argon2 work is done.
        let user = match Username::parse(username) {
            Ok(name) => self.store.user_by_username(name.as_str()).await?,
            Err(_) => None,
        };
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let secret = zeroize::Zeroizing::new(secret.to_owned());
        // Argon2 takes tens of milliseconds of CPU and 19 MiB of memory: run
        // it off the I/O threads, in the slot taken above (one per core).
        let ok = tokio::task::spawn_blocking(move || password::verify(stored.as_deref(), &secret))
            .await
            .unwrap_or(false);
        drop(slot);
        match user {
            Some(user) if ok && !user.disabled => Ok(PasswordOk { user, attempt }),
            other => {
                let reason = match &other {
                    None => "unknown user",
                    Some(u) if u.disabled && ok => "user disabled",
                    Some(_) => "wrong password",
                };
                self.failed(client_id, &attempt, other.as_ref(), reason, ip)
                    .await;
                Err(LoginError::BadCredentials)
            }
        }
    }

    /// Counts one attempt for `username` from `ip` before anything is
    /// checked, or refuses it (see [`Credentials::password`]). The login
    /// page's second step counts its code this way.
    pub async fn attempt(
        &self,
        username: &str,
        ip: Option<IpAddr>,
        now: i64,
    ) -> Result<Attempt, LoginError> {
        match self.throttle.attempt(username, ip, now).await? {
            Ok(attempt) => Ok(attempt),
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
                Err(LoginError::Throttled {
                    retry_after: t.retry_after,
                    account: t.account,
                })
            }
        }
    }

    /// Checks `user`'s TOTP `code` under `attempt`. A code is accepted
    /// once (atomically: two logins racing with the same code cannot both
    /// pass).
    pub async fn otp(
        &self,
        client_id: &str,
        user: &User,
        attempt: &Attempt,
        code: &str,
        ip: Option<IpAddr>,
        now: i64,
    ) -> Result<(), LoginError> {
        let Some(sealed) = &user.totp_secret else {
            return Ok(());
        };
        let secret = self
            .master
            .open(sealed, &crate::auth::totp::seal_context(user.id))
            .map_err(|e| {
                tracing::error!(error = %e, "cannot open a TOTP secret");
                LoginError::Internal
            })?;
        let Some(step) = crate::auth::totp::check(&secret, code, now, user.totp_last_step) else {
            self.failed(client_id, attempt, Some(user), "wrong otp", ip)
                .await;
            return Err(LoginError::WrongOtp);
        };
        if !self.store.use_totp_step(user.id, step).await? {
            self.failed(client_id, attempt, Some(user), "reused otp", ip)
                .await;
            return Err(LoginError::WrongOtp);
        }
        Ok(())
    }

    /// The login is right: its attempt is given back.
    pub async fn succeeded(&self, attempt: Attempt) -> Result<(), LoginError> {
        Ok(self.throttle.succeeded(attempt).await?)
    }

    /// The login stopped before anything was guessed (the password was
    /// right, the code not sent yet): its attempt is given back.
    pub async fn not_checked(&self, attempt: Attempt) -> Result<(), LoginError> {
        Ok(self.throttle.not_checked(attempt).await?)
    }

    /// Audits a failed login through `client_id` (user: its subject),
    /// puts its network in the gate's low lane for a while, and audits the
    /// lockout if this `attempt` is the one that locked its account (the
    /// failure itself was counted before the check).
    pub async fn failed(
        &self,
        client_id: &str,
        attempt: &Attempt,
        user: Option<&User>,
        reason: &'static str,
        ip: Option<IpAddr>,
    ) {
        let network = ip.map(network::prefix);
        // Never the username: people type passwords into that field.
        let mut event = Event::new(client_actor(client_id), Action::LoginFailed)
            .detail("reason", reason)
            .network(network.clone());
        if let Some(u) = user {
            event = event.subject(u.id);
        }
        self.auditor.record(event).await;
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

/// The error for a login the gate did not admit (counted in the metrics).
fn gate_refusal(refusal: Refusal) -> LoginError {
    let m = crate::metrics::metrics();
    match refusal {
        Refusal::Busy { .. } => {
            m.rate_limited.with_label_values(&["login_queue"]).inc();
            LoginError::Busy
        }
        Refusal::NetworkBusy => {
            m.rate_limited
                .with_label_values(&["login_network_concurrency"])
                .inc();
            LoginError::NetworkBusy
        }
    }
}
