//! The operations features of the `pairchat` binary, tested against the real process:
//! `/metrics` (Prometheus text, counters that follow a chat, the process metrics, every family
//! in README.md), who may read it (`--metrics off|local|public`, `--metrics-port`), `/health`,
//! log formats and levels (typed JSON fields, sampled warnings such as a refused CORS origin,
//! the debug lines of a session's life, and that message texts are never logged), and the
//! graceful stop on SIGTERM (clients told, bounded flush, a second SIGTERM exits at once).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::process::{Proc, free_port, non_loopback_ipv4};
use common::{HttpConn, Response as Resp};
use serde_json::Value;
use tungstenite::{Message, WebSocket};

/// How long any single read may take before a test fails.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const EIO_WS: &str = "/socket.io/?EIO=4&transport=websocket";
const EIO_POLLING: &str = "/socket.io/?EIO=4&transport=polling";

// ---- HTTP ----------------------------------------------------------------------------------

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Sends `raw` on a fresh connection and reads one response.
fn request(addr: &str, raw: &str) -> Resp {
    let mut conn = HttpConn::new(connect(addr));
    conn.send(raw.as_bytes());
    conn.response().expect("response")
}

fn get(addr: &str, path: &str) -> Resp {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
}

fn post(addr: &str, path: &str, body: &str) -> Resp {
    request(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// `/health` answers `{"status":"ok","timestamp":<ms>}` with a current timestamp.
fn assert_healthy(addr: &str) {
    let res = get(addr, "/health");
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(res.header("content-type"), Some("application/json"));
    let v: Value = serde_json::from_str(&res.text()).expect("health JSON");
    assert_eq!(v["status"], "ok", "{v}");
    let ts = v["timestamp"].as_u64().expect("numeric timestamp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(ts.abs_diff(now) < 60_000, "timestamp {ts} vs now {now}");
    assert_eq!(
        v.as_object().unwrap().len(),
        2,
        "only status and timestamp: {v}"
    );
}

// ---- metrics -------------------------------------------------------------------------------

/// One scrape: `name{labels}` → value.
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    fn get(&self, key: &str) -> f64 {
        match self.0.get(key) {
            Some(v) => *v,
            None => panic!("{key} missing from /metrics: {:?}", self.0.keys()),
        }
    }

    /// The sum over every label set of `name`.
    fn sum(&self, name: &str) -> f64 {
        self.0
            .iter()
            .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
            .map(|(_, v)| v)
            .sum()
    }
}

/// Whether `key` is `name` or `name{label="value",…}` in the Prometheus text syntax.
fn valid_series(key: &str) -> bool {
    let (name, labels) = match key.split_once('{') {
        Some((n, rest)) => match rest.strip_suffix('}') {
            Some(l) => (n, Some(l)),
            None => return false,
        },
        None => (key, None),
    };
    let ident = |s: &str| {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    if !ident(name) {
        return false;
    }
    let Some(labels) = labels else { return true };
    // Values here hold no quotes, commas or braces, so a plain split is exact.
    labels.split(',').all(|pair| {
        pair.split_once('=').is_some_and(|(k, v)| {
            ident(k) && v.len() >= 2 && v.starts_with('"') && v.ends_with('"')
        })
    })
}

/// Scrapes `/metrics` at `addr`, checking the format of every line.
fn scrape(addr: &str) -> Scrape {
    let res = get(addr, "/metrics");
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(
        res.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    let mut out = BTreeMap::new();
    for line in res.text().lines() {
        if let Some(comment) = line.strip_prefix('#') {
            assert!(
                [
                    " HELP pairchat_",
                    " TYPE pairchat_",
                    " HELP process_",
                    " TYPE process_"
                ]
                .iter()
                .any(|p| comment.starts_with(p)),
                "{line}"
            );
            continue;
        }
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        assert!(valid_series(key), "bad series {key:?}");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("non-numeric value: {line:?}"));
        assert!(out.insert(key.to_string(), value).is_none(), "twice: {key}");
    }
    assert!(!out.is_empty(), "empty /metrics");
    Scrape(out)
}

/// Scrapes until `ok` holds (5 s at most).
fn scrape_until(addr: &str, what: &str, ok: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + READ_TIMEOUT;
    loop {
        let m = scrape(addr);
        if ok(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "never: {what}; last {:?}", m.0);
        thread::sleep(Duration::from_millis(20));
    }
}

// ---- Socket.IO clients ---------------------------------------------------------------------

/// A Socket.IO client on a WebSocket, connected to the main namespace.
struct Sio {
    ws: WebSocket<TcpStream>,
    next_ack: u64,
}

fn websocket(addr: &str, path_and_query: &str) -> WebSocket<TcpStream> {
    let (ws, res) =
        tungstenite::client(format!("ws://{addr}{path_and_query}"), connect(addr)).expect("ws");
    assert_eq!(res.status(), 101);
    ws
}

impl Sio {
    fn connect(addr: &str) -> Sio {
        let mut sio = Sio {
            ws: websocket(addr, EIO_WS),
            next_ack: 0,
        };
        let open = sio.recv();
        assert!(open.starts_with("0{"), "{open}");
        sio.send("40");
        let connected = sio.recv();
        assert!(connected.starts_with("40{\"sid\":"), "{connected}");
        sio
    }

    /// A client that took over a polling session by upgrading (probe, then `5`).
    fn upgrade(addr: &str, sid: &str) -> Sio {
        let mut sio = Sio {
            ws: websocket(addr, &format!("{EIO_WS}&sid={sid}")),
            next_ack: 0,
        };
        sio.send("2probe");
        assert_eq!(sio.recv(), "3probe");
        sio.send("5");
        sio
    }

    fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("websocket send");
    }

    /// The next text message, answering Engine.IO pings.
    fn recv(&mut self) -> String {
        loop {
            match self.ws.read().expect("websocket read") {
                Message::Text(t) if t.as_str() == "2" => self.send("3"),
                Message::Text(t) => return t.to_string(),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("expected text, got {other:?}"),
            }
        }
    }

    /// Emits `event` with `arg` (JSON) asking for an ack; the ack's first argument.
    fn emit(&mut self, event: &str, arg: &str) -> Value {
        self.next_ack += 1;
        let id = self.next_ack;
        self.send(&format!("42{id}[\"{event}\",{arg}]"));
        let prefix = format!("43{id}");
        loop {
            let text = self.recv();
            if let Some(rest) = text.strip_prefix(&prefix)
                && rest.starts_with('[')
            {
                let args: Value = serde_json::from_str(rest).expect("ack JSON");
                return args[0].clone();
            }
        }
    }

    /// The payload of the next `event` received (other packets skipped).
    fn expect_event(&mut self, event: &str) -> Value {
        loop {
            let text = self.recv();
            if let Some(rest) = text.strip_prefix("42") {
                let v: Value = serde_json::from_str(rest).expect("event JSON");
                if v[0] == event {
                    return v[1].clone();
                }
            }
        }
    }

    fn create_room(&mut self) -> String {
        let ack = self.emit("createRoom", "{}");
        ack["code"].as_str().expect("room code").to_string()
    }
}

/// Opens a polling session and connects Socket.IO on it; the sid.
fn polling_connect(addr: &str) -> String {
    let res = get(addr, EIO_POLLING);
    assert_eq!(res.status, 200, "{res:?}");
    let open: Value = serde_json::from_str(res.text().strip_prefix('0').expect("open packet"))
        .expect("open JSON");
    let sid = open["sid"].as_str().unwrap().to_string();
    let path = format!("{EIO_POLLING}&sid={sid}");
    let res = post(addr, &path, "40");
    assert_eq!((res.status, res.text().as_str()), (200, "ok"));
    let res = get(addr, &path);
    assert!(res.text().starts_with("40{\"sid\":"), "{res:?}");
    sid
}

/// Sends a long-poll GET for `sid` and returns the connection, its answer still to come.
/// The poll is parked at the server once this returns.
fn park_poll(addr: &str, sid: &str) -> HttpConn {
    let mut s = connect(addr);
    write!(
        s,
        "GET {EIO_POLLING}&sid={sid} HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    .unwrap();
    // The GET's bytes are queued at the server before this request's: once this is answered,
    // the loop has read the GET (the same turn at the latest).
    assert_eq!(get(addr, "/health").status, 200);
    thread::sleep(Duration::from_millis(50));
    HttpConn::new(s)
}

// ---- /metrics ------------------------------------------------------------------------------

#[test]
fn metrics_are_prometheus_text_and_follow_a_chat() {
    let server = Proc::start(&["--max-payload", "10000"]);
    let addr = server.addr.as_str();
    let m0 = scrape(addr);
    for key in [
        "pairchat_connections{kind=\"http\"}",
        "pairchat_connections{kind=\"websocket\"}",
        "pairchat_sessions{transport=\"polling\"}",
        "pairchat_sessions{transport=\"websocket\"}",
        "pairchat_sessions_opened_total",
        "pairchat_upgrades_total{result=\"ok\"}",
        "pairchat_upgrades_total{result=\"failed\"}",
        "pairchat_rejected_total{reason=\"payload_too_large\"}",
        "pairchat_bytes_in_total",
        "pairchat_bytes_out_total",
        "pairchat_loop_turn_seconds_count",
        "pairchat_loop_turn_seconds_bucket{le=\"+Inf\"}",
        "pairchat_sio_sockets",
        "pairchat_rooms",
        "pairchat_rooms_created_total",
        "pairchat_joins_total",
        "pairchat_messages_total",
        "pairchat_limited_total{limit=\"max_rooms\"}",
        "pairchat_sio_away_sockets",
        "pairchat_recovery_bytes",
        "pairchat_recoveries_total{result=\"recovered\"}",
        "pairchat_recoveries_total{result=\"unknown_session\"}",
        "pairchat_recoveries_total{result=\"missed_events_dropped\"}",
    ] {
        m0.get(key);
    }
    assert_eq!(m0.get("pairchat_sessions_opened_total"), 0.0);
    assert_eq!(m0.get("pairchat_rooms_created_total"), 0.0);
    assert_eq!(m0.get("pairchat_connections{kind=\"websocket\"}"), 0.0);

    // A chat: A creates a room, B joins, A sends a 1000-character message.
    let mut a = Sio::connect(addr);
    let mut b = Sio::connect(addr);
    let code = a.create_room();
    let joined = b.emit("joinRoom", &format!("{{\"code\":\"{code}\"}}"));
    assert_eq!(joined["success"], true, "{joined}");
    let text = "x".repeat(1000);
    let sent = a.emit(
        "sendMessage",
        &format!("{{\"code\":\"{code}\",\"text\":\"{text}\"}}"),
    );
    assert_eq!(sent, serde_json::json!({"success": true}));
    assert_eq!(b.expect_event("newMessage")["text"], text.as_str());

    let m1 = scrape(addr);
    assert_eq!(m1.get("pairchat_sessions_opened_total"), 2.0);
    assert_eq!(m1.get("pairchat_connections{kind=\"websocket\"}"), 2.0);
    assert_eq!(m1.get("pairchat_sessions{transport=\"websocket\"}"), 2.0);
    assert_eq!(m1.get("pairchat_sio_sockets"), 2.0);
    assert_eq!(m1.get("pairchat_rooms_created_total"), 1.0);
    assert_eq!(m1.get("pairchat_rooms"), 1.0);
    assert_eq!(m1.get("pairchat_joins_total"), 1.0);
    assert_eq!(m1.get("pairchat_messages_total"), 1.0);
    let bytes_in = m1.get("pairchat_bytes_in_total") - m0.get("pairchat_bytes_in_total");
    let bytes_out = m1.get("pairchat_bytes_out_total") - m0.get("pairchat_bytes_out_total");
    assert!(bytes_in >= 1000.0, "bytes in grew by {bytes_in}");
    // The message went out to both members.
    assert!(bytes_out >= 2000.0, "bytes out grew by {bytes_out}");

    // Dropped clients leave the gauges but may come back (recovery): their room waits.
    drop(a);
    drop(b);
    scrape_until(addr, "both WebSocket sessions closed", |m| {
        m.get("pairchat_connections{kind=\"websocket\"}") == 0.0
            && m.get("pairchat_sio_sockets") == 0.0
            && m.get("pairchat_sio_away_sockets") == 2.0
            && m.get("pairchat_rooms") == 1.0
            && m.get("pairchat_recovery_bytes") > 2000.0
            && m.sum("pairchat_sessions_closed_total") == 2.0
    });

    // An upgrade from polling counts as ok.
    let sid = polling_connect(addr);
    let m = scrape(addr);
    assert_eq!(m.get("pairchat_sessions{transport=\"polling\"}"), 1.0);
    assert_eq!(m.get("pairchat_sessions_opened_total"), 3.0);
    let mut c = Sio::upgrade(addr, &sid);
    // Answered on the upgraded socket: the `5` was handled before.
    c.create_room();
    let m = scrape(addr);
    assert_eq!(m.get("pairchat_upgrades_total{result=\"ok\"}"), 1.0);
    assert_eq!(m.get("pairchat_upgrades_total{result=\"failed\"}"), 0.0);
    assert_eq!(m.get("pairchat_sessions{transport=\"polling\"}"), 0.0);
    assert_eq!(m.get("pairchat_sessions{transport=\"websocket\"}"), 1.0);
    assert_eq!(m.get("pairchat_rooms_created_total"), 2.0);

    // A polling body over --max-payload is refused with 413 and counted.
    let res = post(
        addr,
        &format!("{EIO_POLLING}&sid={sid}"),
        &"4".repeat(20_000),
    );
    assert_eq!(res.status, 413, "{res:?}");
    let m = scrape(addr);
    assert_eq!(
        m.get("pairchat_rejected_total{reason=\"payload_too_large\"}"),
        1.0
    );
    assert_eq!(m.get("pairchat_sessions_opened_total"), 3.0);
}

#[test]
fn metrics_off_answers_404() {
    let server = Proc::start(&["--metrics", "off"]);
    let res = get(&server.addr, "/metrics");
    assert_eq!(res.status, 404, "{res:?}");
    assert!(!res.text().contains("pairchat_"), "{}", res.text());
    assert_healthy(&server.addr);
}

/// `--metrics off` with a metrics port was silently nothing: now the server refuses to start,
/// naming both settings as they were given.
#[test]
fn metrics_off_with_a_metrics_port_is_a_configuration_error() {
    let port = free_port().to_string();
    for (args, env, named) in [
        (
            vec!["--metrics", "off", "--metrics-port", &port],
            vec![],
            format!("--metrics off with --metrics-port {port}:"),
        ),
        (
            vec!["--metrics-port", &port],
            vec![("PAIRCHAT_METRICS", "off")],
            format!("PAIRCHAT_METRICS=off with --metrics-port {port}:"),
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pairchat"))
            .args(["--port", "0"])
            .args(&args)
            .envs(env)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with(&format!("pairchat: {named}")), "{err}");
        assert!(TcpStream::connect(("127.0.0.1", port.parse().unwrap())).is_err());
    }
}
#[test]
fn metrics_port_serves_metrics_alone_and_the_main_port_the_rest() {
    let port = free_port();
    let server = Proc::start(&["--metrics-port", &port.to_string()]);
    let metrics_addr = format!("127.0.0.1:{port}");
    assert!(
        server
            .log_so_far()
            .contains(&format!("metrics on {metrics_addr}")),
        "{}",
        server.log_so_far()
    );
    // The main port: no /metrics, but /health and Socket.IO.
    let res = get(&server.addr, "/metrics");
    assert_eq!(res.status, 404, "{res:?}");
    assert_healthy(&server.addr);
    let mut a = Sio::connect(&server.addr);
    a.create_room();
    // The metrics port: /metrics (seeing the main port's traffic) and /health, nothing else.
    let m = scrape(&metrics_addr);
    assert_eq!(m.get("pairchat_connections{kind=\"websocket\"}"), 1.0);
    assert_eq!(m.get("pairchat_rooms_created_total"), 1.0);
    assert_healthy(&metrics_addr);
    let res = get(&metrics_addr, EIO_POLLING);
    assert_eq!(res.status, 404, "{res:?}");
    assert_eq!(
        scrape(&metrics_addr).get("pairchat_sessions_opened_total"),
        1.0
    );
}

/// `GET /metrics` with `headers` (each `Name: value\r\n`) on a fresh connection: the status.
fn metrics_status(addr: &str, headers: &str) -> u16 {
    request(
        addr,
        &format!("GET /metrics HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n"),
    )
    .status
}

/// The default, `local`: the host itself may read `/metrics` on the main port, a request a
/// local reverse proxy forwards (it says so in `X-Forwarded-For` or `Forwarded`) and a peer
/// off loopback get 404, as for an unknown path. `/health` is for everyone.
#[test]
fn metrics_local_answers_the_host_only() {
    let server = Proc::start(&["--host", "0.0.0.0"]);
    let local = format!("127.0.0.1:{}", server.port());
    assert_eq!(metrics_status(&local, ""), 200);
    assert_eq!(
        metrics_status(&local, "X-Forwarded-For: 203.0.113.7\r\n"),
        404
    );
    assert_eq!(
        metrics_status(&local, "Forwarded: for=203.0.113.7\r\n"),
        404
    );
    assert_healthy(&local);
    match non_loopback_ipv4() {
        Some(ip) => {
            let remote = format!("{ip}:{}", server.port());
            let res = get(&remote, "/metrics");
            assert_eq!(res.status, 404, "{res:?}");
            assert_eq!(res.text(), get(&remote, "/nothing-here").text());
            assert_healthy(&remote);
        }
        None => eprintln!("no non-loopback IPv4 address here: skipped the remote peer"),
    }
    // `on`, what it was called when it was on or off, is `local`.
    let server = Proc::start(&["--metrics", "on"]);
    assert_eq!(
        metrics_status(&server.addr, "X-Forwarded-For: 203.0.113.7\r\n"),
        404
    );
    assert_eq!(metrics_status(&server.addr, ""), 200);
}

#[test]
fn metrics_public_answers_everyone() {
    let server = Proc::start(&["--host", "0.0.0.0", "--metrics", "public"]);
    let local = format!("127.0.0.1:{}", server.port());
    assert_eq!(
        metrics_status(&local, "X-Forwarded-For: 203.0.113.7\r\n"),
        200
    );
    if let Some(ip) = non_loopback_ipv4() {
        scrape(&format!("{ip}:{}", server.port()));
    }
}

/// The address of the `metrics on …` start line.
fn metrics_line_addr(server: &Proc) -> String {
    let log = server.log_so_far();
    let line = log
        .lines()
        .find(|l| l.contains("metrics on "))
        .unwrap_or_else(|| panic!("no `metrics on` line:\n{log}"));
    line.rsplit("metrics on ").next().unwrap().to_string()
}

/// A metrics port listens on loopback with `--metrics local`, whatever `--host` says (IPv6
/// loopback for an IPv6 host), and on `--host` with `public`.
#[test]
fn a_metrics_port_binds_loopback_unless_public() {
    let port = free_port();
    let server = Proc::start(&["--host", "0.0.0.0", "--metrics-port", &port.to_string()]);
    assert_eq!(metrics_line_addr(&server), format!("127.0.0.1:{port}"));
    scrape(&format!("127.0.0.1:{port}"));
    if let Some(ip) = non_loopback_ipv4() {
        assert!(
            TcpStream::connect((ip, port)).is_err(),
            "reachable off loopback"
        );
    }
    drop(server);

    let port = free_port();
    let server = Proc::start(&[
        "--host",
        "0.0.0.0",
        "--metrics",
        "public",
        "--metrics-port",
        &port.to_string(),
    ]);
    assert_eq!(metrics_line_addr(&server), format!("0.0.0.0:{port}"));
    if let Some(ip) = non_loopback_ipv4() {
        scrape(&format!("{ip}:{port}"));
    }
    drop(server);

    if std::net::TcpListener::bind("[::1]:0").is_err() {
        return eprintln!("no IPv6 loopback here: skipped the IPv6 host");
    }
    let port = free_port();
    let server = Proc::start(&["--host", "::", "--metrics-port", &port.to_string()]);
    assert_eq!(metrics_line_addr(&server), format!("[::1]:{port}"));
    scrape(&format!("[::1]:{port}"));
}

/// The standard process metrics, with the client libraries' names, types and units.
#[test]
fn process_metrics_follow_the_prometheus_conventions() {
    let server = Proc::start(&[]);
    let held: Vec<TcpStream> = (0..20).map(|_| connect(&server.addr)).collect();
    assert_healthy(&server.addr);
    let m = scrape_until(&server.addr, "20 connections held", |m| {
        m.get("pairchat_connections{kind=\"http\"}") >= 20.0
    });
    let text = get(&server.addr, "/metrics").text();
    for (name, kind) in [
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} {kind}:\n{text}"
        );
    }
    let fds = m.get("process_open_fds");
    assert!((20.0..200.0).contains(&fds), "{fds} open fds");
    assert!(m.get("process_max_fds") >= fds);
    let rss = m.get("process_resident_memory_bytes");
    assert!(rss > 100_000.0 && rss < 1e9, "{rss}");
    assert!(m.get("process_virtual_memory_bytes") >= rss);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = m.get("process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 120.0,
        "{started} vs {now}"
    );
    // The CPU time is the kernel's: the same as /proc says for the process, within a tick
    // or two of the scrape.
    let cpu = m.get("process_cpu_seconds_total");
    assert!((0.0..60.0).contains(&cpu), "{cpu}");
    drop(held);
}

/// Every family `/metrics` serves is in README.md's table, and every `pairchat_` name the
/// table lists is served: the documentation cannot drift from the binary.
#[test]
fn every_metric_is_documented_in_the_readme() {
    let readme = include_str!("../README.md");
    let section = readme
        .split("\n### Metrics\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Metrics section in README.md");
    let documented: Vec<&str> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    // Recovery's metrics are there by default; the chat's too.
    let server = Proc::start(&[]);
    let text = get(&server.addr, "/metrics").text();
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(families.len() > 30, "{families:?}");
    for family in &families {
        assert!(
            documented.contains(family),
            "{family} is served but not in README.md's Metrics table"
        );
    }
    for name in documented.iter().filter(|n| n.starts_with("pairchat_")) {
        assert!(
            families.contains(name),
            "{name} is in README.md but not served"
        );
    }
}

#[test]
fn health_is_ok_when_idle() {
    let server = Proc::start(&[]);
    assert_healthy(&server.addr);
    assert_healthy(&server.addr);
}

// ---- logs ----------------------------------------------------------------------------------

#[test]
fn json_logs_are_one_object_per_line() {
    let mut server = Proc::start(&["--log-format", "json"]);
    assert_healthy(&server.addr);
    let mut a = Sio::connect(&server.addr);
    a.create_room();
    server.term();
    assert!(server.wait_exit(READ_TIMEOUT).is_some_and(|s| s.success()));
    let log = server.log_after_exit();
    let mut msgs = Vec::new();
    for line in log.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        let ts = v["ts"].as_str().unwrap_or_else(|| panic!("ts: {line}"));
        assert!(ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T');
        let level = v["level"]
            .as_str()
            .unwrap_or_else(|| panic!("level: {line}"));
        assert!(
            ["error", "warn", "info", "debug"].contains(&level),
            "{line}"
        );
        msgs.push(v["msg"].as_str().expect("msg").to_string());
    }
    let start = msgs.first().expect("a start line");
    assert!(
        start.contains("listening on ") && start.ends_with(&server.addr),
        "{start}"
    );
    assert!(msgs.iter().any(|m| m == "stopping"), "{log}");
    assert_eq!(msgs.last().map(String::as_str), Some("pairchat stopped"));
}

/// Two sockets try to create a room where one may exist: the second is refused.
fn hit_room_limit(addr: &str) {
    let mut a = Sio::connect(addr);
    let mut b = Sio::connect(addr);
    a.create_room();
    assert_eq!(
        b.emit("createRoom", "{}"),
        serde_json::json!({"error": "Server busy"})
    );
}

#[test]
fn log_level_warn_hides_info_but_shows_limits() {
    // The flag wins over $PAIRCHAT_LOG.
    let mut server = Proc::start_quiet(
        free_port(),
        &["--log-level", "warn", "--max-rooms", "1"],
        &[("PAIRCHAT_LOG", "debug")],
    );
    hit_room_limit(&server.addr);
    assert_eq!(
        scrape(&server.addr).get("pairchat_limited_total{limit=\"max_rooms\"}"),
        1.0
    );
    let log = server.stop_and_log();
    assert!(!log.contains("INFO"), "{log}");
    assert!(!log.contains("listening on"), "{log}");
    assert!(!log.contains("pairchat stopped"), "{log}");
    let warns: Vec<&str> = log.lines().collect();
    assert_eq!(warns.len(), 1, "{log}");
    assert!(
        warns[0].contains(" WARN  room limit reached rooms=1"),
        "{log}"
    );
}

#[test]
fn pairchat_log_env_sets_the_level() {
    let mut server = Proc::start_quiet(
        free_port(),
        &["--max-rooms", "1", "--log-format", "json"],
        &[("PAIRCHAT_LOG", "warn")],
    );
    hit_room_limit(&server.addr);
    let log = server.stop_and_log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert_eq!(lines[0]["level"], "warn");
    assert_eq!(lines[0]["msg"], "room limit reached");
    assert_eq!(lines[0]["rooms"], 1, "a number stays a number");
    assert_eq!(lines[0]["occurrences"], 1);
    assert!(
        lines[0]["client"].is_null(),
        "a loopback peer names no client"
    );
}

/// A frontend developer whose page's origin is not allowed sees why in the log: the origin
/// sent and the origins allowed, once a second at most however often it is refused (each
/// refusal is counted in `/metrics`). In JSON, numbers stay numbers.
#[test]
fn a_refused_cors_origin_is_logged_with_what_is_allowed() {
    let mut server = Proc::start(&[
        "--cors-origin",
        "https://chat.example.com,https://staging.example.com",
        "--log-format",
        "json",
    ]);
    let handshake = |origin: &str| {
        request(
            &server.addr,
            &format!(
                "GET {EIO_POLLING} HTTP/1.1\r\nHost: localhost\r\nOrigin: {origin}\r\n\
                 Connection: close\r\n\r\n"
            ),
        )
    };
    for _ in 0..5 {
        assert_eq!(handshake("http://localhost:5173").status, 403);
    }
    assert_eq!(handshake("https://chat.example.com").status, 200);
    assert_eq!(
        scrape(&server.addr).get("pairchat_rejected_total{reason=\"forbidden_origin\"}"),
        5.0
    );
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(handshake("https://evil.example").status, 403);
    let log = server.stop_and_log();
    let refusals: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v| {
            v["msg"]
                .as_str()
                .is_some_and(|m| m.contains("origin refused"))
        })
        .collect();
    assert_eq!(refusals.len(), 2, "the first, then one a second:\n{log}");
    let allowed = "https://chat.example.com,https://staging.example.com";
    assert_eq!(refusals[0]["level"], "warn");
    assert_eq!(refusals[0]["origin"], "http://localhost:5173");
    assert_eq!(refusals[0]["allowed"], allowed);
    assert_eq!(refusals[0]["occurrences"], 1);
    assert_eq!(refusals[1]["origin"], "https://evil.example");
    assert_eq!(
        refusals[1]["occurrences"], 5,
        "itself and the four not logged"
    );
}

