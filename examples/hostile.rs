//! Hostile load against a running tessera, one scenario per run, one
//! `key=value` result line: what `scripts/hostile.sh` measures for the
//! "hostile load" section of `docs/performance.md`.
//!
//! ```sh
//! cargo run --release --example hostile -- SCENARIO [key=value ...]
//! ```
//!
//! Scenarios (the server must trust 127.0.0.1 as a proxy, so the
//! `X-Forwarded-For` addresses below count as client networks):
//!
//! - `logins`: `attackers` workers, each from its own address, send wrong
//!   passwords for random names; one user from another address logs in
//!   with the right password, one login at a time. Reports that user's
//!   latency and statuses.
//! - `client-auth-flood`: `n` failed client authentications at once from
//!   one address; reports the statuses (the audit rows are counted by the
//!   script).
//! - `slow-bodies`: `n` connections send a head announcing a body and part
//!   of it, then trickle; reports how many the server still holds after
//!   `hold` seconds and a control request's latency meanwhile.
//! - `keepalive-head`: `n` connections send one whole request, read the
//!   answer, then half of a second head; reports how many are held after
//!   `hold` seconds.
//! - `revoke-churn`: one confidential client mints and revokes its own
//!   tokens for `secs` seconds; reports revocations accepted per second.
//! - `feed-flood`: `readers` clients page through the feed for `secs`
//!   seconds while a control client asks for client_credentials tokens;
//!   reports feed requests served per second and the control latency.
//! - `long-paths`: `n` requests with a `len`-byte path.
//! - `many-params`: `n` token requests with a 16 KB body of `params`
//!   parameters; reports the mean latency.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Args {
    scenario: String,
    values: HashMap<String, String>,
}

