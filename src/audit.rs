//! The audit trail: who did what, when, from where — append-only and
//! chained under a key, so an edited, removed or inserted row is detectable
//! even by someone who can write the database but does not hold the master key.
//!
//! Row `n` stores `HMAC(k, "tessera-audit-v2" ‖ n ‖ hash(n−1) ‖ fields)`
//! with `k` derived from the master key ([`ChainKey`]), each field
//! length-prefixed so no two rows can encode alike. The first row chains to
//! 32 zero bytes. Rows written before the chain was keyed (up to the
//! `legacy_end` the migration recorded) carry unkeyed SHA-256 links
//! ([`legacy_link`]) and are checked as such.
//!
//! Checkpoints of the head (sequence, hash and a MAC, in their own table, in
//! the log and in `/metrics`) are written within seconds of new rows and at
//! a clean shutdown; [`verify_chain`] recomputes every link, names the first
//! row that does not match, and compares the head with the newest checkpoint,
//! so rows cut from the end are found too.
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

use crate::clock::now;
use crate::store::{AuditCheckpoint, AuditRecord, NewAuditEvent, Store, StoreError};

/// `prev_hash` of the first row.
pub const GENESIS: [u8; 32] = [0; 32];

/// Rows per transaction at most.
const BATCH: usize = 256;
/// Events waiting at most before callers are slowed down.
const QUEUE: usize = 8192;

/// Something a chain link can be computed with (SHA-256 or HMAC).
trait Absorb {
    fn absorb(&mut self, bytes: &[u8]);
}

impl Absorb for ring::digest::Context {
    fn absorb(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

impl Absorb for ring::hmac::Context {
    fn absorb(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

/// Every field of a row after `label`, each length-prefixed.
fn encode_row(ctx: &mut impl Absorb, label: &[u8], seq: i64, prev: &[u8], e: &NewAuditEvent) {
    ctx.absorb(label);
    ctx.absorb(&seq.to_be_bytes());
    field(ctx, Some(prev));
    ctx.absorb(&e.at.to_be_bytes());
    field(ctx, Some(e.actor.as_bytes()));
    field(ctx, Some(e.action.as_bytes()));
    field(ctx, e.subject.as_deref().map(str::as_bytes));
    field(ctx, Some(e.detail.as_bytes()));
    field(ctx, e.network_prefix.as_deref().map(str::as_bytes));
}

/// The unkeyed link of rows written before the chain was keyed:
/// `SHA-256("tessera-audit-v1" ‖ …)`. Only checked, never written.
pub fn legacy_link(seq: i64, prev: &[u8], e: &NewAuditEvent) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    encode_row(&mut ctx, b"tessera-audit-v1", seq, prev, e);
    ctx.finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// Absent (0) or present (1) with a length, then the bytes.
fn field(ctx: &mut impl Absorb, value: Option<&[u8]>) {
    match value {
        None => ctx.absorb(&[0]),
        Some(v) => {
            ctx.absorb(&[1]);
            ctx.absorb(&(v.len() as u64).to_be_bytes());
            ctx.absorb(v);
        }
    }
}

/// Settings holding chain-key versions 2, 3, …: `audit_chain_key.N`, 32
/// random bytes sealed under the master key (bound to the setting's name).
pub const CHAIN_KEY_SETTING: &str = "audit_chain_key.";

/// The keys of the audit chain and its checkpoints, by version. Version 1
/// is derived for this purpose alone from the derivation root sealed under
/// the master key (so a master-key rotation by itself leaves it unchanged);
/// `tessera keys rewrap` adds a random version sealed under the new master
/// key ([`ChainKey::roll`]), and the chain switches to it, so whoever holds
/// a retired master key (and an old copy of the database) cannot extend or
/// rewrite the chain after the switch. Without the key a link cannot be
/// recomputed, so database access alone cannot rewrite history undetected.
///
/// Cheap to clone; clones share the versions loaded.
#[derive(Clone)]
pub struct ChainKey {
    inner: Arc<ChainKeys>,
}

struct ChainKeys {
    master: crate::keys::master::MasterKey,
    versions: std::sync::RwLock<std::collections::BTreeMap<i64, ring::hmac::Key>>,
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChainKey(versions 1–{})", self.newest())
    }
}

/// Why the chain keys could not be loaded or rolled.
#[derive(Debug, thiserror::Error)]
pub enum ChainKeyError {
    /// The database could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored version opens under none of the configured master keys.
    #[error("setting {setting}: {error}")]
    Open {
        /// The setting.
        setting: String,
        /// Why it did not open.
        error: crate::keys::master::OpenError,
    },
    /// A stored version is not a 32-byte key.
    #[error("setting {0} is corrupt (not a 32-byte key)")]
    Corrupt(String),
    /// The master-key check value (sealed under the active master key)
    /// records a version that is not stored: it was deleted.
    #[error(
        "audit chain key version {0} is missing from the settings table although the master-key \
         check value records it: the audit log cannot be trusted (restore the database from a backup)"
    )]
    Missing(i64),
}

impl ChainKey {
    /// Version 1 alone, derived from `master`'s root. [`ChainKey::load`]
    /// adds the stored versions.
    pub fn new(master: &crate::keys::master::MasterKey) -> ChainKey {
        let v1 = master.derive_hmac_key(b"tessera/audit-chain/v2");
        ChainKey {
            inner: Arc::new(ChainKeys {
                master: master.clone(),
                versions: std::sync::RwLock::new([(1, v1)].into()),
            }),
        }
    }

