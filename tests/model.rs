//! The delivery engine against a model, without Redis: random sequences of
//! events, acks, nacks, returns, partial acks, connection losses, blocks, spills,
//! paused and refused writes, role flips, loading, shutdowns, and foreign
//! pushes and pops on the list, driven through an in-memory list and a
//! scripted broker. Events enter through [`Engine::accept`], as from the
//! keyspace callback: the model predicts what each becomes (skipped on a
//! replica, while loading or for the module's own list; filtered by the key
//! masks; queued, or in the outbox in durable mode) and checks the counters.
//! After every step it checks the three promises:
//!
//! 1. nothing is lost silently: every accepted event is delivered, held
//!    (memory or list), or covered by the dropped and lost counters;
//! 2. first deliveries are in order; only a nack or a return lets the
//!    batches behind it (one in-flight window) through first, as the README
//!    says;
//! 3. duplicates stay within one in-flight window per disruption.
//!
//! `KEA_MODEL_CASES` sets the case count (default 10,000).

mod common;

use common::scripted::{event_id, Fenwick, Scripted};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use redis_keyspace_amqp::amqp::Outcome;
use redis_keyspace_amqp::config::Settings;
use redis_keyspace_amqp::engine::intake::hard_limit_bytes;
use redis_keyspace_amqp::engine::{Accepted, Engine, Intake, Limits, MemList, Origin};
use redis_keyspace_amqp::keymask::KeyMasks;
use std::collections::HashSet;
use std::time::{Duration, Instant};

const WINDOW: usize = 12;

/// The fallback key's prefix in the model.
const LIST_PREFIX: &str = "fb";

/// The notification's server side: db 0, a fixed clock, durable or not.
struct At {
    outbox: bool,
}

impl Origin for At {
    fn db(&self) -> i32 {
        0
    }
    fn now_secs(&self) -> u64 {
        1
    }
    fn outbox(&self) -> bool {
        self.outbox
    }
}

const MEMORY: At = At { outbox: false };
const DURABLE: At = At { outbox: true };

#[derive(Debug, Clone)]
enum Op {
    Events(u8),
    Tick,
    Connect,
    Ack,
    AckAll,
    PartialAck(u8),
    Nack(u8),
    Return(u8),
    Lose(u8),
    Block(bool),
    Pause(bool),
    RefuseWrites(bool),
    /// The list's slot is being migrated away: writes to it answer `ASK`
    /// once it is empty.
    Misplaced(bool),
    RoleFlip,
    Shutdown,
    ForeignPush,
    ForeignPop,
    SmallQueue(bool),
    /// Bursts on: more than 20 events/s holds forwarding, for at most 400 ms.
    Burst(bool),
    /// Durable mode: events of one execution unit appended to the list by
    /// its job; with `true`, durable mode is switched off before the unit's
    /// last event (the earlier ones go to the queue first).
    OutboxEvents(u8, bool),
    /// Notifications that are not forwarded: keys no mask matches and
    /// writes to the fallback lists.
    Noise(u8),
    /// The server starts or ends loading.
    Loading(bool),
    /// The spill while the link is down moves at most what arrived since
    /// the last tick plus this many records per tick (1, or the default).
    SmallSpill(bool),
    /// A moved list is being adopted (records of another node appended at
    /// the tail, this node's own held in memory), or the adoption ends.
    Adopt(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..20).prop_map(Op::Events),
        8 => Just(Op::Tick),
        3 => Just(Op::Connect),
        6 => Just(Op::Ack),
        2 => Just(Op::AckAll),
        1 => (0u8..10).prop_map(Op::PartialAck),
        1 => (0u8..10).prop_map(Op::Nack),
        1 => (0u8..10).prop_map(Op::Return),
        1 => (0u8..20).prop_map(Op::Lose),
        1 => any::<bool>().prop_map(Op::Block),
        1 => any::<bool>().prop_map(Op::Pause),
        1 => any::<bool>().prop_map(Op::RefuseWrites),
        1 => any::<bool>().prop_map(Op::Misplaced),
        1 => Just(Op::RoleFlip),
        1 => Just(Op::Shutdown),
        1 => Just(Op::ForeignPush),
        1 => Just(Op::ForeignPop),
        1 => any::<bool>().prop_map(Op::SmallQueue),
        1 => any::<bool>().prop_map(Op::Burst),
        3 => (1u8..10, any::<bool>()).prop_map(|(n, off)| Op::OutboxEvents(n, off)),
        1 => (1u8..5).prop_map(Op::Noise),
        1 => any::<bool>().prop_map(Op::Loading),
        1 => any::<bool>().prop_map(Op::SmallSpill),
        1 => any::<bool>().prop_map(Op::Adopt),
    ]
}

