//! Drops repeats of recent message ids.
//!
//! The module delivers at least once: after a lost connection it re-sends
//! the records whose confirms it did not get, in order, and the broker may
//! have had some of them already. Re-applying an after-image is harmless
//! once the newer events are applied again, but a `swapdb` applied twice
//! swaps back, so repeats are dropped by their `id` (which stays the same
//! when a record is re-sent).

use std::collections::{HashSet, VecDeque};

/// The ids of the last `capacity` messages.
#[derive(Debug, Clone)]
pub struct Dedup {
    seen: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl Dedup {
    /// Remembers up to `capacity` ids (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// True the first time `id` is seen (among the remembered ones).
    pub fn first_time(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_within_the_window() {
        let mut d = Dedup::new(2);
        assert!(d.first_time("a-1"));
        assert!(d.first_time("a-2"));
        assert!(!d.first_time("a-1"));
        assert!(d.first_time("a-3"));
        // a-1 fell out of the window.
        assert!(d.first_time("a-1"));
        assert!(!d.first_time("a-3"));
    }
}
