//! Keeps the broker password and URI out of SLOWLOG (and anything else that
//! shows a command's arguments) after `CONFIG SET key_evt_amqp.password
//! <value>` or `CONFIG SET key_evt_amqp.uri <value>`.
//!
//! No server redacts a module config flagged SENSITIVE (found by
//! experiment: Redis 7.0.15 and 8.2, Valkey 9.1 log the value as given). A
//! config's set callback has no client to redact, so a command filter does
//! it before the command runs: it moves the value into a small stash in
//! module memory and puts a marker in its place (`\0kea-password:<n>`,
//! which no password can be: passwords hold no NUL byte); the password
//! config's set callback takes the value back from the stash
//! ([`resolve`]). Filters see commands before authentication, and a
//! command in MULTI runs later: the stash keeps the last [`STASH_MAX`]
//! values, each taken once, and nothing here logs them.

use crate::host::guard;
use redis_module::{raw, Context, RedisString};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Mutex;

/// Values waiting for their `CONFIG SET` to run, at most.
pub const STASH_MAX: usize = 16;

/// The longest password kept: the filter runs before authentication, so a
/// client without rights must not pin much memory here. A longer value is
/// replaced by a marker that names nothing (its `CONFIG SET` is refused).
pub const PASSWORD_MAX: usize = 1024;

const MARKER: &[u8] = b"\0kea-password:";
const CONFIG_NAME: &[u8] = b"key_evt_amqp.password";
/// The `uri` config: it may carry a password too.
const URI_NAME: &[u8] = b"key_evt_amqp.uri";

struct Stash {
    next: u64,
    values: VecDeque<(u64, Vec<u8>)>,
}

static STASH: Mutex<Stash> = Mutex::new(Stash {
    next: 0,
    values: VecDeque::new(),
});

/// The filter, while one is registered.
static FILTER: AtomicPtr<raw::RedisModuleCommandFilter> = AtomicPtr::new(std::ptr::null_mut());

/// Keeps `value`, returns the marker that names it (one that names nothing
/// for a value over [`PASSWORD_MAX`]).
fn stash(value: Vec<u8>) -> Vec<u8> {
    let mut s = STASH.lock().unwrap_or_else(|e| e.into_inner());
    s.next += 1;
    let id = s.next;
    if value.len() > PASSWORD_MAX {
        let mut marker = MARKER.to_vec();
        marker.extend_from_slice(b"0");
        return marker;
    }
    if s.values.len() >= STASH_MAX {
        s.values.pop_front();
    }
    s.values.push_back((id, value));
    let mut marker = MARKER.to_vec();
    marker.extend_from_slice(id.to_string().as_bytes());
    marker
}

/// The password a set callback got: a marker is replaced by the value it
/// names (taken out of the stash), anything else is the password itself.
/// `None`: the marker's value is gone (pushed out by newer ones).
pub fn resolve(value: Vec<u8>) -> Option<Vec<u8>> {
    let Some(id) = value.strip_prefix(MARKER) else {
        return Some(value);
    };
    let id: u64 = std::str::from_utf8(id).ok()?.parse().ok()?;
    let mut s = STASH.lock().unwrap_or_else(|e| e.into_inner());
    let at = s.values.iter().position(|(i, _)| *i == id)?;
    s.values.remove(at).map(|(_, v)| v)
}

/// The positions of the values to hide in a command's arguments: after
/// each `key_evt_amqp.password` or `key_evt_amqp.uri` name of a `CONFIG
/// SET`. Pure, for tests.
fn password_values(argv: &[&[u8]]) -> Vec<usize> {
    if argv.len() < 4
        || !argv[0].eq_ignore_ascii_case(b"config")
        || !argv[1].eq_ignore_ascii_case(b"set")
    {
        return Vec::new();
    }
    (2..argv.len() - 1)
        .step_by(2)
        .filter(|&i| {
            argv[i].eq_ignore_ascii_case(CONFIG_NAME) || argv[i].eq_ignore_ascii_case(URI_NAME)
        })
        .map(|i| i + 1)
        .collect()
}

