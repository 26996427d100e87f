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

/// Runs the binary with `args` and `env` (nothing else of this process's configuration): its
/// exit status and stderr.
fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("PAIRCHAT_")) || key == "PORT" {
            cmd.env_remove(key);
        }
    }
    let out = cmd
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run pairchat");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A server that cannot start says which setting stops it, as it was given (flag or
/// variable), and the address, in one line, with exit status 1 (a runtime failure: retrying
/// may succeed); a contradiction in the settings is exit status 2, before anything is bound.
#[test]
fn startup_errors_name_the_setting_and_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let in_use = format!("address 127.0.0.1:{port} in use");
    // (arguments, environment, exit status, message)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, i32, String);
    let cases: Vec<Case> =
        vec![
        (
            vec!["--host", "127.0.0.1", "--port", &port],
            vec![],
            1,
            format!("cannot start: --port {port}: {in_use}"),
        ),
        (
            vec!["--host", "127.0.0.1"],
            vec![("PORT", &port)],
            1,
            format!("cannot start: PORT={port}: {in_use}"),
        ),
        (
            vec!["--host", "127.0.0.1"],
            vec![("PAIRCHAT_PORT", &port)],
            1,
            format!("cannot start: PAIRCHAT_PORT={port}: {in_use}"),
        ),
        (
            vec!["--host", "127.0.0.1", "--port", "0", "--metrics-port", &port],
            vec![],
            1,
            format!("cannot start: --metrics-port {port}: {in_use}"),
        ),
        (
            vec!["--host", "nope", "--port", "0"],
            vec![],
            1,
            "cannot start: --host nope: cannot resolve nope (".to_string(),
        ),
        (
            // TEST-NET-3: an address no machine here has.
            vec!["--host", "203.0.113.9", "--port", "0"],
            vec![],
            1,
            "cannot start: --host 203.0.113.9: address 203.0.113.9:0 is not an address of this \
             machine"
                .to_string(),
        ),
        (
            vec!["--metrics", "off", "--metrics-port", "9100"],
            vec![],
            2,
            "pairchat: --metrics off with --metrics-port 9100:".to_string(),
        ),
        (
            vec!["--port", "9100"],
            vec![("PAIRCHAT_METRICS_PORT", "9100")],
            2,
            "pairchat: PAIRCHAT_METRICS_PORT=9100: the same port as --port 9100".to_string(),
        ),
        (
            vec!["--allow-eio3", "--parser", "msgpack"],
            vec![],
            2,
            "pairchat: --allow-eio3 on with --parser msgpack: 2.x clients speak JSON only"
                .to_string(),
        ),
    ];
    for (args, env, status, message) in cases {
        let (code, err) = run(&args, &env);
        assert_eq!(code, Some(status), "{args:?} {env:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?} {env:?}: {err}");
        assert!(
            err.contains(&message),
            "{args:?} {env:?}:\n{err}\nwanted: {message}"
        );
    }
    drop(taken);
}

/// A server that cannot start says so even with logging off, and in JSON when logs are JSON.
#[test]
fn a_startup_error_is_written_whatever_the_log_settings() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let args = ["--host", "127.0.0.1", "--port", &port];
    let (code, err) = run(&[&args[..], &["--log-level", "off"]].concat(), &[]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("ERROR cannot start: --port {port}:")),
        "{err}"
    );
    let (code, err) = run(&[&args[..], &["--log-format", "json"]].concat(), &[]);
    assert_eq!(code, Some(1));
    let v: serde_json::Value = serde_json::from_str(err.trim_end()).expect("one JSON line");
    assert_eq!(v["level"], "error");
    assert_eq!(
        v["msg"],
        format!("cannot start: --port {port}: address 127.0.0.1:{port} in use")
    );
}

#[test]
fn help_says_what_each_exit_status_means() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let statuses = help
        .split("Exit status:")
        .nth(1)
        .expect("an exit status section");
    for status in ["\n  0  ", "\n  1  ", "\n  2  "] {
        assert!(statuses.contains(status), "{status:?} in:\n{statuses}");
    }
}
