//! Property checks for the fuzz targets in `fuzz/fuzz_targets/` (issue #7).
//!
//! Each public entry point takes one fuzz input, runs it through tessera's
//! own code and asserts what must hold whatever the input; a failed assertion
//! is a crash for libFuzzer. `tests/api/fuzz_regressions.rs` includes this
//! file with `#[path]` and replays `fuzz/seeds/` and `fuzz/regressions/`
//! through the same functions, so kept inputs stay checked without a fuzzing
//! toolchain.
//!
//! The verify targets take two kinds of input:
//! - raw: the input is the token. Only tokens this file signed (the seeds)
//!   may verify, only in their one canonical encoding (a full GCM tag, no
//!   spare base64url bits), and only if their claims are valid;
//! - structured (starts with `{`, which no token can): JSON texts separated
//!   by newlines, signed (and encrypted) here with the fixed test keys, so
//!   the fuzzer explores the header and claims rules behind the signature.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use josekit::jwe::{ECDH_ES_A256KW, JweEncrypter, JweHeader};
use josekit::jwk::Jwk;
use serde_json::{Value, json};
use tessera::keys::signing::SigningKeyPair;
use tessera::revocation::{FeedQuery, MAX_FEED_PAGE};
use tessera::tokens::form::{parse_basic, parse_form};
use tessera::verify::revocations::MAX_CURSOR_LEN;
use tessera::verify::{
    AccessClaims, FeedEntry, FeedPage, RevocationKind, RevocationSet, Verifier, VerifyError,
};

/// Longest error message any parser may return.
pub const MAX_MESSAGE_BYTES: usize = 200;

/// Issuer and audience of the test verifiers.
pub const ISS: &str = "https://issuer.example";
pub const AUD: &str = "https://api.example";

/// Fuzzing-only keys, trusted nowhere: fixed so that the seed tokens in
/// `fuzz/seeds/` stay valid (they expire in 2100).
const SIGNING_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgtf5uvAfRos0a2Wp+
Dthkrr+5jPgOUBqbqMtk0eRphZOhRANCAAQpSZogOLtGkWC0mAMsKp/FaGUaaJuU
wrtzKy4/3ZIkymTi8oflFjtqtgN0sskVhSzq5qwQenjFNnO9HgU7CRsr
-----END PRIVATE KEY-----";
const DECRYPTION_JWK: &str = r#"{"kty":"EC","crv":"P-256","x":"jDbwktzXnmkP7BgGXMIgfg-Caw4NFemrKOiibQ5evC8","y":"qPZmjOzAko0wSGmschpR1XCND3IySeERdzDB4cPg7S0","d":"ZB8WTEsuhyxamXM-JD__YabVsKliNhDu8DSLV7KfFaU"}"#;

const IAT: i64 = 1_700_000_000;
const FAR_FUTURE: i64 = 4_102_444_800;
/// The verifiers' default clock-skew allowance.
const LEEWAY: i64 = 30;
/// Entries of the verifiers' revocation set.
pub const REVOKED_JTI: &str = "00000000-0000-4000-8000-00000000dead";
pub const REVOKED_SUB: &str = "mallory";
const SUB_REVOKED_AT: i64 = FAR_FUTURE;

// ---------------------------------------------------------------------------
// Shared assertions

/// Error messages reach clients and logs: short, and printable ASCII (plus
/// the ellipsis of a shortened name), so they cannot carry terminal escapes,
/// bidi overrides or echoed secrets of any length.
pub fn check_message(what: &str, message: &str) {
    assert!(
        message.len() <= MAX_MESSAGE_BYTES,
        "{what}: error message of {} bytes: {message:?}",
        message.len()
    );
    assert!(
        message
            .chars()
            .all(|c| c == ' ' || c.is_ascii_graphic() || c == '…'),
        "{what}: unprintable character in error message {message:?}"
    );
}

/// What a parsed name or value may contain: no control character and no
/// U+FFFD (the trace of invalid UTF-8).
fn check_text(what: &str, s: &str) {
    assert!(
        !s.chars().any(|c| c.is_control() || c == '\u{FFFD}'),
        "{what}: control or replacement character in {s:?}"
    );
}

// ---------------------------------------------------------------------------
// form: the /oauth/token body and Basic credentials

