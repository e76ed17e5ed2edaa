//! Applies hand-written records to a real redis-server and checks the
//! result with plain commands.

mod common;

use common::{body, now_ms, run, Server};
use replicate::{apply, Applied, Error, Kind, Omitted, Record};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

fn apply_body(c: &mut redis::Connection, b: &[u8]) -> Applied {
    let rec = Record::parse(b).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(b)));
    apply(c, &rec).unwrap_or_else(|e| panic!("{e}"))
}

fn write(c: &mut redis::Connection, db: i64, key: &str, after: serde_json::Value) -> Applied {
    apply_body(c, &body(db, "set", json!(key), json!({ "after": after })))
}

fn exists(c: &mut redis::Connection, db: u8, key: &[u8]) -> bool {
    redis::cmd("SELECT").arg(db).exec(c).expect("select");
    redis::cmd("EXISTS")
        .arg(key)
        .query::<i64>(c)
        .expect("exists")
        == 1
}

#[test]
fn every_type_is_written() {
    let srv = Server::start();
    let mut c = srv.conn();
    let at = now_ms() + 60_000;
    assert_eq!(
        apply_body(
            &mut c,
            &body(
                5,
                "set",
                json!({"base64": "awr/"}),
                json!({"after": {"type":"string","value":{"base64":"AP8="},"pexpireat":at}}),
            ),
        ),
        Applied::Wrote(Kind::String)
    );
    write(
        &mut c,
        0,
        "h",
        json!({"type":"hash","value":[["f","v"],["g",{"base64":"/w=="}]]}),
    );
    write(
        &mut c,
        0,
        "l",
        json!({"type":"list","value":["c","a","b","a"]}),
    );
    write(&mut c, 0, "s", json!({"type":"set","value":["m","n"]}));
    write(
        &mut c,
        0,
        "z",
        json!({"type":"zset","value":[["a",1.5],["b","inf"],["c","-inf"],["d",0.1],["e",-2.5e300]]}),
    );

    let mut d5 = srv.conn_db(5);
    let v: Vec<u8> = redis::cmd("GET")
        .arg(b"k\n\xff")
        .query(&mut d5)
        .expect("get");
    assert_eq!(v, b"\x00\xff");
    let pttl: i64 = redis::cmd("PTTL")
        .arg(b"k\n\xff")
        .query(&mut d5)
        .expect("pttl");
    assert!(pttl > 0 && pttl <= 60_000, "{pttl}");
    let expire_at: i64 = redis::cmd("PEXPIRETIME")
        .arg(b"k\n\xff")
        .query(&mut d5)
        .expect("pexpiretime");
    assert_eq!(expire_at, at);

    let mut d0 = srv.conn();
    let h: BTreeMap<Vec<u8>, Vec<u8>> = run(&mut d0, &["HGETALL", "h"]);
    assert_eq!(
        h,
        BTreeMap::from([
            (b"f".to_vec(), b"v".to_vec()),
            (b"g".to_vec(), b"\xff".to_vec())
        ])
    );
    let l: Vec<String> = run(&mut d0, &["LRANGE", "l", "0", "-1"]);
    assert_eq!(l, ["c", "a", "b", "a"]);
    let s: BTreeSet<String> = run(&mut d0, &["SMEMBERS", "s"]);
    assert_eq!(s, BTreeSet::from(["m".to_owned(), "n".to_owned()]));
    for (m, want) in [
        ("a", 1.5),
        ("b", f64::INFINITY),
        ("c", f64::NEG_INFINITY),
        ("d", 0.1),
        ("e", -2.5e300),
    ] {
        let score: String = run(&mut d0, &["ZSCORE", "z", m]);
        assert_eq!(score.parse::<f64>().unwrap(), want, "{m}: {score}");
    }
    for k in ["h", "l", "s", "z"] {
        assert_eq!(run::<i64>(&mut d0, &["PTTL", k]), -1, "{k}");
    }
}

