//! TOTP second factor (RFC 6238: HMAC-SHA1, 6 digits, 30 s steps, ±1 step),
//! with each accepted step remembered so a code works only once.

use ring::rand::{SecureRandom, SystemRandom};
use totp_rs::{Algorithm, Builder, Totp};

/// The sealing context of a user's TOTP secret (binds it to that user).
pub fn seal_context(user: uuid::Uuid) -> Vec<u8> {
    format!("totp:{user}").into_bytes()
}

/// A new 160-bit TOTP secret.
pub fn new_secret() -> [u8; 20] {
    let mut secret = [0u8; 20];
    SystemRandom::new().fill(&mut secret).expect("CSPRNG");
    secret
}

fn totp(secret: &[u8], account: &str, issuer: &str) -> Totp {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(30)
        .with_secret(secret.to_vec())
        .with_account_name(account.replace(':', "_"))
        .with_issuer(Some(issuer.replace(':', "_")))
        .build()
        .expect("valid TOTP parameters")
}

/// The `otpauth://totp/…` URI an authenticator app imports.
pub fn uri(secret: &[u8], account: &str, issuer: &str) -> String {
    totp(secret, account, issuer)
        .to_url()
        .expect("account name without ':'")
}

/// The time step of `code` if it is valid at `now` (±1 step) and later than
/// `last_step`, the step of the last code accepted for this user.
pub fn check(secret: &[u8], code: &str, now: i64, last_step: Option<i64>) -> Option<i64> {
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) || now < 0 {
        return None;
    }
    let step = totp(secret, "x", "x").check(code, now as u64)? as i64;
    last_step.is_none_or(|last| step > last).then_some(step)
}

/// The code for `now` (for tests and tooling).
pub fn code_at(secret: &[u8], now: i64) -> String {
    totp(secret, "x", "x")
        .generate(now.max(0) as u64)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vector() {
        // RFC 6238 appendix B, SHA-1, T = 59 → 94287082 (8 digits); the
        // 6-digit code is its last six digits.
        let secret = b"12345678901234567890";
        assert_eq!(code_at(secret, 59), "287082");
        assert_eq!(code_at(secret, 1_111_111_109), "081804");
    }

    #[test]
    fn codes_work_once_and_only_near_their_time() {
        let s = new_secret();
        let now = 1_800_000_000;
        let code = code_at(&s, now);
        let step = check(&s, &code, now, None).expect("current code");
        assert_eq!(check(&s, &code, now, Some(step)), None, "reuse refused");
        assert!(
            check(&s, &code, now + 30, None).is_some(),
            "one step of skew"
        );
        assert!(check(&s, &code, now + 90, None).is_none());
        assert!(check(&s, "12345", now, None).is_none());
        assert!(check(&s, "abcdef", now, None).is_none());
        assert!(uri(&s, "alice", "http://127.0.0.1:8080").starts_with("otpauth://totp/"));
    }
}
