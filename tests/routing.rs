//! Unroutable events: published `mandatory`, a `basic.return` is not a
//! success. With `on-unroutable store` (the default) they wait in the
//! fallback list until a queue is bound; `drop` and `count` are explicit.

mod common;

use common::amqp::Sink;
use common::args::ModuleArgs;
use common::msg::check_sequence;
use common::server::{Kind, Server};
use common::{amqp_port, fault_broker, fault_lock, rabbitmqctl, wait_for};
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
        // The binding is back: everything arrives, in order.
        sink.declare_queue();
        let msgs = sink.expect_sequence("k", 200, T).to_vec();
        let dups = check_sequence(&msgs, "k", 200);
        wait_for("all confirmed", T, || {
            srv.stat("events_confirmed") == 200 && srv.stat("fallback_len") == 0
        });
        assert_eq!(dups, 0, "{kind:?}: returned events were never delivered");
        assert_eq!(srv.stat("events_dropped"), 0, "{kind:?}");
    }
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
    let _g = fault_lock();
    let (port, node) = fault_broker();
    let mut sink = Sink::new(port);
    let srv = Server::start(Kind::Redis, &ModuleArgs::new(&sink).build(), &[]);
    srv.set_keys(&["k0"]);
    sink.expect_at_least(1, T);
    let list = rabbitmqctl(&node, &["list_connections", "client_properties"]);
    assert!(
        list.contains(&format!("key_evt_amqp {}/", srv.port)),
        "connection name not found in: {list}"
    );
}
