//! The time, injected: every request handler and the token endpoint read
//! the clock they were built with, so tests can move time instead of
//! sleeping through lockouts and expiries.
//!
//! Times are Unix seconds, as stored and as tokens carry them.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use futures_util::future::BoxFuture;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Unix seconds now.
    fn now(&self) -> i64;
    /// Waits until `unix` has begun (the second after a revocation's
    /// cut-off, for instance). A manual clock moves there instead.
    fn sleep_until(&self, unix: i64) -> BoxFuture<'_, ()>;
}

/// The system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        now()
    }

    fn sleep_until(&self, unix: i64) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let since_epoch = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let wait =
                std::time::Duration::from_secs(unix.max(0) as u64).saturating_sub(since_epoch);
            tokio::time::sleep(wait).await;
        })
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock reading the system time now, moving only by [`Self::advance`].
    pub fn starting_now() -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicI64::new(now())))
    }

    /// Moves the clock forward to the system's time, if it is behind.
    pub fn catch_up(&self) {
        self.0.fetch_max(now(), Ordering::SeqCst);
    }

    /// Moves the clock forward by `seconds`.
    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    fn sleep_until(&self, unix: i64) -> BoxFuture<'_, ()> {
        self.0.fetch_max(unix, Ordering::SeqCst);
        Box::pin(async {})
    }
}

/// Unix seconds by the system clock, for what runs outside a request
/// (background tasks, the CLI, audit timestamps).
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_moves_only_when_told() {
        let c = ManualClock::starting_now();
        let t = c.now();
        c.advance(30);
        assert_eq!(c.now(), t + 30);
        c.sleep_until(t + 100).await;
        assert_eq!(c.now(), t + 100);
        c.sleep_until(t).await;
        assert_eq!(c.now(), t + 100, "never backwards");
    }
}
