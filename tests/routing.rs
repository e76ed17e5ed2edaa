//! Unroutable events: published `mandatory`, a `basic.return` is not a
//! success. With `on-unroutable store` (the default) they wait in the
//! fallback list until a queue is bound; `drop` and `count` are explicit.

mod common;

use common::amqp::{check_sequence, Sink};
use common::args::ModuleArgs;
use common::server::{Kind, Server};
use common::{amqp_port, wait_for};
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
