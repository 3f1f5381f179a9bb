//! Revocation: the in-memory list every instance keeps (fed from the
//! database), and the operations that revoke (RFC 7009, logout, the admin
//! API) or ask (RFC 7662 introspection).
//!
//! The list is the `revocations` table read in cursor order. Each instance
//! re-reads new rows when PostgreSQL notifies it (LISTEN/NOTIFY), when it
//! revoked something itself, and every half second regardless (the
//! fallback, and the only path on SQLite) — so a revocation made anywhere
//! is honoured everywhere within a second, and a check is a hash lookup.

mod query;
mod service;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

pub use query::{FeedQuery, QueryError};
pub use service::{FOLD_AFTER, Introspection, MAX_FEED_PAGE, RevokeError, Revoker};

use crate::store::{Store, StoreResult};
use crate::verify::{FeedEntry, RevocationSet};

/// How often the list is re-read without a notification.
const POLL: Duration = Duration::from_millis(500);
/// Rows read per query.
const PAGE: i64 = 1000;
/// Added to every revocation's relevance: covers verifier leeway (at most
/// 5 minutes in the `verify` library) and clock skew.
pub const SLACK: i64 = 300;

/// Until when a revocation at `now` matters for tokens living `ttl` seconds.
pub fn relevant_until(now: i64, ttl: i64) -> i64 {
    now + ttl + SLACK
}

/// The revocation list of this instance.
pub struct RevocationCache {
    store: Arc<dyn Store>,
    set: Arc<RevocationSet>,
    cursor: tokio::sync::Mutex<i64>,
    wake: Notify,
}

impl RevocationCache {
    /// Loads every relevant entry (before the service answers anything).
    pub async fn load(store: Arc<dyn Store>, now: i64) -> StoreResult<Arc<RevocationCache>> {
        let cache = Arc::new(RevocationCache {
            store,
            set: Arc::new(RevocationSet::new()),
            cursor: tokio::sync::Mutex::new(0),
            wake: Notify::new(),
        });
        cache.sync(now).await?;
        Ok(cache)
    }

    /// The list, for verifiers.
    pub fn set(&self) -> Arc<RevocationSet> {
        self.set.clone()
    }

    /// Reads entries added since the last read; returns how many.
    pub async fn sync(&self, now: i64) -> StoreResult<usize> {
        let mut cursor = self.cursor.lock().await;
        let mut added = 0;
        loop {
            let rows = self.store.revocations_since(*cursor, now, PAGE).await?;
            let Some(last) = rows.last() else { break };
            *cursor = last.id;
            let full = rows.len() as i64 == PAGE;
            added += rows.len();
            self.set
                .apply(&rows.into_iter().map(feed_entry).collect::<Vec<_>>());
            if !full {
                break;
            }
        }
        self.set.prune(now);
        Ok(added)
    }

    /// Reads new entries now, after a local revocation, so that this
    /// instance honours it before the revocation is acknowledged; on
    /// failure, leaves it to the background task.
    pub async fn refresh_now(&self) {
        if let Err(e) = self.sync(chrono::Utc::now().timestamp()).await {
            tracing::warn!(error = %e, "revocation list refresh failed; the background task retries");
            self.wake.notify_one();
        }
    }

    /// Keeps the list current until the process ends.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let cache = self.clone();
        tokio::spawn(async move { cache.run().await })
    }

    async fn run(&self) {
        let mut notifications = None;
        let mut next_subscribe = tokio::time::Instant::now();
        loop {
            if notifications.is_none() && tokio::time::Instant::now() >= next_subscribe {
                match self.store.revocation_notifications().await {
                    Ok(n) => notifications = n,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot subscribe to revocation notifications; polling")
                    }
                }
                next_subscribe = tokio::time::Instant::now() + Duration::from_secs(5);
            }
            let broken = tokio::select! {
                r = async {
                    match notifications.as_mut() {
                        Some(n) => n.next().await.is_err(),
                        None => std::future::pending().await,
                    }
                } => r,
                _ = self.wake.notified() => false,
                _ = tokio::time::sleep(POLL) => false,
            };
            if broken {
                notifications = None;
            }
            if let Err(e) = self.sync(chrono::Utc::now().timestamp()).await {
                tracing::warn!(error = %e, "revocation list refresh failed; retrying");
            }
        }
    }
}

/// The feed form of a stored entry.
pub fn feed_entry(e: crate::store::RevocationEntry) -> FeedEntry {
    FeedEntry {
        kind: e.kind,
        value: e.value,
        revoked_at: e.revoked_at,
        relevant_until: e.relevant_until,
    }
}
