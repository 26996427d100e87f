//! What the Node-driven suites share (`#[path = "e2e/harness.rs"] mod harness;`, beside
//! `mod common;`): finding Node, the loud skip (`common::tools`), `npm ci` under a lock, running
//! a child with a timeout. The `pairchat` binary itself runs as `common::process::Proc`.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

// Every suite that includes this file declares `mod common;` at its root.
use crate::common::tools::find_program;
pub use crate::common::tools::skip;

/// How long `npm ci` may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);
/// The oldest Node whose test runner the suites are written for.
pub const MIN_NODE_MAJOR: u32 = 20;

/// `tests/e2e`: the Node suites, their `package.json` and `node_modules`.
pub fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("e2e")
}

/// `node` (at least [`MIN_NODE_MAJOR`]) and `npm` from `PATH`, or `None` after [`skip`].
pub fn node_and_npm(suite: &str) -> Option<(PathBuf, PathBuf)> {
    let fix = format!("install Node {MIN_NODE_MAJOR}+ and npm");
    let (Some(node), Some(npm)) = (find_program("node"), find_program("npm")) else {
        skip(suite, "node/npm not found on PATH", &fix);
        return None;
    };
    let version = Command::new(&node)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let major = version
        .strip_prefix('v')
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(m) if m >= MIN_NODE_MAJOR => Some((node, npm)),
        _ => {
            let why = format!(
                "node {version:?} at {} is not Node {MIN_NODE_MAJOR}+",
                node.display()
            );
            skip(suite, &why, &fix);
            None
        }
    }
}

/// Installs the suites' npm packages if needed and returns the lock file held shared: keep it
/// while a suite runs, so no concurrent `cargo test` replaces `node_modules` under it.
pub fn install(npm: &Path) -> File {
    let dir = suite_dir();
    // Serialises installs across concurrent `cargo test` runs sharing this checkout.
    let lock = File::create(dir.join(".npm-ci.lock")).expect("create tests/e2e/.npm-ci.lock");
    lock.lock().expect("lock tests/e2e/.npm-ci.lock");
    npm_ci_if_stale(npm, &dir);
    lock.unlock().expect("unlock tests/e2e/.npm-ci.lock");
    lock.lock_shared()
        .expect("lock tests/e2e/.npm-ci.lock shared");
    lock
}

/// Runs `npm ci` unless `node_modules` is at least as new as `package-lock.json`.
fn npm_ci_if_stale(npm: &Path, dir: &Path) {
    let modified = |p: PathBuf| fs::metadata(p).and_then(|m| m.modified()).ok();
    let lockfile = modified(dir.join("package-lock.json")).expect("tests/e2e/package-lock.json");
    let installed = modified(dir.join("node_modules").join(".package-lock.json"));
    if installed.is_some_and(|t| t >= lockfile) {
        return;
    }
    eprintln!("e2e: npm ci in {}", dir.display());
    let mut cmd = Command::new(npm);
    cmd.args(["ci", "--no-audit", "--no-fund"]).current_dir(dir);
    let run = run(cmd, INSTALL_TIMEOUT);
    assert!(
        run.exited_ok(),
        "npm ci failed ({}):\n{}",
        run.describe(),
        run.output
    );
}

/// Node on the test `file` in `tests/e2e` (its `node:test` cases, spec reporter), with Node's own
/// test settings cleared.
pub fn node_test(node: &Path, file: &str) -> Command {
    let mut cmd = Command::new(node);
    // The file is run as a script, not under `--test`: `--test` counts a file that defines
    // no test at all as one passing test, which would make an empty suite pass.
    cmd.args(["--test-reporter=spec", file])
        .current_dir(suite_dir())
        .env("NO_COLOR", "1")
        .env_remove("NODE_OPTIONS")
        .env_remove("NODE_TEST_CONTEXT");
    cmd
}

/// A finished (or timed-out) child process and everything it wrote.
pub struct Run {
    status: Option<ExitStatus>,
    timed_out: Option<Duration>,
    /// stdout, then stderr under a `---- stderr ----` line.
    pub output: String,
}

impl Run {
    /// The process exited 0 before its timeout.
    pub fn exited_ok(&self) -> bool {
        self.timed_out.is_none() && self.status.is_some_and(|s| s.success())
    }

    /// The process exited 0 and node's test runner reported at least one test, every one of
    /// them passed (a file with no tests at all also exits 0: that is a failure here).
    pub fn all_tests_passed(&self) -> bool {
        let count = |key: &str| {
            // The summary of node's `spec` (`ℹ tests 84`) or `tap` (`# tests 84`) reporter.
            self.output.lines().find_map(|l| {
                let l = l.strip_prefix("ℹ ").or_else(|| l.strip_prefix("# "))?;
                l.strip_prefix(key)?.trim().parse::<u32>().ok()
            })
        };
        let (tests, pass) = (count("tests"), count("pass"));
        self.exited_ok() && tests.is_some_and(|n| n > 0) && pass == tests
    }

    pub fn describe(&self) -> String {
        match (self.timed_out, self.status) {
            (Some(t), _) => format!("killed after the {t:?} timeout"),
            (None, Some(s)) => s.to_string(),
            (None, None) => "no exit status".into(),
        }
    }
}

/// Runs `cmd` with stdout and stderr captured (stderr after stdout), killing it after `timeout`.
pub fn run(mut cmd: Command, timeout: Duration) -> Run {
    let program = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + timeout;
    let mut timed_out = None;
    let status = loop {
        match child.try_wait().expect("wait for a child") {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => {
                timed_out = Some(timeout);
                let _ = child.kill();
                break child.wait().ok();
            }
            None => thread::sleep(Duration::from_millis(20)),
        }
    };
    let mut output = out.join().expect("stdout reader");
    let err = err.join().expect("stderr reader");
    if !err.is_empty() {
        output.push_str("\n---- stderr ----\n");
        output.push_str(&err);
    }
    Run {
        status,
        timed_out,
        output,
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
