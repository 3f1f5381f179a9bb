//! Polling the issuer's revocation feed, so a resource server that
//! validates tokens locally also refuses revoked ones.
//!
//! The first verification waits for one poll (bounded by the HTTP timeout);
//! after that a background task polls every interval. If the issuer cannot
//! be reached, the last known list stays in force and the failure is logged:
//! local validation keeps working through an issuer outage, which is the
//! point of validating locally.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::FeedError;
use super::revocations::{FeedPage, RevocationSet};

/// Longest feed page accepted.
const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;
/// Most pages read in one poll: a feed that keeps saying `has_more` (broken
/// or hostile) cannot keep the poller busy forever; the rest waits for the
/// next interval.
const MAX_PAGES_PER_POLL: usize = 100;

pub(crate) struct FeedPoller {
    url: String,
    client_id: String,
    client_secret: String,
    interval: Duration,
    http: reqwest::Client,
    set: Arc<RevocationSet>,
    /// Set once the first poll has been attempted and the loop started.
    started: tokio::sync::OnceCell<()>,
    /// Serializes polls (the loop and explicit calls).
    polling: tokio::sync::Mutex<()>,
    /// When the last poll that read the feed to its end finished (Unix
    /// milliseconds; 0: never).
    last_success_ms: std::sync::atomic::AtomicI64,
}

impl FeedPoller {
    pub(crate) fn new(
        url: String,
        client_id: String,
        client_secret: String,
        interval: Duration,
        set: Arc<RevocationSet>,
    ) -> FeedPoller {
        FeedPoller {
            url,
            client_id,
            client_secret,
            interval,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("HTTP client builds"),
            set,
            started: tokio::sync::OnceCell::new(),
            polling: tokio::sync::Mutex::new(()),
            last_success_ms: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Polls once (first call) and starts the background loop.
    pub(crate) async fn ensure_started(self: &Arc<Self>) {
        self.started
            .get_or_init(|| async {
                if let Err(e) = self.poll().await {
                    tracing::warn!(url = %self.url, error = %e, "revocation feed unavailable");
                }
                let weak: Weak<FeedPoller> = Arc::downgrade(self);
                let interval = self.interval;
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(interval).await;
                        // Stops when the verifier is dropped.
                        let Some(poller) = weak.upgrade() else { break };
                        if let Err(e) = poller.poll().await {
                            tracing::warn!(url = %poller.url, error = %e, "revocation feed poll failed; keeping the last list");
                        }
                    }
                });
            })
            .await;
    }

    /// Fetches every page after the current cursor; returns the number of
    /// entries received.
    pub(crate) async fn poll(&self) -> Result<usize, FeedError> {
        let _one_at_a_time = self.polling.lock().await;
        let mut received = 0;
        for _ in 0..MAX_PAGES_PER_POLL {
            let cursor = self.set.cursor();
            let page = self.fetch(&cursor).await?;
            page.check(&cursor)?;
            received += page.revocations.len();
            self.set.apply_page(&page);
            if !page.has_more {
                break;
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.set.prune(now);
        self.last_success_ms
            .store(unix_ms(), std::sync::atomic::Ordering::SeqCst);
        Ok(received)
    }

    /// How long ago the list was last known complete (the last poll that
    /// read the feed to its end); `None` before the first.
    pub(crate) fn age(&self) -> Option<Duration> {
        match self
            .last_success_ms
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            0 => None,
            at => Some(Duration::from_millis(
                unix_ms().saturating_sub(at).max(0) as u64
            )),
        }
    }

    async fn fetch(&self, cursor: &str) -> Result<FeedPage, FeedError> {
        let mut request = self.http.get(&self.url).basic_auth(
            form_encode(&self.client_id),
            Some(form_encode(&self.client_secret)),
        );
        if !cursor.is_empty() {
            request = request.query(&[("since", cursor)]);
        }
        let res = request
            .send()
            .await
            .map_err(|e| FeedError::Unreachable(e.without_url().to_string()))?;
        if !res.status().is_success() {
            return Err(FeedError::Status(res.status().as_u16()));
        }
        if res
            .content_length()
            .is_some_and(|n| n > MAX_PAGE_BYTES as u64)
        {
            return Err(FeedError::TooLarge);
        }
        let body = res
            .bytes()
            .await
            .map_err(|e| FeedError::Unreachable(e.without_url().to_string()))?;
        if body.len() > MAX_PAGE_BYTES {
            return Err(FeedError::TooLarge);
        }
        // Only the position: serde's message can quote the (untrusted) body.
        serde_json::from_slice(&body).map_err(|e| {
            FeedError::Malformed(format!(
                "not a revocation feed page ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })
    }
}

/// RFC 6749 §2.3.1: Basic credentials are form-encoded first.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*') {
            out.push(b as char);
        } else if b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
