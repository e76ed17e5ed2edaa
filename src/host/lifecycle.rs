//! Load, unload, server events (loading, shutdown) and the INFO snapshot.

use crate::config::{Settings, FALLBACK_DB, FALLBACK_KEY, FALLBACK_KEY_DEFAULT, TUNABLES};
use crate::engine::Engine;
use crate::event::Encoder;
use crate::host::info::{self, Snapshot};
use crate::host::list::ListKey;
use crate::host::state::{self, State};
use crate::host::{cluster, guard, notify, timer};
use redis_module::configuration::{
    register_i64_configuration, register_string_configuration, ConfigurationFlags,
};
use redis_module::{raw, Context, ContextFlags, InfoContext, RedisResult, RedisString, Status};
use std::os::raw::c_void;
use std::sync::atomic::{AtomicPtr, Ordering};

/// Module option that Valkey 9 needs for atomic slot migration.
const HANDLE_ATOMIC_SLOT_MIGRATION: i32 = 1 << 5;

/// A long-lived context for the SHUTDOWN filter (it gets none of its own).
static DETACHED: AtomicPtr<raw::RedisModuleCtx> = AtomicPtr::new(std::ptr::null_mut());

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

fn register_configs(ctx: &Context) {
    for t in TUNABLES {
        register_i64_configuration(
            ctx,
            t.name,
            &t.value,
            t.default,
            t.min,
            t.max,
            ConfigurationFlags::DEFAULT,
            None,
        );
    }
    register_i64_configuration(
        ctx,
        FALLBACK_DB.name,
        &FALLBACK_DB.value,
        FALLBACK_DB.default,
        FALLBACK_DB.min,
        FALLBACK_DB.max,
        ConfigurationFlags::IMMUTABLE,
        None,
    );
    register_string_configuration(
        ctx,
        "fallback-key",
        &FALLBACK_KEY,
        FALLBACK_KEY_DEFAULT,
        ConfigurationFlags::IMMUTABLE,
        None,
    );
    // SAFETY: OnLoad, valid context.
    unsafe {
        if let Some(load) = raw::RedisModule_LoadConfigs {
            load(ctx.ctx);
        }
    }
}

fn is_valkey_9(ctx: &Context) -> bool {
    let info = match ctx.call("INFO", &["server"]) {
        Ok(redis_module::RedisValue::SimpleString(s))
        | Ok(redis_module::RedisValue::BulkString(s)) => s,
        _ => return false,
    };
    info.lines()
        .find_map(|l| l.strip_prefix("valkey_version:"))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse::<u32>().ok())
        .is_some_and(|m| m >= 9)
}

