//! A value image (`"before"` / `"after"`): `{"type":T,"value":V}`, or
//! `{"type":T,"omitted":"type"}`, or `{"type":T,"omitted":"size","size":N}`,
//! each with `"pexpireat":<unix ms>` when the key has a TTL.

use crate::wire;
use crate::Error;
use serde_json::Value as Json;
use std::fmt;

/// The type of a value, as the `"type"` member names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `string`
    String,
    /// `hash`
    Hash,
    /// `list`
    List,
    /// `set`
    Set,
    /// `zset`
    Zset,
    /// `stream` (never carried: always omitted)
    Stream,
    /// `module` (never carried: always omitted)
    Module,
}

impl Kind {
    /// The `"type"` text.
    pub fn name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Hash => "hash",
            Self::List => "list",
            Self::Set => "set",
            Self::Zset => "zset",
            Self::Stream => "stream",
            Self::Module => "module",
        }
    }

    /// Parses the `"type"` text.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "string" => Self::String,
            "hash" => Self::Hash,
            "list" => Self::List,
            "set" => Self::Set,
            "zset" => Self::Zset,
            "stream" => Self::Stream,
            "module" => Self::Module,
            _ => return None,
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A value the message carries in full.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string's bytes.
    String(Vec<u8>),
    /// Field/value pairs, in the server's order.
    Hash(Vec<(Vec<u8>, Vec<u8>)>),
    /// Elements, head first.
    List(Vec<Vec<u8>>),
    /// Members, in the server's order.
    Set(Vec<Vec<u8>>),
    /// Member/score pairs, in the server's order.
    Zset(Vec<(Vec<u8>, f64)>),
}

impl Value {
    /// Its type.
    pub fn kind(&self) -> Kind {
        match self {
            Self::String(_) => Kind::String,
            Self::Hash(_) => Kind::Hash,
            Self::List(_) => Kind::List,
            Self::Set(_) => Kind::Set,
            Self::Zset(_) => Kind::Zset,
        }
    }
}

/// Why an image has no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Omitted {
    /// `"omitted":"type"`: a stream or module value, never carried.
    Type,
    /// `"omitted":"size","size":N`: over the module's `value-max-bytes`;
    /// N is a string's length in bytes or an aggregate's element count.
    Size(u64),
}

impl fmt::Display for Omitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Type => f.write_str("omitted for its type"),
            Self::Size(n) => write!(f, "omitted for its size ({n})"),
        }
    }
}

/// What an image holds: the value, or why it is not there.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// The whole value.
    Value(Value),
    /// No value.
    Omitted(Omitted),
}

/// One value image.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// The `"type"`.
    pub kind: Kind,
    /// The value or its omission.
    pub body: Body,
    /// `"pexpireat"`: when the key expires (unix ms); `None` when it has no TTL.
    pub pexpireat: Option<i64>,
}

impl Image {
    /// Reads an image object; `what` names it in errors (`"after"`).
    pub fn from_json(v: &Json, what: &str) -> Result<Self, Error> {
        let o = v
            .as_object()
            .ok_or_else(|| Error::invalid(format!("{what}: expected an object")))?;
        let type_name = wire::text(wire::member(o, "type", what)?, what)?;
        let kind = Kind::parse(type_name)
            .ok_or_else(|| Error::invalid(format!("{what}: unknown type {type_name:?}")))?;
        let pexpireat = o
            .get("pexpireat")
            .map(|t| wire::int(t, &format!("{what}.pexpireat")))
            .transpose()?;
        let body = match (o.get("omitted"), o.get("value")) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid(format!(
                    "{what}: both \"value\" and \"omitted\""
                )))
            }
            (Some(reason), None) => Body::Omitted(omitted(o, reason, what)?),
            (None, Some(value)) => Body::Value(self::value(kind, value, what)?),
            (None, None) => {
                return Err(Error::invalid(format!(
                    "{what}: neither \"value\" nor \"omitted\""
                )))
            }
        };
        Ok(Self {
            kind,
            body,
            pexpireat,
        })
    }
}

fn omitted(o: &serde_json::Map<String, Json>, reason: &Json, what: &str) -> Result<Omitted, Error> {
    match wire::text(reason, what)? {
        "type" => Ok(Omitted::Type),
        "size" => Ok(Omitted::Size(wire::uint(
            wire::member(o, "size", what)?,
            &format!("{what}.size"),
        )?)),
        other => Err(Error::invalid(format!(
            "{what}: unknown \"omitted\" reason {other:?}"
        ))),
    }
}

