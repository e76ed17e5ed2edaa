//! The in-memory queue: records waiting for the next flush, bounded in
//! events and in bytes. Records are encoded straight into chunk buffers
//! ([`Records`]), one chunk per batch, so queuing an event allocates nothing
//! on average and handing a batch to the AMQP side copies nothing.

use std::collections::VecDeque;

/// Records back to back in one buffer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Records {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Records {
    /// An empty buffer sized for `records` records of `bytes` bytes in all.
    pub fn with_capacity(records: usize, bytes: usize) -> Self {
        Self {
            data: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(records),
        }
    }

    /// Builds from slices, oldest first.
    pub fn from_slices<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut r = Self::default();
        r.extend(items);
        r
    }

    /// Appends one record written by `write` into the buffer.
    #[inline]
    pub fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.data);
        self.ends.push(self.data.len());
    }

    /// Appends records.
    pub fn extend<'a>(&mut self, items: impl IntoIterator<Item = &'a [u8]>) {
        for item in items {
            self.push_with(|d| d.extend_from_slice(item));
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Payload bytes.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Record `i`.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.data[start..end])
    }

    /// The records, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &[u8]> + ExactSizeIterator + '_ {
        self.ends
            .iter()
            .enumerate()
            .map(|(i, &end)| &self.data[if i == 0 { 0 } else { self.ends[i - 1] }..end])
    }
}

/// FIFO of record chunks with event and byte counts.
#[derive(Debug, Default)]
pub struct EventQueue {
    chunks: VecDeque<Records>,
    len: usize,
    bytes: usize,
    /// Records and bytes of the last chunk taken (`None` before the first):
    /// a new chunk is sized from it (see [`chunk_capacity`](Self::chunk_capacity)).
    last_taken: Option<(usize, usize)>,
}

impl EventQueue {
    /// Appends a record written by `write`, starting a new chunk every `chunk` records.
    #[inline]
    pub fn push_with(&mut self, chunk: usize, write: impl FnOnce(&mut Vec<u8>)) {
        if self.chunks.back().is_none_or(|c| c.len() >= chunk) {
            let (records, bytes) = self.chunk_capacity(chunk);
            self.chunks
                .push_back(Records::with_capacity(records, bytes));
        }
        if let Some(back) = self.chunks.back_mut() {
            let before = back.bytes();
            back.push_with(write);
            self.bytes += back.bytes() - before;
            self.len += 1;
        }
    }

    /// The capacity of a new chunk of at most `chunk` records: a full chunk
    /// of 128-byte records, or, when the last chunk taken was smaller (a
    /// tick took it part full), its size and a quarter more, so that a
    /// steady trickle of events does not allocate (and fault in) a whole
    /// chunk's buffer per tick. A chunk that outgrows it grows as a `Vec`.
    fn chunk_capacity(&self, chunk: usize) -> (usize, usize) {
        let full = (chunk.max(1), chunk.max(1).saturating_mul(128));
        let (records, bytes) = match (self.chunks.back(), self.last_taken) {
            (Some(c), _) => (c.len(), c.bytes()),
            (None, Some(last)) => last,
            (None, None) => return full,
        };
        (
            (records + records / 4).clamp(1, full.0),
            (bytes + bytes / 4).clamp(1024, full.1.max(1024)),
        )
    }

    /// Appends a whole chunk of records.
    pub fn push_records(&mut self, records: Records) {
        if self.count_in(&records) {
            self.chunks.push_back(records);
        }
    }

    /// Counts `records` as queued; false when there are none.
    fn count_in(&mut self, records: &Records) -> bool {
        self.len += records.len();
        self.bytes += records.bytes();
        !records.is_empty()
    }

