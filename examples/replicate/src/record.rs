//! One message of the module's JSON stream, and what it asks of a replica.
//!
//! ```text
//! {"id":"<message_id>","time":<unix s>,"node":"<port>/<tag>","db":0,
//!  "event":"set","key":<bytes>,"before":<image>,"after":<image>}
//! ```
//!
//! plus `"keys":N` on `snapshot_end`. Members the contract does not name
//! are ignored.

use crate::image::{Body, Image, Kind, Omitted, Value};
use crate::wire;
use crate::Error;

/// The highest database number a key event may name.
pub const MAX_DB: i64 = 15;

/// One parsed message.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// `"id"`: the AMQP message id, `<node tag>-<sequence>`.
    pub id: String,
    /// `"time"`: seconds since the epoch when the event happened.
    pub time: u64,
    /// `"node"`: `<redis port>/<node tag>`.
    pub node: String,
    /// `"db"`: the database (-1 only for `flushall`).
    pub db: i64,
    /// `"event"`: the keyspace event (`set`, `del`, `snapshot`, ...).
    pub event: String,
    /// `"key"`: the key's bytes (empty for `flushdb` and `flushall`; the
    /// other database's number for `swapdb`).
    pub key: Vec<u8>,
    /// `"before"`: the value the event removed or replaced.
    pub before: Option<Image>,
    /// `"after"`: the value just after the event.
    pub after: Option<Image>,
    /// `"keys"`: the key count of a `snapshot_end` (informational).
    pub keys: Option<u64>,
}

/// What applying a [`Record`] to a replica means.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action<'a> {
    /// The key holds no value now: `DEL` it in `db`.
    Delete {
        /// The database.
        db: u8,
    },
    /// Replace the key by this value (and TTL) in `db`.
    Write {
        /// The database.
        db: u8,
        /// The whole value.
        value: &'a Value,
        /// When the key expires (unix ms), if it has a TTL.
        pexpireat: Option<i64>,
    },
    /// The key has a value the message does not carry: leave it alone.
    Unapplied {
        /// The value's type.
        kind: Kind,
        /// Why it is not carried.
        omitted: Omitted,
    },
    /// `FLUSHDB` in `db`.
    FlushDb {
        /// The database.
        db: u8,
    },
    /// `FLUSHALL`.
    FlushAll,
    /// `SWAPDB a b`.
    SwapDb {
        /// The event's database.
        a: u8,
        /// The database its key names.
        b: u8,
    },
    /// `snapshot_begin` / `snapshot_end`: nothing to do.
    Marker,
}

/// Events after which the key holds no value, whatever the message carries.
const GONE: [&str; 5] = ["del", "expired", "evicted", "rename_from", "move_from"];

