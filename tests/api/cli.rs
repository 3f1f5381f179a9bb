//! The `tessera` binary as an operator runs it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{Engine, TestDb, random_master_key};

/// The binary with a clean environment: no inherited `TESSERA_*` variables.
fn tessera(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("tessera runs")
}

/// Runs `cmd` with `text` on its standard input.
fn run_with_stdin(cmd: &mut Command, text: &str) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_configuration_stops_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(tessera(dir.path())
        .arg("serve")
        .env("TESSERA_ACCESS_TOKEN_TTL", "forever"));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("tessera: configuration error: TESSERA_ACCESS_TOKEN_TTL: "),
        "{err}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "nothing is created on a configuration error"
    );
}

#[test]
fn config_file_keys_are_checked_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tessera.toml"), "listen = \"nowhere\"\n").unwrap();
    let out = run(tessera(dir.path()).args(["--config", "tessera.toml", "migrate"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("listen (in tessera.toml): 'nowhere' is not a socket address"));
}

#[test]
fn unreachable_database_fails_with_a_redacted_url() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(tessera(dir.path())
        .arg("migrate")
        .env(
            "TESSERA_DATABASE_URL",
            "postgres://tessera:hunter2@127.0.0.1:1/tessera",
        )
        .env("TESSERA_MASTER_KEY", random_master_key()));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("tessera: error: TESSERA_DATABASE_URL: "),
        "{err}"
    );
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains("hunter2"), "password leaked: {err}");
}

#[test]
fn usage_errors_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(tessera(dir.path()).arg("frobnicate"));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unrecognized subcommand"));
}

/// A running `tessera serve` and its log lines.
struct Serving {
    child: Child,
    port: u16,
    seen: Vec<String>,
    rx: std::sync::mpsc::Receiver<String>,
}

impl Serving {
    /// Every log line, once the process has exited (reads to end of stream).
    fn logs_after_exit(&mut self) -> String {
        self.seen.extend(self.rx.iter());
        self.seen.join("\n")
    }
}

/// Starts `tessera serve` and returns it once it listens.
fn start_serving(cmd: &mut Command, serve_args: &[&str]) -> Serving {
    let mut child = cmd
        .arg("serve")
        .args(serve_args)
        .env("TESSERA_LISTEN", "127.0.0.1:0")
        .env("TESSERA_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tessera starts");
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            let v: serde_json::Value = serde_json::from_str(&line).expect("log lines are JSON");
            seen.push(line);
            if v["message"] == "tessera is listening" {
                let port = v["port"].as_u64().expect("port logged") as u16;
                return Serving {
                    child,
                    port,
                    seen,
                    rx,
                };
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("tessera did not start listening");
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tessera did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The README's first command, on a fresh directory: embedded SQLite, a
/// generated development master key, ready, and a clean exit on SIGTERM.
#[tokio::test]
async fn serve_on_a_fresh_directory_uses_sqlite_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut serving = start_serving(&mut tessera(dir.path()), &[]);

    let res = reqwest::get(format!("http://127.0.0.1:{}/readyz", serving.port))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(dir.path().join("data/tessera.db").exists());
    let key_file = dir.path().join("data/master.key");
    let key = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(key.trim().len(), 44, "32 bytes of base64");

    sigterm(&serving.child);
    let status = wait_exit(&mut serving.child);
    assert!(status.success(), "exit status {status}");
    let all = serving.logs_after_exit();
    assert!(
        all.contains("DEVELOPMENT MODE"),
        "no dev-key warning in {all}"
    );
    assert!(all.contains("server stopped"), "no shutdown line in {all}");
    assert!(!all.contains(key.trim()), "the master key was logged");

    // A second start reuses the same key and database.
    let mut again = start_serving(&mut tessera(dir.path()), &[]);
    sigterm(&again.child);
    assert!(wait_exit(&mut again.child).success());
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), key);
}

