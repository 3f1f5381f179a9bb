//! SHA-256, the one digest tessera computes outside keyed MACs: refresh
//! tokens, User-Agent bindings and failed-login counter keys are stored as
//! digests of what was presented.

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}
