//! Every setting is a module config: `CONFIG GET` shows it (never the
//! password), `CONFIG SET` changes it with the same checks as the commands,
//! `CONFIG REWRITE` persists it, and `MODULE LOADEX ... CONFIG` keeps the
//! password out of `MODULE LIST`.

mod common;

use common::amqp::Sink;
use common::args::ModuleArgs;
use common::server::{module_path, Kind, Server};
use common::{amqp_port, fault_broker, fault_lock, rabbitmqctl};
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
        b.expect_quiet(Duration::from_millis(300));
        a.expect_quiet(Duration::from_millis(100));
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
    let user = format!("kea-cfg-{}", std::process::id());
    let user = user.as_str();
    let _g = fault_lock();
    let (port, node) = fault_broker();
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
    let _g = fault_lock();
    let (port, node) = fault_broker();
    let vhost = format!("kea-vh-{}", std::process::id());
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
