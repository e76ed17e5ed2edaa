//! The soak (`scripts/soak`): a 3+3 Redis 8.2 cluster in `outbox` mode with
//! AOF, the module on every node routed through a `Proxy` to one RabbitMQ
//! node, writes at a steady rate (each batch acknowledged by `WAIT 1`), and
//! one seeded random fault every few seconds. At the end it drains, then
//! checks delivery against the drop counters, order per node, duplicates
//! against `events_resent` and the documented windows, memory and threads
//! per process, and crashes; prints a table and fails if a check fails.
//!
//! Ignored in the normal suite. Configured by env: `KEA_SOAK_SECONDS` (60),
//! `KEA_SOAK_SEED` (from the clock, printed), `KEA_SOAK_RATE` (writes/s,
//! 300), `KEA_SOAK_FAULT_EVERY` (seconds, 4), `KEA_SOAK_DRAIN_SECONDS`
//! (180), `KEA_SOAK_NODE` (the broker node for `scripts/rabbitmq ctl`),
//! `KEA_AMQP_PORT` (its port).

mod common;

use common::amqp::{Msg, Sink};
use common::amqp_port;
use common::args::ModuleArgs;
use common::cluster::Cluster;
use common::proxy::Proxy;
use common::server::Kind;
use redis_keyspace_amqp::slots::{key_slot, line_slots};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: the faults are reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

// ---- Redis without panics: nodes die and load during the soak ----

fn connect(port: u16) -> Option<redis::Connection> {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let conn = c.get_connection_with_timeout(Duration::from_secs(2)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    conn.set_write_timeout(Some(Duration::from_secs(15))).ok()?;
    Some(conn)
}

fn q(port: u16, args: &[&str]) -> Result<redis::Value, String> {
    let mut conn = connect(port).ok_or_else(|| format!("cannot connect to {port}"))?;
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query::<redis::Value>(&mut conn)
        .map_err(|e| e.to_string())
}

/// A reply as text ("" on an error).
fn qs(port: u16, args: &[&str]) -> String {
    match q(port, args) {
        Ok(redis::Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
        Ok(redis::Value::VerbatimString { text, .. }) => text,
        Ok(redis::Value::SimpleString(s)) => s,
        Ok(redis::Value::Int(i)) => i.to_string(),
        _ => String::new(),
    }
}

/// `INFO section` as a map, the `key_evt_amqp_` prefix removed.
fn info(port: u16, section: &str) -> HashMap<String, String> {
    qs(port, &["INFO", section])
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| {
            let k = k.strip_prefix("key_evt_amqp_").unwrap_or(k);
            (k.to_string(), v.trim().to_string())
        })
        .collect()
}

/// `used_memory` less what Redis itself holds for a while and bounds by
/// its own settings (the replication backlog filling up to its size, client
/// and AOF buffers): what is left at a quiet point (no data, no backlog) is
/// what the server and the module keep.
/// The shortest run whose memory is judged.
const MEMORY_JUDGED_FROM_SECONDS: u64 = 300;

fn used_memory(port: u16) -> i64 {
    let m = info(port, "memory");
    num(&m, "used_memory")
        - num(&m, "mem_replication_backlog")
        - num(&m, "mem_clients_slaves")
        - num(&m, "mem_clients_normal")
        - num(&m, "mem_aof_buffer")
}

fn num(m: &HashMap<String, String>, k: &str) -> i64 {
    m.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The fallback lists (`key_evt_amqp:*`) a node holds, with their lengths.
fn lists(port: u16) -> Option<Vec<(String, i64)>> {
    match q(port, &["KEYS", "key_evt_amqp:*"]) {
        Ok(redis::Value::Array(keys)) => Some(
            keys.iter()
                .filter_map(|k| match k {
                    redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
                    _ => None,
                })
                .map(|k| {
                    let len = qs(port, &["LLEN", &k]).parse().unwrap_or(-1);
                    (k, len)
                })
                .collect(),
        ),
        _ => None,
    }
}

/// Slot -> port of its master, from the first node that answers; `None` if none does.
fn slot_map(ports: &[u16]) -> Option<Vec<u16>> {
    let nodes = ports
        .iter()
        .map(|&p| qs(p, &["CLUSTER", "NODES"]))
        .find(|t| !t.is_empty())?;
    let mut map = vec![0u16; 16384];
    for line in nodes.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 8 || !f[2].contains("master") || f[2].contains("fail") {
            continue;
        }
        let port: u16 = f[1]
            .split(['@', ':'])
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        for slot in line_slots(line) {
            map[usize::from(slot)] = port;
        }
    }
    Some(map)
}

// ---- the load ----

/// What the writer did.
#[derive(Default)]
struct Writes {
    /// Keys whose SET replied OK and whose batch's `WAIT 1` saw a replica.
    acked: Vec<String>,
    /// SETs that replied OK but no replica acknowledged in time.
    unconfirmed: usize,
    /// SETs whose batch failed (redirect, OOM, node down): unknown.
    failed: usize,
    /// Per acknowledged key: the port it was written to and when (seconds
    /// since the soak began), to tell a missing event's place and time.
    at: HashMap<String, (u16, f64)>,
}

struct Flags {
    stop: AtomicBool,
    pause: AtomicBool,
    paused: AtomicBool,
}

/// Writes `soak:<n>` (with a 5 s TTL, so the data set does not grow) at
/// `rate` per second in 20 batches a second, each batch per owner one
/// pipeline of SETs and `WAIT 1 300`.
fn writer(ports: Vec<u16>, rate: u64, flags: Arc<Flags>, t0: Instant) -> Writes {
    let mut w = Writes::default();
    let per_tick = (rate / 20).max(1);
    let mut conns: HashMap<u16, redis::Connection> = HashMap::new();
    let mut map = slot_map(&ports);
    let mut map_at = Instant::now();
    let mut next = Instant::now();
    let mut n: u64 = 0;
    while !flags.stop.load(Ordering::SeqCst) {
        if flags.pause.load(Ordering::SeqCst) {
            flags.paused.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            next = Instant::now();
            continue;
        }
        flags.paused.store(false, Ordering::SeqCst);
        next += Duration::from_millis(50);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if map.is_none() || map_at.elapsed() > Duration::from_secs(1) {
            map = slot_map(&ports);
            map_at = Instant::now();
        }
        let Some(m) = map.as_ref() else { continue };
        let mut groups: BTreeMap<u16, Vec<String>> = BTreeMap::new();
        for _ in 0..per_tick {
            let key = format!("soak:{n}");
            n += 1;
            let owner = m[usize::from(key_slot(key.as_bytes()))];
            groups.entry(owner).or_default().push(key);
        }
        for (port, keys) in groups {
            if port == 0 {
                w.failed += keys.len();
                continue;
            }
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.cmd("SET").arg(k).arg("v").arg("EX").arg(5).ignore();
            }
            pipe.cmd("WAIT").arg(1).arg(300);
            let conn = match conns.entry(port) {
                std::collections::hash_map::Entry::Occupied(e) => Some(e.into_mut()),
                std::collections::hash_map::Entry::Vacant(e) => connect(port).map(|c| e.insert(c)),
            };
            let res = match conn {
                Some(c) => pipe.query::<(i64,)>(c).map_err(|e| e.to_string()),
                None => Err("no connection".into()),
            };
            match res {
                Ok((r,)) if r >= 1 => {
                    let t = t0.elapsed().as_secs_f64();
                    for k in &keys {
                        w.at.insert(k.clone(), (port, t));
                    }
                    w.acked.extend(keys)
                }
                Ok(_) => w.unconfirmed += keys.len(),
                Err(_) => {
                    w.failed += keys.len();
                    conns.remove(&port);
                    map = None;
                }
            }
        }
    }
    w
}

