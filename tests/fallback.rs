//! The fallback list: caps, persistence through restarts and SHUTDOWN,
//! loss accounting when the key disappears.

mod common;

use common::args::ModuleArgs;

use common::amqp::Sink;
use common::msg::check_sequence;
use common::proxy::Proxy;
use common::server::{Kind, Server};
use common::{amqp_port, refused_port, wait_for};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);
const KEY: &str = "key_evt_amqp:fallback";

fn args(port: u16, sink: &Sink, cap: &str) -> Vec<String> {
    ModuleArgs::new(sink)
        .port(port)
        .heartbeat(1)
        .delivery_mode(2)
        .fallback_size(cap)
        .masks(&["^k"])
        .build()
}

fn keys(from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("k{i}")).collect()
}

/// Points the module at the sink's broker (it was aimed at a closed port).
fn repair(srv: &Server, sink: &Sink) {
    srv.cmd(&[
        "key_evt_amqp.config_set",
        "127.0.0.1",
        &sink.port.to_string(),
    ])
    .unwrap();
}

#[test]
fn cap_keeps_the_newest_and_counts_drops() {
    for kind in Kind::ALL {
        let mut sink = Sink::new(amqp_port());
        let (_closed, closed) = refused_port();
        let srv = Server::start(kind, &args(closed, &sink, "100"), &[]);
        srv.set_keys(&keys(0, 250));
        wait_for("stored", T, || srv.stat("events_stored") == 250);
        assert_eq!(srv.llen(KEY), 100);
        assert_eq!(srv.stat("events_dropped"), 150);
        assert_eq!(srv.stat("events_dropped_cap"), 150);
        repair(&srv, &sink);
        let got: Vec<String> = sink
            .expect_at_least(100, T)
            .iter()
            .map(|m| m.key())
            .collect();
        assert_eq!(got, keys(150, 250), "{kind:?}: the oldest are dropped");
        wait_for("drained", T, || srv.stat("fallback_len") == 0);
    }
}

#[test]
fn cap_zero_is_unlimited() {
    let mut sink = Sink::new(amqp_port());
    let (_closed, closed) = refused_port();
    let srv = Server::start(Kind::Redis, &args(closed, &sink, "0"), &[]);
    srv.set_keys(&keys(0, 5000));
    wait_for("stored", T, || srv.stat("fallback_len") == 5000);
    assert_eq!(srv.stat("events_dropped"), 0);
    repair(&srv, &sink);
    let msgs = sink.expect_at_least(5000, T).to_vec();
    assert_eq!(check_sequence(&msgs, "k", 5000), 0);
}

#[test]
fn negative_cap_stores_nothing_new_but_delivers_what_is_stored() {
    let mut sink = Sink::new(amqp_port());
    let (_closed, closed) = refused_port();
    let srv = Server::start(Kind::Redis, &args(closed, &sink, "0"), &[]);
    srv.set_keys(&keys(0, 30));
    wait_for("stored", T, || srv.stat("fallback_len") == 30);
    srv.cmd(&["key_evt_amqp.fallback_storage_size_set", "-1"])
        .unwrap();
    srv.set_keys(&keys(30, 100));
    wait_for("dropped", T, || srv.stat("events_dropped_disabled") == 70);
    assert_eq!(srv.stat("events_dropped"), 70);
    assert_eq!(
        srv.llen(KEY),
        30,
        "a config change never deletes stored events"
    );
    repair(&srv, &sink);
    let got: Vec<String> = sink
        .expect_at_least(30, T)
        .iter()
        .map(|m| m.key())
        .collect();
    assert_eq!(got, keys(0, 30));
    sink.expect_nothing_before(&srv, "k-sentinel", T);
}

#[test]
fn fallback_key_vanishing_is_counted_as_lost() {
    let sink = Sink::new(amqp_port());
    let (_closed, closed) = refused_port();
    let srv = Server::start(Kind::Redis, &args(closed, &sink, "0"), &[]);
    srv.set_keys(&keys(0, 40));
    wait_for("stored", T, || srv.stat("fallback_len") == 40);
    srv.cmd(&["DEL", KEY]).unwrap();
    wait_for("loss counted", T, || srv.stat("events_lost") == 40);
    srv.set_keys(&keys(40, 50));
    wait_for("stored again", T, || srv.stat("fallback_len") == 10);
    assert!(srv.log().contains("vanished from the fallback list"));
}

