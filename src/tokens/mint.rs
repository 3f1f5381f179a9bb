//! Minting access tokens.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use super::audience::{AudienceKeys, Wrapping};
use crate::keys::keyring::KeyRing;
use crate::verify::claims::{AccessClaims, Audience};

/// What a token is for; the grant handlers fill this in.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// User id, or client id for `client_credentials`.
    pub sub: String,
    /// Audiences (at least one).
    pub audiences: Vec<String>,
    /// The client the token is issued to.
    pub client_id: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// Session id for user tokens.
    pub sid: Option<Uuid>,
    /// RFC 7638 thumbprint of the client's DPoP key: the token is bound to
    /// it (`cnf.jkt`).
    pub jkt: Option<String>,
    /// RFC 8693: the client acting for `sub` (exchanged tokens).
    pub act: Option<crate::verify::Actor>,
    /// The latest expiry allowed (an exchanged token outlives neither the
    /// token it was exchanged for nor its session); `None`: the lifetime.
    pub expires_at: Option<i64>,
}

/// OIDC `at_hash` of `access_token` (ES256: SHA-256, left half, base64url).
pub fn at_hash(access_token: &str) -> String {
    let digest = crate::digest::sha256(access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// A minted token and the facts the caller needs about it.
#[derive(Clone, Debug)]
pub struct Minted {
    /// The compact JWS, or JWE wrapping it.
    pub token: String,
    /// Its claims.
    pub claims: AccessClaims,
}

/// Why no token could be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// No key is active (only possible before the key ring first loads).
    #[error("no signing key is active")]
    NoSigningKey,
    /// A token must name at least one audience.
    #[error("a token needs at least one audience")]
    NoAudience,
    /// An encrypted audience can only be the token's sole audience, since
    /// only it can decrypt the token.
    #[error("audience {0} requires encrypted tokens and cannot share a token with other audiences")]
    SharedEncryptedAudience(String),
    /// The audience's stored encryption key is unusable.
    #[error("audience {0} has an unusable encryption key")]
    UnusableAudienceKey(String),
    /// JWE encryption failed.
    #[error("encrypting the token failed: {0}")]
    Encryption(String),
    /// The signing key's token (HSM) failed its last signature.
    #[error("the signing key's PKCS#11 token is unavailable")]
    SignerUnavailable,
    /// The signing key's token (HSM) could not sign.
    #[error("the signing key could not sign: {0}")]
    Signer(#[from] crate::keys::signing::SignError),
}

/// What an OpenID Connect ID token says (OIDC Core §2), besides what the
/// minter adds (`iss`, `iat`, `exp`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct IdClaims {
    /// The user.
    pub sub: String,
    /// The client (the ID token's only audience).
    pub aud: String,
    /// The client, again (OIDC: the authorized party).
    pub azp: String,
    /// When the user authenticated.
    pub auth_time: i64,
    /// The authorization request's nonce.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// How the user authenticated (RFC 8176: `pwd`, `otp`).
    pub amr: Vec<String>,
    /// The session.
    pub sid: String,
    /// OIDC §3.1.3.6: the left half of SHA-256 of the access token.
    pub at_hash: String,
}

/// Mints access tokens for one issuer.
pub struct Minter {
    keys: Arc<KeyRing>,
    audiences: Arc<AudienceKeys>,
    issuer: String,
    ttl: i64,
}

impl Minter {
    /// A minter signing with `keys` for `issuer`.
    pub fn new(
        keys: Arc<KeyRing>,
        audiences: Arc<AudienceKeys>,
        issuer: String,
        ttl: Duration,
    ) -> Minter {
        let ttl = i64::try_from(ttl.as_secs()).expect("validated TTL");
        Minter {
            keys,
            audiences,
            issuer,
            ttl,
        }
    }

    /// Token lifetime in seconds.
    pub fn ttl(&self) -> i64 {
        self.ttl
    }

    /// Whether a token could be signed at `now`. Grants ask before they
    /// consume anything (a refresh token, an authorization code), so a
    /// signing key whose HSM is gone costs the client a retry, not its
    /// session.
    pub fn ready(&self, now: i64) -> Result<(), MintError> {
        let signer = self.keys.signer_at(now).ok_or(MintError::NoSigningKey)?;
        match signer.ready() {
            true => Ok(()),
            false => Err(MintError::SignerUnavailable),
        }
    }

    /// An ID token for `claims`, valid from `now` for the access-token
    /// lifetime: ES256 with `typ: JWT`, so no verifier of access tokens
    /// (which require `at+jwt`) accepts it as one.
    pub fn id_token(&self, claims: IdClaims, now: i64) -> Result<String, MintError> {
        #[derive(serde::Serialize)]
        struct Full<'a> {
            iss: &'a str,
            iat: i64,
            exp: i64,
            #[serde(flatten)]
            claims: IdClaims,
        }
        let signer = self.keys.signer_at(now).ok_or(MintError::NoSigningKey)?;
        let header = serde_json::json!({ "alg": "ES256", "typ": "JWT", "kid": signer.kid() });
        let mut input =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("header serializes"));
        input.push('.');
        let full = Full {
            iss: &self.issuer,
            iat: now,
            exp: now + self.ttl,
            claims,
        };
        URL_SAFE_NO_PAD.encode_string(
            serde_json::to_vec(&full).expect("claims serialize"),
            &mut input,
        );
        let signature = signer.sign(input.as_bytes())?;
        input.push('.');
        input.push_str(&signature);
        Ok(input)
    }

    /// Mints a token valid from `now` for the configured lifetime.
    pub fn mint(&self, req: TokenRequest, now: i64) -> Result<Minted, MintError> {
        let wrapping = match req.audiences.as_slice() {
            [] => return Err(MintError::NoAudience),
            [one] => self.audiences.wrapping(one),
            many => {
                if let Some(enc) = many
                    .iter()
                    .find(|a| !matches!(self.audiences.wrapping(a), Wrapping::Signed))
                {
                    return Err(MintError::SharedEncryptedAudience(enc.clone()));
                }
                Wrapping::Signed
            }
        };
        let signer = self.keys.signer_at(now).ok_or(MintError::NoSigningKey)?;
        let aud = match req.audiences.len() {
            1 => Audience::One(req.audiences.into_iter().next().expect("one")),
            _ => Audience::Many(req.audiences),
        };
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub: req.sub,
            aud,
            exp: req
                .expires_at
                .map_or(now + self.ttl, |cap| cap.min(now + self.ttl)),
            iat: now,
            nbf: now,
            jti: Uuid::new_v4().to_string(),
            client_id: req.client_id,
            scope: req.scope,
            sid: req.sid.map(|s| s.to_string()),
            cnf: req
                .jkt
                .map(|jkt| crate::verify::claims::Confirmation { jkt }),
            act: req.act,
        };
        // The header is fixed per key and encoded once (see SigningKeyPair).
        let claims_json = serde_json::to_vec(&claims).expect("claims serialize");
        let prefix = signer.at_jwt_header_b64();
        let mut input =
            String::with_capacity(prefix.len() + 1 + claims_json.len() * 4 / 3 + 4 + 1 + 86);
        input.push_str(prefix);
        input.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims_json, &mut input);
        let signature = signer.sign(input.as_bytes())?;
        input.push('.');
        input.push_str(&signature);

        let token = match wrapping {
            Wrapping::Signed => input,
            Wrapping::Encrypted(key) => key
                .encrypt(&input)
                .map_err(|e| MintError::Encryption(e.to_string()))?,
            Wrapping::Unusable => {
                return Err(MintError::UnusableAudienceKey(
                    claims.aud.as_slice()[0].clone(),
                ));
            }
        };
        Ok(Minted { token, claims })
    }
}
