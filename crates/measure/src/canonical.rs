//! RFC 8785 (JSON Canonicalization Scheme) serialization.
//!
//! Object members are sorted by the UTF-16 code units of their names, strings use the minimal
//! escaping of ECMAScript's `JSON.stringify`, and there is no whitespace. Numbers are limited to
//! integers exactly representable as IEEE-754 doubles (|n| <= 2^53), and written as integers:
//! vouch never measures fractional numbers, and refusing them is safer than formatting them in a
//! way another implementation might not reproduce. A number that was spelt as a double (`139.0`,
//! `1.39e2`, `-0`) is refused too, although it denotes an integer: evidence that re-encodes a
//! measured `139` that way would hash the same while a reader that takes the value as written
//! (not as an integer) sees something else, so only one spelling of each value is accepted.

use serde::Serialize;
use serde_json::Value;

/// Largest integer that an IEEE-754 double represents exactly.
const MAX_SAFE_INTEGER: u64 = 1 << 53;

#[derive(Debug, thiserror::Error)]
pub enum CanonicalError {
    #[error("cannot canonicalize number {0}: only integers with magnitude <= 2^53 are supported")]
    UnsupportedNumber(String),
    #[error("value is not representable as JSON")]
    Serialize(#[source] serde_json::Error),
}

/// Canonical JSON bytes of any serializable value.
pub fn to_canonical_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    let value = serde_json::to_value(value).map_err(CanonicalError::Serialize)?;
    canonicalize(&value)
}

/// `sha384:<hex>` of the canonical JSON of a value: how vouch names a measured JSON document
/// (a container's runtime spec projection, for one).
pub fn canonical_sha384(value: &Value) -> Result<String, CanonicalError> {
    Ok(format!(
        "sha384:{}",
        crate::sha384(&canonicalize(value)?).to_hex()
    ))
}

/// Canonical JSON bytes of a JSON value.
pub fn canonicalize(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(256);
    write_value(value, &mut out)?;
    Ok(out)
}

pub(crate) fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(n, out)?,
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push(b'{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write_value(v, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_number(n: &serde_json::Number, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    if let Some(u) = n.as_u64() {
        if u <= MAX_SAFE_INTEGER {
            write_int(out, u as i128);
            return Ok(());
        }
    } else if let Some(i) = n.as_i64() {
        if i.unsigned_abs() <= MAX_SAFE_INTEGER {
            write_int(out, i as i128);
            return Ok(());
        }
    }
    Err(CanonicalError::UnsupportedNumber(n.to_string()))
}

/// Decimal digits of an integer, without a temporary string.
pub(crate) fn write_int(out: &mut Vec<u8>, v: i128) {
    let mut buf = [0u8; 40];
    let mut i = buf.len();
    let mut n = v.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    out.extend_from_slice(&buf[i..]);
}

pub(crate) fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for ch in s.chars() {
        match ch {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{08}' => out.extend_from_slice(b"\\b"),
            '\u{0c}' => out.extend_from_slice(b"\\f"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(v: Value) -> String {
        String::from_utf8(canonicalize(&v).expect("canonicalize")).expect("utf8")
    }

    #[test]
    fn sorts_members_and_drops_whitespace() {
        assert_eq!(
            canon(json!({"b": 1, "a": [true, null, "x"]})),
            r#"{"a":[true,null,"x"],"b":1}"#
        );
    }

    #[test]
    fn sorts_by_utf16_code_units_not_bytes() {
        // U+E000 is one UTF-16 unit 0xE000; U+1F600 is the surrogate pair 0xD83D 0xDE00.
        // By UTF-8 bytes the emoji sorts last; by UTF-16 units it sorts first.
        let v = json!({"\u{e000}": 1, "\u{1f600}": 2});
        assert_eq!(canon(v), "{\"\u{1f600}\":2,\"\u{e000}\":1}");
    }

    #[test]
    fn escapes_like_json_stringify() {
        let v = json!("a\"b\\c\u{08}\u{0c}\n\r\t\u{01}\u{1f}/\u{7f}é");
        assert_eq!(
            canon(v),
            "\"a\\\"b\\\\c\\b\\f\\n\\r\\t\\u0001\\u001f/\u{7f}é\""
        );
    }

    #[test]
    fn rfc8785_example_subset() {
        // The integer parts of the RFC 8785 section 3.2.2 example, in its expected output order.
        let v: Value =
            serde_json::from_str(r#"{"numbers":[333333333,4,20,0],"literals":[null,true,false]}"#)
                .expect("parse");
        assert_eq!(
            canon(v),
            r#"{"literals":[null,true,false],"numbers":[333333333,4,20,0]}"#
        );
    }

    /// An integer spelt as a double is refused, naming it: one spelling per value.
    #[test]
    fn integers_spelt_as_doubles_are_refused() {
        for spelt in [
            "139.0",
            "1.39e2",
            "-0",
            "4.0",
            "2e1",
            "1E0",
            "18446744073709551616",
        ] {
            let v: Value = serde_json::from_str(spelt).expect("parse");
            let err = canonicalize(&v).expect_err(spelt);
            assert!(
                matches!(&err, CanonicalError::UnsupportedNumber(n) if !n.is_empty()),
                "{spelt}: {err}"
            );
        }
    }

    #[test]
    fn refuses_fractions_and_unsafe_integers() {
        assert!(canonicalize(&json!(1.5)).is_err());
        assert!(canonicalize(&json!(9_007_199_254_740_993u64)).is_err());
        assert!(canonicalize(&json!(-9_007_199_254_740_993i64)).is_err());
        assert!(canonicalize(&json!(9_007_199_254_740_992u64)).is_ok());
        assert_eq!(
            canon(json!([0, -1, 10, -9_007_199_254_740_992i64])),
            "[0,-1,10,-9007199254740992]"
        );
    }
}
