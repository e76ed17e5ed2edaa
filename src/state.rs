//! The module's state. It lives on the Redis main thread only: every entry
//! point that touches it (notifications, timer, commands, server events,
//! INFO) runs there, so a thread-local `RefCell` is enough.

use crate::amqp::Client;
use crate::config::Settings;
use crate::event::{Encoder, EventTypes};
use crate::fallback::Backlog;
use crate::info::Stats;
use crate::queue::{EventQueue, Records};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;

/// The connection as the main thread sees it.
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
}

/// A batch handed to the AMQP side and not yet settled.
#[derive(Debug)]
pub struct InFlight {
    /// Batch id.
    pub id: u64,
    /// Records taken from the fallback list (else from the queue).
    pub from_list: bool,
    /// The backlog epoch when read (list batches).
    pub epoch: u64,
    /// Number of records.
    pub count: usize,
    /// The records, shared with the AMQP side (queue batches keep them until confirmed).
    pub records: Option<Arc<Records>>,
    /// Written to the list already (on shutdown): never store again.
    pub stored: bool,
    /// The settlement, once it arrived.
    pub settled: Option<crate::amqp::Settled>,
}

/// Everything the module holds.
#[derive(Debug)]
pub struct State {
    /// Subscribed event classes.
    pub types: EventTypes,
    /// Positional settings.
    pub settings: Settings,
    /// Builds records.
    pub encoder: Encoder,
    /// Records waiting for the timer.
    pub queue: EventQueue,
    /// Records per queue chunk (the batch size, read at each tick).
    pub chunk: usize,
    /// The fallback list.
    pub backlog: Backlog,
    /// Batches published and not settled, oldest first.
    pub inflight: VecDeque<InFlight>,
    /// Records in `inflight`.
    pub inflight_events: usize,
    /// The AMQP side, started on first use.
    pub client: Option<Client>,
    /// Connection state.
    pub link: Link,
    /// Generation of the current connection.
    pub generation: u64,
    /// Next batch id.
    pub next_batch: u64,
    /// A batch failed: send nothing until every batch in flight settled.
    pub halted: bool,
    /// Records to put back at the head of the list once the window drained.
    pub returns: Records,
    /// Counters.
    pub stats: Stats,
    /// This node is a master (forwards).
    pub master: bool,
    /// The server is loading AOF/RDB: events are not new.
    pub loading: bool,
    /// The timer is armed at the short interval.
    pub timer_fast: bool,
    /// The armed timer, if any.
    pub timer: Option<u64>,
    /// Ticks since load, for periodic work.
    pub ticks: u64,
    /// When the SHUTDOWN hook was last matched to the persistence settings.
    pub hook_checked_at: std::time::Instant,
    /// When the event rate was last measured, and `stats.accepted` then.
    pub rate_mark: (std::time::Instant, u64),
    /// Last error text (never contains a password).
    pub last_error: String,
    /// This node runs in cluster mode.
    pub cluster: bool,
    /// Cluster only: slot ownership and backlogs found in owned slots.
    pub slots: crate::cluster::SlotView,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// Installs the state at load.
pub fn install(state: State) {
    STATE.with(|s| *s.borrow_mut() = Some(state));
}

/// Runs `f` on the state; `None` when it is not installed or already borrowed
/// (a notification fired by the module's own list write).
#[inline]
pub fn with<R>(f: impl FnOnce(&mut State) -> R) -> Option<R> {
    STATE.with(|s| {
        let mut guard = s.try_borrow_mut().ok()?;
        guard.as_mut().map(f)
    })
}

impl State {
    /// Records the error shown in INFO.
    pub fn set_error(&mut self, e: impl Into<String>) {
        self.last_error = e.into();
    }
}
