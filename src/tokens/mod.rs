//! Access tokens: claims, minting (ES256 JWS, nested in a JWE for audiences
//! that registered an encryption key).

pub mod audience;
pub mod client_auth;
pub mod endpoint;
pub mod form;
pub mod mint;
pub mod refresh;
pub mod user_agent;

pub use crate::verify::claims::{AccessClaims, Audience};
pub use audience::{AudienceKeys, EncryptionKey, EncryptionKeyError, Wrapping};
pub use client_auth::ClientAuthenticator;
pub use endpoint::{ErrorCode, OAuthError, Presented, SessionPolicy, TokenEndpoint, TokenResponse};
pub use mint::{MintError, Minted, Minter, TokenRequest};
