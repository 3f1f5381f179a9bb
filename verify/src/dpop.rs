//! DPoP proofs (RFC 9449): the checks of §4.3, shared by the issuer's
//! token endpoint and resource servers.
//!
//! A proof is a JWT the client signs with a key it holds; the server learns
//! that key's thumbprint (`jkt`), to which tokens are then bound. The checks,
//! in order, each with its own [`DpopError`]:
//!
//! 1. one compact JWS of bounded size, no `crit`;
//! 2. `typ` exactly `dpop+jwt`; `alg` one of [`SUPPORTED_ALGS`] (asymmetric
//!    only, so `none` and HMAC never pass);
//! 3. `jwk` a public key of the type `alg` names, with no private member;
//! 4. the signature under that `jwk`;
//! 5. `htm` the request's method, `htu` its URL (both normalised per
//!    RFC 3986 §6, query and fragment ignored);
//! 6. `iat` within the window; the server `nonce` when one is required;
//! 7. `ath` the hash of the access token presented with it, if any;
//! 8. `jti` never seen before within the window (checked last, so a proof
//!    refused for another reason does not burn its `jti`).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::hmac;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ED25519, UnparsedPublicKey,
    VerificationAlgorithm,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Map, Value};

/// The `alg` values accepted in proofs, for `dpop_signing_alg_values_supported`
/// and the `algs` of a `WWW-Authenticate: DPoP` challenge.
pub const SUPPORTED_ALGS: &[&str] = &["ES256", "ES384", "EdDSA"];

/// Proofs longer than this are refused before parsing (a P-384 proof with
/// a long URL is well under 2 KiB).
pub const MAX_PROOF_LEN: usize = 4096;

/// JWK members that only a private key has.
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Why a proof was refused. Each names the rule it broke, so the
/// `error_description` tells the client what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DpopError {
    /// Not one compact JWS of acceptable size and shape; says what.
    #[error("malformed DPoP proof: {0}")]
    Malformed(&'static str),
    /// `typ` is not `dpop+jwt`.
    #[error("DPoP proof typ must be dpop+jwt")]
    Typ,
    /// `alg` is missing, symmetric, `none` or not supported.
    #[error("DPoP proof alg must be one of ES256, ES384, EdDSA")]
    Alg,
    /// `jwk` is missing, private, or not a key of the type `alg` needs.
    #[error("DPoP proof jwk: {0}")]
    Jwk(&'static str),
    /// The signature does not verify under `jwk`.
    #[error("DPoP proof signature is invalid")]
    Signature,
    /// `htm` is not this request's method.
    #[error("DPoP proof htm does not match the request method")]
    Method,
    /// `htu` is not this request's URL.
    #[error("DPoP proof htu does not match the request URL")]
    Url,
    /// `iat` is outside the accepted window.
    #[error("DPoP proof iat is too old or in the future")]
    IssuedAt,
    /// A server nonce is required and the proof has none, or an expired or
    /// foreign one: answer `use_dpop_nonce` with a fresh `DPoP-Nonce`.
    #[error("a fresh DPoP nonce is required")]
    UseNonce,
    /// `ath` is missing or not the hash of the presented access token.
    #[error("DPoP proof ath does not match the access token")]
    AccessTokenHash,
    /// `ath` is present but no access token came with the proof.
    #[error("DPoP proof ath given without an access token")]
    UnexpectedAccessTokenHash,
    /// This `jti` was already used with this key within the window.
    #[error("DPoP proof was already used")]
    Replayed,
    /// The replay cache is full: refused rather than risk a replay.
    #[error("too many DPoP proofs at once; retry shortly")]
    Busy,
}

/// What a request must match, given to [`DpopValidator::check`].
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// The absolute URL the client addressed (scheme, host, path; a query
    /// or fragment is ignored).
    pub url: &'a str,
    /// The access token sent with the proof (resource servers), whose hash
    /// must be the proof's `ath`; `None` at the token endpoint.
    pub access_token: Option<&'a str>,
    /// Unix seconds now.
    pub now: i64,
}

/// A proof that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// RFC 7638 thumbprint (base64url SHA-256) of the proof's key: the
    /// `cnf.jkt` tokens are bound to.
    pub jkt: String,
    /// The proof's `jti`.
    pub jti: String,
    /// The proof's `iat`.
    pub iat: i64,
}

