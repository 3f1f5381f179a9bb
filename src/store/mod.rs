//! Persistence behind one trait, [`Store`], with a PostgreSQL and a SQLite
//! implementation chosen by the database URL.
//!
//! Timestamps are stored as Unix seconds (`BIGINT`) in both engines and are
//! always supplied by the caller, never taken from the database clock: the
//! same comparison works identically on both engines, and tests can move time.
//!
//! SQL that both engines accept verbatim lives once, in `portable.rs`; only
//! what genuinely differs (connection set-up, migrations, and later the
//! engine-specific fast paths) is written per engine.

mod models;
#[macro_use]
mod portable;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

pub use models::{
    Audience, AuditCheckpoint, AuditRecord, BindingPolicy, Client, CredentialChange, LoginFailures,
    NewAuditEvent, NewClient, NewIssuer, NewSession, NewSigningKey, NewUser, PresentedRefresh,
    RefreshTokenInfo, RevocationEntry, RevocationKind, Rotation, RotationRequest, Session,
    SigningKey, TokenState, TrustedIssuer, UpstreamAccount, UpstreamOrigin, User, UserLink,
};

use crate::config::Config;

/// The storage engine named by a database URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// PostgreSQL, for production and many instances.
    Postgres,
    /// The embedded SQLite file.
    Sqlite,
}

impl Engine {
    /// The engine for a URL, or `None` for a scheme tessera does not speak.
    pub fn from_url(url: &str) -> Option<Engine> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Engine::Postgres)
        } else if url.starts_with("sqlite:") {
            Some(Engine::Sqlite)
        } else {
            None
        }
    }
}

/// The URL with its password, and the value of any query parameter that may
/// be a credential (`password=`, `sslpassword=`, …), replaced by `***`: safe
/// to log or print. Other parameters (a Unix-socket `host=`, `sslmode=`) stay
/// readable.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            if let Some(query) = u.query() {
                // Keep what helps an operator (host, user, sslmode); hide the
                // value of anything that may be a credential.
                let redacted: Vec<String> = query
                    .split('&')
                    .map(|pair| match pair.split_once('=') {
                        Some((k, _)) if is_secret_parameter(k) => format!("{k}=***"),
                        _ => pair.to_owned(),
                    })
                    .collect();
                u.set_query(Some(&redacted.join("&")));
            }
            u.to_string()
        }
        // Unparseable: print only the scheme, the rest may hold a secret.
        Err(_) => match url.split_once(':') {
            Some((scheme, _)) => format!("{scheme}:…"),
            None => "…".to_owned(),
        },
    }
}

/// Query parameters whose values are never shown (`password`, `sslpassword`, …).
fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "secret", "token"]
        .iter()
        .any(|s| name.contains(s))
}

/// Errors of the storage layer. Messages never include secrets or row data
/// beyond identifiers the caller supplied.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or the connection failed mid-way;
    /// retrying later may succeed.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness rule was violated (the thing already exists).
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// A stored value could not be decoded, or the schema is not the one
    /// this build expects.
    #[error("database content is not what this version of tessera expects: {0}")]
    Corrupt(String),
    /// Migrations failed or are missing.
    #[error("database schema: {0}")]
    Schema(String),
    /// The audit chain has moved on to a chain-key version this process has
    /// not loaded (a `tessera keys rewrap` elsewhere): reload the chain key
    /// ([`crate::audit::ChainKey::reload`]) and try again.
    #[error(
        "the audit chain is linked under chain-key version {0}, which this process has not loaded"
    )]
    ChainKeyVersion(i64),
}

/// The row a write's `RETURNING` gave back, read with `fetch_all` rather
/// than `fetch_one`: on SQLite a statement left at its first row stays
/// active on the writer, and the WAL cannot be rewound while any statement
/// still reads it (it grew to 4 GB over a million rotations).
pub(crate) fn returned_row<T>(mut rows: Vec<T>) -> StoreResult<T> {
    rows.pop()
        .ok_or_else(|| StoreError::Corrupt("a write returned no row".into()))
}

