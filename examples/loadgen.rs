//! A closed-loop load generator for tessera's hot paths.
//!
//! ```sh
//! cargo build --release --example loadgen
//! target/release/examples/loadgen refresh http://127.0.0.1:8080 32 10
//! target/release/examples/loadgen client_credentials http://127.0.0.1:8080 32 10
//! target/release/examples/loadgen introspect http://127.0.0.1:8080 8 10
//! target/release/examples/loadgen verify http://127.0.0.1:8080 8 10 --rs-url http://127.0.0.1:9000
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
//!   again (not measured), so the run goes on.
//! - `introspect`: `--tokens` access tokens (default 4) are obtained with
//!   client_credentials first; then each worker `POST`s `/oauth/introspect`
//!   (`token=…`) with the confidential client in HTTP Basic, cycling through
//!   the tokens. A 200 with `"active":false` is an error.
//! - `verify`: `GET {RS_URL}/me` with `Authorization: Bearer <access token>`
//!   against `examples/resource_server.rs` (`--rs-url`, default
//!   `http://127.0.0.1:9000`); tokens as for `introspect`. Non-200 is an error.
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
//! with the server and its database: a minimal HTTP/1.1 keep-alive client
//! on one `TcpStream` per worker, request bytes formatted up front, no
//! allocation per request beyond the refresh token. The runtime is
//! single-threaded unless `--threads N` says otherwise.
//!
//! Closed loop: CONCURRENCY workers each send a request, wait for the
//! answer, send the next. The first `--warmup` seconds (default 1) are not
//! measured; then SECONDS are. Latencies of successful requests (µs) give
//! p50/p99/p99.9/max; `rate` is successful requests per second;
//! `loadgen_cpu` is the generator's own CPU use over the measured window
//! (100 % = one core). Output is one `key=value` line on stdout; the exit
//! status is 1 when no request succeeded. Only loopback targets.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const USER_AGENT: &str = "tessera-loadgen";
/// Access tokens obtained up front for `introspect` and `verify` unless
/// `--tokens` says otherwise.
const DEFAULT_TOKENS: usize = 4;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    ClientCredentials,
    Refresh,
    Introspect,
    Verify,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "client_credentials" => Mode::ClientCredentials,
            "refresh" => Mode::Refresh,
            "introspect" => Mode::Introspect,
            "verify" => Mode::Verify,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Mode::ClientCredentials => "client_credentials",
            Mode::Refresh => "refresh",
            Mode::Introspect => "introspect",
            Mode::Verify => "verify",
        }
    }
}

