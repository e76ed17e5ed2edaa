//! Durable mode (`key_evt_amqp.durability outbox`): each accepted event is
//! appended to the fallback list in the execution unit of its write, so it
//! survives a SIGKILL (from the AOF) and a failover (on the replica). Redis
//! 7.0 has no post-notification jobs and refuses the mode.

mod common;

use common::amqp::Sink;
use common::args::ModuleArgs;
use common::cluster::text;
use common::conn::{assert_alive, err_text, run};
use common::proxy::Proxy;
use common::server::{module_path, Kind, Server};
use common::topology::Topology;
use common::{amqp_port, unique, wait_for};
use redis::Value;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);
/// The kinds with post-notification jobs.
const DURABLE: [Kind; 2] = [Kind::Redis8, Kind::Valkey];

/// The keys of the records in the fallback list, head first.
fn list_keys(srv: &Server) -> Vec<String> {
    let mut c = srv.conn();
    let items: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg("key_evt_amqp:fallback")
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .expect("LRANGE");
    items
        .iter()
        .map(|r| {
            let p = redis_keyspace_amqp::event::split(r).expect("a record");
            let body = String::from_utf8_lossy(p.body).to_string();
            body.rsplit('\n').next().unwrap_or_default().to_string()
        })
        .collect()
}

#[test]
fn outbox_is_refused_where_the_server_has_no_post_notification_jobs() {
    let sink = Sink::new(amqp_port());
    let srv = Server::start(Kind::Redis, &ModuleArgs::new(&sink).build(), &[]);
    let e = srv
        .cmd(&["CONFIG", "SET", "key_evt_amqp.durability", "outbox"])
        .expect_err("Redis 7.0 has no post-notification jobs");
    assert!(
        e.contains("durability") && e.contains("post-notification"),
        "{e}"
    );
    assert_eq!(srv.field("durability"), "memory");
    // At load: MODULE LOADEX fails, the server keeps running.
    let bare = Server::start_bare(Kind::Redis);
    let mut c = bare.conn();
    let mut cmd = redis::cmd("MODULE");
    cmd.arg("LOADEX")
        .arg(module_path())
        .arg("CONFIG")
        .arg("key_evt_amqp.durability")
        .arg("outbox");
    let e = cmd.query::<Value>(&mut c).expect_err("load refused");
    assert!(err_text(&e).contains("ERR"), "{}", err_text(&e));
    assert!(bare
        .log()
        .contains("durability outbox needs post-notification jobs"));
    assert_alive(&bare, "a refused durability");
    assert!(bare.cmd(&["PING"]).is_ok_and(|r| r.contains("PONG")));
}

#[test]
fn transactions_and_scripts_append_their_events_in_order() {
    for kind in DURABLE {
        let mut sink = Sink::new(amqp_port());
        let srv = Server::start(
            kind,
            &ModuleArgs::new(&sink).build(),
            &[("key_evt_amqp.durability", "outbox")],
        );
        let mut c = srv.conn();
        run(&mut c, "key_evt_amqp.disconnect", &[] as &[&str]).unwrap();
        run(&mut c, "SET", &["k1", "v"]).unwrap();
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg("k2")
            .arg("v")
            .cmd("SET")
            .arg("k3")
            .arg("v")
            .cmd("SET")
            .arg("k1")
            .arg("w")
            .query::<Value>(&mut c)
            .unwrap();
        run(
            &mut c,
            "EVAL",
            &[
                "redis.call('SET', 'k4', 'v'); redis.call('SET', 'k5', 'v')",
                "0",
            ],
        )
        .unwrap();
        // Each record was in the list when its write replied: no tick needed.
        assert_eq!(
            list_keys(&srv),
            ["k1", "k2", "k3", "k1", "k4", "k5"],
            "{kind:?}"
        );
        // A write refused for OOM appends nothing.
        run(&mut c, "CONFIG", &["SET", "maxmemory", "1"]).unwrap();
        let e = run(&mut c, "SET", &["k6", "v"]).expect_err("OOM");
        assert!(e.contains("OOM"), "{kind:?}: {e}");
        run(&mut c, "CONFIG", &["SET", "maxmemory", "0"]).unwrap();
        // The module's own list writes fired no events into the outbox.
        assert_eq!(srv.llen("key_evt_amqp:fallback"), 6, "{kind:?}");
        assert_eq!(srv.stat("events_accepted"), 6, "{kind:?}");
        run(&mut c, "key_evt_amqp.connect", &[] as &[&str]).unwrap();
        sink.expect_at_least(6, T);
        let keys: Vec<String> = sink.received.iter().map(|m| m.key()).collect();
        assert_eq!(keys[..6], ["k1", "k2", "k3", "k1", "k4", "k5"], "{kind:?}");
        wait_for("the list drains", T, || srv.field("fallback_len") == "0");
    }
}

