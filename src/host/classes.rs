//! Which keyspace-event classes the server knows: a letter it does not
//! know (`o` and `c` before Redis 8.2, and on Valkey) is refused at load,
//! with the letter and the server's version.

use crate::event::{flags, EventTypes};
use redis_module::{raw, Context, RedisValue};

/// The classes the server has (`RedisModule_GetKeyspaceNotificationFlagsAll`).
fn known() -> i32 {
    // SAFETY: reads a function pointer the server filled in at load.
    unsafe { raw::RedisModule_GetKeyspaceNotificationFlagsAll }.map_or(
        flags::ALL | flags::STREAM | flags::NEW | flags::KEY_MISS,
        |f| {
            // SAFETY: takes no argument.
            unsafe { f() }
        },
    )
}

/// The server's name and version, for messages (`Redis 8.2.3`, `Valkey 9.1.0`).
pub fn server_version(ctx: &Context) -> String {
    let info = match ctx.call("INFO", &["server"]) {
        Ok(RedisValue::SimpleString(s)) | Ok(RedisValue::BulkString(s)) => s,
        _ => return "this server".into(),
    };
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    if let Some(v) = field("valkey_version:") {
        return format!("Valkey {v}");
    }
    field("redis_version:").map_or_else(|| "this server".into(), |v| format!("Redis {v}"))
}

/// Refuses event types with a letter the server does not know.
pub fn check(ctx: &Context, types: crate::event::EventTypes) -> Result<(), String> {
    check_against(types, known()).map_err(|c| {
        format!(
            "event type '{c}' is not known to {} (o and c need Redis 8.2+)",
            server_version(ctx)
        )
    })
}

fn check_against(types: EventTypes, known: i32) -> Result<(), char> {
    types.unknown_to(known).map_or(Ok(()), Err)
}
