//! Test harness: fresh databases, `spawn_app`, a TCP proxy that can cut
//! the application off from PostgreSQL, and the one way tests arrange data
//! in a running app and talk to it ([`TestApp::add_client`],
//! [`TestApp::login`], [`Fixture::introspect`], [`eventually`], ...).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use tessera::auth::client::SecretDigester;
use tessera::config::Config;
use tessera::keys::master::MasterKey;
use tessera::startup::{Application, Migrations};
use tessera::store::{
    BindingPolicy, NewClient, NewUser, Store, postgres::PgStore, sqlite::SqliteStore,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The audience of the fixture's user tokens (the resource server `rs`).
pub const AUD: &str = "https://api.example";
/// The password of every user tests create.
pub const PASSWORD: &str = "correct horse battery";
/// The test configuration's issuer, the audience of admin tokens.
pub const ISSUER: &str = "http://127.0.0.1:8080";

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
    /// The running server, awaited by [`TestApp::stop`].
    running: std::sync::Mutex<Option<tokio::task::JoinHandle<std::io::Result<()>>>>,
    master_key: String,
    /// A separate connection to the app's database, for arranging test data.
    pub store: Arc<dyn Store>,
    /// Shared with the instance's peers ([`spawn_peer`]).
    _db: Arc<TestDb>,
    _data_dir: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // The stop command is sent eagerly; the returned future only waits for it.
        drop(self.handle.stop(false));
    }
}

