//! A Redis Cluster of real servers on loopback, built with
//! `redis-cli --cluster create`, and a small slot-aware writer.

use super::server::{Kind, Server};
use super::wait_for;
use redis_keyspace_amqp::slots::key_slot;
use std::time::Duration;

/// A running cluster.
pub struct Cluster {
    /// The nodes, masters first as created.
    pub nodes: Vec<Server>,
}

fn cmd(srv: &Server, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(&mut srv.conn())
}

/// Text of a command's reply.
pub fn text(srv: &Server, args: &[&str]) -> String {
    match cmd(srv, args) {
        Ok(redis::Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
        Ok(redis::Value::VerbatimString { text, .. }) => text,
        Ok(redis::Value::SimpleString(s)) => s,
        other => format!("{other:?}"),
    }
}

impl Cluster {
    /// Starts `masters` masters with one replica each, the module loaded on every node.
    pub fn start(kind: Kind, masters: usize, module_args: &[String]) -> Self {
        Self::start_with(kind, masters, module_args, &[])
    }

    /// Like [`Cluster::start`], with extra `--name value` config on every
    /// node (kept for restarts), e.g. AOF and module configs.
    pub fn start_with(
        kind: Kind,
        masters: usize,
        module_args: &[String],
        extra: &[(&str, &str)],
    ) -> Self {
        let mut config = vec![
            ("cluster-enabled", "yes"),
            ("cluster-config-file", "nodes.conf"),
            // Long enough that a loaded CI machine does not fail a master
            // over by mistake; tests that kill one call `fail_fast` first.
            ("cluster-node-timeout", "5000"),
            ("cluster-replica-validity-factor", "0"),
        ];
        config.extend_from_slice(extra);
        let nodes: Vec<Server> = (0..masters * 2)
            .map(|_| Server::start(kind, module_args, &config))
            .collect();
        let mut create = std::process::Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let c = Self { nodes };
        c.wait_ok();
        c
    }

    /// Shortens the node timeout to 1.5 s on every live node, so that a
    /// killed master is failed over quickly.
    pub fn fail_fast(&self) {
        for n in self.nodes.iter().filter(|n| n.pid() != 0) {
            text(n, &["CONFIG", "SET", "cluster-node-timeout", "1500"]);
        }
    }

    /// Waits until every live node reports a healthy cluster and replicas are in sync.
    pub fn wait_ok(&self) {
        wait_for("cluster ok", Duration::from_secs(60), || {
            self.nodes.iter().filter(|n| n.pid() != 0).all(|n| {
                let info = text(n, &["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains("cluster_slots_assigned:16384")
            })
        });
        wait_for("replicas linked", Duration::from_secs(60), || {
            self.nodes.iter().filter(|n| n.pid() != 0).all(|n| {
                let role = text(n, &["INFO", "replication"]);
                role.contains("role:master") || role.contains("master_link_status:up")
            })
        });
    }

    /// Indexes of the nodes that are masters now.
    pub fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i].pid() != 0
                    && text(&self.nodes[i], &["INFO", "replication"]).contains("role:master")
            })
            .collect()
    }

    /// Index of a replica of master `m`.
    pub fn replica_of(&self, m: usize) -> usize {
        let id = self.node_id(m);
        (0..self.nodes.len())
            .find(|&i| {
                i != m
                    && self.nodes[i].pid() != 0
                    && text(&self.nodes[i], &["CLUSTER", "NODES"])
                        .lines()
                        .any(|l| l.contains("myself") && l.split(' ').nth(3) == Some(id.as_str()))
            })
            .expect("a replica")
    }

    /// The cluster node id of node `i`.
    pub fn node_id(&self, i: usize) -> String {
        text(&self.nodes[i], &["CLUSTER", "MYID"])
    }

    /// Slot -> node index, from `CLUSTER NODES` of a live node.
    pub fn slot_map(&self) -> Vec<usize> {
        let live = self
            .nodes
            .iter()
            .find(|n| n.pid() != 0)
            .expect("a live node");
        let nodes = text(live, &["CLUSTER", "NODES"]);
        let mut map = vec![usize::MAX; 16384];
        for line in nodes.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            let port: u16 = f[1]
                .split(['@', ':'])
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let Some(idx) = self.nodes.iter().position(|n| n.port == port) else {
                continue;
            };
            for slot in redis_keyspace_amqp::slots::line_slots(line) {
                map[usize::from(slot)] = idx;
            }
        }
        map
    }

    /// One key per master, each in a slot that master owns now: written
    /// after everything else a test expects, they are the sentinels of
    /// [`Sink::expect_only_sentinels`](super::amqp::Sink::expect_only_sentinels).
    pub fn sentinels(&self, prefix: &str) -> Vec<String> {
        let map = self.slot_map();
        let mut masters: Vec<usize> = map.iter().copied().filter(|&n| n != usize::MAX).collect();
        masters.sort_unstable();
        masters.dedup();
        masters
            .into_iter()
            .map(|m| {
                (0..)
                    .map(|i| format!("{prefix}{i}"))
                    .find(|k| map[usize::from(key_slot(k.as_bytes()))] == m)
                    .expect("a key in one of the master's slots")
            })
            .collect()
    }

    /// SETs every key on the node that owns it, in pipelines, retrying through
    /// redirects and failovers; returns the keys whose write was acknowledged.
    pub fn set_keys(&self, keys: &[String]) -> Vec<String> {
        let mut acked = Vec::new();
        let mut map = self.slot_map();
        let mut pending: Vec<&String> = keys.iter().collect();
        let mut tries = 0;
        while !pending.is_empty() {
            tries += 1;
            assert!(tries < 600, "cannot write to the cluster");
            let mut groups: Vec<Vec<&String>> = vec![Vec::new(); self.nodes.len()];
            let mut failed = Vec::new();
            for k in pending {
                match map[usize::from(key_slot(k.as_bytes()))] {
                    usize::MAX => failed.push(k),
                    n => groups[n].push(k),
                }
            }
            for (n, group) in groups.into_iter().enumerate() {
                if group.is_empty() {
                    continue;
                }
                let mut pipe = redis::pipe();
                for k in &group {
                    pipe.cmd("SET").arg(k.as_str()).arg("v").ignore();
                }
                let ok = self.nodes[n].pid() != 0
                    && redis::Client::open(self.nodes[n].url())
                        .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
                        .and_then(|mut c| pipe.query::<()>(&mut c))
                        .is_ok();
                if ok {
                    acked.extend(group.into_iter().cloned());
                } else {
                    failed.extend(group);
                }
            }
            if !failed.is_empty() {
                std::thread::sleep(Duration::from_millis(100));
                map = self.slot_map();
            }
            pending = failed;
        }
        acked
    }
}
