//! How one key differs between the source and the target.

use crate::state::{Data, KeyState};
use std::collections::BTreeMap;
use std::fmt;

/// One way a key differs.
#[derive(Debug, Clone, PartialEq)]
pub enum Difference {
    /// The key is in the source only.
    MissingInTarget {
        /// Its type in the source.
        source_type: String,
    },
    /// The key is in the target only.
    MissingInSource {
        /// Its type in the target.
        target_type: String,
    },
    /// Both have the key, with different types.
    Type {
        /// The source's type.
        source: String,
        /// The target's type.
        target: String,
    },
    /// Same type, different values; the text says how.
    Value(String),
    /// One has a TTL and the other not, or both have TTLs further apart
    /// than the slack.
    Ttl {
        /// The source's PTTL (ms), `None` for no TTL.
        source: Option<i64>,
        /// The target's PTTL (ms), `None` for no TTL.
        target: Option<i64>,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingInTarget { source_type } => {
                write!(f, "missing in target (source has a {source_type})")
            }
            Self::MissingInSource { target_type } => {
                write!(f, "not in source (target has a {target_type})")
            }
            Self::Type { source, target } => write!(f, "type: source {source}, target {target}"),
            Self::Value(how) => write!(f, "value: {how}"),
            Self::Ttl { source, target } => {
                let ms = |t: &Option<i64>| t.map_or("none".to_owned(), |t| format!("{t} ms"));
                write!(f, "ttl: source {}, target {}", ms(source), ms(target))
            }
        }
    }
}

/// The differences of one key; empty when it is the same on both sides.
pub fn diff(
    source: Option<&KeyState>,
    target: Option<&KeyState>,
    ttl_slack_ms: u64,
) -> Vec<Difference> {
    let (s, t) = match (source, target) {
        (None, None) => return Vec::new(),
        (Some(s), None) => {
            return vec![Difference::MissingInTarget {
                source_type: s.type_name.clone(),
            }]
        }
        (None, Some(t)) => {
            return vec![Difference::MissingInSource {
                target_type: t.type_name.clone(),
            }]
        }
        (Some(s), Some(t)) => (s, t),
    };
    let mut out = Vec::new();
    if s.type_name != t.type_name {
        out.push(Difference::Type {
            source: s.type_name.clone(),
            target: t.type_name.clone(),
        });
    } else if let (Some(a), Some(b)) = (&s.data, &t.data) {
        if let Some(how) = value(a, b) {
            out.push(Difference::Value(how));
        }
    }
    let ttl_ok = match (s.pttl, t.pttl) {
        (None, None) => true,
        (Some(a), Some(b)) => a.abs_diff(b) <= ttl_slack_ms,
        _ => false,
    };
    if !ttl_ok {
        out.push(Difference::Ttl {
            source: s.pttl,
            target: t.pttl,
        });
    }
    out
}

/// How two values of the same type differ, or `None` when they are equal.
fn value(a: &Data, b: &Data) -> Option<String> {
    if a == b {
        return None;
    }
    Some(match (a, b) {
        (Data::String(a), Data::String(b)) => sequence("string", "bytes", a, b),
        (Data::List(a), Data::List(b)) => sequence("list", "elements", a, b),
        (Data::Set(a), Data::Set(b)) => {
            let only_a: Vec<_> = a.difference(b).collect();
            let only_b: Vec<_> = b.difference(a).collect();
            let example = only_a.first().or(only_b.first()).map(|m| show(m));
            format!(
                "set: {} members only in source, {} only in target (e.g. {})",
                only_a.len(),
                only_b.len(),
                example.unwrap_or_default()
            )
        }
        (Data::Hash(a), Data::Hash(b)) => maps("hash", "fields", a, b, |v| show(v)),
        (Data::Zset(a), Data::Zset(b)) => maps("zset", "members", a, b, |s| format!("{s:?}")),
        _ => "different kinds of value".to_owned(),
    })
}

/// Two sequences (a string's bytes, a list's elements) that differ.
fn sequence<T: PartialEq>(kind: &str, unit: &str, a: &[T], b: &[T]) -> String {
    let first = a.iter().zip(b).position(|(x, y)| x != y);
    let at = first.map_or(String::new(), |i| format!(", first difference at {i}"));
    format!("{kind}: source {} {unit}, target {}{at}", a.len(), b.len())
}

