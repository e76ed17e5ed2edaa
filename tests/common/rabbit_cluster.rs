//! A RabbitMQ cluster on this machine: N nodes started in parallel with
//! `scripts/rabbitmq` (own names, ports, data directories, one Erlang
//! cookie), joined to the first with `rabbitmqctl join_cluster`. The nodes
//! are stopped when the process exits (also after a failed test), and
//! `scripts/test` stops them too by their prefix (`KEA_CLUSTER_PREFIX`).

use super::{free_port, try_rabbitmqctl};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One node of the cluster.
#[derive(Debug, Clone)]
pub struct Node {
    /// Name for `scripts/rabbitmq` (the Erlang node is `kea_<name>@localhost`).
    pub name: String,
    /// AMQP port.
    pub port: u16,
}

/// The cluster's nodes, first one the seed.
#[derive(Debug)]
pub struct RabbitCluster {
    /// Every node.
    pub nodes: Vec<Node>,
    cookie: String,
}

impl Node {
    /// The Erlang node name, `kea_<name>@localhost`.
    pub fn erlang(&self) -> String {
        format!("kea_{}@localhost", self.name)
    }
}

fn script() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/rabbitmq")
}

/// Node names to stop when the process exits.
static STARTED: Mutex<Vec<String>> = Mutex::new(Vec::new());

extern "C" fn stop_all() {
    // Taken: a second call (at exit, after a failed start) stops nothing twice.
    let names = STARTED
        .lock()
        .map(|mut n| std::mem::take(&mut *n))
        .unwrap_or_default();
    let stops: Vec<_> = names
        .iter()
        .filter_map(|n| Command::new(script()).args(["stop", n]).spawn().ok())
        .collect();
    for mut s in stops {
        let _ = s.wait();
    }
}

