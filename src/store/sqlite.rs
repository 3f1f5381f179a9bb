//! The embedded SQLite store: the zero-setup default for one instance.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::Engine;
use super::{AuditRow, Notifications, RevocationKind, StoreError, StoreResult, connect_error};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// Connections to one SQLite file: readers, and one writer.
///
/// SQLite allows one writer at a time. With several writing connections,
/// the losers sleep in SQLite's busy handler (1 to 100 ms at a time) until
/// the lock is free: the 200–300 ms tails of issue #18. With a single
/// writer connection, writers queue in the pool instead, in order, and
/// never sleep; readers have connections of their own and never wait for
/// writers (WAL).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    writer: SqlitePool,
    /// Whether the writer connection is at `synchronous = FULL` (exact: there
    /// is one writer connection, and a new one starts at NORMAL).
    writer_full: Arc<AtomicBool>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and its directory:
    /// one writer connection and up to `max_connections` readers.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| connect_error(url, e))?
            .create_if_missing(true)
            // WAL: readers proceed during a write, and a commit appends to
            // the log instead of rewriting pages. NORMAL: a commit does not
            // wait for fsync; a process crash loses nothing, a power cut or
            // kernel crash may lose the last commits (rotations, counters,
            // routine audit rows). Security-relevant writes (revocations,
            // credentials, disabling) switch the writer to FULL first, and
            // their fsync covers every commit before them too.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            // Only other processes (the CLI) can hold the write lock while
            // ours waits: those waits are rare and short.
            .busy_timeout(Duration::from_secs(5));
        let file = options.get_filename();
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::keys::master::private_dir(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create directory {}: {e}", dir.display()))
            })?;
        }
        let in_memory = file.as_os_str() == ":memory:" || url.contains("mode=memory");
        if !in_memory {
            private_file(file)?;
        }
        let writer_full = Arc::new(AtomicBool::new(false));
        let reset = writer_full.clone();
        // Checkpoints copy WAL pages into the database file and fsync it:
        // milliseconds during which, on the writer, every write waits (a
        // p99 of 15 ms at 8 sessions on disk, 5 ms on tmpfs). So a
        // background task checkpoints from a reader connection
        // (`spawn_checkpoints`), and the writer's own autocheckpoint is
        // only the backstop that rewinds the WAL under unbroken load: a
        // checkpoint that runs beside the writer never finds every frame
        // copied. A rewind also needs no statement still reading, which is
        // why writes returning a row read their statement to the end
        // (portable.rs): one left open grew the WAL to 4 GB.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            // Writers queue here; the queue moves one local commit at a time.
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |_, _| {
                let reset = reset.clone();
                Box::pin(async move {
                    reset.store(false, Ordering::Relaxed);
                    Ok(())
                })
            })
            .connect_with(
                options
                    .clone()
                    .pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES),
            )
            .await
            .map_err(|e| connect_error(url, e))?;
        // An in-memory database exists once per connection: one pool.
        let pool = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(3))
                .connect_with(options)
                .await
                .map_err(|e| connect_error(url, e))?
        };
        if !in_memory {
            spawn_checkpoints(pool.clone());
        }
        Ok(SqliteStore {
            pool,
            writer,
            writer_full,
        })
    }

    /// Where migrations run: they write.
    fn writer_pool(&self) -> &SqlitePool {
        &self.writer
    }

    /// The writer connection at the durability asked for: `durable` commits
    /// wait for fsync (`synchronous = FULL`), others do not (NORMAL). The
    /// pragma cannot change inside a transaction, so it is set here, and
    /// only when it differs from what the connection has.
    async fn write_conn(&self, durable: bool) -> StoreResult<PoolConnection<Sqlite>> {
        let mut conn = self.writer.acquire().await?;
        if self.writer_full.load(Ordering::Relaxed) != durable {
            let pragma = if durable {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            };
            sqlx::query(pragma).execute(&mut *conn).await?;
            self.writer_full.store(durable, Ordering::Relaxed);
        }
        Ok(conn)
    }

    /// The underlying reader pool (for tests and engine-specific features).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}
/// WAL pages after which the writer checkpoints itself (SQLite's default
/// is 1,000): 32 MB at 4 KiB pages, reached only when the background
/// checkpoints cannot rewind the WAL because writes never pause.
const WRITER_AUTOCHECKPOINT_PAGES: &str = "8000";

