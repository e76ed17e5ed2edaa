//! INFO figures beyond the counters: confirm latency, connection uptime,
//! and the age of the oldest event waiting in the fallback list and in memory.

mod common;

use common::amqp::Sink;
use common::args::ModuleArgs;
use common::proxy::Proxy;
use common::server::{Kind, Server};
use common::{amqp_port, refused_port, wait_for, wait_showing};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

/// How long the confirms of every batch are held back (the proxy stops the
/// broker-to-module direction): the least confirm latency INFO may show.
const HOLD: Duration = Duration::from_millis(300);

#[test]
fn latency_uptime_and_the_age_of_the_oldest_record() {
    for kind in Kind::ALL {
        let mut sink = Sink::new(amqp_port());
        let proxy = Proxy::new(amqp_port());
        let srv = Server::start(kind, &ModuleArgs::new(&sink).port(proxy.port).build(), &[]);
        // Connected before the confirms are held (the handshake needs both ways).
        srv.cmd(&["key_evt_amqp.connect"]).unwrap();
        wait_for("connected", T, || srv.field("connection") == "connected");
        proxy.stall_down(true);
        let began = Instant::now();
        let keys: Vec<String> = (0..500).map(|i| format!("k{i}")).collect();
        srv.set_keys(&keys);
        // Every batch handed to the broker (its clock started) before the hold.
        wait_for("every event in flight", T, || srv.stat("inflight") == 500);
        let held_from = Instant::now();
        // The fault itself, not a wait for a condition: the confirms are held this long.
        std::thread::sleep(HOLD);
        let held = held_from.elapsed();
        proxy.stall_down(false);
        sink.expect_sequence("k", 500, T);
        wait_for("confirmed", T, || srv.stat("events_confirmed") == 500);
        let took = began.elapsed();
        let (p50, p99) = (
            srv.stat("confirm_latency_p50_ms"),
            srv.stat("confirm_latency_p99_ms"),
        );
        eprintln!("{kind:?}: p50 {p50} ms, p99 {p99} ms; confirms held {held:?}, all confirmed {took:?} after the first write");
        // Each batch was sent before the hold began and settled after it
        // ended (less 1 ms: the tick that settles reads its clock before it
        // takes the confirm), and within the time the whole test step took.
        let (least, most) = (held.as_millis() as i64 - 1, took.as_millis() as i64);
        assert!(
            least <= p50 && p50 <= p99 && p99 <= most,
            "{kind:?}: p50 {p50} ms p99 {p99} ms outside [{least}, {most}] ms"
        );
        wait_for("uptime counts", T, || {
            srv.stat("connection_uptime_seconds") >= 1
        });
        assert_eq!(srv.stat("fallback_oldest_age_seconds"), 0, "{kind:?}");
        // Stored while disconnected: the oldest record ages.
        srv.cmd(&["key_evt_amqp.disconnect"]).unwrap();
        assert_eq!(srv.stat("connection_uptime_seconds"), 0, "{kind:?}");
        srv.set_keys(&["late"]);
        wait_for("stored", T, || srv.stat("fallback_len") == 1);
        wait_for("the oldest record ages", T, || {
            srv.stat("fallback_oldest_age_seconds") >= 2
        });
        srv.cmd(&["key_evt_amqp.connect"]).unwrap();
        wait_for("drained, age back to 0", T, || {
            srv.stat("fallback_len") == 0 && srv.stat("fallback_oldest_age_seconds") == 0
        });
    }
}

/// `module_memory_bytes` counts what the module holds in its own heap: with
/// the broker unreachable (a proxy that stops forwarding), the events waiting
/// in memory (the queue and the batches in flight) show in it, and once the
/// broker is back and everything is confirmed it falls back near its start.
#[test]
fn module_memory_counts_the_events_held_in_memory() {
    for kind in Kind::ALL {
        let mut sink = Sink::new(amqp_port());
        let proxy = Proxy::new(amqp_port());
        // Long heartbeats: the stalled link stays up while the test looks.
        let args = ModuleArgs::new(&sink)
            .port(proxy.port)
            .heartbeat(60)
            .build();
        let srv = Server::start(kind, &args, &[]);
        srv.set_keys(&["warm"]);
        sink.expect_keys(&["warm"], T);
        wait_for("warm confirmed", T, || srv.stat("events_confirmed") == 1);
        let start = srv.stat("module_memory_bytes");
        assert!(start > 0, "{kind:?}: module_memory_bytes {start}");
        proxy.stall(true);
        let prefix = format!("k{}-", "x".repeat(200));
        let n = 20_000;
        let keys: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
        srv.set_keys(&keys);
        let figures = || {
            let i = srv.info();
            let get = |f: &str| i.get(f).and_then(|v| v.parse::<i64>().ok()).unwrap_or(-1);
            format!(
                "module_memory_bytes {} (start {start}) queue_len {} queue_bytes {} inflight {} inflight_bytes {} fallback_len {}",
                get("module_memory_bytes"),
                get("queue_len"),
                get("queue_bytes"),
                get("inflight"),
                get("inflight_bytes"),
                get("fallback_len")
            )
        };
        wait_showing(
            "every event held in memory",
            T,
            || srv.stat("queue_len") + srv.stat("inflight") == n as i64,
            figures,
        );
        let (queue_bytes, inflight_bytes) = (srv.stat("queue_bytes"), srv.stat("inflight_bytes"));
        let held = queue_bytes + inflight_bytes;
        assert!(
            queue_bytes > 0 && held >= n as i64 * 200,
            "{kind:?}: {}",
            figures()
        );
        let grown = srv.stat("module_memory_bytes") - start;
        assert!(grown >= held, "{kind:?}: grew by {grown}; {}", figures());
        proxy.stall(false);
        sink.expect_sequence(&prefix, n, T);
        wait_showing(
            "everything confirmed",
            T,
            || {
                srv.stat("events_confirmed") == n as i64 + 1
                    && srv.stat("queue_len") == 0
                    && srv.stat("inflight") == 0
            },
            figures,
        );
        eprintln!("{kind:?}: confirmed: {}", figures());
        // lapin keeps the capacity its frame queues grew to while the broker
        // did not read, for the connection's life: a new connection frees it.
        srv.cmd(&["key_evt_amqp.disconnect"]).unwrap();
        srv.cmd(&["key_evt_amqp.connect"]).unwrap();
        srv.set_keys(&["again"]);
        sink.expect_keys(&["again"], T);
        wait_showing(
            "the memory back near its start on a new connection",
            T,
            || {
                srv.stat("events_confirmed") == n as i64 + 2
                    && srv.stat("module_memory_bytes") < start + held / 10
            },
            figures,
        );
    }
}

