//! Hardening: format strings and CR LF in arguments, the fallback list's
//! database, admin-only commands that hide the password, mask limits and
//! linear matching, and a SHUTDOWN filter that only acts on a SHUTDOWN that
//! will run.

mod common;

use common::amqp::{check_sequence, Sink};
use common::args::ModuleArgs;
use common::proxy::Proxy;
use common::server::{Kind, Server};
use common::{amqp_port, wait_for};
use redis::{Connection, Value};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);
const KEY: &str = "key_evt_amqp:fallback";

/// A server forwarding every key (`ALL`) of the string class to `sink`.
fn start_all(kind: Kind, sink: &Sink, config: &[(&str, &str)]) -> Server {
    Server::start(kind, &ModuleArgs::new(sink).build(), config)
}

/// A server error as `CODE detail` (e.g. `NOPERM User limited has no permissions ...`).
fn err_text(e: &redis::RedisError) -> String {
    match e.code() {
        Some(code) => format!("{code} {}", e.detail().unwrap_or_default()),
        None => e.to_string(),
    }
}

/// Runs one command on `c`; the error as `CODE detail`.
fn run<A: redis::ToRedisArgs>(c: &mut Connection, name: &str, args: &[A]) -> Result<Value, String> {
    let mut cmd = redis::cmd(name);
    for a in args {
        cmd.arg(a);
    }
    cmd.query::<Value>(c).map_err(|e| err_text(&e))
}

/// A connection that logs in with `AUTH [user] pass`.
fn conn_as(srv: &Server, user: &str, pass: &str) -> Connection {
    let url = format!("redis://{user}:{pass}@127.0.0.1:{}/", srv.port);
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("connect as '{user}': {e}"))
}

/// A connection on database `db`.
fn conn_db(srv: &Server, db: i64) -> Connection {
    let mut c = srv.conn();
    run(&mut c, "SELECT", &[db]).expect("SELECT");
    c
}

/// The raw text of `INFO key_evt_amqp`.
fn info_text(c: &mut Connection) -> String {
    redis::cmd("INFO")
        .arg("key_evt_amqp")
        .query(c)
        .expect("INFO key_evt_amqp")
}

