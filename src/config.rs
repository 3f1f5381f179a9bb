//! Configuration: a TOML file overridden by `TESSERA_*` environment variables.
//!
//! Two layers. The raw layer lists every key once, with its default
//! (`raw_config!`); the file uses the lower-case name (`access_token_ttl =
//! "15m"`), the environment the upper-case name with the `TESSERA_` prefix
//! (`TESSERA_ACCESS_TOKEN_TTL=15m`), and an unknown key in either is refused.
//! The rules on top (`Config::validate`) turn it into typed values before
//! anything starts, so a typo stops the process with one line naming the key
//! as it was written instead of surfacing later as a confusing runtime error.
//! Parsing reads no file but the configuration file itself.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::rate_limit::Rate;
use crate::keys::master::MasterKey;
use crate::store::{Engine, redact_url};

/// Declares the raw layer once: every key in file spelling, with its default
/// (none: unset unless given). The environment spelling is `TESSERA_` + the
/// upper-cased name. Validation reads fields, not strings, so a key cannot be
/// misspelt between the list, the sources and the rules.
macro_rules! raw_config {
    ($($key:ident $(= $default:expr)?),* $(,)?) => {
        /// Every key as written (the file, then the environment over it),
        /// before validation.
        struct RawConfig {
            $($key: Setting,)*
        }

        impl RawConfig {
            fn new() -> RawConfig {
                RawConfig {
                    $($key: Setting::new(stringify!($key), Option::<&'static str>::None $(.or(Some($default)))?),)*
                }
            }

            /// The setting named `key` (file spelling), if there is one.
            fn setting(&mut self, key: &str) -> Option<&mut Setting> {
                match key {
                    $(stringify!($key) => Some(&mut self.$key),)*
                    _ => None,
                }
            }
        }

        /// Every configuration key, in file spelling.
        pub const KEYS: &[&str] = &[$(stringify!($key)),*];
    };
}

raw_config! {
    database_url = DEFAULT_DATABASE_URL,
    database_max_connections = "16",
    listen = "127.0.0.1:8080",
    issuer = "http://127.0.0.1:8080",
    access_token_ttl = "900",
    refresh_idle_ttl = "14d",
    refresh_absolute_ttl = "30d",
    // Short by design: a reused token inside the window is not treated as theft.
    refresh_reuse_grace = "0",
    sign_in_ttl = "8h",
    jwks_max_age = "300",
    signing_key_rotation = "30d",
    master_key,
    master_key_file,
    data_dir = "data",
    log_format = "text",
    log_level = "info",
    shutdown_timeout = "30",
    login_failure_limit = "5",
    login_network_failure_limit = "50",
    login_failure_window = "15m",
    login_lockout_max = "15m",
    login_queue_limit = "64",
    login_queue_timeout = "2",
    login_network_concurrency = "4",
    token_rate_limit = "100/s",
    introspection_rate_limit = "1000/s",
    revocation_rate_limit = "10/s",
    feed_rate_limit = "20/s",
    trusted_proxies = "",
    tls_cert_file,
    tls_key_file,
    client_request_timeout = "5",
    client_body_timeout = "10",
    keep_alive = "5",
    max_connections = "auto",
    pkcs11_module,
    pkcs11_pin,
    pkcs11_pin_file,
    dpop_nonce = "off",
}

/// The embedded default: a SQLite file created on first start.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/tessera.db";

/// Environment variables with the `TESSERA_` prefix that are not configuration
/// keys but are still legitimate (read by the CLI itself).
const NON_KEY_VARIABLES: &[&str] = &["TESSERA_CONFIG"];

/// The validated configuration of one tessera process. Parsing it reads no
/// file but the configuration file itself: key material and certificates
/// are read at start-up (`startup`). `Debug` shows no secret (the database
/// URL is redacted, the master key shows its id).
#[derive(Clone, Debug)]
pub struct Config {
    /// `postgres://…` or `sqlite://…`; chooses the storage engine.
    pub database_url: DatabaseUrl,
    /// Upper bound of the database connection pool.
    pub database_max_connections: u32,
    /// Address the HTTP server binds to (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The `iss` of every token and the RFC 8414 issuer identifier.
    pub issuer: String,
    /// Lifetime of access tokens.
    pub access_token_ttl: Duration,
    /// Sliding idle lifetime of a session, renewed by each refresh.
    pub refresh_idle_ttl: Duration,
    /// Fixed lifetime of a session from login.
    pub refresh_absolute_ttl: Duration,
    /// Window in which the previous refresh token of a session may be reused.
    pub refresh_reuse_grace: Duration,
    /// How long a browser stays signed in at tessera's login page (the
    /// `__Host-tessera-sso` cookie); 0 keeps no sign-in.
    pub sign_in_ttl: Duration,
    /// `Cache-Control: max-age` of the JWKS; new keys are published this
    /// long (plus a minute) before they sign.
    pub jwks_max_age: Duration,
    /// Automatic signing-key rotation period; `None` when set to 0.
    pub signing_key_rotation: Option<Duration>,
    /// Where the key that encrypts secrets at rest comes from.
    pub master_key: MasterKeySetting,
    /// Directory for the embedded database and the generated dev master key.
    pub data_dir: PathBuf,
    /// Log line format.
    pub log_format: LogFormat,
    /// A `tracing` filter directive such as `info` or `tessera=debug,info`.
    pub log_level: String,
    /// How long in-flight requests may run after SIGTERM before they are cut.
    pub shutdown_timeout: Duration,
    /// Failed-login limits (per account and per network).
    pub login: crate::auth::throttle::LoginPolicy,
    /// Bounds of the wait for a password check (queue, deadline, per network);
    /// `slots` is the number of cores.
    pub login_gate: crate::auth::gate::GatePolicy,
    /// DPoP proofs must carry a server nonce (RFC 9449 §8), shared by every
    /// instance with the same master key.
    pub dpop_nonce: bool,
    /// `/oauth/token` requests per client, per instance (`None`: off).
    pub token_rate_limit: Option<Rate>,
    /// `/oauth/revoke` requests per client, per instance (`None`: off).
    pub revocation_rate_limit: Option<Rate>,
    /// `/v1/revocations` requests per client, per instance (`None`: off).
    pub feed_rate_limit: Option<Rate>,
    /// `/oauth/introspect` requests per client, per instance (`None`: off).
    pub introspection_rate_limit: Option<Rate>,
    /// Peers whose `X-Forwarded-For` is believed (load balancers, proxies).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Serve HTTPS with this certificate and key (`None`: plain HTTP).
    pub tls: Option<Tls>,
    /// Time a client has to send a complete request head.
    pub client_request_timeout: Duration,
    /// Time a client has to send a whole request body once its head is in;
    /// slower clients get 408 and are disconnected.
    pub client_body_timeout: Duration,
    /// How long an idle keep-alive connection is kept open (0: closed after each request).
    pub keep_alive: Duration,
    /// Connections served at once, all workers together (`None`: sized
    /// from the file-descriptor limit at start).
    pub max_connections: Option<usize>,
    /// The PKCS#11 module that holds hardware-backed signing keys (`None`:
    /// every signing key is in-process, sealed under the master key).
    pub pkcs11: Option<Pkcs11Setting>,
}

/// Where signing keys in a PKCS#11 token are reached: the module (read at
/// start-up) and the user PIN. `Debug` never shows the PIN.
#[derive(Clone)]
pub struct Pkcs11Setting {
    /// Path of the module (`libsofthsm2.so`, a vendor's library).
    pub module: PathBuf,
    /// How the module setting was written, to name it in errors.
    pub module_setting: String,
    /// The user PIN, or the file holding it.
    pub pin: Pkcs11Pin,
}

/// The PKCS#11 user PIN as configured.
#[derive(Clone)]
pub enum Pkcs11Pin {
    /// Given in the configuration itself.
    Value(zeroize::Zeroizing<String>),
    /// In a file (read at start-up; surrounding whitespace ignored).
    File {
        /// The file.
        path: PathBuf,
        /// How the setting was written, to name it in errors.
        setting: String,
    },
}

impl fmt::Debug for Pkcs11Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pin = match &self.pin {
            Pkcs11Pin::Value(_) => "(given)".to_owned(),
            Pkcs11Pin::File { path, .. } => path.display().to_string(),
        };
        f.debug_struct("Pkcs11Setting")
            .field("module", &self.module)
            .field("pin", &pin)
            .finish()
    }
}

