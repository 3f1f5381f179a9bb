//! The audit trail: who did what, when, from where — append-only and
//! hash-chained, so an edited, removed or inserted row is detectable.
//!
//! Row `n` stores `SHA-256("tessera-audit-v1" ‖ n ‖ hash(n−1) ‖ fields)`,
//! each field length-prefixed so no two rows can encode alike. The first
//! row chains to 32 zero bytes. [`verify_chain`] recomputes every hash and
//! names the first row that does not match.
//!
//! Events never carry passwords, tokens or secrets; users appear as their
//! opaque `sub`.
//!
//! Writing: the service queues events to one writer task that appends them
//! in batches (one transaction, one chain lock, per batch), so a refresh
//! costs no extra round trip. [`Auditor::record_durable`] waits until its
//! event is stored; security events (reuse detected, revocations, admin
//! actions) use it. Routine events (login, refresh) may be lost if the
//! process dies within the batching delay; the trade-off is documented in
//! `docs/audit.md`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::store::{AuditRecord, NewAuditEvent, Store, StoreError};

/// `prev_hash` of the first row.
pub const GENESIS: [u8; 32] = [0; 32];

/// Rows per transaction at most.
const BATCH: usize = 256;
/// Events waiting at most before callers are slowed down.
const QUEUE: usize = 8192;

/// The hash of row `seq` with predecessor hash `prev`.
pub fn chain_hash(seq: i64, prev: &[u8], e: &NewAuditEvent) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"tessera-audit-v1");
    ctx.update(&seq.to_be_bytes());
    field(&mut ctx, Some(prev));
    ctx.update(&e.at.to_be_bytes());
    field(&mut ctx, Some(e.actor.as_bytes()));
    field(&mut ctx, Some(e.action.as_bytes()));
    field(&mut ctx, e.subject.as_deref().map(str::as_bytes));
    field(&mut ctx, Some(e.detail.as_bytes()));
    field(&mut ctx, e.network_prefix.as_deref().map(str::as_bytes));
    ctx.finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// Absent (0) or present (1) with a length, then the bytes.
fn field(ctx: &mut ring::digest::Context, value: Option<&[u8]>) {
    match value {
        None => ctx.update(&[0]),
        Some(v) => {
            ctx.update(&[1]);
            ctx.update(&(v.len() as u64).to_be_bytes());
            ctx.update(v);
        }
    }
}

/// An event being described; [`Auditor`] timestamps and chains it.
#[derive(Clone, Debug)]
pub struct Event {
    actor: String,
    action: &'static str,
    subject: Option<String>,
    detail: serde_json::Map<String, serde_json::Value>,
    network_prefix: Option<String>,
}

impl Event {
    /// `actor` did `action` (a snake_case verb such as `session_revoked`).
    pub fn new(actor: impl Into<String>, action: &'static str) -> Event {
        Event {
            actor: actor.into(),
            action,
            subject: None,
            detail: serde_json::Map::new(),
            network_prefix: None,
        }
    }

    /// What the action was done to (a sub, sid, client id, kid…).
    pub fn subject(mut self, subject: impl ToString) -> Event {
        self.subject = Some(subject.to_string());
        self
    }

    /// A further fact. Never pass a secret.
    pub fn detail(mut self, name: &str, value: impl Into<serde_json::Value>) -> Event {
        self.detail.insert(name.to_owned(), value.into());
        self
    }

    /// The coarse network the request came from.
    pub fn network(mut self, prefix: Option<String>) -> Event {
        self.network_prefix = prefix;
        self
    }

    fn at(self, now: i64) -> NewAuditEvent {
        NewAuditEvent {
            at: now,
            actor: self.actor,
            action: self.action.to_owned(),
            subject: self.subject,
            detail: serde_json::Value::Object(self.detail).to_string(),
            network_prefix: self.network_prefix,
        }
    }
}

/// The actor string for a client.
pub fn client_actor(client_id: &str) -> String {
    format!("client:{client_id}")
}

/// The actor string for a user.
pub fn user_actor(sub: impl std::fmt::Display) -> String {
    format!("user:{sub}")
}

enum Message {
    Event(NewAuditEvent),
    /// Acknowledged once everything queued before it is stored (or lost).
    Flush(oneshot::Sender<bool>),
}

/// Writes audit events. Cheap to clone.
#[derive(Clone)]
pub struct Auditor {
    sink: Sink,
}

#[derive(Clone)]
enum Sink {
    /// Through the writer task (the service).
    Queued(mpsc::Sender<Message>),
    /// Each event in its own transaction (the CLI).
    Direct(Arc<dyn Store>),
}

impl Auditor {
    /// An auditor writing through a background task (the service). The task
    /// ends, after storing what is queued, when every clone is dropped.
    pub fn spawn(store: Arc<dyn Store>) -> (Auditor, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(writer(store, rx));
        (
            Auditor {
                sink: Sink::Queued(tx),
            },
            task,
        )
    }

    /// An auditor that stores each event before returning (the CLI).
    pub fn direct(store: Arc<dyn Store>) -> Auditor {
        Auditor {
            sink: Sink::Direct(store),
        }
    }

