//! The claims of an access token (RFC 9068 profile).

use serde::{Deserialize, Serialize};

/// `aud`: one audience (serialized as a string) or several (an array).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `aud` names `audience`.
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::One(a) => a == audience,
            Audience::Many(list) => list.iter().any(|a| a == audience),
        }
    }

    /// The audiences as a slice.
    pub fn as_slice(&self) -> &[String] {
        match self {
            Audience::One(a) => std::slice::from_ref(a),
            Audience::Many(list) => list,
        }
    }
}

/// Claims of a tessera access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// User id, or client id for `client_credentials`.
    pub sub: String,
    /// Audience(s).
    pub aud: Audience,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Not before, Unix seconds (= `iat`).
    pub nbf: i64,
    /// Unique token id (UUID v4).
    pub jti: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// Space-separated granted scopes.
    pub scope: String,
    /// Session id, for tokens minted in a user session.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sid: Option<String>,
    /// Confirmation (RFC 7800): the key a DPoP-bound token is bound to.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cnf: Option<Confirmation>,
}

/// `cnf` of a DPoP-bound token (RFC 9449 §6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Confirmation {
    /// RFC 7638 SHA-256 thumbprint of the client's DPoP key.
    pub jkt: String,
}

impl AccessClaims {
    /// Whether the token grants `scope` (exact match of one space-separated item).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope.split(' ').any(|s| s == scope)
    }
}
