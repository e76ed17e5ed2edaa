//! A scripted broker for the model test: it holds published batches until
//! the test acks, nacks, returns or loses them (in any order: the real
//! side settles each batch in a task of its own), and records what reached
//! the consumer. Plus a counter of later events that overtook an earlier one.

use redis_keyspace_amqp::amqp::{deliverable, Batch, Outcome, Request, Settled};
use redis_keyspace_amqp::config::Unroutable;
use redis_keyspace_amqp::engine::Broker;
use redis_keyspace_amqp::event::split;
use std::collections::VecDeque;

/// What the scripted broker holds and what reached the consumer.
#[derive(Default)]
pub struct Scripted {
    /// Batches published and not settled, oldest first.
    pub unsettled: VecDeque<Batch>,
    pub outcomes: VecDeque<Outcome>,
    /// A connect was asked for and not answered yet.
    pub connect_asked: bool,
    pub connected: bool,
    pub generation: u64,
    /// Event ids as they reached the consumer.
    pub delivered: Vec<u64>,
    /// Event ids the broker returned as unroutable and that are not sent
    /// again (`on-unroutable drop` or `count`: the batch went on), and
    /// whether the policy was `drop` (else `count`).
    pub returned_for_good: Vec<(Option<u64>, bool)>,
    /// The `on-unroutable` policy of the engine's limits when the next
    /// batches are published (set before each tick), kept per batch.
    pub policy: Option<Unroutable>,
    pub policies: std::collections::HashMap<u64, Unroutable>,
    /// The broker side died (its task panicked): `alive` says so.
    pub dead: bool,
}

impl Broker for Scripted {
    fn send(&mut self, req: Request) {
        match req {
            Request::Connect(_) => {
                self.connect_asked = true;
                // Already connected with the same settings: the real side
                // answers at once with the current generation.
                if self.connected {
                    let generation = self.generation;
                    self.outcomes.push_back(Outcome::Connected { generation });
                }
            }
            Request::Disconnect => {
                self.fail_all();
                self.connected = false;
                self.connect_asked = false;
                self.outcomes.push_back(Outcome::Closed);
            }
            Request::Publish(b) => {
                if let Some(p) = self.policy {
                    self.policies.insert(b.id, p);
                }
                if self.connected && b.generation == self.generation {
                    self.unsettled.push_back(b);
                } else {
                    self.outcomes
                        .push_back(Outcome::Settled(Settled::failed(b.id, "not connected")));
                }
            }
        }
    }

    fn poll(&mut self) -> Option<Outcome> {
        self.outcomes.pop_front()
    }

    fn alive(&self) -> bool {
        !self.dead
    }
}

pub fn event_id(record: &[u8]) -> Option<u64> {
    let p = split(record)?;
    let key = p.body.rsplit(|b| *b == b'\n').next()?;
    std::str::from_utf8(key.strip_prefix(b"k")?)
        .ok()?
        .parse()
        .ok()
}

impl Scripted {
    /// The broker takes the first `k` records of the oldest batch (acked,
    /// or rejected when they can never be delivered), and `nack`s the rest.
    pub fn settle_oldest(&mut self, k: usize, nack: bool, error: Option<String>) -> bool {
        self.settle_at(0, k, nack, error)
    }

    /// The broker confirms the oldest `index + 1` batches whole (it routes
    /// in publish order), but their outcomes reach the engine out of order:
    /// the one at `index` first (the AMQP side settles each batch in a
    /// task of its own).
    pub fn confirm_out_of_order(&mut self, index: usize) -> bool {
        if index >= self.unsettled.len() {
            return false;
        }
        let first = self.outcomes.len();
        for _ in 0..=index {
            let n = self.unsettled.front().map_or(0, |b| b.records.len());
            self.settle_at(0, n, false, None);
        }
        let last = self.outcomes.remove(self.outcomes.len() - 1);
        if let Some(o) = last {
            self.outcomes.insert(first, o);
        }
        true
    }

