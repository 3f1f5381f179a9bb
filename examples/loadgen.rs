//! A closed-loop load generator for tessera's hot paths.
//!
//! ```sh
//! cargo build --release --example loadgen
//! target/release/examples/loadgen refresh http://127.0.0.1:8080 32 10
//! target/release/examples/loadgen client_credentials http://127.0.0.1:8080 32 10
//! target/release/examples/loadgen introspect http://127.0.0.1:8080 8 10
//! target/release/examples/loadgen verify http://127.0.0.1:8080 8 10 --rs-url http://127.0.0.1:9000
//! CLIENT_ID=exchanger CLIENT_SECRET=… target/release/examples/loadgen token_exchange http://127.0.0.1:8080 8 10
//! ```
//!
//! `loadgen MODE BASE_URL CONCURRENCY SECONDS [--warmup SECS] [--rs-url URL] [--threads N] [--tokens N]`
//!
//! Modes:
//!
//! - `client_credentials`: `POST /oauth/token` with the client_credentials
//!   grant of the confidential client `CLIENT_ID`/`CLIENT_SECRET`, the
//!   secret in the body (`CLIENT_AUTH=post`, the default) or in HTTP Basic
//!   (`CLIENT_AUTH=basic`).
//! - `refresh`: each worker logs in once with the password grant
//!   (`USERNAME`/`PASSWORD`, public client `PUBLIC_CLIENT_ID`), then rotates
//!   its own refresh-token chain: every request is a real rotation. A failed
//!   rotation breaks the chain: it counts as an error and the worker logs in
//!   again (not measured), so the run goes on. With `--dpop` every login and
//!   rotation carries a fresh DPoP proof by the worker's own P-256 key
//!   (`htu` `BASE_URL/oauth/token`, which must be tessera's issuer URL), so
//!   the chain is DPoP-bound and each rotation checks a proof.
//! - `introspect`: `--tokens` access tokens (default 4) are obtained with
//!   client_credentials first; then each worker `POST`s `/oauth/introspect`
//!   (`token=…`) with the confidential client in HTTP Basic, cycling through
//!   the tokens. A 200 with `"active":false` is an error.
//! - `verify`: `GET {RS_URL}/me` with `Authorization: Bearer <access token>`
//!   against `examples/resource_server.rs` (`--rs-url`, default
//!   `http://127.0.0.1:9000`); tokens as for `introspect`. Non-200 is an error.
//! - `token_exchange`: `--tokens` user access tokens are obtained first with
//!   the password grant (as `refresh` logs in); then each worker exchanges
//!   them on the user's behalf (RFC 8693, `subject_token_type` access_token)
//!   as the confidential client `CLIENT_ID`/`CLIENT_SECRET` in HTTP Basic,
//!   which must be registered with `--grant token-exchange
//!   --exchange-audience …` and serve the tokens' audience. A 200 without
//!   an access token is an error.
//!
//! A few tokens presented again and again measure the verifier's cache of
//! verified tokens (a client re-using its token); many (`--tokens 20000`,
//! more than the cache holds) make most requests verify a signature.
//!
//! Environment: `CLIENT_ID` (default `loadgen-cc`), `CLIENT_SECRET`,
//! `CLIENT_AUTH` (`post` or `basic`), `AUDIENCE` (optional `audience`
//! parameter of client_credentials), `PUBLIC_CLIENT_ID` (default `loadgen`),
//! `USERNAME` (default `loadgen`), `PASSWORD` (default `loadgen-password`).
//!
//! The measured loop stays cheap because the generator shares the machine
//! with the server and its database: one hyper HTTP/1.1 keep-alive
//! connection per worker (no pool), requests prepared up front so that
//! sending one only clones reference-counted parts, response bodies read
//! into a per-worker buffer. The runtime is single-threaded unless
//! `--threads N` says otherwise.
//!
//! Closed loop: CONCURRENCY workers each send a request, wait for the
//! answer, send the next. The first `--warmup` seconds (default 1) are not
//! measured; then SECONDS are. Latencies of successful requests (µs) give
//! p50/p99/p99.9/max; `rate` is successful requests per second;
//! `loadgen_cpu` is the generator's own CPU use over the measured window
//! (100 % = one core). Output is one `key=value` line on stdout (parsed by
//! `scripts/bench.sh`); the exit status is 1 when no request succeeded.
//! Only loopback targets.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;