    /// Every version stored in the database.
    pub async fn load(
        store: &dyn Store,
        master: &crate::keys::master::MasterKey,
    ) -> Result<ChainKey, ChainKeyError> {
        let key = ChainKey::new(master);
        key.reload(store).await?;
        Ok(key)
    }

    /// Loads versions stored since (another process's rewrap); returns the
    /// newest. Fails if the master-key check value records a newer version
    /// than the settings hold.
    pub async fn reload(&self, store: &dyn Store) -> Result<i64, ChainKeyError> {
        let mut version = self.newest();
        while let Some(sealed) = store.setting(&chain_key_setting(version + 1)).await? {
            let name = chain_key_setting(version + 1);
            let bytes = self
                .inner
                .master
                .open(&sealed, name.as_bytes())
                .map_err(|error| ChainKeyError::Open {
                    setting: name.clone(),
                    error,
                })?;
            if bytes.len() != 32 {
                return Err(ChainKeyError::Corrupt(name));
            }
            version += 1;
            self.versions_mut().insert(
                version,
                ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes),
            );
        }
        let recorded = match store.setting(crate::keys::rewrap::CHECK_SETTING).await? {
            Some(check) => self
                .inner
                .master
                .open(&check, crate::keys::rewrap::CHECK_SETTING.as_bytes())
                .ok()
                .and_then(|text| crate::keys::rewrap::check_version(&text))
                .unwrap_or(1),
            None => 1,
        };
        if recorded > version {
            return Err(ChainKeyError::Missing(version + 1));
        }
        Ok(version)
    }

    /// The rewrap step: if the newest version is sealed under a master key
    /// that is no longer the active one (so a retired key could open it),
    /// stores a new random version sealed under the active key and loads
    /// it; returns it. The chain switches to it with the next row appended
    /// (by any process that has loaded it).
    pub async fn roll(&self, store: &dyn Store) -> Result<Option<i64>, ChainKeyError> {
        let newest = self.reload(store).await?;
        let setting = match newest {
            1 => crate::keys::rewrap::ROOT_SETTING.to_owned(),
            n => chain_key_setting(n),
        };
        let sealed = store.setting(&setting).await?.unwrap_or_default();
        if self.inner.master.is_current(&sealed) {
            return Ok(None);
        }
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(bytes.as_mut()).expect("the system random generator works");
        let name = chain_key_setting(newest + 1);
        // Two rewraps at once store one version: the second reads the first's.
        store
            .init_setting(
                &name,
                &self.inner.master.seal(bytes.as_ref(), name.as_bytes()),
            )
            .await?;
        Ok(Some(self.reload(store).await?))
    }

    /// The newest version loaded.
    pub fn newest(&self) -> i64 {
        self.versions().keys().next_back().copied().unwrap_or(1)
    }

