//! Verifying an ID token or JWT from a trusted upstream identity provider
//! before tessera opens a session for the user it names (RFC 8693 token
//! exchange).
//!
//! The checks, in order: the token's shape; its header (only asymmetric
//! algorithms, no `crit`, not a DPoP proof or logout token); its key, taken
//! only from the issuer's registered JWKS URL, which must allow the header's
//! alg; the signature; then the claims (`iss`, `aud`, `exp`, `nbf`, `iat`,
//! `sub`) against tessera's own clock. Key-carrying headers (`jku`, `x5u`,
//! `jwk`, `x5c`) are ignored: a token cannot choose the key that verifies it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::jwks::{JwksCache, JwksError};
use crate::audit::clip;

/// Longest token accepted, in bytes: ID tokens are far smaller, and a bound
/// keeps parsing cheap.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Longest `sub` accepted, in bytes (it becomes part of a stored identity).
pub const MAX_SUBJECT_BYTES: usize = 255;

/// Clock skew tolerated between tessera and the identity provider.
const DEFAULT_LEEWAY: i64 = 30;

/// The algorithms an upstream token may use: asymmetric only.
const ACCEPTED_ALGS: [(&str, Algorithm); 9] = [
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

/// `typ` values of other JWTs that must not pass for an identity token.
// Access tokens too (RFC 9068): one the provider issued to another app may
// carry tessera's audience, but it does not say the user signed in here.
const REFUSED_TYPES: [&str; 3] = ["dpop+jwt", "logout+jwt", "at+jwt"];

/// Longest piece of an untrusted header echoed in an error.
const MAX_ECHO: usize = 40;

/// A decoded JWT header or payload.
type Object = Map<String, Value>;

/// Why an upstream token was refused.
///
/// Messages name what was wrong; they never echo the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// Not a compact signed JWT: size, parts, base64url or JSON.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// A JWE (five parts): tessera verifies signed tokens only.
    #[error("encrypted tokens (JWE) are not accepted; send the signed ID token")]
    Encrypted,
    /// The header's `alg` is missing, refused (none, HMAC) or unsupported.
    #[error("token alg refused: {0}")]
    Algorithm(String),
    /// The header has `crit`: tessera understands no critical extension.
    #[error("token header has crit; no critical header extension is understood")]
    Critical,
    /// The header's `typ` marks another kind of JWT (DPoP proof, logout token).
    #[error("token typ {0:?} is not an identity token")]
    TokenType(String),
    /// The header's alg is not one the selected JWKS key allows.
    #[error("token alg is not one the issuer's key allows")]
    AlgorithmMismatch,
    /// No key: JWKS unavailable, unknown kid, kid needed, bad JWKS URL.
    #[error("issuer keys: {0}")]
    Jwks(#[from] JwksError),
    /// The signature does not verify with the issuer's key.
    #[error("token signature does not verify with the issuer's key")]
    Signature,
    /// `iss` is not exactly the trusted issuer.
    #[error("token iss is not the expected issuer")]
    Issuer,
    /// `aud` does not contain tessera's audience for this issuer.
    #[error("token aud does not contain the expected audience")]
    Audience,
    /// `azp` names another client than the registered audience: a token
    /// the provider issued to another app.
    #[error("token azp is not the expected audience: it was issued to another client")]
    AuthorizedParty,
    /// `exp` has passed (beyond the leeway).
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    #[error("token was issued in the future (iat)")]
    IssuedInFuture,
    /// A required claim is absent.
    #[error("token has no {0} claim")]
    MissingClaim(&'static str),
    /// `sub` is not a usable subject.
    #[error("token sub refused: {0}")]
    Subject(String),
}

impl UpstreamError {
    /// Whether the issuer's keys could not be had at all (JWKS down, never
    /// fetched or too stale): the caller answers 503 `temporarily_unavailable`
    /// rather than `invalid_grant`, since the token itself may be fine.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, UpstreamError::Jwks(JwksError::Unavailable(_)))
    }
}

/// What the trusted-issuer configuration expects of a token.
#[derive(Clone, Copy, Debug)]
pub struct Expectations<'a> {
    /// The issuer, compared to `iss` exactly.
    pub issuer: &'a str,
    /// The issuer's registered JWKS URL: the only source of its keys.
    pub jwks_uri: &'a str,
    /// tessera's client id at that issuer, which `aud` must contain.
    pub audience: &'a str,
    /// The issuer's version (its `updated_at`): keys fetched for an older
    /// one are fetched again (a provider disabled after a compromise and
    /// enabled again is trusted only with its current keys).
    pub version: i64,
}