/// Native TLS settings: the files (read and checked at start-up, naming the
/// setting on error).
#[derive(Clone, Debug)]
pub struct Tls {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key of the leaf.
    pub key_file: PathBuf,
    /// How the certificate setting was written, to name it in errors.
    pub cert_setting: String,
    /// How the key setting was written.
    pub key_setting: String,
}

/// A database URL, which may carry a password: `Debug` shows it redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(pub String);

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl std::ops::Deref for DatabaseUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// Where the master key comes from.
#[derive(Clone, Debug)]
pub enum MasterKeySetting {
    /// Given by the operator in `TESSERA_MASTER_KEY`.
    Provided(MasterKey),
    /// To read from the operator's `TESSERA_MASTER_KEY_FILE`.
    File {
        /// The file.
        path: PathBuf,
        /// How the setting was written (`TESSERA_MASTER_KEY_FILE`, or the
        /// file's key), to name it in errors.
        setting: String,
    },
    /// Neither was given: a key is generated once into this file (SQLite only).
    DevFile(PathBuf),
}

/// Format of log lines on standard error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// A configuration problem, displayed as one line naming the key.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// The key as the user wrote it: `TESSERA_LISTEN` or `listen (in FILE)`.
    pub key: String,
    /// What is wrong and what is expected.
    pub message: String,
}

