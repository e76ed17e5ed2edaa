//! Values in events (`key_evt_amqp.values`, `format json`).
//!
//! - After-images: the keyspace callback opens the key READ (it sees the
//!   value just written) and writes the value straight into the record.
//! - Before-images: the server event `RedisModuleEvent_Key` (Redis 7.2+,
//!   Valkey 8+) fires before a key is deleted, expired, evicted or
//!   overwritten, with the key opened READ on the value about to go. Its
//!   image is stashed here and attached to the next keyspace event of the
//!   same key (an `expired` / `evicted` image only to that event); a
//!   post-notification job drops what no event took at the end of the
//!   execution unit.
//!
//! Values are read through the low-level key API (an after-image's string
//! through `GET`, see [`read`]), and never past `value-max-bytes` (see
//! [`crate::json::Image`]). Values need a server whose `OpenKey` takes the
//! flags below (Redis 7.2+, Valkey 8+): on Redis 7.0 opening a key in the
//! callback could expire it or notify a miss, so values are refused there.

use crate::host::{guard, state};
use crate::json::{self, Format, Kind, Values};
use redis_module::{raw, Context, RedisString};
use std::cell::{Cell, RefCell};
use std::os::raw::{c_int, c_void};

/// The most before-images held at once (a safety bound: the job empties
/// the stash at the end of every execution unit).
const STASH_MAX: usize = 64;

/// A before-image waiting for its keyspace event.
struct Stashed {
    db: i32,
    key: Vec<u8>,
    subevent: u64,
    image: Vec<u8>,
}

thread_local! {
    static STASH: RefCell<Vec<Stashed>> = const { RefCell::new(Vec::new()) };
    static CLEAR_ARMED: Cell<bool> = const { Cell::new(false) };
    static SUBSCRIBED: Cell<bool> = const { Cell::new(false) };
    static OWN_CTX: Cell<*mut raw::RedisModuleCtx> = const { Cell::new(std::ptr::null_mut()) };
    static OVERWRITE_UNREADABLE: Cell<bool> = const { Cell::new(false) };
}

fn key_event() -> raw::RedisModuleEvent {
    raw::RedisModuleEvent {
        id: raw::REDISMODULE_EVENT_KEY,
        dataver: 1,
    }
}

/// The server has `RedisModuleEvent_Key` (Redis 7.2+, Valkey 8+): before
/// images are possible.
pub fn key_event_supported() -> bool {
    // SAFETY: reads a function pointer the server filled in at load, and
    // calls it with a plain value.
    unsafe {
        raw::RedisModule_IsSubEventSupported.is_some_and(|f| {
            f(key_event(), raw::REDISMODULE_SUBEVENT_KEY_DELETED) != 0
                && f(key_event(), raw::REDISMODULE_SUBEVENT_KEY_OVERWRITTEN) != 0
        })
    }
}

/// The server's `OpenKey` honours the flags of [`OPEN`](crate::host::image::OPEN) (Redis 7.2+,
/// Valkey 8+; `RedisModule_GetOpenKeyModesAll` came with them).
pub fn open_flags_supported() -> bool {
    // SAFETY: reads a function pointer the server filled in at load.
    unsafe { raw::RedisModule_GetOpenKeyModesAll }.is_some()
}

/// The refusal of `values after` on a server whose `OpenKey` ignores the
/// flags of [`OPEN`](crate::host::image::OPEN).
pub const NO_OPEN_FLAGS: &str = "values need a server whose keys can be read without side effects (OpenKey flags NOTOUCH, NONOTIFY, NOEXPIRE: Redis 7.2+ or Valkey 8+); this server has none";

/// The refusal of `values before|both` on a server without the key event.
pub const NO_KEY_EVENT: &str = "values before and both need the server's key event (RedisModuleEvent_Key: Redis 7.2+ or Valkey 8+); this server has none";

/// Keeps a context of the module's own (detached) for later changes of
/// the key-event subscription (config changes and loading events come
/// without one that could subscribe), and subscribes when `want`. At load.
/// `hashtable_keyspace`: the server is Valkey 8.1 or later, where a string
/// replaced by a write cannot be read in the key event (see
/// [`unreadable_overwrite`]).
pub fn init(ctx: &Context, want: bool, hashtable_keyspace: bool) {
    OVERWRITE_UNREADABLE.with(|c| c.set(hashtable_keyspace));
    // SAFETY: OnLoad, valid context; the detached context lives until unload.
    let own = unsafe { raw::RedisModule_GetDetachedThreadSafeContext.map(|f| f(ctx.ctx)) };
    if let Some(own) = own.filter(|c| !c.is_null()) {
        OWN_CTX.with(|c| c.set(own));
    }
    follow(want);
}

