//! The in-memory queue: records waiting for the next flush, bounded in
//! events and in bytes.

use std::collections::VecDeque;

/// FIFO of encoded records with a byte count.
#[derive(Debug, Default)]
pub struct EventQueue {
    items: VecDeque<Vec<u8>>,
    bytes: usize,
}

impl EventQueue {
    /// Appends a record.
    #[inline]
    pub fn push(&mut self, record: Vec<u8>) {
        self.bytes += record.len();
        self.items.push_back(record);
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes held by the records (payload only).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// True when either bound is exceeded.
    pub fn over(&self, max_events: usize, max_bytes: usize) -> bool {
        self.items.len() > max_events || self.bytes > max_bytes
    }

    /// Removes up to `n` records from the front, oldest first.
    pub fn take(&mut self, n: usize) -> Vec<Vec<u8>> {
        let n = n.min(self.items.len());
        let out: Vec<Vec<u8>> = self.items.drain(..n).collect();
        self.bytes -= out.iter().map(Vec::len).sum::<usize>();
        out
    }

    /// Removes everything, oldest first.
    pub fn take_all(&mut self) -> Vec<Vec<u8>> {
        self.bytes = 0;
        self.items.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_order() {
        let mut q = EventQueue::default();
        for i in 0..5u8 {
            q.push(vec![i; 10]);
        }
        assert_eq!((q.len(), q.bytes()), (5, 50));
        assert!(q.over(4, 1000) && q.over(10, 49) && !q.over(5, 50));
        let a = q.take(2);
        assert_eq!(a, vec![vec![0; 10], vec![1; 10]]);
        assert_eq!(q.bytes(), 30);
        let b = q.take_all();
        assert_eq!(b.len(), 3);
        assert!(q.is_empty() && q.bytes() == 0);
    }
}
