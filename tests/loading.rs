//! Loads keep the server up and the stream right: `DEBUG RELOAD` with and
//! without `MERGE`, `DEBUG LOADAOF`, a replica's full sync (with `values
//! both` and `durability outbox` on Redis 8.2 and Valkey 9.1, where the key
//! event once crashed `DEBUG RELOAD ... MERGE`), and diskless asynchronous
//! loading (`repl-diskless-load swapdb`, which the server uses only when
//! every module declares it can follow it), then a promotion.

mod common;

use common::amqp::Sink;
use common::args::ModuleArgs;
use common::cluster::text;
use common::conn::assert_alive;
use common::msg::check_sequence;
use common::server::{Kind, Server};
use common::topology::Topology;
use common::{amqp_port, wait_for, wait_showing};
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

fn json_body(sink: &Sink, key: &str) -> Vec<String> {
    sink.received
        .iter()
        .filter(|m| m.headers.get("key").map(String::as_str) == Some(key))
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

/// Every reload (`DEBUG RELOAD`, its `NOSAVE NOFLUSH MERGE` form over keys
/// that exist, `DEBUG LOADAOF`) with before-images and the outbox on: the
/// server stays up, the key event is listened to again afterwards, and no
/// reload is forwarded as a flush.
#[test]
fn reloads_keep_the_server_up_and_send_no_flush() {
    for kind in [Kind::Redis8, Kind::Valkey] {
        let mut sink = Sink::new(amqp_port());
        let args = ModuleArgs::new(&sink).types("A").build();
        let srv = Server::start(
            kind,
            &args,
            &[
                ("enable-debug-command", "yes"),
                ("appendonly", "yes"),
                ("key_evt_amqp.format", "json"),
                ("key_evt_amqp.values", "both"),
                ("key_evt_amqp.durability", "outbox"),
            ],
        );
        assert_eq!(srv.field("key_event"), "yes", "{kind:?}");
        let keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
        srv.set_keys(&keys);
        srv.cmd(&["HSET", "h", "f", "v"]).unwrap();
        sink.expect_keys(&keys, T);
        srv.cmd(&["SAVE"]).unwrap();
        for reload in [
            &["DEBUG", "RELOAD"][..],
            // Replaces the 50 keys that exist by those of the RDB.
            &["DEBUG", "RELOAD", "NOSAVE", "NOFLUSH", "MERGE"],
            &["DEBUG", "RELOAD", "NOSAVE", "NOFLUSH", "MERGE"],
            &["DEBUG", "LOADAOF"],
        ] {
            srv.cmd(reload)
                .unwrap_or_else(|e| panic!("{kind:?} {reload:?}: {e}"));
            assert_alive(&srv, &format!("{kind:?} after {reload:?}"));
            assert_eq!(srv.field("key_event"), "yes", "{kind:?} {reload:?}");
        }
        // Before-images work again after the loads.
        srv.cmd(&["DEL", "k7"]).unwrap();
        srv.cmd(&["SET", "after-reloads", "x"]).unwrap();
        sink.expect_keys(&["after-reloads"], T);
        let del = json_body(&sink, "k7");
        assert!(
            del.iter()
                .any(|b| b.contains("\"event\":\"del\"") && b.contains("\"before\":")),
            "{kind:?}: {del:?}"
        );
        let flushes: Vec<_> = sink
            .received
            .iter()
            .filter(|m| {
                let b = String::from_utf8_lossy(&m.body);
                b.contains("\"event\":\"flushall\"") || b.contains("\"event\":\"flushdb\"")
            })
            .collect();
        assert!(
            flushes.is_empty(),
            "{kind:?}: a reload was forwarded as a flush"
        );
        assert_eq!(srv.stat("events_lost"), 0, "{kind:?}");
        assert!(!srv.log().contains("Guru Meditation"), "{kind:?}");
    }
}

/// A real flush is forwarded, and `DEBUG RELOAD` right after it is not.
#[test]
fn a_flush_is_forwarded_once_before_a_reload() {
    let mut sink = Sink::new(amqp_port());
    let args = ModuleArgs::new(&sink).types("g$").build();
    let srv = Server::start(Kind::Redis, &args, &[("enable-debug-command", "yes")]);
    srv.cmd(&["SET", "a", "1"]).unwrap();
    srv.cmd(&["FLUSHALL"]).unwrap();
    srv.cmd(&["SET", "b", "1"]).unwrap();
    srv.cmd(&["DEBUG", "RELOAD"]).unwrap();
    srv.cmd(&["SET", "c", "1"]).unwrap();
    sink.expect_keys(&["c"], T);
    let events: Vec<String> = sink.received.iter().map(|m| m.parts().1).collect();
    assert_eq!(events, ["set", "flushall", "set", "set"], "{events:?}");
}

/// A replica's full sync, and a second one forced by an overflowed
/// backlog, with before-images and the outbox on: both servers stay up.
#[test]
fn full_syncs_keep_master_and_replica_up() {
    for kind in [Kind::Redis8, Kind::Valkey] {
        let sink = Sink::new(amqp_port());
        let args = ModuleArgs::new(&sink).types("A").build();
        let (master, replica) = Topology::replicated(
            kind,
            &args,
            &[
                ("key_evt_amqp.format", "json"),
                ("key_evt_amqp.values", "both"),
                ("key_evt_amqp.durability", "outbox"),
            ],
        );
        force_full_sync(&master, &replica);
        for (srv, what) in [(&master, "master"), (&replica, "replica")] {
            assert_alive(srv, &format!("{kind:?} {what}"));
            assert!(!srv.log().contains("Guru Meditation"), "{kind:?} {what}");
        }
    }
}

fn link_up(replica: &Server) -> bool {
    text(replica, &["INFO", "replication"]).contains("master_link_status:up")
}

fn full_syncs(master: &Server) -> i64 {
    text(master, &["INFO", "stats"])
        .lines()
        .find_map(|l| l.strip_prefix("sync_full:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Makes the replica sync in full again, with the master's replication id
/// unchanged (so a `swapdb` replica loads asynchronously): the link is cut
/// and the backlog overflowed before the replica asks for a partial sync.
fn force_full_sync(master: &Server, replica: &Server) {
    let before = full_syncs(master);
    force_full_sync_async(master);
    wait_for("a second full sync", T, || {
        full_syncs(master) > before && link_up(replica)
    });
}

/// Diskless asynchronous loading with the module loaded: the replica
/// serves its old data while it loads (`async_loading:1`), forwards nothing,
/// and, once promoted, sends what the old master stored in its fallback
/// list: every event, duplicates within one in-flight window.
#[test]
fn async_loading_then_promotion_delivers_the_stored_events() {
    for kind in Kind::ALL {
        let mut sink = Sink::new(amqp_port());
        let args = ModuleArgs::new(&sink).build();
        let window = "100";
        let (master, replica) = Topology::replicated(
            kind,
            &args,
            &[
                ("repl-diskless-sync", "yes"),
                ("repl-diskless-sync-delay", "0"),
                ("repl-diskless-load", "swapdb"),
                // The replica answers (INFO) while it loads every 1 KiB read,
                // not every 2 MiB: it is seen in `async_loading`.
                ("loading-process-events-interval-bytes", "1024"),
                ("key_evt_amqp.inflight-max", window),
            ],
        );
        // The master's broker link is closed: its events go to its list,
        // which replicates.
        master.cmd(&["key_evt_amqp.disconnect"]).unwrap();
        let first: Vec<String> = (0..2000).map(|i| format!("e{i}")).collect();
        master.set_keys(&first);
        wait_for("the master stored its events", T, || {
            master.stat("fallback_len") == 2000
        });
        // A slow RDB (1 ms per key): the replica stays in async loading a while.
        master
            .cmd(&["CONFIG", "SET", "rdb-key-save-delay", "1000"])
            .unwrap();
        let before = full_syncs(&master);
        force_full_sync_async(&master);
        let mut seen_async = false;
        let mut n = 2000;
        wait_showing(
            "the full sync to end",
            T,
            || {
                // Writes go on during the sync.
                master.set_keys(&[format!("e{n}")]);
                n += 1;
                seen_async |= text(&replica, &["INFO", "persistence"]).contains("async_loading:1");
                full_syncs(&master) > before && link_up(&replica)
            },
            || text(&replica, &["INFO", "replication"]),
        );
        assert!(
            seen_async,
            "{kind:?}: the replica never loaded asynchronously"
        );
        assert!(
            !replica.log().contains("Skipping diskless-load"),
            "{kind:?}: {}",
            replica.log()
        );
        master
            .cmd(&["CONFIG", "SET", "rdb-key-save-delay", "0"])
            .unwrap();
        wait_for("every event stored", T, || {
            let i = master.info();
            i["queue_len"] == "0" && i["fallback_len"] == i["events_accepted"]
        });
        let stored = master.stat("fallback_len");
        redis::cmd("WAIT")
            .arg(1)
            .arg(10_000)
            .query::<i64>(&mut master.conn())
            .expect("WAIT");
        // The replica forwarded nothing while it loaded, nor before.
        assert_eq!(replica.stat("events_accepted"), 0, "{kind:?}");
        wait_for("the replica's copy of the list", T, || {
            replica.llen("key_evt_amqp:fallback") == stored
        });
        // Promotion: the new master sends the list; the old one follows it.
        replica.cmd(&["REPLICAOF", "NO", "ONE"]).unwrap();
        master
            .cmd(&["REPLICAOF", "127.0.0.1", &replica.port.to_string()])
            .unwrap();
        let msgs = sink.expect_sequence("e", n, T).to_vec();
        let dups = check_sequence(&msgs, "e", n);
        assert!(
            dups <= 100,
            "{kind:?}: {dups} duplicates, more than one window"
        );
        wait_for("the list drained", T, || replica.stat("fallback_len") == 0);
        for srv in [&master, &replica] {
            let info = srv.info();
            assert_eq!(info["events_dropped"], "0", "{kind:?} {info:?}");
            assert_eq!(info["events_lost"], "0", "{kind:?} {info:?}");
        }
    }
}

/// [`force_full_sync`] without waiting for it (10 keys `filler<i>` are written).
fn force_full_sync_async(master: &Server) {
    let mut c = master.conn();
    let mut p = redis::pipe();
    p.atomic()
        .cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("replica")
        .ignore()
        .cmd("CONFIG")
        .arg("SET")
        .arg("repl-backlog-size")
        .arg("16384")
        .ignore();
    for i in 0..10 {
        p.cmd("SET")
            .arg(format!("filler{i}"))
            .arg("A".repeat(16384))
            .ignore();
    }
    p.query::<()>(&mut c).expect("overflow the backlog");
}
