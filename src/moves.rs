//! Which keyspace events a slot migration causes, so that moving a slot is
//! invisible to consumers: a key that changes node was not written by
//! anyone. Pure: the host feeds it the server's migration events, the
//! `CLUSTER NODES` view and the `MIGRATE` commands it sees.
//!
//! - **Atomic slot migration** (Valkey 9 `CLUSTER MIGRATESLOTS`, Redis 8.4
//!   `CLUSTER MIGRATION`): the target applies the source's data and writes
//!   to slots it does not serve yet, and the source (or a target whose
//!   import failed) deletes the keys of slots it no longer serves. Every
//!   event for a key in such a slot is a move ([`Moves::silence`] from the
//!   start of an import or the end of an export, [`Moves::unsilence`] when an
//!   import completes). Writes clients make meanwhile are forwarded by the
//!   source, which serves the slot until the end.
//! - **Legacy resharding** (`CLUSTER SETSLOT ... IMPORTING/MIGRATING`, then
//!   `MIGRATE`, as `redis-cli --cluster reshard` does): the target's
//!   `restore` of a key in a slot it imports, and the source's `del` of a
//!   key a running `MIGRATE` named in a slot it migrates. Writes redirected
//!   to the target with `ASK` are forwarded.

use crate::slots::{key_slot, SLOTS};

/// A set of hash slots.
#[derive(Debug, Clone)]
pub struct SlotSet {
    bits: Box<[u64; SLOTS / 64]>,
    count: u32,
}

impl Default for SlotSet {
    fn default() -> Self {
        Self {
            bits: Box::new([0; SLOTS / 64]),
            count: 0,
        }
    }
}

impl SlotSet {
    /// True when `slot` is in the set.
    #[inline]
    pub fn contains(&self, slot: u16) -> bool {
        let s = usize::from(slot);
        s < SLOTS && self.bits[s / 64] & (1 << (s % 64)) != 0
    }

    /// True when no slot is in the set.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Slots in the set.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Adds or removes `slot`.
    pub fn set(&mut self, slot: u16, on: bool) {
        let s = usize::from(slot);
        if s >= SLOTS || self.contains(slot) == on {
            return;
        }
        self.bits[s / 64] ^= 1 << (s % 64);
        if on {
            self.count += 1;
        } else {
            self.count -= 1;
        }
    }

    /// Makes the set hold exactly `slots`.
    pub fn assign(&mut self, slots: &[u16]) {
        *self = Self::default();
        for &s in slots {
            self.set(s, true);
        }
    }
}

/// What the host knows of the migrations touching this node.
#[derive(Debug, Default, Clone)]
pub struct Moves {
    /// Slots under an atomic import here, or that this node no longer
    /// serves after an atomic migration (its keys there are being trimmed).
    silent: SlotSet,
    /// Legacy resharding: slots this node imports (`[slot-<-id]`).
    importing: SlotSet,
    /// Legacy resharding: slots this node migrates away (`[slot->-id]`).
    migrating: SlotSet,
}

impl Moves {
    /// Atomic migration: events for keys in `ranges` are moves from now on.
    pub fn silence(&mut self, ranges: &[(u16, u16)]) {
        for &(a, b) in ranges {
            for s in a..=b.min(SLOTS as u16 - 1) {
                self.silent.set(s, true);
            }
        }
    }

    /// Atomic migration: an import into `ranges` completed; this node
    /// serves them, and their events are writes again.
    pub fn unsilence(&mut self, ranges: &[(u16, u16)]) {
        for &(a, b) in ranges {
            for s in a..=b.min(SLOTS as u16 - 1) {
                self.silent.set(s, false);
            }
        }
    }

    /// Legacy resharding: the slots this node imports and migrates, as the
    /// `myself` line of `CLUSTER NODES` shows them.
    pub fn set_legacy(&mut self, importing: &[u16], migrating: &[u16]) {
        self.importing.assign(importing);
        self.migrating.assign(migrating);
    }

    /// Forgets every migration (a node that became a master starts anew:
    /// a migration under way on its old master was aborted).
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Slots whose events are moves now (atomic migration).
    pub fn silent_slots(&self) -> usize {
        self.silent.len()
    }

    /// True when any migration is known (the callback's cheap test).
    #[inline]
    pub fn any(&self) -> bool {
        !self.silent.is_empty() || !self.importing.is_empty() || !self.migrating.is_empty()
    }

    /// True when `key`'s slot is silent: a snapshot skips it.
    #[inline]
    pub fn is_silent(&self, key: &[u8]) -> bool {
        !self.silent.is_empty() && self.silent.contains(key_slot(key))
    }

