//! The keyspace-notification callback: translates the FFI arguments, lets
//! [`Engine::accept`](crate::engine::Engine::accept) decide, and acts on the
//! answer (brings the timer forward, arms the outbox job). No I/O.

use crate::config::OUTBOX;
use crate::engine::{Accepted, Origin};
use crate::event;
use crate::host::state::{self, State};
use crate::host::{deferred, guard, outbox, timer, values};
use crate::json::Values;
use redis_module::{raw, Context, RedisString};
use std::ffi::CStr;
use std::os::raw::{c_char, c_int};
use std::sync::atomic::Ordering;

/// Subscribes to the chosen event classes.
pub fn subscribe(ctx: &Context, types: i32) -> bool {
    // SAFETY: called from OnLoad with a valid context.
    unsafe {
        raw::RedisModule_SubscribeToKeyspaceEvents
            .map(|f| f(ctx.ctx, types, Some(on_keyspace_event)))
            == Some(raw::Status::Ok as c_int)
    }
}

/// The notification's server side, read only when the engine keeps the event.
struct Notification {
    ctx: *mut raw::RedisModuleCtx,
    /// The key string Redis passed (to open the key for its value).
    key: *mut raw::RedisModuleString,
    /// The fallback key is known (in cluster mode, after the first tick).
    list_key: bool,
}

impl Origin for Notification {
    #[inline]
    fn db(&self) -> i32 {
        // SAFETY: the valid context Redis passed to the callback.
        unsafe { raw::RedisModule_GetSelectedDb.map_or(0, |f| f(self.ctx)) }
    }

    #[inline]
    fn now_secs(&self) -> u64 {
        event::now_secs()
    }

    #[inline]
    fn outbox(&self) -> bool {
        OUTBOX.load(Ordering::Relaxed) && self.list_key && outbox::supported()
    }

    fn values(&self, db: i32, event: &[u8], key: &[u8], v: Values, cap: usize, out: &mut Vec<u8>) {
        // SAFETY: the callback's live context and key string.
        unsafe { values::images(self.ctx, self.key, db, event, key, v, cap, out) };
    }
}

extern "C" fn on_keyspace_event(
    ctx: *mut raw::RedisModuleCtx,
    _class: c_int,
    event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    guard::run("keyspace notification", || {
        if event.is_null() || key.is_null() {
            return;
        }
        // SAFETY: Redis passes a NUL-terminated event name and a live key string.
        let event = unsafe { CStr::from_ptr(event) }.to_bytes();
        let keyobj = key;
        let key = RedisString::string_as_slice(keyobj);
        let handled = state::with(|st| {
            let ctx = Context::new(ctx);
            drain_deferred(&ctx, st);
            if st.cluster
                && st.engine.is_master()
                && crate::host::moves::is_move(&ctx, st, event, key)
            {
                st.engine.count_moved();
                return;
            }
            let origin = Notification {
                ctx: ctx.ctx,
                key: keyobj,
                list_key: !st.list_key.key.is_empty(),
            };
            let accepted = st.engine.accept(event, key, &origin);
            act(&ctx, st, accepted);
        });
        if handled.is_none() && state::busy() {
            deferred::defer(&Context::new(ctx), event, key);
        }
    });
    0
}

/// Accepts the events deferred while the state was in use (see
/// [`deferred`]) and acts on each.
pub fn drain_deferred(ctx: &Context, st: &mut State) {
    for accepted in deferred::drain(ctx, st) {
        act(ctx, st, accepted);
    }
}

/// Acts on what the engine made of an event: brings the timer forward
/// after the first record in an empty queue, arms the unit's outbox job.
#[inline]
pub fn act(ctx: &Context, st: &mut State, accepted: Accepted) {
    match accepted {
        Accepted::Queued { was_empty: true } => timer::hurry(ctx, st),
        Accepted::Outbox { arm: true } => arm_outbox(ctx, st),
        _ => {}
    }
}

/// Arms the job of the current execution unit, after the engine put an
/// event's record in its outbox. If the server refuses the job, the records
/// wait in memory instead.
fn arm_outbox(ctx: &Context, st: &mut State) {
    if !outbox::add_job(ctx, outbox_job) {
        st.engine.outbox_to_queue();
        timer::hurry(ctx, st);
    }
}

/// The job: the unit's records go to the list, and the timer sends them.
fn outbox_job(ctx: &Context) {
    guard::run("outbox job", || {
        state::with(|st| {
            if outbox::flush(ctx, st) {
                timer::hurry(ctx, st);
            }
        });
    });
}
