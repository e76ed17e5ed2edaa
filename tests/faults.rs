//! Lose nothing: broker stops, pauses, alarms, cut and stalled connections,
//! bad credentials, a missing exchange. Every test counts what was written
//! and what arrived, checks the order, and reports duplicates.

mod common;

use common::args::ModuleArgs;

use common::amqp::Sink;
use common::msg::check_sequence;
use common::proxy::{Proxy, Silent};
use common::server::{Kind, Server};
use common::{
    amqp_port, broker_pid, fault_broker, fault_lock, rabbitmqctl, wait_for, wait_showing,
};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

/// Module arguments: all string events, ALL keys, persistent messages, 1 s heartbeat.
fn args(port: u16, sink: &Sink) -> ModuleArgs {
    ModuleArgs::new(sink)
        .port(port)
        .heartbeat(1)
        .delivery_mode(2)
}

/// The in-flight window (`inflight-max`) and batch size of every test here
/// unless its own config says otherwise: small, so that "duplicates within
/// one window per disruption" is a bound the streams can break.
const WINDOW_CONFIG: [(&str, &str); 2] = [
    ("key_evt_amqp.inflight-max", "128"),
    ("key_evt_amqp.batch-size", "32"),
];

fn start(port: u16, sink: &Sink, config: &[(&str, &str)]) -> Server {
    let mut all = config.to_vec();
    all.extend(
        WINDOW_CONFIG
            .into_iter()
            .filter(|(name, _)| !config.iter().any(|(n, _)| n == name)),
    );
    Server::start(Kind::Redis, &args(port, sink).build(), &all)
}

/// A module config of `srv` as a number.
fn config_number(srv: &Server, name: &str) -> usize {
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query(&mut srv.conn())
        .expect("CONFIG GET");
    got[1].parse().expect("a number")
}

/// Writes `k{from}..k{to}` in small pipelines spread over `over`.
fn writer(srv: &Server, from: usize, to: usize, over: Duration) -> JoinHandle<()> {
    let url = srv.url();
    std::thread::spawn(move || {
        let mut c = redis::Client::open(url)
            .and_then(|c| c.get_connection())
            .expect("writer connection");
        let chunks = ((to - from) / 50).max(1);
        let pause = over / chunks as u32;
        let mut i = from;
        while i < to {
            let end = (i + 50).min(to);
            let mut p = redis::pipe();
            for k in i..end {
                p.cmd("SET").arg(format!("k{k}")).arg("v").ignore();
            }
            p.query::<()>(&mut c).expect("SET");
            i = end;
            std::thread::sleep(pause);
        }
    })
}

/// Checks that every one of `n` events arrived, in order, nothing dropped
/// or lost, and at most one window of duplicates per disruption: each
/// connection the test breaks (or change it makes at the broker) can send
/// again at most what was in flight on it.
fn finish(srv: &Server, sink: &mut Sink, n: usize, disruptions: usize) -> usize {
    let msgs = sink.expect_sequence("k", n, T).to_vec();
    let dups = check_sequence(&msgs, "k", n);
    wait_for("backlog drained and all settled", T, || {
        let i = srv.info();
        i["fallback_len"] == "0" && i["inflight"] == "0" && i["queue_len"] == "0"
    });
    // The stragglers (duplicates) still on their way arrive before a
    // sentinel written now: delivery is in order.
    srv.set_keys(&["sentinel"]);
    sink.expect_keys(&["sentinel"], T);
    let dups = dups.max(check_sequence(&sink.received, "k", n));
    let info = srv.info();
    eprintln!(
        "received {} for {n} events: {dups} duplicates; confirmed {} stored {} reconnects {}",
        sink.received.len(),
        info["events_confirmed"],
        info["events_stored"],
        info["reconnects"]
    );
    // The most in flight at once, so the most one disruption can send
    // twice: the window (batches taken from the queue or the list are cut
    // to fit it).
    let window = config_number(srv, "key_evt_amqp.inflight-max");
    assert!(
        dups <= window * disruptions,
        "{dups} duplicates: more than the window {window} per disruption ({disruptions})"
    );
    assert_eq!(info["events_dropped"], "0");
    assert_eq!(info["events_lost"], "0");
    dups
}

