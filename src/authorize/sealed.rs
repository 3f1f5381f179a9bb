//! What the authorization code flow hands to browsers, sealed under the
//! master key (AES-256-GCM, each kind under its own context so one can
//! never be passed off as another): authorization codes, the browser
//! sign-in cookie, and the login form's pending second step. Plus the
//! form's anti-CSRF token, an HMAC of the browser's login cookie.
//!
//! Sealed rather than stored: a code costs no database write until it is
//! redeemed, and its single use is enforced by the session it opens (the
//! session id is chosen with the code; the sessions table's primary key
//! lets it be opened once). Nothing in them is readable by the browser.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::keys::master::MasterKey;

/// How long a code may be redeemed (RFC 6749 §4.1.2 recommends ≤ 10 min;
/// the browser redeems it within a second).
pub const CODE_TTL: i64 = 60;

/// How long the second step of the login form (the TOTP code) may take.
pub const PENDING_TTL: i64 = 300;

/// Longest sealed value accepted (codes, cookies and form fields are far
/// shorter; a longer one is not ours and is not even decoded).
const MAX_SEALED: usize = 2048;

/// What an authorization code grants, bound to the client, the redirect
/// URI and the PKCE challenge of the request it answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeGrant {
    /// The id of the session the code opens (at most once).
    pub sid: Uuid,
    /// The client the code was issued to.
    pub client_id: String,
    /// The redirect URI it was sent to.
    pub redirect_uri: String,
    /// PKCE S256 challenge.
    pub challenge: String,
    /// The user.
    pub user: Uuid,
    /// The user's credential version at login.
    pub credential_version: i64,
    /// Granted scopes.
    pub scope: String,
    /// OpenID Connect nonce.
    pub nonce: Option<String>,
    /// When the user authenticated (Unix seconds).
    pub auth_time: i64,
    /// How: `pwd`, plus `otp`.
    pub amr: Vec<String>,
    /// Unix seconds.
    pub expires_at: i64,
}

/// The browser's sign-in at tessera (`__Host-tessera-sso`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignIn {
    /// The user.
    pub user: Uuid,
    /// The user's credential version at login (a change ends the sign-in).
    pub credential_version: i64,
    /// When the user authenticated.
    pub auth_time: i64,
    /// How.
    pub amr: Vec<String>,
    /// Unix seconds.
    pub expires_at: i64,
}

/// A login whose password was right, waiting for its TOTP code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The user.
    pub user: Uuid,
    /// The name as typed (the key the attempts are counted under).
    pub username: String,
    /// The user's credential version when the password was checked.
    pub credential_version: i64,
    /// Unix seconds.
    pub expires_at: i64,
}

/// Seals and opens the values above.
#[derive(Clone)]
pub struct Sealer {
    master: MasterKey,
    csrf: ring::hmac::Key,
}

const CODE: &[u8] = b"tessera authorization code v1";
const SIGN_IN: &[u8] = b"tessera browser sign-in v1";
const PENDING: &[u8] = b"tessera login second step v1";

impl Sealer {
    /// Sealing under `master`.
    pub fn new(master: &MasterKey) -> Sealer {
        Sealer {
            csrf: master.derive_hmac_key(b"tessera login form csrf v1"),
            master: master.clone(),
        }
    }

    fn seal<T: Serialize>(&self, value: &T, context: &[u8]) -> String {
        let json = serde_json::to_vec(value).expect("serializable");
        URL_SAFE_NO_PAD.encode(self.master.seal(&json, context))
    }

    fn open<T: DeserializeOwned>(&self, text: &str, context: &[u8]) -> Option<T> {
        if text.len() > MAX_SEALED {
            return None;
        }
        let sealed = URL_SAFE_NO_PAD.decode(text).ok()?;
        let json = self.master.open(&sealed, context).ok()?;
        serde_json::from_slice(&json).ok()
    }

    /// An authorization code.
    pub fn code(&self, grant: &CodeGrant) -> String {
        self.seal(grant, CODE)
    }

    /// The grant of an authorization code still valid at `now`.
    pub fn open_code(&self, code: &str, now: i64) -> Option<CodeGrant> {
        self.open::<CodeGrant>(code, CODE)
            .filter(|g| now < g.expires_at)
    }

    /// The sign-in cookie's value.
    pub fn sign_in(&self, s: &SignIn) -> String {
        self.seal(s, SIGN_IN)
    }

