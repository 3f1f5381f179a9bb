//! Signing keys in a PKCS#11 token (SoftHSM2, installed by the test
//! script): imported by URI, signing through the token with the private
//! key never in the database, and a token that disappears under load.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use tessera::keys::master::MasterKey;
use tessera::keys::signing::SigningKeyPair;

use crate::helpers::{Engine, Fixture, eventually, fixture_on, on_both_engines};

const PIN: &str = "4321";

/// The SoftHSM2 module: `$TESSERA_TEST_PKCS11_MODULE`, else Debian's path.
/// Missing is a failure, never a skip: `scripts/test.sh` installs it.
fn module() -> PathBuf {
    let path = std::env::var_os("TESSERA_TEST_PKCS11_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"));
    assert!(
        path.exists(),
        "{} is missing: install softhsm2 (scripts/test.sh does)",
        path.display()
    );
    path
}

/// One SoftHSM configuration per test process (the library reads it once,
/// when first initialised): a private token directory.
fn softhsm_conf() -> &'static Path {
    static CONF: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &CONF
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let tokens = dir.path().join("tokens");
            std::fs::create_dir(&tokens).unwrap();
            let conf = dir.path().join("softhsm2.conf");
            std::fs::write(
                &conf,
                format!(
                    "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                    tokens.display()
                ),
            )
            .unwrap();
            // SAFETY: set once, before this process loads any PKCS#11
            // module; nothing else in the tests reads or writes it.
            unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
            (dir, conf)
        })
        .1
}

