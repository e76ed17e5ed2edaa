//! The JSON message body (`key_evt_amqp.format json`), written straight
//! into the record buffer: no JSON library, no intermediate tree. Pure: no
//! Redis import.
//!
//! Bytes (keys, values, fields, members) are a JSON string when they are
//! valid UTF-8, else `{"base64": "..."}`. A value image is
//! `{"type": T, "value": V}`, or `{"type": T, "omitted": "type"}` for a
//! stream or module type, `{"type": T, "omitted": "size", "size": N}`
//! when it is over the cap (see [`Image`]), or `{"type": T, "omitted":
//! "unreadable"}` when the server does not let it be read safely.

/// What the message body looks like (`key_evt_amqp.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `<db>\n<event>\n<key>` (the default, as it always was).
    #[default]
    Seed,
    /// One JSON object per event.
    Json,
}

impl Format {
    /// The config text.
    pub fn name(self) -> &'static str {
        match self {
            Self::Seed => "seed",
            Self::Json => "json",
        }
    }

    /// Parses the config text.
    pub fn parse(v: &[u8]) -> Option<Self> {
        match v {
            b"seed" => Some(Self::Seed),
            b"json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// Which values a JSON message carries (`key_evt_amqp.values`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Values {
    /// No value.
    #[default]
    None,
    /// The value just after the write.
    After,
    /// The value that a delete, expiry, eviction or overwrite removed.
    Before,
    /// Both.
    Both,
}

impl Values {
    /// The config text.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::After => "after",
            Self::Before => "before",
            Self::Both => "both",
        }
    }

    /// Parses the config text.
    pub fn parse(v: &[u8]) -> Option<Self> {
        match v {
            b"none" => Some(Self::None),
            b"after" => Some(Self::After),
            b"before" => Some(Self::Before),
            b"both" => Some(Self::Both),
            _ => None,
        }
    }

    /// After-images are asked for.
    pub fn after(self) -> bool {
        matches!(self, Self::After | Self::Both)
    }

    /// Before-images are asked for (they need the server's key event).
    pub fn before(self) -> bool {
        matches!(self, Self::Before | Self::Both)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `s` as a JSON string (quotes included).
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let b = s.as_bytes();
    let mut from = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&b[from..i]);
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(c >> 4)]);
            out.push(HEX[usize::from(c & 15)]);
        } else {
            out.extend_from_slice(esc);
        }
        from = i + 1;
    }
    out.extend_from_slice(&b[from..]);
    out.push(b'"');
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Appends the standard base64 form of `b` (with padding).
pub fn push_base64(out: &mut Vec<u8>, b: &[u8]) {
    out.reserve(b.len().div_ceil(3) * 4);
    let mut chunks = b.chunks_exact(3);
    for c in &mut chunks {
        let n = u32::from(c[0]) << 16 | u32::from(c[1]) << 8 | u32::from(c[2]);
        for shift in [18, 12, 6, 0] {
            out.push(B64[(n >> shift & 63) as usize]);
        }
    }
    match *chunks.remainder() {
        [a] => {
            let n = u32::from(a) << 16;
            out.extend_from_slice(&[B64[(n >> 18) as usize], B64[(n >> 12 & 63) as usize]]);
            out.extend_from_slice(b"==");
        }
        [a, b] => {
            let n = u32::from(a) << 16 | u32::from(b) << 8;
            out.extend_from_slice(&[
                B64[(n >> 18) as usize],
                B64[(n >> 12 & 63) as usize],
                B64[(n >> 6 & 63) as usize],
                b'=',
            ]);
        }
        _ => {}
    }
}

/// Appends bytes: a JSON string when they are UTF-8, else `{"base64":"..."}`.
pub fn push_bytes(out: &mut Vec<u8>, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(s) => push_str(out, s),
        Err(_) => {
            out.extend_from_slice(b"{\"base64\":\"");
            push_base64(out, b);
            out.extend_from_slice(b"\"}");
        }
    }
}

