//! Durable mode (`key_evt_amqp.durability outbox`). The keyspace callback
//! cannot write, so it encodes each accepted event into [`State::outbox`] and
//! arms one post-notification job per execution unit. Redis runs the job at
//! the end of that unit (after the command, the whole MULTI/EXEC, the script,
//! or the expiry or eviction), and the job appends the unit's records to the
//! fallback list in one `RPUSH`. Writes made there are propagated with the
//! command that caused them, inside its MULTI/EXEC: the AOF and the replicas
//! get the write and its events together, or neither. The timer then
//! forwards from the list and trims after confirms, as for any list record.

use crate::config::OUTBOX;
use crate::host::list::{self, RedisList};
use crate::host::state::{self, State};
use crate::host::{guard, timer};
use redis_module::{raw, Context, Status};
use std::sync::atomic::Ordering;

/// The server has post-notification jobs (Redis 7.2+, Valkey 7.2+).
pub fn supported() -> bool {
    // SAFETY: reads a function pointer the server filled in at load.
    unsafe { raw::RedisModule_AddPostNotificationJob }.is_some()
}

/// True when accepted events go through the outbox: `durability outbox`, a
/// fallback list to write, and a server that runs the jobs.
#[inline]
pub fn wanted(st: &State) -> bool {
    OUTBOX.load(Ordering::Relaxed)
        && st.engine.settings.fallback_size >= 0
        && !st.list_key.key.is_empty()
        && supported()
}

/// Arms the job of the current execution unit, after the callback put an
/// event's record in [`State::outbox`]. If the server refuses the job, the
/// records wait in memory instead.
#[inline]
pub fn arm(ctx: &Context, st: &mut State) {
    if st.outbox_armed {
        return;
    }
    let armed = ctx.add_post_notification_job(|ctx| {
        guard::run("outbox job", || {
            state::with(|st| flush(ctx, st));
        });
    });
    if armed == Ok(Status::Ok) {
        st.outbox_armed = true;
    } else {
        let records = std::mem::take(&mut st.outbox);
        st.engine.queue.push_records(records);
        timer::hurry(ctx, st);
    }
}

/// Appends what the outbox holds to the list (the job; the timer too, as a
/// safety net should a job not have run).
pub fn flush(ctx: &Context, st: &mut State) {
    st.outbox_armed = false;
    if st.outbox.is_empty() {
        return;
    }
    let records = std::mem::take(&mut st.outbox);
    if let Err(e) = list::select(ctx) {
        st.set_error(e);
        st.engine.queue.push_records(records);
        return;
    }
    // A list moved away with its slot: switch keys before writing.
    crate::host::cluster::check_list_moved(ctx, st);
    // The write that caused these events was accepted: its events must be
    // kept even over maxmemory, like the write itself.
    let mut store = RedisList::new(ctx, &mut st.list_key).without_oom_check();
    st.engine.append_outbox(&mut store, records);
    timer::log_notices(st);
    timer::hurry(ctx, st);
}
