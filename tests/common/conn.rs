//! Connections and INFO as the hardening tests need them: as another user,
//! in another database, raw errors, and checks that the server is alive.

use super::amqp::Sink;
use super::server::Server;
use super::wait_for;
use redis::{Connection, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);

/// A server error as `CODE detail` (e.g. `NOPERM User limited has no permissions ...`).
pub fn err_text(e: &redis::RedisError) -> String {
    match e.code() {
        Some(code) => format!("{code} {}", e.detail().unwrap_or_default()),
        None => e.to_string(),
    }
}

/// Runs one command on `c`; the error as `CODE detail`.
pub fn run<A: redis::ToRedisArgs>(
    c: &mut Connection,
    name: &str,
    args: &[A],
) -> Result<Value, String> {
    let mut cmd = redis::cmd(name);
    for a in args {
        cmd.arg(a);
    }
    cmd.query::<Value>(c).map_err(|e| err_text(&e))
}

/// A connection that logs in with `AUTH [user] pass`.
pub fn conn_as(srv: &Server, user: &str, pass: &str) -> Connection {
    let url = format!("redis://{user}:{pass}@127.0.0.1:{}/", srv.port);
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("connect as '{user}': {e}"))
}

/// A connection on database `db`.
pub fn conn_db(srv: &Server, db: i64) -> Connection {
    let mut c = srv.conn();
    run(&mut c, "SELECT", &[db]).expect("SELECT");
    c
}

/// The raw text of `INFO key_evt_amqp`.
pub fn info_text(c: &mut Connection) -> String {
    redis::cmd("INFO")
        .arg("key_evt_amqp")
        .query(c)
        .expect("INFO key_evt_amqp")
}

/// `INFO key_evt_amqp` on a given connection (for servers with a password), without the prefix.
pub fn info_on(c: &mut Connection) -> HashMap<String, String> {
    info_text(c)
        .lines()
        .filter_map(|l| l.strip_prefix("key_evt_amqp_"))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn stat_on(c: &mut Connection, field: &str) -> i64 {
    info_on(c)
        .get(field)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no INFO field {field}"))
}

/// Flattens a reply into its strings (bulk, simple, numbers), for "does it contain X" checks.
pub fn flatten(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::BulkString(b) => out.push(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => out.push(s.clone()),
        Value::Int(i) => out.push(i.to_string()),
        Value::Array(items) | Value::Set(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(format!("{other:?}")),
    }
}

/// The process exists and is not a zombie (it did not crash).
pub fn process_alive(srv: &Server) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", srv.pid()))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The lines of a crash report that say what crashed.
pub fn crash_excerpt(log: &str) -> String {
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
pub fn assert_alive(srv: &Server, what: &str) {
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
pub fn wait_alive(srv: &Server, what: &str, mut f: impl FnMut() -> bool) {
    wait_for(what, T, || {
        assert_alive(srv, what);
        f()
    });
}

/// Waits for a message whose key is `key`; returns every key received so far.
pub fn wait_for_key(sink: &mut Sink, key: &str) -> Vec<String> {
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