impl StoreError {
    /// Maps a driver error, naming `what` on a uniqueness violation.
    pub(crate) fn from_sqlx(e: sqlx::Error, what: &'static str) -> StoreError {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
            sqlx::Error::Database(db) if is_transient(db.code().as_deref()) => {
                StoreError::Unavailable(db.message().to_owned())
            }
            sqlx::Error::Database(db) => StoreError::Corrupt(db.message().to_owned()),
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(e.to_string()),
            sqlx::Error::RowNotFound => StoreError::Corrupt("expected row is missing".into()),
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}

/// Database errors that say "try again", not "your data is wrong":
/// PostgreSQL connection failures (08xxx), serialization failures and
/// deadlocks (40001, 40P01), shutdown (57P01-57P03), cancellation (57014),
/// too many connections (53300); SQLite BUSY and LOCKED (with extended codes).
fn is_transient(code: Option<&str>) -> bool {
    let Some(code) = code else { return false };
    if code.starts_with("08")
        || matches!(
            code,
            "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "57014" | "53300"
        )
    {
        return true;
    }
    code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        StoreError::from_sqlx(e, "record")
    }
}

/// An audit row ready to insert: seq, event, prev_hash, hash.
pub(crate) type AuditRow<'a> = (i64, &'a NewAuditEvent, Vec<u8>, Vec<u8>, i64);

/// Result alias of the storage layer.
pub type StoreResult<T> = Result<T, StoreError>;

/// Connections of the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolState {
    /// Open and idle.
    pub idle: u32,
    /// Checked out by a query.
    pub in_use: u32,
    /// The configured maximum.
    pub max: u32,
}

/// Connection, health and schema management: written per engine.
#[async_trait]
pub trait Lifecycle: Send + Sync {
    /// Which engine this is.
    fn engine(&self) -> Engine;
    /// The connection pool's current state, for metrics.
    fn pool_state(&self) -> PoolState;
    /// One cheap round trip, for readiness checks.
    async fn ping(&self) -> StoreResult<()>;
    /// Applies pending migrations (safe to run from many instances at once).
    async fn migrate(&self) -> StoreResult<()>;
    /// Number of this build's migrations not yet applied to the database.
    async fn pending_migrations(&self) -> StoreResult<usize>;
    /// Closes every connection; used at shutdown.
    async fn close(&self);
    /// A subscription that wakes when another instance writes a revocation
    /// (PostgreSQL LISTEN/NOTIFY); `None` where the engine has none (SQLite:
    /// callers poll).
    async fn revocation_notifications(&self) -> StoreResult<Option<Box<dyn Notifications>>>;
}

/// A column that holds values sealed under the master key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedColumn {
    /// Signing keys' private keys, by `kid`.
    SigningKey,
    /// Users' TOTP secrets, by user id.
    TotpSecret,
    /// Instance settings, by name (only some of them are sealed).
    Setting,
}

/// One sealed value and the record that holds it.
#[derive(Debug, Clone)]
pub struct SealedValue {
    /// The record: a `kid`, a user id or a setting name.
    pub id: String,
    /// The sealed bytes.
    pub value: Vec<u8>,
}

/// Wake-ups from the database (see [`Lifecycle::revocation_notifications`]).
#[async_trait]
pub trait Notifications: Send {
    /// Waits for the next notification. An error means the subscription
    /// broke; callers poll and subscribe again.
    async fn next(&mut self) -> StoreResult<()>;
}

