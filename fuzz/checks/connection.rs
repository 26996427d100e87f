//! A whole connection: arbitrary bytes written to a real `pairchat::Server` running the chat
//! (HTTP parsing, routing, CORS, Engine.IO polling and WebSocket upgrade, Socket.IO packets and
//! binary reassembly, the chat handlers), then a `GET /health` on a fresh connection must still
//! be answered. A panic on the server thread aborts the process (libFuzzer reports it); a
//! server that stops answering fails the health check.
//!
//! The server starts once per process on 127.0.0.1:0 with short timers, so sessions the inputs
//! open expire within about a second. Every `@SID@` in the input is replaced by the sid of a
//! polling session opened just before, so inputs can reach an established session (sids are
//! random). The input is written in up to three chunks, split at points derived from its
//! bytes, so the server also sees requests cut across reads.
//!
//! Shared by the fuzz target of the same name and by `tests/fuzz_corpus.rs`, which replays
//! the committed seeds and every input that ever failed (`fuzz/regressions/`) in `cargo test`.
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use pairchat::chat::{Chat, ChatConfig};
use pairchat::sio::{SioConfig, SocketIo};
use pairchat::{Config, Server};

const SID_MARK: &[u8] = b"@SID@";
/// How long the input's connection is read after the input was sent (and half-closed).
const DRAIN: Duration = Duration::from_millis(30);
/// How long the health check may take before the server counts as hung.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let config = Config {
            host: "127.0.0.1".into(),
            port: 0,
            ping_interval: Duration::from_millis(300),
            ping_timeout: Duration::from_millis(200),
            upgrade_timeout: Duration::from_millis(500),
            header_timeout: Duration::from_secs(1),
            keep_alive_timeout: Duration::from_secs(1),
            max_payload: 100_000,
            ..Config::default()
        };
        let sio = SioConfig {
            namespaces: vec!["/custom".into()],
            connect_timeout: Duration::from_secs(1),
            // Recovery on, as pairchat runs: restores and away sockets are fuzzed too.
            ..SioConfig::default()
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let app = SocketIo::new(Chat::new(ChatConfig::default()), sio, config.max_payload);
            let mut server = Server::bind(config, app).expect("bind 127.0.0.1:0");
            tx.send(server.local_addr()).expect("the fuzz thread waits");
            let result = server.run();
            panic!("the server loop ended: {result:?}");
        });
        rx.recv().expect("the server started")
    })
}

fn connect(addr: SocketAddr, timeout: Duration) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to the server");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(timeout))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(HEALTH_TIMEOUT))
        .expect("write timeout");
    stream
}

/// Reads until EOF, an error, or `limit` has passed; returns what was read.
fn drain(stream: &mut TcpStream, limit: Duration) -> Result<Vec<u8>, ErrorKind> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.kind()),
        }
    }
    Err(ErrorKind::TimedOut)
}

/// Opens a polling session and returns its sid.
fn open_session(addr: SocketAddr) -> Vec<u8> {
    let mut s = connect(addr, HEALTH_TIMEOUT);
    s.write_all(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n")
        .expect("write the handshake");
    let response = drain(&mut s, HEALTH_TIMEOUT).expect("the handshake is answered");
    let start = find(&response, b"\"sid\":\"").expect("an open packet") + 7;
    let len = find(&response[start..], b"\"").expect("a quoted sid");
    response[start..start + len].to_vec()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn replace_all(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut rest = data;
    while let Some(i) = find(rest, from) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(to);
        rest = &rest[i + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// FNV-1a: split points that follow the input without consuming any of its bytes.
fn hash(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn health(addr: SocketAddr) {
    let mut s = connect(addr, HEALTH_TIMEOUT);
    s.write_all(b"GET /health HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n")
        .expect("write the health check");
    let response = drain(&mut s, HEALTH_TIMEOUT)
        .unwrap_or_else(|e| panic!("the server did not answer GET /health: {e:?}"));
    assert!(
        response.starts_with(b"HTTP/1.1 200 "),
        "GET /health answered {:?}",
        String::from_utf8_lossy(&response)
    );
}

/// The property, on one input.
pub fn check(data: &[u8]) {
    let addr = server();
    let input = if find(data, SID_MARK).is_some() {
        replace_all(data, SID_MARK, &open_session(addr))
    } else {
        data.to_vec()
    };

    let mut s = connect(addr, DRAIN);
    let h = hash(&input);
    let len = input.len() as u64;
    let (mut a, mut b) = ((h % (len + 1)) as usize, ((h >> 32) % (len + 1)) as usize);
    if a > b {
        std::mem::swap(&mut a, &mut b);
    }
    for chunk in [&input[..a], &input[a..b], &input[b..]] {
        if chunk.is_empty() {
            continue;
        }
        // The server may close early (a bad request): later writes then fail, which is fine.
        if s.write_all(chunk).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = s.shutdown(Shutdown::Write);
    let _ = drain(&mut s, DRAIN);
    drop(s);

    health(addr);
}

/// `pairchat_panics_total` of the shared server: the loop catches a panic per connection and
/// goes on, so a replay checks this is still 0.
#[allow(dead_code)] // used by `tests/fuzz_corpus.rs`, not by the fuzz target
pub fn panics_so_far() -> u64 {
    let mut s = connect(server(), HEALTH_TIMEOUT);
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n")
        .expect("write the scrape");
    let response = drain(&mut s, HEALTH_TIMEOUT).expect("/metrics is answered");
    String::from_utf8_lossy(&response)
        .lines()
        .find_map(|l| l.strip_prefix("pairchat_panics_total ")?.parse().ok())
        .expect("a pairchat_panics_total line")
}
