//! Password hashing with Argon2id (OWASP parameters: 19 MiB, 2 passes, 1 lane).
//!
//! Checking a password for a user who does not exist runs the same Argon2
//! computation against a fixed dummy hash, so response time does not reveal
//! which usernames exist.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use ring::rand::{SecureRandom, SystemRandom};

/// Longest password accepted (hashing cost is linear in length; this bounds it).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Shortest password `tessera user add` accepts (OWASP ASVS 2.1.1).
pub const MIN_PASSWORD_CHARS: usize = 8;

fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid Argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Why a new password was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    /// Shorter than [`MIN_PASSWORD_CHARS`].
    #[error("the password must have at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    /// Longer than [`MAX_PASSWORD_BYTES`].
    #[error("the password must be at most {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
}

/// Whether `password` is acceptable as a new password.
pub fn check_new(password: &str) -> Result<(), PasswordError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    Ok(())
}

/// Hashes a new password into a PHC string.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    check_new(password)?;
    let mut salt = [0u8; 16];
    SystemRandom::new().fill(&mut salt).expect("CSPRNG");
    let salt = SaltString::encode_b64(&salt).expect("16-byte salt encodes");
    Ok(argon2()
        .hash_password(password.as_bytes(), &salt)
        .expect("Argon2 hashing with valid parameters does not fail")
        .to_string())
}

/// Checks `password` against `stored` (a PHC string), or against a dummy
/// hash when there is no such user, taking the same time either way.
pub fn verify(stored: Option<&str>, password: &str) -> bool {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash("tessera-dummy-password").expect("valid"));
    let password = if password.len() > MAX_PASSWORD_BYTES {
        ""
    } else {
        password
    };
    let matches = |phc: &str| {
        PasswordHash::new(phc)
            .is_ok_and(|h| argon2().verify_password(password.as_bytes(), &h).is_ok())
    };
    match stored {
        // A user without a password (created from an upstream identity)
        // costs as long as a wrong password: the answer's timing does not
        // tell such accounts apart.
        Some(phc) if PasswordHash::new(phc).is_ok() => matches(phc),
        _ => {
            let _ = matches(dummy);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_use_argon2id_owasp_parameters() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify(Some(&h), "correct horse"));
        assert!(!verify(Some(&h), "correct hors"));
        assert!(!verify(None, "correct horse"));
        assert!(!verify(Some("not a phc string"), "x"));
        assert!(
            !verify(Some("!upstream"), "!upstream"),
            "a federated user has no password"
        );
        assert_ne!(h, hash("correct horse").unwrap(), "salted");
    }

    #[test]
    fn length_limits() {
        assert_eq!(hash("short"), Err(PasswordError::TooShort));
        assert_eq!(
            hash(&"x".repeat(MAX_PASSWORD_BYTES + 1)),
            Err(PasswordError::TooLong)
        );
    }
}