    fn versions(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, std::collections::BTreeMap<i64, ring::hmac::Key>> {
        self.inner
            .versions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn versions_mut(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, std::collections::BTreeMap<i64, ring::hmac::Key>> {
        self.inner
            .versions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The link (`hash` column) of row `seq` with predecessor `prev` under
    /// `version`; `None` if that version is not loaded. Versions after the
    /// first bind their number into the link.
    pub fn link_at(
        &self,
        version: i64,
        seq: i64,
        prev: &[u8],
        e: &NewAuditEvent,
    ) -> Option<[u8; 32]> {
        let versions = self.versions();
        let mut ctx = ring::hmac::Context::with_key(versions.get(&version)?);
        match version {
            1 => encode_row(&mut ctx, b"tessera-audit-v2", seq, prev, e),
            v => encode_row(&mut ctx, &versioned(b"tessera-audit-v3", v), seq, prev, e),
        }
        Some(tag32(ctx.sign()))
    }

    /// The link of row `seq` under version 1.
    pub fn link(&self, seq: i64, prev: &[u8], e: &NewAuditEvent) -> [u8; 32] {
        self.link_at(1, seq, prev, e)
            .expect("version 1 is always loaded")
    }

    /// The MAC of a checkpoint under `version`, if loaded.
    pub fn checkpoint_mac(
        &self,
        version: i64,
        seq: i64,
        head: &[u8],
        legacy_end: i64,
        at: i64,
    ) -> Option<[u8; 32]> {
        let versions = self.versions();
        let mut ctx = ring::hmac::Context::with_key(versions.get(&version)?);
        match version {
            1 => ctx.update(b"tessera-audit-checkpoint-v1"),
            v => ctx.update(&versioned(b"tessera-audit-checkpoint-v2", v)),
        }
        ctx.update(&seq.to_be_bytes());
        field(&mut ctx, Some(head));
        ctx.update(&legacy_end.to_be_bytes());
        ctx.update(&at.to_be_bytes());
        Some(tag32(ctx.sign()))
    }

    fn checkpoint_is_genuine(&self, c: &AuditCheckpoint) -> bool {
        c.mac.as_deref().is_some_and(|mac| {
            self.checkpoint_mac(c.key_version, c.seq, &c.head, c.legacy_end, c.at)
                .is_some_and(|expected| constant_time_eq(&expected, mac))
        })
    }

    /// Appends `events`; when another process has switched the chain to a
    /// version this one has not loaded, loads it and tries once more.
    pub async fn append(
        &self,
        store: &dyn Store,
        events: &[NewAuditEvent],
        durable: bool,
    ) -> Result<(), StoreError> {
        match store.append_audit(events, durable, self).await {
            Err(StoreError::ChainKeyVersion(_)) => {
                self.reload(store).await.map_err(chain_key_unavailable)?;
                store.append_audit(events, durable, self).await
            }
            done => done,
        }
    }
}

/// The setting holding chain-key `version` (2 or later).
pub fn chain_key_setting(version: i64) -> String {
    format!("{CHAIN_KEY_SETTING}{version}")
}

fn versioned(label: &[u8], version: i64) -> Vec<u8> {
    [label, &version.to_be_bytes()].concat()
}

fn chain_key_unavailable(e: ChainKeyError) -> StoreError {
    match e {
        ChainKeyError::Store(e) => e,
        other => StoreError::Corrupt(other.to_string()),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

fn tag32(tag: ring::hmac::Tag) -> [u8; 32] {
    tag.as_ref().try_into().expect("HMAC-SHA256 is 32 bytes")
}

/// What an audit event records. Its [`Action::as_str`] is the `action`
/// column (part of the chained row) and the metric label, so the names are
/// a stable contract: add variants, never rename one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// A session was opened: a password grant, or an authorization code redeemed.
    Login,
    /// A wrong password, OTP or unknown user.
    LoginFailed,
    /// Failed logins locked an account.
    AccountLocked,
    /// A refresh token was rotated.
    Refresh,
    /// A refresh token was presented again within the reuse grace window.
    RefreshGraceReuse,
    /// A rotated refresh token was replayed: the session is revoked.
    RefreshReuseDetected,
    /// A refresh came from another User-Agent or network.
    SessionBindingChanged,
    /// A session ended at /oauth/logout.
    Logout,
    /// A session was revoked.
    SessionRevoked,
    /// An access or refresh token was revoked.
    TokenRevoked,
    /// Every session of a user was revoked.
    UserSessionsRevoked,
    /// Every token of a client was revoked.
    ClientTokensRevoked,
    /// A client failed to authenticate.
    ClientAuthFailed,
    /// A network reached its cap of failed authentications.
    NetworkFailureCapReached,
    /// A client obtained a token for itself (client_credentials).
    ClientTokenIssued,
    /// A user was created.
    UserCreated,
    /// A user was disabled.
    UserDisabled,
    /// A user's password was set.
    UserPasswordChanged,
    /// A user was enrolled in TOTP.
    UserTotpEnrolled,
    /// A client was registered.
    ClientCreated,
    /// A client's settings were changed.
    ClientUpdated,
    /// A client was disabled.
    ClientDisabled,
    /// A signing key was added by rotation.
    KeyRotated,
    /// A signing key was imported.
    KeyImported,
    /// An audience encryption key was registered.
    AudienceAdded,
    /// A user signed in at the login page (or with the browser's sign-in)
    /// and an authorization code was sent to the client.
    AuthorizationCodeIssued,
    /// A redeemed authorization code was presented again: the session it
    /// opened is revoked.
    AuthorizationCodeReused,
    /// A signing key was retired at once (compromise): unpublished, its
    /// tokens revoked.
    KeyRetired,
    /// A DPoP proof was refused at the token endpoint, or a bound refresh
    /// token came without a proof by its key (nothing was consumed).
    DpopProofRefused,
    /// Every stored secret was re-sealed under the active master key.
    MasterKeyRewrapped,
    /// The audit chain switched to a new chain-key version (the first row
    /// linked under it; `detail.version`).
    AuditChainKeyRolled,
    /// RFC 8693: a client exchanged a user's access token for one with a
    /// narrower audience, acting for the user (`detail`: audience, scope,
    /// the subject token's client and jti, the actor chain).
    TokenExchanged,
    /// A token exchange was refused (`detail.reason`, the kind of exchange,
    /// the upstream issuer if any).
    TokenExchangeRefused,
    /// An upstream issuer's ID token or JWT opened a session (`detail`:
    /// issuer, upstream sub, client, whether the user was created).
    UpstreamLogin,
    /// A trusted upstream issuer was registered.
    IssuerAdded,
    /// A trusted upstream issuer was disabled (its sessions revoked) or
    /// enabled again (`detail.disabled`).
    IssuerChanged,
    /// A user was linked to an identity at an upstream issuer.
    UserLinked,
    /// A user's link to an upstream identity was removed (the sessions it
    /// opened revoked).
    UserUnlinked,
}

impl Action {
    /// The snake_case name stored in the `action` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Login => "login",
            Action::LoginFailed => "login_failed",
            Action::AccountLocked => "account_locked",
            Action::Refresh => "refresh",
            Action::RefreshGraceReuse => "refresh_grace_reuse",
            Action::RefreshReuseDetected => "refresh_reuse_detected",
            Action::SessionBindingChanged => "session_binding_changed",
            Action::Logout => "logout",
            Action::SessionRevoked => "session_revoked",
            Action::TokenRevoked => "token_revoked",
            Action::UserSessionsRevoked => "user_sessions_revoked",
            Action::ClientTokensRevoked => "client_tokens_revoked",
            Action::ClientAuthFailed => "client_auth_failed",
            Action::NetworkFailureCapReached => "network_failure_cap_reached",
            Action::ClientTokenIssued => "client_token_issued",
            Action::UserCreated => "user_created",
            Action::UserDisabled => "user_disabled",
            Action::UserPasswordChanged => "user_password_changed",
            Action::UserTotpEnrolled => "user_totp_enrolled",
            Action::ClientCreated => "client_created",
            Action::ClientUpdated => "client_updated",
            Action::ClientDisabled => "client_disabled",
            Action::KeyRotated => "key_rotated",
            Action::KeyImported => "key_imported",
            Action::AudienceAdded => "audience_added",
            Action::AuthorizationCodeIssued => "authorization_code_issued",
            Action::AuthorizationCodeReused => "authorization_code_reused",
            Action::KeyRetired => "key_retired",
            Action::DpopProofRefused => "dpop_proof_refused",
            Action::MasterKeyRewrapped => "master_key_rewrapped",
            Action::AuditChainKeyRolled => "audit_chain_key_rolled",
            Action::TokenExchanged => "token_exchanged",
            Action::TokenExchangeRefused => "token_exchange_refused",
            Action::UpstreamLogin => "upstream_login",
            Action::IssuerAdded => "issuer_added",
            Action::IssuerChanged => "issuer_changed",
            Action::UserLinked => "user_linked",
            Action::UserUnlinked => "user_unlinked",
        }
    }

    /// The kind of revocation the event stands for (the `kind` label of
    /// `tessera_revocations_total`), if it is one.
    pub fn revocation_kind(self) -> Option<&'static str> {
        match self {
            Action::TokenRevoked => Some("token"),
            Action::SessionRevoked => Some("session"),
            Action::UserSessionsRevoked => Some("user"),
            Action::ClientTokensRevoked => Some("client"),
            Action::Logout => Some("logout"),
            _ => None,
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event being described; [`Auditor`] timestamps and chains it.
#[derive(Clone, Debug)]
pub struct Event {
    actor: String,
    action: Action,
    subject: Option<String>,
    detail: serde_json::Map<String, serde_json::Value>,
    network_prefix: Option<String>,
}

impl Event {
    /// `actor` did `action`.
    pub fn new(actor: impl Into<String>, action: Action) -> Event {
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
            action: self.action.as_str().to_owned(),
            subject: self.subject,
            detail: serde_json::Value::Object(self.detail).to_string(),
            network_prefix: self.network_prefix,
        }
    }
}

/// At most `max` characters of an untrusted value, with `…` when cut: what
/// an error message or an audit detail may echo of what a client or a
/// token chose, so neither grows by whatever is sent.
pub fn clip(value: &str, max: usize) -> String {
    match value.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &value[..i]),
        None => value.to_owned(),
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
    Direct(Arc<dyn Store>, ChainKey),
}

impl Auditor {
    /// An auditor writing through a background task (the service). The task
    /// ends, after storing what is queued, when every clone is dropped.
    pub fn spawn(store: Arc<dyn Store>, key: ChainKey) -> (Auditor, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(writer(store, key, rx));
        (
            Auditor {
                sink: Sink::Queued(tx),
            },
            task,
        )
    }

    /// An auditor that stores each event before returning (the CLI).
    pub fn direct(store: Arc<dyn Store>, key: ChainKey) -> Auditor {
        Auditor {
            sink: Sink::Direct(store, key),
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
            Sink::Direct(store, key) => {
                if let Err(e) = key.append(store.as_ref(), &[event], true).await {
                    tracing::error!(error = %e, "audit event could not be stored");
                }
                direct_checkpoint(store.as_ref(), key).await;
            }
        }
    }

    /// Records a security event and waits until it is stored; false (and an
    /// error log) if it could not be.
    pub async fn record_durable(&self, event: Event) -> bool {
        if matches!(self.sink, Sink::Direct(..)) {
            crate::metrics::metrics().audit_event(event.action);
        }
        match &self.sink {
            Sink::Queued(_) => {
                self.record(event).await;
                self.flush().await
            }
            Sink::Direct(store, key) => {
                match key.append(store.as_ref(), &[event.at(now())], true).await {
                    Ok(()) => {
                        direct_checkpoint(store.as_ref(), key).await;
                        true
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "audit event could not be stored");
                        false
                    }
                }
            }
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
            Sink::Direct(..) => true,
        }
    }
}

/// The CLI has no checkpoint task: it vouches for its rows at once.
async fn direct_checkpoint(store: &dyn Store, key: &ChainKey) {
    if let Err(e) = checkpoint(store, key, None).await {
        tracing::error!(error = %e, "audit checkpoint could not be written");
    }
}

/// Appends queued events in batches. A failed batch is retried with backoff
/// (the database may be restarting); after a minute of failures it is
/// dropped with an error log rather than blocking the service forever.
/// How long routine audit events wait for more before they are written.
const LINGER: Duration = Duration::from_millis(5);

async fn writer(store: Arc<dyn Store>, key: ChainKey, mut rx: mpsc::Receiver<Message>) {
    let mut events = Vec::with_capacity(BATCH);
    let mut acks = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        // Routine events wait a moment for company: under load one wake-up
        // and one commit then carry many events, instead of each event
        // waking the writer (a context switch per request). Nobody waits
        // on them; a security event (a flush) ends the wait at once.
        let linger_until = tokio::time::Instant::now() + LINGER;
        loop {
            while let Some(message) = next.take() {
                match message {
                    Message::Event(e) => events.push(e),
                    Message::Flush(ack) => acks.push(ack),
                }
                if events.len() < BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if !acks.is_empty() || events.len() >= BATCH {
                break;
            }
            match tokio::time::timeout_at(linger_until, rx.recv()).await {
                Ok(Some(message)) => next = Some(message),
                Ok(None) | Err(_) => break,
            }
        }
        // A batch someone waits on (a security event) is flushed to disk
        // before the commit returns; routine batches are not.
        let stored = append_with_retry(&*store, &key, &events, !acks.is_empty()).await;
        events.clear();
        for ack in acks.drain(..) {
            let _ = ack.send(stored);
        }
    }
}

async fn append_with_retry(
    store: &dyn Store,
    key: &ChainKey,
    events: &[NewAuditEvent],
    durable: bool,
) -> bool {
    let mut delay = Duration::from_millis(50);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match key.append(store, events, durable).await {
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
    /// A row does not match its link or its predecessor.
    #[error("audit log broken at row {seq}: {reason}")]
    Broken {
        /// The first bad row.
        seq: i64,
        /// What does not match.
        reason: &'static str,
    },
    /// Rows the newest checkpoint vouches for are gone: cut from the end.
    #[error(
        "audit log truncated: the checkpoint written at {at} vouches for {checkpoint} row(s), \
         the log now ends at row {last}; rows {first_missing}–{checkpoint} are missing"
    )]
    Truncated {
        /// The checkpoint's row count.
        checkpoint: i64,
        /// When it was written (RFC 3339).
        at: String,
        /// The last row present.
        last: i64,
        /// The first row missing.
        first_missing: i64,
    },
    /// The row a checkpoint names is there but is not the row it vouched for.
    #[error(
        "audit log rewritten: row {seq} is not the row the checkpoint written at {at} vouches for"
    )]
    Rewritten {
        /// The checkpoint's row.
        seq: i64,
        /// When it was written.
        at: String,
    },
    /// A newer chain key is stored than the one the last row is linked
    /// under: rows after the switch were cut (and the rest perhaps
    /// rewritten with a retired key), or a rewrap stopped before its switch.
    #[error(
        "audit chain key version {stored} is stored but the log ends under version {head}: rows \
         linked under it were removed, or a `tessera keys rewrap` stopped before switching (run it again)"
    )]
    NotSwitched {
        /// The newest version stored.
        stored: i64,
        /// The version of the last row.
        head: i64,
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

/// What [`verify_chain`] checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainReport {
    /// Rows checked (1 to `rows`, no gaps).
    pub rows: i64,
    /// Rows 1 to `legacy_end` were written before the chain was keyed and
    /// carry unkeyed SHA-256 links.
    pub legacy_end: i64,
    /// The newest checkpoint with a valid MAC, if any: rows it vouches for
    /// and when it was written.
    pub checkpoint: Option<(i64, i64)>,
    /// Which chain-key version links which rows, oldest first.
    pub key_versions: Vec<KeyVersionSpan>,
}

