//! Strict checks on the protected headers and the raw ES256 signature,
//! applied before any key is looked up or any signature verified.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::borrow::Cow;

use serde::Deserialize as _;
#[cfg(feature = "jwe")]
use serde_json::{Map, Value};

use super::VerifyError;

/// The order n of the P-256 group, big-endian.
const P256_ORDER: [u8; 32] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
];

/// Decodes one base64url segment (no padding, no stray characters).
pub(crate) fn b64(segment: &str, what: &'static str) -> Result<Vec<u8>, VerifyError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| VerifyError::Malformed(what))
}

#[cfg(feature = "jwe")]
/// Decodes a protected header into a JSON object.
pub(crate) fn parse(segment: &str) -> Result<Map<String, Value>, VerifyError> {
    let bytes = b64(segment, "header is not base64url")?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(VerifyError::Malformed("header is not a JSON object")),
    }
}

#[cfg(feature = "jwe")]
fn str_member<'a>(h: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    h.get(name).and_then(Value::as_str)
}

#[cfg(feature = "jwe")]
/// Rejects any `crit`: tessera defines no critical extensions, so a token
/// that demands one cannot be understood (RFC 7515 §4.1.11).
fn no_crit(h: &Map<String, Value>) -> Result<(), VerifyError> {
    if h.contains_key("crit") {
        return Err(VerifyError::UnknownCritical);
    }
    Ok(())
}

/// The members of a JWS header the rules look at, borrowed from the
/// decoded segment (no map of every member is built); the rest is ignored.
#[derive(serde::Deserialize)]
struct JwsHeader<'a> {
    #[serde(borrow, default, deserialize_with = "string")]
    alg: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "string")]
    typ: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "string")]
    kid: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "present")]
    crit: bool,
    #[serde(default, deserialize_with = "present")]
    zip: bool,
    #[serde(default, deserialize_with = "present")]
    enc: bool,
}

/// The member's text if it is a string; any other value counts as absent
/// (a `typ` of `1` is a wrong type, not a malformed header).
fn string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct Text;
    impl<'de> serde::de::Visitor<'de> for Text {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Self::Value, A::Error> {
            while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Self::Value, A::Error> {
            while a
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            Ok(None)
        }
    }
    d.deserialize_any(Text)
}

/// True whenever the member is there, whatever its value (even `null`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

/// Checks a JWS header segment: a JSON object (a repeated member is
/// refused) with `alg` ES256 exactly, `typ` at+jwt, no `crit`, no `zip` or
/// `enc`, a `kid`. Key-carrying headers (`jwk`, `jku`, `x5u`, `x5c`) are
/// ignored: keys come only from the issuer's key set. Returns the `kid`.
pub(crate) fn check_jws(segment: &str) -> Result<String, VerifyError> {
    let bytes = b64(segment, "header is not base64url")?;
    // A struct would also deserialize from a JSON array.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(VerifyError::Malformed("header is not a JSON object"));
    }
    let h: JwsHeader = serde_json::from_slice(&bytes).map_err(|_| {
        VerifyError::Malformed("header is not a JSON object of the expected members")
    })?;
    match h.alg.as_deref() {
        Some("ES256") => {}
        Some(other) => return Err(VerifyError::Algorithm(other.chars().take(32).collect())),
        None => return Err(VerifyError::Malformed("header has no alg")),
    }
    if h.crit {
        return Err(VerifyError::UnknownCritical);
    }
    if h.zip || h.enc {
        return Err(VerifyError::Malformed(
            "a JWS header must not carry zip or enc",
        ));
    }
    match h.typ.as_deref() {
        Some(t)
            if t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt") => {
        }
        _ => return Err(VerifyError::WrongType),
    }
    h.kid
        .filter(|k| !k.is_empty() && k.len() <= 128)
        .map(Cow::into_owned)
        .ok_or(VerifyError::Malformed("header has no usable kid"))
}

#[cfg(feature = "jwe")]
/// Checks a JWE header against the one algorithm the audience registered:
/// `enc` A256GCM, `cty` JWT, no `zip`, no `crit`.
pub(crate) fn check_jwe(h: &Map<String, Value>, expected_alg: &str) -> Result<(), VerifyError> {
    match str_member(h, "alg") {
        Some(alg) if alg == expected_alg => {}
        Some(other) => return Err(VerifyError::Algorithm(other.chars().take(32).collect())),
        None => return Err(VerifyError::Malformed("JWE header has no alg")),
    }
    no_crit(h)?;
    if h.contains_key("zip") {
        return Err(VerifyError::Encryption("compressed JWE is refused"));
    }
    if str_member(h, "enc") != Some("A256GCM") {
        return Err(VerifyError::Encryption("enc must be A256GCM"));
    }
    match str_member(h, "cty") {
        Some(c) if c.eq_ignore_ascii_case("JWT") => Ok(()),
        _ => Err(VerifyError::Encryption(
            "cty must be JWT (a nested signed token)",
        )),
    }
}