/// The same in plain text: one line a developer can read.
#[test]
fn a_refused_cors_origin_in_plain_text() {
    let mut server = Proc::start(&["--cors-origin", "https://chat.example.com"]);
    let res = request(
        &server.addr,
        &format!(
            "GET {EIO_WS} HTTP/1.1\r\nHost: localhost\r\nOrigin: http://localhost:3001\r\n\
             Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ),
    );
    assert_eq!(res.status, 403);
    let log = server.stop_and_log();
    assert!(
        log.lines().any(|l| l.contains(
            " WARN  browser origin refused (403): not in --cors-origin \
             origin=http://localhost:3001 allowed=https://chat.example.com occurrences=1"
        )),
        "{log}"
    );
}

/// `--log-level debug` follows each session: opened (sid, transport, peer), its upgrade, its
/// Socket.IO socket, closed (reason, transport, duration). JSON fields keep their types.
#[test]
fn debug_logs_follow_a_session_from_open_to_close() {
    let mut server = Proc::start(&["--log-level", "debug", "--log-format", "json"]);
    let sid = polling_connect(&server.addr);
    let mut c = Sio::upgrade(&server.addr, &sid);
    c.create_room();
    drop(c);
    scrape_until(&server.addr, "the session closed", |m| {
        m.sum("pairchat_sessions_closed_total") == 1.0
    });
    let log = server.stop_and_log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let find = |msg: &str| {
        lines
            .iter()
            .find(|v| v["msg"] == msg && v["sid"].as_str().is_none_or(|s| s == sid))
            .unwrap_or_else(|| panic!("no {msg:?} line:\n{log}"))
    };
    let opened = find("session opened");
    assert_eq!(opened["level"], "debug");
    assert_eq!(opened["sid"], sid.as_str());
    assert_eq!(opened["transport"], "polling");
    assert_eq!(opened["peer"], "127.0.0.1");
    assert!(opened["client"].is_null(), "loopback: no client address");
    find("upgrade to websocket begun");
    find("session upgraded to websocket");
    let socket = find("socket connected");
    assert_eq!(socket["nsp"], "/");
    assert_eq!(socket["recovered"], false);
    assert_eq!(socket["session"], opened["session"]);
    let closed = find("session closed");
    assert_eq!(closed["reason"], "transport_close");
    assert_eq!(closed["transport"], "websocket");
    assert!(closed["duration_ms"].is_u64(), "{closed}");
}

/// At the session cap, a refused session is logged (sampled) with the counts and the cap.
#[test]
fn a_503_at_the_session_cap_is_logged() {
    // Polling sessions hold no connection between requests: the session cap is met while
    // connections are few (at the connection cap new sessions are refused too, whatever the
    // session count, so the cap is kept above the few connections a closing one lingers on).
    let mut server = Proc::start(&["--max-connections", "5"]);
    // Sessions that spoke (bare handshakes would be reclaimed to make room).
    for _ in 0..5 {
        polling_connect(&server.addr);
    }
    scrape_until(&server.addr, "only the scrape's connection open", |m| {
        m.get("pairchat_connections{kind=\"http\"}") == 1.0
    });
    let res = get(&server.addr, EIO_POLLING);
    assert_eq!(res.status, 503, "{res:?}");
    let log = server.stop_and_log();
    let line = log
        .lines()
        .find(|l| l.contains(" WARN  session refused (503): at --max-connections sessions=5 "))
        .unwrap_or_else(|| panic!("no refusal line:\n{log}"));
    assert!(line.ends_with(" limit=5 occurrences=1"), "{line}");
}

#[test]
fn message_texts_are_never_logged() {
    let mut server = Proc::start(&["--log-level", "debug"]);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let marker = format!("opsmarker{nanos}");
    let mut a = Sio::connect(&server.addr);
    let mut b = Sio::connect(&server.addr);
    let code = a.create_room();
    b.emit("joinRoom", &format!("{{\"code\":\"{code}\"}}"));
    let ack = a.emit(
        "sendMessage",
        &format!("{{\"code\":\"{code}\",\"text\":\"{marker}\"}}"),
    );
    assert_eq!(ack["success"], true, "{ack}");
    assert_eq!(b.expect_event("newMessage")["text"], marker.as_str());
    // Refused texts are not logged either: refused for the room before the text is read, and
    // refused for the text itself.
    let ack = b.emit(
        "sendMessage",
        &format!("{{\"code\":\"000000\",\"text\":\"{marker}\"}}"),
    );
    assert_eq!(ack["error"], "Room not found", "{ack}");
    let long = format!("{marker}{}", "x".repeat(2000));
    let ack = b.emit(
        "sendMessage",
        &format!("{{\"code\":\"{code}\",\"text\":\"{long}\"}}"),
    );
    assert_eq!(ack["error"], "Message text is too long", "{ack}");
    drop((a, b));
    let log = server.stop_and_log();
    assert!(log.contains("listening on"), "{log}");
    assert!(log.contains("pairchat stopped"), "{log}");
    assert!(!log.contains(&marker), "a message text was logged:\n{log}");
}

// ---- stopping ------------------------------------------------------------------------------

#[test]
fn sigterm_tells_every_client_and_exits_0() {
    let mut server = Proc::start(&["--shutdown-timeout", "2s"]);
    let addr = server.addr.clone();
    let mut ws = Sio::connect(&addr);
    ws.create_room();
    let sid = polling_connect(&addr);
    let mut parked = park_poll(&addr, &sid);

    let stop = Instant::now();
    server.term();
    // The WebSocket client: the Engine.IO close packet, then a close frame (going away).
    assert_eq!(ws.recv(), "1");
    match ws.ws.read() {
        Ok(Message::Close(Some(frame))) => {
            assert_eq!(
                frame.code,
                tungstenite::protocol::frame::coding::CloseCode::Away
            )
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    // The parked poll: answered with the close packet.
    let res = parked.response().expect("the parked poll answered");
    assert_eq!((res.status, res.text().as_str()), (200, "1"));

    let status = server
        .wait_exit(Duration::from_secs(3))
        .expect("exited within the shutdown timeout");
    assert!(status.success(), "{status:?}");
    assert!(stop.elapsed() < Duration::from_secs(3));
    let log = server.log_after_exit();
    assert!(log.contains("stopping sessions=2"), "{log}");
    assert!(
        log.lines()
            .last()
            .is_some_and(|l| l.ends_with("INFO  pairchat stopped")),
        "{log}"
    );
    // Nothing listens any more.
    assert!(TcpStream::connect(&addr).is_err());
}

/// A WebSocket client that reads nothing while about 14 MB are sent to it: the server keeps
/// most of that queued (the kernel buffers hold a few MB at most). The client must be kept.
fn stuck_client(addr: &str) -> Sio {
    let mut stuck = Sio::connect(addr);
    let mut sender = Sio::connect(addr);
    let code = stuck.create_room();
    let joined = sender.emit("joinRoom", &format!("{{\"code\":\"{code}\"}}"));
    assert_eq!(joined["success"], true);
    let text = "y".repeat(900_000);
    let packet = format!("{{\"code\":\"{code}\",\"text\":\"{text}\"}}");
    for _ in 0..16 {
        assert_eq!(sender.emit("sendMessage", &packet)["success"], true);
    }
    stuck
}

/// Flags for [`stuck_client`]: big messages, no rate limit or history, no slow-consumer drop.
const STUCK_FLAGS: [&str; 10] = [
    "--max-payload",
    "2000000",
    "--max-message-chars",
    "1000000",
    "--message-rate",
    "0",
    "--max-history",
    "0",
    "--max-buffer",
    "100000000",
];

#[test]
fn shutdown_timeout_bounds_the_flush() {
    let mut server = Proc::start(&[&STUCK_FLAGS[..], &["--shutdown-timeout", "1s"]].concat());
    let _stuck = stuck_client(&server.addr);
    let stop = Instant::now();
    server.term();
    thread::sleep(Duration::from_millis(500));
    assert!(server.running(), "did not wait for queued output");
    let status = server
        .wait_exit(Duration::from_secs(3))
        .expect("exited after the shutdown timeout");
    let took = stop.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "stopped after {took:?} with a 1 s shutdown timeout"
    );
    let log = server.log_after_exit();
    assert!(log.contains("pairchat stopped"), "{log}");
}

/// SIGINT (Ctrl-C) stops the server the way SIGTERM does.
#[test]
fn sigint_stops_gracefully_too() {
    let mut server = Proc::start(&[]);
    let mut ws = Sio::connect(&server.addr);
    ws.create_room();
    server.signal("INT");
    assert_eq!(ws.recv(), "1");
    let status = server
        .wait_exit(Duration::from_secs(3))
        .expect("exited after SIGINT");
    assert!(status.success(), "{status:?}");
    assert!(server.log_after_exit().contains("pairchat stopped"));
}

/// While a stopping server flushes, new clients are refused at once (not left in the backlog
/// until it exits), and a polling session between two polls finds its connection closed.
#[test]
fn a_stopping_server_refuses_new_connections_during_its_flush() {
    let mut server = Proc::start(&[&STUCK_FLAGS[..], &["--shutdown-timeout", "3s"]].concat());
    let addr = server.addr.clone();
    let _stuck = stuck_client(&addr);
    let sid = polling_connect(&addr);
    // A keep-alive connection between two polls of that session.
    let mut between = HttpConn::new(connect(&addr));
    between.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(between.response().unwrap().status, 200);
    server.term();
    let log_has_stopping = || server.log_so_far().contains("stopping");
    let deadline = Instant::now() + Duration::from_secs(2);
    while !log_has_stopping() {
        assert!(Instant::now() < deadline, "no stopping line");
        thread::sleep(Duration::from_millis(10));
    }
    assert!(
        server.running(),
        "the flush of the stuck client keeps it running"
    );
    let refused = TcpStream::connect(&addr).map_err(|e| e.kind());
    assert_eq!(refused.err(), Some(std::io::ErrorKind::ConnectionRefused));
    // The next poll on the idle keep-alive connection: the connection is closed.
    between.send(format!("GET {EIO_POLLING}&sid={sid} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    assert!(
        between.response().is_err(),
        "a poll was served while stopping"
    );
    let status = server.wait_exit(Duration::from_secs(5)).expect("exited");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_second_sigterm_exits_at_once_with_status_1() {
    let mut server = Proc::start(&[&STUCK_FLAGS[..], &["--shutdown-timeout", "30s"]].concat());
    let _stuck = stuck_client(&server.addr);
    server.term();
    thread::sleep(Duration::from_millis(300));
    assert!(server.running(), "did not wait for queued output");
    let again = Instant::now();
    server.term();
    let status = server
        .wait_exit(Duration::from_secs(2))
        .expect("exited at the second SIGTERM");
    assert!(again.elapsed() < Duration::from_secs(1));
    assert_eq!(status.code(), Some(1), "{status:?}");
    let log = server.log_after_exit();
    assert!(log.contains("stopping"), "{log}");
    assert!(!log.contains("pairchat stopped"), "{log}");
}

#[test]
fn two_quick_sigterms_stop_an_idle_server_promptly() {
    let mut server = Proc::start(&[]);
    assert_healthy(&server.addr);
    server.term();
    server.term();
    let status = server
        .wait_exit(Duration::from_secs(2))
        .expect("exited promptly");
    // An idle server may finish its graceful stop before the second signal lands: then it
    // exits 0 having said so; otherwise the second signal cut it short with 1.
    let log = server.log_after_exit();
    let finished = log.contains("pairchat stopped");
    assert_eq!(status.code(), Some(if finished { 0 } else { 1 }), "{log}");
    assert_eq!(log.matches("stopping").count(), 1, "{log}");
}