/// Rows `first` to `last` are linked under chain-key `version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyVersionSpan {
    /// The version.
    pub version: i64,
    /// Its first row.
    pub first: i64,
    /// Its last row.
    pub last: i64,
}

impl std::fmt::Display for ChainReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keyed_from = self.legacy_end + 1;
        match (self.rows, self.legacy_end) {
            (0, _) => write!(f, "audit log intact: no rows yet")?,
            (rows, 0) => write!(
                f,
                "audit log intact: rows 1–{rows} verified, each linked to the one before by an HMAC under the chain key (kept sealed by the master key)"
            )?,
            (rows, legacy) if rows <= legacy => write!(
                f,
                "audit log intact: rows 1–{rows} verified (written before the chain was keyed: unkeyed SHA-256 links)"
            )?,
            (rows, legacy) => write!(
                f,
                "audit log intact: rows 1–{rows} verified (rows 1–{legacy} written before the chain was keyed: \
                 unkeyed SHA-256 links; rows {keyed_from}–{rows}: HMAC under the chain key)"
            )?,
        }
        if self.key_versions.iter().any(|s| s.version > 1) {
            let spans: Vec<String> = self
                .key_versions
                .iter()
                .map(|s| format!("version {} for rows {}–{}", s.version, s.first, s.last))
                .collect();
            write!(f, "; chain key {}", spans.join(", "))?;
        }
        match self.checkpoint {
            Some((seq, at)) => write!(
                f,
                "; newest checkpoint (row {seq}, written {}) matches; {} row(s) after it",
                rfc3339(at),
                self.rows - seq
            ),
            None => write!(
                f,
                "; no checkpoint yet, so rows cut from the end could not be detected"
            ),
        }
    }
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| unix.to_string())
}

