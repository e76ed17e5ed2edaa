//! Role tracking and command broadcast over the cluster bus.
//!
//! Cluster messages are keyed by module name and this module's name is not
//! 9 bytes long, so it shares module id 0 with others: every payload starts
//! with a magic header and a version, and uses an unusual type byte.

use crate::bus::MSG_TYPE;
use crate::command::Command;
use crate::host::commands;
use crate::host::list::{read_opts, write_opts};
use crate::host::{guard, state, timer};
use crate::queue::Records;
use crate::slots;
use redis_module::server_events::ServerRole;
use redis_module::{raw, CallReply, CallResult, Context};
use std::os::raw::{c_char, c_uchar};

/// Sends a command to every other node (cluster mode only).
pub fn broadcast(ctx: &Context, cmd: &Command) {
    if !state::with(|st| st.cluster).unwrap_or(false) {
        return;
    }
    let Some(payload) = cmd.encode() else {
        return;
    };
    let Ok(len) = u32::try_from(payload.len()) else {
        return;
    };
    // SAFETY: main thread, valid context; a NULL target means every node.
    unsafe {
        if let Some(send) = raw::RedisModule_SendClusterMessage {
            send(
                ctx.ctx,
                std::ptr::null_mut(),
                MSG_TYPE,
                payload.as_ptr().cast(),
                len,
            );
        }
    }
}

extern "C" fn on_message(
    ctx: *mut raw::RedisModuleCtx,
    sender: *const c_char,
    _type: u8,
    payload: *const c_uchar,
    len: u32,
) {
    guard::run("cluster message", || {
        if payload.is_null() {
            return;
        }
        // SAFETY: Redis passes `len` readable bytes.
        let bytes = unsafe { std::slice::from_raw_parts(payload, len as usize) };
        let Some(cmd) = Command::decode(bytes) else {
            return;
        };
        let ctx = Context::new(ctx);
        // The sender id is 40 bytes, not NUL-terminated.
        let from = if sender.is_null() {
            String::new()
        } else {
            // SAFETY: Redis passes REDISMODULE_NODE_ID_LEN bytes.
            let id = unsafe { std::slice::from_raw_parts(sender.cast::<u8>(), 40) };
            String::from_utf8_lossy(id).into_owned()
        };
        let applied = cmd.map_err(|e| format!("ERR {e}")).and_then(|cmd| {
            crate::host::log::notice(&format!(
                "key_evt_amqp: applying broadcast {cmd} from node {from}"
            ));
            commands::apply(&ctx, &cmd)
        });
        if let Err(e) = applied {
            crate::host::log::warning(&format!(
                "key_evt_amqp: broadcast from node {from} refused: {e}"
            ));
        }
    });
}

/// The server's replication role changed.
#[redis_module_macros::role_changed_event_handler]
fn on_role_changed(ctx: &Context, role: ServerRole) {
    guard::run("role change", || {
        let master = role == ServerRole::Primary;
        state::with(|st| set_role(ctx, st, master));
    });
}

/// Applies a role change.
pub fn set_role(ctx: &Context, st: &mut state::State, master: bool) {
    if st.engine.master == master {
        return;
    }
    st.engine.set_role(master);
    crate::host::log::notice(if master {
        "key_evt_amqp: this node is now a master: forwarding (fallback list first)"
    } else {
        "key_evt_amqp: this node is now a replica: no new events; sending what it holds in memory"
    });
    if master {
        // Look at the slots (and the lists in them) again on the next tick.
        st.slots.owned.clear();
        st.slots.next_check = None;
    }
    timer::arm(ctx, st);
}

/// In cluster mode, receives module broadcasts (the crate has no wrapper).
pub fn register(ctx: &Context, cluster: bool) {
    if !cluster {
        return;
    }
    // SAFETY: OnLoad, valid context; `on_message` lives as long as the library.
    unsafe {
        if let Some(reg) = raw::RedisModule_RegisterClusterMessageReceiver {
            reg(ctx.ctx, MSG_TYPE, Some(on_message));
        }
    }
}

