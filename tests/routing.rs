//! Unroutable events: published `mandatory`, a `basic.return` is not a
//! success. With `on-unroutable store` (the default) they wait in the
//! fallback list until a queue is bound; `drop` and `count` are explicit.

mod common;

use common::amqp::Sink;
use common::args::ModuleArgs;
use common::msg::check_sequence;
use common::server::{Kind, Server};
use common::{amqp_port, main_broker, rabbitmqctl, wait_for};
use lapin::types::{AMQPValue, FieldTable};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn keys(from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("k{i}")).collect()
}

#[test]
fn unroutable_events_wait_in_the_list_until_a_queue_is_bound() {
    for kind in Kind::ALL {
        let mut sink = Sink::new(amqp_port());
        sink.unbind();
        let srv = Server::start(kind, &ModuleArgs::new(&sink).build(), &[]);
        srv.set_keys(&keys(0, 200));
        wait_for("returned and stored", T, || {
            srv.stat("events_returned") > 0 && srv.stat("fallback_len") == 200
        });
        assert_eq!(srv.stat("events_confirmed"), 0, "{kind:?}");
        assert!(srv.field("last_error").contains("unroutable"), "{kind:?}");
        // INFO: every record waits for a retry (or is the probe in flight).
        let info = srv.info();
        let n = |f: &str| info[f].parse::<i64>().unwrap();
        assert_eq!(n("unroutable_waiting") + n("inflight"), 200, "{kind:?}");
        // The binding is back: everything arrives, in order.
        sink.declare_queue();
        let msgs = sink.expect_sequence("k", 200, T).to_vec();
        let dups = check_sequence(&msgs, "k", 200);
        wait_for("all confirmed", T, || {
            srv.stat("events_confirmed") == 200 && srv.stat("fallback_len") == 0
        });
        assert_eq!(dups, 0, "{kind:?}: returned events were never delivered");
        assert_eq!(srv.stat("events_dropped"), 0, "{kind:?}");
        assert_eq!(srv.stat("unroutable_waiting"), 0, "{kind:?}");
    }
}

/// VmRSS of a process, in bytes.
fn rss(pid: u32) -> i64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .unwrap();
    kb * 1024
}

/// The samples from the first one within the 1500 ms cap on.
fn samples_after_cut(samples: &[i64]) -> Vec<i64> {
    samples
        .iter()
        .copied()
        .skip_while(|&ms| ms > 1500)
        .collect()
}

