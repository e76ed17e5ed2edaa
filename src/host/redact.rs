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

use redis_module::raw;
use std::collections::VecDeque;
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

/// Hides the password or uri value of a `CONFIG SET`: `argv` are copies
/// of the command's arguments (the filter calls it for a command named
/// like `CONFIG` with 4 arguments or more).
///
/// # Safety
/// `filter` is the live filter context of the command `argv` was copied from.
pub unsafe fn hide(filter: *mut raw::RedisModuleCommandFilterCtx, argv: &[Vec<u8>]) {
    let (Some(replace), Some(create)) = (
        raw::RedisModule_CommandFilterArgReplace,
        raw::RedisModule_CreateString,
    ) else {
        return;
    };
    let refs: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
    for i in password_values(&refs) {
        let marker = stash(argv[i].clone());
        let Ok(pos) = i32::try_from(i) else { continue };
        // Replace takes ownership of the new string.
        let s = create(std::ptr::null_mut(), marker.as_ptr().cast(), marker.len());
        if !s.is_null() && replace(filter, pos, s) != raw::REDISMODULE_OK as i32 {
            if let Some(free) = raw::RedisModule_FreeString {
                free(std::ptr::null_mut(), s);
            }
        }
    }
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