struct World {
    engine: Engine,
    list: MemList,
    broker: Scripted,
    limits: Limits,
    next_id: u64,
    now: Instant,
    disruptions: usize,
    /// Role flips and SHUTDOWNs: a node cannot count what it hands over.
    handovers: usize,
    /// Nacks so far: each may reorder within one in-flight window.
    nacks: u64,
    /// Events a foreign client popped from the list (the engine counts them
    /// as lost once it reads the length).
    popped: u64,
    /// `accepted` at the last tick, for the bound of the spill.
    accepted_at_tick: u64,
    /// A tick spilled more than its bound, or `accept` answered other
    /// than the model predicts.
    violation: Option<String>,
    /// Notifications the model expects counted as seen and as skipped.
    seen: u64,
    skipped: u64,
}

impl World {
    fn new() -> Self {
        let settings = Settings {
            fallback_size: 0,
            masks: KeyMasks::from_args(&["^k"]).expect("mask"),
            ..Settings::default()
        };
        Self {
            engine: Engine::new(settings, true, Intake::new("m", LIST_PREFIX, 4)),
            list: MemList::default(),
            broker: Scripted::default(),
            limits: Limits {
                window: WINDOW,
                batch: 4,
                queue_max_events: 1000,
                queue_max_bytes: 1 << 20,
                burst_rate: 0,
                burst_max: Duration::ZERO,
                on_unroutable: Default::default(),
                unroutable_retry_max: Duration::from_secs(4),
                spill_chunk: 65_536,
            },
            next_id: 0,
            now: Instant::now(),
            disruptions: 0,
            handovers: 0,
            nacks: 0,
            popped: 0,
            accepted_at_tick: 0,
            violation: None,
            seen: 0,
            skipped: 0,
        }
    }

    /// Counts a notification as the engine must: seen while forwarding,
    /// else skipped; true while forwarding.
    fn forwards(&mut self) -> bool {
        if !self.engine.master || self.engine.loading {
            self.skipped += 1;
            return false;
        }
        self.seen += 1;
        true
    }

    /// Notes an answer other than `want`.
    fn expect(&mut self, got: Accepted, want: Accepted) {
        if got != want && self.violation.is_none() {
            self.violation = Some(format!("accept answered {got:?}, the model {want:?}"));
        }
    }

    /// One event on a key the masks match: it gets the next id when the
    /// engine keeps it.
    fn event(&mut self, at: &At) -> Accepted {
        let key = format!("k{}", self.next_id);
        let before = (
            self.engine.queue.is_empty(),
            self.engine.intake.outbox.is_empty(),
        );
        let armed = self.engine.intake.outbox_armed;
        let got = self.engine.accept(b"set", key.as_bytes(), at);
        if !self.forwards() {
            self.expect(got, Accepted::Skipped);
            return got;
        }
        self.next_id += 1;
        let want = if at.outbox {
            Accepted::Outbox { arm: !armed }
        } else {
            Accepted::Queued {
                was_empty: before.0 && before.1,
            }
        };
        self.expect(got, want);
        got
    }

