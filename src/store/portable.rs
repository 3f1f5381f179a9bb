//! The [`Directory`](super::Directory) implementation, written once.
//!
//! Both engines accept this SQL verbatim (`$n` placeholders, `RETURNING`,
//! `ON CONFLICT`), and every row type decodes from both, so the code is
//! expanded for each engine's pool type rather than copied. A generic
//! implementation over `sqlx::Database` would need a wall of higher-ranked
//! trait bounds for the same effect.

/// The [`Lifecycle`](super::Lifecycle) implementation: each engine module
/// provides a `MIGRATOR` static and an inherent `applied_migrations()`.
macro_rules! portable_lifecycle {
    ($store:ty, $engine:expr) => {
        #[async_trait::async_trait]
        impl $crate::store::Lifecycle for $store {
            fn engine(&self) -> $crate::config::Engine {
                $engine
            }

            async fn ping(&self) -> $crate::store::StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn migrate(&self) -> $crate::store::StoreResult<()> {
                // On PostgreSQL sqlx takes an advisory lock, so instances
                // starting together are safe; SQLite serializes writers.
                MIGRATOR
                    .run(&self.pool)
                    .await
                    .map_err(|e| $crate::store::StoreError::Schema(e.to_string()))
            }

            async fn pending_migrations(&self) -> $crate::store::StoreResult<usize> {
                let applied = self.applied_migrations().await?;
                Ok(MIGRATOR
                    .iter()
                    .filter(|m| {
                        !m.migration_type.is_down_migration() && !applied.contains(&m.version)
                    })
                    .count())
            }

            async fn close(&self) {
                self.pool.close().await;
            }
        }
    };
}

