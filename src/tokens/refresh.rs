//! Refresh tokens: opaque, 256 bits from the CSPRNG, base64url; only their
//! SHA-256 is stored.

use std::net::IpAddr;

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
        sha256(bytes.as_ref()),
    )
}

/// The stored hash of a presented token, or `None` if it cannot be one of ours.
pub fn hash_presented(token: &str) -> Option<[u8; 32]> {
    if token.len() != 43 {
        return None;
    }
    let bytes = Zeroizing::new(URL_SAFE_NO_PAD.decode(token).ok()?);
    (bytes.len() == 32).then(|| sha256(&bytes))
}

/// SHA-256.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// The coarse network a client came from: /24 for IPv4, /48 for IPv6.
pub fn network_prefix(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return network_prefix(IpAddr::V4(v4));
            }
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
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

    #[test]
    fn prefixes_are_coarse() {
        assert_eq!(
            network_prefix("203.0.113.77".parse().unwrap()),
            "203.0.113.0/24"
        );
        assert_eq!(
            network_prefix("2001:db8:1:2::7".parse().unwrap()),
            "2001:db8:1::/48"
        );
        assert_eq!(
            network_prefix("::ffff:192.0.2.9".parse().unwrap()),
            "192.0.2.0/24"
        );
    }
}
