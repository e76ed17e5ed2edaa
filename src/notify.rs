//! The keyspace-notification callback: filter, encode, enqueue. No I/O.

use crate::config::{QUEUE_MAX_BYTES, QUEUE_MAX_EVENTS};
use crate::info::Drop;
use crate::{event, flush, guard, state};
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
fn is_backlog_key(key: &[u8], prefix: &[u8]) -> bool {
    // Comparing the first byte first keeps a library call off the common path.
    key.first() == prefix.first() && key.starts_with(prefix)
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
        let key = RedisString::string_as_slice(key);
        state::with(|st| {
            if !st.master || st.loading {
                st.stats.skipped += 1;
                return;
            }
            st.stats.seen += 1;
            if is_backlog_key(key, st.backlog.key_prefix.as_bytes())
                || !st.settings.masks.matches(key)
            {
                return;
            }
            st.stats.accepted += 1;
            // The timer spills the queue past its bound; between two ticks it
            // may grow to twice the bound. Beyond that (one script or MULTI
            // writing a flood, or writes paused) the module cannot write:
            // the event is dropped and counted.
            if st.queue.over(
                QUEUE_MAX_EVENTS.get_usize().saturating_mul(2),
                QUEUE_MAX_BYTES.get_usize().saturating_mul(2),
            ) {
                st.stats.drop(Drop::Overflow, 1);
                return;
            }
            // SAFETY: valid context from Redis.
            let db = unsafe { raw::RedisModule_GetSelectedDb.map_or(0, |f| f(ctx)) };
            let now = event::now_secs();
            let was_empty = st.queue.is_empty();
            let encoder = &mut st.encoder;
            st.queue.push_with(st.chunk, |out| {
                encoder.record_into(out, now, db, event, key)
            });
            if was_empty {
                flush::hurry(&Context::new(ctx), st);
            }
        });
    });
    0
}
