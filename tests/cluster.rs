//! Redis Cluster and replication: each event forwarded once, by masters only,
//! through failover and resharding; commands broadcast to every node.

mod common;

use common::amqp::Sink;
use common::args::ModuleArgs;
use common::cluster::{text, Cluster};
use common::msg::Msg;
use common::proxy::Proxy;
use common::server::Kind;
use common::topology::Topology;
use common::{amqp_port, refused_port, wait_for, wait_showing};
use redis_keyspace_amqp::slots::key_slot;
use std::collections::HashMap;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// How often each key arrived.
fn counts(sink: &Sink) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for msg in &sink.received {
        *m.entry(msg.key()).or_insert(0) += 1;
    }
    m
}

fn cluster_args(sink: &Sink, port: u16) -> Vec<String> {
    ModuleArgs::new(sink).port(port).heartbeat(2).build()
}

fn basic(kind: Kind) {
    let mut sink = Sink::new(amqp_port());
    let c = Topology::cluster(kind, 3, &cluster_args(&sink, sink.port));
    let written = c.set_keys(&keys("k", 3000));
    assert_eq!(written.len(), 3000);
    sink.expect_at_least(3000, T);
    let sentinels = c.sentinels("sentinel-");
    c.set_keys(&sentinels);
    sink.expect_only_sentinels(&sentinels, T);
    let counts = counts(&sink);
    assert_eq!(counts.len(), 3000);
    assert!(
        counts.values().all(|&n| n == 1),
        "{kind:?}: an event was forwarded twice"
    );
    let masters = c.masters();
    assert_eq!(masters.len(), 3);
    for (i, n) in c.nodes.iter().enumerate() {
        let info = n.info();
        if masters.contains(&i) {
            assert_eq!(info["role"], "master");
            assert_eq!(info["forwarding"], "yes");
            assert!(info["events_accepted"].parse::<i64>().unwrap() > 0);
            assert!(
                info["fallback_key"].starts_with("key_evt_amqp:fallback{"),
                "{}",
                info["fallback_key"]
            );
        } else {
            assert_eq!(info["role"], "replica");
            assert_eq!(info["forwarding"], "no");
            assert_eq!(info["events_accepted"], "0");
            assert_eq!(info["connection"], "idle", "a replica never connects");
        }
    }
}

#[test]
fn each_set_is_forwarded_once_on_redis() {
    basic(Kind::Redis);
}

#[test]
fn each_set_is_forwarded_once_on_redis8() {
    basic(Kind::Redis8);
}

#[test]
fn each_set_is_forwarded_once_on_valkey() {
    basic(Kind::Valkey);
}

#[test]
fn commands_are_broadcast_to_every_node() {
    let sink = Sink::new(amqp_port());
    let c = Topology::cluster(Kind::Redis, 3, &cluster_args(&sink, sink.port));
    c.nodes[0]
        .cmd(&["key_evt_amqp.keymask_set", "^user:", "bin\x00ary"])
        .unwrap();
    for n in &c.nodes {
        wait_for("keymask on every node", T, || {
            n.field("keymasks") == "^user: bin\\x00ary"
        });
    }
    c.nodes[1]
        .cmd(&[
            "key_evt_amqp.config_set",
            "127.0.0.1",
            &sink.port.to_string(),
            "guest",
            "s3cret-pw",
        ])
        .unwrap();
    c.nodes[2]
        .cmd(&["key_evt_amqp.fallback_storage_size_set", "77"])
        .unwrap();
    for n in &c.nodes {
        wait_for("fallback size on every node", T, || {
            n.field("fallback_size") == "77"
        });
        assert!(!n.log().contains("s3cret-pw"), "password logged");
    }
    assert!(c.nodes[0].log().contains("applying broadcast config_set"));
    // A broadcast connect makes only masters connect.
    c.nodes[3]
        .cmd(&[
            "key_evt_amqp.connect",
            "127.0.0.1",
            &sink.port.to_string(),
            "guest",
            "guest",
        ])
        .unwrap();
    let masters = c.masters();
    for (i, n) in c.nodes.iter().enumerate() {
        if masters.contains(&i) {
            wait_for("masters connect", T, || {
                n.field("connection") == "connected"
            });
        }
    }
    for (i, n) in c.nodes.iter().enumerate() {
        if !masters.contains(&i) {
            assert_eq!(n.field("connection"), "idle");
        }
    }
}

