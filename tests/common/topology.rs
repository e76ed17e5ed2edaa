//! Any topology in one call: a single server, a master with a linked
//! replica, or a cluster of masters with one replica each.

use super::cluster::{text, Cluster};
use super::server::{Kind, Server};
use super::wait_for;
use std::time::Duration;

/// The shapes a test can start.
pub struct Topology;

impl Topology {
    /// One server.
    pub fn single(kind: Kind, module_args: &[String], config: &[(&str, &str)]) -> Server {
        Server::start(kind, module_args, config)
    }

    /// A master and a replica of it, both with the module, once the
    /// replication link is up.
    pub fn replicated(
        kind: Kind,
        module_args: &[String],
        config: &[(&str, &str)],
    ) -> (Server, Server) {
        let master = Server::start(kind, module_args, config);
        let of = format!("127.0.0.1 {}", master.port);
        let mut replica_config = config.to_vec();
        replica_config.push(("replicaof", &of));
        let replica = Server::start(kind, module_args, &replica_config);
        wait_for("replica linked", Duration::from_secs(60), || {
            text(&replica, &["INFO", "replication"]).contains("master_link_status:up")
        });
        (master, replica)
    }

    /// A cluster of `masters` masters with one replica each, slots assigned.
    pub fn cluster(kind: Kind, masters: usize, module_args: &[String]) -> Cluster {
        Cluster::start(kind, masters, module_args)
    }
}
