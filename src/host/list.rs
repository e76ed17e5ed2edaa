//! The fallback list: a real Redis list that holds records the
//! broker has not confirmed. Pushes go through the key API
//! (`RedisModule_ListPush` on an open key) plus one `RedisModule_Replicate`
//! of the equivalent `RPUSH`/`LPUSH` per chunk, so they reach the AOF and
//! replicas without a command's argument parsing and reply; where the key API
//! would skip a check `RedisModule_Call` makes (a cluster node: slot
//! ownership; near `maxmemory`: the OOM refusal; a value of
//! another type under the key), the push goes through `RedisModule_Call`
//! with `!`. Records leave the list only after the broker confirmed them
//! (`LTRIM` after the ack, one call per batch).
//!
//! Every operation runs in one fixed database ([`select`]), and no write is
//! made while the server asks modules to avoid replication traffic (CLIENT
//! PAUSE WRITE, FAILOVER): confirmed records then wait in `acked` until the
//! trim is allowed again.

use crate::engine::{Storage, StoreError};
use crate::host::rawkey::{local_list_len, push_direct, read_direct, CHUNK};
use crate::queue::Records;
use redis_module::{CallOptions, CallOptionsBuilder, CallReply, CallResult, Context};

/// `RedisModule_Call` options for writes: replicated (`!`), errors as replies, OOM-checked.
pub(crate) fn write_opts() -> CallOptions {
    write_options(true)
}

/// Write options, refused over `maxmemory` or not.
fn write_options(verify_oom: bool) -> CallOptions {
    let b = CallOptionsBuilder::new().replicate().errors_as_replies();
    if verify_oom {
        b.verify_oom().build()
    } else {
        b.build()
    }
}

/// `RedisModule_Call` options for reads: errors as replies.
pub(crate) fn read_opts() -> CallOptions {
    CallOptionsBuilder::new().errors_as_replies().build()
}

/// Selects the fallback database on `ctx` before any list operation: a timer
/// keeps the database of the context that armed it, which may be any.
pub fn select(ctx: &Context) -> Result<(), String> {
    let db = crate::config::FALLBACK_DB.get();
    let db = i32::try_from(db).map_err(|_| format!("fallback-db {db} is out of range"))?;
    // SAFETY: main thread, valid context.
    let ok = unsafe {
        redis_module::raw::RedisModule_SelectDb.map(|f| f(ctx.ctx, db))
            == Some(redis_module::raw::Status::Ok as std::os::raw::c_int)
    };
    if ok {
        Ok(())
    } else {
        Err(format!("cannot select fallback-db {db}"))
    }
}

/// True when the server asks modules not to write (CLIENT PAUSE WRITE,
/// FAILOVER, CLUSTER FAILOVER): a propagated write then fails an assertion.
/// Raw, because the crate's `avoid_replication_traffic` needs a `Context`
/// and INFO has none; the server function takes no argument.
pub fn writes_paused() -> bool {
    // SAFETY: takes no arguments; called on the main thread.
    unsafe { redis_module::raw::RedisModule_AvoidReplicaTraffic.is_some_and(|f| f() == 1) }
}

fn is_wrongtype(e: &str) -> bool {
    e.starts_with("WRONGTYPE")
}

fn err_text(r: CallResult<'_>) -> Result<CallReply<'_>, String> {
    r.map_err(|e| {
        e.to_utf8_string()
            .unwrap_or_else(|| "unknown error".to_string())
    })
}

/// The fallback key of this node, and what was found under it.
#[derive(Debug, Default, Clone)]
pub struct ListKey {
    /// The key (empty: no list here yet).
    pub key: String,
    /// Events about keys with this prefix are never forwarded (every node's list).
    pub key_prefix: String,
    /// Values of another type found under the key and renamed aside.
    pub moved_aside: u64,
}

impl ListKey {
    /// A list on `key`; `key_prefix` covers the lists of all nodes.
    pub fn new(key: String, key_prefix: String) -> Self {
        Self {
            key,
            key_prefix,
            moved_aside: 0,
        }
    }
}

/// The fallback list as a Redis list, for the engine ([`Storage`]). Built
/// for one timer tick or command, on the main thread, after [`select`].
pub struct RedisList<'a> {
    ctx: &'a Context,
    key: &'a mut ListKey,
    /// Writes are refused over `maxmemory` (all but durable-mode appends).
    oom_check: bool,
    /// The context is an execution unit that propagates what
    /// `RedisModule_Replicate` queued when it ends (a timer callback, a
    /// post-notification job): pushes may use the key API.
    unit: bool,
}