/// Users, clients, audiences, signing keys and instance settings: plain
/// records whose SQL is identical on both engines.
#[async_trait]
pub trait Directory: Send + Sync {
    /// Reads an instance-wide setting.
    async fn setting(&self, name: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Stores a setting unless it exists; returns the value now stored.
    async fn init_setting(&self, name: &str, value: &[u8]) -> StoreResult<Vec<u8>>;
    /// Raises a numeric setting to at least `value` (atomically) and returns
    /// the stored maximum.
    async fn raise_setting(&self, name: &str, value: u64) -> StoreResult<u64>;

    /// Up to `limit` values of one sealed column, in record order after the
    /// record `after` (from the start when `None`): what `keys rewrap` reads.
    async fn sealed_values(
        &self,
        column: SealedColumn,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<SealedValue>>;
    /// Replaces the sealed value of record `id` with `new` if it still is
    /// `old`; false if it changed meanwhile (or the record is gone).
    async fn replace_sealed(
        &self,
        column: SealedColumn,
        id: &str,
        old: &[u8],
        new: &[u8],
    ) -> StoreResult<bool>;

    /// Creates a user; `Conflict` if the username is taken.
    async fn create_user(&self, user: &NewUser, now: i64) -> StoreResult<User>;
    /// Finds a user by exact username.
    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>>;
    /// Finds a user by id (the token `sub`).
    async fn user_by_id(&self, id: uuid::Uuid) -> StoreResult<Option<User>>;
    /// Enables or disables a user; returns false if there is no such user.
    async fn set_user_disabled(
        &self,
        username: &str,
        disabled: bool,
        now: i64,
    ) -> StoreResult<bool>;

    /// Records TOTP `step` as used if it is later than the last one; false
    /// if it is not (the code was already used: refuse it).
    async fn use_totp_step(&self, user: uuid::Uuid, step: i64) -> StoreResult<bool>;

    /// Registers a client; `Conflict` if the id is taken.
    async fn create_client(&self, client: &NewClient, now: i64) -> StoreResult<Client>;
    /// Finds a client by its `client_id`.
    async fn client_by_id(&self, id: &str) -> StoreResult<Option<Client>>;
    /// Every browser origin registered for an enabled client.
    async fn client_origins(&self) -> StoreResult<Vec<String>>;
    /// Enables or disables a client; false if there is no such client.
    async fn set_client_disabled(&self, id: &str, disabled: bool) -> StoreResult<bool>;
    /// Grants or withdraws introspection and the revocation feed; false if
    /// there is no such client.
    async fn set_client_resource_server(
        &self,
        id: &str,
        resource_server: bool,
    ) -> StoreResult<bool>;

    /// Counts one attempt against `key` in one atomic statement, if the
    /// count allows it: a new window starts when the old one is over;
    /// within a window the count may grow while it is below `limit`, and
    /// past it only once `now` is `lockout` doubling seconds after the last
    /// count (see [`Lockout`]). Returns the counts after this one, or `None`
    /// if the attempt is refused (nothing is changed then). However many
    /// callers race, on however many instances, no more attempts are
    /// counted than the rule allows.
    async fn count_attempt(
        &self,
        key: &str,
        now: i64,
        window: i64,
        limit: i64,
        lockout: Lockout,
    ) -> StoreResult<Option<LoginFailures>>;
    /// Gives back one attempt counted in the window that began at
    /// `window_start` (a login that turned out right).
    async fn uncount_attempt(&self, key: &str, window_start: i64) -> StoreResult<()>;
    /// The failures counted against `key` (`None` if none).
    async fn login_failures(&self, key: &str) -> StoreResult<Option<LoginFailures>>;
    /// Forgets the failures of `key` (after a successful login).
    async fn clear_login_failures(&self, key: &str) -> StoreResult<()>;
    /// Deletes up to `batch` counters that neither count nor lock anything
    /// at `now` any more: the window is over and the last count is more than
    /// `max_lockout` seconds old.
    async fn purge_login_failures(
        &self,
        now: i64,
        window: i64,
        max_lockout: i64,
        batch: i64,
    ) -> StoreResult<u64>;

    /// Registers an audience or replaces its encryption key.
    async fn put_audience(&self, audience: &Audience) -> StoreResult<()>;
    /// Finds an audience by name.
    async fn audience(&self, name: &str) -> StoreResult<Option<Audience>>;
    /// Every registered audience, by name.
    async fn audiences(&self) -> StoreResult<Vec<Audience>>;

    /// Adds a signing key and schedules every key still signing to stop when
    /// it activates and to leave the JWKS at `previous_retire_at`, in one
    /// transaction. `predecessor` is the generation of the newest key the
    /// caller saw (`None` for the first key); if another instance added a key
    /// after it, nothing changes and the result is `Conflict`.
    async fn add_signing_key(
        &self,
        key: &NewSigningKey,
        predecessor: Option<i64>,
        previous_retire_at: i64,
    ) -> StoreResult<()>;
    /// Every signing key not yet retired at `now`, newest (highest generation) first.
    async fn signing_keys(&self, now: i64) -> StoreResult<Vec<SigningKey>>;
    /// Emergency retirement of `kid`, in one transaction: it leaves the
    /// JWKS (its `retire_at` becomes its publication time, so no refresh
    /// with an earlier `now` brings it back) and stops signing at `now`; its `kid` is listed as revoked until
    /// `relevant_until` (so verifiers that cached the JWKS refuse its
    /// tokens); and `successor`, if given, is added signing from `now`
    /// (`successor.activate_at`), as the newest generation. False, and
    /// nothing changes, if `kid` is not a published key.
    async fn retire_signing_key_now(
        &self,
        kid: &str,
        successor: Option<&NewSigningKey>,
        now: i64,
        relevant_until: i64,
    ) -> StoreResult<bool>;
}

/// What [`Directory::count_attempt`] allows past the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lockout {
    /// Nothing until the window ends (a network's cap). The count may still
    /// reach `limit + 1`, once: the first refusal, so a caller can tell it
    /// from later ones (one summary audit row per window).
    UntilWindowEnds,
    /// One more attempt `2^(count − limit + 1)` seconds after the last one,
    /// at most `max` seconds (an account's doubling back-off).
    Doubling {
        /// The longest wait, seconds.
        max: i64,
    },
}

/// Whose access token a jti revocation is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JtiOwner {
    /// A token minted in this session.
    Session(uuid::Uuid),
    /// A token a client obtained for itself (no session).
    Client(String),
}

