//! Feeds [`Moves`](crate::moves::Moves) from the server: the atomic slot
//! migration events (Valkey 9's `AtomicSlotMigration`, Redis 8.4's
//! `ClusterSlotMigration`), the `MIGRATE` and `CLUSTER SETSLOT` commands the
//! command filter sees, and the `myself` line of `CLUSTER NODES` for
//! legacy resharding. The keyspace callback asks [`is_move`] before it
//! hands a cluster node's event to the engine.
//!
//! Redis 8.4 cannot be run here (no binary is available): its events are
//! handled from its documented API (`redismodule.h`: event 18, the
//! `RedisModuleClusterSlotMigrationInfo` data), and trimmed keys there fire
//! the module-only `key_trimmed` event, which this module never subscribes
//! to.

use crate::host::guard;
use crate::host::list::read_opts;
use crate::host::state::{self, State};
use redis_module::{raw, CallReply, CallResult, Context};
use std::os::raw::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Valkey 9: `VALKEYMODULE_EVENT_ATOMIC_SLOT_MIGRATION`.
const VALKEY_EVENT: u64 = 19;
/// Redis 8.4: `REDISMODULE_EVENT_CLUSTER_SLOT_MIGRATION`.
const REDIS_EVENT: u64 = raw::REDISMODULE_EVENT_CLUSTER_SLOT_MIGRATION;

/// Valkey's subevents.
mod valkey {
    pub const IMPORT_STARTED: u64 = 0;
    pub const IMPORT_COMPLETED: u64 = 4;
    pub const EXPORT_COMPLETED: u64 = 5;
}

/// `ValkeyModuleSlotRange`.
#[repr(C)]
struct ValkeyRange {
    start: c_int,
    end: c_int,
}

/// `ValkeyModuleAtomicSlotMigrationInfoV1`.
#[repr(C)]
struct ValkeyInfo {
    version: u64,
    job_name: [c_char; 41],
    slot_ranges: *const ValkeyRange,
    num_slot_ranges: u32,
}

/// A `MIGRATE` is running: the keys it named (set by the command filter,
/// cleared by the next command and by the timer).
static MIGRATING_NOW: AtomicBool = AtomicBool::new(false);
static MIGRATE_KEYS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
/// A `CLUSTER SETSLOT` ran since the legacy view was read.
static VIEW_STALE: AtomicBool = AtomicBool::new(true);

/// Which atomic migration event the module follows (INFO
/// `slot_migration_event`).
static FOLLOWED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Subscribes to the atomic migration event of the server, if it has one
/// (at load, cluster mode only).
pub fn subscribe(ctx: &Context, valkey: bool) {
    let id = if valkey { VALKEY_EVENT } else { REDIS_EVENT };
    let ev = raw::RedisModuleEvent { id, dataver: 1 };
    let cb: unsafe extern "C" fn(_, _, _, _) = if valkey { on_valkey } else { on_redis };
    // SAFETY: OnLoad, valid context; plain calls with values.
    let ok = unsafe {
        raw::RedisModule_SubscribeToServerEvent
            .is_some_and(|sub| sub(ctx.ctx, ev, Some(cb)) == raw::Status::Ok as c_int)
    };
    if ok {
        FOLLOWED.store(if valkey { 1 } else { 2 }, Ordering::Relaxed);
    }
}

/// The atomic migration event followed, for INFO.
pub fn followed() -> &'static str {
    match FOLLOWED.load(Ordering::Relaxed) {
        1 => "valkey",
        2 => "redis",
        _ => "none",
    }
}

/// The ranges of Valkey's event data.
///
/// # Safety
/// `data` is null or the `ValkeyModuleAtomicSlotMigrationInfoV1` the server
/// passed with the event, alive for the call.
unsafe fn valkey_ranges(data: *const c_void) -> Vec<(u16, u16)> {
    if data.is_null() {
        return Vec::new();
    }
    let info = &*data.cast::<ValkeyInfo>();
    if info.slot_ranges.is_null() {
        return Vec::new();
    }
    std::slice::from_raw_parts(info.slot_ranges, info.num_slot_ranges as usize)
        .iter()
        .filter_map(|r| Some((u16::try_from(r.start).ok()?, u16::try_from(r.end).ok()?)))
        .collect()
}

/// The ranges of Redis 8.4's event data.
///
/// # Safety
/// `data` is null or the `RedisModuleClusterSlotMigrationInfoV1` the server
/// passed with the event, alive for the call.
unsafe fn redis_ranges(data: *const c_void) -> Vec<(u16, u16)> {
    if data.is_null() {
        return Vec::new();
    }
    let info = &*data.cast::<raw::RedisModuleClusterSlotMigrationInfo>();
    if info.slots.is_null() {
        return Vec::new();
    }
    let n = usize::try_from((*info.slots).num_ranges).unwrap_or(0);
    (*info.slots)
        .ranges
        .as_slice(n)
        .iter()
        .map(|r| (r.start, r.end))
        .collect()
}

/// What an atomic migration event means for this node.
enum Step {
    /// Its keys' events are moves from now on.
    Silence,
    /// This node serves the slots now.
    Unsilence,
    /// Nothing changes (an export starts or fails: the source keeps
    /// serving; a failed import leaves the slots silent while the target
    /// deletes what it imported).
    Nothing,
}