#[test]
fn manual_failover_under_write_load_delivers_everything() {
    let mut sink = Sink::new(amqp_port());
    let c = Topology::cluster(Kind::Redis, 3, &cluster_args(&sink, sink.port));
    let m = c.masters()[0];
    let r = c.replica_of(m);
    let first = c.set_keys(&keys("a", 2000));
    text(&c.nodes[r], &["CLUSTER", "FAILOVER"]);
    let second = c.set_keys(&keys("b", 2000));
    wait_for("failover done", T, || {
        text(&c.nodes[r], &["INFO", "replication"]).contains("role:master")
    });
    let third = c.set_keys(&keys("c", 2000));
    let all: Vec<String> = first.into_iter().chain(second).chain(third).collect();
    sink.expect_keys(&all, T);
    let sentinels = c.sentinels("sentinel-");
    c.set_keys(&sentinels);
    sink.expect_only_sentinels(&sentinels, T);
    let counts = counts(&sink);
    let missing: Vec<&String> = all.iter().filter(|k| !counts.contains_key(*k)).collect();
    let dups: usize = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "manual failover: {} written, {} missing, {dups} duplicates",
        all.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "missing {:?}",
        &missing[..missing.len().min(10)]
    );
    wait_for("new master forwards", T, || {
        c.nodes[r].field("role") == "master"
    });
    assert_eq!(c.nodes[m].field("role"), "replica");
}

/// The in-flight window of the SIGKILL test (`inflight-max`) and its batch
/// size: small, so that "at most the window" is a bound its 1,000 or so
/// events per master can break.
const WINDOW: i64 = 64;
const BATCH: i64 = 16;
/// The most a node may hold in flight: the window (batches are cut to fit it).
const IN_FLIGHT_MAX: i64 = WINDOW;

#[test]
fn master_killed_then_automatic_failover_loses_at_most_the_window() {
    let mut sink = Sink::new(amqp_port());
    let (window, batch) = (WINDOW.to_string(), BATCH.to_string());
    let mut c = Cluster::start_with(
        Kind::Redis,
        3,
        &cluster_args(&sink, sink.port),
        &[
            ("key_evt_amqp.inflight-max", window.as_str()),
            ("key_evt_amqp.batch-size", batch.as_str()),
        ],
    );
    let m = c.masters()[0];
    let r = c.replica_of(m);
    let first = c.set_keys(&keys("a", 3000));
    c.fail_fast();
    // Killed once its queue and list are empty: what only its memory holds
    // is then the window in flight, and that can only shrink before the kill.
    let mut at_kill = Default::default();
    wait_for("the master's queue and list empty", T, || {
        at_kill = c.nodes[m].info();
        at_kill["queue_len"] == "0" && at_kill["fallback_len"] == "0"
    });
    c.nodes[m].kill();
    let stat = |i: &HashMap<String, String>, f: &str| i[f].parse::<i64>().unwrap();
    let held = stat(&at_kill, "inflight");
    assert!(
        held <= IN_FLIGHT_MAX,
        "{held} events in flight, over the window of {WINDOW}"
    );
    wait_for("replica promoted", T, || {
        text(&c.nodes[r], &["INFO", "replication"]).contains("role:master")
    });
    c.wait_ok();
    let second = c.set_keys(&keys("b", 3000));
    sink.expect_keys(&second, T);
    let all: Vec<String> = first.into_iter().chain(second).collect();
    wait_for("events settle", T, || {
        sink.drain();
        c.nodes.iter().filter(|n| n.pid() != 0).all(|n| {
            n.field("inflight") == "0"
                && n.field("queue_len") == "0"
                && n.field("fallback_len") == "0"
        })
    });
    let sentinels = c.sentinels("sentinel-");
    c.set_keys(&sentinels);
    sink.expect_only_sentinels(&sentinels, T);
    // Every loss the nodes counted: the killed master's as it last showed them.
    let counted: i64 = c
        .nodes
        .iter()
        .filter(|n| n.pid() != 0)
        .map(|n| n.info())
        .chain([at_kill.clone()])
        .map(|i| stat(&i, "events_dropped") + stat(&i, "events_lost"))
        .sum();
    let counts = counts(&sink);
    let missing = all.iter().filter(|k| !counts.contains_key(*k)).count() as i64;
    let dups: usize = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "SIGKILL failover: {} acknowledged writes, {missing} events lost, {dups} duplicates; {held} in flight at the kill (window {WINDOW}, batch {BATCH}), {counted} counted as dropped or lost",
        all.len()
    );
    assert!(
        missing <= held + counted,
        "lost {missing}: more than the {held} in flight at the kill and the {counted} counted"
    );
    assert!(
        all.iter()
            .filter(|k| k.starts_with('b'))
            .all(|k| counts.contains_key(k)),
        "writes after the failover are all delivered"
    );
}