impl JtiOwner {
    pub(crate) fn key(&self) -> String {
        match self {
            JtiOwner::Session(sid) => format!("sid:{sid}"),
            JtiOwner::Client(id) => format!("client:{id}"),
        }
    }
}

/// What [`Sessions::revoke_jti`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JtiRevocation {
    /// The jti is listed now.
    Listed,
    /// It was listed already; nothing changed.
    AlreadyListed,
    /// The owner had too many entries: they were folded into one session
    /// or client entry (which covers this token too).
    Folded,
}

/// Which tokens a `sub` or `client` revocation covers (by their `iat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cutoff {
    /// Those issued up to the second the revocation commits (the clock is
    /// read inside the transaction, after its locks, not when the request
    /// arrived): logout everywhere, revoking a client's tokens.
    Commit,
    /// Every token until the entry stops being relevant: the user or client
    /// is disabled, so even a token minted by a request that read it as
    /// enabled a moment before is refused.
    Always,
}

impl Cutoff {
    /// The `revoked_at` to list: tokens with `iat` up to it are revoked.
    pub(crate) fn at(self, now: i64, relevant_until: i64) -> i64 {
        match self {
            Cutoff::Commit => now.max(chrono::Utc::now().timestamp()),
            Cutoff::Always => relevant_until,
        }
    }
}