fn apply(step: Step, ranges: &[(u16, u16)]) {
    state::with(|st| match step {
        Step::Silence => st.moves.silence(ranges),
        Step::Unsilence => st.moves.unsilence(ranges),
        Step::Nothing => {}
    });
}

unsafe extern "C" fn on_valkey(
    _ctx: *mut raw::RedisModuleCtx,
    _eid: raw::RedisModuleEvent,
    subevent: u64,
    data: *mut c_void,
) {
    guard::run("slot migration event", || {
        // SAFETY: the data of this event, alive for the call.
        let ranges = unsafe { valkey_ranges(data) };
        let step = match subevent {
            valkey::IMPORT_STARTED | valkey::EXPORT_COMPLETED => Step::Silence,
            valkey::IMPORT_COMPLETED => Step::Unsilence,
            _ => Step::Nothing,
        };
        apply(step, &ranges);
    });
}

unsafe extern "C" fn on_redis(
    _ctx: *mut raw::RedisModuleCtx,
    _eid: raw::RedisModuleEvent,
    subevent: u64,
    data: *mut c_void,
) {
    guard::run("slot migration event", || {
        // SAFETY: the data of this event, alive for the call.
        let ranges = unsafe { redis_ranges(data) };
        let step = match subevent {
            raw::REDISMODULE_SUBEVENT_CLUSTER_SLOT_MIGRATION_IMPORT_STARTED
            | raw::REDISMODULE_SUBEVENT_CLUSTER_SLOT_MIGRATION_MIGRATE_COMPLETED => Step::Silence,
            raw::REDISMODULE_SUBEVENT_CLUSTER_SLOT_MIGRATION_IMPORT_COMPLETED => Step::Unsilence,
            _ => Step::Nothing,
        };
        apply(step, &ranges);
    });
}

/// The command filter saw a command: a `MIGRATE` (its keys are noted until
/// the next command), or a `CLUSTER SETSLOT` (the legacy view is read again
/// before it is used). Every other command ends a `MIGRATE`'s turn.
pub fn on_command(argv: Option<&[&[u8]]>) {
    match argv {
        Some(a) if a[0].eq_ignore_ascii_case(b"migrate") => {
            if let Some(keys) = crate::moves::migrate_keys(a) {
                if let Ok(mut k) = MIGRATE_KEYS.lock() {
                    *k = keys;
                    MIGRATING_NOW.store(true, Ordering::Relaxed);
                }
            }
        }
        Some(a) => {
            end_migrate();
            if a.len() >= 2 && a[1].eq_ignore_ascii_case(b"setslot") {
                VIEW_STALE.store(true, Ordering::Relaxed);
            }
        }
        None => end_migrate(),
    }
}

/// A `MIGRATE`'s turn is over (the next command, or the timer).
#[inline]
pub fn end_migrate() {
    if MIGRATING_NOW.swap(false, Ordering::Relaxed) {
        if let Ok(mut k) = MIGRATE_KEYS.lock() {
            k.clear();
        }
    }
}

fn migrate_named(key: &[u8]) -> bool {
    MIGRATING_NOW.load(Ordering::Relaxed)
        && MIGRATE_KEYS
            .lock()
            .is_ok_and(|k| k.iter().any(|n| n.as_slice() == key))
}

/// `CLUSTER NODES`, as text (`None` when the server does not answer).
pub fn nodes_text(ctx: &Context) -> Option<String> {
    match ctx.call_ext::<_, CallResult>("CLUSTER", &read_opts(), &["NODES"]) {
        Ok(CallReply::String(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Ok(CallReply::VerbatimString(v)) => v
            .as_parts()
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// Forgets every migration (a node became a master).
pub fn forget(st: &mut State) {
    st.moves.clear();
    VIEW_STALE.store(true, Ordering::Relaxed);
}

/// Reads the legacy view (`[slot-<-id]`, `[slot->-id]` on the `myself`
/// line of `CLUSTER NODES`).
pub fn read_view(st: &mut State, nodes: &str) {
    let Some(line) = nodes.lines().find(|l| {
        l.split(' ')
            .nth(2)
            .is_some_and(|f| f.split(',').any(|f| f == "myself"))
    }) else {
        return;
    };
    st.moves.set_legacy(
        &crate::moves::importing_slots(line),
        &crate::slots::migrating_slots(line),
    );
    VIEW_STALE.store(false, Ordering::Relaxed);
}

/// True when `event` on `key` was caused by a slot migration (a cluster
/// master's keyspace callback asks). A `restore` or a `del` during a
/// `MIGRATE` reads `CLUSTER NODES` first when a `CLUSTER SETSLOT` ran since
/// it was last read.
pub fn is_move(ctx: &Context, st: &mut State, event: &[u8], key: &[u8]) -> bool {
    let legacy = match event {
        b"restore" => true,
        b"del" => MIGRATING_NOW.load(Ordering::Relaxed),
        _ => false,
    };
    if legacy && VIEW_STALE.load(Ordering::Relaxed) {
        if let Some(nodes) = nodes_text(ctx) {
            read_view(st, &nodes);
        }
    }
    st.moves.is_move(event, key, || migrate_named(key))
}
