//! The keyspace-notification callback: filter, encode, enqueue. No I/O.

use crate::config::QUEUE_MAX_BYTES;
use crate::event;
use crate::host::info::Drop;
use crate::host::{guard, outbox, state, timer};
use redis_module::{raw, Context, RedisString};
use std::ffi::CStr;
use std::os::raw::{c_char, c_int};

/// Subscribes to the chosen event classes.
pub fn subscribe(ctx: &Context, types: i32) -> bool {
    // SAFETY: called from OnLoad with a valid context.
    unsafe {
        raw::RedisModule_SubscribeToKeyspaceEvents
            .map(|f| f(ctx.ctx, types, Some(on_keyspace_event)))
            == Some(raw::Status::Ok as c_int)
    }
}

/// True for the fallback list of any node (`<prefix>` or `<prefix>{tag}`).
#[inline]
fn is_fallback_key(key: &[u8], prefix: &[u8]) -> bool {
    // Comparing the first byte first keeps a library call off the common path.
    key.first() == prefix.first() && key.starts_with(prefix)
}

/// The queue's hard limit in bytes, checked at enqueue: twice
/// `queue-max-bytes`, and never under [`HARD_FLOOR_BYTES`], so that the
/// events of one timer tick always fit.
#[inline]
pub fn hard_limit_bytes() -> usize {
    QUEUE_MAX_BYTES
        .get_usize()
        .saturating_mul(2)
        .max(HARD_FLOOR_BYTES)
}

/// The smallest hard limit of the queue.
pub const HARD_FLOOR_BYTES: usize = 64 << 20;

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
        let key = RedisString::string_as_slice(key);
        state::with(|st| {
            if !st.engine.master || st.engine.loading {
                st.engine.stats.skipped += 1;
                return;
            }
            st.engine.stats.seen += 1;
            if is_fallback_key(key, st.list_key.key_prefix.as_bytes()) {
                // Never forward the module's own list (a loop).
                st.engine.stats.skipped += 1;
                return;
            }
            if !st.engine.settings.masks.matches(key) {
                return;
            }
            st.engine.stats.accepted += 1;
            // The timer spills the queue past its bounds; between two ticks
            // its bytes may grow to the hard limit. Beyond it (one script or
            // MULTI writing a flood, or writes paused) the module cannot
            // write: the event is dropped and counted.
            if st.engine.queue.bytes() > hard_limit_bytes() {
                st.engine.stats.drop(Drop::Overflow, 1);
                return;
            }
            // SAFETY: valid context from Redis.
            let db = unsafe { raw::RedisModule_GetSelectedDb.map_or(0, |f| f(ctx)) };
            let now = event::now_secs();
            if outbox::wanted(st) {
                let encoder = &mut st.encoder;
                st.outbox
                    .push_with(|out| encoder.record_into(out, now, db, event, key));
                outbox::arm(&Context::new(ctx), st);
                return;
            }
            if !st.outbox.is_empty() {
                // Durable mode was switched off inside this execution unit:
                // its earlier events go first.
                let earlier = std::mem::take(&mut st.outbox);
                st.engine.queue.push_records(earlier);
            }
            let was_empty = st.engine.queue.is_empty();
            let encoder = &mut st.encoder;
            st.engine.queue.push_with(st.chunk, |out| {
                encoder.record_into(out, now, db, event, key)
            });
            if was_empty {
                timer::hurry(&Context::new(ctx), st);
            }
        });
    });
    0
}
