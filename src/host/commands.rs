//! The module commands' entry point. Each command is parsed into a
//! [`Command`], validated completely before anything changes, applied, and
//! in cluster mode broadcast to every node.

use crate::command::{Command, LinkAction};
use crate::config::Settings;
use crate::host::state::{Link, State};
use crate::host::{cluster, guard, state, timer};
use redis_module::{
    CallOptionsBuilder, CallReply, CallResult, Context, RedisError, RedisResult, RedisString,
    RedisValue,
};

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
/// the server whether the caller may run an admin command (`CONFIG GET`,
/// `@admin @dangerous`) under its own ACL, and refuses when it may not.
/// Servers with categories (Redis 7.2+, Valkey) check the command itself.
fn caller_may_administer(ctx: &Context) -> bool {
    // SAFETY: reading a function pointer filled in at load.
    if unsafe {
        (*std::ptr::addr_of!(redis_module::raw::RedisModule_SetCommandACLCategories)).is_some()
    } {
        return true;
    }
    let opts = CallOptionsBuilder::new().verify_acl().build();
    // An ACL refusal is a NULL reply, which the crate gives as `Unknown`.
    !matches!(
        ctx.call_ext::<_, CallResult>("CONFIG", &opts, &["GET", "notify-keyspace-events"]),
        Ok(CallReply::Unknown)
    )
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
             (it needs the rights of @admin, as CONFIG does)",
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
