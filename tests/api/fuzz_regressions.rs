//! The fuzzers' kept inputs, replayed without a fuzzing toolchain: every
//! file of `fuzz/seeds/<target>/` and `fuzz/regressions/<target>/` goes
//! through the fuzz targets' own property checks (`fuzz/src/lib.rs`,
//! included here), and the seed tokens must still reach the verifier's
//! deepest paths. `scripts/fuzz.sh` runs the fuzzers themselves.

#[path = "../../fuzz/src/checks.rs"]
mod checks;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tessera::verify::VerifyError;

type Check = fn(&[u8]);

/// Each fuzz target and the check it runs on one input.
const TARGETS: [(&str, Check); 4] = [
    ("form", checks::form),
    ("feed_query", checks::feed_query),
    ("verify_jws", |data| {
        let _ = checks::verify_jws(data);
    }),
    ("verify_jwe", |data| {
        let _ = checks::verify_jwe(data);
    }),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, which must exist and not be empty
/// (a renamed or emptied directory would silently test nothing).
fn inputs(kind: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} has no inputs", dir.display());
    files
}

/// Whether `f` panics (a property check failing).
fn panics(f: impl FnOnce()) -> bool {
    catch_unwind(AssertUnwindSafe(f)).is_err()
}

#[test]
fn every_kept_input_passes_the_fuzz_checks() {
    let mut failures = Vec::new();
    let mut count = 0;
    for (target, check) in TARGETS {
        for kind in ["seeds", "regressions"] {
            for (name, data) in inputs(kind, target) {
                count += 1;
                if panics(|| check(&data)) {
                    failures.push(format!("fuzz/{kind}/{target}/{name}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "inputs failing their checks: {failures:?}"
    );
    assert!(count >= 20, "only {count} kept inputs");
}

/// The verify seeds are named for what the verifier must answer, so they
/// still reach past the signature (the fixed test key, not expired).
#[test]
fn seed_tokens_reach_the_verdict_their_name_says() {
    let expected = |name: &str| -> Option<Result<(), VerifyError>> {
        let stem = name.split('.').next().unwrap();
        Some(match stem {
            s if s.starts_with("valid-") => Ok(()),
            "expired" => Err(VerifyError::Expired),
            "not-yet-valid" => Err(VerifyError::NotYetValid),
            "wrong-audience" => Err(VerifyError::WrongAudience),
            "wrong-issuer" => Err(VerifyError::WrongIssuer),
            "revoked-jti" | "revoked-sub" => Err(VerifyError::Revoked),
            "missing-claim" => Err(VerifyError::Claims),
            _ => return None,
        })
    };
    let mut valid = 0;
    for (target, verify) in [
        ("verify_jws", checks::verify_jws as fn(&[u8]) -> _),
        ("verify_jwe", checks::verify_jwe),
    ] {
        for (name, data) in inputs("seeds", target) {
            let Some(want) = expected(&name) else {
                continue;
            };
            valid += usize::from(want.is_ok());
            assert_eq!(
                verify(&data).map(|_| ()),
                want,
                "fuzz/seeds/{target}/{name}"
            );
        }
    }
    // valid-* in raw and structured form, for both targets.
    assert!(valid >= 16, "only {valid} valid seed tokens");
}

#[test]
fn known_bad_inputs_are_refused_and_the_checks_can_fail() {
    let seed = |target, name| {
        inputs("seeds", target)
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("seed {target}/{name}"))
            .1
    };
    // A genuine token with a changed signature, or with alg none and no
    // signature at all.
    let token = String::from_utf8(seed("verify_jws", "valid-user.jwt")).unwrap();
    assert!(checks::verify_jws(token.as_bytes()).is_ok());
    let (input, sig) = token.rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    let forged = format!("{input}.{flipped}{}", &sig[1..]);
    assert_eq!(
        checks::verify_jws(forged.as_bytes()),
        Err(VerifyError::BadSignature)
    );
    let payload = input.split('.').nth(1).unwrap();
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"at+jwt"}"#);
    let none = format!("{none_header}.{payload}.");
    assert!(matches!(
        checks::verify_jws(none.as_bytes()),
        Err(VerifyError::Algorithm(_))
    ));
    // A JWS where a JWE is expected.
    assert!(matches!(
        checks::verify_jwe(token.as_bytes()),
        Err(VerifyError::Encryption(_))
    ));
    assert!(tessera::tokens::form::parse_form(b"a=1&a=2").is_err());
    assert!(tessera::revocation::FeedQuery::parse("since=-1").is_err());

    // The property checks do fail on what they guard against.
    assert!(panics(|| checks::check_message("x", "bad\u{1b}[31m")));
    assert!(panics(|| checks::check_message("x", &"x".repeat(201))));
    let not_ours = format!("{}x.{payload}.{sig}", input.split('.').next().unwrap());
    assert!(panics(|| checks::check_raw_jws_accepted(&not_ours)));
    checks::check_raw_jws_accepted(&token);
}

/// Found by the verify_jwe fuzzer: a seed token with its GCM tag cut short
/// (josekit hands OpenSSL the tag as given, and OpenSSL compares only that
/// many bytes). A 1-byte tag is forged in 256 tries.
#[test]
fn jwe_with_a_truncated_tag_is_refused() {
    for name in [
        "truncated-tag-1-byte.jwe",
        "truncated-tag-15-bytes-crash-a92ae55c.jwe",
    ] {
        let (_, data) = inputs("regressions", "verify_jwe")
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("regression {name}"));
        let result = std::panic::catch_unwind(|| checks::verify_jwe(&data));
        assert!(
            matches!(result, Ok(Err(VerifyError::Encryption(_)))),
            "{name}: {result:?}"
        );
    }
}

/// Regenerates `fuzz/seeds/` (after changing the seeds or the test keys):
/// `cargo nextest run --all-features --run-ignored only write_fuzz_seeds`.
#[test]
#[ignore = "writes fuzz/seeds/; run by hand"]
fn write_fuzz_seeds() {
    checks::write_seeds(&fuzz_dir()).unwrap();
}