    /// Queues a routine event (login, refresh).
    pub async fn record(&self, event: Event) {
        crate::metrics::metrics().audit_event(event.action);
        let event = event.at(now());
        match &self.sink {
            Sink::Queued(tx) => {
                if tx.send(Message::Event(event)).await.is_err() {
                    tracing::error!("audit writer has stopped; event lost");
                }
            }
            Sink::Direct(store) => {
                if let Err(e) = store.append_audit(&[event], true).await {
                    tracing::error!(error = %e, "audit event could not be stored");
                }
            }
        }
    }

    /// Records a security event and waits until it is stored; false (and an
    /// error log) if it could not be.
    pub async fn record_durable(&self, event: Event) -> bool {
        if matches!(self.sink, Sink::Direct(_)) {
            crate::metrics::metrics().audit_event(event.action);
        }
        match &self.sink {
            Sink::Queued(_) => {
                self.record(event).await;
                self.flush().await
            }
            Sink::Direct(store) => match store.append_audit(&[event.at(now())], true).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, "audit event could not be stored");
                    false
                }
            },
        }
    }

    /// Waits until every event queued so far is stored.
    pub async fn flush(&self) -> bool {
        match &self.sink {
            Sink::Queued(tx) => {
                let (ack, done) = oneshot::channel();
                if tx.send(Message::Flush(ack)).await.is_err() {
                    return false;
                }
                done.await.unwrap_or(false)
            }
            Sink::Direct(_) => true,
        }
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Appends queued events in batches. A failed batch is retried with backoff
/// (the database may be restarting); after a minute of failures it is
/// dropped with an error log rather than blocking the service forever.
async fn writer(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Message>) {
    let mut events = Vec::with_capacity(BATCH);
    let mut acks = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Event(e) => events.push(e),
                Message::Flush(ack) => acks.push(ack),
            }
            if events.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        // A batch someone waits on (a security event) is flushed to disk
        // before the commit returns; routine batches are not.
        let stored = append_with_retry(&*store, &events, !acks.is_empty()).await;
        events.clear();
        for ack in acks.drain(..) {
            let _ = ack.send(stored);
        }
    }
}

async fn append_with_retry(store: &dyn Store, events: &[NewAuditEvent], durable: bool) -> bool {
    let mut delay = Duration::from_millis(50);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match store.append_audit(events, durable).await {
            Ok(()) => return true,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, events = events.len(), "audit append failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(error = %e, events = events.len(), "audit events lost");
                return false;
            }
        }
    }
}

/// Where and why the chain is broken.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A row does not match its hash or its predecessor.
    #[error("audit log broken at row {seq}: {reason}")]
    Broken {
        /// The first bad row.
        seq: i64,
        /// What does not match.
        reason: &'static str,
    },
    /// The log could not be read.
    #[error("{0}")]
    Store(String),
}

impl From<StoreError> for ChainError {
    fn from(e: StoreError) -> ChainError {
        ChainError::Store(e.to_string())
    }
}

/// Walks the whole log; returns the number of rows if every one checks out.
pub async fn verify_chain(store: &dyn Store) -> Result<u64, ChainError> {
    let mut expected_seq = 1;
    let mut prev = GENESIS.to_vec();
    loop {
        let page = store.audit_page(expected_seq - 1, 1000).await?;
        if page.is_empty() {
            return Ok((expected_seq - 1) as u64);
        }
        for row in page {
            check_row(&row, expected_seq, &prev)?;
            prev = row.hash;
            expected_seq += 1;
        }
    }
}

fn check_row(row: &AuditRecord, expected_seq: i64, prev: &[u8]) -> Result<(), ChainError> {
    let broken = |reason| ChainError::Broken {
        seq: row.seq,
        reason,
    };
    if row.seq != expected_seq {
        return Err(ChainError::Broken {
            seq: expected_seq,
            reason: "row is missing",
        });
    }
    if row.prev_hash != prev {
        return Err(broken("does not link to the previous row"));
    }
    let event = NewAuditEvent {
        at: row.at,
        actor: row.actor.clone(),
        action: row.action.clone(),
        subject: row.subject.clone(),
        detail: row.detail.clone(),
        network_prefix: row.network_prefix.clone(),
    };
    if chain_hash(row.seq, prev, &event).as_slice() != row.hash {
        return Err(broken("content does not match its hash (edited)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(subject: Option<&str>) -> NewAuditEvent {
        NewAuditEvent {
            at: 1,
            actor: "cli".into(),
            action: "x".into(),
            subject: subject.map(str::to_owned),
            detail: "{}".into(),
            network_prefix: None,
        }
    }

    #[test]
    fn every_field_and_the_position_change_the_hash() {
        let base = chain_hash(1, &GENESIS, &event(Some("a")));
        assert_ne!(base, chain_hash(2, &GENESIS, &event(Some("a"))));
        assert_ne!(base, chain_hash(1, &[1; 32], &event(Some("a"))));
        assert_ne!(base, chain_hash(1, &GENESIS, &event(None)));
        assert_ne!(base, chain_hash(1, &GENESIS, &event(Some(""))));
        let mut moved = event(Some("a"));
        moved.actor = "clix".into();
        moved.action = String::new();
        let mut original = event(Some("a"));
        original.action = "x".into();
        assert_ne!(
            chain_hash(1, &GENESIS, &moved),
            chain_hash(1, &GENESIS, &original)
        );
    }
}
