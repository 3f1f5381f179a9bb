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
    /// RFC 8693 §4.1: the client acting for `sub`, for a token obtained by
    /// token exchange (the previous actors nested inside).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub act: Option<Actor>,
}

/// `act` of an exchanged token (RFC 8693 §4.1): the current actor, and
/// inside it the one before, and so on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Actor {
    /// The acting client's id.
    pub sub: String,
    /// The actor before it, if the token was exchanged more than once.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub act: Option<Box<Actor>>,
}

impl Actor {
    /// How many actors the chain holds (this one included).
    pub fn depth(&self) -> usize {
        let mut depth = 1;
        let mut next = self.act.as_deref();
        while let Some(a) = next {
            depth += 1;
            next = a.act.as_deref();
        }
        depth
    }
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
