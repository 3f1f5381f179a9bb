//! Upstream JWKS fetching and caching.
//!
//! A trusted upstream identity provider publishes its signing keys at the
//! JWKS URL registered for it; that URL is the only place tessera takes its
//! keys from. Fetching is bounded (timeouts, body size, key count, no
//! redirects) because the URL points outside tessera, and cached per URL so
//! a burst of token exchanges costs one fetch. An unknown `kid` (key
//! rotation) refetches, but at most once per [`JwksLimits::min_refresh`], so
//! tokens with made-up kids cannot turn tessera into a request amplifier.
//! When a refetch fails, the last good keys keep serving for
//! [`JwksLimits::stale_for`]: an identity provider's short outage should not
//! log everyone out.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use reqwest::header::{ACCEPT, CACHE_CONTROL, HeaderMap};
use reqwest::{StatusCode, redirect};
use serde_json::{Map, Value};
use url::Url;

use crate::audit::clip;

/// Every RSA algorithm a JWT may use; an RSA key without `alg` fits all.
const RSA_ALGS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// Smaller RSA moduli are refused (NIST SP 800-131A).
const MIN_RSA_BITS: usize = 2048;
/// The largest modulus the verifier (aws-lc) accepts.
const MAX_RSA_BITS: usize = 8192;

/// JWK members that only a private (or symmetric) key has: a JWKS that
/// publishes them is broken, and such a key is never used.
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];

/// Bounds on an identity provider's `Cache-Control: max-age`.
const MIN_CACHE_AGE: Duration = Duration::from_secs(60);
// At most an hour: a key the provider removed (compromise) stops being
// trusted within the hour even if its server asked for a day.
const MAX_CACHE_AGE: Duration = Duration::from_secs(60 * 60);

/// Longest `kid` echoed back in an error (it comes from an untrusted token).
const MAX_KID_IN_ERROR: usize = 64;

/// Bounds on fetching and caching an upstream JWKS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JwksLimits {
    /// The whole request, body included (default 5 s).
    pub timeout: Duration,
    /// Establishing the connection, TLS included (default 2 s).
    pub connect_timeout: Duration,
    /// Largest body read; a larger one is cut off and refused (default 256 KiB).
    pub max_bytes: usize,
    /// Most usable keys kept from one JWKS (default 100).
    pub max_keys: usize,
    /// How long fetched keys count as fresh when the response has no
    /// `Cache-Control: max-age` (default 10 min). A `max-age` is honoured,
    /// clamped to between 1 minute and 1 hour.
    pub max_age: Duration,
    /// Refetches of one URL (unknown kid, expired cache) happen at most this
    /// often (default 10 s).
    pub min_refresh: Duration,
    /// How long past their freshness the last good keys still serve while
    /// refetches fail (default 24 h).
    pub stale_for: Duration,
}

impl Default for JwksLimits {
    fn default() -> Self {
        JwksLimits {
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            max_bytes: 256 * 1024,
            max_keys: 100,
            max_age: Duration::from_secs(10 * 60),
            min_refresh: Duration::from_secs(10),
            stale_for: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// Why no key could be found for a token.
///
/// Messages are for an operator: they say what is wrong and never carry key
/// material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// No usable keys: the JWKS was never fetched successfully (or its last
    /// good keys are past [`JwksLimits::stale_for`]). The reason says why the
    /// last fetch failed (connection, timeout, size, status, JSON).
    #[error("the issuer's JWKS is unavailable: {0}")]
    Unavailable(String),
    /// The token names a key the issuer's JWKS does not have.
    #[error("no key with kid {kid:?} in the issuer's JWKS")]
    UnknownKey {
        /// The token's `kid` (cut to 64 characters).
        kid: String,
    },
    /// The token has no `kid` and the JWKS has no single key for its alg.
    #[error(
        "the token has no kid and the issuer's JWKS has no single key for its alg: a kid is needed"
    )]
    KidRequired,
    /// The registered JWKS URL is not one tessera fetches from.
    #[error("JWKS URL refused: {0}")]
    BadUrl(String),
}

/// One verification key from an upstream JWKS.
#[derive(Clone, Debug)]
pub struct UpstreamKey {
    /// The JWK's `kid`, which tokens name in their header.
    pub kid: Option<String>,
    /// The algorithms this key may verify: its declared `alg`, or every
    /// algorithm its key type and curve fit. A token whose alg is not here is
    /// refused, so a key is never used with an algorithm it was not made for.
    pub algs: Vec<Algorithm>,
    /// The public key, for `jsonwebtoken::decode`.
    pub key: DecodingKey,
}

/// Fetches and caches upstream JWKS, one entry per URL.
///
/// `Send + Sync`; share one behind an `Arc` (or inside one
/// [`UpstreamVerifier`](super::upstream::UpstreamVerifier)). Entries are
/// keyed by JWKS URL, which comes from tessera's trusted-issuer
/// configuration, never from a token, so the map stays small.
pub struct JwksCache {
    client: reqwest::Client,
    limits: JwksLimits,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwksCache")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// One JWKS URL: what is known about it, and a lock held while fetching so
/// concurrent misses share one fetch.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    fetching: tokio::sync::Mutex<()>,
}

