//! One flush of the timer: [`Engine::tick`], and what it asks of the host.

use super::{Broker, Engine, Limits, Link, Notice, Sending, Storage};
use crate::config::Unroutable;
use std::time::{Duration, Instant};

/// The shortest tick interval while half the in-flight window or more
/// waits for confirms (`flush-interval-ms` when that is longer): the broker
/// has work for a while and a tick would find few confirms. The interval
/// grows to the time the broker takes to confirm half the window, at the
/// rate measured (up to [`MAX_WINDOW_INTERVAL`]).
const BUSY_WINDOW_INTERVAL: Duration = Duration::from_millis(20);

/// The longest tick interval while the window waits for confirms (a slow
/// broker): the module still notices a dead link or a full queue soon.
pub const MAX_WINDOW_INTERVAL: Duration = Duration::from_millis(100);

/// What the host must do after a tick or an outbox job.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[must_use]
pub struct Todo {
    /// A list write failed: look at slot ownership again (a slot may have
    /// moved).
    pub refresh_slots: bool,
    /// A list write was refused because the key's slot is not served here
    /// (`ASK`, `MOVED`): the records wait in memory until the host picked a
    /// key in a slot it owns (and spilled them there).
    pub misplaced: bool,
    /// Lines for the server log.
    pub notices: Vec<super::Notice>,
}

impl Engine {
    /// One flush: collect outcomes, settle, read the list's length when due,
    /// hand new batches over, and spill what cannot stay in memory. `limits`
    /// are the tunables as they are now, for this tick and the events
    /// accepted until the next one.
    pub fn tick(
        &mut self,
        store: &mut dyn Storage,
        broker: &mut dyn Broker,
        limits: &Limits,
        now: Instant,
    ) -> Todo {
        self.limits = *limits;
        self.intake.chunk = limits.batch.max(1);
        self.now = now;
        self.commit_pending();
        let arrived = self.stats.accepted.saturating_sub(self.tick_accepted);
        self.tick_accepted = self.stats.accepted;
        self.collect(broker);
        self.settle(store);
        self.pace.observe(now, self.stats.confirmed);
        if limits.on_unroutable != Unroutable::Store {
            self.unroutable.confirmed();
        }
        let max = limits.unroutable_retry_max;
        // Both are brought up to date (no short circuit).
        let waiting = self.unroutable.waiting(now, max) | self.nacked.waiting(now, max);
        if !self.is_master() {
            self.follow_len_when_due(store, now);
            self.send_from_memory_when_demoted(store, broker, limits);
            return self.take_todo();
        }
        if self.is_loading() {
            return self.take_todo();
        }
        self.sync_when_due(store, now);
        let has_work = !self.queue.is_empty() || self.list.len > 0;
        if self.link == Link::Idle && has_work {
            self.connect(broker);
        }
        let burst = self.in_burst(store, now, limits);
        if self.link == Link::Up && self.sending == Sending::Open && !burst && !waiting {
            self.forward(store, broker, &self.probe_limits(limits));
        }
        let over = self
            .queue
            .over(limits.queue_max_events, limits.queue_max_bytes);
        match self.link {
            Link::Up | Link::Connecting | Link::Idle if !over => {}
            // The broker may take them soon: only the oldest go to the list.
            Link::Up | Link::Connecting | Link::Idle => {
                self.spill_excess(store, limits.queue_max_events, limits.queue_max_bytes)
            }
            // Unreachable: the queue goes to the list, a bounded part each
            // tick (oldest first), so that no tick stalls Redis for long.
            _ => {
                let limit = usize::try_from(arrived)
                    .unwrap_or(usize::MAX)
                    .saturating_add(limits.spill_chunk.max(1));
                self.spill_some(store, limit);
            }
        }
        self.take_todo()
    }

    /// What the host must do now (log lines, a slot refresh), taken.
    pub fn take_todo(&mut self) -> Todo {
        std::mem::take(&mut self.todo)
    }

    /// When the next tick is due: `None` when the engine has nothing to do
    /// (the host then ticks it rarely, to notice what changed behind its
    /// back); the short interval while there is work, longer while half the
    /// window or more waits for confirms, and the rest of a backoff when
    /// that is all there is (records held after returns or nacks, nothing
    /// in memory or in flight).
    pub fn next_tick(&self, now: Instant) -> Option<Duration> {
        if !self.busy() {
            return None;
        }
        let mut period = self.limits.flush_interval;
        let half = self.limits.window.div_ceil(2).max(1);
        if self.inflight_events >= half {
            // The next tick when about half the window is confirmed.
            let wait = self
                .pace
                .time_for(half, BUSY_WINDOW_INTERVAL, MAX_WINDOW_INTERVAL);
            period = period.max(wait);
        }
        if self.queue.is_empty()
            && self.inflight_events == 0
            && self.returns.is_empty()
            && !self.intake.pending()
        {
            let wait = self.unroutable.retry_in(now).max(self.nacked.retry_in(now));
            period = period.max(wait);
        }
        Some(period)
    }

    /// The log lines written since the last call (they are also in the
    /// [`Todo`] of the next tick or job).
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.todo.notices)
    }
}