    /// Settles the batch at `index` (0 the oldest).
    fn settle_at(&mut self, index: usize, k: usize, nack: bool, error: Option<String>) -> bool {
        let Some(b) = self.unsettled.remove(index) else {
            return false;
        };
        let k = k.min(b.records.len());
        let mut rejected = 0;
        for r in b.records.iter().take(k) {
            match deliverable(r, usize::MAX).and_then(|_| event_id(r)) {
                Some(id) => self.delivered.push(id),
                None => rejected += 1,
            }
        }
        let nacked = if nack { b.records.len() - k } else { 0 };
        self.outcomes.push_back(Outcome::Settled(Settled {
            id: b.id,
            acked: k,
            nacked,
            rejected,
            returned: 0,
            error,
        }));
        true
    }

    /// The broker routes the first `k` records of the oldest batch and
    /// returns record `k` as unroutable. As the AMQP side does: under
    /// `on-unroutable store` the batch stops there (record `k` and the rest
    /// go back); otherwise the returned record is acked like the others (it
    /// reached no queue) and the batch goes on.
    pub fn return_oldest(&mut self, k: usize) -> bool {
        let Some(n) = self.unsettled.front().map(|b| b.records.len()) else {
            return false;
        };
        if k >= n {
            return false;
        }
        let Some(b) = self.unsettled.pop_front() else {
            return false;
        };
        let mut rejected = 0;
        let taken = if b.store_returns { k } else { n };
        let dropped = self.policies.get(&b.id) == Some(&Unroutable::Drop);
        for (i, r) in b.records.iter().enumerate().take(taken) {
            match deliverable(r, usize::MAX).and_then(|_| event_id(r)) {
                _ if i == k => self.returned_for_good.push((event_id(r), dropped)),
                Some(id) => self.delivered.push(id),
                None => rejected += 1,
            }
        }
        self.outcomes.push_back(Outcome::Settled(Settled {
            id: b.id,
            acked: taken,
            nacked: 0,
            rejected,
            returned: 1,
            error: b
                .store_returns
                .then(|| "returned by the broker as unroutable".into()),
        }));
        true
    }

    /// The connection breaks: the broker had routed the first `extra`
    /// unconfirmed records (they arrive, and will arrive again).
    pub fn lose(&mut self, extra: usize) {
        self.deliver_unconfirmed(extra);
        self.fail_all();
        if self.connected || self.connect_asked {
            self.outcomes.push_back(Outcome::Down {
                error: "connection lost".into(),
                retry_in_ms: 10,
                confirm_timeout: false,
            });
        }
        self.connected = false;
    }

    /// The broker routes the first `extra` unconfirmed records, whose
    /// confirms never come.
    pub fn deliver_unconfirmed(&mut self, extra: usize) {
        let mut left = extra;
        for b in &self.unsettled {
            for r in b.records.iter() {
                if left == 0 {
                    break;
                }
                if let Some(id) = event_id(r) {
                    self.delivered.push(id);
                }
                left -= 1;
            }
        }
    }

    pub fn fail_all(&mut self) {
        while let Some(b) = self.unsettled.pop_front() {
            self.outcomes
                .push_back(Outcome::Settled(Settled::failed(b.id, "connection lost")));
        }
    }
}

/// Counts ids seen so far above a given one.
pub struct Fenwick(Vec<usize>, usize);

impl Fenwick {
    pub fn new(n: usize) -> Self {
        Self(vec![0; n + 1], 0)
    }

    pub fn add(&mut self, i: usize) {
        self.1 += 1;
        let mut j = i + 1;
        while j < self.0.len() {
            self.0[j] += 1;
            j += j & j.wrapping_neg();
        }
    }

    /// How many added ids are greater than `i`.
    pub fn count_above(&self, i: usize) -> usize {
        let mut upto = 0;
        let mut j = i + 1;
        while j > 0 {
            upto += self.0[j];
            j -= j & j.wrapping_neg();
        }
        self.1 - upto
    }
}