const USER_AGENT: &str = "tessera-loadgen";
/// Access tokens obtained up front for `introspect` and `verify` unless
/// `--tokens` says otherwise.
const DEFAULT_TOKENS: usize = 4;

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
#[value(rename_all = "snake_case")]
enum Mode {
    ClientCredentials,
    Refresh,
    Introspect,
    Verify,
    TokenExchange,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::ClientCredentials => "client_credentials",
            Mode::Refresh => "refresh",
            Mode::Introspect => "introspect",
            Mode::Verify => "verify",
            Mode::TokenExchange => "token_exchange",
        }
    }
}

/// Closed-loop load against tessera's hot paths; prints one key=value line.
#[derive(Parser, Debug)]
#[command(name = "loadgen")]
struct Args {
    mode: Mode,
    /// tessera's base URL (loopback only).
    base_url: String,
    /// Workers, each with its own connection.
    #[arg(value_parser = at_least_one)]
    concurrency: usize,
    /// Measured seconds, after the warm-up.
    #[arg(value_parser = positive_secs)]
    seconds: f64,
    /// Seconds run before measuring (connections warm, caches filled).
    #[arg(long, value_name = "SECS", default_value_t = 1.0, value_parser = non_negative_secs)]
    warmup: f64,
    /// The resource server for `verify`.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9000")]
    rs_url: String,
    /// Runtime threads; 1 keeps the generator on one core.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = at_least_one)]
    threads: usize,
    /// `refresh`: send DPoP proofs (RFC 9449); the tokens are bound.
    #[arg(long)]
    dpop: bool,
    /// Distinct access tokens for `introspect`, `verify` and `token_exchange`.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_TOKENS, value_parser = at_least_one)]
    tokens: usize,
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}")),
    }
}

fn secs(s: &str, ok: impl Fn(f64) -> bool, want: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && ok(v) => Ok(v),
        Ok(_) => Err(format!("must be {want}")),
        Err(e) => Err(format!("{e}")),
    }
}

fn positive_secs(s: &str) -> Result<f64, String> {
    secs(s, |v| v > 0.0, "positive")
}

fn non_negative_secs(s: &str) -> Result<f64, String> {
    secs(s, |v| v >= 0.0, "0 or more")
}

/// A loopback HTTP target: where to connect, what to put in `Host`, the path prefix.
#[derive(Clone, Debug)]
struct Target {
    addr: SocketAddr,
    host: HeaderValue,
    prefix: String,
}

impl Target {
    async fn parse(raw: &str) -> Result<Target, String> {
        let url = url::Url::parse(raw).map_err(|e| format!("{raw}: {e}"))?;
        if url.scheme() != "http" {
            return Err(format!("{raw}: only http:// targets"));
        }
        let loopback_name = match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        if !loopback_name {
            return Err("loadgen only targets loopback addresses".into());
        }
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(80);
        let lookup = host.trim_start_matches('[').trim_end_matches(']');
        let addr = tokio::net::lookup_host((lookup, port))
            .await
            .map_err(|e| format!("{raw}: {e}"))?
            .find(|a| a.ip().is_loopback())
            .ok_or_else(|| "loadgen only targets loopback addresses".to_owned())?;
        let host = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        Ok(Target {
            addr,
            host: HeaderValue::try_from(host).map_err(|e| format!("{raw}: {e}"))?,
            prefix: url.path().trim_end_matches('/').to_owned(),
        })
    }