/// Checkpoints read to find the newest genuine one.
const CHECKPOINTS_READ: i64 = 1000;

/// The newest checkpoint with a valid MAC, and where the unkeyed rows end:
/// from that checkpoint, else from the migration's record (the one without
/// a MAC), else nowhere (every row must be keyed).
async fn trusted_checkpoint(
    store: &dyn Store,
    key: &ChainKey,
) -> Result<(Option<AuditCheckpoint>, i64), ChainError> {
    let checkpoints = store.audit_checkpoints(CHECKPOINTS_READ).await?;
    // Under the newest chain key first: one a retired key could still MAC
    // must not outrank one written after the switch.
    if let Some(c) = checkpoints
        .iter()
        .rev()
        .filter(|c| key.checkpoint_is_genuine(c))
        .max_by_key(|c| c.key_version)
    {
        return Ok((Some(c.clone()), c.legacy_end));
    }
    let legacy_end = checkpoints
        .iter()
        .filter(|c| c.mac.is_none())
        .map(|c| c.legacy_end)
        .min()
        .unwrap_or(0);
    Ok((None, legacy_end))
}

/// Walks the whole log and compares its head with the newest genuine
/// checkpoint.
pub async fn verify_chain(store: &dyn Store, key: &ChainKey) -> Result<ChainReport, ChainError> {
    let newest = key
        .reload(store)
        .await
        .map_err(|e| ChainError::Store(e.to_string()))?;
    let (checkpoint, legacy_end) = trusted_checkpoint(store, key).await?;
    let mut expected_seq = 1;
    let mut prev = GENESIS.to_vec();
    let mut versions: Vec<KeyVersionSpan> = Vec::new();
    loop {
        let page = store.audit_page(expected_seq - 1, 1000).await?;
        if page.is_empty() {
            break;
        }
        for row in page {
            let previous = versions.last().map_or(1, |s| s.version);
            check_row(&row, expected_seq, &prev, key, legacy_end, previous)?;
            match versions.last_mut() {
                Some(span) if span.version == row.key_version => span.last = row.seq,
                _ => versions.push(KeyVersionSpan {
                    version: row.key_version,
                    first: row.seq,
                    last: row.seq,
                }),
            }
            if let Some(c) = &checkpoint
                && c.seq == row.seq
                && (c.head != row.hash || c.key_version != row.key_version)
            {
                return Err(ChainError::Rewritten {
                    seq: c.seq,
                    at: rfc3339(c.at),
                });
            }
            prev = row.hash;
            expected_seq += 1;
        }
    }
    let rows = expected_seq - 1;
    if let Some(c) = &checkpoint
        && c.seq > rows
    {
        return Err(ChainError::Truncated {
            checkpoint: c.seq,
            at: rfc3339(c.at),
            last: rows,
            first_missing: rows + 1,
        });
    }
    let head_version = versions.last().map_or(1, |s| s.version);
    if head_version < newest {
        return Err(ChainError::NotSwitched {
            stored: newest,
            head: head_version,
        });
    }
    Ok(ChainReport {
        rows,
        legacy_end,
        checkpoint: checkpoint.map(|c| (c.seq, c.at)),
        key_versions: versions,
    })
}

