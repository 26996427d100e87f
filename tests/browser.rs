//! The browser end-to-end test: the example page (`examples/web/`) in two headless Chromium
//! pages, driven by `playwright-core` from Node (`tests/e2e/browser.test.mjs`), against the
//! `pairchat` binary. The page is served from another origin than the server, with default
//! transports, so CORS on long-polling and the upgrade to WebSocket are both exercised.
//! A screenshot of the chat lands in `target/browser-artifacts/chat.png`.
//!
//! Without `node`/`npm` or Debian's `/usr/bin/chromium` the test prints a loud SKIPPED line and
//! passes, unless `CI` is set: then it fails. The npm packages are installed like the `e2e`
//! suite's (`npm ci` in `tests/e2e` when stale).

mod common;
#[path = "e2e/harness.rs"]
mod harness;

use std::path::Path;
use std::time::{Duration, Instant};

use common::process::Proc;

const SUITE: &str = "the browser end-to-end test (tests/e2e/browser.test.mjs)";
/// The browser the test drives (Debian's `chromium` package).
const CHROMIUM: &str = "/usr/bin/chromium";
/// How long the Node test may take (it normally needs a few seconds).
const SUITE_TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn example_page_in_headless_chromium() {
    let Some((node, npm)) = harness::node_and_npm(SUITE) else {
        return;
    };
    if !common::tools::is_executable(Path::new(CHROMIUM)) {
        harness::skip(
            SUITE,
            &format!("{CHROMIUM} not found"),
            "install Debian's chromium package",
        );
        return;
    }
    let _installed = harness::install(&npm);

    let mut server = Proc::start(&[]);
    let url = format!("http://{}", server.addr);
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("browser-artifacts");
    eprintln!("browser: server at {}", url);

    let started = Instant::now();
    let mut cmd = harness::node_test(&node, "browser.test.mjs");
    cmd.env("PAIRCHAT_URL", &url)
        .env("CHROMIUM", CHROMIUM)
        .env("ARTIFACTS_DIR", &artifacts);
    let run = harness::run(cmd, SUITE_TIMEOUT);
    let elapsed = started.elapsed();

    eprintln!("---- node --test output ----\n{}", run.output);
    eprintln!("---- end of node output ({elapsed:.1?}) ----");
    if !run.all_tests_passed() {
        eprintln!("---- server log ----\n{}", server.stop_and_log());
        panic!(
            "the browser end-to-end test failed ({}); its output is above",
            run.describe()
        );
    }
}
