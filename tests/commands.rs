//! Load arguments and the seven module commands.

mod common;

use common::amqp::Sink;
use common::args::ModuleArgs;
use common::msg::{check_sequence, Msg};
use common::server::{module_path, Kind, Server};
use common::{amqp_port, wait_for};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn start(kind: Kind, sink: &Sink, masks: &[&str]) -> Server {
    Server::start(
        kind,
        &ModuleArgs::new(sink).types("$g").masks(masks).build(),
        &[],
    )
}

fn load(srv: &Server, args: &[&str]) -> Result<String, String> {
    let path = module_path();
    let mut full = vec!["MODULE", "LOAD", path.as_str()];
    full.extend_from_slice(args);
    srv.cmd(&full)
}

#[test]
fn spec_example_loads_exactly_as_written() {
    for kind in Kind::ALL {
        let srv = Server::start_bare(kind);
        let args: Vec<&str> =
            "xe 127.0.0.1 5672 user pass 20 exchange_name routing_key 2 10000000 ALL"
                .split(' ')
                .collect();
        load(&srv, &args).unwrap();
        let info = srv.info();
        assert_eq!(info["event_types"], "xe");
        assert_eq!(info["keymasks"], "ALL");
        assert_eq!(info["broker"], "127.0.0.1:5672");
        assert_eq!(info["fallback_size"], "10000000");
        assert_eq!(info["connection"], "idle");
        assert!(!srv.log().contains("pass "), "password must not be logged");
    }
}

#[test]
fn defaults_without_arguments() {
    let srv = Server::start_bare(Kind::Redis);
    load(&srv, &[]).unwrap();
    let info = srv.info();
    assert_eq!(info["event_types"], "xe");
    assert_eq!(info["keymasks"], "");
    assert_eq!(info["broker"], "127.0.0.1:5672");
    assert_eq!(info["fallback_size"], "10000000");
    assert_eq!(info["fallback_key"], "key_evt_amqp:fallback");
}

#[test]
fn bad_load_arguments_fail_with_a_log_line() {
    for kind in Kind::ALL {
        let srv = Server::start_bare(kind);
        let cases: [(&[&str], &str); 7] = [
            (&["xq"], "event_types"),
            (&["xe", "h", "0"], "port"),
            (&["xe", "h", "65536"], "port"),
            (&["xe", "h", "56x"], "port"),
            (&["xe", "h", "1", "u", "p", "abc"], "heartbeat"),
            (
                &["xe", "h", "1", "u", "p", "1", "ex", "rk", "3"],
                "delivery_mode",
            ),
            (
                &["xe", "h", "1", "u", "p", "1", "ex", "rk", "1", "1e3"],
                "fallback_storage_size",
            ),
        ];
        for (args, name) in cases {
            assert!(load(&srv, args).is_err(), "{args:?} must fail");
            assert!(
                srv.log()
                    .lines()
                    .any(|l| l.contains("MODULE LOAD refused") && l.contains(name)),
                "no log line naming {name}:\n{}",
                srv.log()
            );
            assert!(srv.cmd(&["PING"]).unwrap().contains("PONG"));
        }
        // Nothing of a refused load may stay subscribed (Redis 7.0 keeps the
        // listeners of a module whose OnLoad failed): the server's cron and a
        // config event must find none. An absence cannot be waited for, so
        // this gives the cron (10 times a second) a few rounds.
        std::thread::sleep(Duration::from_millis(400));
        srv.cmd(&["CONFIG", "SET", "appendonly", "no"]).unwrap();
        assert!(srv.cmd(&["PING"]).unwrap().contains("PONG"), "{kind:?}");
        // A good load still works afterwards.
        load(&srv, &["A"]).unwrap();
        assert_eq!(srv.field("event_types"), "g$lshzxe");
        srv.cmd(&["FLUSHALL"]).unwrap();
        assert!(srv.cmd(&["PING"]).unwrap().contains("PONG"), "{kind:?}");
    }
}

fn module_loaded(srv: &Server) -> bool {
    srv.cmd(&["MODULE", "LIST"])
        .is_ok_and(|l| l.contains("key_evt_amqp"))
}

