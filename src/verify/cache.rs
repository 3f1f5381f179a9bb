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

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use aws_lc_rs::digest::{SHA256, digest};

use super::AccessClaims;

const SHARDS: usize = 16;

/// The claims of a verified token and the key that signed it.
pub(crate) struct Verified {
    pub(crate) claims: AccessClaims,
    pub(crate) kid: String,
}

/// Verified tokens by SHA-256, in shards so that threads rarely contend.
pub(crate) struct VerifiedCache {
    shards: Vec<RwLock<HashMap<[u8; 32], Arc<Verified>>>>,
    per_shard: usize,
}

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
        (capacity > 0).then(|| VerifiedCache {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS),
        })
    }

    fn shard(&self, key: &[u8; 32]) -> &RwLock<HashMap<[u8; 32], Arc<Verified>>> {
        &self.shards[key[0] as usize % SHARDS]
    }

    /// The entry for `key`, if any.
    pub(crate) fn get(&self, key: &[u8; 32]) -> Option<Arc<Verified>> {
        self.shard(key)
            .read()
            .expect("verified cache lock")
            .get(key)
            .cloned()
    }

    /// Remembers a verified token. A full shard first drops what has
    /// expired (`exp` before `expired_before`); if that frees nothing, it
    /// is emptied: memory stays bounded and the cost is only re-verification.
    pub(crate) fn insert(&self, key: [u8; 32], entry: Verified, expired_before: i64) {
        let mut shard = self.shard(&key).write().expect("verified cache lock");
        if shard.len() >= self.per_shard {
            shard.retain(|_, v| v.claims.exp >= expired_before);
            if shard.len() >= self.per_shard {
                shard.clear();
            }
        }
        shard.insert(key, Arc::new(entry));
    }

    /// Forgets a token (its key left the key set, or it expired).
    pub(crate) fn remove(&self, key: &[u8; 32]) {
        self.shard(key)
            .write()
            .expect("verified cache lock")
            .remove(key);
    }

    /// Entries held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().expect("verified cache lock").len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Audience;

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
            },
            kid: "k".into(),
        }
    }

    #[test]
    fn bounded_expired_first_then_emptied() {
        let cache = VerifiedCache::new(SHARDS * 2).unwrap();
        // Three keys in one shard (same first byte).
        let k = |n: u8| {
            let mut k = [0u8; 32];
            k[1] = n;
            k
        };
        cache.insert(k(1), verified(10), 0);
        cache.insert(k(2), verified(100), 0);
        // Full: the entry expired before 50 goes, the live one stays.
        cache.insert(k(3), verified(100), 50);
        assert!(cache.get(&k(1)).is_none());
        assert!(cache.get(&k(2)).is_some() && cache.get(&k(3)).is_some());
        // Full of live entries: emptied, never grown past the bound.
        cache.insert(k(4), verified(100), 50);
        assert_eq!(cache.len(), 1);
        assert!(cache.get(&k(4)).is_some());
        cache.remove(&k(4));
        assert!(cache.get(&k(4)).is_none());
        assert!(VerifiedCache::new(0).is_none());
    }

    #[test]
    fn keys_are_the_digest_of_the_exact_token() {
        assert_eq!(key("a.b.c"), key("a.b.c"));
        assert_ne!(key("a.b.c"), key("a.b.c "));
    }
}
