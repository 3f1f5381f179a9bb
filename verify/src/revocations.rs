//! The revocation list: which access tokens are revoked before they expire.
//!
//! tessera publishes revocations as a feed (`GET /v1/revocations`); the
//! issuer's own introspection and every resource server that validates
//! locally keep the same in-memory [`RevocationSet`], so a check is a few
//! hash lookups, never a request.
//!
//! Entries by `jti` and `sid` revoke every token carrying that value; entries
//! by `sub` and `client` revoke the tokens *issued* (`iat`) at or before the
//! revocation, so a user logged out everywhere can log in again. Entries are
//! dropped once no token they affect can still be valid (`relevant_until`).

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::AccessClaims;

/// What a revocation entry names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RevocationKind {
    /// One access token, by `jti`.
    Jti,
    /// Every access token minted in a session, by `sid`.
    Sid,
    /// Every token issued to a user (`sub`) up to `revoked_at`.
    Sub,
    /// Every token issued to a client up to `revoked_at`.
    Client,
    /// Every token signed with a signing key, by its `kid`: the key was
    /// retired at once (compromise), before its tokens expired.
    Kid,
}

impl RevocationKind {
    /// The name used in the feed and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationKind::Jti => "jti",
            RevocationKind::Sid => "sid",
            RevocationKind::Sub => "sub",
            RevocationKind::Client => "client",
            RevocationKind::Kid => "kid",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<RevocationKind> {
        Some(match s {
            "jti" => RevocationKind::Jti,
            "sid" => RevocationKind::Sid,
            "sub" => RevocationKind::Sub,
            "client" => RevocationKind::Client,
            "kid" => RevocationKind::Kid,
            _ => return None,
        })
    }
}

/// One entry of the feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FeedEntry {
    /// What is revoked.
    pub kind: RevocationKind,
    /// The jti, sid, sub or client id.
    pub value: String,
    /// Unix seconds.
    pub revoked_at: i64,
    /// No token it affects outlives this (Unix seconds).
    pub relevant_until: i64,
}

/// A page of the feed (`GET /v1/revocations?since=CURSOR`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FeedPage {
    /// Entries after the cursor, oldest first.
    pub revocations: Vec<FeedEntry>,
    /// Pass as `since` for the next page (opaque).
    pub next_cursor: String,
    /// Whether another page follows at once.
    pub has_more: bool,
}

/// Longest cursor a feed page may hand out (ours are decimal numbers).
pub const MAX_CURSOR_LEN: usize = 64;

impl FeedPage {
    /// Checks a page fetched with `previous` as its cursor before it is
    /// applied: the next cursor must be short printable ASCII (it is sent
    /// back in a URL), and a page that claims more entries follow must move
    /// the cursor (or the poller would fetch the same page forever).
    pub fn check(&self, previous: &str) -> Result<(), crate::FeedError> {
        let malformed = |m: String| Err(crate::FeedError::Malformed(m));
        if self.next_cursor.len() > MAX_CURSOR_LEN
            || !self.next_cursor.bytes().all(|b| b.is_ascii_graphic())
        {
            return malformed(format!(
                "the feed's next_cursor is not 1 to {MAX_CURSOR_LEN} printable ASCII characters"
            ));
        }
        if self.next_cursor.is_empty() && !previous.is_empty() {
            return malformed("the feed's next_cursor is empty".into());
        }
        if self.has_more && self.next_cursor == previous {
            return malformed(
                "the feed says more entries follow but did not advance its cursor".into(),
            );
        }
        Ok(())
    }
}

#[derive(Default)]
struct Inner {
    /// By `jti` and by `sid`: until when the entry matters.
    jti: HashMap<String, i64>,
    sid: HashMap<String, i64>,
    /// By `sub` and by client: (latest revoked_at, relevant_until).
    sub: HashMap<String, (i64, i64)>,
    client: HashMap<String, (i64, i64)>,
    /// Retired signing keys: `kid` → relevant until.
    kid: HashMap<String, i64>,
    cursor: String,
}

impl Inner {
    fn is_empty(&self) -> bool {
        self.jti.is_empty()
            && self.sid.is_empty()
            && self.sub.is_empty()
            && self.client.is_empty()
            && self.kid.is_empty()
    }

    fn len(&self) -> usize {
        self.jti.len() + self.sid.len() + self.sub.len() + self.client.len() + self.kid.len()
    }
}

/// Revoked tokens, in memory. Cheap to query from many threads: one map
/// per kind, so a check borrows the claim values instead of copying them.
#[derive(Default)]
pub struct RevocationSet {
    inner: RwLock<Inner>,
    /// Bumped whenever a client entry is added.
    client_generation: AtomicU64,
}

impl RevocationSet {
    /// An empty set whose feed position is the start.
    pub fn new() -> RevocationSet {
        RevocationSet::default()
    }