/// How often the background task checkpoints.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Checkpoints the WAL from a reader connection while the pool is open.
/// PASSIVE: it copies what no reader still needs and never waits for the
/// writer, so the fsync it ends with holds up no commit.
fn spawn_checkpoints(pool: SqlitePool) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if pool.is_closed() {
                return;
            }
            // fetch_all: the pragma returns a row; reading to the end
            // leaves no statement open on the connection.
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_all(&pool)
                .await
            {
                if pool.is_closed() {
                    return;
                }
                tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
            }
        }
    });
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

    /// A durable write transaction on the writer connection. `BEGIN
    /// IMMEDIATE` takes the file's write lock up front (another process may
    /// hold it), so nothing read inside can change before commit.
    async fn begin_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        self.begin_on_writer(true).await
    }

    async fn begin_on_writer(&self, durable: bool) -> StoreResult<Transaction<'static, Sqlite>> {
        let conn = self.write_conn(durable).await?;
        Ok(Transaction::begin(
            conn,
            Some(sqlx::SqlSafeStr::into_sql_str("BEGIN IMMEDIATE")),
        )
        .await?)
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

    /// Routine audit batches commit without waiting for fsync, like
    /// PostgreSQL's (see there); durable events wait.
    async fn begin_audit(&self, durable: bool) -> StoreResult<Transaction<'static, Sqlite>> {
        self.begin_on_writer(durable).await
    }

    /// Chained audit rows, a few hundred per statement: each statement is
    /// a round trip to the connection's worker thread (two context
    /// switches), which costs more than the insert itself.
    async fn insert_audit_rows_in(
        tx: &mut Transaction<'_, Sqlite>,
        rows: &[AuditRow<'_>],
    ) -> StoreResult<()> {
        /// Ten parameters a row, well under SQLite's 32,766.
        const ROWS_PER_STATEMENT: usize = 256;
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut sql = String::from(
                "INSERT INTO audit_log (seq, at, actor, action, subject, detail, network_prefix, prev_hash, hash, key_version) VALUES ",
            );
            for i in 0..chunk.len() {
                sql.push_str(if i == 0 { "" } else { ", " });
                sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
            }
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (seq, e, prev, hash, version) in chunk {
                query = query
                    .bind(*seq)
                    .bind(e.at)
                    .bind(&e.actor)
                    .bind(&e.action)
                    .bind(&e.subject)
                    .bind(&e.detail)
                    .bind(&e.network_prefix)
                    .bind(prev.as_slice())
                    .bind(hash.as_slice())
                    .bind(*version);
            }
            query
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
portable_federation!(SqliteStore);
portable_sessions!(SqliteStore, sqlx::Sqlite);

#[cfg(test)]
mod tests {
    use super::*;

    async fn synchronous(conn: &mut PoolConnection<Sqlite>) -> i64 {
        sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut **conn)
            .await
            .unwrap()
    }

    /// Durable writes commit at FULL, routine ones at NORMAL, on the one
    /// writer connection; the mode follows each request, in any order.
    #[tokio::test]
    async fn the_writer_commits_at_the_durability_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let store = SqliteStore::connect(&url, 2).await.unwrap();
        for durable in [false, true, true, false, true] {
            let mut conn = store.write_conn(durable).await.unwrap();
            assert_eq!(synchronous(&mut conn).await, if durable { 2 } else { 1 });
        }
        // A durable transaction runs at FULL on the writer; readers are
        // other connections.
        let mut tx = store.begin_write().await.unwrap();
        let mode: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(mode, 2);
        tx.rollback().await.unwrap();
        assert_eq!(store.writer.size(), 1, "one writer connection");
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(journal, "wal");
        let mut conn = store.write_conn(false).await.unwrap();
        let pages: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(pages.to_string(), WRITER_AUTOCHECKPOINT_PAGES);
    }

    /// Pages written through the writer reach the database file without
    /// the writer checkpointing (far below its autocheckpoint): the
    /// background task copies them.
    #[tokio::test]
    async fn the_wal_is_checkpointed_off_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.db");
        let url = format!("sqlite://{}", file.display());
        let store = SqliteStore::connect(&url, 2).await.unwrap();
        let mut conn = store.write_conn(false).await.unwrap();
        sqlx::query("CREATE TABLE filler (b BLOB)")
            .execute(&mut *conn)
            .await
            .unwrap();
        tokio::time::sleep(CHECKPOINT_EVERY * 3).await;
        let before = std::fs::metadata(&file).unwrap().len();
        for _ in 0..200 {
            sqlx::query("INSERT INTO filler VALUES (zeroblob(2000))")
                .execute(&mut *conn)
                .await
                .unwrap();
        }
        drop(conn);
        let mut grown = 0;
        for _ in 0..50 {
            tokio::time::sleep(CHECKPOINT_EVERY).await;
            grown = std::fs::metadata(&file).unwrap().len() - before;
            if grown >= 200 * 2000 {
                break;
            }
        }
        assert!(
            grown >= 200 * 2000,
            "the database file grew by {grown} bytes: the WAL was not checkpointed"
        );
    }
}