fn value(kind: Kind, v: &Json, what: &str) -> Result<Value, Error> {
    let what = &format!("{what}.value");
    let elems = || -> Result<Vec<Vec<u8>>, Error> {
        wire::array(v, what)?
            .iter()
            .map(|e| wire::bytes(e, what))
            .collect()
    };
    Ok(match kind {
        Kind::String => Value::String(wire::bytes(v, what)?),
        Kind::List => Value::List(elems()?),
        Kind::Set => Value::Set(elems()?),
        Kind::Hash => Value::Hash(
            wire::array(v, what)?
                .iter()
                .map(|e| {
                    let (f, x) = wire::pair(e, what)?;
                    Ok((wire::bytes(f, what)?, wire::bytes(x, what)?))
                })
                .collect::<Result<_, Error>>()?,
        ),
        Kind::Zset => Value::Zset(
            wire::array(v, what)?
                .iter()
                .map(|e| {
                    let (m, s) = wire::pair(e, what)?;
                    Ok((wire::bytes(m, what)?, wire::score(s, what)?))
                })
                .collect::<Result<_, Error>>()?,
        ),
        Kind::Stream | Kind::Module => {
            return Err(Error::invalid(format!(
                "{what}: a {kind} image carries no value"
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn image(v: Json) -> Result<Image, Error> {
        Image::from_json(&v, "after")
    }

    fn value_of(v: Json) -> Value {
        match image(v).unwrap().body {
            Body::Value(v) => v,
            Body::Omitted(o) => panic!("omitted: {o}"),
        }
    }

    #[test]
    fn every_carried_type() {
        assert_eq!(
            value_of(json!({"type":"string","value":"v1"})),
            Value::String(b"v1".to_vec())
        );
        assert_eq!(
            value_of(json!({"type":"hash","value":[["f","v"],["g",{"base64":"/w=="}]]})),
            Value::Hash(vec![
                (b"f".to_vec(), b"v".to_vec()),
                (b"g".to_vec(), b"\xff".to_vec())
            ])
        );
        assert_eq!(
            value_of(json!({"type":"list","value":["a","b","a"]})),
            Value::List(vec![b"a".to_vec(), b"b".to_vec(), b"a".to_vec()])
        );
        assert_eq!(
            value_of(json!({"type":"set","value":["m",{"base64":"AA=="}]})),
            Value::Set(vec![b"m".to_vec(), b"\0".to_vec()])
        );
        assert_eq!(
            value_of(
                json!({"type":"zset","value":[["a",1.5],["b","inf"],["c","-inf"],["d",-2.5e300]]})
            ),
            Value::Zset(vec![
                (b"a".to_vec(), 1.5),
                (b"b".to_vec(), f64::INFINITY),
                (b"c".to_vec(), f64::NEG_INFINITY),
                (b"d".to_vec(), -2.5e300)
            ])
        );
        assert_eq!(
            value_of(json!({"type":"set","value":[]})),
            Value::Set(vec![])
        );
    }

    #[test]
    fn scores_read_back_exactly() {
        // Shortest round-trip forms, as the module writes them.
        for s in [
            0.1,
            1.0 / 3.0,
            2.0f64.powi(-1074),
            f64::MAX,
            123_456_789.123_456_78,
        ] {
            let text = format!(r#"{{"type":"zset","value":[["m",{s:?}]]}}"#);
            let v: Json = serde_json::from_str(&text).unwrap();
            assert_eq!(
                Image::from_json(&v, "after").unwrap().body,
                Body::Value(Value::Zset(vec![(b"m".to_vec(), s)])),
                "{text}"
            );
        }
    }

    #[test]
    fn pexpireat_present_or_absent() {
        let with =
            image(json!({"type":"string","value":"v","pexpireat":1764572700123i64})).unwrap();
        assert_eq!(with.pexpireat, Some(1_764_572_700_123));
        let without = image(json!({"type":"string","value":"v"})).unwrap();
        assert_eq!(without.pexpireat, None);
        let omitted = image(json!({"type":"stream","omitted":"type","pexpireat":5})).unwrap();
        assert_eq!(omitted.pexpireat, Some(5));
        assert!(image(json!({"type":"string","value":"v","pexpireat":"5"})).is_err());
        assert!(image(json!({"type":"string","value":"v","pexpireat":null})).is_err());
    }

    #[test]
    fn omitted_images() {
        assert_eq!(
            image(json!({"type":"stream","omitted":"type"})).unwrap(),
            Image {
                kind: Kind::Stream,
                body: Body::Omitted(Omitted::Type),
                pexpireat: None
            }
        );
        assert_eq!(
            image(json!({"type":"module","omitted":"type"}))
                .unwrap()
                .kind,
            Kind::Module
        );
        assert_eq!(
            image(json!({"type":"string","omitted":"size","size":70000}))
                .unwrap()
                .body,
            Body::Omitted(Omitted::Size(70_000))
        );
        assert_eq!(
            image(json!({"type":"list","omitted":"size","size":7}))
                .unwrap()
                .body,
            Body::Omitted(Omitted::Size(7))
        );
        assert!(
            image(json!({"type":"list","omitted":"size"})).is_err(),
            "no size"
        );
        assert!(image(json!({"type":"list","omitted":"why"})).is_err());
    }

    #[test]
    fn malformed_images() {
        for bad in [
            json!("string"),
            json!({"value":"v"}),
            json!({"type":"bitmap","value":"v"}),
            json!({"type":"string"}),
            json!({"type":"string","value":"v","omitted":"type"}),
            json!({"type":"stream","value":[]}),
            json!({"type":"string","value":["v"]}),
            json!({"type":"hash","value":[["f"]]}),
            json!({"type":"hash","value":["f","v"]}),
            json!({"type":"zset","value":[["m","nan"]]}),
            json!({"type":"list","value":[1]}),
        ] {
            assert!(image(bad.clone()).is_err(), "{bad}");
        }
    }
}