#[test]
fn events_about_the_fallback_key_are_never_forwarded() {
    let mut sink = Sink::new(amqp_port());
    let a = ModuleArgs::new(&sink)
        .types("A")
        .heartbeat(1)
        .delivery_mode(2)
        .fallback_size("0");
    let srv = Server::start(Kind::Redis, &a.build(), &[]);
    srv.cmd(&["key_evt_amqp.disconnect"]).unwrap();
    srv.set_keys(&keys(0, 10));
    wait_for("stored", T, || srv.stat("fallback_len") == 10);
    srv.cmd(&["key_evt_amqp.connect"]).unwrap();
    sink.expect_at_least(10, T);
    wait_for("drained", T, || srv.stat("fallback_len") == 0);
    sink.expect_nothing_before(&srv, "sentinel", T);
    assert!(sink.received.iter().all(|m| !m.key().starts_with(KEY)));
}

#[test]
fn backlog_survives_a_restart_with_aof() {
    for kind in Kind::ALL {
        let mut sink = Sink::new(amqp_port());
        let aof = [("appendonly", "yes"), ("appendfsync", "always")];
        let (_closed, closed) = refused_port();
        let mut srv = Server::start(kind, &args(closed, &sink, "0"), &aof);
        srv.set_keys(&keys(0, 300));
        wait_for("stored", T, || srv.stat("fallback_len") == 300);
        srv.kill();
        // The broker port was wrong: restart on the same data, pointing at the real one.
        srv.restart_with(&args(sink.port, &sink, "0"));
        let msgs = sink.expect_at_least(300, T).to_vec();
        assert_eq!(check_sequence(&msgs, "k", 300), 0, "{kind:?}");
        wait_for("drained", T, || srv.stat("fallback_len") == 0);
    }
}

#[test]
fn shutdown_writes_memory_to_the_backlog() {
    for kind in Kind::ALL {
        let mut sink = Sink::new(amqp_port());
        let proxy = Proxy::new(amqp_port());
        let aof = [("appendonly", "yes"), ("appendfsync", "always")];
        let a = ModuleArgs::new(&sink)
            .port(proxy.port)
            .heartbeat(30)
            .delivery_mode(2)
            .fallback_size("0")
            .masks(&["^k"]);
        let mut srv = Server::start(kind, &a.build(), &aof);
        srv.set_keys(&["k0"]);
        sink.expect_at_least(1, T);
        // The broker stops answering: events sit in flight and in memory, not in the list.
        proxy.stall(true);
        srv.set_keys(&keys(1, 3000));
        wait_for("events in memory", T, || {
            srv.stat("inflight") + srv.stat("queue_len") > 0
        });
        let in_list = srv.stat("fallback_len");
        let _ = srv.cmd(&["SHUTDOWN"]);
        srv.reap();
        // Drop what the stalled proxy holds, so only the backlog can deliver these events.
        proxy.cut();
        proxy.stall(false);
        srv.restart_with(&args(sink.port, &sink, "0"));
        eprintln!(
            "{kind:?}: {in_list} in the list before SHUTDOWN, {} after restart",
            srv.llen(KEY)
        );
        let msgs = sink.expect_sequence("k", 3000, T).to_vec();
        let dups = check_sequence(&msgs, "k", 3000);
        eprintln!("{kind:?}: {dups} duplicates");
        wait_for("drained", T, || srv.stat("fallback_len") == 0);
    }
}

#[test]
fn shutdown_hook_follows_persistence() {
    let sink = Sink::new(amqp_port());
    let srv = Server::start(Kind::Redis, &args(sink.port, &sink, "0"), &[]);
    assert_eq!(srv.field("shutdown_hook"), "no", "no persistence: no hook");
    srv.cmd(&["CONFIG", "SET", "appendonly", "yes"]).unwrap();
    wait_for("hook on", T, || srv.field("shutdown_hook") == "yes");
    srv.cmd(&["CONFIG", "SET", "appendonly", "no"]).unwrap();
    // The hook follows in the config event, which runs inside CONFIG SET:
    // its reply is the condition.
    srv.cmd(&["CONFIG", "SET", "save", "3600 1"]).unwrap();
    assert_eq!(srv.field("shutdown_hook"), "yes", "RDB save points keep it");
    srv.cmd(&["CONFIG", "SET", "save", ""]).unwrap();
    wait_for("hook off", T, || srv.field("shutdown_hook") == "no");
}

