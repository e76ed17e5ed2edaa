//! `key_evt_amqp.snapshot`: walks the keyspace with the module scan API,
//! a bounded slice of main-thread time per tick (`snapshot-slice-us`), and
//! queues one `snapshot` record per key that passes the masks, with its
//! after-image when `values` asks for one, framed by `snapshot_begin` and
//! `snapshot_end` records per database (see [`crate::snapshot`]).
//!
//! A key's record is queued when the key is read, on the main thread:
//! every write to that key before it was queued before it, every write
//! after it is queued after it. The walk waits while the backlog (queue,
//! in flight, fallback list) is at `snapshot-backlog-max` or the queue holds
//! half of `queue-max-bytes`, so its memory stays within the queue's bound.
//! Only masters walk, each the keys it holds (in a cluster, the slots it
//! serves; keys of a slot being imported or trimmed by an atomic migration
//! are skipped); the walk ends if the node stops being a master.

use crate::config::{QUEUE_MAX_BYTES, SNAPSHOT_BACKLOG_MAX, SNAPSHOT_SLICE_US};
use crate::engine::{Accepted, Origin};
use crate::host::scan::Cursor;
use crate::host::state::State;
use crate::host::{deferred, outbox, values};
use crate::json::Values;
use crate::snapshot::{Phase, Request};
use redis_module::{raw, Context, RedisString};
use std::os::raw::{c_int, c_void};
use std::time::{Duration, Instant};

/// How many databases the server has (`CONFIG GET databases`).
fn databases(ctx: &Context) -> i32 {
    match ctx.call("CONFIG", &["GET", "databases"]) {
        Ok(redis_module::RedisValue::Array(v)) => match v.get(1) {
            Some(redis_module::RedisValue::SimpleString(n))
            | Some(redis_module::RedisValue::BulkString(n)) => n.parse().unwrap_or(16),
            _ => 16,
        },
        _ => 16,
    }
}

/// Starts or cancels the walk (`STATUS` is answered by [`status`]).
pub fn request(ctx: &Context, st: &mut State, req: crate::snapshot::Request) -> Result<(), String> {
    let now = Instant::now();
    match req {
        Request::Status => Ok(()),
        Request::Cancel => {
            st.snapshot.walk.stop(Phase::Cancelled, now);
            st.snapshot.cursor = None;
            Ok(())
        }
        Request::Start(db) => {
            let count = if st.cluster { 1 } else { databases(ctx) };
            let dbs = match db {
                Some(d) if d >= count => {
                    return Err(format!(
                        "ERR invalid DB '{d}': this server has databases 0..{}",
                        count - 1
                    ))
                }
                Some(d) => vec![d],
                None => (0..count).collect(),
            };
            if !st.engine.is_master() {
                // Cluster replicas get the broadcast too: only masters walk.
                return if st.cluster {
                    Ok(())
                } else {
                    Err("ERR this node is a replica: the snapshot runs on a master".into())
                };
            }
            st.snapshot.walk.start(dbs, now);
            st.snapshot.cursor = None;
            st.snapshot.scanned = false;
            Ok(())
        }
    }
}

/// `SWAPDB a b` ran: the walk reads the swapped databases again (see
/// [`Walk::swapped`]).
pub fn swapped(st: &mut State, a: i32, b: i32) {
    if st.snapshot.walk.swapped(a, b) {
        st.snapshot.cursor = Cursor::new();
        st.snapshot.scanned = false;
    }
}

/// `STATUS`: where the walk stands, as `name value` pairs.
pub fn status(st: &State) -> Vec<(&'static str, String)> {
    st.snapshot.walk.status(Instant::now())
}

/// Where a snapshot record is encoded: the walked database, and the key's
/// after-image read now.
struct Read<'a> {
    ctx: &'a Context,
    keyobj: *mut raw::RedisModuleString,
    outbox: bool,
}

