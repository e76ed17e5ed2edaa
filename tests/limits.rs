//! Hardening, limits and SHUTDOWN: mask limits and linear matching, and a
//! SHUTDOWN filter that only acts on a SHUTDOWN that will run.

mod common;

use common::amqp::Sink;
use common::args::ModuleArgs;
use common::conn::*;
use common::msg::check_sequence;
use common::proxy::Proxy;
use common::server::{Kind, Server};
use common::{amqp_port, wait_for};
use redis::{Connection, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);
const KEY: &str = "key_evt_amqp:fallback";

// ---------------------------------------------------------------------------
// 5. Mask limits and linear matching.

/// Any whole number in `text` within `range`.
fn has_number_in(text: &str, range: std::ops::RangeInclusive<u64>) -> bool {
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse::<u64>().ok())
        .any(|n| range.contains(&n))
}

#[test]
fn mask_limits_and_linear_matching() {
    for kind in Kind::ALL {
        let mut sink = Sink::new(amqp_port());
        let srv = Server::start(kind, &ModuleArgs::new(&sink).masks(&["^a"]).build(), &[]);
        let mut c = srv.conn();

        // One mask: 1024 bytes at most.
        let long = "k".repeat(1025);
        let e = run(&mut c, "key_evt_amqp.keymask_add", &[long.as_str()])
            .expect_err("a 1025-byte mask must be refused");
        assert!(
            e.starts_with("ERR") && e.contains("keymask"),
            "{kind:?}: {e}"
        );
        assert_eq!(srv.field("keymasks"), "^a", "{kind:?}");
        let max = "k".repeat(1024);
        run(&mut c, "key_evt_amqp.keymask_add", &[max.as_str()])
            .unwrap_or_else(|e| panic!("{kind:?}: a 1024-byte mask must be accepted: {e}"));
        assert_eq!(srv.stat("keymask_count"), 2, "{kind:?}");

        // 100,000 masks at most.
        let too_many: Vec<String> = (0..100_001).map(|i| format!("^t{i}:")).collect();
        let e = run(&mut c, "key_evt_amqp.keymask_set", &too_many)
            .expect_err("100,001 masks must be refused");
        assert!(
            e.starts_with("ERR") && e.contains("keymask"),
            "{kind:?}: {e}"
        );
        assert_eq!(srv.stat("keymask_count"), 2, "{kind:?}: nothing changed");
        run(&mut c, "key_evt_amqp.keymask_set", &too_many[..100_000])
            .unwrap_or_else(|e| panic!("{kind:?}: 100,000 masks must be accepted: {e}"));
        assert_eq!(srv.stat("keymask_count"), 100_000, "{kind:?}");
        let shown = srv.field("keymasks");
        assert!(
            shown.len() < 1000,
            "{kind:?}: keymasks is {} chars long",
            shown.len()
        );
        assert!(
            shown.starts_with("^t0:") && has_number_in(&shown, 99_000..=100_000),
            "{kind:?}: keymasks shows the first masks and a count of the rest: {shown}"
        );
        // They still match: only t77777: gets through.
        run(&mut c, "SET", &["u1", "v"]).unwrap();
        run(&mut c, "SET", &["t77777:x", "v"]).unwrap();
        let keys = wait_for_key(&mut sink, "t77777:x");
        assert_eq!(keys, ["t77777:x"], "{kind:?}");
        // The first key asked for the automaton, built off the main thread;
        // once it answers, the same keys give the same answers.
        wait_for("the automaton", T, || {
            srv.field("keymask_matcher") == "automaton"
        });
        assert!(srv.stat("keymask_bytes") > 1_000_000, "{kind:?}");
        run(&mut c, "SET", &["u2", "v"]).unwrap();
        run(&mut c, "SET", &["t99999:y", "v"]).unwrap();
        let keys = wait_for_key(&mut sink, "t99999:y");
        assert_eq!(
            keys,
            ["t77777:x", "t99999:y"],
            "{kind:?}: u2 is not forwarded"
        );

        // A mask that backtracking matchers take exponential time on.
        let evil = format!("{}b", "a*".repeat(200));
        run(&mut c, "key_evt_amqp.keymask_set", &[evil.as_str()]).unwrap();
        let key = "a".repeat(100_000);
        let start = Instant::now();
        run(&mut c, "SET", &[key.as_str(), "v"]).unwrap();
        let took = start.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "{kind:?}: SET took {took:?} with a pathological mask"
        );
        assert_alive(&srv, "the pathological mask");
    }
}

// ---------------------------------------------------------------------------
// 6. The SHUTDOWN filter acts only on a SHUTDOWN that will run.

/// Sends one inline command on a fresh, unauthenticated socket; returns the reply line.
fn raw_command(srv: &Server, line: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).expect("raw connection");
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while !out.ends_with(b"\r\n") {
        match s.read(&mut b) {
            Ok(1) => out.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).trim_end().to_string()
}

/// Nothing was written to the list: INFO and LLEN both say 0.
fn assert_nothing_stored(a: &mut Connection, kind: Kind, after: &str) {
    let len: i64 = redis::cmd("LLEN").arg(KEY).query(a).unwrap();
    assert_eq!(len, 0, "{kind:?}: LLEN {KEY} after {after}");
    assert_eq!(
        stat_on(a, "fallback_len"),
        0,
        "{kind:?}: fallback_len after {after}"
    );
    let pong = run::<&str>(a, "PING", &[]);
    assert!(
        matches!(pong, Ok(Value::SimpleString(ref p)) if p == "PONG"),
        "{kind:?}: server down after {after}: {pong:?}"
    );
}