/// Settings of a [`DpopValidator`]; `Default` is what the issuer uses.
#[derive(Debug, Clone)]
pub struct DpopOptions {
    /// How old a proof's `iat` may be.
    pub max_age: Duration,
    /// How far in the future `iat` may be (clock skew).
    pub max_skew: Duration,
    /// Most `jti`s remembered per window; beyond it proofs are refused
    /// ([`DpopError::Busy`]) rather than forgotten.
    pub replay_capacity: usize,
    /// Whether proofs must carry a server nonce (see [`NonceKey`]).
    pub require_nonce: bool,
}

impl Default for DpopOptions {
    fn default() -> DpopOptions {
        DpopOptions {
            max_age: Duration::from_secs(60),
            max_skew: Duration::from_secs(5),
            replay_capacity: 200_000,
            require_nonce: false,
        }
    }
}

/// Checks DPoP proofs and remembers their `jti`s for the window.
pub struct DpopValidator {
    options: DpopOptions,
    nonces: Option<NonceKey>,
    seen: Mutex<ReplayWindow>,
}

impl std::fmt::Debug for DpopValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopValidator")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl DpopValidator {
    /// A validator; `nonces` issues and checks server nonces and is needed
    /// when `options.require_nonce` is set.
    pub fn new(options: DpopOptions, nonces: Option<NonceKey>) -> DpopValidator {
        assert!(
            !options.require_nonce || nonces.is_some(),
            "require_nonce needs a NonceKey"
        );
        let generation = (options.max_age + options.max_skew).as_secs().max(1) as i64;
        DpopValidator {
            seen: Mutex::new(ReplayWindow::new(generation, options.replay_capacity)),
            options,
            nonces,
        }
    }

    /// Whether proofs must carry a server nonce.
    pub fn requires_nonce(&self) -> bool {
        self.options.require_nonce
    }

    /// A nonce to send in `DPoP-Nonce`, if this validator has a key.
    pub fn nonce(&self, now: i64) -> Option<String> {
        self.nonces.as_ref().map(|k| k.issue(now))
    }

    /// Checks `proof` (the `DPoP` header's value) against `request`.
    pub fn check(&self, proof: &str, request: &Request<'_>) -> Result<Proof, DpopError> {
        if proof.len() > MAX_PROOF_LEN {
            return Err(DpopError::Malformed("longer than 4096 bytes"));
        }
        let mut parts = proof.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(DpopError::Malformed("not a compact JWS of three parts"));
        };
        let header =
            json_object(h).ok_or(DpopError::Malformed("the header is not a JSON object"))?;
        if header.contains_key("crit") {
            return Err(DpopError::Malformed("crit is not supported"));
        }
        if header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
            return Err(DpopError::Typ);
        }
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(DpopError::Alg)?;
        let (key_alg, jkt, public) = match header.get("jwk") {
            Some(Value::Object(jwk)) => public_key(alg, jwk)?,
            _ => return Err(DpopError::Jwk("missing or not an object")),
        };
        let signature = B64
            .decode(s)
            .map_err(|_| DpopError::Malformed("the signature is not base64url"))?;
        let signed = &proof[..h.len() + 1 + c.len()];
        UnparsedPublicKey::new(key_alg, &public)
            .verify(signed.as_bytes(), &signature)
            .map_err(|_| DpopError::Signature)?;

        let claims =
            json_object(c).ok_or(DpopError::Malformed("the claims are not a JSON object"))?;
        let text = |name| claims.get(name).and_then(Value::as_str);
        if text("htm") != Some(request.method) {
            return Err(DpopError::Method);
        }
        let htu = text("htu").ok_or(DpopError::Url)?;
        if normalise_url(htu).is_none() || normalise_url(htu) != normalise_url(request.url) {
            return Err(DpopError::Url);
        }
        let iat = claims
            .get("iat")
            .and_then(Value::as_i64)
            .ok_or(DpopError::Malformed("iat must be an integer"))?;
        let earliest = request.now - self.options.max_age.as_secs() as i64;
        let latest = request.now + self.options.max_skew.as_secs() as i64;
        if !(earliest..=latest).contains(&iat) {
            return Err(DpopError::IssuedAt);
        }
        if self.options.require_nonce {
            let fresh = text("nonce").is_some_and(|n| {
                self.nonces
                    .as_ref()
                    .is_some_and(|k| k.accepts(n, request.now))
            });
            if !fresh {
                return Err(DpopError::UseNonce);
            }
        }
        match (text("ath"), request.access_token) {
            (None, None) => {}
            (Some(_), None) => return Err(DpopError::UnexpectedAccessTokenHash),
            (ath, Some(token)) => {
                let expected = B64.encode(digest(&SHA256, token.as_bytes()));
                // Both are public values; equality leaks nothing.
                if ath != Some(expected.as_str()) {
                    return Err(DpopError::AccessTokenHash);
                }
            }
        }
        let jti = match text("jti") {
            Some(j) if !j.is_empty() && j.len() <= 256 => j,
            _ => {
                return Err(DpopError::Malformed(
                    "jti must be a string of 1 to 256 bytes",
                ));
            }
        };
        let seen_key = digest(&SHA256, format!("{jkt}.{jti}").as_bytes());
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(seen_key.as_ref().try_into().expect("SHA-256"), request.now)?;
        Ok(Proof {
            jkt,
            jti: jti.to_owned(),
            iat,
        })
    }
}

