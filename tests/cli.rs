//! The `pairchat` binary as an operator meets it: flags, errors, the start line, a clean stop.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_pairchat");

#[test]
fn a_bad_value_is_one_line_naming_the_flag_and_exit_status_2() {
    let out = Command::new(BIN)
        .args(["--ping-interval", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--ping-interval"), "{err}");

    let out = Command::new(BIN)
        .env("PAIRCHAT_MAX_HISTORY", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PAIRCHAT_MAX_HISTORY"));
}

#[test]
fn help_lists_the_flags() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--port",
        "--room-ttl",
        "--cors-origin",
        "--max-payload",
        "PAIRCHAT_PORT",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn serves_health_then_stops_cleanly_on_sigterm() {
    let mut server = common::process::Proc::start(&[]);
    let first = server.log_so_far();
    assert!(
        first.lines().next().is_some_and(|l| l.contains(&format!(
            " INFO  pairchat {} listening on 127.0.0.1:",
            env!("CARGO_PKG_VERSION")
        ))),
        "{first}"
    );
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");

    server.term();
    let code = server
        .wait_exit(Duration::from_secs(10))
        .expect("the server stopped within 10 s of SIGTERM");
    assert!(code.success(), "{code:?}");
    let log = server.log_after_exit();
    assert!(log.contains("pairchat stopped"), "{log}");
}

/// A flag beats the environment, and a variable it overrides is not even read: a hosting
/// platform's odd `PORT` stopped the server even with `--port` given.
#[test]
fn an_overridden_variable_is_not_an_error() {
    // The helper gives `--port 0`.
    let server = common::process::Proc::start_with_env(&[], &[("PORT", "http")]);
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

/// Durations without a unit are refused (`--room-ttl 30` was 30 ms), and so are durations
/// past what deadlines and JavaScript timers hold.
#[test]
fn durations_without_a_unit_or_too_long_exit_2_naming_the_flag() {
    for (flag, value) in [
        ("--room-ttl", "30"),
        ("--header-timeout", "18446744073709551615ms"),
        ("--ping-interval", "600h"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_pairchat"))
            .args([flag, value])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{err}");
    }
}
