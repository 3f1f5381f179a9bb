//! The embedded SQLite store: the zero-setup default for one instance.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::Engine;
use super::{
    AuditRow, Notifications, RevocationKind, RotationRequest, Session, StoreError, StoreResult,
    connect_error,
};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// A pool of connections to one SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and its directory.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| connect_error(url, e))?
            .create_if_missing(true)
            // WAL lets readers proceed during a write; FULL sync because a
            // lost revocation or rotation after a power cut is a security bug.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Writers queue instead of failing while another transaction commits.
            .busy_timeout(Duration::from_secs(5));
        let file = options.get_filename();
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::keys::master::private_dir(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create directory {}: {e}", dir.display()))
            })?;
        }
        if file.as_os_str() != ":memory:" {
            private_file(file)?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await
            .map_err(|e| connect_error(url, e))?;
        Ok(SqliteStore { pool })
    }

    /// The underlying pool (for tests and engine-specific features).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Creates the database file readable by its owner alone (SQLite gives the
/// -wal and -shm files it creates beside it the same mode), or takes group
/// and other permissions away from an existing one, with a warning: it holds
/// password hashes, sealed keys and the audit log.
fn private_file(path: &std::path::Path) -> StoreResult<()> {
    let failed = |e: std::io::Error| {
        StoreError::Unavailable(format!(
            "cannot secure database file {}: {e}",
            path.display()
        ))
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(failed(e)),
        }
        for file in [
            path.to_path_buf(),
            sibling(path, "-wal"),
            sibling(path, "-shm"),
        ] {
            let Ok(meta) = std::fs::metadata(&file) else {
                continue;
            };
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode & 0o700))
                    .map_err(failed)?;
                tracing::warn!(
                    file = %file.display(),
                    was = format!("{:o}", mode & 0o777),
                    "the database file was readable by other users; it is now private (0600)"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (path, failed);
    Ok(())
}

/// `name-wal`, `name-shm`: SQLite appends to the whole file name.
#[cfg(unix)]
fn sibling(path: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    std::path::PathBuf::from(name)
}

impl SqliteStore {
    /// Versions of the migrations applied so far (none on a new database).
    async fn applied_migrations(&self) -> StoreResult<Vec<i64>> {
        let exists: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_optional(&self.pool)
        .await?;
        if exists.is_none() {
            return Ok(Vec::new());
        }
        Ok(
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}

impl SqliteStore {
    /// Nothing to add: `BEGIN IMMEDIATE` already holds the one write lock,
    /// so the user row a new session is checked against cannot change
    /// before commit.
    const USER_SHARE_LOCK: &'static str = "";

    /// `BEGIN IMMEDIATE`: takes the write lock up front. A deferred
    /// transaction that reads and then writes fails at once (SQLITE_BUSY,
    /// no waiting) if another connection wrote in between.
    async fn begin_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Nothing to do: the single writer already orders revocations.
    async fn lock_revocations_in(_tx: &mut Transaction<'_, Sqlite>) -> StoreResult<()> {
        Ok(())
    }

    async fn insert_revocation_in(
        tx: &mut Transaction<'_, Sqlite>,
        kind: RevocationKind,
        value: &str,
        now: i64,
        relevant_until: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO revocations (kind, value, revoked_at, relevant_until) VALUES ($1, $2, $3, $4)",
        )
        .bind(kind.as_str())
        .bind(value)
        .bind(now)
        .bind(relevant_until)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// The common rotation: SQLite has no data-modifying CTEs, but its
    /// statements are local calls, so one transaction costs no round trips.
    async fn fast_rotate(&self, r: &RotationRequest) -> StoreResult<Option<Session>> {
        let mut tx = self.begin_write().await?;
        let consumed: Option<(uuid::Uuid, i64)> = sqlx::query_as(
            "UPDATE refresh_tokens SET state = 'consumed', consumed_at = $2 \
             WHERE token_hash = $1 AND state = 'active' AND session_id IN ( \
               SELECT s.id FROM sessions s JOIN users u ON u.id = s.user_id \
               WHERE s.revoked_at IS NULL AND s.idle_expires_at > $2 \
                 AND s.absolute_expires_at > $2 AND s.client_id = $3 AND NOT u.disabled \
                   AND s.credential_version = u.credential_version) \
             RETURNING session_id, generation",
        )
        .bind(r.presented.to_vec())
        .bind(r.now)
        .bind(&r.client_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((session_id, generation)) = consumed else {
            return Ok(None);
        };
        let session = Self::store_next_in(&mut tx, r, session_id, generation + 1).await?;
        tx.commit().await?;
        Ok(Some(session))
    }

    async fn begin_audit(&self, _durable: bool) -> StoreResult<Transaction<'static, Sqlite>> {
        self.begin_write().await
    }

    /// Chained audit rows, one statement each (local calls).
    async fn insert_audit_rows_in(
        tx: &mut Transaction<'_, Sqlite>,
        rows: &[AuditRow<'_>],
    ) -> StoreResult<()> {
        for (seq, e, prev, hash) in rows {
            sqlx::query(
                "INSERT INTO audit_log (seq, at, actor, action, subject, detail, network_prefix, prev_hash, hash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(seq)
            .bind(e.at)
            .bind(&e.actor)
            .bind(&e.action)
            .bind(&e.subject)
            .bind(&e.detail)
            .bind(&e.network_prefix)
            .bind(prev)
            .bind(hash)
            .execute(&mut **tx)
            .await
            .map_err(|e| StoreError::from_sqlx(e, "audit row"))?;
        }
        Ok(())
    }

    /// SQLite cannot notify other processes; readers poll.
    async fn notifications(&self) -> StoreResult<Option<Box<dyn Notifications>>> {
        Ok(None)
    }
}

portable_lifecycle!(SqliteStore, Engine::Sqlite);
portable_directory!(SqliteStore);
portable_sessions!(SqliteStore, sqlx::Sqlite);
