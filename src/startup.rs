//! Builds the running application from a [`Config`]: the one place where the
//! store, the keys and the HTTP server are wired together.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::middleware::{DefaultHeaders, from_fn};
use actix_web::{App, HttpServer, web};
use anyhow::{Context, bail};

use crate::audit::{Action, Auditor, ChainKey};
use crate::auth::accounts::Accounts;
use crate::auth::client::SecretDigester;
use crate::auth::rate_limit::RateLimiter;
use crate::auth::throttle::LoginThrottle;
use crate::config::{Config, ConfigError, MasterKeySetting, Tls};
use crate::http::cors::AllowedOrigins;
use crate::http::{AppState, cors, limit_headers, not_found, read_body, request_log, routes};
use crate::keys::keyring::{KeyRing, RotationPolicy};
use crate::keys::master::{DerivationRoot, MasterKey, OpenError};
use crate::revocation::{RevocationCache, Revoker};
use crate::store::{self, Store};
use crate::tokens::grant::Collaborators;
use crate::tokens::{AudienceKeys, ClientAuthenticator, Minter, SessionPolicy, TokenEndpoint};
use crate::verify::Verifier;

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
    maintenance: tokio::task::JoinHandle<()>,
    revocations: tokio::task::JoinHandle<()>,
    audit_writer: tokio::task::JoinHandle<()>,
    checkpoints: tokio::task::JoinHandle<()>,
    watchdog: tokio::task::JoinHandle<()>,
    chain_key: ChainKey,
    signals: ShutdownSignals,
    /// Finalised once the server has stopped.
    hsm: Option<Arc<crate::keys::pkcs11::Hsm>>,
}