impl Slot {
    fn state(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct SlotState {
    /// The last successfully fetched keys.
    good: Option<KeySet>,
    /// When the last fetch (successful or not) started.
    last_attempt: Option<Instant>,
    /// The issuer version the last fetch was made for.
    last_attempt_version: i64,
    /// Why the last fetch failed, if it did.
    last_error: Option<String>,
    /// Bumped by every fetch, so a waiter can tell one happened meanwhile.
    generation: u64,
}

struct KeySet {
    keys: Vec<Arc<UpstreamKey>>,
    fetched_at: Instant,
    /// The issuer version (its `updated_at`) the fetch was made for: keys
    /// of an older version are not used once a newer one is asked for.
    version: i64,
    max_age: Duration,
}

impl KeySet {
    fn is_fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.fetched_at) < self.max_age
    }
}

impl JwksCache {
    /// A cache whose HTTP client has `limits`' timeouts and follows no
    /// redirects (a JWKS URL that redirects is refused, so the registered
    /// URL is the only one ever fetched).
    ///
    /// # Panics
    /// If the TLS backend cannot be initialised; see [`Self::try_new`].
    pub fn new(limits: JwksLimits) -> JwksCache {
        match Self::try_new(limits) {
            Ok(cache) => cache,
            Err(e) => panic!("building the JWKS HTTP client: {e}"),
        }
    }

    /// [`Self::new`], returning the HTTP client's error instead of panicking.
    pub fn try_new(limits: JwksLimits) -> Result<JwksCache, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(limits.timeout)
            .connect_timeout(limits.connect_timeout)
            .redirect(redirect::Policy::none())
            .user_agent(concat!("tessera/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(JwksCache {
            client,
            limits,
            slots: Mutex::new(HashMap::new()),
        })
    }

    /// The limits this cache was built with.
    pub fn limits(&self) -> &JwksLimits {
        &self.limits
    }

    /// The key `kid` (or, without a kid, the only key fitting `alg`) from the
    /// JWKS at `jwks_uri`, fetching or refetching it when needed.
    ///
    /// Refetches on an unknown kid or an expired cache, at most once per
    /// [`JwksLimits::min_refresh`] per URL; concurrent callers share one
    /// fetch. A failed refetch keeps the last good keys.
    ///
    /// `version` is the issuer's last change (its `updated_at`, moved when
    /// it is disabled after a compromise and enabled again): keys fetched
    /// for an older version are never used, and the JWKS is fetched again
    /// at once, on every instance. Versions are compared with each other,
    /// never with this machine's clock.
    pub async fn key(
        &self,
        jwks_uri: &str,
        kid: Option<&str>,
        alg: Algorithm,
        version: i64,
    ) -> Result<Arc<UpstreamKey>, JwksError> {
        let url = check_url(jwks_uri)?;
        let slot = self.slot(jwks_uri);
        let generation = {
            let mut state = slot.state();
            if state.good.as_ref().is_some_and(|g| g.version < version) {
                state.good = None;
            }
            let now = Instant::now();
            if let Some(good) = state.good.as_ref().filter(|g| g.is_fresh(now))
                && let Ok(key) = select(&good.keys, kid, alg)
            {
                return Ok(key);
            }
            let may_fetch = state.last_attempt_version < version
                || state
                    .last_attempt
                    .is_none_or(|at| now.saturating_duration_since(at) >= self.limits.min_refresh);
            may_fetch.then_some(state.generation)
        };
        if let Some(generation) = generation {
            self.refresh(&slot, &url, generation, version).await;
        }
        self.answer(&slot.state(), kid, alg, version)
    }

    /// The slot for `jwks_uri`, created on first use.
    fn slot(&self, jwks_uri: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(slots.entry(jwks_uri.to_owned()).or_default())
    }

    /// Fetches `url` unless another caller fetched it while this one waited
    /// for the lock (single flight).
    async fn refresh(&self, slot: &Slot, url: &Url, seen_generation: u64, version: i64) {
        let _fetching = slot.fetching.lock().await;
        if slot.state().generation != seen_generation {
            return;
        }
        let started = Instant::now();
        let result = self.fetch(url).await;
        let mut state = slot.state();
        state.generation += 1;
        state.last_attempt = Some(started);
        state.last_attempt_version = state.last_attempt_version.max(version);
        match result {
            Ok((keys, max_age)) => {
                state.good = Some(KeySet {
                    keys,
                    fetched_at: started,
                    version,
                    max_age,
                });
                state.last_error = None;
            }
            Err(reason) => {
                tracing::warn!(jwks_uri = %url, %reason, "upstream JWKS fetch failed");
                state.last_error = Some(reason);
            }
        }
    }

    /// The key from what the slot holds now, fresh or stale.
    fn answer(
        &self,
        state: &SlotState,
        kid: Option<&str>,
        alg: Algorithm,
        version: i64,
    ) -> Result<Arc<UpstreamKey>, JwksError> {
        let last_error = state.last_error.as_deref().unwrap_or("not fetched yet");
        // A fetch for an older version (in flight across the change) does
        // not count.
        let Some(good) = state.good.as_ref().filter(|g| g.version >= version) else {
            return Err(JwksError::Unavailable(last_error.to_owned()));
        };
        let age = Instant::now().saturating_duration_since(good.fetched_at);
        if age > good.max_age.saturating_add(self.limits.stale_for) {
            return Err(JwksError::Unavailable(format!(
                "the last good keys are {}s old, past their {}s freshness plus {}s of staleness; \
                 last fetch: {last_error}",
                age.as_secs(),
                good.max_age.as_secs(),
                self.limits.stale_for.as_secs(),
            )));
        }
        select(&good.keys, kid, alg)
    }

    /// One bounded GET of the JWKS: status 200, body within `max_bytes`.
    async fn fetch(&self, url: &Url) -> Result<(Vec<Arc<UpstreamKey>>, Duration), String> {
        let response = self
            .client
            .get(url.clone())
            .header(ACCEPT, "application/json, application/jwk-set+json")
            .send()
            .await
            .map_err(|e| describe(&e, &self.limits))?;
        check_status(response.status())?;
        let max_age = cache_max_age(response.headers()).unwrap_or(self.limits.max_age);
        let body = read_capped(response, &self.limits).await?;
        let keys = parse_jwks(&body, self.limits.max_keys)?;
        Ok((keys, max_age))
    }
}