/// Sessions and refresh tokens: the rotation rules are enforced here, in the
/// database, so they hold across every instance.
#[async_trait]
pub trait Sessions: Send + Sync {
    /// Opens a session at refresh generation 0 with the digest of its
    /// refresh secret, if its
    /// user is enabled and `session.credential_version` is still the user's
    /// (no password change or TOTP enrolment committed since the login read
    /// it); false otherwise, and nothing is stored. Decided under a lock on
    /// the user row (PostgreSQL) or the single writer (SQLite), so a session
    /// is either refused or visible to the change's revocation. A session
    /// whose id exists already is not opened either (false): the id of the
    /// session an authorization code opens is chosen with the code, so a
    /// code opens at most one. A session from an `upstream` token is
    /// opened only while its issuer is enabled and its account is linked
    /// to the session's user, decided under locks on both rows, so a
    /// session is either refused or visible to the disable's (or the
    /// unlink's) sweep; and only if that token opened no session before
    /// (its digest is recorded in the same transaction).
    async fn create_session(
        &self,
        session: &NewSession,
        secret_digest: &[u8; 32],
    ) -> StoreResult<bool>;

    /// Applies a credential change (new password, TOTP enrolment), moves the
    /// user's credential version, and revokes every live session of the
    /// user, listing each `sid` as revoked until `relevant_until`, in one
    /// transaction. Returns the number of sessions revoked, `None` if there
    /// is no such user.
    async fn change_credentials(
        &self,
        user: uuid::Uuid,
        change: &CredentialChange,
        now: i64,
        reason: &str,
        relevant_until: i64,
    ) -> StoreResult<Option<u64>>;

    /// Moves the session of the presented token to its next generation, if
    /// the token is the session's current one, its secret matches, the
    /// session is live (not revoked, idle and absolute expiry in the
    /// future) and bound to the client, and its user enabled under the
    /// credentials the login checked. One row update, nothing inserted. Of
    /// any number of concurrent calls with the same token exactly one
    /// rotates.
    ///
    /// The immediately previous generation, inside the grace window after
    /// the last rotation and not reused yet, rotates once more. Any other
    /// older generation revokes its session and lists its `sid` as revoked
    /// until `request.revocation_relevant_until`, except inside the window
    /// after its one reuse (a tab race, not a theft signal).
    ///
    /// A legacy token (stored as a row) that is active rotates once and
    /// moves its session to the current format with `request.fresh_secret`
    /// at the next generation; a consumed one is a replay as above. A
    /// failure part-way changes nothing.
    async fn rotate_refresh_token(&self, request: &RotationRequest) -> StoreResult<Rotation>;
    /// Undoes a rotation whose answer never reached the client (the request
    /// was refused, or no access token could be signed, after the token was
    /// consumed): session `sid` steps back from `generation` to the one
    /// before, if it is still at `generation` and not revoked, so the token
    /// presented stays the current one and a retry is not taken for a
    /// replay. Returns whether it stepped back.
    async fn unrotate_refresh_token(&self, sid: uuid::Uuid, generation: i64) -> StoreResult<bool>;

    /// The presented token's state, with its session; `None` if it is not
    /// (or no longer) known.
    async fn refresh_token(
        &self,
        presented: &PresentedRefresh,
    ) -> StoreResult<Option<RefreshTokenInfo>>;

    /// A user's sessions that are live at `now`, newest first.
    async fn user_sessions(&self, user: uuid::Uuid, now: i64) -> StoreResult<Vec<Session>>;

    /// A session by id.
    async fn session(&self, id: uuid::Uuid) -> StoreResult<Option<Session>>;

    /// Revokes a session and its refresh tokens and lists its `sid` as
    /// revoked until `revocation_relevant_until`; false if already revoked.
    async fn revoke_session(
        &self,
        id: uuid::Uuid,
        now: i64,
        reason: &str,
        revocation_relevant_until: i64,
    ) -> StoreResult<bool>;

