//! A copy rebuilt from the stream ends equal to the source: keys that
//! existed before forwarding started (the snapshot), a random mix of writes
//! of every kind across four databases while the snapshot runs (including
//! `RENAME`, `COPY`, `MOVE`, `MULTI`, Lua, `FLUSHDB` and `SWAPDB`), and a
//! broker stopped with `rabbitmqctl stop_app` in the middle. The reference
//! consumer (`examples/replicate`) applies every message in order to a
//! second server, and `compare` finds 0 keys that differ in type, value or
//! TTL.

mod common;

use common::amqp::Sink;
use common::args::ModuleArgs;
use common::cluster::Cluster;
use common::rabbit_cluster::RabbitCluster;
use common::server::{Kind, Server};
use common::{rabbitmqctl, wait_for, wait_showing};
use redis::Connection;
use redis_keyspace_amqp::slots::key_slot;
use std::time::{Duration, Instant};

/// The databases the workload writes (the fallback list lives in another).
const DBS: i64 = 4;
/// The fallback list's database: outside the flushed and swapped ones (see
/// docs/replication.md).
const FALLBACK_DB: &str = "9";

/// A small deterministic generator (xorshift), seeded per run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn conn_db(srv: &Server, db: i64) -> Connection {
    let mut c = srv.conn();
    redis::cmd("SELECT")
        .arg(db)
        .query::<()>(&mut c)
        .expect("SELECT");
    c
}

/// A key of one of the five kinds, with a name that tells its kind (so the
/// writer mostly writes a key with commands of its type; a few collisions
/// change types on purpose).
fn key(rng: &mut Rng) -> String {
    let kind = ["s", "h", "l", "S", "z"][rng.below(5) as usize];
    format!("{kind}:{}", rng.below(300))
}

/// Keys of every kind in every database, a quarter with a long TTL, before
/// forwarding is on.
fn populate(srv: &Server, rng: &mut Rng) -> usize {
    let mut n = 0;
    for db in 0..DBS {
        let mut c = conn_db(srv, db);
        let mut pipe = redis::pipe();
        for i in 0..300 {
            let ttl = rng.below(4) == 0;
            for (kind, cmd) in [
                (
                    "s",
                    vec!["SET".to_string(), format!("s:{i}"), format!("v{i}")],
                ),
                (
                    "h",
                    vec![
                        "HSET".into(),
                        format!("h:{i}"),
                        "f".into(),
                        format!("{i}"),
                        "g".into(),
                        "x".into(),
                    ],
                ),
                (
                    "l",
                    vec![
                        "RPUSH".into(),
                        format!("l:{i}"),
                        "a".into(),
                        "b".into(),
                        format!("{i}"),
                    ],
                ),
                (
                    "S",
                    vec![
                        "SADD".into(),
                        format!("S:{i}"),
                        "m1".into(),
                        format!("m{i}"),
                    ],
                ),
                (
                    "z",
                    vec![
                        "ZADD".into(),
                        format!("z:{i}"),
                        "1.5".into(),
                        "a".into(),
                        format!("{i}"),
                        "b".into(),
                    ],
                ),
            ] {
                if rng.below(3) == 0 {
                    continue;
                }
                let mut c = redis::cmd(&cmd[0]);
                for a in &cmd[1..] {
                    c.arg(a);
                }
                pipe.add_command(c).ignore();
                if ttl {
                    pipe.cmd("PEXPIRE")
                        .arg(format!("{kind}:{i}"))
                        .arg(600_000 + rng.below(600_000))
                        .ignore();
                }
                n += 1;
            }
        }
        pipe.query::<()>(&mut c).expect("populate");
    }
    n
}