impl TestApp {
    /// Stops the server and waits for its whole shutdown (audit queue,
    /// PKCS#11 module), as `serve` does before the process exits. Tests
    /// whose process must not exit while the app is still tearing down
    /// (a PKCS#11 module's exit handlers race it) end with this.
    pub async fn stop(&self) {
        self.handle.stop(true).await;
        let running = self.running.lock().expect("server task").take();
        if let Some(running) = running {
            running
                .await
                .expect("the server task ends")
                .expect("the server stops cleanly");
        }
    }

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
    let running = std::sync::Mutex::new(Some(tokio::spawn(app.run_until_stopped())));
    TestApp {
        address,
        client: reqwest::Client::new(),
        handle,
        running,
        master_key,
        store,
        _db: Arc::new(db),
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

/// Starts a second instance of the application on `app`'s database with
/// the same master key (as behind a load balancer): it shares nothing with
/// the first but the database, and is spoken to like any [`TestApp`].
pub async fn spawn_peer(app: &TestApp) -> TestApp {
    spawn_on_with_key(app, app.master_key())
        .await
        .expect("second instance builds")
}

/// [`spawn_peer`] with another master-key setting (one key or several):
/// an instance restarted after the operator changed the key file, or the
/// start-up error it gets.
pub async fn spawn_on_with_key(app: &TestApp, master_key: &str) -> Result<TestApp, String> {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let config = test_config(app.database_url(), master_key, data_dir.path());
    let peer = Application::build(config, Migrations::Apply)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let address = format!("http://127.0.0.1:{}", peer.port());
    let handle = peer.handle();
    let running = std::sync::Mutex::new(Some(tokio::spawn(peer.run_until_stopped())));
    Ok(TestApp {
        address,
        client: reqwest::Client::new(),
        handle,
        running,
        master_key: master_key.to_owned(),
        store: app.store.clone(),
        _db: app._db.clone(),
        _data_dir: data_dir,
    })
}

// ---- arranging data in a running app ----

/// A client to register with [`TestApp::add_client`]: scope `read` and
/// audience [`AUD`] unless told otherwise. Confidential clients are
/// resource servers (they may introspect and read the feed) unless told
/// otherwise or made admin clients.
#[derive(Clone, Debug)]
pub struct ClientSpec {
    client: NewClient,
    confidential: bool,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl ClientSpec {
    fn new(id: &str, confidential: bool, grants: &[&str]) -> ClientSpec {
        ClientSpec {
            client: NewClient {
                id: id.into(),
                secret_digest: None,
                grant_types: strings(grants),
                scopes: strings(&["read"]),
                audiences: strings(&[AUD]),
                origins: vec![],
                redirect_uris: vec![],
                cookie: false,
                admin: false,
                resource_server: confidential,
                on_binding_change: BindingPolicy::Audit,
                require_dpop: false,
                exchange_audiences: vec![],
            },
            confidential,
        }
    }

    /// A public client (no secret).
    pub fn public(id: &str, grants: &[&str]) -> ClientSpec {
        ClientSpec::new(id, false, grants)
    }

    /// A confidential client, a resource server.
    pub fn confidential(id: &str, grants: &[&str]) -> ClientSpec {
        ClientSpec::new(id, true, grants)
    }

    /// A confidential admin client as `client add --admin` makes it:
    /// `client_credentials` only, scope `tessera:admin`, audience the issuer.
    pub fn admin(id: &str) -> ClientSpec {
        ClientSpec::confidential(id, &["client_credentials"])
            .scopes(&["tessera:admin"])
            .audiences(&[ISSUER])
            .with_admin()
    }

    pub fn scopes(mut self, scopes: &[&str]) -> ClientSpec {
        self.client.scopes = strings(scopes);
        self
    }

    pub fn audiences(mut self, audiences: &[&str]) -> ClientSpec {
        self.client.audiences = strings(audiences);
        self
    }

    /// Browser origins, and SPA cookie mode.
    pub fn cookie_for(mut self, origins: &[&str]) -> ClientSpec {
        self.client.origins = strings(origins);
        self.client.cookie = true;
        self
    }

    /// Audiences it may exchange users' tokens for (RFC 8693); adds the
    /// `token-exchange` grant.
    pub fn exchange_audiences(mut self, audiences: &[&str]) -> ClientSpec {
        self.client.exchange_audiences = strings(audiences);
        if !self
            .client
            .grant_types
            .iter()
            .any(|g| g == "token-exchange")
        {
            self.client.grant_types.push("token-exchange".into());
        }
        self
    }

    /// No token without a DPoP proof (`client add --require-dpop`).
    pub fn require_dpop(mut self) -> ClientSpec {
        self.client.require_dpop = true;
        self
    }

    /// The admin flag, as is (whatever the client's kind; and no longer a
    /// resource server).
    pub fn with_admin(mut self) -> ClientSpec {
        self.client.admin = true;
        self.client.resource_server = false;
        self
    }

    /// Redirect URIs (for the authorization_code grant).
    pub fn redirect_uris(mut self, uris: &[&str]) -> ClientSpec {
        self.client.redirect_uris = strings(uris);
        self
    }

    pub fn resource_server(mut self, yes: bool) -> ClientSpec {
        self.client.resource_server = yes;
        self
    }

    pub fn on_binding_change(mut self, policy: BindingPolicy) -> ClientSpec {
        self.client.on_binding_change = policy;
        self
    }
}

/// A password grant: through the public client `spa` with [`PASSWORD`]
/// unless told otherwise.
#[derive(Clone, Debug)]
pub struct Login<'a> {
    client: &'a str,
    user: &'a str,
    password: &'a str,
    params: Vec<(&'a str, &'a str)>,
    forwarded_for: Option<&'a str>,
}

impl<'a> Login<'a> {
    pub fn new(user: &'a str) -> Login<'a> {
        Login {
            client: "spa",
            user,
            password: PASSWORD,
            params: vec![],
            forwarded_for: None,
        }
    }

    pub fn password(mut self, password: &'a str) -> Login<'a> {
        self.password = password;
        self
    }

    pub fn client(mut self, client_id: &'a str) -> Login<'a> {
        self.client = client_id;
        self
    }

    /// A further form parameter (`scope`, `audience`, `otp`).
    pub fn param(mut self, name: &'a str, value: &'a str) -> Login<'a> {
        self.params.push((name, value));
        self
    }

    /// Sent with `X-Forwarded-For` (believed only from a trusted proxy).
    pub fn forwarded_for(mut self, addresses: &'a str) -> Login<'a> {
        self.forwarded_for = Some(addresses);
        self
    }
}

impl TestApp {
    /// Registers a client directly in the app's database (no HTTP, no
    /// audit); returns its secret (empty for a public client).
    pub async fn add_client(&self, spec: ClientSpec) -> String {
        let mut client = spec.client;
        let mut secret = String::new();
        if spec.confidential {
            let digester = SecretDigester::new(&MasterKey::from_base64(self.master_key()).unwrap());
            let (generated, digest) = digester.generate();
            client.secret_digest = Some(digest);
            secret = generated.to_string();
        }
        self.store.create_client(&client, 0).await.unwrap();
        secret
    }

    /// Creates the user `name` with [`PASSWORD`] directly in the app's database.
    pub async fn add_user(&self, name: &str) -> uuid::Uuid {
        let id = uuid::Uuid::new_v4();
        self.store
            .create_user(
                &NewUser {
                    id,
                    username: name.into(),
                    password_hash: tessera::auth::password::hash(PASSWORD).unwrap(),
                    totp_secret: None,
                },
                0,
            )
            .await
            .unwrap();
        id
    }

    // ---- requests ----

    /// A form POST to `path`, ready for further headers.
    pub fn form_request(&self, path: &str, pairs: &[(&str, &str)]) -> reqwest::RequestBuilder {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        self.client
            .post(format!("{}{path}", self.address))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    }

    /// POSTs a form to `path`, with Basic credentials if given.
    pub async fn form(
        &self,
        path: &str,
        pairs: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> reqwest::Response {
        let mut req = self.form_request(path, pairs);
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        req.send().await.expect("request reaches the app")
    }

    /// `POST /oauth/token` with the password grant: the response.
    pub async fn password_grant(&self, login: Login<'_>) -> reqwest::Response {
        let mut pairs = vec![
            ("grant_type", "password"),
            ("client_id", login.client),
            ("username", login.user),
            ("password", login.password),
        ];
        pairs.extend(login.params);
        let mut req = self.form_request("/oauth/token", &pairs);
        if let Some(addresses) = login.forwarded_for {
            req = req.header("x-forwarded-for", addresses);
        }
        req.send().await.expect("request reaches the app")
    }

    /// A password login of `user` through `spa`: (access token, refresh token).
    pub async fn login(&self, user: &str) -> (String, String) {
        self.login_as(Login::new(user)).await
    }

    /// A password login that must succeed: (access token, refresh token).
    pub async fn login_as(&self, login: Login<'_>) -> (String, String) {
        let res = self.password_grant(login).await;
        assert_eq!(res.status(), 200, "login");
        let body: Value = res.json().await.unwrap();
        (
            body["access_token"].as_str().unwrap().to_owned(),
            body["refresh_token"].as_str().unwrap().to_owned(),
        )
    }

    /// A refresh through `spa`: the response.
    pub async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.form(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("client_id", "spa"),
                ("refresh_token", refresh_token),
            ],
            None,
        )
        .await
    }

    /// A client_credentials grant with Basic credentials: the response.
    pub async fn client_credentials(&self, id: &str, secret: &str) -> reqwest::Response {
        self.form(
            "/oauth/token",
            &[("grant_type", "client_credentials")],
            Some((id, secret)),
        )
        .await
    }

    /// A client_credentials grant that must succeed: the access token.
    pub async fn client_token(&self, id: &str, secret: &str) -> String {
        let res = self.client_credentials(id, secret).await;
        assert_eq!(res.status(), 200, "client_credentials for {id}");
        let body: Value = res.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// Introspection of `token` by the client `(id, secret)`: the response.
    pub async fn introspect_as(&self, client: (&str, &str), token: &str) -> reqwest::Response {
        self.form("/oauth/introspect", &[("token", token)], Some(client))
            .await
    }

    /// RFC 7009 revocation by `client_id`, authenticated with `secret` (Basic)
    /// or, for a public client, named in the form.
    pub async fn revoke(
        &self,
        token: &str,
        client_id: &str,
        secret: Option<&str>,
    ) -> reqwest::Response {
        match secret {
            Some(secret) => {
                self.form(
                    "/oauth/revoke",
                    &[("token", token)],
                    Some((client_id, secret)),
                )
                .await
            }
            None => {
                self.form(
                    "/oauth/revoke",
                    &[("token", token), ("client_id", client_id)],
                    None,
                )
                .await
            }
        }
    }

    /// A call to the admin API (`path` under `/admin/v1`), with a bearer
    /// token and a JSON body if given.
    pub async fn admin_api(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .request(method, format!("{}/admin/v1{path}", self.address));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.expect("request reaches the app")
    }
}

// ---- the common fixture ----

/// An app with a public SPA client `spa` (password and refresh grants,
/// audience [`AUD`]), a resource server `rs` (confidential, audience
/// [`AUD`]), an unrelated resource server `other`, an admin client
/// `admin`, and the user `alice` (password [`PASSWORD`]).
pub struct Fixture {
    pub app: TestApp,
    /// Secret of `rs`.
    pub rs: String,
    /// Secret of `other`.
    pub other: String,
    /// Secret of `admin`.
    pub admin: String,
}

pub async fn fixture(engine: Engine) -> Fixture {
    fixture_with(engine, &[]).await
}

/// [`fixture`] with further `TESSERA_*` settings.
pub async fn fixture_with(engine: Engine, extra: &[(&str, &str)]) -> Fixture {
    fixture_on(engine, extra, Arc::new(tessera::clock::SystemClock)).await
}

/// [`fixture_with`] whose requests read `clock` (tests move it instead of sleeping).
pub async fn fixture_on(
    engine: Engine,
    extra: &[(&str, &str)],
    clock: Arc<dyn tessera::clock::Clock>,
) -> Fixture {
    let app = spawn_app_with_clock(engine, extra, clock).await;
    app.add_client(ClientSpec::public("spa", &["password", "refresh_token"]))
        .await;
    let rs = app
        .add_client(ClientSpec::confidential("rs", &["client_credentials"]))
        .await;
    let other = app
        .add_client(
            ClientSpec::confidential("other", &["client_credentials"])
                .audiences(&["https://elsewhere.example"]),
        )
        .await;
    let admin = app.add_client(ClientSpec::admin("admin")).await;
    app.add_user("alice").await;
    Fixture {
        app,
        rs,
        other,
        admin,
    }
}

impl Fixture {
    /// Introspection by `rs`: the answer, which must be a 200 not to be cached.
    pub async fn introspect(&self, token: &str) -> Value {
        self.introspect_on(&self.app, token).await
    }

    /// [`Fixture::introspect`] on `instance` (the app or a peer).
    pub async fn introspect_on(&self, instance: &TestApp, token: &str) -> Value {
        let res = instance.introspect_as(("rs", &self.rs), token).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["cache-control"], "no-store");
        res.json().await.unwrap()
    }

    /// An access token of the admin client.
    pub async fn admin_token(&self) -> String {
        self.app.client_token("admin", &self.admin).await
    }

    /// The revocation feed as `rs` (`query` starts with `?` or is empty).
    pub async fn feed(&self, query: &str) -> reqwest::Response {
        self.app
            .client
            .get(format!("{}/v1/revocations{query}", self.app.address))
            .basic_auth("rs", Some(&self.rs))
            .send()
            .await
            .expect("request reaches the app")
    }

    /// Returns once every audit event `instance` (the app or a peer) has
    /// queued is stored. Events are written in order by one task, and `rs`
    /// revoking a fresh token of its own records a durable event, answered
    /// only after it (and so everything queued before it) is stored.
    pub async fn audit_written_on(&self, instance: &TestApp) {
        let token = instance.client_token("rs", &self.rs).await;
        let jti = self.introspect_on(instance, &token).await["jti"]
            .as_str()
            .expect("the barrier token is active")
            .to_owned();
        let res = instance.revoke(&token, "rs", Some(&self.rs)).await;
        assert_eq!(res.status(), 200, "the audit barrier's revocation");
        let rows = self.app.store.audit_page(0, 100_000).await.unwrap();
        assert!(
            rows.iter()
                .any(|r| r.action == "token_revoked" && r.subject.as_deref() == Some(&jti)),
            "the audit barrier's own event is stored"
        );
    }

    /// [`Fixture::audit_written_on`] the app.
    pub async fn audit_written(&self) {
        self.audit_written_on(&self.app).await
    }
}

// ---- time ----

/// Unix seconds by the system clock.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// How often [`eventually`] checks again.
const POLL: Duration = Duration::from_millis(20);

/// Runs `check` until it returns `Ok`, every [`POLL`], and returns its
/// value; panics naming `what` and the last `Err` once `within` has passed.
/// For what happens in the background (a task, a cache, a poll): never a
/// fixed sleep, which is too short on a busy machine and too long on an
/// idle one.
pub async fn eventually<T>(
    within: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) => assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?} (last: {last})"
            ),
        }
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn eventually_returns_what_the_check_found() {
    let mut tries = 0;
    let found = eventually(Duration::from_secs(5), "the third try", async || {
        tries += 1;
        if tries < 3 {
            Err(format!("try {tries}"))
        } else {
            Ok(tries)
        }
    })
    .await;
    assert_eq!(found, 3);
}

#[tokio::test]
#[should_panic(expected = "never: not within 50ms (last: still no)")]
async fn eventually_gives_up_at_its_deadline_naming_the_last_answer() {
    eventually(Duration::from_millis(50), "never", async || {
        Err::<(), _>("still no".to_owned())
    })
    .await;
}
