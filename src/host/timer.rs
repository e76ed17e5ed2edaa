//! The timer: every few milliseconds on the main thread it runs one
//! [`Engine::tick`](crate::engine::Engine::tick) against the Redis list and
//! the AMQP client. It never waits on the network.

use crate::host::guard;

use crate::host::list::RedisList;
use crate::host::state::{self, State};
use redis_module::Context;
use std::time::{Duration, Instant};

/// How often an idle module ticks (to notice a list written behind its
/// back, a slot that moved, the link's state). No timer is armed between
/// idle ticks: the server's cron arms one when this much time has passed
/// (so an idle module holds no timer, `MODULE UNLOAD` reaches the module's
/// own answer, and an idle server wakes about once a second more than it
/// would without the module). An event brings the next tick forward.
pub const IDLE_INTERVAL: Duration = Duration::from_secs(1);

fn on_timer(ctx: &Context, _: ()) {
    state::with(|st| st.timer = None);
    // The tick and the re-arm are guarded apart: a tick that panics still
    // leaves the next one armed (and the cron re-arms a timer that is
    // missing anyway).
    guard::run_then(
        "timer",
        || {
            state::with(|st| {
                st.last_tick = Some(Instant::now());
                tick(ctx, st);
            });
        },
        || {
            state::with(|st| arm(ctx, st));
        },
    );
}

/// The server's cron: an idle tick is due, or a timer that should be armed
/// is missing.
pub fn on_cron(ctx: &Context, st: &mut State) {
    if st.timer.is_some() {
        return;
    }
    let due = st
        .last_tick
        .is_none_or(|t| t.elapsed() >= IDLE_INTERVAL.saturating_sub(Duration::from_millis(10)));
    if due || st.busy() {
        st.timer_fast = st.busy();
        st.timer = Some(ctx.create_timer(Duration::ZERO, on_timer, ()));
    }
}

/// Arms the timer when there is work and none is armed, after the delay
/// the engine asks for. An idle module arms nothing: the cron ticks it
/// (see [`on_cron`]).
pub fn arm(ctx: &Context, st: &mut State) {
    if st.timer.is_some() {
        return;
    }
    let Some(period) = st.next_tick() else {
        st.timer_fast = false;
        return;
    };
    // A wait longer than the engine's paced ticks (a backoff) is brought
    // forward by the next event; a paced tick is not (the event would only
    // re-arm the same delay, on the keyspace callback's path).
    st.timer_fast = period <= crate::engine::MAX_WINDOW_INTERVAL;
    st.timer = Some(ctx.create_timer(period, on_timer, ()));
}

/// Brings the timer forward after the first event lands in an empty queue.
#[inline]
pub fn hurry(ctx: &Context, st: &mut State) {
    if st.timer_fast {
        return;
    }
    // Measure the event rate from this first event on, not from an idle tick.
    st.engine.mark_rate(Instant::now());
    if let Some(id) = st.timer.take() {
        // Fails only if the timer already fired; then nothing is armed.
        let _ = ctx.stop_timer::<()>(id);
    }
    arm(ctx, st);
}

/// One flush.
pub fn tick(ctx: &Context, st: &mut State) {
    let now = Instant::now();
    crate::host::moves::end_migrate();
    if let Err(e) = crate::host::list::select(ctx) {
        st.set_error(e);
        return;
    }
    if st.engine.check_broker(&st.client) {
        st.client.reset();
    }
    let forwarding = st.engine.is_master() && !st.engine.is_loading();
    if forwarding {
        crate::host::cluster::check_list_moved(ctx, st);
    }
    st.engine.commit_pending();
    if st.engine.outbox_waiting() {
        crate::host::outbox::flush(ctx, st);
    }
    if forwarding {
        crate::host::cluster::refresh(ctx, st, false);
        crate::host::cluster::adopt(ctx, st);
    }
    let mut list = RedisList::new(ctx, &mut st.list_key).in_unit();
    let todo = st
        .engine
        .tick(&mut list, &mut st.client, &crate::host::limits::now(), now);
    crate::host::cluster::after_list_writes(ctx, st, todo, false);
    crate::host::snapshot::step(ctx, st);
    crate::host::deferred::drain(ctx, st);
}

/// Writes everything held only in memory to the list (before SHUTDOWN).
pub fn persist_memory(ctx: &Context, st: &mut State) {
    if let Err(e) = crate::host::list::select(ctx) {
        st.set_error(e);
        return;
    }
    let mut list = RedisList::new(ctx, &mut st.list_key);
    st.engine.persist_memory(&mut list, &mut st.client);
    crate::host::log::notices(st.engine.take_notices());
}
