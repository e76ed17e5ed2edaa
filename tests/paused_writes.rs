//! No list write while the server pauses writes (CLIENT PAUSE WRITE,
//! FAILOVER, CLUSTER FAILOVER), with AOF on and a backlog of 100k events
//! draining; and no reordering when the queue spills behind batches in flight.

mod common;

use common::amqp::Sink;
use common::args::ModuleArgs;
use common::cluster::text;
use common::msg::check_sequence;
use common::server::{Kind, Server};
use common::topology::Topology;
use common::{amqp_port, wait_for};
use std::collections::HashSet;
use std::time::Duration;

const T: Duration = Duration::from_secs(120);
const KEY: &str = "key_evt_amqp:fallback";
const BACKLOG: usize = 100_000;

fn keys(prefix: &str, from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("{prefix}{i}")).collect()
}

fn args(sink: &Sink) -> Vec<String> {
    ModuleArgs::new(sink).build()
}

/// Builds a backlog of `n` events with the broker link closed, then reconnects.
fn backlog_then_connect(srv: &Server, n: usize) {
    srv.cmd(&["key_evt_amqp.disconnect"]).unwrap();
    srv.set_keys(&keys("k", 0, n));
    wait_for("backlog stored", T, || srv.stat("fallback_len") == n as i64);
    srv.cmd(&["key_evt_amqp.connect"]).unwrap();
    wait_for("draining", T, || srv.stat("events_confirmed") > 0);
}

fn assert_clean(srv: &Server) {
    let info = srv.info();
    assert_eq!(info["events_dropped"], "0", "{info:?}");
    assert_eq!(info["events_lost"], "0", "{info:?}");
}

#[test]
fn client_pause_write_while_the_backlog_drains() {
    for kind in Kind::ALL {
        let mut sink = Sink::new(amqp_port());
        let srv = Server::start(kind, &args(&sink), &[("appendonly", "yes")]);
        backlog_then_connect(&srv, BACKLOG);
        srv.cmd(&["CLIENT", "PAUSE", "1500", "WRITE"]).unwrap();
        assert_eq!(srv.field("writes_paused"), "yes");
        // Forwarding goes on while paused (reads only); trims wait.
        let confirmed = srv.stat("events_confirmed");
        wait_for("forwarding while paused", T, || {
            srv.stat("events_confirmed") > confirmed || srv.field("writes_paused") == "no"
        });
        wait_for("pause over", T, || srv.field("writes_paused") == "no");
        let msgs = sink.expect_sequence("k", BACKLOG, T).to_vec();
        let dups = check_sequence(&msgs, "k", BACKLOG);
        wait_for("drained", T, || srv.stat("fallback_len") == 0);
        assert_eq!(srv.llen(KEY), 0);
        assert_clean(&srv);
        eprintln!("{kind:?}: CLIENT PAUSE WRITE during a {BACKLOG} backlog: {dups} duplicates");
    }
}

#[test]
fn failover_while_the_backlog_drains() {
    for kind in Kind::ALL {
        let mut sink = Sink::new(amqp_port());
        let aof = ("appendonly", "yes");
        let (a, b) = Topology::replicated(kind, &args(&sink), &[aof]);
        backlog_then_connect(&a, BACKLOG);
        a.cmd(&["FAILOVER", "TIMEOUT", "5000"]).unwrap();
        wait_for("b is master", T, || b.field("role") == "master");
        wait_for("a is replica", T, || a.field("role") == "replica");
        // Both servers stayed up; b drains what a left in the replicated list.
        let msgs = sink.expect_sequence("k", BACKLOG, T).to_vec();
        let dups = check_sequence(&msgs, "k", BACKLOG);
        // Confirmed records wait for their trim while writes are paused, and
        // count against the in-flight window: at most two windows come again.
        assert!(dups <= 2 * 8192, "{kind:?}: {dups} duplicates");
        wait_for("drained", T, || b.llen(KEY) == 0);
        assert_eq!(text(&a, &["PING"]), "PONG");
        assert_clean(&b);
        eprintln!("{kind:?}: FAILOVER during a {BACKLOG} backlog: {dups} duplicates");
    }
}

#[test]
fn cluster_failover_while_backlogs_drain() {
    let mut sink = Sink::new(amqp_port());
    let c = Topology::cluster(Kind::Redis, 3, &args(&sink));
    for n in &c.nodes {
        text(n, &["CONFIG", "SET", "appendonly", "yes"]);
    }
    // A disconnect on one node is broadcast to every node.
    c.nodes[0].cmd(&["key_evt_amqp.disconnect"]).unwrap();
    let masters = c.masters();
    wait_for("broadcast reached every master", T, || {
        masters
            .iter()
            .all(|&m| c.nodes[m].field("connection") == "disconnected")
    });
    let written = c.set_keys(&keys("k", 0, BACKLOG));
    wait_for("backlogs stored", T, || {
        masters
            .iter()
            .map(|&m| c.nodes[m].stat("fallback_len"))
            .sum::<i64>()
            == written.len() as i64
    });
    c.nodes[masters[0]].cmd(&["key_evt_amqp.connect"]).unwrap();
    let m = masters[0];
    wait_for("draining", T, || c.nodes[m].stat("events_confirmed") > 0);
    let r = c.replica_of(m);
    text(&c.nodes[r], &["CLUSTER", "FAILOVER"]);
    wait_for("failover done", T, || c.nodes[r].field("role") == "master");
    sink.expect_keys(&written, T);
    let got: HashSet<String> = sink.received.iter().map(|m| m.key()).collect();
    let missing = written.iter().filter(|k| !got.contains(*k)).count();
    assert_eq!(missing, 0, "events missing after CLUSTER FAILOVER");
    for n in &c.nodes {
        assert_eq!(text(n, &["PING"]), "PONG", "every node is up");
    }
    eprintln!(
        "CLUSTER FAILOVER during a {} backlog: {} received",
        written.len(),
        sink.received.len()
    );
}

#[test]
fn spill_behind_batches_in_flight_keeps_the_order() {
    let n = 200_000;
    let mut sink = Sink::new(amqp_port());
    let srv = Server::start(
        Kind::Redis,
        &args(&sink),
        &[
            ("key_evt_amqp.queue-max-events", "1000"),
            ("key_evt_amqp.burst-rate", "0"),
        ],
    );
    for chunk in (0..n).step_by(10_000) {
        srv.set_keys(&keys("k", chunk, chunk + 10_000));
    }
    let msgs = sink.expect_sequence("k", n, T).to_vec();
    let dups = check_sequence(&msgs, "k", n);
    assert!(
        srv.stat("events_stored") > 0,
        "the queue spilled to the list"
    );
    wait_for("drained", T, || srv.stat("fallback_len") == 0);
    assert_clean(&srv);
    eprintln!(
        "spill ordering: {n} events, {} stored on the way, {dups} duplicates",
        srv.stat("events_stored")
    );
}
