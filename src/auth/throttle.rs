//! Failed-login limits: per account name (lockout with exponential
//! back-off) and per client network (a cap per window), counted in the
//! database so every instance sees the same counts and an attacker cannot
//! spread guesses over instances.
//!
//! An attempt is counted *before* its password is checked, with one atomic
//! conditional upsert per counter ([`Store::count_attempt`]), and given back
//! if the login turns out right. So however many requests race, on however
//! many instances, no more passwords (or TOTP codes) are checked per account
//! and per network than the limits allow; a refused attempt spares the
//! Argon2 work and counts nothing (a lockout cannot be extended forever by
//! someone else).
//!
//! Account keys are SHA-256 digests of the name as typed: people type
//! passwords into the username field, and this table must not keep them.
//! Rows are purged once their window is over and they lock nothing.

use std::net::IpAddr;
use std::sync::Arc;

use crate::store::{Lockout, LoginFailures, Store, StoreResult};

/// Limits, in failures and seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginPolicy {
    /// Failures per account name within a window before lockouts begin.
    pub account_failures: i64,
    /// Failures per client network (an IPv4 address, an IPv6 /64) within a
    /// window before further logins from it are refused until it ends.
    pub network_failures: i64,
    /// The counting window.
    pub window: i64,
    /// The longest lockout: the failure that reaches the limit locks for
    /// 2 seconds, each further one doubles it, up to this.
    pub max_lockout: i64,
}

impl Default for LoginPolicy {
    fn default() -> LoginPolicy {
        LoginPolicy {
            account_failures: 5,
            network_failures: 50,
            window: 900,
            max_lockout: 900,
        }
    }
}

/// The login throttle.
#[derive(Clone)]
pub struct LoginThrottle {
    store: Arc<dyn Store>,
    policy: LoginPolicy,
}

/// A refusal: retry after this many seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttled {
    /// Seconds until the next attempt can be considered.
    pub retry_after: i64,
    /// Whether the account (rather than the network) is the limit reached.
    pub account: bool,
    /// This refusal is the one that reached the network's cap (once per
    /// network and window): the moment to write one summary audit row.
    pub cap_reached: bool,
}

fn account_key(username: &str) -> String {
    let digest = crate::digest::sha256(username.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("user:{hex}")
}

/// An attempt counted before the password is checked: give it back with
/// [`LoginThrottle::succeeded`] if the login is right.
#[derive(Debug)]
#[must_use = "a reservation is a counted failure unless given back"]
pub struct Attempt {
    account: String,
    account_window: i64,
    network: Option<(String, i64)>,
    /// The account's count including this attempt.
    account_failures: i64,
}

impl Attempt {
    /// Whether this attempt, if it fails, is the one that locks the account.
    pub fn locks_account(&self, policy: &LoginPolicy) -> bool {
        self.account_failures == policy.account_failures
    }
}

/// What happened to a failed client authentication counted against its network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkCount {
    /// Counted, under the cap: audit it.
    Counted,
    /// This one reached the cap: refuse it and write one summary audit row.
    CapReached(Throttled),
    /// Past the cap: refuse it, write nothing.
    Capped(Throttled),
}

impl LoginThrottle {
    /// A throttle over `store` with `policy`.
    pub fn new(store: Arc<dyn Store>, policy: LoginPolicy) -> LoginThrottle {
        LoginThrottle { store, policy }
    }

    /// The policy in force.
    pub fn policy(&self) -> LoginPolicy {
        self.policy
    }

    fn lockout(&self) -> Lockout {
        Lockout::Doubling {
            max: self.policy.max_lockout,
        }
    }

    /// Until when failures `f` lock an account, if they do.
    fn account_locked_until(&self, f: &LoginFailures, now: i64) -> Option<i64> {
        let p = &self.policy;
        if f.failures < p.account_failures || f.window_start + p.window <= now {
            return None;
        }
        let doublings = (f.failures - p.account_failures + 1).min(30) as u32;
        let until = f.last_at + (1i64 << doublings).min(p.max_lockout);
        (until > now).then_some(until)
    }

    /// Until when failures `f` close a network, if they do.
    fn network_closed_until(&self, f: &LoginFailures, now: i64) -> Option<i64> {
        let end = f.window_start + self.policy.window;
        (f.failures >= self.policy.network_failures && end > now).then_some(end)
    }

    fn refused(retry_after: i64, account: bool) -> Throttled {
        let limit = if account {
            "login_account"
        } else {
            "login_network"
        };
        crate::metrics::metrics()
            .rate_limited
            .with_label_values(&[limit])
            .inc();
        Throttled {
            retry_after: retry_after.max(1),
            account,
            cap_reached: false,
        }
    }

