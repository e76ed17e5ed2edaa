//! A RabbitMQ cluster, not one broker: the address list, node failover onto
//! a quorum queue (the connected node stopped, then SIGKILLed), entries that
//! refuse or stall skipped, two independent brokers in one list, a stream
//! queue read back in order, mutual TLS with SASL EXTERNAL, and the `uri`
//! config with a percent-encoded vhost.
//!
//! The three-node cluster is started once for this binary (in parallel,
//! about 20 s) and stopped when it exits.

mod common;

use common::amqp::{block, channel, Sink};
use common::args::ModuleArgs;
use common::proxy::Silent;
use common::rabbit_cluster::{Node, RabbitCluster};
use common::server::{Kind, Server};
use common::tls::TlsBroker;
use common::{amqp_port, fault_broker, fault_lock, rabbitmqctl, wait_for};
use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

/// The failover runs change the cluster: one at a time.
static CLUSTER_LOCK: Mutex<()> = Mutex::new(());

/// A sink on `port` whose queue is of `x-queue-type` `kind` (`quorum`, `stream`).
fn typed_sink(port: u16, kind: &str) -> Sink {
    let sink = Sink {
        port,
        exchange: common::unique("kea-x"),
        queue: common::unique(&format!("kea-{kind}")),
        routing_key: common::unique("rk"),
        received: Vec::new(),
        vhost: "/".into(),
    };
    sink.declare_exchange();
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
    sink.declare_queue_with(args);
    sink
}

/// Missing keys of `prefix0..prefix{n-1}` and duplicates among `keys`.
fn missing_and_duplicates(keys: &[String], prefix: &str, n: usize) -> (usize, usize) {
    let mut seen = vec![0u32; n];
    for k in keys {
        if let Some(i) = k.strip_prefix(prefix).and_then(|s| s.parse::<usize>().ok()) {
            if i < n {
                seen[i] += 1;
            }
        }
    }
    let missing = seen.iter().filter(|c| **c == 0).count();
    let dups = seen.iter().map(|c| c.saturating_sub(1) as usize).sum();
    (missing, dups)
}