    /// True when `event` on `key` was caused by a move. `migrating_now`
    /// tells whether a running `MIGRATE` named `key`.
    pub fn is_move(&self, event: &[u8], key: &[u8], migrating_now: impl FnOnce() -> bool) -> bool {
        if !self.any() {
            return false;
        }
        let slot = key_slot(key);
        if self.silent.contains(slot) {
            return true;
        }
        match event {
            b"restore" => self.importing.contains(slot),
            b"del" => self.migrating.contains(slot) && migrating_now(),
            _ => false,
        }
    }
}

/// The slots a `CLUSTER NODES` line shows as imported (`[slot-<-id]`).
pub fn importing_slots(line: &str) -> Vec<u16> {
    line.split(' ')
        .skip(8)
        .filter_map(|f| f.strip_prefix('[')?.split_once("-<-")?.0.parse().ok())
        .collect()
}

/// The keys a `MIGRATE` command moves: its third argument, or those after
/// `KEYS` when that is empty. `None` for a `MIGRATE ... COPY`, which moves
/// nothing (the key stays), and for a malformed command.
pub fn migrate_keys(argv: &[&[u8]]) -> Option<Vec<Vec<u8>>> {
    if argv.len() < 6 || !argv[0].eq_ignore_ascii_case(b"migrate") {
        return None;
    }
    let mut keys = Vec::new();
    let mut i = 6;
    while i < argv.len() {
        let a = argv[i];
        if a.eq_ignore_ascii_case(b"copy") {
            return None;
        } else if a.eq_ignore_ascii_case(b"keys") {
            keys.extend(argv[i + 1..].iter().map(|k| k.to_vec()));
            break;
        } else if a.eq_ignore_ascii_case(b"auth") {
            i += 1;
        } else if a.eq_ignore_ascii_case(b"auth2") {
            i += 2;
        }
        i += 1;
    }
    if !argv[3].is_empty() {
        keys.push(argv[3].to_vec());
    }
    Some(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_sets_count() {
        let mut s = SlotSet::default();
        s.set(5, true);
        s.set(5, true);
        s.set(16383, true);
        s.set(16384, true);
        assert_eq!(s.len(), 2);
        assert!(s.contains(5) && s.contains(16383) && !s.contains(6));
        s.set(5, false);
        s.set(5, false);
        assert_eq!(s.len(), 1);
        s.assign(&[1, 2, 2]);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn atomic_migration_silences_its_slots() {
        let mut m = Moves::default();
        let key = b"user:1";
        let slot = key_slot(key);
        assert!(!m.is_move(b"set", key, || true));
        m.silence(&[(slot, slot)]);
        assert!(m.is_move(b"set", key, || false));
        assert!(m.is_move(b"del", key, || false));
        assert!(m.is_silent(key));
        m.unsilence(&[(0, 16383)]);
        assert!(!m.is_move(b"set", key, || true));
        assert!(!m.any());
    }

    #[test]
    fn legacy_resharding_skips_restore_and_migrate_del_only() {
        let mut m = Moves::default();
        let key = b"k";
        let slot = key_slot(key);
        m.set_legacy(&[slot], &[]);
        assert!(m.is_move(b"restore", key, || false));
        // A write redirected with ASK is a write.
        assert!(!m.is_move(b"set", key, || false));
        assert!(!m.is_move(b"del", key, || true));
        m.set_legacy(&[], &[slot]);
        assert!(m.is_move(b"del", key, || true));
        assert!(!m.is_move(b"del", key, || false));
        assert!(!m.is_move(b"restore", key, || true));
    }

    #[test]
    fn parses_cluster_nodes_and_migrate() {
        let line =
            "id 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5 [7-<-abc] [9->-def]";
        assert_eq!(importing_slots(line), [7]);
        assert_eq!(crate::slots::migrating_slots(line), [9]);
        let v = |s: &[&str]| migrate_keys(&s.iter().map(|a| a.as_bytes()).collect::<Vec<_>>());
        assert_eq!(
            v(&["MIGRATE", "h", "1", "k", "0", "100"]),
            Some(vec![b"k".to_vec()])
        );
        assert_eq!(
            v(&[
                "migrate", "h", "1", "", "0", "100", "REPLACE", "AUTH2", "u", "p", "KEYS", "a", "b"
            ]),
            Some(vec![b"a".to_vec(), b"b".to_vec()])
        );
        assert_eq!(v(&["MIGRATE", "h", "1", "k", "0", "100", "COPY"]), None);
        assert_eq!(v(&["MIGRATE", "h", "1", "k"]), None);
    }
}
