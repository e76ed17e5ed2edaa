//! The command filter: one pass over every command before it runs, cheap
//! for all but a few names (the argument count and the first byte and
//! length of the name). It hides the broker password of a `CONFIG SET`
//! ([`redact`]) and tells [`moves`] about `MIGRATE` and `CLUSTER SETSLOT`.
//!
//! Filters see commands before authentication, and a command inside MULTI
//! when it is queued, not when it runs: nothing here trusts the client, and
//! a `MIGRATE` queued in MULTI is not recognised as a move (documented).

use crate::host::{guard, moves, redact};
use redis_module::{raw, Context, RedisString};
use std::sync::atomic::{AtomicPtr, Ordering};

/// The filter, while one is registered.
static FILTER: AtomicPtr<raw::RedisModuleCommandFilter> = AtomicPtr::new(std::ptr::null_mut());

/// The arguments of a command, copied (a replace frees the strings the
/// filter hands out).
///
/// # Safety
/// `filter` is the live filter context of this call, and every argument
/// below `argc` exists.
unsafe fn args(filter: *mut raw::RedisModuleCommandFilterCtx, argc: i32) -> Vec<Vec<u8>> {
    let Some(get) = raw::RedisModule_CommandFilterArgGet else {
        return Vec::new();
    };
    (0..argc)
        .map(|i| {
            let a = get(filter, i);
            if a.is_null() {
                Vec::new()
            } else {
                RedisString::string_as_slice(a).to_vec()
            }
        })
        .collect()
}

extern "C" fn on_command(filter: *mut raw::RedisModuleCommandFilterCtx) {
    // SAFETY: Redis passes a valid filter context for this call.
    let (Some(count), Some(get)) = (unsafe { raw::RedisModule_CommandFilterArgsCount }, unsafe {
        raw::RedisModule_CommandFilterArgGet
    }) else {
        return;
    };
    // SAFETY: as above.
    let argc = unsafe { count(filter) };
    // SAFETY: as above; argument 0 exists when argc > 0.
    let name = if argc > 0 {
        unsafe { get(filter, 0) }
    } else {
        std::ptr::null_mut()
    };
    if name.is_null() {
        moves::end_migrate();
        return;
    }
    let name = RedisString::string_as_slice(name);
    match (name.len(), name.first().map(|b| b | 0x20)) {
        // CONFIG
        (6, Some(b'c')) if argc >= 4 => {
            moves::end_migrate();
            guard::run("password filter", || {
                // SAFETY: this call's filter context and argument count.
                unsafe { redact::hide(filter, &args(filter, argc)) }
            });
        }
        // MIGRATE, CLUSTER
        (7, Some(b'm' | b'c')) if argc >= 2 => {
            guard::run("move filter", || {
                // SAFETY: this call's filter context and argument count.
                let argv = unsafe { args(filter, argc) };
                let refs: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
                moves::on_command(Some(&refs));
            });
        }
        _ => moves::end_migrate(),
    }
}

/// Registers the filter (at load). Every server tried shows a SENSITIVE
/// module config's value in SLOWLOG (Redis 7.0.15 and 8.2, Valkey 9.1), and
/// none says in a way a module can read whether it would redact it, so the
/// filter is registered on all of them.
pub fn register(ctx: &Context) {
    if !FILTER.load(Ordering::Acquire).is_null() {
        return;
    }
    // SAFETY: OnLoad, valid context.
    unsafe {
        if let Some(reg) = raw::RedisModule_RegisterCommandFilter {
            let f = reg(
                ctx.ctx,
                Some(on_command),
                raw::REDISMODULE_CMDFILTER_NOSELF as i32,
            );
            FILTER.store(f, Ordering::Release);
        }
    }
}

/// A clean unload: the server removes the filter itself; forget it, so
/// that a later load of the same (still mapped) library registers its own.
pub fn unload() {
    FILTER.store(std::ptr::null_mut(), Ordering::Release);
}
