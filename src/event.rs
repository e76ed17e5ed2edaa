//! Event types and the message encoding.
//!
//! A *record* is what the module keeps in memory and in the fallback list:
//! `<message_id>\n<timestamp>\n<body>`, where the body is the AMQP message
//! body `<db>\n<event>\n<key>` (no trailing newline; the key is raw bytes).
//!
//! A JSON record (`format json`) is `<message_id>\n<timestamp>\nJ<db>\n<event>\n<key length>\n<key><json>`:
//! the `J` (a seed body starts with a digit or `-`) marks it, the seed
//! fields give the publisher the routing key, headers and CloudEvents
//! attributes without parsing the JSON, and `<json>` alone is the AMQP
//! body. Each record keeps the format it was written in.

use std::fmt;
use thiserror::Error;

/// The keyspace-notification classes of Redis, as `RedisModule_SubscribeToKeyspaceEvents` flags.
pub mod flags {
    /// `g`
    pub const GENERIC: i32 = 1 << 2;
    /// `$`
    pub const STRING: i32 = 1 << 3;
    /// `l`
    pub const LIST: i32 = 1 << 4;
    /// `s`
    pub const SET: i32 = 1 << 5;
    /// `h`
    pub const HASH: i32 = 1 << 6;
    /// `z`
    pub const ZSET: i32 = 1 << 7;
    /// `x`
    pub const EXPIRED: i32 = 1 << 8;
    /// `e`
    pub const EVICTED: i32 = 1 << 9;
    /// `t`
    pub const STREAM: i32 = 1 << 10;
    /// `m`
    pub const KEY_MISS: i32 = 1 << 11;
    /// `n`
    pub const NEW: i32 = 1 << 14;
    /// `o` (Redis 8.2+)
    pub const OVERWRITTEN: i32 = 1 << 15;
    /// `c` (Redis 8.2+)
    pub const TYPE_CHANGED: i32 = 1 << 16;
    /// `A`: `g$lshzxe`
    pub const ALL: i32 = GENERIC | STRING | LIST | SET | HASH | ZSET | EXPIRED | EVICTED;
}

/// An invalid event-type string.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BadEventType {
    /// A letter that names no class.
    #[error("unknown event type letter '{0}' (use g $ l s h z x e t n m o c A)")]
    Unknown(char),
    /// No letter at all.
    #[error("no event type given (use one or more of g $ l s h z x e t n m o c A)")]
    Empty,
}

/// The event classes the module subscribes to, fixed at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTypes(pub i32);

impl EventTypes {
    /// The first letter whose class is not in `known` (the classes the
    /// server has), if any.
    pub fn unknown_to(&self, known: i32) -> Option<char> {
        const ORDER: [(i32, char); 4] = [
            (flags::NEW, 'n'),
            (flags::KEY_MISS, 'm'),
            (flags::OVERWRITTEN, 'o'),
            (flags::TYPE_CHANGED, 'c'),
        ];
        ORDER
            .iter()
            .find(|(f, _)| self.0 & f != 0 && known & f == 0)
            .map(|(_, c)| *c)
    }

    /// Parses a string such as `xe` or `A`.
    pub fn parse(s: &[u8]) -> Result<Self, BadEventType> {
        let mut mask = 0;
        for &c in s {
            mask |= match c {
                b'g' => flags::GENERIC,
                b'$' => flags::STRING,
                b'l' => flags::LIST,
                b's' => flags::SET,
                b'h' => flags::HASH,
                b'z' => flags::ZSET,
                b'x' => flags::EXPIRED,
                b'e' => flags::EVICTED,
                b't' => flags::STREAM,
                b'm' => flags::KEY_MISS,
                b'n' => flags::NEW,
                b'o' => flags::OVERWRITTEN,
                b'c' => flags::TYPE_CHANGED,
                b'A' => flags::ALL,
                other => return Err(BadEventType::Unknown(char::from(other))),
            };
        }
        if mask == 0 {
            return Err(BadEventType::Empty);
        }
        Ok(Self(mask))
    }
}