    /// A sign-in cookie not yet expired at `now` (the user's state is
    /// checked by the caller).
    pub fn open_sign_in(&self, cookie: &str, now: i64) -> Option<SignIn> {
        self.open::<SignIn>(cookie, SIGN_IN)
            .filter(|s| now < s.expires_at)
    }

    /// The second step's form field, bound to the browser's login cookie.
    pub fn pending(&self, p: &Pending, browser: &str) -> String {
        self.seal(p, &[PENDING, browser.as_bytes()].concat())
    }

    /// A second step of this browser still valid at `now`.
    pub fn open_pending(&self, field: &str, browser: &str, now: i64) -> Option<Pending> {
        self.open::<Pending>(field, &[PENDING, browser.as_bytes()].concat())
            .filter(|p| now < p.expires_at)
    }

    /// A fresh value for the browser's login cookie.
    pub fn new_browser() -> String {
        let mut bytes = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .expect("CSPRNG");
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The anti-CSRF token of the forms shown to the browser holding the
    /// login cookie `browser`: a page of another site can neither read it
    /// nor, without that cookie (SameSite=Lax, HttpOnly), make it valid.
    pub fn csrf_token(&self, browser: &str) -> String {
        URL_SAFE_NO_PAD.encode(ring::hmac::sign(&self.csrf, browser.as_bytes()).as_ref())
    }

    /// Whether `token` is this browser's anti-CSRF token (constant time).
    pub fn csrf_ok(&self, browser: &str, token: &str) -> bool {
        let Ok(tag) = URL_SAFE_NO_PAD.decode(token) else {
            return false;
        };
        ring::hmac::verify(&self.csrf, browser.as_bytes(), &tag).is_ok()
    }
}

/// RFC 7636 §4.6: whether `verifier` (43–128 unreserved characters)
/// hashes to `challenge`, compared in constant time.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !well_formed {
        return false;
    }
    let computed = URL_SAFE_NO_PAD.encode(crate::digest::sha256(verifier.as_bytes()));
    aws_lc_rs::constant_time::verify_slices_are_equal(computed.as_bytes(), challenge.as_bytes())
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::new(&MasterKey::from_bytes(&[7u8; 32]))
    }

    fn grant() -> CodeGrant {
        CodeGrant {
            sid: Uuid::new_v4(),
            client_id: "app".into(),
            redirect_uri: "https://app.example/cb".into(),
            challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
            user: Uuid::new_v4(),
            credential_version: 0,
            scope: "openid read".into(),
            nonce: Some("n".into()),
            auth_time: 100,
            amr: vec!["pwd".into()],
            expires_at: 160,
        }
    }

    #[test]
    fn codes_open_until_they_expire_and_only_as_codes() {
        let s = sealer();
        let g = grant();
        let code = s.code(&g);
        assert_eq!(s.open_code(&code, 159), Some(g));
        assert!(s.open_code(&code, 160).is_none());
        // Not a sign-in cookie, not under another master key, not tampered.
        assert!(s.open_sign_in(&code, 0).is_none());
        let other = Sealer::new(&MasterKey::from_bytes(&[8u8; 32]));
        assert!(other.open_code(&code, 100).is_none());
        let mut bytes = code.into_bytes();
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        assert!(
            s.open_code(&String::from_utf8(bytes).unwrap(), 100)
                .is_none()
        );
    }

    #[test]
    fn the_second_step_belongs_to_one_browser_and_csrf_tokens_too() {
        let s = sealer();
        let p = Pending {
            user: Uuid::new_v4(),
            username: "alice".into(),
            credential_version: 1,
            expires_at: 400,
        };
        let field = s.pending(&p, "browser-a");
        assert_eq!(s.open_pending(&field, "browser-a", 399), Some(p));
        assert!(s.open_pending(&field, "browser-b", 100).is_none());
        assert!(s.open_pending(&field, "browser-a", 400).is_none());
        let token = s.csrf_token("browser-a");
        assert!(s.csrf_ok("browser-a", &token));
        assert!(!s.csrf_ok("browser-b", &token));
        assert!(!s.csrf_ok("browser-a", "x"));
    }

    #[test]
    fn pkce_is_rfc_7636_s256() {
        // RFC 7636 Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj",
            challenge
        ));
        // The challenge itself (what `plain` would accept) is not a verifier of it.
        assert!(!pkce_matches(challenge, challenge));
        assert!(!pkce_matches("short", challenge));
    }
}
