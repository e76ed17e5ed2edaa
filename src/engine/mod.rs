//! The delivery engine: `queue → flush → broker → confirmed | fallback list`.
//! It holds the in-memory queue, the batches in flight and the view of the
//! fallback list, and owns the three promises in one place:
//!
//! - every accepted event is confirmed, stored, or counted dropped under a
//!   named [`Drop`] reason (or lost, when the list loses it behind our back);
//! - first deliveries are in order per node: while the list holds anything,
//!   or list records are in flight, the list goes first and newer events
//!   wait behind it (in memory, and past the queue's bounds at the list's
//!   tail); records that come back unconfirmed return to the
//!   head in their order before anything newer is sent;
//! - duplicates only happen inside the in-flight window.
//!
//! It has no Redis import: storage and broker are traits ([`Storage`],
//! [`Broker`]), so the model test in `tests/model.rs` drives it with an
//! in-memory list and a scripted broker. The host calls [`Engine::accept`]
//! from the keyspace callback and [`Engine::tick`] from the Redis timer.

pub mod broker;
pub mod intake;
pub mod list;
pub mod metrics;
pub mod nodes;
pub mod stats;
pub mod storage;
pub mod unroutable;

mod demoted;
mod forward;
mod settle;
mod store;

use crate::amqp::{Request, Settled};
use crate::config::{Settings, Unroutable};
use crate::queue::{EventQueue, Records};
pub use broker::{Broker, LazyClient};
pub use intake::{Accepted, DbEvent, Intake, Origin};
pub use list::ListView;
pub use stats::{Drop, Stats};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
pub use storage::{MemList, Storage, StoreError};

/// How often the real list length is read: while records are stored, and while none are.
const SYNC_BUSY: Duration = Duration::from_millis(100);
const SYNC_IDLE: Duration = Duration::from_millis(500);

/// The connection as the engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Never asked to connect (the connection is lazy).
    Idle,
    /// A connect was requested.
    Connecting,
    /// Connected, publishing.
    Up,
    /// Connected, but the broker blocked publishing (resource alarm).
    Blocked,
    /// Lost or failed; the AMQP side retries with backoff.
    Down,
    /// Closed by `key_evt_amqp.disconnect`, until the next `connect`.
    Closed,
}

impl Link {
    /// Name shown in INFO.
    pub fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Connecting => "connecting",
            Self::Up => "connected",
            Self::Blocked => "blocked",
            Self::Down => "reconnecting",
            Self::Closed => "disconnected",
        }
    }

    /// A connection exists or is being made (not idle, not closed).
    pub fn active(self) -> bool {
        matches!(
            self,
            Self::Up | Self::Down | Self::Connecting | Self::Blocked
        )
    }
}

/// The tunables the engine reads at each tick.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most records in flight (`inflight-max`).
    pub window: usize,
    /// Records per batch (`batch-size`).
    pub batch: usize,
    /// Queue bound in records (`queue-max-events`).
    pub queue_max_events: usize,
    /// Queue bound in bytes (`queue-max-bytes`).
    pub queue_max_bytes: usize,
    /// Events per second above which forwarding waits (`burst-rate`, 0 = off).
    pub burst_rate: i64,
    /// The longest wait of one burst (`burst-max-ms`).
    pub burst_max: Duration,
    /// What to do with records the broker returns as unroutable.
    pub on_unroutable: Unroutable,
    /// The cap of the wait after returns (`unroutable-retry-max-ms`).
    pub unroutable_retry_max: Duration,
    /// Records one tick spills beyond what arrived since the last tick,
    /// while the link is down (the rest stays in memory for later ticks).
    pub spill_chunk: usize,
}

/// A line for the server log; the host writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Normal but significant.
    Notice(String),
    /// Something went wrong.
    Warning(String),
}

/// Where records that cannot stay in memory go.
#[derive(Debug, Clone, Copy)]
enum At {
    Tail,
    Head,
}