/// Who a verified upstream token names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamIdentity {
    /// `iss`, equal to the expected issuer.
    pub issuer: String,
    /// `sub`: the user's stable id at the issuer.
    pub subject: String,
    /// `exp`, Unix seconds.
    pub expires_at: i64,
    /// `email`, if a string (not necessarily verified by the issuer).
    pub email: Option<String>,
    /// `preferred_username`, if a string (display only; not unique).
    pub preferred_username: Option<String>,
    /// Until when the token is accepted: `exp` plus the leeway.
    pub accepted_until: i64,
    /// SHA-256 of the signed part (`header.payload`): the token's identity
    /// for replay checks, the same whatever its signature's encoding (an
    /// ECDSA signature `(r, s)` has a twin `(r, n - s)` that verifies too).
    pub token_digest: [u8; 32],
}

/// Verifies upstream tokens with keys from a [`JwksCache`].
#[derive(Debug)]
pub struct UpstreamVerifier {
    jwks: JwksCache,
    leeway: i64,
}

/// The issuer a token claims, for choosing which trusted issuer to verify it
/// against.
///
/// **Nothing is verified**: the token's shape is checked (at most 16 KiB,
/// three base64url parts, JSON header and payload, a string `iss`), not its
/// signature. Use the result only to look up the issuer's configuration, then
/// [`UpstreamVerifier::verify`] the token against it.
pub fn peek_issuer(token: &str) -> Result<String, UpstreamError> {
    let (_, payload) = parse_structure(token)?;
    match payload.get("iss") {
        // Registered issuers are URLs of at most 512 characters; anything
        // else is refused before it reaches a query.
        Some(Value::String(iss)) if iss.len() > 512 || iss.chars().any(char::is_control) => {
            Err(UpstreamError::Malformed("iss is not an issuer URL".into()))
        }
        Some(Value::String(iss)) => Ok(iss.clone()),
        Some(_) => Err(UpstreamError::Malformed("iss is not a string".into())),
        None => Err(UpstreamError::MissingClaim("iss")),
    }
}

impl UpstreamVerifier {
    /// A verifier taking keys from `jwks`, with 30 s of clock-skew leeway.
    pub fn new(jwks: JwksCache) -> Self {
        UpstreamVerifier {
            jwks,
            leeway: DEFAULT_LEEWAY,
        }
    }

    /// The same verifier with `seconds` of clock-skew leeway on `exp`, `nbf`
    /// and `iat`.
    pub fn with_leeway(mut self, seconds: i64) -> Self {
        self.leeway = seconds.max(0);
        self
    }

    /// The JWKS cache this verifier takes keys from.
    pub fn jwks(&self) -> &JwksCache {
        &self.jwks
    }

    /// Verifies `token` against `expect` at Unix time `now` (tessera's clock,
    /// not the system's), and returns who it names.
    ///
    /// The key comes only from `expect.jwks_uri`: `jku`, `x5u`, `jwk` and
    /// `x5c` headers are never fetched or used.
    pub async fn verify(
        &self,
        token: &str,
        expect: &Expectations<'_>,
        now: i64,
    ) -> Result<UpstreamIdentity, UpstreamError> {
        let (header, _) = parse_structure(token)?;
        let (alg, kid) = check_header(&header)?;
        let key = self
            .jwks
            .key(expect.jwks_uri, kid, alg, expect.version)
            .await?;
        if !key.algs.contains(&alg) {
            return Err(UpstreamError::AlgorithmMismatch);
        }
        let claims = verify_signature(token, &key.key, alg)?;
        check_claims(&claims, expect, now, self.leeway, signed_part_digest(token))
    }
}

/// Size, three base64url parts, JSON-object header and payload.
fn parse_structure(token: &str) -> Result<(Object, Object), UpstreamError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(UpstreamError::Malformed(format!(
            "{} bytes; at most {MAX_TOKEN_BYTES} accepted",
            token.len()
        )));
    }
    let parts: Vec<&str> = token.split('.').collect();
    match parts.len() {
        3 => {}
        5 => return Err(UpstreamError::Encrypted),
        n => {
            return Err(UpstreamError::Malformed(format!(
                "{n} dot-separated parts; a signed JWT has 3"
            )));
        }
    }
    let header = json_object(parts[0], "header")?;
    let payload = json_object(parts[1], "payload")?;
    URL_SAFE_NO_PAD
        .decode(parts[2])
        .map_err(|_| UpstreamError::Malformed("signature is not base64url".into()))?;
    Ok((header, payload))
}

fn json_object(part: &str, name: &str) -> Result<Map<String, Value>, UpstreamError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| UpstreamError::Malformed(format!("{name} is not base64url")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(UpstreamError::Malformed(format!(
            "{name} is not a JSON object"
        ))),
    }
}

/// The header's alg (asymmetric only) and kid; `crit` and non-identity
/// `typ`s refused. Key-carrying headers are deliberately not read.
fn check_header(header: &Map<String, Value>) -> Result<(Algorithm, Option<&str>), UpstreamError> {
    let alg = match header.get("alg") {
        Some(Value::String(name)) => accepted_alg(name)?,
        Some(_) => return Err(UpstreamError::Algorithm("alg is not a string".into())),
        None => return Err(UpstreamError::Algorithm("no alg in the header".into())),
    };
    if header.contains_key("crit") {
        return Err(UpstreamError::Critical);
    }
    check_typ(header.get("typ"))?;
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.as_str()),
        Some(_) => return Err(UpstreamError::Malformed("kid is not a string".into())),
    };
    Ok((alg, kid))
}

