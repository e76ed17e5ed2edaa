//! The keyspace callback's decisions, in one call: [`Engine::accept`].
//!
//! For each notification it checks the role and loading, guards against the
//! module's own fallback list (a loop), matches the key masks, counts,
//! applies the queue's hard limit, and encodes the record either into the
//! current execution unit's outbox (durable mode) or into the memory queue.
//! The host only translates the FFI arguments and acts on the [`Accepted`]
//! it gets back (bring the timer forward, arm the outbox job).

use super::{DropReason, Engine};
use crate::config::Settings;
use crate::event::Encoder;
use crate::json::{Format, Values};
use crate::queue::Records;

/// The smallest hard limit of the queue.
pub const HARD_FLOOR_BYTES: usize = 64 << 20;

/// The queue's hard limit in bytes for a `queue-max-bytes` of
/// `queue_max_bytes`, checked at enqueue: twice it, and never under
/// [`HARD_FLOOR_BYTES`], so that the events of one timer tick always fit.
pub fn hard_limit_bytes(queue_max_bytes: usize) -> usize {
    queue_max_bytes.saturating_mul(2).max(HARD_FLOOR_BYTES)
}

/// What became of one notification; the host acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Not for forwarding: a replica, the server loading, or the module's
    /// own fallback list (counted in `events_skipped`).
    Skipped,
    /// No key mask matches the key.
    Filtered,
    /// The queue is past its hard limit: dropped and counted
    /// ([`DropReason::Overflow`]).
    Dropped,
    /// Encoded into the memory queue; `was_empty`: it is the first record
    /// there, the host brings the timer forward.
    Queued {
        /// The queue was empty before.
        was_empty: bool,
    },
    /// Encoded into the outbox of the current execution unit; `arm`: no job
    /// is armed for it yet, the host arms one.
    Outbox {
        /// The host must arm the unit's job.
        arm: bool,
    },
}

/// What [`Engine::accept`] needs from the server besides the event, read
/// only for an event it keeps (a filtered event costs no clock read).
pub trait Origin {
    /// The database of the notification.
    fn db(&self) -> i32;
    /// Seconds since the epoch, for the record's timestamp.
    fn now_secs(&self) -> u64;
    /// Durable mode can be used now: `durability outbox`, the fallback key
    /// is known, and the server runs post-notification jobs (the engine
    /// checks that the fallback list is on).
    fn outbox(&self) -> bool;
    /// `format json`: appends the `,"before":...` and `,"after":...`
    /// members that `values` asks for, never reading more than `cap` bytes
    /// of a value (the host reads the value; the default reads none).
    fn values(
        &self,
        _db: i32,
        _event: &[u8],
        _key: &[u8],
        _values: Values,
        _cap: usize,
        _out: &mut Vec<u8>,
    ) {
    }
}

/// An event about a whole database, from the server's `FlushDB` and
/// `SwapDB` events (the commands fire no keyspace event). Forwarded
/// whatever the key masks, in order with the key events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbEvent {
    /// `FLUSHDB` of `db`, or `FLUSHALL` when `db` is -1.
    Flush {
        /// The flushed database, -1 for all.
        db: i32,
    },
    /// `SWAPDB first second`.
    Swap {
        /// The first index given.
        first: i32,
        /// The second index given.
        second: i32,
    },
}

impl DbEvent {
    /// The event name (the same in both formats).
    pub fn name(self) -> &'static [u8] {
        match self {
            Self::Flush { db: -1 } => b"flushall",
            Self::Flush { .. } => b"flushdb",
            Self::Swap { .. } => b"swapdb",
        }
    }

    /// The record's `db`: the flushed database (-1 for all), or the first index.
    pub fn db(self) -> i32 {
        match self {
            Self::Flush { db } => db,
            Self::Swap { first, .. } => first,
        }
    }

    /// The record's key: empty, or the second index as decimal text.
    pub fn key(self) -> Vec<u8> {
        match self {
            Self::Flush { .. } => Vec::new(),
            Self::Swap { second, .. } => second.to_string().into_bytes(),
        }
    }
}

/// A flush seen but not yet in force (see [`Engine::db_event`]): its
/// record, encoded and not yet queued (for the outbox, or the queue), and
/// the fallback records the flush deleted, not yet counted as lost.
#[derive(Debug, Default)]
struct PendingFlush {
    record: Option<(Vec<u8>, bool)>,
    lost: u64,
}

/// Encodes one event in the format in force (see [`crate::event`]).
#[allow(clippy::too_many_arguments)]
#[inline]
fn encode(
    encoder: &mut Encoder,
    s: &Settings,
    origin: &impl Origin,
    out: &mut Vec<u8>,
    now: u64,
    db: i32,
    event: &[u8],
    key: &[u8],
) {
    match s.format {
        Format::Seed => encoder.record_into(out, now, db, event, key),
        Format::Json => {
            let cap = usize::try_from(s.value_max_bytes).unwrap_or(usize::MAX);
            encoder.json_into(out, now, db, event, key, &s.amqp.node, |out| {
                origin.values(db, event, key, s.values, cap, out)
            })
        }
    }
}

