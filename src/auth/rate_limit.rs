//! Per-client request budgets for `/oauth/token` and `/oauth/introspect`.
//!
//! In memory and per instance, on purpose: these limits keep one client from
//! starving the others, which each instance can judge alone. (Failed-login
//! limits, which stop password guessing, are shared through the database:
//! see `auth::throttle`.) Keys are authenticated confidential client ids,
//! so an attacker cannot spend such a client's budget or invent keys; a
//! public client (whose id anyone can send) has one budget per client
//! network. The map is bounded regardless.
//!
//! The algorithm is GCRA (the "virtual scheduling" form of a token bucket):
//! one instant per key, a request at `now` is allowed while the key's
//! theoretical arrival time is at most `period - interval` ahead of `now`.
//! Bursts of up to `requests` pass, the sustained rate is `requests / period`.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `requests` per `period`, in bursts of up to `requests`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed per period (and the largest burst).
    pub requests: u32,
    /// The period.
    pub period: Duration,
}

impl Rate {
    /// Parses `N/s`, `N/m` or `N/h`; `off` (or `0`) means no limit.
    pub fn parse(v: &str) -> Result<Option<Rate>, String> {
        if v == "off" || v == "0" {
            return Ok(None);
        }
        let bad =
            || format!("'{v}' is not a rate (expected N/s, N/m or N/h such as 100/s, or off)");
        let (n, unit) = v.split_once('/').ok_or_else(bad)?;
        let requests = n
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1_000_000).contains(n))
            .ok_or_else(bad)?;
        let period = match unit {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        Ok(Some(Rate { requests, period }))
    }

    fn interval(&self) -> Duration {
        self.period / self.requests
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.requests)
    }
}

const SHARDS: usize = 16;

/// Keys tracked at most (all shards together). An idle key costs nothing
/// (its budget is full), so only keys active within one period count; the
/// number of registered clients bounds it in practice.
pub const MAX_KEYS: usize = 65_536;

/// A per-key rate limiter; see the module documentation.
pub struct RateLimiter {
    rate: Option<Rate>,
    hasher: RandomState,
    /// Theoretical arrival time per key.
    shards: [Mutex<HashMap<String, Instant>>; SHARDS],
    max_per_shard: usize,
}

impl RateLimiter {
    /// A limiter allowing `rate` per key (`None`: everything passes).
    pub fn new(rate: Option<Rate>) -> RateLimiter {
        RateLimiter::with_capacity(rate, MAX_KEYS)
    }

    fn with_capacity(rate: Option<Rate>, max_keys: usize) -> RateLimiter {
        RateLimiter {
            rate,
            hasher: RandomState::new(),
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            max_per_shard: max_keys.div_ceil(SHARDS).max(1),
        }
    }

    /// The configured rate.
    pub fn rate(&self) -> Option<Rate> {
        self.rate
    }

    /// Counts one request for `key` at `now`: `Err(wait)` when over budget,
    /// with how long until a request would pass again.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        let interval = rate.interval();
        let tolerance = rate.period - interval;
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        let tat = map.get(key).map_or(now, |t| (*t).max(now));
        let ahead = tat - now;
        if ahead > tolerance {
            return Err(ahead - tolerance);
        }
        if !map.contains_key(key) && map.len() >= self.max_per_shard {
            // Keys whose budget is full again are the same as absent ones.
            map.retain(|_, t| *t > now);
            if map.len() >= self.max_per_shard {
                // Every tracked key is busy: refuse rather than forget one
                // (which would hand it a fresh budget).
                return Err(interval.max(Duration::from_millis(1)));
            }
        }
        map.insert(key.to_owned(), tat + interval);
        Ok(())
    }
}

/// Whole seconds for `Retry-After`, rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> i64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(v: &str) -> Option<Rate> {
        Rate::parse(v).unwrap()
    }

    #[test]
    fn parses_rates_and_off() {
        assert_eq!(
            rate("100/s"),
            Some(Rate {
                requests: 100,
                period: Duration::from_secs(1)
            })
        );
        assert_eq!(rate("5/m").unwrap().period, Duration::from_secs(60));
        assert_eq!(rate("5/h").unwrap().to_string(), "5/h");
        assert_eq!(rate("off"), None);
        assert_eq!(rate("0"), None);
        for bad in [
            "100",
            "0/s",
            "-1/s",
            "1.5/s",
            "10/d",
            "/s",
            "x/s",
            "2000000/s",
        ] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn allows_a_burst_then_the_sustained_rate() {
        let limiter = RateLimiter::new(rate("10/s"));
        let t0 = Instant::now();
        for i in 0..10 {
            assert!(limiter.check("a", t0).is_ok(), "request {i} of the burst");
        }
        let wait = limiter.check("a", t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        assert_eq!(retry_after_secs(wait), 1);
        // Other keys have their own budget.
        assert!(limiter.check("b", t0).is_ok());
        // One interval later, exactly one more passes.
        let t1 = t0 + Duration::from_millis(100);
        assert!(limiter.check("a", t1).is_ok());
        assert!(limiter.check("a", t1).is_err());
        // A full period of rest restores the whole burst.
        let t2 = t1 + Duration::from_secs(1);
        for _ in 0..10 {
            assert!(limiter.check("a", t2).is_ok());
        }
        assert!(limiter.check("a", t2).is_err());
    }

    #[test]
    fn refused_requests_do_not_spend_budget() {
        let limiter = RateLimiter::new(rate("2/m"));
        let t0 = Instant::now();
        assert!(limiter.check("a", t0).is_ok());
        assert!(limiter.check("a", t0).is_ok());
        for _ in 0..100 {
            assert!(limiter.check("a", t0).is_err());
        }
        // Hammering did not push the next slot back.
        assert!(limiter.check("a", t0 + Duration::from_secs(30)).is_ok());
        assert_eq!(
            retry_after_secs(
                limiter
                    .check("a", t0 + Duration::from_secs(30))
                    .unwrap_err()
            ),
            30
        );
    }

    #[test]
    fn memory_is_bounded_and_idle_keys_are_dropped_first() {
        let limiter = RateLimiter::with_capacity(rate("1/s"), SHARDS * 4);
        let t0 = Instant::now();
        let mut refused = 0;
        for i in 0..10_000 {
            if limiter.check(&format!("k{i}"), t0).is_err() {
                refused += 1;
            }
        }
        let tracked: usize = limiter.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(tracked <= SHARDS * 4, "{tracked} keys tracked");
        assert!(refused > 0, "a full table refuses new busy keys");
        // Once their budgets are full again, the old keys make room.
        for i in 0..1000 {
            let at = t0 + Duration::from_secs(2 + i);
            assert!(limiter.check(&format!("new{i}"), at).is_ok(), "new key {i}");
        }
    }

    #[test]
    fn off_allows_everything() {
        let limiter = RateLimiter::new(None);
        let t0 = Instant::now();
        for _ in 0..10_000 {
            assert!(limiter.check("a", t0).is_ok());
        }
    }
}
