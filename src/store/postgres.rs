//! The PostgreSQL store: production, many instances sharing one database.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

use super::Engine;
use super::{AuditRow, Notifications, RevocationKind, StoreError, StoreResult, connect_error};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// A pool of PostgreSQL connections.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

/// sqlx 0.9.0 stopped setting `TCP_NODELAY` on its sockets (sqlx issue
/// #4335; fixed upstream, not yet released). Without it, a message that
/// leaves in two segments (a TLS record boundary, an audit batch) waits for
/// PostgreSQL's delayed ACK: 40 ms stalls that capped the audit writer at
/// one batch per 40 ms and put a 40 ms tail on every endpoint that audits.
/// sqlx gives no access to its socket, so after each new connection every
/// TCP socket of the process gets `TCP_NODELAY` (which the HTTP sockets want
/// too); on any other descriptor the call fails harmlessly. Remove once sqlx
/// sets it again.
fn disable_nagle() {
    #[cfg(target_os = "linux")]
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        for entry in dir.flatten() {
            let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let on: libc::c_int = 1;
            // SAFETY: setsockopt only reads `on`; a descriptor that is not
            // a TCP socket (or was closed meanwhile) makes it return an error.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    (&on as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
    }
}

impl PgStore {
    /// Connects (failing fast if the server cannot be reached).
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<PgStore> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| connect_error(url, e))?
            .application_name("tessera")
            // The server's NOTICEs ("relation … already exists, skipping" on
            // every migration check) are not ours to log.
            .options([("client_min_messages", "warning")]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            // sqlx pings every connection it hands out by default: a second
            // round trip for every query. A connection in steady use is
            // known to be alive; only one idle for a while is checked.
            .test_before_acquire(false)
            .after_connect(|_, _| {
                Box::pin(async {
                    disable_nagle();
                    Ok(())
                })
            })
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > Duration::from_secs(1) {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            // Short enough that /readyz answers promptly when the server is gone.
            .acquire_timeout(Duration::from_secs(3))
            .idle_timeout(Duration::from_secs(600))
            .connect_with(options)
            .await
            .map_err(|e| connect_error(url, e))?;
        Ok(PgStore { pool })
    }

    /// The underlying pool (for tests and engine-specific features).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl PgStore {
    /// Versions of the migrations applied so far (none on a new database).
    async fn applied_migrations(&self) -> StoreResult<Vec<i64>> {
        match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&self.pool)
            .await
        {
            Ok(v) => Ok(v),
            // 42P01: undefined_table, i.e. never migrated.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The `store_locks` rows that serialise revocation inserts and audit
/// appends across instances. Row locks rather than advisory locks: the
/// distributed engines of docs/scaling.md lock rows for real, but lack
/// `pg_advisory_xact_lock` or (older CockroachDB) accept it as a no-op.
const REVOCATION_LOCK: &str = "revocations";
const AUDIT_LOCK: &str = "audit";

/// Locks a `store_locks` row until the transaction ends. A missing row is
/// an error, never a silent "locked".
async fn lock_row_in(tx: &mut Transaction<'_, Postgres>, name: &str) -> StoreResult<()> {
    sqlx::query("SELECT name FROM store_locks WHERE name = $1 FOR UPDATE")
        .bind(name)
        .fetch_one(&mut **tx)
        .await?;
    Ok(())
}

/// The channel revocation inserts notify.
const REVOCATION_CHANNEL: &str = "tessera_revocations";

impl PgStore {
    /// Locks the user row a new session is checked against until commit.
    const USER_SHARE_LOCK: &'static str = "FOR SHARE";

    async fn begin_write(&self) -> StoreResult<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    /// Where migrations run.
    fn writer_pool(&self) -> &PgPool {
        &self.pool
    }

    /// A pooled connection for a one-statement write. Every commit waits
    /// for the WAL flush here (`synchronous_commit` as the server has it):
    /// concurrent commits share one flush, so durability is cheap.
    async fn write_conn(
        &self,
        _durable: bool,
    ) -> StoreResult<sqlx::pool::PoolConnection<Postgres>> {
        Ok(self.pool.acquire().await?)
    }

    /// Serializes revocation inserts until commit. A BIGSERIAL value is
    /// taken at insert but becomes visible at commit, so without this a
    /// feed reader could pass id 8 (committed) while id 7 is still in
    /// flight, and never see 7.
    async fn lock_revocations_in(tx: &mut Transaction<'_, Postgres>) -> StoreResult<()> {
        lock_row_in(tx, REVOCATION_LOCK).await
    }

    /// Lists a revocation and notifies every listening instance (delivered
    /// at commit).
    async fn insert_revocation_in(
        tx: &mut Transaction<'_, Postgres>,
        kind: RevocationKind,
        value: &str,
        now: i64,
        relevant_until: i64,
    ) -> StoreResult<()> {
        Self::lock_revocations_in(tx).await?;
        sqlx::query(
            "WITH listed AS (INSERT INTO revocations (kind, value, revoked_at, relevant_until) \
             VALUES ($1, $2, $3, $4) RETURNING id) \
             SELECT pg_notify($5, id::text) FROM listed",
        )
        .bind(kind.as_str())
        .bind(value)
        .bind(now)
        .bind(relevant_until)
        .bind(REVOCATION_CHANNEL)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// An audit transaction: one writer at a time across every instance.
    /// Routine batches (`durable` false) commit without waiting for the WAL
    /// flush: they are already only as durable as the in-memory queue they
    /// come from, and their flushes would compete with the rotations'.
    async fn begin_audit(&self, durable: bool) -> StoreResult<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        if !durable {
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await?;
        }
        lock_row_in(&mut tx, AUDIT_LOCK).await?;
        Ok(tx)
    }

    /// Chained audit rows in one statement (one round trip per batch).
    async fn insert_audit_rows_in(
        tx: &mut Transaction<'_, Postgres>,
        rows: &[AuditRow<'_>],
    ) -> StoreResult<()> {
        let seq: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let at: Vec<i64> = rows.iter().map(|r| r.1.at).collect();
        let actor: Vec<&str> = rows.iter().map(|r| r.1.actor.as_str()).collect();
        let action: Vec<&str> = rows.iter().map(|r| r.1.action.as_str()).collect();
        let subject: Vec<Option<&str>> = rows.iter().map(|r| r.1.subject.as_deref()).collect();
        let detail: Vec<&str> = rows.iter().map(|r| r.1.detail.as_str()).collect();
        let network: Vec<Option<&str>> =
            rows.iter().map(|r| r.1.network_prefix.as_deref()).collect();
        let prev: Vec<&[u8]> = rows.iter().map(|r| r.2.as_slice()).collect();
        let hash: Vec<&[u8]> = rows.iter().map(|r| r.3.as_slice()).collect();
        let version: Vec<i64> = rows.iter().map(|r| r.4).collect();
        sqlx::query(
            "INSERT INTO audit_log (seq, at, actor, action, subject, detail, network_prefix, prev_hash, hash, key_version) \
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], \
                                  $6::text[], $7::text[], $8::bytea[], $9::bytea[], $10::bigint[])",
        )
        .bind(seq)
        .bind(at)
        .bind(actor)
        .bind(action)
        .bind(subject)
        .bind(detail)
        .bind(network)
        .bind(prev)
        .bind(hash)
        .bind(version)
        .execute(&mut **tx)
        .await
        .map_err(|e| StoreError::from_sqlx(e, "audit row"))?;
        Ok(())
    }

    async fn notifications(&self) -> StoreResult<Option<Box<dyn Notifications>>> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(REVOCATION_CHANNEL).await?;
        Ok(Some(Box::new(PgNotifications(listener))))
    }
}

struct PgNotifications(PgListener);

#[async_trait::async_trait]
impl Notifications for PgNotifications {
    async fn next(&mut self) -> StoreResult<()> {
        // `recv` reconnects by itself; notifications sent meanwhile are
        // lost, which is why callers also poll.
        self.0.recv().await?;
        Ok(())
    }
}

portable_lifecycle!(PgStore, Engine::Postgres);
portable_directory!(PgStore);
portable_federation!(PgStore);
portable_sessions!(PgStore, sqlx::Postgres);
