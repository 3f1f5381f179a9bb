//! Builds the running application from a [`Config`]: the one place where the
//! store, the keys and the HTTP server are wired together.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::middleware::{DefaultHeaders, from_fn};
use actix_web::{App, HttpServer, web};
use anyhow::{Context, bail};

use crate::config::{Config, MasterKeySetting};
use crate::http::{AppState, not_found, request_log, routes};
use crate::keys::master::{MasterKey, OpenError};
use crate::store::{self, Store};

/// What to do about the database schema at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Migrations {
    /// Apply pending migrations (the default).
    Apply,
    /// Leave the schema alone, but refuse to start if it is behind.
    Skip,
}

/// A bound, ready-to-run tessera server.
pub struct Application {
    port: u16,
    server: Server,
    store: Arc<dyn Store>,
}

impl Application {
    /// Connects to the database, prepares the schema and keys, and binds the
    /// listener. Nothing is served until [`Application::run_until_stopped`].
    pub async fn build(config: Config, migrations: Migrations) -> anyhow::Result<Application> {
        let store = open_store(&config, migrations).await?;
        let _master_key = load_master_key(&config, store.as_ref()).await?;

        let listener = TcpListener::bind(config.listen)
            .with_context(|| format!("TESSERA_LISTEN: cannot listen on {}", config.listen))?;
        let port = listener.local_addr()?.port();
        let state = AppState {
            store: store.clone(),
            config: Arc::new(config),
        };
        let server = run(listener, state)?;
        Ok(Application {
            port,
            server,
            store,
        })
    }

    /// The bound port (useful when the configuration asked for port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server gracefully.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGINT/SIGTERM (or a [`Application::handle`] stop), lets
    /// in-flight requests finish, then closes the database pool.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        tracing::info!("server stopped; closing database connections");
        self.store.close().await;
        result
    }
}

/// Connects and brings the schema to this build's version (or checks it is).
pub async fn open_store(config: &Config, migrations: Migrations) -> anyhow::Result<Arc<dyn Store>> {
    let store = store::connect(config)
        .await
        .context("TESSERA_DATABASE_URL")?;
    match migrations {
        Migrations::Apply => store.migrate().await.context("applying migrations")?,
        Migrations::Skip => {
            let pending = store.pending_migrations().await?;
            if pending > 0 {
                bail!(
                    "the database schema is {pending} migration(s) behind this version of tessera; \
                     run `tessera migrate` or start without --no-migrate"
                );
            }
        }
    }
    Ok(store)
}

const MASTER_KEY_CHECK: &str = "master_key_check";
const MASTER_KEY_CHECK_TEXT: &[u8] = b"tessera master key check";

/// Loads the master key and makes sure it is the one this database's secrets
/// were sealed under, so a wrong key fails at start rather than at first use.
pub async fn load_master_key(config: &Config, store: &dyn Store) -> anyhow::Result<MasterKey> {
    let (key, origin) = match &config.master_key {
        MasterKeySetting::Provided(key) => {
            (key.clone(), "TESSERA_MASTER_KEY_FILE / TESSERA_MASTER_KEY")
        }
        MasterKeySetting::DevFile(path) => {
            let (key, created) = MasterKey::load_or_create_dev_file(path)
                .context("TESSERA_DATA_DIR: development master key")?;
            tracing::warn!(
                path = %path.display(),
                created,
                "DEVELOPMENT MODE: secrets at rest are encrypted under a generated master key stored \
                 next to the database. Set TESSERA_MASTER_KEY_FILE in production."
            );
            (key, "the development master key file")
        }
    };
    let context = MASTER_KEY_CHECK.as_bytes();
    let stored = store
        .init_setting(MASTER_KEY_CHECK, &key.seal(MASTER_KEY_CHECK_TEXT, context))
        .await?;
    match key.open(&stored, context) {
        Ok(text) if text.as_slice() == MASTER_KEY_CHECK_TEXT => Ok(key),
        Err(OpenError::WrongKey { found, expected }) => bail!(
            "{origin}: this database was sealed under master key {found}, but the configured key is \
             {expected}; start with the original master key"
        ),
        _ => bail!("{origin}: the database's master-key check value is corrupt"),
    }
}

fn run(listener: TcpListener, state: AppState) -> std::io::Result<Server> {
    let shutdown_timeout = state.config.shutdown_timeout.as_secs();
    let data = web::Data::new(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .wrap(from_fn(request_log))
            .wrap(DefaultHeaders::new().add(("X-Content-Type-Options", "nosniff")))
            .configure(routes)
            .default_service(web::to(not_found))
    })
    .shutdown_timeout(shutdown_timeout)
    .listen(listener)?
    .run();
    Ok(server)
}
