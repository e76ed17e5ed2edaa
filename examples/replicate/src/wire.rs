//! The JSON leaves of the message: `<bytes>`, scores and integers, read out
//! of a `serde_json::Value` with an error that names the member.

use crate::Error;
use base64::Engine as _;
use serde_json::{Map, Value};

/// `<bytes>`: a JSON string (its UTF-8 bytes), or `{"base64":"..."}`
/// (standard alphabet, padded).
pub fn bytes(v: &Value, what: &str) -> Result<Vec<u8>, Error> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Object(o) => match (o.get("base64"), o.len()) {
            (Some(Value::String(b)), 1) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| Error::invalid(format!("{what}: bad base64: {e}"))),
            _ => Err(Error::invalid(format!(
                "{what}: an object must be {{\"base64\":\"...\"}}"
            ))),
        },
        _ => Err(Error::invalid(format!(
            "{what}: expected a string or {{\"base64\":...}}, got {}",
            kind_of(v)
        ))),
    }
}

/// A zset score: a JSON number, or `"inf"` / `"-inf"` (`"+inf"` too).
pub fn score(v: &Value, what: &str) -> Result<f64, Error> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| Error::invalid(format!("{what}: score {n} is not a double"))),
        Value::String(s) => match s.as_str() {
            "inf" | "+inf" => Ok(f64::INFINITY),
            "-inf" => Ok(f64::NEG_INFINITY),
            _ => Err(Error::invalid(format!(
                "{what}: score {s:?} (only \"inf\" and \"-inf\" are strings)"
            ))),
        },
        _ => Err(Error::invalid(format!(
            "{what}: a score must be a number, got {}",
            kind_of(v)
        ))),
    }
}

/// A required member of `o`.
pub fn member<'a>(o: &'a Map<String, Value>, name: &str, what: &str) -> Result<&'a Value, Error> {
    o.get(name)
        .ok_or_else(|| Error::invalid(format!("{what}: no \"{name}\"")))
}

/// A signed integer.
pub fn int(v: &Value, what: &str) -> Result<i64, Error> {
    v.as_i64()
        .ok_or_else(|| Error::invalid(format!("{what}: expected an integer, got {v}")))
}

/// An unsigned integer.
pub fn uint(v: &Value, what: &str) -> Result<u64, Error> {
    v.as_u64()
        .ok_or_else(|| Error::invalid(format!("{what}: expected a non-negative integer, got {v}")))
}

/// A string.
pub fn text<'a>(v: &'a Value, what: &str) -> Result<&'a str, Error> {
    v.as_str()
        .ok_or_else(|| Error::invalid(format!("{what}: expected a string, got {}", kind_of(v))))
}

/// An array.
pub fn array<'a>(v: &'a Value, what: &str) -> Result<&'a [Value], Error> {
    v.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| Error::invalid(format!("{what}: expected an array, got {}", kind_of(v))))
}

/// A `[a, b]` pair.
pub fn pair<'a>(v: &'a Value, what: &str) -> Result<(&'a Value, &'a Value), Error> {
    match array(v, what)? {
        [a, b] => Ok((a, b)),
        other => Err(Error::invalid(format!(
            "{what}: expected a pair, got {} elements",
            other.len()
        ))),
    }
}

/// The JSON kind of `v`, for messages.
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bytes_are_strings_or_base64() {
        assert_eq!(bytes(&json!("é\n"), "k").unwrap(), "é\n".as_bytes());
        assert_eq!(bytes(&json!({"base64": "/wA="}), "k").unwrap(), b"\xff\x00");
        assert_eq!(bytes(&json!({"base64": ""}), "k").unwrap(), b"");
        assert!(bytes(&json!({"base64": "/wA"}), "k").is_err(), "unpadded");
        assert!(bytes(&json!({"base64": "/wA=", "x": 1}), "k").is_err());
        assert!(bytes(&json!(1), "k").is_err());
    }

    #[test]
    fn scores() {
        assert_eq!(score(&json!(1.5), "s").unwrap(), 1.5);
        assert_eq!(score(&json!(-2.5e300), "s").unwrap(), -2.5e300);
        assert_eq!(score(&json!(3), "s").unwrap(), 3.0);
        assert_eq!(score(&json!("inf"), "s").unwrap(), f64::INFINITY);
        assert_eq!(score(&json!("-inf"), "s").unwrap(), f64::NEG_INFINITY);
        assert!(score(&json!("nan"), "s").is_err());
        assert!(score(&json!("1.5"), "s").is_err());
        assert!(score(&json!(null), "s").is_err());
    }
}
