//! Finding the programs a suite drives (Node, Redis) and the loud skip when one is missing
//! (`tests/e2e/harness.rs` uses them too).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Prints a banner saying `suite` did not run because of `why` (with `fix`, what to install),
/// straight to the process's stderr; panics instead when `CI` is set.
pub fn skip(suite: &str, why: &str, fix: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"));
    if ci {
        panic!("{suite} cannot run under CI: {why}");
    }
    let banner = format!(
        "\n{stars}\nSKIPPED: {why}\n         {suite} did NOT run;\n         {fix} to run it \
         (set CI to make this fatal)\n{stars}\n\n",
        stars = "*".repeat(72)
    );
    // Not `eprintln!`: the test harness captures that for passing tests, and this must be seen.
    let _ = std::io::stderr().write_all(banner.as_bytes());
}

/// The first executable called `name` on `PATH`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let names: Vec<String> = if cfg!(windows) {
        ["exe", "cmd", "bat"]
            .iter()
            .map(|ext| format!("{name}.{ext}"))
            .collect()
    } else {
        vec![name.to_string()]
    };
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| is_executable(p))
}

/// Whether `path` is a file this user may run.
#[cfg(unix)]
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether `path` is a file this user may run.
#[cfg(not(unix))]
pub fn is_executable(path: &Path) -> bool {
    path.is_file()
}
