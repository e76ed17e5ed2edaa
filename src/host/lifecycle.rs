//! Load, unload, server events (loading, shutdown) and the INFO snapshot.

use crate::config::{Settings, FALLBACK_KEY, FALLBACK_KEY_DEFAULT};
use crate::engine::metrics::age_ms;
use crate::engine::{Engine, Intake};
use crate::host::info::{self, Snapshot};
use crate::host::list::ListKey;
use crate::host::state::{self, State};
use crate::host::{cluster, commands, configs, guard, notify, shutdown, timer};
use redis_module::server_events::{LoadingSubevent, ServerRole};
use redis_module::{raw, Context, ContextFlags, InfoContext, RedisResult, RedisString, Status};

/// Module option that Valkey 9 needs for atomic slot migration.
const HANDLE_ATOMIC_SLOT_MIGRATION: i32 = 1 << 5;

/// `<port>/<tag>`: the server's port tells nodes apart in the broker's UI.
fn node_name(ctx: &Context, tag: &str) -> String {
    let port = match ctx.call("CONFIG", &["GET", "port"]) {
        Ok(redis_module::RedisValue::Array(v)) => match v.get(1) {
            Some(redis_module::RedisValue::SimpleString(p))
            | Some(redis_module::RedisValue::BulkString(p)) => p.clone(),
            _ => String::new(),
        },
        _ => String::new(),
    };
    format!("{port}/{tag}")
}

fn node_tag() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// The server's Valkey version (major, minor); `None` on Redis.
fn valkey_version(ctx: &Context) -> Option<(u32, u32)> {
    let info = match ctx.call("INFO", &["server"]) {
        Ok(redis_module::RedisValue::SimpleString(s))
        | Ok(redis_module::RedisValue::BulkString(s)) => s,
        _ => return None,
    };
    let v = info
        .lines()
        .find_map(|l| l.strip_prefix("valkey_version:"))?;
    let mut parts = v.trim().split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
}

/// The server events the crate's `redis_module!` subscribed to before
/// `init` ran: those with a handler (it skips an event whose list is empty).
fn subscribed_server_events() -> Vec<u64> {
    use redis_module::server_events as ev;
    [
        (
            ev::ROLE_CHANGED_SERVER_EVENTS_LIST.is_empty(),
            raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED,
        ),
        (
            ev::LOADING_SERVER_EVENTS_LIST.is_empty(),
            raw::REDISMODULE_EVENT_LOADING,
        ),
        (
            ev::FLUSH_SERVER_EVENTS_LIST.is_empty(),
            raw::REDISMODULE_EVENT_FLUSHDB,
        ),
        (
            ev::MODULE_CHANGED_SERVER_EVENTS_LIST.is_empty(),
            raw::REDISMODULE_EVENT_MODULE_CHANGE,
        ),
        (
            ev::CONFIG_CHANGED_SERVER_EVENTS_LIST.is_empty(),
            raw::REDISMODULE_EVENT_CONFIG,
        ),
        (
            ev::CRON_SERVER_EVENTS_LIST.is_empty(),
            raw::REDISMODULE_EVENT_CRON_LOOP,
        ),
    ]
    .into_iter()
    .filter_map(|(empty, id)| (!empty).then_some(id))
    .collect()
}

/// A refused load: the crate subscribed the server events before `init`,
/// and Redis 7.0 frees a module whose `OnLoad` failed without removing its
/// listeners (the next cron event then runs freed memory). Unsubscribe them
/// here, before the refusal reaches the server. Only those subscribed:
/// Redis 7.0 adds a listener with a NULL callback for an event that was not.
fn refuse_load(ctx: &Context, why: &str) -> Status {
    crate::host::log::warning(&format!("key_evt_amqp: MODULE LOAD refused: {why}"));
    for id in subscribed_server_events() {
        // SAFETY: OnLoad, valid context; a NULL callback removes the listener.
        unsafe {
            if let Some(sub) = raw::RedisModule_SubscribeToServerEvent {
                sub(ctx.ctx, raw::RedisModuleEvent { id, dataver: 1 }, None);
            }
        }
    }
    Status::Err
}