/// A loopback HTTP target: where to connect, what to put in `Host`, the path prefix.
#[derive(Clone, Debug)]
struct Target {
    addr: SocketAddr,
    host: String,
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
        let host = url.host_str().unwrap_or_default().to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let lookup = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let addr = tokio::net::lookup_host((lookup.as_str(), port))
            .await
            .map_err(|e| format!("{raw}: {e}"))?
            .find(|a| a.ip().is_loopback())
            .ok_or_else(|| "loadgen only targets loopback addresses".to_owned())?;
        Ok(Target {
            addr,
            host: match url.port() {
                Some(p) => format!("{host}:{p}"),
                None => host,
            },
            prefix: url.path().trim_end_matches('/').to_owned(),
        })
    }

    /// A complete request: head, and body if any.
    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
        let mut r = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {USER_AGENT}\r\n",
            self.prefix, self.host
        );
        for (k, v) in headers {
            r.push_str(&format!("{k}: {v}\r\n"));
        }
        if method == "POST" {
            r.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
            r.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        r.push_str("\r\n");
        r.push_str(body);
        r.into_bytes()
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

/// The string value of `"key":"…"` in a JSON body (tokens need no escapes).
fn json_str<'a>(body: &'a [u8], key: &str) -> Option<&'a str> {
    let body = std::str::from_utf8(body).ok()?;
    let needle = format!("\"{key}\":\"");
    let start = body.find(&needle)? + needle.len();
    let len = body[start..].find('"')?;
    Some(&body[start..start + len])
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One keep-alive HTTP/1.1 connection; reconnects when the server closes it.
struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    /// Bytes of `buf` holding data read but not consumed.
    filled: usize,
    /// Where the last response's body lies in `buf`.
    body: (usize, usize),
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        Conn {
            addr,
            stream: None,
            buf: vec![0; 16 * 1024],
            filled: 0,
            body: (0, 0),
        }
    }

    fn body(&self) -> &[u8] {
        &self.buf[self.body.0..self.body.1]
    }

    /// Sends `request` and reads the response; returns the status. The body
    /// is then in `self.body()`. A reused connection the server had closed
    /// before answering is reopened and the request sent once more.
    async fn send(&mut self, request: &[u8]) -> io::Result<u16> {
        let reused = self.stream.is_some();
        match self.try_send(request).await {
            Ok(status) => Ok(status),
            Err((e, answered)) => {
                self.stream = None;
                if reused && !answered {
                    self.try_send(request).await.map_err(|(e, _)| {
                        self.stream = None;
                        e
                    })
                } else {
                    Err(e)
                }
            }
        }
    }

    /// On error: whether any byte of a response had arrived.
    async fn try_send(&mut self, request: &[u8]) -> Result<u16, (io::Error, bool)> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr)
                .await
                .map_err(|e| (e, false))?;
            s.set_nodelay(true).map_err(|e| (e, false))?;
            self.stream = Some(s);
            self.filled = 0;
        }
        let stream = self.stream.as_mut().expect("connected");
        stream.write_all(request).await.map_err(|e| (e, false))?;

        // The head.
        let head_end = loop {
            if let Some(i) = find(&self.buf[..self.filled], b"\r\n\r\n") {
                break i + 4;
            }
            if self.filled == self.buf.len() {
                if self.buf.len() >= 1 << 20 {
                    return Err((io::Error::other("response head too large"), true));
                }
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = stream
                .read(&mut self.buf[self.filled..])
                .await
                .map_err(|e| (e, self.filled > 0))?;
            if n == 0 {
                let answered = self.filled > 0;
                return Err((
                    io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"),
                    answered,
                ));
            }
            self.filled += n;
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .map_err(|_| (io::Error::other("response head is not UTF-8"), true))?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| (io::Error::other("bad status line"), true))?;
        let mut length = None;
        let mut close = head.starts_with("HTTP/1.0");
        for line in lines {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                length = v.parse::<usize>().ok();
            } else if k.eq_ignore_ascii_case("connection") {
                close = v.eq_ignore_ascii_case("close");
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                return Err((
                    io::Error::other("chunked responses are not supported"),
                    true,
                ));
            }
        }
        let length = match (length, status) {
            (Some(n), _) => n,
            (None, 204 | 304) => 0,
            (None, _) => return Err((io::Error::other("no Content-Length"), true)),
        };

        // The body.
        let end = head_end + length;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        while self.filled < end {
            let n = stream
                .read(&mut self.buf[self.filled..])
                .await
                .map_err(|e| (e, true))?;
            if n == 0 {
                return Err((
                    io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed in body"),
                    true,
                ));
            }
            self.filled += n;
        }
        // Keep anything beyond this response (there should be nothing: no
        // pipelining) at the start of the buffer, after the body.
        self.body = (head_end, end);
        if self.filled > end {
            // Unexpected extra bytes: drop the connection rather than guess.
            close = true;
        }
        self.filled = 0;
        if close {
            self.stream = None;
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
    fixed: Vec<Vec<u8>>,
    /// `refresh`: the login request, and the fixed parts of a rotation.
    login: Vec<u8>,
    refresh_head_prefix: String,
    refresh_body_prefix: String,
    measure_from: Instant,
    end: Instant,
}