/// Only `https://`, or `http://` to this machine (tests, sidecars).
fn check_url(raw: &str) -> Result<Url, JwksError> {
    let url = Url::parse(raw).map_err(|e| JwksError::BadUrl(format!("not a URL: {e}")))?;
    if url.host().is_none() {
        return Err(JwksError::BadUrl("the URL has no host".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(JwksError::BadUrl("credentials in the URL".into()));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if crate::auth::accounts::is_local(&url) => Ok(url),
        "http" => Err(JwksError::BadUrl(
            "plain http is allowed only to a loopback host; use https".into(),
        )),
        other => Err(JwksError::BadUrl(format!("scheme {other:?} is not https"))),
    }
}

/// A reqwest error as an operator reads it: timeout, connection, or other.
fn describe(e: &reqwest::Error, limits: &JwksLimits) -> String {
    let mut causes = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        causes.push_str(": ");
        causes.push_str(&cause.to_string());
        source = cause.source();
    }
    if e.is_timeout() {
        format!(
            "timed out (limits: {:?} to connect, {:?} in all){causes}",
            limits.connect_timeout, limits.timeout
        )
    } else if e.is_connect() {
        format!("could not connect{causes}")
    } else {
        format!("request failed{causes}")
    }
}

fn check_status(status: StatusCode) -> Result<(), String> {
    if status == StatusCode::OK {
        Ok(())
    } else if status.is_redirection() {
        Err(format!(
            "HTTP status {status}: redirects are not followed; register the final JWKS URL"
        ))
    } else {
        Err(format!("HTTP status {status}, expected 200"))
    }
}

/// `Cache-Control: max-age`, clamped to [1 min, 1 h].
fn cache_max_age(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(CACHE_CONTROL)?.to_str().ok()?;
    let seconds = value.split(',').find_map(|directive| {
        let (name, seconds) = directive.trim().split_once('=')?;
        name.eq_ignore_ascii_case("max-age")
            .then(|| seconds.trim().parse::<u64>().ok())
            .flatten()
    })?;
    Some(Duration::from_secs(seconds).clamp(MIN_CACHE_AGE, MAX_CACHE_AGE))
}

/// Reads the body chunk by chunk, giving up as soon as it passes
/// `max_bytes` (a declared Content-Length is only an early refusal).
async fn read_capped(
    mut response: reqwest::Response,
    limits: &JwksLimits,
) -> Result<Vec<u8>, String> {
    let too_big = || format!("body larger than {} bytes", limits.max_bytes);
    if response
        .content_length()
        .is_some_and(|declared| declared > limits.max_bytes as u64)
    {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e, limits))? {
        if body.len() + chunk.len() > limits.max_bytes {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `{"keys":[...]}`: the usable keys (at most `max_keys`), unusable ones
/// skipped. A set with no usable key is a failed fetch (the previous keys
/// stay).
fn parse_jwks(body: &[u8], max_keys: usize) -> Result<Vec<Arc<UpstreamKey>>, String> {
    #[derive(serde::Deserialize)]
    struct JwkSet {
        keys: Vec<Value>,
    }
    let set: JwkSet = serde_json::from_slice(body)
        .map_err(|e| format!("body is not a JSON JWK set ({{\"keys\":[...]}}): {e}"))?;
    let mut keys = Vec::new();
    let mut skipped = 0;
    for jwk in &set.keys {
        if keys.len() == max_keys {
            break;
        }
        match parse_jwk(jwk) {
            Ok(key) => keys.push(Arc::new(key)),
            Err(reason) => {
                skipped += 1;
                let kid = jwk
                    .get("kid")
                    .and_then(Value::as_str)
                    .map(|kid| clip(kid, MAX_KID_IN_ERROR));
                tracing::debug!(?kid, %reason, "upstream JWK skipped");
            }
        }
    }
    if keys.is_empty() {
        return Err(format!(
            "the JWK set has no usable signing key ({skipped} skipped)"
        ));
    }
    Ok(keys)
}

/// One JWK as a verification key, or why it is skipped.
fn parse_jwk(jwk: &Value) -> Result<UpstreamKey, String> {
    let jwk = jwk.as_object().ok_or("not a JSON object")?;
    let kty = str_member(jwk, "kty")?.ok_or("no kty")?;
    if kty == "oct" {
        return Err("symmetric (oct) keys are never accepted".into());
    }
    if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| jwk.contains_key(**m)) {
        return Err(format!("has the private member {member:?}"));
    }
    check_use(jwk)?;
    let (fits, key) = match kty {
        "RSA" => rsa_key(jwk)?,
        "EC" => ec_key(jwk)?,
        "OKP" => okp_key(jwk)?,
        other => {
            return Err(format!(
                "unsupported kty {:?}",
                clip(other, MAX_KID_IN_ERROR)
            ));
        }
    };
    Ok(UpstreamKey {
        kid: str_member(jwk, "kid")?.map(str::to_owned),
        algs: key_algs(str_member(jwk, "alg")?, fits)?,
        key,
    })
}

/// `use` must be `sig` if present; `key_ops`, if present, must allow `verify`.
fn check_use(jwk: &Map<String, Value>) -> Result<(), String> {
    match str_member(jwk, "use")? {
        None | Some("sig") => {}
        Some(other) => {
            return Err(format!(
                "use is {:?}, not sig",
                clip(other, MAX_KID_IN_ERROR)
            ));
        }
    }
    match jwk.get("key_ops") {
        None => Ok(()),
        Some(Value::Array(ops)) if ops.iter().any(|op| op == "verify") => Ok(()),
        Some(_) => Err("key_ops does not allow verify".into()),
    }
}

/// RSA (`n`, `e`), modulus 2048 to 8192 bits.
fn rsa_key(jwk: &Map<String, Value>) -> Result<(&'static [Algorithm], DecodingKey), String> {
    let n = str_member(jwk, "n")?.ok_or("RSA key without n")?;
    let e = str_member(jwk, "e")?.ok_or("RSA key without e")?;
    let bits = bit_length(&b64(n, "n")?);
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(format!(
            "RSA modulus of {bits} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} accepted"
        ));
    }
    let exponent = b64(e, "e")?;
    if exponent.is_empty() || exponent.len() > 8 {
        return Err("RSA exponent out of range".into());
    }
    let key = DecodingKey::from_rsa_components(n, e).map_err(|e| format!("RSA key: {e}"))?;
    Ok((&RSA_ALGS, key))
}

/// EC P-256 (ES256) or P-384 (ES384), coordinates of the curve's size.
fn ec_key(jwk: &Map<String, Value>) -> Result<(&'static [Algorithm], DecodingKey), String> {
    let (size, fits): (usize, &'static [Algorithm]) = match str_member(jwk, "crv")? {
        Some("P-256") => (32, &[Algorithm::ES256]),
        Some("P-384") => (48, &[Algorithm::ES384]),
        Some(other) => {
            return Err(format!(
                "unsupported EC curve {:?}",
                clip(other, MAX_KID_IN_ERROR)
            ));
        }
        None => return Err("EC key without crv".into()),
    };
    let x = str_member(jwk, "x")?.ok_or("EC key without x")?;
    let y = str_member(jwk, "y")?.ok_or("EC key without y")?;
    if b64(x, "x")?.len() != size || b64(y, "y")?.len() != size {
        return Err("EC coordinates do not fit the curve".into());
    }
    let key = DecodingKey::from_ec_components(x, y).map_err(|e| format!("EC key: {e}"))?;
    Ok((fits, key))
}

/// OKP Ed25519 (EdDSA).
fn okp_key(jwk: &Map<String, Value>) -> Result<(&'static [Algorithm], DecodingKey), String> {
    match str_member(jwk, "crv")? {
        Some("Ed25519") => {}
        Some(other) => {
            return Err(format!(
                "unsupported OKP curve {:?}",
                clip(other, MAX_KID_IN_ERROR)
            ));
        }
        None => return Err("OKP key without crv".into()),
    }
    let x = str_member(jwk, "x")?.ok_or("OKP key without x")?;
    if b64(x, "x")?.len() != 32 {
        return Err("Ed25519 public key is not 32 bytes".into());
    }
    let key = DecodingKey::from_ed_components(x).map_err(|e| format!("OKP key: {e}"))?;
    Ok((&[Algorithm::EdDSA], key))
}

/// The JWK's declared `alg` (which must fit its key), or all that fit.
fn key_algs(declared: Option<&str>, fits: &[Algorithm]) -> Result<Vec<Algorithm>, String> {
    let Some(name) = declared else {
        return Ok(fits.to_vec());
    };
    match name.parse::<Algorithm>() {
        Ok(alg) if fits.contains(&alg) => Ok(vec![alg]),
        Ok(_) => Err(format!("alg {name} does not fit the key type")),
        Err(_) => Err(format!(
            "unsupported alg {:?}",
            clip(name, MAX_KID_IN_ERROR)
        )),
    }
}

/// The key for `kid`, preferring one that fits `alg` when several share the
/// kid; without a kid, the only key fitting `alg`.
fn select(
    keys: &[Arc<UpstreamKey>],
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<Arc<UpstreamKey>, JwksError> {
    let Some(kid) = kid else {
        let mut fitting = keys.iter().filter(|k| k.algs.contains(&alg));
        return match (fitting.next(), fitting.next()) {
            (Some(only), None) => Ok(Arc::clone(only)),
            _ => Err(JwksError::KidRequired),
        };
    };
    let named = || keys.iter().filter(|k| k.kid.as_deref() == Some(kid));
    named()
        .find(|k| k.algs.contains(&alg))
        .or_else(|| named().next())
        .map(Arc::clone)
        .ok_or_else(|| JwksError::UnknownKey {
            kid: clip(kid, MAX_KID_IN_ERROR),
        })
}

/// A string member: absent is `None`, another JSON type is an error.
fn str_member<'a>(jwk: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match jwk.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{name} is not a string")),
    }
}

