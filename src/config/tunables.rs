//! The tuning knobs, each a module config held in an atomic (read without a
//! lock on every tick), and the fixed configs read at load. Pure: the host
//! registers them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

pub use crate::keymask::KEYMASK_MAX_BYTES;
pub use crate::knob::Tunable;

/// `key_evt_amqp.flush-interval-ms`: how often the timer runs while there is work.
pub static FLUSH_INTERVAL_MS: Tunable = Tunable::new("flush-interval-ms", 5, 1, 1000);
/// `key_evt_amqp.queue-max-events`: in-memory queue bound in events; past it, spill to the list.
pub static QUEUE_MAX_EVENTS: Tunable = Tunable::new("queue-max-events", 1_000_000, 1, 100_000_000);
/// `key_evt_amqp.queue-max-bytes`: in-memory queue bound in bytes; past it, spill to the list.
pub static QUEUE_MAX_BYTES: Tunable = Tunable::new("queue-max-bytes", 64 << 20, 1024, 16 << 30);
/// `key_evt_amqp.batch-size`: events handed to the AMQP side in one batch.
pub static BATCH_SIZE: Tunable = Tunable::new("batch-size", 1024, 1, 100_000);
/// `key_evt_amqp.inflight-max`: events published and not yet confirmed, at most.
pub static INFLIGHT_MAX: Tunable = Tunable::new("inflight-max", 8192, 1, 1_000_000);

/// `key_evt_amqp.reconnect-max-ms`: the cap of the reconnect backoff.
pub static RECONNECT_MAX_MS: Tunable = Tunable::new("reconnect-max-ms", 5000, 100, 600_000);

/// `key_evt_amqp.connect-timeout-ms`: the longest one connection attempt may take
/// (TCP, TLS, the AMQP handshake and the confirm-mode channel); past it the
/// attempt counts as failed, events go to the fallback list, and the next
/// attempt follows the backoff.
pub static CONNECT_TIMEOUT_MS: Tunable = Tunable::new("connect-timeout-ms", 10_000, 100, 600_000);

/// What to do with an event the broker returns as unroutable (no queue
/// bound for its routing key): `key_evt_amqp.on-unroutable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unroutable {
    /// Back to the fallback list, sent again later: a missing binding is an
    /// outage, not a success (the default).
    #[default]
    Store,
    /// Dropped, and counted in `events_dropped_unroutable`.
    Drop,
    /// Counted in `events_returned` only, and treated as delivered.
    Count,
}

impl Unroutable {
    /// Every value with its config name.
    pub const ALL: [(Self, &'static str); 3] = [
        (Self::Store, "store"),
        (Self::Drop, "drop"),
        (Self::Count, "count"),
    ];
}

/// How an accepted event is held until the broker confirms it:
/// `key_evt_amqp.durability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// In module memory, and in the fallback list only when it cannot go
    /// now (the default): lost if Redis dies first.
    #[default]
    Memory,
    /// Appended to the fallback list in the execution unit of the write that
    /// caused it (a post-notification job), so the AOF and the replicas get
    /// the write and its event together, or neither. Redis 7.2+ and Valkey.
    Outbox,
}

impl Durability {
    /// Every value with its config name.
    pub const ALL: [(Self, &'static str); 2] = [(Self::Memory, "memory"), (Self::Outbox, "outbox")];

    /// The config name of this value.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(d, _)| *d == self)
            .map_or("memory", |(_, n)| n)
    }
}

/// `key_evt_amqp.durability` is `outbox` (read on every event, so an atomic).
pub static OUTBOX: AtomicBool = AtomicBool::new(false);

/// The current [`Durability`].
pub fn durability() -> Durability {
    if OUTBOX.load(Ordering::Relaxed) {
        Durability::Outbox
    } else {
        Durability::Memory
    }
}

/// `key_evt_amqp.on-unroutable` (see [`Unroutable`]).
pub static ON_UNROUTABLE: Mutex<Unroutable> = Mutex::new(Unroutable::Store);

/// `key_evt_amqp.burst-rate`: events per second above which forwarding waits while the
/// queue is less than half full (0: never wait).
pub static BURST_RATE: Tunable = Tunable::new("burst-rate", 100_000, 0, 1_000_000_000);

/// `key_evt_amqp.burst-max-ms`: the longest forwarding waits in one burst; past
/// it, forwarding runs at full speed while the rate stays above `burst-rate`.
pub static BURST_MAX_MS: Tunable = Tunable::new("burst-max-ms", 30_000, 0, 3_600_000);

/// `key_evt_amqp.confirm-timeout-ms`: a publish the broker has not confirmed after this
/// long recycles the connection; the unconfirmed records go back to the list.
pub static CONFIRM_TIMEOUT_MS: Tunable = Tunable::new("confirm-timeout-ms", 30_000, 100, 3_600_000);

/// `key_evt_amqp.max-record-bytes`: a record (message) larger than this is never
/// sent; it is counted in `events_rejected` and dropped.
pub static MAX_RECORD_BYTES: Tunable = Tunable::new("max-record-bytes", 16 << 20, 1024, 512 << 20);

/// `key_evt_amqp.fallback-db` (immutable): the database that holds the fallback list.
pub static FALLBACK_DB: Tunable = Tunable::new("fallback-db", 0, 0, 1_000_000);

/// `key_evt_amqp.unroutable-retry-max-ms`: the cap of the wait before records the
/// broker returned as unroutable are sent again (from 1 s, doubling per return).
pub static UNROUTABLE_RETRY_MAX_MS: Tunable =
    Tunable::new("unroutable-retry-max-ms", 60_000, 1000, 3_600_000);

/// `key_evt_amqp.snapshot-slice-us`: main-thread time a snapshot walk takes
/// per tick, in microseconds.
pub static SNAPSHOT_SLICE_US: Tunable = Tunable::new("snapshot-slice-us", 1000, 50, 1_000_000);

/// `key_evt_amqp.snapshot-backlog-max`: a snapshot walk waits while this many
/// records or more are queued, in flight or in the fallback list (or the
/// queue holds half of `queue-max-bytes`), and goes on once they drained.
pub static SNAPSHOT_BACKLOG_MAX: Tunable =
    Tunable::new("snapshot-backlog-max", 50_000, 1, 100_000_000);

/// All mutable integer tunables, for registration.
pub static TUNABLES: [&Tunable; 15] = [
    &SNAPSHOT_SLICE_US,
    &SNAPSHOT_BACKLOG_MAX,
    &KEYMASK_MAX_BYTES,
    &BURST_MAX_MS,
    &BURST_RATE,
    &CONFIRM_TIMEOUT_MS,
    &MAX_RECORD_BYTES,
    &FLUSH_INTERVAL_MS,
    &QUEUE_MAX_EVENTS,
    &QUEUE_MAX_BYTES,
    &BATCH_SIZE,
    &INFLIGHT_MAX,
    &RECONNECT_MAX_MS,
    &CONNECT_TIMEOUT_MS,
    &UNROUTABLE_RETRY_MAX_MS,
];

/// `key_evt_amqp.fallback-key` (immutable): the fallback list key (a hash tag is added in cluster mode).
pub static FALLBACK_KEY: Mutex<String> = Mutex::new(String::new());
/// Default of [`FALLBACK_KEY`].
pub const FALLBACK_KEY_DEFAULT: &str = "key_evt_amqp:fallback";