/// How soon after new audit rows a checkpoint of the head is written.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl Application {
    /// Connects to the database, prepares the schema and keys, and binds the
    /// listener. Nothing is served until [`Application::run_until_stopped`].
    pub async fn build(config: Config, migrations: Migrations) -> anyhow::Result<Application> {
        Application::build_with_clock(config, migrations, Arc::new(crate::clock::SystemClock)).await
    }

    /// [`Application::build`] on `clock` (tests move a manual clock).
    pub async fn build_with_clock(
        config: Config,
        migrations: Migrations,
        clock: Arc<dyn crate::clock::Clock>,
    ) -> anyhow::Result<Application> {
        let store = open_store(&config, migrations).await?;
        let master_key = load_master_key(&config, store.as_ref()).await?;
        let keys = open_key_ring(&config, store.clone(), master_key.clone()).await?;
        let hsm = keys.hsm().cloned();
        let now = chrono::Utc::now().timestamp();
        let cache = RevocationCache::load(store.clone(), now)
            .await
            .context("loading the revocation list")?;
        let clients = Arc::new(ClientAuthenticator::new(
            store.clone(),
            SecretDigester::new(&master_key),
            cache.set(),
        ));
        let chain_key = ChainKey::load(store.as_ref(), &master_key)
            .await
            .context("loading the audit chain keys")?;
        crate::audit::chain_pending(store.as_ref(), &chain_key)
            .await
            .context("recording the audit events of a migration")?;
        let (auditor, audit_writer) = Auditor::spawn(store.clone(), chain_key.clone());
        let checkpoints =
            crate::audit::spawn_checkpoints(store.clone(), chain_key.clone(), CHECKPOINT_EVERY);
        let access_ttl = config.access_token_ttl.as_secs() as i64;
        // Our own tokens: keys from the ring, any audience (callers compare
        // `aud` with what they may see), revocations applied, a few seconds
        // of leeway for clock skew between instances.
        // DPoP: one nonce key for every instance (derived from the master key).
        let dpop_options = crate::verify::dpop::DpopOptions {
            require_nonce: config.dpop_nonce,
            ..Default::default()
        };
        let nonce_key = || {
            crate::verify::dpop::NonceKey::new(
                &master_key.derive_secret(b"tessera/dpop-nonce/v1"),
                std::time::Duration::from_secs(60),
            )
        };
        let verifier = Verifier::builder(config.issuer.clone(), config.issuer.clone())
            .key_provider(keys.clone())
            .revocations(cache.set())
            .leeway(std::time::Duration::from_secs(5))
            .any_audience()
            // DPoP proofs at our own endpoints name the public URL.
            .dpop_base_url(config.issuer.clone())
            .dpop(dpop_options.clone(), Some(nonce_key()))
            .build()
            .context("building the token verifier")?;
        let verifier = Arc::new(verifier);
        let refresh_tokens = crate::tokens::refresh::RefreshTokens::new(&master_key);
        let revoker = Arc::new(Revoker::new(
            store.clone(),
            cache.clone(),
            refresh_tokens.clone(),
            verifier.clone(),
            auditor.clone(),
            config.issuer.clone(),
            access_ttl,
        ));
        let accounts = Arc::new(Accounts::new(
            store.clone(),
            master_key.clone(),
            auditor.clone(),
            Some(cache.clone()),
            Some(clients.clone()),
            config.issuer.clone(),
            access_ttl,
        ));
        let issuers = Arc::new(crate::federation::issuers::Issuers::new(
            store.clone(),
            auditor.clone(),
            Some(cache.clone()),
            config.issuer.clone(),
            access_ttl,
        ));
        let audiences = Arc::new(AudienceKeys::default());
        audiences.refresh(store.as_ref()).await?;
        let minter = Arc::new(Minter::new(
            keys.clone(),
            audiences.clone(),
            config.issuer.clone(),
            config.access_token_ttl,
        ));
        let sessions = SessionPolicy {
            idle_ttl: config.refresh_idle_ttl.as_secs() as i64,
            absolute_ttl: config.refresh_absolute_ttl.as_secs() as i64,
            reuse_grace: config.refresh_reuse_grace.as_secs() as i64,
        };
        let throttle = LoginThrottle::new(store.clone(), config.login);
        let credentials = Arc::new(crate::auth::login::Credentials::new(
            store.clone(),
            throttle.clone(),
            crate::auth::gate::LoginGate::new(config.login_gate),
            master_key.clone(),
            auditor.clone(),
        ));
        let sealer = crate::authorize::Sealer::new(&master_key);
        let authorizer = Arc::new(crate::authorize::Authorizer::new(
            store.clone(),
            clients.clone(),
            credentials.clone(),
            sealer.clone(),
            auditor.clone(),
            config.issuer.clone(),
            config.sign_in_ttl.as_secs() as i64,
        ));
        let token_endpoint = Arc::new(TokenEndpoint::new(Collaborators {
            store: store.clone(),
            minter,
            clients: clients.clone(),
            sessions,
            credentials,
            sealer,
            refresh_tokens,
            auditor: auditor.clone(),
            revocations: cache.clone(),
            throttle: throttle.clone(),
            clock: clock.clone(),
            rate_limit: RateLimiter::new(config.token_rate_limit),
            dpop: crate::verify::dpop::DpopValidator::new(dpop_options, Some(nonce_key())),
            token_url: format!("{}/oauth/token", config.issuer.trim_end_matches('/')),
            own_tokens: verifier,
            upstream: Arc::new(crate::federation::upstream::UpstreamVerifier::new(
                crate::federation::jwks::JwksCache::new(Default::default()),
            )),
            issuer: config.issuer.clone(),
        }));
        let origins = Arc::new(AllowedOrigins::default());
        origins.refresh(store.as_ref()).await?;
        let maintenance = spawn_maintenance(
            keys.clone(),
            audiences,
            origins.clone(),
            store.clone(),
            auditor.clone(),
            throttle,
        );
        let revocations = cache.spawn();

        let listener = TcpListener::bind(config.listen)
            .with_context(|| format!("TESSERA_LISTEN: cannot listen on {}", config.listen))?;
        let port = listener.local_addr()?.port();
        let introspection_limit = Arc::new(RateLimiter::new(config.introspection_rate_limit));
        let revocation_limit = Arc::new(RateLimiter::new(config.revocation_rate_limit));
        let feed_limit = Arc::new(RateLimiter::new(config.feed_rate_limit));
        let state = AppState {
            store: store.clone(),
            settings: Arc::new(crate::http::HttpSettings::of(&config)),
            keys,
            token_endpoint,
            authorizer,
            clients,
            revoker,
            accounts,
            issuers,
            auditor,
            origins,
            introspection_limit,
            revocation_limit,
            feed_limit,
            clock,
        };
        let connections = Arc::new(crate::http::connections::Connections::default());
        let stuck_after =
            config.keep_alive + config.client_request_timeout + std::time::Duration::from_secs(1);
        let server = run(listener, &config, state, connections.clone())?;
        let watchdog = crate::http::connections::spawn_watchdog(connections, stuck_after);
        // Installed before `build` returns, so a SIGTERM that arrives as soon
        // as the caller reports "listening" is already a graceful stop.
        let signals = ShutdownSignals::install()?;
        Ok(Application {
            port,
            server,
            store,
            maintenance,
            revocations,
            audit_writer,
            checkpoints,
            watchdog,
            chain_key,
            signals,
            hsm,
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

    /// Serves until SIGINT/SIGTERM (or an [`Application::handle`] stop), lets
    /// in-flight requests finish, then closes the database pool.
    pub async fn run_until_stopped(mut self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let mut server = self.server;
        let result = tokio::select! {
            result = &mut server => result,
            signal = self.signals.recv() => {
                tracing::info!(signal, "shutting down: finishing in-flight requests");
                // The command is sent now; the server future (polled below)
                // carries it out, so awaiting `stop` itself would deadlock.
                drop(handle.stop(true));
                server.await
            }
        };
        self.maintenance.abort();
        self.revocations.abort();
        self.checkpoints.abort();
        self.watchdog.abort();
        // No request signs any more; a maintenance tick still in the module
        // finishes first. A token that hangs does not hang the shutdown.
        if let Some(hsm) = self.hsm.take() {
            let closing = tokio::task::spawn_blocking(move || hsm.close());
            if tokio::time::timeout(std::time::Duration::from_secs(10), closing)
                .await
                .is_err()
            {
                tracing::error!("the PKCS#11 module did not close within 10 s; exiting anyway");
            }
        }
        // The server (and with it every auditor clone) is gone: the writer
        // stores what is queued and ends.
        if tokio::time::timeout(std::time::Duration::from_secs(10), &mut self.audit_writer)
            .await
            .is_err()
        {
            tracing::error!("audit events still queued at shutdown could not be stored in time");
            self.audit_writer.abort();
        }
        // The last rows, vouched for: cutting them off later is detected.
        if let Err(e) = crate::audit::checkpoint(self.store.as_ref(), &self.chain_key, None).await {
            tracing::error!(error = %e, "the audit checkpoint at shutdown could not be written");
        }
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

/// Opens the key ring under the configured rotation policy (creating the
/// first signing key on a new database).
pub async fn open_key_ring(
    config: &Config,
    store: Arc<dyn Store>,
    master_key: MasterKey,
) -> anyhow::Result<Arc<KeyRing>> {
    let policy = RotationPolicy {
        jwks_max_age: config.jwks_max_age,
        access_token_ttl: config.access_token_ttl,
        rotation_period: config.signing_key_rotation,
    };
    let now = chrono::Utc::now().timestamp();
    let hsm = load_hsm(config)?;
    Ok(Arc::new(
        KeyRing::open_with_hsm(store, master_key, policy, now, hsm).await?,
    ))
}

/// The configured PKCS#11 module, loaded and initialised; errors name the
/// setting.
pub fn load_hsm(config: &Config) -> Result<Option<Arc<crate::keys::pkcs11::Hsm>>, ConfigError> {
    let Some(setting) = &config.pkcs11 else {
        return Ok(None);
    };
    let pin = read_pin(setting)?;
    crate::keys::pkcs11::Hsm::load(&setting.module, &pin)
        .map(Some)
        .map_err(|e| ConfigError {
            key: setting.module_setting.clone(),
            message: e.to_string(),
        })
}

fn read_pin(
    setting: &crate::config::Pkcs11Setting,
) -> Result<zeroize::Zeroizing<String>, ConfigError> {
    match &setting.pin {
        crate::config::Pkcs11Pin::Value(pin) => Ok(pin.clone()),
        crate::config::Pkcs11Pin::File { path, setting } => {
            let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                ConfigError {
                    key: setting.clone(),
                    message: format!("cannot read {}: {e}", path.display()),
                }
            })?);
            match text.trim() {
                "" => Err(ConfigError {
                    key: setting.clone(),
                    message: format!("{} is empty", path.display()),
                }),
                pin => Ok(zeroize::Zeroizing::new(pin.to_owned())),
            }
        }
    }
}

/// Keeps keys, audience encryption keys and CORS origins current: every second, so that
/// changes made by another instance or the CLI take effect within a second.
fn spawn_maintenance(
    keys: Arc<KeyRing>,
    audiences: Arc<AudienceKeys>,
    origins: Arc<AllowedOrigins>,
    store: Arc<dyn Store>,
    auditor: Auditor,
    throttle: LoginThrottle,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        // Log a failure once when it starts and once when it ends, not every second.
        let mut failing = false;
        loop {
            tick.tick().await;
            let now = chrono::Utc::now().timestamp();
            if n.is_multiple_of(60) {
                match keys.rotate_if_due(now).await {
                    Ok(None) => {}
                    Ok(Some(added)) => {
                        auditor
                            .record_durable(
                                crate::audit::Event::new("system", Action::KeyRotated)
                                    .subject(&added.kid)
                                    .detail("activate_at", added.activate_at)
                                    .detail("automatic", true),
                            )
                            .await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "automatic key rotation failed; will retry")
                    }
                }
                // Counters go once they neither count nor lock anything.
                if let Err(e) = throttle.purge(now).await {
                    tracing::warn!(error = %e, "purging failed-login counters failed; will retry");
                }
                // Sessions are kept a day past their end (for the admin view
                // and for clear replay answers), then deleted in batches
                // until none is left.
                match purge_expired(store.as_ref(), now, PURGE_BATCH).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(rows = n, "purged expired sessions and revocation entries")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "purging expired sessions failed; will retry")
                    }
                }
            }
            if n.is_multiple_of(10) {
                release_free_memory();
            }
            let result = match keys.refresh(now).await {
                Ok(()) => match audiences.refresh(store.as_ref()).await {
                    Ok(()) => origins
                        .refresh(store.as_ref())
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(e.to_string()),
            };
            match (result, failing) {
                (Err(e), false) => {
                    tracing::warn!(error = %e, "cannot refresh keys; serving the last known keys until the database is back");
                    failing = true;
                }
                (Ok(()), true) => {
                    tracing::info!("key refresh works again");
                    failing = false;
                }
                _ => {}
            }
            n = n.wrapping_add(1);
        }
    })
}