/// `migrate` prepares a PostgreSQL database; `serve --no-migrate` refuses a
/// database that is behind and starts on one that is current; a different
/// master key is refused at start.
#[tokio::test]
async fn migrate_then_serve_without_migrating_on_postgres() {
    let db = TestDb::new(Engine::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let key = random_master_key();
    let with_db = |cmd: &mut Command| {
        cmd.env("TESSERA_DATABASE_URL", &db.url)
            .env("TESSERA_MASTER_KEY", &key);
    };

    let mut cmd = tessera(dir.path());
    with_db(&mut cmd);
    let out = run(cmd.args(["serve", "--no-migrate"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("run `tessera migrate`"),
        "{}",
        stderr(&out)
    );

    let mut cmd = tessera(dir.path());
    with_db(&mut cmd);
    let out = run(cmd.arg("migrate"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"));
    // A second run: the migration table exists. A command's output is its
    // result, not the server's NOTICEs, and logs to a pipe carry no colour.
    let mut cmd = tessera(dir.path());
    with_db(&mut cmd);
    let out = run(cmd.args([
        "client",
        "add",
        "svc",
        "--confidential",
        "--audience",
        "https://api.example",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        !err.contains("already exists, skipping") && !err.contains("NOTICE"),
        "{err}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "ANSI escapes in piped logs: {err:?}"
    );

    let mut cmd = tessera(dir.path());
    with_db(&mut cmd);
    let mut serving = start_serving(&mut cmd, &["--no-migrate"]);
    let res = reqwest::get(format!("http://127.0.0.1:{}/readyz", serving.port))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    sigterm(&serving.child);
    assert!(wait_exit(&mut serving.child).success());

    let mut cmd = tessera(dir.path());
    cmd.env("TESSERA_DATABASE_URL", &db.url)
        .env("TESSERA_MASTER_KEY", random_master_key());
    let out = run(cmd.arg("serve"));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.lines()
            .last()
            .unwrap()
            .contains("sealed under master key"),
        "{err}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "no dev key is made when a key is configured"
    );
}

/// `keys import`, `keys list` and `audience add` as an operator uses them.
#[test]
fn keys_and_audiences_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let key = random_master_key();
    let cli = |args: &[&str]| {
        let mut cmd = tessera(dir.path());
        cmd.env("TESSERA_MASTER_KEY", &key).args(args);
        run(&mut cmd)
    };
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/keys.example/signing-key.pem");
    let out = cli(&["keys", "import", example]);
    assert!(out.status.success(), "{}", stderr(&out));
    let imported = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(imported.len(), 43);

    let out = cli(&["keys", "list"]);
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(listing.lines().next().unwrap().starts_with("KID"));
    let states: Vec<(&str, &str)> = listing
        .lines()
        .skip(1)
        .map(|l| {
            let mut cols = l.split_whitespace();
            (cols.next().unwrap(), cols.next().unwrap())
        })
        .collect();
    assert_eq!(states.len(), 2, "{listing}");
    assert_eq!(
        states[1].1, "active",
        "the generated first key signs: {listing}"
    );
    assert_eq!(states[0], (imported.as_str(), "next"), "{listing}");

    let out = cli(&["keys", "import", example]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already in the key ring"));
    let out = cli(&[
        "keys",
        "import",
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/p384.pem"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not an ECDSA P-256"),
        "{}",
        stderr(&out)
    );

    let ec =
        josekit::jwk::alg::ec::EcKeyPair::generate(josekit::jwk::alg::ec::EcCurve::P256).unwrap();
    use josekit::jwk::KeyPair;
    std::fs::write(
        dir.path().join("public.jwk"),
        ec.to_jwk_public_key().to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("private.jwk"),
        ec.to_jwk_private_key().to_string(),
    )
    .unwrap();
    let out = cli(&[
        "audience",
        "add",
        "https://api.example",
        "--encrypt-to",
        "public.jwk",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ECDH-ES+A256KW"));
    let out = cli(&[
        "audience",
        "add",
        "https://api2.example",
        "--encrypt-to",
        "private.jwk",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("private key material"));
    let out = cli(&["audience", "add", "has space"]);
    assert_eq!(out.status.code(), Some(1));
}

/// `user add`, `user disable` and `client add` as an operator runs them.
#[test]
fn users_and_clients_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let key = random_master_key();
    let cli = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = tessera(dir.path());
        cmd.env("TESSERA_MASTER_KEY", &key).args(args);
        match stdin {
            None => run(&mut cmd),
            Some(text) => run_with_stdin(&mut cmd, text),
        }
    };
    let out = cli(
        &["user", "add", "alice", "--password-stdin"],
        Some("correct horse battery\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        uuid::Uuid::parse_str(&id).is_ok(),
        "prints the user id: {id}"
    );

    let out = cli(
        &["user", "add", "alice", "--password-stdin"],
        Some("another password\n"),
    );
    assert!(stderr(&out).contains("already exists"));
    let out = cli(&["user", "add", "bob", "--password-stdin"], Some("short\n"));
    assert!(stderr(&out).contains("at least 8"));
    let out = cli(
        &["user", "add", "\u{430}dmin", "--password-stdin"],
        Some("long enough pw\n"),
    );
    assert!(stderr(&out).contains("USERNAME"), "{}", stderr(&out));
    let out = cli(&["user", "add", "carol"], None);
    assert!(
        stderr(&out).contains("--password-stdin"),
        "no prompt without a terminal"
    );
    let out = cli(
        &["user", "password", "alice", "--password-stdin"],
        Some("a new long password\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 session(s) revoked"));
    let out = cli(&["user", "totp", "alice"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("otpauth://totp/"));
    assert!(cli(&["user", "disable", "alice"], None).status.success());
    assert!(stderr(&cli(&["user", "disable", "nobody"], None)).contains("no user named nobody"));

    let out = cli(
        &[
            "client",
            "add",
            "backend",
            "--confidential",
            "--scope",
            "read",
            "--audience",
            "https://api.example",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let secret = stdout
        .lines()
        .find_map(|l| l.strip_prefix("client_secret="))
        .expect("secret printed once");
    assert_eq!(secret.len(), 43);
    assert!(stderr(&out).contains("cannot be shown again"));
    // The secret is not stored in readable form.
    let mut db = std::fs::read(dir.path().join("data/tessera.db")).unwrap();
    db.extend(std::fs::read(dir.path().join("data/tessera.db-wal")).unwrap_or_default());
    assert!(!db.windows(secret.len()).any(|w| w == secret.as_bytes()));

    let refused = [
        (
            vec![
                "client",
                "add",
                "x",
                "--public",
                "--grant",
                "client_credentials",
            ],
            "needs a confidential client",
        ),
        (
            vec!["client", "add", "x", "--public", "--cookie"],
            "at least one origin",
        ),
        (
            vec![
                "client",
                "add",
                "x",
                "--confidential",
                "--scope",
                "tessera:admin",
            ],
            "reserved for admin clients",
        ),
        // The review's finding: a public admin client let any user's password
        // login read the admin API.
        (
            vec!["client", "add", "x", "--public", "--admin"],
            "must be confidential with client_credentials as its only grant",
        ),
        (
            vec![
                "client",
                "add",
                "x",
                "--confidential",
                "--admin",
                "--grant",
                "password",
            ],
            "must be confidential with client_credentials as its only grant",
        ),
        (
            vec!["client", "add", "x", "--public", "--resource-server"],
            "a resource server (--resource-server) must be confidential",
        ),
        (
            vec!["client", "add", "x", "--confidential"],
            "needs at least one audience",
        ),
        (
            vec![
                "client",
                "add",
                "x",
                "--public",
                "--origin",
                "https://app.example/path",
            ],
            "no path",
        ),
        (
            vec![
                "client",
                "add",
                "x",
                "--public",
                "--origin",
                "http://app.example",
            ],
            "http only for localhost",
        ),
        (vec!["client", "add", "x/y", "--public"], "client_id: "),
        (
            vec![
                "client",
                "add",
                "BACKEND",
                "--public",
                "--audience",
                "https://api.example",
                "--redirect-uri",
                "https://app.example/cb",
            ],
            "already exists",
        ),
        (
            vec!["client", "add", "x", "--public", "--scope", "a\"b"],
            "scope \"a\\\"b\"",
        ),
        // New public clients default to the code flow, which needs a redirect URI.
        (
            vec![
                "client",
                "add",
                "x",
                "--public",
                "--audience",
                "https://api.example",
            ],
            "needs at least one --redirect-uri",
        ),
        (
            vec![
                "client",
                "add",
                "x",
                "--public",
                "--audience",
                "https://api.example",
                "--redirect-uri",
                "http://app.example/cb",
            ],
            "http only for localhost",
        ),
        (
            vec![
                "client",
                "add",
                "x",
                "--public",
                "--audience",
                "https://api.example",
                "--redirect-uri",
                "https://app.example/cb#x",
            ],
            "no fragment",
        ),
        (
            vec![
                "client",
                "add",
                "x",
                "--confidential",
                "--audience",
                "https://api.example",
                "--redirect-uri",
                "https://app.example/cb",
            ],
            "add --grant authorization_code",
        ),
        (
            vec![
                "client",
                "add",
                "backend",
                "--public",
                "--audience",
                "https://api.example",
                "--redirect-uri",
                "https://app.example/cb",
            ],
            "already exists",
        ),
    ];
    for (args, expected) in refused {
        let out = cli(&args, None);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = cli(
        &[
            "client",
            "add",
            "spa",
            "--public",
            "--cookie",
            "--origin",
            "https://app.example/",
            "--audience",
            "https://api.example",
            "--redirect-uri",
            "https://app.example/callback",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("client_secret"));
    let shown = String::from_utf8_lossy(&cli(&["client", "show", "spa"], None).stdout).into_owned();
    assert!(
        shown.contains("grants=authorization_code refresh_token\n")
            && shown.contains("redirect_uris=https://app.example/callback\n"),
        "{shown}"
    );
    // The legacy password grant only when asked for.
    let out = cli(
        &[
            "client",
            "add",
            "legacy",
            "--public",
            "--grant",
            "password",
            "--grant",
            "refresh_token",
            "--audience",
            "https://api.example",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // The resource-server flag: shown, set, refused for public clients.
    let out = cli(&["client", "show", "backend"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        shown.contains("resource_server=false\n") && shown.contains("confidential=true\n"),
        "{shown}"
    );
    assert!(!shown.contains(secret), "the secret is never shown");
    let out = cli(
        &["client", "update", "backend", "--resource-server", "true"],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("resource_server=true\n"));
    let out = cli(
        &["client", "update", "spa", "--resource-server", "true"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("a resource server must be confidential"),
        "{}",
        stderr(&out)
    );
    let out = cli(&["client", "show", "nobody"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no client"), "{}", stderr(&out));

    // Every change above is in the audit trail, and the chain verifies.
    let out = cli(&["audit", "verify"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("audit log intact: rows 1–"), "{stdout}");
    assert!(
        stdout.contains("HMAC under the chain key") && stdout.contains("newest checkpoint (row "),
        "{stdout}"
    );
    let rows: i64 = stdout["audit log intact: rows 1–".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rows >= 3, "{stdout}");
    // The review's reproduction: with the triggers dropped, rows cut from
    // the end. The checkpoint `audit verify` (and every CLI write) left
    // vouches for them.
    let db = dir.path().join("data/tessera.db");
    let tamper = |sql: &'static str| {
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
                .await
                .unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        })
    };
    tamper("DROP TRIGGER audit_log_no_delete");
    tamper("DELETE FROM audit_log WHERE seq > 1");
    let out = cli(&["audit", "verify"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("rows 2–{rows} are missing")),
        "{}",
        stderr(&out)
    );
    // Tampering (possible in SQLite once the trigger is dropped) is named.
    tamper("DROP TRIGGER audit_log_no_update");
    tamper("UPDATE audit_log SET actor = 'mallory' WHERE seq = 1");
    let out = cli(&["audit", "verify"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("audit log broken at row 1"),
        "{}",
        stderr(&out)
    );
}

/// `tessera issuer …`, `tessera user link(s)` and `client add
/// --exchange-audience` as an operator runs them (SQLite in a fresh
/// directory): every change is visible to the next command.
#[test]
fn issuers_and_links_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let key = random_master_key();
    let cli = |args: &[&str]| {
        let mut cmd = tessera(dir.path());
        cmd.env("TESSERA_MASTER_KEY", &key).args(args);
        if args[..2] == ["user", "add"] {
            return run_with_stdin(&mut cmd, "correct horse battery\n");
        }
        run(&mut cmd)
    };
    let stdout = |out: &Output| String::from_utf8_lossy(&out.stdout).into_owned();
    let iss = "https://keycloak.example/realms/acme";
    let out = cli(&[
        "issuer",
        "add",
        iss,
        "--jwks-uri",
        "https://keycloak.example/realms/acme/protocol/openid-connect/certs",
        "--audience",
        "tessera",
        "--create-users",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("audience=tessera\ncreate_users=true\ndisabled=false"));
    // Refused before the database: plain http off loopback; and duplicates.
    let out = cli(&[
        "issuer",
        "add",
        "https://idp.example",
        "--jwks-uri",
        "http://idp.example/certs",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("http only on localhost"),
        "{}",
        stderr(&out)
    );
    let out = cli(&[
        "issuer",
        "add",
        iss,
        "--jwks-uri",
        "https://keycloak.example/certs",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("registered already"),
        "{}",
        stderr(&out)
    );
    let out = cli(&["issuer", "list"]);
    assert!(
        stdout(&out).contains(&format!("issuer={iss}")),
        "{}",
        stdout(&out)
    );

    assert!(
        cli(&["user", "add", "alice", "--password-stdin"])
            .status
            .success()
    );
    let out = cli(&[
        "user",
        "link",
        "alice",
        "--issuer",
        iss,
        "--subject",
        "f81d4fae",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(&[
        "user",
        "link",
        "alice",
        "--issuer",
        iss,
        "--subject",
        "f81d4fae",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("linked to a user already"),
        "{}",
        stderr(&out)
    );
    let out = cli(&[
        "user",
        "link",
        "alice",
        "--issuer",
        "https://nobody.example",
        "--subject",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no issuer"), "{}", stderr(&out));
    let out = cli(&["user", "links", "alice"]);
    assert_eq!(stdout(&out), format!("{iss} f81d4fae\n"));
    // Unlinking: the link goes (a second unlink finds nothing).
    let unlink = [
        "user",
        "unlink",
        "alice",
        "--issuer",
        iss,
        "--subject",
        "f81d4fae",
    ];
    let out = cli(&unlink);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("user alice unlinked from f81d4fae at {iss}; 0 session(s) revoked\n")
    );
    assert_eq!(stdout(&cli(&["user", "links", "alice"])), "");
    let out = cli(&unlink);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not linked"), "{}", stderr(&out));
    assert!(
        cli(&[
            "user",
            "link",
            "alice",
            "--issuer",
            iss,
            "--subject",
            "f81d4fae"
        ])
        .status
        .success()
    );

    let out = cli(&["issuer", "disable", iss]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("disabled=true\nsessions_revoked=0"),
        "{}",
        stdout(&out)
    );
    let out = cli(&["issuer", "enable", iss]);
    assert!(stdout(&out).contains("disabled=false"), "{}", stdout(&out));

    // Exchange audiences need the grant and a confidential client.
    let base = [
        "client",
        "add",
        "orders",
        "--audience",
        "https://orders.example",
    ];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        base.iter().copied().chain(extra.iter().copied()).collect()
    };
    let out = cli(&with(&[
        "--confidential",
        "--exchange-audience",
        "https://payments.example",
    ]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("add --grant token-exchange"),
        "{}",
        stderr(&out)
    );
    let out = cli(&with(&[
        "--public",
        "--grant",
        "token-exchange",
        "--exchange-audience",
        "https://payments.example",
    ]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("confidential"), "{}", stderr(&out));
    let out = cli(&with(&[
        "--confidential",
        "--grant",
        "token-exchange",
        "--exchange-audience",
        "https://payments.example",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(&["client", "show", "orders"]);
    let shown = stdout(&out);
    assert!(shown.contains("grants=token-exchange\n"), "{shown}");
    assert!(
        shown.contains("exchange_audiences=https://payments.example\n"),
        "{shown}"
    );
}