impl Origin for Read<'_> {
    fn db(&self) -> i32 {
        0
    }

    fn now_secs(&self) -> u64 {
        crate::event::now_secs()
    }

    fn outbox(&self) -> bool {
        self.outbox
    }

    fn values(&self, db: i32, event: &[u8], key: &[u8], v: Values, cap: usize, out: &mut Vec<u8>) {
        if v.after() && !self.keyobj.is_null() {
            // SAFETY: the timer's live context with the walked database
            // selected, and the key's live string.
            unsafe {
                values::images(
                    self.ctx.ctx,
                    self.keyobj,
                    db,
                    event,
                    key,
                    Values::After,
                    cap,
                    out,
                )
            };
        }
    }
}

/// Where a marker is encoded: `snapshot_end` carries `"keys"` in JSON.
struct Marker {
    keys: Option<u64>,
    outbox: bool,
}

impl Origin for Marker {
    fn db(&self) -> i32 {
        0
    }

    fn now_secs(&self) -> u64 {
        crate::event::now_secs()
    }

    fn outbox(&self) -> bool {
        self.outbox
    }

    fn values(&self, _: i32, _: &[u8], _: &[u8], _: Values, _: usize, out: &mut Vec<u8>) {
        if let Some(n) = self.keys {
            out.extend_from_slice(b",\"keys\":");
            crate::json::push_u64(out, n);
        }
    }
}

/// Collects the key names one `RedisModule_Scan` step hands over.
unsafe extern "C" fn on_key(
    _ctx: *mut raw::RedisModuleCtx,
    keyname: *mut raw::RedisModuleString,
    _key: *mut raw::RedisModuleKey,
    privdata: *mut c_void,
) {
    crate::host::guard::run("snapshot scan", || {
        if keyname.is_null() || privdata.is_null() {
            return;
        }
        // SAFETY: `privdata` is the name list `step` passed, alive for the call.
        let names = unsafe { &mut *privdata.cast::<Vec<Vec<u8>>>() };
        names.push(RedisString::string_as_slice(keyname).to_vec());
    });
}

/// True when the key holds a value (read without side effects).
fn exists(ctx: &Context, keyobj: *mut raw::RedisModuleString) -> bool {
    // SAFETY: main thread, valid context and key string; the key is closed here.
    unsafe {
        let (Some(open), Some(close), Some(kind)) = (
            raw::RedisModule_OpenKey,
            raw::RedisModule_CloseKey,
            raw::RedisModule_KeyType,
        ) else {
            return false;
        };
        let kp = open(ctx.ctx, keyobj, crate::host::image::OPEN);
        if kp.is_null() {
            return false;
        }
        let there = kind(kp) != raw::REDISMODULE_KEYTYPE_EMPTY as c_int;
        close(kp);
        there
    }
}

/// Queues the `snapshot` record of one key, if it still holds a value and
/// passes the masks.
fn send_key(ctx: &Context, st: &mut State, db: i32, key: &[u8], outbox: bool) {
    let prefix = st.list_key.key_prefix.as_bytes();
    if key.starts_with(prefix)
        || st.moves.is_silent(key)
        || !st.engine.settings().masks.matches(key)
    {
        return;
    }
    let name = ctx.create_string(key);
    if !exists(ctx, name.inner) {
        return;
    }
    let origin = Read {
        ctx,
        keyobj: name.inner,
        outbox,
    };
    if st.engine.snapshot_record(b"snapshot", db, key, &origin) != Accepted::Skipped {
        st.snapshot.walk.sent();
    }
}

fn marker(st: &mut State, event: &[u8], db: i32, keys: Option<u64>, outbox: bool) {
    let key = keys.map(|n| n.to_string().into_bytes()).unwrap_or_default();
    st.engine
        .snapshot_record(event, db, &key, &Marker { keys, outbox });
}

