//! Durable mode (`key_evt_amqp.durability outbox`). The keyspace callback
//! cannot write, so the engine encodes each accepted event into its outbox
//! ([`Intake::outbox`](crate::engine::Intake::outbox)) and the callback arms
//! one post-notification job per execution unit. Redis runs the job at
//! the end of that unit (after the command, the whole MULTI/EXEC, the script,
//! or the expiry or eviction), and the job appends the unit's records to the
//! fallback list in one push through the key API (`RedisModule_ListPush` on
//! the open key, and one `RedisModule_Replicate` of the `RPUSH`). Writes
//! made there are propagated with the command that caused them, inside its MULTI/EXEC: the AOF and the replicas
//! get the write and its events together, or neither. The timer then
//! forwards from the list and trims after confirms, as for any list record.

use crate::host::list::{self, RedisList};
use crate::host::state::State;
use redis_module::{raw, Context, Status};

/// The server has post-notification jobs (Redis 7.2+, Valkey 7.2+).
pub fn supported() -> bool {
    // SAFETY: reads a function pointer the server filled in at load.
    unsafe { raw::RedisModule_AddPostNotificationJob }.is_some()
}

/// Asks the server to run `job` at the end of the current execution unit;
/// false when it refuses.
pub fn add_job(ctx: &Context, job: fn(&Context)) -> bool {
    ctx.add_post_notification_job(job) == Ok(Status::Ok)
}

/// Appends what the outbox holds to the list (the job; the timer too, as a
/// safety net should a job not have run). True when records were appended:
/// the caller brings the timer forward to send them.
pub fn flush(ctx: &Context, st: &mut State) -> bool {
    if !st.engine.outbox_waiting() {
        // Nothing for the list (the records went to the queue already).
        st.engine.outbox_to_queue();
        return false;
    }
    if let Err(e) = list::select(ctx) {
        st.set_error(e);
        st.engine.outbox_to_queue();
        return false;
    }
    // A list moved away with its slot: switch keys before writing.
    crate::host::cluster::check_list_moved(ctx, st);
    // The write that caused these events was accepted: its events must be
    // kept even over maxmemory, like the write itself.
    let mut store = RedisList::new(ctx, &mut st.list_key)
        .without_oom_check()
        .in_unit();
    let todo = st.engine.flush_outbox(&mut store);
    crate::host::cluster::after_list_writes(ctx, st, todo, true);
    true
}