impl fmt::Display for EventTypes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const LETTERS: [(i32, char); 13] = [
            (flags::GENERIC, 'g'),
            (flags::STRING, '$'),
            (flags::LIST, 'l'),
            (flags::SET, 's'),
            (flags::HASH, 'h'),
            (flags::ZSET, 'z'),
            (flags::EXPIRED, 'x'),
            (flags::EVICTED, 'e'),
            (flags::STREAM, 't'),
            (flags::NEW, 'n'),
            (flags::KEY_MISS, 'm'),
            (flags::OVERWRITTEN, 'o'),
            (flags::TYPE_CHANGED, 'c'),
        ];
        for (flag, c) in LETTERS {
            if self.0 & flag != 0 {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

use crate::json::push_u64;

/// Builds records for one node: a fixed id prefix and a sequence number.
///
/// The record header `<prefix><seq>\n<timestamp>\n` is kept ready in a buffer:
/// the sequence is counted up in place as ASCII digits and the timestamp is
/// rewritten once a second, so encoding an event is a handful of copies.
#[derive(Debug, Clone)]
pub struct Encoder {
    seq: u64,
    header: Vec<u8>,
    seq_start: usize,
    seq_end: usize,
    ts: u64,
}

impl Encoder {
    /// `node` is a short id unique to this node and load (hex).
    pub fn new(node: &str) -> Self {
        let mut header = node.as_bytes().to_vec();
        header.push(b'-');
        let seq_start = header.len();
        header.extend_from_slice(b"0\n\n");
        Self {
            seq: 0,
            header,
            seq_start,
            seq_end: seq_start + 1,
            ts: u64::MAX,
        }
    }

    fn count_up(&mut self) {
        self.seq += 1;
        for i in (self.seq_start..self.seq_end).rev() {
            if self.header[i] == b'9' {
                self.header[i] = b'0';
            } else {
                self.header[i] += 1;
                return;
            }
        }
        // Every digit rolled over: one digit more.
        self.header.insert(self.seq_start, b'1');
        self.seq_end += 1;
    }

    fn set_time(&mut self, now_secs: u64) {
        self.ts = now_secs;
        self.header.truncate(self.seq_end + 1);
        push_u64(&mut self.header, now_secs);
        self.header.push(b'\n');
    }

    /// Encodes one event into a new record.
    pub fn record(&mut self, now_secs: u64, db: i32, event: &[u8], key: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.record_into(&mut out, now_secs, db, event, key);
        out
    }

    /// Takes the next sequence number, and the header's timestamp for `now_secs`.
    #[inline]
    fn next(&mut self, now_secs: u64) {
        self.count_up();
        if self.ts != now_secs {
            self.set_time(now_secs);
        }
    }

    /// Encodes one event, appending the record to `out`.
    #[inline]
    pub fn record_into(
        &mut self,
        out: &mut Vec<u8>,
        now_secs: u64,
        db: i32,
        event: &[u8],
        key: &[u8],
    ) {
        self.next(now_secs);
        out.reserve(self.header.len() + 14 + event.len() + key.len());
        out.extend_from_slice(&self.header);
        push_i32(out, db);
        out.push(b'\n');
        out.extend_from_slice(event);
        out.push(b'\n');
        out.extend_from_slice(key);
    }
}

impl Encoder {
    /// Encodes one event as a JSON record (see the module doc), appending
    /// it to `out`; `extra` appends the `"before"` / `"after"` members.
    #[allow(clippy::too_many_arguments)]
    pub fn json_into(
        &mut self,
        out: &mut Vec<u8>,
        now_secs: u64,
        db: i32,
        event: &[u8],
        key: &[u8],
        node: &str,
        extra: impl FnOnce(&mut Vec<u8>),
    ) {
        self.next(now_secs);
        out.reserve(self.header.len() * 2 + 80 + event.len() * 2 + key.len() * 2 + node.len());
        out.extend_from_slice(&self.header);
        out.push(b'J');
        push_i32(out, db);
        out.push(b'\n');
        out.extend_from_slice(event);
        out.push(b'\n');
        push_u64(out, key.len() as u64);
        out.push(b'\n');
        out.extend_from_slice(key);
        out.extend_from_slice(b"{\"id\":\"");
        // The id is `<hex tag>-<digits>`: nothing to escape.
        out.extend_from_slice(&self.header[..self.seq_end]);
        out.extend_from_slice(b"\",\"time\":");
        push_u64(out, now_secs);
        out.extend_from_slice(b",\"node\":");
        crate::json::push_str(out, node);
        out.extend_from_slice(b",\"db\":");
        push_i32(out, db);
        out.extend_from_slice(b",\"event\":");
        crate::json::push_bytes(out, event);
        out.extend_from_slice(b",\"key\":");
        crate::json::push_bytes(out, key);
        extra(out);
        out.push(b'}');
    }
}

/// Appends the decimal form of a signed `v` (one digit, the usual
/// database number, without the general path).
#[inline]
fn push_i32(out: &mut Vec<u8>, v: i32) {
    if let Ok(d @ 0..=9) = u8::try_from(v) {
        out.push(b'0' + d);
        return;
    }
    if v < 0 {
        out.push(b'-');
    }
    push_u64(out, u64::from(v.unsigned_abs()));
}

/// Seconds since the epoch from the coarse real-time clock (cheap: no syscall, tick resolution).
#[inline]
pub fn now_secs() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid pointer to a timespec.
        if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } == 0 {
            return u64::try_from(ts.tv_sec).unwrap_or(0);
        }
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A record split into its parts.
#[derive(Debug, PartialEq, Eq)]
pub struct Parts<'a> {
    /// The AMQP `message_id`.
    pub message_id: &'a str,
    /// Seconds since the epoch, for the AMQP `timestamp`.
    pub timestamp: u64,
    /// The AMQP body.
    pub body: &'a [u8],
    /// The database number, as text.
    pub db: &'a [u8],
    /// The event name.
    pub event: &'a [u8],
    /// The key.
    pub key: &'a [u8],
    /// A JSON record (the body is JSON).
    pub json: bool,
}