/// `used_memory` of a server.
fn used_memory(srv: &Server) -> i64 {
    let text: String = redis::cmd("INFO")
        .arg("memory")
        .query(&mut srv.conn())
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// The first value of each wait for a retry seen in `unroutable_retry_in_ms`
/// samples: a wait begins where the figure rises.
fn waits(samples: &[i64]) -> Vec<i64> {
    let mut out = Vec::new();
    let mut prev = 0;
    for &ms in samples {
        if ms > prev {
            out.push(ms);
        }
        prev = ms;
    }
    out
}

/// Issue 16, case 1: with no queue bound, a backlog of 20,000 returned
/// events kept Redis's RSS growing (lapin kept every confirm dropped after
/// the first return, with the returned message it carried) and was sent
/// again every 2 to 3 s. Now memory stays flat, the retries back off from
/// 1 s, doubling up to `unroutable-retry-max-ms`, one batch at a time, and
/// INFO shows what waits; once a queue is bound, everything arrives in order.
#[test]
fn returns_keep_memory_flat_and_back_off() {
    const N: usize = 20_000;
    let mut sink = Sink::new(amqp_port());
    sink.unbind();
    let srv = Server::start(Kind::Redis, &ModuleArgs::new(&sink).build(), &[]);
    srv.set_keys(&keys(0, N));
    wait_for("first returns", T, || srv.stat("events_returned") > 0);
    let info = srv.info();
    let n = |i: &std::collections::HashMap<String, String>, f: &str| i[f].parse::<i64>().unwrap();
    let (rss0, forwarded0) = (rss(srv.pid()), n(&info, "events_forwarded"));
    let used0 = used_memory(&srv);
    // 20 s of returns: the default cap (60 s) lets the waits run 1, 2, 4, 8, 16 s.
    let mut samples = Vec::new();
    let mut rss_max = rss0;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        // (Read leniently, so that memory is checked first.)
        let info = srv.info();
        samples.push(
            info.get("unroutable_retry_in_ms")
                .map_or(0, |v| v.parse().unwrap()),
        );
        rss_max = rss_max.max(rss(srv.pid()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let grown = rss_max - rss0;
    let used = used_memory(&srv) - used0;
    let info = srv.info();
    let forwarded = n(&info, "events_forwarded") - forwarded0;
    eprintln!("RSS +{grown} B, used_memory +{used} B, {forwarded} published in 20 s");
    assert!(
        grown < 20 << 20,
        "RSS grew {grown} bytes in 20 s of returns"
    );
    assert!(used < 5 << 20, "used_memory grew {used} bytes");
    // One 1024-record probe per wait, where the old code sent the whole
    // backlog again every 2 to 3 s.
    assert!(
        forwarded <= 5 * 1024,
        "{forwarded} records published in 20 s"
    );
    assert_eq!(
        n(&info, "unroutable_waiting") + n(&info, "inflight"),
        N as i64
    );
    // Each wait doubles the last (samples are 100 ms apart).
    let seen = waits(&samples);
    eprintln!("waits seen: {seen:?}");
    let doubling: Vec<i64> = [2000, 4000, 8000, 16000]
        .into_iter()
        .filter(|w| seen.iter().any(|s| s <= w && *s > w - 500))
        .collect();
    assert_eq!(doubling, [2000, 4000, 8000, 16000], "waits seen: {seen:?}");
    // A lower cap cuts the wait under way, and caps the next ones.
    srv.cmd(&[
        "CONFIG",
        "SET",
        "key_evt_amqp.unroutable-retry-max-ms",
        "1500",
    ])
    .unwrap();
    // (Samples from before the next tick may still show the old wait.)
    let mut samples = Vec::new();
    wait_for("three capped waits", T, || {
        samples.push(srv.stat("unroutable_retry_in_ms"));
        std::thread::sleep(Duration::from_millis(50));
        waits(&samples_after_cut(&samples)).len() >= 3
    });
    let capped = waits(&samples_after_cut(&samples));
    assert!(capped.iter().all(|&w| w <= 1500), "{capped:?}");
    // Neither doubled nor back to 1 s.
    assert!(capped[1..].iter().all(|&w| w > 1000), "{capped:?}");
    // The queue is bound: all arrive, in order, nothing dropped.
    sink.declare_queue();
    let msgs = sink.expect_sequence("k", N, T).to_vec();
    assert_eq!(
        check_sequence(&msgs, "k", N),
        0,
        "returned events were never delivered"
    );
    wait_for("all confirmed", T, || {
        srv.stat("events_confirmed") == N as i64 && srv.stat("fallback_len") == 0
    });
    assert_eq!(srv.stat("events_dropped"), 0);
    assert_eq!(srv.stat("unroutable_waiting"), 0);
    assert_eq!(srv.stat("unroutable_retry_in_ms"), 0);
}

#[test]
fn on_unroutable_drop_and_count_are_explicit() {
    let sink = Sink::new(amqp_port());
    sink.unbind();
    let srv = Server::start(Kind::Redis, &ModuleArgs::new(&sink).build(), &[]);
    let e = srv.cmd(&["CONFIG", "SET", "key_evt_amqp.on-unroutable", "sometimes"]);
    assert!(e.is_err(), "a bad value is refused: {e:?}");
    srv.cmd(&["CONFIG", "SET", "key_evt_amqp.on-unroutable", "drop"])
        .unwrap();
    srv.set_keys(&keys(0, 50));
    wait_for("dropped and counted", T, || {
        srv.stat("events_dropped_unroutable") == 50
    });
    assert_eq!(srv.stat("events_returned"), 50);
    assert_eq!(srv.stat("events_dropped"), 50);
    assert_eq!(srv.stat("events_confirmed"), 0);
    assert_eq!(srv.stat("fallback_len"), 0);
    srv.cmd(&["CONFIG", "SET", "key_evt_amqp.on-unroutable", "count"])
        .unwrap();
    srv.set_keys(&keys(50, 80));
    wait_for("counted as delivered", T, || {
        srv.stat("events_confirmed") == 30
    });
    assert_eq!(srv.stat("events_returned"), 80);
    assert_eq!(srv.stat("fallback_len"), 0);
}

#[test]
fn headers_app_id_and_a_routing_key_template() {
    for kind in Kind::ALL {
        // Bound for `kea.set.0.user` only: the template must produce it.
        let mut sink = Sink::topic(amqp_port(), "kea.set.0.user");
        let mut args = ModuleArgs::new(&sink);
        args.routing_key = "kea.{event}.{db}.{prefix:1}".into();
        let srv = Server::start(kind, &args.build(), &[]);
        srv.set_keys(&["user:1:name", "order:9"]);
        srv.set_keys(&["user:2"]);
        let msgs = sink.expect_keys(&["user:1:name", "user:2"], T).to_vec();
        // `order:9` routes to `kea.set.0.order`: returned, kept in the list.
        wait_for("order:9 returned", T, || srv.stat("events_returned") > 0);
        for m in &msgs {
            assert_eq!(m.routing_key, "kea.set.0.user", "{kind:?}");
            assert_eq!(m.app_id, "key_evt_amqp", "{kind:?}");
            assert_eq!(m.headers["event"], "set", "{kind:?}");
            assert_eq!(m.headers["db"], "0", "{kind:?}");
            assert_eq!(m.headers["key"], m.key(), "{kind:?}");
            assert!(m.headers["node"].starts_with(&format!("{}/", srv.port)));
            // The body is exactly as specified.
            assert_eq!(m.body, format!("0\nset\n{}", m.key()).into_bytes());
        }
        // Without headers: same routing, same body, no table to decode.
        // (`order:9` would hold the list's head forever: let it go.)
        srv.cmd(&["CONFIG", "SET", "key_evt_amqp.on-unroutable", "drop"])
            .expect("CONFIG SET on-unroutable");
        srv.cmd(&["CONFIG", "SET", "key_evt_amqp.headers", "no"])
            .expect("CONFIG SET headers");
        assert!(srv
            .cmd(&["CONFIG", "SET", "key_evt_amqp.headers", "maybe"])
            .is_err_and(|e| e.contains("headers")));
        srv.set_keys(&["user:3"]);
        let m = sink
            .expect_keys(&["user:3"], T)
            .iter()
            .find(|m| m.key() == "user:3")
            .cloned()
            .expect("user:3 arrived");
        assert_eq!(m.routing_key, "kea.set.0.user", "{kind:?}");
        assert_eq!(m.app_id, "key_evt_amqp", "{kind:?}");
        assert!(m.headers.is_empty(), "{kind:?}: {:?}", m.headers);
        assert_eq!(m.body, b"0\nset\nuser:3".to_vec());
    }
}

#[test]
fn each_node_names_its_connection() {
    let (port, node) = main_broker();
    let mut sink = Sink::new(port);
    let srv = Server::start(Kind::Redis, &ModuleArgs::new(&sink).build(), &[]);
    srv.set_keys(&["k0"]);
    // The `node` header names this process alone (its port and a random
    // tag), so the shared broker's other connections cannot match.
    let tag = sink.expect_at_least(1, T)[0].headers["node"].clone();
    assert!(tag.starts_with(&format!("{}/", srv.port)), "node {tag}");
    let list = rabbitmqctl(&node, &["list_connections", "client_properties"]);
    assert!(
        list.contains(&format!("key_evt_amqp {tag}")),
        "connection name 'key_evt_amqp {tag}' not found in: {list}"
    );
}

/// A broker that nacks (a queue with `x-overflow reject-publish` that is
/// full; a quorum queue without a leader answers the same way): the nacked
/// records are sent again only after a wait (1 s, doubled per consecutive
/// nacked round up to `unroutable-retry-max-ms`), one batch at a time,
/// nothing is sent while the wait runs, and every event arrives once there
/// is room, in order.
#[test]
fn nacked_events_are_sent_again_after_a_wait() {
    const N: usize = 60;
    let mut sink = Sink::new(amqp_port());
    // A second, bounded queue on the same binding: the broker nacks a
    // message that one of its queues refuses.
    let full = Sink {
        port: sink.port,
        exchange: sink.exchange.clone(),
        queue: common::unique("kea-full"),
        routing_key: sink.routing_key.clone(),
        received: Vec::new(),
        vhost: "/".into(),
    };
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(10));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    full.declare_queue_with(args);
    let srv = Server::start(
        Kind::Redis8,
        &ModuleArgs::new(&sink).build(),
        &[("key_evt_amqp.unroutable-retry-max-ms", "4000")],
    );
    srv.set_keys(&keys(0, N));
    wait_for("a nack and a wait", T, || {
        srv.stat("events_nacked") > 0 && srv.stat("nack_retry_in_ms") > 0
    });
    assert!(srv.field("last_error").contains("nacked"));
    // While a wait runs, nothing is published.
    let mut waits = Vec::new();
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        let info = srv.info();
        let n = |f: &str| info[f].parse::<i64>().unwrap();
        let (wait, sent) = (n("nack_retry_in_ms"), n("events_forwarded"));
        if wait > 300 {
            std::thread::sleep(Duration::from_millis(200));
            let info = srv.info();
            let n = |f: &str| info[f].parse::<i64>().unwrap();
            if n("nack_retry_in_ms") > 0 && n("nack_retry_in_ms") < wait {
                assert_eq!(n("events_forwarded"), sent, "published during a wait");
                waits.push(wait);
            }
        }
    }
    eprintln!("waits seen (ms left): {waits:?}");
    assert!(!waits.is_empty());
    assert!(
        waits.iter().any(|&w| w > 1000),
        "the wait doubles: {waits:?}"
    );
    // Room again: every event arrives, in order, and the waits end.
    full.unbind();
    let msgs = sink.expect_sequence("k", N, T).to_vec();
    check_sequence(&msgs, "k", N);
    wait_for("settled", T, || {
        srv.stat("events_confirmed") >= N as i64 && srv.stat("nack_retry_in_ms") == 0
    });
    assert_eq!(srv.stat("events_dropped"), 0);
}