fn accepted_alg(name: &str) -> Result<Algorithm, UpstreamError> {
    if name.eq_ignore_ascii_case("none") || name.to_ascii_uppercase().starts_with("HS") {
        return Err(UpstreamError::Algorithm(format!(
            "{}: alg none/HMAC is never accepted",
            clip(name, MAX_ECHO)
        )));
    }
    ACCEPTED_ALGS
        .iter()
        .find(|(accepted, _)| *accepted == name)
        .map(|(_, alg)| *alg)
        .ok_or_else(|| {
            UpstreamError::Algorithm(format!(
                "{} is not supported (RS256..RS512, PS256..PS512, ES256, ES384, EdDSA are)",
                clip(name, MAX_ECHO)
            ))
        })
}

/// Refuses DPoP proofs and logout tokens, whatever else `typ` says.
fn check_typ(typ: Option<&Value>) -> Result<(), UpstreamError> {
    let typ = match typ {
        None => return Ok(()),
        Some(Value::String(typ)) => typ,
        Some(_) => return Err(UpstreamError::Malformed("typ is not a string".into())),
    };
    let lower = typ.to_ascii_lowercase();
    let media = lower.strip_prefix("application/").unwrap_or(&lower);
    if REFUSED_TYPES.contains(&media) {
        return Err(UpstreamError::TokenType(clip(typ, MAX_ECHO)));
    }
    Ok(())
}

/// The signature, with exactly `alg` allowed; jsonwebtoken's own claim
/// checks are off because they read the system clock (checked below
/// against tessera's).
fn verify_signature(
    token: &str,
    key: &DecodingKey,
    alg: Algorithm,
) -> Result<Map<String, Value>, UpstreamError> {
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey => UpstreamError::Signature,
            // InvalidKeyFormat: jsonwebtoken's own key-family-versus-alg check.
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat => {
                UpstreamError::AlgorithmMismatch
            }
            // The decoder's own message may quote header values.
            _ => UpstreamError::Malformed("the header or claims do not decode".into()),
        })
}

/// SHA-256 of `header.payload`, the part of a JWS its signature covers.
fn signed_part_digest(token: &str) -> [u8; 32] {
    let signed = token.rsplit_once('.').map_or(token, |(signed, _)| signed);
    crate::digest::sha256(signed.as_bytes())
}

/// `iss`, `aud`, `exp`, `nbf`, `iat`, `sub`, in that order, at `now`.
fn check_claims(
    claims: &Map<String, Value>,
    expect: &Expectations<'_>,
    now: i64,
    leeway: i64,
    token_digest: [u8; 32],
) -> Result<UpstreamIdentity, UpstreamError> {
    match claims.get("iss") {
        Some(Value::String(iss)) if iss == expect.issuer => {}
        Some(_) => return Err(UpstreamError::Issuer),
        None => return Err(UpstreamError::MissingClaim("iss")),
    }
    check_audience(claims.get("aud"), expect.audience)?;
    // OIDC Core §2: `azp` is the client the token was issued to.
    match claims.get("azp") {
        None => {}
        Some(Value::String(azp)) if azp == expect.audience => {}
        Some(_) => return Err(UpstreamError::AuthorizedParty),
    }
    let expires_at = numeric_date(claims, "exp")?.ok_or(UpstreamError::MissingClaim("exp"))?;
    if expires_at <= now.saturating_sub(leeway) {
        return Err(UpstreamError::Expired);
    }
    if numeric_date(claims, "nbf")?.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
        return Err(UpstreamError::NotYetValid);
    }
    let issued_at = numeric_date(claims, "iat")?.ok_or(UpstreamError::MissingClaim("iat"))?;
    if issued_at > now.saturating_add(leeway) {
        return Err(UpstreamError::IssuedInFuture);
    }
    Ok(UpstreamIdentity {
        issuer: expect.issuer.to_owned(),
        subject: check_subject(claims.get("sub"))?,
        expires_at,
        email: string_claim(claims, "email"),
        preferred_username: string_claim(claims, "preferred_username"),
        accepted_until: expires_at.saturating_add(leeway),
        token_digest,
    })
}

/// `aud`, a string or an array of strings, must contain `audience`.
fn check_audience(aud: Option<&Value>, audience: &str) -> Result<(), UpstreamError> {
    let found = match aud {
        None => return Err(UpstreamError::MissingClaim("aud")),
        Some(Value::String(aud)) => aud == audience,
        Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(audience)),
        Some(_) => false,
    };
    if found {
        Ok(())
    } else {
        Err(UpstreamError::Audience)
    }
}

