//! The SHUTDOWN hook: a command filter that, on a SHUTDOWN that will run,
//! writes what is held only in memory to the fallback list before the server
//! saves; registered only while the server persists its data.

use crate::host::{guard, state, timer};
use redis_module::{raw, Context, ContextFlags, RedisString};
use std::sync::atomic::{AtomicPtr, Ordering};

/// A long-lived context for the SHUTDOWN filter (it gets none of its own).
static DETACHED: AtomicPtr<raw::RedisModuleCtx> = AtomicPtr::new(std::ptr::null_mut());

/// The SHUTDOWN command filter, while one is registered.
static FILTER: AtomicPtr<raw::RedisModuleCommandFilter> = AtomicPtr::new(std::ptr::null_mut());

/// Keeps the SHUTDOWN hook registered exactly while the server persists its
/// data (AOF on, or RDB save points): without persistence the list dies with
/// the process anyway, and the hook would only cost every command a call.
/// Called at load and whenever `appendonly` or `save` change.
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

/// Registers what the hook needs (a detached context, a notification
/// subscription that flushes propagation), then the hook itself if the
/// server persists its data.
pub fn register(ctx: &Context) {
    // SAFETY: OnLoad, valid context; plain registrations.
    unsafe {
        if let Some(detach) = raw::RedisModule_GetDetachedThreadSafeContext {
            DETACHED.store(detach(ctx.ctx), Ordering::Release);
        }
        if let Some(sub) = raw::RedisModule_SubscribeToKeyspaceEvents {
            sub(ctx.ctx, NOTIFY_MODULE, Some(on_persisted));
        }
    }
    sync_shutdown_hook(ctx);
}

/// A clean unload: frees the detached context and forgets the filter (the
/// server removes a module's filters itself). The library may stay mapped
/// and be loaded again, so nothing of this load may be left in the statics.
pub fn unload() {
    FILTER.store(std::ptr::null_mut(), Ordering::Release);
    let detached = DETACHED.swap(std::ptr::null_mut(), Ordering::AcqRel);
    // SAFETY: the context came from GetDetachedThreadSafeContext at load and
    // nothing uses it once the module is unloading (main thread).
    unsafe {
        if let (false, Some(free)) = (detached.is_null(), raw::RedisModule_FreeThreadSafeContext) {
            free(detached);
        }
    }
}

/// True while the SHUTDOWN hook is registered (shown in INFO).
pub fn hook_registered() -> bool {
    !FILTER.load(Ordering::Acquire).is_null()
}