/// How many of `keys` never arrive: waits until all did, or until the
/// servers hold nothing more (`settled`) and nothing arrived for 2 s.
fn missing_after_settling(sink: &mut Sink, keys: &[String], settled: impl Fn() -> bool) -> usize {
    let start = std::time::Instant::now();
    let mut last_news = std::time::Instant::now();
    loop {
        if sink.drain() > 0 {
            last_news = std::time::Instant::now();
        }
        let got: HashSet<String> = sink.received.iter().map(|m| m.key()).collect();
        let missing = keys.iter().filter(|k| !got.contains(*k)).count();
        let quiet = last_news.elapsed() > Duration::from_secs(2) && settled();
        if missing == 0 || quiet || start.elapsed() > T {
            return missing;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Records in every fallback list on `srv` (its own and any it adopts); 0 on
/// a replica, which forwards nothing.
fn backlog(srv: &Server) -> i64 {
    if !text(srv, &["INFO", "replication"]).contains("role:master") {
        return 0;
    }
    let mut c = srv.conn();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("key_evt_amqp:fallback*")
        .query(&mut c)
        .unwrap_or_default();
    keys.iter().map(|k| srv.llen(k)).sum()
}

/// Writes `prefix0, prefix1, ...` in pipelines of 50 until the server stops
/// answering; returns the keys whose write got a reply.
fn write_until_killed(url: String, prefix: String, acked: Arc<Mutex<Vec<String>>>) {
    let Ok(mut c) = redis::Client::open(url).and_then(|c| c.get_connection()) else {
        return;
    };
    let mut i = 0;
    loop {
        let keys: Vec<String> = (i..i + 50).map(|n| format!("{prefix}{n}")).collect();
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("SET").arg(k).arg("v").ignore();
        }
        if pipe.query::<()>(&mut c).is_err() {
            return;
        }
        acked.lock().unwrap().extend(keys);
        i += 50;
    }
}

/// SIGKILL in the middle of 20,000 writes with `appendfsync always`, the
/// connection to the broker stalled so that nothing sent reaches it (and
/// what the proxy holds is dropped with the connection); then a restart from
/// the AOF. Returns (writes acknowledged, their events that never arrived).
fn kill_and_restart(kind: Kind, durability: &str) -> (usize, usize) {
    let mut sink = Sink::new(amqp_port());
    let proxy = Proxy::new(sink.port);
    let args = ModuleArgs::new(&sink).port(proxy.port).build();
    let dir = std::env::temp_dir().join(unique("kea-outbox"));
    let config = [
        ("appendonly", "yes"),
        ("appendfsync", "always"),
        ("key_evt_amqp.durability", durability),
    ];
    let mut srv = Server::start_in(kind, &args, &config, dir.clone());
    run(&mut srv.conn(), "SET", &["warmup", "v"]).unwrap();
    wait_for("connected", T, || srv.field("connection") == "connected");
    sink.expect_keys(&["warmup"], T);
    proxy.stall(true);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (url, acked) = (srv.url(), Arc::clone(&acked));
        std::thread::spawn(move || write_until_killed(url, "w".into(), acked))
    };
    wait_for("10,000 writes", T, || acked.lock().unwrap().len() >= 10_000);
    srv.kill();
    writer.join().unwrap();
    proxy.cut();
    proxy.stall(false);
    srv.restart();
    let acked = acked.lock().unwrap().clone();
    let missing = missing_after_settling(&mut sink, &acked, || {
        backlog(&srv) == 0 && srv.field("queue_len") == "0" && srv.field("inflight") == "0"
    });
    (acked.len(), missing)
}

#[test]
fn sigkill_then_aof_restart_delivers_every_acknowledged_write() {
    for kind in DURABLE {
        let (memory_acked, memory_missing) = kill_and_restart(kind, "memory");
        let (acked, missing) = kill_and_restart(kind, "outbox");
        eprintln!(
            "{kind:?} SIGKILL + AOF restart: memory mode lost {memory_missing} of {memory_acked} \
             acknowledged writes' events; outbox mode lost {missing} of {acked}"
        );
        assert_eq!(missing, 0, "{kind:?}: outbox lost events");
    }
}

/// A 3+3 cluster; a master is SIGKILLed under writes that each wait for
/// `WAIT 1 1000`, while the connections to the broker are stalled (a slow
/// broker: what is sent does not arrive); the replica takes over. Returns
/// (writes acknowledged by WAIT, their events missing).
fn cluster_kill(durability: &str) -> (usize, usize) {
    let mut sink = Sink::new(amqp_port());
    let proxy = Proxy::new(sink.port);
    let args = ModuleArgs::new(&sink).port(proxy.port).heartbeat(2).build();
    let mut c = Topology::cluster(Kind::Redis8, 3, &args);
    for n in &c.nodes {
        text(n, &["CONFIG", "SET", "key_evt_amqp.durability", durability]);
    }
    let m = c.masters()[0];
    let r = c.replica_of(m);
    // A hash tag in m's slots: every key below goes to m.
    let map = c.slot_map();
    let tag = (0..)
        .map(|i| format!("t{i}"))
        .find(|t| map[usize::from(redis_keyspace_amqp::slots::key_slot(t.as_bytes()))] == m)
        .expect("a tag of m");
    let warm = format!("{{{tag}}}warm");
    c.set_keys(std::slice::from_ref(&warm));
    sink.expect_keys(&[warm.as_str()], T);
    proxy.stall(true);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (url, acked, stop) = (c.nodes[m].url(), Arc::clone(&acked), Arc::clone(&stop));
        std::thread::spawn(move || {
            let Ok(mut conn) = redis::Client::open(url).and_then(|c| c.get_connection()) else {
                return;
            };
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let key = format!("{{{tag}}}k{i}");
                let replicas: Result<i64, _> = redis::pipe()
                    .cmd("SET")
                    .arg(&key)
                    .arg("v")
                    .ignore()
                    .cmd("WAIT")
                    .arg(1)
                    .arg(1000)
                    .query::<(i64,)>(&mut conn)
                    .map(|(n,)| n);
                match replicas {
                    Ok(n) if n >= 1 => acked.lock().unwrap().push(key),
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        })
    };
    wait_for("2,000 writes", T, || acked.lock().unwrap().len() >= 2000);
    c.fail_fast();
    c.nodes[m].kill();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    // What the dead master sent and the proxy holds is dropped with it.
    proxy.cut();
    proxy.stall(false);
    wait_for("replica promoted", T, || {
        text(&c.nodes[r], &["INFO", "replication"]).contains("role:master")
    });
    c.wait_ok();
    let acked = acked.lock().unwrap().clone();
    let missing = missing_after_settling(&mut sink, &acked, || {
        c.nodes
            .iter()
            .filter(|n| n.pid() != 0)
            .all(|n| n.field("inflight") == "0" && n.field("queue_len") == "0" && backlog(n) == 0)
    });
    (acked.len(), missing)
}

#[test]
fn cluster_master_killed_under_wait_loses_nothing_in_outbox_mode() {
    let (memory_acked, memory_missing) = cluster_kill("memory");
    let (acked, missing) = cluster_kill("outbox");
    eprintln!(
        "cluster SIGKILL + failover, writes acknowledged by WAIT 1: memory mode lost \
         {memory_missing} of {memory_acked}; outbox mode lost {missing} of {acked}"
    );
    assert_eq!(missing, 0, "outbox lost events acknowledged by WAIT");
}
