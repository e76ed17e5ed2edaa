//! Every setting is a module config: `CONFIG GET` shows it (never the
//! password), `CONFIG SET` changes it with the same checks as the commands,
//! `CONFIG REWRITE` persists it, and `MODULE LOADEX ... CONFIG` keeps the
//! password out of `MODULE LIST`.

mod common;

use common::amqp::Sink;
use common::args::ModuleArgs;
use common::proxy::Proxy;
use common::server::{module_path, Kind, Server};
use common::{amqp_port, main_broker, rabbitmqctl, unique, wait_for};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn config_get(srv: &Server, pattern: &str) -> Vec<(String, String)> {
    let flat: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(pattern)
        .query(&mut srv.conn())
        .expect("CONFIG GET");
    flat.chunks(2)
        .map(|p| (p[0].clone(), p.get(1).cloned().unwrap_or_default()))
        .collect()
}

#[test]
fn settings_are_configs_and_survive_config_rewrite() {
    for kind in Kind::ALL {
        let mut a = Sink::new(amqp_port());
        let mut b = Sink::new(amqp_port());
        let mut srv = Server::start_with_file(kind, &ModuleArgs::new(&a).build(), &[]);
        let all = config_get(&srv, "key_evt_amqp.*");
        let names: Vec<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
        for n in [
            "host",
            "port",
            "vhost",
            "user",
            "heartbeat",
            "exchange",
            "routing-key",
        ] {
            assert!(
                names.contains(&format!("key_evt_amqp.{n}").as_str()),
                "{kind:?}: {n}"
            );
        }
        assert!(
            !names.contains(&"key_evt_amqp.password"),
            "{kind:?}: CONFIG GET * shows the password config"
        );
        // Point the node at sink b, with a mask, and persist it.
        for (k, v) in [
            ("key_evt_amqp.exchange", b.exchange.as_str()),
            ("key_evt_amqp.routing-key", b.routing_key.as_str()),
            ("key_evt_amqp.keymasks", "^b"),
        ] {
            srv.cmd(&["CONFIG", "SET", k, v]).unwrap();
        }
        srv.cmd(&["CONFIG", "REWRITE"]).unwrap();
        assert!(srv.conf_text().contains(&b.exchange), "{kind:?}");
        srv.kill();
        srv.restart();
        assert_eq!(
            config_get(&srv, "key_evt_amqp.exchange")[0].1,
            b.exchange,
            "{kind:?}: the rewritten value is in force after a restart"
        );
        srv.set_keys(&["a1", "b1"]);
        let got = b.expect_at_least(1, T).to_vec();
        assert_eq!(got[0].key(), "b1", "{kind:?}");
        b.expect_nothing_before(&srv, "b-sentinel", T);
        a.expect_nothing_more(&srv, T);
        assert!(
            a.received.is_empty(),
            "{kind:?}: the old exchange got events"
        );
    }
}

#[test]
fn bad_config_values_are_refused_and_change_nothing() {
    let sink = Sink::new(amqp_port());
    let srv = Server::start(Kind::Redis, &ModuleArgs::new(&sink).build(), &[]);
    let before = srv.info();
    let long_mask = "k".repeat(1025);
    for (k, v) in [
        ("key_evt_amqp.port", "0"),
        ("key_evt_amqp.port", "70000"),
        ("key_evt_amqp.delivery-mode", "3"),
        ("key_evt_amqp.host", ""),
        ("key_evt_amqp.keymasks", long_mask.as_str()),
    ] {
        let e = srv.cmd(&["CONFIG", "SET", k, v]);
        assert!(e.is_err(), "{k} {v:.20} must be refused");
    }
    // A CONFIG SET refused on its last pair leaves nothing staged for the next one.
    let e = srv.cmd(&[
        "CONFIG",
        "SET",
        "key_evt_amqp.host",
        "evil.example",
        "key_evt_amqp.port",
        "0",
    ]);
    assert!(e.is_err(), "port 0 must be refused");
    srv.cmd(&["CONFIG", "SET", "key_evt_amqp.heartbeat", "7"])
        .unwrap();
    assert_eq!(config_get(&srv, "key_evt_amqp.heartbeat")[0].1, "7");
    let after = srv.info();
    for f in ["broker", "keymasks"] {
        assert_eq!(before[f], after[f], "{f} changed by a refused CONFIG SET");
    }
    // The commands and the configs are one setting.
    srv.cmd(&["key_evt_amqp.keymask_set", "^x", "^y"]).unwrap();
    assert_eq!(config_get(&srv, "key_evt_amqp.keymasks")[0].1, "^x ^y");
    srv.cmd(&["CONFIG", "SET", "key_evt_amqp.fallback-size", "77"])
        .unwrap();
    assert_eq!(srv.field("fallback_size"), "77");
}

