//! The backoff before records the broker returned as unroutable
//! (`on-unroutable store`) or nacked are sent again: an exponential wait,
//! and one batch at a time until a batch is confirmed without a return or a
//! nack. The engine keeps one for returns and one for nacks.

use super::{Engine, Limits};
use std::time::{Duration, Instant};

/// The first wait after a return.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);

/// The backoff after returns (or nacks).
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The next wait: [`FIRST_RETRY`], doubled per consecutive return.
    delay: Duration,
    /// Forwarding waits until then.
    at: Option<Instant>,
    /// When the last wait was set: a return of a batch sent before it
    /// belongs to the same round and does not double the wait again.
    set_at: Option<Instant>,
    /// Returns came back and no batch was confirmed since without one: one
    /// batch at a time is in flight (a probe).
    probing: bool,
    /// A settle in this tick stored returned records.
    returned: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            delay: FIRST_RETRY,
            at: None,
            set_at: None,
            probing: false,
            returned: false,
        }
    }
}

impl Backoff {
    /// A batch sent at `sent_at` came back with a return that is kept.
    pub fn returned(&mut self, sent_at: Instant) {
        if self.set_at.is_none_or(|t| sent_at >= t) {
            self.returned = true;
        }
    }

    /// A batch sent after the last return was confirmed without one: the
    /// broker routes again.
    pub fn confirmed(&mut self) {
        *self = Self::default();
    }

    /// Applies this tick's returns; true while forwarding waits. A cap
    /// lowered by `CONFIG SET` also shortens the wait under way.
    pub fn waiting(&mut self, now: Instant, max: Duration) -> bool {
        let max = max.max(FIRST_RETRY);
        if std::mem::take(&mut self.returned) {
            self.at = Some(now + self.delay.min(max));
            self.set_at = Some(now);
            self.delay = (self.delay * 2).min(max);
            self.probing = true;
        }
        self.delay = self.delay.min(max);
        if let (Some(at), Some(set)) = (self.at, self.set_at) {
            self.at = Some(at.min(set + max));
        }
        if self.at.is_some_and(|t| now >= t) {
            self.at = None;
        }
        self.at.is_some()
    }

    /// True while only one batch at a time may be in flight.
    pub fn probing(&self) -> bool {
        self.probing
    }

    /// How long until the next retry (zero: none is due).
    pub fn retry_in(&self, now: Instant) -> Duration {
        self.at
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }

    /// The wait the next return will set.
    pub fn next_delay(&self) -> Duration {
        self.delay
    }
}

impl Engine {
    /// The limits to forward with: while probing after returns, one batch.
    pub(super) fn probe_limits(&self, limits: &Limits) -> Limits {
        let mut l = *limits;
        if self.unroutable.probing() || self.nacked.probing() {
            l.window = l.window.min(l.batch.max(1));
        }
        l
    }

    /// Records held back because of returns (in the list or in memory, not
    /// in flight), and how long until the next retry.
    pub fn unroutable_waiting(&self, now: Instant) -> (u64, Duration) {
        if !self.unroutable.probing() {
            return (0, Duration::ZERO);
        }
        let held = self.list.unread() + (self.queue.len() + self.returns.len()) as u64;
        (held, self.unroutable.retry_in(now))
    }

    /// How long until records the broker nacked are sent again (zero: no
    /// wait under way).
    pub fn nack_retry_in(&self, now: Instant) -> Duration {
        self.nacked.retry_in(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each round of returns doubles the wait up to the cap; batches sent
    /// before a wait was set do not double it again; a clean confirm resets.
    #[test]
    fn the_wait_doubles_up_to_the_cap_and_resets() {
        let max = Duration::from_secs(10);
        let mut r = Backoff::default();
        let mut now = Instant::now();
        let mut waits = Vec::new();
        for _ in 0..7 {
            let sent = now;
            now += Duration::from_millis(5);
            r.returned(sent);
            assert!(r.waiting(now, max));
            assert!(r.probing());
            let wait = r.retry_in(now);
            waits.push(wait.as_secs());
            // A straggler of the same round sets nothing.
            r.returned(sent);
            now += Duration::from_millis(5);
            assert!(r.waiting(now, max));
            assert_eq!(r.retry_in(now), wait - Duration::from_millis(5));
            now += wait;
            assert!(!r.waiting(now, max));
            assert_eq!(r.retry_in(now), Duration::ZERO);
        }
        assert_eq!(waits, [1, 2, 4, 8, 10, 10, 10]);
        // A lower cap shortens the wait under way.
        r.returned(now);
        now += Duration::from_millis(5);
        assert!(r.waiting(now, max));
        assert_eq!(r.retry_in(now), max);
        assert!(r.waiting(now, Duration::from_secs(3)));
        assert_eq!(r.retry_in(now), Duration::from_secs(3));
        assert_eq!(r.next_delay(), Duration::from_secs(3));
        r.confirmed();
        assert!(!r.probing());
        assert_eq!(r.next_delay(), FIRST_RETRY);
    }
}
