//! `amqps` into a vhost: events flow over TLS with the broker verified
//! against a CA file; a wrong CA gives a clear `last_error` and the events
//! wait in the fallback list; fixing the CA, and later reconnects, keep
//! working.

mod common;

use common::amqp::Sink;
use common::args::ModuleArgs;
use common::msg::check_sequence;
use common::server::{Kind, Server};
use common::tls::TlsBroker;
use common::wait_for;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn keys(from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("k{i}")).collect()
}

#[test]
fn events_flow_over_tls_into_a_vhost_and_a_wrong_ca_is_reported() {
    let broker = TlsBroker::start();
    broker.ctl(&["add_vhost", "kea-tls"]);
    broker.ctl(&[
        "set_permissions",
        "-p",
        "kea-tls",
        "guest",
        ".*",
        ".*",
        ".*",
    ]);
    let mut sink = Sink::in_vhost(broker.port, "kea-tls");
    let mut args = ModuleArgs::new(&sink).port(broker.tls_port).heartbeat(2);
    args.host = "localhost".into();
    let wrong = broker.wrong_ca();
    let srv = Server::start(
        Kind::Redis,
        &args.build(),
        &[
            ("key_evt_amqp.tls", "yes"),
            ("key_evt_amqp.vhost", "kea-tls"),
            ("key_evt_amqp.tls-ca-file", wrong.as_str()),
        ],
    );
    srv.set_keys(&keys(0, 100));
    wait_for("the wrong CA is reported, events wait", T, || {
        srv.stat("fallback_len") == 100 && !srv.field("last_error").is_empty()
    });
    let err = srv.field("last_error");
    assert!(
        err.to_lowercase().contains("certificate") || err.to_lowercase().contains("tls"),
        "unclear error: {err}"
    );
    assert_eq!(srv.stat("events_confirmed"), 0);
    // The right CA: the list drains over TLS, in order.
    srv.cmd(&["CONFIG", "SET", "key_evt_amqp.tls-ca-file", &broker.ca()])
        .unwrap();
    srv.set_keys(&keys(100, 150));
    let msgs = sink.expect_sequence("k", 150, T).to_vec();
    check_sequence(&msgs, "k", 150);
    // A reconnect keeps working.
    srv.cmd(&["key_evt_amqp.disconnect"]).unwrap();
    srv.cmd(&["key_evt_amqp.connect"]).unwrap();
    srv.set_keys(&keys(150, 200));
    let msgs = sink.expect_sequence("k", 200, T).to_vec();
    check_sequence(&msgs, "k", 200);
    assert_eq!(srv.field("connection"), "connected");
}