/// The walk's share of a tick: goes on for up to `snapshot-slice-us`
/// unless the backlog is too long. Records go where the events of a tick
/// go (the queue, or the list in durable mode); the timer re-arms itself,
/// so nothing here brings it forward. True when records were appended to
/// the list (the caller sends them soon).
pub fn step(ctx: &Context, st: &mut State) -> bool {
    if !st.snapshot.walk.running() {
        return false;
    }
    let now = Instant::now();
    if !st.engine.is_master() {
        st.snapshot
            .walk
            .stop(Phase::Aborted("no longer a master".into()), now);
        st.snapshot.cursor = None;
        return false;
    }
    if st.engine.is_loading() {
        return false;
    }
    let backlog =
        st.engine.queue_len() as u64 + st.engine.inflight_events() as u64 + st.engine.list().len;
    let over = backlog >= SNAPSHOT_BACKLOG_MAX.get().unsigned_abs()
        || st.engine.queue_bytes() >= QUEUE_MAX_BYTES.get_usize() / 2;
    st.snapshot.walk.paused = over;
    if over {
        return false;
    }
    let deadline = now + Duration::from_micros(SNAPSHOT_SLICE_US.get().unsigned_abs());
    let outbox = st.outbox_usable();
    while Instant::now() < deadline {
        let Some(db) = st.snapshot.walk.db(Instant::now()) else {
            st.snapshot.cursor = None;
            crate::host::log::notice(&format!(
                "key_evt_amqp: snapshot done: {} keys in {:.3} s",
                st.snapshot.walk.keys_sent,
                st.snapshot.walk.elapsed(Instant::now()).as_secs_f64()
            ));
            break;
        };
        // SAFETY: main thread, valid context.
        let selected = unsafe {
            raw::RedisModule_SelectDb.is_some_and(|f| f(ctx.ctx, db) == raw::Status::Ok as c_int)
        };
        if !selected {
            st.snapshot.walk.stop(
                Phase::Aborted(format!("cannot select db {db}")),
                Instant::now(),
            );
            st.snapshot.cursor = None;
            break;
        }
        if st.snapshot.walk.current.as_ref().is_some_and(|c| !c.began) {
            marker(st, b"snapshot_begin", db, None, outbox);
            if let Some(c) = st.snapshot.walk.current.as_mut() {
                c.began = true;
            }
            st.snapshot.cursor = Cursor::new();
            st.snapshot.scanned = false;
        }
        if st.snapshot.walk.carry.is_empty() && !st.snapshot.scanned {
            let mut names: Vec<Vec<u8>> = Vec::new();
            let more = match (&st.snapshot.cursor, unsafe { raw::RedisModule_Scan }) {
                // SAFETY: main thread, valid context and cursor; `names`
                // outlives the call, and the callback only reads the key name.
                (Some(c), Some(scan)) => unsafe {
                    scan(
                        ctx.ctx,
                        c.0,
                        Some(on_key),
                        (&mut names as *mut Vec<Vec<u8>>).cast(),
                    ) != 0
                },
                _ => false,
            };
            st.snapshot.scanned = !more;
            // Sent oldest first: the carry is taken from its end.
            names.reverse();
            st.snapshot.walk.carry = names;
        }
        while let Some(key) = st.snapshot.walk.carry.pop() {
            send_key(ctx, st, db, &key, outbox);
            // A key the read found expired was deleted on the spot: its
            // `expired` event goes right behind the record.
            deferred::drain(ctx, st);
            if Instant::now() >= deadline {
                break;
            }
        }
        if st.snapshot.walk.carry.is_empty() && st.snapshot.scanned {
            if let Some((db, keys)) = st.snapshot.walk.db_done() {
                marker(st, b"snapshot_end", db, Some(keys), outbox);
            }
            st.snapshot.cursor = None;
        }
    }
    if crate::host::list::select(ctx).is_err() {
        return false;
    }
    st.engine.outbox_waiting() && outbox::flush(ctx, st)
}
