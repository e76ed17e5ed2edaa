//! Where a message goes and what it carries besides the body: the routing
//! key (a fixed text, or a template), and headers that let consumers and
//! header exchanges route without parsing the body.

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

    /// The routing key of one message, from its body `<db>\n<event>\n<key>`;
    /// cut to 255 bytes on a character boundary.
    pub fn render(&self, body: &[u8]) -> ShortString {
        let parts = match self {
            Self::Fixed(k) => return k.clone(),
            Self::Template(parts) => parts,
        };
        let (db, event, key) = body_parts(body);
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

fn body_parts(body: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let mut it = body.splitn(3, |b| *b == b'\n');
    let db = it.next().unwrap_or_default();
    let event = it.next().unwrap_or_default();
    let key = it.next().unwrap_or_default();
    (db, event, key)
}

/// Headers `event`, `db`, `node`, and `key` when the key is UTF-8 and at
/// most 1 KiB.
pub fn headers(body: &[u8], node: &str) -> FieldTable {
    let (db, event, key) = body_parts(body);
    let mut t = FieldTable::default();
    let text = |b: &[u8]| AMQPValue::LongString(LongString::from(b.to_vec()));
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
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render() {
        let body = b"3\nexpired\nuser:42:session";
        assert_eq!(RoutingKey::parse("rk").render(body).as_str(), "rk");
        let t = RoutingKey::parse("kea.{event}.{db}.{prefix:1}");
        assert_eq!(t.render(body).as_str(), "kea.expired.3.user");
        assert_eq!(
            RoutingKey::parse("{prefix:2}|{key}").render(body).as_str(),
            "user:42|user:42:session"
        );
        assert_eq!(
            RoutingKey::parse("{prefix:9}").render(body).as_str(),
            "user:42:session"
        );
        assert_eq!(
            RoutingKey::parse("a{unknown}b").render(body).as_str(),
            "a{unknown}b"
        );
        let long = [b"0\nset\n".as_slice(), &[b'k'; 400]].concat();
        assert_eq!(RoutingKey::parse("{key}").render(&long).as_str().len(), 255);
        let odd = b"0\nset\n\xff\xfe";
        assert!(!RoutingKey::parse("{key}").render(odd).as_str().is_empty());
    }

    #[test]
    fn headers_carry_event_db_key_node() {
        let h = headers(b"5\nset\nk1", "n1");
        let m = h.inner();
        assert_eq!(m.len(), 4);
        assert!(matches!(m.get("db"), Some(AMQPValue::LongInt(5))));
        let no_key = headers(b"0\nset\n\xff", "n1");
        assert!(!no_key.inner().contains_key("key"));
    }
}