/// `MODULE LOADEX` with a config the module does not have: the server
/// loads the module, finds the config unapplied and unloads it again. That
/// must leave nothing behind, so that the corrected LOADEX works.
#[test]
fn a_refused_loadex_leaves_nothing_behind() {
    for kind in Kind::ALL {
        let mut sink = Sink::new(amqp_port());
        let srv = Server::start_bare(kind);
        let args = ModuleArgs::new(&sink).build();
        let loadex = |configs: &[(&str, &str)]| {
            let mut cmd = redis::cmd("MODULE");
            cmd.arg("LOADEX").arg(module_path());
            for (k, v) in configs {
                cmd.arg("CONFIG").arg(*k).arg(*v);
            }
            cmd.arg("ARGS").arg(&args);
            cmd.query::<redis::Value>(&mut srv.conn())
                .map_err(|e| e.to_string())
        };
        let e = loadex(&[("key_evt_amqp.hots", "x")]).expect_err("a typo is refused");
        assert!(e.contains("Error loading"), "{kind:?}: {e}");
        assert!(!module_loaded(&srv), "{kind:?}: the module stayed loaded");
        loadex(&[("key_evt_amqp.heartbeat", "5")])
            .unwrap_or_else(|e| panic!("{kind:?}: the corrected LOADEX: {e}"));
        assert!(module_loaded(&srv), "{kind:?}");
        assert_eq!(srv.field("connection"), "idle", "{kind:?}");
        srv.set_keys(&["a1", "a2", "a3"]);
        let keys: Vec<String> = sink
            .expect_keys(&["a1", "a2", "a3"], T)
            .iter()
            .map(Msg::key)
            .collect();
        assert_eq!(keys, ["a1", "a2", "a3"], "{kind:?}");
    }
}

/// Before the module started a thread (no broker connection asked for),
/// `MODULE UNLOAD` unloads it cleanly and it loads again; once the AMQP
/// threads run, it is refused with a log line that says how to restart,
/// and the module goes on forwarding.
#[test]
fn unload_is_clean_before_the_first_connection_and_refused_with_advice_after() {
    for kind in Kind::ALL {
        let mut sink = Sink::new(amqp_port());
        let srv = Server::start_bare(kind);
        let args = ModuleArgs::new(&sink).build();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        load(&srv, &refs).unwrap();
        srv.cmd(&["GET", "nothing"]).unwrap();
        // No event yet: no thread, nothing held. (An idle tick may hold a
        // timer for a moment; the server then says so: try again.)
        wait_for("a clean unload", T, || {
            srv.cmd(&["MODULE", "UNLOAD", "key_evt_amqp"]).is_ok()
        });
        assert!(!module_loaded(&srv), "{kind:?}");
        assert!(srv.log().contains("key_evt_amqp: unloaded"), "{kind:?}");
        load(&srv, &refs).unwrap();
        srv.set_keys(&["b1"]);
        sink.expect_keys(&["b1"], T);
        wait_for("idle", T, || {
            srv.stat("queue_len") == 0 && srv.stat("inflight") == 0
        });
        wait_for("the module's own refusal", T, || {
            srv.cmd(&["MODULE", "UNLOAD", "key_evt_amqp"]).is_err()
                && srv.log().contains("MODULE UNLOAD refused")
        });
        let log = srv.log();
        assert!(
            log.contains("restart the server") && log.contains("SHUTDOWN"),
            "{kind:?}: {log}"
        );
        assert!(module_loaded(&srv), "{kind:?}");
        srv.set_keys(&["b2"]);
        let keys: Vec<String> = sink.expect_keys(&["b2"], T).iter().map(Msg::key).collect();
        assert_eq!(keys, ["b1", "b2"], "{kind:?}");
    }
}

#[test]
fn command_arity_and_bad_arguments_change_nothing() {
    let sink = Sink::new(amqp_port());
    let srv = start(Kind::Redis, &sink, &["^a"]);
    let before = srv.info();
    let cases: [(&[&str], &str); 8] = [
        (&["key_evt_amqp.config_set"], "wrong number"),
        (&["key_evt_amqp.config_set", "h", "0"], "port"),
        (
            &[
                "key_evt_amqp.connect",
                "h",
                "1",
                "u",
                "p",
                "1",
                "e",
                "r",
                "9",
            ],
            "delivery_mode",
        ),
        (&["key_evt_amqp.disconnect", "x"], "wrong number"),
        (&["key_evt_amqp.fallback_storage_size_set"], "wrong number"),
        (
            &["key_evt_amqp.fallback_storage_size_set", "ten"],
            "fallback_storage_size",
        ),
        (&["key_evt_amqp.keymask_add"], "wrong number"),
        (&["key_evt_amqp.keymask_clean", "x"], "wrong number"),
    ];
    for (args, word) in cases {
        let e = srv.cmd(args).expect_err(&format!("{args:?} must fail"));
        assert!(e.contains(word), "{args:?}: {e}");
    }
    assert!(srv.cmd(&["key_evt_amqp.keymask_set"]).is_err());
    let after = srv.info();
    for f in ["broker", "keymasks", "fallback_size", "connection"] {
        assert_eq!(before[f], after[f], "{f} changed");
    }
}