/// `parse_form` and `parse_basic` on the same bytes.
pub fn form(data: &[u8]) {
    match parse_form(data) {
        Ok(params) => {
            for (name, value) in &params {
                assert!(!value.is_empty(), "empty value kept for {name:?}");
                check_text("parameter name", name);
                check_text("parameter value", value);
            }
            // Encoding what was read and reading it again gives it back.
            let mut again = url::form_urlencoded::Serializer::new(String::new());
            for (name, value) in &params {
                again.append_pair(name, value);
            }
            assert_eq!(parse_form(again.finish().as_bytes()), Ok(params));
        }
        Err(e) => check_message("parse_form", &e.0),
    }
    match parse_basic(data) {
        Ok(Some((id, secret))) => {
            assert!(!id.is_empty(), "empty client id accepted");
            check_text("client id", &id);
            check_text("client secret", &secret);
            let encode =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let again = format!(
                "Basic {}",
                STANDARD.encode(format!("{}:{}", encode(&id), encode(&secret)))
            );
            assert_eq!(parse_basic(again.as_bytes()), Ok(Some((id, secret))));
        }
        Ok(None) => {
            // Only a well-formed header of another scheme is "not Basic".
            let text = std::str::from_utf8(data).expect("Ok(None) for non-UTF-8");
            let (scheme, _) = text.split_once(' ').expect("Ok(None) without a scheme");
            assert!(
                !scheme.eq_ignore_ascii_case("basic"),
                "Basic taken for another scheme"
            );
        }
        Err(e) => check_message("parse_basic", &e.0),
    }
}

// ---------------------------------------------------------------------------
// feed_query: GET /v1/revocations?QUERY and the pages the verify poller reads

/// The bytes as a feed query string, then as a JSON feed page.
pub fn feed_query(data: &[u8]) {
    let query = String::from_utf8_lossy(data);
    match FeedQuery::parse(&query) {
        Ok(q) => {
            assert!(
                (1..=MAX_FEED_PAGE).contains(&q.limit),
                "limit {} accepted",
                q.limit
            );
            assert!(q.since >= 0, "since {} accepted", q.since);
            let again = format!("since={}&limit={}", q.since, q.limit);
            assert_eq!(FeedQuery::parse(&again), Ok(q));
        }
        Err(e) => check_message("FeedQuery::parse", &e.0),
    }
    if let Ok(page) = serde_json::from_slice::<FeedPage>(data) {
        feed_page(&page);
    }
}

