//! The engine's vocabulary: the link, the tunables of a tick, and one named
//! state per concern (role, loading, sending, list writes, adoption), with
//! the batch in flight and the log line.

use super::intake;
use crate::amqp::Settled;
use crate::config::Unroutable;
use crate::queue::Records;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The connection as the engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Never asked to connect (the connection is lazy).
    Idle,
    /// A connect was requested.
    Connecting,
    /// Connected, publishing.
    Up,
    /// Connected, but the broker blocked publishing (resource alarm).
    Blocked,
    /// Lost or failed; the AMQP side retries with backoff.
    Down,
    /// Closed by `key_evt_amqp.disconnect`, until the next `connect`.
    Closed,
}

impl Link {
    /// Name shown in INFO.
    pub fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Connecting => "connecting",
            Self::Up => "connected",
            Self::Blocked => "blocked",
            Self::Down => "reconnecting",
            Self::Closed => "disconnected",
        }
    }

    /// A connection exists or is being made (not idle, not closed).
    pub fn active(self) -> bool {
        matches!(
            self,
            Self::Up | Self::Down | Self::Connecting | Self::Blocked
        )
    }
}

/// The tunables the engine reads at each tick.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most records in flight (`inflight-max`).
    pub window: usize,
    /// Records per batch (`batch-size`).
    pub batch: usize,
    /// Queue bound in records (`queue-max-events`).
    pub queue_max_events: usize,
    /// Queue bound in bytes (`queue-max-bytes`).
    pub queue_max_bytes: usize,
    /// Events per second above which forwarding waits (`burst-rate`, 0 = off).
    pub burst_rate: i64,
    /// The longest wait of one burst (`burst-max-ms`).
    pub burst_max: Duration,
    /// What to do with records the broker returns as unroutable.
    pub on_unroutable: Unroutable,
    /// The cap of the wait after returns (`unroutable-retry-max-ms`).
    pub unroutable_retry_max: Duration,
    /// Records one tick spills beyond what arrived since the last tick,
    /// while the link is down (the rest stays in memory for later ticks).
    pub spill_chunk: usize,
    /// The queue's hard limit in bytes, checked when an event is accepted
    /// (see [`intake::hard_limit_bytes`]).
    pub hard_limit_bytes: usize,
    /// The tick interval while there is work (`flush-interval-ms`).
    pub flush_interval: Duration,
}

impl Default for Limits {
    /// The configs' defaults.
    fn default() -> Self {
        use crate::config as c;
        Self {
            window: c::INFLIGHT_MAX.default as usize,
            batch: c::BATCH_SIZE.default as usize,
            queue_max_events: c::QUEUE_MAX_EVENTS.default as usize,
            queue_max_bytes: c::QUEUE_MAX_BYTES.default as usize,
            burst_rate: c::BURST_RATE.default,
            burst_max: Duration::from_millis(c::BURST_MAX_MS.default.unsigned_abs()),
            on_unroutable: Unroutable::Store,
            unroutable_retry_max: Duration::from_millis(
                c::UNROUTABLE_RETRY_MAX_MS.default.unsigned_abs(),
            ),
            spill_chunk: 16_384,
            hard_limit_bytes: intake::hard_limit_bytes(c::QUEUE_MAX_BYTES.default as usize),
            flush_interval: Duration::from_millis(c::FLUSH_INTERVAL_MS.default.unsigned_abs()),
        }
    }
}

/// The node's role, and what a replica does with what it held in memory as
/// a master (see `demoted.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Forwards.
    Master,
    /// Forwards nothing new.
    Replica(Leftovers),
}

/// What a demoted node does with the events it holds only in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leftovers {
    /// Its list was empty and none of it was in flight at the demotion:
    /// sending them overtakes nothing.
    MayGo,
    /// Its list held records (the new master sends them): what is in
    /// memory would overtake them, so it is dropped and counted.
    Drop,
}

/// Whether the server is loading its data (nothing is forwarded then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// Serving.
    Ready,
    /// Loading AOF or RDB, or a replica's full sync.
    Loading,
}

/// Whether new batches may be handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sending {
    /// Yes.
    Open,
    /// A batch failed: nothing new goes out until every batch in flight
    /// settled and what came back is back at the list's head.
    Halted,
}

/// How the last write to the fallback list went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ListWrites {
    /// Accepted (or none tried yet).
    Accepted,
    /// Refused (over `maxmemory`, wrong type, a slot moved): bursts stop
    /// holding events back, since they would have nowhere to go.
    Refused,
}

