//! Failed-login limits: per account name (lockout with exponential
//! back-off) and per client network (a cap per window), counted in the
//! database so every instance sees the same counts and an attacker cannot
//! spread guesses over instances. Memory does not grow with the attack: one
//! row per account name or network tried, deleted after the window.
//!
//! A locked account is refused before its password is checked, so a
//! lockout also spares the Argon2 work; refusals while locked do not count
//! as failures (a lockout cannot be extended forever by someone else).
//! Account keys are SHA-256 digests of the name as typed: people type
//! passwords into the username field, and this table must not keep them.

use std::net::IpAddr;
use std::sync::Arc;

use crate::store::{LoginFailures, Store, StoreResult};

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
}

fn account_key(username: &str) -> String {
    let digest = crate::tokens::refresh::sha256(username.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("user:{hex}")
}

fn network_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("net:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        IpAddr::V6(v6) => format!("net:{}", v6.to_ipv4_mapped().expect("checked")),
        IpAddr::V4(v4) => format!("net:{v4}"),
    }
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

    /// Whether a login for `username` from `ip` may be tried now.
    pub async fn check(
        &self,
        username: &str,
        ip: Option<IpAddr>,
        now: i64,
    ) -> StoreResult<Option<Throttled>> {
        if let Some(f) = self.store.login_failures(&account_key(username)).await?
            && let Some(until) = self.account_locked_until(&f, now)
        {
            crate::metrics::metrics()
                .rate_limited
                .with_label_values(&["login_account"])
                .inc();
            return Ok(Some(Throttled {
                retry_after: until - now,
                account: true,
            }));
        }
        match ip {
            Some(ip) => self.network_throttled(ip, now).await,
            None => Ok(None),
        }
    }

    /// Whether the network of `ip` has used up its failures for the window.
    pub async fn network_throttled(&self, ip: IpAddr, now: i64) -> StoreResult<Option<Throttled>> {
        if let Some(f) = self.store.login_failures(&network_key(ip)).await? {
            let end = f.window_start + self.policy.window;
            if f.failures >= self.policy.network_failures && end > now {
                crate::metrics::metrics()
                    .rate_limited
                    .with_label_values(&["login_network"])
                    .inc();
                return Ok(Some(Throttled {
                    retry_after: end - now,
                    account: false,
                }));
            }
        }
        Ok(None)
    }

    /// Counts a failed client authentication against the network of `ip`
    /// (the same count as failed logins: both are guessing).
    pub async fn failed_network(&self, ip: IpAddr, now: i64) -> StoreResult<()> {
        self.store
            .record_login_failure(&network_key(ip), now, self.policy.window)
            .await
            .map(|_| ())
    }

    /// Counts a failed login; true if this failure locked the account.
    pub async fn failed(&self, username: &str, ip: Option<IpAddr>, now: i64) -> StoreResult<bool> {
        let account = self
            .store
            .record_login_failure(&account_key(username), now, self.policy.window)
            .await?;
        if let Some(ip) = ip {
            self.store
                .record_login_failure(&network_key(ip), now, self.policy.window)
                .await?;
        }
        Ok(account.failures == self.policy.account_failures)
    }

    /// A successful login clears the account's count (not the network's).
    pub async fn succeeded(&self, username: &str) -> StoreResult<()> {
        self.store
            .clear_login_failures(&account_key(username))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_addresses_and_ipv6_64s() {
        assert_eq!(
            network_key("203.0.113.7".parse().unwrap()),
            "net:203.0.113.7"
        );
        assert_eq!(
            network_key("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            "net:2001:db8:1:2::/64"
        );
        assert_eq!(
            network_key("::ffff:203.0.113.7".parse().unwrap()),
            "net:203.0.113.7"
        );
        assert!(
            account_key("alice").starts_with("user:") && !account_key("alice").contains("alice")
        );
    }
}