/// Where one raw value came from, to name it correctly in errors.
#[derive(Clone, Debug)]
enum Origin {
    Env(String),
    File(PathBuf),
}

/// One raw key: the value given for it (if any), its default, and where the
/// value came from.
struct Setting {
    key: &'static str,
    value: Option<String>,
    default: Option<&'static str>,
    origin: Option<Origin>,
}

impl Setting {
    fn new(key: &'static str, default: Option<&'static str>) -> Setting {
        Setting {
            key,
            value: None,
            default,
            origin: None,
        }
    }

    fn set(&mut self, value: String, origin: Origin) {
        self.value = Some(value);
        self.origin = Some(origin);
    }

    /// The key as the user wrote it (or would write it in the environment).
    fn name(&self) -> String {
        match &self.origin {
            Some(Origin::File(path)) => format!("{} (in {})", self.key, path.display()),
            Some(Origin::Env(var)) => var.clone(),
            None => env_name(self.key),
        }
    }

    fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            key: self.name(),
            message: message.into(),
        }
    }

    /// The value given by the operator, ignoring the default.
    fn given(&self) -> Option<&str> {
        self.value.as_deref()
    }

    /// The value given, else the default.
    fn text(&self) -> &str {
        self.value.as_deref().or(self.default).unwrap_or_default()
    }

    /// Applies a validation rule to the value (or default), naming the key on error.
    fn parse<T>(&self, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<T, ConfigError> {
        parse(self.text()).map_err(|m| self.error(m))
    }
}

fn env_name(key: &str) -> String {
    format!("TESSERA_{}", key.to_ascii_uppercase())
}

impl Config {
    /// Loads the configuration from the process environment and an optional file.
    pub fn from_env(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load(
            file,
            std::env::vars_os().filter_map(|(k, v)| {
                // A non-UTF-8 variable cannot be one of ours; a non-UTF-8 value of
                // one of ours is reported by `load` through the lossy conversion.
                let k = k.into_string().ok()?;
                Some((k, v.to_string_lossy().into_owned()))
            }),
        )
    }