#[test]
fn a_write_replaces_the_type_and_the_ttl() {
    let srv = Server::start();
    let mut c = srv.conn();
    write(
        &mut c,
        0,
        "k",
        json!({"type":"list","value":["a"],"pexpireat": now_ms() + 60_000}),
    );
    let mut d0 = srv.conn();
    assert_eq!(run::<String>(&mut d0, &["TYPE", "k"]), "list");
    assert!(run::<i64>(&mut d0, &["PTTL", "k"]) > 0);
    // No pexpireat: the key has no TTL any more (PERSIST).
    write(&mut c, 0, "k", json!({"type":"string","value":"v"}));
    assert_eq!(run::<String>(&mut d0, &["TYPE", "k"]), "string");
    assert_eq!(run::<i64>(&mut d0, &["PTTL", "k"]), -1);
    // A list that lost elements is rewritten whole, not appended to.
    write(&mut c, 0, "l", json!({"type":"list","value":["a","b","c"]}));
    write(&mut c, 0, "l", json!({"type":"list","value":["b"]}));
    assert_eq!(
        run::<Vec<String>>(&mut d0, &["LRANGE", "l", "0", "-1"]),
        ["b"]
    );
    // A pexpireat in the past: the key is gone at once.
    write(
        &mut c,
        0,
        "k",
        json!({"type":"string","value":"v","pexpireat": now_ms() - 1000}),
    );
    assert!(!exists(&mut d0, 0, b"k"));
}

#[test]
fn delete_events_and_events_without_a_value() {
    let srv = Server::start();
    let mut c = srv.conn();
    let mut d2 = srv.conn_db(2);
    for event in [
        "del",
        "expired",
        "evicted",
        "rename_from",
        "move_from",
        "lpop",
    ] {
        run::<()>(&mut d2, &["SET", "k", "v"]);
        run::<()>(&mut d2, &["SET", "other", "v"]);
        // Even with an after-image, a delete event deletes; `lpop` has none.
        let extra = if event == "lpop" {
            json!({})
        } else {
            json!({"after":{"type":"string","value":"x"}})
        };
        assert_eq!(
            apply_body(&mut c, &body(2, event, json!("k"), extra)),
            Applied::Deleted,
            "{event}"
        );
        assert!(!exists(&mut d2, 2, b"k"), "{event}");
        assert!(exists(&mut d2, 2, b"other"), "{event}");
    }
    // Deleting a key that is not there is fine.
    assert_eq!(
        apply_body(&mut c, &body(2, "del", json!("nothing"), json!({}))),
        Applied::Deleted
    );
}

#[test]
fn an_omitted_value_leaves_the_key_alone() {
    let srv = Server::start();
    let mut c = srv.conn();
    let mut d0 = srv.conn();
    run::<()>(&mut d0, &["SET", "big", "old"]);
    run::<()>(&mut d0, &["XADD", "st", "*", "f", "v"]);
    assert_eq!(
        write(
            &mut c,
            0,
            "big",
            json!({"type":"string","omitted":"size","size":70000})
        ),
        Applied::Unapplied {
            kind: Kind::String,
            omitted: Omitted::Size(70_000)
        }
    );
    assert_eq!(run::<String>(&mut d0, &["GET", "big"]), "old");
    assert_eq!(
        apply_body(
            &mut c,
            &body(
                0,
                "xadd",
                json!("st"),
                json!({"after":{"type":"stream","omitted":"type"}})
            )
        ),
        Applied::Unapplied {
            kind: Kind::Stream,
            omitted: Omitted::Type
        }
    );
    assert_eq!(run::<i64>(&mut d0, &["XLEN", "st"]), 1);
}

#[test]
fn flushdb_flushall_and_swapdb() {
    let srv = Server::start();
    let mut c = srv.conn();
    for db in 0..3u8 {
        let mut d = srv.conn_db(db);
        run::<()>(&mut d, &["SET", &format!("k{db}"), "v"]);
    }
    assert_eq!(
        apply_body(&mut c, &body(1, "flushdb", json!(""), json!({}))),
        Applied::FlushedDb
    );
    assert!(!exists(&mut c, 1, b"k1"));
    assert!(exists(&mut c, 0, b"k0") && exists(&mut c, 2, b"k2"));
    assert_eq!(
        apply_body(&mut c, &body(0, "swapdb", json!("2"), json!({}))),
        Applied::Swapped
    );
    assert!(exists(&mut c, 0, b"k2") && exists(&mut c, 2, b"k0"));
    assert!(!exists(&mut c, 0, b"k0"));
    assert_eq!(
        apply_body(&mut c, &body(-1, "flushall", json!(""), json!({}))),
        Applied::FlushedAll
    );
    let mut d = srv.conn();
    assert_eq!(run::<i64>(&mut d, &["DBSIZE"]), 0);
    assert_eq!(run::<i64>(&mut srv.conn_db(2), &["DBSIZE"]), 0);
}