impl Record {
    /// Parses a message body. A body that is not a JSON object (the seed
    /// format) is [`Error::NotJson`]; a record whose action would be invalid
    /// (a db out of range, a `swapdb` key that is not a db number) fails
    /// here too, so a parsed record can always be applied.
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => {}
            _ => return Err(Error::NotJson),
        }
        let json: serde_json::Value = serde_json::from_slice(body)?;
        let o = json
            .as_object()
            .ok_or_else(|| Error::invalid("expected an object"))?;
        let image = |name: &str| o.get(name).map(|v| Image::from_json(v, name)).transpose();
        let record = Self {
            id: wire::text(wire::member(o, "id", "message")?, "id")?.to_owned(),
            time: wire::uint(wire::member(o, "time", "message")?, "time")?,
            node: wire::text(wire::member(o, "node", "message")?, "node")?.to_owned(),
            db: wire::int(wire::member(o, "db", "message")?, "db")?,
            event: String::from_utf8(wire::bytes(wire::member(o, "event", "message")?, "event")?)
                .map_err(|_| Error::invalid("event: not UTF-8"))?,
            key: wire::bytes(wire::member(o, "key", "message")?, "key")?,
            before: image("before")?,
            after: image("after")?,
            keys: o.get("keys").map(|k| wire::uint(k, "keys")).transpose()?,
        };
        record.action()?;
        Ok(record)
    }

    /// What the record asks of a replica (see the crate docs for the rules).
    pub fn action(&self) -> Result<Action<'_>, Error> {
        let event = self.event.as_str();
        Ok(match event {
            "snapshot_begin" | "snapshot_end" => Action::Marker,
            "flushall" if self.db == -1 => Action::FlushAll,
            "flushall" => {
                self.db()?;
                Action::FlushAll
            }
            "flushdb" => Action::FlushDb { db: self.db()? },
            "swapdb" => {
                let a = self.db()?;
                let b = std::str::from_utf8(&self.key)
                    .ok()
                    .and_then(|k| k.parse::<i64>().ok())
                    .ok_or_else(|| Error::invalid("swapdb: the key is not a db number"))?;
                Action::SwapDb {
                    a,
                    b: db_in_range(b, event)?,
                }
            }
            _ if GONE.contains(&event) => Action::Delete { db: self.db()? },
            _ => {
                let db = self.db()?;
                match &self.after {
                    None => Action::Delete { db },
                    Some(Image {
                        body: Body::Value(value),
                        pexpireat,
                        ..
                    }) => Action::Write {
                        db,
                        value,
                        pexpireat: *pexpireat,
                    },
                    Some(Image {
                        kind,
                        body: Body::Omitted(omitted),
                        ..
                    }) => Action::Unapplied {
                        kind: *kind,
                        omitted: *omitted,
                    },
                }
            }
        })
    }

    /// The record's db as a key event's database.
    fn db(&self) -> Result<u8, Error> {
        db_in_range(self.db, &self.event)
    }
}

