//! Cluster mode end to end: the real npm `socket.io-client` (driven by Node's test runner,
//! `tests/e2e/cluster.test.mjs`) against `pairchat --redis` nodes sharing one real
//! `redis-server`, under the three transport settings: two nodes with one member of each room
//! on each, and three nodes behind a round-robin balancer with no stickiness at all (every
//! connection lands on the next node: polling requests reach nodes that relay them to the
//! session's own).
//!
//! Skipped (loudly) without Node and npm, as `tests/e2e.rs` is, or without `redis-server`, as
//! `tests/cluster.rs` is; under `CI` either is a failure.

mod common;
#[path = "e2e/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use common::balancer::Balancer;
use common::chat::{metric, scrape_addr};
use common::process::Proc;
use common::redis::{Redis, start_node};

const SUITE: &str = "the cluster end-to-end suite (tests/e2e/cluster.test.mjs)";
/// How long the Node suite may take (it normally needs a few seconds).
const SUITE_TIMEOUT: Duration = Duration::from_secs(180);
/// Flags of both nodes: no abuse limits (the three transport suites fail joins on purpose, all
/// from one address); the limits are tested in `tests/limits.rs`.
const FLAGS: [&str; 4] = ["--join-failures", "0", "--message-rate", "0"];

#[test]
fn socket_io_client_across_two_nodes() {
    let Some((node, npm)) = harness::node_and_npm(SUITE) else {
        return;
    };
    let Some(redis) = Redis::start(SUITE) else {
        return;
    };
    let _installed = harness::install(&npm);
    let mut nodes = [start_node(&redis, &FLAGS), start_node(&redis, &FLAGS)];
    let urls = nodes.each_ref().map(|n| format!("http://{}", n.addr));
    eprintln!(
        "cluster_e2e: nodes at {} and {} ({}), Redis at {}",
        urls[0],
        urls[1],
        FLAGS.join(" "),
        redis.url()
    );
    run_suite(&node, [&urls[0], &urls[1]], &mut nodes, &redis);
}

#[test]
fn socket_io_client_through_a_round_robin_balancer() {
    let Some((node, npm)) = harness::node_and_npm(SUITE) else {
        return;
    };
    let Some(redis) = Redis::start(SUITE) else {
        return;
    };
    let _installed = harness::install(&npm);
    let mut nodes = [
        start_node(&redis, &FLAGS),
        start_node(&redis, &FLAGS),
        start_node(&redis, &FLAGS),
    ];
    let backends: [std::net::SocketAddr; 3] = nodes
        .each_ref()
        .map(|n| n.addr.parse().expect("a node address"));
    // Every node must know the others' addresses before a relay can find them (each reads
    // them from Redis every second).
    let started = Instant::now();
    while !backends
        .iter()
        .all(|a| metric(&scrape_addr(*a), "pairchat_cluster_peers") == 2)
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nodes never met"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let balancer = Balancer::start(backends.to_vec());
    let url = format!("http://{}", balancer.addr);
    eprintln!(
        "cluster_e2e: balancer at {url} over 3 nodes, Redis at {}",
        redis.url()
    );
    run_suite(&node, [&url, &url], &mut nodes, &redis);
    let scrapes: Vec<String> = backends.iter().map(|a| scrape_addr(*a)).collect();
    let relays: u64 = scrapes
        .iter()
        .map(|s| metric(s, "pairchat_relays_total"))
        .sum();
    let failed: u64 = scrapes
        .iter()
        .map(|s| metric(s, "pairchat_relays_failed_total"))
        .sum();
    eprintln!("cluster_e2e: {relays} requests relayed between nodes, {failed} failed");
    assert!(
        relays > 0,
        "no request was relayed: the balancer test tested nothing"
    );
    assert_eq!(failed, 0, "relays failed");
}

/// Runs the Node suite with its two members at `urls`; on failure, prints every log.
fn run_suite(node: &std::path::Path, urls: [&str; 2], nodes: &mut [Proc], redis: &Redis) {
    let started = Instant::now();
    let mut cmd = harness::node_test(node, "cluster.test.mjs");
    cmd.env("PAIRCHAT_NODE1_URL", urls[0])
        .env("PAIRCHAT_NODE2_URL", urls[1])
        // lib.mjs reads PAIRCHAT_URL when it is imported; the suite itself names its nodes.
        .env("PAIRCHAT_URL", urls[0]);
    let run = harness::run(cmd, SUITE_TIMEOUT);
    let elapsed = started.elapsed();

    eprintln!("---- node --test output ----\n{}", run.output);
    eprintln!("---- end of node output ({elapsed:.1?}) ----");
    if !run.all_tests_passed() {
        for (i, node) in nodes.iter_mut().enumerate() {
            eprintln!("---- node {} log ----\n{}", i + 1, node.stop_and_log());
        }
        eprintln!("---- redis-server log ----\n{}", redis.log());
        panic!("{SUITE} failed ({}); its output is above", run.describe());
    }
}
