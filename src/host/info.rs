//! Counters and the `INFO key_evt_amqp` section.

use redis_module::{InfoContext, RedisResult};

pub use crate::engine::stats::Stats;

/// A snapshot of everything INFO shows.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Counters.
    pub stats: Stats,
    /// Connection state name.
    pub connection: &'static str,
    /// Role as the module sees it.
    pub role: &'static str,
    /// True when this node forwards.
    pub forwarding: bool,
    /// Records in memory.
    pub queue_len: usize,
    /// Bytes in memory.
    pub queue_bytes: usize,
    /// Records published and not settled.
    pub inflight: usize,
    /// Their payload bytes.
    pub inflight_bytes: usize,
    /// Bytes the module holds in its own heap (the tracking allocator).
    pub module_memory_bytes: usize,
    /// Records in the fallback list.
    pub fallback_len: u64,
    /// The fallback key.
    pub fallback_key: String,
    /// The SHUTDOWN hook is registered (the server persists data).
    pub shutdown_hook: bool,
    /// Other nodes' fallback lists found in this node's slots, still to drain.
    pub fallback_lists_found: usize,
    /// The fallback cap.
    pub fallback_size: i64,
    /// The subscribed event types.
    pub event_types: String,
    /// Key masks (the first few).
    pub keymasks: String,
    /// Number of key masks.
    pub keymask_count: usize,
    /// `memory` or `outbox`.
    pub durability: &'static str,
    /// Which matcher answers (`none`, `building`, `automaton`, `linear (why)`).
    pub keymask_matcher: String,
    /// Bytes held by the masks and their automaton.
    pub keymask_bytes: usize,
    /// Wrong-type values renamed away from the fallback key.
    pub fallback_moved_aside: u64,
    /// The server asks modules not to write now (paused writes, failover).
    pub writes_paused: bool,
    /// Broker addresses, comma-separated (no credentials).
    pub broker: String,
    /// The entry connected now (empty: none).
    pub broker_connected: String,
    /// Connections made to another entry than the one before.
    pub broker_failovers: u64,
    /// Each entry of the list: address and state (`connected`, `ok`,
    /// `untried` or `error: <last error>`).
    pub broker_entries: Vec<(String, String)>,
    /// The last error, if any.
    pub last_error: String,
    /// Seconds since the oldest record in the fallback list happened.
    pub fallback_oldest_age_seconds: u64,
    /// Milliseconds since the oldest event held only in memory happened (0: none).
    pub oldest_memory_age_ms: u64,
    /// Milliseconds since the oldest record in the fallback list happened (0: empty).
    pub oldest_list_age_ms: u64,
    /// Confirm latency over the last minute, p50 and p99, in ms (0: none).
    pub confirm_latency_ms: (u64, u64),
    /// Seconds the broker connection has been up.
    pub connection_uptime_seconds: u64,
    /// Records held back because the broker returned records as unroutable,
    /// and ms until the next retry (0: none due).
    pub unroutable: (u64, u64),
    /// Ms until records the broker nacked are sent again (0: no wait).
    pub nack_retry_in_ms: u64,
    /// Slots whose events are moves now (an atomic slot migration).
    pub migration_silent_slots: usize,
    /// The module listens to the server's key event (before-images).
    pub key_event: bool,
    /// The snapshot walk: `(name, value)` pairs, shown as `snapshot_<name>`.
    pub snapshot: Vec<(&'static str, String)>,
}

/// The most entries of the broker list INFO shows one by one.
pub const BROKER_ENTRIES_SHOWN: usize = 16;

