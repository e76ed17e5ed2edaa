//! Writing to the fallback list: spills, returns, the cap, and what is held
//! in memory before SHUTDOWN. Every write is refused while writes are paused.

use super::{Adoption, At, Broker, DropReason, Engine, ListWrites, Storage, StoreError};
use crate::queue::Records;

/// What became of records handed to [`Engine::store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stored {
    /// In the list.
    Written,
    /// Dropped and counted by the rules.
    Dropped,
    /// Back at the head of the queue: the list's slot is not served here.
    Requeued,
}

impl Engine {
    /// Books records a host moved from another node's fallback list to the
    /// tail of ours (adoption after resharding); the list is now `len` long.
    /// A move is not a new store: no cap, no drop, not counted as stored.
    pub fn adopted(&mut self, n: u64, len: u64) {
        self.list_writes = ListWrites::Accepted;
        let expected = self.list.len + n;
        if len != expected {
            self.list.reset_head();
        }
        self.count_lost(expected.saturating_sub(len));
        self.list.len = len;
    }

    /// Writes records to the list, or drops and counts them by the rules.
    /// A write refused because the list's slot is not served here (it moved
    /// or is being migrated: `ASK`, `MOVED`) drops nothing: the records go
    /// back to the head of the queue, older than all it holds, until the
    /// host picks a key in a slot it owns.
    pub(super) fn store(&mut self, store: &mut dyn Storage, records: Records, at: At) -> Stored {
        if records.is_empty() {
            return Stored::Written;
        }
        let n = records.len() as u64;
        if self.settings.fallback_size < 0 {
            self.drop_records(store, &records, DropReason::Disabled);
            return Stored::Dropped;
        }
        if !self.is_master() || !store.usable() || store.writes_paused() {
            self.drop_records(store, &records, DropReason::Unwritable);
            return Stored::Dropped;
        }
        let written = match at {
            At::Tail => store.append(&records),
            At::Head => store.prepend(&records),
        };
        match written {
            Ok(len) => {
                self.written(store, at, n, len);
                Stored::Written
            }
            Err(e) if e.misplaced() => {
                self.write_failed(e);
                self.queue.push_front_records(records, self.intake.chunk);
                Stored::Requeued
            }
            Err(e) => {
                self.drop_records(store, &records, DropReason::Unwritable);
                self.write_failed(e);
                Stored::Dropped
            }
        }
    }

    /// Durable mode (`durability outbox`): appends the records of one
    /// execution unit to the list's tail, in that unit, so that the write's
    /// propagation carries them. What is still in memory goes first (it is
    /// older). When the list cannot take them they wait in memory, like the
    /// events of `memory` mode.
    pub fn append_outbox(&mut self, store: &mut dyn Storage, records: Records) {
        if records.is_empty() {
            return;
        }
        if !self.is_master() || !self.list_writable(store) {
            self.queue.push_records(records);
            return;
        }
        self.spill(store);
        if !self.queue.is_empty() {
            // The spill was refused (a moved slot): keep the order.
            self.queue.push_records(records);
            return;
        }
        match store.append(&records) {
            Ok(len) => self.written(store, At::Tail, records.len() as u64, len),
            Err(e) => {
                self.write_failed(e);
                self.queue.push_records(records);
            }
        }
    }

    /// The list is on, there is one, and writes are allowed now.
    pub(super) fn list_writable(&self, store: &dyn Storage) -> bool {
        self.settings.fallback_size >= 0
            && store.usable()
            && !store.writes_paused()
            && !self.adopting()
    }

    /// Books `n` records written, the list now `len` long; applies the cap.
    fn written(&mut self, store: &mut dyn Storage, at: At, n: u64, len: u64) {
        self.list_writes = ListWrites::Accepted;
        // A prepend moves the head; a length other than expected means
        // the list changed behind our back since it was last read.
        let expected = self.list.len + n;
        if matches!(at, At::Head) || len != expected {
            self.list.reset_head();
        }
        self.count_lost(expected.saturating_sub(len));
        self.list.len = len;
        self.stats.stored += n;
        self.apply_cap(store);
    }