fn start_node(node: &Node, cookie: &str) -> Result<(), String> {
    let out = Command::new(script())
        .args(["start", &node.name, &node.port.to_string()])
        .env("KEA_RABBITMQ_COOKIE", cookie)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// How long joining the nodes may take in all.
const JOIN_DEADLINE: Duration = Duration::from_secs(300);
/// The limit of one `rabbitmqctl` call while joining.
const JOIN_STEP: Duration = Duration::from_secs(45);

/// Joins `node` to the cluster of `seed_name` (Erlang node `seed`) and
/// starts its app. A node the seed already counts as a member (an earlier
/// attempt joined, then failed to start) is only started: resetting it
/// would leave the two disagreeing (`inconsistent_cluster`). Any other
/// node is reset first, which a failed join needs before it can try again.
fn join(node: &Node, seed_name: &str, seed: &str) -> Result<(), String> {
    let ctl = |args: &[&str]| super::try_rabbitmqctl_for(&node.name, args, JOIN_STEP);
    let member = super::try_rabbitmqctl_for(seed_name, &["cluster_status"], JOIN_STEP)?
        .contains(&node.erlang());
    if !member {
        ctl(&["stop_app"])?;
        ctl(&["force_reset"])?;
        ctl(&["join_cluster", seed])?;
    }
    ctl(&["start_app"])?;
    ctl(&["await_startup", "--timeout", "40"])?;
    Ok(())
}

/// The last lines of `node`'s log, for an error (its files go when it stops).
fn log_tail(node: &Node) -> String {
    let path = format!(
        "{}/.deps/rabbitmq/{}/log/{}.log",
        env!("CARGO_MANIFEST_DIR"),
        node.name,
        node.erlang()
    );
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

impl RabbitCluster {
    /// The cluster of this test binary: `n` nodes, started and joined on
    /// first use (about 30 s), shared by every test after. When that fails,
    /// every test that asks for it fails with the same error at once (the
    /// nodes are stopped; nothing retries with half-made ones).
    pub fn shared(n: usize) -> &'static RabbitCluster {
        Self::shared_as("", n)
    }

    /// [`RabbitCluster::shared`] with `tag` in the node names, so that two
    /// test binaries running at once never share a node (`rabbitmqctl
    /// stop_app` on one's broker leaves the other's alone). One node makes
    /// a private broker.
    pub fn shared_as(tag: &str, n: usize) -> &'static RabbitCluster {
        static CLUSTER: OnceLock<Result<RabbitCluster, String>> = OnceLock::new();
        match CLUSTER.get_or_init(|| Self::start(tag, n)) {
            Ok(c) => c,
            Err(e) => panic!("the rabbitmq cluster did not form: {e}"),
        }
    }

    fn start(tag: &str, n: usize) -> Result<Self, String> {
        let prefix = std::env::var("KEA_CLUSTER_PREFIX")
            .unwrap_or_else(|_| format!("cl{}", std::process::id()));
        let prefix = format!("{prefix}{tag}");
        let cookie = format!("KEACLUSTER{}", std::process::id());
        let nodes: Vec<Node> = (0..n)
            .map(|i| Node {
                name: format!("{prefix}{}", (b'a' + i as u8) as char),
                port: free_port(),
            })
            .collect();
        {
            let mut started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
            if started.is_empty() {
                // SAFETY: registers a plain function to run at exit.
                unsafe {
                    libc::atexit(stop_all);
                }
            }
            started.extend(nodes.iter().map(|n| n.name.clone()));
        }
        let t = Instant::now();
        let booted = Self::form(&nodes, &cookie).inspect_err(|_| stop_all())?;
        eprintln!(
            "rabbitmq cluster of {n} nodes: started in {:.1} s, joined {:.1} s later",
            booted.as_secs_f64(),
            (t.elapsed() - booted).as_secs_f64()
        );
        Ok(Self { nodes, cookie })
    }

    /// Starts the nodes in parallel, then joins them to the first one after
    /// the other: Mnesia cannot merge two joins into the same schema at once
    /// (`combine_error`), and a join that failed leaves the node to be
    /// reset before it can try again. Returns how long the start took.
    fn form(nodes: &[Node], cookie: &str) -> Result<Duration, String> {
        let t = Instant::now();
        std::thread::scope(|s| {
            let handles: Vec<_> = nodes
                .iter()
                .map(|node| s.spawn(|| start_node(node, cookie)))
                .collect();
            for (h, node) in handles.into_iter().zip(nodes) {
                h.join()
                    .map_err(|_| format!("start {}: the thread panicked", node.name))?
                    .map_err(|e| format!("start {}: {e}", node.name))?;
            }
            Ok::<(), String>(())
        })?;
        let booted = t.elapsed();
        let seed = nodes[0].erlang();
        // The whole joining has one deadline; each call a short limit.
        let deadline = Instant::now() + JOIN_DEADLINE;
        for node in &nodes[1..] {
            let mut errors = Vec::new();
            loop {
                match join(node, &nodes[0].name, &seed) {
                    Ok(()) => break,
                    Err(e) => errors.push(format!("attempt {}: {e}", errors.len() + 1)),
                }
                if errors.len() == 3 || Instant::now() >= deadline {
                    return Err(format!(
                        "{} could not join {seed}: {}; its log ends: {}",
                        node.name,
                        errors.join("; "),
                        log_tail(node)
                    ));
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            if !errors.is_empty() {
                eprintln!("{} joined {seed} after: {}", node.name, errors.join("; "));
            }
        }
        let status = try_rabbitmqctl(&nodes[0].name, &["cluster_status"])?;
        for node in nodes {
            if !status.contains(&node.erlang()) {
                return Err(format!("{} is not in the cluster: {status}", node.name));
            }
        }
        Ok(booted)
    }

    /// The address list of every node, `127.0.0.1:port,...`.
    pub fn host_list(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node serving `port`.
    pub fn node_at(&self, port: u16) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .expect("a node of the cluster")
    }

    /// The nodes holding a connection whose client properties (the
    /// connection name the client gave) contain `needle`, as
    /// `rabbitmqctl list_connections pid client_properties` shows them (it
    /// lists the connections of the whole cluster; a pid names its node).
    pub fn nodes_with_connection(&self, needle: &str) -> Vec<&Node> {
        let out = self
            .nodes
            .iter()
            .find_map(|n| {
                try_rabbitmqctl(
                    &n.name,
                    &["list_connections", "-q", "pid", "client_properties"],
                )
                .ok()
            })
            .unwrap_or_default();
        self.nodes
            .iter()
            .filter(|n| {
                let pid = format!("<{}.", n.erlang());
                out.lines()
                    .any(|l| l.contains(needle) && l.starts_with(&pid))
            })
            .collect()
    }

    /// Brings a stopped (`stop_app`) or killed node back, and waits until it
    /// runs in the cluster again.
    pub fn revive(&self, node: &Node) {
        if try_rabbitmqctl(&node.name, &["start_app"]).is_err() {
            start_node(node, &self.cookie).unwrap_or_else(|e| panic!("restart {}: {e}", node.name));
        }
        super::rabbitmqctl(&node.name, &["await_startup", "--timeout", "120"]);
    }
}
