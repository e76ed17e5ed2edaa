//! Every event-type letter subscribes to exactly its class.

mod common;

use common::amqp::Sink;
use common::args::ModuleArgs;
use common::server::{Kind, Server};
use common::{amqp_port, wait_for};
use std::collections::BTreeSet;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// Runs commands that raise events of every class, eviction last.
fn provoke(srv: &Server) {
    let mut c = srv.conn();
    for cmd in [
        vec!["SET", "s", "1"],
        vec!["EXPIRE", "s", "100"],
        vec!["DEL", "s"],
        vec!["LPUSH", "l", "a"],
        vec!["SADD", "st", "a"],
        vec!["HSET", "h", "f", "v"],
        vec!["ZADD", "z", "1", "a"],
        vec!["XADD", "x", "*", "f", "v"],
        vec!["GET", "missing"],
        vec!["SET", "px", "1", "PX", "1"],
    ] {
        let mut r = redis::cmd(cmd[0]);
        for a in &cmd[1..] {
            r.arg(*a);
        }
        r.query::<redis::Value>(&mut c).expect("command");
    }
    std::thread::sleep(Duration::from_millis(20));
    // Touching the key expires it now.
    redis::cmd("EXISTS")
        .arg("px")
        .query::<i64>(&mut c)
        .expect("EXISTS");
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-random")
        .query::<()>(&mut c)
        .expect("policy");
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .query::<()>(&mut c)
        .expect("maxmemory");
    let _ = redis::cmd("SET")
        .arg("evict-trigger")
        .arg("1")
        .query::<redis::Value>(&mut c);
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query::<()>(&mut c)
        .expect("maxmemory 0");
}

fn events_for(kind: Kind, types: &str) -> BTreeSet<String> {
    let mut sink = Sink::new(amqp_port());
    let srv = Server::start(kind, &ModuleArgs::new(&sink).types(types).build(), &[]);
    provoke(&srv);
    wait_for("all confirmed", T, || {
        let i = srv.info();
        i["queue_len"] == "0"
            && i["inflight"] == "0"
            && i["events_confirmed"] == i["events_accepted"]
    });
    let n = srv.stat("events_accepted") as usize;
    sink.expect_at_least(n, T);
    sink.received.iter().map(|m| m.parts().1).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn each_letter_selects_its_class() {
    for kind in Kind::ALL {
        assert_eq!(events_for(kind, "$"), set(&["set"]), "{kind:?}");
        assert_eq!(events_for(kind, "g"), set(&["expire", "del"]), "{kind:?}");
        assert_eq!(events_for(kind, "l"), set(&["lpush"]));
        assert_eq!(events_for(kind, "s"), set(&["sadd"]));
        assert_eq!(events_for(kind, "h"), set(&["hset"]));
        assert_eq!(events_for(kind, "z"), set(&["zadd"]));
        assert_eq!(events_for(kind, "t"), set(&["xadd"]));
        assert_eq!(events_for(kind, "x"), set(&["expired"]));
        assert_eq!(events_for(kind, "e"), set(&["evicted"]));
        assert_eq!(events_for(kind, "m"), set(&["keymiss"]));
        assert_eq!(events_for(kind, "n"), set(&["new"]));
    }
}

#[test]
fn a_is_every_class_but_t_n_m() {
    let all = set(&[
        "set", "expire", "del", "lpush", "sadd", "hset", "zadd", "expired", "evicted",
    ]);
    for kind in Kind::ALL {
        assert_eq!(events_for(kind, "A"), all, "{kind:?}");
        assert_eq!(events_for(kind, "xe"), set(&["expired", "evicted"]));
    }
}