/// Hands memory freed after a burst (thousands of connections, a login
/// flood) back to the system. glibc keeps freed heap in its arenas, so
/// without this the process stays at its peak size after an attack; the
/// call costs well under a millisecond when there is nothing to release.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Rows one purge statement deletes at most (a short lock each).
const PURGE_BATCH: i64 = 1000;

/// Deletes expired sessions and revocation entries in batches of `batch`
/// until a batch comes back short: however fast they grew, nothing expired
/// is left behind. Returns the rows deleted.
pub async fn purge_expired(
    store: &dyn Store,
    now: i64,
    batch: i64,
) -> crate::store::StoreResult<u64> {
    let mut total = 0;
    loop {
        let n = store.purge_expired(now - 86_400, now, batch).await?;
        total += n;
        if n < u64::try_from(batch).unwrap_or(u64::MAX) {
            return Ok(total);
        }
    }
}

/// The master key in the operator's file, or an error naming the setting.
fn read_master_key_file(path: &std::path::Path, setting: &str) -> Result<MasterKey, ConfigError> {
    MasterKey::from_file(path).map_err(|e| ConfigError {
        key: setting.to_owned(),
        message: e.to_string(),
    })
}

/// The rustls configuration of the certificate and key files, or an error
/// naming the setting whose file is wrong.
pub fn load_tls(tls: &Tls) -> Result<rustls::ServerConfig, ConfigError> {
    crate::http::tls::load(&tls.cert_file, &tls.key_file).map_err(|e| match e {
        crate::http::tls::TlsError::Cert(message) => ConfigError {
            key: tls.cert_setting.clone(),
            message,
        },
        crate::http::tls::TlsError::Key(message) => ConfigError {
            key: tls.key_setting.clone(),
            message,
        },
    })
}

