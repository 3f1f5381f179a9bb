//! Refresh tokens: `sid.generation.base64url(secret ‖ tag)`.
//!
//! A session holds one random secret for its whole life and the number of
//! its current generation; only the secret's SHA-256 is stored. The tag is
//! HMAC-SHA256 (truncated to 128 bits) over the sid, the generation and the
//! secret, under a key derived from the master key. So a rotation is one
//! update of the session row (the generation moves on, nothing inserted),
//! and:
//! - a database dump holds no usable token (it has the secret's digest,
//!   not the secret, and no MAC key);
//! - the master key alone forges nothing (the secret is per session);
//! - knowing a `sid` (access tokens carry it) gives nothing, and in
//!   particular cannot make a fake "old" token that would revoke a
//!   victim's session as a replay;
//! - a stolen token works until its generation is rotated; presented after
//!   that, it is a replay and ends the session. Its holder cannot move the
//!   generation on by hand: that needs the MAC key.
//!
//! Tokens issued before this format (43 characters of base64url, stored as
//! SHA-256 rows) are still accepted once: their first rotation moves the
//! session to this format.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::keys::master::MasterKey;
use crate::store::PresentedRefresh;

const SECRET_LEN: usize = 16;
const TAG_LEN: usize = 16;
/// Longest generation tessera writes (`i64::MAX` has 19 digits).
const MAX_GENERATION_DIGITS: usize = 19;

/// A session's refresh secret (the part of every token the database does
/// not hold).
#[derive(Clone)]
pub struct SessionSecret(Zeroizing<[u8; SECRET_LEN]>);

impl SessionSecret {
    /// A new secret from the CSPRNG.
    pub fn generate() -> SessionSecret {
        let mut bytes = Zeroizing::new([0u8; SECRET_LEN]);
        SystemRandom::new().fill(bytes.as_mut()).expect("CSPRNG");
        SessionSecret(bytes)
    }

    /// What the session row stores.
    pub fn digest(&self) -> [u8; 32] {
        crate::digest::sha256(self.0.as_ref())
    }
}

impl std::fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionSecret(…)")
    }
}

/// A presented token that passed its MAC check.
#[derive(Debug)]
pub enum Presented {
    /// A token of this format.
    Current {
        /// The session.
        sid: Uuid,
        /// The generation it claims.
        generation: i64,
        /// Its secret.
        secret: SessionSecret,
        /// Tag of the DPoP key the token is bound to (`None`: unbound).
        binding: Option<[u8; TAG_LEN]>,
    },
    /// A token issued before this format: its SHA-256.
    Legacy([u8; 32]),
}

impl Presented {
    /// What the store looks up.
    pub fn to_store(&self) -> PresentedRefresh {
        match self {
            Presented::Current {
                sid,
                generation,
                secret,
                ..
            } => PresentedRefresh::Current {
                sid: *sid,
                generation: *generation,
                secret_digest: secret.digest(),
            },
            Presented::Legacy(hash) => PresentedRefresh::Legacy(*hash),
        }
    }
}

/// Issues and checks refresh tokens under a key derived from the master key.
#[derive(Clone)]
pub struct RefreshTokens {
    key: ring::hmac::Key,
}

impl RefreshTokens {
    /// Tokens MACed under `master`'s refresh-token key.
    pub fn new(master: &MasterKey) -> RefreshTokens {
        RefreshTokens {
            key: master.derive_hmac_key(b"tessera/refresh-token/v2"),
        }
    }