/// Appends the decimal form of `v` to `out` without going through `fmt`.
pub fn push_u64(out: &mut Vec<u8>, v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends a score: a JSON number, or the string `"inf"` / `"-inf"`.
pub fn push_score(out: &mut Vec<u8>, score: f64) {
    if score.is_finite() {
        // `Debug` gives the shortest form that reads back to the same
        // double, in a syntax JSON accepts (`1.0`, `1e300`, `-0.5`).
        out.extend_from_slice(format!("{score:?}").as_bytes());
    } else if score > 0.0 {
        out.extend_from_slice(b"\"inf\"");
    } else if score < 0.0 {
        out.extend_from_slice(b"\"-inf\"");
    } else {
        out.extend_from_slice(b"\"nan\"");
    }
}

/// The type of a value, as the JSON `type` field names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `string`
    String,
    /// `list`
    List,
    /// `hash`
    Hash,
    /// `set`
    Set,
    /// `zset`
    Zset,
    /// `stream` (never carried)
    Stream,
    /// `module` (never carried)
    Module,
}

impl Kind {
    /// The JSON `type` text.
    pub fn name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::List => "list",
            Self::Hash => "hash",
            Self::Set => "set",
            Self::Zset => "zset",
            Self::Stream => "stream",
            Self::Module => "module",
        }
    }
}

fn push_type(out: &mut Vec<u8>, kind: Kind) {
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.name().as_bytes());
    out.push(b'"');
}

/// Appends `{"type":T,"omitted":"type"}`: a stream or module value.
pub fn push_omitted_type(out: &mut Vec<u8>, kind: Kind) {
    push_type(out, kind);
    out.extend_from_slice(b",\"omitted\":\"type\"}");
}

/// Appends `{"type":T,"omitted":"unreadable"}`: a value the server does not
/// let the module read safely where it was to be read.
pub fn push_omitted_unreadable(out: &mut Vec<u8>, kind: Kind) {
    push_type(out, kind);
    out.extend_from_slice(b",\"omitted\":\"unreadable\"}");
}

/// Appends `{"type":T,"omitted":"size","size":N}`: a value over the cap.
pub fn push_omitted_size(out: &mut Vec<u8>, kind: Kind, size: u64) {
    push_type(out, kind);
    out.extend_from_slice(b",\"omitted\":\"size\",\"size\":");
    push_u64(out, size);
    out.push(b'}');
}

/// Appends a string value, or its omission when it is over `cap` bytes.
pub fn push_string_value(out: &mut Vec<u8>, v: &[u8], cap: usize) {
    if v.len() > cap {
        push_omitted_size(out, Kind::String, v.len() as u64);
        return;
    }
    push_type(out, Kind::String);
    out.extend_from_slice(b",\"value\":");
    push_bytes(out, v);
    out.push(b'}');
}

/// A hash, list, set or zset value being written element by element.
///
/// The cap counts the raw bytes of every element (field, value, member,
/// score text) plus one per element; past it the writer drops what it wrote
/// and [`Image::finish`] writes the omission, with the element count as
/// `size` (the byte total of a value that was not read to its end is not
/// known).
#[derive(Debug)]
pub struct Image {
    start: usize,
    kind: Kind,
    cap: usize,
    used: usize,
    first: bool,
    over: bool,
}

impl Image {
    /// Starts a value of `kind` at the end of `out`.
    pub fn begin(out: &mut Vec<u8>, kind: Kind, cap: usize) -> Self {
        let start = out.len();
        push_type(out, kind);
        out.extend_from_slice(b",\"value\":[");
        Self {
            start,
            kind,
            cap,
            used: 0,
            first: true,
            over: false,
        }
    }

    /// True once the cap was passed: the caller stops reading.
    pub fn over(&self) -> bool {
        self.over
    }

    /// Counts `n` raw bytes against the cap; false when over it.
    fn take(&mut self, n: usize) -> bool {
        self.used = self.used.saturating_add(n).saturating_add(1);
        if self.used > self.cap {
            self.over = true;
        }
        !self.over
    }

    fn sep(&mut self, out: &mut Vec<u8>) {
        if !self.first {
            out.push(b',');
        }
        self.first = false;
    }

    /// A list or set element.
    pub fn elem(&mut self, out: &mut Vec<u8>, a: &[u8]) -> bool {
        if !self.take(a.len()) {
            return false;
        }
        self.sep(out);
        push_bytes(out, a);
        true
    }

    /// A hash field and its value.
    pub fn pair(&mut self, out: &mut Vec<u8>, a: &[u8], b: &[u8]) -> bool {
        if !self.take(a.len().saturating_add(b.len())) {
            return false;
        }
        self.sep(out);
        out.push(b'[');
        push_bytes(out, a);
        out.push(b',');
        push_bytes(out, b);
        out.push(b']');
        true
    }

