//! Poison records and a silent broker cannot wedge forwarding: list
//! elements that are not records, message ids over 255 bytes, records over
//! the size limit, a value of the wrong type under the fallback key, and a
//! broker that takes publishes but never confirms.

mod common;

use common::amqp::Sink;
use common::args::ModuleArgs;
use common::msg::check_sequence;
use common::proxy::Proxy;
use common::server::{Kind, Server};
use common::{amqp_port, wait_for};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);
const KEY: &str = "key_evt_amqp:fallback";

fn keys(from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("k{i}")).collect()
}

fn start(kind: Kind, sink: &Sink, port: u16, config: &[(&str, &str)]) -> Server {
    let a = ModuleArgs::new(sink)
        .port(port)
        .heartbeat(30)
        .masks(&["^k"]);
    Server::start(kind, &a.build(), config)
}

#[test]
fn foreign_and_oversized_list_elements_are_rejected_and_counted() {
    for kind in Kind::ALL {
        let mut sink = Sink::new(amqp_port());
        let srv = start(
            kind,
            &sink,
            sink.port,
            &[("key_evt_amqp.max-record-bytes", "1024")],
        );
        srv.cmd(&["key_evt_amqp.disconnect"]).unwrap();
        srv.set_keys(&keys(0, 10));
        wait_for("stored", T, || srv.stat("fallback_len") == 10);
        // A client pushes things that are not records, and a record whose
        // message id does not fit an AMQP short string (lapin would panic).
        let long_id = format!("{}\n5\n0\nset\nkbad", "x".repeat(300));
        srv.cmd(&["RPUSH", KEY, "garbage", &long_id]).unwrap();
        // A key over max-record-bytes.
        let huge = format!("k{}", "h".repeat(2000));
        srv.set_keys(&[huge.as_str()]);
        srv.set_keys(&keys(10, 20));
        wait_for("stored", T, || srv.stat("fallback_len") == 23);
        srv.cmd(&["key_evt_amqp.connect"]).unwrap();
        let msgs = sink.expect_at_least(20, T).to_vec();
        wait_for("drained", T, || srv.stat("fallback_len") == 0);
        sink.expect_nothing_before(&srv, "k-sentinel", T);
        let dups = check_sequence(&msgs, "k", 20);
        assert_eq!(
            sink.received.len(),
            20 + dups,
            "{kind:?}: only records arrive"
        );
        assert_eq!(srv.stat("events_rejected"), 3, "{kind:?}");
        assert_eq!(srv.field("connection"), "connected");
    }
}

#[test]
fn a_value_of_another_type_under_the_fallback_key_is_moved_aside() {
    for kind in Kind::ALL {
        let mut sink = Sink::new(amqp_port());
        let srv = start(kind, &sink, sink.port, &[]);
        srv.cmd(&["key_evt_amqp.disconnect"]).unwrap();
        srv.cmd(&["SET", KEY, "not a list"]).unwrap();
        srv.set_keys(&keys(0, 10));
        wait_for("stored", T, || srv.stat("events_stored") == 10);
        assert_eq!(srv.stat("fallback_moved_aside"), 1);
        assert_eq!(srv.stat("events_dropped"), 0);
        srv.cmd(&["key_evt_amqp.connect"]).unwrap();
        let msgs = sink.expect_at_least(10, T).to_vec();
        check_sequence(&msgs, "k", 10);
        let aside: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{KEY}:aside:*"))
            .query(&mut srv.conn())
            .unwrap();
        assert_eq!(aside.len(), 1, "{kind:?}: the foreign value is kept");
        let kept: String = redis::cmd("GET")
            .arg(&aside[0])
            .query(&mut srv.conn())
            .unwrap();
        assert_eq!(kept, "not a list");
    }
}

#[test]
fn a_broker_that_never_confirms_recycles_the_connection() {
    let mut sink = Sink::new(amqp_port());
    let proxy = Proxy::new(amqp_port());
    // No heartbeats: only the confirm timeout can notice.
    let a = ModuleArgs::new(&sink)
        .port(proxy.port)
        .heartbeat(0)
        .masks(&["^k"])
        .build();
    let srv = Server::start(
        Kind::Redis,
        &a,
        &[("key_evt_amqp.confirm-timeout-ms", "1000")],
    );
    srv.set_keys(&keys(0, 1));
    sink.expect_at_least(1, T);
    // Publishes reach the broker; its confirms never come back.
    proxy.stall_down(true);
    srv.set_keys(&keys(1, 500));
    wait_for("confirm timeout", T, || srv.stat("confirm_timeouts") >= 1);
    proxy.cut();
    proxy.stall_down(false);
    let msgs = sink.expect_at_least(500, T).to_vec();
    let dups = check_sequence(&msgs, "k", 500);
    wait_for("settled", T, || {
        srv.stat("inflight") == 0 && srv.stat("fallback_len") == 0
    });
    assert_eq!(srv.stat("events_dropped"), 0);
    eprintln!("confirm timeout: {dups} duplicates");
}