    /// The token's tag; `extra` is empty for unbound tokens (their format
    /// predates DPoP), and marks a bound token or names its key.
    fn tag(&self, sid: Uuid, generation: i64, secret: &[u8], extra: &[&[u8]]) -> [u8; TAG_LEN] {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        ctx.update(sid.as_bytes());
        ctx.update(&generation.to_be_bytes());
        ctx.update(secret);
        for part in extra {
            ctx.update(part);
        }
        let full = ctx.sign();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full.as_ref()[..TAG_LEN]);
        tag
    }

    /// The second tag of a token bound to the DPoP key `jkt`.
    fn binding_tag(&self, sid: Uuid, generation: i64, secret: &[u8], jkt: &str) -> [u8; TAG_LEN] {
        self.tag(sid, generation, secret, &[b"\0dpop-jkt\0", jkt.as_bytes()])
    }

    /// Whether `presented` may be used with a proof by `jkt` (`None`: no
    /// proof): an unbound token with or without one, a bound token only
    /// with its own key. Checked before the database sees the token, so a
    /// copied bound token without its key consumes and revokes nothing.
    pub fn binding_allows(&self, presented: &Presented, jkt: Option<&str>) -> bool {
        match presented {
            Presented::Current {
                binding: Some(expected),
                sid,
                generation,
                secret,
            } => jkt.is_some_and(|jkt| {
                let tag = self.binding_tag(*sid, *generation, secret.0.as_ref(), jkt);
                aws_lc_rs::constant_time::verify_slices_are_equal(&tag, expected).is_ok()
            }),
            _ => true,
        }
    }

    /// Whether `presented` is bound to a DPoP key.
    pub fn is_bound(presented: &Presented) -> bool {
        matches!(
            presented,
            Presented::Current {
                binding: Some(_),
                ..
            }
        )
    }

    /// The token for `generation` of session `sid`, bound to the DPoP key
    /// `jkt` if given: `<sid>.<generation>.<secret and tag>[.<key tag>]`.
    pub fn issue(
        &self,
        sid: Uuid,
        generation: i64,
        secret: &SessionSecret,
        jkt: Option<&str>,
    ) -> Zeroizing<String> {
        let marker: &[&[u8]] = if jkt.is_some() { &[BOUND] } else { &[] };
        let mut raw = Zeroizing::new([0u8; SECRET_LEN + TAG_LEN]);
        raw[..SECRET_LEN].copy_from_slice(secret.0.as_ref());
        raw[SECRET_LEN..].copy_from_slice(&self.tag(sid, generation, secret.0.as_ref(), marker));
        let mut token = Zeroizing::new(format!(
            "{}.{generation}.{}",
            sid.as_hyphenated(),
            URL_SAFE_NO_PAD.encode(raw.as_ref())
        ));
        if let Some(jkt) = jkt {
            let binding = self.binding_tag(sid, generation, secret.0.as_ref(), jkt);
            token.push('.');
            token.push_str(&URL_SAFE_NO_PAD.encode(binding));
        }
        token
    }

    /// The token's parts if it is one of ours (MAC checked in constant
    /// time), `None` otherwise: a forged or mangled token never reaches
    /// the database.
    pub fn parse(&self, token: &str) -> Option<Presented> {
        if !token.contains('.') {
            return legacy_hash(token).map(Presented::Legacy);
        }
        let mut parts = token.splitn(3, '.');
        let (sid, generation, rest) = (parts.next()?, parts.next()?, parts.next()?);
        // One spelling only (lowercase, hyphenated): the one we issue.
        let sid = Uuid::try_parse(sid)
            .ok()
            .filter(|u| u.hyphenated().encode_lower(&mut Uuid::encode_buffer()) == sid)?;
        if generation.is_empty()
            || generation.len() > MAX_GENERATION_DIGITS
            || !generation.bytes().all(|b| b.is_ascii_digit())
            || (generation.len() > 1 && generation.starts_with('0'))
        {
            return None;
        }
        let generation: i64 = generation.parse().ok()?;
        let (rest, binding) = match rest.split_once('.') {
            None => (rest, None),
            Some((rest, binding)) if binding.len() == 22 => {
                let bytes = URL_SAFE_NO_PAD.decode(binding).ok()?;
                (
                    rest,
                    Some(<[u8; TAG_LEN]>::try_from(bytes.as_slice()).ok()?),
                )
            }
            Some(_) => return None,
        };
        if rest.len() != 43 {
            return None;
        }
        let raw = Zeroizing::new(URL_SAFE_NO_PAD.decode(rest).ok()?);
        if raw.len() != SECRET_LEN + TAG_LEN {
            return None;
        }
        // The marker makes cutting off a binding break the first tag.
        let marker: &[&[u8]] = if binding.is_some() { &[BOUND] } else { &[] };
        let expected = self.tag(sid, generation, &raw[..SECRET_LEN], marker);
        if aws_lc_rs::constant_time::verify_slices_are_equal(&expected, &raw[SECRET_LEN..]).is_err()
        {
            return None;
        }
        let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
        secret.copy_from_slice(&raw[..SECRET_LEN]);
        Some(Presented::Current {
            sid,
            generation,
            secret: SessionSecret(secret),
            binding,
        })
    }
}

/// Marks a bound token's first tag.
const BOUND: &[u8] = b"\0dpop-bound";

