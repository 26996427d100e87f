//! Who counts as a client for the per-address limits (`--max-connections-per-ip` on
//! connections and sessions, the chat's `--join-failures` per address): a peer off loopback by
//! its own address; a proxy `--trust-proxy` names by the address it forwards; a loopback peer
//! it does not name (a reverse proxy on this host, or the operator) not at all. An IPv4 client
//! of a dual-stack listener is its IPv4 address. The real binary over real sockets; the parts
//! that need an address off loopback say so and skip where the machine has none.

mod common;

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::chat::{Client, assert_success, error_of, metric, rejected};
use common::process::{Proc, non_loopback_ipv4};
use common::{HttpConn, READ_TIMEOUT};

const HANDSHAKE: &str = "/socket.io/?EIO=4&transport=polling";
const TOO_MANY_ATTEMPTS: &str = "Too many attempts, retry later";

fn connect(addr: SocketAddr) -> HttpConn {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    HttpConn::new(s)
}

fn forwarded(xff: Option<&str>) -> String {
    xff.map_or_else(String::new, |a| format!("X-Forwarded-For: {a}\r\n"))
}

/// A new keep-alive connection and the status of a `GET /health` on it (claiming `xff`).
fn hold(addr: SocketAddr, xff: Option<&str>) -> (HttpConn, u16) {
    let mut c = connect(addr);
    c.send(format!("GET /health HTTP/1.1\r\nHost: x\r\n{}\r\n", forwarded(xff)).as_bytes());
    let status = c.response().expect("an answer").status;
    (c, status)
}

/// `n` polling handshakes on one keep-alive connection (so only the session limit applies):
/// their statuses, up to the first refusal (which closes the connection).
fn handshakes(addr: SocketAddr, xff: Option<&str>, n: usize) -> Vec<u16> {
    let mut c = connect(addr);
    let mut statuses = Vec::new();
    for _ in 0..n {
        c.send(
            format!(
                "GET {HANDSHAKE} HTTP/1.1\r\nHost: x\r\n{}\r\n",
                forwarded(xff)
            )
            .as_bytes(),
        );
        let status = c.response().expect("an answer").status;
        statuses.push(status);
        if status != 200 {
            break;
        }
    }
    statuses
}

fn scrape(local: SocketAddr) -> String {
    let mut c = connect(local);
    c.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let res = c.response().expect("metrics");
    assert_eq!(res.status, 200);
    res.text()
}

fn local(server: &Proc) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], server.port()))
}

/// Two failed joins (`2/m` in these tests) use up a budget.
fn fail_twice(c: &mut Client) {
    for _ in 0..2 {
        assert_eq!(error_of(&c.join("12")), "Invalid room code");
    }
}

#[test]
fn a_loopback_peer_is_not_limited_per_address() {
    let server = Proc::start(&["--max-connections-per-ip", "1", "--join-failures", "2/m"]);
    let addr = local(&server);
    let open: Vec<HttpConn> = (0..3)
        .map(|_| {
            let (c, status) = hold(addr, None);
            assert_eq!(status, 200, "connections are not counted");
            c
        })
        .collect();
    assert_eq!(handshakes(addr, None, 3), [200, 200, 200], "nor sessions");

    // Nor failed joins: each socket has its own budget, the address none.
    let mut host = Client::connect(addr, None);
    let code = host.create_room();
    let mut a = Client::connect(addr, None);
    let mut b = Client::connect(addr, None);
    fail_twice(&mut a);
    assert_eq!(error_of(&a.join(&code)), TOO_MANY_ATTEMPTS);
    assert_success(&b.join(&code));

    let m = scrape(addr);
    assert_eq!(metric(&m, &rejected("per_ip_limit")), 0, "{m}");
    drop(open);
}

#[test]
fn a_proxy_named_in_trust_proxy_is_limited_by_the_address_it_forwards() {
    let server = Proc::start(&[
        "--trust-proxy",
        "127.0.0.1",
        "--max-connections-per-ip",
        "1",
    ]);
    let addr = local(&server);
    let client = Some("203.0.113.7");
    let (_first, status) = hold(addr, client);
    assert_eq!(status, 200);
    let (mut second, status) = hold(addr, client);
    assert_eq!(status, 503, "a second connection for the same client");
    assert!(second.closed());
    let (_other, status) = hold(addr, Some("203.0.113.8"));
    assert_eq!(status, 200, "another client");
    // Sessions, on one connection of another client: the second is refused.
    assert_eq!(handshakes(addr, Some("198.51.100.1"), 3), [200, 503]);
    // The proxy's own requests name no client: not limited.
    let (_own, status) = hold(addr, None);
    assert_eq!(status, 200);
    assert_eq!(handshakes(addr, None, 3), [200, 200, 200]);
    assert_eq!(metric(&scrape(addr), &rejected("per_ip_limit")), 2);
}