/// A server with AOF and password `pw` whose module goes through a proxy;
/// `k0` delivered, then the proxy stalled and `k1..=k200` held in memory.
struct Stalled {
    sink: Sink,
    proxy: Proxy,
    srv: Server,
    /// Authenticated as `default`.
    conn: Connection,
}

impl Stalled {
    fn start(kind: Kind) -> Self {
        let mut sink = Sink::new(amqp_port());
        let proxy = Proxy::new(amqp_port());
        let args = ModuleArgs::new(&sink)
            .port(proxy.port)
            .heartbeat(30)
            .masks(&["^k"])
            .build();
        let config = [
            ("appendonly", "yes"),
            ("appendfsync", "always"),
            ("key_evt_amqp.queue-max-events", "1000000"),
        ];
        let srv = Server::start(kind, &args, &config);
        // The harness waits for an unauthenticated PING, so the password comes after the start.
        run(&mut srv.conn(), "CONFIG", &["SET", "requirepass", "pw"]).unwrap();
        let mut conn = conn_as(&srv, "", "pw");
        wait_for("hook on", T, || {
            info_on(&mut conn).get("shutdown_hook").map(String::as_str) == Some("yes")
        });
        run(&mut conn, "SET", &["k0", "v"]).unwrap();
        sink.expect_at_least(1, T);
        proxy.stall(true);
        let mut pipe = redis::pipe();
        for i in 1..=200 {
            pipe.cmd("SET").arg(format!("k{i}")).arg("v").ignore();
        }
        pipe.query::<()>(&mut conn).unwrap();
        wait_for("200 events in memory", T, || {
            let i = info_on(&mut conn);
            let n = |f: &str| i[f].parse::<i64>().unwrap();
            n("inflight") + n("queue_len") >= 200 && n("fallback_len") == 0
        });
        Self {
            sink,
            proxy,
            srv,
            conn,
        }
    }

    /// SHUTDOWN on `by` (which must stop the server), restart, and check
    /// that the list kept the 200 events and delivers them.
    fn shutdown_and_restart(mut self, mut by: Connection) {
        let kind = self.srv.kind;
        let _ = run::<&str>(&mut by, "SHUTDOWN", &[]);
        drop(by);
        drop(self.conn);
        self.srv.reap();
        // Restarted without the password (it was set at run time).
        self.srv.restart();
        let len = self.srv.llen(KEY);
        assert!(
            len >= 200,
            "{kind:?}: {len} events in the list after SHUTDOWN and restart"
        );
        // Drop what the stalled proxy holds: only the list can deliver the events now.
        self.proxy.cut();
        self.proxy.stall(false);
        let msgs = self.sink.expect_at_least(201, T).to_vec();
        check_sequence(&msgs, "k", 201);
        wait_for("drained", T, || self.srv.stat("fallback_len") == 0);
    }
}

#[test]
fn shutdown_from_unauthenticated_client_changes_nothing() {
    for kind in Kind::ALL {
        let mut s = Stalled::start(kind);
        let reply = raw_command(&s.srv, "SHUTDOWN");
        assert!(
            reply.starts_with("-NOAUTH"),
            "{kind:?}: unauthenticated SHUTDOWN: {reply}"
        );
        assert_nothing_stored(&mut s.conn, kind, "an unauthenticated SHUTDOWN");
        s.proxy.stall(false);
    }
}

#[test]
fn shutdown_in_multi_or_without_permission_changes_nothing_then_an_admin_one_keeps_everything() {
    let kind = Kind::Valkey;
    let mut s = Stalled::start(kind);
    let a = &mut s.conn;

    let multi = redis::cmd("MULTI").query::<()>(a).map_err(|e| err_text(&e));
    assert!(multi.is_ok(), "{kind:?}: MULTI: {multi:?}");
    let in_multi = run::<&str>(a, "SHUTDOWN", &[]);
    let discard = run::<&str>(a, "DISCARD", &[]);
    assert!(
        discard.is_ok(),
        "{kind:?}: DISCARD after SHUTDOWN in MULTI ({in_multi:?}): {discard:?}"
    );
    assert_nothing_stored(a, kind, "SHUTDOWN inside a discarded MULTI");

    run(
        a,
        "ACL",
        &["SETUSER", "noshut", "on", ">pw2", "+@all", "-shutdown"],
    )
    .unwrap();
    let mut n = conn_as(&s.srv, "noshut", "pw2");
    let e = run::<&str>(&mut n, "SHUTDOWN", &[]).expect_err("SHUTDOWN without permission");
    assert!(e.starts_with("NOPERM"), "{kind:?}: {e}");
    assert_nothing_stored(a, kind, "a SHUTDOWN refused by ACL");

    // A named admin user (authenticated: it is not `default`) runs a real
    // SHUTDOWN: the module writes its memory to the list first. (With the
    // `default` user and a password the hook cannot tell an authenticated
    // client from one that is not, and does nothing: see the README.)
    run(a, "ACL", &["SETUSER", "ops", "on", ">pw3", "+@all"]).unwrap();
    let by = conn_as(&s.srv, "ops", "pw3");
    s.shutdown_and_restart(by);
}
