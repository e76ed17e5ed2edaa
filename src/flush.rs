//! The timer: every few milliseconds on the main thread it collects what the
//! AMQP side reported, trims confirmed records from the fallback list, hands
//! new batches over, and spills to the list what cannot go now. It never waits.

use crate::amqp::{Batch, Client, Outcome, Request, Settled};
use crate::config::{
    BATCH_SIZE, BURST_RATE, FLUSH_INTERVAL_MS, INFLIGHT_MAX, QUEUE_MAX_BYTES, QUEUE_MAX_EVENTS,
};
use crate::fallback::writes_paused;
use crate::guard;
use crate::info::Drop;
use crate::queue::Records;
use crate::state::{self, InFlight, Link, State};
use redis_module::{raw, Context};
use std::os::raw::c_void;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Timer period while there is nothing to do.
const IDLE_INTERVAL_MS: i64 = 100;
/// How often the SHUTDOWN hook is matched to the persistence settings.
const HOOK_CHECK: Duration = Duration::from_secs(1);

/// How often the real list length is read: while records are stored, and while none are.
const SYNC_BUSY: Duration = Duration::from_millis(100);
const SYNC_IDLE: Duration = Duration::from_millis(500);

/// Why records could not stay in memory.
#[derive(Debug, Clone, Copy)]
enum Store {
    Tail,
    Head,
}

extern "C" fn on_timer(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
    guard::run("timer", || {
        let ctx = Context::new(ctx);
        state::with(|st| {
            st.timer = None;
            tick(&ctx, st);
            arm(&ctx, st);
        });
    });
}

/// Arms the timer if none is armed, short when there is work.
pub fn arm(ctx: &Context, st: &mut State) {
    if st.timer.is_some() {
        return;
    }
    let busy = !st.queue.is_empty()
        || st.inflight_events > 0
        || !st.returns.is_empty()
        || (st.backlog.len > 0 && st.link == Link::Up && st.master);
    let period = if busy {
        FLUSH_INTERVAL_MS.get()
    } else {
        IDLE_INTERVAL_MS
    };
    st.timer_fast = busy;
    // SAFETY: called on the main thread with a valid context.
    let id = unsafe {
        raw::RedisModule_CreateTimer
            .map(|f| f(ctx.ctx, period, Some(on_timer), std::ptr::null_mut()))
    };
    st.timer = id;
}

/// Brings the timer forward after the first event lands in an empty queue.
#[inline]
pub fn hurry(ctx: &Context, st: &mut State) {
    if st.timer_fast {
        return;
    }
    // Measure the event rate from this first event on, not from an idle tick.
    st.rate_mark = (Instant::now(), st.stats.accepted);
    if let Some(id) = st.timer.take() {
        // SAFETY: main thread; the id came from CreateTimer.
        unsafe {
            if let Some(stop) = raw::RedisModule_StopTimer {
                stop(ctx.ctx, id, std::ptr::null_mut());
            }
        }
    }
    arm(ctx, st);
}

fn client(st: &mut State) -> &Client {
    st.client.get_or_insert_with(Client::start)
}

/// The AMQP supervisor task is gone (it panicked): fail what it held, so
/// that those records go back to the list, and let the next tick start a
/// new one.
fn restart_dead_client(st: &mut State) {
    if st.client.as_ref().is_none_or(Client::alive) {
        return;
    }
    st.client = None;
    st.stats.supervisor_restarts += 1;
    crate::log::warning("key_evt_amqp: the AMQP task stopped unexpectedly; starting a new one");
    st.set_error("the AMQP task stopped unexpectedly");
    for b in st.inflight.iter_mut().filter(|b| b.settled.is_none()) {
        b.settled = Some(Settled {
            id: b.id,
            acked: 0,
            nacked: 0,
            rejected: 0,
            error: Some("the AMQP task stopped".into()),
        });
    }
    if st.link != Link::Closed {
        st.link = Link::Idle;
    }
}

/// Asks the AMQP side to connect with the current settings.
pub fn request_connect(st: &mut State) {
    let settings = st.settings.amqp.clone();
    client(st).send(Request::Connect(settings));
    if st.link != Link::Up {
        st.link = Link::Connecting;
    }
}

/// Asks the AMQP side to disconnect and stay disconnected.
pub fn request_disconnect(st: &mut State) {
    if let Some(c) = &st.client {
        c.send(Request::Disconnect);
    }
    st.link = Link::Closed;
}