#[test]
fn config_set_applies_positional_arguments() {
    let sink = Sink::new(amqp_port());
    let srv = start(Kind::Redis, &sink, &["^a"]);
    srv.cmd(&["key_evt_amqp.config_set", "localhost"]).unwrap();
    assert_eq!(srv.field("broker"), format!("localhost:{}", sink.port));
    assert_eq!(srv.field("keymasks"), "^a", "masks not given are kept");
    let mut args = vec!["key_evt_amqp.config_set".to_string()];
    args.extend(sink.args(2));
    args.extend(["-1".to_string(), "^b".to_string(), "c$".to_string()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    srv.cmd(&refs).unwrap();
    assert_eq!(srv.field("broker"), format!("127.0.0.1:{}", sink.port));
    assert_eq!(srv.field("keymasks"), "^b c$");
    assert_eq!(srv.field("fallback_size"), "-1");
}

#[test]
fn keymask_commands() {
    let mut sink = Sink::new(amqp_port());
    let srv = start(Kind::Redis, &sink, &["^a"]);
    srv.cmd(&["key_evt_amqp.keymask_add", "^b", "^c"]).unwrap();
    assert_eq!(srv.field("keymasks"), "^a ^b ^c");
    srv.cmd(&["key_evt_amqp.keymask_set", "^d"]).unwrap();
    assert_eq!(srv.field("keymasks"), "^d");
    srv.set_keys(&["a1", "d1"]);
    srv.cmd(&["key_evt_amqp.keymask_clean"]).unwrap();
    assert_eq!(srv.field("keymasks"), "");
    srv.set_keys(&["d2"]);
    srv.cmd(&["key_evt_amqp.keymask_add", "ALL", "^x"]).unwrap();
    assert_eq!(srv.field("keymasks"), "ALL");
    srv.set_keys(&["z1"]);
    let keys: Vec<String> = sink.expect_at_least(2, T).iter().map(|m| m.key()).collect();
    assert_eq!(keys, ["d1", "z1"]);
}

#[test]
fn disconnect_stores_then_connect_delivers_everything_in_order() {
    for kind in Kind::ALL {
        let mut sink = Sink::new(amqp_port());
        let srv = start(kind, &sink, &["ALL"]);
        srv.set_keys(&["k0"]);
        sink.expect_at_least(1, T);
        srv.cmd(&["key_evt_amqp.disconnect"]).unwrap();
        wait_for("disconnected", T, || {
            srv.field("connection") == "disconnected"
        });
        let keys: Vec<String> = (1..500).map(|i| format!("k{i}")).collect();
        srv.set_keys(&keys);
        wait_for("events stored", T, || srv.stat("fallback_len") == 499);
        assert_eq!(
            srv.field("connection"),
            "disconnected",
            "stays closed until connect"
        );
        srv.cmd(&["key_evt_amqp.connect"]).unwrap();
        srv.set_keys(&["k500"]);
        let msgs = sink.expect_at_least(501, T).to_vec();
        assert_eq!(check_sequence(&msgs, "k", 501), 0);
        wait_for("backlog drained", T, || srv.stat("fallback_len") == 0);
    }
}

#[test]
fn connect_with_arguments_switches_the_target() {
    let mut first = Sink::new(amqp_port());
    let mut second = Sink::new(amqp_port());
    let srv = start(Kind::Redis, &first, &["ALL"]);
    srv.set_keys(&["one"]);
    first.expect_at_least(1, T);
    // Nothing in flight to the first target when the module switches.
    wait_for("one confirmed", T, || srv.stat("events_confirmed") == 1);
    let mut args = vec!["key_evt_amqp.connect".to_string()];
    args.extend(second.args(1));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    srv.cmd(&refs).unwrap();
    srv.set_keys(&["two"]);
    let keys: Vec<String> = second
        .expect_at_least(1, T)
        .iter()
        .map(|m| m.key())
        .collect();
    assert_eq!(keys, ["two"]);
    second.expect_nothing_before(&srv, "sentinel", T);
    first.expect_nothing_more(&srv, T);
}

#[test]
fn fallback_storage_size_set_reports_in_info() {
    let sink = Sink::new(amqp_port());
    let srv = start(Kind::Redis, &sink, &["ALL"]);
    for v in ["0", "-1", "100"] {
        srv.cmd(&["key_evt_amqp.fallback_storage_size_set", v])
            .unwrap();
        assert_eq!(srv.field("fallback_size"), v);
    }
}