/// The callback's side of the engine: the encoder and the outbox.
#[derive(Debug)]
pub struct Intake {
    /// Builds records.
    encoder: Encoder,
    /// Records per queue chunk (the batch size, set at each tick).
    pub(super) chunk: usize,
    /// Durable mode: records of the current execution unit, for its job.
    pub(super) outbox: Records,
    /// The current execution unit's job is armed (the engine answered
    /// `Outbox { arm: true }`, and the host armed it or called
    /// [`Engine::outbox_to_queue`]).
    outbox_armed: bool,
    /// The fallback key's prefix, which covers the lists of all nodes
    /// (`<prefix>` or `<prefix>{tag}`); fixed at load.
    list_prefix: Vec<u8>,
    /// A flush event waiting for the next event, tick or job.
    pending: Option<PendingFlush>,
}

impl Intake {
    /// An intake for the node with the short id `node`, whose fallback keys
    /// start with `list_prefix`.
    pub fn new(node: &str, list_prefix: &str, chunk: usize) -> Self {
        Self {
            encoder: Encoder::new(node),
            chunk: chunk.max(1),
            outbox: Records::default(),
            outbox_armed: false,
            list_prefix: list_prefix.as_bytes().to_vec(),
            pending: None,
        }
    }

    /// A flush event is held back (see [`Engine::db_event`]).
    pub fn pending(&self) -> bool {
        self.pending.is_some()
    }

    /// A flush event is held back for the outbox.
    fn pending_outbox(&self) -> bool {
        self.pending
            .as_ref()
            .is_some_and(|p| p.record.as_ref().is_some_and(|r| r.1))
    }

    /// True for the fallback list of any node.
    #[inline]
    fn is_fallback_key(&self, key: &[u8]) -> bool {
        // Comparing the first byte first keeps a library call off the common path.
        key.first() == self.list_prefix.first() && key.starts_with(&self.list_prefix)
    }
}

impl Engine {
    /// Decides what becomes of one keyspace notification (`event` on
    /// `key`), counts it, and encodes its record where it goes.
    #[inline]
    pub fn accept(&mut self, event: &[u8], key: &[u8], origin: &impl Origin) -> Accepted {
        if !self.is_master() || self.is_loading() {
            self.stats.skipped += 1;
            return Accepted::Skipped;
        }
        self.stats.seen += 1;
        if self.intake.is_fallback_key(key) {
            // Never forward the module's own list (a loop).
            self.stats.skipped += 1;
            return Accepted::Skipped;
        }
        if !self.settings.masks.matches(key) {
            return Accepted::Filtered;
        }
        self.stats.accepted += 1;
        // The timer spills the queue past its bounds; between two ticks its
        // bytes may grow to the hard limit. Beyond it (one script or MULTI
        // writing a flood, or writes paused) the module cannot write: the
        // event is dropped and counted.
        if self.queue.bytes() > self.limits.hard_limit_bytes {
            self.stats.count_dropped(DropReason::Overflow, 1);
            return Accepted::Dropped;
        }
        self.commit_pending();
        self.enqueue(origin, origin.db(), event, key)
    }

    /// Encodes one accepted event into the unit's outbox or the queue.
    #[inline]
    fn enqueue(&mut self, origin: &impl Origin, db: i32, event: &[u8], key: &[u8]) -> Accepted {
        let now = origin.now_secs();
        let intake = &mut self.intake;
        if self.settings.fallback_size >= 0 && origin.outbox() {
            let (encoder, settings) = (&mut intake.encoder, &self.settings);
            intake
                .outbox
                .push_with(|out| encode(encoder, settings, origin, out, now, db, event, key));
            return Accepted::Outbox {
                arm: !std::mem::replace(&mut intake.outbox_armed, true),
            };
        }
        if !intake.outbox.is_empty() {
            // Durable mode was switched off inside this execution unit: its
            // earlier events go first.
            let earlier = std::mem::take(&mut intake.outbox);
            self.queue.push_records(earlier);
        }
        let was_empty = self.queue.is_empty();
        let (encoder, settings) = (&mut intake.encoder, &self.settings);
        self.queue.push_with(intake.chunk, |out| {
            encode(encoder, settings, origin, out, now, db, event, key)
        });
        Accepted::Queued { was_empty }
    }