fn db_in_range(db: i64, event: &str) -> Result<u8, Error> {
    u8::try_from(db)
        .ok()
        .filter(|d| i64::from(*d) <= MAX_DB)
        .ok_or_else(|| Error::Db {
            db,
            event: event.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(extra: serde_json::Value) -> Result<Record, Error> {
        let mut o = json!({"id":"9f3c-42","time":1764572700,"node":"6379/9f3c","db":0,
                           "event":"set","key":"user:1"});
        for (k, v) in extra.as_object().unwrap() {
            o[k] = v.clone();
        }
        Record::parse(o.to_string().as_bytes())
    }

    #[test]
    fn the_readme_example() {
        let body = br#"{"id":"9f3c2a1b0d4e5f60-42","time":1764572700,"node":"6379/9f3c2a1b0d4e5f60","db":0,
 "event":"set","key":"user:1","before":{"type":"string","value":"old"},
 "after":{"type":"string","value":"new"}}"#;
        let r = Record::parse(body).unwrap();
        assert_eq!(r.id, "9f3c2a1b0d4e5f60-42");
        assert_eq!(r.time, 1_764_572_700);
        assert_eq!(r.node, "6379/9f3c2a1b0d4e5f60");
        assert_eq!(
            (r.db, r.event.as_str(), &r.key[..]),
            (0, "set", &b"user:1"[..])
        );
        assert_eq!(
            r.before.as_ref().unwrap().body,
            Body::Value(Value::String(b"old".to_vec()))
        );
        assert_eq!(
            r.action().unwrap(),
            Action::Write {
                db: 0,
                value: &Value::String(b"new".to_vec()),
                pexpireat: None
            }
        );
    }

    #[test]
    fn binary_keys() {
        let r = rec(json!({"key":{"base64":"awr/"}})).unwrap();
        assert_eq!(r.key, b"k\n\xff");
    }

    #[test]
    fn actions() {
        let after = json!({"type":"hash","value":[["f","v"]],"pexpireat":1800000000000i64});
        let r = rec(json!({"db":3,"after":after})).unwrap();
        assert_eq!(
            r.action().unwrap(),
            Action::Write {
                db: 3,
                value: &Value::Hash(vec![(b"f".to_vec(), b"v".to_vec())]),
                pexpireat: Some(1_800_000_000_000)
            }
        );
        for event in GONE {
            // A delete event deletes even if something came as "after".
            let r =
                rec(json!({"event":event,"db":2,"after":{"type":"string","value":"x"}})).unwrap();
            assert_eq!(r.action().unwrap(), Action::Delete { db: 2 }, "{event}");
        }
        // No after: the key holds no value now.
        let r = rec(json!({"event":"lpop"})).unwrap();
        assert_eq!(r.action().unwrap(), Action::Delete { db: 0 });
        let r =
            rec(json!({"event":"snapshot","after":{"type":"stream","omitted":"type"}})).unwrap();
        assert_eq!(
            r.action().unwrap(),
            Action::Unapplied {
                kind: Kind::Stream,
                omitted: Omitted::Type
            }
        );
        let r = rec(json!({"event":"flushdb","db":4,"key":""})).unwrap();
        assert_eq!(r.action().unwrap(), Action::FlushDb { db: 4 });
        let r = rec(json!({"event":"flushall","db":-1,"key":""})).unwrap();
        assert_eq!(r.action().unwrap(), Action::FlushAll);
        let r = rec(json!({"event":"flushall","db":0,"key":""})).unwrap();
        assert_eq!(r.action().unwrap(), Action::FlushAll);
        let r = rec(json!({"event":"swapdb","db":1,"key":"15"})).unwrap();
        assert_eq!(r.action().unwrap(), Action::SwapDb { a: 1, b: 15 });
        for event in ["snapshot_begin", "snapshot_end"] {
            let r = rec(json!({"event":event,"key":"","keys":12})).unwrap();
            assert_eq!(r.action().unwrap(), Action::Marker);
        }
        assert_eq!(
            rec(json!({"event":"snapshot_end","keys":12})).unwrap().keys,
            Some(12)
        );
    }

    #[test]
    fn db_ranges() {
        for db in [-1, 16, 1i64 << 40] {
            assert!(
                matches!(rec(json!({"db":db})), Err(Error::Db { .. })),
                "{db}"
            );
        }
        assert!(rec(json!({"event":"flushall","db":-2})).is_err());
        assert!(rec(json!({"event":"flushdb","db":-1})).is_err());
        assert!(rec(json!({"event":"swapdb","db":0,"key":"16"})).is_err());
        assert!(rec(json!({"event":"swapdb","db":0,"key":"x"})).is_err());
        assert!(rec(json!({"db":15})).is_ok());
    }

    #[test]
    fn seed_messages_are_refused_with_the_fix() {
        for body in [&b"0\nset\nkey"[..], b"-1\nflushall\n", b"", b"  [1]"] {
            let e = Record::parse(body).unwrap_err();
            assert!(matches!(e, Error::NotJson), "{e}");
            let text = e.to_string();
            assert!(
                text.contains("format json") && text.contains("values after"),
                "{text}"
            );
        }
    }

    #[test]
    fn malformed_records() {
        assert!(matches!(Record::parse(b"{not json"), Err(Error::Json(_))));
        for (name, bad) in [
            ("id", json!(1)),
            ("db", json!("0")),
            ("time", json!(-1)),
            ("key", json!(null)),
            ("event", json!({"base64":"/w=="})),
            ("after", json!({"type":"string"})),
            ("before", json!(1)),
            ("keys", json!("3")),
        ] {
            assert!(rec(json!({ name: bad })).is_err(), "{name}");
        }
        let no_id = br#"{"time":1,"node":"n","db":0,"event":"set","key":"k"}"#;
        assert!(Record::parse(no_id).is_err());
        // Unknown members are ignored.
        assert!(rec(json!({"future":[1,2]})).is_ok());
    }
}