    fn tick(&mut self) {
        self.now += Duration::from_millis(50);
        let arrived = self.engine.stats.accepted - self.accepted_at_tick;
        self.accepted_at_tick = self.engine.stats.accepted;
        let down =
            |e: &Engine| matches!(e.link.name(), "reconnecting" | "blocked" | "disconnected");
        let before = (
            self.engine.queue.len(),
            down(&self.engine),
            self.engine.master,
        );
        self.engine
            .tick(&mut self.list, &mut self.broker, &self.limits, self.now);
        // With the link down the spill is bounded: what arrived since the
        // last tick plus `spill_chunk`, rounded up to whole chunks (at most
        // 9 records each here); the rest waits in memory, oldest first out.
        let (queued, was_down, master) = before;
        if was_down && master && down(&self.engine) {
            let moved = queued.saturating_sub(self.engine.queue.len());
            let bound = arrived as usize + self.limits.spill_chunk + 9;
            if moved > bound && self.violation.is_none() {
                self.violation = Some(format!("one tick spilled {moved} records, bound {bound}"));
            }
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Events(n) => {
                for _ in 0..n {
                    self.event(&MEMORY);
                }
            }
            Op::OutboxEvents(n, off) => {
                for i in 0..n {
                    let last = i + 1 == n;
                    let at = if off && last { &MEMORY } else { &DURABLE };
                    if let Accepted::Outbox { arm: true } = self.event(at) {
                        // The host arms the unit's job.
                        self.engine.intake.outbox_armed = true;
                    }
                }
                // The end of the unit: its job runs.
                if self.engine.intake.outbox_armed {
                    self.engine.flush_outbox(&mut self.list);
                }
            }
            Op::Noise(n) => {
                for i in 0..n {
                    let key = if i % 2 == 0 {
                        format!("x{i}")
                    } else {
                        format!("{LIST_PREFIX}{{{i}}}")
                    };
                    let got = self.engine.accept(b"set", key.as_bytes(), &MEMORY);
                    let want = if !self.forwards() {
                        Accepted::Skipped
                    } else if i % 2 == 1 {
                        // The module's own list: seen, and skipped.
                        self.skipped += 1;
                        Accepted::Skipped
                    } else {
                        Accepted::Filtered
                    };
                    self.expect(got, want);
                }
            }
            Op::Loading(on) => self.engine.loading = on,
            Op::Tick => self.tick(),
            Op::Connect => {
                if self.broker.connect_asked && !self.broker.connected {
                    self.broker.connected = true;
                    self.broker.generation += 1;
                    let generation = self.broker.generation;
                    self.broker
                        .outcomes
                        .push_back(Outcome::Connected { generation });
                }
            }
            Op::Ack => {
                let n = self.broker.unsettled.front().map_or(0, |b| b.records.len());
                self.broker.settle_oldest(n, false, None);
            }
            Op::AckAll => {
                while let Some(n) = self.broker.unsettled.front().map(|b| b.records.len()) {
                    self.broker.settle_oldest(n, false, None);
                }
            }
            Op::PartialAck(k) => {
                // A channel close part-way through a batch: the rest fail.
                if self
                    .broker
                    .settle_oldest(k as usize, false, Some("channel closed".into()))
                {
                    self.disruptions += 1;
                    self.broker.lose(0);
                }
            }
            Op::Nack(k) => {
                let n = self.broker.unsettled.front().map_or(0, |b| b.records.len());
                if (k as usize) < n && self.broker.settle_oldest(k as usize, true, None) {
                    self.disruptions += 1;
                    self.nacks += 1;
                }
            }
            Op::Return(k) => {
                if self.broker.return_oldest(k as usize) {
                    // Like a nack: the batches behind it may arrive first.
                    self.disruptions += 1;
                    self.nacks += 1;
                }
            }
            Op::Lose(extra) => {
                self.disruptions += 1;
                self.broker.lose(extra as usize);
            }
            Op::Block(b) => {
                if self.broker.connected {
                    self.broker.outcomes.push_back(Outcome::Blocked(b));
                }
            }
            Op::Pause(p) => self.list.paused = p,
            Op::RefuseWrites(r) => {
                // A refused trim sends the confirmed head again: a disruption.
                self.disruptions += usize::from(r && !self.list.refuse_writes);
                self.list.refuse_writes = r;
            }
            Op::Misplaced(m) => {
                // As a refused write: a refused trim sends the head again.
                self.disruptions += usize::from(m && !self.list.misplaced);
                self.list.misplaced = m;
            }
            Op::RoleFlip => {
                self.disruptions += 1;
                self.handovers += 1;
                let master = !self.engine.master;
                if !master {
                    self.engine.before_demotion(&mut self.list);
                }
                self.engine.set_role(master);
                if master {
                    self.engine.after_promotion(&mut self.list);
                }
            }
            Op::Shutdown => {
                self.disruptions += 1;
                self.handovers += 1;
                self.engine.persist_memory(&mut self.list, &mut self.broker);
            }
            // Clients write to a master only: a replica's list changes by
            // replication, which the role flips stand for.
            Op::ForeignPush => {
                if !self.list.paused && self.engine.master {
                    self.disruptions += 1;
                    self.list.items.push_front(b"foreign element".to_vec());
                }
            }
            Op::ForeignPop => {
                if !self.list.paused && self.engine.master {
                    self.disruptions += 1;
                    if let Some(r) = self.list.items.pop_front() {
                        self.popped += u64::from(event_id(&r).is_some());
                    }
                }
            }
            Op::SmallSpill(small) => {
                self.limits.spill_chunk = if small { 1 } else { 65_536 };
            }
            Op::Adopt(on) => {
                if on && self.engine.master && !self.list.paused {
                    // No OOM check and no cap: the records were stored already.
                    self.list
                        .items
                        .extend((0..3).map(|_| b"adopted element".to_vec()));
                    let len = self.list.items.len() as u64;
                    self.engine.adopted(3, len);
                    self.engine.hold_tail = true;
                } else if !on {
                    self.engine.hold_tail = false;
                }
            }
            Op::SmallQueue(small) => {
                self.limits.queue_max_events = if small { 3 } else { 1000 };
            }
            Op::Burst(on) => {
                self.limits.burst_rate = if on { 20 } else { 0 };
                self.limits.burst_max = Duration::from_millis(if on { 400 } else { 0 });
            }
        }
    }

