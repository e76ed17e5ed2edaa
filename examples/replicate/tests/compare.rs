//! Compares two real redis-servers: equal, then one difference of each
//! kind; the library call and the `compare` binary.

mod common;

use common::{run, Server};
use replicate::{compare, CompareOptions, Difference, KeyDiff};
use std::process::Command;

/// The same data set in every db given, written with plain commands.
fn populate(srv: &Server) {
    let mut c = srv.conn();
    for w in [
        &["SET", "s", "v"][..],
        &["HSET", "h", "f", "1", "g", "2"],
        &["RPUSH", "l", "a", "b", "a"],
        &["SADD", "set", "x", "y"],
        &["ZADD", "z", "1.5", "a", "inf", "b", "-inf", "c", "0.1", "d"],
        &["SET", "ttl", "v", "PX", "100000"],
        &["XADD", "st", "1-1", "f", "v"],
    ] {
        run::<redis::Value>(&mut c, w);
    }
    redis::cmd("SET")
        .arg(b"bin\xff")
        .arg(b"\x00\x01")
        .exec(&mut c)
        .expect("set");
    let mut d3 = srv.conn_db(3);
    run::<()>(&mut d3, &["RPUSH", "l3", "1", "2", "3"]);
}

fn report(sources: &[&Server], target: &Server) -> replicate::Report {
    let sources: Vec<_> = sources.iter().map(|s| s.client()).collect();
    compare(&sources, &target.client(), &CompareOptions::default()).expect("compare")
}

fn compare_binary(source: &str, target: &Server) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_compare"))
        .args(["--source", source, "--target", &target.url()])
        .output()
        .expect("run compare");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn equal_then_one_difference_of_each_kind() {
    let a = Server::start();
    let b = Server::start();
    populate(&a);
    populate(&b);
    // The module's fallback list lives in the source only: ignored.
    run::<()>(&mut a.conn(), &["RPUSH", "key_evt_amqp:fallback:1", "r"]);
    // TTLs within the slack are equal.
    run::<()>(&mut a.conn(), &["SET", "near", "v", "PX", "100000"]);
    run::<()>(&mut b.conn(), &["SET", "near", "v", "PX", "99000"]);

    let r = report(&[&a], &b);
    assert_eq!(r.diffs, [], "{:?}", r.diffs);
    assert_eq!(r.compared, 10);
    assert_eq!((r.ignored, r.type_only), (1, 1));
    assert_eq!(r.summary(), "compared 10 keys, 0 differ");
    let (status, text) = compare_binary(&a.url(), &b);
    assert_eq!(status, 0, "{text}");
    assert!(text.contains("compared 10 keys, 0 differ"), "{text}");
    assert!(
        text.contains("1 stream or module keys compared by type only"),
        "{text}"
    );

    let mut ca = a.conn();
    let mut cb = b.conn();
    // Type.
    run::<()>(&mut cb, &["DEL", "s"]);
    run::<()>(&mut cb, &["RPUSH", "s", "v"]);
    // Value: a hash field, a zset score, a list's order (in db 3).
    run::<()>(&mut cb, &["HSET", "h", "g", "3"]);
    run::<()>(&mut cb, &["ZADD", "z", "1.5000000000000002", "a"]);
    run::<()>(&mut b.conn_db(3), &["LMOVE", "l3", "l3", "LEFT", "RIGHT"]);
    // Missing on either side.
    run::<()>(&mut ca, &["SET", "only_a", "v"]);
    run::<()>(&mut cb, &["SADD", "only_b", "v"]);
    // TTL beyond the slack, and a TTL on one side only.
    run::<()>(&mut cb, &["PEXPIRE", "ttl", "50000"]);
    run::<()>(&mut cb, &["PERSIST", "near"]);

    let r = report(&[&a], &b);
    let s = |t: &str| t.to_owned();
    let want = [
        (0, &b"h"[..], Difference::Value(s("hash: 0 fields only in source, 0 only in target, 1 with other values (e.g. \"g\": \"2\" vs \"3\")"))),
        (
            0,
            b"near",
            Difference::Ttl {
                source: Some(0),
                target: None,
            },
        ),
        (
            0,
            b"only_a",
            Difference::MissingInTarget {
                source_type: s("string"),
            },
        ),
        (
            0,
            b"only_b",
            Difference::MissingInSource {
                target_type: s("set"),
            },
        ),
        (
            0,
            b"s",
            Difference::Type {
                source: s("string"),
                target: s("list"),
            },
        ),
        (
            0,
            b"ttl",
            Difference::Ttl {
                source: Some(0),
                target: Some(0),
            },
        ),
        (0, b"z", Difference::Value(s("zset: 0 members only in source, 0 only in target, 1 with other values (e.g. \"a\": 1.5 vs 1.5000000000000002)"))),
        (3, b"l3", Difference::Value(s("list: source 3 elements, target 3, first difference at 0"))),
    ];
    let got: Vec<(u8, &[u8], Difference)> = r
        .diffs
        .iter()
        .map(|d| {
            assert_eq!(d.differences.len(), 1, "{d}");
            (d.db, d.key.as_slice(), blur(&d.differences[0]))
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(r.summary(), "compared 12 keys, 8 differ");

    let (status, text) = compare_binary(&a.url(), &b);
    assert_eq!(status, 1, "{text}");
    assert!(text.contains("compared 12 keys, 8 differ"), "{text}");
    assert!(
        text.contains("db 0 key \"s\": type: source string, target list"),
        "{text}"
    );
    assert!(text.contains("db 3 key \"l3\": value: list"), "{text}");
    assert!(
        text.contains("db 0 key \"only_b\": not in source"),
        "{text}"
    );
}

/// A TTL difference with its figures zeroed (they move with the clock),
/// once checked to be beyond the slack when both sides have a TTL.
fn blur(d: &Difference) -> Difference {
    match d {
        Difference::Ttl { source, target } => {
            if let (Some(a), Some(b)) = (source, target) {
                // Beyond the slack, the way the test set them.
                assert!(a - b > 2000, "{a} vs {b}");
            }
            Difference::Ttl {
                source: source.map(|_| 0),
                target: target.map(|_| 0),
            }
        }
        other => other.clone(),
    }
}

#[test]
fn a_cluster_of_sources_is_compared_on_db_0() {
    // Two servers stand for a cluster's masters: each holds part of the keys.
    let m1 = Server::start();
    let m2 = Server::start();
    let t = Server::start();
    run::<()>(&mut m1.conn(), &["SET", "a", "1"]);
    run::<()>(&mut m2.conn(), &["SET", "b", "2"]);
    run::<()>(&mut t.conn(), &["SET", "a", "1"]);
    run::<()>(&mut t.conn(), &["SET", "b", "2"]);
    // Not looked at: a cluster has db 0 only.
    run::<()>(&mut t.conn_db(1), &["SET", "c", "3"]);
    let r = report(&[&m1, &m2], &t);
    assert_eq!(r.dbs, [0]);
    assert_eq!(r.summary(), "compared 2 keys, 0 differ");
    run::<()>(&mut t.conn(), &["SET", "b", "x"]);
    let r = report(&[&m1, &m2], &t);
    assert_eq!(
        r.diffs,
        [KeyDiff {
            db: 0,
            key: b"b".to_vec(),
            differences: vec![Difference::Value(
                "string: source 1 bytes, target 1, first difference at 0".into()
            )]
        }]
    );
    let (status, text) = compare_binary(&format!("{},{}", m1.url(), m2.url()), &t);
    assert_eq!(status, 1, "{text}");
    assert!(text.contains("dbs compared: [0]"), "{text}");
}
