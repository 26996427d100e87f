//! Connection state recovery end to end: the real npm `socket.io-client` behind a TCP proxy per
//! client that the Node tests cut (resets and black holes), against `pairchat` binaries with a
//! 300 ms heartbeat so that a black hole is noticed quickly.
//!
//! - `scenarios`: `tests/e2e/recovery.test.mjs`, each scenario under the three transport
//!   settings, against a server with a 10 s recovery window and one with a 1.5 s window.
//! - `soak`: `tests/e2e/recovery-soak.test.mjs`, 200 random cuts while two clients per
//!   transport setting chat, against a server of its own (it checks the server's gauges fall
//!   to zero at the end). It prints the recovery rate and times.
//!
//! Skipped (loudly) without Node and npm, as `tests/e2e.rs` is.

mod common;
#[path = "e2e/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use common::process::Proc;

/// Flags of every server here: a heartbeat short enough that a black hole is noticed within
/// 600 ms, and no message rate limit (the partners send as fast as they can).
const FLAGS: [&str; 6] = [
    "--ping-interval",
    "300ms",
    "--ping-timeout",
    "300ms",
    "--message-rate",
    "0",
];
/// How long each Node file may take (the scenarios need about 20 s, the soak about 40 s).
const SUITE_TIMEOUT: Duration = Duration::from_secs(180);

#[test]
fn scenarios() {
    run_suite(
        "recovery.test.mjs",
        &[("PAIRCHAT_URL", "10s"), ("PAIRCHAT_SHORT_URL", "1500ms")],
    );
}

#[test]
fn soak() {
    run_suite("recovery-soak.test.mjs", &[("PAIRCHAT_URL", "10s")]);
}

/// Starts a server per `(variable, recovery window)` and runs the Node test `file` with each
/// server's URL in its variable.
fn run_suite(file: &str, servers: &[(&str, &str)]) {
    let suite = format!("the recovery end-to-end suite (tests/e2e/{file})");
    let Some((node, npm)) = harness::node_and_npm(&suite) else {
        return;
    };
    let _installed = harness::install(&npm);

    let mut procs: Vec<(String, Proc)> = servers
        .iter()
        .map(|(var, window)| {
            let mut flags = FLAGS.to_vec();
            flags.extend(["--recovery-window", window]);
            let proc = Proc::start(&flags);
            eprintln!("{file}: {var} at {} ({})", proc.addr, flags.join(" "));
            (var.to_string(), proc)
        })
        .collect();

    let started = Instant::now();
    let mut cmd = harness::node_test(&node, file);
    for (var, proc) in &procs {
        cmd.env(var, format!("http://{}", proc.addr));
    }
    let run = harness::run(cmd, SUITE_TIMEOUT);
    let elapsed = started.elapsed();

    eprintln!("---- {file} ----\n{}", run.output);
    eprintln!("---- end of {file} ({elapsed:.1?}) ----");
    if !run.all_tests_passed() {
        for (var, proc) in &mut procs {
            eprintln!("---- server log ({var}) ----\n{}", proc.stop_and_log());
        }
        panic!("{suite} failed ({}); its output is above", run.describe());
    }
}