#[test]
fn broker_stop_app_and_start_app_mid_stream() {
    let _g = fault_lock();
    let (port, node) = fault_broker();
    let mut sink = Sink::new(port);
    let srv = start(port, &sink, &[]);
    let n = 6000;
    let w = writer(&srv, 0, n, Duration::from_secs(4));
    wait_for("mid-stream: a quarter confirmed", T, || {
        srv.stat("events_confirmed") >= n as i64 / 4
    });
    rabbitmqctl(&node, &["stop_app"]);
    wait_for("module notices", T, || {
        srv.field("connection") == "reconnecting"
    });
    // The outage itself: the broker stays stopped for a second of writes.
    std::thread::sleep(Duration::from_secs(1));
    rabbitmqctl(&node, &["start_app"]);
    w.join().expect("writer");
    // One broken connection.
    finish(&srv, &mut sink, n, 1);
    assert!(srv.stat("reconnects") >= 1);
}

#[test]
fn broker_paused_with_sigstop_redis_keeps_answering() {
    let _g = fault_lock();
    let (port, node) = fault_broker();
    let mut sink = Sink::new(port);
    let srv = start(port, &sink, &[("key_evt_amqp.queue-max-events", "1000")]);
    srv.set_keys(&["k0"]);
    sink.expect_at_least(1, T);
    let pid = broker_pid(&node);
    let n = 20_000;
    // SAFETY: plain signal to the broker's VM.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let w = writer(&srv, 1, n, Duration::from_secs(2));
    let mut slowest = Duration::ZERO;
    let mut c = srv.conn();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        let _: String = redis::cmd("PING").query(&mut c).expect("PING");
        slowest = slowest.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(5));
    }
    w.join().expect("writer");
    let stored = srv.stat("fallback_len");
    unsafe { libc::kill(pid, libc::SIGCONT) };
    eprintln!("slowest PING while the broker was paused: {slowest:?}; {stored} events in the fallback list");
    assert!(
        slowest < Duration::from_secs(1),
        "Redis stalled: {slowest:?}"
    );
    assert!(stored > 0, "the bounded queue must spill to the list");
    // One connection lost to the missed heartbeats.
    finish(&srv, &mut sink, n, 1);
}

#[test]
fn memory_alarm_blocks_then_clears() {
    let _g = fault_lock();
    let (port, node) = fault_broker();
    let mut sink = Sink::new(port);
    let srv = start(port, &sink, &[]);
    srv.set_keys(&["k0"]);
    sink.expect_at_least(1, T);
    rabbitmqctl(&node, &["set_vm_memory_high_watermark", "0.000001"]);
    let w = writer(&srv, 1, 3000, Duration::from_secs(1));
    w.join().expect("writer");
    wait_for("blocked", T, || {
        srv.field("connection") == "blocked" || srv.stat("fallback_len") > 0
    });
    rabbitmqctl(&node, &["set_vm_memory_high_watermark", "0.4"]);
    // One alarm.
    finish(&srv, &mut sink, 3000, 1);
}

#[test]
fn proxy_cuts_connections_mid_stream() {
    let mut sink = Sink::new(amqp_port());
    let proxy = Proxy::new(amqp_port());
    let srv = start(proxy.port, &sink, &[]);
    let n = 10_000;
    let w = writer(&srv, 0, n, Duration::from_secs(3));
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(700));
        proxy.cut();
    }
    w.join().expect("writer");
    // Three cuts.
    finish(&srv, &mut sink, n, 3);
    assert!(srv.stat("reconnects") >= 1);
}

#[test]
fn proxy_stall_is_detected_by_heartbeats() {
    let mut sink = Sink::new(amqp_port());
    let proxy = Proxy::new(amqp_port());
    let srv = start(proxy.port, &sink, &[]);
    srv.set_keys(&["k0"]);
    sink.expect_at_least(1, T);
    proxy.stall(true);
    let w = writer(&srv, 1, 2000, Duration::from_millis(500));
    w.join().expect("writer");
    // Heartbeat 1 s: the dead peer is noticed within about two intervals.
    let t = Instant::now();
    wait_for("stall detected", Duration::from_secs(10), || {
        srv.field("connection") == "reconnecting"
    });
    eprintln!("stall detected after {:?}", t.elapsed());
    proxy.stall(false);
    // One stalled connection.
    finish(&srv, &mut sink, 2000, 1);
}

#[test]
fn proxy_half_close() {
    let mut sink = Sink::new(amqp_port());
    let proxy = Proxy::new(amqp_port());
    let srv = start(proxy.port, &sink, &[]);
    let w = writer(&srv, 0, 4000, Duration::from_secs(1));
    wait_for("mid-stream: a quarter confirmed", T, || {
        srv.stat("events_confirmed") >= 1000
    });
    proxy.half_close();
    w.join().expect("writer");
    // One half-closed connection.
    finish(&srv, &mut sink, 4000, 1);
}