    /// The three promises.
    fn check(&self) -> Result<(), TestCaseError> {
        prop_assert!(self.violation.is_none(), "{:?}", self.violation);
        let st = &self.engine.stats;
        prop_assert_eq!(
            (st.seen, st.skipped, st.accepted),
            (self.seen, self.skipped, self.next_id),
            "seen, skipped, accepted"
        );
        let delivered: HashSet<u64> = self.broker.delivered.iter().copied().collect();
        let mut held: HashSet<u64> = self
            .engine
            .records_in_memory()
            .iter()
            .filter_map(|r| event_id(r))
            .collect();
        held.extend(self.list.items.iter().filter_map(|r| event_id(r)));
        let missing = (0..self.next_id)
            .filter(|i| !delivered.contains(i) && !held.contains(i))
            .count() as u64;
        prop_assert!(
            missing <= st.dropped + st.lost.max(self.popped),
            "{missing} events are nowhere, but only {} dropped and {} lost are counted",
            st.dropped,
            st.lost
        );
        // First deliveries in order: no event is overtaken by a later one,
        // except that each nack lets at most one window (plus the nacked
        // batch) through ahead of the records it sends back.
        let slack = self.nacks as usize * (WINDOW + 2 * self.limits.batch);
        let mut seen = vec![false; self.next_id as usize];
        let mut later = Fenwick::new(self.next_id as usize);
        let mut dups = 0;
        for &id in &self.broker.delivered {
            let i = id as usize;
            if seen[i] {
                dups += 1;
                continue;
            }
            seen[i] = true;
            let overtaken_by = later.count_above(i);
            prop_assert!(
                overtaken_by <= slack,
                "order broken: {overtaken_by} later events arrived before {id} (deliveries {:?})",
                self.broker.delivered
            );
            later.add(i);
        }
        prop_assert!(
            dups <= WINDOW * 2 * self.disruptions.max(1) + 20 * self.disruptions,
            "{dups} duplicates for {} disruptions",
            self.disruptions
        );
        // INFO's `events_resent` bounds them, but for what a role change or a
        // SHUTDOWN hands over (the node cannot know what was sent before).
        let counted = self.engine.stats.resent + self.engine.list.reread;
        prop_assert!(
            dups as u64 <= counted + (2 * WINDOW * self.handovers) as u64,
            "{dups} duplicates, {counted} counted as resent, {} handovers",
            self.handovers
        );
        Ok(())
    }

