//! Reads keys out of a Redis server for the comparison: type, whole value
//! and TTL, a batch of keys per round trip.

use crate::Error;
use redis::{from_owned_redis_value, Connection, Value as Resp};
use std::collections::{BTreeMap, BTreeSet};

/// A value as read back, in a form that compares by content (a hash as a
/// map, a set as a set, a zset as member → score).
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// A string's bytes.
    String(Vec<u8>),
    /// Field → value.
    Hash(BTreeMap<Vec<u8>, Vec<u8>>),
    /// Elements, head first.
    List(Vec<Vec<u8>>),
    /// Members.
    Set(BTreeSet<Vec<u8>>),
    /// Member → score.
    Zset(BTreeMap<Vec<u8>, f64>),
}

/// One key as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyState {
    /// What `TYPE` says (`string`, ..., `stream`, or a module type's name).
    pub type_name: String,
    /// The value; `None` for a stream or a module type (compared by type only).
    pub data: Option<Data>,
    /// `PTTL` in ms; `None` when the key has no TTL.
    pub pttl: Option<i64>,
}

/// The command that reads a whole value of type `type_name`, if it is one
/// the comparison reads.
fn read_command(type_name: &str, key: &[u8]) -> Option<redis::Cmd> {
    let (name, tail): (&str, &[&str]) = match type_name {
        "string" => ("GET", &[]),
        "hash" => ("HGETALL", &[]),
        "set" => ("SMEMBERS", &[]),
        "list" => ("LRANGE", &["0", "-1"]),
        "zset" => ("ZRANGE", &["0", "-1", "WITHSCORES"]),
        _ => return None,
    };
    let mut c = redis::cmd(name);
    c.arg(key).arg(tail);
    Some(c)
}

/// Reads `keys` in the connection's current database; `None` for a key
/// that does not exist (any more).
pub fn fetch(conn: &mut Connection, keys: &[Vec<u8>]) -> Result<Vec<Option<KeyState>>, Error> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut types = redis::pipe();
    for key in keys {
        types.cmd("TYPE").arg(key.as_slice());
    }
    let types: Vec<String> = types.query(conn)?;
    let mut reads = redis::pipe();
    for (key, t) in keys.iter().zip(&types) {
        if t == "none" {
            continue;
        }
        if let Some(c) = read_command(t, key) {
            reads.add_command(c);
        }
        reads.cmd("PTTL").arg(key.as_slice());
    }
    let mut replies = reads.query::<Vec<Resp>>(conn)?.into_iter();
    let mut next = || {
        replies
            .next()
            .ok_or_else(|| Error::invalid("a pipeline reply is missing"))
    };
    let mut out = Vec::with_capacity(keys.len());
    for t in types {
        if t == "none" {
            out.push(None);
            continue;
        }
        let raw = if read_command(&t, b"").is_some() {
            Some(next()?)
        } else {
            None
        };
        let pttl: i64 = from_owned_redis_value(next()?)?;
        if pttl == -2 {
            // Gone between TYPE and the read.
            out.push(None);
            continue;
        }
        let data = raw.map(|r| data(&t, r)).transpose()?;
        out.push(Some(KeyState {
            type_name: t,
            data,
            pttl: (pttl >= 0).then_some(pttl),
        }));
    }
    Ok(out)
}

/// Converts the reply of [`read_command`].
fn data(type_name: &str, reply: Resp) -> Result<Data, Error> {
    Ok(match type_name {
        "string" => {
            Data::String(from_owned_redis_value::<Option<Vec<u8>>>(reply)?.unwrap_or_default())
        }
        "list" => Data::List(from_owned_redis_value(reply)?),
        "set" => Data::Set(
            from_owned_redis_value::<Vec<Vec<u8>>>(reply)?
                .into_iter()
                .collect(),
        ),
        "hash" => Data::Hash(pairs(reply)?.collect()),
        _ => Data::Zset(
            pairs(reply)?
                .map(|(m, s)| Ok((m, parse_score(&s)?)))
                .collect::<Result<_, Error>>()?,
        ),
    })
}

/// A flat `[a, b, a, b, ...]` reply as pairs.
fn pairs(reply: Resp) -> Result<impl Iterator<Item = (Vec<u8>, Vec<u8>)>, Error> {
    let flat: Vec<Vec<u8>> = from_owned_redis_value(reply)?;
    if !flat.len().is_multiple_of(2) {
        return Err(Error::invalid(
            "an odd-length reply where pairs were expected",
        ));
    }
    let mut it = flat.into_iter();
    Ok(std::iter::from_fn(move || Some((it.next()?, it.next()?))))
}

/// A score as Redis prints it (`1.5`, `0.10000000000000001`, `inf`, `-inf`).
fn parse_score(s: &[u8]) -> Result<f64, Error> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| {
            Error::invalid(format!(
                "a score Redis sent is not a number: {}",
                String::from_utf8_lossy(s)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_as_redis_prints_them() {
        assert_eq!(parse_score(b"0.10000000000000001").unwrap(), 0.1);
        assert_eq!(parse_score(b"inf").unwrap(), f64::INFINITY);
        assert_eq!(parse_score(b"-inf").unwrap(), f64::NEG_INFINITY);
        assert_eq!(parse_score(b"-2.5e+300").unwrap(), -2.5e300);
        assert!(parse_score(b"x").is_err());
    }

    #[test]
    fn only_known_types_are_read() {
        for t in ["string", "hash", "list", "set", "zset"] {
            assert!(read_command(t, b"k").is_some(), "{t}");
        }
        for t in ["stream", "ReJSON-RL", "none"] {
            assert!(read_command(t, b"k").is_none(), "{t}");
        }
    }
}