fn check_row(
    row: &AuditRecord,
    expected_seq: i64,
    prev: &[u8],
    key: &ChainKey,
    legacy_end: i64,
    previous_version: i64,
) -> Result<(), ChainError> {
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
    if row.key_version < previous_version {
        return Err(broken(
            "linked under an older chain key version than the row before it (written with a retired key)",
        ));
    }
    let expected = if row.seq <= legacy_end {
        legacy_link(row.seq, prev, &event)
    } else {
        key.link_at(row.key_version, row.seq, prev, &event)
            .ok_or(broken(
                "linked under a chain key version that is not stored",
            ))?
    };
    if !constant_time_eq(&expected, &row.hash) {
        return Err(broken(
            "content does not match its link (edited, or written without the master key)",
        ));
    }
    Ok(())
}

/// Writes a checkpoint of the current head if it moved past `last` (the
/// sequence of the newest checkpoint this process knows), logs it and
/// exports it as a metric; returns the head's sequence.
pub async fn checkpoint(
    store: &dyn Store,
    key: &ChainKey,
    last: Option<i64>,
) -> Result<i64, ChainError> {
    let (seq, head, version) = store
        .audit_head()
        .await?
        .unwrap_or_else(|| (0, GENESIS.to_vec(), 1));
    if last == Some(seq) {
        return Ok(seq);
    }
    let (newest, legacy_end) = trusted_checkpoint(store, key).await?;
    if last.is_none()
        && newest
            .as_ref()
            .is_some_and(|c| c.seq == seq && c.head == head)
    {
        crate::metrics::metrics().audit_checkpoint.set(seq);
        return Ok(seq);
    }
    if version > key.newest() {
        key.reload(store)
            .await
            .map_err(|e| ChainError::Store(e.to_string()))?;
    }
    let at = now();
    let mac = key
        .checkpoint_mac(version, seq, &head, legacy_end, at)
        .ok_or_else(|| {
            ChainError::Store(format!(
                "the audit head is linked under chain key version {version}, which is not stored"
            ))
        })?;
    store
        .add_audit_checkpoint(&AuditCheckpoint {
            seq,
            head: head.clone(),
            legacy_end,
            at,
            mac: Some(mac.to_vec()),
            key_version: version,
        })
        .await?;
    crate::metrics::metrics().audit_checkpoint.set(seq);
    tracing::info!(
        seq,
        head = %hex(&head),
        mac = %hex(&mac),
        "audit checkpoint (keep a copy: `tessera audit verify` detects rows cut after it)"
    );
    Ok(seq)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a checkpoint within `every` of new rows, until aborted.
pub fn spawn_checkpoints(
    store: Arc<dyn Store>,
    key: ChainKey,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = None;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match checkpoint(store.as_ref(), &key, last).await {
                Ok(seq) => last = Some(seq),
                Err(e) => tracing::warn!(error = %e, "audit checkpoint failed; will retry"),
            }
        }
    })
}

