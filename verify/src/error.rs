//! The errors of this crate's public API. Each is `#[non_exhaustive]`, so a
//! new case is not a breaking change; the `Display` text of each says what
//! is wrong without quoting tokens, keys or (untrusted) response bodies.

/// Why a key, or a key set, could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The document is not a JWK set (the parser's position, not its text).
    #[error("not a JWK set ({0})")]
    NotAKeySet(String),
    /// `x`/`y` are not 32 bytes of base64url each.
    #[error("x and y must be 32 bytes of base64url each")]
    Coordinates,
    /// The point is not on P-256.
    #[error("not a point on P-256")]
    NotOnCurve,
    /// A JWK the JOSE library could not use (its message).
    #[error("not a usable JWK: {0}")]
    Jwk(String),
    /// A key type or curve this verifier does not support.
    #[error("unsupported key: {0}")]
    Unsupported(String),
}

/// Why a verifier could not be configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A setting is out of range or contradicts another; says which.
    #[error("{0}")]
    Invalid(&'static str),
    /// The static JWKS or the decryption key is unusable.
    #[error("{0}")]
    Key(#[from] KeyError),
}

/// Why the revocation feed could not be read (the verifier keeps the list
/// it has and tries again at the next poll).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FeedError {
    /// The issuer could not be reached (the HTTP client's message, without
    /// the URL).
    #[error("the revocation feed is unreachable: {0}")]
    Unreachable(String),
    /// The issuer answered with this status (401: wrong credentials; 400
    /// `unauthorized_client`: the client is not registered as a resource
    /// server).
    #[error("the revocation feed answered HTTP {0}")]
    Status(u16),
    /// A page over the size limit.
    #[error("feed page too large")]
    TooLarge,
    /// A page that is not one, or breaks the feed's rules; says how.
    #[error("malformed feed page: {0}")]
    Malformed(String),
}
