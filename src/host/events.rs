//! Server events the crate has no handler for, subscribed through the raw
//! API: whole-database changes (`FlushDB`, `SwapDB`), which fire no
//! keyspace event, and asynchronous replica loading (`ReplAsyncLoad`).
//!
//! `FLUSHDB`, `FLUSHALL` and `SWAPDB` are forwarded as events of their own
//! (see [`DbEvent`]) while class `g` is subscribed, whatever the key masks.
//! A flush or swap of the fallback list's database takes the list with it:
//! its records are counted as lost.

use crate::engine::{DbEvent, Origin};
use crate::event::flags;
use crate::host::state::{self, State};
use crate::host::{guard, notify};
use redis_module::{raw, Context};
use std::os::raw::c_void;

/// Subscribes to the events (at load).
pub fn subscribe(ctx: &Context) {
    for (id, callback) in [
        (
            raw::REDISMODULE_EVENT_FLUSHDB,
            on_flush as unsafe extern "C" fn(_, _, _, _),
        ),
        (raw::REDISMODULE_EVENT_SWAPDB, on_swap),
        (raw::REDISMODULE_EVENT_REPL_ASYNC_LOAD, on_async_load),
    ] {
        // SAFETY: OnLoad, valid context; the crate has no wrapper for these.
        unsafe {
            if let Some(sub) = raw::RedisModule_SubscribeToServerEvent {
                sub(
                    ctx.ctx,
                    raw::RedisModuleEvent { id, dataver: 1 },
                    Some(callback),
                );
            }
        }
    }
}

/// Where a whole-database event is encoded: like a keyspace event of the
/// same execution unit (the outbox in durable mode).
struct Here {
    outbox: bool,
}

impl Origin for Here {
    fn db(&self) -> i32 {
        0
    }

    fn now_secs(&self) -> u64 {
        crate::event::now_secs()
    }

    fn outbox(&self) -> bool {
        self.outbox
    }
}

/// Hands a whole-database event to the engine and acts on the answer.
fn forward(ctx: &Context, st: &mut State, ev: DbEvent) {
    if st.types.0 & flags::GENERIC == 0 {
        return;
    }
    let origin = Here {
        outbox: st.outbox_usable(),
    };
    let accepted = st.engine.db_event(ev, &origin);
    notify::act(ctx, st, accepted);
}

/// The database that holds the fallback list.
fn fallback_db() -> i32 {
    i32::try_from(crate::config::FALLBACK_DB.get()).unwrap_or(0)
}

unsafe extern "C" fn on_flush(
    ctx: *mut raw::RedisModuleCtx,
    _eid: raw::RedisModuleEvent,
    subevent: u64,
    data: *mut c_void,
) {
    guard::run("flush event", || {
        if subevent != raw::REDISMODULE_SUBEVENT_FLUSHDB_START || data.is_null() {
            return;
        }
        // SAFETY: for this event the server passes a `RedisModuleFlushInfoV1`.
        let db = unsafe { (*data.cast::<raw::RedisModuleFlushInfo>()).dbnum };
        let ctx = Context::new(ctx);
        state::with(|st| {
            forward(&ctx, st, DbEvent::Flush { db });
            if db == -1 || db == fallback_db() {
                st.engine.list_flushed();
            }
        });
    });
}

unsafe extern "C" fn on_swap(
    ctx: *mut raw::RedisModuleCtx,
    _eid: raw::RedisModuleEvent,
    _subevent: u64,
    data: *mut c_void,
) {
    guard::run("swapdb event", || {
        if data.is_null() {
            return;
        }
        // SAFETY: for this event the server passes a `RedisModuleSwapDbInfo`.
        let (first, second) = unsafe {
            let info = &*data.cast::<raw::RedisModuleSwapDbInfo>();
            (info.dbnum_first, info.dbnum_second)
        };
        let ctx = Context::new(ctx);
        state::with(|st| {
            forward(&ctx, st, DbEvent::Swap { first, second });
            crate::host::snapshot::swapped(st, first, second);
            let list_db = fallback_db();
            if first != second && (first == list_db || second == list_db) {
                // The list went to the other database; whatever was under
                // its key there is read as the list from now on.
                st.engine.list_swapped();
            }
        });
    });
}

unsafe extern "C" fn on_async_load(
    _ctx: *mut raw::RedisModuleCtx,
    _eid: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    guard::run("async load event", || {
        let what = match subevent {
            raw::REDISMODULE_SUBEVENT_REPL_ASYNC_LOAD_STARTED => {
                "key_evt_amqp: replica loading the master's data in the background (async \
                 loading): the old data set is served meanwhile; nothing is forwarded on a replica"
            }
            raw::REDISMODULE_SUBEVENT_REPL_ASYNC_LOAD_COMPLETED => {
                "key_evt_amqp: async loading completed: the loaded data set replaced the old one \
                 (the fallback list is read anew)"
            }
            _ => "key_evt_amqp: async loading aborted: the old data set stays",
        };
        crate::host::log::notice(what);
        state::with(|st| st.engine.list_forget());
    });
}
