//! Key material: the master key that encrypts secrets at rest.
//!
//! Signing keys (ES256) are added here by the token issue; they are stored
//! sealed under the master key through [`master::MasterKey::seal`].

pub mod master;
