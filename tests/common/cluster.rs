//! A cluster for the tests: a real `redis-server` and `pairchat --redis` nodes on it, as
//! processes; on a failing test, every log is printed. Each test file adds the helpers it
//! needs in an `impl Cluster` of its own.

use std::net::SocketAddr;

use super::chat::{Client, metric, scrape_addr};
use super::process::Proc;
use super::redis::{Redis, Resp, redis_cli, start_node};

/// Flags of every node: no abuse limits (the tests send bursts, and fail joins on purpose, all
/// from one address); the limits themselves are tested in `tests/limits.rs`.
pub const FLAGS: [&str; 4] = ["--join-failures", "0", "--message-rate", "0"];

/// A Redis and nodes on it.
pub struct Cluster {
    pub redis: Redis,
    pub nodes: Vec<Proc>,
}

impl Cluster {
    /// A new Redis and `nodes` nodes with `FLAGS` and `flags`, each with its link up; `None`
    /// (after the loud skip that names `suite`) without `redis-server`.
    pub fn start(suite: &str, nodes: usize, flags: &[&str]) -> Option<Cluster> {
        let redis = Redis::start(suite)?;
        let mut all = FLAGS.to_vec();
        all.extend_from_slice(flags);
        let nodes = (0..nodes).map(|_| start_node(&redis, &all)).collect();
        Some(Cluster { redis, nodes })
    }

    /// Node `node`, counted from 1.
    pub fn node(&mut self, node: usize) -> &mut Proc {
        &mut self.nodes[node - 1]
    }

    pub fn addr(&self, node: usize) -> SocketAddr {
        self.nodes[node - 1].addr.parse().expect("a node address")
    }

    /// A Socket.IO client (WebSocket-only session) of node `node`.
    pub fn client(&self, node: usize) -> Client {
        Client::connect(self.addr(node), None)
    }

    /// One series of node `node`'s `/metrics`.
    pub fn metric(&self, node: usize, series: &str) -> u64 {
        metric(&scrape_addr(self.addr(node)), series)
    }

    /// One command to Redis.
    pub fn redis(&self, args: &[&str]) -> Resp {
        redis_cli(&self.redis.url(), args).expect("redis-cli")
    }

    /// Waits until every node knows the others' addresses (read from Redis every second):
    /// before, a relay or a recovery claim cannot find its node.
    pub fn wait_peers(&self) {
        let addrs: Vec<SocketAddr> = (1..=self.nodes.len()).map(|n| self.addr(n)).collect();
        super::redis::wait_peers(&addrs);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (i, node) in self.nodes.iter_mut().enumerate() {
                let log = node.stop_and_log();
                eprintln!("---- node {} ({}) ----\n{log}", i + 1, node.addr);
            }
            eprintln!("---- redis-server ----\n{}", self.redis.log());
        }
    }
}
