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
            fn engine(&self) -> $crate::store::Engine {
                $engine
            }

            fn pool_state(&self) -> $crate::store::PoolState {
                let size = self.pool.size();
                let idle = self.pool.num_idle() as u32;
                $crate::store::PoolState {
                    idle,
                    in_use: size.saturating_sub(idle),
                    max: self.pool.options().get_max_connections(),
                }
            }

            async fn ping(&self) -> $crate::store::StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn migrate(&self) -> $crate::store::StoreResult<()> {
                // On PostgreSQL sqlx takes an advisory lock, so instances
                // starting together are safe; SQLite serializes writers.
                MIGRATOR
                    .run(self.writer_pool())
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

            async fn revocation_notifications(
                &self,
            ) -> $crate::store::StoreResult<Option<Box<dyn $crate::store::Notifications>>> {
                self.notifications().await
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
                    .execute(&mut *self.write_conn(true).await?)
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
                .fetch_all(&mut *self.write_conn(true).await?)
                .await
                .map_err($crate::store::StoreError::from)
                .and_then($crate::store::returned_row)?;
                let bytes: [u8; 8] = stored.as_slice().try_into().map_err(|_| {
                    $crate::store::StoreError::Corrupt(format!("setting {name} is not a number"))
                })?;
                Ok(u64::from_be_bytes(bytes))
            }

            async fn sealed_values(
                &self,
                column: $crate::store::SealedColumn,
                after: Option<&str>,
                limit: i64,
            ) -> $crate::store::StoreResult<Vec<$crate::store::SealedValue>> {
                use $crate::store::{SealedColumn, SealedValue};
                let rows: Vec<(String, Vec<u8>)> = match column {
                    SealedColumn::SigningKey => sqlx::query_as(
                        "SELECT kid, private_key FROM signing_keys WHERE kid > $1 ORDER BY kid LIMIT $2",
                    )
                    .bind(after.unwrap_or_default())
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?,
                    SealedColumn::Setting => sqlx::query_as(
                        "SELECT name, value FROM settings WHERE name > $1 ORDER BY name LIMIT $2",
                    )
                    .bind(after.unwrap_or_default())
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?,
                    SealedColumn::TotpSecret => {
                        let after = match after {
                            Some(id) => id.parse::<uuid::Uuid>().map_err(|_| {
                                $crate::store::StoreError::Corrupt(format!("not a user id: {id}"))
                            })?,
                            None => uuid::Uuid::nil(),
                        };
                        let rows: Vec<(uuid::Uuid, Vec<u8>)> = sqlx::query_as(
                            "SELECT id, totp_secret FROM users WHERE totp_secret IS NOT NULL AND id > $1 \
                             ORDER BY id LIMIT $2",
                        )
                        .bind(after)
                        .bind(limit)
                        .fetch_all(&self.pool)
                        .await?;
                        rows.into_iter().map(|(id, v)| (id.to_string(), v)).collect()
                    }
                };
                Ok(rows.into_iter().map(|(id, value)| SealedValue { id, value }).collect())
            }

            async fn replace_sealed(
                &self,
                column: $crate::store::SealedColumn,
                id: &str,
                old: &[u8],
                new: &[u8],
            ) -> $crate::store::StoreResult<bool> {
                use $crate::store::SealedColumn;
                let mut conn = self.write_conn(true).await?;
                let done = match column {
                    SealedColumn::SigningKey => sqlx::query(
                        "UPDATE signing_keys SET private_key = $3 WHERE kid = $1 AND private_key = $2",
                    )
                    .bind(id)
                    .bind(old)
                    .bind(new)
                    .execute(&mut *conn)
                    .await?,
                    SealedColumn::Setting => sqlx::query(
                        "UPDATE settings SET value = $3 WHERE name = $1 AND value = $2",
                    )
                    .bind(id)
                    .bind(old)
                    .bind(new)
                    .execute(&mut *conn)
                    .await?,
                    SealedColumn::TotpSecret => {
                        let Ok(user) = id.parse::<uuid::Uuid>() else {
                            return Ok(false);
                        };
                        sqlx::query("UPDATE users SET totp_secret = $3 WHERE id = $1 AND totp_secret = $2")
                            .bind(user)
                            .bind(old)
                            .bind(new)
                            .execute(&mut *conn)
                            .await?
                    }
                };
                Ok(done.rows_affected() == 1)
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
                .fetch_all(&mut *self.write_conn(true).await?)
                .await
                .map_err(|e| $crate::store::StoreError::from_sqlx(e, "user"))
                .and_then($crate::store::returned_row)
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
                    .execute(&mut *self.write_conn(true).await?)
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
                .execute(&mut *self.write_conn(true).await?)
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
                     origins, cookie, admin, on_binding_change, disabled, created_at, resource_server, redirect_uris, require_dpop, \
                     exchange_audiences) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, FALSE, $11, $12, $13, $14, $15) RETURNING *",
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
                .bind(client.on_binding_change.as_str())
                .bind(now)
                .bind(client.resource_server)
                .bind(client.redirect_uris.join(" "))
                .bind(client.require_dpop)
                .bind(client.exchange_audiences.join(" "))
                .fetch_all(&mut *self.write_conn(true).await?)
                .await
                .map_err(|e| $crate::store::StoreError::from_sqlx(e, "client"))
                .and_then($crate::store::returned_row)?;
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

            async fn client_origins(&self) -> $crate::store::StoreResult<Vec<String>> {
                let lists: Vec<String> =
                    sqlx::query_scalar("SELECT origins FROM clients WHERE NOT disabled AND origins <> ''")
                        .fetch_all(&self.pool)
                        .await?;
                let mut origins: Vec<String> = lists
                    .iter()
                    .flat_map(|l| l.split(' '))
                    .filter(|o| !o.is_empty())
                    .map(str::to_owned)
                    .collect();
                origins.sort();
                origins.dedup();
                Ok(origins)
            }

            async fn set_client_disabled(
                &self,
                id: &str,
                disabled: bool,
            ) -> $crate::store::StoreResult<bool> {
                let done = sqlx::query("UPDATE clients SET disabled = $2 WHERE id = $1")
                    .bind(id)
                    .bind(disabled)
                    .execute(&mut *self.write_conn(true).await?)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn set_client_resource_server(
                &self,
                id: &str,
                resource_server: bool,
            ) -> $crate::store::StoreResult<bool> {
                let done = sqlx::query("UPDATE clients SET resource_server = $2 WHERE id = $1")
                    .bind(id)
                    .bind(resource_server)
                    .execute(&mut *self.write_conn(true).await?)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn count_attempt(
                &self,
                key: &str,
                now: i64,
                window: i64,
                limit: i64,
                lockout: $crate::store::Lockout,
            ) -> $crate::store::StoreResult<Option<$crate::store::LoginFailures>> {
                // One conditional upsert: concurrent callers serialize on the
                // row and each re-checks the rule against the latest count, so
                // no more attempts are counted than it allows. A refused
                // attempt changes nothing (the WHERE fails, nothing returns).
                // Lockout: 2^(count − limit + 1) seconds after the last count,
                // at most $5 ($6 = 1: no lockout, only the window's end; the
                // count may then reach limit + 1 once).
                let (max_lockout, cap_only) = match lockout {
                    $crate::store::Lockout::UntilWindowEnds => (0, 1),
                    $crate::store::Lockout::Doubling { max } => (max, 0),
                };
                Ok(sqlx::query_as(
                    "INSERT INTO login_failures (key, failures, window_start, last_at) VALUES ($1, 1, $2, $2) \
                     ON CONFLICT (key) DO UPDATE SET \
                       failures = CASE WHEN login_failures.window_start + $3 <= $2 THEN 1 ELSE login_failures.failures + 1 END, \
                       window_start = CASE WHEN login_failures.window_start + $3 <= $2 THEN $2 ELSE login_failures.window_start END, \
                       last_at = $2 \
                     WHERE login_failures.window_start + $3 <= $2 \
                        OR login_failures.failures < $4 \
                        OR ($6 = 1 AND login_failures.failures = $4) \
                        OR ($6 = 0 AND $2 >= login_failures.last_at + CASE \
                              WHEN login_failures.failures - $4 + 1 >= 30 THEN $5 \
                              WHEN (CAST(1 AS BIGINT) << CAST(login_failures.failures - $4 + 1 AS INTEGER)) < $5 \
                                THEN (CAST(1 AS BIGINT) << CAST(login_failures.failures - $4 + 1 AS INTEGER)) \
                              ELSE $5 END) \
                     RETURNING failures, window_start, last_at",
                )
                .bind(key)
                .bind(now)
                .bind(window)
                .bind(limit)
                .bind(max_lockout)
                .bind(cap_only)
                // fetch_all, not fetch_optional: see `returned_row`.
                .fetch_all(&mut *self.write_conn(false).await?)
                .await?
                .pop())
            }

            async fn uncount_attempt(
                &self,
                key: &str,
                window_start: i64,
            ) -> $crate::store::StoreResult<()> {
                sqlx::query(
                    "UPDATE login_failures SET failures = failures - 1 \
                     WHERE key = $1 AND window_start = $2 AND failures > 0",
                )
                .bind(key)
                .bind(window_start)
                .execute(&mut *self.write_conn(false).await?)
                .await?;
                Ok(())
            }

            async fn login_failures(
                &self,
                key: &str,
            ) -> $crate::store::StoreResult<Option<$crate::store::LoginFailures>> {
                Ok(sqlx::query_as(
                    "SELECT failures, window_start, last_at FROM login_failures WHERE key = $1",
                )
                .bind(key)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn clear_login_failures(&self, key: &str) -> $crate::store::StoreResult<()> {
                sqlx::query("DELETE FROM login_failures WHERE key = $1")
                    .bind(key)
                    .execute(&mut *self.write_conn(false).await?)
                    .await?;
                Ok(())
            }

            async fn purge_login_failures(
                &self,
                now: i64,
                window: i64,
                max_lockout: i64,
                batch: i64,
            ) -> $crate::store::StoreResult<u64> {
                Ok(sqlx::query(
                    "DELETE FROM login_failures WHERE key IN (SELECT key FROM login_failures \
                     WHERE window_start + $2 <= $1 AND last_at + $3 < $1 LIMIT $4)",
                )
                .bind(now)
                .bind(window)
                .bind(max_lockout)
                .bind(batch)
                .execute(&mut *self.write_conn(false).await?)
                .await?
                .rows_affected())
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
                .execute(&mut *self.write_conn(true).await?)
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

            async fn retire_signing_key_now(
                &self,
                kid: &str,
                successor: Option<&$crate::store::NewSigningKey>,
                now: i64,
                relevant_until: i64,
            ) -> $crate::store::StoreResult<bool> {
                let mut tx = self.begin_write().await?;
                // retire_at is the key's own publication time, not `now`:
                // an instance refreshing with a `now` read a moment before
                // this commit must not see the key as still published.
                let retired = sqlx::query(
                    "UPDATE signing_keys SET retire_at = created_at, \
                     deactivated_at = CASE WHEN deactivated_at IS NULL OR deactivated_at > $2 \
                     THEN $2 ELSE deactivated_at END \
                     WHERE kid = $1 AND (retire_at IS NULL OR retire_at > $2)",
                )
                .bind(kid)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if !retired {
                    return Ok(false);
                }
                if let Some(key) = successor {
                    sqlx::query(
                        "INSERT INTO signing_keys \
                         (kid, algorithm, public_jwk, private_key, created_at, activate_at, generation) \
                         SELECT $1, 'ES256', $2, $3, $4, $5, COALESCE(MAX(generation), -1) + 1 FROM signing_keys",
                    )
                    .bind(&key.kid)
                    .bind(&key.public_jwk)
                    .bind(&key.private_key)
                    .bind(key.created_at)
                    .bind(key.activate_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| $crate::store::StoreError::from_sqlx(e, "signing key"))?;
                }
                Self::insert_revocation_in(
                    &mut tx,
                    $crate::store::RevocationKind::Kid,
                    kid,
                    now,
                    relevant_until,
                )
                .await?;
                tx.commit().await?;
                Ok(true)
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

/// The [`Sessions`](super::Sessions) and [`AuditLog`](super::AuditLog)
/// implementations. Row locks (PostgreSQL) and the single writer (SQLite)
/// make conditional `UPDATE … WHERE refresh_generation = $n` the point
/// where concurrent uses of one token are decided.
///
/// Each engine module provides, as inherent functions: `write_conn` (a
/// connection for one write, durable or routine), `begin_write`,
/// `insert_revocation_in` (which keeps the feed's cursor order equal to its
/// commit order), `begin_audit` (one audit writer at a time),
/// `insert_audit_rows_in` and `notifications`.
macro_rules! portable_sessions {
    ($store:ty, $db:ty) => {
        impl $store {
            /// Revokes each live session of `ids` (as `revoke_session_in`,
            /// sid listed); how many were live.
            async fn revoke_sessions_in(
                tx: &mut sqlx::Transaction<'_, $db>,
                ids: Vec<uuid::Uuid>,
                now: i64,
                reason: &str,
                relevant_until: i64,
            ) -> $crate::store::StoreResult<u64> {
                let mut revoked = 0;
                for id in ids {
                    if Self::revoke_session_in(tx, id, now, reason, relevant_until, true).await? {
                        revoked += 1;
                    }
                }
                Ok(revoked)
            }

            /// Revokes a session (and with it every refresh token) inside
            /// the caller's transaction; with `list_sid`, lists its `sid` as
            /// revoked. True if it was not revoked before.
            async fn revoke_session_in(
                tx: &mut sqlx::Transaction<'_, $db>,
                id: uuid::Uuid,
                now: i64,
                reason: &str,
                relevant_until: i64,
                list_sid: bool,
            ) -> $crate::store::StoreResult<bool> {
                // Revocation lock before the session row: one lock order
                // everywhere (a rotation takes only the session row, and a
                // legacy token's row before it), so a revocation racing a
                // refresh waits instead of deadlocking. No token row needs
                // changing: every rotation checks the session.
                Self::lock_revocations_in(tx).await?;
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
                if revoked && list_sid {
                    Self::insert_revocation_in(
                        tx,
                        $crate::store::RevocationKind::Sid,
                        &id.to_string(),
                        now,
                        relevant_until,
                    )
                    .await?;
                }
                Ok(revoked)
            }

            /// Ids of the live sessions matching `filter` (a column = $1).
            async fn live_session_ids_in(
                tx: &mut sqlx::Transaction<'_, $db>,
                column: &'static str,
                value: &str,
            ) -> $crate::store::StoreResult<Vec<uuid::Uuid>> {
                let sql = format!("SELECT id FROM sessions WHERE {column} = $1 AND revoked_at IS NULL");
                let ids: Vec<uuid::Uuid> = if column == "user_id" {
                    let user = uuid::Uuid::parse_str(value)
                        .map_err(|e| $crate::store::StoreError::Corrupt(e.to_string()))?;
                    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                        .bind(user)
                        .fetch_all(&mut **tx)
                        .await?
                } else {
                    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                        .bind(value)
                        .fetch_all(&mut **tx)
                        .await?
                };
                Ok(ids)
            }

            /// The common rotation, one statement on both engines: the
            /// session moves on one generation if the token is its current
            /// one and everything else qualifies. No indexed column
            /// changes (a HOT update on PostgreSQL). Concurrent statements
            /// for one session serialize on its row; the loser re-checks
            /// the generation and matches nothing.
            async fn fast_rotate(
                &self,
                r: &$crate::store::RotationRequest,
                sid: uuid::Uuid,
                generation: i64,
                secret_digest: &[u8; 32],
            ) -> $crate::store::StoreResult<Option<$crate::store::Session>> {
                Ok(sqlx::query_as::<_, $crate::store::Session>(
                    "UPDATE sessions SET refresh_generation = refresh_generation + 1, \
                     refresh_rotated_at = $2, refresh_reused = NULL, last_used_at = $2, idle_expires_at = \
                     CASE WHEN $2 + $5 < absolute_expires_at THEN $2 + $5 ELSE absolute_expires_at END \
                     WHERE id = $1 AND refresh_generation = $3 AND refresh_secret = $4 AND client_id = $6 \
                     AND revoked_at IS NULL AND idle_expires_at > $2 AND absolute_expires_at > $2 \
                     AND EXISTS (SELECT 1 FROM users u WHERE u.id = sessions.user_id AND NOT u.disabled \
                       AND u.credential_version = sessions.credential_version) \
                     RETURNING *",
                )
                .bind(sid)
                .bind(r.now)
                .bind(generation)
                .bind(secret_digest.to_vec())
                .bind(r.idle_ttl)
                .bind(&r.client_id)
                // fetch_all, not fetch_optional: see `returned_row`.
                .fetch_all(&mut *self.write_conn(false).await?)
                .await?
                .pop())
            }

            /// The rest of a rotation when the fast path did not apply: the
            /// grace window, replay detection, or nothing.
            async fn rotate_slow(
                &self,
                r: &$crate::store::RotationRequest,
                sid: uuid::Uuid,
                presented: i64,
                secret_digest: &[u8; 32],
            ) -> $crate::store::StoreResult<$crate::store::Rotation> {
                use $crate::store::Rotation;
                let mut tx = self.begin_write().await?;
                #[allow(clippy::type_complexity)]
                let known: Option<(uuid::Uuid, String, Option<Vec<u8>>, i64, Option<i64>, Option<i64>, bool, bool)> =
                    sqlx::query_as(
                        "SELECT s.user_id, s.client_id, s.refresh_secret, s.refresh_generation, \
                         s.refresh_rotated_at, s.refresh_reused, s.revoked_at IS NULL, \
                         (s.idle_expires_at > $2 AND s.absolute_expires_at > $2 AND NOT u.disabled \
                           AND s.credential_version = u.credential_version) \
                         FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1",
                    )
                    .bind(sid)
                    .bind(r.now)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some((user_id, owner, secret, current, rotated_at, reused, unrevoked, live)) = known else {
                    return Ok(Rotation::Invalid);
                };
                // The secret proves the token was issued for this session
                // (the MAC already proved the generation was issued at all).
                let genuine = secret.is_some_and(|s| {
                    aws_lc_rs::constant_time::verify_slices_are_equal(&s, secret_digest).is_ok()
                });
                // Expired sessions and disabled users: nothing left to
                // protect. The current generation here means the session
                // is revoked; a later one cannot have been issued.
                if !genuine || owner != r.client_id || !live || presented >= current {
                    return Ok(Rotation::Invalid);
                }
                let in_window =
                    unrevoked && r.grace > 0 && rotated_at.is_some_and(|at| r.now <= at + r.grace);
                if in_window && reused == Some(presented) {
                    // Its one reuse is spent: refuse, but a second tab is
                    // not evidence of theft.
                    return Ok(Rotation::Invalid);
                }
                if in_window && presented == current - 1 {
                    let session: Option<$crate::store::Session> = sqlx::query_as(
                        "UPDATE sessions SET refresh_generation = refresh_generation + 1, \
                         refresh_rotated_at = $2, refresh_reused = $3, last_used_at = $2, idle_expires_at = \
                         CASE WHEN $2 + $4 < absolute_expires_at THEN $2 + $4 ELSE absolute_expires_at END \
                         WHERE id = $1 AND refresh_generation = $5 AND revoked_at IS NULL RETURNING *",
                    )
                    .bind(sid)
                    .bind(r.now)
                    .bind(presented)
                    .bind(r.idle_ttl)
                    .bind(current)
                    .fetch_optional(&mut *tx)
                    .await?;
                    return Ok(match session {
                        Some(session) => {
                            tx.commit().await?;
                            Rotation::Rotated { session, grace_reuse: true }
                        }
                        None => Rotation::Invalid,
                    });
                }
                Self::revoke_session_in(
                    &mut tx,
                    sid,
                    r.now,
                    "refresh token replay",
                    r.revocation_relevant_until,
                    true,
                )
                .await?;
                tx.commit().await?;
                Ok(Rotation::Replayed { session_id: sid, user_id })
            }

            /// A token of the format before sessions held their generation
            /// (a row in `refresh_tokens`). An active one rotates once and
            /// moves its session to the current format; a consumed one is a
            /// replay, except inside the grace window (refused, session kept).
            async fn rotate_legacy(
                &self,
                r: &$crate::store::RotationRequest,
                hash: &[u8; 32],
            ) -> $crate::store::StoreResult<$crate::store::Rotation> {
                use $crate::store::{Rotation, TokenState};
                let mut tx = self.begin_write().await?;
                #[allow(clippy::type_complexity)]
                let known: Option<(uuid::Uuid, uuid::Uuid, String, i64, Option<i64>, String, bool, bool)> =
                    sqlx::query_as(
                        "SELECT t.session_id, s.user_id, t.state, t.generation, t.consumed_at, s.client_id, \
                         s.revoked_at IS NULL, (s.idle_expires_at > $2 AND s.absolute_expires_at > $2 AND NOT u.disabled \
                           AND s.credential_version = u.credential_version) \
                         FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id JOIN users u ON u.id = s.user_id \
                         WHERE t.token_hash = $1",
                    )
                    .bind(hash.to_vec())
                    .bind(r.now)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some((session_id, user_id, state, generation, consumed_at, owner, unrevoked, live)) = known else {
                    return Ok(Rotation::Invalid);
                };
                if owner != r.client_id || !live {
                    return Ok(Rotation::Invalid);
                }
                match TokenState::parse(&state) {
                    Some(TokenState::Active) if unrevoked => {
                        let consumed = sqlx::query(
                            "UPDATE refresh_tokens SET state = 'consumed', consumed_at = $2 \
                             WHERE token_hash = $1 AND state = 'active'",
                        )
                        .bind(hash.to_vec())
                        .bind(r.now)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                            == 1;
                        if !consumed {
                            return Ok(Rotation::Invalid);
                        }
                        let session: Option<$crate::store::Session> = sqlx::query_as(
                            "UPDATE sessions SET refresh_secret = $3, refresh_generation = $4, \
                             refresh_rotated_at = $2, refresh_reused = NULL, last_used_at = $2, idle_expires_at = \
                             CASE WHEN $2 + $5 < absolute_expires_at THEN $2 + $5 ELSE absolute_expires_at END \
                             WHERE id = $1 AND revoked_at IS NULL RETURNING *",
                        )
                        .bind(session_id)
                        .bind(r.now)
                        .bind(r.fresh_secret.to_vec())
                        .bind(generation + 1)
                        .bind(r.idle_ttl)
                        .fetch_optional(&mut *tx)
                        .await?;
                        // Revoked meanwhile: the rollback keeps the token.
                        let Some(session) = session else {
                            return Ok(Rotation::Invalid);
                        };
                        tx.commit().await?;
                        Ok(Rotation::Rotated { session, grace_reuse: false })
                    }
                    Some(TokenState::Consumed) => {
                        let in_window = unrevoked
                            && r.grace > 0
                            && consumed_at.is_some_and(|at| r.now <= at + r.grace);
                        if in_window {
                            return Ok(Rotation::Invalid);
                        }
                        Self::revoke_session_in(
                            &mut tx,
                            session_id,
                            r.now,
                            "refresh token replay",
                            r.revocation_relevant_until,
                            true,
                        )
                        .await?;
                        tx.commit().await?;
                        Ok(Rotation::Replayed { session_id, user_id })
                    }
                    _ => Ok(Rotation::Invalid),
                }
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::Sessions for $store {
            async fn create_session(
                &self,
                s: &$crate::store::NewSession,
                secret_digest: &[u8; 32],
            ) -> $crate::store::StoreResult<bool> {
                let mut tx = self.begin_write().await?;
                // A session from an upstream token needs its issuer enabled
                // and its account still linked to this user, both rows under
                // a share lock (PostgreSQL): a disable or an unlink either
                // commits first (and this inserts nothing) or waits for this
                // commit (and its sweep then revokes this session). And the
                // token opens one session: its digest is recorded here, so a
                // failed opening does not use it up.
                if let Some(upstream) = &s.upstream {
                    let sql = format!(
                        "SELECT l.user_id FROM user_links l JOIN trusted_issuers i ON i.issuer = l.issuer \
                         WHERE l.issuer = $1 AND l.subject = $2 AND NOT i.disabled {}",
                        Self::USER_SHARE_LOCK
                    );
                    let linked: Option<uuid::Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                        .bind(&upstream.account.issuer)
                        .bind(&upstream.account.subject)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if linked != Some(s.user_id) {
                        return Ok(false);
                    }
                    let first_use = sqlx::query(
                        "INSERT INTO upstream_tokens_used (digest, expires_at) VALUES ($1, $2) \
                         ON CONFLICT (digest) DO NOTHING",
                    )
                    .bind(upstream.token_digest.to_vec())
                    .bind(upstream.token_expires_at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                        == 1;
                    if !first_use {
                        return Ok(false);
                    }
                }
                // The session exists only if its user is enabled and the
                // credentials the login checked are still current. The user
                // row is share-locked (PostgreSQL), so a password change
                // either commits first (and this inserts nothing) or waits
                // for this commit (and then revokes this session).
                let sql = format!(
                    "INSERT INTO sessions (id, user_id, client_id, scope, created_at, last_used_at, \
                     idle_expires_at, absolute_expires_at, user_agent_hash, network_prefix, user_agent_summary, \
                     credential_version, refresh_secret, refresh_generation, refresh_rotated_at, upstream_issuer, \
                     upstream_subject) \
                     SELECT $1, $2, $3, $4, $5, $5, $6, $7, $8, $9, $10, $11, $12, 0, $5, $13, $14 FROM users \
                     WHERE id = $2 AND credential_version = $11 AND NOT disabled {} \
                     ON CONFLICT (id) DO NOTHING",
                    Self::USER_SHARE_LOCK
                );
                let created = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(s.id)
                    .bind(s.user_id)
                    .bind(&s.client_id)
                    .bind(&s.scope)
                    .bind(s.created_at)
                    .bind(s.idle_expires_at)
                    .bind(s.absolute_expires_at)
                    .bind(&s.user_agent_hash)
                    .bind(&s.network_prefix)
                    .bind(&s.user_agent_summary)
                    .bind(s.credential_version)
                    .bind(secret_digest.to_vec())
                    .bind(s.upstream.as_ref().map(|u| &u.account.issuer))
                    .bind(s.upstream.as_ref().map(|u| &u.account.subject))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                if created {
                    tx.commit().await?;
                }
                Ok(created)
            }

            async fn change_credentials(
                &self,
                user: uuid::Uuid,
                change: &$crate::store::CredentialChange,
                now: i64,
                reason: &str,
                relevant_until: i64,
            ) -> $crate::store::StoreResult<Option<u64>> {
                let mut tx = self.begin_write().await?;
                let changed = match change {
                    $crate::store::CredentialChange::Password(hash) => sqlx::query(
                        "UPDATE users SET password_hash = $2, credential_version = credential_version + 1, \
                         updated_at = $3 WHERE id = $1",
                    )
                    .bind(user)
                    .bind(hash)
                    .bind(now),
                    $crate::store::CredentialChange::Totp(sealed) => sqlx::query(
                        "UPDATE users SET totp_secret = $2, totp_last_step = NULL, \
                         credential_version = credential_version + 1, updated_at = $3 WHERE id = $1",
                    )
                    .bind(user)
                    .bind(sealed.clone())
                    .bind(now),
                }
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if !changed {
                    return Ok(None);
                }
                let ids = Self::live_session_ids_in(&mut tx, "user_id", &user.to_string()).await?;
                let revoked = Self::revoke_sessions_in(&mut tx, ids, now, reason, relevant_until).await?;
                tx.commit().await?;
                Ok(Some(revoked))
            }

            async fn rotate_refresh_token(
                &self,
                request: &$crate::store::RotationRequest,
            ) -> $crate::store::StoreResult<$crate::store::Rotation> {
                match request.presented {
                    $crate::store::PresentedRefresh::Current { sid, generation, secret_digest } => {
                        if let Some(session) = self.fast_rotate(request, sid, generation, &secret_digest).await? {
                            return Ok($crate::store::Rotation::Rotated { session, grace_reuse: false });
                        }
                        self.rotate_slow(request, sid, generation, &secret_digest).await
                    }
                    $crate::store::PresentedRefresh::Legacy(hash) => self.rotate_legacy(request, &hash).await,
                }
            }

            async fn unrotate_refresh_token(
                &self,
                sid: uuid::Uuid,
                generation: i64,
            ) -> $crate::store::StoreResult<bool> {
                Ok(sqlx::query(
                    "UPDATE sessions SET refresh_generation = refresh_generation - 1 \
                     WHERE id = $1 AND refresh_generation = $2 AND revoked_at IS NULL",
                )
                .bind(sid)
                .bind(generation)
                .execute(&mut *self.write_conn(false).await?)
                .await?
                .rows_affected()
                    == 1)
            }

            async fn refresh_token(
                &self,
                presented: &$crate::store::PresentedRefresh,
            ) -> $crate::store::StoreResult<Option<$crate::store::RefreshTokenInfo>> {
                use $crate::store::{PresentedRefresh, RefreshTokenInfo, TokenState};
                match *presented {
                    PresentedRefresh::Current { sid, generation, secret_digest } => {
                        let row: Option<(Option<Vec<u8>>, bool)> = sqlx::query_as(
                            "SELECT s.refresh_secret, u.disabled FROM sessions s JOIN users u ON u.id = s.user_id \
                             WHERE s.id = $1",
                        )
                        .bind(sid)
                        .fetch_optional(&self.pool)
                        .await?;
                        let Some((Some(secret), user_disabled)) = row else {
                            return Ok(None);
                        };
                        if aws_lc_rs::constant_time::verify_slices_are_equal(&secret, &secret_digest).is_err() {
                            return Ok(None);
                        }
                        let Some(session) = self.session(sid).await? else {
                            return Ok(None);
                        };
                        let state = if session.revoked_at.is_some() {
                            TokenState::Revoked
                        } else if generation == session.refresh_generation {
                            TokenState::Active
                        } else if generation < session.refresh_generation {
                            TokenState::Consumed
                        } else {
                            return Ok(None);
                        };
                        let created_at = (state == TokenState::Active)
                            .then_some(session.refresh_rotated_at)
                            .flatten();
                        Ok(Some(RefreshTokenInfo { session, state, created_at, user_disabled }))
                    }
                    PresentedRefresh::Legacy(hash) => {
                        let row: Option<(String, i64, uuid::Uuid, bool)> = sqlx::query_as(
                            "SELECT t.state, t.created_at, t.session_id, u.disabled FROM refresh_tokens t \
                             JOIN sessions s ON s.id = t.session_id JOIN users u ON u.id = s.user_id \
                             WHERE t.token_hash = $1",
                        )
                        .bind(hash.to_vec())
                        .fetch_optional(&self.pool)
                        .await?;
                        let Some((state, created_at, session_id, user_disabled)) = row else {
                            return Ok(None);
                        };
                        let state = TokenState::parse(&state).ok_or_else(|| {
                            $crate::store::StoreError::Corrupt(format!("refresh token state {state:?}"))
                        })?;
                        let Some(session) = self.session(session_id).await? else {
                            return Ok(None);
                        };
                        let state = if session.revoked_at.is_some() { TokenState::Revoked } else { state };
                        Ok(Some(RefreshTokenInfo { session, state, created_at: Some(created_at), user_disabled }))
                    }
                }
            }

            async fn user_sessions(
                &self,
                user: uuid::Uuid,
                now: i64,
            ) -> $crate::store::StoreResult<Vec<$crate::store::Session>> {
                Ok(sqlx::query_as(
                    "SELECT * FROM sessions WHERE user_id = $1 AND revoked_at IS NULL \
                     AND idle_expires_at > $2 AND absolute_expires_at > $2 ORDER BY created_at DESC, id",
                )
                .bind(user)
                .bind(now)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn revoke_session(
                &self,
                id: uuid::Uuid,
                now: i64,
                reason: &str,
                revocation_relevant_until: i64,
            ) -> $crate::store::StoreResult<bool> {
                let mut tx = self.begin_write().await?;
                let revoked =
                    Self::revoke_session_in(&mut tx, id, now, reason, revocation_relevant_until, true).await?;
                tx.commit().await?;
                Ok(revoked)
            }

            async fn revoke_user_sessions(
                &self,
                user: uuid::Uuid,
                by_sub: Option<$crate::store::Cutoff>,
                now: i64,
                reason: &str,
                revocation_relevant_until: i64,
            ) -> $crate::store::StoreResult<u64> {
                let mut tx = self.begin_write().await?;
                let ids = Self::live_session_ids_in(&mut tx, "user_id", &user.to_string()).await?;
                // Each sid is listed too: a token minted from one of these
                // sessions is revoked whatever second it was minted in.
                let revoked =
                    Self::revoke_sessions_in(&mut tx, ids, now, reason, revocation_relevant_until).await?;
                // Browser sign-ins end with the sessions.
                sqlx::query("UPDATE users SET signed_out_at = $2 WHERE id = $1 AND signed_out_at < $2")
                    .bind(user)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                if let Some(cutoff) = by_sub {
                    Self::insert_revocation_in(
                        &mut tx,
                        $crate::store::RevocationKind::Sub,
                        &user.to_string(),
                        cutoff.at(now, revocation_relevant_until),
                        revocation_relevant_until,
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok(revoked)
            }

            async fn revoke_client_tokens(
                &self,
                client_id: &str,
                cutoff: $crate::store::Cutoff,
                now: i64,
                reason: &str,
                revocation_relevant_until: i64,
            ) -> $crate::store::StoreResult<u64> {
                let mut tx = self.begin_write().await?;
                let ids = Self::live_session_ids_in(&mut tx, "client_id", client_id).await?;
                let revoked =
                    Self::revoke_sessions_in(&mut tx, ids, now, reason, revocation_relevant_until).await?;
                Self::insert_revocation_in(
                    &mut tx,
                    $crate::store::RevocationKind::Client,
                    client_id,
                    cutoff.at(now, revocation_relevant_until),
                    revocation_relevant_until,
                )
                .await?;
                tx.commit().await?;
                Ok(revoked)
            }

            async fn revoke_jti(
                &self,
                jti: &str,
                now: i64,
                relevant_until: i64,
                owner: Option<&$crate::store::JtiOwner>,
                fold_after: i64,
            ) -> $crate::store::StoreResult<$crate::store::JtiRevocation> {
                use $crate::store::{JtiOwner, JtiRevocation, RevocationKind};
                let mut tx = self.begin_write().await?;
                // The revocation lock first: one order everywhere, and the
                // owner's count below cannot change under us.
                Self::lock_revocations_in(&mut tx).await?;
                let listed: Option<i64> = sqlx::query_scalar(
                    "SELECT id FROM revocations WHERE kind = 'jti' AND value = $1",
                )
                .bind(jti)
                .fetch_optional(&mut *tx)
                .await?;
                if listed.is_some() {
                    return Ok(JtiRevocation::AlreadyListed);
                }
                let key = owner.map(JtiOwner::key);
                if let (Some(owner), Some(key)) = (owner, &key) {
                    let count: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM revocations WHERE owner = $1 AND relevant_until > $2",
                    )
                    .bind(key)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                    if count >= fold_after {
                        match owner {
                            JtiOwner::Session(sid) => {
                                let revoked = Self::revoke_session_in(
                                    &mut tx,
                                    *sid,
                                    now,
                                    "too many access tokens revoked one by one",
                                    relevant_until,
                                    true,
                                )
                                .await?;
                                // Revoked before (or purged): list its sid
                                // again, so the rows deleted below stay covered.
                                if !revoked {
                                    Self::insert_revocation_in(
                                        &mut tx,
                                        RevocationKind::Sid,
                                        &sid.to_string(),
                                        now,
                                        relevant_until,
                                    )
                                    .await?;
                                }
                            }
                            JtiOwner::Client(id) => {
                                let cutoff = $crate::store::Cutoff::Commit.at(now, relevant_until);
                                Self::insert_revocation_in(
                                    &mut tx,
                                    RevocationKind::Client,
                                    id,
                                    cutoff,
                                    relevant_until,
                                )
                                .await?;
                            }
                        }
                        sqlx::query("DELETE FROM revocations WHERE owner = $1")
                            .bind(key)
                            .execute(&mut *tx)
                            .await?;
                        tx.commit().await?;
                        return Ok(JtiRevocation::Folded);
                    }
                }
                Self::insert_revocation_in(&mut tx, RevocationKind::Jti, jti, now, relevant_until)
                    .await?;
                if let Some(key) = &key {
                    sqlx::query("UPDATE revocations SET owner = $1 WHERE kind = 'jti' AND value = $2")
                        .bind(key)
                        .bind(jti)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(JtiRevocation::Listed)
            }

            async fn revocations_since(
                &self,
                cursor: i64,
                now: i64,
                limit: i64,
            ) -> $crate::store::StoreResult<Vec<$crate::store::RevocationEntry>> {
                let rows: Vec<(i64, String, String, i64, i64)> = sqlx::query_as(
                    "SELECT id, kind, value, revoked_at, relevant_until FROM revocations \
                     WHERE id > $1 AND relevant_until > $2 ORDER BY id LIMIT $3",
                )
                .bind(cursor)
                .bind(now)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(id, kind, value, revoked_at, relevant_until)| {
                        let kind = $crate::store::RevocationKind::parse(&kind).ok_or_else(|| {
                            $crate::store::StoreError::Corrupt(format!("revocation {id} has kind {kind:?}"))
                        })?;
                        Ok($crate::store::RevocationEntry { id, kind, value, revoked_at, relevant_until })
                    })
                    .collect()
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
                .execute(&mut *self.write_conn(false).await?)
                .await?
                .rows_affected();
                let revocations = sqlx::query(
                    "DELETE FROM revocations WHERE id IN (SELECT id FROM revocations WHERE relevant_until < $1 LIMIT $2)",
                )
                .bind(now)
                .bind(batch)
                .execute(&mut *self.write_conn(false).await?)
                .await?
                .rows_affected();
                // Kept a margin longer: an instance whose clock is behind
                // this one's still accepts the token a little while.
                let upstream_tokens = sqlx::query(
                    "DELETE FROM upstream_tokens_used WHERE digest IN \
                     (SELECT digest FROM upstream_tokens_used WHERE expires_at < $1 LIMIT $2)",
                )
                .bind(now - $crate::store::CLOCK_SKEW_MARGIN)
                .bind(batch)
                .execute(&mut *self.write_conn(false).await?)
                .await?
                .rows_affected();
                Ok(sessions.max(revocations).max(upstream_tokens))
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

        impl $store {
            /// Links `events` after the current head and inserts them, inside
            /// an audit transaction (one writer at a time).
            async fn append_audit_in(
                tx: &mut sqlx::Transaction<'_, $db>,
                events: &[$crate::store::NewAuditEvent],
                key: &$crate::audit::ChainKey,
            ) -> $crate::store::StoreResult<()> {
                let last: Option<(i64, Vec<u8>, i64)> = sqlx::query_as(
                    "SELECT seq, hash, key_version FROM audit_log ORDER BY seq DESC LIMIT 1",
                )
                .fetch_optional(&mut **tx)
                .await?;
                let (mut seq, mut prev, head_version) = match last {
                    Some(head) => head,
                    None => (0, $crate::audit::GENESIS.to_vec(), 1),
                };
                // Never back to an older version (verification refuses
                // that); forward to the newest this process holds (a
                // rewrap's switch).
                let version = head_version.max(key.newest());
                let mut rows = Vec::with_capacity(events.len());
                for e in events {
                    seq += 1;
                    let link = key
                        .link_at(version, seq, &prev, e)
                        .ok_or($crate::store::StoreError::ChainKeyVersion(version))?
                        .to_vec();
                    rows.push((seq, e, std::mem::replace(&mut prev, link.clone()), link, version));
                }
                Self::insert_audit_rows_in(tx, &rows).await
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::AuditLog for $store {
            async fn append_audit(
                &self,
                events: &[$crate::store::NewAuditEvent],
                durable: bool,
                key: &$crate::audit::ChainKey,
            ) -> $crate::store::StoreResult<()> {
                if events.is_empty() {
                    return Ok(());
                }
                let mut tx = self.begin_audit(durable).await?;
                Self::append_audit_in(&mut tx, events, key).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn chain_pending_audit(
                &self,
                key: &$crate::audit::ChainKey,
            ) -> $crate::store::StoreResult<u64> {
                // Cheap check first: nearly always there is nothing to do.
                let any: Option<i64> = sqlx::query_scalar("SELECT id FROM audit_pending LIMIT 1")
                    .fetch_optional(&self.pool)
                    .await?;
                if any.is_none() {
                    return Ok(0);
                }
                let mut tx = self.begin_audit(true).await?;
                // Under the audit lock: another process may have chained them meanwhile.
                let pending: Vec<(i64, i64, String, String, Option<String>, String)> = sqlx::query_as(
                    "SELECT id, at, actor, action, subject, detail FROM audit_pending ORDER BY id",
                )
                .fetch_all(&mut *tx)
                .await?;
                let events: Vec<$crate::store::NewAuditEvent> = pending
                    .iter()
                    .map(|(_, at, actor, action, subject, detail)| $crate::store::NewAuditEvent {
                        at: *at,
                        actor: actor.clone(),
                        action: action.clone(),
                        subject: subject.clone(),
                        detail: detail.clone(),
                        network_prefix: None,
                    })
                    .collect();
                if !events.is_empty() {
                    Self::append_audit_in(&mut tx, &events, key).await?;
                    let last = pending.last().map_or(0, |p| p.0);
                    sqlx::query("DELETE FROM audit_pending WHERE id <= $1")
                        .bind(last)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(events.len() as u64)
            }

            async fn audit_page(
                &self,
                after: i64,
                limit: i64,
            ) -> $crate::store::StoreResult<Vec<$crate::store::AuditRecord>> {
                Ok(sqlx::query_as("SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn audit_head(
                &self,
            ) -> $crate::store::StoreResult<Option<(i64, Vec<u8>, i64)>> {
                Ok(sqlx::query_as(
                    "SELECT seq, hash, key_version FROM audit_log ORDER BY seq DESC LIMIT 1",
                )
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn add_audit_checkpoint(
                &self,
                c: &$crate::store::AuditCheckpoint,
            ) -> $crate::store::StoreResult<()> {
                sqlx::query(
                    "INSERT INTO audit_checkpoints (seq, head, legacy_end, at, mac, key_version) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(c.seq)
                .bind(&c.head)
                .bind(c.legacy_end)
                .bind(c.at)
                .bind(&c.mac)
                .bind(c.key_version)
                .execute(&mut *self.write_conn(true).await?)
                .await?;
                sqlx::query(
                    "DELETE FROM audit_checkpoints WHERE id < \
                     (SELECT MIN(id) FROM (SELECT id FROM audit_checkpoints ORDER BY id DESC LIMIT 1000) AS newest)",
                )
                .execute(&mut *self.write_conn(true).await?)
                .await?;
                Ok(())
            }

            async fn audit_checkpoints(
                &self,
                limit: i64,
            ) -> $crate::store::StoreResult<Vec<$crate::store::AuditCheckpoint>> {
                Ok(sqlx::query_as(
                    "SELECT seq, head, legacy_end, at, mac, key_version FROM audit_checkpoints \
                     ORDER BY id DESC LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }
        }
    };
}

/// [`crate::store::Federation`]: trusted upstream issuers and user links.
/// Uses the session helpers of `portable_sessions` (`begin_write`,
/// `revoke_session_in`, `live_session_ids_in`).
macro_rules! portable_federation {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::Federation for $store {
            async fn add_issuer(
                &self,
                issuer: &$crate::store::NewIssuer,
                now: i64,
            ) -> $crate::store::StoreResult<$crate::store::TrustedIssuer> {
                sqlx::query_as(
                    "INSERT INTO trusted_issuers (issuer, jwks_uri, audience, create_users, disabled, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, FALSE, $5, $5) RETURNING *",
                )
                .bind(&issuer.issuer)
                .bind(&issuer.jwks_uri)
                .bind(&issuer.audience)
                .bind(issuer.create_users)
                .bind(now)
                .fetch_all(&mut *self.write_conn(true).await?)
                .await
                .map_err(|e| $crate::store::StoreError::from_sqlx(e, "issuer"))
                .and_then($crate::store::returned_row)
            }

            async fn issuer(
                &self,
                issuer: &str,
            ) -> $crate::store::StoreResult<Option<$crate::store::TrustedIssuer>> {
                Ok(sqlx::query_as("SELECT * FROM trusted_issuers WHERE issuer = $1")
                    .bind(issuer)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn issuers(&self) -> $crate::store::StoreResult<Vec<$crate::store::TrustedIssuer>> {
                Ok(sqlx::query_as("SELECT * FROM trusted_issuers ORDER BY issuer")
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn set_issuer_disabled(
                &self,
                issuer: &str,
                disabled: bool,
                now: i64,
                reason: &str,
                relevant_until: i64,
            ) -> $crate::store::StoreResult<Option<u64>> {
                let mut tx = self.begin_write().await?;
                let found = sqlx::query(
                    "UPDATE trusted_issuers SET disabled = $2, updated_at = $3 WHERE issuer = $1",
                )
                .bind(issuer)
                .bind(disabled)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if !found {
                    return Ok(None);
                }
                let mut revoked = 0;
                if disabled {
                    let ids = Self::live_session_ids_in(&mut tx, "upstream_issuer", issuer).await?;
                    revoked = Self::revoke_sessions_in(&mut tx, ids, now, reason, relevant_until).await?;
                }
                tx.commit().await?;
                Ok(Some(revoked))
            }

            async fn linked_user(
                &self,
                issuer: &str,
                subject: &str,
            ) -> $crate::store::StoreResult<Option<$crate::store::User>> {
                Ok(sqlx::query_as(
                    "SELECT users.* FROM user_links JOIN users ON users.id = user_links.user_id \
                     WHERE user_links.issuer = $1 AND user_links.subject = $2",
                )
                .bind(issuer)
                .bind(subject)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn link_new_user(
                &self,
                issuer: &str,
                subject: &str,
                user: &$crate::store::NewUser,
                now: i64,
            ) -> $crate::store::StoreResult<($crate::store::User, bool)> {
                let mut tx = self.begin_write().await?;
                let created: Result<Vec<$crate::store::User>, _> = sqlx::query_as(
                    "INSERT INTO users (id, username, password_hash, totp_secret, disabled, created_at, updated_at) \
                     VALUES ($1, $2, $3, NULL, FALSE, $4, $4) RETURNING *",
                )
                .bind(user.id)
                .bind(&user.username)
                .bind(&user.password_hash)
                .bind(now)
                .fetch_all(&mut *tx)
                .await;
                let linked = match created {
                    Ok(rows) => {
                        let row = $crate::store::returned_row(rows)?;
                        let done = sqlx::query(
                            "INSERT INTO user_links (issuer, subject, user_id, created_at) VALUES ($1, $2, $3, $4) \
                             ON CONFLICT (issuer, subject) DO NOTHING",
                        )
                        .bind(issuer)
                        .bind(subject)
                        .bind(user.id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                            == 1;
                        done.then_some(row)
                    }
                    // The same (iss, sub) gives the same name: a parallel
                    // exchange created the user first.
                    Err(e) => match $crate::store::StoreError::from_sqlx(e, "user") {
                        $crate::store::StoreError::Conflict(_) => None,
                        other => return Err(other),
                    },
                };
                if let Some(row) = linked {
                    tx.commit().await?;
                    return Ok((row, true));
                }
                drop(tx);
                match self.linked_user(issuer, subject).await? {
                    Some(existing) => Ok((existing, false)),
                    None => Err($crate::store::StoreError::Conflict("user")),
                }
            }

            async fn link_user(
                &self,
                issuer: &str,
                subject: &str,
                user: uuid::Uuid,
                now: i64,
            ) -> $crate::store::StoreResult<$crate::store::UserLink> {
                sqlx::query_as(
                    "INSERT INTO user_links (issuer, subject, user_id, created_at) VALUES ($1, $2, $3, $4) RETURNING *",
                )
                .bind(issuer)
                .bind(subject)
                .bind(user)
                .bind(now)
                .fetch_all(&mut *self.write_conn(true).await?)
                .await
                .map_err(|e| $crate::store::StoreError::from_sqlx(e, "link"))
                .and_then($crate::store::returned_row)
            }

            async fn user_links(
                &self,
                user: uuid::Uuid,
            ) -> $crate::store::StoreResult<Vec<$crate::store::UserLink>> {
                Ok(sqlx::query_as(
                    "SELECT * FROM user_links WHERE user_id = $1 ORDER BY created_at, issuer",
                )
                .bind(user)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn upstream_token_used(
                &self,
                digest: &[u8; 32],
            ) -> $crate::store::StoreResult<bool> {
                let found: Option<i64> =
                    sqlx::query_scalar("SELECT expires_at FROM upstream_tokens_used WHERE digest = $1")
                        .bind(digest.to_vec())
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(found.is_some())
            }

            async fn unlink_user(
                &self,
                issuer: &str,
                subject: &str,
                user: uuid::Uuid,
                now: i64,
                relevant_until: i64,
            ) -> $crate::store::StoreResult<Option<u64>> {
                let mut tx = self.begin_write().await?;
                let found = sqlx::query(
                    "DELETE FROM user_links WHERE issuer = $1 AND subject = $2 AND user_id = $3",
                )
                .bind(issuer)
                .bind(subject)
                .bind(user)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if !found {
                    return Ok(None);
                }
                let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
                    "SELECT id FROM sessions WHERE upstream_issuer = $1 AND upstream_subject = $2 \
                     AND user_id = $3 AND revoked_at IS NULL",
                )
                .bind(issuer)
                .bind(subject)
                .bind(user)
                .fetch_all(&mut *tx)
                .await?;
                let revoked =
                    Self::revoke_sessions_in(&mut tx, ids, now, "upstream identity unlinked", relevant_until)
                        .await?;
                tx.commit().await?;
                Ok(Some(revoked))
            }
        }
    };
}
