//! Shared harness for the integration tests: real redis-server and
//! valkey-server processes on free ports with the built module, a real
//! RabbitMQ (started by `scripts/test`), per-test exchanges and queues, and a
//! TCP proxy that cuts or stalls connections.
#![allow(dead_code)]

pub mod amqp;
pub mod args;
pub mod cluster;
pub mod conn;
pub mod msg;
pub mod proxy;
pub mod rabbit_cluster;
pub mod scripted;
pub mod server;
pub mod tls;
pub mod topology;

use std::time::{Duration, Instant};

/// Waits until `f` is true, polling; panics with `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    wait_showing(what, timeout, f, String::new);
}

/// [`wait_for`], and on a timeout the panic also shows what `show` says of
/// the state then (per-node figures, say), so that a failure in CI can be
/// read without the servers.
pub fn wait_showing(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> bool,
    show: impl Fn() -> String,
) {
    let start = Instant::now();
    while !f() {
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}; {}", show());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A name unique to this process and call, for queues and exchanges.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A port where connections are refused, held for as long as the returned
/// socket lives: it is bound and never listens, so no other test can take
/// it and a connection cannot loop back to itself on it (as one to a port
/// that was free a moment ago can).
pub fn refused_port() -> (socket2::Socket, u16) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    socket.bind(&addr.into()).expect("bind");
    let port = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map(|a| a.port())
        .expect("bound port");
    (socket, port)
}

/// A free port `p` for a server, with `p + 10000` (its cluster bus port) free too.
pub fn free_server_port() -> u16 {
    loop {
        let p = free_port();
        let bus_free = p
            .checked_add(10_000)
            .is_some_and(|b| std::net::TcpListener::bind(("127.0.0.1", b)).is_ok());
        if bus_free {
            return p;
        }
    }
}

/// Port of the shared broker (`KEA_AMQP_PORT`).
pub fn amqp_port() -> u16 {
    std::env::var("KEA_AMQP_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5672)
}

/// Serialises the tests that stop, pause or alarm a broker.
pub fn fault_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The broker used by fault tests: its port and its node name for `scripts/rabbitmq ctl`.
pub fn fault_broker() -> (u16, String) {
    let port = std::env::var("KEA_FAULT_AMQP_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(amqp_port);
    let name = std::env::var("KEA_FAULT_NODE").unwrap_or_else(|_| "fault".into());
    (port, name)
}

/// The shared broker: its port and its node name for `scripts/rabbitmq ctl`
/// (`KEA_MAIN_NODE`, which `scripts/test` exports; otherwise the node of
/// `.deps/rabbitmq` that listens on the port). Tests that only add users,
/// vhosts or read connections use it, each with names of its own
/// ([`unique`]): it is never stopped, paused or alarmed.
pub fn main_broker() -> (u16, String) {
    let port = amqp_port();
    let name = std::env::var("KEA_MAIN_NODE").unwrap_or_else(|_| node_at(port));
    (port, name)
}

/// The `scripts/rabbitmq` name of the node listening on `port`.
fn node_at(port: u16) -> String {
    let names = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.deps/rabbitmq"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for name in names {
        let Ok(out) = try_rabbitmqctl(
            &name,
            &["eval", "application:get_env(rabbit, tcp_listeners)."],
        ) else {
            continue;
        };
        if out.contains(&port.to_string()) {
            return name;
        }
    }
    panic!("no node of .deps/rabbitmq listens on {port}");
}

/// Runs `scripts/rabbitmq ctl NODE args...`: its stdout, or its stderr
/// (or why it could not run) when it fails. Bounded by the script's limit
/// (`KEA_CTL_TIMEOUT`, 180 s unless the environment says otherwise).
pub fn try_rabbitmqctl(node: &str, args: &[&str]) -> Result<String, String> {
    run_rabbitmqctl(node, args, None)
}

/// `try_rabbitmqctl` with its own limit.
pub fn try_rabbitmqctl_for(
    node: &str,
    args: &[&str],
    limit: std::time::Duration,
) -> Result<String, String> {
    run_rabbitmqctl(node, args, Some(limit))
}

/// The error names the command and its exit status (124 when the limit
/// stopped it).
fn run_rabbitmqctl(
    node: &str,
    args: &[&str],
    limit: Option<std::time::Duration>,
) -> Result<String, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/rabbitmq");
    let mut cmd = std::process::Command::new(script);
    cmd.arg("ctl").arg(node).args(args);
    if let Some(limit) = limit {
        cmd.env("KEA_CTL_TIMEOUT", limit.as_secs().max(1).to_string());
    }
    let out = cmd.output().map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{args:?} ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `scripts/rabbitmq ctl NODE args...` and returns its stdout; panics
/// when it fails.
pub fn rabbitmqctl(node: &str, args: &[&str]) -> String {
    try_rabbitmqctl(node, args).unwrap_or_else(|e| panic!("rabbitmqctl {args:?}: {e}"))
}

/// The OS pid of the fault broker's Erlang VM.
pub fn broker_pid(node: &str) -> i32 {
    let out = rabbitmqctl(node, &["eval", "list_to_integer(os:getpid())."]);
    out.trim().parse().expect("broker pid")
}
