//! The fallback list ("backlog"): a real Redis list that holds records the
//! broker has not confirmed. Writes go through `RedisModule_Call` with `!`,
//! so they reach the AOF and replicas; records leave the list only after the
//! broker confirmed them (`LTRIM` after the ack).

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

    fn push(&mut self, ctx: &Context, cmd: &str, records: &[&[u8]]) -> Result<(), String> {
        for chunk in records.chunks(CHUNK) {
            let mut args: Vec<&[u8]> = Vec::with_capacity(chunk.len() + 1);
            args.push(self.key.as_bytes());
            args.extend_from_slice(chunk);
            match err_text(ctx.call_ext::<_, CallResult>(cmd, &write_opts(), args.as_slice()))? {
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
        if self.head_inflight > 0 {
            self.head_inflight = 0;
            self.epoch += 1;
        }
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
        if self.head_inflight > 0 {
            self.head_inflight = 0;
            self.epoch += 1;
        }
        Ok(excess)
    }

    /// Reads up to `n` records after the in-flight head, without removing them.
    pub fn read(&mut self, ctx: &Context, n: usize) -> Result<Records, String> {
        let from = self.head_inflight.to_string();
        let to = (self.head_inflight + n - 1).to_string();
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

    /// Removes `n` confirmed records from the head.
    pub fn trim_front(&mut self, ctx: &Context, n: usize) -> Result<(), String> {
        if n == 0 {
            return Ok(());
        }
        let from = n.to_string();
        err_text(ctx.call_ext::<_, CallResult>(
            "LTRIM",
            &write_opts(),
            &[self.key.as_str(), from.as_str(), "-1"],
        ))?;
        self.len = self.len.saturating_sub(n as u64);
        Ok(())
    }

    /// Reads the real length; returns how many records vanished behind our back.
    pub fn sync_len(&mut self, ctx: &Context) -> Result<u64, String> {
        let reply =
            err_text(ctx.call_ext::<_, CallResult>("LLEN", &read_opts(), &[self.key.as_str()]))?;
        let real = match reply {
            CallReply::I64(n) => u64::try_from(n.to_i64()).unwrap_or(0),
            _ => return Err("unexpected reply to LLEN".into()),
        };
        let lost = self.len.saturating_sub(real);
        if lost > 0 {
            self.head_inflight = 0;
            self.epoch += 1;
        }
        self.len = real;
        Ok(lost)
    }
}