/// The verification algorithm, RFC 7638 thumbprint and raw public key of
/// a proof's `jwk`, which must suit `alg` and hold no private member.
fn public_key(
    alg: &str,
    jwk: &Map<String, Value>,
) -> Result<(&'static dyn VerificationAlgorithm, String, Vec<u8>), DpopError> {
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err(DpopError::Jwk(
            "must be a public key (it has private members)",
        ));
    }
    let member = |name: &str| jwk.get(name).and_then(Value::as_str);
    let coordinate = |name: &str, len: usize| -> Result<Vec<u8>, DpopError> {
        member(name)
            .and_then(|v| B64.decode(v).ok())
            .filter(|bytes| bytes.len() == len)
            .ok_or(DpopError::Jwk(
                "a coordinate is missing or of the wrong length",
            ))
    };
    let (algorithm, kty, crv, len): (&'static dyn VerificationAlgorithm, _, _, _) = match alg {
        "ES256" => (&ECDSA_P256_SHA256_FIXED, "EC", "P-256", 32),
        "ES384" => (&ECDSA_P384_SHA384_FIXED, "EC", "P-384", 48),
        "EdDSA" => (&ED25519, "OKP", "Ed25519", 32),
        _ => return Err(DpopError::Alg),
    };
    if member("kty") != Some(kty) || member("crv") != Some(crv) {
        return Err(DpopError::Jwk("kty and crv must match alg"));
    }
    let x = coordinate("x", len)?;
    // Members in lexicographic order, no whitespace (RFC 7638 §3.2).
    let (canonical, public) = if kty == "EC" {
        let y = coordinate("y", len)?;
        let canonical = format!(
            r#"{{"crv":"{crv}","kty":"EC","x":"{}","y":"{}"}}"#,
            B64.encode(&x),
            B64.encode(&y)
        );
        (canonical, [&[4u8][..], &x, &y].concat())
    } else {
        let canonical = format!(r#"{{"crv":"{crv}","kty":"OKP","x":"{}"}}"#, B64.encode(&x));
        (canonical, x)
    };
    Ok((
        algorithm,
        B64.encode(digest(&SHA256, canonical.as_bytes())),
        public,
    ))
}

fn json_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = B64.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// `url` normalised for comparison (RFC 9449 §4.3 step 9, RFC 3986 §6.2.2
/// and §6.2.3): scheme and host lower-cased, the default port dropped, dot
/// segments removed, an empty path made `/`, percent-escapes of unreserved
/// characters decoded and the others upper-cased; query and fragment
/// dropped. `None` if it is not an absolute http(s) URL.
pub fn normalise_url(url: &str) -> Option<String> {
    let mut parsed = url::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return None;
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return None;
    }
    parsed.set_query(None);
    parsed.set_fragment(None);
    let path = normalise_escapes(parsed.path());
    parsed.set_path(&path);
    Some(parsed.to_string())
}

/// Decodes `%XX` of unreserved characters and upper-cases the hex of the rest.
fn normalise_escapes(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(v)) if v.is_ascii_alphanumeric() || b"-._~".contains(&v) => {
                out.push(v as char);
                i += 3;
            }
            (b'%', Some(v)) => {
                out.push_str(&format!("%{v:02X}"));
                i += 3;
            }
            (b, _) => {
                out.push(b as char);
                i += 1;
            }
        }
    }
    out
}