#[test]
fn wrong_credentials_then_right_ones() {
    let mut sink = Sink::new(amqp_port());
    let a = args(amqp_port(), &sink).password("wrong-password");
    let srv = Server::start(Kind::Redis, &a.build(), &WINDOW_CONFIG);
    srv.set_keys(&(0..100).map(|i| format!("k{i}")).collect::<Vec<_>>());
    wait_for("stored", T, || srv.stat("fallback_len") == 100);
    assert!(!srv.log().contains("wrong-password"), "password logged");
    let mut cmd = vec!["key_evt_amqp.config_set".to_string()];
    cmd.extend(sink.args(2));
    let refs: Vec<&str> = cmd.iter().map(String::as_str).collect();
    srv.cmd(&refs).unwrap();
    srv.set_keys(&["k100"]);
    // No connection ever came up with events in flight: nothing is sent twice.
    finish(&srv, &mut sink, 101, 0);
}

#[test]
fn missing_exchange_then_created() {
    let mut sink = Sink::new(amqp_port());
    sink.delete_exchange();
    // One batch for all 200 events, from the queue and from the list, as
    // with the default sizes: the 404 is then the error INFO keeps (with
    // several batches in flight, those after the refused one fail as "not
    // connected", and the last error wins). One window is then every event,
    // so the duplicate bound is loose here.
    let srv = start(
        amqp_port(),
        &sink,
        &[
            ("key_evt_amqp.inflight-max", "256"),
            ("key_evt_amqp.batch-size", "256"),
        ],
    );
    srv.set_keys(&(0..200).map(|i| format!("k{i}")).collect::<Vec<_>>());
    wait_for("stored after 404", T, || srv.stat("fallback_len") == 200);
    assert!(
        srv.field("last_error").contains("404") || srv.field("last_error").contains("NOT_FOUND"),
        "{}",
        srv.field("last_error")
    );
    sink.declare_exchange();
    sink.declare_queue();
    srv.set_keys(&["k200"]);
    // One change at the broker (the exchange and its queue come back): a
    // batch in flight across the binding has its records after the first
    // one returned delivered, and sent again.
    finish(&srv, &mut sink, 201, 1);
}

/// A peer that accepts TCP and never answers (a stopped broker, a port that
/// is not AMQP): each attempt ends after `connect-timeout-ms`, the events go
/// to the fallback list meanwhile, and no attempt leaves its connection
/// behind. A hanging attempt also gives way at once to new settings.
#[test]
fn a_silent_peer_times_out_each_attempt_and_leaves_nothing_behind() {
    let mut sink = Sink::new(amqp_port());
    let silent = Silent::new();
    let srv = start(
        silent.port,
        &sink,
        &[
            ("key_evt_amqp.connect-timeout-ms", "300"),
            ("key_evt_amqp.reconnect-max-ms", "200"),
        ],
    );
    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    srv.set_keys(&keys);
    wait_for("the events wait in the fallback list", T, || {
        srv.stat("fallback_len") == 100
    });
    assert!(
        srv.field("last_error").contains("timed out"),
        "last_error: {}",
        srv.field("last_error")
    );
    wait_for("several attempts timed out", T, || silent.accepted() >= 6);
    // At most the attempt under way holds a connection and an I/O thread;
    // a leak would leave one of each per attempt.
    wait_showing(
        "timed-out attempts leave no connection or thread behind",
        T,
        || silent.open() <= 1 && io_threads(srv.pid()) <= 1,
        || {
            format!(
                "{} of {} connections open, {} lapin I/O threads",
                silent.open(),
                silent.accepted(),
                io_threads(srv.pid())
            )
        },
    );
    // An attempt that would hang for ten minutes gives way to new settings.
    srv.cmd(&["CONFIG", "SET", "key_evt_amqp.connect-timeout-ms", "600000"])
        .expect("CONFIG SET");
    let before = silent.accepted();
    wait_for("a long attempt is under way", T, || {
        silent.accepted() > before
    });
    let port = sink.port.to_string();
    srv.cmd(&["key_evt_amqp.config_set", "127.0.0.1", &port])
        .expect("config_set");
    let msgs = sink.expect_sequence("k", 100, T).to_vec();
    check_sequence(&msgs, "k", 100);
    wait_for("the replaced attempt's connection is closed", T, || {
        silent.open() == 0
    });
    assert_eq!(io_threads(srv.pid()), 1, "only the live connection's");
}

/// lapin I/O threads in process `pid` (one per connection or attempt).
fn io_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(Result::ok)
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.trim() == "lapin-io-loop")
                })
                .count()
        })
        .unwrap_or(0)
}