fn log_link(st: &State, what: &str) {
    crate::log::notice(&format!(
        "key_evt_amqp: {what} (broker {}:{})",
        st.settings.amqp.host, st.settings.amqp.port
    ));
}

fn collect(st: &mut State) {
    while let Some(outcome) = st.client.as_ref().and_then(Client::poll) {
        match outcome {
            Outcome::Connected { generation } => {
                st.generation = generation;
                if st.link == Link::Closed {
                    continue;
                }
                if st.link != Link::Up {
                    log_link(st, "connected");
                }
                st.link = Link::Up;
            }
            Outcome::Down {
                error,
                retry_in_ms,
                confirm_timeout,
            } => {
                st.stats.reconnects += 1;
                if confirm_timeout {
                    st.stats.confirm_timeouts += 1;
                }
                if st.link != Link::Closed {
                    if st.link != Link::Down || st.last_error != error {
                        log_link(
                            st,
                            &format!("connection down: {error}; retrying in {retry_in_ms} ms"),
                        );
                    }
                    st.link = Link::Down;
                }
                st.set_error(error);
            }
            Outcome::Closed => {
                if st.link == Link::Closed {
                    log_link(st, "disconnected on request");
                }
            }
            Outcome::Blocked(blocked) => {
                if matches!(st.link, Link::Up | Link::Blocked) {
                    st.link = if blocked { Link::Blocked } else { Link::Up };
                    log_link(
                        st,
                        if blocked {
                            "blocked by the broker"
                        } else {
                            "unblocked"
                        },
                    );
                }
            }
            Outcome::Settled(s) => {
                if let Some(b) = st.inflight.iter_mut().find(|b| b.id == s.id) {
                    b.settled = Some(s);
                }
            }
        }
    }
}

/// Applies settled batches, oldest first, and stops at the first unsettled one.
fn settle(ctx: &Context, st: &mut State) {
    while st.inflight.front().is_some_and(|b| b.settled.is_some()) {
        let Some(mut b) = st.inflight.pop_front() else {
            break;
        };
        let Some(Settled {
            acked,
            nacked,
            rejected,
            error,
            ..
        }) = b.settled.take()
        else {
            break;
        };
        st.inflight_events -= b.count;
        st.stats.confirmed += (acked - rejected) as u64;
        st.stats.nacked += nacked as u64;
        st.stats.drop(Drop::Rejected, rejected as u64);
        let failed = acked < b.count;
        if let Some(e) = error {
            st.set_error(e);
        }
        if b.from_list {
            if b.epoch == st.backlog.epoch {
                st.backlog.head_inflight = st.backlog.head_inflight.saturating_sub(b.count);
                if !st.halted {
                    st.backlog.acked += acked;
                }
            }
        } else if failed && !b.stored {
            if let Some(records) = &b.records {
                st.returns.extend(records.iter().skip(acked));
            }
        }
        if failed {
            st.halted = true;
        }
    }
    if !st.master {
        // A replica never writes the list; see `send_from_memory_when_demoted`.
        return;
    }
    let paused = writes_paused();
    if st.backlog.acked > 0 && !paused {
        match st.backlog.trim_acked(ctx) {
            Ok(lost) => count_lost(st, lost),
            Err(e) => st.set_error(format!("fallback trim: {e}")),
        }
    }
    // Returns go back to the head before anything newer is sent; while writes
    // are paused they wait in memory and forwarding stays halted.
    if st.halted && st.inflight.is_empty() && (st.returns.is_empty() || !paused) {
        st.halted = false;
        st.backlog.head_inflight = 0;
        let returns = std::mem::take(&mut st.returns);
        store(ctx, st, returns, Store::Head);
    }
}

fn count_lost(st: &mut State, lost: u64) {
    if lost > 0 {
        st.stats.lost += lost;
        crate::log::warning(&format!(
            "key_evt_amqp: {lost} events vanished from the fallback list {}",
            st.backlog.key
        ));
    }
}

