//! Where verification keys come from: a static key set, or the issuer's
//! JWKS fetched over HTTP and cached, refreshed when it goes stale or when a
//! token names an unknown `kid`, at most once per `min_refresh_interval`, so
//! a flood of tokens with random kids cannot make us hammer the issuer.

use std::collections::HashMap;
use std::sync::Arc;
#[cfg(feature = "remote-jwks")]
use std::sync::RwLock;
#[cfg(feature = "remote-jwks")]
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ParsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::{KeyError, VerifyError};

/// Largest JWKS document accepted.
#[cfg(feature = "remote-jwks")]
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// An ES256 (P-256) public key, checked on the curve once, when the key set
/// is read (aws-lc), and verified against with `jsonwebtoken` (its aws-lc
/// backend), after this crate's own stricter header and signature checks.
pub struct VerifyingKey(jsonwebtoken::DecodingKey);

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerifyingKey(ES256)")
    }
}

impl VerifyingKey {
    /// From the `x` and `y` members of a P-256 JWK (base64url, 32 bytes
    /// each); refuses a point that is not on the curve.
    pub fn from_ec_components(x: &str, y: &str) -> Result<VerifyingKey, KeyError> {
        let coordinate = |c: &str| {
            URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or(KeyError::Coordinates)
        };
        let mut point = Vec::with_capacity(65);
        point.push(0x04); // uncompressed
        point.extend(coordinate(x)?);
        point.extend(coordinate(y)?);
        on_curve(&point)?;
        jsonwebtoken::DecodingKey::from_ec_components(x, y)
            .map(VerifyingKey)
            .map_err(|_| KeyError::Coordinates)
    }

    /// Whether `signature` (the JWS's third segment, base64url `r || s`)
    /// signs `message` (its first two segments).
    pub(crate) fn verifies(&self, message: &[u8], signature: &str) -> bool {
        jsonwebtoken::crypto::verify(signature, message, &self.0, jsonwebtoken::Algorithm::ES256)
            .unwrap_or(false)
    }
}

