//! The fuzz targets' library: the property checks (`checks.rs`, shared
//! with `tests/api/fuzz_regressions.rs`) and a token-aware mutator, which
//! needs libFuzzer and so stays out of the shared file.

mod checks;

pub use checks::*;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Mutates a raw token one segment at a time: half the time it decodes a
/// segment, lets libFuzzer mutate the bytes and re-encodes them, so the
/// fuzzer changes a JWE's tag, IV or key, or a header's JSON, without
/// breaking the base64url around it. Anything else gets libFuzzer's own
/// mutations.
pub fn mutate_token(data: &mut [u8], size: usize, max_size: usize, seed: u32) -> usize {
    let own = |data: &mut [u8]| libfuzzer_sys::fuzzer_mutate(data, size, max_size);
    if seed % 2 == 0 {
        return own(data);
    }
    let Some(token) = std::str::from_utf8(&data[..size])
        .ok()
        .filter(|t| t.contains('.') && !t.starts_with('{'))
    else {
        return own(data);
    };
    let segments: Vec<&str> = token.split('.').collect();
    let index = (seed / 2) as usize % segments.len();
    let Ok(mut bytes) = URL_SAFE_NO_PAD.decode(segments[index]) else {
        return own(data);
    };
    let len = bytes.len();
    bytes.resize(len * 2 + 8, 0);
    let capacity = bytes.len();
    let new_len = libfuzzer_sys::fuzzer_mutate(&mut bytes, len, capacity);
    bytes.truncate(new_len);
    let encoded = URL_SAFE_NO_PAD.encode(&bytes);
    let mut out = segments.clone();
    out[index] = &encoded;
    let mutated = out.join(".");
    if mutated.len() > max_size {
        return own(data);
    }
    data[..mutated.len()].copy_from_slice(mutated.as_bytes());
    mutated.len()
}