    /// The refusal for `key` as its counter stands now (after a refused count).
    async fn refusal(&self, key: &str, account: bool, now: i64) -> StoreResult<Throttled> {
        let f = self.store.login_failures(key).await?;
        let until = f.and_then(|f| {
            if account {
                self.account_locked_until(&f, now)
            } else {
                self.network_closed_until(&f, now)
            }
        });
        Ok(Self::refused(until.map_or(1, |u| u - now), account))
    }

    /// Counts a login attempt for `username` from `ip` before its password
    /// is checked, or refuses it (the account is locked, the network used
    /// up its failures). A cheap read first turns away floods without a
    /// write; the counting itself is atomic.
    pub async fn attempt(
        &self,
        username: &str,
        ip: Option<IpAddr>,
        now: i64,
    ) -> StoreResult<Result<Attempt, Throttled>> {
        let account = account_key(username);
        if let Some(f) = self.store.login_failures(&account).await?
            && let Some(until) = self.account_locked_until(&f, now)
        {
            return Ok(Err(Self::refused(until - now, true)));
        }
        let network = match ip {
            None => None,
            Some(ip) => {
                let key = super::network::key(ip);
                match self.count_network(&key, now).await? {
                    Some(f) if f.failures <= self.policy.network_failures => {
                        Some((key, f.window_start))
                    }
                    Some(f) => {
                        return Ok(Err(Throttled {
                            cap_reached: true,
                            ..Self::refused(f.window_start + self.policy.window - now, false)
                        }));
                    }
                    None => return Ok(Err(self.refusal(&key, false, now).await?)),
                }
            }
        };
        let counted = self
            .store
            .count_attempt(
                &account,
                now,
                self.policy.window,
                self.policy.account_failures,
                self.lockout(),
            )
            .await?;
        let Some(f) = counted else {
            // Locked meanwhile by attempts racing this one: give the
            // network its count back.
            if let Some((key, window_start)) = &network {
                self.store.uncount_attempt(key, *window_start).await?;
            }
            return Ok(Err(self.refusal(&account, true, now).await?));
        };
        Ok(Ok(Attempt {
            account,
            account_window: f.window_start,
            network,
            account_failures: f.failures,
        }))
    }

    async fn count_network(&self, key: &str, now: i64) -> StoreResult<Option<LoginFailures>> {
        // Past the cap a read suffices; the attempt that reaches it (count
        // limit + 1) still goes to the upsert, so exactly one caller learns
        // that it did.
        if let Some(f) = self.store.login_failures(key).await?
            && f.failures > self.policy.network_failures
            && self.network_closed_until(&f, now).is_some()
        {
            return Ok(None);
        }
        self.store
            .count_attempt(
                key,
                now,
                self.policy.window,
                self.policy.network_failures,
                Lockout::UntilWindowEnds,
            )
            .await
    }

    /// Counts a failed client authentication against the network of `ip`
    /// (the same count as failed logins: both are guessing). Past the cap
    /// nothing is written: one summary when it is reached, then silence.
    pub async fn failed_client_auth(&self, ip: IpAddr, now: i64) -> StoreResult<NetworkCount> {
        let key = super::network::key(ip);
        match self.count_network(&key, now).await? {
            Some(f) if f.failures <= self.policy.network_failures => Ok(NetworkCount::Counted),
            Some(f) => Ok(NetworkCount::CapReached(Throttled {
                cap_reached: true,
                ..Self::refused(f.window_start + self.policy.window - now, false)
            })),
            None => Ok(NetworkCount::Capped(self.refusal(&key, false, now).await?)),
        }
    }

    /// The login was right: the account's count is cleared and the
    /// network's attempt given back.
    pub async fn succeeded(&self, attempt: Attempt) -> StoreResult<()> {
        self.store.clear_login_failures(&attempt.account).await?;
        if let Some((key, window_start)) = &attempt.network {
            self.store.uncount_attempt(key, *window_start).await?;
        }
        Ok(())
    }

    /// The login was not checked (no one-time password sent): the attempt is
    /// given back on both counters.
    pub async fn not_checked(&self, attempt: Attempt) -> StoreResult<()> {
        self.store
            .uncount_attempt(&attempt.account, attempt.account_window)
            .await?;
        if let Some((key, window_start)) = &attempt.network {
            self.store.uncount_attempt(key, *window_start).await?;
        }
        Ok(())
    }

    /// Deletes counters that no longer count or lock anything.
    pub async fn purge(&self, now: i64) -> StoreResult<u64> {
        self.purge_in_batches(now, 1000).await
    }

    /// [`Self::purge`] in batches of `batch` rows, repeated until one comes
    /// back short: nothing purgeable is left however many there were.
    pub async fn purge_in_batches(&self, now: i64, batch: i64) -> StoreResult<u64> {
        let mut total = 0;
        loop {
            let n = self
                .store
                .purge_login_failures(now, self.policy.window, self.policy.max_lockout, batch)
                .await?;
            total += n;
            if n < u64::try_from(batch).unwrap_or(u64::MAX) {
                return Ok(total);
            }
        }
    }
}
