//! The fallback list through the low-level key API: a key opened in the
//! selected database ([`RawKey`], closed on drop), its length, reads with
//! `RedisModule_ListGet` and pushes with `RedisModule_ListPush` (replicated
//! one `RPUSH`/`LPUSH` per chunk). No command runs and no cluster check
//! applies; `list` decides when that is right and falls back to
//! `RedisModule_Call` otherwise.

use crate::engine::StoreError;
use crate::queue::Records;
use redis_module::{raw, Context};
use std::os::raw::c_int;

/// Most arguments sent in one `RPUSH`/`LPUSH`.
pub(crate) const CHUNK: usize = 1024;

/// A key opened through the key API, in the selected database: closed, and
/// its name freed, when dropped. One place for the raw open and close
/// steps that [`local_list_len`], [`push_direct`] and [`read_direct`] share.
struct RawKey<'a> {
    ctx: &'a Context,
    name: *mut raw::RedisModuleString,
    /// Null when the server opened nothing (a read of a missing key).
    key: *mut raw::RedisModuleKey,
    /// `RedisModule_KeyType` and `RedisModule_ValueLength`, present (checked
    /// at open).
    key_type: unsafe extern "C" fn(*mut raw::RedisModuleKey) -> c_int,
    value_length: unsafe extern "C" fn(*mut raw::RedisModuleKey) -> usize,
}

impl<'a> RawKey<'a> {
    /// Opens `key` with `mode`; `None` when any part of the key API used
    /// here is missing (the callers then fall back to `RedisModule_Call`) or
    /// the name cannot be made.
    fn open(ctx: &'a Context, key: &[u8], mode: c_int) -> Option<Self> {
        // SAFETY: main thread, valid context; what is made here is released
        // in `drop`.
        unsafe {
            let (Some(create), Some(open), Some(_), Some(_), Some(key_type), Some(value_length)) = (
                raw::RedisModule_CreateString,
                raw::RedisModule_OpenKey,
                raw::RedisModule_CloseKey,
                raw::RedisModule_FreeString,
                raw::RedisModule_KeyType,
                raw::RedisModule_ValueLength,
            ) else {
                return None;
            };
            let name = create(ctx.ctx, key.as_ptr().cast(), key.len());
            if name.is_null() {
                return None;
            }
            let key = open(ctx.ctx, name, mode);
            Some(Self {
                ctx,
                name,
                key,
                key_type,
                value_length,
            })
        }
    }

    /// The value's type (`REDISMODULE_KEYTYPE_*`); empty for a key not opened.
    fn kind(&self) -> isize {
        if self.key.is_null() {
            return raw::REDISMODULE_KEYTYPE_EMPTY;
        }
        // SAFETY: an open key.
        unsafe { (self.key_type)(self.key) as isize }
    }

    /// The value's length (a list's elements); 0 for a key not opened.
    fn len(&self) -> Option<u64> {
        if self.key.is_null() {
            return Some(0);
        }
        // SAFETY: an open key.
        u64::try_from(unsafe { (self.value_length)(self.key) }).ok()
    }

    /// The key, or `None` when nothing was opened.
    fn opened(&self) -> Option<*mut raw::RedisModuleKey> {
        (!self.key.is_null()).then_some(self.key)
    }
}

impl Drop for RawKey<'_> {
    fn drop(&mut self) {
        // SAFETY: the key was opened and the name made in `open`, once each.
        unsafe {
            if let (false, Some(close)) = (self.key.is_null(), raw::RedisModule_CloseKey) {
                close(self.key);
            }
            if let Some(free) = raw::RedisModule_FreeString {
                free(self.ctx.ctx, self.name);
            }
        }
    }
}

/// What the key API says of `key` in the selected database: `Some(len)`
/// for a list (0 when there is no key), `None` for a value of another type.
/// No command runs and no cluster check applies: this works in the
/// role-change event and on a key whose slot is being migrated, where
/// `RedisModule_Call` is refused.
pub(crate) fn local_list_len(ctx: &Context, key: &[u8]) -> Option<u64> {
    let mode = (raw::REDISMODULE_READ | raw::REDISMODULE_OPEN_KEY_NOTOUCH) as c_int;
    let k = RawKey::open(ctx, key, mode)?;
    match k.kind() {
        raw::REDISMODULE_KEYTYPE_EMPTY => Some(0),
        raw::REDISMODULE_KEYTYPE_LIST => k.len(),
        _ => None,
    }
}