/// One random write (or a few, in MULTI or a script); errors (a command on
/// a key of another type) change nothing and are ignored.
fn write_one(conns: &mut [Connection], rng: &mut Rng) {
    let db = rng.below(DBS as u64) as usize;
    let c = &mut conns[db];
    let k = key(rng);
    let v = format!("{}", rng.below(1000));
    let ttl = 600_000 + rng.below(600_000);
    let mut cmd = |args: &[&str]| {
        let mut r = redis::cmd(args[0]);
        for a in &args[1..] {
            r.arg(*a);
        }
        let _ = r.query::<redis::Value>(c);
    };
    match rng.below(100) {
        0..=11 => cmd(&["SET", &k, &v]),
        12..=15 => cmd(&["SET", &k, &v, "PX", &ttl.to_string()]),
        // Short-lived: expires during the run (its `expired` event deletes the copy).
        16 => cmd(&["SET", &k, &v, "PX", &(200 + rng.below(800)).to_string()]),
        17..=20 => cmd(&["INCR", &format!("s:n{}", rng.below(20))]),
        21..=26 => cmd(&["DEL", &k]),
        27..=30 => cmd(&["EXPIRE", &k, &(600 + rng.below(600)).to_string()]),
        31..=33 => cmd(&["PERSIST", &k]),
        34..=39 => cmd(&["HSET", &k, &format!("f{}", rng.below(5)), &v]),
        40..=42 => cmd(&["HDEL", &k, &format!("f{}", rng.below(5))]),
        43..=47 => cmd(&["RPUSH", &k, &v]),
        48..=49 => cmd(&["LPUSH", &k, &v]),
        50..=52 => cmd(&["LPOP", &k]),
        53..=54 => cmd(&["LREM", &k, "0", &v]),
        55..=59 => cmd(&["SADD", &k, &v]),
        60..=62 => cmd(&["SREM", &k, &v]),
        63..=67 => cmd(&["ZADD", &k, &format!("{}.25", rng.below(100)), &v]),
        68..=69 => cmd(&["ZINCRBY", &k, "2", &v]),
        70..=72 => cmd(&["ZREM", &k, &v]),
        73..=75 => {
            let to = key(rng);
            cmd(&["RENAME", &k, &to]);
        }
        76..=78 => {
            let to = key(rng);
            let dst = rng.below(DBS as u64).to_string();
            cmd(&["COPY", &k, &to, "DB", &dst, "REPLACE"]);
        }
        79..=81 => {
            let dst = rng.below(DBS as u64).to_string();
            cmd(&["MOVE", &k, &dst]);
        }
        82..=87 => {
            let k2 = key(rng);
            let mut p = redis::pipe();
            p.atomic()
                .cmd("SET")
                .arg(&k)
                .arg(&v)
                .ignore()
                .cmd("HSET")
                .arg(&k2)
                .arg("f0")
                .arg(&v)
                .ignore()
                .cmd("DEL")
                .arg(&k)
                .ignore()
                .cmd("SADD")
                .arg(&k)
                .arg(&v)
                .ignore();
            let _ = p.query::<redis::Value>(c);
        }
        88..=93 => {
            let k2 = key(rng);
            let script = "redis.pcall('RPUSH', KEYS[1], ARGV[1]); \
                          redis.pcall('INCRBY', 's:n0', 3); \
                          redis.pcall('ZADD', KEYS[2], 7, ARGV[1]); \
                          return 1";
            let _ = redis::cmd("EVAL")
                .arg(script)
                .arg(2)
                .arg(&k)
                .arg(&k2)
                .arg(&v)
                .query::<redis::Value>(c);
        }
        94 => {
            let a = rng.below(DBS as u64);
            let b = rng.below(DBS as u64);
            cmd(&["SWAPDB", &a.to_string(), &b.to_string()]);
        }
        // A flush empties a database now and then (1 write in 2000).
        95 if rng.below(20) == 0 => cmd(&["FLUSHDB"]),
        _ => cmd(&["SET", &k, &v, "KEEPTTL"]),
    }
}

/// Waits until no key of `srv` has a TTL under a minute (the short-lived
/// ones expired), so that both sides are compared without keys about to go.
fn wait_short_ttls_gone(srv: &Server, what: &str) {
    wait_for(
        &format!("short-lived keys of the {what} to expire"),
        Duration::from_secs(60),
        || {
            (0..DBS).all(|db| {
                let mut c = conn_db(srv, db);
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg("*")
                    .query(&mut c)
                    .unwrap_or_default();
                keys.iter().all(|k| {
                    let t: i64 = redis::cmd("PTTL").arg(k).query(&mut c).unwrap_or(-2);
                    !(0..60_000).contains(&t)
                })
            })
        },
    );
}

