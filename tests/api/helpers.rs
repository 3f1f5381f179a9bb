//! Test harness: fresh databases, `spawn_app`, and a TCP proxy that can cut
//! the application off from PostgreSQL.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use tessera::config::Config;
use tessera::startup::{Application, Migrations};
use tessera::store::{Store, postgres::PgStore, sqlite::SqliteStore};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Which engine a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// Generates one `#[tokio::test]` per engine for each named async fn taking an [`Engine`].
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Engine::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Engine::Postgres).await
                }
            )*
        }
    };
}
pub(crate) use on_both_engines;

/// The PostgreSQL server tests use: `$DATABASE_URL`, else the local default.
/// The test script guarantees one is running (it starts a throwaway cluster
/// if needed), so an unreachable server is a failure, never a skip.
pub fn postgres_admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A database created for one test and dropped afterwards.
pub struct TestDb {
    pub engine: Engine,
    pub url: String,
    /// Keeps the SQLite directory alive.
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl TestDb {
    pub async fn new(engine: Engine) -> TestDb {
        match engine {
            Engine::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}/tessera.db", dir.path().display());
                TestDb {
                    engine,
                    url,
                    _dir: Some(dir),
                    pg_name: None,
                }
            }
            Engine::Postgres => {
                let admin = postgres_admin_url();
                let name = format!("tessera_test_{}", uuid::Uuid::new_v4().simple());
                let pool = sqlx::PgPool::connect(&admin).await.unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is required for the tests (tried {admin}: {e}); \
                         run scripts/test.sh, which finds or starts one"
                    )
                });
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                    .execute(&pool)
                    .await
                    .expect("create test database");
                pool.close().await;
                let url = with_database(&admin, &name);
                TestDb {
                    engine,
                    url,
                    _dir: None,
                    pg_name: Some(name),
                }
            }
        }
    }

    /// A URL for the same database that goes through `proxy`.
    pub fn url_via(&self, proxy: SocketAddr) -> String {
        let mut u = url::Url::parse(&self.url).expect("postgres url");
        u.set_host(Some(&proxy.ip().to_string())).unwrap();
        u.set_port(Some(proxy.port())).unwrap();
        u.to_string()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        let admin = postgres_admin_url();
        // Drop runs outside async; a short-lived runtime on its own thread does the cleanup.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let pool = sqlx::PgPool::connect(&admin).await.ok()?;
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&pool)
                .await;
                pool.close().await;
                Some(())
            })
        })
        .join();
    }
}

fn with_database(url: &str, name: &str) -> String {
    let mut u = url::Url::parse(url).expect("DATABASE_URL is a URL");
    u.set_path(&format!("/{name}"));
    u.to_string()
}

/// A fresh random master key, base64.
pub fn random_master_key() -> String {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).unwrap();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Configuration for a test instance on a random port.
pub fn test_config(database_url: &str, master_key: &str, data_dir: &std::path::Path) -> Config {
    test_config_with(database_url, master_key, data_dir, &[])
}

/// [`test_config`] with further `TESSERA_*` settings.
pub fn test_config_with(
    database_url: &str,
    master_key: &str,
    data_dir: &std::path::Path,
    extra: &[(&str, &str)],
) -> Config {
    let env = [
        ("TESSERA_DATABASE_URL", database_url.to_string()),
        ("TESSERA_LISTEN", "127.0.0.1:0".to_string()),
        ("TESSERA_MASTER_KEY", master_key.to_string()),
        ("TESSERA_DATA_DIR", data_dir.display().to_string()),
        ("TESSERA_SHUTDOWN_TIMEOUT", "1".to_string()),
    ];
    let extra = extra.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    Config::load(
        None,
        env.into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .chain(extra),
    )
    .expect("test config")
}

/// A migrated store on a fresh database, kept with the database's guard,
/// plus raw SQL access for checks that go around the store.
pub struct TestStore {
    pub store: Arc<dyn Store>,
    pub raw: RawPool,
    _db: TestDb,
}

/// The concrete pool behind a test store.
pub enum RawPool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl RawPool {
    /// Runs one statement, binding `blobs` in order.
    pub async fn execute(&self, sql: &'static str, blobs: &[&[u8]]) -> Result<u64, sqlx::Error> {
        match self {
            RawPool::Sqlite(pool) => {
                let mut q = sqlx::query(sql);
                for b in blobs {
                    q = q.bind(b.to_vec());
                }
                Ok(q.execute(pool).await?.rows_affected())
            }
            RawPool::Postgres(pool) => {
                let mut q = sqlx::query(sql);
                for b in blobs {
                    q = q.bind(b.to_vec());
                }
                Ok(q.execute(pool).await?.rows_affected())
            }
        }
    }

    /// Fetches one text value.
    pub async fn text(&self, sql: &'static str) -> String {
        match self {
            RawPool::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
            RawPool::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        }
    }
}

impl std::ops::Deref for TestStore {
    type Target = dyn Store;
    fn deref(&self) -> &Self::Target {
        self.store.as_ref()
    }
}

pub async fn test_store(engine: Engine) -> TestStore {
    let db = TestDb::new(engine).await;
    let (store, raw) = connect_store(&db).await;
    store.migrate().await.expect("migrations apply");
    TestStore {
        store,
        raw,
        _db: db,
    }
}

