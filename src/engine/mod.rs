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

pub mod backoff;
pub mod broker;
pub mod intake;
pub mod list;
pub mod metrics;
pub mod nodes;
pub mod stats;
pub mod storage;

mod demoted;
mod forward;
mod role;
mod settle;
mod states;
mod store;
mod tick;

use crate::config::Settings;
use crate::queue::{EventQueue, Records};
pub use broker::Broker;
pub use intake::{Accepted, DbEvent, Intake, Origin};
pub use list::ListView;
pub use states::{Adoption, Leftovers, Limits, Link, Load, Notice, Role};
use states::{At, Detached, InFlight, ListWrites, Pace, Rate, Sending};
pub use stats::{DropReason, Stats};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
pub use storage::{MemList, Storage, StoreError};
pub use tick::{Todo, MAX_WINDOW_INTERVAL};

/// How often the real list length is read: while records are stored, and while none are.
const SYNC_BUSY: Duration = Duration::from_millis(100);
const SYNC_IDLE: Duration = Duration::from_millis(500);

/// The delivery engine of one node. Its state is its own: the host calls
/// methods and acts on what they return.
#[derive(Debug)]
pub struct Engine {
    /// Positional settings (broker, fallback cap, masks).
    settings: Settings,
    /// The tunables of the last tick (and of the events accepted since).
    limits: Limits,
    /// Records waiting for the timer.
    queue: EventQueue,
    /// The view of the fallback list.
    list: ListView,
    /// The keyspace callback's side: the encoder and the outbox.
    intake: Intake,
    /// Connection state.
    link: Link,
    /// Counters.
    stats: Stats,
    role: Role,
    load: Load,
    /// Last error text (never contains a password).
    last_error: String,
    /// What the host must do after this tick or job (see [`Todo`]).
    todo: Todo,
    /// Latency, uptime and the list's oldest record, for INFO.
    metrics: metrics::Metrics,
    /// The broker list: the entry connected now, failovers, each entry's state.
    nodes: nodes::Nodes,
    adoption: Adoption,
    /// `stats.accepted` at the last tick (what arrived since, for the spill bound).
    tick_accepted: u64,
    /// The time of the current tick.
    now: Instant,
    inflight: VecDeque<InFlight>,
    inflight_events: usize,
    returns: Records,
    sending: Sending,
    generation: u64,
    next_batch: u64,
    rate: Rate,
    pace: Pace,
    list_writes: ListWrites,
    /// Records came back unroutable: the backoff and the probe.
    unroutable: backoff::Backoff,
    /// The broker nacked records (it could not take them: a quorum queue
    /// without a leader, `x-overflow reject-publish`): the same backoff and
    /// probe, so that a broker that refuses is not sent the backlog again
    /// and again.
    nacked: backoff::Backoff,
}

