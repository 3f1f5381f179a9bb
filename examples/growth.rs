//! How much the store grows under refresh rotation: opens sessions, rotates
//! them round-robin through the store (the same calls the refresh grant
//! makes, without HTTP), runs the background purge, and prints the size of
//! the session and token tables and of the whole database.
//!
//! ```sh
//! cargo run --release --example growth -- sqlite://target/growth.db 10000 1000000
//! cargo run --release --example growth -- postgres://postgres@127.0.0.1/growth 10000 1000000
//! ```
//!
//! The database must be new (the PostgreSQL one created beforehand). Audit
//! rows are not part of this: the refresh grant appends one per rotation,
//! and the audit log is kept on purpose (see docs/performance.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tessera::store::{
    BindingPolicy, Engine, NewClient, NewSession, NewUser, PresentedRefresh, Rotation,
    RotationRequest, Store,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, sessions, rotations] = args.as_slice() else {
        return Err("usage: growth DATABASE_URL SESSIONS ROTATIONS".into());
    };
    let (sessions, rotations): (u64, u64) = (sessions.parse()?, rotations.parse()?);
    let engine = Engine::from_url(url).ok_or("a sqlite:// or postgres:// URL")?;
    let store: Arc<dyn Store> = match engine {
        Engine::Sqlite => Arc::new(tessera::store::sqlite::SqliteStore::connect(url, 4).await?),
        Engine::Postgres => Arc::new(tessera::store::postgres::PgStore::connect(url, 16).await?),
    };
    store.migrate().await?;
    let now = chrono::Utc::now().timestamp();
    let user = uuid::Uuid::new_v4();
    store
        .create_user(
            &NewUser {
                id: user,
                username: "growth".into(),
                password_hash: "x".into(),
                totp_secret: None,
            },
            now,
        )
        .await?;
    store
        .create_client(
            &NewClient {
                id: "growth".into(),
                secret_digest: None,
                grant_types: vec!["password".into(), "refresh_token".into()],
                scopes: vec!["read".into()],
                audiences: vec!["https://api.example".into()],
                origins: vec![],
                redirect_uris: vec![],
                cookie: false,
                admin: false,
                resource_server: false,
                on_binding_change: BindingPolicy::Audit,
                require_dpop: false,
                exchange_audiences: vec![],
            },
            now,
        )
        .await?;
    let secret = [7u8; 32];
    let mut ids = Vec::new();
    for _ in 0..sessions {
        let id = uuid::Uuid::new_v4();
        store
            .create_session(
                &NewSession {
                    id,
                    user_id: user,
                    client_id: "growth".into(),
                    scope: "read".into(),
                    created_at: now,
                    idle_expires_at: now + 86_400,
                    absolute_expires_at: now + 30 * 86_400,
                    user_agent_hash: None,
                    network_prefix: None,
                    user_agent_summary: None,
                    credential_version: 0,
                    upstream: None,
                },
                &secret,
            )
            .await?;
        ids.push(id);
    }
    let ids = Arc::new(ids);
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    // Eight workers, each owning every eighth session and its generations.
    let workers: Vec<_> = (0..8u64)
        .map(|w| {
            let (store, ids, done) = (store.clone(), ids.clone(), done.clone());
            tokio::spawn(async move {
                let mine: Vec<_> = ids.iter().skip(w as usize).step_by(8).copied().collect();
                let mut generation = vec![0i64; mine.len()];
                let mut i = 0;
                while done.fetch_add(1, Ordering::Relaxed) < rotations {
                    let request = RotationRequest {
                        presented: PresentedRefresh::Current {
                            sid: mine[i],
                            generation: generation[i],
                            secret_digest: secret,
                        },
                        fresh_secret: secret,
                        client_id: "growth".into(),
                        now,
                        idle_ttl: 86_400,
                        grace: 0,
                        revocation_relevant_until: now + 900,
                    };
                    match store.rotate_refresh_token(&request).await? {
                        Rotation::Rotated { .. } => generation[i] += 1,
                        other => return Err(format!("rotation refused: {other:?}").into()),
                    }
                    i = (i + 1) % mine.len();
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    for w in workers {
        w.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let purged = store.purge_expired(now - 86_400, now, 1000).await?;
    println!(
        "engine={engine:?} sessions={sessions} rotations={rotations} seconds={seconds:.1} \
         rotations_per_s={:.0} purged={purged}",
        rotations as f64 / seconds
    );
    match engine {
        Engine::Sqlite => {
            store.close().await;
            let path = url
                .trim_start_matches("sqlite://")
                .split('?')
                .next()
                .unwrap_or_default();
            for suffix in ["", "-wal"] {
                let size = std::fs::metadata(format!("{path}{suffix}")).map_or(0, |m| m.len());
                println!("file{suffix}={size}");
            }
        }
        Engine::Postgres => {
            let pool = sqlx::PgPool::connect(url).await?;
            sqlx::query("VACUUM ANALYZE sessions")
                .execute(&pool)
                .await?;
            let row: (i64, i64, i64) = sqlx::query_as(
                "SELECT pg_total_relation_size('sessions'), pg_total_relation_size('refresh_tokens'), \
                 pg_database_size(current_database())",
            )
            .fetch_one(&pool)
            .await?;
            println!(
                "sessions_bytes={} refresh_tokens_bytes={} database_bytes={}",
                row.0, row.1, row.2
            );
        }
    }
    Ok(())
}
