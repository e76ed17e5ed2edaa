//! Where records wait for the broker: the fallback list, seen through a
//! small trait. The host implements it on a Redis list; [`MemList`] is the
//! in-memory one used by the model test.

use super::DropReason;
use crate::queue::Records;
use std::collections::VecDeque;
use thiserror::Error;

/// A list operation failed.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum StoreError {
    /// The server refused the command (OOM, READONLY, ...).
    #[error("{0}")]
    Refused(String),
    /// The reply did not have the expected shape.
    #[error("unexpected reply to {0}")]
    Unexpected(&'static str),
    /// No list is usable here now (a replica, or no key in an owned slot).
    #[error("no fallback list on this node")]
    NoList,
}

impl StoreError {
    /// The server refused because the key's slot is not served here (the
    /// slot moved, or is moving): `non local key`, `MOVED`, `ASK`.
    pub fn misplaced(&self) -> bool {
        match self {
            Self::Refused(e) => {
                e.contains("non local key") || e.starts_with("MOVED") || e.starts_with("ASK")
            }
            _ => false,
        }
    }
}

/// The fallback list. Indexes count from the head (oldest record).
pub trait Storage {
    /// False when there is no list to use (no key yet, not a master).
    fn usable(&self) -> bool;
    /// True while the server asks modules not to write (paused writes,
    /// failover): no write method may be called then.
    fn writes_paused(&self) -> bool;
    /// The real length.
    fn read_len(&mut self) -> Result<u64, StoreError>;
    /// Appends at the tail, oldest first; returns the new length.
    fn append(&mut self, records: &Records) -> Result<u64, StoreError>;
    /// Puts records back at the head in their order; returns the new length.
    fn prepend(&mut self, records: &Records) -> Result<u64, StoreError>;
    /// Reads up to `n` records from index `start`, without removing them.
    fn read(&mut self, start: usize, n: usize) -> Result<Records, StoreError>;
    /// Removes `n` records from the head.
    fn trim_front(&mut self, n: u64) -> Result<(), StoreError>;

    /// Removes `n` records from the head that are dropped, not delivered
    /// (the cap): [`Storage::trim_front`], and a record of the drop.
    fn trim_dropped(&mut self, n: u64, why: DropReason) -> Result<(), StoreError> {
        let _ = why;
        self.trim_front(n)
    }

    /// `records` are dropped under the rule `why` (and counted in INFO):
    /// nothing to do for a real list; the model test's list keeps them, so
    /// that every drop it sees counted is one it can name.
    fn dropped(&mut self, records: &Records, why: DropReason) {
        let _ = (records, why);
    }
}

/// An in-memory list, with the faults a real one shows: paused writes,
/// refused writes, and other clients pushing and popping.
#[derive(Debug, Default, Clone)]
pub struct MemList {
    /// The records, head first.
    pub items: VecDeque<Vec<u8>>,
    /// Writes are paused.
    pub paused: bool,
    /// Writes are refused (as on OOM).
    pub refuse_writes: bool,
    /// The list is not usable.
    pub unusable: bool,
    /// The key's slot is being migrated away: writes answer `ASK` while the
    /// key does not exist here (as a server answers: a key still here is
    /// served here until `MIGRATE` moves it).
    pub misplaced: bool,
    /// Every record the engine dropped, with the rule.
    pub drops: Vec<(Vec<u8>, DropReason)>,
}

impl MemList {
    fn writable(&self) -> Result<(), StoreError> {
        assert!(!self.paused, "a write while writes are paused");
        if self.unusable {
            return Err(StoreError::NoList);
        }
        if self.refuse_writes {
            return Err(StoreError::Refused("OOM".into()));
        }
        if self.misplaced && self.items.is_empty() {
            return Err(StoreError::Refused("ASK 0 127.0.0.1:7001".into()));
        }
        Ok(())
    }
}

impl Storage for MemList {
    fn usable(&self) -> bool {
        !self.unusable
    }

    fn writes_paused(&self) -> bool {
        self.paused
    }

    fn read_len(&mut self) -> Result<u64, StoreError> {
        Ok(self.items.len() as u64)
    }

    fn append(&mut self, records: &Records) -> Result<u64, StoreError> {
        self.writable()?;
        self.items.extend(records.iter().map(<[u8]>::to_vec));
        Ok(self.items.len() as u64)
    }

    fn prepend(&mut self, records: &Records) -> Result<u64, StoreError> {
        self.writable()?;
        for r in records.iter().rev() {
            self.items.push_front(r.to_vec());
        }
        Ok(self.items.len() as u64)
    }

    fn read(&mut self, start: usize, n: usize) -> Result<Records, StoreError> {
        Ok(Records::from_slices(
            self.items.iter().skip(start).take(n).map(Vec::as_slice),
        ))
    }

    fn trim_front(&mut self, n: u64) -> Result<(), StoreError> {
        self.writable()?;
        let n = usize::try_from(n)
            .unwrap_or(usize::MAX)
            .min(self.items.len());
        self.items.drain(..n);
        Ok(())
    }

    fn trim_dropped(&mut self, n: u64, why: DropReason) -> Result<(), StoreError> {
        self.writable()?;
        let n = usize::try_from(n)
            .unwrap_or(usize::MAX)
            .min(self.items.len());
        self.drops.extend(self.items.drain(..n).map(|r| (r, why)));
        Ok(())
    }

    fn dropped(&mut self, records: &Records, why: DropReason) {
        self.drops.extend(records.iter().map(|r| (r.to_vec(), why)));
    }
}
