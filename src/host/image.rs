//! Reading a key's value into a JSON image (`{"type":...,"value":...}`),
//! never past `value-max-bytes` (see [`crate::json::Image`]), with
//! `"pexpireat"` when the key has a time to live: the after-images of the
//! keyspace callback and the snapshot, and the before-images of the key
//! event (see `values`).

use crate::host::guard;
use crate::json::{self, Image, Kind};
use redis_module::{raw, RedisString};
use std::os::raw::{c_int, c_long, c_void};

/// How a value is opened: read only, and with no side effect the server
/// lets a module avoid (no LRU touch, no keymiss notification, no hit/miss
/// stats, no lazy expiry). Older servers ignore them: values are refused
/// there ([`open_flags_supported`]).
pub(crate) const OPEN: c_int = (raw::REDISMODULE_READ
    | raw::REDISMODULE_OPEN_KEY_NOTOUCH
    | raw::REDISMODULE_OPEN_KEY_NONOTIFY
    | raw::REDISMODULE_OPEN_KEY_NOSTATS
    | raw::REDISMODULE_OPEN_KEY_NOEXPIRE) as c_int;

/// Appends `,"after":<image>` when the key holds a value now.
pub(crate) unsafe fn after_image(
    ctx: *mut raw::RedisModuleCtx,
    keyobj: *mut raw::RedisModuleString,
    cap: usize,
    out: &mut Vec<u8>,
) {
    let (Some(open), Some(close)) = (raw::RedisModule_OpenKey, raw::RedisModule_CloseKey) else {
        return;
    };
    let kp = open(ctx, keyobj, OPEN);
    if kp.is_null() {
        return;
    }
    let mark = out.len();
    out.extend_from_slice(b",\"after\":");
    if read(ctx, kp, Some(keyobj), cap, out) {
        push_expiry(kp, out);
    } else {
        out.truncate(mark);
    }
    close(kp);
}

/// Adds `"pexpireat":<unix ms>` to the image just written (before its
/// closing brace) when the key has a time to live; nothing when it has none.
unsafe fn push_expiry(kp: *mut raw::RedisModuleKey, out: &mut Vec<u8>) {
    let Some(abs) = raw::RedisModule_GetAbsExpire else {
        return;
    };
    let at = abs(kp);
    if at < 0 || out.last() != Some(&b'}') {
        return;
    }
    out.pop();
    out.extend_from_slice(b",\"pexpireat\":");
    json::push_u64(out, at.unsigned_abs());
    out.push(b'}');
}

/// Writes the image of a string read with `GET` (its length was checked
/// against the cap first); false when the reply is not a string.
unsafe fn string_by_get(
    ctx: *mut raw::RedisModuleCtx,
    keyobj: *mut raw::RedisModuleString,
    cap: usize,
    out: &mut Vec<u8>,
) -> bool {
    let (Some(call), Some(kind), Some(ptr), Some(free)) = (
        raw::RedisModule_Call,
        raw::RedisModule_CallReplyType,
        raw::RedisModule_CallReplyStringPtr,
        raw::RedisModule_FreeCallReply,
    ) else {
        return false;
    };
    let reply = call(ctx, c"GET".as_ptr(), c"s".as_ptr(), keyobj);
    if reply.is_null() {
        return false;
    }
    let mut len = 0usize;
    let p = if kind(reply) == raw::REDISMODULE_REPLY_STRING as c_int {
        ptr(reply, &mut len)
    } else {
        std::ptr::null()
    };
    let ok = !p.is_null();
    if ok {
        let bytes = if len == 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(p.cast::<u8>(), len)
        };
        json::push_string_value(out, bytes, cap);
    }
    free(reply);
    ok
}

/// The server's key type as the JSON type; `None` for an empty key.
fn kind_of(t: c_int) -> Option<Kind> {
    Some(match t as isize {
        raw::REDISMODULE_KEYTYPE_STRING => Kind::String,
        raw::REDISMODULE_KEYTYPE_LIST => Kind::List,
        raw::REDISMODULE_KEYTYPE_HASH => Kind::Hash,
        raw::REDISMODULE_KEYTYPE_SET => Kind::Set,
        raw::REDISMODULE_KEYTYPE_ZSET => Kind::Zset,
        raw::REDISMODULE_KEYTYPE_STREAM => Kind::Stream,
        raw::REDISMODULE_KEYTYPE_EMPTY => return None,
        _ => Kind::Module,
    })
}