impl Engine {
    /// A fresh engine, with `limits` in force until the first tick.
    pub fn new(settings: Settings, master: bool, intake: Intake, limits: Limits) -> Self {
        let now = Instant::now();
        Self {
            settings,
            limits,
            queue: EventQueue::default(),
            intake,
            list: ListView::default(),
            link: Link::Idle,
            stats: Stats::default(),
            role: if master {
                Role::Master
            } else {
                Role::Replica(Leftovers::Drop)
            },
            load: Load::Ready,
            last_error: String::new(),
            todo: Todo::default(),
            metrics: metrics::Metrics::default(),
            nodes: nodes::Nodes::default(),
            adoption: Adoption::None,
            tick_accepted: 0,
            now,
            inflight: VecDeque::new(),
            inflight_events: 0,
            returns: Records::default(),
            sending: Sending::Open,
            generation: 0,
            next_batch: 1,
            rate: Rate {
                mark: (now, 0),
                burst_since: None,
                last_fast: None,
            },
            pace: Pace::default(),
            list_writes: ListWrites::Accepted,
            unroutable: backoff::Backoff::default(),
            nacked: backoff::Backoff::default(),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The connection as the engine sees it.
    pub fn link(&self) -> Link {
        self.link
    }

    /// The node's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// True on a master.
    #[inline]
    pub fn is_master(&self) -> bool {
        self.role == Role::Master
    }

    /// True while the server loads its data.
    #[inline]
    pub fn is_loading(&self) -> bool {
        self.load == Load::Loading
    }

    /// The server starts (true) or ends loading its data. A load that
    /// starts withdraws a flush held back (see [`Engine::withdraw_pending`]);
    /// one that ends makes the list's length be read anew.
    pub fn set_loading(&mut self, loading: bool) {
        let was = self.load;
        self.load = if loading { Load::Loading } else { Load::Ready };
        if was == Load::Loading && !loading {
            // What was loaded may hold another list: read it anew.
            self.list.forget();
        }
    }

    /// The last error, for INFO.
    pub fn last_error(&self) -> &str {
        &self.last_error
    }

    /// Records in the in-memory queue.
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// Payload bytes in the in-memory queue.
    pub fn queue_bytes(&self) -> usize {
        self.queue.bytes()
    }

    /// True when the current execution unit's outbox is empty.
    pub fn outbox_is_empty(&self) -> bool {
        self.intake.outbox.is_empty()
    }

    /// The view of the fallback list.
    pub fn list(&self) -> &ListView {
        &self.list
    }

    /// The list is read anew at the next tick (a load ended, a replica's
    /// data set was replaced), nothing counted as lost.
    pub fn list_forget(&mut self) {
        self.list.forget();
    }

    /// The host switched the fallback list to another key (a cluster node
    /// whose list's slot moved, or that picked a key in an owned slot):
    /// confirms of records read from the old one trim nothing; when the old
    /// slot moved away, those records are the new owner's to send and are
    /// counted as read again.
    pub fn list_key_changed(&mut self, slot_lost: bool) {
        if slot_lost {
            self.list.reset_head();
        }
        self.list.forget();
        self.list.len = 0;
    }

    /// Latency, uptime and the list's oldest record, for INFO.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.metrics
    }

    /// The broker list's entries, for INFO.
    pub fn nodes(&self) -> &nodes::Nodes {
        &self.nodes
    }

    /// A moved list's records are appended to this node's list: its own
    /// records wait in memory until [`Engine::end_adoption`].
    pub fn start_adoption(&mut self) {
        self.adoption = Adoption::Adopting;
    }

    /// The adoption is over (or the node stops being a master).
    pub fn end_adoption(&mut self) {
        self.adoption = Adoption::None;
    }

    /// True while a moved list is adopted.
    pub fn adopting(&self) -> bool {
        self.adoption == Adoption::Adopting
    }

    /// A slot migration caused an event (see [`crate::moves`]): counted, not forwarded.
    pub fn count_moved(&mut self) {
        self.stats.moved += 1;
    }

    /// A nested notification was accepted after the state was free again.
    pub fn count_deferred(&mut self) {
        self.stats.deferred += 1;
    }

    /// Every record held only in memory (queue, queue batches in flight,
    /// records waiting to go back to the list, the outbox), for checks and
    /// diagnostics.
    pub fn records_in_memory(&self) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = self.returns.iter().map(<[u8]>::to_vec).collect();
        for b in &self.inflight {
            // List batches are in the list, unless they left it in flight.
            let in_memory = if b.from_list {
                b.detached.is_some()
            } else {
                !b.stored
            };
            if in_memory {
                out.extend(b.records.iter().map(<[u8]>::to_vec));
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
            .filter(|b| !b.from_list && !b.stored)
            .filter_map(|b| b.records.get(0));
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
            || self.intake.pending()
            || (self.list.len > 0 && self.link == Link::Up && self.is_master())
    }

    /// Records the error shown in INFO.
    pub fn set_error(&mut self, e: impl Into<String>) {
        self.last_error = e.into();
    }

    fn notice(&mut self, text: String) {
        self.todo.notices.push(Notice::Notice(text));
    }

    fn warning(&mut self, text: String) {
        self.todo.notices.push(Notice::Warning(text));
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
        self.rate.mark = (now, self.stats.accepted);
    }

    /// A list operation failed: shows it, and asks the host to look at slot
    /// ownership again when the key is no longer served here (resharding).
    pub(super) fn list_error(&mut self, what: &str, e: &StoreError) {
        if e.misplaced() {
            self.todo.refresh_slots = true;
        }
        self.set_error(format!("{what}: {e}"));
    }

    /// `SWAPDB` took the fallback list to another database: what it held
    /// and was not read yet is counted as lost, and whatever the list's key
    /// holds in its database now is read as the list.
    pub fn list_swapped(&mut self) {
        if !self.is_master() {
            return;
        }
        self.detach_list_batches(Detached::Flushed);
        let lost = self.list.dropped();
        self.count_lost(lost);
        self.list.forget();
    }

    /// The list batches in flight were read from records that are no
    /// longer in the list (`why`).
    fn detach_list_batches(&mut self, why: Detached) {
        let epoch = self.list.epoch;
        for b in self
            .inflight
            .iter_mut()
            .filter(|b| b.from_list && b.epoch == epoch && b.detached.is_none())
        {
            b.detached = Some(why);
        }
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
