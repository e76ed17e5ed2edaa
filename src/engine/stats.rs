//! Event counters and the reasons records are dropped.

/// Why records were dropped; each reason has its own counter, and all of
/// them add up to `events_dropped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The fallback cap trimmed the oldest records.
    Cap,
    /// Undeliverable while the fallback is off (size < 0).
    Disabled,
    /// The list refused the write (OOM, not a master, writes paused).
    Unwritable,
    /// The queue passed its hard limit (twice `queue-max-bytes`, at least
    /// 64 MiB) inside one execution unit (a script, MULTI) or while writes
    /// were paused, where the module cannot spill.
    Overflow,
    /// A record that can never be delivered: a list element that is not a
    /// record, a message id over 255 bytes, or a record over `max-record-bytes`
    /// (or over the broker's `max_message_size`).
    Rejected,
    /// Returned by the broker as unroutable, with `on-unroutable drop`.
    Unroutable,
}

/// Event counters since load. Every accepted event ends up in exactly one
/// of: confirmed, still queued/in flight/stored, dropped, lost.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Notifications received while forwarding (before the key filter).
    pub seen: u64,
    /// Events that matched a key mask and were queued.
    pub accepted: u64,
    /// Records handed to the broker (including re-sends), `events_forwarded`.
    pub forwarded: u64,
    /// Records the broker acked.
    pub confirmed: u64,
    /// Records the broker nacked.
    pub nacked: u64,
    /// Records written to the fallback list (spills and returns).
    pub stored: u64,
    /// Records dropped under a documented rule (fallback off, cap, write refused).
    pub dropped: u64,
    /// Of `dropped`: the oldest records trimmed by the fallback cap.
    pub dropped_cap: u64,
    /// Of `dropped`: undeliverable records while the fallback is off (size < 0).
    pub dropped_disabled: u64,
    /// Of `dropped`: records the list refused (OOM, WRONGTYPE) or that a demoted node could not store.
    pub dropped_unwritable: u64,
    /// Of `dropped`: the queue passed its hard limit where it could not spill.
    pub dropped_overflow: u64,
    /// Of `dropped`: records that can never be delivered (see [`DropReason::Rejected`]).
    pub rejected: u64,
    /// Of `dropped`: records returned as unroutable (`on-unroutable drop`).
    pub dropped_unroutable: u64,
    /// Records the broker returned as unroutable (every policy).
    pub returned: u64,
    /// Times the AMQP task died and was started again.
    pub supervisor_restarts: u64,
    /// Connections recycled because the broker did not confirm in time.
    pub confirm_timeouts: u64,
    /// Records that vanished from the fallback list behind the module's back (DEL, FLUSHALL, eviction).
    pub lost: u64,
    /// Connection attempts that failed or connections that were lost.
    pub reconnects: u64,
    /// Events ignored while loading, on a replica, or about the fallback key.
    pub skipped: u64,
    /// Events a slot migration caused (keys imported, trimmed, or moved by
    /// `MIGRATE`): not forwarded, a move is no write (see [`crate::moves`]).
    pub moved: u64,
    /// Nested notifications (fired by the module's own work, e.g. a key
    /// that a snapshot's read found expired), accepted once the state was
    /// free again (see `host::notify`).
    pub deferred: u64,
    /// Records sent again after a send that was not confirmed (a nack, a
    /// lost connection, a confirm timeout, a return): an upper bound of the
    /// duplicates this node caused. See also [`super::ListView::reread`].
    pub resent: u64,
}

impl Stats {
    /// Counts `n` records dropped for `why`.
    pub fn count_dropped(&mut self, why: DropReason, n: u64) {
        if n == 0 {
            return;
        }
        self.dropped += n;
        *match why {
            DropReason::Cap => &mut self.dropped_cap,
            DropReason::Disabled => &mut self.dropped_disabled,
            DropReason::Unwritable => &mut self.dropped_unwritable,
            DropReason::Overflow => &mut self.dropped_overflow,
            DropReason::Rejected => &mut self.rejected,
            DropReason::Unroutable => &mut self.dropped_unroutable,
        } += n;
    }
}