    /// Ends the run: the broker comes back and settles everything.
    fn finish(&mut self) -> Result<(), TestCaseError> {
        self.list.paused = false;
        self.list.refuse_writes = false;
        self.list.misplaced = false;
        if !self.engine.master {
            self.engine.set_role(true);
            self.engine.after_promotion(&mut self.list);
        }
        self.limits.queue_max_events = 1000;
        self.engine.hold_tail = false;
        self.engine.loading = false;
        for _ in 0..400 {
            self.tick();
            self.apply(&Op::Connect);
            self.apply(&Op::AckAll);
            self.apply(&Op::Block(false));
            let idle = self.list.items.is_empty()
                && self.engine.queue.is_empty()
                && self.engine.inflight_events() == 0
                && self.broker.unsettled.is_empty()
                && self.broker.outcomes.is_empty();
            if idle {
                break;
            }
        }
        self.check()?;
        prop_assert!(
            self.list.items.is_empty(),
            "list left: {}",
            self.list.items.len()
        );
        prop_assert_eq!(self.engine.queue.len(), 0);
        prop_assert_eq!(self.engine.inflight_events(), 0);
        let st = &self.engine.stats;
        let delivered: HashSet<u64> = self.broker.delivered.iter().copied().collect();
        let missing = (0..self.next_id).filter(|i| !delivered.contains(i)).count() as u64;
        prop_assert!(
            missing <= st.dropped + st.lost,
            "at the end {missing} events never arrived; {} dropped, {} lost counted",
            st.dropped,
            st.lost
        );
        Ok(())
    }
}

fn cases() -> u32 {
    std::env::var("KEA_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

#[test]
fn engine_keeps_its_promises() {
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(op(), 1..120), |ops| {
            let mut w = World::new();
            for op in &ops {
                let unwritable = w.engine.stats.dropped_unwritable;
                w.apply(op);
                w.check()?;
                // A write refused because the list's slot is being migrated
                // (ASK) drops nothing: the records wait in memory (but at
                // SHUTDOWN, when memory is about to go).
                let only_misplaced = w.list.misplaced && !w.list.refuse_writes && w.engine.master;
                if only_misplaced
                    && !matches!(op, Op::RoleFlip | Op::RefuseWrites(_) | Op::Shutdown)
                {
                    prop_assert_eq!(w.engine.stats.dropped_unwritable, unwritable, "{:?}", op);
                }
            }
            w.finish()
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Without faults, every event arrives once, in order, and nothing is dropped.
#[test]
fn no_faults_no_duplicates() {
    let mut w = World::new();
    for round in 0..50 {
        w.apply(&Op::Events(7));
        w.apply(&Op::Tick);
        w.apply(&Op::Connect);
        if round % 3 == 0 {
            w.apply(&Op::AckAll);
        }
        w.check().expect("promises hold");
    }
    w.finish().expect("drains");
    assert_eq!(w.broker.delivered, (0..w.next_id).collect::<Vec<_>>());
    assert_eq!(w.engine.stats.dropped, 0);
}

/// Past the queue's hard limit (one script writing a flood while the broker
/// is away and nothing is spilled), events are dropped and counted.
#[test]
fn overflow_is_dropped_and_counted() {
    let mut w = World::new();
    // Records of over 1 MiB each: the queue passes the hard limit after as
    // many events as it has MiB; the three after it are dropped.
    let event = vec![b'e'; 1 << 20];
    let fits = hard_limit_bytes() >> 20;
    for _ in 0..fits + 3 {
        let key = format!("k{}", w.next_id);
        w.next_id += 1;
        w.seen += 1;
        let got = w.engine.accept(&event, key.as_bytes(), &MEMORY);
        let want = if w.next_id as usize > fits {
            Accepted::Dropped
        } else {
            Accepted::Queued {
                was_empty: w.next_id == 1,
            }
        };
        assert_eq!(got, want, "event {}", w.next_id - 1);
    }
    assert_eq!(w.engine.queue.len(), fits);
    assert_eq!(w.engine.stats.dropped_overflow, 3);
    w.check().expect("the dropped events are counted");
}