/// Frees the module's own context (a clean unload).
pub fn release() {
    let own = OWN_CTX.with(|c| c.replace(std::ptr::null_mut()));
    if !own.is_null() {
        // SAFETY: the detached context made in `init`, freed once.
        unsafe {
            if let Some(free) = raw::RedisModule_FreeThreadSafeContext {
                free(own);
            }
        }
    }
    SUBSCRIBED.with(|s| s.set(false));
}

/// Whether the module listens to the key event: only while before-images
/// are wanted (`values before|both` with `format json`), the server has the
/// event, and no load is under way.
///
/// While any module listens, the server builds a key handle for every
/// deleted or overwritten key, and an RDB load that replaces keys (`DEBUG
/// RELOAD ... MERGE`) hands it a key name on the stack, which Redis 8.2 and
/// Valkey 9.1 refuse with a panic ("You tried to retain an object allocated
/// in the stack"). Not listening when no image is wanted also spares every
/// overwrite and delete a module callback.
pub fn wanted(s: &crate::config::Settings, loading: bool) -> bool {
    s.values.before() && s.format == Format::Json && !loading && key_event_supported()
}

/// Subscribes to the key event or unsubscribes from it, as `want` says.
///
/// Called from the loading event's handler too, while the server walks its
/// list of listeners: removing a listener there is safe because the node
/// after the loading listener is always another of this module's own (the
/// crate subscribes role, loading, flush, module, config and cron events
/// together at load, and this module handles config events), never the key
/// event's, which is subscribed after them.
pub fn follow(want: bool) {
    if SUBSCRIBED.with(Cell::get) == want {
        return;
    }
    let own = OWN_CTX.with(Cell::get);
    if own.is_null() {
        return;
    }
    let callback: raw::RedisModuleEventCallback = if want { Some(on_key_event) } else { None };
    // SAFETY: the module's detached context; a NULL callback unsubscribes.
    let ok = unsafe {
        raw::RedisModule_SubscribeToServerEvent
            .is_some_and(|sub| sub(own, key_event(), callback) == raw::Status::Ok as c_int)
    };
    if ok {
        SUBSCRIBED.with(|s| s.set(want));
        if !want {
            STASH.with(|s| s.borrow_mut().clear());
        }
    }
}

/// Follows the settings in force (after a change): listens to the key
/// event while before-images are wanted (see [`wanted`]).
pub fn follow_settings(st: &crate::host::state::State) {
    follow(wanted(st.engine.settings(), st.engine.is_loading()));
}

/// The module listens to the key event now (for INFO and tests).
pub fn subscribed() -> bool {
    SUBSCRIBED.with(Cell::get)
}

extern "C" fn on_key_event(
    ctx: *mut raw::RedisModuleCtx,
    _eid: raw::RedisModuleEvent,
    subevent: u64,
    data: *mut c_void,
) {
    guard::run("key event", || {
        if data.is_null() {
            return;
        }
        // SAFETY: for this event the server passes a `RedisModuleKeyInfoV1`.
        let kp = unsafe { (*(data as *const raw::RedisModuleKeyInfo)).key };
        if kp.is_null() {
            return;
        }
        let wanted = state::with(|st| {
            let s = st.engine.settings();
            if !s.values.before() || s.format != Format::Json {
                return None;
            }
            if !st.engine.is_master() || st.engine.is_loading() {
                return None;
            }
            // SAFETY: a live key handle from the server.
            let name = unsafe { raw::RedisModule_GetKeyNameFromModuleKey.map(|f| f(kp)) }?;
            if name.is_null() {
                return None;
            }
            let key = RedisString::string_as_slice(name.cast_mut());
            let prefix = st.list_key.key_prefix.as_bytes();
            if key.starts_with(prefix) || !s.masks.matches(key) {
                return None;
            }
            Some((
                key.to_vec(),
                usize::try_from(s.value_max_bytes).unwrap_or(usize::MAX),
            ))
        })
        .flatten();
        let Some((key, cap)) = wanted else {
            return;
        };
        // SAFETY: a live key handle from the server.
        let db = unsafe { raw::RedisModule_GetDbIdFromModuleKey.map_or(0, |f| f(kp)) };
        let mut image = Vec::new();
        // SAFETY: a live key handle from the server.
        if unsafe { unreadable_overwrite(kp, subevent) } {
            json::push_omitted_unreadable(&mut image, Kind::String);
        // SAFETY: the server's key handle, opened READ; `ctx` is live.
        } else if !unsafe { crate::host::image::read(ctx, kp, None, cap, &mut image) } {
            return;
        }
        STASH.with(|s| {
            let mut s = s.borrow_mut();
            s.retain(|e| !(e.db == db && e.key == key));
            if s.len() >= STASH_MAX {
                s.remove(0);
            }
            s.push(Stashed {
                db,
                key,
                subevent,
                image,
            });
        });
        arm_clear(ctx);
    });
}