/// Writes the image of the value `kp` holds (`{"type":...}`) into `out`;
/// false (nothing written) when the key is empty.
///
/// A string is read through `RedisModule_StringDMA` in the key event (the
/// server keeps the dying value alive for it), but through `GET` when
/// `by_call` gives the key's name (the keyspace callback): there
/// `StringDMA` may replace a shared or integer-encoded value with a copy and
/// free the object the running command still uses after the notification
/// (`INCRBYFLOAT` replies with it).
pub(crate) unsafe fn read(
    ctx: *mut raw::RedisModuleCtx,
    kp: *mut raw::RedisModuleKey,
    by_call: Option<*mut raw::RedisModuleString>,
    cap: usize,
    out: &mut Vec<u8>,
) -> bool {
    let (Some(key_type), Some(value_len)) =
        (raw::RedisModule_KeyType, raw::RedisModule_ValueLength)
    else {
        return false;
    };
    let Some(kind) = kind_of(key_type(kp)) else {
        return false;
    };
    let n = value_len(kp);
    match kind {
        Kind::Stream | Kind::Module => json::push_omitted_type(out, kind),
        Kind::String => {
            if n > cap {
                json::push_omitted_size(out, kind, n as u64);
                return true;
            }
            if let Some(keyobj) = by_call {
                return string_by_get(ctx, keyobj, cap, out);
            }
            let mut len = 0usize;
            let p = raw::RedisModule_StringDMA.map_or(std::ptr::null_mut(), |f| {
                f(kp, &mut len, raw::REDISMODULE_READ as c_int)
            });
            let bytes = if p.is_null() || len == 0 {
                &[][..]
            } else {
                std::slice::from_raw_parts(p.cast::<u8>(), len)
            };
            json::push_string_value(out, bytes, cap);
        }
        _ if json::over_by_count(n as u64, cap) => json::push_omitted_size(out, kind, n as u64),
        Kind::List => {
            let mut img = Image::begin(out, kind, cap);
            if let (Some(get), Some(free)) = (raw::RedisModule_ListGet, raw::RedisModule_FreeString)
            {
                for i in 0..n {
                    let s = get(kp, i as c_long);
                    if s.is_null() {
                        break;
                    }
                    let ok = img.elem(out, RedisString::string_as_slice(s));
                    free(ctx, s);
                    if !ok {
                        break;
                    }
                }
            }
            img.finish(out, n as u64);
        }
        _ => {
            let img = Image::begin(out, kind, cap);
            let mut scan = Scan { img, out, kind };
            if let (Some(create), Some(scan_key), Some(destroy)) = (
                raw::RedisModule_ScanCursorCreate,
                raw::RedisModule_ScanKey,
                raw::RedisModule_ScanCursorDestroy,
            ) {
                let cursor = create();
                while scan_key(
                    kp,
                    cursor,
                    Some(on_element),
                    (&mut scan as *mut Scan<'_>).cast(),
                ) != 0
                    && !scan.img.over()
                {}
                destroy(cursor);
            }
            let Scan { img, out, .. } = scan;
            img.finish(out, n as u64);
        }
    }
    true
}

/// What a `RedisModule_ScanKey` pass writes into.
struct Scan<'a> {
    img: Image,
    out: &'a mut Vec<u8>,
    kind: Kind,
}

/// One hash field and value, set member, or zset member and score (the
/// score comes as its text). Guarded: a panic here would abort the server.
unsafe extern "C" fn on_element(
    _key: *mut raw::RedisModuleKey,
    field: *mut raw::RedisModuleString,
    value: *mut raw::RedisModuleString,
    privdata: *mut c_void,
) {
    guard::run("value scan", || {
        // SAFETY: the server's arguments for this call; `privdata` is the
        // `Scan` that `read` passed, alive for the call.
        unsafe { element(field, value, privdata) }
    });
}

unsafe fn element(
    field: *mut raw::RedisModuleString,
    value: *mut raw::RedisModuleString,
    privdata: *mut c_void,
) {
    if privdata.is_null() || field.is_null() {
        return;
    }
    let scan = &mut *privdata.cast::<Scan<'_>>();
    if scan.img.over() {
        return;
    }
    let f = RedisString::string_as_slice(field);
    let v = if value.is_null() {
        &[][..]
    } else {
        RedisString::string_as_slice(value)
    };
    match scan.kind {
        Kind::Hash => {
            scan.img.pair(scan.out, f, v);
        }
        Kind::Zset => {
            let score = std::str::from_utf8(v)
                .ok()
                .and_then(|t| t.parse::<f64>().ok())
                .unwrap_or(f64::NAN);
            scan.img.scored(scan.out, f, score);
        }
        _ => {
            scan.img.elem(scan.out, f);
        }
    }
}
