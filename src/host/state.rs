//! The module's state. It lives on the Redis main thread only: every entry
//! point that touches it (notifications, timer, commands, server events,
//! INFO) runs there, so a thread-local `RefCell` is enough.

use crate::engine::{Engine, LazyClient};
use crate::event::EventTypes;
use crate::host::list::ListKey;
use std::cell::RefCell;

pub use crate::engine::Link;

/// Everything the module holds.
#[derive(Debug)]
pub struct State {
    /// The delivery engine (the callback's intake, the queue, batches in
    /// flight, the list's view, counters).
    pub engine: Engine,
    /// Subscribed event classes.
    pub types: EventTypes,
    /// The fallback key.
    pub list_key: ListKey,
    /// The AMQP side, started on first use.
    pub client: LazyClient,
    /// The timer is armed at the short interval.
    pub timer_fast: bool,
    /// The armed timer, if any.
    pub timer: Option<u64>,
    /// When the last tick ran (the cron arms an idle tick after [`crate::host::timer::IDLE_INTERVAL`]).
    pub last_tick: Option<std::time::Instant>,
    /// This node runs in cluster mode.
    pub cluster: bool,
    /// Cluster only: slot ownership and fallback lists found in owned slots.
    pub slots: crate::host::cluster::SlotView,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// Installs the state at load.
pub fn install(state: State) {
    STATE.with(|s| *s.borrow_mut() = Some(state));
}

/// Drops the state (a clean unload).
pub fn take() -> Option<State> {
    STATE.with(|s| s.try_borrow_mut().ok().and_then(|mut g| g.take()))
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
        self.engine.set_error(e);
    }
}