    /// Brings the list back to its cap by trimming the head: records
    /// confirmed and not trimmed yet go first (they were delivered), then
    /// those in flight (their batches are marked: confirmed, or dropped if
    /// they fail), then, only if the list is still over the cap, the oldest
    /// unread records, dropped and counted. After a failed batch, until
    /// every batch in flight settled, the head holds the failed records
    /// (to be read again) before those still in flight: the cap waits for
    /// the next write, when the head is plain again.
    fn apply_cap(&mut self, store: &mut dyn Storage) {
        let cap = self.settings.fallback_cap();
        if cap == 0 || self.list.len <= cap {
            return;
        }
        if self.sending == super::Sending::Halted && self.list_in_flight() {
            return;
        }
        let excess = self.list.len - cap;
        let acked = self.list.acked as u64;
        let read = acked + self.list.head_inflight as u64;
        if excess <= acked {
            // Delivered records only: the trim a confirm does, early.
            match store.trim_front(excess) {
                Ok(()) => {
                    self.list.acked -= excess as usize;
                    self.list.len -= excess;
                }
                Err(e) => self.list_error("fallback cap", &e),
            }
            return;
        }
        if read > 0 {
            match store.trim_front(read) {
                Ok(()) => {
                    self.detach_list_batches(super::Detached::Capped);
                    self.list.detach_head();
                    self.list.len -= read;
                }
                Err(e) => {
                    self.list_error("fallback cap", &e);
                    return;
                }
            }
        }
        if self.list.len > cap {
            let excess = self.list.len - cap;
            match store.trim_dropped(excess, DropReason::Cap) {
                Ok(()) => {
                    self.list.len = cap;
                    self.stats.count_dropped(DropReason::Cap, excess);
                }
                Err(e) => self.list_error("fallback cap", &e),
            }
        }
    }

    /// Drops `records` under the rule `why`: counted, and shown to the
    /// storage (see [`Storage::dropped`]).
    pub(super) fn drop_records(
        &mut self,
        store: &mut dyn Storage,
        records: &Records,
        why: DropReason,
    ) {
        self.stats.count_dropped(why, records.len() as u64);
        store.dropped(records, why);
    }

    fn write_failed(&mut self, e: StoreError) {
        // Bursts stop holding events back while the list refuses them (OOM).
        self.list_writes = ListWrites::Refused;
        self.set_error(format!("fallback write: {e}"));
        // A slot may have moved: the host looks again.
        self.todo.refresh_slots = true;
        self.todo.misplaced |= e.misplaced();
    }

    /// Moves the whole in-memory queue to the tail of the list. While writes
    /// are paused (or a moved list is adopted) it holds (the callback drops
    /// beyond the hard limit).
    pub fn spill(&mut self, store: &mut dyn Storage) {
        self.spill_some(store, usize::MAX);
    }

    /// Moves the oldest records of the queue, at least `limit` of them (whole
    /// chunks) or all, to the tail of the list; the rest stays in memory for
    /// the next tick. The list then holds only records older than the
    /// queue's, so the order holds.
    pub fn spill_some(&mut self, store: &mut dyn Storage, limit: usize) {
        if self.queue.is_empty() {
            return;
        }
        if (store.writes_paused() || self.adopting()) && self.settings.fallback_size >= 0 {
            return;
        }
        let mut moved = 0usize;
        while moved < limit {
            let Some(records) = self.queue.take_at_most(limit - moved) else {
                break;
            };
            moved += records.len();
            if self.store(store, records, At::Tail) == Stored::Requeued {
                break;
            }
        }
    }

    /// Moves the oldest records of the queue to the tail of the list until
    /// the queue is back within its bounds: each tick pushes about what
    /// arrived since the last one, in large multi-element pushes, and the
    /// newest records stay in memory. The list then holds only records older
    /// than the queue's, so the order holds.
    pub fn spill_excess(&mut self, store: &mut dyn Storage, max_events: usize, max_bytes: usize) {
        if (store.writes_paused() || self.adopting()) && self.settings.fallback_size >= 0 {
            return;
        }
        let mut out = Records::default();
        while self.queue.over(max_events, max_bytes) {
            let Some(records) = self.queue.take_chunk() else {
                break;
            };
            out.extend(records.iter());
        }
        self.store(store, out, At::Tail);
    }

    /// Writes everything held only in memory to the list (before SHUTDOWN).
    pub fn persist_memory(&mut self, store: &mut dyn Storage, broker: &mut dyn Broker) {
        if !self.is_master() || self.is_loading() || store.writes_paused() {
            return;
        }
        self.collect(broker);
        self.settle(store);
        let mut older = std::mem::take(&mut self.returns);
        for b in self
            .inflight
            .iter_mut()
            .filter(|b| !b.from_list && !b.stored)
        {
            b.stored = true;
            older.extend(b.records.iter());
        }
        if self.store(store, older, At::Head) != Stored::Requeued {
            // Nothing may stay only in memory now, adoption or not.
            self.adoption = Adoption::None;
            self.spill(store);
        }
        // Refused as misplaced (the list's slot is being migrated away):
        // the process ends, so what memory holds is dropped, and counted.
        for chunk in self.queue.take_all() {
            self.drop_records(store, &chunk, DropReason::Unwritable);
        }
    }
}
