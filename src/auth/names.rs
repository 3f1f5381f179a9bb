//! Identifiers validated at the edge: usernames and client ids.
//!
//! Both are restricted to a small ASCII alphabet. Unicode look-alikes
//! (`аdmin` with a Cyrillic `а`) and invisible characters cannot create a
//! second account that reads like an existing one; names that differ only
//! in case are refused by unique indexes on `lower(…)` in the database.

use std::fmt;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be 1 to {max} characters from A-Z a-z 0-9 {extra}")]
pub struct NameError {
    what: &'static str,
    max: usize,
    extra: &'static str,
}

fn check(
    value: &str,
    what: &'static str,
    max: usize,
    extra: &'static str,
) -> Result<(), NameError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.as_bytes().contains(&b));
    if ok {
        Ok(())
    } else {
        Err(NameError { what, max, extra })
    }
}

/// A login name: 1–64 of `A-Z a-z 0-9 . _ @ + -` (so e-mail addresses work).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    /// Validates a username.
    pub fn parse(value: &str) -> Result<Username, NameError> {
        check(value, "a username", 64, "._@+-")?;
        Ok(Username(value.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An OAuth `client_id`: 1–64 of `A-Z a-z 0-9 . _ : -`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientId(String);

impl ClientId {
    /// Validates a client id.
    pub fn parse(value: &str) -> Result<ClientId, NameError> {
        check(value, "a client id", 64, "._:-")?;
        Ok(ClientId(value.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["alice", "a.b-c_d+e@example.com", &"x".repeat(64)] {
            assert!(Username::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "аdmin",
            "admin\u{200b}",
            "a b",
            "a\0b",
            "robert'); --",
            &"x".repeat(65),
        ] {
            assert!(Username::parse(bad).is_err(), "{bad:?}");
        }
        assert!(
            Username::parse("")
                .unwrap_err()
                .to_string()
                .starts_with("a username must be 1 to 64")
        );
    }

    #[test]
    fn client_ids() {
        assert!(ClientId::parse("spa:web-1.prod_x").is_ok());
        assert!(ClientId::parse("spa/web").is_err());
        assert!(ClientId::parse("spa@x").is_err());
    }
}
