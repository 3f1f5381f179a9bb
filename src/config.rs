//! Configuration: a TOML file overridden by `TESSERA_*` environment variables.
//!
//! Every key is listed once in [`KEYS`]; the file uses the lower-case name
//! (`access_token_ttl = "15m"`), the environment the upper-case name with the
//! `TESSERA_` prefix (`TESSERA_ACCESS_TOKEN_TTL=15m`). Values are validated
//! here, before anything starts, so a typo stops the process with one line
//! naming the key instead of surfacing later as a confusing runtime error.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::rate_limit::Rate;
use crate::keys::master::MasterKey;
use crate::store::{Engine, redact_url};

/// Every configuration key, in file spelling. The environment spelling is
/// `TESSERA_` + the upper-cased name.
pub const KEYS: &[&str] = &[
    "database_url",
    "database_max_connections",
    "listen",
    "issuer",
    "access_token_ttl",
    "refresh_idle_ttl",
    "refresh_absolute_ttl",
    "refresh_reuse_grace",
    "jwks_max_age",
    "signing_key_rotation",
    "master_key",
    "master_key_file",
    "data_dir",
    "log_format",
    "log_level",
    "shutdown_timeout",
    "login_failure_limit",
    "login_network_failure_limit",
    "login_failure_window",
    "login_lockout_max",
    "login_queue_limit",
    "login_queue_timeout",
    "login_network_concurrency",
    "token_rate_limit",
    "introspection_rate_limit",
    "revocation_rate_limit",
    "feed_rate_limit",
    "trusted_proxies",
    "tls_cert_file",
    "tls_key_file",
    "client_request_timeout",
    "client_body_timeout",
    "keep_alive",
    "max_connections",
];

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

struct Raw {
    value: String,
    origin: Origin,
}

/// The raw key/value pairs after merging file and environment.
struct Sources {
    values: HashMap<&'static str, Raw>,
}

impl Sources {
    fn key_name(&self, key: &str) -> String {
        match self.values.get(key).map(|r| &r.origin) {
            Some(Origin::File(path)) => format!("{key} (in {})", path.display()),
            Some(Origin::Env(var)) => var.clone(),
            None => env_name(key),
        }
    }

    fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            key: self.key_name(key),
            message: message.into(),
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|r| r.value.as_str())
    }

    fn is_set(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    fn get_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    fn parse<T>(
        &self,
        key: &str,
        default: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        parse(self.get_or(key, default)).map_err(|m| self.error(key, m))
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
        let mut values: HashMap<&'static str, Raw> = HashMap::new();
        if let Some(path) = file {
            read_file(path, &mut values)?;
        }
        for (var, value) in env {
            let Some(rest) = var.strip_prefix("TESSERA_") else {
                continue;
            };
            if NON_KEY_VARIABLES.contains(&var.as_str()) {
                continue;
            }
            let lower = rest.to_ascii_lowercase();
            let Some(key) = KEYS.iter().find(|k| **k == lower) else {
                return Err(ConfigError {
                    key: var.clone(),
                    message:
                        "unknown configuration variable (see docs/configuration.md for the list)"
                            .into(),
                });
            };
            values.insert(
                key,
                Raw {
                    value,
                    origin: Origin::Env(var),
                },
            );
        }
        Config::validate(Sources { values })
    }

    fn validate(src: Sources) -> Result<Config, ConfigError> {
        let database_url = src.get_or("database_url", DEFAULT_DATABASE_URL).to_owned();
        let engine = Engine::from_url(&database_url).ok_or_else(|| {
            src.error(
                "database_url",
                "unsupported database URL (expected postgres://… or sqlite://…)",
            )
        })?;
        let database_max_connections = src.parse("database_max_connections", "16", |v| match v
            .parse::<u32>()
        {
            Ok(n) if (1..=1000).contains(&n) => Ok(n),
            _ => Err(format!("'{v}' is not a whole number from 1 to 1000")),
        })?;
        let listen = src.parse("listen", "127.0.0.1:8080", |v| {
            v.parse::<SocketAddr>().map_err(|_| {
                format!("'{v}' is not a socket address (expected HOST:PORT such as 127.0.0.1:8080)")
            })
        })?;
        let issuer = src.parse("issuer", "http://127.0.0.1:8080", parse_issuer)?;

        let access_token_ttl = src.parse("access_token_ttl", "900", |v| {
            parse_duration_within(v, Duration::from_secs(60), Duration::from_secs(86_400))
        })?;
        let refresh_idle_ttl = src.parse("refresh_idle_ttl", "14d", |v| {
            parse_duration_within(
                v,
                Duration::from_secs(60),
                Duration::from_secs(366 * 86_400),
            )
        })?;
        let refresh_absolute_ttl = src.parse("refresh_absolute_ttl", "30d", |v| {
            parse_duration_within(
                v,
                Duration::from_secs(60),
                Duration::from_secs(366 * 86_400),
            )
        })?;
        if refresh_absolute_ttl < refresh_idle_ttl {
            return Err(src.error(
                "refresh_absolute_ttl",
                format!(
                    "must not be shorter than refresh_idle_ttl ({})",
                    humantime::format_duration(refresh_idle_ttl)
                ),
            ));
        }
        // Short by design: a reused token inside the window is not treated as theft.
        let refresh_reuse_grace = src.parse("refresh_reuse_grace", "0", |v| {
            parse_duration_within(v, Duration::ZERO, Duration::from_secs(60))
        })?;
        let jwks_max_age = src.parse("jwks_max_age", "300", |v| {
            parse_duration_within(v, Duration::ZERO, Duration::from_secs(86_400))
        })?;
        let signing_key_rotation = src.parse("signing_key_rotation", "30d", |v| {
            parse_duration_within(v, Duration::ZERO, Duration::from_secs(3660 * 86_400))
        })?;
        let signing_key_rotation =
            (!signing_key_rotation.is_zero()).then_some(signing_key_rotation);
        if let Some(period) = signing_key_rotation {
            // A key must outlive its own publication lead time and the tokens it signs.
            let minimum = jwks_max_age + access_token_ttl + Duration::from_secs(120);
            if period < minimum {
                return Err(src.error(
                    "signing_key_rotation",
                    format!(
                        "must be 0 (off) or at least jwks_max_age + access_token_ttl + 2m ({})",
                        fmt_duration(minimum)
                    ),
                ));
            }
        }
        let shutdown_timeout = src.parse("shutdown_timeout", "30", |v| {
            parse_duration_within(v, Duration::ZERO, Duration::from_secs(3600))
        })?;

        let count = |key: &str, default: &str| {
            src.parse(key, default, |v| match v.parse::<i64>() {
                Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
                _ => Err(format!("'{v}' is not a whole number from 1 to 1000000")),
            })
        };
        let seconds = |key: &str, default: &str| {
            src.parse(key, default, |v| {
                parse_duration_within(v, Duration::from_secs(1), Duration::from_secs(86_400))
            })
            .map(|d| d.as_secs() as i64)
        };
        let login = crate::auth::throttle::LoginPolicy {
            account_failures: count("login_failure_limit", "5")?,
            network_failures: count("login_network_failure_limit", "50")?,
            window: seconds("login_failure_window", "15m")?,
            max_lockout: seconds("login_lockout_max", "15m")?,
        };

        let login_gate = crate::auth::gate::GatePolicy {
            slots: std::thread::available_parallelism().map_or(2, |n| n.get()),
            queue: count("login_queue_limit", "64")? as usize,
            wait: src.parse("login_queue_timeout", "2", |v| {
                parse_duration_within(v, Duration::from_millis(100), Duration::from_secs(60))
            })?,
            per_network: count("login_network_concurrency", "4")? as usize,
        };
        let token_rate_limit = src.parse("token_rate_limit", "100/s", Rate::parse)?;
        let revocation_rate_limit = src.parse("revocation_rate_limit", "10/s", Rate::parse)?;
        let feed_rate_limit = src.parse("feed_rate_limit", "20/s", Rate::parse)?;
        let max_connections = src.parse("max_connections", "auto", |v| match v {
            "auto" => Ok(None),
            n => match n.parse::<usize>() {
                Ok(n) if (1..=1_000_000).contains(&n) => Ok(Some(n)),
                _ => Err(format!(
                    "'{v}' is not auto or a whole number from 1 to 1000000"
                )),
            },
        })?;
        let introspection_rate_limit =
            src.parse("introspection_rate_limit", "1000/s", Rate::parse)?;
        let trusted_proxies = src.parse("trusted_proxies", "", parse_networks)?;
        let tls = tls_setting(&src)?;
        let client_request_timeout = src.parse("client_request_timeout", "5", |v| {
            parse_duration_within(v, Duration::from_secs(1), Duration::from_secs(60))
        })?;
        let client_body_timeout = src.parse("client_body_timeout", "10", |v| {
            parse_duration_within(v, Duration::from_secs(1), Duration::from_secs(60))
        })?;
        let keep_alive = src.parse("keep_alive", "5", |v| {
            parse_duration_within(v, Duration::ZERO, Duration::from_secs(300))
        })?;

        let data_dir = PathBuf::from(src.get_or("data_dir", "data"));
        if data_dir.as_os_str().is_empty() {
            return Err(src.error("data_dir", "must not be empty"));
        }
        let master_key = master_key_setting(&src, engine, &data_dir)?;

        let log_format = src.parse("log_format", "text", |v| match v {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("'{v}' is not a log format (expected text or json)")),
        })?;
        let log_level = src.parse("log_level", "info", |v| {
            tracing_subscriber::EnvFilter::try_new(v)
                .map(|_| v.to_owned())
                .map_err(|e| format!("'{v}' is not a log filter ({e}); try info or tessera=debug"))
        })?;

        Ok(Config {
            database_url: DatabaseUrl(database_url),
            database_max_connections,
            listen,
            issuer,
            access_token_ttl,
            refresh_idle_ttl,
            refresh_absolute_ttl,
            refresh_reuse_grace,
            jwks_max_age,
            signing_key_rotation,
            master_key,
            data_dir,
            log_format,
            log_level,
            shutdown_timeout,
            login,
            login_gate,
            token_rate_limit,
            revocation_rate_limit,
            feed_rate_limit,
            introspection_rate_limit,
            trusted_proxies,
            tls,
            client_request_timeout,
            client_body_timeout,
            keep_alive,
            max_connections,
        })
    }

    /// The storage engine chosen by `database_url`.
    pub fn engine(&self) -> Engine {
        Engine::from_url(&self.database_url).expect("validated at load")
    }
}