    /// Loads the configuration from an optional TOML file and the given
    /// environment (passed in so tests need not touch the process environment).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut raw = RawConfig::new();
        if let Some(path) = file {
            read_file(path, &mut raw)?;
        }
        for (var, value) in env {
            let Some(rest) = var.strip_prefix("TESSERA_") else {
                continue;
            };
            if NON_KEY_VARIABLES.contains(&var.as_str()) {
                continue;
            }
            let Some(setting) = raw.setting(&rest.to_ascii_lowercase()) else {
                return Err(ConfigError {
                    key: var.clone(),
                    message:
                        "unknown configuration variable (see docs/configuration.md for the list)"
                            .into(),
                });
            };
            setting.set(value, Origin::Env(var));
        }
        Config::validate(&raw)
    }

    /// The rules on top of the raw layer: types, ranges, and the checks that
    /// relate keys to each other.
    fn validate(r: &RawConfig) -> Result<Config, ConfigError> {
        let database_url = r.database_url.text().to_owned();
        let engine = Engine::from_url(&database_url).ok_or_else(|| {
            r.database_url
                .error("unsupported database URL (expected postgres://… or sqlite://…)")
        })?;
        let within = |s: &Setting, min: u64, max: u64| {
            s.parse(|v| {
                parse_duration_within(v, Duration::from_secs(min), Duration::from_secs(max))
            })
        };
        let count = |s: &Setting| {
            s.parse(|v| match v.parse::<i64>() {
                Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
                _ => Err(format!("'{v}' is not a whole number from 1 to 1000000")),
            })
        };
        const DAY: u64 = 86_400;

        let access_token_ttl = within(&r.access_token_ttl, 60, DAY)?;
        let refresh_idle_ttl = within(&r.refresh_idle_ttl, 60, 366 * DAY)?;
        let refresh_absolute_ttl = within(&r.refresh_absolute_ttl, 60, 366 * DAY)?;
        if refresh_absolute_ttl < refresh_idle_ttl {
            return Err(r.refresh_absolute_ttl.error(format!(
                "must not be shorter than refresh_idle_ttl ({})",
                humantime::format_duration(refresh_idle_ttl)
            )));
        }
        let jwks_max_age = within(&r.jwks_max_age, 0, DAY)?;
        let signing_key_rotation = within(&r.signing_key_rotation, 0, 3660 * DAY)?;
        let signing_key_rotation =
            (!signing_key_rotation.is_zero()).then_some(signing_key_rotation);
        if let Some(period) = signing_key_rotation {
            // A key must outlive its own publication lead time and the tokens it signs.
            let minimum = jwks_max_age + access_token_ttl + Duration::from_secs(120);
            if period < minimum {
                return Err(r.signing_key_rotation.error(format!(
                    "must be 0 (off) or at least jwks_max_age + access_token_ttl + 2m ({})",
                    fmt_duration(minimum)
                )));
            }
        }
        let data_dir = PathBuf::from(r.data_dir.text());
        if data_dir.as_os_str().is_empty() {
            return Err(r.data_dir.error("must not be empty"));
        }

        Ok(Config {
            database_url: DatabaseUrl(database_url),
            database_max_connections: r.database_max_connections.parse(|v| {
                match v.parse::<u32>() {
                    Ok(n) if (1..=1000).contains(&n) => Ok(n),
                    _ => Err(format!("'{v}' is not a whole number from 1 to 1000")),
                }
            })?,
            listen: r.listen.parse(|v| {
                v.parse::<SocketAddr>().map_err(|_| {
                    format!(
                        "'{v}' is not a socket address (expected HOST:PORT such as 127.0.0.1:8080)"
                    )
                })
            })?,
            issuer: r.issuer.parse(parse_issuer)?,
            access_token_ttl,
            refresh_idle_ttl,
            refresh_absolute_ttl,
            refresh_reuse_grace: within(&r.refresh_reuse_grace, 0, 60)?,
            jwks_max_age,
            signing_key_rotation,
            master_key: master_key_setting(r, engine, &data_dir)?,
            data_dir,
            log_format: r.log_format.parse(|v| match v {
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                _ => Err(format!("'{v}' is not a log format (expected text or json)")),
            })?,
            log_level: r.log_level.parse(|v| {
                tracing_subscriber::EnvFilter::try_new(v)
                    .map(|_| v.to_owned())
                    .map_err(|e| {
                        format!("'{v}' is not a log filter ({e}); try info or tessera=debug")
                    })
            })?,
            shutdown_timeout: within(&r.shutdown_timeout, 0, 3600)?,
            sign_in_ttl: within(&r.sign_in_ttl, 0, 30 * DAY)?,
            login: crate::auth::throttle::LoginPolicy {
                account_failures: count(&r.login_failure_limit)?,
                network_failures: count(&r.login_network_failure_limit)?,
                window: within(&r.login_failure_window, 1, DAY)?.as_secs() as i64,
                max_lockout: within(&r.login_lockout_max, 1, DAY)?.as_secs() as i64,
            },
            login_gate: crate::auth::gate::GatePolicy {
                slots: std::thread::available_parallelism().map_or(2, |n| n.get()),
                queue: count(&r.login_queue_limit)? as usize,
                wait: r.login_queue_timeout.parse(|v| {
                    parse_duration_within(v, Duration::from_millis(100), Duration::from_secs(60))
                })?,
                per_network: count(&r.login_network_concurrency)? as usize,
            },
            dpop_nonce: r.dpop_nonce.parse(parse_switch)?,
            token_rate_limit: r.token_rate_limit.parse(Rate::parse)?,
            revocation_rate_limit: r.revocation_rate_limit.parse(Rate::parse)?,
            feed_rate_limit: r.feed_rate_limit.parse(Rate::parse)?,
            introspection_rate_limit: r.introspection_rate_limit.parse(Rate::parse)?,
            trusted_proxies: r.trusted_proxies.parse(parse_networks)?,
            tls: tls_setting(r)?,
            pkcs11: pkcs11_setting(r)?,
            client_request_timeout: within(&r.client_request_timeout, 1, 60)?,
            client_body_timeout: within(&r.client_body_timeout, 1, 60)?,
            keep_alive: within(&r.keep_alive, 0, 300)?,
            max_connections: r.max_connections.parse(|v| match v {
                "auto" => Ok(None),
                n => match n.parse::<usize>() {
                    Ok(n) if (1..=1_000_000).contains(&n) => Ok(Some(n)),
                    _ => Err(format!(
                        "'{v}' is not auto or a whole number from 1 to 1000000"
                    )),
                },
            })?,
        })
    }

    /// The storage engine chosen by `database_url`.
    pub fn engine(&self) -> Engine {
        Engine::from_url(&self.database_url).expect("validated at load")
    }
}

