//! Role changes, slot ownership, and the adoption of fallback lists that
//! moved into this node's slots. It calls nothing above it: the role-change
//! handler (in `lifecycle`) arms the timer, and the timer runs [`refresh`]
//! and [`adopt`].

use crate::engine::{Storage, Todo};
use crate::host::list::{read_opts, write_opts, writes_paused, RedisList};
use crate::host::state;
use crate::queue::Records;
use crate::slots;
use redis_module::{CallReply, CallResult, Context};

/// Applies a role change; true when the role changed (the caller then
/// arms the timer).
pub fn set_role(ctx: &Context, st: &mut state::State, master: bool) -> bool {
    if st.engine.is_master() == master {
        return false;
    }
    let selected = crate::host::list::select(ctx).is_ok();
    if !master && selected {
        let mut list = crate::host::list::RedisList::new(ctx, &mut st.list_key);
        st.engine.before_demotion(&mut list);
    }
    st.engine.set_role(master);
    if master && selected {
        let mut list = crate::host::list::RedisList::new(ctx, &mut st.list_key);
        st.engine.after_promotion(&mut list);
    }
    crate::host::log::notice(if master {
        "key_evt_amqp: this node is now a master: forwarding (fallback list first)"
    } else {
        "key_evt_amqp: this node is now a replica: no new events; sending what it holds in memory"
    });
    if master {
        // Look at the slots (and the lists in them) again on the next tick.
        st.slots.owned.clear();
        st.slots.next_check = None;
        // A migration under way on the old master ended with it.
        crate::host::moves::forget(st);
    }
    true
}

/// How often slot ownership is re-read.
const SLOT_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Records moved from a found fallback list into ours per tick.
const ADOPT_CHUNK: usize = 10_000;

/// Whether a fallback list (or anything) exists under `key`, read through
/// the key API, which no cluster state refuses (an `EXISTS` in a slot
/// being migrated answers ASK); `None` when the API is missing.
fn exists(ctx: &Context, key: &str) -> Option<bool> {
    match crate::host::rawkey::local_list_len(ctx, key.as_bytes()) {
        Some(n) => Some(n > 0),
        // A value of another type: something is there.
        None => Some(true),
    }
}

