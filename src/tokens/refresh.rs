//! Refresh tokens: opaque, 256 bits from the CSPRNG, base64url; only their
//! SHA-256 is stored.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// A new refresh token and the hash to store.
pub fn generate() -> (Zeroizing<String>, [u8; 32]) {
    let mut bytes = Zeroizing::new([0u8; 32]);
    SystemRandom::new().fill(bytes.as_mut()).expect("CSPRNG");
    (
        Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes.as_ref())),
        crate::digest::sha256(bytes.as_ref()),
    )
}

/// The stored hash of a presented token, or `None` if it cannot be one of ours.
pub fn hash_presented(token: &str) -> Option<[u8; 32]> {
    if token.len() != 43 {
        return None;
    }
    let bytes = Zeroizing::new(URL_SAFE_NO_PAD.decode(token).ok()?);
    (bytes.len() == 32).then(|| crate::digest::sha256(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_hash_consistently_and_reject_foreign_input() {
        let (token, hash) = generate();
        assert_eq!(token.len(), 43);
        assert_eq!(hash_presented(&token), Some(hash));
        assert_eq!(hash_presented(&format!("{}=", &token[..42])), None);
        assert_eq!(hash_presented("short"), None);
        assert_eq!(hash_presented(&"!".repeat(43)), None);
        assert_ne!(generate().1, hash);
    }
}
