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

            async fn use_totp_step(&self, user: uuid::Uuid, step: i64) -> $crate::store::StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE users SET totp_last_step = $2 WHERE id = $1 \
                     AND (totp_last_step IS NULL OR totp_last_step < $2)",
                )
                .bind(user)
                .bind(step)
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

/// The [`Sessions`](super::Sessions) implementation. Row locks (PostgreSQL)
/// and the single writer (SQLite) make the conditional `UPDATE … WHERE state
/// = 'active'` the point where concurrent uses of one token are decided.
macro_rules! portable_sessions {
    ($store:ty, $db:ty) => {
        impl $store {
            /// Revokes a session, its active refresh tokens, and lists its
            /// `sid` as revoked, inside the caller's transaction. True if it
            /// was live (a second revocation records nothing new).
            async fn revoke_session_in(
                tx: &mut sqlx::Transaction<'_, $db>,
                id: uuid::Uuid,
                now: i64,
                reason: &str,
                relevant_until: i64,
            ) -> $crate::store::StoreResult<bool> {
                let revoked = sqlx::query(
                    "UPDATE sessions SET revoked_at = $2, revoke_reason = $3 WHERE id = $1 AND revoked_at IS NULL",
                )
                .bind(id)
                .bind(now)
                .bind(reason)
                .execute(&mut **tx)
                .await?
                .rows_affected()
                    == 1;
                sqlx::query("UPDATE refresh_tokens SET state = 'revoked' WHERE session_id = $1 AND state = 'active'")
                    .bind(id)
                    .execute(&mut **tx)
                    .await?;
                if revoked {
                    sqlx::query(
                        "INSERT INTO revocations (kind, value, revoked_at, relevant_until) VALUES ('sid', $1, $2, $3)",
                    )
                    .bind(id.to_string())
                    .bind(now)
                    .bind(relevant_until)
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(revoked)
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::Sessions for $store {
            async fn create_session(
                &self,
                s: &$crate::store::NewSession,
                token_hash: &[u8; 32],
            ) -> $crate::store::StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO sessions (id, user_id, client_id, scope, created_at, last_used_at, \
                     idle_expires_at, absolute_expires_at, user_agent_hash, network_prefix) \
                     VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9)",
                )
                .bind(s.id)
                .bind(s.user_id)
                .bind(&s.client_id)
                .bind(&s.scope)
                .bind(s.created_at)
                .bind(s.idle_expires_at)
                .bind(s.absolute_expires_at)
                .bind(&s.user_agent_hash)
                .bind(&s.network_prefix)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO refresh_tokens (token_hash, session_id, generation, state, created_at) \
                     VALUES ($1, $2, 0, 'active', $3)",
                )
                .bind(token_hash.to_vec())
                .bind(s.id)
                .bind(s.created_at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn rotate_refresh_token(
                &self,
                presented: &[u8; 32],
                next: &[u8; 32],
                client_id: &str,
                now: i64,
                idle_ttl: i64,
                revocation_relevant_until: i64,
            ) -> $crate::store::StoreResult<$crate::store::Rotation> {
                use $crate::store::Rotation;
                let mut tx = self.pool.begin().await?;
                let consumed: Option<(uuid::Uuid, i64)> = sqlx::query_as(
                    "UPDATE refresh_tokens SET state = 'consumed', consumed_at = $2 \
                     WHERE token_hash = $1 AND state = 'active' AND session_id IN ( \
                       SELECT s.id FROM sessions s JOIN users u ON u.id = s.user_id \
                       WHERE s.revoked_at IS NULL AND s.idle_expires_at > $2 \
                         AND s.absolute_expires_at > $2 AND s.client_id = $3 AND NOT u.disabled) \
                     RETURNING session_id, generation",
                )
                .bind(presented.to_vec())
                .bind(now)
                .bind(client_id)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some((session_id, generation)) = consumed {
                    sqlx::query(
                        "INSERT INTO refresh_tokens (token_hash, session_id, generation, state, created_at) \
                         VALUES ($1, $2, $3, 'active', $4)",
                    )
                    .bind(next.to_vec())
                    .bind(session_id)
                    .bind(generation + 1)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    let session: $crate::store::Session = sqlx::query_as(
                        "UPDATE sessions SET last_used_at = $2, idle_expires_at = \
                         CASE WHEN $2 + $3 < absolute_expires_at THEN $2 + $3 ELSE absolute_expires_at END \
                         WHERE id = $1 RETURNING *",
                    )
                    .bind(session_id)
                    .bind(now)
                    .bind(idle_ttl)
                    .fetch_one(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    return Ok(Rotation::Rotated(session));
                }
                // Not rotatable: a replay of a consumed token revokes its session.
                let known: Option<(uuid::Uuid, String, String)> = sqlx::query_as(
                    "SELECT t.session_id, t.state, s.client_id FROM refresh_tokens t \
                     JOIN sessions s ON s.id = t.session_id WHERE t.token_hash = $1",
                )
                .bind(presented.to_vec())
                .fetch_optional(&mut *tx)
                .await?;
                match known {
                    Some((session_id, state, owner)) if state == "consumed" && owner == client_id => {
                        Self::revoke_session_in(&mut tx, session_id, now, "refresh token replay", revocation_relevant_until)
                            .await?;
                        tx.commit().await?;
                        Ok(Rotation::Replayed { session_id })
                    }
                    _ => Ok(Rotation::Invalid),
                }
            }

            async fn revoke_session(
                &self,
                id: uuid::Uuid,
                now: i64,
                reason: &str,
                revocation_relevant_until: i64,
            ) -> $crate::store::StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let revoked = Self::revoke_session_in(&mut tx, id, now, reason, revocation_relevant_until).await?;
                tx.commit().await?;
                Ok(revoked)
            }

            async fn purge_expired(
                &self,
                before: i64,
                now: i64,
                batch: i64,
            ) -> $crate::store::StoreResult<u64> {
                // Small batches keep each statement short; tokens go with
                // their session (ON DELETE CASCADE).
                let sessions = sqlx::query(
                    "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions \
                     WHERE idle_expires_at < $1 OR absolute_expires_at < $1 OR revoked_at < $1 LIMIT $2)",
                )
                .bind(before)
                .bind(batch)
                .execute(&self.pool)
                .await?
                .rows_affected();
                sqlx::query(
                    "DELETE FROM revocations WHERE id IN (SELECT id FROM revocations WHERE relevant_until < $1 LIMIT $2)",
                )
                .bind(now)
                .bind(batch)
                .execute(&self.pool)
                .await?;
                Ok(sessions)
            }

            async fn session(
                &self,
                id: uuid::Uuid,
            ) -> $crate::store::StoreResult<Option<$crate::store::Session>> {
                Ok(sqlx::query_as("SELECT * FROM sessions WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?)
            }
        }
    };
}
