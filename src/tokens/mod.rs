//! Access tokens: claims, minting (ES256 JWS, nested in a JWE for audiences
//! that registered an encryption key).

pub mod audience;
pub mod client_auth;
pub mod form;
pub mod grant;
pub mod mint;
pub mod policy;
pub mod refresh;
pub mod user_agent;

pub use crate::oauth::{ErrorCode, OAuthError};
pub use crate::verify::claims::{AccessClaims, Audience};
pub use audience::{AudienceKeys, EncryptionKey, EncryptionKeyError, Wrapping};
pub use client_auth::ClientAuthenticator;
pub use grant::{GrantType, Presented, SessionPolicy, TokenEndpoint, TokenResponse};
pub use mint::{MintError, Minted, Minter, TokenRequest};