#[test]
fn resharding_moves_the_backlog_and_it_is_delivered() {
    let mut sink = Sink::new(amqp_port());
    // The broker is "down" for the cluster: the module points at a closed port.
    let (_closed, closed) = refused_port();
    let c = Topology::cluster(Kind::Redis, 3, &cluster_args(&sink, closed));
    let written = c.set_keys(&keys("k", 1500));
    // Per node: role, link, queue and list, for a failure's message.
    let show = || {
        c.nodes
            .iter()
            .map(|n| {
                let i = n.info();
                let get = |f: &str| i.get(f).cloned().unwrap_or_default();
                format!(
                    "{}: {} {} queue {} list {} error '{}'",
                    n.port,
                    get("role"),
                    get("connection"),
                    get("queue_len"),
                    get("fallback_len"),
                    get("last_error")
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    wait_showing(
        "backlogs stored",
        T,
        || {
            c.masters()
                .iter()
                .map(|&m| c.nodes[m].stat("fallback_len"))
                .sum::<i64>()
                == 1500
        },
        show,
    );
    let masters = c.masters();
    let (a, b) = (masters[0], masters[1]);
    let key = c.nodes[a].field("fallback_key");
    let stored_a = c.nodes[a].stat("fallback_len");
    let slot: u16 = text(&c.nodes[a], &["CLUSTER", "KEYSLOT", &key])
        .trim()
        .parse()
        .unwrap_or_else(|_| {
            redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(&key)
                .query::<i64>(&mut c.nodes[a].conn())
                .unwrap() as u16
        });
    // Move that slot, with the backlog in it, from a to b.
    let (ida, idb) = (c.node_id(a), c.node_id(b));
    let s = slot.to_string();
    text(&c.nodes[b], &["CLUSTER", "SETSLOT", &s, "IMPORTING", &ida]);
    text(&c.nodes[a], &["CLUSTER", "SETSLOT", &s, "MIGRATING", &idb]);
    let port_b = c.nodes[b].port.to_string();
    let moved = text(
        &c.nodes[a],
        &["MIGRATE", "127.0.0.1", &port_b, &key, "0", "5000"],
    );
    assert!(moved.to_lowercase().contains("ok"), "MIGRATE: {moved}");
    for n in [b, a] {
        text(&c.nodes[n], &["CLUSTER", "SETSLOT", &s, "NODE", &idb]);
    }
    eprintln!("moved slot {slot} holding {stored_a} events of '{key}' from node {a} to node {b}");
    wait_for("b adopts the backlog", T, || {
        c.nodes[b].stat("fallback_lists_found") == 0 && c.nodes[b].stat("fallback_len") > 0
    });
    wait_for("a moves its backlog key to a slot it still owns", T, || {
        c.nodes[a].field("fallback_key") != key
    });
    // The broker comes back: one command, broadcast to all nodes.
    c.nodes[0]
        .cmd(&[
            "key_evt_amqp.config_set",
            "127.0.0.1",
            &sink.port.to_string(),
        ])
        .unwrap();
    sink.expect_keys(&written, T);
    let counts = counts(&sink);
    assert!(
        written.iter().all(|k| counts.contains_key(k)),
        "every stored event is delivered"
    );
}

#[test]
fn master_replica_without_cluster_follows_the_role() {
    let mut sink = Sink::new(amqp_port());
    let args = cluster_args(&sink, sink.port);
    let (a, b) = Topology::replicated(Kind::Redis, &args, &[]);
    a.set_keys(&keys("a", 100));
    sink.expect_at_least(100, T);
    assert_eq!(b.field("role"), "replica");
    assert_eq!(b.stat("events_accepted"), 0);
    // A backlog built on the master reaches the replica by replication.
    a.cmd(&["key_evt_amqp.disconnect"]).unwrap();
    a.set_keys(&keys("b", 100));
    wait_for("backlog replicated", T, || {
        b.llen("key_evt_amqp:fallback") == 100
    });
    // Swap roles.
    b.cmd(&["REPLICAOF", "NO", "ONE"]).unwrap();
    a.cmd(&["REPLICAOF", "127.0.0.1", &b.port.to_string()])
        .unwrap();
    wait_for("b is master", T, || b.field("role") == "master");
    wait_for("a is replica", T, || a.field("role") == "replica");
    b.set_keys(&keys("c", 100));
    sink.expect_at_least(300, T);
    sink.expect_nothing_before(&b, "sentinel", T);
    let got: Vec<String> = sink.received.iter().map(|m| m.key()).collect();
    let expected: Vec<String> = keys("a", 100)
        .into_iter()
        .chain(keys("b", 100))
        .chain(keys("c", 100))
        .collect();
    assert_eq!(
        got, expected,
        "backlog first, then the new master's own events, each once"
    );
}

/// Moves `slot` from master `a` to master `b` the way `redis-cli --cluster
/// reshard` does (every key by `MIGRATE`, then `SETSLOT NODE`); `before_owning`
/// runs after the keys moved and before `b` owns the slot.
fn move_slot(c: &Cluster, a: usize, b: usize, slot: u16, before_owning: impl FnOnce()) {
    let (ida, idb) = (c.node_id(a), c.node_id(b));
    let s = slot.to_string();
    text(&c.nodes[b], &["CLUSTER", "SETSLOT", &s, "IMPORTING", &ida]);
    text(&c.nodes[a], &["CLUSTER", "SETSLOT", &s, "MIGRATING", &idb]);
    let port_b = c.nodes[b].port.to_string();
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(1000)
            .query(&mut c.nodes[a].conn())
            .unwrap();
        if keys.is_empty() {
            break;
        }
        let moved: String = redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(&port_b)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(&keys)
            .query(&mut c.nodes[a].conn())
            .unwrap();
        assert_eq!(moved, "OK");
    }
    before_owning();
    for n in [b, a] {
        text(&c.nodes[n], &["CLUSTER", "SETSLOT", &s, "NODE", &idb]);
    }
}

/// Two masters `(a, b)`: `b` keeps its own list when it gets the slot of
/// `a`'s (its own sits in a lower slot), so it adopts `a`'s list.
fn adopter_pair(c: &Cluster) -> (usize, usize) {
    let mut m = c.masters();
    m.sort_by_key(|&n| list_slot(c, n).1);
    (m[1], m[0])
}

/// The slot of node `n`'s fallback list.
fn list_slot(c: &Cluster, n: usize) -> (String, u16) {
    let key = c.nodes[n].field("fallback_key");
    let slot = key_slot(key.as_bytes());
    (key, slot)
}

/// Keys with `prefix` that live on node `n` now.
fn keys_on(c: &Cluster, n: usize, prefix: &str, count: usize) -> Vec<String> {
    let map = c.slot_map();
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|k| map[usize::from(key_slot(k.as_bytes()))] == n)
        .take(count)
        .collect()
}

/// First deliveries only (by `message_id`), in arrival order.
fn first_deliveries(sink: &Sink) -> Vec<Msg> {
    let mut seen = std::collections::HashSet::new();
    sink.received
        .iter()
        .filter(|m| seen.insert(m.message_id.clone()))
        .cloned()
        .collect()
}

/// Per node (`message_id` is `<node tag>-<seq>`), first deliveries in order.
fn assert_ordered_per_node(sink: &Sink) {
    assert_ordered_among(sink, |_| true);
}

/// [`assert_ordered_per_node`] over the first deliveries whose key passes
/// `keep`.
fn assert_ordered_among(sink: &Sink, keep: impl Fn(&str) -> bool) {
    let mut last: HashMap<String, u64> = HashMap::new();
    for m in first_deliveries(sink)
        .into_iter()
        .filter(|m| keep(&m.key()))
    {
        let (tag, seq) = m.message_id.rsplit_once('-').expect("tag-seq");
        let seq: u64 = seq.parse().expect("seq");
        if let Some(&l) = last.get(tag) {
            assert!(
                seq > l,
                "node {tag}: {} ({seq}) arrived first after seq {l}",
                m.key()
            );
        }
        last.insert(tag.to_string(), seq);
    }
}

fn outbox(c: &Cluster) {
    for n in &c.nodes {
        text(n, &["CONFIG", "SET", "key_evt_amqp.durability", "outbox"]);
        assert_eq!(n.field("durability"), "outbox");
    }
}

/// Issue 16 case 5: the slot of a node's own fallback list moves while the
/// list's records are in flight. The node switches to a key in a slot it
/// still owns at once, keeps forwarding, and nothing is lost or reordered.
#[test]
fn resharding_the_slot_of_a_list_in_flight_does_not_stall_forwarding() {
    let mut sink = Sink::new(amqp_port());
    let proxy = Proxy::new(sink.port);
    let args = ModuleArgs::new(&sink)
        .port(proxy.port)
        .heartbeat(30)
        .build();
    let c = Topology::cluster(Kind::Redis8, 3, &args);
    outbox(&c);
    let first = c.set_keys(&keys("a", 300));
    sink.expect_keys(&first, T);
    let masters = c.masters();
    let (a, b) = (masters[0], masters[1]);
    // The broker stalls: the list records of every master are in flight.
    proxy.stall(true);
    let second = c.set_keys(&keys("b", 900));
    wait_for("a's list records in flight", T, || {
        let n = c.nodes[a].stat("inflight");
        n > 0 && n == c.nodes[a].stat("fallback_len")
    });
    let (key, slot) = list_slot(&c, a);
    move_slot(&c, a, b, slot, || {});
    eprintln!("moved slot {slot} of '{key}' from node {a} to node {b} with its records in flight");
    wait_for(
        "a switches to a key in a slot it owns",
        Duration::from_secs(20),
        || c.nodes[a].field("fallback_key") != key,
    );
    let third = c.set_keys(&keys("c", 900));
    proxy.stall(false);
    let fourth = c.set_keys(&keys("d", 300));
    let all: Vec<String> = [first, second, third, fourth].concat();
    sink.expect_keys(&all, T);
    wait_for("a drained", T, || {
        sink.drain();
        c.nodes[a].stat("inflight") == 0 && c.nodes[a].stat("fallback_len") == 0
    });
    let counts = counts(&sink);
    let missing = all.iter().filter(|k| !counts.contains_key(*k)).count();
    let dups: usize = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "{} written, {missing} missing, {dups} duplicates, a resent {}",
        all.len(),
        c.nodes[a].stat("events_resent")
    );
    assert_eq!(missing, 0);
    assert_ordered_per_node(&sink);
    assert_eq!(c.nodes[a].stat("events_dropped_unwritable"), 0);
    assert_eq!(c.nodes[a].stat("events_dropped"), 0);
}

/// Issue 16, the soak's shortfall: a node whose list's slot is being
/// migrated (the list already moved to the importing node, the slot not yet
/// handed over) takes writes. Their events must reach the broker, and the
/// moved records, which the new owner sends, are not counted as lost.
#[test]
fn writes_while_the_list_slot_migrates_keep_their_events() {
    let mut sink = Sink::new(amqp_port());
    let proxy = Proxy::new(sink.port);
    let args = ModuleArgs::new(&sink)
        .port(proxy.port)
        .heartbeat(30)
        .build();
    let c = Topology::cluster(Kind::Redis8, 3, &args);
    outbox(&c);
    let masters = c.masters();
    let (a, b) = (masters[0], masters[1]);
    let first = c.set_keys(&keys_on(&c, a, "a", 50));
    sink.expect_keys(&first, T);
    // The broker stalls: a's records stay in its list (some in flight).
    proxy.stall(true);
    let second = c.set_keys(&keys_on(&c, a, "b", 200));
    wait_for("a's list holds them", T, || {
        c.nodes[a].stat("fallback_len") >= 200
    });
    let (key, slot) = list_slot(&c, a);
    let third: Vec<String> = keys_on(&c, a, "c", 400)
        .into_iter()
        .filter(|k| key_slot(k.as_bytes()) != slot)
        .take(100)
        .collect();
    let accepted = c.nodes[a].stat("events_accepted");
    move_slot(&c, a, b, slot, || {
        // The list is on b now; a still serves the slot's other keys.
        c.nodes[a].set_keys(&third);
        wait_for("a took the writes", T, || {
            c.nodes[a].stat("events_accepted") >= accepted + third.len() as i64
        });
        wait_for("a ticked with its list gone", T, || {
            c.nodes[a].stat("fallback_len") != 200 || c.nodes[a].stat("queue_len") > 0
        });
    });
    eprintln!("moved slot {slot} of '{key}' from node {a} to node {b}; 100 writes on a in between");
    proxy.stall(false);
    let all: Vec<String> = [first, second.clone(), third].concat();
    sink.expect_keys(&all, T);
    let counts = counts(&sink);
    let missing = all.iter().filter(|k| !counts.contains_key(*k)).count();
    let lost = c.nodes[a].stat("events_lost");
    let dropped = c.nodes[a].stat("events_dropped");
    eprintln!(
        "{missing} missing; a: events_lost {lost}, events_dropped {dropped}, lists on a {:?}",
        c.nodes[a].cmd(&["KEYS", "key_evt_amqp:*"])
    );
    assert_eq!(missing, 0);
    assert_eq!(lost, 0, "the moved records are b's to send, not lost");
    assert_eq!(dropped, 0);
    // The moved list's records go out from b, a's newer ones from a: each
    // sender keeps its order, the two streams interleave (docs/cluster.md).
    let moved: std::collections::HashSet<&str> = second.iter().map(String::as_str).collect();
    assert_ordered_among(&sink, |k| moved.contains(k));
    assert_ordered_among(&sink, |k| !moved.contains(k));
}

/// Issue 16 case 6: adopting a moved list never drops it, whatever the
/// adopter's memory or fallback size.
fn adoption_keeps_every_record(squeeze: &[(&str, &str)]) {
    let mut sink = Sink::new(amqp_port());
    let (_closed, closed) = refused_port();
    let c = Topology::cluster(Kind::Redis, 3, &cluster_args(&sink, closed));
    let (a, b) = adopter_pair(&c);
    let written = c.set_keys(&keys_on(&c, a, "k", 1500));
    wait_for("a's backlog stored", T, || {
        c.nodes[a].stat("fallback_len") == 1500
    });
    let (key, slot) = list_slot(&c, a);
    move_slot(&c, a, b, slot, || {
        for (name, value) in squeeze {
            text(&c.nodes[b], &["CONFIG", "SET", name, value]);
        }
    });
    wait_for("b adopts the backlog", T, || {
        c.nodes[b].stat("fallback_lists_found") == 0 && c.nodes[b].stat("fallback_len") > 0
    });
    assert_eq!(c.nodes[b].stat("events_dropped"), 0, "{squeeze:?}");
    assert_eq!(c.nodes[b].llen(&key), 0, "the found list is emptied");
    assert_ne!(
        c.nodes[b].field("fallback_key"),
        key,
        "b adopted it into its own"
    );
    c.nodes[0]
        .cmd(&[
            "key_evt_amqp.config_set",
            "127.0.0.1",
            &sink.port.to_string(),
        ])
        .unwrap();
    sink.expect_keys(&written, Duration::from_secs(30));
    let got: Vec<String> = first_deliveries(&sink).iter().map(Msg::key).collect();
    assert_eq!(got, written, "{squeeze:?}: every adopted record, in order");
}

#[test]
fn adopting_a_moved_list_over_maxmemory_keeps_every_record() {
    adoption_keeps_every_record(&[("maxmemory-policy", "noeviction"), ("maxmemory", "1")]);
}

#[test]
fn adopting_a_moved_list_with_the_fallback_off_keeps_every_record() {
    adoption_keeps_every_record(&[("key_evt_amqp.fallback-size", "-1")]);
}

/// Issue 16 case 7: while a moved list is adopted, the adopter's own new
/// records (outbox mode) wait, so the adopted ones stay contiguous and go first.
#[test]
fn adoption_keeps_the_moved_list_contiguous_and_ahead() {
    let mut sink = Sink::new(amqp_port());
    let (_closed, closed) = refused_port();
    let c = Topology::cluster(Kind::Redis8, 3, &cluster_args(&sink, closed));
    outbox(&c);
    let (a, b) = adopter_pair(&c);
    let moved = c.set_keys(&keys_on(&c, a, "x", 20_000));
    wait_for("a's backlog stored", T, || {
        c.nodes[a].stat("fallback_len") == 20_000
    });
    let (key, slot) = list_slot(&c, a);
    // b's own writes go on all along, pipelined, through the adoption.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let map = c.slot_map();
    let url = c.nodes[b].url();
    let writer = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
            let mut own = Vec::new();
            let mut next = (0..)
                .map(|i| format!("w{i}"))
                .filter(|k| map[usize::from(key_slot(k.as_bytes()))] == b);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let chunk: Vec<String> = next.by_ref().take(20).collect();
                let mut pipe = redis::pipe();
                for k in &chunk {
                    pipe.cmd("SET").arg(k).arg("v").ignore();
                }
                if pipe.query::<()>(&mut conn).is_err() {
                    break;
                }
                own.extend(chunk);
                // A steady load (a few thousand writes a second), not a flood
                // that starves the cluster bus on a small machine.
                std::thread::sleep(Duration::from_millis(2));
            }
            own
        })
    };
    move_slot(&c, a, b, slot, || {});
    let done = format!("adopted the fallback list '{key}'");
    wait_showing(
        "b adopts the backlog",
        T,
        || c.nodes[b].log().contains(&done),
        || {
            let i = c.nodes[b].info();
            [
                "fallback_key",
                "fallback_lists_found",
                "fallback_len",
                "queue_len",
                "last_error",
                "events_accepted",
            ]
            .iter()
            .map(|f| format!("{f}={}", i.get(*f).cloned().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(" ")
        },
    );
    // Some of b's own writes after the adoption, too.
    let after = c.nodes[b].stat("events_accepted") + 2000;
    wait_showing(
        "b's writes go on",
        T,
        || c.nodes[b].stat("events_accepted") > after,
        || format!("b accepted {}", c.nodes[b].stat("events_accepted")),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let own = writer.join().unwrap();
    c.nodes[0]
        .cmd(&[
            "key_evt_amqp.config_set",
            "127.0.0.1",
            &sink.port.to_string(),
        ])
        .unwrap();
    let all: Vec<String> = moved.iter().chain(own.iter()).cloned().collect();
    sink.expect_keys(&all, T);
    let order: Vec<String> = first_deliveries(&sink)
        .iter()
        .map(Msg::key)
        .filter(|k| k.starts_with('x') || k.starts_with('w'))
        .collect();
    let first_x = order.iter().position(|k| k.starts_with('x')).unwrap();
    let block = &order[first_x..first_x + moved.len()];
    let own_inside = block.iter().filter(|k| k.starts_with('w')).count();
    let own_after = order.len() - first_x - moved.len();
    eprintln!(
        "{} adopted, {} own writes: {first_x} before the adopted block, {own_inside} inside it, {own_after} after",
        moved.len(),
        own.len()
    );
    assert!(
        own_after > 0,
        "b's writes after the adoption come after the block"
    );
    assert_eq!(own_inside, 0, "the adopted records are contiguous");
    assert_eq!(block, &moved[..], "the adopted records in their order");
}

/// Issue 16, the window that was left open: a node whose fallback list is
/// empty when its slot starts migrating keeps writing records while the
/// resharding tool runs. Its first write to the list answers ASK (the key is
/// not there); the records wait in memory, the node picks a key in a slot it
/// owns at once and writes them there. Nothing is dropped or left behind in
/// the migrating slot. In `outbox` mode every event is written to the list;
/// in `memory` mode the broker is unreachable meanwhile, so the queue spills.
fn an_empty_list_whose_slot_migrates(durability: &str) {
    let mut sink = Sink::new(amqp_port());
    let proxy = Proxy::new(sink.port);
    let args = ModuleArgs::new(&sink).port(proxy.port).build();
    let c = Topology::cluster(Kind::Redis8, 3, &args);
    for n in &c.nodes {
        text(n, &["CONFIG", "SET", "key_evt_amqp.durability", durability]);
    }
    let masters = c.masters();
    let (a, b) = (masters[0], masters[1]);
    let first = c.set_keys(&keys_on(&c, a, "a", 50));
    sink.expect_keys(&first, T);
    wait_for("a's list empty", T, || c.nodes[a].stat("fallback_len") == 0);
    let memory = durability == "memory";
    if memory {
        proxy.refuse(true);
        proxy.cut();
        wait_for("a lost the broker", T, || {
            c.nodes[a].field("connection") != "connected"
        });
    }
    let (key, slot) = list_slot(&c, a);
    let second: Vec<String> = keys_on(&c, a, "b", 400)
        .into_iter()
        .filter(|k| key_slot(k.as_bytes()) != slot)
        .take(100)
        .collect();
    move_slot(&c, a, b, slot, || {
        c.nodes[a].set_keys(&second);
        wait_for("a wrote them to a list", T, || {
            c.nodes[a].stat("fallback_len") >= second.len() as i64
        });
    });
    eprintln!(
        "moved slot {slot} of '{key}' from node {a} to node {b}; 100 writes on a after the last MIGRATE; now '{}'",
        c.nodes[a].field("fallback_key")
    );
    proxy.refuse(false);
    let all: Vec<String> = [first, second].concat();
    sink.expect_keys(&all, T);
    let counts = counts(&sink);
    let missing = all.iter().filter(|k| !counts.contains_key(*k)).count();
    let left: Vec<String> = redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(slot)
        .arg(10)
        .query(&mut c.nodes[a].conn())
        .unwrap();
    eprintln!("{missing} missing; left on a in slot {slot}: {left:?}");
    assert_eq!(missing, 0);
    assert!(left.is_empty());
    assert_ne!(c.nodes[a].field("fallback_key"), key);
    assert_eq!(c.nodes[a].stat("events_dropped"), 0);
    assert_eq!(c.nodes[a].stat("events_lost"), 0);
    assert_ordered_per_node(&sink);
}

#[test]
fn an_empty_list_whose_slot_migrates_keeps_later_events_outbox() {
    an_empty_list_whose_slot_migrates("outbox");
}

#[test]
fn an_empty_list_whose_slot_migrates_keeps_later_events_memory() {
    an_empty_list_whose_slot_migrates("memory");
}