    /// A request prepared once; a form body when `body` is `Some`.
    fn template(&self, path: &str, auth: Option<&str>, body: Option<String>) -> Template {
        let uri = Uri::try_from(format!("{}{path}", self.prefix)).expect("a valid path");
        let mut headers = HeaderMap::with_capacity(4);
        headers.insert(header::HOST, self.host.clone());
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        if let Some(a) = auth {
            headers.insert(
                header::AUTHORIZATION,
                HeaderValue::try_from(a).expect("a valid header value"),
            );
        }
        let method = match body {
            Some(_) => {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                );
                Method::POST
            }
            None => Method::GET,
        };
        Template {
            method,
            uri,
            headers,
            body: body.map(Bytes::from).unwrap_or_default(),
        }
    }
}

/// A request whose parts are cloned per send: refcounts, and the header map.
#[derive(Clone)]
struct Template {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Template {
    fn request(&self) -> Request<Full<Bytes>> {
        self.with_body(self.body.clone())
    }

    /// hyper adds `Content-Length` from the body.
    fn with_body(&self, body: Bytes) -> Request<Full<Bytes>> {
        let mut r = Request::new(Full::new(body));
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.headers_mut() = self.headers.clone();
        r
    }
}

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// `Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 §2.3.1).
fn basic(id: &str, secret: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let raw = format!("{}:{}", enc(id), enc(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// A token endpoint answer; borrowed strings, as tokens need no JSON escapes.
#[derive(Deserialize)]
struct TokenAnswer<'a> {
    access_token: Option<&'a str>,
    refresh_token: Option<&'a str>,
}

impl<'a> TokenAnswer<'a> {
    fn parse(body: &'a [u8]) -> Option<TokenAnswer<'a>> {
        serde_json::from_slice(body).ok()
    }
}

#[derive(Deserialize)]
struct Introspection {
    #[serde(default)]
    active: bool,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `error: cause: …`, as hyper's own messages are terse.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// One keep-alive HTTP/1.1 connection; reconnects when the server closes it.
struct Conn {
    addr: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// The last response's body, the buffer reused from one to the next.
    body: Vec<u8>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        Conn {
            addr,
            sender: None,
            body: Vec::with_capacity(4 * 1024),
        }
    }

    fn body(&self) -> &[u8] {
        &self.body
    }

    /// Sends `make()` and reads the response; returns the status. The body
    /// is then in `self.body()`. A reused connection the server had closed
    /// before answering is reopened and the request made and sent once more.
    async fn send(&mut self, make: impl Fn() -> Request<Full<Bytes>>) -> Result<u16, BoxError> {
        let reused = self.sender.is_some();
        match self.try_send(make()).await {
            Ok(status) => Ok(status),
            Err((e, answered)) => {
                self.sender = None;
                if reused && !answered {
                    self.try_send(make()).await.map_err(|(e, _)| {
                        self.sender = None;
                        e
                    })
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn connect(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, BoxError> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        // Ends when the server closes or `sender` is dropped.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(self.sender.insert(sender))
    }

    /// On error: whether the request may have reached the server's handler.
    async fn try_send(&mut self, req: Request<Full<Bytes>>) -> Result<u16, (BoxError, bool)> {
        // A connection closed while idle (`Connection: close`, a server
        // restart) is replaced before sending: no request was lost.
        let usable = match &mut self.sender {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            let s = self.connect().await.map_err(|e| (e, false))?;
            s.ready().await.map_err(|e| (e.into(), false))?;
        }
        let sender = self.sender.as_mut().expect("connected");
        let response = sender.send_request(req).await.map_err(|e| {
            // Nothing came back on a connection the server closed (it
            // may have done so just as the request went out).
            let answered = !(e.is_canceled() || e.is_incomplete_message());
            (e.into(), answered)
        })?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        self.body.clear();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| (e.into(), true))?;
            if let Some(data) = frame.data_ref() {
                self.body.extend_from_slice(data);
            }
        }
        Ok(status)
    }
}

/// What every worker needs, shared.
struct Plan {
    mode: Mode,
    concurrency: usize,
    /// Fixed requests (client_credentials, introspect, verify), one per
    /// token; workers take them in turn.
    fixed: Vec<Template>,
    /// `refresh`: the login request, and a rotation's (its body prefix here).
    login: Option<Template>,
    refresh: Template,
    measure_from: Instant,
    end: Instant,
}

#[derive(Default)]
struct Outcome {
    latencies_us: Vec<u32>,
    errors: u64,
    /// Failed requests by kind: HTTP status, `inactive`, `io`.
    kinds: BTreeMap<String, u64>,
    relogins: u64,
    first_error: Option<String>,
}

impl Outcome {
    fn error(&mut self, kind: String, detail: impl FnOnce() -> String, measured: bool) {
        if !measured {
            return;
        }
        self.errors += 1;
        *self.kinds.entry(kind).or_default() += 1;
        if self.first_error.is_none() {
            self.first_error = Some(detail());
        }
    }
}

fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
}

/// A worker's DPoP key and the parts of its proofs made once.
struct Dpop {
    key: tessera::keys::signing::SigningKeyPair,
    /// base64url of the proof header (`typ`, `alg`, the public `jwk`).
    header: String,
    htu: String,
}

impl Dpop {
    fn new(htu: String) -> Dpop {
        let key = tessera::keys::signing::SigningKeyPair::generate();
        let jwk = key.public_jwk();
        let header = serde_json::json!({
            "typ": "dpop+jwt", "alg": "ES256",
            "jwk": { "kty": "EC", "crv": "P-256", "x": jwk.x, "y": jwk.y },
        });
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(header.to_string());
        Dpop { key, header, htu }
    }

    /// A fresh proof for `POST htu`.
    fn proof(&self) -> HeaderValue {
        let claims = serde_json::json!({
            "jti": uuid::Uuid::new_v4().to_string(), "htm": "POST", "htu": self.htu,
            "iat": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        });
        let input = format!(
            "{}.{}",
            self.header,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(input.as_bytes())
            .expect("an in-process key signs");
        HeaderValue::try_from(format!("{input}.{signature}")).expect("base64url is a header value")
    }
}

/// `request` with a fresh DPoP proof, if the worker has a key.
fn with_proof(mut request: Request<Full<Bytes>>, dpop: Option<&Dpop>) -> Request<Full<Bytes>> {
    if let Some(d) = dpop {
        request.headers_mut().insert("dpop", d.proof());
    }
    request
}

/// Logs in with the password grant; returns the refresh token.
async fn login(conn: &mut Conn, request: &Template, dpop: Option<&Dpop>) -> Result<String, String> {
    let status = conn
        .send(|| with_proof(request.request(), dpop))
        .await
        .map_err(|e| format!("login: {}", chain(&*e)))?;
    if status != 200 {
        return Err(format!("login: HTTP {status}: {}", snippet(conn.body())));
    }
    TokenAnswer::parse(conn.body())
        .and_then(|a| a.refresh_token)
        .map(str::to_owned)
        .ok_or_else(|| "login: no refresh_token in the answer".into())
}

/// The rotation body for `refresh_token`, built in `buf`: once the previous
/// body is dropped, `buf` reuses its allocation.
fn refresh_body(plan: &Plan, refresh_token: &str, buf: &mut BytesMut) -> Bytes {
    buf.extend_from_slice(&plan.refresh.body);
    for piece in url::form_urlencoded::byte_serialize(refresh_token.as_bytes()) {
        buf.extend_from_slice(piece.as_bytes());
    }
    buf.split().freeze()
}

/// A worker's connection, and for `refresh` its logged-in chain.
struct Ready {
    conn: Conn,
    refresh_token: String,
    dpop: Option<Dpop>,
}

/// Before the clock starts: connect, and for `refresh` log in (Argon2id-bound,
/// so the logins of many workers take a while; they are not measured).
async fn prepare(
    addr: SocketAddr,
    login_request: Option<Template>,
    dpop_htu: Option<String>,
) -> Result<Ready, String> {
    let mut conn = Conn::new(addr);
    let mut refresh_token = String::new();
    let dpop = dpop_htu.map(Dpop::new);
    if let Some(request) = login_request {
        let mut tries = 0;
        loop {
            match login(&mut conn, &request, dpop.as_ref()).await {
                Ok(t) => {
                    refresh_token = t;
                    break;
                }
                Err(e) if tries >= 50 => return Err(e),
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    } else {
        // Connected before the clock starts; a failure here shows as the
        // first request's error instead.
        let _ = conn.connect().await;
    }
    Ok(Ready {
        conn,
        refresh_token,
        dpop,
    })
}

async fn worker(id: usize, plan: Arc<Plan>, ready: Ready) -> Outcome {
    let mut out = Outcome {
        latencies_us: Vec::with_capacity(64 * 1024),
        ..Outcome::default()
    };
    let Ready {
        mut conn,
        mut refresh_token,
        dpop,
    } = ready;
    let dpop = dpop.as_ref();
    let mut refresh_buf = BytesMut::with_capacity(1024);
    // Worker `id` takes requests id, id + n, id + 2n, … of the fixed set
    // (n workers), so together they cycle through all of it.
    let stride = plan.concurrency.max(1);
    let mut next_fixed = id;
    loop {
        let t0 = Instant::now();
        if t0 >= plan.end {
            break;
        }
        let measured = t0 >= plan.measure_from;
        let sent = if plan.mode == Mode::Refresh {
            let body = refresh_body(&plan, &refresh_token, &mut refresh_buf);
            conn.send(|| with_proof(plan.refresh.with_body(body.clone()), dpop))
                .await
        } else {
            next_fixed %= plan.fixed.len();
            let t = &plan.fixed[next_fixed];
            next_fixed += stride;
            conn.send(|| t.request()).await
        };
        let status = match sent {
            Ok(s) => s,
            Err(e) => {
                out.error("io".into(), || format!("I/O: {}", chain(&*e)), measured);
                if plan.mode == Mode::Refresh {
                    // The rotation may or may not have happened: the chain is lost.
                    relogin(&mut conn, &plan, &mut refresh_token, &mut out, dpop).await;
                } else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                continue;
            }
        };
        let elapsed = t0.elapsed();
        let ok = status == 200
            && match plan.mode {
                Mode::Refresh => {
                    match TokenAnswer::parse(conn.body()).and_then(|a| a.refresh_token) {
                        Some(next) => {
                            refresh_token.clear();
                            refresh_token.push_str(next);
                            true
                        }
                        None => false,
                    }
                }
                Mode::Introspect => {
                    serde_json::from_slice::<Introspection>(conn.body()).is_ok_and(|i| i.active)
                }
                Mode::ClientCredentials | Mode::TokenExchange => {
                    TokenAnswer::parse(conn.body()).is_some_and(|a| a.access_token.is_some())
                }
                Mode::Verify => true,
            };
        if ok {
            if measured {
                out.latencies_us
                    .push(elapsed.as_micros().min(u32::MAX as u128) as u32);
            }
            continue;
        }
        let kind = match (status, plan.mode) {
            (200, Mode::Introspect) => "inactive".to_owned(),
            (200, _) => "unexpected-body".to_owned(),
            _ => status.to_string(),
        };
        let body = snippet(conn.body());
        out.error(kind, || format!("HTTP {status}: {body}"), measured);
        if plan.mode == Mode::Refresh {
            relogin(&mut conn, &plan, &mut refresh_token, &mut out, dpop).await;
        }
    }
    out
}

/// A broken refresh chain: log in again (not measured) until it works or time is up.
async fn relogin(
    conn: &mut Conn,
    plan: &Plan,
    refresh_token: &mut String,
    out: &mut Outcome,
    dpop: Option<&Dpop>,
) {
    let Some(request) = &plan.login else { return };
    while Instant::now() < plan.end {
        out.relogins += 1;
        match login(conn, request, dpop).await {
            Ok(t) => {
                *refresh_token = t;
                return;
            }
            Err(e) => {
                if out.first_error.is_none() {
                    out.first_error = Some(e);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// This process's CPU time (user + system), from /proc (Linux; 100 ticks/s).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at state.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split(' ').skip(11);
    let utime: f64 = f.next()?.parse().ok()?;
    let stime: f64 = f.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// `n` access tokens from `cc` (the client_credentials grant, or a password
/// login for token_exchange), for introspect, verify and token_exchange
/// (over a few connections at once: thousands take a while).
async fn setup_tokens(addr: SocketAddr, cc: &Template, n: usize) -> Result<Vec<String>, String> {
    const CONNECTIONS: usize = 8;
    let fetchers: Vec<_> = (0..CONNECTIONS.min(n))
        .map(|i| {
            let cc = cc.clone();
            let count = n / CONNECTIONS + usize::from(i < n % CONNECTIONS);
            tokio::spawn(async move {
                let mut conn = Conn::new(addr);
                let mut tokens = Vec::with_capacity(count);
                for _ in 0..count {
                    let status = conn
                        .send(|| cc.request())
                        .await
                        .map_err(|e| format!("setup: {}", chain(&*e)))?;
                    if status != 200 {
                        return Err(format!(
                            "setup (client_credentials): HTTP {status}: {}",
                            snippet(conn.body())
                        ));
                    }
                    let t = TokenAnswer::parse(conn.body())
                        .and_then(|a| a.access_token)
                        .ok_or("setup: no access_token in the answer")?;
                    tokens.push(t.to_owned());
                }
                Ok::<_, String>(tokens)
            })
        })
        .collect();
    let mut tokens = Vec::with_capacity(n);
    for f in fetchers {
        tokens.extend(f.await.map_err(|e| format!("setup: {e}"))??);
    }
    Ok(tokens)
}

async fn run(args: Args) -> Result<bool, String> {
    let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let target = Target::parse(&args.base_url).await?;
    let rs = match args.mode {
        Mode::Verify => Some(Target::parse(&args.rs_url).await?),
        _ => None,
    };
    let client_id = var("CLIENT_ID", "loadgen-cc");
    let secret = var("CLIENT_SECRET", "");
    let client_auth = var("CLIENT_AUTH", "post");
    let audience = std::env::var("AUDIENCE").ok();
    let public_client = var("PUBLIC_CLIENT_ID", "loadgen");
    let basic_auth = basic(&client_id, &secret);

    // client_credentials, as configured.
    let mut cc_pairs = vec![("grant_type", "client_credentials")];
    if let Some(a) = &audience {
        cc_pairs.push(("audience", a));
    }
    let cc = match client_auth.as_str() {
        "basic" => target.template("/oauth/token", Some(&basic_auth), Some(form(&cc_pairs))),
        "post" => {
            cc_pairs.push(("client_id", &client_id));
            cc_pairs.push(("client_secret", &secret));
            target.template("/oauth/token", None, Some(form(&cc_pairs)))
        }
        other => return Err(format!("CLIENT_AUTH={other}: expected post or basic")),
    };

    let password_login = {
        let (user, pass) = (
            var("USERNAME", "loadgen"),
            var("PASSWORD", "loadgen-password"),
        );
        let body = form(&[
            ("grant_type", "password"),
            ("client_id", &public_client),
            ("username", &user),
            ("password", &pass),
        ]);
        target.template("/oauth/token", None, Some(body))
    };
    let (fixed, login) = match args.mode {
        Mode::ClientCredentials => (vec![cc], None),
        Mode::Refresh => (Vec::new(), Some(password_login)),
        Mode::TokenExchange => {
            let tokens = setup_tokens(target.addr, &password_login, args.tokens).await?;
            let fixed = tokens
                .iter()
                .map(|t| {
                    let body = form(&[
                        (
                            "grant_type",
                            "urn:ietf:params:oauth:grant-type:token-exchange",
                        ),
                        ("subject_token", t),
                        (
                            "subject_token_type",
                            "urn:ietf:params:oauth:token-type:access_token",
                        ),
                    ]);
                    target.template("/oauth/token", Some(&basic_auth), Some(body))
                })
                .collect();
            (fixed, None)
        }
        Mode::Introspect => {
            let tokens = setup_tokens(target.addr, &cc, args.tokens).await?;
            let fixed = tokens
                .iter()
                .map(|t| {
                    let body = form(&[("token", t)]);
                    target.template("/oauth/introspect", Some(&basic_auth), Some(body))
                })
                .collect();
            (fixed, None)
        }
        Mode::Verify => {
            let tokens = setup_tokens(target.addr, &cc, args.tokens).await?;
            let rs = rs.as_ref().expect("verify has a resource server");
            let fixed = tokens
                .iter()
                .map(|t| rs.template("/me", Some(&format!("Bearer {t}")), None))
                .collect();
            (fixed, None)
        }
    };

    // Connections (and refresh logins) first; the clock starts once every
    // worker is ready.
    let addr = rs.as_ref().map_or(target.addr, |rs| rs.addr);
    let dpop_htu = (args.dpop && args.mode == Mode::Refresh)
        .then(|| format!("{}/oauth/token", args.base_url.trim_end_matches('/')));
    let preparing: Vec<_> = (0..args.concurrency)
        .map(|_| tokio::spawn(prepare(addr, login.clone(), dpop_htu.clone())))
        .collect();
    let mut ready = Vec::with_capacity(args.concurrency);
    for p in preparing {
        ready.push(p.await.map_err(|e| format!("setup: {e}"))??);
    }
    let measure_from = Instant::now() + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.seconds);
    let refresh_body_prefix = form(&[
        ("grant_type", "refresh_token"),
        ("client_id", &public_client),
    ]) + "&refresh_token=";
    let plan = Arc::new(Plan {
        mode: args.mode,
        concurrency: args.concurrency,
        fixed,
        login,
        refresh: target.template("/oauth/token", None, Some(refresh_body_prefix)),
        measure_from,
        end,
    });

    let handles: Vec<_> = ready
        .into_iter()
        .enumerate()
        .map(|(i, r)| tokio::spawn(worker(i, plan.clone(), r)))
        .collect();
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_start = cpu_seconds();
    let mut latencies = Vec::new();
    let mut errors = 0u64;
    let mut relogins = 0u64;
    let mut kinds = BTreeMap::<String, u64>::new();
    let mut first_error = None;
    for h in handles {
        let o = h.await.map_err(|e| format!("worker: {e}"))?;
        latencies.extend(o.latencies_us);
        errors += o.errors;
        relogins += o.relogins;
        for (k, n) in o.kinds {
            *kinds.entry(k).or_default() += n;
        }
        if first_error.is_none() {
            first_error = o.first_error;
        }
    }
    let elapsed = plan.measure_from.elapsed().as_secs_f64().max(1e-3);
    let cpu = match (cpu_start, cpu_seconds()) {
        (Some(a), Some(b)) => format!("{:.0}%", 100.0 * (b - a) / elapsed),
        _ => "-".to_owned(),
    };
    latencies.sort_unstable();
    let ms = |us: u32| us as f64 / 1000.0;
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let rank = ((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        ms(latencies[rank - 1])
    };
    let ok = latencies.len() as u64;
    let kinds = if kinds.is_empty() {
        "-".to_owned()
    } else {
        kinds
            .iter()
            .map(|(k, n)| format!("{k}:{n}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    println!(
        "mode={} concurrency={} threads={} tokens={} seconds={:.1} requests={} ok={ok} errors={errors} \
         error_kinds={kinds} relogins={relogins} rate={:.0}/s p50={:.2}ms p99={:.2}ms \
         p99.9={:.2}ms max={:.2}ms loadgen_cpu={cpu}",
        plan.mode.name(),
        args.concurrency,
        args.threads,
        match args.mode {
            Mode::Introspect | Mode::Verify | Mode::TokenExchange => args.tokens.to_string(),
            _ => "-".to_owned(),
        },
        elapsed,
        ok + errors,
        ok as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        pct(0.999),
        latencies.last().copied().map(ms).unwrap_or(0.0),
    );
    if let Some(e) = first_error {
        eprintln!("loadgen: first error: {e}");
    }
    Ok(ok > 0)
}

fn main() {
    let args = Args::parse();
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .expect("a tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("loadgen: no request succeeded");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(1);
        }
    }
}