#[derive(Default)]
struct Outcome {
    latencies_us: Vec<u32>,
    errors: u64,
    /// Failed requests by kind: HTTP status, `inactive`, `io`.
    kinds: std::collections::BTreeMap<String, u64>,
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

/// Logs in with the password grant; returns the refresh token.
async fn login(conn: &mut Conn, request: &[u8]) -> Result<String, String> {
    let status = conn
        .send(request)
        .await
        .map_err(|e| format!("login: {e}"))?;
    if status != 200 {
        return Err(format!("login: HTTP {status}: {}", snippet(conn.body())));
    }
    json_str(conn.body(), "refresh_token")
        .map(str::to_owned)
        .ok_or_else(|| "login: no refresh_token in the answer".into())
}

/// The rotation request for `refresh_token`, built into `out` (no
/// allocation once `out` has grown).
fn refresh_request(plan: &Plan, refresh_token: &str, out: &mut Vec<u8>) {
    use std::io::Write as _;
    let token = || url::form_urlencoded::byte_serialize(refresh_token.as_bytes());
    let len = plan.refresh_body_prefix.len() + token().map(str::len).sum::<usize>();
    out.clear();
    out.extend_from_slice(plan.refresh_head_prefix.as_bytes());
    write!(out, "{len}\r\n\r\n").expect("writing to a Vec");
    out.extend_from_slice(plan.refresh_body_prefix.as_bytes());
    for piece in token() {
        out.extend_from_slice(piece.as_bytes());
    }
}

/// A worker's connection, and for `refresh` its logged-in chain.
struct Ready {
    conn: Conn,
    refresh_token: String,
}

/// Before the clock starts: connect, and for `refresh` log in (Argon2id-bound,
/// so the logins of many workers take a while; they are not measured).
async fn prepare(addr: SocketAddr, login_request: Option<Vec<u8>>) -> Result<Ready, String> {
    let mut conn = Conn::new(addr);
    let mut refresh_token = String::new();
    if let Some(request) = login_request {
        let mut tries = 0;
        loop {
            match login(&mut conn, &request).await {
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
    }
    Ok(Ready {
        conn,
        refresh_token,
    })
}

async fn worker(id: usize, plan: std::sync::Arc<Plan>, ready: Ready) -> Outcome {
    let mut out = Outcome {
        latencies_us: Vec::with_capacity(64 * 1024),
        ..Outcome::default()
    };
    let Ready {
        mut conn,
        mut refresh_token,
    } = ready;
    let mut request = Vec::with_capacity(1024);
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
        let req: &[u8] = if plan.mode == Mode::Refresh {
            refresh_request(&plan, &refresh_token, &mut request);
            &request
        } else if plan.fixed.is_empty() {
            &[]
        } else {
            next_fixed %= plan.fixed.len();
            let r = &plan.fixed[next_fixed];
            next_fixed += stride;
            r
        };
        let status = match conn.send(req).await {
            Ok(s) => s,
            Err(e) => {
                out.error("io".into(), || format!("I/O: {e}"), measured);
                if plan.mode == Mode::Refresh {
                    // The rotation may or may not have happened: the chain is lost.
                    relogin(&mut conn, &plan, &mut refresh_token, &mut out).await;
                } else {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                continue;
            }
        };
        let elapsed = t0.elapsed();
        let ok = status == 200
            && match plan.mode {
                Mode::Refresh => match json_str(conn.body(), "refresh_token") {
                    Some(next) => {
                        refresh_token.clear();
                        refresh_token.push_str(next);
                        true
                    }
                    None => false,
                },
                Mode::Introspect => find(conn.body(), b"\"active\":true").is_some(),
                Mode::ClientCredentials => find(conn.body(), b"\"access_token\"").is_some(),
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
            relogin(&mut conn, &plan, &mut refresh_token, &mut out).await;
        }
    }
    out
}

/// A broken refresh chain: log in again (not measured) until it works or time is up.
async fn relogin(conn: &mut Conn, plan: &Plan, refresh_token: &mut String, out: &mut Outcome) {
    while Instant::now() < plan.end {
        out.relogins += 1;
        match login(conn, &plan.login).await {
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

struct Args {
    mode: Mode,
    base: String,
    concurrency: usize,
    seconds: f64,
    warmup: f64,
    rs_url: String,
    threads: usize,
    tokens: usize,
}

fn usage() -> ! {
    eprintln!(
        "usage: loadgen client_credentials|refresh|introspect|verify BASE_URL CONCURRENCY SECONDS \
         [--warmup SECS] [--rs-url URL] [--threads N] [--tokens N]"
    );
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut positional = Vec::new();
    let mut warmup = 1.0;
    let mut rs_url = "http://127.0.0.1:9000".to_owned();
    let mut threads = 1;
    let mut tokens = DEFAULT_TOKENS;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--warmup" => warmup = value().parse().unwrap_or_else(|_| usage()),
            "--rs-url" => rs_url = value(),
            "--threads" => threads = value().parse().unwrap_or_else(|_| usage()),
            "--tokens" => tokens = value().parse().unwrap_or_else(|_| usage()),
            "-h" | "--help" => usage(),
            _ if a.starts_with("--") => usage(),
            _ => positional.push(a),
        }
    }
    if positional.len() != 4 {
        usage();
    }
    let mode = Mode::parse(&positional[0]).unwrap_or_else(|| usage());
    let concurrency: usize = positional[2].parse().unwrap_or_else(|_| usage());
    let seconds: f64 = positional[3].parse().unwrap_or_else(|_| usage());
    if concurrency == 0 || seconds <= 0.0 || warmup < 0.0 || threads == 0 || tokens == 0 {
        usage();
    }
    Args {
        mode,
        base: positional[1].clone(),
        concurrency,
        seconds,
        warmup,
        rs_url,
        threads,
        tokens,
    }
}

/// `n` access tokens from the client_credentials grant, for introspect and
/// verify (over a few connections at once: thousands take a while).
async fn setup_tokens(target: &Target, cc_request: &[u8], n: usize) -> Result<Vec<String>, String> {
    const CONNECTIONS: usize = 8;
    let fetchers: Vec<_> = (0..CONNECTIONS.min(n))
        .map(|i| {
            let (addr, request) = (target.addr, cc_request.to_vec());
            let count = n / CONNECTIONS + usize::from(i < n % CONNECTIONS);
            tokio::spawn(async move {
                let mut conn = Conn::new(addr);
                let mut tokens = Vec::with_capacity(count);
                for _ in 0..count {
                    let status = conn
                        .send(&request)
                        .await
                        .map_err(|e| format!("setup: {e}"))?;
                    if status != 200 {
                        return Err(format!(
                            "setup (client_credentials): HTTP {status}: {}",
                            snippet(conn.body())
                        ));
                    }
                    let t = json_str(conn.body(), "access_token")
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
    let target = Target::parse(&args.base).await?;
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
    let cc_request = match client_auth.as_str() {
        "basic" => target.request(
            "POST",
            "/oauth/token",
            &[("Authorization", &basic_auth)],
            &form(&cc_pairs),
        ),
        "post" => {
            cc_pairs.push(("client_id", &client_id));
            cc_pairs.push(("client_secret", &secret));
            target.request("POST", "/oauth/token", &[], &form(&cc_pairs))
        }
        other => return Err(format!("CLIENT_AUTH={other}: expected post or basic")),
    };

    let (fixed, login) = match args.mode {
        Mode::ClientCredentials => (vec![cc_request], Vec::new()),
        Mode::Refresh => {
            let (user, pass) = (
                var("USERNAME", "loadgen"),
                var("PASSWORD", "loadgen-password"),
            );
            let login = target.request(
                "POST",
                "/oauth/token",
                &[],
                &form(&[
                    ("grant_type", "password"),
                    ("client_id", &public_client),
                    ("username", &user),
                    ("password", &pass),
                ]),
            );
            (Vec::new(), login)
        }
        Mode::Introspect => {
            let tokens = setup_tokens(&target, &cc_request, args.tokens).await?;
            let fixed = tokens
                .iter()
                .map(|t| {
                    target.request(
                        "POST",
                        "/oauth/introspect",
                        &[("Authorization", &basic_auth)],
                        &form(&[("token", t)]),
                    )
                })
                .collect();
            (fixed, Vec::new())
        }
        Mode::Verify => {
            let tokens = setup_tokens(&target, &cc_request, args.tokens).await?;
            let rs = rs.as_ref().expect("verify has a resource server");
            let fixed = tokens
                .iter()
                .map(|t| {
                    rs.request(
                        "GET",
                        "/me",
                        &[("Authorization", &format!("Bearer {t}"))],
                        "",
                    )
                })
                .collect();
            (fixed, Vec::new())
        }
    };

    // Connections (and refresh logins) first; the clock starts once every
    // worker is ready.
    let addr = rs.as_ref().map_or(target.addr, |rs| rs.addr);
    let login_request = (args.mode == Mode::Refresh).then_some(&login);
    let preparing: Vec<_> = (0..args.concurrency)
        .map(|_| tokio::spawn(prepare(addr, login_request.cloned())))
        .collect();
    let mut ready = Vec::with_capacity(args.concurrency);
    for p in preparing {
        ready.push(p.await.map_err(|e| format!("setup: {e}"))??);
    }
    let measure_from = Instant::now() + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.seconds);
    let refresh_head_prefix = format!(
        "POST {}/oauth/token HTTP/1.1\r\nHost: {}\r\nUser-Agent: {USER_AGENT}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: ",
        target.prefix, target.host
    );
    let refresh_body_prefix = form(&[
        ("grant_type", "refresh_token"),
        ("client_id", &public_client),
    ]) + "&refresh_token=";
    let plan = std::sync::Arc::new(Plan {
        mode: args.mode,
        concurrency: args.concurrency,
        fixed,
        login,
        refresh_head_prefix,
        refresh_body_prefix,
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
    let mut kinds = std::collections::BTreeMap::<String, u64>::new();
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
            Mode::Introspect | Mode::Verify => args.tokens.to_string(),
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
    let args = parse_args();
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
