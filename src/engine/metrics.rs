//! Figures for INFO: confirm latency over the last minute, connection
//! uptime, and the age of the oldest record in the fallback list and in
//! memory.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back the latency percentiles look.
const WINDOW: Duration = Duration::from_secs(60);
/// At most this many samples are kept (one per settled batch).
const MAX_SAMPLES: usize = 100_000;

/// What INFO shows beyond the counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// When each settled batch settled, and how long its confirms took.
    latencies: VecDeque<(Instant, Duration)>,
    /// Since when the connection is up.
    pub connected_at: Option<Instant>,
    /// Timestamp (seconds since the epoch) of the record at the head of the
    /// fallback list, as last read.
    pub oldest_record_ts: Option<u64>,
}

impl Metrics {
    /// Notes that a batch sent at `sent` settled at `now`.
    pub fn confirmed(&mut self, sent: Instant, now: Instant) {
        self.latencies
            .push_back((now, now.saturating_duration_since(sent)));
        if self.latencies.len() > MAX_SAMPLES {
            self.latencies.pop_front();
        }
        self.prune(now);
    }

    fn prune(&mut self, now: Instant) {
        while self
            .latencies
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > WINDOW)
        {
            self.latencies.pop_front();
        }
    }

    /// The `p`-th percentile (0..=100) of confirm latency over the last
    /// minute; `None` without samples.
    pub fn latency_percentile(&self, now: Instant, p: u32) -> Option<Duration> {
        self.latency_percentiles(now, [p])[0]
    }

    /// The percentiles `ps` (each 0..=100) of confirm latency over the last
    /// minute, from one pass over the samples (a selection per percentile,
    /// no sort: INFO pays O(samples) however often it is read).
    pub fn latency_percentiles<const N: usize>(
        &self,
        now: Instant,
        ps: [u32; N],
    ) -> [Option<Duration>; N] {
        let mut v: Vec<Duration> = self
            .latencies
            .iter()
            .filter(|(t, _)| now.saturating_duration_since(*t) <= WINDOW)
            .map(|(_, d)| *d)
            .collect();
        ps.map(|p| {
            let rank = v.len().checked_sub(1)? * p.min(100) as usize / 100;
            Some(*v.select_nth_unstable(rank).1)
        })
    }

    /// Seconds the connection has been up (0 when it is not).
    pub fn uptime(&self, now: Instant) -> u64 {
        self.connected_at
            .map_or(0, |t| now.saturating_duration_since(t).as_secs())
    }

    /// Age in seconds of the oldest record in the list (0 when empty).
    pub fn oldest_age(&self, now_secs: u64) -> u64 {
        self.oldest_record_ts
            .map_or(0, |ts| now_secs.saturating_sub(ts))
    }
}

/// Milliseconds from a record's timestamp (whole seconds since the epoch)
/// to `now_ms`; 0 without a record. The timestamp is cut to the second, so
/// the age reads up to 1 s high.
pub fn age_ms(ts: Option<u64>, now_ms: u64) -> u64 {
    ts.map_or(0, |ts| now_ms.saturating_sub(ts.saturating_mul(1000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_over_the_last_minute() {
        let mut m = Metrics::default();
        let t0 = Instant::now();
        for ms in 1..=100 {
            m.confirmed(t0, t0 + Duration::from_millis(ms));
        }
        let now = t0 + Duration::from_millis(100);
        assert_eq!(
            m.latency_percentile(now, 50),
            Some(Duration::from_millis(50))
        );
        assert_eq!(
            m.latency_percentile(now, 99),
            Some(Duration::from_millis(99))
        );
        assert_eq!(
            m.latency_percentiles(now, [50, 99, 0, 100]),
            [50, 99, 1, 100].map(|ms| Some(Duration::from_millis(ms)))
        );
        let later = now + Duration::from_secs(61);
        assert_eq!(m.latency_percentile(later, 50), None);
        m.oldest_record_ts = Some(100);
        assert_eq!(m.oldest_age(130), 30);
        assert_eq!(age_ms(m.oldest_record_ts, 130_250), 30_250);
        assert_eq!(age_ms(None, 130_250), 0);
        assert_eq!(age_ms(Some(200), 130_250), 0);
    }
}