/// Issues and checks server nonces (`DPoP-Nonce`) without shared state: a
/// nonce is a time step and its HMAC, so every instance with the same key
/// accepts what any of them issued, for one to two steps.
pub struct NonceKey {
    key: hmac::Key,
    step: i64,
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NonceKey(step {} s)", self.step)
    }
}

impl NonceKey {
    /// A key from 32 secret bytes shared by the instances that must accept
    /// each other's nonces; a nonce lives between `step` and twice `step`.
    pub fn new(secret: &[u8; 32], step: Duration) -> NonceKey {
        NonceKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            step: step.as_secs().max(1) as i64,
        }
    }

    fn tag(&self, counter: i64) -> String {
        let mac = hmac::sign(&self.key, &counter.to_be_bytes());
        format!("{counter}.{}", B64.encode(&mac.as_ref()[..16]))
    }

    /// The nonce of the current step.
    pub fn issue(&self, now: i64) -> String {
        self.tag(now.div_euclid(self.step))
    }

    /// Whether `nonce` was issued in this step or the one before.
    pub fn accepts(&self, nonce: &str, now: i64) -> bool {
        let current = now.div_euclid(self.step);
        let Some(counter) = nonce
            .split_once('.')
            .and_then(|(c, _)| c.parse::<i64>().ok())
        else {
            return false;
        };
        (counter == current || counter == current - 1)
            && aws_lc_rs::constant_time::verify_slices_are_equal(
                self.tag(counter).as_bytes(),
                nonce.as_bytes(),
            )
            .is_ok()
    }
}

/// The `jti`s seen in the current and the previous generation. A proof is
/// accepted at most `max_age + max_skew` after its `iat`, and a generation
/// lives that long twice, so a `jti` is remembered for as long as its proof
/// could be replayed.
struct ReplayWindow {
    generation: i64,
    capacity: usize,
    started: i64,
    current: HashSet<[u8; 32]>,
    previous: HashSet<[u8; 32]>,
}

impl ReplayWindow {
    fn new(generation: i64, capacity: usize) -> ReplayWindow {
        ReplayWindow {
            generation,
            capacity,
            started: i64::MIN,
            current: HashSet::new(),
            previous: HashSet::new(),
        }
    }

    fn insert(&mut self, key: [u8; 32], now: i64) -> Result<(), DpopError> {
        if self.started == i64::MIN {
            self.started = now;
        }
        if now >= self.started.saturating_add(2 * self.generation) {
            self.previous.clear();
            self.current.clear();
            self.started = now;
        } else if now >= self.started + self.generation {
            self.previous = std::mem::take(&mut self.current);
            self.started += self.generation;
        }
        if self.current.contains(&key) || self.previous.contains(&key) {
            return Err(DpopError::Replayed);
        }
        if self.current.len() >= self.capacity {
            return Err(DpopError::Busy);
        }
        self.current.insert(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
        Ed25519KeyPair, KeyPair,
    };
    use serde_json::json;

    const URL: &str = "https://auth.example/oauth/token";
    const NOW: i64 = 1_800_000_000;

    enum Signer {
        P256(EcdsaKeyPair),
        P384(EcdsaKeyPair),
        Ed(Ed25519KeyPair),
    }

    impl Signer {
        fn p256() -> Signer {
            Signer::P256(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap())
        }

        fn alg(&self) -> &'static str {
            match self {
                Signer::P256(_) => "ES256",
                Signer::P384(_) => "ES384",
                Signer::Ed(_) => "EdDSA",
            }
        }

        fn jwk(&self) -> Value {
            match self {
                Signer::P256(k) | Signer::P384(k) => {
                    let point = k.public_key().as_ref();
                    let n = (point.len() - 1) / 2;
                    json!({
                        "kty": "EC",
                        "crv": if n == 32 { "P-256" } else { "P-384" },
                        "x": B64.encode(&point[1..1 + n]),
                        "y": B64.encode(&point[1 + n..]),
                    })
                }
                Signer::Ed(k) => json!({
                    "kty": "OKP", "crv": "Ed25519", "x": B64.encode(k.public_key().as_ref()),
                }),
            }
        }

        fn sign(&self, input: &[u8]) -> Vec<u8> {
            match self {
                Signer::P256(k) | Signer::P384(k) => k
                    .sign(&SystemRandom::new(), input)
                    .unwrap()
                    .as_ref()
                    .to_vec(),
                Signer::Ed(k) => k.sign(input).as_ref().to_vec(),
            }
        }

        /// A proof with `header` and `claims` merged over valid defaults.
        fn proof(&self, header: Value, claims: Value) -> String {
            let mut h = json!({ "typ": "dpop+jwt", "alg": self.alg(), "jwk": self.jwk() });
            merge(&mut h, header);
            let mut c = json!({ "jti": "j-1", "htm": "POST", "htu": URL, "iat": NOW });
            merge(&mut c, claims);
            let input = format!(
                "{}.{}",
                B64.encode(h.to_string()),
                B64.encode(c.to_string())
            );
            let sig = self.sign(input.as_bytes());
            format!("{input}.{}", B64.encode(sig))
        }
    }