/// Chains the events a migration left in `audit_pending` (it could not
/// compute keyed links), once, whichever process gets there first.
pub async fn chain_pending(store: &dyn Store, key: &ChainKey) -> Result<u64, StoreError> {
    let n = store.chain_pending_audit(key).await?;
    if n > 0 {
        tracing::info!(
            events = n,
            "recorded the audit events of a database migration"
        );
    }
    Ok(n)
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
    fn every_field_and_the_position_change_the_link() {
        let key = ChainKey::new(&crate::keys::master::MasterKey::from_bytes(&[3; 32]));
        let link = |seq, prev: &[u8], e: &NewAuditEvent| key.link(seq, prev, e);
        let base = link(1, &GENESIS, &event(Some("a")));
        assert_ne!(base, link(2, &GENESIS, &event(Some("a"))));
        assert_ne!(base, link(1, &[1; 32], &event(Some("a"))));
        assert_ne!(base, link(1, &GENESIS, &event(None)));
        assert_ne!(base, link(1, &GENESIS, &event(Some(""))));
        let mut moved = event(Some("a"));
        moved.actor = "clix".into();
        moved.action = String::new();
        let mut original = event(Some("a"));
        original.action = "x".into();
        assert_ne!(link(1, &GENESIS, &moved), link(1, &GENESIS, &original));
        // Keyed: another master key, or the unkeyed hash, gives another link.
        let other = ChainKey::new(&crate::keys::master::MasterKey::from_bytes(&[4; 32]));
        assert_ne!(base, other.link(1, &GENESIS, &event(Some("a"))));
        assert_ne!(base, legacy_link(1, &GENESIS, &event(Some("a"))));
    }
}
