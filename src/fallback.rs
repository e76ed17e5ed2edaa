//! The fallback list ("backlog"): a real Redis list that holds records the
//! broker has not confirmed. Writes go through `RedisModule_Call` with `!`,
//! so they reach the AOF and replicas; records leave the list only after the
//! broker confirmed them (`LTRIM` after the ack).
//!
//! Every operation runs in one fixed database ([`select`]), and no write is
//! made while the server asks modules to avoid replication traffic (CLIENT
//! PAUSE WRITE, FAILOVER): confirmed records then wait in `acked` until the
//! trim is allowed again.

use crate::queue::Records;
use redis_module::{CallOptions, CallOptionsBuilder, CallReply, CallResult, Context};

/// Most arguments sent in one `RPUSH`/`LPUSH`.
const CHUNK: usize = 1024;

/// `RedisModule_Call` options for writes: replicated (`!`), errors as replies, OOM-checked.
pub(crate) fn write_opts() -> CallOptions {
    CallOptionsBuilder::new()
        .replicate()
        .errors_as_replies()
        .verify_oom()
        .build()
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

/// Our view of the list.
#[derive(Debug, Default)]
pub struct Backlog {
    /// The key.
    pub key: String,
    /// Events about keys with this prefix are never forwarded (every node's backlog).
    pub key_prefix: String,
    /// Length as last written or read.
    pub len: u64,
    /// Records at the head of the list that are published and not settled.
    pub head_inflight: usize,
    /// Confirmed records at the head, not trimmed yet (writes were paused).
    pub acked: usize,
    /// Keys of the wrong type found under the fallback key and renamed aside.
    pub moved_aside: u64,
    /// Bumped whenever the head changes behind in-flight records (cap, loss),
    /// so their later confirms trim nothing.
    pub epoch: u64,
    /// When the real length was last read; `None` forces a read on the next tick.
    pub synced_at: Option<std::time::Instant>,
}

impl Backlog {
    /// A backlog on `key`; `key_prefix` covers the backlogs of all nodes.
    pub fn new(key: String, key_prefix: String) -> Self {
        Self {
            key,
            key_prefix,
            ..Self::default()
        }
    }

    /// The head moved under records read from it: forget what was read, so
    /// that their confirms trim nothing and they are read again.
    fn reset_head(&mut self) {
        if self.head_inflight > 0 || self.acked > 0 {
            self.head_inflight = 0;
            self.acked = 0;
            self.epoch += 1;
        }
    }

    /// Renames a value of another type found under the key out of the way
    /// (`<key>:aside:<ms>`, same hash slot), so that the list can be used again.
    fn move_aside(&mut self, ctx: &Context) -> Result<(), String> {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let aside = format!("{}:aside:{ms}", self.key);
        err_text(ctx.call_ext::<_, CallResult>(
            "RENAME",
            &write_opts(),
            &[self.key.as_str(), aside.as_str()],
        ))?;
        self.moved_aside += 1;
        self.len = 0;
        self.reset_head();
        crate::log::warning(&format!(
            "key_evt_amqp: the fallback key '{}' held another type; renamed to '{aside}'",
            self.key
        ));
        Ok(())
    }

    fn push(&mut self, ctx: &Context, cmd: &str, records: &[&[u8]]) -> Result<(), String> {
        let key = self.key.clone();
        for chunk in records.chunks(CHUNK) {
            let mut args: Vec<&[u8]> = Vec::with_capacity(chunk.len() + 1);
            args.push(key.as_bytes());
            args.extend_from_slice(chunk);
            let mut reply =
                err_text(ctx.call_ext::<_, CallResult>(cmd, &write_opts(), args.as_slice()));
            if reply.as_ref().is_err_and(|e| is_wrongtype(e)) {
                self.move_aside(ctx)?;
                reply =
                    err_text(ctx.call_ext::<_, CallResult>(cmd, &write_opts(), args.as_slice()));
            }
            match reply? {
                CallReply::I64(n) => self.len = u64::try_from(n.to_i64()).unwrap_or(0),
                _ => return Err(format!("unexpected reply to {cmd}")),
            }
        }
        Ok(())
    }

    /// Appends records at the tail, oldest first.
    pub fn append(&mut self, ctx: &Context, records: &Records) -> Result<(), String> {
        let refs: Vec<&[u8]> = records.iter().collect();
        self.push(ctx, "RPUSH", &refs)
    }

    /// Puts records back at the head, keeping their order.
    pub fn prepend(&mut self, ctx: &Context, records: &Records) -> Result<(), String> {
        let refs: Vec<&[u8]> = records.iter().rev().collect();
        self.push(ctx, "LPUSH", &refs)?;
        self.reset_head();
        Ok(())
    }

    /// Drops the oldest records beyond `cap` (> 0); returns how many.
    pub fn enforce_cap(&mut self, ctx: &Context, cap: u64) -> Result<u64, String> {
        if cap == 0 || self.len <= cap {
            return Ok(0);
        }
        let excess = self.len - cap;
        let start = format!("-{cap}");
        err_text(ctx.call_ext::<_, CallResult>(
            "LTRIM",
            &write_opts(),
            &[self.key.as_str(), start.as_str(), "-1"],
        ))?;
        self.len = cap;
        self.reset_head();
        Ok(excess)
    }

    /// Reads up to `n` records after the confirmed and in-flight head, without removing them.
    pub fn read(&mut self, ctx: &Context, n: usize) -> Result<Records, String> {
        let start = self.acked + self.head_inflight;
        let from = start.to_string();
        let to = (start + n - 1).to_string();
        let reply = err_text(ctx.call_ext::<_, CallResult>(
            "LRANGE",
            &read_opts(),
            &[self.key.as_str(), from.as_str(), to.as_str()],
        ))?;
        let CallReply::Array(items) = reply else {
            return Err("unexpected reply to LRANGE".into());
        };
        let mut out = Records::with_capacity(items.len(), items.len() * 64);
        for item in items.iter() {
            if let Ok(CallReply::String(s)) = item {
                out.push_with(|d| d.extend_from_slice(s.as_bytes()));
            }
        }
        self.head_inflight += out.len();
        Ok(out)
    }

    /// Removes the confirmed records (`acked`) from the head, unless the list
    /// changed behind the module's back since it was read (a client pushed or
    /// popped): then nothing is trimmed and the head is read again. Returns
    /// how many records vanished, as [`Backlog::sync_len`] does.
    pub fn trim_acked(&mut self, ctx: &Context) -> Result<u64, String> {
        if self.acked == 0 {
            return Ok(0);
        }
        let before = self.len;
        let lost = self.sync_len(ctx)?;
        if self.len != before {
            self.reset_head();
            return Ok(lost);
        }
        let from = self.acked.to_string();
        let trimmed = err_text(ctx.call_ext::<_, CallResult>(
            "LTRIM",
            &write_opts(),
            &[self.key.as_str(), from.as_str(), "-1"],
        ));
        match trimmed {
            Ok(_) => {
                self.len = self.len.saturating_sub(self.acked as u64);
                self.acked = 0;
                Ok(lost)
            }
            Err(e) => {
                self.reset_head();
                Err(e)
            }
        }
    }

    /// Reads the real length; returns how many records vanished behind our
    /// back. Any change not made by the module resets the head.
    pub fn sync_len(&mut self, ctx: &Context) -> Result<u64, String> {
        let mut reply =
            err_text(ctx.call_ext::<_, CallResult>("LLEN", &read_opts(), &[self.key.as_str()]));
        if reply.as_ref().is_err_and(|e| is_wrongtype(e)) && !writes_paused() {
            self.move_aside(ctx)?;
            reply =
                err_text(ctx.call_ext::<_, CallResult>("LLEN", &read_opts(), &[self.key.as_str()]));
        }
        let real = match reply? {
            CallReply::I64(n) => u64::try_from(n.to_i64()).unwrap_or(0),
            _ => return Err("unexpected reply to LLEN".into()),
        };
        let lost = self.len.saturating_sub(real);
        if real != self.len {
            self.reset_head();
        }
        self.len = real;
        Ok(lost)
    }
}