impl<'a> RedisList<'a> {
    /// The list under `key`, through `ctx`.
    pub fn new(ctx: &'a Context, key: &'a mut ListKey) -> Self {
        Self {
            ctx,
            key,
            oom_check: true,
            unit: false,
        }
    }

    /// Pushes may go through the key API: `ctx` is a timer callback's or a
    /// post-notification job's, whose end propagates what was replicated.
    /// Elsewhere (the SHUTDOWN filter, a server event) a replicated write
    /// could stay queued until after the final AOF write, so pushes there
    /// go through `RedisModule_Call`, which propagates at once.
    pub fn in_unit(mut self) -> Self {
        self.unit = true;
        self
    }

    /// Writes even over `maxmemory`: durable-mode appends, whose write was
    /// accepted already.
    pub fn without_oom_check(mut self) -> Self {
        self.oom_check = false;
        self
    }

    fn call(&self, cmd: &str, opts: &CallOptions, args: &[&[u8]]) -> Result<CallReply<'_>, String> {
        err_text(self.ctx.call_ext::<_, CallResult>(cmd, opts, args))
    }

    /// Renames a value of another type found under the key out of the way
    /// (`<key>:aside:<ms>`, same hash slot), so that the list can be used again.
    fn move_aside(&mut self) -> Result<(), StoreError> {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let aside = format!("{}:aside:{ms}", self.key.key);
        self.call(
            "RENAME",
            &write_opts(),
            &[self.key.key.as_bytes(), aside.as_bytes()],
        )
        .map_err(StoreError::Refused)?;
        self.key.moved_aside += 1;
        crate::host::log::warning(&format!(
            "key_evt_amqp: the fallback key '{}' held another type; renamed to '{aside}'",
            self.key.key
        ));
        Ok(())
    }

    /// Runs a command on the key; a value of another type is moved aside
    /// first (never while writes are paused).
    fn on_master(&self) -> bool {
        !self
            .ctx
            .get_flags()
            .contains(redis_module::ContextFlags::SLAVE)
    }

    fn on_key(&mut self, cmd: &str, opts: &CallOptions, args: &[&[u8]]) -> Result<i64, StoreError> {
        let key = self.key.key.clone();
        let mut all: Vec<&[u8]> = Vec::with_capacity(args.len() + 1);
        all.push(key.as_bytes());
        all.extend_from_slice(args);
        let first = self.call(cmd, opts, &all).map(|r| reply_int(&r));
        let reply = match first {
            // Only a master moves a value aside: a replica never writes.
            Err(e) if is_wrongtype(&e) && !writes_paused() && self.on_master() => {
                self.move_aside()?;
                self.call(cmd, opts, &all).map(|r| reply_int(&r))
            }
            other => other,
        };
        reply
            .map_err(StoreError::Refused)?
            .ok_or(StoreError::Unexpected("list command"))
    }
}

fn reply_int(r: &CallReply<'_>) -> Option<i64> {
    match r {
        CallReply::I64(n) => Some(n.to_i64()),
        CallReply::String(_) | CallReply::Array(_) => Some(0),
        _ => None,
    }
}

