//! End to end on one node: load, filter, encode, forward with confirms.

mod common;

use common::amqp::Sink;
use common::args::ModuleArgs;
use common::msg::check_sequence;
use common::server::{Kind, Server};
use common::{amqp_port, wait_for};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn start(kind: Kind, sink: &Sink, types: &str, masks: &[&str]) -> Server {
    Server::start(
        kind,
        &ModuleArgs::new(sink).types(types).masks(masks).build(),
        &[],
    )
}

#[test]
fn message_format_and_properties() {
    for kind in Kind::ALL {
        let mut sink = Sink::new(amqp_port());
        let srv = start(kind, &sink, "A", &["ALL"]);
        srv.cmd(&["SET", "redis_key_name", "1"]).unwrap();
        srv.cmd(&["SELECT", "0"]).unwrap();
        let mut c = srv.conn();
        redis::pipe()
            .cmd("SELECT")
            .arg(3)
            .cmd("SET")
            .arg("in3")
            .arg("x")
            .query::<()>(&mut c)
            .unwrap();
        let msgs = sink.expect_at_least(2, T).to_vec();
        assert_eq!(msgs[0].body, b"0\nset\nredis_key_name", "{kind:?}");
        assert_eq!(msgs[1].body, b"3\nset\nin3");
        for m in &msgs {
            assert_eq!(m.content_type, "text/plain");
            assert_eq!(m.delivery_mode, 1);
            assert_eq!(m.routing_key, sink.routing_key);
            assert!(m.timestamp > 1_600_000_000, "timestamp {}", m.timestamp);
            assert!(!m.message_id.is_empty());
        }
        assert_ne!(msgs[0].message_id, msgs[1].message_id);
        wait_for("confirms", T, || srv.stat("events_confirmed") == 2);
        assert_eq!(srv.field("connection"), "connected");
    }
}

#[test]
fn binary_keys_are_forwarded_verbatim() {
    let mut sink = Sink::new(amqp_port());
    let srv = start(Kind::Redis, &sink, "$", &["^bin"]);
    let key: &[u8] = b"bin\n\x00\xff\r\nend";
    redis::cmd("SET")
        .arg(key)
        .arg("v")
        .query::<()>(&mut srv.conn())
        .unwrap();
    let msgs = sink.expect_at_least(1, T);
    assert_eq!(msgs[0].body, [b"0\nset\n".as_slice(), key].concat());
}

#[test]
fn order_is_kept_over_many_batches() {
    let mut sink = Sink::new(amqp_port());
    let srv = start(Kind::Redis, &sink, "$", &["ALL"]);
    let n = 20_000;
    let keys: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
    for chunk in keys.chunks(1000) {
        srv.set_keys(chunk);
    }
    let msgs = sink.expect_sequence("k", n, T).to_vec();
    assert_eq!(
        check_sequence(&msgs, "k", n),
        0,
        "no duplicates without faults"
    );
    wait_for("all confirmed", T, || {
        srv.stat("events_confirmed") == n as i64
    });
    assert_eq!(srv.stat("events_accepted"), n as i64);
    assert_eq!(srv.stat("fallback_len"), 0);
}

#[test]
fn connection_is_lazy() {
    let mut sink = Sink::new(amqp_port());
    let srv = start(Kind::Redis, &sink, "$", &["ALL"]);
    // An absence, with no event to wait for: the module is given three idle
    // ticks (the server's cron runs one about every 100 ms) to connect on
    // its own, and must not.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(srv.field("connection"), "idle");
    srv.cmd(&["SET", "a", "1"]).unwrap();
    sink.expect_at_least(1, T);
    assert_eq!(srv.field("connection"), "connected");
}

#[test]
fn key_masks_filter() {
    let mut sink = Sink::new(amqp_port());
    let srv = start(Kind::Redis, &sink, "$", &["^user:.*$", "session", "tail$"]);
    srv.set_keys(&[
        "user:1",
        "xuser:1",
        "my-session-2",
        "a-tail",
        "a-tail-not",
        "other",
    ]);
    srv.cmd(&["SET", "end", "1"]).unwrap();
    srv.cmd(&["key_evt_amqp.keymask_add", "^end$"]).unwrap();
    srv.cmd(&["SET", "end", "2"]).unwrap();
    let keys: Vec<String> = sink.expect_at_least(4, T).iter().map(|m| m.key()).collect();
    assert_eq!(keys, ["user:1", "my-session-2", "a-tail", "end"]);
    // Matched by `tail$`: once it is in, the filtered keys had their chance.
    sink.expect_nothing_before(&srv, "sentinel-tail", T);
}

#[test]
fn no_mask_forwards_nothing() {
    let mut sink = Sink::new(amqp_port());
    let srv = start(Kind::Redis, &sink, "$", &[]);
    srv.set_keys(&["a", "b"]);
    srv.cmd(&["key_evt_amqp.keymask_set", "ALL"]).unwrap();
    srv.cmd(&["SET", "c", "1"]).unwrap();
    let keys: Vec<String> = sink.expect_at_least(1, T).iter().map(|m| m.key()).collect();
    assert_eq!(keys, ["c"]);
    assert_eq!(srv.field("keymasks"), "ALL");
}
