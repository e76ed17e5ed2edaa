//! Where a message goes and what it carries besides the body: the routing
//! key (a fixed text, or a template), and headers that let consumers and
//! header exchanges route without parsing the body.

use crate::event::Parts;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// The longest routing key AMQP carries (a short string).
const SHORT_MAX: usize = 255;
/// Keys longer than this are not copied into the `key` header.
const KEY_HEADER_MAX: usize = 1024;

/// A routing key: fixed, or a template with `{event}`, `{db}`, `{key}` and
/// `{prefix:N}` (the key up to its Nth `:`, or all of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutingKey {
    /// The same key for every message (the default).
    Fixed(ShortString),
    /// Rendered for each message.
    Template(Vec<Part>),
}

/// A piece of a routing-key template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Copied as is.
    Text(String),
    /// The event name.
    Event,
    /// The database number.
    Db,
    /// The whole key.
    Key,
    /// The key up to its Nth `:`.
    Prefix(usize),
}

impl RoutingKey {
    /// Parses a routing key: a template when it holds a known `{...}`
    /// placeholder, else a fixed key. Unknown placeholders stay literal.
    pub fn parse(text: &str) -> Self {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut literal = String::new();
        let mut templated = false;
        while let Some(open) = rest.find('{') {
            literal.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                literal.push_str(&rest[open..]);
                rest = "";
                break;
            };
            let name = &after[..close];
            let part = match name {
                "event" => Some(Part::Event),
                "db" => Some(Part::Db),
                "key" => Some(Part::Key),
                _ => name
                    .strip_prefix("prefix:")
                    .and_then(|n| n.parse().ok())
                    .map(Part::Prefix),
            };
            match part {
                Some(p) => {
                    templated = true;
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(p);
                }
                None => literal.push_str(&rest[open..open + close + 2]),
            }
            rest = &after[close + 1..];
        }
        literal.push_str(rest);
        if !templated {
            return Self::Fixed(literal.as_str().into());
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Self::Template(parts)
    }

    /// The routing key of one message, from the seed fields of its record;
    /// cut to 255 bytes on a character boundary.
    pub fn render(&self, p: &Parts<'_>) -> ShortString {
        let parts = match self {
            Self::Fixed(k) => return k.clone(),
            Self::Template(parts) => parts,
        };
        let (db, event, key) = (p.db, p.event, p.key);
        let mut out = String::new();
        for p in parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Event => out.push_str(&String::from_utf8_lossy(event)),
                Part::Db => out.push_str(&String::from_utf8_lossy(db)),
                Part::Key => out.push_str(&String::from_utf8_lossy(key)),
                Part::Prefix(n) => {
                    let end = key
                        .iter()
                        .enumerate()
                        .filter(|(_, b)| **b == b':')
                        .nth(n.saturating_sub(1))
                        .map_or(key.len(), |(i, _)| i);
                    out.push_str(&String::from_utf8_lossy(&key[..end]));
                }
            }
        }
        let mut end = out.len().min(SHORT_MAX);
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.as_str().into()
    }
}

fn text(b: &[u8]) -> AMQPValue {
    AMQPValue::LongString(LongString::from(b.to_vec()))
}

/// Headers `event`, `db`, `node`, and `key` when the key is UTF-8 and at
/// most 1 KiB, added to `t`.
pub fn headers(t: &mut FieldTable, p: &Parts<'_>, node: &str) {
    let (db, event, key) = (p.db, p.event, p.key);
    t.insert("event".into(), text(event));
    if let Some(n) = std::str::from_utf8(db)
        .ok()
        .and_then(|d| d.parse::<i32>().ok())
    {
        t.insert("db".into(), AMQPValue::LongInt(n));
    }
    if key.len() <= KEY_HEADER_MAX && std::str::from_utf8(key).is_ok() {
        t.insert("key".into(), text(key));
    }
    t.insert("node".into(), text(node.as_bytes()));
}

