//! Tokens that already passed every check, so that the same bearer token
//! presented again (a client calls a resource server many times within its
//! 15 minutes; a resource server introspects the same token repeatedly)
//! costs a hash lookup instead of a signature verification or a JWE
//! decryption.
//!
//! Only what cannot change is cached: that these exact bytes carry a valid
//! signature by `kid` and these claims. What can change is checked again on
//! every hit by the caller: the clock (`exp`), whether `kid` is still in the
//! key set, and the revocation list. Entries are keyed by the SHA-256 of the
//! token, so a hit needs the whole token and the cache holds no token text.

use std::sync::Arc;

use aws_lc_rs::digest::{SHA256, digest};

use super::AccessClaims;

/// The claims of a verified token and the key that signed it.
pub(crate) struct Verified {
    pub(crate) claims: AccessClaims,
    pub(crate) kid: String,
}

/// Verified tokens by SHA-256, bounded: when full, the cache (S3-FIFO, from
/// `quick_cache`) evicts what is least likely to be asked for again, one
/// entry at a time, so there is no cliff where everything is re-verified.
pub(crate) struct VerifiedCache(quick_cache::sync::Cache<[u8; 32], Arc<Verified>>);

/// A token's cache key.
pub(crate) fn key(token: &str) -> [u8; 32] {
    digest(&SHA256, token.as_bytes())
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

impl VerifiedCache {
    /// A cache of about `capacity` tokens (none if 0).
    pub(crate) fn new(capacity: usize) -> Option<VerifiedCache> {
        (capacity > 0).then(|| VerifiedCache(quick_cache::sync::Cache::new(capacity)))
    }

    /// The entry for `key`, if any.
    pub(crate) fn get(&self, key: &[u8; 32]) -> Option<Arc<Verified>> {
        self.0.get(key)
    }

    /// Remembers a verified token.
    pub(crate) fn insert(&self, key: [u8; 32], entry: Verified) {
        self.0.insert(key, Arc::new(entry));
    }

    /// Forgets a token (its key left the key set, or it expired).
    pub(crate) fn remove(&self, key: &[u8; 32]) {
        self.0.remove(key);
    }

    /// Entries held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Audience;

    fn verified(exp: i64) -> Verified {
        Verified {
            claims: AccessClaims {
                iss: "i".into(),
                sub: "s".into(),
                aud: Audience::One("a".into()),
                exp,
                iat: 0,
                nbf: 0,
                jti: "j".into(),
                client_id: "c".into(),
                scope: String::new(),
                sid: None,
                cnf: None,
                act: None,
            },
            kid: "k".into(),
        }
    }

    #[test]
    fn bounded_without_emptying() {
        let cache = VerifiedCache::new(64).unwrap();
        let k = |n: u32| {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&n.to_be_bytes());
            k
        };
        for n in 0..1000 {
            cache.insert(k(n), verified(100));
        }
        assert!(cache.len() <= 64, "{}", cache.len());
        assert!(
            cache.len() > 32,
            "evicts a few at a time, not all: {}",
            cache.len()
        );
        assert!(cache.get(&k(999)).is_some());
        cache.remove(&k(999));
        assert!(cache.get(&k(999)).is_none());
        assert!(VerifiedCache::new(0).is_none());
    }

    #[test]
    fn keys_are_the_digest_of_the_exact_token() {
        assert_eq!(key("a.b.c"), key("a.b.c"));
        assert_ne!(key("a.b.c"), key("a.b.c "));
    }
}