macro_rules! portable_directory {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::Directory for $store {
            async fn setting(&self, name: &str) -> $crate::store::StoreResult<Option<Vec<u8>>> {
                Ok(sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn init_setting(
                &self,
                name: &str,
                value: &[u8],
            ) -> $crate::store::StoreResult<Vec<u8>> {
                sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                    .bind(name)
                    .bind(value)
                    .execute(&self.pool)
                    .await?;
                Ok(sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
                    .bind(name)
                    .fetch_one(&self.pool)
                    .await?)
            }

            async fn raise_setting(&self, name: &str, value: u64) -> $crate::store::StoreResult<u64> {
                // Fixed-width big-endian bytes compare like the numbers in
                // both engines (bytea and BLOB compare bytewise).
                let stored: Vec<u8> = sqlx::query_scalar(
                    "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE \
                     SET value = CASE WHEN excluded.value > settings.value THEN excluded.value ELSE settings.value END \
                     RETURNING value",
                )
                .bind(name)
                .bind(value.to_be_bytes().to_vec())
                .fetch_one(&self.pool)
                .await?;
                let bytes: [u8; 8] = stored.as_slice().try_into().map_err(|_| {
                    $crate::store::StoreError::Corrupt(format!("setting {name} is not a number"))
                })?;
                Ok(u64::from_be_bytes(bytes))
            }

            async fn create_user(
                &self,
                user: &$crate::store::NewUser,
                now: i64,
            ) -> $crate::store::StoreResult<$crate::store::User> {
                sqlx::query_as(
                    "INSERT INTO users (id, username, password_hash, totp_secret, disabled, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, FALSE, $5, $5) RETURNING *",
                )
                .bind(user.id)
                .bind(&user.username)
                .bind(&user.password_hash)
                .bind(&user.totp_secret)
                .bind(now)
                .fetch_one(&self.pool)
                .await
                .map_err(|e| $crate::store::StoreError::from_sqlx(e, "user"))
            }

            async fn user_by_username(
                &self,
                username: &str,
            ) -> $crate::store::StoreResult<Option<$crate::store::User>> {
                Ok(sqlx::query_as("SELECT * FROM users WHERE username = $1")
                    .bind(username)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn user_by_id(
                &self,
                id: uuid::Uuid,
            ) -> $crate::store::StoreResult<Option<$crate::store::User>> {
                Ok(sqlx::query_as("SELECT * FROM users WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn set_user_disabled(
                &self,
                username: &str,
                disabled: bool,
                now: i64,
            ) -> $crate::store::StoreResult<bool> {
                let done = sqlx::query("UPDATE users SET disabled = $1, updated_at = $2 WHERE username = $3")
                    .bind(disabled)
                    .bind(now)
                    .bind(username)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn create_client(
                &self,
                client: &$crate::store::NewClient,
                now: i64,
            ) -> $crate::store::StoreResult<$crate::store::Client> {
                let row: $crate::store::models::ClientRow = sqlx::query_as(
                    "INSERT INTO clients (id, confidential, secret_digest, grant_types, scopes, audiences, \
                     origins, cookie, admin, on_binding_change, disabled, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, FALSE, $11) RETURNING *",
                )
                .bind(&client.id)
                .bind(client.secret_digest.is_some())
                .bind(&client.secret_digest)
                .bind(client.grant_types.join(" "))
                .bind(client.scopes.join(" "))
                .bind(client.audiences.join(" "))
                .bind(client.origins.join(" "))
                .bind(client.cookie)
                .bind(client.admin)
                .bind(&client.on_binding_change)
                .bind(now)
                .fetch_one(&self.pool)
                .await
                .map_err(|e| $crate::store::StoreError::from_sqlx(e, "client"))?;
                Ok(row.into())
            }

            async fn client_by_id(
                &self,
                id: &str,
            ) -> $crate::store::StoreResult<Option<$crate::store::Client>> {
                let row: Option<$crate::store::models::ClientRow> =
                    sqlx::query_as("SELECT * FROM clients WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(Into::into))
            }

            async fn put_audience(
                &self,
                audience: &$crate::store::Audience,
            ) -> $crate::store::StoreResult<()> {
                sqlx::query(
                    "INSERT INTO audiences (name, encrypt_jwk, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO UPDATE SET encrypt_jwk = excluded.encrypt_jwk",
                )
                .bind(&audience.name)
                .bind(&audience.encrypt_jwk)
                .bind(audience.created_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn audience(
                &self,
                name: &str,
            ) -> $crate::store::StoreResult<Option<$crate::store::Audience>> {
                Ok(sqlx::query_as("SELECT * FROM audiences WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn audiences(&self) -> $crate::store::StoreResult<Vec<$crate::store::Audience>> {
                Ok(sqlx::query_as("SELECT * FROM audiences ORDER BY name")
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn add_signing_key(
                &self,
                key: &$crate::store::NewSigningKey,
                predecessor: Option<i64>,
                previous_retire_at: i64,
            ) -> $crate::store::StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO signing_keys \
                     (kid, algorithm, public_jwk, private_key, created_at, activate_at, generation) \
                     VALUES ($1, 'ES256', $2, $3, $4, $5, $6)",
                )
                .bind(&key.kid)
                .bind(&key.public_jwk)
                .bind(&key.private_key)
                .bind(key.created_at)
                .bind(key.activate_at)
                .bind(predecessor.map_or(0, |g| g + 1))
                .execute(&mut *tx)
                .await
                .map_err(|e| $crate::store::StoreError::from_sqlx(e, "signing key or rotation"))?;
                sqlx::query(
                    "UPDATE signing_keys SET deactivated_at = $1, retire_at = $2 \
                     WHERE kid <> $3 AND deactivated_at IS NULL",
                )
                .bind(key.activate_at)
                .bind(previous_retire_at)
                .bind(&key.kid)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn signing_keys(
                &self,
                now: i64,
            ) -> $crate::store::StoreResult<Vec<$crate::store::SigningKey>> {
                Ok(sqlx::query_as(
                    "SELECT kid, public_jwk, private_key, created_at, activate_at, deactivated_at, retire_at, generation \
                     FROM signing_keys WHERE retire_at IS NULL OR retire_at > $1 \
                     ORDER BY generation DESC",
                )
                .bind(now)
                .fetch_all(&self.pool)
                .await?)
            }
        }
    };
}