impl Storage for RedisList<'_> {
    fn usable(&self) -> bool {
        !self.key.key.is_empty()
    }

    fn writes_paused(&self) -> bool {
        writes_paused()
    }

    fn read_len(&mut self) -> Result<u64, StoreError> {
        if let Some(n) = local_list_len(self.ctx, self.key.key.as_bytes()) {
            return Ok(n);
        }
        // Another type under the key: LLEN moves it aside (on a master).
        self.on_key("LLEN", &read_opts(), &[])
            .map(|n| u64::try_from(n).unwrap_or(0))
    }

    fn append(&mut self, records: &Records) -> Result<u64, StoreError> {
        let refs: Vec<&[u8]> = records.iter().collect();
        self.push("RPUSH", &refs)
    }

    fn prepend(&mut self, records: &Records) -> Result<u64, StoreError> {
        let refs: Vec<&[u8]> = records.iter().rev().collect();
        self.push("LPUSH", &refs)
    }

    fn read(&mut self, start: usize, n: usize) -> Result<Records, StoreError> {
        let n = n.max(1);
        if !self.in_cluster() {
            if let Some(out) = read_direct(self.ctx, self.key.key.as_bytes(), start, n) {
                return Ok(out);
            }
        }
        let from = start.to_string();
        let to = (start + n - 1).to_string();
        let reply = self
            .call(
                "LRANGE",
                &read_opts(),
                &[self.key.key.as_bytes(), from.as_bytes(), to.as_bytes()],
            )
            .map_err(StoreError::Refused)?;
        let CallReply::Array(items) = reply else {
            return Err(StoreError::Unexpected("LRANGE"));
        };
        let mut out = Records::with_capacity(items.len(), items.len() * 64);
        for item in items.iter() {
            if let Ok(CallReply::String(s)) = item {
                out.push_with(|d| d.extend_from_slice(s.as_bytes()));
            }
        }
        Ok(out)
    }

    fn trim_front(&mut self, n: u64) -> Result<(), StoreError> {
        let from = n.to_string();
        self.on_key("LTRIM", &write_opts(), &[from.as_bytes(), b"-1"])
            .map(|_| ())
    }
}

impl RedisList<'_> {
    fn push(&mut self, cmd: &str, records: &[&[u8]]) -> Result<u64, StoreError> {
        if records.is_empty() {
            return self.read_len();
        }
        if self.unit && self.direct_ok() {
            if let Some(len) = push_direct(self.ctx, self.key.key.as_bytes(), cmd, records)? {
                return Ok(len);
            }
        }
        let mut len = 0;
        let opts = write_options(self.oom_check);
        for chunk in records.chunks(CHUNK) {
            len = self.on_key(cmd, &opts, chunk)?;
        }
        Ok(u64::try_from(len).unwrap_or(0))
    }

    /// The key API may push here: not a cluster node (it makes no slot
    /// check), and, for writes refused over `maxmemory`, used memory under
    /// [`DIRECT_MEMORY_RATIO`] of it (`RedisModule_Call` with `M` refuses a write
    /// there when the server is over `maxmemory`; it does not evict).
    fn direct_ok(&self) -> bool {
        if self.in_cluster() {
            return false;
        }
        if !self.oom_check {
            return true;
        }
        // SAFETY: takes no arguments; main thread. 0 when maxmemory is off.
        let ratio = unsafe { redis_module::raw::RedisModule_GetUsedMemoryRatio.map(|f| f()) };
        ratio.is_some_and(|r| r < DIRECT_MEMORY_RATIO)
    }

    /// A cluster node: the key API would skip the slot check that
    /// `RedisModule_Call` makes (a list whose slot moved answers `MOVED`).
    fn in_cluster(&self) -> bool {
        self.ctx
            .get_flags()
            .contains(redis_module::ContextFlags::CLUSTER)
    }
}

/// Used memory (as a share of `maxmemory`) under which a push may skip
/// `RedisModule_Call`'s OOM check: one chunk cannot reach the limit.
const DIRECT_MEMORY_RATIO: f32 = 0.9;