fn replica_copy(kind: Kind, seed: u64) {
    // One broker of this binary's own, stopped in the middle: one test at a time.
    let _serial = common::fault_lock();
    let broker = &RabbitCluster::shared_as("rep", 1).nodes[0];
    let mut sink = Sink::new(broker.port);
    // Every class, no mask yet: nothing is forwarded before the copy starts.
    // Persistent messages: the queue keeps them across the broker's restart.
    let args = ModuleArgs::new(&sink)
        .types("A")
        .masks(&[])
        .delivery_mode(2)
        .build();
    let src = Server::start(
        kind,
        &args,
        &[
            ("key_evt_amqp.format", "json"),
            ("key_evt_amqp.values", "after"),
            ("key_evt_amqp.fallback-db", FALLBACK_DB),
            // Small slices and a small backlog bound: the walk takes many
            // ticks and pauses, so writes interleave with it.
            ("key_evt_amqp.snapshot-slice-us", "200"),
            ("key_evt_amqp.snapshot-backlog-max", "2000"),
        ],
    );
    let target = Server::start_bare(kind);
    let mut rng = Rng(seed | 1);
    let before = populate(&src, &mut rng);

    // The copy starts: keys forwarded from now on, and the snapshot.
    src.cmd(&["key_evt_amqp.keymask_set", "ALL"]).unwrap();
    src.cmd(&["key_evt_amqp.snapshot"]).unwrap();
    let mut conns: Vec<Connection> = (0..DBS).map(|db| conn_db(&src, db)).collect();
    let t0 = Instant::now();
    let mut writes = 0u64;
    let mut stopped = false;
    let mut restarted = false;
    while writes < 6000 || src.field("snapshot_state") != "done" {
        for _ in 0..50 {
            write_one(&mut conns, &mut rng);
            writes += 1;
        }
        // The broker goes away in the middle, and comes back.
        if !stopped && writes >= 2000 {
            rabbitmqctl(&broker.name, &["stop_app"]);
            stopped = true;
        } else if stopped && !restarted && writes >= 3500 {
            rabbitmqctl(&broker.name, &["start_app"]);
            rabbitmqctl(&broker.name, &["await_startup", "--timeout", "120"]);
            restarted = true;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(240),
            "the snapshot did not finish: {:?}",
            src.info()
        );
    }
    assert!(restarted);
    // Everything held is delivered.
    wait_showing(
        "the module to deliver everything",
        Duration::from_secs(120),
        || {
            let i = src.info();
            ["queue_len", "inflight", "fallback_len"]
                .iter()
                .all(|f| i.get(*f).map(String::as_str) == Some("0"))
        },
        || format!("{:?}", src.info()),
    );
    wait_short_ttls_gone(&src, "source");
    // The short-lived keys' `expired` events are delivered too.
    wait_showing(
        "the expiries to be delivered",
        Duration::from_secs(60),
        || {
            let i = src.info();
            i.get("queue_len").map(String::as_str) == Some("0")
                && i.get("inflight").map(String::as_str) == Some("0")
        },
        || format!("{:?}", src.info()),
    );
    let stats = src.info();
    for f in ["events_dropped", "events_lost"] {
        assert_eq!(stats[f], "0", "{f}: {stats:?}");
    }

    // The consumer applies every message in order.
    let mut target_conn = target.conn();
    let mut dedup = replicate::dedup::Dedup::new(1_000_000);
    let mut applied = 0usize;
    let mut snapshot_keys = 0u64;
    loop {
        let got = sink.drain();
        let msgs = std::mem::take(&mut sink.received);
        for m in &msgs {
            let rec = replicate::Record::parse(&m.body)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&m.body)));
            if !dedup.first_time(&m.message_id) {
                continue;
            }
            if rec.event == "snapshot" {
                snapshot_keys += 1;
            }
            replicate::apply(&mut target_conn, &rec).expect("apply");
            applied += 1;
        }
        if got == 0 {
            break;
        }
    }
    wait_short_ttls_gone(&target, "copy");
    let report = replicate::compare(
        &[redis::Client::open(src.url()).unwrap()],
        &redis::Client::open(target.url()).unwrap(),
        &replicate::CompareOptions::default(),
    )
    .expect("compare");
    eprintln!(
        "{kind:?} (seed {seed}): {before} keys before, {writes} writes, {applied} messages applied, \
         {snapshot_keys} keys in the snapshot, {} deferred; {}",
        stats["events_deferred"],
        report.summary()
    );
    assert!(snapshot_keys > 0, "the snapshot sent no key");
    assert!(
        report.diffs.is_empty(),
        "{}: {:?}",
        report.summary(),
        &report.diffs[..report.diffs.len().min(20)]
    );
    assert!(report.compared > 500, "{}", report.summary());
}