fn read_file(path: &Path, raw: &mut RawConfig) -> Result<(), ConfigError> {
    let file_error = |message: String| ConfigError {
        key: format!("--config {}", path.display()),
        message,
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| file_error(format!("cannot read: {e}")))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| file_error(format!("not valid TOML: {}", e.message())))?;
    for (name, value) in table {
        let Some(setting) = raw.setting(&name) else {
            return Err(file_error(format!(
                "unknown key '{name}' (see docs/configuration.md for the list)"
            )));
        };
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            other => {
                return Err(ConfigError {
                    key: format!("{name} (in {})", path.display()),
                    message: format!(
                        "expected a string or a whole number, found a TOML {}",
                        other.type_str()
                    ),
                });
            }
        };
        setting.set(value, Origin::File(path.to_owned()));
    }
    Ok(())
}

fn master_key_setting(
    r: &RawConfig,
    engine: Engine,
    data_dir: &Path,
) -> Result<MasterKeySetting, ConfigError> {
    let inline = r.master_key.given().is_some();
    let file = r.master_key_file.given().is_some();
    match (inline, file) {
        (true, true) => Err(r.master_key_file.error(
            "set either the master key or the master key file, not both",
        )),
        (true, false) => {
            // Never echo the value: it is the secret that protects every other secret.
            let key = MasterKey::from_base64(r.master_key.text())
                .map_err(|e| r.master_key.error(e.to_string()))?;
            Ok(MasterKeySetting::Provided(key))
        }
        // Read at start-up (`startup::load_master_key`), not while parsing.
        (false, true) => Ok(MasterKeySetting::File {
            path: PathBuf::from(r.master_key_file.text()),
            setting: r.master_key_file.name(),
        }),
        (false, false) if engine == Engine::Postgres => Err(r.master_key_file.error(
            "required with a PostgreSQL database (every instance sharing the database needs the same \
             master key); the generated development key is only for the embedded SQLite",
        )),
        (false, false) => Ok(MasterKeySetting::DevFile(data_dir.join("master.key"))),
    }
}

/// A list of IP addresses and CIDR networks, separated by commas or spaces.
fn parse_networks(v: &str) -> Result<Vec<ipnet::IpNet>, String> {
    v.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| {
                    format!(
                        "'{s}' is not an IP address or CIDR network (such as 10.0.0.0/8 or ::1)"
                    )
                })
        })
        .collect()
}

fn pkcs11_setting(r: &RawConfig) -> Result<Option<Pkcs11Setting>, ConfigError> {
    let pin = match (r.pkcs11_pin.given(), r.pkcs11_pin_file.given()) {
        (Some(_), Some(_)) => {
            return Err(r
                .pkcs11_pin_file
                .error("set either pkcs11_pin or pkcs11_pin_file, not both"));
        }
        (Some(pin), None) if !pin.trim().is_empty() => Some(Pkcs11Pin::Value(
            zeroize::Zeroizing::new(pin.trim().to_owned()),
        )),
        (Some(_), None) => return Err(r.pkcs11_pin.error("must not be empty")),
        (None, Some(path)) => Some(Pkcs11Pin::File {
            path: PathBuf::from(path),
            setting: r.pkcs11_pin_file.name(),
        }),
        (None, None) => None,
    };
    match (r.pkcs11_module.given(), pin) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(r
            .pkcs11_module
            .error("required when a PKCS#11 PIN is set (the module's path, e.g. /usr/lib/softhsm/libsofthsm2.so)")),
        (Some(_), None) => Err(r
            .pkcs11_pin_file
            .error("required when pkcs11_module is set (or set pkcs11_pin): the token's user PIN")),
        (Some(module), Some(pin)) => Ok(Some(Pkcs11Setting {
            module: PathBuf::from(module),
            module_setting: r.pkcs11_module.name(),
            pin,
        })),
    }
}

