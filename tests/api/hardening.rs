//! Abuse resistance at the HTTP edge: per-client rate limits, trusted
//! proxies, native TLS, header limits and slow clients.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{AUD, Engine, Login, TestApp, eventually, fixture_with, spawn_app_with};

fn port(address: &str) -> u16 {
    address.rsplit(':').next().unwrap().parse().unwrap()
}

async fn too_many(res: reqwest::Response) -> String {
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&retry), "Retry-After {retry}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "too_many_requests");
    body["error_description"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_introspection_calls_are_limited_per_client() {
    let f = fixture_with(
        Engine::Sqlite,
        &[
            ("TESSERA_TOKEN_RATE_LIMIT", "3/m"),
            ("TESSERA_INTROSPECTION_RATE_LIMIT", "2/m"),
        ],
    )
    .await;
    let app = &f.app;
    for _ in 0..3 {
        assert_eq!(app.client_credentials("rs", &f.rs).await.status(), 200);
    }
    let description = too_many(app.client_credentials("rs", &f.rs).await).await;
    assert!(
        description.contains("client rs") && description.contains("3/m"),
        "{description}"
    );
    // Another client has its own budget.
    assert_eq!(
        app.client_credentials("other", &f.other).await.status(),
        200
    );
    // A wrong secret does not spend the real client's budget (the limit
    // counts authenticated requests), and is still answered as invalid.
    let res = app.client_credentials("other", "wrong").await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        app.client_credentials("other", &f.other).await.status(),
        200
    );

    // Introspection has its own budget: rs may still introspect twice.
    let (access, _) = app.login("alice").await;
    let introspect = || app.introspect_as(("rs", &f.rs), &access);
    for _ in 0..2 {
        let res = introspect().await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.json::<Value>().await.unwrap()["aud"], AUD);
    }
    let description = too_many(introspect().await).await;
    assert!(description.contains("introspection"), "{description}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_can_be_turned_off() {
    let f = fixture_with(Engine::Sqlite, &[("TESSERA_TOKEN_RATE_LIMIT", "off")]).await;
    for _ in 0..150 {
        let res = f.app.client_credentials("rs", &f.rs).await;
        assert_eq!(res.status(), 200);
    }
}