    /// A whole-database event (`FLUSHDB`, `FLUSHALL`, `SWAPDB`), forwarded
    /// whatever the masks. The server fires these events before the change
    /// takes effect, so no later write overtakes them.
    ///
    /// A flush is held back until the next event, tick or outbox job
    /// ([`Engine::commit_pending`]): `DEBUG RELOAD` and `DEBUG LOADAOF` empty
    /// the data set the same way and then load it again, and a load that
    /// starts meanwhile withdraws the flush ([`Engine::withdraw_pending`]),
    /// since the data set was not emptied for good and nothing the load
    /// brings back is forwarded.
    pub fn db_event(&mut self, ev: DbEvent, origin: &impl Origin) -> Accepted {
        if !self.is_master() || self.is_loading() {
            self.stats.skipped += 1;
            return Accepted::Skipped;
        }
        self.stats.seen += 1;
        self.commit_pending();
        let (db, key) = (ev.db(), ev.key());
        let event = ev.name();
        if let DbEvent::Flush { .. } = ev {
            let outbox = self.settings.fallback_size >= 0 && origin.outbox();
            let mut record = Vec::new();
            let now = origin.now_secs();
            encode(
                &mut self.intake.encoder,
                &self.settings,
                origin,
                &mut record,
                now,
                db,
                event,
                &key,
            );
            self.intake.pending = Some(PendingFlush {
                record: Some((record, outbox)),
                lost: 0,
            });
            return if outbox {
                Accepted::Outbox {
                    arm: !std::mem::replace(&mut self.intake.outbox_armed, true),
                }
            } else {
                Accepted::Queued {
                    was_empty: self.queue.is_empty(),
                }
            };
        }
        self.stats.accepted += 1;
        self.enqueue(origin, db, event, &key)
    }

    /// A record of the snapshot walk (`snapshot`, `snapshot_begin`,
    /// `snapshot_end`): the host chose the key (it passed the masks), so
    /// only the role, loading and the queue's hard limit are checked.
    pub fn snapshot_record(
        &mut self,
        event: &[u8],
        db: i32,
        key: &[u8],
        origin: &impl Origin,
    ) -> Accepted {
        if !self.is_master() || self.is_loading() {
            return Accepted::Skipped;
        }
        self.commit_pending();
        self.stats.accepted += 1;
        if self.queue.bytes() > self.limits.hard_limit_bytes {
            self.stats.count_dropped(DropReason::Overflow, 1);
            return Accepted::Dropped;
        }
        self.enqueue(origin, db, event, key)
    }

    /// Queues a held-back flush event (see [`Engine::db_event`]).
    #[inline]
    pub fn commit_pending(&mut self) {
        let Some(p) = self.intake.pending.take() else {
            return;
        };
        self.count_lost(p.lost);
        let Some((record, outbox)) = p.record else {
            return;
        };
        self.stats.accepted += 1;
        if outbox {
            self.intake
                .outbox
                .push_with(|out| out.extend_from_slice(&record));
        } else {
            if !self.intake.outbox.is_empty() {
                let earlier = std::mem::take(&mut self.intake.outbox);
                self.queue.push_records(earlier);
            }
            self.queue
                .push_with(self.intake.chunk, |out| out.extend_from_slice(&record));
        }
    }

    /// The server is about to delete the fallback list with its database
    /// (`FLUSHALL`, or `FLUSHDB` of the list's database): what it held and
    /// was not read yet is counted as lost when the flush is in force (not
    /// for a reload, which brings the list back; see [`Engine::db_event`]).
    pub fn list_flushed(&mut self) {
        if !self.is_master() {
            return;
        }
        self.detach_list_batches(super::Detached::Flushed);
        let lost = self.list.dropped();
        self.intake
            .pending
            .get_or_insert_with(Default::default)
            .lost += lost;
    }

    /// A load starts: a held-back flush was a reload's, not the data set's
    /// end; it is dropped unsent (it was never counted as accepted), and the
    /// list it seemed to delete is read anew when the load ends.
    pub fn withdraw_pending(&mut self) -> bool {
        self.intake.pending.take().is_some()
    }

    /// The outbox job (or the timer, should a job not have run): appends
    /// the current execution unit's records to the list.
    pub fn flush_outbox(&mut self, store: &mut dyn super::Storage) -> super::Todo {
        self.commit_pending();
        self.intake.outbox_armed = false;
        let records = std::mem::take(&mut self.intake.outbox);
        self.append_outbox(store, records);
        self.take_todo()
    }

    /// Records wait for the outbox job: the unit's outbox, or a flush held
    /// back for it.
    pub fn outbox_waiting(&self) -> bool {
        !self.intake.outbox.is_empty() || self.intake.pending_outbox()
    }