#[test]
fn module_loadex_keeps_the_password_out_of_module_list() {
    const SECRET: &str = "Pw-only-in-config";
    let user = unique("kea-cfg");
    let user = user.as_str();
    let (port, node) = main_broker();
    // A broker user whose password only the config carries.
    rabbitmqctl(&node, &["add_user", user, SECRET]);
    rabbitmqctl(&node, &["set_permissions", user, ".*", ".*", ".*"]);
    let mut sink = Sink::new(port);
    let srv = Server::start_bare(Kind::Redis);
    let port = port.to_string();
    let mut cmd = redis::cmd("MODULE");
    cmd.arg("LOADEX")
        .arg(module_path())
        .arg("CONFIG")
        .arg("key_evt_amqp.password")
        .arg(SECRET)
        .arg("CONFIG")
        .arg("key_evt_amqp.exchange")
        .arg(&sink.exchange)
        .arg("CONFIG")
        .arg("key_evt_amqp.routing-key")
        .arg(&sink.routing_key)
        .arg("CONFIG")
        .arg("key_evt_amqp.keymasks")
        .arg("ALL")
        .arg("ARGS")
        .arg("$")
        .arg("127.0.0.1")
        .arg(&port)
        .arg(user);
    let _: () = cmd.query(&mut srv.conn()).expect("MODULE LOADEX");
    let list: redis::Value = redis::cmd("MODULE")
        .arg("LIST")
        .query(&mut srv.conn())
        .unwrap();
    assert!(
        !format!("{list:?}").contains(SECRET),
        "MODULE LIST: {list:?}"
    );
    let all = config_get(&srv, "*");
    assert!(
        all.iter().all(|(_, v)| !v.contains(SECRET)),
        "CONFIG GET * shows it"
    );
    srv.set_keys(&["k1"]);
    sink.expect_at_least(1, T);
    assert!(!srv.log().contains(SECRET), "the log shows the password");
    rabbitmqctl(&node, &["delete_user", user]);
}

#[test]
fn events_flow_into_a_vhost() {
    let (port, node) = main_broker();
    let vhost = unique("kea-vh");
    rabbitmqctl(&node, &["add_vhost", &vhost]);
    rabbitmqctl(
        &node,
        &["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"],
    );
    let mut sink = Sink::in_vhost(port, &vhost);
    let srv = Server::start(
        Kind::Redis,
        &ModuleArgs::new(&sink).build(),
        &[("key_evt_amqp.vhost", vhost.as_str())],
    );
    srv.set_keys(&["k0", "k1"]);
    sink.expect_sequence("k", 2, T);
    // Back to `/` at run time: the module reconnects there.
    let mut root = Sink::new(port);
    for (k, v) in [
        ("key_evt_amqp.vhost", "/"),
        ("key_evt_amqp.exchange", root.exchange.as_str()),
        ("key_evt_amqp.routing-key", root.routing_key.as_str()),
    ] {
        srv.cmd(&["CONFIG", "SET", k, v]).unwrap();
    }
    srv.set_keys(&["r0"]);
    assert_eq!(root.expect_at_least(1, T)[0].key(), "r0");
    drop(sink);
    rabbitmqctl(&node, &["delete_vhost", &vhost]);
}

fn used_memory(srv: &Server) -> i64 {
    let text: String = redis::cmd("INFO")
        .arg("memory")
        .query(&mut srv.conn())
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory")
}

/// `CONFIG GET` hands the server strings the module owns: 200 scrapes of
/// every config with 10,000 masks leave `used_memory` where it was.
#[test]
fn config_get_allocates_nothing_that_stays() {
    for kind in Kind::ALL {
        let sink = Sink::new(amqp_port());
        let srv = Server::start(kind, &ModuleArgs::new(&sink).build(), &[]);
        let mut set = redis::cmd("key_evt_amqp.keymask_set");
        for i in 0..10_000 {
            set.arg(format!("^mask:{i:05}:"));
        }
        let _: () = set.query(&mut srv.conn()).unwrap();
        let mut c = srv.conn();
        let mut scrape = || {
            let v: Vec<Vec<u8>> = redis::cmd("CONFIG")
                .arg("GET")
                .arg("key_evt_amqp.*")
                .query(&mut c)
                .unwrap();
            assert!(v.len() > 20, "{kind:?}");
        };
        scrape();
        let before = used_memory(&srv);
        for _ in 0..200 {
            scrape();
        }
        let grown = used_memory(&srv) - before;
        assert!(
            grown < 1 << 20,
            "{kind:?}: 200 x CONFIG GET grew used_memory by {grown} bytes"
        );
    }
}