    /// Sets (or, for `null`, removes) each member of `patch` in `target`.
    fn merge(target: &mut Value, patch: Value) {
        for (k, v) in patch.as_object().unwrap() {
            match v {
                Value::Null => target.as_object_mut().unwrap().remove(k),
                v => target.as_object_mut().unwrap().insert(k.clone(), v.clone()),
            };
        }
    }

    fn request() -> Request<'static> {
        Request {
            method: "POST",
            url: URL,
            access_token: None,
            now: NOW,
        }
    }

    fn validator() -> DpopValidator {
        DpopValidator::new(DpopOptions::default(), None)
    }

    #[test]
    fn the_thumbprint_is_rfc_7638s() {
        // RFC 9449 §6.1's example key and its jkt.
        let jwk = json!({
            "kty": "EC",
            "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
            "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
            "crv": "P-256"
        });
        let (_, jkt, _) = public_key("ES256", jwk.as_object().unwrap()).unwrap();
        assert_eq!(jkt, "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I");
    }

    #[test]
    fn valid_proofs_pass_for_every_supported_alg() {
        let signers = [
            Signer::p256(),
            Signer::P384(EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap()),
            Signer::Ed(
                Ed25519KeyPair::from_pkcs8(
                    Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                        .unwrap()
                        .as_ref(),
                )
                .unwrap(),
            ),
        ];
        let v = validator();
        for s in &signers {
            let proof = v.check(&s.proof(json!({}), json!({})), &request()).unwrap();
            assert_eq!(proof.jti, "j-1");
            assert_eq!(proof.iat, NOW);
            let (_, jkt, _) = public_key(s.alg(), s.jwk().as_object().unwrap()).unwrap();
            assert_eq!(proof.jkt, jkt);
        }
    }

    #[test]
    fn a_proof_is_accepted_once_per_key() {
        let v = validator();
        let (a, b) = (Signer::p256(), Signer::p256());
        let proof = a.proof(json!({}), json!({}));
        v.check(&proof, &request()).unwrap();
        assert_eq!(v.check(&proof, &request()), Err(DpopError::Replayed));
        // A fresh signature over the same claims is the same proof.
        let again = a.proof(json!({}), json!({}));
        assert_eq!(v.check(&again, &request()), Err(DpopError::Replayed));
        // Another key's jti is its own.
        v.check(&b.proof(json!({}), json!({})), &request()).unwrap();
    }

    #[test]
    fn a_refused_proof_does_not_burn_its_jti() {
        let v = validator();
        let s = Signer::p256();
        let wrong = Request {
            method: "GET",
            ..request()
        };
        let proof = s.proof(json!({}), json!({}));
        assert_eq!(v.check(&proof, &wrong), Err(DpopError::Method));
        v.check(&proof, &request()).unwrap();
    }

    #[test]
    fn headers_that_break_the_rules_are_refused() {
        let v = validator();
        let s = Signer::p256();
        let cases = [
            (json!({ "typ": "JWT" }), DpopError::Typ),
            (json!({ "typ": null }), DpopError::Typ),
            (json!({ "typ": "DPOP+JWT" }), DpopError::Typ),
            (json!({ "alg": "none" }), DpopError::Alg),
            (json!({ "alg": "HS256" }), DpopError::Alg),
            (json!({ "alg": "RS256" }), DpopError::Alg),
            (json!({ "alg": null }), DpopError::Alg),
            (
                json!({ "jwk": null }),
                DpopError::Jwk("missing or not an object"),
            ),
            (
                json!({ "crit": ["exp"] }),
                DpopError::Malformed("crit is not supported"),
            ),
        ];
        for (header, expected) in cases {
            let proof = s.proof(header.clone(), json!({}));
            assert_eq!(v.check(&proof, &request()), Err(expected), "{header}");
        }
    }

    #[test]
    fn the_key_must_be_public_and_fit_the_alg() {
        let v = validator();
        let s = Signer::p256();
        let mut private = s.jwk();
        private["d"] = json!(B64.encode([7u8; 32]));
        let mut other_curve = s.jwk();
        other_curve["crv"] = json!("P-384");
        let mut short = s.jwk();
        short["x"] = json!(B64.encode([7u8; 31]));
        let okp = json!({ "kty": "OKP", "crv": "Ed25519", "x": B64.encode([7u8; 32]) });
        let symmetric = json!({ "kty": "oct", "k": B64.encode([7u8; 32]) });
        for (jwk, expected) in [
            (private, "must be a public key (it has private members)"),
            (other_curve, "kty and crv must match alg"),
            (short, "a coordinate is missing or of the wrong length"),
            (okp, "kty and crv must match alg"),
            (symmetric, "must be a public key (it has private members)"),
        ] {
            let proof = s.proof(json!({ "jwk": jwk }), json!({}));
            assert_eq!(
                v.check(&proof, &request()),
                Err(DpopError::Jwk(expected)),
                "{proof}"
            );
        }
        // Another key's jwk with this key's signature.
        let proof = s.proof(json!({ "jwk": Signer::p256().jwk() }), json!({}));
        assert_eq!(v.check(&proof, &request()), Err(DpopError::Signature));
    }

    #[test]
    fn tampered_or_malformed_proofs_are_refused() {
        let v = validator();
        let s = Signer::p256();
        let proof = s.proof(json!({}), json!({}));
        let (input, _) = proof.rsplit_once('.').unwrap();
        let (h, _) = input.split_once('.').unwrap();
        let forged = B64
            .encode(json!({ "jti": "j-1", "htm": "POST", "htu": URL, "iat": NOW + 1 }).to_string());
        let sig = proof.rsplit_once('.').unwrap().1;
        assert_eq!(
            v.check(&format!("{h}.{forged}.{sig}"), &request()),
            Err(DpopError::Signature)
        );
        for bad in [
            "",
            "a.b",
            "a.b.c.d",
            &format!("{input}.!!"),
            &"x".repeat(5000),
        ] {
            assert!(
                matches!(v.check(bad, &request()), Err(DpopError::Malformed(_))),
                "{bad:.40}"
            );
        }
        let no_jti = s.proof(json!({}), json!({ "jti": null }));
        assert!(matches!(
            v.check(&no_jti, &request()),
            Err(DpopError::Malformed(_))
        ));
        let text_iat = s.proof(json!({}), json!({ "iat": "1800000000" }));
        assert!(matches!(
            v.check(&text_iat, &request()),
            Err(DpopError::Malformed(_))
        ));
    }

    #[test]
    fn method_and_url_must_be_this_requests() {
        let v = validator();
        let s = Signer::p256();
        for (claims, expected) in [
            (json!({ "htm": "post" }), DpopError::Method),
            (json!({ "htm": null }), DpopError::Method),
            (
                json!({ "htu": "https://auth.example/oauth/revoke" }),
                DpopError::Url,
            ),
            (
                json!({ "htu": "http://auth.example/oauth/token" }),
                DpopError::Url,
            ),
            (
                json!({ "htu": "https://other.example/oauth/token" }),
                DpopError::Url,
            ),
            (
                json!({ "htu": "https://auth.example:8443/oauth/token" }),
                DpopError::Url,
            ),
            (json!({ "htu": "/oauth/token" }), DpopError::Url),
            (json!({ "htu": null }), DpopError::Url),
        ] {
            let proof = s.proof(json!({}), claims.clone());
            assert_eq!(v.check(&proof, &request()), Err(expected), "{claims}");
        }
        // Equal after RFC 3986 normalisation; query and fragment ignored.
        for (i, htu) in [
            "HTTPS://Auth.Example:443/oauth/token",
            "https://auth.example/oauth/./x/../token?state=1#f",
            "https://auth.example/%6Fauth/token",
        ]
        .into_iter()
        .enumerate()
        {
            let proof = s.proof(json!({}), json!({ "htu": htu, "jti": format!("n{i}") }));
            v.check(&proof, &request())
                .unwrap_or_else(|e| panic!("{htu}: {e}"));
        }
        assert_eq!(
            normalise_url("https://a.example/p%2fq%7e"),
            Some("https://a.example/p%2Fq~".into())
        );
        assert_eq!(normalise_url("https://user:pw@a.example/"), None);
        assert_eq!(normalise_url("ftp://a.example/"), None);
    }

    #[test]
    fn iat_must_be_recent() {
        let v = validator();
        let s = Signer::p256();
        for (iat, ok) in [
            (NOW - 61, false),
            (NOW - 60, true),
            (NOW + 5, true),
            (NOW + 6, false),
        ] {
            let proof = s.proof(json!({}), json!({ "iat": iat, "jti": iat.to_string() }));
            let result = v.check(&proof, &request());
            assert_eq!(result.is_ok(), ok, "iat {iat}: {result:?}");
            if !ok {
                assert_eq!(result, Err(DpopError::IssuedAt));
            }
        }
    }

    #[test]
    fn ath_binds_the_proof_to_the_presented_token() {
        let v = validator();
        let s = Signer::p256();
        let token = "eyJ.access.token";
        let ath = B64.encode(digest(&SHA256, token.as_bytes()));
        let with = |t| Request {
            access_token: t,
            ..request()
        };
        let proof = s.proof(json!({}), json!({ "ath": ath, "jti": "a1" }));
        assert_eq!(
            v.check(&proof, &with(Some("another.token"))),
            Err(DpopError::AccessTokenHash)
        );
        assert_eq!(
            v.check(&proof, &request()),
            Err(DpopError::UnexpectedAccessTokenHash)
        );
        v.check(&proof, &with(Some(token))).unwrap();
        let without = s.proof(json!({}), json!({ "jti": "a2" }));
        assert_eq!(
            v.check(&without, &with(Some(token))),
            Err(DpopError::AccessTokenHash)
        );
    }

    #[test]
    fn server_nonces_are_required_when_configured() {
        let key = || NonceKey::new(&[9; 32], Duration::from_secs(60));
        let options = DpopOptions {
            require_nonce: true,
            ..DpopOptions::default()
        };
        let v = DpopValidator::new(options.clone(), Some(key()));
        let s = Signer::p256();
        let nonce = v.nonce(NOW).unwrap();
        assert_eq!(
            v.check(&s.proof(json!({}), json!({ "jti": "n0" })), &request()),
            Err(DpopError::UseNonce)
        );
        v.check(
            &s.proof(json!({}), json!({ "nonce": nonce, "jti": "n1" })),
            &request(),
        )
        .unwrap();
        // Another instance with the same key accepts it; one with another key does not.
        let twin = DpopValidator::new(options.clone(), Some(key()));
        twin.check(
            &s.proof(json!({}), json!({ "nonce": nonce, "jti": "n2" })),
            &request(),
        )
        .unwrap();
        let stranger = DpopValidator::new(
            options,
            Some(NonceKey::new(&[8; 32], Duration::from_secs(60))),
        );
        assert_eq!(
            stranger.check(
                &s.proof(json!({}), json!({ "nonce": nonce, "jti": "n3" })),
                &request()
            ),
            Err(DpopError::UseNonce)
        );
        // Valid for this step and the next, not after.
        let k = key();
        assert!(k.accepts(&nonce, NOW + 60));
        assert!(!k.accepts(&nonce, NOW + 120));
        assert!(!k.accepts(&format!("{nonce}x"), NOW));
        let (counter, tag) = nonce.split_once('.').unwrap();
        let next = format!("{}.{tag}", counter.parse::<i64>().unwrap() + 1);
        assert!(!k.accepts(&next, NOW + 60), "the tag covers the step");
    }

    #[test]
    fn jtis_are_remembered_while_a_replay_could_pass_and_bounded() {
        let mut w = ReplayWindow::new(65, 3);
        w.insert([1; 32], 0).unwrap();
        // A proof accepted at 0 can be replayed until at most 65 s later.
        assert_eq!(w.insert([1; 32], 65), Err(DpopError::Replayed));
        assert_eq!(w.insert([1; 32], 129), Err(DpopError::Replayed));
        w.insert([1; 32], 130).unwrap();
        w.insert([2; 32], 130).unwrap();
        w.insert([3; 32], 130).unwrap();
        assert_eq!(w.insert([4; 32], 130), Err(DpopError::Busy));
        // The next generation has room again.
        w.insert([4; 32], 195).unwrap();
        assert_eq!(w.insert([2; 32], 195), Err(DpopError::Replayed));
    }
}