/// Writes records to the fallback list, or drops and counts them by the rules.
/// Callers check [`writes_paused`] first: no write is made while it holds.
fn store(ctx: &Context, st: &mut State, records: Records, at: Store) {
    if records.is_empty() {
        return;
    }
    let n = records.len() as u64;
    if st.settings.fallback_size < 0 {
        st.stats.drop(Drop::Disabled, n);
        return;
    }
    if !st.master || st.backlog.key.is_empty() || writes_paused() {
        st.stats.drop(Drop::Unwritable, n);
        return;
    }
    let written = match at {
        Store::Tail => st.backlog.append(ctx, &records),
        Store::Head => st.backlog.prepend(ctx, &records),
    };
    match written {
        Ok(()) => st.stats.stored += n,
        Err(e) => {
            st.stats.drop(Drop::Unwritable, n);
            st.set_error(format!("fallback write: {e}"));
            // A slot may have moved: look again now.
            crate::cluster::refresh(ctx, st, true);
            return;
        }
    }
    let cap = u64::try_from(st.settings.fallback_size).unwrap_or(0);
    match st.backlog.enforce_cap(ctx, cap) {
        Ok(d) => st.stats.drop(Drop::Cap, d),
        Err(e) => st.set_error(format!("fallback cap: {e}")),
    }
}

/// Moves the whole in-memory queue to the tail of the list.
pub fn spill(ctx: &Context, st: &mut State) {
    if st.queue.is_empty() {
        return;
    }
    if writes_paused() && st.settings.fallback_size >= 0 {
        // CLIENT PAUSE or failover: hold in memory, within the bounds
        // (the callback drops beyond the hard limit, see `notify`).
        return;
    }
    for records in st.queue.take_all() {
        store(ctx, st, records, Store::Tail);
    }
}

fn send(st: &mut State, records: Records, from_list: bool) {
    let id = st.next_batch;
    st.next_batch += 1;
    let count = records.len();
    let records = Arc::new(records);
    let batch = Batch {
        id,
        generation: st.generation,
        records: Arc::clone(&records),
    };
    st.inflight_events += count;
    st.stats.published += count as u64;
    st.inflight.push_back(InFlight {
        id,
        from_list,
        epoch: st.backlog.epoch,
        count,
        records: (!from_list).then_some(records),
        stored: false,
        settled: None,
    });
    client(st).send(Request::Publish(batch));
}

/// True while events arrive faster than `burst-rate` and the queue still has
/// room: forwarding then waits, so that the AMQP threads and the broker do not
/// take CPU from Redis in the middle of a burst.
fn in_burst(st: &mut State, now: Instant) -> bool {
    let (at, accepted) = st.rate_mark;
    let elapsed = now.duration_since(at);
    if elapsed < Duration::from_millis(1) {
        return false;
    }
    let rate = (st.stats.accepted - accepted) as f64 / elapsed.as_secs_f64();
    st.rate_mark = (now, st.stats.accepted);
    let limit = BURST_RATE.get();
    let room = st.queue.len() < QUEUE_MAX_EVENTS.get_usize() / 2
        && st.queue.bytes() < QUEUE_MAX_BYTES.get_usize() / 2;
    limit > 0 && rate > limit as f64 && room
}