/// Failed logins, one per forwarded address; the per-network cap (2) shows
/// which address the service believed.
async fn failures_from(app: &TestApp, forwarded_for: &[&str]) -> Vec<u16> {
    let mut statuses = vec![];
    for (i, xff) in forwarded_for.iter().enumerate() {
        let user = format!("nobody{i}");
        let login = Login::new(&user).password("guess").forwarded_for(xff);
        statuses.push(app.password_grant(login).await.status().as_u16());
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let limits = [
        ("TESSERA_LOGIN_NETWORK_FAILURE_LIMIT", "2"),
        ("TESSERA_LOGIN_FAILURE_WINDOW", "1h"),
    ];
    // Untrusted peer: the header is the client's own claim and is ignored,
    // so rotating it does not escape the per-network cap.
    let f = fixture_with(Engine::Sqlite, &limits).await;
    let spoofed = ["203.0.113.1", "198.51.100.1", "192.0.2.1"];
    assert_eq!(failures_from(&f.app, &spoofed).await, [400, 400, 429]);

    // Behind a trusted proxy (the test's loopback peer), the rightmost
    // untrusted hop is the client: different networks get their own count,
    // and an address the client prepended itself changes nothing.
    let mut trusted = limits.to_vec();
    trusted.push(("TESSERA_TRUSTED_PROXIES", "127.0.0.1/32, ::1"));
    let f = fixture_with(Engine::Sqlite, &trusted).await;
    let hops = [
        "203.0.113.1",
        "1.1.1.1, 198.51.100.1",
        "2.2.2.2, 203.0.113.1, 127.0.0.1",
        "3.3.3.3, 198.51.100.1",
        "192.0.2.1",
    ];
    assert_eq!(
        failures_from(&f.app, &hops).await,
        [400, 400, 400, 400, 400]
    );
    assert_eq!(
        failures_from(&f.app, &["4.4.4.4, 203.0.113.1"]).await,
        [429],
        "the third failure from 203.0.113.1"
    );
    // The audit log (written in the background) records the forwarded
    // network, not the proxy's.
    eventually(
        Duration::from_secs(3),
        "the forwarded network is audited",
        async || {
            let rows = f.app.store.audit_page(0, 1000).await.unwrap();
            let text = format!("{rows:?}");
            text.contains("198.51.100.0/24").then_some(()).ok_or(text)
        },
    )
    .await;
}

fn self_signed() -> (tempfile::TempDir, String, String, String) {
    let key =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_file = dir.path().join("cert.pem");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&cert_file, key.cert.pem()).unwrap();
    std::fs::write(&key_file, key.signing_key.serialize_pem()).unwrap();
    let (c, k) = (
        cert_file.display().to_string(),
        key_file.display().to_string(),
    );
    (dir, c, k, key.cert.pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_tls_1_2_and_1_3_only_with_hsts() {
    let (_dir, cert_file, key_file, cert_pem) = self_signed();
    let app = spawn_app_with(
        Engine::Sqlite,
        &[
            ("TESSERA_TLS_CERT_FILE", &cert_file),
            ("TESSERA_TLS_KEY_FILE", &key_file),
        ],
    )
    .await;
    let port = port(&app.address);
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let res = https
        .get(format!("https://127.0.0.1:{port}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    // Plain HTTP on the TLS port gets no answer.
    assert!(
        app.client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_err()
    );

    // Protocol versions and suites, from an independent TLS stack (OpenSSL).
    let handshake = |max: openssl::ssl::SslVersion, ciphers: Option<&'static str>| {
        let addr = format!("127.0.0.1:{port}");
        std::thread::spawn(move || {
            use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
            let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
            b.set_verify(SslVerifyMode::NONE);
            b.set_min_proto_version(None).unwrap();
            b.set_max_proto_version(Some(max)).unwrap();
            // Let OpenSSL offer legacy versions so that refusing them is the server's doing.
            b.set_security_level(0);
            if let Some(c) = ciphers {
                b.set_cipher_list(c).unwrap();
            }
            let tcp = std::net::TcpStream::connect(addr).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            b.build()
                .configure()
                .unwrap()
                .verify_hostname(false)
                .connect("localhost", tcp)
                .map(|s| {
                    (
                        s.ssl().version_str().to_owned(),
                        s.ssl().current_cipher().unwrap().name().to_owned(),
                    )
                })
                .map_err(|e| e.to_string())
        })
        .join()
        .unwrap()
    };
    use openssl::ssl::SslVersion;
    let (version, _) = handshake(SslVersion::TLS1_3, None).unwrap();
    assert_eq!(version, "TLSv1.3", "1.3 is preferred");
    let (version, cipher) = handshake(SslVersion::TLS1_2, None).unwrap();
    assert_eq!(version, "TLSv1.2");
    assert!(
        cipher.starts_with("ECDHE-") && (cipher.contains("GCM") || cipher.contains("CHACHA")),
        "{cipher}"
    );
    assert!(
        handshake(SslVersion::TLS1_1, None).is_err(),
        "TLS 1.1 refused"
    );
    assert!(
        handshake(SslVersion::TLS1, None).is_err(),
        "TLS 1.0 refused"
    );
    for weak in ["AES128-SHA", "ECDHE-ECDSA-AES128-SHA", "AES256-GCM-SHA384"] {
        assert!(
            handshake(SslVersion::TLS1_2, Some(weak)).is_err(),
            "{weak} must be refused"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_settings_stop_start_up_naming_the_key() {
    let (dir, cert_file, key_file, _) = self_signed();
    let data = tempfile::tempdir().unwrap();
    let load = |extra: &[(&str, &str)]| {
        let mut env = vec![(
            "TESSERA_DATA_DIR".to_string(),
            data.path().display().to_string(),
        )];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        // Parsing reads no file; start-up checks them, naming the setting.
        tessera::config::Config::load(None, env)
            .and_then(|c| tessera::startup::check_files(&c))
            .map_err(|e| e.to_string())
    };
    assert!(
        load(&[
            ("TESSERA_TLS_CERT_FILE", &cert_file),
            ("TESSERA_TLS_KEY_FILE", &key_file)
        ])
        .is_ok()
    );
    let e = load(&[("TESSERA_TLS_CERT_FILE", &cert_file)]).unwrap_err();
    assert!(e.starts_with("TESSERA_TLS_KEY_FILE: required"), "{e}");
    let e = load(&[
        ("TESSERA_TLS_CERT_FILE", &key_file),
        ("TESSERA_TLS_KEY_FILE", &key_file),
    ])
    .unwrap_err();
    assert!(e.starts_with("TESSERA_TLS_CERT_FILE: "), "{e}");
    // A key that is not the certificate's.
    let (_other_dir, _, other_key, _) = self_signed();
    let e = load(&[
        ("TESSERA_TLS_CERT_FILE", &cert_file),
        ("TESSERA_TLS_KEY_FILE", &other_key),
    ])
    .unwrap_err();
    assert!(e.starts_with("TESSERA_TLS_KEY_FILE: "), "{e}");
    let missing = dir.path().join("missing.pem").display().to_string();
    let e = load(&[
        ("TESSERA_TLS_CERT_FILE", &missing),
        ("TESSERA_TLS_KEY_FILE", &key_file),
    ])
    .unwrap_err();
    assert!(e.contains("cannot read"), "{e}");
    // Nothing of the key file's content is echoed.
    let pem = std::fs::read_to_string(&key_file).unwrap();
    let body_line = pem.lines().nth(1).unwrap();
    let e = load(&[
        ("TESSERA_TLS_CERT_FILE", &key_file),
        ("TESSERA_TLS_KEY_FILE", &key_file),
    ])
    .unwrap_err();
    assert!(!e.contains(body_line), "{e}");
    let e = load(&[("TESSERA_TRUSTED_PROXIES", "10.0.0.0/8, proxy.internal")]).unwrap_err();
    assert!(
        e.starts_with("TESSERA_TRUSTED_PROXIES: 'proxy.internal'"),
        "{e}"
    );
    let e = load(&[("TESSERA_TOKEN_RATE_LIMIT", "100")]).unwrap_err();
    assert!(
        e.starts_with("TESSERA_TOKEN_RATE_LIMIT: '100' is not a rate"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431_and_the_service_stays_up() {
    let app = spawn_app_with(Engine::Sqlite, &[]).await;
    let res = app
        .client
        .get(format!("{}/healthz", app.address))
        .header("x-filler", "a".repeat(17 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 431);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("16384 bytes")
    );
    // Far beyond: the HTTP parser refuses the head before any handler.
    let res = app
        .client
        .get(format!("{}/healthz", app.address))
        .header("x-filler", "a".repeat(200 * 1024))
        .send()
        .await;
    assert!(res.map_or(true, |r| r.status() == 431));
    let res = reqwest::get(format!("{}/healthz", app.address)).await;
    assert_eq!(res.map_err(|e| format!("{e:?}")).unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let app = spawn_app_with(
        Engine::Sqlite,
        &[
            ("TESSERA_CLIENT_REQUEST_TIMEOUT", "1"),
            ("TESSERA_KEEP_ALIVE", "1"),
        ],
    )
    .await;
    let addr = format!("127.0.0.1:{}", port(&app.address));
    // Slowloris: half a request head, then silence.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // An idle keep-alive connection is closed after its timeout.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut answer))
        .await
        .expect("the idle connection is closed")
        .unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_clients_budget_is_kept_per_network() {
    // Anyone can send a public client's id: a flood from one network must
    // not starve the client's users on others.
    let f = fixture_with(
        Engine::Sqlite,
        &[
            ("TESSERA_TOKEN_RATE_LIMIT", "2/m"),
            ("TESSERA_TRUSTED_PROXIES", "127.0.0.1"),
        ],
    )
    .await;
    let from = |xff: &'static str| {
        f.app
            .form_request(
                "/oauth/token",
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", "spa"),
                    ("refresh_token", "not-a-token"),
                ],
            )
            .header("x-forwarded-for", xff)
            .send()
    };
    let mut statuses = vec![];
    for _ in 0..3 {
        statuses.push(from("203.0.113.9").await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [400, 400, 429]);
    assert_eq!(from("198.51.100.9").await.unwrap().status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_client_secrets_is_capped_per_network_and_cannot_flood_the_audit_log() {
    let f = fixture_with(
        Engine::Sqlite,
        &[
            ("TESSERA_LOGIN_NETWORK_FAILURE_LIMIT", "3"),
            ("TESSERA_LOGIN_FAILURE_WINDOW", "1h"),
        ],
    )
    .await;
    let cc = async |secret: &str| f.app.client_credentials("rs", secret).await;
    for i in 0..3 {
        assert_eq!(cc(&format!("guess-{i}")).await.status(), 401);
    }
    for i in 0..20 {
        too_many(cc(&format!("more-{i}")).await).await;
    }
    // The real secret still works: the cap stops guessing, not the client.
    assert_eq!(cc(&f.rs).await.status(), 200);
    f.audit_written().await;
    let rows = f.app.store.audit_page(0, 1000).await.unwrap();
    let failures = rows
        .iter()
        .filter(|r| r.action == "client_auth_failed")
        .count();
    assert_eq!(
        failures, 3,
        "one audit row per counted failure, none past the cap"
    );
}

/// A client that sends its head and then trickles (or never sends) the
/// announced body is cut off with 408 after `client_body_timeout`, whatever
/// route it aims at, and the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_are_cut_off() {
    let app = spawn_app_with(Engine::Sqlite, &[("TESSERA_CLIENT_BODY_TIMEOUT", "1")]).await;
    let addr = format!("127.0.0.1:{}", port(&app.address));
    for (path, content_type) in [
        ("/oauth/token", "application/x-www-form-urlencoded"),
        ("/admin/v1/users", "application/json"),
        ("/no/such/route", "text/plain"),
    ] {
        let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
        slow.write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: 100\r\n\r\ngrant_type"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let started = Instant::now();
        // Trickle a byte now and then, never finishing.
        let trickle = async {
            for _ in 0..20 {
                // The trickle is the attack: a real pause between bytes.
                tokio::time::sleep(Duration::from_millis(200)).await;
                if slow.write_all(b"x").await.is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(1500), trickle).await;
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer))
            .await
            .expect("the server closes the connection")
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(answer.contains("did not arrive within 1 s"), "{answer}");
    }
    // An announced body over the limit is refused before it is read.
    let mut big = tokio::net::TcpStream::connect(&addr).await.unwrap();
    big.write_all(b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), big.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 413"));
    assert_eq!(app.get("/healthz").await.status(), 200);
}

/// RFC 6749 §2.3.1: each half of Basic credentials is one form-encoded
/// value. The parser used to cut at `&`, accepting `rs:SECRET&junk` and
/// `rs&x=1:SECRET`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_credentials_are_decoded_whole() {
    let f = fixture_with(Engine::Sqlite, &[]).await;
    let introspect_as = async |id: &str, secret: &str| f.app.introspect_as((id, secret), "x").await;
    assert_eq!(introspect_as("rs", &f.rs).await.status(), 200);
    for (id, secret) in [
        ("rs".to_owned(), format!("{}&junk", f.rs)),
        ("rs&x=1".to_owned(), f.rs.clone()),
        ("rs".to_owned(), format!("{}&client_id=rs", f.rs)),
    ] {
        let res = introspect_as(&id, &secret).await;
        assert_eq!(res.status(), 401, "{id}");
        assert!(res.headers().contains_key("www-authenticate"));
    }
}

/// The review's finding: 2,000 failed client authentications at once from
/// one address wrote 2,000 audit rows against a cap of 50. Each failure is
/// counted first (atomically); past the cap there is one summary row and
/// then nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_failed_client_authentications_writes_at_most_the_cap() {
    for engine in [Engine::Sqlite, Engine::Postgres] {
        let f = fixture_with(
            engine,
            &[
                ("TESSERA_LOGIN_NETWORK_FAILURE_LIMIT", "20"),
                ("TESSERA_LOGIN_FAILURE_WINDOW", "1h"),
            ],
        )
        .await;
        let requests = (0..300).map(|i| {
            let app = &f.app;
            async move {
                let guess = format!("guess-{i}");
                let res = app.client_credentials("rs", &guess).await;
                res.status().as_u16()
            }
        });
        let statuses = futures_util::future::join_all(requests).await;
        let unauthorized = statuses.iter().filter(|s| **s == 401).count();
        assert_eq!(unauthorized, 20, "{engine:?}: {statuses:?}");
        assert_eq!(
            statuses.iter().filter(|s| **s == 429).count(),
            280,
            "{engine:?}"
        );
        f.audit_written().await;
        let rows = f.app.store.audit_page(0, 10_000).await.unwrap();
        let count = |action: &str| rows.iter().filter(|r| r.action == action).count();
        assert_eq!(count("client_auth_failed"), 20, "{engine:?}");
        assert_eq!(count("network_failure_cap_reached"), 1, "{engine:?}");
    }
}

/// The SQLite database and its -wal/-shm files hold password hashes and
/// sealed keys: they are created readable by their owner alone, and an
/// existing world-readable file is made private.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let top = tempfile::tempdir().unwrap();
    let dir = top.path().join("data");
    let db = dir.join("tessera.db");
    let url = format!("sqlite://{}", db.display());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    {
        let store = tessera::store::sqlite::SqliteStore::connect(&url, 2)
            .await
            .unwrap();
        use tessera::store::Lifecycle as _;
        store.migrate().await.unwrap();
        assert_eq!(mode(&dir), 0o700, "the directory it created");
        for name in ["tessera.db", "tessera.db-wal", "tessera.db-shm"] {
            let path = dir.join(name);
            assert_eq!(mode(&path), 0o600, "{name}");
        }
        store.close().await;
    }
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = tessera::store::sqlite::SqliteStore::connect(&url, 2)
        .await
        .unwrap();
    assert_eq!(mode(&db), 0o600);
    use tessera::store::Lifecycle as _;
    store.close().await;
}
