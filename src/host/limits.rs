//! The tunables as one [`Limits`] snapshot, read from the configs' atomics
//! once per tick, so that every layer sees a setting at the same moment.

use crate::config::{
    Unroutable, BATCH_SIZE, BURST_MAX_MS, BURST_RATE, FLUSH_INTERVAL_MS, INFLIGHT_MAX,
    ON_UNROUTABLE, QUEUE_MAX_BYTES, QUEUE_MAX_EVENTS, UNROUTABLE_RETRY_MAX_MS,
};
use crate::engine::Limits;
use std::time::Duration;

/// Records one tick spills beyond what arrived since the last tick while
/// the broker is unreachable (a few ms of `RPUSH` on the main thread).
const SPILL_CHUNK: usize = 16_384;

/// The tunables as they are now: one snapshot per tick, so that every
/// layer sees a setting at the same moment.
pub fn now() -> Limits {
    let queue_max_bytes = QUEUE_MAX_BYTES.get_usize();
    Limits {
        window: INFLIGHT_MAX.get_usize(),
        batch: BATCH_SIZE.get_usize().max(1),
        queue_max_events: QUEUE_MAX_EVENTS.get_usize(),
        queue_max_bytes,
        burst_rate: BURST_RATE.get(),
        burst_max: Duration::from_millis(BURST_MAX_MS.get().unsigned_abs()),
        on_unroutable: ON_UNROUTABLE.lock().map_or(Unroutable::Store, |p| *p),
        unroutable_retry_max: Duration::from_millis(UNROUTABLE_RETRY_MAX_MS.get().unsigned_abs()),
        spill_chunk: SPILL_CHUNK,
        hard_limit_bytes: crate::engine::intake::hard_limit_bytes(queue_max_bytes),
        flush_interval: Duration::from_millis(FLUSH_INTERVAL_MS.get().unsigned_abs()),
    }
}