/// A batch handed to the broker side and not yet settled.
#[derive(Debug)]
struct InFlight {
    id: u64,
    /// Records read from the list (else taken from the queue).
    from_list: bool,
    /// The list epoch when read (list batches).
    epoch: u64,
    count: usize,
    /// Payload bytes.
    bytes: usize,
    /// Queue batches keep their records until confirmed.
    records: Option<Arc<Records>>,
    /// Written to the list already (on shutdown): never store again.
    stored: bool,
    settled: Option<Settled>,
    /// When it was handed over (for the confirm latency).
    sent_at: Instant,
}

/// The delivery engine of one node.
#[derive(Debug)]
pub struct Engine {
    /// Positional settings (broker, fallback cap, masks).
    pub settings: Settings,
    /// Records waiting for the timer.
    pub queue: EventQueue,
    /// The view of the fallback list.
    pub list: ListView,
    /// The keyspace callback's side: the encoder and the outbox.
    pub intake: Intake,
    /// Connection state.
    pub link: Link,
    /// Counters.
    pub stats: Stats,
    /// This node is a master (forwards).
    pub master: bool,
    /// The server is loading AOF/RDB: nothing is sent.
    pub loading: bool,
    /// Last error text (never contains a password).
    pub last_error: String,
    /// A list write failed: the host should look at slot ownership again.
    pub want_slot_refresh: bool,
    /// A list write was refused because the key's slot is not served here
    /// (`ASK`, `MOVED`): the records wait in memory until the host has
    /// picked a key in a slot it owns.
    pub list_misplaced: bool,
    /// Latency, uptime and the list's oldest record, for INFO.
    pub metrics: metrics::Metrics,
    /// The broker list: the entry connected now, failovers, each entry's state.
    pub nodes: nodes::Nodes,
    /// A moved fallback list is being adopted into ours: this node's own
    /// records wait in memory (as while writes are paused), so that the
    /// adopted records stay contiguous and ahead of them.
    pub hold_tail: bool,
    /// `stats.accepted` at the last tick (what arrived since, for the spill bound).
    tick_accepted: u64,
    /// The time of the current tick.
    now: Instant,
    /// Demoted with an empty list and no list records in flight: what is
    /// held in memory can be sent without overtaking older records.
    memory_may_go: bool,
    inflight: VecDeque<InFlight>,
    inflight_events: usize,
    returns: Records,
    halted: bool,
    generation: u64,
    next_batch: u64,
    rate_mark: (Instant, u64),
    /// When the current burst began (events faster than `burst-rate`).
    burst_since: Option<Instant>,
    /// The last tick that saw events faster than `burst-rate`.
    last_fast: Option<Instant>,
    /// The last list write was refused (e.g. over `maxmemory`).
    list_refused: bool,
    notices: Vec<Notice>,
    /// Records came back unroutable: the backoff and the probe.
    unroutable: unroutable::Retry,
    /// The broker nacked records (it could not take them: a quorum queue
    /// without a leader, `x-overflow reject-publish`): the same backoff and
    /// probe, so that a broker that refuses is not sent the backlog again
    /// and again.
    nacked: unroutable::Retry,
    on_unroutable: Unroutable,
}

impl Engine {
    /// A fresh engine.
    pub fn new(settings: Settings, master: bool, intake: Intake) -> Self {
        Self {
            settings,
            queue: EventQueue::default(),
            intake,
            list: ListView::default(),
            link: Link::Idle,
            stats: Stats::default(),
            master,
            loading: false,
            last_error: String::new(),
            want_slot_refresh: false,
            list_misplaced: false,
            metrics: metrics::Metrics::default(),
            nodes: nodes::Nodes::default(),
            hold_tail: false,
            tick_accepted: 0,
            now: Instant::now(),
            memory_may_go: false,
            inflight: VecDeque::new(),
            inflight_events: 0,
            returns: Records::default(),
            halted: false,
            generation: 0,
            next_batch: 1,
            rate_mark: (Instant::now(), 0),
            burst_since: None,
            last_fast: None,
            list_refused: false,
            notices: Vec::new(),
            unroutable: unroutable::Retry::default(),
            nacked: unroutable::Retry::default(),
            on_unroutable: Unroutable::Store,
        }
    }

