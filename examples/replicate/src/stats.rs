//! The consumer's counters and its one-line summary.

use crate::apply::Applied;
use crate::image::{Kind, Omitted};
use std::collections::BTreeMap;

/// What the consumer did, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Keys replaced by an after-image's value.
    pub written: u64,
    /// Keys deleted.
    pub deleted: u64,
    /// `FLUSHDB`s.
    pub flushed_db: u64,
    /// `FLUSHALL`s.
    pub flushed_all: u64,
    /// `SWAPDB`s.
    pub swapped: u64,
    /// `snapshot_begin` / `snapshot_end` markers.
    pub markers: u64,
    /// Messages dropped as a repeat of a recent message id.
    pub duplicates: u64,
    /// Events left unapplied because the value was omitted, by the value's
    /// type and the reason (`"type"` or `"size"`).
    pub unapplied: BTreeMap<(Kind, &'static str), u64>,
}

impl Stats {
    /// Counts what [`crate::apply()`] did; true for the first unapplied event
    /// of its type (the one to warn about).
    pub fn count(&mut self, applied: Applied) -> bool {
        match applied {
            Applied::Wrote(_) => self.written += 1,
            Applied::Deleted => self.deleted += 1,
            Applied::FlushedDb => self.flushed_db += 1,
            Applied::FlushedAll => self.flushed_all += 1,
            Applied::Swapped => self.swapped += 1,
            Applied::Marker => self.markers += 1,
            Applied::Unapplied { kind, omitted } => {
                let first = !self.unapplied.keys().any(|(k, _)| *k == kind);
                let reason = match omitted {
                    Omitted::Type => "type",
                    Omitted::Size(_) => "size",
                };
                *self.unapplied.entry((kind, reason)).or_default() += 1;
                return first;
            }
        }
        false
    }

    /// Events that changed the target.
    pub fn applied(&self) -> u64 {
        self.written + self.deleted + self.flushed_db + self.flushed_all + self.swapped
    }

    /// Events left unapplied.
    pub fn skipped(&self) -> u64 {
        self.unapplied.values().sum()
    }

    /// One line: what was applied, and what was skipped by kind.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "applied {} (written {}, deleted {}, flushdb {}, flushall {}, swapdb {}), \
             snapshot markers {}, duplicates dropped {}, skipped {}",
            self.applied(),
            self.written,
            self.deleted,
            self.flushed_db,
            self.flushed_all,
            self.swapped,
            self.markers,
            self.duplicates,
            self.skipped(),
        );
        if !self.unapplied.is_empty() {
            let by_kind: Vec<String> = self
                .unapplied
                .iter()
                .map(|((kind, why), n)| format!("{kind} omitted for {why}: {n}"))
                .collect();
            s.push_str(&format!(" ({})", by_kind.join(", ")));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_warns_once_per_type() {
        let mut s = Stats::default();
        assert!(!s.count(Applied::Wrote(Kind::Hash)));
        assert!(!s.count(Applied::Deleted));
        assert!(!s.count(Applied::Marker));
        let stream = Applied::Unapplied {
            kind: Kind::Stream,
            omitted: Omitted::Type,
        };
        assert!(s.count(stream));
        assert!(!s.count(stream));
        assert!(s.count(Applied::Unapplied {
            kind: Kind::String,
            omitted: Omitted::Size(9)
        }));
        assert!(!s.count(Applied::Unapplied {
            kind: Kind::String,
            omitted: Omitted::Size(10)
        }));
        assert_eq!((s.applied(), s.skipped()), (2, 4));
        assert_eq!(
            s.summary(),
            "applied 2 (written 1, deleted 1, flushdb 0, flushall 0, swapdb 0), \
             snapshot markers 1, duplicates dropped 0, skipped 4 \
             (string omitted for size: 2, stream omitted for type: 2)"
        );
    }
}
