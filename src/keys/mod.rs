//! Key material: the master key that encrypts secrets at rest, the ES256
//! signing keys, and the key ring that rotates them.

pub mod keyring;
pub mod master;
pub mod rewrap;
pub mod signing;