/// `--trust-proxy` naming another proxy does not make loopback a client: a loopback peer it
/// does not name is exempt (and what it forwards is not believed).
#[test]
fn a_loopback_peer_trust_proxy_does_not_name_stays_exempt() {
    let server = Proc::start(&["--trust-proxy", "10.9.8.7", "--max-connections-per-ip", "1"]);
    let addr = local(&server);
    let open: Vec<HttpConn> = (0..3)
        .map(|_| {
            let (c, status) = hold(addr, Some("203.0.113.7"));
            assert_eq!(status, 200);
            c
        })
        .collect();
    assert_eq!(handshakes(addr, Some("203.0.113.7"), 3), [200, 200, 200]);
    drop(open);
}

/// A peer off loopback is limited by its own address: connections, sessions, and the failed
/// joins of every socket it opens together.
#[test]
fn a_direct_peer_off_loopback_is_limited_by_its_address() {
    let Some(ip) = non_loopback_ipv4() else {
        return eprintln!("no non-loopback IPv4 address here: skipped");
    };
    let server = Proc::start(&["--host", "0.0.0.0", "--max-connections-per-ip", "1"]);
    let addr = SocketAddr::new(ip, server.port());
    let (first, status) = hold(addr, None);
    assert_eq!(status, 200);
    let (mut second, status) = hold(addr, None);
    assert_eq!(status, 503);
    assert!(second.closed());
    drop(first);
    // Once the first is gone (the server sees its end), one connection with two sessions.
    let deadline = Instant::now() + READ_TIMEOUT;
    loop {
        let statuses = handshakes(addr, None, 3);
        if statuses == [200, 503] {
            break;
        }
        assert!(Instant::now() < deadline, "{statuses:?}");
        std::thread::sleep(Duration::from_millis(20));
    }

    let server = Proc::start(&["--host", "0.0.0.0", "--join-failures", "2/m"]);
    let addr = SocketAddr::new(ip, server.port());
    let mut host = Client::connect(local(&server), None);
    let code = host.create_room();
    let mut a = Client::connect(addr, None);
    let mut b = Client::connect(addr, None);
    assert_eq!(error_of(&a.join("12")), "Invalid room code");
    assert_eq!(error_of(&b.join("12")), "Invalid room code");
    assert_eq!(
        error_of(&b.join(&code)),
        TOO_MANY_ATTEMPTS,
        "one budget for the address"
    );
}

/// On a dual-stack listener (`--host ::`), an IPv4 client arrives as `::ffff:a.b.c.d`: it is
/// a.b.c.d to every rule, so IPv4 loopback is still loopback (exempt, and local to
/// `/metrics`) and an IPv4 peer is limited by its IPv4 address.
#[test]
fn an_ipv4_client_of_a_dual_stack_listener_is_its_ipv4_address() {
    if std::net::TcpListener::bind("[::]:0").is_err() {
        return eprintln!("no IPv6 here: skipped");
    }
    let server = Proc::start(&["--host", "::", "--max-connections-per-ip", "1"]);
    let addr = local(&server);
    let open: Vec<HttpConn> = (0..3)
        .map(|_| {
            let (c, status) = hold(addr, None);
            assert_eq!(status, 200, "IPv4 loopback through a dual-stack listener");
            c
        })
        .collect();
    scrape(addr);
    if let Some(ip @ IpAddr::V4(_)) = non_loopback_ipv4() {
        let remote = SocketAddr::new(ip, server.port());
        let (_first, status) = hold(remote, None);
        assert_eq!(status, 200);
        let (_second, status) = hold(remote, None);
        assert_eq!(status, 503, "limited by its IPv4 address");
        let mut c = connect(remote);
        c.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        // Refused as over the limit, or (were it not) 404: never the metrics.
        assert_ne!(c.response().map(|r| r.status).ok(), Some(200));
    }
    drop(open);
}