/// True when the key event reports a string about to be overwritten on
/// Valkey 8.1 or later: its before-image is left out.
///
/// There the key event of an overwrite fires from `dbSetValue` while the
/// server holds a reference into its keyspace hash table (`oldref`), and
/// `RedisModule_StringDMA` of a string that is not raw (small, or an
/// integer) replaces the value through a second lookup
/// (`dbUnshareStringValue`). A lookup during incremental rehashing moves a
/// bucket, so the server then reads and writes through a stale reference:
/// use after free, a lost write, and a crash ("Unknown object type",
/// Valkey 9.1.2, found by the leak check under memcheck). Reading the
/// string any other way (a `GET`) is a lookup too. Deletes, expiry and
/// eviction fire the key event inside a two-phase pop, which pauses
/// rehashing: their strings are read.
///
/// # Safety
/// `kp` must be the live key handle of the key event.
unsafe fn unreadable_overwrite(kp: *mut raw::RedisModuleKey, subevent: u64) -> bool {
    subevent == raw::REDISMODULE_SUBEVENT_KEY_OVERWRITTEN
        && OVERWRITE_UNREADABLE.with(Cell::get)
        && raw::RedisModule_KeyType
            .is_some_and(|t| t(kp) == raw::REDISMODULE_KEYTYPE_STRING as c_int)
}

/// Arms the job that empties the stash at the end of the execution unit.
fn arm_clear(ctx: *mut raw::RedisModuleCtx) {
    if CLEAR_ARMED.with(Cell::get) {
        return;
    }
    let armed = Context::new(ctx).add_post_notification_job(|_| {
        guard::run("values job", || {
            CLEAR_ARMED.with(|a| a.set(false));
            STASH.with(|s| s.borrow_mut().clear());
        });
    });
    if armed.is_ok() {
        CLEAR_ARMED.with(|a| a.set(true));
    }
}

/// Takes the before-image stashed for this event of `key`, if any.
fn take(db: i32, key: &[u8], event: &[u8]) -> Option<Vec<u8>> {
    STASH.with(|s| {
        let mut s = s.borrow_mut();
        if s.is_empty() {
            return None;
        }
        let i = s.iter().position(|e| e.db == db && e.key == key)?;
        let fits = match s[i].subevent {
            raw::REDISMODULE_SUBEVENT_KEY_EXPIRED => event == b"expired",
            raw::REDISMODULE_SUBEVENT_KEY_EVICTED => event == b"evicted",
            _ => true,
        };
        fits.then(|| s.remove(i).image)
    })
}

/// Appends the `,"before":...` and `,"after":...` members that `v` asks
/// for to the JSON record of `event` on `key` in `db`. `keyobj` is the key
/// string the server passed to the keyspace callback (`key` is its bytes).
///
/// # Safety
/// `ctx` must be the live context of the callback this runs in, with the
/// key's database selected, and `keyobj` a live string holding `key`.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) unsafe fn images(
    ctx: *mut raw::RedisModuleCtx,
    keyobj: *mut raw::RedisModuleString,
    db: i32,
    event: &[u8],
    key: &[u8],
    v: Values,
    cap: usize,
    out: &mut Vec<u8>,
) {
    if v.before() {
        if let Some(b) = take(db, key, event) {
            out.extend_from_slice(b",\"before\":");
            out.extend_from_slice(&b);
        }
    }
    if v.after() {
        // SAFETY: the callback's live context and key string.
        unsafe { crate::host::image::after_image(ctx, keyobj, cap, out) };
    }
}

/// [`images`] for a key known by its name only, in database `db` (the
/// context's database is put back afterwards).
pub(crate) fn images_by_name(
    ctx: &Context,
    db: i32,
    event: &[u8],
    key: &[u8],
    v: Values,
    cap: usize,
    out: &mut Vec<u8>,
) {
    if v == Values::None {
        return;
    }
    let name = ctx.create_string(key);
    with_db(ctx, db, || {
        // SAFETY: the caller's live context, `db` selected; `name` holds `key`.
        unsafe { images(ctx.ctx, name.inner, db, event, key, v, cap, out) };
    });
}

/// Runs `f` with `db` selected on `ctx`, then selects the database that was.
pub(crate) fn with_db<R>(ctx: &Context, db: i32, f: impl FnOnce() -> R) -> R {
    // SAFETY: main thread, valid context; plain calls with values.
    unsafe {
        let before = raw::RedisModule_GetSelectedDb.map_or(0, |g| g(ctx.ctx));
        let select = raw::RedisModule_SelectDb;
        if before != db {
            if let Some(s) = select {
                s(ctx.ctx, db);
            }
        }
        let r = f();
        if before != db {
            if let Some(s) = select {
                s(ctx.ctx, before);
            }
        }
        r
    }
}