    /// Every record held only in memory (queue, queue batches in flight,
    /// records waiting to go back to the list, the outbox), for checks and
    /// diagnostics.
    pub fn records_in_memory(&self) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = self.returns.iter().map(<[u8]>::to_vec).collect();
        for b in &self.inflight {
            if let (Some(records), false) = (&b.records, b.stored) {
                out.extend(records.iter().map(<[u8]>::to_vec));
            }
        }
        for chunk in self.queue.chunks() {
            out.extend(chunk.iter().map(<[u8]>::to_vec));
        }
        out.extend(self.intake.outbox.iter().map(<[u8]>::to_vec));
        out
    }

    /// The timestamp (seconds since the epoch) of the oldest record held
    /// only in memory, for INFO: the earliest of the first record of each
    /// place records wait (records going back to the list, queue batches in
    /// flight, the queue, the outbox). A few records are read, never all.
    pub fn oldest_in_memory(&self) -> Option<u64> {
        let inflight = self
            .inflight
            .iter()
            .filter(|b| !b.stored)
            .filter_map(|b| b.records.as_ref().and_then(|r| r.get(0)));
        self.returns
            .get(0)
            .into_iter()
            .chain(inflight)
            .chain(self.queue.chunks().find_map(|c| c.get(0)))
            .chain(self.intake.outbox.get(0))
            .filter_map(|r| crate::event::split(r).map(|p| p.timestamp))
            .min()
    }

    /// Records published and not settled.
    pub fn inflight_events(&self) -> usize {
        self.inflight_events
    }

    /// Payload bytes of the records published and not settled.
    pub fn inflight_bytes(&self) -> usize {
        self.inflight.iter().map(|b| b.bytes).sum()
    }

    /// True when list records are in flight.
    pub fn list_in_flight(&self) -> bool {
        self.inflight.iter().any(|b| b.from_list)
    }

    /// True when the timer should run at the short interval.
    pub fn busy(&self) -> bool {
        !self.queue.is_empty()
            || self.inflight_events > 0
            || !self.returns.is_empty()
            || (self.list.len > 0 && self.link == Link::Up && self.master)
    }

    /// Takes the log lines written since the last call.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// Records the error shown in INFO.
    pub fn set_error(&mut self, e: impl Into<String>) {
        self.last_error = e.into();
    }

    fn notice(&mut self, text: String) {
        self.notices.push(Notice::Notice(text));
    }

    fn warning(&mut self, text: String) {
        self.notices.push(Notice::Warning(text));
    }

    fn log_link(&mut self, what: &str) {
        let at = if self.nodes.latest.is_empty() {
            crate::endpoint::addresses(&self.settings.amqp).join(",")
        } else {
            self.nodes.latest.clone()
        };
        let text = format!("key_evt_amqp: {what} (broker {at})");
        self.notice(text);
    }

    /// Starts measuring the event rate now (the first event after idling).
    pub fn mark_rate(&mut self, now: Instant) {
        self.rate_mark = (now, self.stats.accepted);
    }

    /// Asks the broker side to connect with the current settings.
    pub fn connect(&mut self, broker: &mut dyn Broker) {
        broker.send(Request::Connect(Box::new(self.settings.amqp.clone())));
        if self.link != Link::Up {
            self.link = Link::Connecting;
        }
    }

    /// Asks the broker side to disconnect and stay disconnected.
    pub fn disconnect(&mut self, broker: &mut dyn Broker) {
        broker.send(Request::Disconnect);
        self.link = Link::Closed;
        self.metrics.connected_at = None;
    }

    /// Just before a demotion, while the list is still as this master left
    /// it (replication from the new master has not begun): a last read of
    /// its length counts what vanished behind the engine's back. After the
    /// role change the length is learned anew, since the new master's
    /// trims reach the list by replication and are no loss.
    pub fn before_demotion(&mut self, store: &mut dyn Storage) {
        if !self.master || !store.usable() {
            return;
        }
        match self.list.sync(store) {
            Ok(lost) => self.count_lost(lost),
            Err(e) => self.set_error(format!("fallback read: {e}")),
        }
    }

    /// Just after a promotion: the length of the list as the old master left
    /// it (replicated) is learned now, so that from this moment on what
    /// vanishes behind the engine's back is counted as lost.
    pub fn after_promotion(&mut self, store: &mut dyn Storage) {
        if !self.master || !store.usable() {
            return;
        }
        if let Ok(len) = store.read_len() {
            self.list.len = len;
            self.list.unknown = false;
        }
    }

    /// Applies a role change. Either way the list's head is someone else's
    /// business now: the new master resends from the head (at least once),
    /// a replica never trims.
    pub fn set_role(&mut self, master: bool) {
        if self.master == master {
            return;
        }
        self.master = master;
        self.hold_tail = false;
        self.memory_may_go = !master && self.list.len == 0 && !self.list_in_flight();
        self.list.forget();
        if master && self.link != Link::Closed {
            self.link = Link::Idle;
        }
    }

    /// The broker side died (its task panicked): fail what it held, so that
    /// those records go back to the list. Returns true when the host must
    /// start a new one.
    pub fn check_broker(&mut self, broker: &dyn Broker) -> bool {
        if broker.alive() {
            return false;
        }
        self.stats.supervisor_restarts += 1;
        self.warning("key_evt_amqp: the AMQP task stopped unexpectedly; starting a new one".into());
        self.set_error("the AMQP task stopped unexpectedly");
        for b in self.inflight.iter_mut().filter(|b| b.settled.is_none()) {
            b.settled = Some(Settled::failed(b.id, "the AMQP task stopped"));
        }
        if self.link != Link::Closed {
            self.link = Link::Idle;
        }
        true
    }

    /// One flush: collect outcomes, settle, read the list's length when due,
    /// hand new batches over, and spill what cannot stay in memory.
    pub fn tick(
        &mut self,
        store: &mut dyn Storage,
        broker: &mut dyn Broker,
        limits: &Limits,
        now: Instant,
    ) {
        self.on_unroutable = limits.on_unroutable;
        self.now = now;
        self.commit_pending();
        let arrived = self.stats.accepted.saturating_sub(self.tick_accepted);
        self.tick_accepted = self.stats.accepted;
        self.collect(broker);
        self.settle(store);
        if self.on_unroutable != Unroutable::Store {
            self.unroutable.confirmed();
        }
        let max = limits.unroutable_retry_max;
        // Both are brought up to date (no short circuit).
        let waiting = self.unroutable.waiting(now, max) | self.nacked.waiting(now, max);
        if !self.master {
            self.follow_len_when_due(store, now);
            self.send_from_memory_when_demoted(broker, limits);
            return;
        }
        if self.loading {
            return;
        }
        self.sync_when_due(store, now);
        let has_work = !self.queue.is_empty() || self.list.len > 0;
        if self.link == Link::Idle && has_work {
            self.connect(broker);
        }
        let burst = self.in_burst(store, now, limits);
        if self.link == Link::Up && !self.halted && !burst && !waiting {
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
    }

    /// A list operation failed: shows it, and asks the host to look at slot
    /// ownership again when the key is no longer served here (resharding).
    pub(super) fn list_error(&mut self, what: &str, e: &StoreError) {
        if e.misplaced() {
            self.want_slot_refresh = true;
        }
        self.set_error(format!("{what}: {e}"));
    }

    /// `SWAPDB` took the fallback list to another database: what it held
    /// and was not read yet is counted as lost, and whatever the list's key
    /// holds in its database now is read as the list.
    pub fn list_swapped(&mut self) {
        if !self.master {
            return;
        }
        let lost = self.list.dropped();
        self.count_lost(lost);
        self.list.forget();
    }

    pub(super) fn count_lost(&mut self, lost: u64) {
        if lost > 0 {
            self.stats.lost += lost;
            self.warning(format!(
                "key_evt_amqp: {lost} events vanished from the fallback list"
            ));
        }
    }
}
