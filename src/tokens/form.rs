//! Parsing of what a client sends to the OAuth endpoints: the
//! `application/x-www-form-urlencoded` body and HTTP Basic credentials.
//!
//! Pure functions over bytes, so the HTTP layer stays thin and the fuzz
//! targets in `fuzz/` exercise exactly the code the server runs.

use std::collections::HashMap;

use base64::Engine as _;

/// Form parameters by name (each present at most once, none empty).
pub type Params = HashMap<String, String>;

/// Why a form or credential could not be read. The message names the
/// offending parameter, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FormError(pub String);

/// Most parameters a form may carry (a token request needs fewer than ten):
/// thousands of tiny ones would cost more to parse than the request is worth.
pub const MAX_PARAMS: usize = 32;

/// Parses a form body: at most [`MAX_PARAMS`] parameters, repeated ones
/// refused (RFC 6749 §3.2), empty ones dropped (§3.1), names and values
/// UTF-8 without control characters.
pub fn parse_form(body: &[u8]) -> Result<Params, FormError> {
    let mut params = HashMap::new();
    for (i, (name, value)) in url::form_urlencoded::parse(body).enumerate() {
        if i == MAX_PARAMS {
            return Err(FormError(format!(
                "too many parameters (at most {MAX_PARAMS})"
            )));
        }
        if name.contains('\u{FFFD}') || value.contains('\u{FFFD}') {
            return Err(FormError("parameters must be UTF-8".into()));
        }
        if name.chars().any(char::is_control) {
            return Err(FormError(
                "parameter names must not contain control characters".into(),
            ));
        }
        if value.is_empty() {
            continue;
        }
        if value.chars().any(char::is_control) {
            return Err(FormError(format!(
                "parameter {} contains control characters",
                printable(&name)
            )));
        }
        if params
            .insert(name.to_string(), value.into_owned())
            .is_some()
        {
            return Err(FormError(format!(
                "parameter {} is repeated",
                printable(&name)
            )));
        }
    }
    Ok(params)
}

/// Parses an `Authorization` header value carrying HTTP Basic client
/// credentials. RFC 6749 §2.3.1: the id and secret are form-urlencoded
/// before Basic encoding, so both are decoded here.
///
/// `Ok(None)` means another scheme was used.
pub fn parse_basic(value: &[u8]) -> Result<Option<(String, String)>, FormError> {
    let malformed = || FormError("malformed Basic credentials".into());
    let value = std::str::from_utf8(value).map_err(|_| malformed())?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err(malformed());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    // The whole of each part is one encoded value: `+` is a space and `%XX`
    // a byte, nothing else is special (an `&` or `=` is itself, not a
    // parameter boundary).
    let form_decode = |s: &str| -> Result<String, FormError> {
        let plus_as_space = s.replace('+', " ");
        let value = percent_encoding::percent_decode_str(&plus_as_space)
            .decode_utf8()
            .map_err(|_| malformed())?;
        if value.chars().any(char::is_control) {
            return Err(malformed());
        }
        Ok(value.into_owned())
    };
    let (id, secret) = (form_decode(id)?, form_decode(secret)?);
    if id.is_empty() {
        return Err(malformed());
    }
    Ok(Some((id, secret)))
}

/// A parameter name as it may appear in an error message: short, and
/// without characters a log viewer or terminal would interpret.
pub fn printable(name: &str) -> String {
    const MAX: usize = 40;
    let mut out: String = name
        .chars()
        .take(MAX)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect();
    if name.chars().count() > MAX {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_and_empty_parameters() {
        assert!(
            parse_form(b"a=1&a=2")
                .unwrap_err()
                .0
                .contains("a is repeated")
        );
        let p = parse_form(b"a=&b=2").unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p["b"], "2");
    }

    #[test]
    fn the_number_of_parameters_is_capped() {
        let ok: Vec<String> = (0..MAX_PARAMS).map(|i| format!("p{i}=1")).collect();
        assert_eq!(
            parse_form(ok.join("&").as_bytes()).unwrap().len(),
            MAX_PARAMS
        );
        let many = "a&".repeat(5000);
        let e = parse_form(many.as_bytes()).unwrap_err().0;
        assert!(e.contains("too many parameters"), "{e}");
    }

    #[test]
    fn invalid_utf8_and_control_characters() {
        assert!(parse_form(b"a=%FF").is_err());
        assert!(parse_form(b"a=x%00y").is_err());
        assert!(parse_form(b"a%0A=1").is_err());
    }

    #[test]
    fn error_messages_do_not_echo_odd_names() {
        let long = format!("{}=1&{}=2", "\u{202e}".repeat(100), "\u{202e}".repeat(100));
        let e = parse_form(long.as_bytes()).unwrap_err().0;
        assert!(!e.contains('\u{202e}'), "{e}");
        assert!(e.len() < 120, "{e}");
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("my%20app:s%3Acret")
        );
        assert_eq!(
            parse_basic(header.as_bytes()).unwrap(),
            Some(("my app".into(), "s:cret".into()))
        );
        assert_eq!(parse_basic(b"Bearer abc").unwrap(), None);
        // RFC 6749 §2.3.1: each part is decoded whole; `&` and `=` do not
        // end it (the review's `-u "rs:SECRET&junk"` and `-u "rs&x=1:SECRET"`).
        let basic = |raw: &str| {
            parse_basic(
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                )
                .as_bytes(),
            )
        };
        assert_eq!(
            basic("rs:SECRET&junk").unwrap(),
            Some(("rs".into(), "SECRET&junk".into()))
        );
        assert_eq!(
            basic("rs&x=1:SECRET").unwrap(),
            Some(("rs&x=1".into(), "SECRET".into()))
        );
        assert_eq!(
            basic("a+b:c%26d%3D").unwrap(),
            Some(("a b".into(), "c&d=".into()))
        );
        assert!(basic("rs:%FF").is_err(), "not UTF-8");
        assert!(basic("rs:a%0Ab").is_err(), "control character");
        assert!(parse_basic(b"Basic !!!").is_err());
        assert!(parse_basic(b"Basic").is_err());
        let empty_id = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(":x")
        );
        assert!(parse_basic(empty_id.as_bytes()).is_err());
    }
}
