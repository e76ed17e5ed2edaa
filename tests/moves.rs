//! Legacy resharding is invisible: `CLUSTER SETSLOT ... IMPORTING /
//! MIGRATING` and `MIGRATE` (as `redis-cli --cluster reshard` does it) move
//! keys without one event, while the writes made during the move (a key
//! deleted on the source, a key created on the target after an `ASK`) are
//! forwarded. Atomic slot migration (Valkey 9) is covered with the copy it
//! must keep right in `tests/replica.rs`.

mod common;

use common::amqp::Sink;
use common::args::ModuleArgs;
use common::cluster::{text, Cluster};
use common::server::{Kind, Server};
use common::{amqp_port, wait_for};
use redis_keyspace_amqp::slots::key_slot;
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

/// `n` keys of one slot (a hash tag).
fn keys_in(tag: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{{{tag}}}:{i}")).collect()
}

fn run(srv: &Server, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(&mut srv.conn())
}

fn reshard_quietly(kind: Kind) {
    let mut sink = Sink::new(amqp_port());
    let args = ModuleArgs::new(&sink).types("A").build();
    let cluster = Cluster::start(kind, 3, &args);
    let moved = keys_in("mv", 200);
    let slot = key_slot(moved[0].as_bytes());
    let map = cluster.slot_map();
    let a = map[usize::from(slot)];
    let b = (0..cluster.nodes.len())
        .find(|&i| i != a && map.contains(&i))
        .expect("another master");
    let (node_a, node_b) = (&cluster.nodes[a], &cluster.nodes[b]);
    cluster.set_keys(&moved);
    sink.expect_keys(&moved, T);
    let before = sink.received.len();

    let (a_id, b_id) = (cluster.node_id(a), cluster.node_id(b));
    let s = slot.to_string();
    text(node_b, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &a_id]);
    text(node_a, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &b_id]);
    // Writes during the move: a real delete on the source, before its key moves...
    run(node_a, &["DEL", &moved[0]]).expect("DEL on the source");
    // ...then the keys move, a batch at a time, as redis-cli does it.
    let port = node_b.port.to_string();
    for batch in moved[1..].chunks(50) {
        let mut m = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
        m.extend(batch.iter().map(String::as_str));
        run(node_a, &m).expect("MIGRATE");
    }
    // ...and a key created on the target after the source answered ASK.
    let fresh = "{mv}:fresh".to_string();
    let mut c = node_b.conn();
    redis::cmd("ASKING").query::<()>(&mut c).expect("ASKING");
    redis::cmd("SET")
        .arg(&fresh)
        .arg("new")
        .query::<()>(&mut c)
        .expect("SET after ASK");
    for n in cluster.masters() {
        text(
            &cluster.nodes[n],
            &["CLUSTER", "SETSLOT", &s, "NODE", &b_id],
        );
    }
    // Sentinels after the move on both nodes: delivery is ordered per node.
    let sentinel = |node: usize, name: &str| {
        let k = (0..)
            .map(|i| format!("{name}{i}"))
            .find(|k| map[usize::from(key_slot(k.as_bytes()))] == node)
            .expect("a key of the node");
        run(&cluster.nodes[node], &["SET", &k, "x"]).expect("sentinel");
        k
    };
    let sa = sentinel(a, "sentinel-a-");
    let sb = sentinel(b, "sentinel-b-");
    sink.expect_keys(&[&sa, &sb, &fresh], T);
    let after: Vec<(String, String)> = sink.received[before..]
        .iter()
        .map(|m| (m.parts().1, m.key()))
        .collect();
    let of_moved: Vec<&(String, String)> = after
        .iter()
        .filter(|(_, k)| k.starts_with("{mv}:"))
        .collect();
    assert_eq!(
        of_moved,
        [
            &("del".to_string(), moved[0].clone()),
            &("set".to_string(), fresh.clone())
        ],
        "{kind:?}: only the writes made during the move: {after:?}"
    );
    let skipped: i64 = [node_a, node_b]
        .iter()
        .map(|n| n.stat("events_moved"))
        .sum();
    assert_eq!(
        skipped,
        2 * 199,
        "{kind:?}: a del and a restore per moved key"
    );
    // The keys are on the target, the copy is whole.
    wait_for("the keys on the target", T, || {
        run(node_b, &["CLUSTER", "COUNTKEYSINSLOT", &s]).is_ok_and(|v| v == redis::Value::Int(200))
    });
}

#[test]
fn legacy_resharding_sends_no_event_for_moved_keys() {
    for kind in Kind::ALL {
        reshard_quietly(kind);
    }
}