    /// A zset member and its score.
    pub fn scored(&mut self, out: &mut Vec<u8>, m: &[u8], score: f64) -> bool {
        if !self.take(m.len().saturating_add(8)) {
            return false;
        }
        self.sep(out);
        out.push(b'[');
        push_bytes(out, m);
        out.push(b',');
        push_score(out, score);
        out.push(b']');
        true
    }

    /// Closes the value; `length` is its element count (for the omission).
    pub fn finish(self, out: &mut Vec<u8>, length: u64) {
        if self.over {
            out.truncate(self.start);
            push_omitted_size(out, self.kind, length);
        } else {
            out.extend_from_slice(b"]}");
        }
    }
}

/// True when a value of `elements` elements is over `cap` for sure
/// (each element counts at least one byte): no need to read it.
pub fn over_by_count(elements: u64, cap: usize) -> bool {
    elements > cap as u64
}

/// The date of day `days` since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `secs` since the epoch as RFC 3339 UTC (`2026-12-01T07:05:00Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(
            s(|o| push_str(o, "a\"b\\c\nd\u{1}é")),
            r#""a\"b\\c\nd\u0001é""#
        );
        assert_eq!(s(|o| push_bytes(o, b"plain")), r#""plain""#);
        assert_eq!(s(|o| push_bytes(o, b"\xff\x00")), r#"{"base64":"/wA="}"#);
    }

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(s(|out| push_base64(out, i.as_bytes())), o);
        }
    }

    #[test]
    fn images() {
        assert_eq!(
            s(|o| push_string_value(o, b"v", 1)),
            r#"{"type":"string","value":"v"}"#
        );
        assert_eq!(
            s(|o| push_string_value(o, b"vv", 1)),
            r#"{"type":"string","omitted":"size","size":2}"#
        );
        assert_eq!(
            s(|o| push_omitted_type(o, Kind::Stream)),
            r#"{"type":"stream","omitted":"type"}"#
        );
        assert_eq!(
            s(|o| push_omitted_unreadable(o, Kind::String)),
            r#"{"type":"string","omitted":"unreadable"}"#
        );
        let hash = s(|o| {
            o.extend_from_slice(b"x");
            let mut i = Image::begin(o, Kind::Hash, 100);
            assert!(i.pair(o, b"f", b"v"));
            assert!(i.pair(o, b"g", b"\xff"));
            i.finish(o, 2);
        });
        assert_eq!(
            hash,
            r#"x{"type":"hash","value":[["f","v"],["g",{"base64":"/w=="}]]}"#
        );
        let z = s(|o| {
            let mut i = Image::begin(o, Kind::Zset, 100);
            i.scored(o, b"a", 1.0);
            i.scored(o, b"b", f64::INFINITY);
            i.scored(o, b"c", -2.5e300);
            i.finish(o, 3);
        });
        assert_eq!(
            z,
            r#"{"type":"zset","value":[["a",1.0],["b","inf"],["c",-2.5e300]]}"#
        );
        let over = s(|o| {
            let mut i = Image::begin(o, Kind::List, 5);
            assert!(i.elem(o, b"ab"));
            assert!(!i.elem(o, b"cd"));
            assert!(i.over());
            i.finish(o, 7);
        });
        assert_eq!(over, r#"{"type":"list","omitted":"size","size":7}"#);
        let empty = s(|o| Image::begin(o, Kind::Set, 0).finish(o, 0));
        assert_eq!(empty, r#"{"type":"set","value":[]}"#);
        assert!(over_by_count(11, 10) && !over_by_count(10, 10));
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(1_798_701_845), "2026-12-31T07:24:05Z");
    }

    #[test]
    fn config_texts_round_trip() {
        for f in [Format::Seed, Format::Json] {
            assert_eq!(Format::parse(f.name().as_bytes()), Some(f));
        }
        for v in [Values::None, Values::After, Values::Before, Values::Both] {
            assert_eq!(Values::parse(v.name().as_bytes()), Some(v));
        }
        assert!(Values::Both.after() && Values::Both.before());
        assert!(!Values::After.before() && !Values::Before.after());
        assert_eq!(Format::parse(b"xml"), None);
    }
}