    /// Revokes every live session of `user`, listing each `sid` as revoked
    /// (every token minted from them, whenever it was minted); with
    /// `by_sub`, also lists the user's `sub`, with a cut-off taken inside
    /// the transaction (every token issued to them up to the second the
    /// revocation commits, sessions or not). Returns the number of sessions
    /// revoked.
    async fn revoke_user_sessions(
        &self,
        user: uuid::Uuid,
        by_sub: Option<Cutoff>,
        now: i64,
        reason: &str,
        revocation_relevant_until: i64,
    ) -> StoreResult<u64>;

    /// Revokes every live session of a client, listing each `sid`, and lists
    /// the client as revoked with a cut-off taken inside the transaction
    /// (every token issued to it up to the second the revocation commits).
    /// Returns the number of sessions revoked.
    async fn revoke_client_tokens(
        &self,
        client_id: &str,
        cutoff: Cutoff,
        now: i64,
        reason: &str,
        revocation_relevant_until: i64,
    ) -> StoreResult<u64>;

    /// Lists one access token as revoked, as `owner`'s if given. Past
    /// `fold_after` relevant entries of one owner, the owner's entries are
    /// replaced in the same transaction by one entry covering them all: a
    /// session is revoked (and its `sid` listed), a client is listed with a
    /// cut-off at this commit. An unowned entry (the admin API's, whose
    /// token is unknown) is never folded.
    async fn revoke_jti(
        &self,
        jti: &str,
        now: i64,
        relevant_until: i64,
        owner: Option<&JtiOwner>,
        fold_after: i64,
    ) -> StoreResult<JtiRevocation>;

    /// Revocation entries after `cursor` still relevant at `now`, oldest
    /// first, at most `limit`. Entries become visible in cursor order: a
    /// reader never skips one that commits later with a smaller cursor.
    async fn revocations_since(
        &self,
        cursor: i64,
        now: i64,
        limit: i64,
    ) -> StoreResult<Vec<RevocationEntry>>;

    /// Deletes up to `batch` sessions (with their refresh tokens) that
    /// expired or were revoked before `before`, and up to `batch` revocation
    /// entries no longer relevant at `now`, and up to `batch` used upstream
    /// tokens no longer accepted at `now` (less [`CLOCK_SKEW_MARGIN`]).
    /// Returns the largest of the counts (a full batch of any means more
    /// may be left).
    async fn purge_expired(&self, before: i64, now: i64, batch: i64) -> StoreResult<u64>;
}

/// The keyed, chained audit trail.
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends `events` in order, linking each to the row before it with
    /// `key`, in one transaction serialized with every other writer (on
    /// every instance). Unless `durable`, the engine may acknowledge the
    /// commit before it is flushed to disk (PostgreSQL: `synchronous_commit
    /// = off` for this transaction): for routine events, already queued in
    /// memory.
    async fn append_audit(
        &self,
        events: &[NewAuditEvent],
        durable: bool,
        key: &crate::audit::ChainKey,
    ) -> StoreResult<()>;
    /// Moves the events a migration left in `audit_pending` into the chain
    /// and deletes them, in one transaction; returns how many.
    async fn chain_pending_audit(&self, key: &crate::audit::ChainKey) -> StoreResult<u64>;
    /// Up to `limit` rows with `seq > after`, in order.
    async fn audit_page(&self, after: i64, limit: i64) -> StoreResult<Vec<AuditRecord>>;
    /// The newest row's sequence, link and chain-key version.
    async fn audit_head(&self) -> StoreResult<Option<(i64, Vec<u8>, i64)>>;
    /// Stores a checkpoint and keeps only the newest thousand.
    async fn add_audit_checkpoint(&self, checkpoint: &AuditCheckpoint) -> StoreResult<()>;
    /// Up to `limit` checkpoints, newest first.
    async fn audit_checkpoints(&self, limit: i64) -> StoreResult<Vec<AuditCheckpoint>>;
}

/// Seconds a used upstream token is remembered past its acceptance, for
/// instances whose clocks disagree.
pub const CLOCK_SKEW_MARGIN: i64 = 300;