/// `MODULE LOAD` / `loadmodule`.
pub fn load(ctx: &Context, args: &[RedisString]) -> Status {
    guard::install_panic_hook();
    let raw_args: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
    let (types, mut settings) = match Settings::from_load_args(&raw_args) {
        Ok(v) => v,
        Err(e) => return refuse_load(ctx, &e.to_string()),
    };
    if let Err(e) = configs::register(ctx, &mut settings) {
        return refuse_load(ctx, &e);
    }
    if let Err(e) = settings.check() {
        return refuse_load(ctx, &e.to_string());
    }
    if let Err(e) = crate::host::classes::check(ctx, types) {
        return refuse_load(ctx, &e);
    }
    if let Err(e) = crate::host::list::select(ctx) {
        return refuse_load(ctx, &e);
    }
    let flags = ctx.get_flags();
    let is_cluster = flags.contains(ContextFlags::CLUSTER);
    let master = !flags.contains(ContextFlags::SLAVE);
    let base = FALLBACK_KEY
        .lock()
        .map(|k| k.clone())
        .unwrap_or_else(|e| e.into_inner().clone());
    let base = if base.is_empty() {
        FALLBACK_KEY_DEFAULT.to_string()
    } else {
        base
    };
    // In cluster mode the key gets the hash tag of an owned slot on the first tick.
    let key = if is_cluster {
        String::new()
    } else {
        base.clone()
    };
    let tag = node_tag();
    settings.amqp.node = node_name(ctx, &tag);
    crate::host::log::notice(&format!(
        "key_evt_amqp: loaded; events '{types}', broker {}, exchange '{}', routing key '{}', fallback list '{key}', node tag {tag}",
        crate::endpoint::addresses(&settings.amqp).join(","), settings.amqp.exchange, settings.amqp.routing_key
    ));
    let limits = crate::host::limits::now();
    let mut engine = Engine::new(
        settings,
        master,
        Intake::new(&tag, &base, limits.batch),
        limits,
    );
    engine.set_loading(flags.contains(ContextFlags::LOADING));
    if !notify::subscribe(ctx, types.0) {
        return refuse_load(ctx, "cannot subscribe to keyspace events");
    }
    let listen = crate::host::values::wanted(engine.settings(), engine.is_loading());
    let valkey = valkey_version(ctx);
    // Valkey 8.1 moved the keyspace to its own hash table (see `values`).
    crate::host::values::init(ctx, listen, valkey.is_some_and(|v| v >= (8, 1)));
    // Only now, with every check passed, does the module hold state.
    state::install(State {
        engine,
        types,
        list_key: ListKey::new(key, base),
        client: Default::default(),
        timer_fast: false,
        timer: None,
        last_tick: None,
        cluster: is_cluster,
        slots: Default::default(),
        moves: Default::default(),
        snapshot: Default::default(),
    });
    commands::register(ctx, is_cluster);
    crate::host::events::subscribe(ctx);
    // Diskless replica loading keeps working with the module loaded (the
    // server skips it unless every module declares it can follow it; see
    // `events`); Valkey 9 refuses atomic slot migration unless every module
    // declares it.
    let mut options = raw::REDISMODULE_OPTIONS_HANDLE_REPL_ASYNC_LOAD as i32;
    let valkey_9 = valkey.is_some_and(|(major, _)| major >= 9);
    if valkey_9 {
        options |= HANDLE_ATOMIC_SLOT_MIGRATION;
    }
    if is_cluster {
        crate::host::moves::subscribe(ctx, valkey_9);
    }
    ctx.set_module_options(raw::ModuleOptions::from_bits_retain(options));
    shutdown::register(ctx);
    crate::host::filter::register(ctx);
    // No timer and no thread yet: the server's cron arms the first timer
    // once the load is complete (see `timer::on_cron`). Until then the
    // module can be unloaded cleanly, which is what the server does when
    // `MODULE LOADEX` finds a config it cannot apply after `OnLoad`.
    Status::Ok
}

/// Why the module cannot be unloaded now, if it cannot.
fn unload_blocker() -> Option<&'static str> {
    if crate::amqp::executor_started() {
        return Some("the AMQP threads (lapin's executor) are running and cannot be stopped");
    }
    if crate::keymask::compiling() {
        return Some("a thread of the module built a key-mask automaton");
    }
    let held = state::with(|st| {
        st.engine.queue_len() > 0 || st.engine.inflight_events() > 0 || !st.engine.outbox_is_empty()
    });
    match held {
        Some(true) => Some("events are held in memory"),
        Some(false) => None,
        None => Some("the module state is busy"),
    }
}

/// `MODULE UNLOAD` (and the server's own unload after a refused `MODULE
/// LOADEX`). Before the module ever started a thread (no broker connection
/// was asked for, no automaton is being built) it unloads cleanly: its
/// cluster receiver is removed here and the server removes commands,
/// configs, subscriptions and the command filter. Afterwards lapin's
/// threads would run code from an unloaded library, so it refuses, with a
/// log line that says how to restart instead.
pub fn unload(ctx: &Context) -> Status {
    if let Some(why) = unload_blocker() {
        crate::host::log::warning(&format!(
            "key_evt_amqp: MODULE UNLOAD refused: {why}. To unload it or change its event types, \
             restart the server: run SHUTDOWN (with AOF or RDB on, it writes the events held in \
             memory to the fallback list first, and they are sent after the restart), then start \
             it with the new loadmodule line"
        ));
        return Status::Err;
    }
    let cluster = state::with(|st| st.cluster).unwrap_or(false);
    commands::unregister(ctx, cluster);
    shutdown::unload();
    crate::host::filter::unload();
    configs::forget_pending();
    crate::host::values::release();
    state::take();
    crate::host::log::notice("key_evt_amqp: unloaded");
    Status::Ok
}

