//! The module commands' entry points. Each command is parsed into a
//! [`Command`], validated completely before anything changes, applied, and
//! in cluster mode broadcast to every node, whose receiver applies it too.
//!
//! Cluster messages are keyed by module name and this module's name is not
//! 9 bytes long, so it shares module id 0 with others: every payload starts
//! with a magic header and a version, and uses an unusual type byte.

use crate::bus::MSG_TYPE;
use crate::command::Command;
use crate::host::{configs, guard, snapshot, state, timer};
use crate::snapshot::Request;
use redis_module::{raw, Context, RedisError, RedisResult, RedisString, RedisValue};
use std::os::raw::{c_char, c_uchar};

fn err(e: impl std::fmt::Display) -> String {
    format!("ERR {e}")
}

/// Applies a command to this node's state; changes nothing on error.
pub fn apply(ctx: &Context, cmd: &Command) -> Result<(), String> {
    with_state(|st| {
        if let Command::Snapshot(req) = cmd {
            snapshot::request(ctx, st, *req)?;
            timer::arm(ctx, st);
            return Ok(());
        }
        let (settings, action) = cmd.apply(st.engine.settings()).map_err(err)?;
        // What a `CONFIG SET` staged is older than this change.
        configs::forget_pending();
        st.use_settings(settings, action);
        crate::host::values::follow_settings(st);
        timer::arm(ctx, st);
        Ok(())
    })
}

fn with_state(f: impl FnOnce(&mut state::State) -> Result<(), String>) -> Result<(), String> {
    state::with(f).unwrap_or_else(|| Err(err("module state is busy")))
}

/// Redis 7.0 has no API to put module commands in ACL categories, so
/// `-@admin` or `-@dangerous` would not reach them. There the module asks
/// the server whether the caller may run `CONFIG SET` (`@admin @dangerous`)
/// under its own ACL, and refuses when it may not: the commands change
/// where events and the broker password go, as `CONFIG SET` does. The check
/// runs nothing. Servers with categories (Redis 7.2+, Valkey) check the
/// command itself.
fn caller_may_administer(ctx: &Context) -> bool {
    use redis_module::raw;
    // SAFETY: reading function pointers filled in at load.
    let (categories, check, user_name, user_of, free_user, create, free) = unsafe {
        (
            (*std::ptr::addr_of!(raw::RedisModule_SetCommandACLCategories)).is_some(),
            *std::ptr::addr_of!(raw::RedisModule_ACLCheckCommandPermissions),
            *std::ptr::addr_of!(raw::RedisModule_GetCurrentUserName),
            *std::ptr::addr_of!(raw::RedisModule_GetModuleUserFromUserName),
            *std::ptr::addr_of!(raw::RedisModule_FreeModuleUser),
            *std::ptr::addr_of!(raw::RedisModule_CreateString),
            *std::ptr::addr_of!(raw::RedisModule_FreeString),
        )
    };
    if categories {
        return true;
    }
    let (Some(check), Some(user_name), Some(user_of), Some(free_user), Some(create), Some(free)) =
        (check, user_name, user_of, free_user, create, free)
    else {
        // A server without the ACL API for modules: nothing to check against.
        return true;
    };
    // SAFETY: main thread, the command's own context; every string and the
    // user made here are freed here.
    unsafe {
        let name = user_name(ctx.ctx);
        if name.is_null() {
            return false;
        }
        let user = user_of(name);
        free(ctx.ctx, name);
        if user.is_null() {
            return false;
        }
        let mut argv: Vec<*mut raw::RedisModuleString> =
            [&b"CONFIG"[..], b"SET", b"key_evt_amqp.host", b"x"]
                .iter()
                .map(|a| create(ctx.ctx, a.as_ptr().cast(), a.len()))
                .collect();
        let allowed = !argv.iter().any(|a| a.is_null())
            && check(user, argv.as_mut_ptr(), argv.len() as std::os::raw::c_int)
                == raw::REDISMODULE_OK as std::os::raw::c_int;
        for a in argv.into_iter().filter(|a| !a.is_null()) {
            free(ctx.ctx, a);
        }
        free_user(user);
        allowed
    }
}

/// Every module command from a client: check the caller, parse, apply
/// here, then tell the other nodes. One handler for all seven: the name
/// comes from the command line.
pub fn run(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    let full = args
        .first()
        .map(|a| String::from_utf8_lossy(a.as_slice()).to_lowercase())
        .unwrap_or_default();
    let name = full
        .strip_prefix("key_evt_amqp.")
        .unwrap_or(&full)
        .to_string();
    if !caller_may_administer(ctx) {
        return Err(RedisError::String(format!(
            "NOPERM this user has no permissions to run the 'key_evt_amqp.{}' command \
             (it needs the rights of CONFIG SET)",
            crate::keymask::printable(name.as_bytes())
        )));
    }
    let out = guard::run("command", || {
        let args: Vec<&[u8]> = args.iter().skip(1).map(|a| a.as_slice()).collect();
        let cmd = Command::parse(&name, &args).map_err(err)?;
        if cmd == Command::Snapshot(Request::Status) {
            // This node only: `name value` pairs.
            let pairs = state::with(|st| snapshot::status(st)).unwrap_or_default();
            return Ok(RedisValue::Array(
                pairs
                    .into_iter()
                    .flat_map(|(n, v)| {
                        [
                            RedisValue::SimpleString(n.into()),
                            RedisValue::BulkString(v),
                        ]
                    })
                    .collect(),
            ));
        }
        apply(ctx, &cmd)?;
        broadcast(ctx, &cmd);
        Ok::<_, String>(RedisValue::SimpleStringStatic("OK"))
    });
    match out {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(RedisError::String(e)),
        None => Err(RedisError::Str("ERR internal error, see the server log")),
    }
}

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
            apply(&ctx, &cmd)
        });
        if let Err(e) = applied {
            crate::host::log::warning(&format!(
                "key_evt_amqp: broadcast from node {from} refused: {e}"
            ));
        }
    });
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
