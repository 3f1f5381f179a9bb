//! Client secrets: 256 random bits shown once, stored as a keyed digest.
//!
//! High-entropy secrets need no slow hash; an HMAC-SHA256 under a key
//! derived from the master key means a stolen database alone cannot even
//! test guesses, and checking costs microseconds, so `client_credentials`
//! stays about as cheap as one ES256 signature. Comparison is constant-time.

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
}

impl std::fmt::Debug for SecretDigester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretDigester")
    }
}

impl SecretDigester {
    /// A digester keyed from the master key.
    pub fn new(master: &MasterKey) -> SecretDigester {
        SecretDigester {
            key: master.derive_hmac_key(b"tessera/client-secret/v1"),
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
        hmac::sign(&self.key, secret.as_bytes()).as_ref().to_vec()
    }

    /// Whether `secret` matches `stored`, in constant time.
    pub fn verify(&self, stored: &[u8], secret: &str) -> bool {
        hmac::verify(&self.key, secret.as_bytes(), stored).is_ok()
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
}