/// A NumericDate claim (seconds; a fraction is dropped).
fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<i64>, UpstreamError> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let seconds = value.as_i64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && f.abs() < 1e15)
            .map(|f| f.floor() as i64)
    });
    seconds
        .map(Some)
        .ok_or_else(|| UpstreamError::Malformed(format!("{name} is not a NumericDate")))
}

/// A non-empty string of at most 255 bytes.
fn check_subject(sub: Option<&Value>) -> Result<String, UpstreamError> {
    match sub {
        None => Err(UpstreamError::MissingClaim("sub")),
        Some(Value::String(sub)) => match subject_fault(sub) {
            Some(fault) => Err(UpstreamError::Subject(fault)),
            None => Ok(sub.clone()),
        },
        Some(_) => Err(UpstreamError::Subject("not a string".into())),
    }
}

/// What is wrong with an upstream `sub` (from a token, or from an operator
/// linking one): it must be 1–[`MAX_SUBJECT_BYTES`] bytes without control
/// characters.
pub fn subject_fault(sub: &str) -> Option<String> {
    if sub.is_empty() {
        Some("empty".into())
    } else if sub.len() > MAX_SUBJECT_BYTES {
        Some(format!("{} bytes; at most {MAX_SUBJECT_BYTES}", sub.len()))
    } else if sub.chars().any(char::is_control) {
        Some("control characters".into())
    } else {
        None
    }
}