/// Reads up to `n` records from index `start` through the key API
/// (`RedisModule_ListGet`, which steps one iterator along the list), without
/// the reply `LRANGE` builds and the module parses again. `None`: a value of
/// another type, or the API is missing; the caller uses `LRANGE`.
pub(crate) fn read_direct(ctx: &Context, key: &[u8], start: usize, n: usize) -> Option<Records> {
    // SAFETY: reads the API table, filled in once at load.
    let api = unsafe {
        (
            raw::RedisModule_ListGet,
            raw::RedisModule_StringPtrLen,
            raw::RedisModule_FreeString,
        )
    };
    let (Some(get), Some(ptr_len), Some(free)) = api else {
        return None;
    };
    let open = RawKey::open(ctx, key, raw::REDISMODULE_READ as c_int)?;
    match open.kind() {
        raw::REDISMODULE_KEYTYPE_EMPTY => return Some(Records::default()),
        raw::REDISMODULE_KEYTYPE_LIST => {}
        _ => return None,
    }
    let k = open.opened()?;
    let len = usize::try_from(open.len()?).ok()?;
    let end = start.saturating_add(n).min(len);
    let count = end.saturating_sub(start);
    let mut out = Records::with_capacity(count, count * 64);
    for i in start..end {
        let index = std::os::raw::c_long::try_from(i).ok()?;
        // SAFETY: an open list key; the string returned is ours and freed
        // here, after its bytes are copied.
        unsafe {
            // Neither is expected within the length read above; should it
            // happen, `LRANGE` reads the range again (nothing was consumed).
            let s = get(k, index);
            if s.is_null() {
                return None;
            }
            let mut l: usize = 0;
            let p = ptr_len(s, &mut l);
            if p.is_null() {
                free(ctx.ctx, s);
                return None;
            }
            let bytes = std::slice::from_raw_parts(p.cast::<u8>(), l);
            out.push_with(|d| d.extend_from_slice(bytes));
            free(ctx.ctx, s);
        }
    }
    Some(out)
}

/// Pushes `records` (in the order given; `cmd` is `RPUSH` or `LPUSH`) through
/// the key API, replicating one `cmd` per chunk of [`CHUNK`]. `Ok(None)`: the
/// key holds another type, or the API is missing; the caller uses
/// `RedisModule_Call`, which moves the value aside.
pub(crate) fn push_direct(
    ctx: &Context,
    key: &[u8],
    cmd: &str,
    records: &[&[u8]],
) -> Result<Option<u64>, StoreError> {
    let (where_, cname) = if cmd == "LPUSH" {
        (raw::REDISMODULE_LIST_HEAD, c"LPUSH")
    } else {
        (raw::REDISMODULE_LIST_TAIL, c"RPUSH")
    };
    // SAFETY: reads the API table, filled in once at load.
    let api = unsafe {
        (
            raw::RedisModule_CreateString,
            raw::RedisModule_FreeString,
            raw::RedisModule_ListPush,
            raw::RedisModule_Replicate,
        )
    };
    let (Some(create), Some(free), Some(push), Some(replicate)) = api else {
        return Ok(None);
    };
    let mode = (raw::REDISMODULE_READ | raw::REDISMODULE_WRITE) as c_int;
    let Some(open) = RawKey::open(ctx, key, mode) else {
        return Ok(None);
    };
    let Some(k) = open.opened().filter(|_| {
        matches!(
            open.kind(),
            raw::REDISMODULE_KEYTYPE_EMPTY | raw::REDISMODULE_KEYTYPE_LIST
        )
    }) else {
        return Ok(None);
    };
    let mut out = Ok(());
    let mut argv: Vec<*mut raw::RedisModuleString> = Vec::with_capacity(CHUNK.min(records.len()));
    for chunk in records.chunks(CHUNK) {
        argv.clear();
        // SAFETY: main thread, valid context, an open key; every string
        // made here is freed here. `Replicate` takes its own references.
        unsafe {
            for r in chunk {
                let s = create(ctx.ctx, r.as_ptr().cast(), r.len());
                if s.is_null() {
                    out = Err(StoreError::Refused("cannot create a string".into()));
                    break;
                }
                argv.push(s);
            }
            let mut pushed: usize = 0;
            if out.is_ok() {
                for &s in &argv {
                    if push(k, where_ as c_int, s) != raw::Status::Ok as c_int {
                        out = Err(StoreError::Refused(format!(
                            "{cmd} through the key API failed"
                        )));
                        break;
                    }
                    pushed += 1;
                }
            }
            if pushed > 0 {
                // What was pushed, replicated as one command of this unit.
                replicate(
                    ctx.ctx,
                    cname.as_ptr(),
                    c"sv".as_ptr(),
                    open.name,
                    argv.as_ptr(),
                    pushed,
                );
            }
            for &s in &argv {
                free(ctx.ctx, s);
            }
        }
        if out.is_err() {
            break;
        }
    }
    let n = open.len().unwrap_or(0);
    out.map(|()| Some(n))
}