/// The server's cron (`hz` times a second): arms the timer when none is
/// armed, so that an idle module ticks about every 100 ms without holding a
/// timer between ticks, and a timer that failed to re-arm is replaced.
#[redis_module_macros::cron_event_handler]
fn on_cron(ctx: &Context, _hz: u64) {
    guard::run("cron", || {
        state::with(|st| timer::on_cron(ctx, st));
    });
}

/// The server's replication role changed.
#[redis_module_macros::role_changed_event_handler]
fn on_role_changed(ctx: &Context, role: ServerRole) {
    guard::run("role change", || {
        let master = role == ServerRole::Primary;
        state::with(|st| {
            if cluster::set_role(ctx, st, master) {
                timer::arm(ctx, st);
            }
        });
    });
}

/// The server starts or ends loading its data: events seen while loading
/// are not new, and what was loaded may hold a fallback list.
#[redis_module_macros::loading_event_handler]
fn on_loading(_ctx: &Context, ev: LoadingSubevent) {
    guard::run("loading event", || {
        let ended = matches!(ev, LoadingSubevent::Ended | LoadingSubevent::Failed);
        state::with(|st| {
            st.engine.set_loading(!ended);
            if !ended && st.engine.withdraw_pending() {
                // `DEBUG RELOAD` / `DEBUG LOADAOF` emptied the data set to load
                // it again: that flush is no event.
                crate::host::log::notice(
                    "key_evt_amqp: the data set is being reloaded: the flush before it is not forwarded",
                );
            }
            // Not listening to the key event during a load (see `values::wanted`).
            crate::host::values::follow(crate::host::values::wanted(
                st.engine.settings(),
                st.engine.is_loading(),
            ));
        });
    });
}

/// A config changed: the SHUTDOWN hook follows the persistence settings.
#[redis_module_macros::config_changed_event_handler]
fn on_config_changed(ctx: &Context, names: &[&str]) {
    guard::run("config change", || {
        if names.iter().any(|n| matches!(*n, "appendonly" | "save")) {
            shutdown::sync_shutdown_hook(ctx);
        }
    });
}

/// Fills `INFO key_evt_amqp`.
pub fn info(ctx: &InfoContext) -> RedisResult<()> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let snap = state::with(|st| {
        let e = &st.engine;
        let s = e.settings();
        let list = e.list();
        let stats = e.stats();
        Snapshot {
            stats: crate::engine::Stats {
                resent: stats.resent + list.reread,
                ..stats.clone()
            },
            connection: e.link().name(),
            role: if e.is_master() { "master" } else { "replica" },
            forwarding: e.is_master() && !e.is_loading(),
            queue_len: e.queue_len(),
            queue_bytes: e.queue_bytes(),
            inflight: e.inflight_events(),
            inflight_bytes: e.inflight_bytes(),
            module_memory_bytes: crate::memory::live_bytes(),
            fallback_len: list.len,
            fallback_key: st.list_key.key.clone(),
            shutdown_hook: shutdown::hook_registered(),
            fallback_lists_found: st.slots.found.len(),
            fallback_size: s.fallback_size,
            event_types: st.types.to_string(),
            keymasks: s.masks.describe(),
            keymask_count: s.masks.count(),
            keymask_matcher: s.masks.matcher().to_string(),
            durability: crate::config::durability().name(),
            keymask_bytes: s.masks.memory(),
            fallback_moved_aside: st.list_key.moved_aside,
            writes_paused: crate::host::list::writes_paused(),
            broker: crate::endpoint::addresses(&s.amqp).join(","),
            broker_connected: e.nodes().now.clone(),
            broker_failovers: e.nodes().failovers,
            broker_entries: e.nodes().describe(&crate::endpoint::addresses(&s.amqp)),
            fallback_oldest_age_seconds: e.metrics().oldest_age(crate::event::now_secs()),
            oldest_memory_age_ms: age_ms(e.oldest_in_memory(), now_ms),
            // The head record as the last tick read it (no read here).
            oldest_list_age_ms: if list.len > 0 {
                age_ms(e.metrics().oldest_record_ts, now_ms)
            } else {
                0
            },
            confirm_latency_ms: {
                let [p50, p99] = e
                    .metrics()
                    .latency_percentiles(std::time::Instant::now(), [50, 99])
                    .map(|d| d.map_or(0, |d| d.as_millis() as u64));
                (p50, p99)
            },
            connection_uptime_seconds: e.metrics().uptime(std::time::Instant::now()),
            last_error: e.last_error().to_string(),
            unroutable: {
                let (n, wait) = e.unroutable_waiting(std::time::Instant::now());
                (n, wait.as_millis() as u64)
            },
            nack_retry_in_ms: e.nack_retry_in(std::time::Instant::now()).as_millis() as u64,
            migration_silent_slots: st.moves.silent_slots(),
            key_event: crate::host::values::subscribed(),
            snapshot: crate::host::snapshot::status(st),
        }
    })
    .unwrap_or_default();
    info::render(ctx, &snap)
}