/// Issue 16 case 11: lowering the cap deletes nothing at once; the next write
/// trims exactly the oldest records beyond the new cap, counted in
/// `events_dropped_cap`.
#[test]
fn lowering_the_cap_trims_the_oldest_at_the_next_write_and_counts_them() {
    let mut sink = Sink::new(amqp_port());
    let (_closed, closed) = refused_port();
    let srv = Server::start(Kind::Redis, &args(closed, &sink, "100"), &[]);
    srv.set_keys(&keys(0, 80));
    wait_for("stored", T, || srv.stat("fallback_len") == 80);
    srv.cmd(&["key_evt_amqp.fallback_storage_size_set", "30"])
        .unwrap();
    assert_eq!(srv.llen(KEY), 80, "the command itself deletes nothing");
    srv.set_keys(&keys(80, 85));
    wait_for("stored", T, || srv.stat("events_stored") == 85);
    assert_eq!(srv.llen(KEY), 30);
    assert_eq!(srv.stat("events_dropped_cap"), 55, "85 stored, 30 kept");
    assert_eq!(srv.stat("events_dropped"), 55);
    repair(&srv, &sink);
    let got: Vec<String> = sink
        .expect_at_least(30, T)
        .iter()
        .map(|m| m.key())
        .collect();
    assert_eq!(got, keys(55, 85), "exactly the oldest were trimmed");
    sink.expect_nothing_before(&srv, "k-sentinel", T);
}

/// Issue 16 case 9: a large queue held in memory goes to the list a bounded
/// part per tick when the link is lost (no single long stall), and every
/// event is then delivered in order.
#[test]
fn losing_the_link_spills_a_large_queue_over_several_ticks() {
    const N: usize = 200_000;
    let mut sink = Sink::new(amqp_port());
    let proxy = Proxy::new(amqp_port());
    let a = ModuleArgs::new(&sink)
        .port(proxy.port)
        .heartbeat(30)
        .fallback_size("0")
        .masks(&["^k"]);
    let srv = Server::start(Kind::Redis, &a.build(), &[]);
    srv.set_keys(&["k0"]);
    sink.expect_at_least(1, T);
    // The broker stops answering: the window fills and the rest waits in memory.
    proxy.stall(true);
    srv.set_keys(&keys(1, N));
    wait_for("queue held in memory", T, || {
        srv.stat("queue_len") + srv.stat("inflight") == (N - 1) as i64
    });
    let queued = srv.stat("queue_len");
    assert!(queued > 150_000, "queue {queued}");
    // A client pinging all along: the longest the server did not answer.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pinger = {
        let stop = std::sync::Arc::clone(&stop);
        let mut c = srv.conn();
        std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = std::time::Instant::now();
                let _: redis::RedisResult<String> = redis::cmd("PING").query(&mut c);
                worst = worst.max(t.elapsed());
            }
            worst
        })
    };
    // The link breaks: the queue must go to the list.
    proxy.cut();
    let mut partial = 0;
    let mut samples = 0;
    let mut seen = Vec::new();
    // Sampled as fast as INFO answers: between two ticks it sees the queue part spilled.
    let deadline = std::time::Instant::now() + T;
    loop {
        let info = srv.info();
        let q: i64 = info["queue_len"].parse().unwrap();
        let l: i64 = info["fallback_len"].parse().unwrap();
        samples += 1;
        seen.push(q);
        if q > 0 && q < queued && l > 0 {
            partial += 1;
        }
        if q == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "queue not spilled");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let worst = pinger.join().unwrap();
    seen.dedup();
    eprintln!(
        "spill of {queued} queued records: {partial} of {samples} INFO samples saw it part done; longest PING {worst:?}; queue_len seen {seen:?}"
    );
    assert!(
        partial > 0,
        "the whole queue went to the list in one tick ({samples} samples)"
    );
    proxy.stall(false);
    let msgs = sink
        .expect_sequence("k", N, Duration::from_secs(120))
        .to_vec();
    let dups = check_sequence(&msgs, "k", N);
    eprintln!("{dups} duplicates");
    wait_for("drained", T, || srv.stat("fallback_len") == 0);
}
