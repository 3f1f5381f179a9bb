//! The PostgreSQL store: production, many instances sharing one database.

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{StoreResult, connect_error};
use crate::config::Engine;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// A pool of PostgreSQL connections.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects (failing fast if the server cannot be reached).
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<PgStore> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| connect_error(url, e))?
            .application_name("tessera");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
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

portable_lifecycle!(PgStore, Engine::Postgres);
portable_directory!(PgStore);
portable_sessions!(PgStore, sqlx::Postgres);
