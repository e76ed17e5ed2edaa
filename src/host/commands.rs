//! The module commands' entry point. Each command is parsed into a
//! [`Command`], validated completely before anything changes, applied, and
//! in cluster mode broadcast to every node.

use crate::command::{Command, LinkAction};
use crate::config::Settings;
use crate::host::state::{Link, State};
use crate::host::{cluster, guard, state, timer};
use redis_module::{Context, RedisError, RedisResult, RedisString, RedisValue};

fn err(e: impl std::fmt::Display) -> String {
    format!("ERR {e}")
}

/// Applies a command to this node's state; changes nothing on error.
pub fn apply(ctx: &Context, cmd: &Command) -> Result<(), String> {
    with_state(|st| {
        let (settings, action) = cmd.apply(&st.engine.settings).map_err(err)?;
        use_settings(st, settings, action);
        timer::arm(ctx, st);
        Ok(())
    })
}

/// Puts `settings` in force and does what `action` asks of the connection
/// (commands and `CONFIG SET` both come here).
pub fn use_settings(st: &mut State, settings: Settings, action: LinkAction) {
    crate::host::configs::forget_pending();
    st.engine.settings = settings;
    match action {
        LinkAction::Keep => {}
        LinkAction::Connect if st.engine.master => timer::request_connect(st),
        // A replica connects when promoted.
        LinkAction::Connect => st.engine.link = Link::Idle,
        LinkAction::Reconnect => {
            if st.engine.master && st.engine.link.active() {
                timer::request_connect(st);
            }
        }
        LinkAction::Disconnect => timer::request_disconnect(st),
    }
}

fn with_state(f: impl FnOnce(&mut State) -> Result<(), String>) -> Result<(), String> {
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
        apply(ctx, &cmd)?;
        cluster::broadcast(ctx, &cmd);
        Ok::<_, String>(())
    });
    match out {
        Some(Ok(())) => Ok(RedisValue::SimpleStringStatic("OK")),
        Some(Err(e)) => Err(RedisError::String(e)),
        None => Err(RedisError::Str("ERR internal error, see the server log")),
    }
}