/// Splits a record; `None` when it is not one (a foreign list element).
pub fn split(record: &[u8]) -> Option<Parts<'_>> {
    let a = memchr::memchr(b'\n', record)?;
    let b = a + 1 + memchr::memchr(b'\n', &record[a + 1..])?;
    let message_id = std::str::from_utf8(&record[..a]).ok()?;
    let timestamp = std::str::from_utf8(&record[a + 1..b]).ok()?.parse().ok()?;
    let rest = &record[b + 1..];
    if let Some(j) = rest.strip_prefix(b"J") {
        let mut it = j.splitn(4, |c| *c == b'\n');
        let (db, event, len, tail) = (it.next()?, it.next()?, it.next()?, it.next()?);
        let len: usize = std::str::from_utf8(len).ok()?.parse().ok()?;
        if tail.len() < len {
            return None;
        }
        let (key, body) = tail.split_at(len);
        return Some(Parts {
            message_id,
            timestamp,
            body,
            db,
            event,
            key,
            json: true,
        });
    }
    let mut it = rest.splitn(3, |c| *c == b'\n');
    let db = it.next().unwrap_or_default();
    let event = it.next().unwrap_or_default();
    let key = it.next().unwrap_or_default();
    Some(Parts {
        message_id,
        timestamp,
        body: rest,
        db,
        event,
        key,
        json: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types() {
        assert_eq!(
            EventTypes::parse(b"xe").unwrap().0,
            flags::EXPIRED | flags::EVICTED
        );
        assert_eq!(EventTypes::parse(b"A").unwrap().0, flags::ALL);
        assert_eq!(EventTypes::parse(b"A").unwrap().to_string(), "g$lshzxe");
        assert_eq!(EventTypes::parse(b"tnm").unwrap().to_string(), "tnm");
        assert_eq!(EventTypes::parse(b"xq"), Err(BadEventType::Unknown('q')));
        assert_eq!(EventTypes::parse(b""), Err(BadEventType::Empty));
        assert!(EventTypes::parse(b"").is_err());
    }

    #[test]
    fn body_format_is_exact() {
        let mut e = Encoder::new("abc");
        let r = e.record(1700000000, 0, b"expire", b"redis_key_name");
        assert_eq!(r, b"abc-1\n1700000000\n0\nexpire\nredis_key_name");
        let p = split(&r).unwrap();
        assert_eq!(p.message_id, "abc-1");
        assert_eq!(p.timestamp, 1700000000);
        assert_eq!(p.body, b"0\nexpire\nredis_key_name");
        let r2 = e.record(5, 15, b"set", b"a\nb\x00\xff");
        assert_eq!(split(&r2).unwrap().body, b"15\nset\na\nb\x00\xff");
        assert_eq!(split(&r2).unwrap().message_id, "abc-2");
        assert_eq!(split(&r2).unwrap().timestamp, 5);
        assert_eq!(
            split(&e.record(5, -1, b"x", b"k")).unwrap().body,
            b"-1\nx\nk"
        );
        for _ in 4..1001 {
            e.record(5, 0, b"x", b"k");
        }
        assert_eq!(
            split(&e.record(6, 0, b"x", b"k")).unwrap().message_id,
            "abc-1001"
        );
        assert!(now_secs() > 1_600_000_000);
    }

    #[test]
    fn json_records_carry_the_seed_fields() {
        let mut e = Encoder::new("abc");
        let mut r = Vec::new();
        e.json_into(&mut r, 7, 3, b"set", b"k\n\xff", "6379/abc", |o| {
            o.extend_from_slice(b",\"after\":1")
        });
        let p = split(&r).unwrap();
        assert!(p.json);
        assert_eq!(
            (p.message_id, p.timestamp, p.db, p.event, p.key),
            ("abc-1", 7, &b"3"[..], &b"set"[..], &b"k\n\xff"[..])
        );
        assert_eq!(
            std::str::from_utf8(p.body).unwrap(),
            r#"{"id":"abc-1","time":7,"node":"6379/abc","db":3,"event":"set","key":{"base64":"awr/"},"after":1}"#
        );
        let seed = e.record(7, 3, b"set", b"k");
        let p = split(&seed).unwrap();
        assert!(!p.json);
        assert_eq!((p.db, p.event, p.key), (&b"3"[..], &b"set"[..], &b"k"[..]));
        assert_eq!(p.message_id, "abc-2");
        assert_eq!(split(b"id\n1\nJ0\nset\n9\nkey"), None);
    }

    #[test]
    fn new_letters() {
        let t = EventTypes::parse(b"Anmoc").unwrap();
        assert_eq!(t.to_string(), "g$lshzxenmoc");
        assert_eq!(
            t.unknown_to(flags::ALL | flags::NEW | flags::KEY_MISS),
            Some('o')
        );
        assert_eq!(
            EventTypes::parse(b"A").unwrap().unknown_to(flags::ALL),
            None
        );
    }

    #[test]
    fn foreign_elements_are_rejected() {
        assert_eq!(split(b"no newline"), None);
        assert_eq!(split(b"id\nnotanumber\nbody"), None);
    }
}