/// One flush.
pub fn tick(ctx: &Context, st: &mut State) {
    st.ticks += 1;
    let now = Instant::now();
    if let Err(e) = crate::fallback::select(ctx) {
        st.set_error(e);
        return;
    }
    restart_dead_client(st);
    collect(st);
    settle(ctx, st);
    st.chunk = BATCH_SIZE.get_usize().max(1);
    if !st.master {
        send_from_memory_when_demoted(st);
        return;
    }
    if st.loading {
        return;
    }
    if now.duration_since(st.hook_checked_at) >= HOOK_CHECK {
        st.hook_checked_at = now;
        crate::lifecycle::sync_shutdown_hook(ctx);
    }
    crate::cluster::refresh(ctx, st, false);
    if !writes_paused() {
        if let Some(records) = crate::cluster::adopt(ctx, st) {
            store(ctx, st, records, Store::Tail);
        }
    }
    let every = if st.backlog.len > 0 {
        SYNC_BUSY
    } else {
        SYNC_IDLE
    };
    let sync_due = st
        .backlog
        .synced_at
        .is_none_or(|t| now.duration_since(t) >= every);
    if !st.backlog.key.is_empty() && sync_due {
        st.backlog.synced_at = Some(now);
        match st.backlog.sync_len(ctx) {
            Ok(lost) => count_lost(st, lost),
            Err(e) => st.set_error(format!("fallback read: {e}")),
        }
    }
    let has_work = !st.queue.is_empty() || st.backlog.len > 0;
    if st.link == Link::Idle && has_work {
        request_connect(st);
    }
    let burst = in_burst(st, now);
    if st.link == Link::Up && !st.halted && !burst {
        let window = INFLIGHT_MAX.get_usize();
        let batch = BATCH_SIZE.get_usize().max(1);
        // While the list holds anything, or list records are in flight, the
        // list goes first and newer events queue behind it there: a queue
        // chunk never overtakes records that spilled before it.
        let list_mode = st.backlog.len > 0 || st.inflight.iter().any(|b| b.from_list);
        if list_mode {
            // The backlog goes first; newer events queue behind it in the list.
            spill(ctx, st);
            // Confirmed records not yet trimmed (writes paused) count against
            // the window: a failover then resends at most one window.
            while st.inflight_events + st.backlog.acked < window
                && ((st.backlog.acked + st.backlog.head_inflight) as u64) < st.backlog.len
            {
                let n = batch.min(window - st.inflight_events - st.backlog.acked);
                match st.backlog.read(ctx, n) {
                    Ok(records) if !records.is_empty() => send(st, records, true),
                    Ok(_) => break,
                    Err(e) => {
                        st.set_error(format!("fallback read: {e}"));
                        break;
                    }
                }
            }
        } else {
            while st.inflight_events < window {
                let Some(records) = st.queue.take_chunk() else {
                    break;
                };
                send(st, records, false);
            }
        }
    }
    match st.link {
        Link::Up | Link::Connecting | Link::Idle => {
            if st
                .queue
                .over(QUEUE_MAX_EVENTS.get_usize(), QUEUE_MAX_BYTES.get_usize())
            {
                spill(ctx, st);
            }
        }
        Link::Down | Link::Closed | Link::Blocked => spill(ctx, st),
    }
}

/// A demoted node cannot write the list, but the events it accepted as a
/// master live only in its memory (its replicated list now belongs to the
/// new master, which forwards it). So it goes on sending them, in order:
/// failed records first, then the queue. Once nothing is left it closes the
/// connection. If the link is lost or closed before that, what is left is
/// dropped and counted (`events_dropped_unwritable`): there is nowhere to
/// keep it.
fn send_from_memory_when_demoted(st: &mut State) {
    let held = !st.queue.is_empty() || !st.returns.is_empty();
    if held && matches!(st.link, Link::Down | Link::Closed) {
        let n = st.queue.take_all().iter().map(Records::len).sum::<usize>() + st.returns.len();
        st.returns = Records::default();
        st.stats.drop(Drop::Unwritable, n as u64);
    }
    let held = !st.queue.is_empty() || !st.returns.is_empty();
    if held && st.link == Link::Idle {
        request_connect(st);
    }
    if st.link == Link::Up && st.halted && st.inflight.is_empty() {
        st.halted = false;
        let returns = std::mem::take(&mut st.returns);
        if !returns.is_empty() {
            send(st, returns, false);
        }
    }
    if st.link == Link::Up && !st.halted {
        let window = INFLIGHT_MAX.get_usize();
        while st.inflight_events < window {
            let Some(records) = st.queue.take_chunk() else {
                break;
            };
            send(st, records, false);
        }
    }
    if !held
        && st.inflight.is_empty()
        && matches!(
            st.link,
            Link::Up | Link::Down | Link::Connecting | Link::Blocked
        )
    {
        request_disconnect(st);
        st.link = Link::Idle;
    }
}

/// Writes everything held only in memory to the list (before SHUTDOWN).
pub fn persist_memory(ctx: &Context, st: &mut State) {
    if !st.master || st.loading || writes_paused() {
        return;
    }
    if let Err(e) = crate::fallback::select(ctx) {
        st.set_error(e);
        return;
    }
    collect(st);
    settle(ctx, st);
    let mut older = std::mem::take(&mut st.returns);
    for b in st.inflight.iter_mut().filter(|b| !b.from_list && !b.stored) {
        b.stored = true;
        if let Some(records) = &b.records {
            older.extend(records.iter());
        }
    }
    store(ctx, st, older, Store::Head);
    for records in st.queue.take_all() {
        store(ctx, st, records, Store::Tail);
    }
}
