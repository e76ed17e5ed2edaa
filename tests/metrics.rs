//! INFO figures beyond the counters: confirm latency, connection uptime,
//! and the age of the oldest record waiting in the fallback list.

mod common;

use common::amqp::Sink;
use common::args::ModuleArgs;
use common::server::{Kind, Server};
use common::{amqp_port, wait_for};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

#[test]
fn latency_uptime_and_the_age_of_the_oldest_record() {
    for kind in Kind::ALL {
        let mut sink = Sink::new(amqp_port());
        let srv = Server::start(kind, &ModuleArgs::new(&sink).build(), &[]);
        let keys: Vec<String> = (0..500).map(|i| format!("k{i}")).collect();
        srv.set_keys(&keys);
        sink.expect_sequence("k", 500, T);
        wait_for("confirmed", T, || srv.stat("events_confirmed") == 500);
        let (p50, p99) = (
            srv.stat("confirm_latency_p50_ms"),
            srv.stat("confirm_latency_p99_ms"),
        );
        assert!(p99 >= p50 && p50 >= 0, "{kind:?}: p50 {p50} p99 {p99}");
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
