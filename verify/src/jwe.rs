//! Decryption of nested tokens for audiences that registered an encryption key.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::jwe::{ECDH_ES_A256KW, JweDecrypter, RSA_OAEP_256};
use josekit::jwk::Jwk;

use super::{KeyError, VerifyError, header};

/// The audience's private key and the one algorithm it accepts.
pub(crate) struct Decryption {
    decrypter: Box<dyn JweDecrypter>,
    alg: &'static str,
}

impl Decryption {
    /// From the audience's private JWK (EC P-256 or RSA).
    pub(crate) fn from_jwk_json(json: &str) -> Result<Decryption, KeyError> {
        let jwk = Jwk::from_bytes(json.as_bytes()).map_err(|e| KeyError::Jwk(e.to_string()))?;
        match jwk.key_type() {
            "EC" if jwk.curve() == Some("P-256") => Ok(Decryption {
                decrypter: Box::new(
                    ECDH_ES_A256KW
                        .decrypter_from_jwk(&jwk)
                        .map_err(|e| KeyError::Jwk(e.to_string()))?,
                ),
                alg: "ECDH-ES+A256KW",
            }),
            "RSA" => Ok(Decryption {
                decrypter: Box::new(
                    RSA_OAEP_256
                        .decrypter_from_jwk(&jwk)
                        .map_err(|e| KeyError::Jwk(e.to_string()))?,
                ),
                alg: "RSA-OAEP-256",
            }),
            other => Err(KeyError::Unsupported(format!(
                "decryption key type {other:?} (EC P-256 or RSA)"
            ))),
        }
    }

    /// Checks the JWE header and returns the nested JWS.
    pub(crate) fn decrypt(&self, token: &str) -> Result<String, VerifyError> {
        let [protected, _, iv, _, tag] = token.split('.').collect::<Vec<_>>()[..] else {
            return Err(VerifyError::Malformed("a JWE has five segments"));
        };
        // A256GCM takes a 96-bit IV and a 128-bit tag (RFC 7518 §5.3).
        // josekit hands the tag to OpenSSL, which compares only as many
        // bytes as it is given: a 1-byte tag would pass 1 time in 256, and
        // the verifier's later answers would then leak the plaintext.
        // (Found by the verify_jwe fuzz target.)
        if header::b64(iv, "JWE IV is not base64url")?.len() != 12
            || header::b64(tag, "JWE tag is not base64url")?.len() != 16
        {
            return Err(VerifyError::Encryption(
                "A256GCM needs a 96-bit IV and a 128-bit tag",
            ));
        }
        let h = header::parse(protected)?;
        header::check_jwe(&h, self.alg)?;
        if self.alg == "ECDH-ES+A256KW" {
            check_epk(h.get("epk"))?;
        }
        let (payload, _) = josekit::jwe::deserialize_compact(token, self.decrypter.as_ref())
            .map_err(|_| VerifyError::Encryption("cannot decrypt"))?;
        let inner = String::from_utf8(payload)
            .map_err(|_| VerifyError::Malformed("nested token is not text"))?;
        if inner.split('.').count() != 3 {
            return Err(VerifyError::Encryption(
                "the encrypted payload is not a signed JWT",
            ));
        }
        Ok(inner)
    }
}

/// The ephemeral public key must be a P-256 point on the curve: an off-curve
/// point is the invalid-curve attack that leaks the private key.
fn check_epk(epk: Option<&serde_json::Value>) -> Result<(), VerifyError> {
    let bad = VerifyError::Encryption("ephemeral key is not a valid P-256 point");
    let epk = epk.ok_or(VerifyError::Encryption("ECDH-ES header has no epk"))?;
    let s = |n: &str| epk.get(n).and_then(|v| v.as_str());
    if s("kty") != Some("EC") || s("crv") != Some("P-256") {
        return Err(bad);
    }
    let coord = |n: &str| {
        s(n).and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
            .filter(|b| b.len() == 32)
    };
    let (Some(x), Some(y)) = (coord("x"), coord("y")) else {
        return Err(bad);
    };
    // The same aws-lc check every verification key passes (not OpenSSL,
    // which this crate calls only through josekit's decryption).
    let point = [&[4u8][..], &x, &y].concat();
    super::jwks::on_curve(&point).map_err(|_| bad)
}
