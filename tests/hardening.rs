//! Hardening: format strings and CR LF in arguments, the fallback list's
//! database, and admin-only commands that hide the password.

mod common;

use common::amqp::Sink;
use common::args::ModuleArgs;
use common::conn::*;
use common::server::{Kind, Server};
use common::{amqp_port, wait_for};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);
const KEY: &str = "key_evt_amqp:fallback";

/// A server forwarding every key (`ALL`) of the string class to `sink`.
fn start_all(kind: Kind, sink: &Sink, config: &[(&str, &str)]) -> Server {
    Server::start(kind, &ModuleArgs::new(sink).build(), config)
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
    sink.expect_nothing_before(&srv, "fdb-sentinel", T);
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
    // The commands change where events go, as CONFIG SET does: a user who
    // may read the config but not set or rewrite it may not run them.
    assert_all_denied(
        &srv,
        "reader",
        &["on", ">pw", "+@all", "-config|set", "-config|rewrite"],
    );
    let mut c = conn_as(&srv, "reader", "pw");
    assert!(run(&mut c, "CONFIG", &["GET", "port"]).is_ok());
    // A user with every right still runs them.
    let mut admin = srv.conn();
    run(&mut admin, "ACL", &["SETUSER", "ops", "on", ">pw", "+@all"]).unwrap();
    let mut ops = conn_as(&srv, "ops", "pw");
    run(&mut ops, "key_evt_amqp.keymask_add", &["^ops"]).unwrap();
    assert!(srv.field("keymasks").contains("^ops"));
}