/// The embedded default: a SQLite file created on first start.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/tessera.db";

fn read_file(path: &Path, values: &mut HashMap<&'static str, Raw>) -> Result<(), ConfigError> {
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
        let Some(key) = KEYS.iter().find(|k| **k == name) else {
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
                        "expected a string or a whole number, found a {}",
                        other.type_str()
                    ),
                });
            }
        };
        values.insert(
            key,
            Raw {
                value,
                origin: Origin::File(path.to_owned()),
            },
        );
    }
    Ok(())
}

fn master_key_setting(
    src: &Sources,
    engine: Engine,
    data_dir: &Path,
) -> Result<MasterKeySetting, ConfigError> {
    let inline = src.is_set("master_key");
    let file = src.is_set("master_key_file");
    match (inline, file) {
        (true, true) => Err(src.error(
            "master_key_file",
            "set either the master key or the master key file, not both",
        )),
        (true, false) => {
            // Never echo the value: it is the secret that protects every other secret.
            let key = MasterKey::from_base64(src.get("master_key").unwrap_or_default())
                .map_err(|e| src.error("master_key", e.to_string()))?;
            Ok(MasterKeySetting::Provided(key))
        }
        // Read at start-up (`startup::load_master_key`), not while parsing.
        (false, true) => Ok(MasterKeySetting::File {
            path: PathBuf::from(src.get("master_key_file").unwrap_or_default()),
            setting: src.key_name("master_key_file"),
        }),
        (false, false) if engine == Engine::Postgres => Err(src.error(
            "master_key_file",
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

fn tls_setting(src: &Sources) -> Result<Option<Tls>, ConfigError> {
    let (cert, key) = match (src.get("tls_cert_file"), src.get("tls_key_file")) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (PathBuf::from(cert), PathBuf::from(key)),
        (Some(_), None) => {
            return Err(src.error("tls_key_file", "required when tls_cert_file is set"));
        }
        (None, Some(_)) => {
            return Err(src.error("tls_cert_file", "required when tls_key_file is set"));
        }
    };
    // Read at start-up (`startup::load_tls`), not while parsing.
    Ok(Some(Tls {
        cert_file: cert,
        key_file: key,
        cert_setting: src.key_name("tls_cert_file"),
        key_setting: src.key_name("tls_key_file"),
    }))
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
        assert!(
            !q.contains("hunter2") && q.starts_with("postgres://h/db?"),
            "{q}"
        );
    }
}