#[test]
fn a_snapshot_is_applied_between_its_markers() {
    let srv = Server::start();
    let mut c = srv.conn();
    assert_eq!(
        apply_body(&mut c, &body(0, "snapshot_begin", json!(""), json!({}))),
        Applied::Marker
    );
    assert_eq!(
        apply_body(
            &mut c,
            &body(
                3,
                "snapshot",
                json!("k"),
                json!({"after":{"type":"set","value":["a"]}})
            )
        ),
        Applied::Wrote(Kind::Set)
    );
    assert_eq!(
        apply_body(
            &mut c,
            &body(0, "snapshot_end", json!(""), json!({"keys": 1}))
        ),
        Applied::Marker
    );
    assert_eq!(
        run::<Vec<String>>(&mut srv.conn_db(3), &["SMEMBERS", "k"]),
        ["a"]
    );
    assert_eq!(run::<i64>(&mut srv.conn(), &["DBSIZE"]), 0);
}

#[test]
fn large_values_arrive_whole_and_in_order() {
    let srv = Server::start();
    let mut c = srv.conn();
    let n = 2500;
    let elems: Vec<String> = (0..n).map(|i| format!("e{i}")).collect();
    write(&mut c, 0, "l", json!({"type":"list","value":elems}));
    write(&mut c, 0, "s", json!({"type":"set","value":elems}));
    let pairs: Vec<_> = elems.iter().map(|e| json!([e, e])).collect();
    write(&mut c, 0, "h", json!({"type":"hash","value":pairs}));
    let scored: Vec<_> = (0..n)
        .map(|i| json!([format!("m{i}"), i as f64 / 3.0]))
        .collect();
    write(&mut c, 0, "z", json!({"type":"zset","value":scored}));
    let mut d = srv.conn();
    assert_eq!(
        run::<Vec<String>>(&mut d, &["LRANGE", "l", "0", "-1"]),
        elems
    );
    assert_eq!(run::<i64>(&mut d, &["SCARD", "s"]), n);
    assert_eq!(run::<i64>(&mut d, &["HLEN", "h"]), n);
    assert_eq!(run::<String>(&mut d, &["HGET", "h", "e2499"]), "e2499");
    assert_eq!(run::<i64>(&mut d, &["ZCARD", "z"]), n);
    let score: String = run(&mut d, &["ZSCORE", "z", "m2000"]);
    assert_eq!(score.parse::<f64>().unwrap(), 2000.0 / 3.0);
}

#[test]
fn bad_messages_are_errors_and_change_nothing() {
    let srv = Server::start();
    let mut c = srv.conn();
    let e = Record::parse(b"0\nset\nk").unwrap_err();
    assert!(matches!(e, Error::NotJson));
    assert!(e.to_string().contains("format json"), "{e}");
    let e = Record::parse(&body(
        16,
        "set",
        json!("k"),
        json!({"after":{"type":"string","value":"v"}}),
    ))
    .unwrap_err();
    assert!(matches!(e, Error::Db { db: 16, .. }), "{e}");
    // A target that refuses the write: the error comes back, and the
    // transaction changed nothing (the DEL before the SET did not run).
    let mut d = srv.conn();
    run::<()>(&mut d, &["SET", "k", "old"]);
    run::<()>(&mut d, &["CONFIG", "SET", "maxmemory", "1"]);
    let rec = Record::parse(&body(
        0,
        "set",
        json!("k"),
        json!({"after":{"type":"string","value":"new"}}),
    ))
    .expect("parse");
    let e = apply(&mut c, &rec).unwrap_err();
    assert!(matches!(e, Error::Redis(_)), "{e}");
    run::<()>(&mut d, &["CONFIG", "SET", "maxmemory", "0"]);
    assert_eq!(run::<String>(&mut d, &["GET", "k"]), "old");
    apply(&mut c, &rec).expect("apply once the target takes writes");
    assert_eq!(run::<String>(&mut d, &["GET", "k"]), "new");
}