/// Reads and checks every file the configuration names (the master key,
/// the TLS certificate and key) without starting anything: the binary calls
/// it first, so a bad file is a configuration error (exit status 2) naming
/// its setting, like a bad value.
pub fn check_files(config: &Config) -> Result<(), ConfigError> {
    if let MasterKeySetting::File { path, setting } = &config.master_key {
        read_master_key_file(path, setting)?;
    }
    if let Some(tls) = &config.tls {
        load_tls(tls)?;
    }
    if let Some(pkcs11) = &config.pkcs11 {
        read_pin(pkcs11)?;
    }
    Ok(())
}

use crate::keys::rewrap::{CHECK_SETTING as MASTER_KEY_CHECK, ROOT_SETTING as DERIVATION_ROOT};

/// Loads the master key(s) and makes sure they open this database's
/// secrets, so a wrong or missing key fails at start rather than at first
/// use; the key returned derives its MAC keys from the database's stored
/// root (stored on first start, as the key that sealed the check value
/// derived it, so existing digests stay valid).
pub async fn load_master_key(config: &Config, store: &dyn Store) -> anyhow::Result<MasterKey> {
    let (key, origin) = match &config.master_key {
        MasterKeySetting::Provided(key) => (key.clone(), "TESSERA_MASTER_KEY"),
        MasterKeySetting::File { path, setting } => {
            let key = read_master_key_file(path, setting)?;
            if let Some(mode) = crate::keys::master::readable_by_others(path) {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{mode:o}"),
                    "TESSERA_MASTER_KEY_FILE is readable by group or others: anyone who can read it \
                     can decrypt every secret at rest; chmod 600 it"
                );
            }
            (key, "TESSERA_MASTER_KEY_FILE")
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
    let open = |name: &str, sealed: &[u8]| match key.open(sealed, name.as_bytes()) {
        Ok(plain) => Ok(plain),
        Err(OpenError::WrongKey { found, expected }) => Err(anyhow::anyhow!(
            "{origin}: this database's secrets are sealed under master key {found}, which is not \
             configured (configured: {expected}); put that key back in {origin} (after the active \
             key) and run `tessera keys rewrap` before removing it"
        )),
        Err(OpenError::Corrupt) => Err(anyhow::anyhow!(
            "{origin}: the database's {name} setting is corrupt"
        )),
    };
    let check = store
        .init_setting(
            MASTER_KEY_CHECK,
            // `keys rewrap` re-seals it last, so while it opens only under
            // an old key, something may still need that key.
            &key.seal(
                &crate::keys::rewrap::check_text(1),
                MASTER_KEY_CHECK.as_bytes(),
            ),
        )
        .await?;
    if crate::keys::rewrap::check_version(&open(MASTER_KEY_CHECK, &check)?).is_none() {
        bail!("{origin}: the database's master-key check value is corrupt");
    }
    let root = match store.setting(DERIVATION_ROOT).await? {
        Some(sealed) => sealed,
        None => {
            let root = key
                .default_root_of(&check)
                .context("the master-key check value opened under no configured key")?;
            store
                .init_setting(
                    DERIVATION_ROOT,
                    &key.seal(&root.encode(), DERIVATION_ROOT.as_bytes()),
                )
                .await?
        }
    };
    let root = DerivationRoot::decode(&open(DERIVATION_ROOT, &root)?).with_context(|| {
        format!("{origin}: the database's {DERIVATION_ROOT} setting is corrupt")
    })?;
    let ids = key.ids_hex();
    tracing::info!(
        active = %ids[0],
        also_opens = %ids[1..].join(","),
        "master key: the active key seals, the others only open (`tessera keys rewrap` re-seals under the active one)"
    );
    Ok(key.with_root(&root))
}

/// SIGTERM and SIGINT, handled by us rather than by actix so that they are
/// in place before the server reports that it listens.
struct ShutdownSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> std::io::Result<ShutdownSignals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(ShutdownSignals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(ShutdownSignals {})
    }

    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

/// File descriptors kept for everything but client connections: the
/// database pool, the listener, log and database files, the notification
/// connection, outgoing calls.
const RESERVED_DESCRIPTORS: u64 = 128;
/// Descriptors per client connection: its socket and the head watchdog's
/// duplicate (`http::connections`).
const DESCRIPTORS_PER_CONNECTION: u64 = 2;

/// The open-file limit: raised to the hard limit if the soft one is lower
/// (as most servers do), then read back. `None` where it cannot be read.
fn descriptor_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write `limit`.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return None;
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: limit.rlim_max,
                    rlim_max: limit.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit.rlim_cur = limit.rlim_max;
                }
            }
        }
        Some(limit.rlim_cur)
    }
    #[cfg(not(unix))]
    None
}

