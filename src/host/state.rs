//! The module's state. It lives on the Redis main thread only: every entry
//! point that touches it (notifications, timer, commands, server events,
//! INFO) runs there. It is a `RefCell` in a static that only the thread
//! that installed it may reach (a plain static, not a thread-local: in a
//! shared library every thread-local access calls `__tls_get_addr`, and the
//! keyspace callback pays each one per event).

use crate::command::LinkAction;
use crate::config::Settings;
use crate::engine::Engine;
use crate::event::EventTypes;
use crate::host::client::LazyClient;
use crate::host::list::ListKey;
use crate::slots::SlotView;
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

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
    /// When the last tick ran (the cron arms an idle tick when it is old).
    pub last_tick: Option<std::time::Instant>,
    /// This node runs in cluster mode.
    pub cluster: bool,
    /// Cluster only: slot ownership and fallback lists found in owned slots.
    pub slots: SlotView,
    /// Cluster only: the slot migrations touching this node.
    pub moves: crate::moves::Moves,
    /// The snapshot walk (`key_evt_amqp.snapshot`).
    pub snapshot: crate::host::scan::Snapshot,
}

/// The state and the thread that owns it (the one that installed it: the
/// server's main thread).
struct MainCell {
    owner: AtomicUsize,
    cell: RefCell<Option<State>>,
}

// SAFETY: `cell` is only ever touched by the thread whose id is in `owner`
// (see `here`); every other thread gets `None` without touching it.
unsafe impl Sync for MainCell {}

static STATE: MainCell = MainCell {
    owner: AtomicUsize::new(0),
    cell: RefCell::new(None),
};

/// This thread's id, as `pthread_self` gives it.
#[inline]
fn thread_id() -> usize {
    // SAFETY: no arguments; always succeeds.
    unsafe { libc::pthread_self() as usize }
}

/// The cell, when this thread owns it.
#[inline]
fn here() -> Option<&'static RefCell<Option<State>>> {
    (STATE.owner.load(Ordering::Relaxed) == thread_id()).then_some(&STATE.cell)
}

/// Installs the state at load, on the thread that will own it.
pub fn install(state: State) {
    let owner = STATE.owner.load(Ordering::Relaxed);
    if owner != 0 && owner != thread_id() {
        return;
    }
    STATE.owner.store(thread_id(), Ordering::Relaxed);
    if let Ok(mut s) = STATE.cell.try_borrow_mut() {
        *s = Some(state);
    }
}

/// Drops the state (a clean unload).
pub fn take() -> Option<State> {
    here().and_then(|s| s.try_borrow_mut().ok().and_then(|mut g| g.take()))
}

/// Runs `f` on the state; `None` when it is not installed, already
/// borrowed (a notification fired by the module's own work), or this is
/// not the thread that owns it.
#[inline]
pub fn with<R>(f: impl FnOnce(&mut State) -> R) -> Option<R> {
    let mut guard = here()?.try_borrow_mut().ok()?;
    guard.as_mut().map(f)
}

/// True while the state is in use (a notification now is a nested one).
pub fn busy() -> bool {
    here().is_some_and(|s| s.try_borrow_mut().is_err())
}

impl State {
    /// Durable mode can be used for an event now: `durability outbox`, the
    /// fallback key is known (in cluster mode, after the first tick), and the
    /// server runs post-notification jobs (Redis 7.2+, Valkey 7.2+).
    #[inline]
    pub fn outbox_usable(&self) -> bool {
        crate::config::OUTBOX.load(std::sync::atomic::Ordering::Relaxed)
            && !self.list_key.key.is_empty()
            // SAFETY: reads a function pointer the server filled in at load.
            && unsafe { redis_module::raw::RedisModule_AddPostNotificationJob }.is_some()
    }

    /// True when the timer should run at the short interval: the engine
    /// has work, or a snapshot walk is under way.
    pub fn busy(&self) -> bool {
        self.next_tick().is_some()
    }

    /// When the next tick is due (`None`: nothing to do).
    pub fn next_tick(&self) -> Option<std::time::Duration> {
        self.engine
            .next_tick(std::time::Instant::now())
            .or_else(|| {
                self.snapshot
                    .walk
                    .running()
                    .then(|| crate::host::limits::now().flush_interval)
            })
    }

    /// Records the error shown in INFO.
    pub fn set_error(&mut self, e: impl Into<String>) {
        self.engine.set_error(e);
    }

    /// Puts `settings` in force and does what `action` asks of the
    /// connection (commands and `CONFIG SET` both come here).
    pub fn use_settings(&mut self, settings: Settings, action: LinkAction) {
        self.engine.use_settings(settings, action, &mut self.client);
    }
}
