//! The module commands. Each one validates everything first and changes
//! nothing on error; in cluster mode it is then broadcast to every node.

use crate::config::{parse_fallback_size, ConfigError};
use crate::host::state::{Link, State};
use crate::host::{cluster, guard, state, timer};
use crate::keymask::KeyMasks;
use redis_module::{
    CallOptionsBuilder, CallReply, CallResult, Context, RedisError, RedisResult, RedisString,
    RedisValue,
};

fn err(e: impl std::fmt::Display) -> String {
    format!("ERR {e}")
}

/// Applies a command to this node's state. `args` excludes the command name.
pub fn apply(ctx: &Context, name: &str, args: &[&[u8]]) -> Result<(), String> {
    let arity = |ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(err(ConfigError::Arity))
        }
    };
    match name {
        "config_set" | "connect" => {
            if name == "config_set" {
                arity(!args.is_empty())?;
            }
            with_state(|st| {
                let new = st.engine.settings.with_args(args).map_err(err)?;
                let amqp_changed = new.amqp != st.engine.settings.amqp;
                st.engine.settings = new;
                if name == "connect" {
                    if st.engine.master {
                        timer::request_connect(st);
                    } else {
                        // A replica connects when promoted.
                        st.engine.link = Link::Idle;
                    }
                } else if amqp_changed && st.engine.master && st.engine.link.active() {
                    timer::request_connect(st);
                }
                Ok(())
            })
        }
        "disconnect" => {
            arity(args.is_empty())?;
            with_state(|st| {
                timer::request_disconnect(st);
                Ok(())
            })
        }
        "fallback_storage_size_set" => {
            arity(args.len() == 1)?;
            let size = parse_fallback_size(args[0]).map_err(err)?;
            with_state(|st| {
                st.engine.settings.fallback_size = size;
                Ok(())
            })
        }
        "keymask_clean" => {
            arity(args.is_empty())?;
            with_state(|st| {
                st.engine.settings.masks = Default::default();
                Ok(())
            })
        }
        "keymask_add" | "keymask_set" => {
            arity(!args.is_empty())?;
            with_state(|st| {
                let base = if name == "keymask_set" {
                    KeyMasks::None
                } else {
                    st.engine.settings.masks.clone()
                };
                st.engine.settings.masks = base
                    .with_added(args)
                    .map_err(|e| err(ConfigError::from(e)))?;
                Ok(())
            })
        }
        _ => Err(err(format!("unknown command '{name}'"))),
    }
    .inspect(|_| {
        with_state(|st| {
            timer::arm(ctx, st);
            Ok(())
        })
        .ok();
    })
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

/// Runs a command from a client: apply here, then tell the other nodes.
fn run(ctx: &Context, name: &str, args: Vec<RedisString>) -> RedisResult {
    if !caller_may_administer(ctx) {
        return Err(RedisError::String(format!(
            "NOPERM this user has no permissions to run the 'key_evt_amqp.{name}' command \
             (it needs the rights of @admin, as CONFIG does)"
        )));
    }
    let out = guard::run(name, || {
        let args: Vec<&[u8]> = args.iter().skip(1).map(|a| a.as_slice()).collect();
        apply(ctx, name, &args)?;
        cluster::broadcast(ctx, name, &args);
        Ok::<_, String>(())
    });
    match out {
        Some(Ok(())) => Ok(RedisValue::SimpleStringStatic("OK")),
        Some(Err(e)) => Err(RedisError::String(e)),
        None => Err(RedisError::Str("ERR internal error, see the server log")),
    }
}

/// `key_evt_amqp.config_set host [port user pass heartbeat exchange routing_key delivery_mode fallback_size keymask...]`
pub fn config_set(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(ctx, "config_set", args)
}

/// `key_evt_amqp.connect [same arguments as config_set]`
pub fn connect(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(ctx, "connect", args)
}

/// `key_evt_amqp.disconnect`
pub fn disconnect(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(ctx, "disconnect", args)
}

/// `key_evt_amqp.fallback_storage_size_set N`
pub fn fallback_storage_size_set(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(ctx, "fallback_storage_size_set", args)
}

/// `key_evt_amqp.keymask_clean`
pub fn keymask_clean(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(ctx, "keymask_clean", args)
}

/// `key_evt_amqp.keymask_add MASK...`
pub fn keymask_add(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(ctx, "keymask_add", args)
}

/// `key_evt_amqp.keymask_set MASK...`
pub fn keymask_set(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    run(ctx, "keymask_set", args)
}
