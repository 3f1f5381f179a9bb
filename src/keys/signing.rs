//! ES256 signing keys: generation, PEM import, RFC 7638 `kid`, and signing.
//!
//! The signer is built once per key (parsing PKCS#8 per token would cost a
//! third of the signing time). Signatures are produced by aws-lc-rs, the same
//! backend `jsonwebtoken` uses, in the fixed `r || s` form JWS requires, or
//! by a PKCS#11 token for keys that live in one ([`super::pkcs11`]).

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use zeroize::Zeroizing;

/// Why a private key was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not PEM, or a PEM block of another kind.
    #[error(
        "not a PEM private key (expected -----BEGIN PRIVATE KEY----- or -----BEGIN EC PRIVATE KEY-----)"
    )]
    NotPem,
    /// A key, but not an ECDSA P-256 one.
    #[error("not an ECDSA P-256 (ES256) private key: {0}")]
    WrongKind(String),
    /// A key in a PKCS#11 token that cannot be used.
    #[error(transparent)]
    Hsm(#[from] super::pkcs11::HsmError),
}

/// Why a signature could not be made (only keys in a token can fail).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct SignError(#[from] super::pkcs11::HsmError);

/// Where the private key is.
enum Backend {
    /// In this process (sealed under the master key at rest).
    Software {
        pair: EcdsaKeyPair,
        pkcs8: Zeroizing<Vec<u8>>,
    },
    /// In a PKCS#11 token; only a reference is here.
    Token(super::pkcs11::HsmKey),
}

/// The public half of a signing key as published in the JWKS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PublicJwk {
    /// Always `EC`.
    pub kty: String,
    /// Always `P-256`.
    pub crv: String,
    /// Affine x coordinate, base64url.
    pub x: String,
    /// Affine y coordinate, base64url.
    pub y: String,
    /// RFC 7638 thumbprint.
    pub kid: String,
    /// Always `ES256`.
    pub alg: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: String,
}

/// A private ES256 key ready to sign.
pub struct SigningKeyPair {
    kid: String,
    backend: Backend,
    jwk: PublicJwk,
    at_jwt_header: String,
}

impl fmt::Debug for SigningKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKeyPair(kid={})", self.kid)
    }
}

impl SigningKeyPair {
    /// A new key from the system CSPRNG.
    pub fn generate() -> SigningKeyPair {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .expect("P-256 key generation does not fail");
        SigningKeyPair::from_pkcs8(doc.as_ref()).expect("a generated key is valid")
    }