/// Writes `prefix0..prefix{n-1}` at a steady rate (`per_tick` keys every
/// 10 ms), counting what was written in `done`.
fn steady_stream(
    srv: &Server,
    prefix: &str,
    n: usize,
    per_tick: usize,
    done: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<Duration> {
    let mut c = srv.conn();
    let prefix = prefix.to_string();
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut i = 0;
        let mut tick = 0u32;
        while i < n {
            let mut pipe = redis::pipe();
            for k in i..(i + per_tick).min(n) {
                pipe.cmd("SET")
                    .arg(format!("{prefix}{k}"))
                    .arg("v")
                    .ignore();
            }
            pipe.query::<()>(&mut c).expect("SET pipeline");
            i = (i + per_tick).min(n);
            done.store(i, Ordering::SeqCst);
            tick += 1;
            let due = start + Duration::from_millis(10) * tick;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        start.elapsed()
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kill {
    /// `rabbitmqctl stop_app`.
    Stop,
    /// SIGKILL of the node's Erlang VM.
    Sigkill,
}

/// Events through the module while the node it is connected to goes away.
const EVENTS: usize = 20_000;
/// `inflight-max` of the failover runs: the duplicates' bound.
const WINDOW: usize = 2000;

fn failover_run(mode: Kill) {
    let _l = CLUSTER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = RabbitCluster::shared(3);
    let mut sink = typed_sink(cluster.nodes[1].port, "quorum");
    let mut args = ModuleArgs::new(&sink).heartbeat(2);
    args.host = cluster.host_list();
    let window = WINDOW.to_string();
    let srv = Server::start(
        Kind::Redis,
        &args.build(),
        &[
            ("key_evt_amqp.inflight-max", window.as_str()),
            ("key_evt_amqp.connect-timeout-ms", "2000"),
        ],
    );
    srv.set_keys(&["warmup"]);
    wait_for("connected to the cluster", T, || {
        srv.stat("events_confirmed") >= 1 && !srv.field("broker_connected").is_empty()
    });
    // Which node: the broker's view and the module's must agree.
    let holders = cluster.nodes_with_connection("key_evt_amqp");
    assert_eq!(holders.len(), 1, "one node holds the module's connection");
    let victim: Node = holders[0].clone();
    let connected = srv.field("broker_connected");
    assert_eq!(connected, format!("127.0.0.1:{}", victim.port));
    let pid = (mode == Kill::Sigkill).then(|| common::broker_pid(&victim.name));
    // The victim comes back at the end, also when the run fails.
    let _revive = scopeguard(|| cluster.revive(&victim));
    // Read back through a node that stays.
    sink.port = cluster
        .nodes
        .iter()
        .find(|n| n.port != victim.port)
        .expect("a survivor")
        .port;

    let written = Arc::new(AtomicUsize::new(0));
    // SIGKILL: 100 keys every 10 ms, a steady 10,000 events/s for 2 s.
    // `stop_app`: 4,000 events/s for 5 s, so that the stop, which its
    // command takes one to four seconds to make, lands inside the stream.
    let per_tick = if mode == Kill::Sigkill { 100 } else { 40 };
    let writer = steady_stream(&srv, "k", EVENTS, per_tick, Arc::clone(&written));
    // SIGKILL a third of the way through; `stop_app` as the stream starts:
    // its command needs a second or two before the node stops.
    let at = if mode == Kill::Sigkill { EVENTS / 3 } else { 0 };
    wait_for("the stream under way", T, || {
        written.load(Ordering::SeqCst) >= at
    });
    let confirmed_before = srv.stat("events_confirmed");
    let killed_at = Instant::now();
    let stopper = match (mode, pid) {
        (Kill::Sigkill, Some(pid)) => {
            // SAFETY: a plain syscall on the broker's pid.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
            None
        }
        _ => {
            let name = victim.name.clone();
            Some(std::thread::spawn(move || {
                rabbitmqctl(&name, &["stop_app"]);
            }))
        }
    };
    // The first event confirmed through another node; and when the module
    // saw the loss (for `stop_app`, whose command takes a second to start).
    let mut took = None;
    let mut lost = None;
    while killed_at.elapsed() < T {
        let info = srv.info();
        let now = info.get("broker_connected").cloned().unwrap_or_default();
        let confirmed: i64 = info
            .get("events_confirmed")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if lost.is_none() && now != connected {
            lost = Some((killed_at.elapsed(), written.load(Ordering::SeqCst)));
        }
        if !now.is_empty() && now != connected && confirmed > confirmed_before {
            took = Some(killed_at.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = took.expect("an event confirmed through another node");
    if let Some(s) = stopper {
        s.join().expect("stop_app");
    }
    let stream_time = writer.join().expect("writer");
    common::wait_showing(
        "every event confirmed",
        Duration::from_secs(90),
        || srv.stat("events_confirmed") > EVENTS as i64,
        || format!("{:?}", srv.info()),
    );
    let msgs = sink.expect_sequence("k", EVENTS, Duration::from_secs(90));
    let keys: Vec<String> = msgs.iter().map(|m| m.key()).collect();
    let (missing, dups) = missing_and_duplicates(&keys, "k", EVENTS);
    let info = srv.info();
    eprintln!(
        "failover ({mode:?}): {EVENTS} events in {:.2} s; kill to first event confirmed through {}: {} ms (the module saw the loss after {} ms, {} events written then); missing {missing}, duplicates {dups} (resent {}), broker_failovers {}",
        stream_time.as_secs_f64(),
        info["broker_connected"],
        took.as_millis(),
        lost.unwrap_or_default().0.as_millis(),
        lost.unwrap_or_default().1,
        info["events_resent"],
        info["broker_failovers"],
    );
    assert_eq!(missing, 0);
    assert!(dups <= WINDOW, "{dups} duplicates, more than one window");
    assert!(srv.stat("broker_failovers") >= 1);
    assert_eq!(srv.stat("events_dropped"), 0);
    let entry = cluster
        .nodes
        .iter()
        .position(|n| n.port == victim.port)
        .expect("victim's entry");
    assert!(
        srv.field(&format!("broker_entry_{entry}"))
            .contains("error"),
        "the lost node's entry shows its error"
    );
}

#[test]
fn a_quorum_queue_gets_every_event_when_the_connected_node_is_stopped() {
    failover_run(Kill::Stop);
}

#[test]
fn a_quorum_queue_gets_every_event_when_the_connected_node_is_killed() {
    failover_run(Kill::Sigkill);
}

fn keys(prefix: &str, from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("{prefix}{i}")).collect()
}

#[test]
fn a_refusing_or_silent_first_entry_is_skipped_within_the_connect_timeout() {
    let mut sink = Sink::new(amqp_port());
    let (_held, refused) = common::refused_port();
    let silent = Silent::new();
    for (what, first) in [("refused", refused), ("silent", silent.port)] {
        let mut args = ModuleArgs::new(&sink);
        args.host = format!("127.0.0.1:{first},127.0.0.1:{}", sink.port);
        let started = Instant::now();
        let srv = Server::start(
            Kind::Redis,
            &args.build(),
            &[("key_evt_amqp.connect-timeout-ms", "1500")],
        );
        let prefix = format!("{what}-");
        srv.set_keys(&keys(&prefix, 0, 50));
        sink.expect_sequence(&prefix, 50, T);
        eprintln!(
            "{what} first entry: first 50 events through the second in {} ms",
            started.elapsed().as_millis()
        );
        assert_eq!(
            srv.field("broker_connected"),
            format!("127.0.0.1:{}", sink.port)
        );
        let first_entry = srv.field("broker_entry_0");
        assert!(
            first_entry.starts_with(&format!("127.0.0.1:{first} error: ")),
            "{first_entry}"
        );
        if what == "silent" {
            assert!(
                first_entry.contains("timed out after 1500 ms"),
                "{first_entry}"
            );
        }
        assert_eq!(
            srv.field("broker_entry_1"),
            format!("127.0.0.1:{} connected", sink.port)
        );
        assert_eq!(
            srv.stat("broker_failovers"),
            0,
            "never connected to the first"
        );
    }
}

#[test]
fn two_independent_brokers_in_one_list_fail_over_the_same_way() {
    let _fault = fault_lock();
    let (fault_port, fault_node) = fault_broker();
    let mut main = Sink::new(amqp_port());
    // The same exchange, queue and binding on the other broker.
    let mut other = Sink {
        port: fault_port,
        exchange: main.exchange.clone(),
        queue: main.queue.clone(),
        routing_key: main.routing_key.clone(),
        received: Vec::new(),
        vhost: "/".into(),
    };
    other.declare_exchange();
    other.declare_queue();
    let mut args = ModuleArgs::new(&main);
    args.host = format!("127.0.0.1:{fault_port},127.0.0.1:{}", main.port);
    let srv = Server::start(Kind::Redis, &args.build(), &[]);
    srv.set_keys(&keys("a", 0, 500));
    other.expect_sequence("a", 500, T);
    assert_eq!(
        srv.field("broker_connected"),
        format!("127.0.0.1:{fault_port}")
    );
    rabbitmqctl(&fault_node, &["stop_app"]);
    let restart = scopeguard(|| {
        rabbitmqctl(&fault_node, &["start_app"]);
    });
    srv.set_keys(&keys("a", 500, 1000));
    main.expect_keys(&keys("a", 500, 1000), T);
    assert_eq!(
        srv.field("broker_connected"),
        format!("127.0.0.1:{}", main.port)
    );
    assert_eq!(srv.stat("broker_failovers"), 1);
    drop(restart);
    // Everything arrived once across the two, give or take the window.
    other.drain();
    let all: Vec<String> = other
        .received
        .iter()
        .chain(main.received.iter())
        .map(|m| m.key())
        .collect();
    let (missing, dups) = missing_and_duplicates(&all, "a", 1000);
    eprintln!("two brokers: missing {missing}, duplicates {dups}");
    assert_eq!(missing, 0);
}

/// Runs `f` when dropped (also when the test fails).
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct G<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for G<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    G(Some(f))
}

#[test]
fn a_stream_queue_receives_every_event_in_order() {
    const N: usize = 2000;
    let sink = typed_sink(amqp_port(), "stream");
    let srv = Server::start(Kind::Redis, &ModuleArgs::new(&sink).build(), &[]);
    srv.set_keys(&keys("s", 0, N));
    wait_for("every event confirmed", T, || {
        srv.stat("events_confirmed") >= N as i64
    });
    // Read the stream from its start, as a stream consumer does.
    let got: Vec<String> = block("read the stream", async {
        let (conn, ch) = channel(sink.port, "/").await.expect("channel");
        ch.basic_qos(500, BasicQosOptions::default())
            .await
            .expect("qos");
        let mut args = FieldTable::default();
        args.insert(
            "x-stream-offset".into(),
            AMQPValue::LongString("first".into()),
        );
        let mut consumer = ch
            .basic_consume(
                sink.queue.as_str().into(),
                "kea-stream".into(),
                BasicConsumeOptions::default(),
                args,
            )
            .await
            .expect("consume");
        let mut out = Vec::new();
        while out.len() < N {
            let next = futures_lite::future::or(async { consumer.next().await }, async {
                async_io::Timer::after(T).await;
                None
            })
            .await;
            let Some(Ok(d)) = next else { break };
            let body = String::from_utf8_lossy(&d.data).into_owned();
            out.push(body.splitn(3, '\n').nth(2).unwrap_or_default().to_string());
            d.ack(BasicAckOptions::default()).await.expect("ack");
        }
        let _ = conn.close(200, "ok".into()).await;
        out
    });
    assert_eq!(got, keys("s", 0, N), "every event, in order, once");
    block("delete the stream", async {
        let (conn, ch) = channel(sink.port, "/").await?;
        ch.queue_delete(sink.queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
        conn.close(200, "ok".into()).await
    })
    .expect("delete the stream");
}

#[test]
fn mutual_tls_with_a_client_certificate_and_external_auth() {
    let broker = TlsBroker::start_mutual();
    broker.ctl(&["add_user", "kea-client", "unused-password"]);
    broker.ctl(&["clear_password", "kea-client"]);
    broker.ctl(&["set_permissions", "-p", "/", "kea-client", ".*", ".*", ".*"]);
    let mut sink = Sink::new(broker.port);
    let mut args = ModuleArgs::new(&sink).port(broker.tls_port).heartbeat(2);
    // The user and password are not used with EXTERNAL: the certificate names the user.
    args.user = "nobody".into();
    args.password = "wrong".into();
    let (ca, cert, key) = (broker.ca(), broker.client_cert(), broker.client_key());
    let srv = Server::start(
        Kind::Redis,
        &args.build(),
        &[
            ("key_evt_amqp.tls", "yes"),
            ("key_evt_amqp.tls-ca-file", ca.as_str()),
            ("key_evt_amqp.tls-cert-file", cert.as_str()),
            ("key_evt_amqp.tls-key-file", key.as_str()),
            ("key_evt_amqp.auth-mechanism", "external"),
            // The certificate names localhost and 127.0.0.1: checked against the override.
            ("key_evt_amqp.tls-server-name", "localhost"),
        ],
    );
    srv.set_keys(&keys("m", 0, 100));
    sink.expect_sequence("m", 100, T);
    let conns = broker.ctl(&["list_connections", "-q", "user", "auth_mechanism", "ssl"]);
    assert!(
        conns.contains("kea-client") && conns.contains("EXTERNAL"),
        "{conns}"
    );
    // A server name the certificate does not carry is refused...
    srv.cmd(&[
        "CONFIG",
        "SET",
        "key_evt_amqp.tls-server-name",
        "elsewhere.example",
    ])
    .unwrap();
    srv.set_keys(&keys("m", 100, 150));
    wait_for("the name mismatch is reported", T, || {
        let e = srv.field("last_error").to_lowercase();
        e.contains("certificate") || e.contains("name")
    });
    // ... unless verification is off, which is warned at every connect.
    srv.cmd(&["CONFIG", "SET", "key_evt_amqp.tls-verify", "no"])
        .unwrap();
    sink.expect_sequence("m", 150, T);
    wait_for("the warning", T, || srv.log().contains("WITHOUT checking"));
    // Without the client certificate the broker refuses the handshake.
    srv.cmd(&[
        "CONFIG",
        "SET",
        "key_evt_amqp.tls-verify",
        "yes",
        "key_evt_amqp.tls-server-name",
        "",
        "key_evt_amqp.tls-cert-file",
        "",
        "key_evt_amqp.tls-key-file",
        "",
    ])
    .unwrap();
    srv.set_keys(&keys("m", 150, 160));
    wait_for("refused without a certificate", T, || {
        srv.field("connection") == "reconnecting" && srv.stat("fallback_len") > 0
    });
}

#[test]
fn the_uri_config_reaches_a_vhost_that_needs_percent_encoding() {
    // The main broker is reached by port; rabbitmqctl needs its node name.
    let (port, node) = common::main_broker();
    let vhost = common::unique("kea/v");
    let user = common::unique("kea-uri");
    let ctl = |args: &[&str]| rabbitmqctl(&node, args);
    ctl(&["add_vhost", &vhost]);
    ctl(&["add_user", &user, "p@ss/w%rd,x"]);
    for u in [user.as_str(), "guest"] {
        ctl(&["set_permissions", "-p", &vhost, u, ".*", ".*", ".*"]);
    }
    let cleanup = scopeguard(|| {
        ctl(&["delete_vhost", &vhost]);
        ctl(&["delete_user", &user]);
    });
    let mut sink = Sink::in_vhost(port, &vhost);
    let mut args = ModuleArgs::new(&sink);
    // The uri wins over host, port, user and password.
    args.host = "nowhere.invalid".into();
    args.port = 1;
    let srv = Server::start(Kind::Redis, &args.build(), &[]);
    let uri = format!(
        "amqp://{user}:p%40ss%2Fw%25rd,x@127.0.0.1:{port}/{}?heartbeat=3&connection_timeout=4000&channel_max=16",
        vhost.replace('/', "%2F")
    );
    srv.cmd(&["CONFIG", "SET", "slowlog-log-slower-than", "0"])
        .unwrap();
    srv.cmd(&["CONFIG", "SET", "key_evt_amqp.uri", &uri])
        .unwrap();
    srv.set_keys(&keys("u", 0, 100));
    sink.expect_sequence("u", 100, T);
    assert_eq!(srv.field("broker"), format!("127.0.0.1:{port}"));
    assert_eq!(srv.field("broker_connected"), format!("127.0.0.1:{port}"));
    // Hidden like the password: not in CONFIG GET *, SLOWLOG or the log.
    let all = srv.cmd(&["CONFIG", "GET", "key_evt_amqp.*"]).unwrap();
    assert!(
        !all.contains("p%40ss") && !all.contains("key_evt_amqp.uri"),
        "{all}"
    );
    let slow = srv.cmd(&["SLOWLOG", "GET", "100"]).unwrap();
    assert!(!slow.contains("p%40ss"), "{slow}");
    assert!(!srv.log().contains("p%40ss"));
    // A bad uri is refused without being echoed.
    let e = srv
        .cmd(&[
            "CONFIG",
            "SET",
            "key_evt_amqp.uri",
            "amqp://u:secret9@h/a/b",
        ])
        .unwrap_err();
    assert!(e.contains("uri") && !e.contains("secret9"), "{e}");
    drop(cleanup);
}