fn softhsm_util(args: &[&str]) -> String {
    let out = std::process::Command::new("softhsm2-util")
        .args(args)
        .env("SOFTHSM2_CONF", softhsm_conf())
        .output()
        .expect("softhsm2-util runs (scripts/test.sh installs softhsm2)");
    assert!(
        out.status.success(),
        "softhsm2-util {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A token labelled `label` holding `key` as the pair labelled `object`.
fn token_with_key(label: &str, object: &str, key: &SigningKeyPair) {
    softhsm_util(&[
        "--init-token",
        "--free",
        "--label",
        label,
        "--pin",
        PIN,
        "--so-pin",
        "87654321",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("key.pem");
    let body = base64::engine::general_purpose::STANDARD.encode(key.pkcs8().unwrap());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    std::fs::write(
        &pem,
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        ),
    )
    .unwrap();
    softhsm_util(&[
        "--import",
        pem.to_str().unwrap(),
        "--token",
        label,
        "--label",
        object,
        "--id",
        "01",
        "--pin",
        PIN,
    ]);
}

fn cli(f: &Fixture, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .env_clear()
        .env("TESSERA_DATABASE_URL", f.app.database_url())
        .env("TESSERA_MASTER_KEY", f.app.master_key())
        .env("TESSERA_PKCS11_MODULE", module())
        .env("TESSERA_PKCS11_PIN", PIN)
        .env("SOFTHSM2_CONF", softhsm_conf())
        .output()
        .unwrap()
}

async fn hsm_fixture(engine: Engine) -> (Fixture, Arc<tessera::clock::ManualClock>) {
    softhsm_conf();
    let module = module();
    let clock = tessera::clock::ManualClock::starting_now();
    let f = fixture_on(
        engine,
        &[
            ("TESSERA_PKCS11_MODULE", module.to_str().unwrap()),
            ("TESSERA_PKCS11_PIN", PIN),
        ],
        clock.clone(),
    )
    .await;
    (f, clock)
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

/// Imports the pair in token `label` and moves the clock to when it signs.
async fn import_and_activate(
    f: &Fixture,
    clock: &tessera::clock::ManualClock,
    label: &str,
) -> String {
    let uri = format!("pkcs11:token={label};object=sig1");
    let out = cli(f, &["keys", "import", "--pkcs11", &uri]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kid = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let listed = String::from_utf8_lossy(&cli(f, &["keys", "list"]).stdout).into_owned();
    let line = listed
        .lines()
        .find(|l| l.starts_with(&kid))
        .unwrap_or_default();
    assert!(
        line.ends_with(" pkcs11"),
        "keys list says where the key is: {listed}"
    );
    assert!(
        listed
            .lines()
            .skip(1)
            .filter(|l| !l.starts_with(&kid))
            .all(|l| l.ends_with(" database")),
        "{listed}"
    );
    clock.advance(400);
    eventually(
        Duration::from_secs(3),
        "the token's key signs",
        async || {
            let token = f.app.client_token("rs", &f.rs).await;
            match kid_of(&token) == kid {
                true => Ok(()),
                false => Err(kid_of(&token)),
            }
        },
    )
    .await;
    kid
}

/// A key imported by URI signs in the token: its tokens verify against the
/// JWKS in an independent library, and the database holds only the sealed
/// URI, never the private key.
async fn a_key_in_a_token_signs_and_its_private_half_stays_there(engine: Engine) {
    let label = format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let key = SigningKeyPair::generate();
    token_with_key(&label, "sig1", &key);
    let (f, clock) = hsm_fixture(engine).await;
    // Wrong object, wrong token: one clear line each, nothing stored.
    for (uri, expected) in [
        (
            format!("pkcs11:token={label};object=nope"),
            "no private key labelled \"nope\"",
        ),
        (
            "pkcs11:token=absent;object=sig1".to_owned(),
            "no PKCS#11 token labelled \"absent\"",
        ),
        (
            format!("pkcs11:token={label};object=sig1;pin-value={PIN}"),
            "does not belong in the URI",
        ),
    ] {
        let out = cli(&f, &["keys", "import", "--pkcs11", &uri]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{err}");
        assert!(!err.contains(PIN), "the PIN is never echoed: {err}");
    }
    let kid = import_and_activate(&f, &clock, &label).await;
    assert_eq!(kid, key.kid());

    let token = f.app.client_token("rs", &f.rs).await;
    let jwks: Value = f
        .app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("the token's key is published");
    let decoding = jsonwebtoken::DecodingKey::from_ec_components(
        jwk["x"].as_str().unwrap(),
        jwk["y"].as_str().unwrap(),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[crate::helpers::AUD]);
    validation.validate_exp = false;
    jsonwebtoken::decode::<Value>(&token, &decoding, &validation).expect("verifies");

    // What the database holds for this key is the sealed URI alone.
    let stored = f
        .app
        .store
        .sealed_values(tessera::store::SealedColumn::SigningKey, None, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|v| v.id == kid)
        .unwrap();
    let master = MasterKey::from_base64(f.app.master_key()).unwrap();
    let opened = master
        .open(&stored.value, &tessera::keys::keyring::seal_context(&kid))
        .unwrap();
    assert!(
        opened.starts_with(b"pkcs11:token="),
        "{:?}",
        String::from_utf8_lossy(&opened)
    );
    assert!(
        !opened
            .windows(32)
            .any(|w| key.pkcs8().unwrap().windows(32).any(|k| k == w))
    );
    f.app.stop().await;
}

/// The token disappears under load: every request gets a clear 503 (never a
/// 5xx of another kind, never a panic), `/readyz` says why, a refresh
/// token presented meanwhile is not consumed, and when the token is back
/// (same key, same label) signing resumes without a restart.
async fn a_token_that_disappears_gives_clear_errors_and_comes_back(engine: Engine) {
    let label = format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let key = SigningKeyPair::generate();
    token_with_key(&label, "sig1", &key);
    let (f, clock) = hsm_fixture(engine).await;
    let kid = import_and_activate(&f, &clock, &label).await;
    // One session per refresh below: presenting one token twice at once
    // is a replay whatever the signer does.
    let mut sessions = Vec::new();
    for _ in 0..12 {
        sessions.push(f.app.login("alice").await.1);
    }
    assert_eq!(f.app.get("/readyz").await.status(), 200);

    softhsm_util(&["--delete-token", "--token", &label]);

    let attempts = (0..24).map(|i| {
        let (f, sessions) = (&f, &sessions);
        async move {
            let res = if i % 2 == 0 {
                f.app.client_credentials("rs", &f.rs).await
            } else {
                f.app.refresh(&sessions[i / 2]).await
            };
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap();
            (status, body)
        }
    });
    for (status, body) in futures_util::future::join_all(attempts).await {
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    }
    let ready = f.app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["checks"]["signing_key"], "unavailable", "{ready}");
    assert_eq!(
        f.app.get("/healthz").await.status(),
        200,
        "the process lives"
    );

    // The token comes back: the same key under the same label.
    token_with_key(&label, "sig1", &key);
    eventually(
        Duration::from_secs(5),
        "readiness returns",
        async || match f.app.get("/readyz").await.status().as_u16() {
            200 => Ok(()),
            s => Err(s.to_string()),
        },
    )
    .await;
    let token = f.app.client_token("rs", &f.rs).await;
    assert_eq!(kid_of(&token), kid);
    // Every refresh token presented while the token was gone still works:
    // none was consumed (or a rotation that raced the outage was undone).
    for refresh in &sessions {
        let res = f.app.refresh(refresh).await;
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    }
    f.app.stop().await;
}

/// Shutdown closes the module while signers run on other threads: each
/// signature in flight completes, every later one fails with a clear error
/// (never another error, never a crash), and the module is never unloaded,
/// so nothing tears down while the process exits.
#[test]
fn a_closed_module_refuses_to_sign() {
    softhsm_conf();
    let label = format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    token_with_key(&label, "sig1", &SigningKeyPair::generate());
    let hsm = tessera::keys::pkcs11::Hsm::load(&module(), PIN).unwrap();
    let uri =
        tessera::keys::pkcs11::KeyUri::parse(&format!("pkcs11:token={label};object=sig1")).unwrap();
    let key = hsm.key(&uri).unwrap();
    let closed = "the PKCS#11 module was closed at shutdown";
    let signing = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        let signers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut signed = 0;
                    loop {
                        match key.sign(b"in flight") {
                            Ok(sig) => {
                                assert_eq!(sig.len(), 64);
                                if signed == 0 {
                                    signing.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                }
                                signed += 1;
                            }
                            Err(e) => {
                                assert_eq!(e.to_string(), closed);
                                return signed;
                            }
                        }
                    }
                })
            })
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while signing.load(std::sync::atomic::Ordering::SeqCst) < 4 {
            assert!(std::time::Instant::now() < deadline, "the signers sign");
            std::thread::sleep(Duration::from_millis(5));
        }
        hsm.close();
        for signer in signers {
            assert!(
                signer.join().unwrap() > 0,
                "each signer signed before the close"
            );
        }
    });
    assert_eq!(key.sign(b"after").unwrap_err().to_string(), closed);
    assert!(!key.ready(), "a closed module is not ready");
    assert_eq!(hsm.key(&uri).unwrap_err().to_string(), closed);
    hsm.close();
}