/// Sees every command; hides the password of a `CONFIG SET`. Cheap for
/// everything else: the argument count and one byte.
extern "C" fn on_command(filter: *mut raw::RedisModuleCommandFilterCtx) {
    // SAFETY: Redis passes a valid filter context for this call.
    let (Some(count), Some(get)) = (unsafe { raw::RedisModule_CommandFilterArgsCount }, unsafe {
        raw::RedisModule_CommandFilterArgGet
    }) else {
        return;
    };
    // SAFETY: as above.
    let argc = unsafe { count(filter) };
    if argc < 4 {
        return;
    }
    // SAFETY: as above; argument 0 exists.
    let name = unsafe { get(filter, 0) };
    if name.is_null() {
        return;
    }
    let name = RedisString::string_as_slice(name);
    if name.len() != 6 || name[0] | 0x20 != b'c' {
        return;
    }
    guard::run("password filter", || hide(filter, argc));
}

fn hide(filter: *mut raw::RedisModuleCommandFilterCtx, argc: i32) {
    // SAFETY: the live filter context of this call; every argument below
    // argc exists; Replace takes ownership of the new string.
    unsafe {
        let (Some(get), Some(replace), Some(create)) = (
            raw::RedisModule_CommandFilterArgGet,
            raw::RedisModule_CommandFilterArgReplace,
            raw::RedisModule_CreateString,
        ) else {
            return;
        };
        // Copies: the strings the filter hands out are freed by a replace.
        let argv: Vec<Vec<u8>> = (0..argc)
            .map(|i| {
                let a = get(filter, i);
                if a.is_null() {
                    Vec::new()
                } else {
                    RedisString::string_as_slice(a).to_vec()
                }
            })
            .collect();
        let refs: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
        let at = password_values(&refs);
        let values: Vec<(usize, Vec<u8>)> = at.into_iter().map(|i| (i, argv[i].clone())).collect();
        for (i, value) in values {
            let marker = stash(value);
            let s = create(std::ptr::null_mut(), marker.as_ptr().cast(), marker.len());
            let Ok(pos) = i32::try_from(i) else { continue };
            if !s.is_null() && replace(filter, pos, s) != raw::REDISMODULE_OK as i32 {
                if let Some(free) = raw::RedisModule_FreeString {
                    free(std::ptr::null_mut(), s);
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_password_value_of_a_config_set() {
        let v = |s: &[&str]| password_values(&s.iter().map(|a| a.as_bytes()).collect::<Vec<_>>());
        assert_eq!(v(&["CONFIG", "SET", "key_evt_amqp.password", "x"]), [3]);
        assert_eq!(
            v(&[
                "config",
                "Set",
                "key_evt_amqp.host",
                "h",
                "KEY_EVT_AMQP.PASSWORD",
                "x"
            ]),
            [5]
        );
        assert!(v(&[
            "CONFIG",
            "SET",
            "key_evt_amqp.host",
            "key_evt_amqp.password"
        ])
        .is_empty());
        assert!(v(&["CONFIG", "GET", "key_evt_amqp.password", "x"]).is_empty());
        assert_eq!(
            v(&[
                "config",
                "set",
                "key_evt_amqp.URI",
                "amqp://u:p@h",
                "x",
                "y"
            ]),
            [3]
        );
        assert!(v(&["SET", "key_evt_amqp.password", "x", "y"]).is_empty());
    }

    #[test]
    fn a_stashed_value_is_taken_once() {
        let m = stash(b"pw1".to_vec());
        // A marker a client sends is hidden like any value (it cannot take
        // another client's stashed password).
        assert_eq!(password_values(&[b"config", b"set", CONFIG_NAME, &m]), [3]);
        assert_eq!(resolve(stash(vec![b'x'; PASSWORD_MAX + 1])), None);
        assert_eq!(resolve(m.clone()), Some(b"pw1".to_vec()));
        assert_eq!(resolve(m), None);
        assert_eq!(resolve(b"plain".to_vec()), Some(b"plain".to_vec()));
        let first = stash(b"old".to_vec());
        for _ in 0..STASH_MAX {
            stash(b"x".to_vec());
        }
        assert_eq!(resolve(first), None);
    }
}
