//! Cluster mode end to end: the real npm `socket.io-client` (driven by Node's test runner,
//! `tests/e2e/cluster.test.mjs`) against `pairchat --redis` nodes sharing one real
//! `redis-server`, under the three transport settings: two nodes with one member of each room
//! on each, and three nodes behind a round-robin balancer with no stickiness at all (every
//! connection lands on the next node: polling requests reach nodes that relay them to the
//! session's own). A third run (`tests/e2e/cluster-faults.test.mjs`) takes the cluster through
//! its failures, through a control endpoint here: a room expiring for members on two nodes,
//! Redis stopped and started again mid-chat, a node killed with SIGKILL mid-chat.
//!
//! Skipped (loudly) without Node and npm, as `tests/e2e.rs` is, or without `redis-server`, as
//! `tests/cluster.rs` is; under `CI` either is a failure.

mod common;
#[path = "e2e/harness.rs"]
mod harness;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::balancer::Balancer;
use common::chat::{metric, scrape_addr};
use common::process::Proc;
use common::redis::{Redis, start_node, wait_peers};

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
    wait_peers(&backends);
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

/// What the faults suite's nodes and Redis are, shared with its control endpoint.
struct Faults {
    redis: Redis,
    nodes: Vec<Proc>,
}

/// Stops the faults suite's nodes and Redis when dropped.
struct StopAtEnd(Arc<Mutex<Faults>>);

impl Drop for StopAtEnd {
    fn drop(&mut self) {
        let mut faults = self.0.lock().unwrap_or_else(|e| e.into_inner());
        faults.nodes.clear();
        faults.redis.stop();
    }
}

/// Node 1 makes its rooms with this TTL: the suite's expiry scenario waits for it.
const SHORT_ROOM_TTL: &str = "3s";

#[test]
fn socket_io_client_through_expiry_redis_restarts_and_a_killed_node() {
    let suite = "the cluster faults suite (tests/e2e/cluster-faults.test.mjs)";
    let Some((node, npm)) = harness::node_and_npm(suite) else {
        return;
    };
    let Some(redis) = Redis::start(suite) else {
        return;
    };
    let _installed = harness::install(&npm);
    let mut short = FLAGS.to_vec();
    short.extend_from_slice(&["--room-ttl", SHORT_ROOM_TTL]);
    let nodes = vec![
        start_node(&redis, &short),
        start_node(&redis, &FLAGS),
        start_node(&redis, &FLAGS),
    ];
    let urls: Vec<String> = nodes.iter().map(|n| format!("http://{}", n.addr)).collect();
    let addrs: Vec<std::net::SocketAddr> = nodes.iter().map(|n| n.addr.parse().unwrap()).collect();
    wait_peers(&addrs);
    let faults = Arc::new(Mutex::new(Faults { redis, nodes }));
    // The control endpoint's thread keeps its handle for good: the nodes and Redis are stopped
    // here when the test ends (or fails).
    let _stop = StopAtEnd(Arc::clone(&faults));
    let control = control_endpoint(Arc::clone(&faults));
    eprintln!(
        "cluster_e2e: faults suite, nodes at {urls:?} (node 1: --room-ttl {SHORT_ROOM_TTL}), \
         control at {control}"
    );
    let mut cmd = harness::node_test(&node, "cluster-faults.test.mjs");
    for (i, url) in urls.iter().enumerate() {
        cmd.env(format!("PAIRCHAT_NODE{}_URL", i + 1), url);
    }
    cmd.env("PAIRCHAT_CONTROL_URL", format!("http://{control}"))
        .env("PAIRCHAT_URL", &urls[0]);
    let run = harness::run(cmd, SUITE_TIMEOUT);
    eprintln!("---- node --test output ----\n{}", run.output);
    if !run.all_tests_passed() {
        let mut faults = faults.lock().unwrap_or_else(|e| e.into_inner());
        for (i, node) in faults.nodes.iter_mut().enumerate() {
            eprintln!("---- node {} log ----\n{}", i + 1, node.stop_and_log());
        }
        eprintln!("---- redis-server log ----\n{}", faults.redis.log());
        panic!("{suite} failed ({}); its output is above", run.describe());
    }
}

/// A control endpoint for the faults suite on 127.0.0.1: `POST /redis/stop`, `/redis/start`
/// (a new, empty server on the same port) and `/kill/<n>` (SIGKILL of node `n`), each
/// answered `200` once done. It serves until the test ends.
fn control_endpoint(faults: Arc<Mutex<Faults>>) -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the control endpoint");
    let addr = listener.local_addr().expect("its address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            // The rest of the head, up to its blank line (no body).
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let path = line.split(' ').nth(1).unwrap_or("");
            let mut f = faults.lock().unwrap_or_else(|e| e.into_inner());
            let status = match path {
                "/redis/stop" => {
                    f.redis.stop();
                    "200 OK"
                }
                "/redis/start" => {
                    f.redis.restart();
                    "200 OK"
                }
                p => match p
                    .strip_prefix("/kill/")
                    .and_then(|n| n.parse::<usize>().ok())
                {
                    Some(n) if (1..=f.nodes.len()).contains(&n) => {
                        f.nodes[n - 1].signal("KILL");
                        "200 OK"
                    }
                    _ => "404 Not Found",
                },
            };
            drop(f);
            eprintln!("cluster_e2e: control {path}: {status}");
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    addr
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