/// An ES256 signature is `r || s`, 32 bytes each, with 1 ≤ r, s ≤ n − 1.
/// Checked explicitly because some implementations once accepted r = s = 0
/// ("psychic signatures", CVE-2022-21449).
/// Returns the decoded signature.
pub(crate) fn es256_signature(segment: &str) -> Result<[u8; 64], VerifyError> {
    let mut sig = [0u8; 64];
    // 64 bytes are 86 base64url characters; anything else is not ES256.
    if segment.len() != 86 {
        return Err(VerifyError::BadSignature);
    }
    match URL_SAFE_NO_PAD.decode_slice(segment, &mut sig) {
        Ok(64) => {}
        Ok(_) => return Err(VerifyError::BadSignature),
        Err(_) => return Err(VerifyError::Malformed("signature is not base64url")),
    }
    let (r, s) = sig.split_at(32);
    for half in [r, s] {
        if half.iter().all(|&b| b == 0) || half >= &P256_ORDER[..] {
            return Err(VerifyError::BadSignature);
        }
    }
    Ok(sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(r: [u8; 32], s: [u8; 32]) -> String {
        URL_SAFE_NO_PAD.encode([r, s].concat())
    }

    fn jws(header: &str) -> Result<String, VerifyError> {
        check_jws(&URL_SAFE_NO_PAD.encode(header))
    }

    #[test]
    fn jws_header_members_are_checked_even_when_null_or_repeated() {
        let ok = r#"{"alg":"ES256","typ":"at+jwt","kid":"k1","jwk":{"kty":"EC"}}"#;
        assert_eq!(jws(ok).unwrap(), "k1");
        assert_eq!(
            jws(r#"{"alg":"ES\u0032\u0035\u0036","typ":"at+jwt","kid":"k\u0031"}"#).unwrap(),
            "k1",
            "escaped strings are read, not refused"
        );
        for (header, expected) in [
            (
                r#"{"alg":"ES256","typ":"at+jwt","kid":"k","crit":null}"#,
                VerifyError::UnknownCritical,
            ),
            (
                r#"{"alg":"ES256","typ":"at+jwt","kid":"k","crit":["exp"]}"#,
                VerifyError::UnknownCritical,
            ),
            (
                r#"{"alg":"ES256","typ":"at+jwt","kid":"k","zip":null}"#,
                VerifyError::Malformed("a JWS header must not carry zip or enc"),
            ),
            (
                r#"{"alg":"ES256","typ":"at+jwt","kid":"k","enc":"A256GCM"}"#,
                VerifyError::Malformed("a JWS header must not carry zip or enc"),
            ),
            (
                r#"{"alg":"none","typ":"at+jwt","kid":"k"}"#,
                VerifyError::Algorithm("none".into()),
            ),
            (
                r#"{"alg":null,"typ":"at+jwt","kid":"k"}"#,
                VerifyError::Malformed("header has no alg"),
            ),
            (
                r#"{"alg":"ES256","typ":"JWT","kid":"k"}"#,
                VerifyError::WrongType,
            ),
            (
                r#"{"alg":"ES256","typ":"at+jwt"}"#,
                VerifyError::Malformed("header has no usable kid"),
            ),
            (
                r#"{"alg":"ES256","typ":"at+jwt","kid":""}"#,
                VerifyError::Malformed("header has no usable kid"),
            ),
        ] {
            assert_eq!(jws(header), Err(expected), "{header}");
        }
        for header in [
            r#"{"alg":"HS256","alg":"ES256","typ":"at+jwt","kid":"k"}"#,
            r#"["ES256","at+jwt","k"]"#,
            "null",
            "",
        ] {
            assert!(
                matches!(jws(header), Err(VerifyError::Malformed(_))),
                "{header}"
            );
        }
    }

    #[test]
    fn signature_scalars_must_be_in_range() {
        let one = {
            let mut b = [0u8; 32];
            b[31] = 1;
            b
        };
        let n_minus_1 = {
            let mut b = P256_ORDER;
            b[31] -= 1;
            b
        };
        assert!(es256_signature(&sig(one, n_minus_1)).is_ok());
        assert!(es256_signature(&sig([0; 32], one)).is_err());
        assert!(es256_signature(&sig(one, [0; 32])).is_err());
        assert!(es256_signature(&sig(P256_ORDER, one)).is_err());
        assert!(es256_signature(&sig(one, [0xFF; 32])).is_err());
        assert!(es256_signature(&URL_SAFE_NO_PAD.encode([1u8; 63])).is_err());
        assert!(es256_signature("!!!").is_err());
    }
}