/// Connections served at once, all workers together: `configured`, or what
/// the descriptor limit allows after the reserve, whichever is smaller. A
/// configured number the limit cannot carry is lowered to it, with a
/// warning: past it, accepting would fail with "too many open files" (and
/// the accept loop would log that twice a second) instead of connections
/// waiting their turn in the listen queue.
fn connection_budget(configured: Option<usize>, database_pool: u32) -> usize {
    let limit = descriptor_limit();
    let (budget, lowered) = budget_for(configured, limit, database_pool);
    if let Some(asked) = lowered {
        tracing::warn!(
            max_connections = asked,
            descriptor_limit = limit,
            serving = budget,
            "TESSERA_MAX_CONNECTIONS exceeds what the open-file limit allows, so it is lowered; \
             raise `ulimit -n` (LimitNOFILE= under systemd) to serve more"
        );
    }
    tracing::info!(
        max_connections = budget,
        descriptor_limit = limit,
        "connections beyond max_connections wait in the listen queue"
    );
    budget
}

/// The budget for `configured` under the descriptor `limit`, and the
/// configured number if it had to be lowered.
fn budget_for(
    configured: Option<usize>,
    limit: Option<u64>,
    database_pool: u32,
) -> (usize, Option<usize>) {
    let reserve = RESERVED_DESCRIPTORS + u64::from(database_pool);
    let allowed =
        limit.map(|l| (l.saturating_sub(reserve) / DESCRIPTORS_PER_CONNECTION).max(1) as usize);
    match (configured, allowed) {
        (Some(n), Some(allowed)) if n > allowed => (allowed, Some(n)),
        (Some(n), _) => (n, None),
        (None, Some(allowed)) => (allowed.min(100_000), None),
        (None, None) => (25_000, None),
    }
}