    /// Adds entries (from the feed or local knowledge).
    pub fn apply<'a>(&self, entries: impl IntoIterator<Item = &'a FeedEntry>) {
        let mut clients_changed = false;
        {
            let mut inner = self.inner.write().expect("revocation set lock");
            for e in entries {
                let exact = match e.kind {
                    RevocationKind::Jti => &mut inner.jti,
                    RevocationKind::Sid => &mut inner.sid,
                    RevocationKind::Kid => &mut inner.kid,
                    RevocationKind::Sub | RevocationKind::Client => {
                        clients_changed |= e.kind == RevocationKind::Client;
                        let map = if e.kind == RevocationKind::Sub {
                            &mut inner.sub
                        } else {
                            &mut inner.client
                        };
                        let (at, until) = map
                            .entry(e.value.clone())
                            .or_insert((e.revoked_at, e.relevant_until));
                        *at = (*at).max(e.revoked_at);
                        *until = (*until).max(e.relevant_until);
                        continue;
                    }
                };
                let until = exact.entry(e.value.clone()).or_insert(e.relevant_until);
                *until = (*until).max(e.relevant_until);
            }
        }
        if clients_changed {
            // After the entry is visible: a reader that sees the new
            // generation also sees the entry.
            self.client_generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Changes whenever an entry naming a client is added (a client was
    /// disabled or had its tokens revoked). Whoever caches facts about
    /// clients re-reads them when this moves, so a disabled client is
    /// refused as soon as its revocation reaches this set.
    pub fn client_generation(&self) -> u64 {
        self.client_generation.load(Ordering::SeqCst)
    }

    /// Applies a feed page and moves the cursor past it.
    pub fn apply_page(&self, page: &FeedPage) {
        self.apply(&page.revocations);
        self.inner.write().expect("revocation set lock").cursor = page.next_cursor.clone();
    }

    /// Where the next feed request starts (empty: from the beginning).
    pub fn cursor(&self) -> String {
        self.inner
            .read()
            .expect("revocation set lock")
            .cursor
            .clone()
    }

    /// Forgets entries no token can need any more.
    pub fn prune(&self, now: i64) {
        let mut inner = self.inner.write().expect("revocation set lock");
        inner.jti.retain(|_, until| *until >= now);
        inner.sid.retain(|_, until| *until >= now);
        inner.sub.retain(|_, (_, until)| *until >= now);
        inner.client.retain(|_, (_, until)| *until >= now);
        inner.kid.retain(|_, until| *until >= now);
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.inner.read().expect("revocation set lock").len()
    }

    /// Whether the set holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The latest `revoked_at` of the `sub` and `client` entries naming
    /// `sub` or `client_id`: a token for them issued at or before it is
    /// revoked from birth.
    pub fn cutoff(&self, sub: &str, client_id: &str) -> Option<i64> {
        let inner = self.inner.read().expect("revocation set lock");
        let at = |map: &HashMap<String, (i64, i64)>, value: &str| map.get(value).map(|(at, _)| *at);
        at(&inner.sub, sub).max(at(&inner.client, client_id))
    }

    /// Whether the signing key `kid` was retired at once: every token it
    /// signed is refused, whatever JWKS a verifier still holds.
    pub fn is_key_revoked(&self, kid: &str) -> bool {
        self.inner
            .read()
            .expect("revocation set lock")
            .kid
            .contains_key(kid)
    }

    /// Whether a token with these claims is revoked. An exchanged token
    /// (RFC 8693 `act`) is revoked too when any client of its actor chain
    /// is revoked: disabling a service that acted earlier ends what later
    /// services obtained through it.
    pub fn is_revoked(&self, claims: &AccessClaims) -> bool {
        self.is_revoked_parts(
            &claims.jti,
            claims.sid.as_deref(),
            &claims.sub,
            &claims.client_id,
            claims.iat,
        ) || claims
            .act
            .as_ref()
            .is_some_and(|act| self.is_actor_revoked(act, claims.iat))
    }

    /// Whether a client of the chain `act` was revoked after `iat`.
    fn is_actor_revoked(&self, act: &crate::Actor, iat: i64) -> bool {
        let inner = self.inner.read().expect("revocation set lock");
        let mut next = Some(act);
        while let Some(actor) = next {
            if inner
                .client
                .get(&actor.sub)
                .is_some_and(|(revoked_at, _)| iat <= *revoked_at)
            {
                return true;
            }
            next = actor.act.as_deref();
        }
        false
    }

    /// [`Self::is_revoked`] from the individual claims.
    pub fn is_revoked_parts(
        &self,
        jti: &str,
        sid: Option<&str>,
        sub: &str,
        client_id: &str,
        iat: i64,
    ) -> bool {
        let inner = self.inner.read().expect("revocation set lock");
        if inner.is_empty() {
            return false;
        }
        let before = |map: &HashMap<String, (i64, i64)>, value: &str| {
            map.get(value)
                .is_some_and(|(revoked_at, _)| iat <= *revoked_at)
        };
        inner.jti.contains_key(jti)
            || sid.is_some_and(|sid| inner.sid.contains_key(sid))
            || before(&inner.sub, sub)
            || before(&inner.client, client_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: RevocationKind, value: &str, revoked_at: i64) -> FeedEntry {
        FeedEntry {
            kind,
            value: value.into(),
            revoked_at,
            relevant_until: revoked_at + 900,
        }
    }

    #[test]
    fn key_entries_revoke_every_token_of_the_key_until_they_lapse() {
        let set = RevocationSet::new();
        assert!(!set.is_key_revoked("k1"));
        set.apply(&[entry(RevocationKind::Kid, "k1", 100)]);
        assert!(set.is_key_revoked("k1"));
        assert!(!set.is_key_revoked("k2"));
        // A key entry says nothing about claims.
        assert!(!set.is_revoked_parts("k1", Some("k1"), "k1", "k1", 50));
        set.prune(1001);
        assert!(!set.is_key_revoked("k1"));
        assert_eq!(RevocationKind::parse("kid"), Some(RevocationKind::Kid));
    }

    #[test]
    fn a_revoked_client_anywhere_in_the_actor_chain_revokes_the_token() {
        let set = RevocationSet::new();
        let claims = AccessClaims {
            iss: "i".into(),
            sub: "u".into(),
            aud: crate::Audience::One("a".into()),
            exp: 1000,
            iat: 100,
            nbf: 100,
            jti: "j".into(),
            client_id: "payments".into(),
            scope: String::new(),
            sid: Some("s".into()),
            cnf: None,
            act: Some(crate::Actor {
                sub: "payments".into(),
                act: Some(Box::new(crate::Actor {
                    sub: "orders".into(),
                    act: None,
                })),
            }),
        };
        set.apply(&[entry(RevocationKind::Client, "other", 100)]);
        assert!(!set.is_revoked(&claims));
        set.apply(&[entry(RevocationKind::Client, "orders", 100)]);
        assert!(set.is_revoked(&claims), "the earlier actor was disabled");
        let later = AccessClaims { iat: 101, ..claims };
        assert!(!set.is_revoked(&later), "tokens issued after the cut-off");
    }

    #[test]
    fn exact_entries_revoke_always_and_issuer_entries_only_earlier_tokens() {
        let set = RevocationSet::new();
        assert!(!set.is_revoked_parts("j1", Some("s1"), "u1", "c1", 100));
        set.apply(&[
            entry(RevocationKind::Jti, "j1", 100),
            entry(RevocationKind::Sid, "s2", 100),
            entry(RevocationKind::Sub, "u3", 100),
            entry(RevocationKind::Client, "c4", 100),
        ]);
        assert!(set.is_revoked_parts("j1", None, "u", "c", 500));
        assert!(set.is_revoked_parts("j", Some("s2"), "u", "c", 500));
        assert!(set.is_revoked_parts("j", None, "u3", "c", 100));
        assert!(!set.is_revoked_parts("j", None, "u3", "c", 101));
        assert!(set.is_revoked_parts("j", None, "u", "c4", 99));
        assert!(!set.is_revoked_parts("j", None, "u", "c4", 101));
        assert!(!set.is_revoked_parts("j", Some("s1"), "u1", "c1", 50));
        // A later revocation of the same user moves the line.
        set.apply(&[entry(RevocationKind::Sub, "u3", 200)]);
        assert!(set.is_revoked_parts("j", None, "u3", "c", 150));
        set.prune(100 + 901);
        assert!(!set.is_revoked_parts("j1", None, "u", "c", 500));
        assert_eq!(set.len(), 1, "only the later sub entry is still relevant");
    }

    #[test]
    fn the_client_generation_moves_only_with_client_entries() {
        let set = RevocationSet::new();
        let g = set.client_generation();
        set.apply(&[
            entry(RevocationKind::Jti, "j", 1),
            entry(RevocationKind::Sub, "u", 1),
        ]);
        assert_eq!(set.client_generation(), g);
        set.apply(&[entry(RevocationKind::Client, "c", 1)]);
        assert_eq!(set.client_generation(), g + 1);
        set.apply(&[]);
        assert_eq!(set.client_generation(), g + 1);
    }

    fn page(cursor: &str, has_more: bool) -> FeedPage {
        FeedPage {
            revocations: vec![],
            next_cursor: cursor.into(),
            has_more,
        }
    }

    #[test]
    fn pages_that_would_trap_the_poller_are_refused() {
        assert!(page("7", true).check("3").is_ok());
        assert!(
            page("7", false).check("7").is_ok(),
            "an idle feed keeps its cursor"
        );
        assert!(page("0", false).check("").is_ok());
        assert!(
            page("7", true)
                .check("7")
                .unwrap_err()
                .to_string()
                .contains("did not advance")
        );
        assert!(
            page("", false)
                .check("7")
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        assert!(
            page(&"9".repeat(MAX_CURSOR_LEN + 1), false)
                .check("")
                .is_err()
        );
        assert!(
            page("1&limit=1", false).check("").is_ok(),
            "sent form-encoded"
        );
        assert!(page("1 2", false).check("").is_err());
        assert!(page("1\n", false).check("").is_err());
    }
}