fn slowlog(srv: &Server) -> String {
    let v: redis::Value = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(1000)
        .query(&mut srv.conn())
        .unwrap();
    format!("{v:?}")
}

/// `CONFIG SET key_evt_amqp.password` alone and among other pairs: the new
/// password is in force (the module connects as a broker user that has
/// only it), and SLOWLOG never shows it.
#[test]
fn a_password_set_by_config_set_stays_out_of_slowlog() {
    let (port, node) = main_broker();
    let user = unique("kea-pw");
    let (pw1, pw2) = ("Pw1-only-here", "Pw2-only-here");
    rabbitmqctl(&node, &["add_user", &user, pw1]);
    rabbitmqctl(&node, &["set_permissions", &user, ".*", ".*", ".*"]);
    for kind in Kind::ALL {
        let mut sink = Sink::new(port);
        let mut args = ModuleArgs::new(&sink).password("wrong");
        args.user = user.clone();
        let srv = Server::start(
            kind,
            &args.build(),
            &[
                ("slowlog-log-slower-than", "0"),
                ("slowlog-max-len", "1000"),
                ("key_evt_amqp.reconnect-max-ms", "200"),
            ],
        );
        srv.cmd(&["CONFIG", "SET", "key_evt_amqp.password", pw1])
            .unwrap();
        srv.set_keys(&["k1"]);
        assert_eq!(sink.expect_at_least(1, T)[0].key(), "k1", "{kind:?}");
        // Several pairs, the password among them, in another case.
        rabbitmqctl(&node, &["change_password", &user, pw2]);
        srv.cmd(&[
            "config",
            "set",
            "key_evt_amqp.heartbeat",
            "6",
            "KEY_EVT_AMQP.PASSWORD",
            pw2,
            "key_evt_amqp.delivery-mode",
            "1",
        ])
        .unwrap();
        assert_eq!(
            config_get(&srv, "key_evt_amqp.password")[0].1,
            pw2,
            "{kind:?}"
        );
        // Whatever connection is open now, the next one must use pw2.
        rabbitmqctl(&node, &["close_all_user_connections", &user, "test"]);
        srv.set_keys(&["k2"]);
        sink.expect_at_least(2, T);
        let log = slowlog(&srv);
        assert!(log.contains("heartbeat"), "{kind:?}: {log}");
        assert!(
            !log.contains("Pw1") && !log.contains("Pw2"),
            "{kind:?}: SLOWLOG shows the password: {log}"
        );
        rabbitmqctl(&node, &["change_password", &user, pw1]);
    }
    rabbitmqctl(&node, &["delete_user", &user]);
}

/// Masks with spaces, quotes, backslashes, binary bytes and an empty mask
/// survive `CONFIG GET`, `CONFIG SET`, `CONFIG REWRITE` and a restart.
#[test]
fn every_mask_set_round_trips_through_the_keymasks_config() {
    let masks: [&[u8]; 8] = [
        b"^user:",
        b"a b",
        b"",
        b"q\"x",
        b"back\\slash",
        b"\x00\xff\n\t",
        b"it's",
        b"\"",
    ];
    for kind in Kind::ALL {
        let sink = Sink::new(amqp_port());
        let mut srv = Server::start_with_file(kind, &ModuleArgs::new(&sink).build(), &[]);
        let get = |srv: &Server| -> Vec<u8> {
            let v: Vec<Vec<u8>> = redis::cmd("CONFIG")
                .arg("GET")
                .arg("key_evt_amqp.keymasks")
                .query(&mut srv.conn())
                .unwrap();
            v[1].clone()
        };
        let mut set = redis::cmd("key_evt_amqp.keymask_set");
        for m in masks {
            set.arg(m);
        }
        let _: () = set.query(&mut srv.conn()).unwrap();
        let text = get(&srv);
        assert_eq!(srv.field("keymask_count"), "8", "{kind:?}");
        // Set back as read: the same set.
        let _: () = redis::cmd("key_evt_amqp.keymask_clean")
            .query(&mut srv.conn())
            .unwrap();
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("key_evt_amqp.keymasks")
            .arg(&text)
            .query(&mut srv.conn())
            .unwrap();
        assert_eq!(get(&srv), text, "{kind:?}");
        assert_eq!(srv.field("keymask_count"), "8", "{kind:?}");
        srv.cmd(&["CONFIG", "REWRITE"]).unwrap();
        srv.kill();
        srv.restart();
        assert_eq!(
            get(&srv),
            text,
            "{kind:?}: {}",
            String::from_utf8_lossy(&text)
        );
        assert_eq!(srv.field("keymask_count"), "8", "{kind:?}");
        // Plain masks keep their plain form.
        srv.cmd(&["key_evt_amqp.keymask_set", "^user:", "^session:"])
            .unwrap();
        assert_eq!(get(&srv), b"^user: ^session:", "{kind:?}");
    }
}