    /// Puts records back at the head (they are older than everything
    /// queued: a write that was refused), in chunks of at most `chunk`
    /// records, so that what takes whole chunks (a batch) stays bounded.
    pub fn push_front_records(&mut self, records: Records, chunk: usize) {
        if !self.count_in(&records) {
            return;
        }
        if records.len() <= chunk.max(1) {
            self.chunks.push_front(records);
            return;
        }
        let all: Vec<&[u8]> = records.iter().collect();
        for part in all.chunks(chunk.max(1)).rev() {
            self.chunks
                .push_front(Records::from_slices(part.iter().copied()));
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held by the records (payload only).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// True when either bound is exceeded.
    pub fn over(&self, max_events: usize, max_bytes: usize) -> bool {
        self.len > max_events || self.bytes > max_bytes
    }

    /// The chunks, oldest first.
    pub fn chunks(&self) -> impl Iterator<Item = &Records> + '_ {
        self.chunks.iter()
    }

    /// Removes the oldest chunk.
    pub fn take_chunk(&mut self) -> Option<Records> {
        let c = self.chunks.pop_front()?;
        self.len -= c.len();
        self.bytes -= c.bytes();
        self.last_taken = Some((c.len(), c.bytes()));
        Some(c)
    }

    /// Removes the oldest records, at most `n` of them (at least one): the
    /// oldest chunk, or its first `n` records when it holds more.
    pub fn take_at_most(&mut self, n: usize) -> Option<Records> {
        let front = self.chunks.front_mut()?;
        if front.len() <= n.max(1) {
            return self.take_chunk();
        }
        let head = Records::from_slices(front.iter().take(n.max(1)));
        *front = Records::from_slices(front.iter().skip(n.max(1)));
        self.len -= head.len();
        self.bytes -= head.bytes();
        Some(head)
    }

    /// Removes everything, oldest first.
    pub fn take_all(&mut self) -> Vec<Records> {
        self.len = 0;
        self.bytes = 0;
        self.chunks.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(q: &mut EventQueue, chunk: usize, rec: &[u8]) {
        q.push_with(chunk, |d| d.extend_from_slice(rec));
    }

    #[test]
    fn records_slice_back() {
        let r = Records::from_slices([&b"a"[..], b"", b"ccc"]);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![&b"a"[..], b"", b"ccc"]);
        assert_eq!(r.iter().next_back(), Some(&b"ccc"[..]));
        assert_eq!(
            (r.get(0), r.get(1), r.get(3)),
            (Some(&b"a"[..]), Some(&b""[..]), None)
        );
        assert_eq!((r.len(), r.bytes()), (3, 4));
    }

    #[test]
    fn bounds_chunks_and_order() {
        let mut q = EventQueue::default();
        for i in 0..5u8 {
            push(&mut q, 2, &[i; 10]);
        }
        assert_eq!((q.len(), q.bytes()), (5, 50));
        assert!(q.over(4, 1000) && q.over(10, 49) && !q.over(5, 50));
        let a = q.take_chunk().unwrap();
        assert_eq!(
            a.iter().collect::<Vec<_>>(),
            vec![&[0u8; 10][..], &[1u8; 10][..]]
        );
        assert_eq!((q.len(), q.bytes()), (3, 30));
        // A chunk put back whole is taken a bounded part at a time.
        q.push_front_records(a, 1024);
        let part = q.take_at_most(1).unwrap();
        assert_eq!(part.iter().collect::<Vec<_>>(), vec![&[0u8; 10][..]]);
        assert_eq!((q.len(), q.bytes()), (4, 40));
        let next = q.take_at_most(5).unwrap();
        assert_eq!(next.iter().collect::<Vec<_>>(), vec![&[1u8; 10][..]]);
        let rest = q.take_all();
        assert_eq!(rest.iter().map(Records::len).sum::<usize>(), 3);
        assert!(q.is_empty() && q.bytes() == 0);
    }

    #[test]
    fn a_new_chunk_is_sized_from_the_last_one() {
        let mut q = EventQueue::default();
        assert_eq!(q.chunk_capacity(1024), (1024, 1024 * 128));
        for _ in 0..40 {
            push(&mut q, 1024, &[7; 50]);
        }
        assert_eq!(q.chunk_capacity(1024), (50, 2500));
        let taken = q.take_chunk().unwrap();
        assert_eq!((taken.len(), taken.bytes()), (40, 2000));
        assert_eq!(q.chunk_capacity(1024), (50, 2500));
        assert_eq!(q.chunk_capacity(8), (8, 1024));
        // A chunk that outgrows its capacity keeps every record.
        for i in 0..2000u16 {
            push(&mut q, 1024, &i.to_le_bytes());
        }
        assert_eq!((q.len(), q.bytes()), (2000, 4000));
        let first = q.take_chunk().unwrap();
        assert_eq!(first.get(1023), Some(&1023u16.to_le_bytes()[..]));
        assert_eq!(q.chunk_capacity(1024), (1024, 2440));
    }

    #[test]
    fn records_put_back_keep_their_order_in_bounded_chunks() {
        let mut q = EventQueue::default();
        push(&mut q, 8, b"new");
        q.push_front_records(Records::from_slices([&b"a"[..], b"b", b"c", b"d", b"e"]), 2);
        let sizes: Vec<usize> = q.chunks().map(Records::len).collect();
        assert_eq!(sizes, [2, 2, 1, 1]);
        let all: Vec<Vec<u8>> = q
            .take_all()
            .iter()
            .flat_map(|c| c.iter().map(<[u8]>::to_vec).collect::<Vec<_>>())
            .collect();
        assert_eq!(all, [&b"a"[..], b"b", b"c", b"d", b"e", b"new"]);
    }
}
