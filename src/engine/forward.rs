//! Handing batches to the broker: the list first while it holds anything,
//! the queue otherwise, up to the in-flight window.

use super::{Broker, Engine, InFlight, Limits, ListWrites, Storage, SYNC_BUSY, SYNC_IDLE};
use crate::amqp::{Batch, Request};
use crate::queue::Records;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the event rate must stay under `burst-rate` for a burst to end.
const RATE_SPAN: Duration = Duration::from_millis(100);

impl Engine {
    /// A replica: reads the length of the list it holds (the master changes
    /// it by replication), for INFO; nothing counts as lost, and the first
    /// read after a promotion learns the length anew.
    pub(super) fn follow_len_when_due(&mut self, store: &mut dyn Storage, now: Instant) {
        let due = self
            .list
            .synced_at
            .is_none_or(|t| now.duration_since(t) >= SYNC_IDLE);
        if store.usable() && due {
            self.list.synced_at = Some(now);
            if let Ok(len) = store.read_len() {
                self.list.len = len;
            }
            self.list.unknown = true;
        }
    }

    pub(super) fn sync_when_due(&mut self, store: &mut dyn Storage, now: Instant) {
        let every = if self.list.len > 0 {
            SYNC_BUSY
        } else {
            SYNC_IDLE
        };
        let due = self
            .list
            .synced_at
            .is_none_or(|t| now.duration_since(t) >= every);
        if store.usable() && due {
            self.list.synced_at = Some(now);
            match self.list.sync(store) {
                Ok(lost) => self.count_lost(lost),
                Err(e) => self.list_error("fallback read", &e),
            }
            // The age of the oldest record, for INFO.
            self.metrics.oldest_record_ts = if self.list.len > 0 {
                store
                    .read(0, 1)
                    .ok()
                    .and_then(|r| r.get(0).and_then(crate::event::split).map(|p| p.timestamp))
            } else {
                None
            };
        }
    }

    /// Hands batches over up to the window: the list first while it holds
    /// anything (newer events wait behind it in memory, and in the list only
    /// past the queue's bounds), else the queue.
    pub(super) fn forward(
        &mut self,
        store: &mut dyn Storage,
        broker: &mut dyn Broker,
        limits: &Limits,
    ) {
        let window = limits.window;
        let batch = limits.batch.max(1);
        if self.list.len > 0 || self.list_in_flight() {
            // Read the length before reading at an offset: a client may have
            // pushed or popped since the last look, which moves the head.
            if self.list.unread() > 0 {
                match self.list.sync(store) {
                    Ok(lost) => self.count_lost(lost),
                    Err(e) => {
                        self.list_error("fallback read", &e);
                        return;
                    }
                }
            }
            // Confirmed records not yet trimmed (writes paused) count against
            // the window: a failover then resends at most one window.
            while self.inflight_events + self.list.acked < window && self.list.unread() > 0 {
                let n = batch.min(window - self.inflight_events - self.list.acked);
                match self.list.read(store, n) {
                    Ok(records) if !records.is_empty() => self.send(broker, records, true),
                    Ok(_) => break,
                    Err(e) => {
                        self.list_error("fallback read", &e);
                        break;
                    }
                }
            }
        } else if !self.adopting() {
            // While a moved list is adopted, the queue waits behind it.
            self.send_queue(broker, window);
        }
    }

    /// Hands queue chunks over while the window has room; a chunk larger
    /// than the room left is split, so that no more than `window` records
    /// are ever in flight.
    pub(super) fn send_queue(&mut self, broker: &mut dyn Broker, window: usize) {
        while self.inflight_events < window {
            let Some(records) = self.queue.take_at_most(window - self.inflight_events) else {
                break;
            };
            self.send(broker, records, false);
        }
    }

    pub(super) fn send(&mut self, broker: &mut dyn Broker, records: Records, from_list: bool) {
        let id = self.next_batch;
        self.next_batch += 1;
        let count = records.len();
        let records = Arc::new(records);
        self.inflight_events += count;
        self.stats.forwarded += count as u64;
        self.inflight.push_back(InFlight {
            id,
            from_list,
            epoch: self.list.epoch,
            count,
            bytes: records.bytes(),
            records: Arc::clone(&records),
            detached: None,
            stored: false,
            settled: None,
            sent_at: self.now,
            on_unroutable: self.limits.on_unroutable,
        });
        broker.send(Request::Publish(Batch {
            id,
            generation: self.generation,
            records,
            store_returns: self.limits.on_unroutable == crate::config::Unroutable::Store,
        }));
    }

    /// True while events arrive faster than `burst-rate`, for at most
    /// `burst-max-ms` in a row, and what arrives has somewhere to wait (room
    /// in the queue, or a fallback list that takes the overflow): forwarding
    /// then waits, so that the AMQP threads and the broker do not take CPU
    /// from Redis in the middle of a burst. A burst starts at the first fast
    /// tick and ends after [`RATE_SPAN`] without one, so that one slow tick (a
    /// spill) does not look like a lull. Past `burst-max-ms` forwarding runs
    /// at full speed whatever the rate, so a load that never ends is still
    /// delivered.
    pub(super) fn in_burst(&mut self, store: &dyn Storage, now: Instant, limits: &Limits) -> bool {
        let (at, accepted) = self.rate.mark;
        let elapsed = now.duration_since(at);
        if elapsed >= Duration::from_millis(1) {
            let rate = (self.stats.accepted - accepted) as f64 / elapsed.as_secs_f64();
            self.rate.mark = (now, self.stats.accepted);
            if limits.burst_rate > 0 && rate > limits.burst_rate as f64 {
                self.rate.last_fast = Some(now);
                self.rate.burst_since.get_or_insert(now);
            }
        }
        let calm = self
            .rate
            .last_fast
            .is_none_or(|t| now.duration_since(t) >= RATE_SPAN);
        if limits.burst_rate <= 0 || calm {
            self.rate.burst_since = None;
            return false;
        }
        let since = *self.rate.burst_since.get_or_insert(now);
        let room = self.queue.len() < limits.queue_max_events / 2
            && self.queue.bytes() < limits.queue_max_bytes / 2;
        let cap = self.settings.fallback_cap();
        let list_takes = self.list_writable(store)
            && self.list_writes == ListWrites::Accepted
            && (cap == 0 || self.list.len + (self.queue.len() as u64) < cap / 2);
        now.duration_since(since) < limits.burst_max && (room || list_takes)
    }
}