/// How soon slot ownership is read again after a look that failed.
const SLOT_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Cluster masters: re-reads slot ownership, picks the fallback key in an owned
/// slot, and lists the fallback lists (of any node) that sit in owned slots.
pub fn refresh(ctx: &Context, st: &mut state::State, force: bool) {
    if !st.cluster || !st.engine.is_master() {
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
    let Some(nodes) = crate::host::moves::nodes_text(ctx) else {
        return;
    };
    crate::host::moves::read_view(st, &nodes);
    let owned = slots::owned_slots(&nodes);
    let base = st.list_key.key_prefix.clone();
    if owned != st.slots.owned {
        let mut found = Vec::new();
        for &slot in &owned {
            let key = slots::fallback_key(&base, &st.slots.tags, slot);
            match exists(ctx, &key) {
                Some(true) => found.push(key),
                Some(false) => {}
                // The server could not answer (the cluster is down for a
                // moment): look again soon, or a moved list is never found.
                None => {
                    st.slots.next_check = Some(now + SLOT_RETRY);
                    return;
                }
            }
        }
        st.slots.owned = owned;
        st.slots.found = found;
    }
    // The key stays while its slot is ours: a node that gains a lower slot
    // keeps its list (switching would send new records ahead of the old
    // ones). Otherwise the key of the lowest owned slot, which a replica
    // promoted in this node's place picks too.
    let current_owned = !st.list_key.key.is_empty()
        && st
            .slots
            .owned
            .contains(&slots::key_slot(st.list_key.key.as_bytes()));
    let wanted = match st.slots.owned.first() {
        _ if current_owned => st.list_key.key.clone(),
        Some(&slot) => slots::fallback_key(&base, &st.slots.tags, slot),
        None => String::new(),
    };
    // The slot of our key moved away (resharding): the list went with it and
    // is the new owner's to send, records read from it included. Switch at
    // once; confirms of records read from the old key then trim nothing, and
    // those records count as resent (the new owner sends them again).
    let current = &st.list_key.key;
    let lost_slot = !current.is_empty()
        && !st
            .slots
            .owned
            .contains(&slots::key_slot(current.as_bytes()));
    // Otherwise switch keys only while no record read from the list is in flight.
    let idle = !st.engine.list_in_flight() && st.engine.list().acked == 0;
    if wanted != st.list_key.key && (lost_slot || idle) {
        if lost_slot {
            crate::host::log::notice(&format!(
                "key_evt_amqp: the slot of the fallback list '{}' moved to another node, which sends its records",
                st.list_key.key
            ));
        }
        crate::host::log::notice(&format!("key_evt_amqp: fallback list is now '{wanted}'"));
        st.list_key.key = wanted;
        st.engine.list_key_changed(lost_slot);
    }
    let own = st.list_key.key.clone();
    st.slots.found.retain(|k| *k != own);
}

/// Does what the engine asked after list writes (a tick, or the outbox
/// job): logs its lines, and looks at slot ownership again when a write
/// failed. A write refused with `ASK` or `MOVED` (the list's slot is being
/// migrated away) left its records at the head of the queue: the refresh
/// picks a key in a slot this node owns, and with `spill_now` (the outbox
/// job, whose records must be in the list when its unit ends) they are
/// written there at once; the timer writes them at its next tick.
pub fn after_list_writes(ctx: &Context, st: &mut state::State, todo: Todo, spill_now: bool) {
    crate::host::log::notices(todo.notices);
    if !todo.refresh_slots && !todo.misplaced {
        return;
    }
    let before = st.list_key.key.clone();
    refresh(ctx, st, true);
    if todo.misplaced && spill_now && st.list_key.key != before {
        let mut store = RedisList::new(ctx, &mut st.list_key)
            .without_oom_check()
            .in_unit();
        st.engine.spill(&mut store);
        crate::host::log::notices(st.engine.take_notices());
    }
}

/// Before a write or a tick: if our list vanished while the engine knows
/// records in it, its slot is likely being migrated (`MIGRATE` moved the
/// list to the importing node while this node still serves the slot's other
/// keys). Slot ownership is read at once, so that the node switches to a key
/// in a slot it keeps before it writes: an `RPUSH` now would create a new
/// list in the migrating slot, left behind on this node when the slot is
/// handed over. The moved records are the new owner's to send, not lost. A
/// list that vanished otherwise (a `DEL`) is counted as lost, as before.
pub fn check_list_moved(ctx: &Context, st: &mut state::State) {
    if !st.cluster || !st.engine.is_master() || st.list_key.key.is_empty() {
        return;
    }
    let list = st.engine.list();
    let known = list.len > 0 || st.engine.list_in_flight() || list.acked > 0;
    if !known || list.unknown {
        return;
    }
    if crate::host::rawkey::local_list_len(ctx, st.list_key.key.as_bytes()) == Some(0) {
        refresh(ctx, st, true);
    }
}

/// Moves a chunk of the first found fallback list to the tail of ours; the
/// records are then drained like our own. The chunk is read (`LRANGE`),
/// pushed to ours without the OOM check and whatever the fallback size (the
/// records were stored already: moving is not storing anew), and trimmed
/// from the found list only after the push succeeded, all in one timer tick,
/// so that the AOF and the replicas get both. Never while writes are paused.
/// While a list is being adopted, this node's own new records wait in memory
/// ([`Engine::start_adoption`](crate::engine::Engine::start_adoption)), so the adopted
/// records stay contiguous and ahead of them.
pub fn adopt(ctx: &Context, st: &mut state::State) {
    let Some(key) = st.slots.found.first().cloned() else {
        st.engine.end_adoption();
        return;
    };
    if st.list_key.key.is_empty() || writes_paused() {
        return;
    }
    st.engine.start_adoption();
    let last = (ADOPT_CHUNK - 1).to_string();
    let records = match ctx.call_ext::<_, CallResult>(
        "LRANGE",
        &read_opts(),
        &[key.as_str(), "0", last.as_str()],
    ) {
        Ok(CallReply::Array(items)) => {
            let mut records = Records::default();
            for item in items.iter() {
                let Ok(CallReply::String(s)) = item else {
                    // The trim below removes as many items as were pushed:
                    // an item that cannot be copied must not be trimmed.
                    adopt_failed(st, &key, "LRANGE: an element that is not a string");
                    return;
                };
                records.push_with(|d| d.extend_from_slice(s.as_bytes()));
            }
            records
        }
        other => {
            let e = match other {
                Err(e) => e.to_utf8_string().unwrap_or_default(),
                Ok(_) => "unexpected reply".to_string(),
            };
            adopt_failed(st, &key, &format!("LRANGE: {e}"));
            return;
        }
    };
    let n = records.len();
    if n == 0 {
        adopt_done(st, &key);
        return;
    }
    let pushed = RedisList::new(ctx, &mut st.list_key)
        .without_oom_check()
        .append(&records);
    match pushed {
        Ok(len) => st.engine.adopted(n as u64, len),
        Err(e) => {
            // Nothing trimmed: tried again next tick (a push that failed
            // part-way leaves a copy of some records: sent twice at worst).
            st.engine
                .set_error(format!("adopting the fallback list '{key}': {e}"));
            return;
        }
    }
    let from = n.to_string();
    let trimmed =
        ctx.call_ext::<_, CallResult>("LTRIM", &write_opts(), &[key.as_str(), from.as_str(), "-1"]);
    if let Err(e) = trimmed {
        // The records are in both lists: they are sent (twice at worst), and
        // the found list is left alone rather than copied again.
        let e = e.to_utf8_string().unwrap_or_default();
        adopt_failed(st, &key, &format!("LTRIM: {e}"));
        return;
    }
    if n < ADOPT_CHUNK {
        adopt_done(st, &key);
    }
}

fn adopt_done(st: &mut state::State, key: &str) {
    st.slots.found.retain(|k| k != key);
    if st.slots.found.is_empty() {
        st.engine.end_adoption();
    }
    crate::host::log::notice(&format!("key_evt_amqp: adopted the fallback list '{key}'"));
}

fn adopt_failed(st: &mut state::State, key: &str, e: &str) {
    st.slots.found.retain(|k| k != key);
    if st.slots.found.is_empty() {
        st.engine.end_adoption();
    }
    st.engine
        .set_error(format!("adopting the fallback list '{key}': {e}"));
    crate::host::log::warning(&format!(
        "key_evt_amqp: cannot adopt the fallback list '{key}': {e}"
    ));
}