fn feed_page(page: &FeedPage) {
    for previous in ["", "5"] {
        match page.check(previous) {
            Ok(()) => {
                let cursor = &page.next_cursor;
                assert!(
                    cursor.len() <= MAX_CURSOR_LEN && cursor.bytes().all(|b| b.is_ascii_graphic()),
                    "cursor {cursor:?} accepted"
                );
                assert!(
                    !cursor.is_empty() || previous.is_empty(),
                    "empty cursor after {previous:?}"
                );
                assert!(
                    !(page.has_more && cursor == previous),
                    "has_more without progress"
                );
            }
            Err(e) => check_message("FeedPage::check", &e.to_string()),
        }
    }

    // What the set must hold, worked out independently: per (kind, value),
    // the latest revoked_at and relevant_until.
    let mut expected: HashMap<(RevocationKind, &str), (i64, i64)> = HashMap::new();
    for e in &page.revocations {
        let slot = expected
            .entry((e.kind, e.value.as_str()))
            .or_insert((e.revoked_at, e.relevant_until));
        *slot = (slot.0.max(e.revoked_at), slot.1.max(e.relevant_until));
    }
    // A value no entry has (longer than all of them).
    let none = "x".repeat(
        page.revocations
            .iter()
            .map(|e| e.value.len())
            .max()
            .unwrap_or(0)
            + 1,
    );
    let revoked = |set: &RevocationSet, kind: RevocationKind, value: &str, iat: i64| match kind {
        RevocationKind::Jti => set.is_revoked_parts(value, None, &none, &none, iat),
        RevocationKind::Sid => set.is_revoked_parts(&none, Some(value), &none, &none, iat),
        RevocationKind::Sub => set.is_revoked_parts(&none, None, value, &none, iat),
        RevocationKind::Client => set.is_revoked_parts(&none, None, &none, value, iat),
        RevocationKind::Kid => set.is_key_revoked(value),
    };

    let set = RevocationSet::new();
    set.apply_page(page);
    assert_eq!(set.cursor(), page.next_cursor);
    assert_eq!(set.len(), expected.len());
    assert!(!set.is_revoked_parts(&none, Some(&none), &none, &none, i64::MIN));
    assert!(!set.is_key_revoked(&none));
    for (&(kind, value), &(revoked_at, _)) in &expected {
        assert!(
            revoked(&set, kind, value, revoked_at),
            "{kind:?} {value:?} not revoked"
        );
        if matches!(kind, RevocationKind::Sub | RevocationKind::Client) && revoked_at < i64::MAX {
            assert!(
                !revoked(&set, kind, value, revoked_at + 1),
                "{kind:?} {value:?} revokes tokens issued after it"
            );
        }
    }
    // Pruning drops exactly the entries no longer relevant.
    let mut cuts: Vec<i64> = expected.values().map(|&(_, until)| until).collect();
    cuts.extend([i64::MIN, i64::MAX]);
    for now in cuts {
        let set = RevocationSet::new();
        set.apply_page(page);
        set.prune(now);
        let kept = expected
            .values()
            .filter(|&&(_, until)| until >= now)
            .count();
        assert_eq!(set.len(), kept, "prune({now})");
        for (&(kind, value), &(revoked_at, until)) in &expected {
            assert_eq!(
                revoked(&set, kind, value, revoked_at),
                until >= now,
                "prune({now}): {kind:?} {value:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// verify_jws and verify_jwe: the resource servers' token verification

struct Harness {
    runtime: tokio::runtime::Runtime,
    key: SigningKeyPair,
    encrypter: Box<dyn JweEncrypter>,
    jws: Verifier,
    jwe: Verifier,
    /// `header.payload` of every token [`seeds`] signs.
    signed: HashSet<String>,
}

/// One verifier pair per process: building them parses keys.
fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let key = SigningKeyPair::from_pem(SIGNING_KEY_PEM).expect("fixed signing key");
        let jwks = json!({ "keys": [key.public_jwk()] }).to_string();
        let revocations = Arc::new(RevocationSet::new());
        revocations.apply(&[
            FeedEntry {
                kind: RevocationKind::Jti,
                value: REVOKED_JTI.into(),
                revoked_at: IAT,
                relevant_until: FAR_FUTURE,
            },
            FeedEntry {
                kind: RevocationKind::Sub,
                value: REVOKED_SUB.into(),
                revoked_at: SUB_REVOKED_AT,
                relevant_until: FAR_FUTURE,
            },
        ]);
        let verifier = |decrypt: bool| {
            let b = Verifier::builder(ISS, AUD)
                .static_jwks(jwks.clone())
                .revocations(revocations.clone());
            let b = if decrypt {
                b.decryption_key(DECRYPTION_JWK)
            } else {
                b
            };
            b.build().expect("test verifier")
        };
        let mut public: Value = serde_json::from_str(DECRYPTION_JWK).expect("fixed JWK");
        public.as_object_mut().expect("JWK object").remove("d");
        let public = Jwk::from_bytes(public.to_string().as_bytes()).expect("public JWK");
        let encrypter = Box::new(
            ECDH_ES_A256KW
                .encrypter_from_jwk(&public)
                .expect("encrypter"),
        );
        let signed = seeds_for(&key)
            .iter()
            .map(|s| {
                signing_input(
                    s.header.to_string().as_bytes(),
                    s.claims.to_string().as_bytes(),
                )
            })
            .collect();
        Harness {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime"),
            jws: verifier(false),
            jwe: verifier(true),
            key,
            encrypter,
            signed,
        }
    })
}

fn signing_input(header: &[u8], claims: &[u8]) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    )
}

impl Harness {
    fn sign(&self, header: &[u8], claims: &[u8]) -> String {
        let input = signing_input(header, claims);
        let sig = self
            .key
            .sign(input.as_bytes())
            .expect("an in-process key signs");
        format!("{input}.{sig}")
    }

    fn encrypt(&self, jwe_header: &JweHeader, jws: &str) -> Option<String> {
        josekit::jwe::serialize_compact(jws.as_bytes(), jwe_header, self.encrypter.as_ref()).ok()
    }

