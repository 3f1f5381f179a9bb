//! Per-audience encryption keys: which audiences get JWE-wrapped tokens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use josekit::jwe::{ECDH_ES_A256KW, JweEncrypter, RSA_OAEP_256};
use josekit::jwk::Jwk;

use crate::store::{Store, StoreError};

/// Why a JWK cannot be used as an audience encryption key.
#[derive(Debug, thiserror::Error)]
pub enum EncryptionKeyError {
    /// Not a JWK at all.
    #[error("not a JSON Web Key: {0}")]
    NotJwk(String),
    /// A private key was given where only the public part belongs.
    #[error("the JWK contains private key material (\"d\"); give tessera only the public key")]
    Private,
    /// A key type or size tessera does not encrypt to.
    #[error(
        "unsupported key: {0} (use an EC P-256 key for ECDH-ES+A256KW or an RSA key of at least 2048 bits for RSA-OAEP-256)"
    )]
    Unsupported(String),
}

/// A validated public key that tokens for one audience are encrypted to.
#[derive(Clone)]
pub struct EncryptionKey {
    encrypter: Arc<dyn JweEncrypter>,
    /// `ECDH-ES+A256KW` or `RSA-OAEP-256`.
    pub alg: &'static str,
    /// The `kid` of the JWK, if it has one (copied into the JWE header).
    pub kid: Option<String>,
}

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncryptionKey({}, kid={:?})", self.alg, self.kid)
    }
}

impl EncryptionKey {
    /// Parses and validates a public JWK (JSON text).
    pub fn from_jwk_json(json: &str) -> Result<EncryptionKey, EncryptionKeyError> {
        let jwk = Jwk::from_bytes(json.as_bytes())
            .map_err(|e| EncryptionKeyError::NotJwk(e.to_string()))?;
        if jwk.parameter("d").is_some() || jwk.parameter("p").is_some() {
            return Err(EncryptionKeyError::Private);
        }
        let kid = jwk.key_id().map(str::to_owned);
        let unsupported = |m: String| EncryptionKeyError::Unsupported(m);
        match jwk.key_type() {
            "EC" => {
                if jwk.curve() != Some("P-256") {
                    return Err(unsupported(format!(
                        "EC curve {:?}",
                        jwk.curve().unwrap_or("none")
                    )));
                }
                let encrypter = ECDH_ES_A256KW
                    .encrypter_from_jwk(&jwk)
                    .map_err(|e| unsupported(e.to_string()))?;
                Ok(EncryptionKey {
                    encrypter: Arc::new(encrypter),
                    alg: "ECDH-ES+A256KW",
                    kid,
                })
            }
            "RSA" => {
                let n = jwk
                    .parameter("n")
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| unsupported("RSA key without n".into()))?;
                // base64url length → modulus bits (ignoring a leading zero octet).
                let bits = n.trim_start_matches('A').len() * 6;
                if bits < 2040 {
                    return Err(unsupported(format!("RSA key of about {bits} bits")));
                }
                let encrypter = RSA_OAEP_256
                    .encrypter_from_jwk(&jwk)
                    .map_err(|e| unsupported(e.to_string()))?;
                Ok(EncryptionKey {
                    encrypter: Arc::new(encrypter),
                    alg: "RSA-OAEP-256",
                    kid,
                })
            }
            other => Err(unsupported(format!("key type {other:?}"))),
        }
    }

    /// Encrypts a signed JWT into a compact JWE (`enc` A256GCM, `cty` JWT).
    pub fn encrypt(&self, jws: &str) -> Result<String, josekit::JoseError> {
        let mut header = josekit::jwe::JweHeader::new();
        header.set_content_encryption("A256GCM");
        header.set_content_type("JWT");
        if let Some(kid) = &self.kid {
            header.set_key_id(kid);
        }
        josekit::jwe::serialize_compact(jws.as_bytes(), &header, self.encrypter.as_ref())
    }
}

/// How tokens for one audience are wrapped.
#[derive(Clone, Debug)]
pub enum Wrapping {
    /// A plain signed JWT.
    Signed,
    /// A signed JWT nested in a JWE to this key.
    Encrypted(EncryptionKey),
    /// The audience asked for encryption but its stored key is unusable:
    /// mint nothing rather than leak plaintext.
    Unusable,
}

/// The encryption keys of every audience that has one, refreshed from the
/// database (audiences without a key are simply absent).
#[derive(Default)]
pub struct AudienceKeys {
    /// Read on every mint without a lock; replaced whole on a change.
    keys: ArcSwap<HashMap<String, Wrapping>>,
    /// What `keys` was parsed from (only the refresh task reads it).
    source: Mutex<Vec<(String, String)>>,
}

impl AudienceKeys {
    /// How tokens for `audience` must be wrapped.
    pub fn wrapping(&self, audience: &str) -> Wrapping {
        self.keys
            .load()
            .get(audience)
            .cloned()
            .unwrap_or(Wrapping::Signed)
    }

    /// Re-reads the audiences; keys are re-parsed only when they changed.
    pub async fn refresh(&self, store: &dyn Store) -> Result<(), StoreError> {
        let mut rows: Vec<(String, String)> = store
            .audiences()
            .await?
            .into_iter()
            .filter_map(|a| Some((a.name, a.encrypt_jwk?)))
            .collect();
        rows.sort();
        if *self.source.lock().expect("audience lock") == rows {
            return Ok(());
        }
        let mut keys = HashMap::new();
        for (name, jwk) in &rows {
            let wrapping = match EncryptionKey::from_jwk_json(jwk) {
                Ok(key) => Wrapping::Encrypted(key),
                // Stored keys were validated on the way in; should one still
                // be bad, refuse to mint for that audience at all.
                Err(e) => {
                    tracing::error!(audience = %name, error = %e, "stored audience key is unusable");
                    Wrapping::Unusable
                }
            };
            keys.insert(name.clone(), wrapping);
        }
        self.keys.store(Arc::new(keys));
        *self.source.lock().expect("audience lock") = rows;
        Ok(())
    }
}