/// Two handles on one module in one process (two applications, say):
/// closing one leaves the other signing (`C_Finalize` is process-wide, so
/// only the last handle finalises); a handle loaded after that initialises
/// the module again.
#[test]
fn a_module_is_finalised_by_its_last_handle() {
    softhsm_conf();
    let label = format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    token_with_key(&label, "sig1", &SigningKeyPair::generate());
    let uri =
        tessera::keys::pkcs11::KeyUri::parse(&format!("pkcs11:token={label};object=sig1")).unwrap();
    let load = || tessera::keys::pkcs11::Hsm::load(&module(), PIN).unwrap();
    let (first, second) = (load(), load());
    let (key1, key2) = (first.key(&uri).unwrap(), second.key(&uri).unwrap());
    first.close();
    assert!(key1.sign(b"x").is_err(), "the closed handle refuses");
    assert_eq!(key2.sign(b"x").unwrap().len(), 64, "the other still signs");
    drop((key2, second));
    let third = load();
    let key3 = third.key(&uri).unwrap();
    assert_eq!(key3.sign(b"x").unwrap().len(), 64, "loaded again, it signs");
}

on_both_engines!(
    a_key_in_a_token_signs_and_its_private_half_stays_there,
    a_token_that_disappears_gives_clear_errors_and_comes_back,
);