fn string_claim(claims: &Map<String, Value>, name: &str) -> Option<String> {
    claims.get(name).and_then(Value::as_str).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::{Value, json};

    use super::super::jwks::test_support::{
        JwksServer, TestKey, closed_url, ec_key, ed_key, jwks, rsa_key, test_limits,
    };
    use super::super::jwks::{JwksCache, JwksError};
    use super::*;

    const ISSUER: &str = "https://idp.example.com/realms/main";
    const AUDIENCE: &str = "tessera";

    /// A JWKS server with an RSA, an EC and an Ed25519 key, and a verifier.
    struct Fixture {
        rsa: TestKey,
        ec: TestKey,
        ed: TestKey,
        server: JwksServer,
        verifier: UpstreamVerifier,
        now: i64,
    }

    impl Fixture {
        async fn new() -> Fixture {
            let (rsa, ec, ed) = (rsa_key("rsa-1", 2048), ec_key("ec-1"), ed_key("ed-1"));
            let server =
                JwksServer::start(jwks(&[rsa.jwk.clone(), ec.jwk.clone(), ed.jwk.clone()])).await;
            Fixture {
                rsa,
                ec,
                ed,
                server,
                verifier: UpstreamVerifier::new(JwksCache::new(test_limits())),
                now: 1_800_000_000,
            }
        }

        fn expect(&self) -> Expectations<'_> {
            Expectations {
                issuer: ISSUER,
                jwks_uri: &self.server.url,
                audience: AUDIENCE,
                version: 0,
            }
        }

        fn claims(&self) -> Value {
            json!({
                "iss": ISSUER, "aud": AUDIENCE, "sub": "user-1",
                "iat": self.now - 10, "exp": self.now + 300,
                "email": "ada@example.com", "preferred_username": "ada", "jti": "j-1",
            })
        }

        async fn verify(&self, token: &str) -> Result<UpstreamIdentity, UpstreamError> {
            self.verifier.verify(token, &self.expect(), self.now).await
        }

        /// The default claims with `change` applied, signed RS256 as rsa-1.
        async fn verify_claims(
            &self,
            change: impl FnOnce(&mut Value),
        ) -> Result<UpstreamIdentity, UpstreamError> {
            let mut claims = self.claims();
            change(&mut claims);
            self.verify(&sign(
                &header(Algorithm::RS256, "rsa-1"),
                &claims,
                &self.rsa.encoding,
            ))
            .await
        }
    }

    fn header(alg: Algorithm, kid: &str) -> Header {
        Header {
            kid: Some(kid.into()),
            ..Header::new(alg)
        }
    }

    fn sign(header: &Header, claims: &Value, key: &EncodingKey) -> String {
        jsonwebtoken::encode(header, claims, key).unwrap()
    }

    /// A token with any header JSON and no meaningful signature.
    fn raw_token(header: &Value, claims: &Value, signature: &str) -> String {
        format!(
            "{}.{}.{signature}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    #[tokio::test]
    async fn valid_rs256_token_passes() {
        let f = Fixture::new().await;
        let token = sign(
            &header(Algorithm::RS256, "rsa-1"),
            &f.claims(),
            &f.rsa.encoding,
        );
        let identity = f.verify(&token).await.unwrap();
        let (signed, _) = token.rsplit_once('.').unwrap();
        assert_eq!(
            identity,
            UpstreamIdentity {
                issuer: ISSUER.into(),
                subject: "user-1".into(),
                expires_at: f.now + 300,
                email: Some("ada@example.com".into()),
                preferred_username: Some("ada".into()),
                accepted_until: f.now + 300 + DEFAULT_LEEWAY,
                token_digest: crate::digest::sha256(signed.as_bytes()),
            }
        );
    }

    /// The replay digest covers what the signature signs, not the
    /// signature: ECDSA's twin signature `(r, n - s)` verifies too, and
    /// must not make the same token new.
    #[tokio::test]
    async fn the_replay_digest_ignores_the_signature() {
        // The order of P-256's group.
        const N: [u8; 32] = [
            0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2,
            0xfc, 0x63, 0x25, 0x51,
        ];
        let f = Fixture::new().await;
        let token = sign(
            &header(Algorithm::ES256, "ec-1"),
            &f.claims(),
            &f.ec.encoding,
        );
        let (signed, sig) = token.rsplit_once('.').unwrap();
        let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        // s := n - s, big-endian, with borrow.
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let d = i16::from(N[i]) - i16::from(sig[32 + i]) - borrow;
            borrow = i16::from(d < 0);
            sig[32 + i] = d.rem_euclid(256) as u8;
        }
        let twin = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&sig));
        assert_ne!(twin, token);
        let (first, second) = (f.verify(&token).await, f.verify(&twin).await);
        let first = first.unwrap();
        match second {
            // Whether a verifier accepts the high-s twin is its choice;
            // if it does, the twin is the same token.
            Ok(second) => assert_eq!(second.token_digest, first.token_digest),
            Err(e) => assert!(matches!(e, UpstreamError::Signature), "{e:?}"),
        }
    }

    #[tokio::test]
    async fn valid_es256_and_eddsa_tokens_pass() {
        let f = Fixture::new().await;
        let token = sign(
            &header(Algorithm::ES256, "ec-1"),
            &f.claims(),
            &f.ec.encoding,
        );
        assert_eq!(f.verify(&token).await.unwrap().subject, "user-1");
        let token = sign(
            &header(Algorithm::EdDSA, "ed-1"),
            &f.claims(),
            &f.ed.encoding,
        );
        assert_eq!(f.verify(&token).await.unwrap().subject, "user-1");
    }

    #[tokio::test]
    async fn other_rsa_algorithms_pass_with_an_unpinned_key() {
        let f = Fixture::new().await;
        for alg in [
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS512,
        ] {
            let token = sign(&header(alg, "rsa-1"), &f.claims(), &f.rsa.encoding);
            assert!(f.verify(&token).await.is_ok(), "{alg:?}");
        }
    }

    #[tokio::test]
    async fn token_without_kid_uses_the_only_fitting_key() {
        let f = Fixture::new().await;
        let token = sign(&Header::new(Algorithm::ES256), &f.claims(), &f.ec.encoding);
        assert!(f.verify(&token).await.is_ok());
    }

    #[tokio::test]
    async fn another_key_with_the_same_kid_fails_the_signature() {
        let f = Fixture::new().await;
        let impostor = rsa_key("rsa-1", 2048);
        let token = sign(
            &header(Algorithm::RS256, "rsa-1"),
            &f.claims(),
            &impostor.encoding,
        );
        assert_eq!(f.verify(&token).await, Err(UpstreamError::Signature));
    }

    #[tokio::test]
    async fn wrong_issuer_is_refused() {
        let f = Fixture::new().await;
        let result = f
            .verify_claims(|c| c["iss"] = json!("https://evil.example.com"))
            .await;
        assert_eq!(result, Err(UpstreamError::Issuer));
        let result = f
            .verify_claims(|c| c["iss"] = json!(format!("{ISSUER}/")))
            .await;
        assert_eq!(result, Err(UpstreamError::Issuer), "compared exactly");
    }

    #[tokio::test]
    async fn wrong_audience_is_refused() {
        let f = Fixture::new().await;
        let result = f.verify_claims(|c| c["aud"] = json!("someone-else")).await;
        assert_eq!(result, Err(UpstreamError::Audience));
        let result = f.verify_claims(|c| c["aud"] = json!(["a", "b"])).await;
        assert_eq!(result, Err(UpstreamError::Audience));
        let result = f
            .verify_claims(|c| _ = c.as_object_mut().unwrap().remove("aud"))
            .await;
        assert_eq!(result, Err(UpstreamError::MissingClaim("aud")));
    }

    #[tokio::test]
    async fn audience_array_containing_ours_passes() {
        let f = Fixture::new().await;
        assert!(
            f.verify_claims(|c| c["aud"] = json!(["other", AUDIENCE]))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn expired_token_is_refused() {
        let f = Fixture::new().await;
        let result = f.verify_claims(|c| c["exp"] = json!(f.now - 31)).await;
        assert_eq!(result, Err(UpstreamError::Expired));
        assert!(
            f.verify_claims(|c| c["exp"] = json!(f.now - 29))
                .await
                .is_ok(),
            "within leeway"
        );
        let result = f
            .verify_claims(|c| _ = c.as_object_mut().unwrap().remove("exp"))
            .await;
        assert_eq!(result, Err(UpstreamError::MissingClaim("exp")));
    }

    #[tokio::test]
    async fn future_nbf_is_refused() {
        let f = Fixture::new().await;
        let result = f.verify_claims(|c| c["nbf"] = json!(f.now + 60)).await;
        assert_eq!(result, Err(UpstreamError::NotYetValid));
        assert!(
            f.verify_claims(|c| c["nbf"] = json!(f.now + 20))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn future_iat_is_refused() {
        let f = Fixture::new().await;
        let result = f.verify_claims(|c| c["iat"] = json!(f.now + 60)).await;
        assert_eq!(result, Err(UpstreamError::IssuedInFuture));
        let result = f
            .verify_claims(|c| _ = c.as_object_mut().unwrap().remove("iat"))
            .await;
        assert_eq!(result, Err(UpstreamError::MissingClaim("iat")));
    }

    #[tokio::test]
    async fn the_injected_clock_is_used_not_the_system_clock() {
        // 2027: the token is valid then, though the system clock may say otherwise.
        let f = Fixture::new().await;
        assert!(f.verify_claims(|_| {}).await.is_ok());
        let later = f.now + 3600;
        let token = sign(
            &header(Algorithm::RS256, "rsa-1"),
            &f.claims(),
            &f.rsa.encoding,
        );
        let result = f.verifier.verify(&token, &f.expect(), later).await;
        assert_eq!(result, Err(UpstreamError::Expired));
    }

    #[tokio::test]
    async fn missing_or_bad_sub_is_refused() {
        let f = Fixture::new().await;
        let result = f
            .verify_claims(|c| _ = c.as_object_mut().unwrap().remove("sub"))
            .await;
        assert_eq!(result, Err(UpstreamError::MissingClaim("sub")));
        let result = f.verify_claims(|c| c["sub"] = json!("")).await;
        assert!(
            matches!(result, Err(UpstreamError::Subject(_))),
            "{result:?}"
        );
        let result = f.verify_claims(|c| c["sub"] = json!("x".repeat(256))).await;
        assert!(
            matches!(result, Err(UpstreamError::Subject(_))),
            "{result:?}"
        );
        let result = f.verify_claims(|c| c["sub"] = json!(42)).await;
        assert!(
            matches!(result, Err(UpstreamError::Subject(_))),
            "{result:?}"
        );
        assert!(
            f.verify_claims(|c| c["sub"] = json!("x".repeat(255)))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn alg_none_is_refused() {
        let f = Fixture::new().await;
        for alg in ["none", "None", "NONE"] {
            let token = raw_token(&json!({"alg": alg, "kid": "rsa-1"}), &f.claims(), "");
            let result = f.verify(&token).await;
            assert!(
                matches!(&result, Err(UpstreamError::Algorithm(m)) if m.contains("never accepted")),
                "{result:?}"
            );
        }
        assert_eq!(f.server.hits(), 0, "refused before any key lookup");
    }

    #[tokio::test]
    async fn hs256_with_the_public_key_as_secret_is_refused() {
        let f = Fixture::new().await;
        let secret = EncodingKey::from_secret(&f.rsa.public_pem);
        let token = sign(&header(Algorithm::HS256, "rsa-1"), &f.claims(), &secret);
        let result = f.verify(&token).await;
        assert!(
            matches!(&result, Err(UpstreamError::Algorithm(m)) if m.contains("HMAC")),
            "{result:?}"
        );
        // Even handed to jsonwebtoken directly, the pinned alg refuses it.
        let key = DecodingKey::from_rsa_pem(&f.rsa.public_pem).unwrap();
        assert_eq!(
            verify_signature(&token, &key, Algorithm::RS256),
            Err(UpstreamError::AlgorithmMismatch)
        );
    }

    #[tokio::test]
    async fn jku_and_embedded_keys_are_never_used() {
        let f = Fixture::new().await;
        let attacker = rsa_key("attacker", 2048);
        let attacker_server = JwksServer::start(attacker.jwks()).await;

        let mut with_jku = header(Algorithm::RS256, "attacker");
        with_jku.jku = Some(attacker_server.url.clone());
        with_jku.x5u = Some(attacker_server.url.clone());
        let token = sign(&with_jku, &f.claims(), &attacker.encoding);
        assert_eq!(
            f.verify(&token).await,
            Err(UpstreamError::Jwks(JwksError::UnknownKey {
                kid: "attacker".into()
            }))
        );

        // The same, naming a kid the issuer does have.
        let mut with_jku = header(Algorithm::RS256, "rsa-1");
        with_jku.jku = Some(attacker_server.url.clone());
        with_jku.jwk = Some(serde_json::from_value(attacker.jwk.clone()).unwrap());
        let token = sign(&with_jku, &f.claims(), &attacker.encoding);
        assert_eq!(f.verify(&token).await, Err(UpstreamError::Signature));

        assert_eq!(
            attacker_server.hits(),
            0,
            "the jku/x5u URL was never fetched"
        );
    }

    #[tokio::test]
    async fn jwk_alg_pins_the_algorithm() {
        let rsa = rsa_key("pinned", 2048);
        let mut jwk = rsa.jwk.clone();
        jwk["alg"] = json!("RS256");
        let mut f = Fixture::new().await;
        f.server.set_body(jwks(&[jwk, f.ec.jwk.clone()]));
        f.verifier = UpstreamVerifier::new(JwksCache::new(test_limits()));

        let token = sign(
            &header(Algorithm::PS256, "pinned"),
            &f.claims(),
            &rsa.encoding,
        );
        assert_eq!(
            f.verify(&token).await,
            Err(UpstreamError::AlgorithmMismatch)
        );
        let token = sign(
            &header(Algorithm::RS256, "pinned"),
            &f.claims(),
            &rsa.encoding,
        );
        assert!(f.verify(&token).await.is_ok());
    }

    #[tokio::test]
    async fn ec_alg_naming_an_rsa_key_is_a_mismatch() {
        let f = Fixture::new().await;
        let token = sign(
            &header(Algorithm::ES256, "rsa-1"),
            &f.claims(),
            &f.ec.encoding,
        );
        assert_eq!(
            f.verify(&token).await,
            Err(UpstreamError::AlgorithmMismatch)
        );
        // jsonwebtoken's own family check agrees, below ours.
        let rsa_key = DecodingKey::from_rsa_pem(&f.rsa.public_pem).unwrap();
        assert_eq!(
            verify_signature(&token, &rsa_key, Algorithm::ES256),
            Err(UpstreamError::AlgorithmMismatch)
        );
    }

    #[tokio::test]
    async fn oct_and_private_keys_in_the_jwks_are_ignored() {
        let mut f = Fixture::new().await;
        let mut leaked = f.rsa.jwk.clone();
        leaked["kid"] = json!("leaked");
        leaked["d"] = json!("AQAB");
        f.server.set_body(jwks(&[
            json!({"kty": "oct", "kid": "hmac", "k": URL_SAFE_NO_PAD.encode("secret")}),
            leaked,
            f.rsa.jwk.clone(),
        ]));
        f.verifier = UpstreamVerifier::new(JwksCache::new(test_limits()));

        // An HS256 token for the oct key is refused by alg before any lookup;
        // an RS256 one naming it finds no key.
        let token = sign(
            &header(Algorithm::HS256, "hmac"),
            &f.claims(),
            &EncodingKey::from_secret(b"secret"),
        );
        assert!(matches!(
            f.verify(&token).await,
            Err(UpstreamError::Algorithm(_))
        ));
        let token = sign(
            &header(Algorithm::RS256, "hmac"),
            &f.claims(),
            &f.rsa.encoding,
        );
        assert_eq!(
            f.verify(&token).await,
            Err(UpstreamError::Jwks(JwksError::UnknownKey {
                kid: "hmac".into()
            }))
        );
        let token = sign(
            &header(Algorithm::RS256, "leaked"),
            &f.claims(),
            &f.rsa.encoding,
        );
        assert_eq!(
            f.verify(&token).await,
            Err(UpstreamError::Jwks(JwksError::UnknownKey {
                kid: "leaked".into()
            }))
        );
        let token = sign(
            &header(Algorithm::RS256, "rsa-1"),
            &f.claims(),
            &f.rsa.encoding,
        );
        assert!(f.verify(&token).await.is_ok());
    }

    #[tokio::test]
    async fn jwe_is_refused_as_encrypted() {
        let f = Fixture::new().await;
        let jwe = "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d";
        assert_eq!(f.verify(jwe).await, Err(UpstreamError::Encrypted));
        assert_eq!(peek_issuer(jwe), Err(UpstreamError::Encrypted));
    }

    #[tokio::test]
    async fn crit_header_is_refused() {
        let f = Fixture::new().await;
        let mut crit = header(Algorithm::RS256, "rsa-1");
        crit.crit = Some(vec!["exp".into()]);
        let token = sign(&crit, &f.claims(), &f.rsa.encoding);
        assert_eq!(f.verify(&token).await, Err(UpstreamError::Critical));
    }

    #[tokio::test]
    async fn dpop_logout_and_access_token_types_are_refused() {
        let f = Fixture::new().await;
        for typ in [
            "dpop+jwt",
            "application/logout+jwt",
            "DPoP+JWT",
            "at+jwt",
            "application/at+jwt",
        ] {
            let mut typed = header(Algorithm::RS256, "rsa-1");
            typed.typ = Some(typ.into());
            let token = sign(&typed, &f.claims(), &f.rsa.encoding);
            assert_eq!(
                f.verify(&token).await,
                Err(UpstreamError::TokenType(typ.into()))
            );
        }
        let mut typed = header(Algorithm::RS256, "rsa-1");
        typed.typ = Some("JWT".into());
        assert!(
            f.verify(&sign(&typed, &f.claims(), &f.rsa.encoding))
                .await
                .is_ok()
        );
    }

    /// A token the provider issued to another client (its `azp`) is refused
    /// even when its `aud` names tessera; `azp` equal to the audience passes.
    #[tokio::test]
    async fn a_token_issued_to_another_client_is_refused() {
        let f = Fixture::new().await;
        let mut claims = f.claims();
        claims["aud"] = json!([AUDIENCE, "other-app"]);
        claims["azp"] = json!("other-app");
        let token = sign(&header(Algorithm::RS256, "rsa-1"), &claims, &f.rsa.encoding);
        assert_eq!(f.verify(&token).await, Err(UpstreamError::AuthorizedParty));
        claims["azp"] = json!(AUDIENCE);
        let token = sign(&header(Algorithm::RS256, "rsa-1"), &claims, &f.rsa.encoding);
        assert!(f.verify(&token).await.is_ok());
    }

    /// Control characters in `iss` or `sub` never reach a query (PostgreSQL
    /// refuses NUL in text: a 503 instead of a refusal).
    #[tokio::test]
    async fn control_characters_in_iss_and_sub_are_refused() {
        let f = Fixture::new().await;
        let mut claims = f.claims();
        claims["iss"] = json!("\u{0}");
        let token = sign(&header(Algorithm::RS256, "rsa-1"), &claims, &f.rsa.encoding);
        assert!(matches!(
            peek_issuer(&token),
            Err(UpstreamError::Malformed(_))
        ));
        let mut claims = f.claims();
        claims["sub"] = json!("a\u{0}b");
        let token = sign(&header(Algorithm::RS256, "rsa-1"), &claims, &f.rsa.encoding);
        assert!(matches!(
            f.verify(&token).await,
            Err(UpstreamError::Subject(_))
        ));
    }

    #[tokio::test]
    async fn unsupported_alg_is_refused() {
        let f = Fixture::new().await;
        let token = raw_token(&json!({"alg": "ES512", "kid": "ec-1"}), &f.claims(), "AAAA");
        assert!(matches!(
            f.verify(&token).await,
            Err(UpstreamError::Algorithm(_))
        ));
    }

    #[tokio::test]
    async fn jwks_down_is_unavailable() {
        let f = Fixture::new().await;
        let uri = closed_url().await;
        let expect = Expectations {
            jwks_uri: &uri,
            ..f.expect()
        };
        let token = sign(
            &header(Algorithm::RS256, "rsa-1"),
            &f.claims(),
            &f.rsa.encoding,
        );
        let err = f.verifier.verify(&token, &expect, f.now).await.unwrap_err();
        assert!(
            matches!(err, UpstreamError::Jwks(JwksError::Unavailable(_))),
            "{err:?}"
        );
        assert!(err.is_unavailable());

        let token = sign(
            &header(Algorithm::RS256, "nope"),
            &f.claims(),
            &f.rsa.encoding,
        );
        let err = f.verify(&token).await.unwrap_err();
        assert!(!err.is_unavailable(), "an unknown kid is the token's fault");
    }

    #[test]
    fn peek_issuer_checks_structure_only() {
        let claims = json!({"iss": ISSUER});
        let token = raw_token(&json!({"alg": "RS256"}), &claims, "c2ln");
        assert_eq!(peek_issuer(&token).unwrap(), ISSUER);

        let big = raw_token(
            &json!({"alg": "RS256"}),
            &json!({"iss": ISSUER, "pad": "x".repeat(17_000)}),
            "",
        );
        assert!(matches!(
            peek_issuer(&big),
            Err(UpstreamError::Malformed(_))
        ));
        assert!(matches!(
            peek_issuer("a.b"),
            Err(UpstreamError::Malformed(_))
        ));
        assert!(matches!(
            peek_issuer("e30.e30.e30.e30"),
            Err(UpstreamError::Malformed(_))
        ));
        let not_json = format!(
            "bm90IGpzb24.{}.",
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        assert!(matches!(
            peek_issuer(&not_json),
            Err(UpstreamError::Malformed(_))
        ));
        let array = raw_token(&json!(["alg"]), &claims, "");
        assert!(matches!(
            peek_issuer(&array),
            Err(UpstreamError::Malformed(_))
        ));
        let no_iss = raw_token(&json!({"alg": "RS256"}), &json!({"sub": "x"}), "");
        assert_eq!(
            peek_issuer(&no_iss),
            Err(UpstreamError::MissingClaim("iss"))
        );
        let number_iss = raw_token(&json!({"alg": "RS256"}), &json!({"iss": 7}), "");
        assert!(matches!(
            peek_issuer(&number_iss),
            Err(UpstreamError::Malformed(_))
        ));
        let padded = format!("{token}=");
        assert!(matches!(
            peek_issuer(&padded),
            Err(UpstreamError::Malformed(_))
        ));
    }
}
