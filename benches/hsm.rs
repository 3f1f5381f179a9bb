//! Signing through a PKCS#11 token (SoftHSM2) beside the same key held in
//! process, measured in one run so the cost of the token is a ratio:
//!
//! - `sign/in_process` vs `sign/softhsm`: one ES256 signature over a
//!   typical access token's signing input.
//! - `mint_jws/in_process` vs `mint_jws/softhsm`: a whole access token
//!   through [`Minter`] (claims, header, signature).
//! - `mint_jws_2_threads/*`: two threads minting at once, as the server's
//!   two workers do, to show whether the token's session pool serialises.
//!
//! SoftHSM is a software token in this process, so these rows are the
//! PKCS#11 overhead only; a network HSM adds its round trip on top.
//!
//! Run: `cargo bench --bench hsm` (needs Debian's `softhsm2`, which
//! `scripts/test.sh` installs; figures: docs/performance.md).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use tessera::keys::keyring::{KeyRing, RotationPolicy};
use tessera::keys::master::MasterKey;
use tessera::keys::pkcs11::{Hsm, KeyUri};
use tessera::keys::signing::SigningKeyPair;
use tessera::store::{Store, sqlite::SqliteStore};
use tessera::tokens::{AudienceKeys, Minter, TokenRequest};

const ISS: &str = "https://issuer.example";
const PIN: &str = "4321";
const LABEL: &str = "bench";

fn module() -> PathBuf {
    std::env::var_os("TESSERA_TEST_PKCS11_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"))
}

fn softhsm_util(conf: &Path, args: &[&str]) {
    let out = std::process::Command::new("softhsm2-util")
        .args(args)
        .env("SOFTHSM2_CONF", conf)
        .output()
        .expect("softhsm2-util runs");
    assert!(
        out.status.success(),
        "softhsm2-util {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private SoftHSM token directory holding `key` as `pkcs11:token=bench;object=sig1`.
fn token_with(dir: &Path, key: &SigningKeyPair) {
    let tokens = dir.join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    // SAFETY: set before this process loads the module; single-threaded here.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
    softhsm_util(
        &conf,
        &[
            "--init-token",
            "--free",
            "--label",
            LABEL,
            "--pin",
            PIN,
            "--so-pin",
            "87654321",
        ],
    );
    let body = base64::engine::general_purpose::STANDARD.encode(key.pkcs8().unwrap());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let pem = dir.join("key.pem");
    std::fs::write(
        &pem,
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        ),
    )
    .unwrap();
    softhsm_util(
        &conf,
        &[
            "--import",
            pem.to_str().unwrap(),
            "--token",
            LABEL,
            "--label",
            "sig1",
            "--id",
            "01",
            "--pin",
            PIN,
        ],
    );
    std::fs::remove_file(&pem).unwrap();
}

fn request() -> TokenRequest {
    TokenRequest {
        sub: "3f0c7f8e-9a54-4b55-8c1c-6c0d1c2b3a4f".into(),
        audiences: vec!["https://api.example".into()],
        client_id: "backend".into(),
        scope: "read write".into(),
        sid: Some(uuid::Uuid::new_v4()),
        jkt: None,
        act: None,
        expires_at: None,
    }
}

/// A minter whose ring signs with `pair` from `now` on (and a time at which
/// `pair` is the signer).
async fn minter_for(dir: &Path, pair: SigningKeyPair, hsm: Option<Arc<Hsm>>) -> (Minter, i64) {
    let url = format!("sqlite://{}/bench-{}.db", dir.display(), hsm.is_some());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::connect(&url, 2).await.unwrap());
    store.migrate().await.unwrap();
    let now = chrono::Utc::now().timestamp();
    let policy = RotationPolicy {
        jwks_max_age: Duration::from_secs(300),
        access_token_ttl: Duration::from_secs(900),
        rotation_period: None,
    };
    let ring = Arc::new(
        KeyRing::open_with_hsm(
            store.clone(),
            MasterKey::from_bytes(&[1; 32]),
            policy,
            now,
            hsm,
        )
        .await
        .unwrap(),
    );
    let added = ring.add(pair, now).await.unwrap();
    let at = added.activate_at + 1;
    assert_eq!(ring.signer_at(at).unwrap().kid(), added.kid);
    let audiences = Arc::new(AudienceKeys::default());
    audiences.refresh(store.as_ref()).await.unwrap();
    let minter = Minter::new(ring, audiences, ISS.into(), Duration::from_secs(900));
    (minter, at)
}

/// `threads` threads minting `iters` tokens in total.
fn mint_in_parallel(minter: &Minter, at: i64, threads: u64, iters: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..iters / threads {
                    black_box(minter.mint(request(), at).unwrap());
                }
            });
        }
    });
    start.elapsed()
}

fn benches(c: &mut Criterion) {
    if !module().exists() || which("softhsm2-util").is_none() {
        eprintln!(
            "benches/hsm: SoftHSM2 is not installed ({} missing); \
             `apt-get install softhsm2` (scripts/test.sh does) and run again",
            module().display()
        );
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKeyPair::generate();
    token_with(dir.path(), &key);
    let hsm = Hsm::load(&module(), PIN).unwrap();
    let uri = KeyUri::parse(&format!("pkcs11:token={LABEL};object=sig1")).unwrap();
    let in_token = SigningKeyPair::from_hsm(hsm.key(&uri).unwrap());
    assert_eq!(in_token.kid(), key.kid(), "the token holds the same key");
    let in_process = SigningKeyPair::from_pkcs8(key.pkcs8().unwrap()).unwrap();

    // A typical signing input: an access token's header and claims.
    let (soft_minter, soft_at) = rt.block_on(minter_for(dir.path(), key, None));
    let jws = soft_minter.mint(request(), soft_at).unwrap().token;
    let input = jws.rsplit_once('.').unwrap().0.to_owned();

    let mut g = c.benchmark_group("sign");
    g.bench_function("in_process", |b| {
        b.iter(|| in_process.sign(black_box(input.as_bytes())).unwrap())
    });
    g.bench_function("softhsm", |b| {
        b.iter(|| in_token.sign(black_box(input.as_bytes())).unwrap())
    });
    g.finish();

    let (hsm_minter, hsm_at) = rt.block_on(minter_for(
        dir.path(),
        SigningKeyPair::from_hsm(hsm.key(&uri).unwrap()),
        Some(hsm.clone()),
    ));
    let mut g = c.benchmark_group("mint_jws");
    g.bench_function("in_process", |b| {
        b.iter(|| soft_minter.mint(request(), soft_at).unwrap())
    });
    g.bench_function("softhsm", |b| {
        b.iter(|| hsm_minter.mint(request(), hsm_at).unwrap())
    });
    g.finish();

    // Time per token with two threads minting: half the single-thread time
    // if nothing serialises.
    let mut g = c.benchmark_group("mint_jws_2_threads");
    g.bench_function("in_process", |b| {
        b.iter_custom(|iters| mint_in_parallel(&soft_minter, soft_at, 2, iters.max(2)))
    });
    g.bench_function("softhsm", |b| {
        b.iter_custom(|iters| mint_in_parallel(&hsm_minter, hsm_at, 2, iters.max(2)))
    });
    g.finish();
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.exists())
    })
}

criterion_group! {
    name = hsm;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(hsm);