/// Runs `CONFIG GET *` every 100 ms against the nodes in turn.
fn config_getter(ports: Vec<u16>, stop: Arc<AtomicBool>, calls: Arc<AtomicU64>) {
    let mut conns: HashMap<u16, redis::Connection> = HashMap::new();
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        let port = ports[i % ports.len()];
        i += 1;
        if let std::collections::hash_map::Entry::Vacant(e) = conns.entry(port) {
            if let Some(c) = connect(port) {
                e.insert(c);
            }
        }
        if let Some(c) = conns.get_mut(&port) {
            match redis::cmd("CONFIG")
                .arg("GET")
                .arg("*")
                .query::<redis::Value>(c)
            {
                Ok(_) => {
                    calls.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    conns.remove(&port);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Drains the queue until told to stop and nothing more arrives.
fn consumer(mut sink: Sink, stop: Arc<AtomicBool>) -> Sink {
    let mut quiet = 0;
    loop {
        let n = sink.drain();
        if n == 0 {
            if stop.load(Ordering::SeqCst) {
                quiet += 1;
                if quiet >= 5 {
                    return sink;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        } else {
            quiet = 0;
        }
    }
}

// ---- processes ----

#[derive(Clone, Copy, Debug)]
struct Sample {
    used: i64,
    rss_kb: i64,
    threads: usize,
    /// INFO `module_memory_bytes`: what the module's own allocations hold.
    module: i64,
}

fn module_bytes(port: u16) -> i64 {
    num(&info(port, "key_evt_amqp"), "module_memory_bytes")
}

/// One redis-server process (a restart is a new one).
struct Proc {
    node: usize,
    pid: u32,
    port: u16,
    born: f64,
    /// When its current role began (birth or the last role change).
    series: f64,
    /// Its role when `start` was taken.
    start_role: String,
    first: Option<Sample>,
    /// Its sample at the first quiet point in the second half of the run
    /// (same series as `start`): RSS is judged from here to the end.
    mid: Option<Sample>,
    start: Option<Sample>,
    end: Option<Sample>,
    threads_max: usize,
    counters: HashMap<String, String>,
    killed: bool,
    died: bool,
    role: String,
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kb(pid: u32) -> i64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Growth of `module_memory_bytes` always allowed (a replica holds ~64 kB,
/// where 10% is noise).
const MODULE_SLACK_BYTES: i64 = 256 * 1024;

const KINDS: [&str; 9] = [
    "reshard",
    "cluster failover",
    "sigkill master",
    "broker stop_app",
    "broker sigstop",
    "proxy cut",
    "unbound routing key",
    "config churn",
    "maxmemory squeeze",
];

struct Soak {
    c: Cluster,
    proxy: Proxy,
    exchange: String,
    routing_key: String,
    alt_exchange: String,
    alt_key: String,
    broker: String,
    procs: Vec<Proc>,
    faults: BTreeMap<&'static str, usize>,
    /// Each fault: when it began (s), its kind, what it did.
    fault_log: Vec<(f64, &'static str, String)>,
    anomalies: Vec<String>,
    promotions: usize,
    t0: Instant,
    /// Warm-up, seconds: of the run, and of each process series.
    warm: f64,
    /// Half the run, seconds: RSS is judged from the first quiet point after it.
    mid_at: f64,
    rng: Rng,
    flags: Arc<Flags>,
}

fn signal(pid: i32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

impl Soak {
    fn t(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    fn say(&self, what: &str) {
        eprintln!("[soak {:7.1}s] {what}", self.t());
    }

    fn anomaly(&mut self, what: String) {
        self.say(&format!("ANOMALY: {what}"));
        self.anomalies.push(what);
    }

    fn ports(&self) -> Vec<u16> {
        self.c.nodes.iter().map(|n| n.port).collect()
    }

    fn live(&self) -> Vec<usize> {
        (0..self.c.nodes.len())
            .filter(|&i| self.c.nodes[i].pid() != 0)
            .collect()
    }

    /// Masters that own slots, as node indexes.
    fn masters(&self) -> Vec<usize> {
        let Some(map) = slot_map(&self.ports()) else {
            return Vec::new();
        };
        let owners: HashSet<u16> = map.iter().copied().filter(|&p| p != 0).collect();
        (0..self.c.nodes.len())
            .filter(|&i| self.c.nodes[i].pid() != 0 && owners.contains(&self.c.nodes[i].port))
            .collect()
    }

    /// A replica of master `m` with its link up.
    fn linked_replica(&self, m: usize) -> Option<usize> {
        let mp = format!("master_port:{}", self.c.nodes[m].port);
        self.live().into_iter().find(|&j| {
            j != m && {
                let r = qs(self.c.nodes[j].port, &["INFO", "replication"]);
                r.contains("role:slave") && r.contains(&mp) && r.contains("master_link_status:up")
            }
        })
    }

    fn proc_of(&mut self, i: usize) -> Option<&mut Proc> {
        let pid = self.c.nodes[i].pid();
        self.procs.iter_mut().find(|p| p.pid == pid && pid != 0)
    }

    /// Samples every process: alive, threads, INFO counters, role changes.
    fn monitor(&mut self) {
        let t = self.t();
        for i in 0..self.c.nodes.len() {
            let pid = self.c.nodes[i].pid();
            if pid == 0 {
                continue;
            }
            let port = self.c.nodes[i].port;
            if !self.procs.iter().any(|p| p.pid == pid) {
                self.procs.push(Proc {
                    node: i,
                    pid,
                    port,
                    born: t,
                    series: t,
                    start_role: String::new(),
                    first: None,
                    mid: None,
                    start: None,
                    end: None,
                    threads_max: 0,
                    counters: HashMap::new(),
                    killed: false,
                    died: false,
                    role: String::new(),
                });
            }
            let is_alive = alive(pid);
            let th = threads(pid);
            let inf = if is_alive {
                info(port, "key_evt_amqp")
            } else {
                HashMap::new()
            };
            let mut died = None;
            let mut promoted = false;
            if let Some(p) = self.procs.iter_mut().find(|p| p.pid == pid) {
                if !is_alive && !p.killed && !p.died {
                    p.died = true;
                    died = Some(format!("node {i} (port {port}, pid {pid}) died on its own"));
                }
                p.threads_max = p.threads_max.max(th);
                if let Some(role) = inf.get("role") {
                    if p.role == "replica" && role == "master" {
                        promoted = true;
                    }
                    if !p.role.is_empty() && p.role != *role {
                        // A new role is a new series (a master holds a broker
                        // connection and its threads, a replica does not).
                        p.series = t;
                        p.threads_max = th;
                    }
                    p.role = role.clone();
                }
                if inf.contains_key("events_resent") {
                    p.counters = inf;
                }
                if p.first.is_none() && is_alive {
                    p.first = Some(Sample {
                        used: used_memory(port),
                        rss_kb: rss_kb(pid),
                        threads: th,
                        module: module_bytes(port),
                    });
                }
            }
            if promoted {
                self.promotions += 1;
            }
            if let Some(d) = died {
                self.anomaly(d);
            }
        }
    }

    /// Waits `secs`, sampling every second.
    fn pause(&mut self, secs: f64) {
        let end = Instant::now() + Duration::from_secs_f64(secs);
        loop {
            self.monitor();
            let Some(left) = end.checked_duration_since(Instant::now()) else {
                return;
            };
            std::thread::sleep(left.min(Duration::from_secs(1)));
        }
    }

    /// Waits for `what` up to `secs`, sampling; false on a timeout.
    fn wait(&mut self, what: &str, secs: u64, mut f: impl FnMut(&Self) -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(secs);
        let mut last = Instant::now();
        while !f(self) {
            if Instant::now() >= end {
                self.say(&format!("timed out after {secs} s waiting for {what}"));
                return false;
            }
            if last.elapsed() > Duration::from_secs(1) {
                self.monitor();
                last = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    }

    /// Per live node: role, queue, list, found, in flight, error.
    fn state(&self) -> String {
        self.live()
            .iter()
            .map(|&i| {
                let m = info(self.c.nodes[i].port, "key_evt_amqp");
                let g = |k: &str| m.get(k).cloned().unwrap_or_default();
                format!(
                    "node {i} ({}): {} {} queue {} list {} found {} inflight {} lists {:?} err '{}'",
                    self.c.nodes[i].port,
                    g("role"),
                    g("connection"),
                    g("queue_len"),
                    g("fallback_len"),
                    g("fallback_lists_found"),
                    g("inflight"),
                    lists(self.c.nodes[i].port).unwrap_or_default(),
                    g("last_error")
                )
            })
            .collect::<Vec<_>>()
            .join("\n  ")
    }

    /// Every master's queue, list and in-flight window empty, and no
    /// fallback list left on any node (a replica's INFO `fallback_len` can be
    /// stale after a demotion, so lists are looked up by name).
    fn drained(&self) -> bool {
        self.live().iter().all(|&i| {
            let port = self.c.nodes[i].port;
            let m = info(port, "key_evt_amqp");
            let idle = m.get("role").is_some_and(|r| r != "master")
                || [
                    "fallback_len",
                    "queue_len",
                    "inflight",
                    "fallback_lists_found",
                ]
                .iter()
                .all(|k| m.contains_key(*k) && num(&m, k) == 0);
            idle && lists(port).is_some_and(|l| l.is_empty())
        })
    }

    /// No `soak:` key left anywhere (they expire after 5 s).
    fn no_data(&self) -> bool {
        self.live().iter().all(|&i| {
            let port = self.c.nodes[i].port;
            let size: i64 = qs(port, &["DBSIZE"]).parse().unwrap_or(-1);
            let lists = match q(port, &["KEYS", "key_evt_amqp:*"]) {
                Ok(redis::Value::Array(a)) => a.len() as i64,
                _ => -1,
            };
            size >= 0 && size == lists
        })
    }

    /// Pauses the writer (if running), waits until every list and queue is
    /// empty and the keys expired, then takes a memory sample of every
    /// process without one (`end`: of every process). Equal state both
    /// times: no backlog, no data.
    fn quiet_point(&mut self, end: bool) -> bool {
        self.flags.pause.store(true, Ordering::SeqCst);
        let flags = Arc::clone(&self.flags);
        self.wait("writer paused", 30, |_| {
            flags.paused.load(Ordering::SeqCst) || flags.stop.load(Ordering::SeqCst)
        });
        // In the run a stalled drain must not eat the soak: 45 s, then go on.
        let drain = if end {
            env_u64("KEA_SOAK_DRAIN_SECONDS", 180)
        } else {
            45
        };
        let drained = self.wait("lists and queues drained", drain, |s| s.drained());
        if !drained {
            let st = self.state();
            self.anomaly(format!("backlog not drained in {drain} s:\n  {st}"));
        }
        let expired = self.wait("keys expired", 30, |s| s.no_data());
        let (t, warm, mid_at) = (self.t(), self.warm, self.mid_at);
        if drained && expired {
            for i in self.live() {
                let port = self.c.nodes[i].port;
                let used = used_memory(port);
                if let Some(p) = self.proc_of(i) {
                    let s = Sample {
                        used,
                        rss_kb: rss_kb(p.pid),
                        threads: threads(p.pid),
                        module: module_bytes(port),
                    };
                    if end {
                        p.end = Some(s);
                    } else if (p.start.is_none() || p.start_role != p.role) && t - p.series >= warm
                    {
                        // A series is sampled once it is past its own warm-up.
                        p.start = Some(s);
                        p.start_role = p.role.clone();
                        p.threads_max = p.threads_max.max(s.threads);
                        p.mid = None;
                    } else if p.mid.is_none() && t >= mid_at && p.start_role == p.role {
                        p.mid = Some(s);
                    }
                }
            }
        }
        self.flags.pause.store(false, Ordering::SeqCst);
        drained && expired
    }

    fn set_all(&self, name: &str, value: &str) {
        for i in self.live() {
            let _ = q(self.c.nodes[i].port, &["CONFIG", "SET", name, value]);
        }
    }

    // ---- faults ----

    fn reshard(&mut self) -> String {
        let masters = self.masters();
        if masters.len() < 2 {
            return "skipped: fewer than 2 masters".into();
        }
        let a = masters[self.rng.below(masters.len())];
        let others: Vec<usize> = masters.iter().copied().filter(|&m| m != a).collect();
        let b = others[self.rng.below(others.len())];
        let (pa, pb) = (self.c.nodes[a].port, self.c.nodes[b].port);
        let fb = info(pa, "key_evt_amqp")
            .get("fallback_key")
            .cloned()
            .unwrap_or_default();
        let (slot, why) = if self.rng.below(2) == 0 && !fb.is_empty() {
            (key_slot(fb.as_bytes()), format!("holding '{fb}'"))
        } else {
            let owned: Vec<u16> = slot_map(&self.ports())
                .unwrap_or_default()
                .iter()
                .enumerate()
                .filter(|(_, &p)| p == pa)
                .map(|(s, _)| s as u16)
                .collect();
            if owned.len() < 2 {
                return "skipped: source owns too few slots".into();
            }
            (owned[self.rng.below(owned.len())], "random".into())
        };
        let (ida, idb) = (qs(pa, &["CLUSTER", "MYID"]), qs(pb, &["CLUSTER", "MYID"]));
        let s = slot.to_string();
        let backlog = num(&info(pa, "key_evt_amqp"), "fallback_len");
        let _ = q(pb, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &ida]);
        let _ = q(pa, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &idb]);
        let pbs = pb.to_string();
        let mut moved = 0;
        let migrate = |moved: &mut usize| -> Result<(), String> {
            for _ in 0..200 {
                let keys: Vec<String> = match q(pa, &["CLUSTER", "GETKEYSINSLOT", &s, "100"]) {
                    Ok(redis::Value::Array(a)) => a
                        .iter()
                        .filter_map(|v| match v {
                            redis::Value::BulkString(b) => {
                                Some(String::from_utf8_lossy(b).into_owned())
                            }
                            _ => None,
                        })
                        .collect(),
                    other => return Err(format!("GETKEYSINSLOT: {other:?}")),
                };
                if keys.is_empty() {
                    return Ok(());
                }
                let mut args = vec![
                    "MIGRATE",
                    "127.0.0.1",
                    &pbs,
                    "",
                    "0",
                    "5000",
                    "REPLACE",
                    "KEYS",
                ];
                args.extend(keys.iter().map(String::as_str));
                q(pa, &args).map_err(|e| format!("MIGRATE: {e}"))?;
                *moved += keys.len();
            }
            Err("keys keep coming".into())
        };
        let first = migrate(&mut moved);
        for m in std::iter::once(b)
            .chain(std::iter::once(a))
            .chain(masters.iter().copied())
        {
            let _ = q(
                self.c.nodes[m].port,
                &["CLUSTER", "SETSLOT", &s, "NODE", &idb],
            );
        }
        // A key written to the source between the last GETKEYSINSLOT and SETSLOT.
        let late = migrate(&mut moved);
        if let Err(e) = first.and(late) {
            self.anomaly(format!("reshard of slot {slot}: {e}"));
        }
        format!(
            "slot {slot} ({why}) node {a} -> node {b}, {moved} keys moved, source backlog {backlog}"
        )
    }

    /// Masters a fault may demote (failover, kill): all but the first
    /// shard's master, so that one master and its replica keep their role
    /// and process for the whole run and their memory can be judged.
    fn demotable_masters(&self) -> Vec<usize> {
        self.masters().into_iter().filter(|&m| m != 0).collect()
    }

    fn failover(&mut self) -> String {
        let masters = self.demotable_masters();
        let with_replica: Vec<(usize, usize)> = masters
            .iter()
            .filter_map(|&m| self.linked_replica(m).map(|r| (m, r)))
            .collect();
        if with_replica.is_empty() {
            return "skipped: no linked replica".into();
        }
        let (m, r) = with_replica[self.rng.below(with_replica.len())];
        let pr = self.c.nodes[r].port;
        let reply = q(pr, &["CLUSTER", "FAILOVER"]);
        let ok = self.wait("replica promoted", 30, |_| {
            qs(pr, &["INFO", "replication"]).contains("role:master")
        });
        if !ok {
            self.anomaly(format!(
                "CLUSTER FAILOVER on node {r}: not promoted ({reply:?})"
            ));
        }
        self.wait_cluster_ok();
        format!("node {r} replaces master node {m}")
    }

    fn wait_cluster_ok(&mut self) {
        let ok = self.wait("cluster ok", 90, |s| {
            s.live().iter().all(|&i| {
                let p = s.c.nodes[i].port;
                let ci = qs(p, &["CLUSTER", "INFO"]);
                let r = qs(p, &["INFO", "replication"]);
                ci.contains("cluster_state:ok")
                    && (r.contains("role:master") || r.contains("master_link_status:up"))
            })
        });
        if !ok {
            self.anomaly("cluster not ok after 90 s".into());
        }
    }

    fn kill(&mut self) -> String {
        let masters = self.demotable_masters();
        let with_replica: Vec<(usize, usize)> = masters
            .iter()
            .filter_map(|&m| self.linked_replica(m).map(|r| (m, r)))
            .collect();
        if with_replica.is_empty() {
            return "skipped: no master with a linked replica".into();
        }
        let (m, r) = with_replica[self.rng.below(with_replica.len())];
        self.set_all("cluster-node-timeout", "1500");
        self.monitor();
        if let Some(p) = self.proc_of(m) {
            p.killed = true;
        }
        let backlog = num(&info(self.c.nodes[m].port, "key_evt_amqp"), "fallback_len");
        self.c.nodes[m].kill();
        let pr = self.c.nodes[r].port;
        let ok = self.wait("replica promoted", 60, |_| {
            qs(pr, &["INFO", "replication"]).contains("role:master")
        });
        if !ok {
            self.anomaly(format!("node {r} not promoted after node {m} was killed"));
        }
        self.c.nodes[m].restart();
        self.set_all("cluster-node-timeout", "5000");
        self.wait_cluster_ok();
        format!("node {m} (backlog {backlog}) killed, node {r} promoted, node {m} restarted")
    }

    fn broker_stop(&mut self) -> String {
        let secs = 2.0 + self.rng.below(3) as f64;
        if let Err(e) = common::try_rabbitmqctl(&self.broker, &["stop_app"]) {
            self.anomaly(format!("stop_app: {e}"));
        }
        self.pause(secs);
        if let Err(e) = common::try_rabbitmqctl(&self.broker, &["start_app"]) {
            self.anomaly(format!("start_app: {e}"));
        }
        format!("stopped for {secs} s")
    }

    fn broker_pid(&self) -> Option<i32> {
        common::try_rabbitmqctl(&self.broker, &["eval", "list_to_integer(os:getpid())."])
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    fn broker_sigstop(&mut self) -> String {
        let Some(pid) = self.broker_pid() else {
            return "skipped: no broker pid".into();
        };
        let secs = 2.0 + self.rng.below(4) as f64;
        signal(pid, "STOP");
        self.pause(secs);
        signal(pid, "CONT");
        format!("pid {pid} stopped for {secs} s")
    }

    fn cut(&mut self) -> String {
        if self.rng.below(2) == 0 {
            self.proxy.cut();
            "cut".into()
        } else {
            self.proxy.stall(true);
            self.pause(1.5);
            self.proxy.cut();
            self.proxy.stall(false);
            "stalled 1.5 s, then cut".into()
        }
    }

    fn unbound(&mut self) -> String {
        let secs = 2.0 + self.rng.below(4) as f64;
        let rk = format!("{}-unbound", self.routing_key);
        self.set_all("key_evt_amqp.routing-key", &rk);
        self.pause(secs);
        let good = self.routing_key.clone();
        self.set_all("key_evt_amqp.routing-key", &good);
        format!("every node for {secs} s")
    }

    fn churn(&mut self) -> String {
        let live = self.live();
        let i = live[self.rng.below(live.len())];
        let port = self.c.nodes[i].port;
        let steps = 3 + self.rng.below(4);
        let mut done = Vec::new();
        for _ in 0..steps {
            let (name, value) = match self.rng.below(3) {
                0 => (
                    "key_evt_amqp.keymasks",
                    ["^soak: ^zz:churn", "ALL", "soak ^other:"][self.rng.below(3)].to_string(),
                ),
                1 => (
                    "key_evt_amqp.routing-key",
                    [&self.routing_key, &self.alt_key][self.rng.below(2)].clone(),
                ),
                _ => (
                    "key_evt_amqp.exchange",
                    [&self.exchange, &self.alt_exchange][self.rng.below(2)].clone(),
                ),
            };
            if let Err(e) = q(port, &["CONFIG", "SET", name, &value]) {
                self.anomaly(format!("CONFIG SET {name} {value} on node {i}: {e}"));
            }
            done.push(name.trim_start_matches("key_evt_amqp."));
            let gap = 0.2 + self.rng.below(4) as f64 / 10.0;
            self.pause(gap);
        }
        let (rk, x) = (self.routing_key.clone(), self.exchange.clone());
        for (name, value) in [
            ("key_evt_amqp.keymasks", "ALL"),
            ("key_evt_amqp.routing-key", rk.as_str()),
            ("key_evt_amqp.exchange", x.as_str()),
        ] {
            if let Err(e) = q(port, &["CONFIG", "SET", name, value]) {
                self.anomaly(format!("restoring {name} on node {i}: {e}"));
            }
        }
        format!("node {i}: {}", done.join(", "))
    }

    fn squeeze(&mut self) -> String {
        let masters = self.masters();
        if masters.is_empty() {
            return "skipped: no master".into();
        }
        let m = masters[self.rng.below(masters.len())];
        let port = self.c.nodes[m].port;
        let used = used_memory(port);
        let limit = (used + 512 * 1024).to_string();
        let secs = 2.0 + self.rng.below(3) as f64;
        let _ = q(port, &["CONFIG", "SET", "maxmemory", &limit]);
        self.pause(secs);
        let _ = q(port, &["CONFIG", "SET", "maxmemory", "0"]);
        format!("node {m}: maxmemory {limit} (used {used}) for {secs} s")
    }

    fn inject(&mut self) {
        let k = self.rng.below(KINDS.len());
        let began = self.t();
        let what = match k {
            0 => self.reshard(),
            1 => self.failover(),
            2 => self.kill(),
            3 => self.broker_stop(),
            4 => self.broker_sigstop(),
            5 => self.cut(),
            6 => self.unbound(),
            7 => self.churn(),
            _ => self.squeeze(),
        };
        if !what.starts_with("skipped") {
            *self.faults.entry(KINDS[k]).or_insert(0) += 1;
            self.fault_log.push((began, KINDS[k], what.clone()));
        }
        // The spared master's memory after each fault: RSS against what the
        // module's own allocations hold, to tell growth from retention.
        let n0 = self.c.nodes[0].port;
        let (rss, module) = (rss_kb(self.c.nodes[0].pid()), module_bytes(n0) / 1024);
        self.say(&format!(
            "fault {}: {what} [node 0: rss {rss} kB, module {module} kB]",
            KINDS[k]
        ));
    }

    /// Everything back to the right values, whatever a fault left.
    fn restore(&mut self) {
        self.proxy.stall(false);
        self.proxy.refuse(false);
        if let Some(pid) = self.broker_pid() {
            signal(pid, "CONT");
        }
        let _ = common::try_rabbitmqctl(&self.broker, &["start_app"]);
        let (rk, x) = (self.routing_key.clone(), self.exchange.clone());
        self.set_all("maxmemory", "0");
        self.set_all("key_evt_amqp.routing-key", &rk);
        self.set_all("key_evt_amqp.exchange", &x);
        self.set_all("key_evt_amqp.keymasks", "ALL");
        self.set_all("cluster-node-timeout", "5000");
        self.wait_cluster_ok();
    }
}

/// Lines of a server log that tell of a crash or a bug.
fn bad_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| {
            let l = l.to_lowercase();
            [
                "panic",
                "internal error",
                "crashed by signal",
                "bug report",
                "assertion",
            ]
            .iter()
            .any(|w| l.contains(w))
        })
        .map(String::from)
        .collect()
}

fn pct(a: i64, b: i64) -> f64 {
    if a == 0 {
        0.0
    } else {
        (b - a) as f64 * 100.0 / a as f64
    }
}

#[test]
#[ignore = "the soak: run by scripts/soak"]
fn soak() {
    let seconds = env_u64("KEA_SOAK_SECONDS", 60);
    let seed = env_u64(
        "KEA_SOAK_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            % 1_000_000,
    );
    let rate = env_u64("KEA_SOAK_RATE", 300);
    let every = env_u64("KEA_SOAK_FAULT_EVERY", 4).max(1);
    let broker = std::env::var("KEA_SOAK_NODE").unwrap_or_else(|_| "soak".into());
    eprintln!(
        "soak: {seconds} s, seed {seed} (KEA_SOAK_SEED={seed} to repeat), {rate} writes/s, a fault every ~{every} s, broker node {broker}"
    );

    let sink = Sink::new(amqp_port());
    let proxy = Proxy::new(sink.port);
    // The churn's other routing key and exchange reach the same queue.
    let alt_key = format!("{}-alt", sink.routing_key);
    let alt_exchange = format!("{}-alt", sink.exchange);
    for (x, rk, declare) in [
        (&sink.exchange, &alt_key, false),
        (&alt_exchange, &sink.routing_key, true),
        (&alt_exchange, &alt_key, false),
    ] {
        let s = ManuallyDrop::new(Sink {
            port: sink.port,
            exchange: x.clone(),
            queue: sink.queue.clone(),
            routing_key: rk.clone(),
            received: Vec::new(),
            vhost: "/".into(),
        });
        if declare {
            s.declare_exchange();
        }
        s.declare_queue();
    }
    let args = ModuleArgs::new(&sink)
        .port(proxy.port)
        .heartbeat(2)
        .delivery_mode(2)
        .build();
    let c = Cluster::start_with(
        Kind::Redis8,
        3,
        &args,
        &[("appendonly", "yes"), ("key_evt_amqp.durability", "outbox")],
    );
    let inflight_max: i64 = match q(
        c.nodes[0].port,
        &["CONFIG", "GET", "key_evt_amqp.inflight-max"],
    ) {
        Ok(redis::Value::Array(a)) => match a.get(1) {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).parse().unwrap_or(8192),
            _ => 8192,
        },
        _ => 8192,
    };
    let flags = Arc::new(Flags {
        stop: AtomicBool::new(false),
        pause: AtomicBool::new(false),
        paused: AtomicBool::new(false),
    });
    let mut s = Soak {
        exchange: sink.exchange.clone(),
        routing_key: sink.routing_key.clone(),
        alt_exchange,
        alt_key,
        broker,
        c,
        proxy,
        procs: Vec::new(),
        faults: BTreeMap::new(),
        fault_log: Vec::new(),
        anomalies: Vec::new(),
        promotions: 0,
        t0: Instant::now(),
        warm: (seconds / 6).clamp(5, 30) as f64,
        mid_at: seconds as f64 / 2.0,
        rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
        flags: Arc::clone(&flags),
    };
    s.monitor();
    let ports = s.ports();
    let consumer_stop = Arc::new(AtomicBool::new(false));
    let consumer = {
        let stop = Arc::clone(&consumer_stop);
        std::thread::spawn(move || consumer(sink, stop))
    };
    let getter_stop = Arc::new(AtomicBool::new(false));
    let getter_calls = Arc::new(AtomicU64::new(0));
    let getter = {
        let (p, stop, calls) = (
            ports.clone(),
            Arc::clone(&getter_stop),
            Arc::clone(&getter_calls),
        );
        std::thread::spawn(move || config_getter(p, stop, calls))
    };
    let writer = {
        let (p, f) = (ports.clone(), Arc::clone(&flags));
        let t0 = s.t0;
        std::thread::spawn(move || writer(p, rate, f, t0))
    };

    // Warm-up: writes without faults, then the first memory sample.
    let warm = s.warm;
    s.say(&format!("warm-up {warm} s"));
    s.pause(warm);
    if !s.quiet_point(false) {
        let st = s.state();
        s.anomaly(format!("no quiet point after warm-up:\n  {st}"));
    }
    s.say("faults start");
    let until = Duration::from_secs(seconds);
    let mut last_quiet = s.t();
    while s.t0.elapsed() < until {
        // A quiet point a minute: memory samples of new series at equal state.
        if s.t() - last_quiet >= 60.0 {
            s.say("quiet point");
            s.quiet_point(false);
            last_quiet = s.t();
        }
        let gap = every as f64 * (0.5 + s.rng.below(100) as f64 / 100.0);
        s.pause(gap);
        if s.t0.elapsed() >= until {
            break;
        }
        s.inject();
    }
    s.say("faults stop; restoring");
    s.restore();
    flags.stop.store(true, Ordering::SeqCst);
    let writes = writer.join().expect("writer");
    s.say(&format!(
        "writer stopped: {} acknowledged, {} without a replica ack, {} failed",
        writes.acked.len(),
        writes.unconfirmed,
        writes.failed
    ));
    let quiet_end = s.quiet_point(true);
    s.monitor();
    // Fallback lists left anywhere (an orphan is a list no node drains).
    let mut orphans = Vec::new();
    let mut stale = Vec::new();
    for i in s.live() {
        let port = s.c.nodes[i].port;
        for (k, len) in lists(port).unwrap_or_default() {
            orphans.push(format!("node {i}: {k} ({len})"));
        }
        let m = info(port, "key_evt_amqp");
        if m.get("role").is_some_and(|r| r != "master") && num(&m, "fallback_len") != 0 {
            stale.push(format!(
                "node {i} (replica) INFO fallback_len {} for '{}'",
                num(&m, "fallback_len"),
                m.get("fallback_key").cloned().unwrap_or_default()
            ));
        }
    }
    getter_stop.store(true, Ordering::SeqCst);
    let _ = getter.join();
    consumer_stop.store(true, Ordering::SeqCst);
    let sink = consumer.join().expect("consumer");

    // ---- checks ----
    let msgs: Vec<&Msg> = sink
        .received
        .iter()
        .filter(|m| m.key().starts_with("soak:"))
        .collect();
    let delivered: HashSet<String> = msgs.iter().map(|m| m.key()).collect();
    let missing: Vec<&String> = writes
        .acked
        .iter()
        .filter(|k| !delivered.contains(*k))
        .collect();
    let sum = |k: &str| -> i64 { s.procs.iter().map(|p| num_s(&p.counters, k)).sum() };
    let dropped = sum("events_dropped") + sum("events_lost");
    let resent = sum("events_resent");
    let mut seen_ids = HashSet::new();
    let mut dups = 0usize;
    let mut last: HashMap<String, u64> = HashMap::new();
    // (what, the overtaken key, by how many sequence numbers)
    let mut order_breaks: Vec<(String, String, u64)> = Vec::new();
    for m in &msgs {
        if !seen_ids.insert(m.message_id.clone()) {
            dups += 1;
            continue;
        }
        let Some((tag, seq)) = m.message_id.rsplit_once('-') else {
            order_breaks.push((
                format!("bad message_id '{}'", m.message_id),
                m.key(),
                u64::MAX,
            ));
            continue;
        };
        let seq: u64 = seq.parse().unwrap_or(0);
        // In order per node, as sent: after a reshard moved a list, its
        // records go out from the new owner while the old owner sends its
        // newer ones (docs/cluster.md), so the order is checked per origin
        // (the message_id's tag) and sender (the `node` header).
        let sender = m.headers.get("node").map_or("", String::as_str);
        let stream = format!("{tag} sent by {sender}");
        if let Some(&l) = last.get(&stream) {
            if seq <= l {
                order_breaks.push((
                    format!("{tag}-{seq} after {tag}-{l} (sent by {sender})"),
                    m.key(),
                    l - seq,
                ));
            }
        }
        last.insert(stream, seq);
    }
    let kills = s.faults.get("sigkill master").copied().unwrap_or(0);
    let failovers = s.faults.get("cluster failover").copied().unwrap_or(0);
    let windows = (kills + failovers).max(s.promotions) as i64;
    let dup_bound = resent + windows * inflight_max;

    let mut checks: Vec<(String, bool, String)> = Vec::new();
    checks.push((
        "delivery".into(),
        missing.is_empty() || missing.len() as i64 == dropped,
        format!(
            "{} acknowledged, {} missing, drop counters {dropped}{}",
            writes.acked.len(),
            missing.len(),
            if missing.is_empty() {
                String::new()
            } else {
                format!(", first missing {:?}", &missing[..missing.len().min(5)])
            }
        ),
    ));
    // The README's one exception: a return or a nack re-sends the records
    // from the first one refused, while later batches already acked are not
    // held back, so each can let at most one in-flight window overtake.
    let refusals = sum("events_returned") + sum("events_nacked");
    let within_window = |b: &&(String, String, u64)| refusals > 0 && b.2 <= inflight_max as u64;
    let allowed = order_breaks.iter().filter(within_window).count();
    let order_ok = allowed == order_breaks.len() && allowed as i64 <= refusals;
    let shown: Vec<&str> = order_breaks.iter().take(3).map(|b| b.0.as_str()).collect();
    checks.push((
        "order per node".into(),
        order_ok,
        format!(
            "{} streams (origin, sender), {} breaks {shown:?}; {allowed} within one window with {refusals} records returned or nacked (allowed)",
            last.len(),
            order_breaks.len(),
        ),
    ));
    checks.push((
        "duplicates".into(),
        dups as i64 <= dup_bound,
        format!(
            "{dups} <= events_resent {resent} + {windows} (kills+failovers, or promotions seen) x inflight-max {inflight_max} = {dup_bound}"
        ),
    ));
    checks.push((
        "drained".into(),
        quiet_end && orphans.is_empty(),
        if orphans.is_empty() {
            "every list and queue empty".into()
        } else {
            format!("lists left: {}", orphans.join("; "))
        },
    ));
    let mut mem_ok = true;
    let mut mem_detail = Vec::new();
    let mut threads_ok = true;
    let mut thread_detail = Vec::new();
    let mut crash_ok = true;
    let mut crash_detail = Vec::new();
    for p in &s.procs {
        if let (Some(a), Some(b)) = (p.start, p.end) {
            if p.start_role != p.role {
                continue;
            }
            // used_memory and the module's own bytes from the warm-up on;
            // RSS over the second half (see docs/testing.md: malloc keeps
            // freed memory, so RSS steps up over the first faults and then
            // holds; a leak goes on growing in the second half too).
            let du = pct(a.used, b.used);
            let dm = b.module - a.module;
            let module_ok = dm <= (a.module / 10).max(MODULE_SLACK_BYTES);
            let dr = p.mid.map(|m| pct(m.rss_kb, b.rss_kb));
            if du > 10.0 || !module_ok || dr.is_some_and(|d| d > 10.0) {
                mem_ok = false;
                mem_detail.push(format!(
                    "pid {} used {du:+.1}%, module {:+} kB, rss over the second half {}",
                    p.pid,
                    dm / 1024,
                    dr.map_or("-".into(), |d| format!("{d:+.1}%"))
                ));
            }
            if b.threads > a.threads + 2 || p.threads_max > a.threads + 8 {
                threads_ok = false;
                thread_detail.push(format!(
                    "pid {} threads {} -> {} (max {})",
                    p.pid, a.threads, b.threads, p.threads_max
                ));
            }
        }
        if p.died {
            crash_ok = false;
            crash_detail.push(format!("pid {} died", p.pid));
        }
    }
    for i in s.live() {
        if !alive(s.c.nodes[i].pid()) {
            crash_ok = false;
            crash_detail.push(format!("node {i} not alive at the end"));
        }
        let bad = bad_lines(&s.c.nodes[i].log());
        if !bad.is_empty() {
            crash_ok = false;
            crash_detail.push(format!("node {i} log: {:?}", &bad[..bad.len().min(3)]));
        }
    }
    if common::try_rabbitmqctl(&s.broker, &["status"]).is_err() {
        crash_ok = false;
        crash_detail.push("broker not running".into());
    }
    let judged = s
        .procs
        .iter()
        .filter(|p| p.start.is_some() && p.end.is_some() && p.start_role == p.role)
        .count();
    // Flat "after warm-up" needs a run long enough to have one: buffers
    // that grow once (lapin's frame queues after a stalled broker, the
    // allocator's arenas) dominate a one-minute run.
    let judge_memory = seconds >= MEMORY_JUDGED_FROM_SECONDS;
    let detail = if mem_detail.is_empty() {
        format!("{judged} processes sampled at both quiet points")
    } else {
        mem_detail.join("; ")
    };
    checks.push((
        "memory flat (10%)".into(),
        !judge_memory || (mem_ok && judged > 0),
        if judge_memory {
            detail
        } else {
            format!("not judged in a run under {MEMORY_JUDGED_FROM_SECONDS} s: {detail}")
        },
    ));
    checks.push((
        "threads bounded".into(),
        threads_ok,
        if thread_detail.is_empty() {
            "end <= start + 2, max <= start + 8".into()
        } else {
            thread_detail.join("; ")
        },
    ));
    checks.push((
        "no crash".into(),
        crash_ok,
        if crash_detail.is_empty() {
            "every process alive unless killed on purpose; no panic, internal error or crash report in the logs".into()
        } else {
            crash_detail.join("; ")
        },
    ));

    // ---- the table ----
    let mut out = String::new();
    out.push_str(&format!(
        "\n=== soak: {seconds} s, seed {seed}, {rate} writes/s, Redis 8.2 3+3 outbox+AOF ===\n"
    ));
    out.push_str("faults injected:\n");
    for k in KINDS {
        out.push_str(&format!(
            "  {k:<22} {}\n",
            s.faults.get(k).copied().unwrap_or(0)
        ));
    }
    out.push_str(&format!(
        "  {:<22} {} (all along)\n  promotions seen        {}\n",
        "CONFIG GET *",
        getter_calls.load(Ordering::Relaxed),
        s.promotions
    ));
    out.push_str(&format!(
        "writes: acknowledged {}, no replica ack {}, failed {}\n",
        writes.acked.len(),
        writes.unconfirmed,
        writes.failed
    ));
    out.push_str(&format!(
        "delivered: {} messages, {} distinct acknowledged writes, missing {}, duplicates {dups}\n",
        msgs.len(),
        writes
            .acked
            .iter()
            .filter(|k| delivered.contains(*k))
            .count(),
        missing.len()
    ));
    out.push_str("counters (sum over every process, a killed one's last sample before SIGKILL):\n");
    for k in [
        "events_confirmed",
        "events_resent",
        "events_returned",
        "events_dropped",
        "events_dropped_cap",
        "events_dropped_disabled",
        "events_dropped_unwritable",
        "events_dropped_overflow",
        "events_dropped_unroutable",
        "events_rejected",
        "events_lost",
    ] {
        out.push_str(&format!("  {k:<26} {}\n", sum(k)));
    }
    out.push_str("processes (memory at the quiet points: no backlog, no data):\n");
    out.push_str("  node  pid      from    used start -> end        rss kB start -> end      threads start -> end (max)  module kB start -> end  rss kB mid  note\n");
    for p in &s.procs {
        let f = |x: Option<Sample>, g: fn(&Sample) -> i64| {
            x.map(|x| g(&x).to_string()).unwrap_or("-".into())
        };
        let note = if p.killed {
            "killed"
        } else if p.died {
            "DIED"
        } else if p.start.is_none() {
            "no start sample (series younger than the warm-up at every quiet point)"
        } else if p.start_role != p.role {
            "role changed after its start sample: not judged"
        } else {
            ""
        };
        out.push_str(&format!(
            "  {:<5} {:<8} {:>6.0}s {:>9} -> {:<9} {:>+6.1}%  {:>7} -> {:<7} {:>+6.1}%  {:>3} -> {:<3} ({:>3})  {:>6} -> {:<6}  {:>7}  {} {}\n",
            p.node,
            p.pid,
            p.born,
            f(p.start, |x| x.used),
            f(p.end, |x| x.used),
            match (p.start, p.end) { (Some(a), Some(b)) => pct(a.used, b.used), _ => 0.0 },
            f(p.start, |x| x.rss_kb),
            f(p.end, |x| x.rss_kb),
            match (p.start, p.end) { (Some(a), Some(b)) => pct(a.rss_kb, b.rss_kb), _ => 0.0 },
            f(p.start.or(p.first), |x| x.threads as i64),
            f(p.end, |x| x.threads as i64),
            p.threads_max,
            f(p.start, |x| x.module / 1024),
            f(p.end, |x| x.module / 1024),
            f(p.mid, |x| x.rss_kb),
            p.role,
            note
        ));
        let _ = p.port;
    }
    for st in &stale {
        out.push_str(&format!("note: {st}, no such list on the node\n"));
    }
    // Where the shortfall is: per node tag, the sequence numbers never
    // delivered below the highest one delivered; per missing key, where and
    // when it was written and the faults around it.
    let mut seqs: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for m in &msgs {
        if let Some((tag, seq)) = m.message_id.rsplit_once('-') {
            if let Ok(seq) = seq.parse::<u64>() {
                seqs.entry(tag.to_string()).or_default().insert(seq);
            }
        }
    }
    let distinct: usize = seqs.values().map(BTreeSet::len).sum();
    out.push_str(&format!(
        "accounting: events_accepted {} (a killed process's last sample), distinct deliveries {distinct}, drop counters {dropped}\n",
        sum("events_accepted")
    ));
    for (tag, set) in &seqs {
        let max = set.iter().next_back().copied().unwrap_or(0);
        let holes = max as usize - set.len();
        if holes == 0 {
            continue;
        }
        let mut ranges = Vec::new();
        let mut prev = 0u64;
        for &q in set {
            if q > prev + 1 {
                ranges.push(format!("{}..={}", prev + 1, q - 1));
            }
            prev = q;
        }
        out.push_str(&format!(
            "  tag {tag}: {} delivered up to {max}, {holes} never delivered: {}\n",
            set.len(),
            ranges[..ranges.len().min(8)].join(" ")
        ));
    }
    let node_of = |port: u16| s.c.nodes.iter().position(|n| n.port == port);
    // Where and when a key was written, and the faults around that time.
    let context = |k: &str| {
        let (port, t) = writes.at.get(k).copied().unwrap_or((0, 0.0));
        let show = |f: Option<&(f64, &str, String)>| {
            f.map_or("-".to_string(), |f| {
                format!("{:.1}s {} ({})", f.0, f.1, f.2)
            })
        };
        format!(
            "written to node {:?} at {t:.1}s; fault before: {}; after: {}",
            node_of(port),
            show(s.fault_log.iter().rev().find(|f| f.0 <= t)),
            show(s.fault_log.iter().find(|f| f.0 > t))
        )
    };
    for k in missing.iter().take(60) {
        out.push_str(&format!("  missing {k}: {}\n", context(k)));
    }
    for (what, k, _) in order_breaks.iter().take(20) {
        out.push_str(&format!("  order break {what}: {k} {}\n", context(k)));
    }
    if !s.anomalies.is_empty() {
        out.push_str(&format!(
            "anomalies during the run ({}):\n",
            s.anomalies.len()
        ));
        for a in &s.anomalies {
            out.push_str(&format!("  {a}\n"));
        }
    }
    out.push_str("checks:\n");
    for (name, ok, detail) in &checks {
        out.push_str(&format!(
            "  {:<4} {name:<18} {detail}\n",
            if *ok { "PASS" } else { "FAIL" }
        ));
    }
    eprintln!("{out}");
    let failed: Vec<&String> = checks.iter().filter(|c| !c.1).map(|c| &c.0).collect();
    assert!(
        failed.is_empty(),
        "soak checks failed: {failed:?} (seed {seed})"
    );
}

fn num_s(m: &HashMap<String, String>, k: &str) -> i64 {
    num(m, k)
}