/// The seed of the workload: `KEA_REPLICA_SEED` repeats a run; CI uses
/// fixed ones, so that a red run is a regression to chase with its seed.
fn seed(fixed: u64) -> u64 {
    std::env::var("KEA_REPLICA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(fixed)
}

#[test]
fn a_copy_rebuilt_from_the_stream_matches_redis_8() {
    replica_copy(Kind::Redis8, seed(0x5eed_0001));
}

#[test]
fn a_copy_rebuilt_from_the_stream_matches_valkey() {
    replica_copy(Kind::Valkey, seed(0x5eed_0002));
}

/// A writer for a cluster: each command goes to the node that serves its
/// key's slot; a `MOVED` reply reads the slot map again and retries.
struct ClusterWriter<'a> {
    cluster: &'a Cluster,
    map: Vec<usize>,
    conns: Vec<Option<Connection>>,
}

impl<'a> ClusterWriter<'a> {
    fn new(cluster: &'a Cluster) -> Self {
        Self {
            cluster,
            map: cluster.slot_map(),
            conns: (0..cluster.nodes.len()).map(|_| None).collect(),
        }
    }

    /// Runs `cmd` (its first key named `key`); errors other than
    /// redirections (a command on a key of another type) are ignored.
    fn run(&mut self, key: &str, cmd: &redis::Cmd) {
        for _ in 0..20 {
            let node = self.map[usize::from(key_slot(key.as_bytes()))];
            if node == usize::MAX {
                self.map = self.cluster.slot_map();
                continue;
            }
            let conn = self.conns[node].get_or_insert_with(|| self.cluster.nodes[node].conn());
            match cmd.query::<redis::Value>(conn) {
                Err(e) if e.code() == Some("MOVED") || e.code() == Some("TRYAGAIN") => {
                    self.map = self.cluster.slot_map();
                }
                _ => return,
            }
        }
        panic!("cannot write {key} to the cluster");
    }
}

fn redis_cmd(args: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c
}

/// One random write on a cluster (one slot per command: multi-key commands
/// use keys of one hash tag), skipping keys whose slot is in `avoid`.
fn cluster_write(w: &mut ClusterWriter, rng: &mut Rng, avoid: &[u16]) {
    let tag = rng.below(400);
    let k = format!("{{t{tag}}}:{}", key(rng));
    if avoid.contains(&key_slot(k.as_bytes())) {
        return;
    }
    let k2 = format!("{{t{tag}}}:{}", key(rng));
    let v = format!("{}", rng.below(1000));
    let ttl = (600_000 + rng.below(600_000)).to_string();
    let c = match rng.below(100) {
        0..=14 => redis_cmd(&["SET", &k, &v]),
        15..=19 => redis_cmd(&["SET", &k, &v, "PX", &ttl]),
        20 => redis_cmd(&["SET", &k, &v, "PX", &(200 + rng.below(800)).to_string()]),
        21..=27 => redis_cmd(&["DEL", &k]),
        28..=31 => redis_cmd(&["EXPIRE", &k, "900"]),
        32..=34 => redis_cmd(&["PERSIST", &k]),
        35..=44 => redis_cmd(&["HSET", &k, &format!("f{}", rng.below(5)), &v]),
        45..=47 => redis_cmd(&["HDEL", &k, &format!("f{}", rng.below(5))]),
        48..=54 => redis_cmd(&["RPUSH", &k, &v]),
        55..=57 => redis_cmd(&["LPOP", &k]),
        58..=64 => redis_cmd(&["SADD", &k, &v]),
        65..=67 => redis_cmd(&["SREM", &k, &v]),
        68..=74 => redis_cmd(&["ZADD", &k, &format!("{}.5", rng.below(100)), &v]),
        75..=77 => redis_cmd(&["ZREM", &k, &v]),
        78..=81 => redis_cmd(&["RENAME", &k, &k2]),
        82..=84 => redis_cmd(&["COPY", &k, &k2, "REPLACE"]),
        85..=89 => redis_cmd(&["INCR", &format!("{{t{tag}}}:s:n")]),
        _ => {
            let script = "redis.pcall('RPUSH', KEYS[1], ARGV[1]); \
                          redis.pcall('SET', KEYS[2], ARGV[1]); \
                          return 1";
            let mut c = redis::cmd("EVAL");
            c.arg(script).arg(2).arg(&k).arg(&k2).arg(&v);
            c
        }
    };
    w.run(&k, &c);
}