/// Removes the receiver (a clean unload: the server does not remove it).
pub fn unregister(ctx: &Context, cluster: bool) {
    if !cluster {
        return;
    }
    // SAFETY: valid context; a NULL callback unregisters the type.
    unsafe {
        if let Some(reg) = raw::RedisModule_RegisterClusterMessageReceiver {
            reg(ctx.ctx, MSG_TYPE, None);
        }
    }
}

/// What this node knows of its slots (cluster mode only).
#[derive(Debug, Default)]
pub struct SlotView {
    /// Canonical hash tag of every slot (empty outside cluster mode).
    pub tags: Vec<u32>,
    /// Slots this node owns, sorted.
    pub owned: Vec<u16>,
    /// Fallback keys of this module found in owned slots, other than our own.
    pub found: Vec<String>,
    /// When to look at `CLUSTER NODES` again.
    pub next_check: Option<std::time::Instant>,
}

/// How often slot ownership is re-read.
const SLOT_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Records moved from a found fallback list into ours per tick.
const ADOPT_CHUNK: usize = 1000;

fn call_text(ctx: &Context, cmd: &str, args: &[&str]) -> Option<String> {
    match ctx.call_ext::<_, CallResult>(cmd, &read_opts(), args) {
        Ok(CallReply::String(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Ok(CallReply::VerbatimString(v)) => v
            .as_parts()
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

fn exists(ctx: &Context, key: &str) -> bool {
    matches!(ctx.call_ext::<_, CallResult>("EXISTS", &read_opts(), &[key]), Ok(CallReply::I64(n)) if n.to_i64() > 0)
}

/// Cluster masters: re-reads slot ownership, picks the fallback key in an owned
/// slot, and lists the fallback lists (of any node) that sit in owned slots.
pub fn refresh(ctx: &Context, st: &mut state::State, force: bool) {
    if !st.cluster || !st.engine.master {
        return;
    }
    let now = std::time::Instant::now();
    if !force && st.slots.next_check.is_some_and(|t| now < t) {
        return;
    }
    st.slots.next_check = Some(now + SLOT_CHECK_EVERY);
    if st.slots.tags.is_empty() {
        st.slots.tags = slots::canonical_tags();
    }
    let Some(nodes) = call_text(ctx, "CLUSTER", &["NODES"]) else {
        return;
    };
    let owned = slots::owned_slots(&nodes);
    let base = st.list_key.key_prefix.clone();
    if owned != st.slots.owned {
        st.slots.owned = owned;
        let mut found = Vec::new();
        for &slot in &st.slots.owned {
            let key = slots::fallback_key(&base, &st.slots.tags, slot);
            if exists(ctx, &key) {
                found.push(key);
            }
        }
        st.slots.found = found;
    }
    let wanted = match st.slots.owned.first() {
        Some(&slot) => slots::fallback_key(&base, &st.slots.tags, slot),
        None => String::new(),
    };
    // Switch keys only while no record read from the list is in flight.
    if wanted != st.list_key.key && !st.engine.list_in_flight() && st.engine.list.acked == 0 {
        crate::host::log::notice(&format!("key_evt_amqp: fallback list is now '{wanted}'"));
        st.list_key.key = wanted;
        st.engine.list.forget();
        st.engine.list.len = 0;
    }
    let own = st.list_key.key.clone();
    st.slots.found.retain(|k| *k != own);
}

/// Moves a chunk of the first found fallback list to the tail of ours; the records
/// are then drained like our own. Pop and push run in one timer tick, so they
/// reach the AOF and the replicas together.
pub fn adopt(ctx: &Context, st: &mut state::State) -> Option<Records> {
    let key = st.slots.found.first()?.clone();
    if st.list_key.key.is_empty() {
        return None;
    }
    let count = ADOPT_CHUNK.to_string();
    let mut records = Records::default();
    if let Ok(CallReply::Array(items)) =
        ctx.call_ext::<_, CallResult>("LPOP", &write_opts(), &[key.as_str(), count.as_str()])
    {
        for item in items.iter() {
            if let Ok(CallReply::String(s)) = item {
                records.push_with(|d| d.extend_from_slice(s.as_bytes()));
            }
        }
    }
    if records.len() < ADOPT_CHUNK {
        st.slots.found.remove(0);
        crate::host::log::notice(&format!("key_evt_amqp: adopted the fallback list '{key}'"));
    }
    Some(records)
}
