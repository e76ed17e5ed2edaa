//! One mask, run as a linear-time state-set simulation: no mask can make
//! Redis spend more than `O(key length x mask length)` on a key. It is the
//! matcher of record: the automaton of a whole set ([`super::automaton`])
//! must agree with it, and it matches while that automaton is being built.

use smallvec::SmallVec;

/// One item of a compiled mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Item {
    /// `None` is `.` (any byte).
    pub(super) byte: Option<u8>,
    /// Followed by `*`.
    pub(super) star: bool,
}

impl Item {
    fn accepts(self, c: u8) -> bool {
        self.byte.is_none_or(|b| b == c)
    }
}

/// One compiled mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMask {
    source: Vec<u8>,
    items: Vec<Item>,
    anchored_start: bool,
    anchored_end: bool,
}

type Bits = SmallVec<[u64; 4]>;

fn set(bits: &mut Bits, i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

fn get(bits: &Bits, i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

impl KeyMask {
    /// Compiles a mask. Every byte string is a valid mask.
    pub fn new(source: &[u8]) -> Self {
        let mut rest = source;
        let anchored_start = rest.first() == Some(&b'^');
        if anchored_start {
            rest = &rest[1..];
        }
        let anchored_end = rest.last() == Some(&b'$');
        if anchored_end {
            rest = &rest[..rest.len() - 1];
        }
        let mut items: Vec<Item> = Vec::with_capacity(rest.len());
        let mut i = 0;
        while i < rest.len() {
            let byte = if rest[i] == b'.' { None } else { Some(rest[i]) };
            let star = rest.get(i + 1) == Some(&b'*');
            items.push(Item { byte, star });
            i += if star { 2 } else { 1 };
        }
        Self {
            source: source.to_vec(),
            items,
            anchored_start,
            anchored_end,
        }
    }

    /// The mask as given.
    pub fn source(&self) -> &[u8] {
        &self.source
    }

    /// The compiled items, for the automaton.
    pub(super) fn items(&self) -> &[Item] {
        &self.items
    }

    /// `^` first: the mask matches at the start only.
    pub(super) fn anchored_start(&self) -> bool {
        self.anchored_start
    }

    /// `$` last: the mask must end at the end of the key.
    pub(super) fn anchored_end(&self) -> bool {
        self.anchored_end
    }

    /// Adds state `i` and everything reachable from it by skipping starred items.
    /// A state already present has its closure present too, so the walk stops
    /// there: all closures of one step cost `O(mask length)` together.
    fn close(&self, bits: &mut Bits, mut i: usize) {
        loop {
            if get(bits, i) {
                return;
            }
            set(bits, i);
            if i < self.items.len() && self.items[i].star {
                i += 1;
            } else {
                return;
            }
        }
    }

    /// True when the mask matches `key`.
    pub fn matches(&self, key: &[u8]) -> bool {
        let n = self.items.len();
        let words = n / 64 + 1;
        let mut cur: Bits = SmallVec::from_elem(0, words);
        let mut next: Bits = SmallVec::from_elem(0, words);
        self.close(&mut cur, 0);
        for &c in key {
            if !self.anchored_end && get(&cur, n) {
                return true;
            }
            next.iter_mut().for_each(|w| *w = 0);
            for i in 0..n {
                if get(&cur, i) && self.items[i].accepts(c) {
                    if self.items[i].star {
                        self.close(&mut next, i);
                    } else {
                        self.close(&mut next, i + 1);
                    }
                }
            }
            if !self.anchored_start {
                self.close(&mut next, 0);
            } else if next.iter().all(|w| *w == 0) {
                // No state is alive and none can start again: no match.
                return false;
            }
            std::mem::swap(&mut cur, &mut next);
        }
        get(&cur, n)
    }
}
