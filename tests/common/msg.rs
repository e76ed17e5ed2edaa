//! A consumed message, and the check of an at-least-once, ordered stream.

/// One consumed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// The body.
    pub body: Vec<u8>,
    /// `message_id` property.
    pub message_id: String,
    /// `timestamp` property.
    pub timestamp: u64,
    /// `content_type` property.
    pub content_type: String,
    /// `delivery_mode` property.
    pub delivery_mode: u8,
    /// The routing key it was published with.
    pub routing_key: String,
    /// `app_id` property.
    pub app_id: String,
    /// Headers, as text (numbers in decimal).
    pub headers: std::collections::BTreeMap<String, String>,
}

impl Msg {
    /// The body as (db, event, key), in either format (a JSON body's key
    /// as text; a binary key is base64 there).
    pub fn parts(&self) -> (String, String, Vec<u8>) {
        if self.body.first() == Some(&b'{') {
            let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
            let key = match &v["key"] {
                serde_json::Value::String(k) => k.as_bytes().to_vec(),
                other => other.to_string().into_bytes(),
            };
            return (
                v["db"].to_string(),
                v["event"].as_str().unwrap_or_default().to_string(),
                key,
            );
        }
        let mut it = self.body.splitn(3, |b| *b == b'\n');
        let db = String::from_utf8_lossy(it.next().unwrap_or_default()).into_owned();
        let ev = String::from_utf8_lossy(it.next().unwrap_or_default()).into_owned();
        (db, ev, it.next().unwrap_or_default().to_vec())
    }

    /// The key as text.
    pub fn key(&self) -> String {
        String::from_utf8_lossy(&self.parts().2).into_owned()
    }
}

/// Checks an ordered, at-least-once stream of numbered keys `prefix0..prefixN`:
/// every number arrives, first arrivals are in order; returns the duplicates.
pub fn check_sequence(msgs: &[Msg], prefix: &str, n: usize) -> usize {
    let mut seen = vec![false; n];
    let mut last: Option<usize> = None;
    let mut dups = 0;
    for m in msgs {
        let key = m.key();
        let Some(i) = key
            .strip_prefix(prefix)
            .and_then(|s| s.parse::<usize>().ok())
        else {
            continue;
        };
        assert!(i < n, "unexpected key {key}");
        if seen[i] {
            dups += 1;
            continue;
        }
        if let Some(l) = last {
            assert!(i > l, "order broken: {key} arrived after {prefix}{l}");
        }
        seen[i] = true;
        last = Some(i);
    }
    let missing: Vec<usize> = (0..n).filter(|i| !seen[*i]).collect();
    assert!(
        missing.is_empty(),
        "{} events missing, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    dups
}