/// Writes the section; field names get the `key_evt_amqp_` prefix from Redis.
pub fn render(ctx: &InfoContext, s: &Snapshot) -> RedisResult<()> {
    let st = &s.stats;
    let mut section = ctx.builder().add_section("");
    let text = [
        ("connection", s.connection.to_string()),
        ("role", s.role.to_string()),
        (
            "forwarding",
            if s.forwarding { "yes" } else { "no" }.to_string(),
        ),
        ("broker", s.broker.clone()),
        ("broker_connected", s.broker_connected.clone()),
        ("event_types", s.event_types.clone()),
        ("keymasks", s.keymasks.clone()),
        ("keymask_matcher", s.keymask_matcher.clone()),
        ("durability", s.durability.to_string()),
        ("fallback_key", s.fallback_key.clone()),
        (
            "shutdown_hook",
            if s.shutdown_hook { "yes" } else { "no" }.to_string(),
        ),
        (
            "writes_paused",
            if s.writes_paused { "yes" } else { "no" }.to_string(),
        ),
        (
            "key_event",
            if s.key_event { "yes" } else { "no" }.to_string(),
        ),
        ("last_error", s.last_error.clone()),
    ];
    for (name, value) in text {
        // Values may come from outside (a host, a broker error): one line each.
        section = section.field(name, crate::host::log::visible(&value))?;
    }
    let numbers = [
        ("events_seen", st.seen),
        ("events_accepted", st.accepted),
        ("events_forwarded", st.forwarded),
        ("events_confirmed", st.confirmed),
        ("events_nacked", st.nacked),
        ("events_stored", st.stored),
        ("events_dropped", st.dropped),
        ("events_dropped_cap", st.dropped_cap),
        ("events_dropped_disabled", st.dropped_disabled),
        ("events_dropped_unwritable", st.dropped_unwritable),
        ("events_dropped_overflow", st.dropped_overflow),
        ("events_rejected", st.rejected),
        ("events_returned", st.returned),
        ("events_dropped_unroutable", st.dropped_unroutable),
        ("events_lost", st.lost),
        ("events_skipped", st.skipped),
        ("events_moved", st.moved),
        ("events_deferred", st.deferred),
        ("events_resent", st.resent),
        ("queue_len", s.queue_len as u64),
        ("queue_bytes", s.queue_bytes as u64),
        ("inflight", s.inflight as u64),
        ("inflight_bytes", s.inflight_bytes as u64),
        ("module_memory_bytes", s.module_memory_bytes as u64),
        ("fallback_len", s.fallback_len),
        ("fallback_lists_found", s.fallback_lists_found as u64),
        ("reconnects", st.reconnects),
        ("broker_failovers", s.broker_failovers),
        ("confirm_timeouts", st.confirm_timeouts),
        ("supervisor_restarts", st.supervisor_restarts),
        ("keymask_count", s.keymask_count as u64),
        ("keymask_bytes", s.keymask_bytes as u64),
        ("fallback_moved_aside", s.fallback_moved_aside),
        ("fallback_oldest_age_seconds", s.fallback_oldest_age_seconds),
        ("oldest_memory_age_ms", s.oldest_memory_age_ms),
        ("oldest_list_age_ms", s.oldest_list_age_ms),
        ("confirm_latency_p50_ms", s.confirm_latency_ms.0),
        ("confirm_latency_p99_ms", s.confirm_latency_ms.1),
        ("connection_uptime_seconds", s.connection_uptime_seconds),
        ("unroutable_waiting", s.unroutable.0),
        ("unroutable_retry_in_ms", s.unroutable.1),
        ("nack_retry_in_ms", s.nack_retry_in_ms),
        ("migration_silent_slots", s.migration_silent_slots as u64),
    ];
    for (name, value) in numbers {
        section = section.field(name, value)?;
    }
    for (name, value) in &s.snapshot {
        section = section.field(&format!("snapshot_{name}"), value.clone())?;
    }
    // One line per entry, `<address> <state>`: the address has no space,
    // so a reader splits at the first one.
    for (i, (address, state)) in s
        .broker_entries
        .iter()
        .take(BROKER_ENTRIES_SHOWN)
        .enumerate()
    {
        let line = crate::host::log::visible(&format!("{address} {state}"));
        section = section.field(&format!("broker_entry_{i}"), line)?;
    }
    section
        .field("fallback_size", s.fallback_size)?
        .build_section()?
        .build_info()?;
    Ok(())
}