    /// The outbox's records cannot go to the list now (no job, no list):
    /// they wait in memory, in the queue.
    pub fn outbox_to_queue(&mut self) {
        self.commit_pending();
        self.intake.outbox_armed = false;
        let records = std::mem::take(&mut self.intake.outbox);
        self.queue.push_records(records);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::keymask::KeyMasks;

    struct At {
        outbox: bool,
    }

    impl Origin for At {
        fn db(&self) -> i32 {
            3
        }
        fn now_secs(&self) -> u64 {
            7
        }
        fn outbox(&self) -> bool {
            self.outbox
        }
    }

    const MEMORY: At = At { outbox: false };
    const DURABLE: At = At { outbox: true };

    fn engine() -> Engine {
        let settings = Settings {
            masks: KeyMasks::from_args(&["^user:"]).expect("mask"),
            ..Settings::default()
        };
        Engine::new(
            settings,
            true,
            Intake::new("n", "kea:fallback", 4),
            super::super::Limits::default(),
        )
    }

    #[test]
    fn replica_and_loading_skip() {
        let mut e = engine();
        e.set_role(false);
        assert_eq!(e.accept(b"set", b"user:1", &MEMORY), Accepted::Skipped);
        e.set_role(true);
        e.set_loading(true);
        assert_eq!(e.accept(b"set", b"user:1", &MEMORY), Accepted::Skipped);
        assert_eq!((e.stats.skipped, e.stats.seen, e.stats.accepted), (2, 0, 0));
        assert!(e.queue.is_empty());
    }

    #[test]
    fn own_list_is_never_forwarded() {
        let mut e = engine();
        e.settings.masks = KeyMasks::All;
        for key in [&b"kea:fallback"[..], b"kea:fallback{06S}"] {
            assert_eq!(e.accept(b"rpush", key, &MEMORY), Accepted::Skipped);
        }
        assert_eq!(
            e.accept(b"set", b"kea:other", &MEMORY),
            Accepted::Queued { was_empty: true }
        );
        assert_eq!((e.stats.seen, e.stats.skipped, e.stats.accepted), (3, 2, 1));
    }

    #[test]
    fn masks_filter_without_counting() {
        let mut e = engine();
        assert_eq!(e.accept(b"set", b"order:1", &MEMORY), Accepted::Filtered);
        assert_eq!(
            e.accept(b"set", b"user:1", &MEMORY),
            Accepted::Queued { was_empty: true }
        );
        assert_eq!(
            e.accept(b"del", b"user:2", &MEMORY),
            Accepted::Queued { was_empty: false }
        );
        assert_eq!((e.stats.seen, e.stats.skipped, e.stats.accepted), (3, 0, 2));
        let records = e.records_in_memory();
        assert_eq!(records[0], b"n-1\n7\n3\nset\nuser:1");
        assert_eq!(records[1], b"n-2\n7\n3\ndel\nuser:2");
    }

    #[test]
    fn overflow_is_dropped_and_counted() {
        let mut e = engine();
        e.settings.masks = KeyMasks::All;
        let key = vec![b'k'; 1 << 20];
        let mut dropped = 0;
        for _ in 0..(e.limits.hard_limit_bytes >> 20) + 3 {
            if e.accept(b"set", &key, &MEMORY) == Accepted::Dropped {
                dropped += 1;
            }
        }
        // Each record is over 1 MiB: the queue passes the limit after as
        // many records as the limit has MiB, and the three after are dropped.
        assert_eq!(dropped, 3);
        assert_eq!(e.queue.len(), e.limits.hard_limit_bytes >> 20);
        assert_eq!((e.stats.dropped_overflow, e.stats.dropped), (3, 3));
        assert_eq!(e.stats.accepted, e.queue.len() as u64 + 3);
    }

    #[test]
    fn outbox_or_queue() {
        let mut e = engine();
        assert_eq!(
            e.accept(b"set", b"user:1", &DURABLE),
            Accepted::Outbox { arm: true }
        );
        e.intake.outbox_armed = true;
        assert_eq!(
            e.accept(b"set", b"user:2", &DURABLE),
            Accepted::Outbox { arm: false }
        );
        assert_eq!(e.intake.outbox.len(), 2);
        assert!(e.queue.is_empty());
        // Durable mode switched off inside the unit: the earlier records go
        // to the queue first, then this one.
        assert_eq!(
            e.accept(b"set", b"user:3", &MEMORY),
            Accepted::Queued { was_empty: false }
        );
        assert!(e.intake.outbox.is_empty());
        let keys: Vec<Vec<u8>> = e
            .records_in_memory()
            .iter()
            .map(|r| {
                r.rsplit(|b| *b == b'\n')
                    .next()
                    .unwrap_or_default()
                    .to_vec()
            })
            .collect();
        assert_eq!(keys, [&b"user:1"[..], b"user:2", b"user:3"]);
        // The fallback list off: no outbox even in durable mode.
        e.settings.fallback_size = -1;
        assert_eq!(
            e.accept(b"set", b"user:4", &DURABLE),
            Accepted::Queued { was_empty: false }
        );
    }
}