/// base64url without padding, as JWKs encode their numbers.
fn b64(value: &str, name: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| format!("{name} is not base64url"))
}

/// Bits in a big-endian unsigned integer, leading zeros ignored.
fn bit_length(be: &[u8]) -> usize {
    match be.iter().position(|b| *b != 0) {
        Some(first) => (be.len() - first) * 8 - be[first].leading_zeros() as usize,
        None => 0,
    }
}

/// A JWKS server, keys and tokens for the tests of this module and of
/// [`super::upstream`].
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::EncodingKey;
    use openssl::bn::BigNumContext;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use serde_json::{Value, json};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;

    use super::JwksLimits;

    /// How the test server answers.
    #[derive(Clone, Debug)]
    pub(crate) enum Mode {
        /// 200 with the current body.
        Normal,
        /// 500.
        Status500,
        /// Waits 3 s before answering.
        Slow,
        /// 200, then 1 MiB without a Content-Length.
        Huge,
        /// 302 to this URL.
        Redirect(String),
        /// 200 with a body that is not JSON.
        NotJson,
    }

    struct Shared {
        hits: AtomicUsize,
        mode: Mutex<Mode>,
        body: Mutex<String>,
    }

    /// A one-request-per-connection HTTP/1.1 server on 127.0.0.1 that counts
    /// requests.
    pub(crate) struct JwksServer {
        pub(crate) url: String,
        shared: Arc<Shared>,
        task: JoinHandle<()>,
    }

    impl JwksServer {
        pub(crate) async fn start(body: String) -> JwksServer {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/jwks", listener.local_addr().unwrap());
            let shared = Arc::new(Shared {
                hits: AtomicUsize::new(0),
                mode: Mutex::new(Mode::Normal),
                body: Mutex::new(body),
            });
            let serving = Arc::clone(&shared);
            let task = tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(answer(stream, Arc::clone(&serving)));
                }
            });
            JwksServer { url, shared, task }
        }

        pub(crate) fn hits(&self) -> usize {
            self.shared.hits.load(Ordering::SeqCst)
        }

        pub(crate) fn set_mode(&self, mode: Mode) {
            *self.shared.mode.lock().unwrap() = mode;
        }

        pub(crate) fn set_body(&self, body: String) {
            *self.shared.body.lock().unwrap() = body;
        }
    }

    impl Drop for JwksServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn answer(mut stream: TcpStream, shared: Arc<Shared>) {
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        shared.hits.fetch_add(1, Ordering::SeqCst);
        let mode = shared.mode.lock().unwrap().clone();
        let body = shared.body.lock().unwrap().clone();
        let _ = match mode {
            Mode::Normal => write_response(&mut stream, "200 OK", &body).await,
            Mode::Status500 => {
                write_response(&mut stream, "500 Internal Server Error", "oops").await
            }
            Mode::Slow => {
                tokio::time::sleep(Duration::from_secs(3)).await;
                write_response(&mut stream, "200 OK", &body).await
            }
            Mode::Huge => write_huge(&mut stream).await,
            Mode::Redirect(to) => {
                let head = format!(
                    "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                stream.write_all(head.as_bytes()).await
            }
            Mode::NotJson => write_response(&mut stream, "200 OK", "<html>hello</html>").await,
        };
        let _ = stream.shutdown().await;
    }

    async fn write_response(
        stream: &mut TcpStream,
        status: &str,
        body: &str,
    ) -> std::io::Result<()> {
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await
    }

    /// A close-delimited body of 1 MiB: no Content-Length to refuse early.
    async fn write_huge(stream: &mut TcpStream) -> std::io::Result<()> {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"keys\":[";
        stream.write_all(head.as_bytes()).await?;
        let chunk = vec![b' '; 16 * 1024];
        for _ in 0..64 {
            stream.write_all(&chunk).await?;
        }
        Ok(())
    }

    /// A URL on 127.0.0.1 where nothing listens.
    pub(crate) async fn closed_url() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        format!("http://{addr}/jwks")
    }

    /// Short timeouts so failure tests run fast; no refetch limit surprises.
    pub(crate) fn test_limits() -> JwksLimits {
        JwksLimits {
            timeout: Duration::from_millis(300),
            connect_timeout: Duration::from_millis(300),
            max_bytes: 64 * 1024,
            ..JwksLimits::default()
        }
    }

    /// A signing key and its public JWK.
    pub(crate) struct TestKey {
        pub(crate) encoding: EncodingKey,
        pub(crate) jwk: Value,
        /// The public key as PEM (the "secret" of an HS256 confusion attack).
        pub(crate) public_pem: Vec<u8>,
    }

    impl TestKey {
        /// A JWKS body with this key alone.
        pub(crate) fn jwks(&self) -> String {
            jwks(std::slice::from_ref(&self.jwk))
        }
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub(crate) fn rsa_key(kid: &str, bits: u32) -> TestKey {
        let rsa = Rsa::generate(bits).unwrap();
        TestKey {
            encoding: EncodingKey::from_rsa_pem(&rsa.private_key_to_pem().unwrap()).unwrap(),
            jwk: json!({
                "kty": "RSA", "kid": kid, "use": "sig",
                "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec()),
            }),
            public_pem: rsa.public_key_to_pem().unwrap(),
        }
    }

    pub(crate) fn ec_key(kid: &str) -> TestKey {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let ec = EcKey::generate(&group).unwrap();
        let (mut x, mut y) = (
            openssl::bn::BigNum::new().unwrap(),
            openssl::bn::BigNum::new().unwrap(),
        );
        let mut ctx = BigNumContext::new().unwrap();
        ec.public_key()
            .affine_coordinates(&group, &mut x, &mut y, &mut ctx)
            .unwrap();
        let pkey = PKey::from_ec_key(ec).unwrap();
        TestKey {
            encoding: EncodingKey::from_ec_pem(&pkey.private_key_to_pem_pkcs8().unwrap()).unwrap(),
            jwk: json!({
                "kty": "EC", "kid": kid, "crv": "P-256",
                "x": b64(&x.to_vec_padded(32).unwrap()), "y": b64(&y.to_vec_padded(32).unwrap()),
            }),
            public_pem: pkey.public_key_to_pem().unwrap(),
        }
    }

    pub(crate) fn ed_key(kid: &str) -> TestKey {
        let pkey = PKey::generate_ed25519().unwrap();
        TestKey {
            encoding: EncodingKey::from_ed_pem(&pkey.private_key_to_pem_pkcs8().unwrap()).unwrap(),
            jwk: json!({
                "kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(&pkey.raw_public_key().unwrap()),
            }),
            public_pem: pkey.public_key_to_pem().unwrap(),
        }
    }

    /// `{"keys": [...]}` as the server's body.
    pub(crate) fn jwks(keys: &[Value]) -> String {
        json!({ "keys": keys }).to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use jsonwebtoken::Algorithm;
    use serde_json::json;

    use super::test_support::{
        JwksServer, Mode, closed_url, ec_key, ed_key, jwks, rsa_key, test_limits,
    };
    use super::*;

    fn cache() -> JwksCache {
        JwksCache::new(test_limits())
    }

    /// The reason a fresh cache's first lookup at `url` fails.
    async fn first_fetch_fails(url: &str) -> String {
        unavailable(cache().key(url, Some("k"), Algorithm::RS256, 0).await)
    }

    fn unavailable(result: Result<Arc<UpstreamKey>, JwksError>) -> String {
        match result {
            Err(JwksError::Unavailable(reason)) => reason,
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[test]
    fn cache_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<JwksCache>();
    }

    #[tokio::test]
    async fn fetches_and_caches_keys() {
        let rsa = rsa_key("rsa-1", 2048);
        let ec = ec_key("ec-1");
        let server = JwksServer::start(jwks(&[rsa.jwk.clone(), ec.jwk.clone()])).await;
        let cache = cache();
        let key = cache
            .key(&server.url, Some("rsa-1"), Algorithm::RS256, 0)
            .await
            .unwrap();
        assert_eq!(key.kid.as_deref(), Some("rsa-1"));
        assert_eq!(key.algs, RSA_ALGS.to_vec());
        let key = cache
            .key(&server.url, Some("ec-1"), Algorithm::ES256, 0)
            .await
            .unwrap();
        assert_eq!(key.algs, vec![Algorithm::ES256]);
        assert_eq!(
            server.hits(),
            1,
            "the second lookup is served from the cache"
        );
    }

    #[tokio::test]
    async fn without_kid_the_only_fitting_key_is_used() {
        let rsa = rsa_key("rsa-1", 2048);
        let ec = ec_key("ec-1");
        let server = JwksServer::start(jwks(&[rsa.jwk.clone(), ec.jwk.clone()])).await;
        let cache = cache();
        let key = cache
            .key(&server.url, None, Algorithm::ES256, 0)
            .await
            .unwrap();
        assert_eq!(key.kid.as_deref(), Some("ec-1"));

        let second = rsa_key("rsa-2", 2048);
        server.set_body(jwks(&[rsa.jwk, second.jwk]));
        let cache = JwksCache::new(test_limits());
        let err = cache
            .key(&server.url, None, Algorithm::RS256, 0)
            .await
            .unwrap_err();
        assert_eq!(err, JwksError::KidRequired);
    }

    #[tokio::test]
    async fn unknown_kid_refetches_once_per_min_refresh() {
        let rsa = rsa_key("rsa-1", 2048);
        let server = JwksServer::start(rsa.jwks()).await;
        let cache = JwksCache::new(JwksLimits {
            min_refresh: Duration::from_millis(300),
            ..test_limits()
        });
        cache
            .key(&server.url, Some("rsa-1"), Algorithm::RS256, 0)
            .await
            .unwrap();
        assert_eq!(server.hits(), 1);

        // Just fetched: an unknown kid now waits for min_refresh.
        let err = cache
            .key(&server.url, Some("early"), Algorithm::RS256, 0)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            JwksError::UnknownKey {
                kid: "early".into()
            }
        );
        assert_eq!(server.hits(), 1, "no refetch right after a fetch");

        tokio::time::sleep(Duration::from_millis(350)).await;
        let err = cache
            .key(&server.url, Some("new"), Algorithm::RS256, 0)
            .await
            .unwrap_err();
        assert_eq!(err, JwksError::UnknownKey { kid: "new".into() });
        assert_eq!(server.hits(), 2, "an unknown kid refetches");

        let err = cache
            .key(&server.url, Some("other"), Algorithm::RS256, 0)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            JwksError::UnknownKey {
                kid: "other".into()
            }
        );
        assert_eq!(server.hits(), 2, "no second refetch within min_refresh");
    }

    #[tokio::test]
    async fn rotated_key_is_found_after_min_refresh() {
        let old = rsa_key("old", 2048);
        let new = ec_key("new");
        let server = JwksServer::start(old.jwks()).await;
        let cache = JwksCache::new(JwksLimits {
            min_refresh: Duration::from_millis(100),
            ..test_limits()
        });
        cache
            .key(&server.url, Some("old"), Algorithm::RS256, 0)
            .await
            .unwrap();
        server.set_body(jwks(&[old.jwk, new.jwk]));
        tokio::time::sleep(Duration::from_millis(150)).await;
        let key = cache
            .key(&server.url, Some("new"), Algorithm::ES256, 0)
            .await
            .unwrap();
        assert_eq!(key.kid.as_deref(), Some("new"));
        assert_eq!(server.hits(), 2);
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_fetch() {
        let rsa = rsa_key("rsa-1", 2048);
        let server = JwksServer::start(rsa.jwks()).await;
        let cache = Arc::new(cache());
        let lookups: Vec<_> = (0..8)
            .map(|_| {
                let (cache, url) = (Arc::clone(&cache), server.url.clone());
                tokio::spawn(
                    async move { cache.key(&url, Some("rsa-1"), Algorithm::RS256, 0).await },
                )
            })
            .collect();
        for lookup in lookups {
            lookup.await.unwrap().unwrap();
        }
        assert_eq!(server.hits(), 1);
    }

    #[tokio::test]
    async fn server_down_is_unavailable() {
        let reason = first_fetch_fails(&closed_url().await).await;
        assert!(reason.contains("could not connect"), "{reason}");
    }

    #[tokio::test]
    async fn status_500_is_unavailable() {
        let server = JwksServer::start(String::new()).await;
        server.set_mode(Mode::Status500);
        let reason = first_fetch_fails(&server.url).await;
        assert!(reason.contains("500"), "{reason}");
    }

    #[tokio::test]
    async fn slow_server_times_out() {
        let server = JwksServer::start(String::new()).await;
        server.set_mode(Mode::Slow);
        let started = std::time::Instant::now();
        let reason = first_fetch_fails(&server.url).await;
        assert!(reason.contains("timed out"), "{reason}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn huge_body_is_cut_off() {
        let server = JwksServer::start(String::new()).await;
        server.set_mode(Mode::Huge);
        let reason = first_fetch_fails(&server.url).await;
        assert!(reason.contains("larger than 65536 bytes"), "{reason}");
    }

    #[tokio::test]
    async fn declared_huge_body_is_refused() {
        let server = JwksServer::start(" ".repeat(70 * 1024)).await;
        let reason = first_fetch_fails(&server.url).await;
        assert!(reason.contains("larger than 65536 bytes"), "{reason}");
    }

    #[tokio::test]
    async fn redirect_is_not_followed() {
        let rsa = rsa_key("k", 2048);
        let target = JwksServer::start(jwks(&[rsa.jwk])).await;
        let server = JwksServer::start(String::new()).await;
        server.set_mode(Mode::Redirect(target.url.clone()));
        let reason = first_fetch_fails(&server.url).await;
        assert!(reason.contains("redirects are not followed"), "{reason}");
        assert_eq!(target.hits(), 0);
    }

    #[tokio::test]
    async fn non_json_is_unavailable() {
        let server = JwksServer::start(String::new()).await;
        server.set_mode(Mode::NotJson);
        let reason = first_fetch_fails(&server.url).await;
        assert!(reason.contains("not a JSON JWK set"), "{reason}");
    }

    #[tokio::test]
    async fn failed_first_fetch_is_not_retried_within_min_refresh() {
        let server = JwksServer::start(String::new()).await;
        server.set_mode(Mode::Status500);
        let cache = cache();
        unavailable(cache.key(&server.url, Some("k"), Algorithm::RS256, 0).await);
        let reason = unavailable(cache.key(&server.url, Some("k"), Algorithm::RS256, 0).await);
        assert!(
            reason.contains("500"),
            "the last failure is reported: {reason}"
        );
        assert_eq!(server.hits(), 1);
    }

    #[tokio::test]
    async fn stale_keys_serve_while_refetch_fails_then_expire() {
        let rsa = rsa_key("rsa-1", 2048);
        let server = JwksServer::start(rsa.jwks()).await;
        let cache = JwksCache::new(JwksLimits {
            max_age: Duration::from_millis(100),
            min_refresh: Duration::ZERO,
            stale_for: Duration::from_millis(800),
            ..test_limits()
        });
        cache
            .key(&server.url, Some("rsa-1"), Algorithm::RS256, 0)
            .await
            .unwrap();
        server.set_mode(Mode::Status500);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let key = cache
            .key(&server.url, Some("rsa-1"), Algorithm::RS256, 0)
            .await
            .unwrap();
        assert_eq!(key.kid.as_deref(), Some("rsa-1"));
        assert_eq!(server.hits(), 2, "the expired cache was refetched");

        tokio::time::sleep(Duration::from_millis(800)).await;
        let reason = unavailable(
            cache
                .key(&server.url, Some("rsa-1"), Algorithm::RS256, 0)
                .await,
        );
        assert!(reason.contains("500"), "{reason}");
    }

    /// An issuer changed (disabled after a compromise, enabled again) since
    /// the keys were fetched: they are fetched again at once, whatever
    /// `min_refresh` says, and never used stale.
    #[tokio::test]
    async fn keys_fetched_before_the_issuers_change_are_not_used() {
        let rsa = rsa_key("rsa-1", 2048);
        let server = JwksServer::start(rsa.jwks()).await;
        let cache = JwksCache::new(JwksLimits {
            min_refresh: Duration::from_secs(3600),
            ..test_limits()
        });
        let key = |version| cache.key(&server.url, Some("rsa-1"), Algorithm::RS256, version);
        key(1_700_000_000).await.unwrap();
        key(1_700_000_000).await.unwrap();
        assert_eq!(server.hits(), 1, "cached");
        key(1_700_000_100).await.unwrap();
        key(1_700_000_100).await.unwrap();
        assert_eq!(server.hits(), 2, "refetched once after the change");
        // An instance that read the issuer before the change is served too.
        key(1_700_000_000).await.unwrap();
        assert_eq!(server.hits(), 2);
        server.set_mode(Mode::Status500);
        let reason = unavailable(key(1_700_000_200).await);
        assert!(
            reason.contains("500"),
            "the old keys are not used: {reason}"
        );
    }

    #[tokio::test]
    async fn bad_urls_are_refused_without_fetching() {
        let cache = cache();
        for url in [
            "http://example.com/jwks",
            "http://10.0.0.1/jwks",
            "ftp://127.0.0.1/jwks",
            "file:///etc/passwd",
            "https://user:pw@example.com/jwks",
            "not a url",
        ] {
            let err = cache
                .key(url, Some("k"), Algorithm::RS256, 0)
                .await
                .unwrap_err();
            assert!(matches!(err, JwksError::BadUrl(_)), "{url}: {err:?}");
        }
        for url in [
            "http://localhost:1/jwks",
            "http://127.0.0.2:1/jwks",
            "http://[::1]:1/jwks",
        ] {
            assert!(check_url(url).is_ok(), "{url}");
        }
        assert!(check_url("https://idp.example.com/jwks").is_ok());
    }

    #[test]
    fn oct_private_and_enc_keys_are_skipped() {
        let rsa = rsa_key("good", 2048);
        let mut with_d = rsa.jwk.clone();
        with_d["kid"] = json!("private");
        with_d["d"] = json!("AQAB");
        let mut enc = rsa.jwk.clone();
        enc["kid"] = json!("enc");
        enc["use"] = json!("enc");
        let body = jwks(&[
            json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}),
            json!({"kty": "oct", "kid": "hmac2"}),
            with_d,
            enc,
            json!({"kty": "EC", "kid": "k1", "crv": "secp256k1", "x": "AA", "y": "AA"}),
            rsa.jwk.clone(),
        ]);
        let keys = parse_jwks(body.as_bytes(), 100).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, vec![Some("good")]);
    }

    #[test]
    fn weak_rsa_keys_are_skipped() {
        let weak = rsa_key("weak", 1024);
        assert!(parse_jwk(&weak.jwk).unwrap_err().contains("1024 bits"));
    }

    #[test]
    fn declared_alg_pins_the_key() {
        let mut rsa = rsa_key("k", 2048).jwk;
        rsa["alg"] = json!("RS256");
        assert_eq!(parse_jwk(&rsa).unwrap().algs, vec![Algorithm::RS256]);
        rsa["alg"] = json!("ES256");
        assert!(parse_jwk(&rsa).is_err(), "an alg that does not fit the kty");
        rsa["alg"] = json!("HS256");
        assert!(parse_jwk(&rsa).is_err());
        let ed = parse_jwk(&ed_key("ed").jwk).unwrap();
        assert_eq!(ed.algs, vec![Algorithm::EdDSA]);
    }

    #[test]
    fn set_without_usable_keys_is_a_failure_and_max_keys_applies() {
        let only_oct = jwks(&[json!({"kty": "oct", "k": "c2VjcmV0"})]);
        assert!(
            parse_jwks(only_oct.as_bytes(), 100)
                .unwrap_err()
                .contains("no usable")
        );
        let ec = [ec_key("a").jwk, ec_key("b").jwk, ec_key("c").jwk];
        assert_eq!(parse_jwks(jwks(&ec).as_bytes(), 2).unwrap().len(), 2);
    }

    #[test]
    fn cache_control_max_age_is_clamped() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(CACHE_CONTROL, value.parse().unwrap());
            cache_max_age(&headers)
        };
        assert_eq!(
            with("public, max-age=3600"),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(with("max-age=5"), Some(MIN_CACHE_AGE));
        assert_eq!(with("max-age=999999999"), Some(MAX_CACHE_AGE));
        assert_eq!(with("no-cache"), None);
    }
}