    fn verify(
        &self,
        verifier: &Verifier,
        token: &str,
    ) -> (Result<AccessClaims, VerifyError>, i64, i64) {
        let before = now();
        let result = self.runtime.block_on(verifier.verify(token));
        if let Err(e) = &result {
            check_message("VerifyError", &e.to_string());
        }
        (result, before, now())
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// The claims rules every accepted token must meet, checked independently
/// of the verifier (`before`/`after` bracket the verification).
fn check_claims(claims: &AccessClaims, before: i64, after: i64) {
    assert_eq!(claims.iss, ISS, "wrong issuer accepted");
    assert!(
        claims.aud.contains(AUD),
        "wrong audience accepted: {:?}",
        claims.aud
    );
    assert!(
        claims.exp >= before - LEEWAY,
        "expired token accepted (exp {})",
        claims.exp
    );
    assert!(
        claims.nbf <= after + LEEWAY,
        "token not yet valid accepted (nbf {})",
        claims.nbf
    );
    assert_ne!(claims.jti, REVOKED_JTI, "revoked jti accepted");
    assert!(
        !(claims.sub == REVOKED_SUB && claims.iat <= SUB_REVOKED_AT),
        "token of a revoked user accepted"
    );
}

/// An accepted raw JWS must be one this file signed.
pub fn check_raw_jws_accepted(token: &str) {
    let input = token.rsplit_once('.').map_or(token, |(input, _)| input);
    assert!(
        harness().signed.contains(input),
        "a token we never signed was accepted: {token:?}"
    );
}

/// An accepted token has one encoding only: each segment is base64url that
/// re-encodes to itself, and a JWE (ECDH-ES+A256KW, A256GCM; RFC 7518
/// §4.6, §5.3) carries a 40-byte wrapped key, a 96-bit IV and a full
/// 128-bit tag (a shorter tag is a weaker integrity check).
pub fn check_compact_form(token: &str) {
    let segments: Vec<Vec<u8>> = token
        .split('.')
        .map(|s| {
            let bytes = URL_SAFE_NO_PAD
                .decode(s)
                .expect("accepted segment is not base64url");
            assert_eq!(
                URL_SAFE_NO_PAD.encode(&bytes),
                s,
                "non-canonical base64url accepted"
            );
            bytes
        })
        .collect();
    if let [_, key, iv, _, tag] = &segments[..] {
        assert_eq!(
            key.len(),
            40,
            "JWE accepted with a {}-byte wrapped key",
            key.len()
        );
        assert_eq!(iv.len(), 12, "JWE accepted with a {}-byte IV", iv.len());
        assert_eq!(tag.len(), 16, "JWE accepted with a {}-byte tag", tag.len());
    }
}

/// The JWS header rules every accepted token's header must meet.
fn check_jws_header(header: &[u8]) {
    let h: serde_json::Map<String, Value> =
        serde_json::from_slice(header).expect("accepted header is not a JSON object");
    assert_eq!(
        h.get("alg"),
        Some(&json!("ES256")),
        "alg other than ES256 accepted"
    );
    let typ = h.get("typ").and_then(Value::as_str).unwrap_or_default();
    assert!(
        typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt"),
        "typ {typ:?} accepted"
    );
    for name in ["crit", "zip", "enc"] {
        assert!(!h.contains_key(name), "JWS header with {name} accepted");
    }
    assert_eq!(
        h.get("kid").and_then(Value::as_str),
        Some(harness().key.kid()),
        "wrong kid accepted"
    );
}

/// Splits a structured input at newlines into exactly `N` parts.
fn lines<const N: usize>(data: &[u8]) -> Option<[&[u8]; N]> {
    let mut parts = data.splitn(N, |&b| b == b'\n');
    let mut out = [&[][..]; N];
    for slot in &mut out {
        *slot = parts.next()?;
    }
    Some(out)
}

/// A JWS verifier on one input (see the module docs for its two forms).
pub fn verify_jws(data: &[u8]) -> Result<AccessClaims, VerifyError> {
    let h = harness();
    if data.first() == Some(&b'{') {
        // Structured: JWS header JSON, newline, claims JSON.
        let Some([header, claims]) = lines::<2>(data) else {
            return Err(VerifyError::Malformed("fuzz input: no newline"));
        };
        let (result, before, after) = h.verify(&h.jws, &h.sign(header, claims));
        if let Ok(c) = &result {
            check_structured(header, claims, c, before, after);
        }
        result
    } else {
        let token = String::from_utf8_lossy(data);
        let (result, before, after) = h.verify(&h.jws, &token);
        if let Ok(c) = &result {
            check_raw_jws_accepted(&token);
            check_compact_form(&token);
            check_claims(c, before, after);
        }
        result
    }
}

/// An accepted token the harness built from `header` and `claims`: its
/// header obeys the rules, its claims are valid now and are exactly those.
fn check_structured(header: &[u8], claims: &[u8], c: &AccessClaims, before: i64, after: i64) {
    check_jws_header(header);
    check_claims(c, before, after);
    assert_eq!(
        serde_json::from_slice::<AccessClaims>(claims).ok().as_ref(),
        Some(c)
    );
}

/// A JWE verifier on one input (see the module docs for its two forms).
pub fn verify_jwe(data: &[u8]) -> Result<AccessClaims, VerifyError> {
    let h = harness();
    if data.first() == Some(&b'{') {
        // Structured: JWE header JSON, JWS header JSON, claims JSON.
        let Some([jwe_header, header, claims]) = lines::<3>(data) else {
            return Err(VerifyError::Malformed("fuzz input: fewer than 3 lines"));
        };
        let jws = h.sign(header, claims);
        let Some(token) = JweHeader::from_bytes(jwe_header)
            .ok()
            .and_then(|jh| h.encrypt(&jh, &jws))
        else {
            return Err(VerifyError::Malformed("fuzz input: josekit cannot encrypt"));
        };
        let (result, before, after) = h.verify(&h.jwe, &token);
        if let Ok(c) = &result {
            let protected = token.split('.').next().unwrap_or_default();
            let jh: serde_json::Map<String, Value> =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(protected).expect("base64url"))
                    .expect("JWE header object");
            assert_eq!(jh.get("alg"), Some(&json!("ECDH-ES+A256KW")));
            assert_eq!(jh.get("enc"), Some(&json!("A256GCM")));
            let cty = jh.get("cty").and_then(Value::as_str).unwrap_or_default();
            assert!(cty.eq_ignore_ascii_case("JWT"), "cty {cty:?} accepted");
            assert!(!jh.contains_key("zip") && !jh.contains_key("crit"));
            check_structured(header, claims, c, before, after);
        }
        result
    } else {
        let token = String::from_utf8_lossy(data);
        let (result, before, after) = h.verify(&h.jwe, &token);
        if let Ok(c) = &result {
            // Cannot be forged without the audience's public key and a
            // signature: an accepted JWE must carry one of the seeds' claims.
            let ours = seeds_for(&h.key).into_iter().any(|s| {
                serde_json::from_value::<AccessClaims>(s.claims)
                    .ok()
                    .as_ref()
                    == Some(c)
            });
            assert!(ours, "a JWE we never made was accepted: {token:?}");
            check_compact_form(&token);
            check_claims(c, before, after);
        }
        result
    }
}

// ---------------------------------------------------------------------------
// Seeds: starting inputs that reach deep code, written to fuzz/seeds/ by
// the ignored test `write_fuzz_seeds` in tests/api/fuzz_regressions.rs.

/// One signed token of the seed corpus.
pub struct Seed {
    /// File name stem; `valid-…` seeds must verify.
    pub name: &'static str,
    pub header: Value,
    pub claims: Value,
}

fn seeds_for(key: &SigningKeyPair) -> Vec<Seed> {
    let header = json!({ "alg": "ES256", "typ": "at+jwt", "kid": key.kid() });
    let claims = json!({
        "iss": ISS, "sub": "user-1", "aud": AUD, "exp": FAR_FUTURE, "iat": IAT, "nbf": IAT,
        "jti": "5b1d5e7e-7a0e-4b7e-9d59-2f8b2f0f3c11", "client_id": "spa", "scope": "read write",
        "sid": "0d7b5d1c-54c3-4b6f-8a3a-0d5e4b9f7a21"
    });
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims.clone();
        f(&mut c);
        c
    };
    let mut app_typ = header.clone();
    app_typ["typ"] = json!("application/at+jwt");
    let seed = |name, header: &Value, claims: Value| Seed {
        name,
        header: header.clone(),
        claims,
    };
    vec![
        seed("valid-user", &header, claims.clone()),
        seed("valid-application-typ", &app_typ, claims.clone()),
        seed(
            "valid-client-credentials",
            &header,
            with(&|c| {
                c.as_object_mut().expect("object").remove("sid");
                c["sub"] = json!("backend");
                c["client_id"] = json!("backend");
            }),
        ),
        seed(
            "valid-many-audiences",
            &header,
            with(&|c| c["aud"] = json!(["https://other.example", AUD])),
        ),
        seed("expired", &header, with(&|c| c["exp"] = json!(IAT + 900))),
        seed(
            "not-yet-valid",
            &header,
            with(&|c| c["nbf"] = json!(FAR_FUTURE - 1)),
        ),
        seed(
            "wrong-audience",
            &header,
            with(&|c| c["aud"] = json!("https://other.example")),
        ),
        seed(
            "wrong-issuer",
            &header,
            with(&|c| c["iss"] = json!("https://evil.example")),
        ),
        seed(
            "revoked-jti",
            &header,
            with(&|c| c["jti"] = json!(REVOKED_JTI)),
        ),
        seed(
            "revoked-sub",
            &header,
            with(&|c| c["sub"] = json!(REVOKED_SUB)),
        ),
        seed(
            "missing-claim",
            &header,
            with(&|c| {
                c.as_object_mut().expect("object").remove("scope");
            }),
        ),
    ]
}