fn tls_setting(r: &RawConfig) -> Result<Option<Tls>, ConfigError> {
    let (cert, key) = match (r.tls_cert_file.given(), r.tls_key_file.given()) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (PathBuf::from(cert), PathBuf::from(key)),
        (Some(_), None) => {
            return Err(r.tls_key_file.error("required when tls_cert_file is set"));
        }
        (None, Some(_)) => {
            return Err(r.tls_cert_file.error("required when tls_key_file is set"));
        }
    };
    // Read at start-up (`startup::load_tls`), not while parsing.
    Ok(Some(Tls {
        cert_file: cert,
        key_file: key,
        cert_setting: r.tls_cert_file.name(),
        key_setting: r.tls_key_file.name(),
    }))
}

fn parse_switch(v: &str) -> Result<bool, String> {
    match v {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err("expected on or off".into()),
    }
}

fn parse_issuer(v: &str) -> Result<String, String> {
    let url = url::Url::parse(v).map_err(|e| format!("'{v}' is not an absolute URL ({e})"))?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(format!(
            "'{v}' must be an https:// (or, for development, http://) URL"
        ));
    }
    if url.host_str().is_none() {
        return Err(format!("'{v}' has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "'{v}' must not have a query or fragment (RFC 8414)"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("'{v}' must not contain user information"));
    }
    // Tokens carry the issuer exactly as configured; verifiers compare it
    // byte for byte, so it is kept verbatim rather than normalised.
    Ok(v.to_owned())
}

/// Parses whole seconds (`900`) or a humantime duration (`15m`, `14d`).
///
/// ```
/// use std::time::Duration;
/// use tessera::config::parse_duration;
/// assert_eq!(parse_duration("900"), Ok(Duration::from_secs(900)));
/// assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
/// assert_eq!(parse_duration("14d"), Ok(Duration::from_secs(14 * 86_400)));
/// assert!(parse_duration("soon").is_err());
/// ```
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("'{v}' is too large"));
    }
    humantime::parse_duration(v).map_err(|_| {
        format!("'{v}' is not a duration (expected whole seconds like 900 or a span like 15m, 14d)")
    })
}

fn parse_duration_within(v: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = parse_duration(v)?;
    if d < min || d > max {
        return Err(format!(
            "'{v}' is out of range (allowed {} to {})",
            fmt_duration(min),
            fmt_duration(max)
        ));
    }
    if d.subsec_nanos() != 0 {
        return Err(format!("'{v}' must be a whole number of seconds"));
    }
    Ok(d)
}