/// `MODULE LOAD` / `loadmodule`.
pub fn load(ctx: &Context, args: &[RedisString]) -> Status {
    guard::install_panic_hook();
    let raw_args: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
    let (types, settings) = match Settings::from_load_args(&raw_args) {
        Ok(v) => v,
        Err(e) => {
            crate::host::log::warning(&format!("key_evt_amqp: MODULE LOAD refused: {e}"));
            return Status::Err;
        }
    };
    register_configs(ctx);
    if let Err(e) = crate::host::list::select(ctx) {
        crate::host::log::warning(&format!("key_evt_amqp: MODULE LOAD refused: {e}"));
        return Status::Err;
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
    crate::host::log::notice(&format!(
        "key_evt_amqp: loaded; events '{types}', broker {}:{}, exchange '{}', routing key '{}', fallback list '{key}', node tag {tag}",
        settings.amqp.host, settings.amqp.port, settings.amqp.exchange, settings.amqp.routing_key
    ));
    let mut engine = Engine::new(settings, master);
    engine.loading = flags.contains(ContextFlags::LOADING);
    state::install(State {
        engine,
        types,
        encoder: Encoder::new(&tag),
        chunk: crate::config::BATCH_SIZE.get_usize().max(1),
        list_key: ListKey::new(key, base),
        client: Default::default(),
        timer_fast: false,
        timer: None,
        hook_checked_at: std::time::Instant::now(),
        cluster: is_cluster,
        slots: Default::default(),
    });
    if !notify::subscribe(ctx, types.0) {
        crate::host::log::warning(
            "key_evt_amqp: MODULE LOAD refused: cannot subscribe to keyspace events",
        );
        return Status::Err;
    }
    cluster::register(ctx, is_cluster);
    // SAFETY: OnLoad, valid context; these are plain registrations.
    unsafe {
        if let Some(sub) = raw::RedisModule_SubscribeToServerEvent {
            let ev = raw::RedisModuleEvent {
                id: raw::REDISMODULE_EVENT_LOADING,
                dataver: 1,
            };
            sub(ctx.ctx, ev, Some(on_loading));
        }
        if let Some(detach) = raw::RedisModule_GetDetachedThreadSafeContext {
            DETACHED.store(detach(ctx.ctx), Ordering::Release);
        }
        if let Some(sub) = raw::RedisModule_SubscribeToKeyspaceEvents {
            sub(ctx.ctx, NOTIFY_MODULE, Some(on_persisted));
        }
        if is_valkey_9(ctx) {
            if let Some(set) = raw::RedisModule_SetModuleOptions {
                set(ctx.ctx, HANDLE_ATOMIC_SLOT_MIGRATION);
            }
        }
    }
    sync_shutdown_hook(ctx);
    state::with(|st| timer::arm(ctx, st));
    Status::Ok
}

/// The SHUTDOWN command filter, while one is registered.
static FILTER: AtomicPtr<raw::RedisModuleCommandFilter> = AtomicPtr::new(std::ptr::null_mut());

/// Keeps the SHUTDOWN hook registered exactly while the server persists its
/// data (AOF on, or RDB save points): without persistence the list dies with
/// the process anyway, and the hook would only cost every command a call.
/// Called at load and about once a second.
pub fn sync_shutdown_hook(ctx: &Context) {
    let persists = ctx
        .get_flags()
        .intersects(ContextFlags::AOF | ContextFlags::RDB);
    let current = FILTER.load(Ordering::Acquire);
    // SAFETY: main thread, valid context; the filter pointer came from RegisterCommandFilter.
    unsafe {
        if persists && current.is_null() {
            if let Some(reg) = raw::RedisModule_RegisterCommandFilter {
                let f = reg(
                    ctx.ctx,
                    Some(on_command),
                    raw::REDISMODULE_CMDFILTER_NOSELF as i32,
                );
                FILTER.store(f, Ordering::Release);
            }
        } else if !persists && !current.is_null() {
            if let Some(unreg) = raw::RedisModule_UnregisterCommandFilter {
                unreg(ctx.ctx, current);
                FILTER.store(std::ptr::null_mut(), Ordering::Release);
            }
        }
    }
}

/// `MODULE UNLOAD` is refused: lapin's threads would run code from an unloaded library.
pub fn refuse_unload(_ctx: &Context) -> Status {
    crate::host::log::warning(
        "key_evt_amqp: MODULE UNLOAD refused: the AMQP threads cannot be stopped safely; restart the server instead",
    );
    Status::Err
}

extern "C" fn on_loading(
    _ctx: *mut raw::RedisModuleCtx,
    _eid: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    guard::run("loading event", || {
        let ended = subevent == raw::REDISMODULE_SUBEVENT_LOADING_ENDED
            || subevent == raw::REDISMODULE_SUBEVENT_LOADING_FAILED;
        state::with(|st| {
            st.engine.loading = !ended;
            if ended {
                // What was loaded may hold a backlog: read its length next tick.
                st.engine.list.forget();
            }
        });
    });
}

/// Sees every command before it runs; on SHUTDOWN, writes what is only in memory to the list.
extern "C" fn on_command(filter: *mut raw::RedisModuleCommandFilterCtx) {
    guard::run("command filter", || {
        // SAFETY: Redis passes a valid filter context; argument 0 is the command name.
        let name = unsafe {
            match raw::RedisModule_CommandFilterArgGet {
                Some(get) => get(filter, 0),
                None => return,
            }
        };
        if name.is_null() {
            return;
        }
        let name = RedisString::string_as_slice(name);
        if !name.eq_ignore_ascii_case(b"shutdown") {
            return;
        }
        let ptr = DETACHED.load(Ordering::Acquire);
        if ptr.is_null() {
            return;
        }
        let ctx = Context::new(ptr);
        if !shutdown_will_run(&ctx, filter) {
            return;
        }
        let key = state::with(|st| {
            timer::persist_memory(&ctx, st);
            st.list_key.key.clone()
        });
        if let Some(key) = key {
            flush_propagation(&ctx, &key);
        }
    });
}

/// True when the SHUTDOWN the filter sees will run: filters see commands
/// before authentication, ACL checks and MULTI queueing, so an
/// unauthenticated or unprivileged client, or one inside MULTI, must not
/// make the module write anything.
///
/// Where the server names the client (Redis 7.2+, Valkey): the client is a
/// real one, not in MULTI, its user may run this SHUTDOWN, and it has
/// authenticated (a user other than `default`, or `default` without a
/// password). On Redis 7.0 the client cannot be named: the hook acts only
/// while the `default` user needs no password and may run SHUTDOWN.
fn shutdown_will_run(ctx: &Context, filter: *mut raw::RedisModuleCommandFilterCtx) -> bool {
    // SAFETY: `filter` is the live filter context of this call; every
    // string taken from the server is freed here.
    unsafe {
        let Some(get_id) = raw::RedisModule_CommandFilterGetClientId else {
            return default_user_is_open(ctx) && user_may_run(ctx, filter, c"default");
        };
        let id = get_id(filter);
        let mut info: raw::RedisModuleClientInfo = std::mem::zeroed();
        info.version = 1;
        let found = raw::RedisModule_GetClientInfoById
            .map(|f| f((&mut info as *mut raw::RedisModuleClientInfo).cast(), id))
            == Some(raw::Status::Ok as i32);
        if !found || info.flags & u64::from(raw::REDISMODULE_CLIENTINFO_FLAG_MULTI) != 0 {
            return false;
        }
        let Some(user_of) = raw::RedisModule_GetClientUserNameById else {
            return false;
        };
        let name = user_of(ctx.ctx, id);
        if name.is_null() {
            return false;
        }
        let user = RedisString::string_as_slice(name).to_vec();
        if let Some(free) = raw::RedisModule_FreeString {
            free(ctx.ctx, name);
        }
        if user == b"default" && !default_user_is_open(ctx) {
            // Authenticated or not cannot be told apart: do nothing.
            return false;
        }
        let Ok(user) = std::ffi::CString::new(user) else {
            return false;
        };
        user_may_run(ctx, filter, &user)
    }
}

/// True when the `default` user is on and needs no password.
fn default_user_is_open(ctx: &Context) -> bool {
    let Ok(redis_module::RedisValue::Array(fields)) = ctx.call("ACL", &["GETUSER", "default"])
    else {
        return false;
    };
    let text = |v: &redis_module::RedisValue| match v {
        redis_module::RedisValue::SimpleString(s) => Some(s.clone()),
        redis_module::RedisValue::BulkString(s) => Some(s.clone()),
        redis_module::RedisValue::BulkRedisString(s) => s.try_as_str().ok().map(str::to_owned),
        _ => None,
    };
    let Some(pos) = fields
        .iter()
        .position(|f| text(f).as_deref() == Some("flags"))
    else {
        return false;
    };
    let Some(redis_module::RedisValue::Array(flags)) = fields.get(pos + 1) else {
        return false;
    };
    let flags: Vec<String> = flags.iter().filter_map(text).collect();
    flags.iter().any(|f| f == "on") && flags.iter().any(|f| f == "nopass")
}

/// True when `user` may run the filtered command with its arguments.
///
/// # Safety
/// `filter` must be the live filter context of the current call.
unsafe fn user_may_run(
    ctx: &Context,
    filter: *mut raw::RedisModuleCommandFilterCtx,
    user: &std::ffi::CStr,
) -> bool {
    let (Some(count), Some(arg), Some(from_name), Some(check), Some(free_user)) = (
        raw::RedisModule_CommandFilterArgsCount,
        raw::RedisModule_CommandFilterArgGet,
        raw::RedisModule_GetModuleUserFromUserName,
        raw::RedisModule_ACLCheckCommandPermissions,
        raw::RedisModule_FreeModuleUser,
    ) else {
        // No ACL API: nothing limits SHUTDOWN beyond authentication.
        return true;
    };
    let name = ctx.create_string(user.to_bytes());
    let handle = from_name(name.inner);
    if handle.is_null() {
        return false;
    }
    let argc = count(filter);
    let mut argv: Vec<*mut raw::RedisModuleString> = (0..argc).map(|i| arg(filter, i)).collect();
    let allowed = check(handle, argv.as_mut_ptr(), argc) == raw::Status::Ok as i32;
    free_user(handle);
    allowed
}

/// Notification class used only to make Redis flush pending propagation.
const NOTIFY_MODULE: i32 = 1 << 13;

/// Writes made through a thread-safe context wait in the server's
/// propagation buffer until a regular module context closes. A module-class
/// notification opens and closes one, so the writes reach the AOF and the
/// replicas before SHUTDOWN fsyncs.
fn flush_propagation(ctx: &Context, key: &str) {
    let name = ctx.create_string(key);
    // SAFETY: main thread, the detached context is valid for the module's lifetime.
    unsafe {
        if let Some(notify) = raw::RedisModule_NotifyKeyspaceEvent {
            notify(
                ctx.ctx,
                NOTIFY_MODULE,
                c"key_evt_amqp.persisted".as_ptr(),
                name.inner,
            );
        }
    }
}

extern "C" fn on_persisted(
    _ctx: *mut raw::RedisModuleCtx,
    _class: std::os::raw::c_int,
    _event: *const std::os::raw::c_char,
    _key: *mut raw::RedisModuleString,
) -> std::os::raw::c_int {
    0
}

/// Fills `INFO key_evt_amqp`.
pub fn info(ctx: &InfoContext) -> RedisResult<()> {
    let snap = state::with(|st| Snapshot {
        stats: st.engine.stats.clone(),
        connection: st.engine.link.name(),
        role: if st.engine.master {
            "master"
        } else {
            "replica"
        },
        forwarding: st.engine.master && !st.engine.loading,
        queue_len: st.engine.queue.len(),
        queue_bytes: st.engine.queue.bytes(),
        inflight: st.engine.inflight_events(),
        fallback_len: st.engine.list.len,
        fallback_key: st.list_key.key.clone(),
        shutdown_hook: !FILTER.load(Ordering::Acquire).is_null(),
        backlogs_found: st.slots.found.len(),
        fallback_size: st.engine.settings.fallback_size,
        event_types: st.types.to_string(),
        keymasks: st.engine.settings.masks.describe(),
        keymask_count: st.engine.settings.masks.count(),
        fallback_moved_aside: st.list_key.moved_aside,
        writes_paused: crate::host::list::writes_paused(),
        broker: format!(
            "{}:{}",
            st.engine.settings.amqp.host, st.engine.settings.amqp.port
        ),
        last_error: st.engine.last_error.clone(),
    })
    .unwrap_or_default();
    info::render(ctx, &snap)
}