/// The stored hash of a token of the earlier format (256 random bits,
/// base64url), or `None` if it cannot be one.
fn legacy_hash(token: &str) -> Option<[u8; 32]> {
    if token.len() != 43 {
        return None;
    }
    let bytes = Zeroizing::new(URL_SAFE_NO_PAD.decode(token).ok()?);
    (bytes.len() == 32).then(|| crate::digest::sha256(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(n: u8) -> RefreshTokens {
        RefreshTokens::new(&MasterKey::from_bytes(&[n; 32]))
    }

    #[test]
    fn tokens_round_trip_and_name_their_session_and_generation() {
        let t = tokens(1);
        let sid = Uuid::new_v4();
        let secret = SessionSecret::generate();
        let token = t.issue(sid, 7, &secret, None);
        assert!(token.starts_with(&format!("{sid}.7.")));
        let Some(Presented::Current {
            sid: s,
            generation,
            secret: back,
            binding: None,
        }) = t.parse(&token)
        else {
            panic!("our own token")
        };
        assert_eq!((s, generation), (sid, 7));
        assert_eq!(back.digest(), secret.digest());
        assert_ne!(secret.digest(), SessionSecret::generate().digest());
    }

    #[test]
    fn forged_and_mangled_tokens_are_refused() {
        let t = tokens(1);
        let sid = Uuid::new_v4();
        let secret = SessionSecret::generate();
        let token = t.issue(sid, 7, &secret, None).to_string();
        // Another master key.
        assert!(tokens(2).parse(&token).is_none());
        // The generation moved by hand (a thief wanting to pass as current).
        assert!(t.parse(&token.replacen(".7.", ".8.", 1)).is_none());
        // Another session's id with this secret and tag.
        let other = token.replacen(&sid.to_string(), &Uuid::new_v4().to_string(), 1);
        assert!(t.parse(&other).is_none());
        // Every single-character change of the secret or tag.
        let tail = token.rfind('.').unwrap() + 1;
        for i in tail..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            assert!(t.parse(std::str::from_utf8(&bytes).unwrap()).is_none());
        }
        for bad in [
            "",
            ".",
            "..",
            &format!("{sid}.."),
            &format!("{sid}.-1.{}", &token[tail..]),
            &format!("{sid}.07.{}", &token[tail..]),
            &format!("{sid}.+7.{}", &token[tail..]),
            &format!("{sid}.99999999999999999999.{}", &token[tail..]),
            &format!("{sid}.7.{}=", &token[tail..]),
            &format!("{sid}.7.{}.x", &token[tail..]),
            &format!("{}.7.{}", sid.simple(), &token[tail..]),
        ] {
            assert!(t.parse(bad).is_none(), "{bad:?}");
        }
        // Hyphenated and simple sids are both UUIDs, but only ours is MACed.
        assert!(t.parse(&token.to_uppercase()).is_none());
    }

    #[test]
    fn a_bound_token_needs_its_key_and_keeps_its_binding() {
        let t = tokens(1);
        let sid = Uuid::new_v4();
        let secret = SessionSecret::generate();
        let bound = t.issue(sid, 3, &secret, Some("jkt-A")).to_string();
        let presented = t.parse(&bound).expect("our own token");
        assert!(RefreshTokens::is_bound(&presented));
        assert!(t.binding_allows(&presented, Some("jkt-A")));
        assert!(!t.binding_allows(&presented, Some("jkt-B")));
        assert!(!t.binding_allows(&presented, None));
        // Same secret and digest as unbound: the store sees no difference.
        assert_eq!(
            presented.to_store(),
            t.parse(&t.issue(sid, 3, &secret, None)).unwrap().to_store()
        );
        // The binding cannot be cut off, swapped or added.
        let (unbound, _) = bound.rsplit_once('.').unwrap();
        assert!(t.parse(unbound).is_none());
        let other = t.issue(sid, 3, &secret, Some("jkt-B")).to_string();
        let swapped = format!("{unbound}.{}", other.rsplit_once('.').unwrap().1);
        assert!(!t.binding_allows(&t.parse(&swapped).unwrap(), Some("jkt-A")));
        let plain = t.issue(sid, 3, &secret, None).to_string();
        assert!(
            t.parse(&format!("{plain}.{}", other.rsplit_once('.').unwrap().1))
                .is_none()
        );
        assert!(t.parse(&format!("{bound}x")).is_none());
        // An unbound token works with or without a proof.
        let plain = t.parse(&plain).unwrap();
        assert!(!RefreshTokens::is_bound(&plain));
        assert!(t.binding_allows(&plain, None) && t.binding_allows(&plain, Some("jkt-A")));
    }

    #[test]
    fn tokens_of_the_earlier_format_are_recognised_by_their_hash() {
        let raw = [9u8; 32];
        let token = URL_SAFE_NO_PAD.encode(raw);
        let Some(Presented::Legacy(hash)) = tokens(1).parse(&token) else {
            panic!("a 43-character token is the earlier format")
        };
        assert_eq!(hash, crate::digest::sha256(&raw));
        assert!(tokens(1).parse(&format!("{}=", &token[..42])).is_none());
        assert!(tokens(1).parse("short").is_none());
        assert!(tokens(1).parse(&"!".repeat(43)).is_none());
    }
}