fn masters(cluster: &Cluster) -> Vec<&Server> {
    cluster
        .masters()
        .into_iter()
        .map(|i| &cluster.nodes[i])
        .collect()
}

/// Every master delivered everything it holds.
fn cluster_drained(cluster: &Cluster) -> bool {
    masters(cluster).iter().all(|n| {
        let i = n.info();
        [
            "queue_len",
            "inflight",
            "fallback_len",
            "fallback_lists_found",
        ]
        .iter()
        .all(|f| i.get(*f).map(String::as_str) == Some("0"))
    })
}

/// `<tag>-<seq>` of a message id.
fn origin(id: &str) -> (String, u64) {
    let (tag, seq) = id.rsplit_once('-').unwrap_or((id, "0"));
    (tag.to_string(), seq.parse().unwrap_or(0))
}

/// A copy of a Valkey 9.1 cluster rebuilt from the stream matches it after
/// `CLUSTER MIGRATESLOTS` moved slots that hold data and a master's
/// fallback list, and the moved keys caused no event: in each node's
/// stream between two sentinels around the move (no client wrote those
/// slots then), no record names a key of a moved slot, while the nodes
/// counted the moves (`events_moved`).
#[test]
fn a_copy_of_a_valkey_cluster_survives_atomic_slot_migration() {
    let _serial = common::fault_lock();
    let broker = &RabbitCluster::shared_as("rep", 1).nodes[0];
    let mut sink = Sink::new(broker.port);
    let args = ModuleArgs::new(&sink)
        .types("A")
        .masks(&[])
        .delivery_mode(2)
        .build();
    let cluster = Cluster::start_with(
        Kind::Valkey,
        3,
        &args,
        &[
            ("key_evt_amqp.format", "json"),
            ("key_evt_amqp.values", "after"),
        ],
    );
    let target = Server::start_bare(Kind::Valkey);
    let mut rng = Rng(seed(0x5eed_0003) | 1);
    let mut w = ClusterWriter::new(&cluster);
    for _ in 0..3000 {
        cluster_write(&mut w, &mut rng, &[]);
    }
    let first = &cluster.nodes[0];
    first.cmd(&["key_evt_amqp.keymask_set", "ALL"]).unwrap();
    first.cmd(&["key_evt_amqp.snapshot"]).unwrap();
    let t0 = Instant::now();
    while !masters(&cluster)
        .iter()
        .all(|n| n.field("snapshot_state") == "done")
    {
        for _ in 0..50 {
            cluster_write(&mut w, &mut rng, &[]);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "snapshot did not finish"
        );
    }
    wait_for("the snapshot delivered", Duration::from_secs(120), || {
        cluster_drained(&cluster)
    });

    // A master whose broker is away stores its events in its list.
    let map = cluster.slot_map();
    let a = map[0];
    let b = map[16383];
    assert_ne!(a, b);
    let (node_a, node_b) = (&cluster.nodes[a], &cluster.nodes[b]);
    let (_closed, closed_port) = common::refused_port();
    node_a
        .cmd(&[
            "CONFIG",
            "SET",
            "key_evt_amqp.port",
            &closed_port.to_string(),
        ])
        .unwrap();
    for _ in 0..500 {
        cluster_write(&mut w, &mut rng, &[]);
    }
    wait_for("A stores its events", Duration::from_secs(60), || {
        node_a.stat("fallback_len") > 0 && node_a.stat("queue_len") == 0
    });
    let list_slot = key_slot(node_a.field("fallback_key").as_bytes());
    // The slots to move: 200 of A's holding data, and its list's.
    let mut moved: Vec<u16> = (0..200).collect();
    moved.push(list_slot);
    moved.sort_unstable();
    moved.dedup();
    let sentinel = |tag: &str| {
        let ka = format!("sentinel-{tag}-a");
        let kb = format!("sentinel-{tag}-b");
        let ka = (0..)
            .map(|i| format!("{ka}{i}"))
            .find(|k| {
                map[usize::from(key_slot(k.as_bytes()))] == a
                    && !moved.contains(&key_slot(k.as_bytes()))
            })
            .unwrap();
        let kb = (0..)
            .map(|i| format!("{kb}{i}"))
            .find(|k| map[usize::from(key_slot(k.as_bytes()))] == b)
            .unwrap();
        node_a.cmd(&["SET", &ka, "x"]).unwrap();
        node_b.cmd(&["SET", &kb, "x"]).unwrap();
        (ka, kb)
    };
    let before = sentinel("1");
    let mut ranges: Vec<String> = Vec::new();
    for &s in &moved {
        ranges.push(s.to_string());
        ranges.push(s.to_string());
    }
    let b_id = cluster.node_id(b);
    let mut migrate = vec!["CLUSTER", "MIGRATESLOTS", "SLOTSRANGE"];
    migrate.extend(ranges.iter().map(String::as_str));
    migrate.extend(["NODE", b_id.as_str()]);
    node_a.cmd(&migrate).unwrap_or_else(|e| panic!("{e}"));
    // Writes go on meanwhile, to every other slot.
    wait_showing(
        "the slots to move",
        Duration::from_secs(120),
        || {
            for _ in 0..20 {
                cluster_write(&mut w, &mut rng, &moved);
            }
            let m = cluster.slot_map();
            moved.iter().all(|&s| m[usize::from(s)] == b)
        },
        || common::cluster::text(node_a, &["CLUSTER", "GETSLOTMIGRATIONS"]),
    );
    // A's broker comes back; B sends A's moved list.
    node_a
        .cmd(&[
            "CONFIG",
            "SET",
            "key_evt_amqp.port",
            &broker.port.to_string(),
        ])
        .unwrap();
    wait_for("everything delivered", Duration::from_secs(120), || {
        cluster_drained(&cluster)
    });
    let after = sentinel("2");
    wait_for("the sentinels", Duration::from_secs(60), || {
        sink.drain();
        let keys: Vec<String> = sink.received.iter().map(|m| m.key()).collect();
        keys.contains(&after.0) && keys.contains(&after.1)
    });
    for _ in 0..2000 {
        cluster_write(&mut w, &mut rng, &[]);
    }
    wait_for("everything delivered", Duration::from_secs(120), || {
        cluster_drained(&cluster)
    });
    // The consumer applies the whole stream.
    while sink.drain() > 0 {}
    let mut target_conn = target.conn();
    let mut dedup = replicate::dedup::Dedup::new(1_000_000);
    // Per origin (node tag): the sequence numbers of the two sentinels.
    let mut marks: std::collections::HashMap<String, Vec<u64>> = Default::default();
    for m in &sink.received {
        let k = m.key();
        if [&before.0, &before.1, &after.0, &after.1].contains(&&k) {
            let (tag, seq) = origin(&m.message_id);
            marks.entry(tag).or_default().push(seq);
        }
    }
    let mut in_window = Vec::new();
    for m in &sink.received {
        let rec = replicate::Record::parse(&m.body).expect("parse");
        let (tag, seq) = origin(&m.message_id);
        if let Some(s) = marks.get(&tag) {
            let (lo, hi) = (
                s.iter().min().copied().unwrap_or(0),
                s.iter().max().copied().unwrap_or(0),
            );
            if seq > lo && seq < hi && !rec.key.is_empty() && moved.contains(&key_slot(&rec.key)) {
                in_window.push(format!(
                    "{} {} {}",
                    m.message_id,
                    rec.event,
                    String::from_utf8_lossy(&rec.key)
                ));
            }
        }
        if dedup.first_time(&m.message_id) {
            replicate::apply(&mut target_conn, &rec).expect("apply");
        }
    }
    assert!(
        in_window.is_empty(),
        "{} events for moved keys: {:?}",
        in_window.len(),
        &in_window[..in_window.len().min(20)]
    );
    let moved_events: i64 = [node_a, node_b]
        .iter()
        .map(|n| n.stat("events_moved"))
        .sum();
    assert!(moved_events > 0, "no move was seen");
    for n in masters(&cluster) {
        assert_eq!(n.stat("events_dropped"), 0);
        assert_eq!(n.stat("events_lost"), 0);
    }
    wait_short_ttls_gone_cluster(&cluster);
    wait_short_ttls_gone(&target, "copy");
    let sources: Vec<redis::Client> = masters(&cluster)
        .iter()
        .map(|n| redis::Client::open(n.url()).unwrap())
        .collect();
    let report = replicate::compare(
        &sources,
        &redis::Client::open(target.url()).unwrap(),
        &replicate::CompareOptions {
            dbs: vec![0],
            ..Default::default()
        },
    )
    .expect("compare");
    eprintln!("cluster: {moved_events} moved events; {}", report.summary());
    assert!(
        report.diffs.is_empty(),
        "{}: {:?}",
        report.summary(),
        &report.diffs[..report.diffs.len().min(20)]
    );
}

