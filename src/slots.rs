//! Cluster hash slots: CRC16 of keys, a canonical hash tag for every slot,
//! the slots a node owns according to `CLUSTER NODES`, and what a node
//! knows of them ([`SlotView`]).

/// What this node knows of its slots (cluster mode only).
#[derive(Debug, Default)]
pub struct SlotView {
    /// Canonical hash tag of every slot (empty outside cluster mode).
    pub tags: Vec<u32>,
    /// Slots this node owns, sorted.
    pub owned: Vec<u16>,
    /// Fallback keys of this module found in owned slots, other than our own.
    pub found: Vec<String>,
    /// When to look at `CLUSTER NODES` again.
    pub next_check: Option<std::time::Instant>,
}

/// Number of hash slots in Redis Cluster.
pub const SLOTS: usize = 16384;

/// CRC16-CCITT (XModem), as Redis Cluster uses it.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The slot of a key, honouring `{hash tags}`.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match memchr::memchr(b'{', key) {
        Some(open) => match memchr::memchr(b'}', &key[open + 1..]) {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16(hashed) % SLOTS as u16
}

/// For every slot, the smallest number whose decimal form hashes to it.
/// Every node computes the same table, so the fallback key of any slot is known.
pub fn canonical_tags() -> Vec<u32> {
    let mut tags = vec![u32::MAX; SLOTS];
    let mut left = SLOTS;
    let mut i: u32 = 0;
    while left > 0 {
        let slot = usize::from(crc16(i.to_string().as_bytes()) % SLOTS as u16);
        if tags[slot] == u32::MAX {
            tags[slot] = i;
            left -= 1;
        }
        i += 1;
    }
    tags
}

/// The fallback key for `slot`: `<base>{<tag>}`.
pub fn fallback_key(base: &str, tags: &[u32], slot: u16) -> String {
    format!("{base}{{{}}}", tags[usize::from(slot)])
}

/// The slots one `CLUSTER NODES` line gives its node, sorted; slots being
/// migrated or imported (`[...]`) are not counted.
pub fn line_slots(line: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for field in line.split(' ').skip(8) {
        if field.starts_with('[') {
            continue;
        }
        let (a, b) = field.split_once('-').unwrap_or((field, field));
        if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) {
            out.extend(a..=b.min(SLOTS as u16 - 1));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Slots a `CLUSTER NODES` line shows as migrating away (`[slot->-id]`).
pub fn migrating_slots(line: &str) -> Vec<u16> {
    line.split(' ')
        .skip(8)
        .filter_map(|f| f.strip_prefix('[')?.split_once("->-")?.0.parse().ok())
        .collect()
}

/// The slots owned by the `myself` line of `CLUSTER NODES`, sorted, less
/// those migrating away: a list there is about to move (`MIGRATE`), so the
/// module neither keeps its own list nor adopts one in such a slot.
pub fn owned_slots(cluster_nodes: &str) -> Vec<u16> {
    cluster_nodes
        .lines()
        .find(|l| {
            l.split(' ')
                .nth(2)
                .is_some_and(|flags| flags.split(',').any(|f| f == "myself"))
        })
        .map(|l| {
            let leaving = migrating_slots(l);
            let mut owned = line_slots(l);
            owned.retain(|s| !leaving.contains(s));
            owned
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_redis() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
    }

    #[test]
    fn every_slot_has_a_tag() {
        let tags = canonical_tags();
        for (slot, tag) in tags.iter().enumerate().step_by(97) {
            let key = fallback_key("key_evt_amqp:fallback", &tags, slot as u16);
            assert_eq!(
                usize::from(key_slot(key.as_bytes())),
                slot,
                "{key} tag {tag}"
            );
        }
    }

    #[test]
    fn parses_myself_line() {
        let nodes = "\
a1 127.0.0.1:7001@17001 master - 0 0 1 connected 0-5460
b2 127.0.0.1:7002@17002 myself,master - 0 0 2 connected 5461-5463 7000 [5464->-a1] 8000-8001
c3 127.0.0.1:7003@17003 slave b2 0 0 2 connected
";
        assert_eq!(owned_slots(nodes), vec![5461, 5462, 5463, 7000, 8000, 8001]);
        assert!(owned_slots("x 1:1@1 slave,myself y 0 0 1 connected\n").is_empty());
        // A slot being migrated away is still in the ranges; it does not count.
        let migrating =
            "b2 127.0.0.1:7002@17002 myself,master - 0 0 2 connected 10-12 [11->-a1] [20-<-c3]\n";
        assert_eq!(owned_slots(migrating), vec![10, 12]);
    }
}
