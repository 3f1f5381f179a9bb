//! A closed-loop load generator for tessera's token endpoint.
//!
//! ```sh
//! cargo run --release --example loadgen -- refresh http://127.0.0.1:8080 32 10
//! cargo run --release --example loadgen -- client_credentials http://127.0.0.1:8080 32 10
//! ```
//!
//! Arguments: MODE BASE_URL CONCURRENCY SECONDS. Environment: `CLIENT_ID`
//! (default `loadgen`), `CLIENT_SECRET` (client_credentials), `USERNAME` /
//! `PASSWORD` (refresh: each worker logs in once, then rotates its own
//! refresh-token chain, so every request is a real rotation).
//! Prints requests/s, latency percentiles and errors. Only loopback targets.

use std::time::{Duration, Instant};

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: loadgen refresh|client_credentials BASE_URL CONCURRENCY SECONDS");
        std::process::exit(2);
    }
    let (mode, base, concurrency, seconds) = (
        args[1].clone(),
        args[2].clone(),
        args[3].parse::<usize>().unwrap(),
        args[4].parse::<u64>().unwrap(),
    );
    let host = base
        .trim_start_matches("http://")
        .split([':', '/'])
        .next()
        .unwrap_or("")
        .to_owned();
    if !(host == "localhost" || host.starts_with("127.") || host == "[::1]") {
        eprintln!("loadgen only targets loopback addresses");
        std::process::exit(2);
    }
    let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let client_id = var("CLIENT_ID", "loadgen");
    let url = format!("{base}/oauth/token");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(seconds);

    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (http, url, mode, client_id) =
            (http.clone(), url.clone(), mode.clone(), client_id.clone());
        let (user, pass, secret) = (
            var("USERNAME", "loadgen"),
            var("PASSWORD", "loadgen-password"),
            var("CLIENT_SECRET", ""),
        );
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let form = |pairs: &[(&str, &str)]| {
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(pairs)
                    .finish()
            };
            let post = |body: String| {
                http.post(&url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
            };
            let mut refresh = String::new();
            if mode == "refresh" {
                let body = form(&[
                    ("grant_type", "password"),
                    ("client_id", &client_id),
                    ("username", &user),
                    ("password", &pass),
                ]);
                let res: serde_json::Value = post(body).await.unwrap().json().await.unwrap();
                refresh = res["refresh_token"]
                    .as_str()
                    .expect("login works")
                    .to_owned();
            }
            while Instant::now() < deadline {
                let body = if mode == "refresh" {
                    form(&[
                        ("grant_type", "refresh_token"),
                        ("client_id", &client_id),
                        ("refresh_token", &refresh),
                    ])
                } else {
                    form(&[
                        ("grant_type", "client_credentials"),
                        ("client_id", &client_id),
                        ("client_secret", &secret),
                    ])
                };
                let start = Instant::now();
                match post(body).await {
                    Ok(res) if res.status().is_success() => {
                        let v: serde_json::Value = res.json().await.unwrap();
                        latencies.push(start.elapsed());
                        if let Some(next) = v["refresh_token"].as_str() {
                            refresh = next.to_owned();
                        }
                    }
                    _ => {
                        errors += 1;
                        if mode == "refresh" {
                            break; // the chain is broken
                        }
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.await.unwrap();
        all.extend(l);
        errors += e;
    }
    let elapsed = started
        .elapsed()
        .as_secs_f64()
        .min(seconds as f64)
        .max(0.001);
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    println!(
        "mode={mode} concurrency={concurrency} requests={} errors={errors} rate={:.0}/s p50={:.2}ms p99={:.2}ms p99.9={:.2}ms",
        all.len(),
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        pct(0.999)
    );
}