/// Registers each accepted connection (plain or TLS) for the head watchdog.
fn register_connection(
    connections: &crate::http::connections::Connections,
    conn: &dyn std::any::Any,
    extensions: &mut actix_web::dev::Extensions,
) {
    use actix_web::rt::net::TcpStream;
    use std::os::fd::AsFd as _;
    let socket = if let Some(tcp) = conn.downcast_ref::<TcpStream>() {
        tcp.as_fd()
    } else if let Some(tls) =
        conn.downcast_ref::<actix_tls::accept::rustls_0_23::TlsStream<TcpStream>>()
    {
        tls.get_ref().0.as_fd()
    } else {
        return;
    };
    if let Some(connection) = connections.register(socket) {
        extensions.insert(connection);
    }
}

fn run(
    listener: TcpListener,
    config: &Config,
    state: AppState,
    connections: Arc<crate::http::connections::Connections>,
) -> std::io::Result<Server> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per_worker = connection_budget(config.max_connections, config.database_max_connections)
        .div_ceil(workers);
    let data = web::Data::new(state);
    let tls = match &config.tls {
        Some(files) => Some(load_tls(files).map_err(std::io::Error::other)?),
        None => None,
    };
    let secure = tls.is_some();
    let server = HttpServer::new(move || {
        let mut headers = DefaultHeaders::new().add(("X-Content-Type-Options", "nosniff"));
        if secure {
            headers = headers.add(("Strict-Transport-Security", crate::http::tls::HSTS));
        }
        App::new()
            .app_data(data.clone())
            .wrap(from_fn(read_body))
            .wrap(from_fn(cors))
            .wrap(from_fn(limit_headers))
            .wrap(from_fn(request_log))
            .wrap(headers)
            .configure(routes)
            .default_service(web::to(not_found))
    })
    // A client that has not sent a whole request head in time gets 408;
    // one that stops reading the answer is cut after a second.
    .client_request_timeout(config.client_request_timeout)
    .client_disconnect_timeout(std::time::Duration::from_secs(1))
    .keep_alive(if config.keep_alive.is_zero() {
        actix_web::http::KeepAlive::Disabled
    } else {
        actix_web::http::KeepAlive::Timeout(config.keep_alive)
    })
    .shutdown_timeout(config.shutdown_timeout.as_secs())
    // Answers leave at once: with Nagle's algorithm a response written in
    // two pieces waits for the client's (delayed) ACK of the first.
    .tcp_nodelay(true)
    .workers(workers)
    .max_connections(per_worker)
    .on_connect(move |conn, extensions| register_connection(&connections, conn, extensions))
    .disable_signals();
    let server = match tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls)?,
        None => server.listen(listener)?,
    };
    Ok(server.run())
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    #[test]
    fn the_budget_never_exceeds_what_the_descriptors_allow() {
        // ulimit -n 4096, pool 16: (4096 - 128 - 16) / 2 = 1976.
        assert_eq!(budget_for(None, Some(4096), 16), (1976, None));
        assert_eq!(budget_for(Some(5000), Some(4096), 16), (1976, Some(5000)));
        assert_eq!(budget_for(Some(100), Some(4096), 16), (100, None));
        // A tiny limit gives a tiny budget, never more than it carries.
        assert_eq!(budget_for(None, Some(150), 16), (3, None));
        assert_eq!(budget_for(None, Some(10), 16), (1, None));
        assert_eq!(budget_for(None, None, 16), (25_000, None));
    }
}