/// The CloudEvents attributes of a JSON record in binary content mode,
/// as `cloudEvents_*` headers added to `t` (RabbitMQ 4 hands them to AMQP
/// 1.0 consumers as CloudEvents application properties). `subject` is the
/// key when it is UTF-8 and at most 1 KiB (else it is left out: the body has it).
pub fn cloudevents(t: &mut FieldTable, p: &Parts<'_>, node: &str) {
    t.insert("cloudEvents_specversion".into(), text(b"1.0"));
    let mut ty = b"redis.keyspace.".to_vec();
    ty.extend_from_slice(p.event);
    t.insert("cloudEvents_type".into(), text(&ty));
    let mut src = b"redis://".to_vec();
    src.extend_from_slice(node.as_bytes());
    src.push(b'/');
    src.extend_from_slice(p.db);
    t.insert("cloudEvents_source".into(), text(&src));
    t.insert("cloudEvents_id".into(), text(p.message_id.as_bytes()));
    t.insert(
        "cloudEvents_time".into(),
        text(crate::json::rfc3339(p.timestamp).as_bytes()),
    );
    // Capped like the `key` header: a header frame cannot be split, and a
    // long key is in the body anyway.
    if p.key.len() <= KEY_HEADER_MAX && std::str::from_utf8(p.key).is_ok() {
        t.insert("cloudEvents_subject".into(), text(p.key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(body: &[u8]) -> Vec<u8> {
        [&b"id-1\n5\n"[..], body].concat()
    }

    fn render(k: &RoutingKey, body: &[u8]) -> String {
        let r = rec(body);
        k.render(&crate::event::split(&r).unwrap())
            .as_str()
            .to_string()
    }

    fn headers_of(body: &[u8], node: &str) -> FieldTable {
        let r = rec(body);
        let mut t = FieldTable::default();
        headers(&mut t, &crate::event::split(&r).unwrap(), node);
        t
    }

    #[test]
    fn templates_render() {
        let body = b"3\nexpired\nuser:42:session";
        assert_eq!(render(&RoutingKey::parse("rk"), body).as_str(), "rk");
        let t = RoutingKey::parse("kea.{event}.{db}.{prefix:1}");
        assert_eq!(render(&t, body).as_str(), "kea.expired.3.user");
        assert_eq!(
            render(&RoutingKey::parse("{prefix:2}|{key}"), body).as_str(),
            "user:42|user:42:session"
        );
        assert_eq!(
            render(&RoutingKey::parse("{prefix:9}"), body).as_str(),
            "user:42:session"
        );
        assert_eq!(
            render(&RoutingKey::parse("a{unknown}b"), body).as_str(),
            "a{unknown}b"
        );
        let long = [b"0\nset\n".as_slice(), &[b'k'; 400]].concat();
        assert_eq!(
            render(&RoutingKey::parse("{key}"), &long).as_str().len(),
            255
        );
        let odd = b"0\nset\n\xff\xfe";
        assert!(!render(&RoutingKey::parse("{key}"), odd).is_empty());
    }

    #[test]
    fn headers_carry_event_db_key_node() {
        let h = headers_of(b"5\nset\nk1", "n1");
        let m = h.inner();
        assert_eq!(m.len(), 4);
        assert!(matches!(m.get("db"), Some(AMQPValue::LongInt(5))));
        let no_key = headers_of(b"0\nset\n\xff", "n1");
        assert!(!no_key.inner().contains_key("key"));
    }

    #[test]
    fn cloudevents_attributes() {
        let mut e = crate::event::Encoder::new("ab");
        let mut r = Vec::new();
        e.json_into(
            &mut r,
            1_700_000_000,
            2,
            b"set",
            b"user:1",
            "6379/ab",
            |_| {},
        );
        let p = crate::event::split(&r).unwrap();
        assert_eq!(
            RoutingKey::parse("{event}.{db}.{key}").render(&p).as_str(),
            "set.2.user:1"
        );
        let mut t = FieldTable::default();
        cloudevents(&mut t, &p, "6379/ab");
        let m = t.inner();
        let get = |k: &str| match m.get(k) {
            Some(AMQPValue::LongString(s)) => String::from_utf8(s.as_bytes().to_vec()).unwrap(),
            _ => String::new(),
        };
        assert_eq!(get("cloudEvents_specversion"), "1.0");
        assert_eq!(get("cloudEvents_type"), "redis.keyspace.set");
        assert_eq!(get("cloudEvents_source"), "redis://6379/ab/2");
        assert_eq!(get("cloudEvents_id"), "ab-1");
        assert_eq!(get("cloudEvents_time"), "2023-11-14T22:13:20Z");
        assert_eq!(get("cloudEvents_subject"), "user:1");
    }
}