/// INFO shows how old the oldest event is in memory and in the fallback
/// list: with the broker stalled (a proxy that stops forwarding) the events
/// held in memory age; past the queue's bound the oldest queued go to the
/// list, whose head then ages too; once the broker is back both fall to 0.
#[test]
fn the_oldest_event_ages_in_memory_and_in_the_list() {
    let kind = Kind::Redis;
    let mut sink = Sink::new(amqp_port());
    let proxy = Proxy::new(amqp_port());
    // Long heartbeats: the stalled link stays up while the test looks.
    let args = ModuleArgs::new(&sink)
        .port(proxy.port)
        .heartbeat(60)
        .build();
    let srv = Server::start(kind, &args, &[]);
    let set = |name: &str, value: &str| {
        srv.cmd(&["CONFIG", "SET", &format!("key_evt_amqp.{name}"), value])
            .unwrap();
    };
    set("inflight-max", "10");
    set("batch-size", "10");
    srv.set_keys(&["warm"]);
    sink.expect_keys(&["warm"], T);
    wait_for("warm confirmed", T, || srv.stat("events_confirmed") == 1);
    assert_eq!(srv.stat("oldest_memory_age_ms"), 0);
    assert_eq!(srv.stat("oldest_list_age_ms"), 0);
    proxy.stall(true);
    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    srv.set_keys(&keys);
    wait_for("held in memory", T, || {
        srv.stat("queue_len") + srv.stat("inflight") == 100
    });
    let first = srv.stat("oldest_memory_age_ms");
    wait_for("the memory age grows", T, || {
        srv.stat("oldest_memory_age_ms") >= (first + 1000).max(1500)
    });
    assert_eq!(srv.stat("fallback_len"), 0);
    assert_eq!(srv.stat("oldest_list_age_ms"), 0);
    // Past the queue's bound the oldest queued records go to the list.
    set("queue-max-events", "1");
    wait_for("spilled", T, || srv.stat("fallback_len") > 0);
    wait_for("the list age shows", T, || {
        srv.stat("oldest_list_age_ms") >= 1500
    });
    proxy.stall(false);
    set("queue-max-events", "1000000");
    sink.expect_sequence("k", 100, T);
    wait_for("drained, both ages back to 0", T, || {
        srv.stat("fallback_len") == 0
            && srv.stat("oldest_memory_age_ms") == 0
            && srv.stat("oldest_list_age_ms") == 0
    });
}

/// Issue 16: a broker that refuses connections for hours must not grow the
/// module's memory by every retry. lapin 4.12 leaked about 9.5 KB per
/// attempt whose connect step failed; the module now connects the socket
/// before it hands it to lapin.
#[test]
fn refused_reconnects_keep_module_memory_flat() {
    let sink = Sink::new(amqp_port());
    let (_closed, port) = refused_port();
    let args = ModuleArgs::new(&sink).port(port).build();
    let srv = Server::start(
        Kind::Redis8,
        &args,
        &[("key_evt_amqp.reconnect-max-ms", "100")],
    );
    srv.set_keys(&["k0"]);
    wait_for("a few refused attempts", T, || srv.stat("reconnects") >= 5);
    let (m0, r0) = (srv.stat("module_memory_bytes"), srv.stat("reconnects"));
    wait_for("40 more", T, || srv.stat("reconnects") >= r0 + 40);
    let (m1, r1) = (srv.stat("module_memory_bytes"), srv.stat("reconnects"));
    let per_attempt = (m1 - m0) / (r1 - r0);
    eprintln!(
        "module memory {m0} -> {m1} B over {} refused attempts: {per_attempt} B each",
        r1 - r0
    );
    assert!(
        m1 - m0 < 16 << 10,
        "module memory grew {} B over {} refused attempts",
        m1 - m0,
        r1 - r0
    );
    assert_eq!(srv.stat("fallback_len"), 1, "the event waits in the list");
}