/// Connects to a test database without migrating it.
pub async fn connect_store(db: &TestDb) -> (Arc<dyn Store>, RawPool) {
    match db.engine {
        Engine::Sqlite => {
            let s = SqliteStore::connect(&db.url, 4).await.expect("sqlite");
            let raw = RawPool::Sqlite(s.pool().clone());
            (Arc::new(s), raw)
        }
        Engine::Postgres => {
            let s = PgStore::connect(&db.url, 4).await.expect("postgres");
            let raw = RawPool::Postgres(s.pool().clone());
            (Arc::new(s), raw)
        }
    }
}

/// A running application and what a test needs to talk to it.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    handle: actix_web::dev::ServerHandle,
    master_key: String,
    /// A separate connection to the app's database, for arranging test data.
    pub store: Arc<dyn Store>,
    _db: TestDb,
    _data_dir: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // The stop command is sent eagerly; the returned future only waits for it.
        drop(self.handle.stop(false));
    }
}

impl TestApp {
    /// The URL of this app's database (for CLI commands against it).
    pub fn database_url(&self) -> &str {
        &self._db.url
    }

    /// The base64 master key this app runs with.
    pub fn master_key(&self) -> &str {
        &self.master_key
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request reaches the app")
    }
}

/// Starts the real application on a random port over a fresh database.
pub async fn spawn_app(engine: Engine) -> TestApp {
    spawn_app_with(engine, &[]).await
}

/// [`spawn_app`] with further `TESSERA_*` settings.
pub async fn spawn_app_with(engine: Engine, extra: &[(&str, &str)]) -> TestApp {
    let db = TestDb::new(engine).await;
    start_app(db, None, extra).await
}

/// [`spawn_app_with`] whose requests read `clock` (tests move it instead of sleeping).
pub async fn spawn_app_with_clock(
    engine: Engine,
    extra: &[(&str, &str)],
    clock: Arc<dyn tessera::clock::Clock>,
) -> TestApp {
    let db = TestDb::new(engine).await;
    start_app_on(db, None, extra, clock).await
}

/// Starts the application on `db`, optionally reaching it through a different URL.
pub async fn spawn_app_on(db: TestDb, url_override: Option<String>) -> TestApp {
    start_app(db, url_override, &[]).await
}

/// [`spawn_app_on`] with further `TESSERA_*` settings (a given
/// `TESSERA_MASTER_KEY` replaces the random one).
pub async fn spawn_app_on_with(db: TestDb, extra: &[(&str, &str)]) -> TestApp {
    start_app(db, None, extra).await
}

async fn start_app(db: TestDb, url_override: Option<String>, extra: &[(&str, &str)]) -> TestApp {
    start_app_on(
        db,
        url_override,
        extra,
        Arc::new(tessera::clock::SystemClock),
    )
    .await
}

async fn start_app_on(
    db: TestDb,
    url_override: Option<String>,
    extra: &[(&str, &str)],
    clock: Arc<dyn tessera::clock::Clock>,
) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let url = url_override.unwrap_or_else(|| db.url.clone());
    let master_key = extra
        .iter()
        .find(|(k, _)| *k == "TESSERA_MASTER_KEY")
        .map_or_else(random_master_key, |(_, v)| v.to_string());
    let config = test_config_with(&url, &master_key, data_dir.path(), extra);
    let app = Application::build_with_clock(config, Migrations::Apply, clock)
        .await
        .expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let (store, _) = connect_store(&db).await;
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        client: reqwest::Client::new(),
        handle,
        master_key,
        store,
        _db: db,
        _data_dir: data_dir,
    }
}

/// A TCP forwarder that can be cut (closing every connection) and restored
/// on the same port, to take a database away from a running app.
pub struct TcpProxy {
    pub addr: SocketAddr,
    target: SocketAddr,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl TcpProxy {
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let proxy = TcpProxy {
            addr,
            target,
            task: Mutex::new(None),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let target = self.target;
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        *self.task.lock().unwrap() = Some(task);
    }

    /// Closes the listener and every forwarded connection.
    pub async fn cut(&self) {
        let task = self.task.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port.
    pub async fn restore(&self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("rebind proxy port");
        self.serve(listener);
    }
}

/// The socket address of the PostgreSQL server in `url`.
pub async fn postgres_socket(url: &str) -> SocketAddr {
    let u = url::Url::parse(url).unwrap();
    let host = u.host_str().unwrap_or("127.0.0.1").to_string();
    let port = u.port().unwrap_or(5432);
    tokio::net::lookup_host((host.as_str(), port))
        .await
        .unwrap()
        .next()
        .expect("postgres host resolves")
}

/// A second instance of the application on the same database (as behind a
/// load balancer): shares nothing with the first but the database.
pub struct Peer {
    pub address: String,
    handle: actix_web::dev::ServerHandle,
    _data_dir: tempfile::TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// Starts another instance on `app`'s database with the same master key.
pub async fn spawn_peer(app: &TestApp) -> Peer {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let config = test_config(app.database_url(), app.master_key(), data_dir.path());
    let peer = Application::build(config, Migrations::Apply)
        .await
        .expect("second instance builds");
    let address = format!("http://127.0.0.1:{}", peer.port());
    let handle = peer.handle();
    tokio::spawn(peer.run_until_stopped());
    Peer {
        address,
        handle,
        _data_dir: data_dir,
    }
}