/// Two maps (hash fields, zset members) that differ.
fn maps<V: PartialEq>(
    kind: &str,
    unit: &str,
    a: &BTreeMap<Vec<u8>, V>,
    b: &BTreeMap<Vec<u8>, V>,
    show_value: impl Fn(&V) -> String,
) -> String {
    let only_a = a.keys().filter(|k| !b.contains_key(*k)).count();
    let only_b = b.keys().filter(|k| !a.contains_key(*k)).count();
    let changed: Vec<_> = a
        .iter()
        .filter_map(|(k, v)| Some((k, v, b.get(k).filter(|w| *w != v)?)))
        .collect();
    let example = match changed.first() {
        Some((k, v, w)) => format!(
            " (e.g. {}: {} vs {})",
            show(k),
            show_value(v),
            show_value(w)
        ),
        None => String::new(),
    };
    format!(
        "{kind}: {only_a} {unit} only in source, {only_b} only in target, {} with other values{example}",
        changed.len()
    )
}

/// Bytes for a message: quoted, non-printable bytes as `\xNN`, cut at 60.
pub fn show(b: &[u8]) -> String {
    const MAX: usize = 60;
    let mut s = String::from("\"");
    for &c in b.iter().take(MAX) {
        match c {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(char::from(c)),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s.push('"');
    if b.len() > MAX {
        s.push_str(&format!("...({} bytes)", b.len()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(type_name: &str, data: Option<Data>, pttl: Option<i64>) -> KeyState {
        KeyState {
            type_name: type_name.to_owned(),
            data,
            pttl,
        }
    }

    fn s(v: &str, pttl: Option<i64>) -> KeyState {
        state("string", Some(Data::String(v.as_bytes().to_vec())), pttl)
    }

    #[test]
    fn equal_keys() {
        assert!(diff(None, None, 0).is_empty());
        assert!(diff(Some(&s("v", None)), Some(&s("v", None)), 0).is_empty());
        assert!(diff(Some(&s("v", Some(5000))), Some(&s("v", Some(3000))), 2000).is_empty());
        let stream = state("stream", None, None);
        assert!(diff(Some(&stream), Some(&stream), 0).is_empty());
    }

    #[test]
    fn each_difference() {
        assert_eq!(
            diff(Some(&s("v", None)), None, 0),
            [Difference::MissingInTarget {
                source_type: "string".into()
            }]
        );
        assert_eq!(
            diff(None, Some(&s("v", None)), 0),
            [Difference::MissingInSource {
                target_type: "string".into()
            }]
        );
        assert_eq!(
            diff(
                Some(&s("v", None)),
                Some(&state("list", Some(Data::List(vec![])), None)),
                0
            ),
            [Difference::Type {
                source: "string".into(),
                target: "list".into()
            }]
        );
        let d = diff(Some(&s("abc", Some(9000))), Some(&s("abd", None)), 2000);
        assert_eq!(d.len(), 2);
        assert_eq!(
            d[0].to_string(),
            "value: string: source 3 bytes, target 3, first difference at 2"
        );
        assert_eq!(d[1].to_string(), "ttl: source 9000 ms, target none");
        let d = diff(Some(&s("v", Some(9000))), Some(&s("v", Some(6999))), 2000);
        assert_eq!(
            d,
            [Difference::Ttl {
                source: Some(9000),
                target: Some(6999)
            }]
        );
    }

    #[test]
    fn value_texts() {
        let z = |p: &[(&str, f64)]| {
            Data::Zset(p.iter().map(|(m, s)| (m.as_bytes().to_vec(), *s)).collect())
        };
        assert_eq!(
            value(&z(&[("a", 1.0), ("b", 2.0)]), &z(&[("a", 1.5)])).unwrap(),
            "zset: 1 members only in source, 0 only in target, 1 with other values (e.g. \"a\": 1.0 vs 1.5)"
        );
        assert_eq!(value(&z(&[("a", 0.0)]), &z(&[("a", -0.0)])), None);
        let set = |m: &[&str]| Data::Set(m.iter().map(|m| m.as_bytes().to_vec()).collect());
        assert_eq!(
            value(&set(&["a"]), &set(&["b", "c"])).unwrap(),
            "set: 1 members only in source, 2 only in target (e.g. \"a\")"
        );
        assert_eq!(show(b"a\"\xff"), r#""a\"\xff""#);
    }
}