fn wait_short_ttls_gone_cluster(cluster: &Cluster) {
    for n in masters(cluster) {
        wait_for(
            "short-lived keys to expire",
            Duration::from_secs(60),
            || {
                let mut c = n.conn();
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg("*")
                    .query(&mut c)
                    .unwrap_or_default();
                keys.iter().all(|k| {
                    let t: i64 = redis::cmd("PTTL").arg(k).query(&mut c).unwrap_or(-2);
                    !(0..60_000).contains(&t)
                })
            },
        );
    }
}

/// A key the snapshot reads after its time to live passed is deleted by
/// the server on the spot (Redis 7.0's scan reports it, and opening it
/// expires it), while the module's state is in use: that nested `expired`
/// notification is accepted right after the read (INFO `events_deferred`),
/// in order, never dropped, and the key gets no `snapshot` record.
#[test]
fn keys_the_snapshot_finds_expired_send_their_expiry() {
    let mut sink = Sink::new(common::amqp_port());
    let args = ModuleArgs::new(&sink).types("A").masks(&[]).build();
    let srv = Server::start(Kind::Redis, &args, &[("enable-debug-command", "yes")]);
    srv.cmd(&["DEBUG", "SET-ACTIVE-EXPIRE", "0"]).unwrap();
    let gone: Vec<String> = (0..20).map(|i| format!("gone{i}")).collect();
    for k in &gone {
        srv.cmd(&["SET", k, "x", "PX", "1"]).unwrap();
    }
    srv.cmd(&["SET", "stays", "x"]).unwrap();
    // A probe set last: once a read finds it expired, so are the others
    // (the read deletes the probe, not them).
    srv.cmd(&["SET", "probe", "x", "PX", "1"]).unwrap();
    wait_for(
        "the keys' time to live to pass",
        Duration::from_secs(10),
        || {
            redis::cmd("EXISTS")
                .arg("probe")
                .query::<i64>(&mut srv.conn())
                .is_ok_and(|n| n == 0)
        },
    );
    srv.cmd(&["key_evt_amqp.keymask_set", "ALL"]).unwrap();
    srv.cmd(&["key_evt_amqp.snapshot"]).unwrap();
    srv.cmd(&["SET", "after", "x"]).unwrap();
    sink.expect_keys(&["after", "stays"], Duration::from_secs(60));
    let got: Vec<(String, String)> = sink
        .received
        .iter()
        .map(|m| (m.parts().1, m.key()))
        .collect();
    for k in &gone {
        let events: Vec<&str> = got
            .iter()
            .filter(|(_, key)| key == k)
            .map(|(e, _)| e.as_str())
            .collect();
        assert_eq!(events, ["expired"], "{k}: {got:?}");
    }
    assert!(
        got.contains(&("snapshot".into(), "stays".into())),
        "{got:?}"
    );
    assert_eq!(srv.stat("events_deferred"), 20);
    assert_eq!(srv.stat("events_dropped"), 0);
}