/// Whether a moved fallback list is being adopted into this node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adoption {
    /// No.
    None,
    /// Yes: this node's own records wait in memory (as while writes are
    /// paused), so that the adopted records stay contiguous and ahead.
    Adopting,
}

/// Why the records of a list batch in flight left the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Detached {
    /// The server deleted the list (`FLUSHALL`, or `FLUSHDB` of its
    /// database): what fails is lost.
    Flushed,
    /// The cap trimmed them (with the records before them, confirmed, and
    /// after them, dropped): what fails is dropped under the cap.
    Capped,
}

/// The event rate, for bursts (see `forward.rs`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Rate {
    /// When the rate was last measured, and `accepted` then.
    pub(super) mark: (Instant, u64),
    /// When the current burst began (events faster than `burst-rate`).
    pub(super) burst_since: Option<Instant>,
    /// The last tick that saw events faster than `burst-rate`.
    pub(super) last_fast: Option<Instant>,
}

/// How fast the broker confirms: the tick's pace while the in-flight
/// window is half full or more (a tick sooner would find few confirms,
/// and every tick wakes the server's event loop).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Pace {
    /// When the rate was last measured, and `confirmed` then.
    mark: Option<(Instant, u64)>,
    /// Confirmed events per second (a moving average; 0: not known yet).
    rate: f64,
}

impl Pace {
    /// Measures the confirm rate at a tick (every 50 ms at most).
    pub(super) fn observe(&mut self, now: Instant, confirmed: u64) {
        let Some((at, base)) = self.mark else {
            self.mark = Some((now, confirmed));
            return;
        };
        let dt = now.saturating_duration_since(at).as_secs_f64();
        if dt < 0.05 {
            return;
        }
        let rate = confirmed.saturating_sub(base) as f64 / dt;
        self.rate = if self.rate == 0.0 {
            rate
        } else {
            0.5 * self.rate + 0.5 * rate
        };
        self.mark = Some((now, confirmed));
    }

    /// The time the broker takes to confirm `events` at the measured rate,
    /// between `min` and `max` (`min` while the rate is not known).
    pub(super) fn time_for(&self, events: usize, min: Duration, max: Duration) -> Duration {
        if self.rate < 1.0 {
            return min;
        }
        Duration::from_secs_f64(events as f64 / self.rate).clamp(min, max)
    }
}

/// A line for the server log; the host writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Normal but significant.
    Notice(String),
    /// Something went wrong.
    Warning(String),
}

/// Where records that cannot stay in memory go.
#[derive(Debug, Clone, Copy)]
pub(super) enum At {
    Tail,
    Head,
}

/// A batch handed to the broker side and not yet settled.
#[derive(Debug)]
pub(super) struct InFlight {
    pub(super) id: u64,
    /// Records read from the list (else taken from the queue).
    pub(super) from_list: bool,
    /// The list epoch when read (list batches).
    pub(super) epoch: u64,
    pub(super) count: usize,
    /// Payload bytes.
    pub(super) bytes: usize,
    /// The records, kept until the batch settles.
    pub(super) records: Arc<Records>,
    /// A list batch whose records left the list while in flight (see
    /// [`Detached`]): its confirms trim nothing, and what fails is not in
    /// the list to be sent again.
    pub(super) detached: Option<Detached>,
    /// Written to the list already (on shutdown): never store again.
    pub(super) stored: bool,
    pub(super) settled: Option<Settled>,
    /// When it was handed over (for the confirm latency).
    pub(super) sent_at: Instant,
    /// The `on-unroutable` policy it was sent under: the AMQP side stops it
    /// at its first returned record only under `store`, and its settle
    /// must read its returns the same way.
    pub(super) on_unroutable: Unroutable,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pace follows the confirm rate, within its bounds.
    #[test]
    fn the_pace_is_the_time_to_confirm_half_a_window() {
        let (min, max) = (Duration::from_millis(20), Duration::from_millis(100));
        let mut p = Pace::default();
        let t = Instant::now();
        assert_eq!(p.time_for(4096, min, max), min, "no rate yet");
        p.observe(t, 0);
        p.observe(t + Duration::from_millis(10), 1000); // too soon to measure
        assert_eq!(p.time_for(4096, min, max), min);
        p.observe(t + Duration::from_secs(1), 50_000); // 50,000 a second
        assert_eq!(p.time_for(2500, min, max), Duration::from_millis(50));
        assert_eq!(p.time_for(100_000, min, max), max, "a slow broker: the cap");
        assert_eq!(p.time_for(10, min, max), min, "a fast broker: the floor");
        p.observe(t + Duration::from_secs(2), 50_000); // stalled: the average halves
        assert_eq!(p.time_for(2500, min, max), Duration::from_millis(100));
    }
}
