//! The end-to-end suite: the real npm `socket.io-client` (driven by Node's test runner,
//! `tests/e2e/chat.test.mjs`) against two `pairchat` binaries: one with default settings, one
//! with a 1500 ms room TTL and a 250 ms heartbeat for the expiry and heartbeat scenarios.
//!
//! Without `node` and `npm` on `PATH` the test prints a loud SKIPPED line and passes, unless
//! `CI` is set: then it fails. The npm packages are installed with `npm ci` only when
//! `tests/e2e/node_modules` is missing or older than `package-lock.json`.

mod common;
#[path = "e2e/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use common::process::Proc;

const SUITE: &str = "the Node end-to-end suite (tests/e2e/chat.test.mjs)";
/// How long the whole Node suite may take (it normally needs well under 30 s).
const SUITE_TIMEOUT: Duration = Duration::from_secs(180);
/// Flags of the main server: limits raised above what the suite's bursts need (17 invalid
/// codes and 50 messages from one socket); the limits themselves are tested in `tests/limits.rs`.
const MAIN_FLAGS: [&str; 4] = ["--join-failures", "60/m", "--message-rate", "100/s"];
/// Flags of the second server (`PAIRCHAT_EXPIRY_URL`).
const EXPIRY_FLAGS: [&str; 6] = [
    "--room-ttl",
    "1500ms",
    "--ping-interval",
    "250ms",
    "--ping-timeout",
    "1s",
];

#[test]
fn socket_io_client_end_to_end() {
    let Some((node, npm)) = harness::node_and_npm(SUITE) else {
        return;
    };
    let _installed = harness::install(&npm);

    let mut main = Proc::start(&MAIN_FLAGS);
    let mut expiry = Proc::start(&EXPIRY_FLAGS);
    let (main_url, expiry_url) = (
        format!("http://{}", main.addr),
        format!("http://{}", expiry.addr),
    );
    eprintln!(
        "e2e: servers at {} ({}) and {} ({})",
        main_url,
        MAIN_FLAGS.join(" "),
        expiry_url,
        EXPIRY_FLAGS.join(" ")
    );

    let started = Instant::now();
    let mut cmd = harness::node_test(&node, "chat.test.mjs");
    cmd.env("PAIRCHAT_URL", &main_url)
        .env("PAIRCHAT_EXPIRY_URL", &expiry_url);
    let run = harness::run(cmd, SUITE_TIMEOUT);
    let elapsed = started.elapsed();

    eprintln!("---- node --test output ----\n{}", run.output);
    eprintln!("---- end of node output ({elapsed:.1?}) ----");
    if !run.all_tests_passed() {
        eprintln!("---- server logs ----");
        eprintln!("main server:\n{}", main.stop_and_log());
        eprintln!("expiry server:\n{}", expiry.stop_and_log());
        panic!(
            "the Node end-to-end suite failed ({}); its output is above",
            run.describe()
        );
    }
}

/// Other clients (`tests/e2e/clients.test.mjs`) against servers with the default `--parser
/// auto` and `--allow-eio3`: socket.io-msgpack-parser (a msgpack client and a JSON client in
/// one room, a msgpack client's recovery), socket.io-client 3.x and 2.x, under the three
/// transport settings.
#[test]
fn other_clients_end_to_end() {
    const MSGPACK_SUITE: &str = "the other clients' end-to-end suite (tests/e2e/clients.test.mjs)";
    let Some((node, npm)) = harness::node_and_npm(MSGPACK_SUITE) else {
        return;
    };
    let _installed = harness::install(&npm);
    // A heartbeat short enough that a polling client's cut is noticed within 600 ms.
    let flags = [
        &MAIN_FLAGS[..],
        &["--ping-interval", "300ms", "--ping-timeout", "300ms"],
        &["--allow-eio3"],
    ];
    let mut server = Proc::start(&flags.concat());
    let mut expiry = Proc::start(&[&EXPIRY_FLAGS[..], &["--allow-eio3"]].concat());
    let mut cmd = harness::node_test(&node, "clients.test.mjs");
    cmd.env("PAIRCHAT_URL", format!("http://{}", server.addr));
    cmd.env("PAIRCHAT_EXPIRY_URL", format!("http://{}", expiry.addr));
    let run = harness::run(cmd, SUITE_TIMEOUT);
    eprintln!("---- node --test output ----\n{}", run.output);
    if !run.all_tests_passed() {
        eprintln!("---- server log ----\n{}", server.stop_and_log());
        eprintln!("---- expiry server log ----\n{}", expiry.stop_and_log());
        panic!(
            "the other clients' end-to-end suite failed ({}); its output is above",
            run.describe()
        );
    }
}