fn fmt_duration(d: Duration) -> String {
    if d.is_zero() {
        "0s".into()
    } else {
        humantime::format_duration(d).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::load(
            None,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    fn err(env: &[(&str, &str)]) -> String {
        load(env)
            .expect_err("configuration should be refused")
            .to_string()
    }

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn defaults_match_the_spec() {
        let c = load(&[]).unwrap();
        assert_eq!(&*c.database_url, "sqlite://data/tessera.db");
        assert_eq!(c.engine(), Engine::Sqlite);
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.issuer, "http://127.0.0.1:8080");
        assert_eq!(c.access_token_ttl, Duration::from_secs(900));
        assert_eq!(c.refresh_idle_ttl, Duration::from_secs(14 * 86_400));
        assert_eq!(c.refresh_absolute_ttl, Duration::from_secs(30 * 86_400));
        assert_eq!(c.refresh_reuse_grace, Duration::ZERO);
        assert_eq!(c.jwks_max_age, Duration::from_secs(300));
        assert_eq!(c.login, crate::auth::throttle::LoginPolicy::default());
        assert_eq!(
            c.signing_key_rotation,
            Some(Duration::from_secs(30 * 86_400))
        );
        assert!(
            matches!(c.master_key, MasterKeySetting::DevFile(ref p) if p == Path::new("data/master.key"))
        );
        assert_eq!(c.token_rate_limit.unwrap().to_string(), "100/s");
        assert_eq!(c.introspection_rate_limit.unwrap().to_string(), "1000/s");
        assert!(c.trusted_proxies.is_empty() && c.tls.is_none());
        assert_eq!(c.client_request_timeout, Duration::from_secs(5));
        assert_eq!(c.keep_alive, Duration::from_secs(5));
    }

    /// The reference table lists every key once, with the default the code uses.
    #[test]
    fn every_key_is_documented_with_its_default() {
        let docs = include_str!("../docs/configuration.md");
        let mut raw = RawConfig::new();
        for key in KEYS {
            let row = format!("| `{key}` | `{}` | ", env_name(key));
            let line = docs
                .lines()
                .find(|l| l.starts_with(&row))
                .unwrap_or_else(|| panic!("docs/configuration.md has no row for {key}"));
            let documented = line[row.len()..].split(" |").next().unwrap();
            let setting = raw.setting(key).unwrap();
            match setting.default {
                None => assert_eq!(documented, "—", "{key}"),
                Some("") => assert_eq!(documented, "none", "{key}"),
                Some(d) => assert!(
                    documented.starts_with(&format!("`{d}`")),
                    "{key}: the code's default is {d}, the docs say {documented}"
                ),
            }
        }
    }

    #[test]
    fn trusted_proxies_are_addresses_and_networks() {
        let c = load(&[("TESSERA_TRUSTED_PROXIES", "10.1.2.3/8 ::1,192.168.0.7")]).unwrap();
        let nets: Vec<String> = c.trusted_proxies.iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["10.0.0.0/8", "::1/128", "192.168.0.7/32"]);
    }

    #[test]
    fn durations_accept_seconds_and_humantime() {
        let c = load(&[
            ("TESSERA_ACCESS_TOKEN_TTL", "15m"),
            ("TESSERA_REFRESH_IDLE_TTL", "86400"),
        ])
        .unwrap();
        assert_eq!(c.access_token_ttl, Duration::from_secs(900));
        assert_eq!(c.refresh_idle_ttl, Duration::from_secs(86_400));
    }

    #[test]
    fn bad_values_name_the_key() {
        assert!(
            err(&[("TESSERA_ACCESS_TOKEN_TTL", "soon")])
                .starts_with("TESSERA_ACCESS_TOKEN_TTL: 'soon' is not a duration")
        );
        assert!(err(&[("TESSERA_ACCESS_TOKEN_TTL", "5s")]).contains("out of range"));
        assert!(err(&[("TESSERA_LISTEN", "localhost")]).starts_with("TESSERA_LISTEN: "));
        assert!(err(&[("TESSERA_ISSUER", "ftp://x")]).starts_with("TESSERA_ISSUER: "));
        assert!(err(&[("TESSERA_ISSUER", "https://x/?a=b")]).contains("query"));
        assert!(
            err(&[("TESSERA_DATABASE_URL", "mysql://x")])
                .starts_with("TESSERA_DATABASE_URL: unsupported")
        );
        assert!(err(&[("TESSERA_LOG_FORMAT", "xml")]).starts_with("TESSERA_LOG_FORMAT: "));
        assert!(
            err(&[("TESSERA_DATABASE_MAX_CONNECTIONS", "0")])
                .starts_with("TESSERA_DATABASE_MAX_CONNECTIONS: ")
        );
        assert!(
            err(&[("TESSERA_REFRESH_REUSE_GRACE", "1h")])
                .starts_with("TESSERA_REFRESH_REUSE_GRACE: ")
        );
        assert_eq!(
            load(&[("TESSERA_REFRESH_REUSE_GRACE", "5s")])
                .unwrap()
                .refresh_reuse_grace,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn absolute_lifetime_must_cover_idle_lifetime() {
        let e = err(&[
            ("TESSERA_REFRESH_IDLE_TTL", "10d"),
            ("TESSERA_REFRESH_ABSOLUTE_TTL", "1d"),
        ]);
        assert!(
            e.starts_with("TESSERA_REFRESH_ABSOLUTE_TTL: must not be shorter"),
            "{e}"
        );
    }

    #[test]
    fn key_rotation_can_be_off_but_not_too_frequent() {
        assert_eq!(
            load(&[("TESSERA_SIGNING_KEY_ROTATION", "0")])
                .unwrap()
                .signing_key_rotation,
            None
        );
        let e = err(&[("TESSERA_SIGNING_KEY_ROTATION", "10m")]);
        assert!(
            e.starts_with("TESSERA_SIGNING_KEY_ROTATION: must be 0 (off) or at least"),
            "{e}"
        );
        assert!(load(&[("TESSERA_SIGNING_KEY_ROTATION", "1d")]).is_ok());
    }

    #[test]
    fn unknown_variables_are_refused_not_ignored() {
        let e = err(&[("TESSERA_ACCES_TOKEN_TTL", "900")]);
        assert!(
            e.starts_with("TESSERA_ACCES_TOKEN_TTL: unknown configuration variable"),
            "{e}"
        );
        assert!(load(&[("TESSERA_CONFIG", "x.toml"), ("PATH", "/bin")]).is_ok());
    }

    #[test]
    fn master_key_errors_never_echo_the_value() {
        let e = err(&[("TESSERA_MASTER_KEY", "c2VjcmV0LXZhbHVl")]);
        assert!(e.starts_with("TESSERA_MASTER_KEY: "), "{e}");
        assert!(!e.contains("c2VjcmV0LXZhbHVl"), "{e}");
        assert!(
            err(&[
                ("TESSERA_MASTER_KEY", KEY),
                ("TESSERA_MASTER_KEY_FILE", "/x")
            ])
            .contains("not both")
        );
        // The file is read at start-up, and its error names the setting.
        let missing = load(&[("TESSERA_MASTER_KEY_FILE", "/nonexistent/master.key")]).unwrap();
        assert!(
            crate::startup::check_files(&missing)
                .unwrap_err()
                .to_string()
                .starts_with("TESSERA_MASTER_KEY_FILE: ")
        );
        assert!(matches!(
            load(&[("TESSERA_MASTER_KEY", KEY)]).unwrap().master_key,
            MasterKeySetting::Provided(_)
        ));
    }

    #[test]
    fn the_example_master_key_file_is_loadable() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/keys.example/master.key");
        let c = load(&[("TESSERA_MASTER_KEY_FILE", path)]).unwrap();
        assert!(matches!(c.master_key, MasterKeySetting::File { .. }));
        crate::startup::check_files(&c).unwrap();
    }

    #[test]
    fn postgres_requires_an_operator_master_key() {
        let e = err(&[("TESSERA_DATABASE_URL", "postgres://db/tessera")]);
        assert!(
            e.starts_with("TESSERA_MASTER_KEY_FILE: required with a PostgreSQL database"),
            "{e}"
        );
        let c = load(&[
            ("TESSERA_DATABASE_URL", "postgres://db/tessera"),
            ("TESSERA_MASTER_KEY", KEY),
        ])
        .unwrap();
        assert_eq!(c.engine(), Engine::Postgres);
    }

    #[test]
    fn postgres_over_a_unix_socket_is_a_postgres_url() {
        let url = "postgres:///tessera?host=/var/run/postgresql&user=tessera";
        let c = load(&[("TESSERA_DATABASE_URL", url), ("TESSERA_MASTER_KEY", KEY)]).unwrap();
        assert_eq!(c.engine(), Engine::Postgres);
        assert_eq!(&*c.database_url, url);
        assert_eq!(redact_url(url), url, "nothing secret to hide");
    }

    #[test]
    fn file_values_are_overridden_by_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tessera.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\naccess_token_ttl = 600\nissuer = \"https://auth.example\"\n").unwrap();
        let c = Config::load(
            Some(&path),
            [("TESSERA_LISTEN".to_string(), "127.0.0.1:9001".to_string())],
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9001);
        assert_eq!(c.access_token_ttl, Duration::from_secs(600));
        assert_eq!(c.issuer, "https://auth.example");
    }

    #[test]
    fn file_errors_name_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tessera.toml");
        std::fs::write(&path, "access_token_ttl = \"never\"\n").unwrap();
        let e = Config::load(Some(&path), []).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("access_token_ttl (in {})", path.display())),
            "{e}"
        );
        std::fs::write(&path, "acess_token_ttl = 900\n").unwrap();
        let e = Config::load(Some(&path), []).unwrap_err().to_string();
        assert!(e.contains("unknown key 'acess_token_ttl'"), "{e}");
        std::fs::write(&path, "listen = [1]\n").unwrap();
        assert!(
            Config::load(Some(&path), [])
                .unwrap_err()
                .to_string()
                .contains("expected a string")
        );
        std::fs::write(&path, "listen = \n").unwrap();
        assert!(
            Config::load(Some(&path), [])
                .unwrap_err()
                .to_string()
                .contains("not valid TOML")
        );
        let missing = dir.path().join("missing.toml");
        assert!(
            Config::load(Some(&missing), [])
                .unwrap_err()
                .to_string()
                .contains("cannot read")
        );
    }

    #[test]
    fn redacts_database_passwords() {
        assert_eq!(
            redact_url("postgres://u:hunter2@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            redact_url("sqlite://data/tessera.db"),
            "sqlite://data/tessera.db"
        );
        assert!(!redact_url("postgres://u:hunter2@[bad").contains("hunter2"));
        let q = redact_url("postgres://h/db?password=hunter2&sslpassword=x");
        assert_eq!(q, "postgres://h/db?password=***&sslpassword=***");
        assert_eq!(
            redact_url("postgres://h/db?sslmode=require&PassWord=hunter2"),
            "postgres://h/db?sslmode=require&PassWord=***"
        );
    }
}