impl Args {
    fn parse() -> Args {
        let mut it = std::env::args().skip(1);
        let scenario = it.next().unwrap_or_default();
        let values = it
            .filter_map(|a| a.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        Args { scenario, values }
    }

    fn get(&self, key: &str, default: &str) -> String {
        self.values
            .get(key)
            .cloned()
            .or_else(|| std::env::var(key.to_uppercase()).ok())
            .unwrap_or_else(|| default.to_owned())
    }

    fn num(&self, key: &str, default: u64) -> u64 {
        self.get(key, &default.to_string())
            .parse()
            .unwrap_or(default)
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(mut ms: Vec<f64>) -> String {
    ms.sort_by(|a, b| a.total_cmp(b));
    format!(
        "n={} p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(0.0)
    )
}

fn statuses(counts: &HashMap<u16, u64>) -> String {
    let mut keys: Vec<_> = counts.keys().copied().collect();
    keys.sort();
    keys.iter()
        .map(|k| format!("s{k}={}", counts[k]))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The address of worker `i`: each in its own /24, so no two share a
/// network for any limit (a public client's token budget is per /24).
fn address(i: u64) -> String {
    format!("10.{}.{}.1", (i >> 8) & 255, i & 255)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let base = args.get("base", "http://127.0.0.1:8080");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(2048)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let line = match args.scenario.as_str() {
        "logins" => logins(&args, &base, &http).await,
        "client-auth-flood" => client_auth_flood(&args, &base, &http).await,
        "slow-bodies" => held(&args, &base, true).await,
        "keepalive-head" => held(&args, &base, false).await,
        "revoke-churn" => revoke_churn(&args, &base, &http).await,
        "feed-flood" => feed_flood(&args, &base, &http).await,
        "long-paths" => long_paths(&args, &base, &http).await,
        "many-params" => many_params(&args, &base, &http).await,
        other => {
            eprintln!(
                "unknown scenario {other:?}; see the comment at the top of examples/hostile.rs"
            );
            std::process::exit(2);
        }
    };
    println!("RESULT scenario={} {line}", args.scenario);
}

async fn post_form(
    http: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
    forwarded: &str,
    basic: Option<(&str, &str)>,
) -> (u16, f64) {
    let started = Instant::now();
    let mut req = http
        .post(url)
        .header("x-forwarded-for", forwarded)
        .form(form);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    let status = match req.send().await {
        Ok(res) => {
            let status = res.status().as_u16();
            let _ = res.bytes().await;
            status
        }
        Err(_) => 0,
    };
    (status, started.elapsed().as_secs_f64() * 1000.0)
}

async fn logins(args: &Args, base: &str, http: &reqwest::Client) -> String {
    let attackers = args.num("attackers", 200);
    let secs = args.num("secs", 20);
    let user = args.get("user", "alice");
    let password = args.get("password", "correct horse battery");
    let client = args.get("client", "spa");
    let url = format!("{base}/oauth/token");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for i in 0..attackers {
        let (http, url, client) = (http.clone(), url.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            let mut counts: HashMap<u16, u64> = HashMap::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let name = format!("nobody-{i}-{n}");
                let (status, _) = post_form(
                    &http,
                    &url,
                    &[
                        ("grant_type", "password"),
                        ("client_id", &client),
                        ("username", &name),
                        ("password", "wrong-password"),
                    ],
                    &address(i + 1),
                    None,
                )
                .await;
                *counts.entry(status).or_default() += 1;
                n += 1;
            }
            counts
        }));
    }
    // Let the attack reach its steady state first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut latencies = Vec::new();
    let mut legit: HashMap<u16, u64> = HashMap::new();
    while Instant::now() < deadline {
        let (status, ms) = post_form(
            http,
            &url,
            &[
                ("grant_type", "password"),
                ("client_id", &client),
                ("username", &user),
                ("password", &password),
            ],
            "192.0.2.1",
            None,
        )
        .await;
        *legit.entry(status).or_default() += 1;
        latencies.push(ms);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut attack: HashMap<u16, u64> = HashMap::new();
    for t in tasks {
        for (k, v) in t.await.unwrap() {
            *attack.entry(k).or_default() += v;
        }
    }
    format!(
        "legit_{} legit_statuses=[{}] attack_statuses=[{}]",
        summary(latencies),
        statuses(&legit),
        statuses(&attack)
    )
}

async fn client_auth_flood(args: &Args, base: &str, http: &reqwest::Client) -> String {
    let n = args.num("n", 2000);
    let client = args.get("client", "rs");
    let url = format!("{base}/oauth/token");
    let requests = (0..n).map(|i| {
        let (http, url, client) = (http.clone(), url.clone(), client.clone());
        tokio::spawn(async move {
            let secret = format!("guess-{i}");
            post_form(
                &http,
                &url,
                &[("grant_type", "client_credentials")],
                "198.51.100.7",
                Some((&client, &secret)),
            )
            .await
            .0
        })
    });
    let mut counts: HashMap<u16, u64> = HashMap::new();
    for t in requests.collect::<Vec<_>>() {
        *counts.entry(t.await.unwrap()).or_default() += 1;
    }
    statuses(&counts)
}

/// Whether the server has closed `stream` (EOF or an error), without waiting.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

async fn held(args: &Args, base: &str, body: bool) -> String {
    let n = args.num("n", 1000);
    let hold = args.num("hold", 15);
    let addr = base.trim_start_matches("http://").to_owned();
    let mut streams = Vec::new();
    let mut refused = 0;
    for _ in 0..n {
        let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&addr)).await
        else {
            refused += 1;
            continue;
        };
        let ok = if body {
            s.write_all(
                b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type",
            )
            .await
        } else {
            let first = s
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await;
            let mut buf = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
            match first {
                Ok(()) => s.write_all(b"GET /healthz HTTP/1.1\r\nHo").await,
                e => e,
            }
        };
        if ok.is_ok() {
            streams.push(s);
        }
    }
    // A control request while they are held.
    let started = Instant::now();
    let control = reqwest::get(format!("{base}/healthz"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    let control_ms = started.elapsed().as_secs_f64() * 1000.0;
    let end = Instant::now() + Duration::from_secs(hold);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if body {
            for s in streams.iter_mut() {
                let _ = s.write_all(b"x").await;
            }
        }
    }
    let mut open = 0;
    for s in streams.iter_mut() {
        if !closed(s).await {
            open += 1;
        }
    }
    format!(
        "opened={} refused={refused} still_open_after_{hold}s={open} control_status={control} control_ms={control_ms:.1}",
        streams.len()
    )
}

async fn revoke_churn(args: &Args, base: &str, http: &reqwest::Client) -> String {
    let secs = args.num("secs", 10);
    let client = args.get("client", "churn");
    let secret = args.get("secret", "");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut revoked, mut refused, mut other) = (0u64, 0u64, 0u64);
    while Instant::now() < deadline {
        let res = http
            .post(format!("{base}/oauth/token"))
            .basic_auth(&client, Some(&secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        if res.status() != 200 {
            other += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let body: serde_json::Value = res.json().await.unwrap();
        let token = body["access_token"].as_str().unwrap().to_owned();
        let res = http
            .post(format!("{base}/oauth/revoke"))
            .basic_auth(&client, Some(&secret))
            .form(&[("token", token.as_str())])
            .send()
            .await
            .unwrap();
        match res.status().as_u16() {
            200 => revoked += 1,
            429 => refused += 1,
            _ => other += 1,
        }
    }
    format!(
        "revoked={revoked} refused_429={refused} other={other} revocations_per_s={:.1}",
        revoked as f64 / secs as f64
    )
}

async fn feed_flood(args: &Args, base: &str, http: &reqwest::Client) -> String {
    let readers = args.num("readers", 16);
    let secs = args.num("secs", 10);
    let client = args.get("client", "rs");
    let secret = args.get("secret", "");
    let cc = args.get("cc_client", "control");
    let cc_secret = args.get("cc_secret", "");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..readers {
        let (http, base, client, secret) = (
            http.clone(),
            base.to_owned(),
            client.clone(),
            secret.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut counts: HashMap<u16, u64> = HashMap::new();
            let mut cursor = "0".to_owned();
            while Instant::now() < deadline {
                let res = http
                    .get(format!("{base}/v1/revocations?since={cursor}"))
                    .basic_auth(&client, Some(&secret))
                    .send()
                    .await;
                let Ok(res) = res else { continue };
                let status = res.status().as_u16();
                *counts.entry(status).or_default() += 1;
                if status == 200 {
                    let page: serde_json::Value = res.json().await.unwrap_or_default();
                    cursor = if page["has_more"] == true {
                        page["next_cursor"].as_str().unwrap_or("0").to_owned()
                    } else {
                        "0".to_owned()
                    };
                } else {
                    let _ = res.bytes().await;
                }
            }
            counts
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut control = Vec::new();
    while Instant::now() < deadline {
        let (status, ms) = post_form(
            http,
            &format!("{base}/oauth/token"),
            &[("grant_type", "client_credentials")],
            "192.0.2.9",
            Some((&cc, &cc_secret)),
        )
        .await;
        if status == 200 {
            control.push(ms);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut counts: HashMap<u16, u64> = HashMap::new();
    for t in tasks {
        for (k, v) in t.await.unwrap() {
            *counts.entry(k).or_default() += v;
        }
    }
    let served = counts.get(&200).copied().unwrap_or(0);
    format!(
        "feed_served_per_s={:.1} feed_statuses=[{}] control_{}",
        served as f64 / secs as f64,
        statuses(&counts),
        summary(control)
    )
}

async fn long_paths(args: &Args, base: &str, http: &reqwest::Client) -> String {
    let n = args.num("n", 2000);
    let len = args.num("len", 60_000) as usize;
    let path = format!("/{}", "a".repeat(len));
    let mut counts: HashMap<u16, u64> = HashMap::new();
    let started = Instant::now();
    for _ in 0..n {
        let status = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        *counts.entry(status).or_default() += 1;
    }
    format!(
        "secs={:.1} {}",
        started.elapsed().as_secs_f64(),
        statuses(&counts)
    )
}

async fn many_params(args: &Args, base: &str, http: &reqwest::Client) -> String {
    let n = args.num("n", 200);
    let params = args.num("params", 2700) as usize;
    let mut body = String::from("grant_type=client_credentials");
    for i in 0..params {
        body.push_str(&format!("&p{i}=1"));
        if body.len() > 16 * 1024 - 16 {
            break;
        }
    }
    let mut latencies = Vec::new();
    let mut counts: HashMap<u16, u64> = HashMap::new();
    for _ in 0..n {
        let started = Instant::now();
        let status = http
            .post(format!("{base}/oauth/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone())
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        *counts.entry(status).or_default() += 1;
    }
    format!(
        "body_bytes={} {} {}",
        body.len(),
        summary(latencies),
        statuses(&counts)
    )
}
