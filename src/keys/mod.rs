//! Key material: the master key that encrypts secrets at rest, the ES256
//! signing keys (in process or in a PKCS#11 token), and the key ring that
//! rotates them.

pub mod keyring;
pub mod master;
pub mod pkcs11;
pub mod rewrap;
pub mod signing;
