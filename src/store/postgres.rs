//! The PostgreSQL store: production, many instances sharing one database.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{Lifecycle, StoreError, StoreResult, connect_error};
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

#[async_trait]
impl Lifecycle for PgStore {
    fn engine(&self) -> Engine {
        Engine::Postgres
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn migrate(&self) -> StoreResult<()> {
        // sqlx takes an advisory lock, so instances starting together are safe.
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Schema(e.to_string()))
    }

    async fn pending_migrations(&self) -> StoreResult<usize> {
        let applied: Vec<i64> =
            match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
            {
                Ok(v) => v,
                // 42P01: undefined_table, i.e. never migrated.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
                Err(e) => return Err(e.into()),
            };
        Ok(super::count_pending(&MIGRATOR, &applied))
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

portable_directory!(PgStore);