/// A `fallback-key` that is empty, holds a NUL, `{` or `}`, or is too long
/// is refused at `MODULE LOADEX`, with a log line that names it; the server
/// goes on, and a good value loads.
#[test]
fn a_bad_fallback_key_is_refused_at_load() {
    let long = vec![b'k'; 513];
    for kind in Kind::ALL {
        let srv = Server::start_bare(kind);
        for bad in [&b"a{b"[..], b"}", b"", b"a\0b", &long] {
            let r: redis::RedisResult<()> = redis::cmd("MODULE")
                .arg("LOADEX")
                .arg(module_path())
                .arg("CONFIG")
                .arg("key_evt_amqp.fallback-key")
                .arg(bad)
                .arg("ARGS")
                .arg("xe")
                .query(&mut srv.conn());
            assert!(
                r.is_err(),
                "{kind:?}: {:?} loaded",
                String::from_utf8_lossy(bad)
            );
            let pong: String = redis::cmd("PING").query(&mut srv.conn()).unwrap();
            assert_eq!(pong, "PONG", "{kind:?}");
        }
        assert!(
            srv.log().contains("invalid fallback-key 'a{b'"),
            "{kind:?}: {}",
            srv.log()
        );
        let _: () = redis::cmd("MODULE")
            .arg("LOADEX")
            .arg(module_path())
            .arg("CONFIG")
            .arg("key_evt_amqp.fallback-key")
            .arg("good:key")
            .arg("ARGS")
            .arg("xe")
            .query(&mut srv.conn())
            .unwrap();
        assert_eq!(srv.field("fallback_key"), "good:key", "{kind:?}");
    }
}

/// A multi-config `CONFIG SET` is applied once, after all its pairs: one
/// refused on its last pair changes nothing and makes no connection; one
/// that moves host and port connects once, to the new place.
#[test]
fn a_multi_config_set_reconnects_at_most_once() {
    let mut sink = Sink::new(amqp_port());
    let (a, b) = (Proxy::new(amqp_port()), Proxy::new(amqp_port()));
    let srv = Server::start(
        Kind::Redis,
        &ModuleArgs::new(&sink).port(a.port).build(),
        &[],
    );
    srv.set_keys(&["k0"]);
    sink.expect_at_least(1, T);
    assert_eq!(a.accepted(), 1);
    let bp = b.port.to_string();
    let refused = srv.cmd(&[
        "CONFIG",
        "SET",
        "key_evt_amqp.host",
        "localhost",
        "key_evt_amqp.port",
        &bp,
        "key_evt_amqp.delivery-mode",
        "3",
    ]);
    assert!(refused.is_err());
    // k1 is the sentinel: the module applies new broker settings in the
    // tick before it sends what came after them, so a connection the
    // refused CONFIG SET made would have carried k1 and been counted.
    srv.set_keys(&["k1"]);
    sink.expect_at_least(2, T);
    assert_eq!(
        (a.accepted(), b.accepted()),
        (1, 0),
        "a refused CONFIG SET connected"
    );
    assert_eq!(config_get(&srv, "key_evt_amqp.host")[0].1, "127.0.0.1");
    assert_eq!(srv.field("broker"), format!("127.0.0.1:{}", a.port));
    srv.cmd(&[
        "CONFIG",
        "SET",
        "key_evt_amqp.host",
        "localhost",
        "key_evt_amqp.port",
        &bp,
    ])
    .unwrap();
    wait_for("connected through proxy b", T, || b.accepted() == 1);
    // k2, sent after the settings changed, is the sentinel for the
    // connections they caused.
    srv.set_keys(&["k2"]);
    sink.expect_at_least(3, T);
    assert_eq!((a.accepted(), b.accepted()), (1, 1), "connections made");
}
