//! Access tokens: claims, minting (ES256 JWS, nested in a JWE for audiences
//! that registered an encryption key).

pub mod audience;
pub mod mint;

pub use crate::verify::claims::{AccessClaims, Audience};
pub use audience::{AudienceKeys, EncryptionKey, EncryptionKeyError, Wrapping};
pub use mint::{MintError, Minted, Minter, TokenRequest};