/// Refuses an uncompressed point (`04 ‖ x ‖ y`) that is not on P-256.
pub(crate) fn on_curve(point: &[u8]) -> Result<(), KeyError> {
    ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
        .map(drop)
        .map_err(|_| KeyError::NotOnCurve)
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

/// Extracts the ES256 verification keys of a JWKS document; members of any
/// other type, curve, algorithm or use are ignored, and so is private material.
pub(crate) fn parse_set(json: &[u8]) -> Result<HashMap<String, Arc<VerifyingKey>>, KeyError> {
    // Only the position: serde's message can quote the (untrusted) document.
    let set: RawSet = serde_json::from_slice(json).map_err(|e| {
        KeyError::NotAKeySet(format!("error at line {}, column {}", e.line(), e.column()))
    })?;
    let mut keys = HashMap::new();
    for k in set.keys {
        let s = |name: &str| k.get(name).and_then(|v| v.as_str());
        if s("kty") != Some("EC") || s("crv") != Some("P-256") {
            continue;
        }
        if s("alg").is_some_and(|a| a != "ES256") || s("use").is_some_and(|u| u != "sig") {
            continue;
        }
        let (Some(kid), Some(x), Some(y)) = (s("kid"), s("x"), s("y")) else {
            continue;
        };
        if let Ok(key) = VerifyingKey::from_ec_components(x, y) {
            keys.insert(kid.to_owned(), Arc::new(key));
        }
    }
    Ok(keys)
}

pub(crate) enum KeySource {
    Static(HashMap<String, Arc<VerifyingKey>>),
    Provider(Arc<dyn super::KeyProvider>),
    #[cfg(feature = "remote-jwks")]
    Remote(Arc<Remote>),
}

#[cfg(feature = "remote-jwks")]
pub(crate) struct Remote {
    url: String,
    client: reqwest::Client,
    default_max_age: Duration,
    min_refresh_interval: Duration,
    cache: RwLock<Cache>,
    /// Held while fetching; remembers when the last fetch started.
    fetch: tokio::sync::Mutex<Option<Instant>>,
}

#[cfg(feature = "remote-jwks")]
struct Cache {
    keys: HashMap<String, Arc<VerifyingKey>>,
    fresh_until: Option<Instant>,
    /// Whether the last fetch failed (an unknown kid is then "keys
    /// unavailable", not "invalid token").
    last_failed: bool,
}

impl KeySource {
    #[cfg(feature = "remote-jwks")]
    pub(crate) fn remote(
        url: String,
        default_max_age: Duration,
        min_refresh_interval: Duration,
    ) -> KeySource {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("HTTP client builds");
        KeySource::Remote(Arc::new(Remote {
            url,
            client,
            default_max_age,
            min_refresh_interval,
            cache: RwLock::new(Cache {
                keys: HashMap::new(),
                fresh_until: None,
                last_failed: false,
            }),
            fetch: tokio::sync::Mutex::new(None),
        }))
    }

    /// The key for `kid`.
    pub(crate) async fn key(&self, kid: &str) -> Result<Arc<VerifyingKey>, VerifyError> {
        match self {
            KeySource::Static(keys) => keys.get(kid).cloned().ok_or(VerifyError::UnknownKey),
            KeySource::Provider(p) => p.verifying_key(kid).ok_or(VerifyError::UnknownKey),
            #[cfg(feature = "remote-jwks")]
            KeySource::Remote(remote) => Remote::key(remote, kid).await,
        }
    }
}

#[cfg(feature = "remote-jwks")]
impl Remote {
    fn lookup(&self, kid: &str) -> (Option<Arc<VerifyingKey>>, bool, bool) {
        let cache = self.cache.read().expect("jwks cache lock");
        let fresh = cache.fresh_until.is_some_and(|t| Instant::now() < t);
        (cache.keys.get(kid).cloned(), fresh, cache.last_failed)
    }

    async fn key(this: &Arc<Remote>, kid: &str) -> Result<Arc<VerifyingKey>, VerifyError> {
        match this.lookup(kid) {
            (Some(key), true, _) => return Ok(key),
            // Known but stale: answer now, refresh in the background, so
            // no request ever waits for the issuer because of staleness.
            (Some(key), false, _) => {
                let remote = this.clone();
                tokio::spawn(async move { remote.refresh_if_allowed().await });
                return Ok(key);
            }
            (None, _, _) => {}
        }
        // Unknown kid: perhaps a rotation we have not seen; fetch (rate-limited).
        this.refresh_if_allowed().await;
        match this.lookup(kid) {
            (Some(key), _, _) => Ok(key),
            (None, _, true) => Err(VerifyError::KeysUnavailable),
            (None, _, false) => Err(VerifyError::UnknownKey),
        }
    }

    /// Fetches unless another fetch started less than `min_refresh_interval` ago.
    async fn refresh_if_allowed(&self) {
        let mut last_fetch = self.fetch.lock().await;
        if last_fetch.is_some_and(|t| t.elapsed() < self.min_refresh_interval) {
            return;
        }
        *last_fetch = Some(Instant::now());
        let result = self.fetch().await;
        let mut cache = self.cache.write().expect("jwks cache lock");
        match result {
            Ok((keys, max_age)) => {
                cache.keys = keys;
                cache.fresh_until = Some(Instant::now() + max_age);
                cache.last_failed = false;
            }
            Err(e) => {
                // Known keys stay usable while the issuer is unreachable.
                tracing::warn!(url = %self.url, error = %e, "JWKS refresh failed; using cached keys");
                cache.last_failed = true;
            }
        }
    }

    async fn fetch(&self) -> Result<(HashMap<String, Arc<VerifyingKey>>, Duration), String> {
        let res = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !res.status().is_success() {
            return Err(format!("HTTP {}", res.status()));
        }
        let max_age = res
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age)
            .unwrap_or(self.default_max_age)
            // Bounded: never cache for less than the refresh interval or more than a day.
            .clamp(self.min_refresh_interval, Duration::from_secs(86_400));
        if res
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err("JWKS too large".into());
        }
        let body = res.bytes().await.map_err(|e| e.to_string())?;
        if body.len() > MAX_JWKS_BYTES {
            return Err("JWKS too large".into());
        }
        Ok((parse_set(&body).map_err(|e| e.to_string())?, max_age))
    }
}

#[cfg(feature = "remote-jwks")]
fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control
        .split(',')
        .filter_map(|d| d.trim().strip_prefix("max-age="))
        .find_map(|v| v.trim_matches('"').parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(all(test, feature = "remote-jwks"))]
mod tests {
    #[test]
    fn reads_max_age() {
        assert_eq!(
            super::max_age("public, max-age=300"),
            Some(std::time::Duration::from_secs(300))
        );
        assert_eq!(super::max_age("no-store"), None);
    }

    #[test]
    fn ignores_keys_that_are_not_es256() {
        let set = br#"{"keys":[
            {"kty":"RSA","kid":"r","n":"AQAB","e":"AQAB"},
            {"kty":"oct","kid":"h","k":"c2VjcmV0"},
            {"kty":"EC","crv":"P-384","kid":"p384","x":"AA","y":"AA"},
            {"kty":"EC","crv":"P-256","kid":"enc","use":"enc","x":"AA","y":"AA"},
            {"kty":"EC","crv":"P-256","kid":"ok","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
        ]}"#;
        let keys = super::parse_set(set).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["ok"]);
        assert!(super::parse_set(b"[]").is_err());
    }
}