/// `INFO key_evt_amqp` on a given connection (for servers with a password), without the prefix.
fn info_on(c: &mut Connection) -> HashMap<String, String> {
    info_text(c)
        .lines()
        .filter_map(|l| l.strip_prefix("key_evt_amqp_"))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn stat_on(c: &mut Connection, field: &str) -> i64 {
    info_on(c)
        .get(field)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no INFO field {field}"))
}

/// Flattens a reply into its strings (bulk, simple, numbers), for "does it contain X" checks.
fn flatten(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::BulkString(b) => out.push(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => out.push(s.clone()),
        Value::Int(i) => out.push(i.to_string()),
        Value::Array(items) | Value::Set(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(format!("{other:?}")),
    }
}

/// The process exists and is not a zombie (it did not crash).
fn process_alive(srv: &Server) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", srv.pid()))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The lines of a crash report that say what crashed.
fn crash_excerpt(log: &str) -> String {
    log.lines()
        .filter(|l| {
            ["crashed", "signal", "RM_Log", "key_evt_amqp:", "EIP"]
                .iter()
                .any(|w| l.contains(w))
        })
        .take(20)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Panics with the server log if the server no longer answers PING.
fn assert_alive(srv: &Server, what: &str) {
    let pong = redis::Client::open(srv.url())
        .and_then(|c| c.get_connection())
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .map_err(|e| e.to_string());
    assert!(
        pong.as_deref().is_ok_and(|p| p == "PONG") && process_alive(srv),
        "{:?}: server died after {what} ({pong:?}); log excerpt:\n{}",
        srv.kind,
        crash_excerpt(&srv.log())
    );
}

/// Waits for `f`, failing early (with the log) if the server dies meanwhile.
fn wait_alive(srv: &Server, what: &str, mut f: impl FnMut() -> bool) {
    wait_for(what, T, || {
        assert_alive(srv, what);
        f()
    });
}

/// Waits for a message whose key is `key`; returns every key received so far.
fn wait_for_key(sink: &mut Sink, key: &str) -> Vec<String> {
    let start = Instant::now();
    loop {
        sink.drain();
        if sink.received.iter().any(|m| m.key() == key) {
            return sink.received.iter().map(|m| m.key()).collect();
        }
        assert!(
            start.elapsed() < T,
            "'{key}' did not arrive; got {:?}",
            sink.received.iter().map(|m| m.key()).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// 1. Format strings never reach the logger.

#[test]
fn format_strings_in_arguments_do_not_crash() {
    const HOST: &str = "%s%s%s%s%s%s%s%s%n%n";
    for kind in Kind::ALL {
        let mut sink = Sink::new(amqp_port());
        let srv = start_all(kind, &sink, &[]);
        let port = sink.port.to_string();

        // A host name full of conversions: accepted, and the failed connection is logged as text.
        srv.cmd(&["key_evt_amqp.config_set", HOST, &port])
            .unwrap_or_else(|e| panic!("{kind:?}: config_set {HOST}: {e}"));
        assert_eq!(srv.field("broker"), format!("{HOST}:{port}"), "{kind:?}");
        srv.cmd(&["SET", "x", "1"]).unwrap();
        wait_alive(&srv, "the host name to be logged", || {
            srv.log().contains(HOST)
        });
        assert!(srv.log().contains("%s%s%s"), "{kind:?}");

        // A key mask with conversions.
        srv.cmd(&["key_evt_amqp.keymask_add", "%n%n%s"])
            .unwrap_or_else(|e| panic!("{kind:?}: keymask_add: {e}"));
        srv.cmd(&["SET", "x", "2"]).unwrap();
        assert_alive(&srv, "keymask_add '%n%n%s'");

        // An exchange name with conversions: the broker refuses it and names it in its error.
        let mut args = vec!["key_evt_amqp.config_set".to_string()];
        args.extend(sink.args(1));
        args[6] = "kea-%s%n-x".into();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        srv.cmd(&refs)
            .unwrap_or_else(|e| panic!("{kind:?}: config_set exchange: {e}"));
        srv.cmd(&["SET", "x", "3"]).unwrap();
        wait_alive(&srv, "the refused exchange to be logged", || {
            srv.log().contains("'kea-%s%n-x'")
        });
        assert_alive(&srv, "exchange 'kea-%s%n-x'");

        // Back to the real exchange: everything written meanwhile arrives, then a marker.
        let mut args = vec!["key_evt_amqp.config_set".to_string()];
        args.extend(sink.args(1));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        srv.cmd(&refs).unwrap();
        srv.cmd(&["SET", "done", "1"]).unwrap();
        let keys = wait_for_key(&mut sink, "done");
        assert!(
            keys.iter().filter(|k| *k == "x").count() >= 3,
            "{kind:?}: the three SETs of x must arrive before 'done': {keys:?}"
        );
        assert_alive(&srv, "repairing the configuration");
    }
}

// ---------------------------------------------------------------------------
// 2. INFO cannot be forged.

/// Every line of the section is the `# ...` header or `name:value` on one line.
fn assert_info_well_formed(kind: Kind, text: &str) {
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        assert!(
            !line.starts_with("key_evt_amqp_forged"),
            "{kind:?}: forged INFO line {line:?} in\n{text}"
        );
        if line.starts_with('#') {
            continue;
        }
        let ok = line.split_once(':').is_some_and(|(name, value)| {
            !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !value.contains(['\r', '\n'])
        });
        assert!(
            ok,
            "{kind:?}: INFO line {line:?} is not name:value in\n{text:?}"
        );
    }
}

#[test]
fn info_cannot_be_forged_with_cr_lf() {
    for kind in Kind::ALL {
        let sink = Sink::new(amqp_port());
        let srv = start_all(kind, &sink, &[]);
        let mut c = srv.conn();
        match run(
            &mut c,
            "key_evt_amqp.config_set",
            &["evil\r\nkey_evt_amqp_forged:1"],
        ) {
            Ok(_) => {}
            Err(e) => assert!(
                e.starts_with("ERR") && e.contains("host"),
                "{kind:?}: refusal must be an ERR naming host: {e}"
            ),
        }
        assert_info_well_formed(kind, &info_text(&mut c));
        // A mask with CR LF is shown escaped.
        let _ = run(
            &mut c,
            "key_evt_amqp.keymask_add",
            &["a\r\nkey_evt_amqp_forged:2"],
        );
        assert_info_well_formed(kind, &info_text(&mut c));
        assert!(info_on(&mut c).contains_key("fallback_len"), "{kind:?}");
    }
}

// ---------------------------------------------------------------------------
// 3. One fallback list in a fixed database.

/// Disconnects, writes one key each in databases 0, 3 and 5, and checks the
/// list lives in `list_db` only; then connects and checks delivery.
fn check_fallback_db(kind: Kind, config: &[(&str, &str)], list_db: i64) {
    let mut sink = Sink::new(amqp_port());
    let srv = start_all(kind, &sink, config);
    srv.cmd(&["key_evt_amqp.disconnect"]).unwrap();
    let mut c = srv.conn();
    let writes = [(0, "fdb-a"), (3, "fdb-b"), (5, "fdb-c")];
    for (n, (db, key)) in writes.into_iter().enumerate() {
        run(&mut c, "SELECT", &[db]).unwrap();
        run(&mut c, "SET", &[key, "v"]).unwrap();
        // Each write finds the queue empty, so the timer is re-armed from this database.
        let want = n as i64 + 1;
        wait_alive(&srv, &format!("fallback_len {want}"), || {
            srv.stat("fallback_len") == want
        });
    }
    for db in [0, 1, 2, 3, 4, 5] {
        let mut c = conn_db(&srv, db);
        let exists: i64 = redis::cmd("EXISTS").arg(KEY).query(&mut c).unwrap();
        let want = i64::from(db == list_db);
        assert_eq!(exists, want, "{kind:?}: EXISTS {KEY} in db {db}");
        if db == list_db {
            let len: i64 = redis::cmd("LLEN").arg(KEY).query(&mut c).unwrap();
            assert_eq!(len, 3, "{kind:?}: LLEN {KEY} in db {db}");
        }
    }
    srv.cmd(&["key_evt_amqp.connect"]).unwrap();
    let bodies: Vec<String> = sink
        .expect_at_least(3, T)
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    assert_eq!(
        bodies,
        ["0\nset\nfdb-a", "3\nset\nfdb-b", "5\nset\nfdb-c"],
        "{kind:?}"
    );
    wait_for("backlog drained", T, || srv.stat("fallback_len") == 0);
    assert_eq!(srv.stat("events_lost"), 0, "{kind:?}");
    sink.expect_quiet(Duration::from_millis(300));
}

#[test]
fn fallback_list_stays_in_one_database() {
    for kind in Kind::ALL {
        check_fallback_db(kind, &[], 0);
    }
}

#[test]
fn fallback_db_config_chooses_the_database() {
    for kind in Kind::ALL {
        check_fallback_db(kind, &[("key_evt_amqp.fallback-db", "2")], 2);
    }
}

// ---------------------------------------------------------------------------
// 4. Commands are admin-only; the password never shows.

/// The seven commands with arguments that would change something.
fn seven_commands() -> [(&'static str, Vec<&'static str>); 7] {
    [
        ("key_evt_amqp.config_set", vec!["10.9.9.9", "1234"]),
        ("key_evt_amqp.connect", vec!["10.9.9.9", "1234"]),
        ("key_evt_amqp.disconnect", vec![]),
        ("key_evt_amqp.fallback_storage_size_set", vec!["5"]),
        ("key_evt_amqp.keymask_clean", vec![]),
        ("key_evt_amqp.keymask_add", vec!["^zz"]),
        ("key_evt_amqp.keymask_set", vec!["^zz"]),
    ]
}

/// Every command run as `user` is refused with NOPERM and changes nothing.
fn assert_all_denied(srv: &Server, user: &str, rules: &[&str]) {
    let kind = srv.kind;
    let mut admin = srv.conn();
    let mut setuser = vec!["SETUSER", user];
    setuser.extend_from_slice(rules);
    run(&mut admin, "ACL", &setuser).unwrap();
    let before = info_on(&mut admin);
    let mut c = conn_as(srv, user, "pw");
    for (name, args) in seven_commands() {
        match run(&mut c, name, &args) {
            Err(e) if e.starts_with("NOPERM") => {}
            other => {
                panic!("{kind:?}: {name} as '{user}' ({rules:?}) must get NOPERM, got {other:?}")
            }
        }
    }
    let after = info_on(&mut admin);
    for f in ["broker", "keymasks", "fallback_size", "connection"] {
        assert_eq!(before[f], after[f], "{kind:?}: {f} changed by '{user}'");
    }
}

/// A server with mask `^a`, connected to `sink`.
fn start_connected(kind: Kind, sink: &Sink) -> Server {
    let srv = Server::start(kind, &ModuleArgs::new(sink).masks(&["^a"]).build(), &[]);
    // The module connects once there is something to send.
    srv.set_keys(&["a1"]);
    wait_for("connected", T, || srv.field("connection") == "connected");
    assert_eq!(srv.field("broker"), format!("127.0.0.1:{}", sink.port));
    assert_eq!(srv.field("keymasks"), "^a");
    srv
}

#[test]
fn commands_need_admin_and_hide_the_password() {
    const SECRET: &str = "S3cretPassw0rd";
    for kind in Kind::ALL {
        let sink = Sink::new(amqp_port());
        let srv = start_connected(kind, &sink);
        if kind == Kind::Valkey {
            // Redis 7.0: see commands_need_admin_on_redis_7_0.
            assert_all_denied(
                &srv,
                "limited",
                &["on", ">pw", "+@all", "-@admin", "-@dangerous"],
            );
        }

        // Not from scripts.
        let mut c = srv.conn();
        let script = "return redis.call('key_evt_amqp.disconnect')";
        let r = run(&mut c, "EVAL", &[script, "0"]);
        assert!(
            r.is_err(),
            "{kind:?}: EVAL of a module command must fail: {r:?}"
        );
        assert_eq!(
            srv.field("connection"),
            "connected",
            "{kind:?}: EVAL disconnected"
        );

        // MONITOR and SLOWLOG never show the password.
        run(&mut c, "CONFIG", &["SET", "slowlog-log-slower-than", "0"]).unwrap();
        run(&mut c, "SLOWLOG", &["RESET"]).unwrap();
        let mut mon = TcpStream::connect(("127.0.0.1", srv.port)).expect("monitor connection");
        mon.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        mon.write_all(b"MONITOR\r\n").unwrap();
        let port = sink.port.to_string();
        run(
            &mut c,
            "key_evt_amqp.config_set",
            &["127.0.0.1", port.as_str(), "guest", SECRET],
        )
        .unwrap();
        run::<&str>(&mut c, "PING", &[]).unwrap();
        run(&mut c, "SET", &["marker", "1"]).unwrap();
        let mut seen = Vec::new();
        let start = Instant::now();
        while !String::from_utf8_lossy(&seen).contains("marker") {
            assert!(
                start.elapsed() < T,
                "{kind:?}: MONITOR never showed 'marker': {}",
                String::from_utf8_lossy(&seen)
            );
            let mut buf = [0u8; 4096];
            match mon.read(&mut buf) {
                Ok(0) => panic!("{kind:?}: MONITOR connection closed"),
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        let monitor = String::from_utf8_lossy(&seen);
        assert!(
            !monitor.contains(SECRET),
            "{kind:?}: MONITOR shows the password:\n{monitor}"
        );
        let slowlog = run(&mut c, "SLOWLOG", &["GET", "128"]).unwrap();
        let mut words = Vec::new();
        flatten(&slowlog, &mut words);
        assert!(
            words.iter().any(|w| w == "marker"),
            "{kind:?}: SLOWLOG records commands: {words:?}"
        );
        assert!(
            !words.iter().any(|w| w.contains(SECRET)),
            "{kind:?}: SLOWLOG shows the password: {words:?}"
        );
        assert!(
            !srv.log().contains(SECRET),
            "{kind:?}: the log shows the password"
        );
    }
}

/// Redis 7.0 gives module commands no ACL category (implicit or declared):
/// a user with `+@all -@admin` must still be refused.
#[test]
fn commands_need_admin_on_redis_7_0() {
    let sink = Sink::new(amqp_port());
    let srv = start_connected(Kind::Redis, &sink);
    assert_all_denied(
        &srv,
        "limited",
        &["on", ">pw", "+@all", "-@admin", "-@dangerous"],
    );
    assert_all_denied(&srv, "limited2", &["on", ">pw", "+@all", "-@admin"]);
}

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