/// Trusted upstream issuers and the users linked to them (token exchange).
#[async_trait]
pub trait Federation: Send + Sync {
    /// Registers an issuer; `Conflict` if it is registered already.
    async fn add_issuer(&self, issuer: &NewIssuer, now: i64) -> StoreResult<TrustedIssuer>;
    /// An issuer by its exact `iss`.
    async fn issuer(&self, issuer: &str) -> StoreResult<Option<TrustedIssuer>>;
    /// Every registered issuer, by name.
    async fn issuers(&self) -> StoreResult<Vec<TrustedIssuer>>;
    /// Disables (revoking every live session opened from its tokens, each
    /// `sid` listed until `relevant_until`, in one transaction) or enables
    /// an issuer. The number of sessions revoked; `None` if there is no
    /// such issuer.
    async fn set_issuer_disabled(
        &self,
        issuer: &str,
        disabled: bool,
        now: i64,
        reason: &str,
        relevant_until: i64,
    ) -> StoreResult<Option<u64>>;
    /// The user linked to `subject` at `issuer`.
    async fn linked_user(&self, issuer: &str, subject: &str) -> StoreResult<Option<User>>;
    /// Creates `user` linked to `subject` at `issuer`, in one transaction.
    /// If another request linked the pair first, nothing is created and the
    /// user it linked is returned (`false`); `true` when `user` was created.
    async fn link_new_user(
        &self,
        issuer: &str,
        subject: &str,
        user: &NewUser,
        now: i64,
    ) -> StoreResult<(User, bool)>;
    /// Links an existing user to `subject` at `issuer`; `Conflict` if the
    /// pair is linked already.
    async fn link_user(
        &self,
        issuer: &str,
        subject: &str,
        user: uuid::Uuid,
        now: i64,
    ) -> StoreResult<UserLink>;
    /// A user's upstream identities, oldest first.
    async fn user_links(&self, user: uuid::Uuid) -> StoreResult<Vec<UserLink>>;
    /// Whether the upstream token with this digest opened a session
    /// (remembered until it expires).
    async fn upstream_token_used(&self, digest: &[u8; 32]) -> StoreResult<bool>;
    /// Removes the link of `subject` at `issuer` to `user` and revokes every
    /// live session it opened (each `sid` listed until `relevant_until`),
    /// in one transaction. The number of sessions revoked; `None` if the
    /// user has no such link.
    async fn unlink_user(
        &self,
        issuer: &str,
        subject: &str,
        user: uuid::Uuid,
        now: i64,
        relevant_until: i64,
    ) -> StoreResult<Option<u64>>;
}

/// Everything tessera persists. The application holds an `Arc<dyn Store>`.
pub trait Store: Lifecycle + Directory + Sessions + Federation + AuditLog {}
impl<T: Lifecycle + Directory + Sessions + Federation + AuditLog> Store for T {}

/// Connects to the database named by the configuration.
pub async fn connect(config: &Config) -> StoreResult<Arc<dyn Store>> {
    let url = &config.database_url;
    let max = config.database_max_connections;
    let store: Arc<dyn Store> = match config.engine() {
        Engine::Postgres => Arc::new(postgres::PgStore::connect(url, max).await?),
        Engine::Sqlite => Arc::new(sqlite::SqliteStore::connect(url, max).await?),
    };
    Ok(store)
}

/// A message for a failed connection that names the database without its password.
pub(crate) fn connect_error(url: &str, e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("cannot connect to {}: {e}", redact_url(url)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn transient_errors_are_not_corruption() {
        for code in [
            "08006", "40001", "40P01", "57P01", "53300", "5", "517", "6", "262",
        ] {
            assert!(super::is_transient(Some(code)), "{code}");
        }
        for code in ["23505", "42P01", "19", "2067", "1"] {
            assert!(!super::is_transient(Some(code)), "{code}");
        }
        assert!(!super::is_transient(None));
    }
}
