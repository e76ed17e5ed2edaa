//! The engine's view of the fallback list: its length, the records at the
//! head that are in flight or confirmed but not trimmed yet, and an epoch
//! that changes whenever the head moves behind records read from it.

use super::storage::{Storage, StoreError};
use crate::queue::Records;
use std::time::Instant;

/// What the engine knows about the list.
#[derive(Debug, Default, Clone)]
pub struct ListView {
    /// Length as last written or read.
    pub len: u64,
    /// Records at the head that are published and not settled.
    pub head_inflight: usize,
    /// Confirmed records at the head, not trimmed yet (writes were paused).
    pub acked: usize,
    /// Bumped whenever the head changes behind in-flight records, so that
    /// their later confirms trim nothing.
    pub epoch: u64,
    /// When the real length was last read; `None` forces a read.
    pub synced_at: Option<Instant>,
    /// Records read again because the head moved under them while they were
    /// in flight or confirmed and not trimmed (counted in `events_resent`).
    pub reread: u64,
    /// The length was not read since a role change or a new key (or this
    /// node is a replica, whose list the master changes): the next read
    /// learns it and counts nothing as lost.
    pub unknown: bool,
}

impl ListView {
    /// The head moved under records read from it: forget what was read, so
    /// that their confirms trim nothing and they are read again.
    pub fn reset_head(&mut self) {
        if self.head_inflight > 0 || self.acked > 0 {
            self.reread += (self.head_inflight + self.acked) as u64;
            self.head_inflight = 0;
            self.acked = 0;
            self.epoch += 1;
        }
    }

    /// Forgets everything about the head and reads the length again soon
    /// (a role change, a new key).
    pub fn forget(&mut self) {
        self.head_inflight = 0;
        self.acked = 0;
        self.epoch += 1;
        self.synced_at = None;
        self.unknown = true;
    }

    /// The list is about to be deleted by the server (a flush or swap of
    /// its database): returns the records it held that were not read yet,
    /// and starts from an empty list. Those in flight settle as usual (the
    /// engine marks their batches: confirmed, or lost if they fail).
    pub fn dropped(&mut self) -> u64 {
        let lost = self.unread();
        self.detach_head();
        self.len = 0;
        self.synced_at = None;
        lost
    }

    /// The records read from the head left the list (trimmed or deleted
    /// while in flight): their confirms trim nothing, and they are not
    /// read again.
    pub fn detach_head(&mut self) {
        self.head_inflight = 0;
        self.acked = 0;
        self.epoch += 1;
    }

    /// Records not yet read from the list.
    pub fn unread(&self) -> u64 {
        self.len
            .saturating_sub((self.acked + self.head_inflight) as u64)
    }

    /// Reads the real length; returns how many records vanished behind the
    /// engine's back. Any change it did not make resets the head.
    pub fn sync(&mut self, store: &mut dyn Storage) -> Result<u64, StoreError> {
        let real = store.read_len()?;
        if std::mem::take(&mut self.unknown) {
            self.reset_head();
            self.len = real;
            return Ok(0);
        }
        let lost = self.len.saturating_sub(real);
        if real != self.len {
            self.reset_head();
        }
        self.len = real;
        Ok(lost)
    }

    /// Reads up to `n` records after the confirmed and in-flight head.
    pub fn read(&mut self, store: &mut dyn Storage, n: usize) -> Result<Records, StoreError> {
        let records = store.read(self.acked + self.head_inflight, n)?;
        self.head_inflight += records.len();
        Ok(records)
    }

    /// Removes the confirmed records from the head, unless the list changed
    /// behind the engine's back since it was read: then nothing is trimmed
    /// and the head is read again. A trim the server refuses keeps them
    /// confirmed and untrimmed, to be trimmed later (they count against the
    /// window, as while writes are paused): reading them again would send
    /// them again at every tick for as long as trims are refused. Returns
    /// how many records vanished.
    pub fn trim_acked(&mut self, store: &mut dyn Storage) -> Result<u64, StoreError> {
        if self.acked == 0 {
            return Ok(0);
        }
        let before = self.len;
        let lost = self.sync(store)?;
        if self.len != before {
            return Ok(lost);
        }
        match store.trim_front(self.acked as u64) {
            Ok(()) => {
                self.len = self.len.saturating_sub(self.acked as u64);
                self.acked = 0;
                Ok(lost)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::storage::MemList;

    #[test]
    fn the_first_read_after_forget_counts_nothing_as_lost() {
        let mut store = MemList::default();
        store.items.extend((0..5).map(|i| vec![i]));
        // A stale length from before a role change (the new master trimmed).
        let mut view = ListView {
            len: 10,
            ..ListView::default()
        };
        view.forget();
        assert_eq!(view.sync(&mut store), Ok(0));
        assert_eq!(view.len, 5);
        // From then on, what vanishes behind the engine's back is counted.
        store.items.drain(..2);
        assert_eq!(view.sync(&mut store), Ok(2));
        assert_eq!(view.len, 3);
    }
}