/// Writes the seed corpora under `fuzz_dir/seeds/<target>/` (signatures
/// and encryptions are randomized, so the files change on each run).
pub fn write_seeds(fuzz_dir: &Path) -> std::io::Result<()> {
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = fuzz_dir.join("seeds").join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), data)
    };
    for (name, data) in [
        ("password", &b"grant_type=password&client_id=spa&username=alice&password=correct+horse%20battery"[..]),
        ("refresh", b"grant_type=refresh_token&client_id=spa&refresh_token=rt_AbC-123_xyz&scope=read+write"),
        ("client-credentials", b"grant_type=client_credentials&client_id=backend&client_secret=s%3Acret&audience=https%3A%2F%2Fapi.example"),
        ("basic", b"Basic bXklMjBhcHA6cyUzQWNyZXQ="),
        ("bearer", b"Bearer abc.def.ghi"),
    ] {
        write("form", name, data)?;
    }
    for (name, data) in [
        ("query", &b"since=42&limit=7"[..]),
        ("query-limit", b"limit=1000"),
        (
            "page",
            br#"{"revocations":[{"kind":"jti","value":"j1","revoked_at":100,"relevant_until":1000},{"kind":"sid","value":"s1","revoked_at":100,"relevant_until":1000},{"kind":"sub","value":"u1","revoked_at":100,"relevant_until":1000},{"kind":"client","value":"c1","revoked_at":200,"relevant_until":900},{"kind":"sub","value":"u1","revoked_at":300,"relevant_until":800}],"next_cursor":"7","has_more":true}"#,
        ),
        ("page-empty", br#"{"revocations":[],"next_cursor":"","has_more":false}"#),
    ] {
        write("feed_query", name, data)?;
    }
    let h = harness();
    let jwe_header = json!({ "enc": "A256GCM", "cty": "JWT" });
    let jwe_header_obj =
        JweHeader::from_bytes(jwe_header.to_string().as_bytes()).expect("JWE header");
    for s in seeds_for(&h.key) {
        let (header, claims) = (s.header.to_string(), s.claims.to_string());
        let jws = h.sign(header.as_bytes(), claims.as_bytes());
        write("verify_jws", &format!("{}.jwt", s.name), jws.as_bytes())?;
        write(
            "verify_jws",
            &format!("{}.json", s.name),
            format!("{header}\n{claims}").as_bytes(),
        )?;
        let jwe = h.encrypt(&jwe_header_obj, &jws).expect("encrypts");
        write("verify_jwe", &format!("{}.jwe", s.name), jwe.as_bytes())?;
        write(
            "verify_jwe",
            &format!("{}.json", s.name),
            format!("{jwe_header}\n{header}\n{claims}").as_bytes(),
        )?;
    }
    Ok(())
}
