//! Client secrets: 256 random bits shown once, stored as a keyed digest.
//!
//! High-entropy secrets need no slow hash; an HMAC-SHA256 under a key
//! derived from the master key means a stolen database alone cannot even
//! test guesses, and checking costs microseconds, so `client_credentials`
//! stays about as cheap as one ES256 signature. Comparison is constant-time.
//!
//! Digests are `0x02 ‖ HMAC(k, secret)` with `k` expanded by HKDF from the
//! master key. 32-byte digests without the prefix were written before the
//! HKDF separation (`k = HMAC(master, purpose)`) and are still checked.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::keys::master::MasterKey;

/// Computes and checks client-secret digests.
#[derive(Clone)]
pub struct SecretDigester {
    key: hmac::Key,
    legacy: hmac::Key,
}

/// First byte of a current digest.
const DIGEST_VERSION: u8 = 2;
const PURPOSE: &[u8] = b"tessera/client-secret/v1";

impl std::fmt::Debug for SecretDigester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretDigester")
    }
}

impl SecretDigester {
    /// A digester keyed from the master key.
    pub fn new(master: &MasterKey) -> SecretDigester {
        SecretDigester {
            key: master.derive_hmac_key(PURPOSE),
            legacy: master.legacy_client_secret_key(),
        }
    }

    /// A new secret (256 bits, base64url) and its digest.
    pub fn generate(&self) -> (Zeroizing<String>, Vec<u8>) {
        let mut bytes = Zeroizing::new([0u8; 32]);
        SystemRandom::new().fill(bytes.as_mut()).expect("CSPRNG");
        let secret = Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes.as_ref()));
        let digest = self.digest(&secret);
        (secret, digest)
    }

    /// The stored form of `secret`.
    pub fn digest(&self, secret: &str) -> Vec<u8> {
        let mut out = vec![DIGEST_VERSION];
        out.extend_from_slice(hmac::sign(&self.key, secret.as_bytes()).as_ref());
        out
    }

    /// Whether `secret` matches `stored`, in constant time.
    pub fn verify(&self, stored: &[u8], secret: &str) -> bool {
        match stored {
            [DIGEST_VERSION, tag @ ..] if tag.len() == 32 => {
                hmac::verify(&self.key, secret.as_bytes(), tag).is_ok()
            }
            legacy if legacy.len() == 32 => {
                hmac::verify(&self.legacy, secret.as_bytes(), legacy).is_ok()
            }
            _ => {
                // Same work as a real check, so a malformed row is not told apart by time.
                let _ = hmac::verify(&self.key, secret.as_bytes(), &[0; 32]);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_verify_only_with_the_same_master_key() {
        let d = SecretDigester::new(&MasterKey::from_bytes(&[1; 32]));
        let (secret, digest) = d.generate();
        assert_eq!(secret.len(), 43);
        assert_eq!(digest.len(), 33);
        assert!(d.verify(&digest, &secret));
        assert!(!d.verify(&digest, &format!("{}x", &*secret)));
        assert!(!d.verify(&digest, ""));
        assert_ne!(d.generate().0, secret);
        let other = SecretDigester::new(&MasterKey::from_bytes(&[2; 32]));
        assert!(!other.verify(&digest, &secret));
        assert!(
            !digest
                .windows(8)
                .any(|w| secret.as_bytes().windows(8).any(|s| s == w))
        );
    }

    #[test]
    fn digests_stored_before_the_hkdf_separation_still_verify() {
        let master = MasterKey::from_bytes(&[1; 32]);
        let d = SecretDigester::new(&master);
        // Version 1 keyed digests with HMAC(master, purpose) directly.
        let legacy_key = hmac::Key::new(
            hmac::HMAC_SHA256,
            hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &[1; 32]), PURPOSE).as_ref(),
        );
        let legacy = hmac::sign(&legacy_key, b"old-secret").as_ref().to_vec();
        assert!(d.verify(&legacy, "old-secret"));
        assert!(!d.verify(&legacy, "other"));
        // A legacy tag is not accepted as a current one, nor the reverse.
        let mut prefixed = vec![DIGEST_VERSION];
        prefixed.extend_from_slice(&legacy);
        assert!(!d.verify(&prefixed, "old-secret"));
        let current = d.digest("new-secret");
        assert!(!d.verify(&current[1..], "new-secret"));
        assert!(!d.verify(&[], "x"));
    }
}