    /// A key from PKCS#8 v1 DER (the stored form).
    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKeyPair, KeyError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|e| KeyError::WrongKind(e.to_string()))?;
        Ok(SigningKeyPair::new(pair, Zeroizing::new(der.to_vec())))
    }

    /// A key from PEM: PKCS#8 (`PRIVATE KEY`) or SEC 1 (`EC PRIVATE KEY`),
    /// as written by `openssl genpkey`/`openssl ecparam -genkey`.
    pub fn from_pem(pem_text: &str) -> Result<SigningKeyPair, KeyError> {
        let block = pem::parse(pem_text.trim()).map_err(|_| KeyError::NotPem)?;
        if !matches!(block.tag(), "PRIVATE KEY" | "EC PRIVATE KEY") {
            return Err(KeyError::NotPem);
        }
        let der = Zeroizing::new(block.into_contents());
        let pair = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
            .map_err(|e| KeyError::WrongKind(e.to_string()))?;
        // Normalise to PKCS#8 v1 for storage.
        let pkcs8 = pair
            .to_pkcs8v1()
            .map_err(|_| KeyError::WrongKind("cannot re-encode as PKCS#8".into()))?;
        SigningKeyPair::from_pkcs8(pkcs8.as_ref())
    }

    /// A key held in a PKCS#11 token.
    pub fn from_hsm(key: super::pkcs11::HsmKey) -> SigningKeyPair {
        let point = *key.public_point();
        SigningKeyPair::with_point(&point, Backend::Token(key))
    }

    /// A key from its stored (unsealed) form: PKCS#8 DER, or the `pkcs11:`
    /// URI of a key in a token, opened through `hsm`.
    pub fn from_stored(
        stored: &[u8],
        hsm: Option<&std::sync::Arc<super::pkcs11::Hsm>>,
        kid: &str,
    ) -> Result<SigningKeyPair, KeyError> {
        match stored.strip_prefix(b"pkcs11:".as_slice()) {
            None => SigningKeyPair::from_pkcs8(stored),
            Some(_) => {
                let text = std::str::from_utf8(stored).map_err(|_| {
                    KeyError::WrongKind("the stored PKCS#11 URI is not UTF-8".into())
                })?;
                let uri = super::pkcs11::KeyUri::parse(text)?;
                let hsm =
                    hsm.ok_or_else(|| super::pkcs11::HsmError::NotConfigured(kid.to_owned()))?;
                Ok(SigningKeyPair::from_hsm(hsm.key(&uri)?))
            }
        }
    }

    fn new(pair: EcdsaKeyPair, pkcs8: Zeroizing<Vec<u8>>) -> SigningKeyPair {
        let point: [u8; 65] = pair
            .public_key()
            .as_ref()
            .try_into()
            .expect("an uncompressed P-256 point");
        SigningKeyPair::with_point(&point, Backend::Software { pair, pkcs8 })
    }

    fn with_point(point: &[u8; 65], backend: Backend) -> SigningKeyPair {
        // Uncompressed point: 0x04 || x (32 bytes) || y (32 bytes).
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
        let kid = thumbprint(&x, &y);
        let jwk = PublicJwk {
            kty: "EC".into(),
            crv: "P-256".into(),
            x,
            y,
            kid: kid.clone(),
            alg: "ES256".into(),
            use_: "sig".into(),
        };
        let header = serde_json::json!({ "alg": "ES256", "typ": "at+jwt", "kid": kid });
        let at_jwt_header =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("header serializes"));
        SigningKeyPair {
            kid,
            backend,
            jwk,
            at_jwt_header,
        }
    }

    /// The RFC 7638 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public JWK (never any private material).
    pub fn public_jwk(&self) -> &PublicJwk {
        &self.jwk
    }

    /// The base64url JWS header of access tokens signed with this key:
    /// `{"alg":"ES256","typ":"at+jwt","kid":…}`, encoded once.
    pub fn at_jwt_header_b64(&self) -> &str {
        &self.at_jwt_header
    }

    /// The PKCS#8 v1 DER private key (`None` for a key in a token).
    pub fn pkcs8(&self) -> Option<&[u8]> {
        match &self.backend {
            Backend::Software { pkcs8, .. } => Some(pkcs8),
            Backend::Token(_) => None,
        }
    }

    /// What the store keeps (sealed): the PKCS#8 DER, or the token key's URI.
    pub fn stored_form(&self) -> Zeroizing<Vec<u8>> {
        match &self.backend {
            Backend::Software { pkcs8, .. } => pkcs8.clone(),
            Backend::Token(key) => Zeroizing::new(key.uri().to_uri().into_bytes()),
        }
    }

    /// Whether the key is held in a PKCS#11 token.
    pub fn in_token(&self) -> bool {
        matches!(self.backend, Backend::Token(_))
    }

    /// Whether the key can sign (a key in a token that failed its last
    /// signature is probed again, at most once a second).
    pub fn ready(&self) -> bool {
        match &self.backend {
            Backend::Software { .. } => true,
            Backend::Token(key) => key.ready(),
        }
    }

    /// Signs `header.payload` (already base64url-encoded and joined) and
    /// returns the base64url signature (64 bytes `r || s` before encoding).
    pub fn sign(&self, signing_input: &[u8]) -> Result<String, SignError> {
        match &self.backend {
            Backend::Software { pair, .. } => {
                let sig = pair
                    .sign(&SystemRandom::new(), signing_input)
                    .expect("ECDSA signing does not fail");
                Ok(URL_SAFE_NO_PAD.encode(sig.as_ref()))
            }
            Backend::Token(key) => Ok(URL_SAFE_NO_PAD.encode(key.sign(signing_input)?)),
        }
    }
}

/// RFC 7638 JWK thumbprint of an EC P-256 public key: SHA-256 over the
/// required members in lexicographic order, base64url.
pub fn thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE_PEM: &str = include_str!("../../keys.example/signing-key.pem");

    #[test]
    fn rfc7638_thumbprint_of_the_rfc7520_p256_key() {
        // The P-256 key of RFC 7515
        // appendix A.3; its thumbprint was computed independently with
        // jwcrypto (`JWK(**key).thumbprint()`).
        let x = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
        let y = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
        assert_eq!(
            thumbprint(x, y),
            "oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U"
        );
    }

    #[test]
    fn generated_keys_round_trip_through_pkcs8() {
        let k = SigningKeyPair::generate();
        let again = SigningKeyPair::from_pkcs8(k.pkcs8().unwrap()).unwrap();
        assert_eq!(k.kid(), again.kid());
        assert_eq!(k.public_jwk(), again.public_jwk());
        assert_eq!(k.kid().len(), 43);
        assert_ne!(k.kid(), SigningKeyPair::generate().kid());
    }

    #[test]
    fn imports_pkcs8_and_sec1_pem() {
        let k = SigningKeyPair::from_pem(EXAMPLE_PEM).unwrap();
        assert_eq!(k.public_jwk().crv, "P-256");
        let sec1 = include_str!("../../tests/data/sec1-p256.pem");
        assert!(SigningKeyPair::from_pem(sec1).is_ok());
    }

    #[test]
    fn refuses_other_keys() {
        assert!(matches!(
            SigningKeyPair::from_pem("hello"),
            Err(KeyError::NotPem)
        ));
        let p384 = include_str!("../../tests/data/p384.pem");
        assert!(matches!(
            SigningKeyPair::from_pem(p384),
            Err(KeyError::WrongKind(_))
        ));
        let public = include_str!("../../tests/data/p256-public.pem");
        assert!(matches!(
            SigningKeyPair::from_pem(public),
            Err(KeyError::NotPem)
        ));
    }

    #[test]
    fn the_public_jwk_has_no_private_member() {
        let k = SigningKeyPair::generate();
        let json = serde_json::to_value(k.public_jwk()).unwrap();
        assert!(json.get("d").is_none());
        assert_eq!(json["use"], "sig");
        assert_eq!(json["alg"], "ES256");
        assert!(!format!("{k:?}").contains(&URL_SAFE_NO_PAD.encode(k.pkcs8().unwrap())));
    }
}
