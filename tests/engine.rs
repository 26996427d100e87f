//! Engine.IO v4 over real sockets, against the Engine.IO conformance server (echo at
//! `/engine.io/`, pingInterval 300 ms, pingTimeout 200 ms, maxPayload 1e6): handshakes and their
//! errors, messages over polling and WebSocket, heartbeats, duplicate polls, upgrades, closes,
//! invalid packets and CORS. See /work/shared/CONFORMANCE.md for the behaviours the official
//! suite checks.
//!
//! Tests where a ping would race with what they observe run on `calm()`: the same settings with
//! a heartbeat far beyond the test's duration.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::chat::wait_metric;
use common::{HttpConn, Response, TestServer, recv_text, send_text, ws_closed};
use pairchat::Config;
use pairchat::config::CorsOrigins;
use pairchat::conformance::engine_config;
use pairchat::engine::Echo;
use tungstenite::{Message, WebSocket};

const PATH: &str = "/engine.io/";

/// The Engine.IO conformance server.
fn conformance() -> TestServer {
    TestServer::start(engine_config(0), |_| Echo)
}

/// The conformance settings with a heartbeat that never fires during a test.
fn calm() -> TestServer {
    calm_with(|c| c)
}

/// `calm` with some settings changed.
fn calm_with(change: impl FnOnce(Config) -> Config) -> TestServer {
    let config = Config {
        ping_interval: Duration::from_secs(20),
        ping_timeout: Duration::from_secs(20),
        ..engine_config(0)
    };
    TestServer::start(change(config), |_| Echo)
}

/// `calm`, allowing exactly `ORIGIN` (echoed, with credentials).
fn listing_origin() -> TestServer {
    calm_with(|c| Config {
        cors_origins: CorsOrigins::List(vec![ORIGIN.into()]),
        ..c
    })
}

/// A polling session with a GET parked on it.
fn parked_poll(server: &TestServer) -> (String, HttpConn) {
    let (sid, _) = server.open_polling(PATH);
    let parked = start_get(server, &poll_path(&sid));
    server.wait_parked_polls(1);
    (sid, parked)
}

fn poll_path(sid: &str) -> String {
    format!("{PATH}?EIO=4&transport=polling&sid={sid}")
}

fn ws_path(sid: &str) -> String {
    format!("{PATH}?EIO=4&transport=websocket&sid={sid}")
}

/// A polling session and a WebSocket opened for its upgrade (nothing sent on it yet).
fn polling_then_probe_socket(server: &TestServer) -> (String, WebSocket<TcpStream>) {
    let (sid, _) = server.open_polling(PATH);
    let ws = server.websocket(&ws_path(&sid));
    read_timeout(&ws, Duration::from_secs(2));
    (sid, ws)
}

/// Sends a GET without waiting for the answer (a long poll to park).
fn start_get(server: &TestServer, path: &str) -> HttpConn {
    let mut conn = HttpConn::new(server.connect());
    conn.send(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
    conn
}

/// Asserts an Engine.IO error answer: 400 and `{"code":code,"message":message}`.
fn assert_engine_error(res: &Response, code: u64, message: &str) {
    assert_eq!(res.status, 400, "{}", String::from_utf8_lossy(&res.body));
    assert_eq!(res.header("content-type"), Some("application/json"));
    let json = res.json();
    assert_eq!(json["code"], code, "{json}");
    assert_eq!(json["message"], message, "{json}");
}

/// Bounds how long a WebSocket test waits for a frame or a close.
fn read_timeout(ws: &WebSocket<TcpStream>, timeout: Duration) {
    ws.get_ref().set_read_timeout(Some(timeout)).unwrap();
}

/// A raw WebSocket upgrade request for `path_and_query`.
fn upgrade_request(path_and_query: &str) -> String {
    format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    )
}

fn assert_open_packet(open: &serde_json::Value, upgrades: serde_json::Value) {
    let obj = open.as_object().expect("open packet is an object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "maxPayload",
            "pingInterval",
            "pingTimeout",
            "sid",
            "upgrades"
        ]
    );
    let sid = open["sid"].as_str().expect("string sid");
    assert!(!sid.is_empty());
    assert_eq!(open["upgrades"], upgrades);
    assert_eq!(open["pingInterval"], 300);
    assert_eq!(open["pingTimeout"], 200);
    assert_eq!(open["maxPayload"], 1_000_000);
}

// ---- handshakes ----------------------------------------------------------------------------

#[test]
fn polling_handshake_sends_the_open_packet() {
    let server = conformance();
    let (sid, open) = server.open_polling(PATH);
    assert_open_packet(&open, serde_json::json!(["websocket"]));
    // Each handshake is a new session.
    let (other, _) = server.open_polling(PATH);
    assert_ne!(sid, other);
    // Extra query parameters (the JS client's cache buster `t`) are ignored.
    let res = server.get(&format!("{PATH}?EIO=4&transport=polling&t=PZ3x9aB"));
    assert_eq!(res.status, 200);
    assert!(res.text().starts_with("0{"), "{}", res.text());
}

#[test]
fn websocket_handshake_sends_the_open_packet_without_upgrades() {
    let server = conformance();
    let (_ws, open) = server.open_websocket(PATH);
    assert_open_packet(&open, serde_json::json!([]));
}

#[test]
fn missing_or_unsupported_eio_gets_400_code_5() {
    let server = conformance();
    for query in [
        "?transport=polling",
        "?EIO=3&transport=polling",
        "?EIO=abc&transport=polling",
    ] {
        let res = server.get(&format!("{PATH}{query}"));
        assert_engine_error(&res, 5, "Unsupported protocol version");
    }
}

#[test]
fn unknown_transport_gets_400_code_0() {
    let server = conformance();
    for query in ["?EIO=4", "?EIO=4&transport=abc"] {
        let res = server.get(&format!("{PATH}{query}"));
        assert_engine_error(&res, 0, "Transport unknown");
    }
}

#[test]
fn unknown_sid_gets_400_code_1() {
    let server = conformance();
    // Malformed, and well-formed but never issued.
    for sid in ["nope", "AAAAAAAAAAAAAAAAAAAA"] {
        let res = server.get(&poll_path(sid));
        assert_engine_error(&res, 1, "Session ID unknown");
        let res = server.post(&poll_path(sid), "4hello");
        assert_engine_error(&res, 1, "Session ID unknown");
    }
}

#[test]
fn handshake_with_another_method_gets_400_code_2() {
    let server = conformance();
    let res = server.post(&format!("{PATH}?EIO=4&transport=polling"), "4hello");
    assert_engine_error(&res, 2, "Bad handshake method");
    let res = server.request(&format!(
        "PUT {PATH}?EIO=4&transport=polling HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"
    ));
    assert_engine_error(&res, 2, "Bad handshake method");
}

#[test]
fn websocket_upgrade_with_bad_query_gets_http_400() {
    let server = conformance();
    let cases = [
        ("?transport=websocket", 5),
        ("?EIO=abc&transport=websocket", 5),
        ("?EIO=4", 0),
        ("?EIO=4&transport=abc", 0),
        ("?EIO=4&transport=websocket&sid=AAAAAAAAAAAAAAAAAAAA", 1),
    ];
    for (query, code) in cases {
        let mut conn = HttpConn::new(server.connect());
        conn.send(upgrade_request(&format!("{PATH}{query}")).as_bytes());
        let res = conn.response().expect("an HTTP answer to the upgrade");
        assert_eq!(res.status, 400, "{query}");
        assert_eq!(res.json()["code"], code, "{query}");
    }
}

#[test]
fn websocket_transport_without_upgrade_headers_gets_400() {
    let server = conformance();
    let res = server.get(&format!("{PATH}?EIO=4&transport=websocket"));
    assert_engine_error(&res, 3, "Bad request");
}

// ---- messages --------------------------------------------------------------------------------

#[test]
fn polling_echoes_a_text_message() {
    let server = conformance();
    let (sid, _) = server.open_polling(PATH);
    let res = server.post(&poll_path(&sid), "4hello");
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), "ok");
    let res = server.get(&poll_path(&sid));
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), "4hello");
}

#[test]
fn websocket_echoes_a_text_message() {
    let server = conformance();
    let (mut ws, _) = server.open_websocket(PATH);
    send_text(&mut ws, "4hello");
    assert_eq!(recv_text(&mut ws), "4hello");
    send_text(&mut ws, "4h\u{e9}llo w\u{f6}rld");
    assert_eq!(recv_text(&mut ws), "4h\u{e9}llo w\u{f6}rld");
}

#[test]
fn polling_echoes_a_binary_message_as_base64() {
    let server = conformance();
    let (sid, _) = server.open_polling(PATH);
    assert_eq!(server.post(&poll_path(&sid), "bAQID").text(), "ok");
    assert_eq!(server.get(&poll_path(&sid)).text(), "bAQID");
}

#[test]
fn websocket_echoes_a_binary_frame_as_binary() {
    let server = conformance();
    let (mut ws, _) = server.open_websocket(PATH);
    ws.send(Message::binary(vec![1u8, 2, 3, 4])).unwrap();
    match ws.read().unwrap() {
        Message::Binary(data) => assert_eq!(&data[..], &[1, 2, 3, 4]),
        other => panic!("expected a binary frame, got {other:?}"),
    }
}

#[test]
fn polling_echoes_several_packets_joined_by_record_separators() {
    let server = conformance();
    let (sid, _) = server.open_polling(PATH);
    let res = server.post(&poll_path(&sid), "4test1\x1e4test2\x1e4test3");
    assert_eq!(res.text(), "ok");
    assert_eq!(
        server.get(&poll_path(&sid)).text(),
        "4test1\x1e4test2\x1e4test3"
    );
    let res = server.post(&poll_path(&sid), "4hello\x1ebAQIDBA==");
    assert_eq!(res.text(), "ok");
    assert_eq!(server.get(&poll_path(&sid)).text(), "4hello\x1ebAQIDBA==");
}

#[test]
fn a_parked_poll_is_answered_by_a_message() {
    let server = calm();
    let (sid, mut get) = parked_poll(&server);
    assert_eq!(server.post(&poll_path(&sid), "4late").text(), "ok");
    let res = get.response().expect("parked GET answered");
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), "4late");
}

#[test]
fn a_request_pipelined_behind_a_parked_poll_waits_its_turn() {
    let server = calm();
    let (sid, _) = server.open_polling(PATH);
    let mut conn = HttpConn::new(server.connect());
    conn.send(
        format!(
            "GET {} HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n",
            poll_path(&sid)
        )
        .as_bytes(),
    );
    server.wait_parked_polls(1);
    assert_eq!(server.post(&poll_path(&sid), "4first").text(), "ok");
    let poll = conn.response().expect("poll answer");
    assert_eq!(poll.text(), "4first");
    let health = conn.response().expect("health answer");
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
}

#[test]
fn websocket_message_over_max_payload_closes_the_socket() {
    let server = calm_with(|c| Config {
        max_payload: 1000,
        ..c
    });
    let (mut ws, _) = server.open_websocket(PATH);
    read_timeout(&ws, Duration::from_secs(1));
    let fits = format!("4{}", "a".repeat(999));
    send_text(&mut ws, &fits);
    assert_eq!(recv_text(&mut ws), fits);
    send_text(&mut ws, &format!("4{}", "a".repeat(2000)));
    assert!(
        ws_closed(&mut ws),
        "oversized message did not close the socket"
    );
}

/// The loop reads a WebSocket at most 64 KiB per turn: a message several times that size, and a
/// burst of many small messages written at once, arrive whole and in order.
#[test]
fn websocket_messages_larger_than_one_read_and_bursts_arrive_whole_and_in_order() {
    let server = calm();
    let (mut ws, _) = server.open_websocket(PATH);
    read_timeout(&ws, Duration::from_secs(5));
    let big: String = (0..300_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    send_text(&mut ws, &format!("4{big}"));
    assert_eq!(recv_text(&mut ws), format!("4{big}"));
    for i in 0..2000 {
        ws.write(Message::text(format!("4burst {i}")))
            .expect("queue");
    }
    ws.flush().expect("flush");
    for i in 0..2000 {
        assert_eq!(recv_text(&mut ws), format!("4burst {i}"));
    }
}

/// Frames sent right behind the upgrade request are handled at once; what they produce, even
/// more than the frame writer buffers (64 KiB), goes out after the `101` answer, never before.
#[test]
fn frames_behind_the_upgrade_request_are_answered_after_the_101() {
    let server = calm();
    let big = format!("4{}", "u".repeat(100_000));
    // One masked text frame, mask key zero (the payload is sent as is).
    let mut request = upgrade_request(&format!("{PATH}?EIO=4&transport=websocket")).into_bytes();
    request.extend_from_slice(&[0x81, 0xff]);
    request.extend_from_slice(&(big.len() as u64).to_be_bytes());
    request.extend_from_slice(&[0, 0, 0, 0]);
    request.extend_from_slice(big.as_bytes());
    let mut stream = server.connect();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    std::io::Write::write_all(&mut stream, &request).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        std::io::Read::read_exact(&mut stream, &mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&head[..head.len().min(40)])
    );
    let mut ws = WebSocket::from_raw_socket(stream, tungstenite::protocol::Role::Client, None);
    assert!(recv_text(&mut ws).starts_with("0{"));
    assert_eq!(recv_text(&mut ws), big);
}

/// Output that does not fit the socket waits in the server; each time the reader makes room
/// (a writable event) more of it goes out, until all of it has arrived.
#[test]
fn websocket_output_larger_than_the_socket_buffers_reaches_a_late_reader() {
    let server = calm_with(|c| Config {
        max_ws_buffer: 128 << 20,
        ..c
    });
    let (ws, _) = server.open_websocket(PATH);
    read_timeout(&ws, Duration::from_secs(5));
    // 48 MB echoed while the client only writes (from a second handle on the socket): more
    // than loopback's socket buffers hold (receive buffers grow to 32 MB here, send buffers
    // to 4 MB). The server stops reading once its output waits (backpressure), so the writer
    // blocks until the reader starts.
    let chunk = format!("4{}", "e".repeat(64 * 1024));
    let frames: Vec<u8> = {
        let mut client =
            tungstenite::protocol::WebSocketContext::new(tungstenite::protocol::Role::Client, None);
        let mut out = std::io::Cursor::new(Vec::new());
        for _ in 0..768 {
            client
                .write(&mut out, Message::text(chunk.clone()))
                .unwrap();
        }
        client.flush(&mut out).unwrap();
        out.into_inner()
    };
    let mut raw = ws.get_ref().try_clone().unwrap();
    let writer = std::thread::spawn(move || raw.write_all(&frames));
    // Let the server echo everything it can and block on the full socket.
    std::thread::sleep(Duration::from_millis(500));
    let mut ws = ws;
    for i in 0..768 {
        assert_eq!(recv_text(&mut ws).len(), chunk.len(), "echo {i}");
    }
    writer.join().unwrap().expect("all frames written");
}

// ---- heartbeat -------------------------------------------------------------------------------

#[test]
fn polling_get_is_held_until_the_server_pings() {
    let server = conformance();
    let (sid, _) = server.open_polling(PATH);
    for round in 0..2 {
        let start = Instant::now();
        let res = server.get(&poll_path(&sid));
        let waited = start.elapsed();
        assert_eq!(res.status, 200, "round {round}");
        assert_eq!(res.text(), "2", "round {round}");
        assert!(
            waited >= Duration::from_millis(150) && waited < Duration::from_millis(900),
            "round {round}: ping after {waited:?}"
        );
        // The pong keeps the session past pingInterval + pingTimeout.
        assert_eq!(server.post(&poll_path(&sid), "3").text(), "ok");
    }
    assert_eq!(server.post(&poll_path(&sid), "4alive").text(), "ok");
    assert_eq!(server.get(&poll_path(&sid)).text(), "4alive");
}

#[test]
fn polling_session_without_pong_times_out() {
    let server = conformance();
    let (sid, _) = server.open_polling(PATH);
    // pingInterval + pingTimeout = 500 ms.
    std::thread::sleep(Duration::from_millis(650));
    let res = server.get(&poll_path(&sid));
    assert_engine_error(&res, 1, "Session ID unknown");
}

#[test]
fn websocket_pings_and_pongs_keep_the_session() {
    let server = conformance();
    let (mut ws, _) = server.open_websocket(PATH);
    read_timeout(&ws, Duration::from_secs(2));
    for _ in 0..2 {
        assert_eq!(recv_text(&mut ws), "2");
        send_text(&mut ws, "3");
    }
    send_text(&mut ws, "4alive");
    assert_eq!(recv_text(&mut ws), "4alive");
}

#[test]
fn websocket_without_pong_is_closed_after_the_ping_timeout() {
    let server = conformance();
    let (mut ws, _) = server.open_websocket(PATH);
    read_timeout(&ws, Duration::from_secs(2));
    let start = Instant::now();
    assert_eq!(recv_text(&mut ws), "2");
    assert!(ws_closed(&mut ws), "never closed");
    let waited = start.elapsed();
    // Ping at 300 ms, close at 500 ms after the open.
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(1500),
        "closed after {waited:?}"
    );
}

// ---- duplicate polls -------------------------------------------------------------------------

#[test]
fn a_duplicate_poll_gets_400_and_closes_the_session() {
    let server = calm();
    let (sid, mut first) = parked_poll(&server);
    let second = server.get(&poll_path(&sid));
    assert_eq!(second.status, 400);
    let first = first.response().expect("first GET completes");
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "1");
    assert_engine_error(&server.get(&poll_path(&sid)), 1, "Session ID unknown");
}

// ---- upgrade ---------------------------------------------------------------------------------

#[test]
fn upgrade_from_polling_to_websocket() {
    let server = calm();
    let (sid, mut parked) = parked_poll(&server);
    let mut ws = server.websocket(&ws_path(&sid));
    read_timeout(&ws, Duration::from_secs(2));
    send_text(&mut ws, "2probe");
    assert_eq!(recv_text(&mut ws), "3probe");
    // The poll parked before the probe is released with a noop...
    let res = parked.response().expect("parked GET released");
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), "6");
    // ...and a poll during the upgrade is answered with a noop at once.
    let start = Instant::now();
    let res = server.get(&poll_path(&sid));
    assert_eq!(res.text(), "6");
    assert!(start.elapsed() < Duration::from_millis(500));
    send_text(&mut ws, "5");
    send_text(&mut ws, "4hello");
    assert_eq!(recv_text(&mut ws), "4hello");
}

#[test]
fn upgrade_with_the_conformance_timings() {
    // As the official suite does it: no parked poll before the probe.
    let server = conformance();
    let (sid, mut ws) = polling_then_probe_socket(&server);
    send_text(&mut ws, "2probe");
    assert_eq!(recv_text(&mut ws), "3probe");
    let res = server.get(&poll_path(&sid));
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), "6");
    send_text(&mut ws, "5");
    send_text(&mut ws, "4hello");
    // Pings may come now that the session is on the WebSocket.
    loop {
        match recv_text(&mut ws).as_str() {
            "2" => send_text(&mut ws, "3"),
            text => break assert_eq!(text, "4hello"),
        }
    }
}

#[test]
fn messages_echoed_during_the_upgrade_arrive_over_the_websocket() {
    let server = calm();
    let (sid, mut ws) = polling_then_probe_socket(&server);
    send_text(&mut ws, "2probe");
    assert_eq!(recv_text(&mut ws), "3probe");
    // Still polling until `5`: the echo waits in the session's queue.
    assert_eq!(server.post(&poll_path(&sid), "4during").text(), "ok");
    send_text(&mut ws, "5");
    assert_eq!(recv_text(&mut ws), "4during");
}

#[test]
fn polling_requests_after_the_upgrade_get_400() {
    let server = calm();
    let (sid, mut ws) = polling_then_probe_socket(&server);
    // Back to back, without waiting for 3probe.
    send_text(&mut ws, "2probe");
    send_text(&mut ws, "5");
    assert_eq!(recv_text(&mut ws), "3probe");
    let res = server.get(&poll_path(&sid));
    assert_eq!(res.status, 400);
    let res = server.post(&poll_path(&sid), "4hello");
    assert_eq!(res.status, 400);
    send_text(&mut ws, "4hello");
    assert_eq!(recv_text(&mut ws), "4hello");
}

#[test]
fn a_second_websocket_with_the_same_sid_after_the_upgrade_is_closed() {
    let server = calm();
    let (sid, mut ws) = polling_then_probe_socket(&server);
    send_text(&mut ws, "2probe");
    send_text(&mut ws, "5");
    assert_eq!(recv_text(&mut ws), "3probe");
    // Accepted and closed at once, as the reference server does (clients expect a close).
    let url = format!("ws://{}{}", server.addr, ws_path(&sid));
    let stream = server.connect();
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let (mut second, res) = tungstenite::client(url, stream).expect("the handshake completes");
    assert_eq!(res.status(), 101);
    assert!(ws_closed(&mut second), "second WebSocket stays open");
    send_text(&mut ws, "4hello");
    assert_eq!(recv_text(&mut ws), "4hello");
}

#[test]
fn a_failed_probe_leaves_the_polling_session_working() {
    let server = calm();
    let (sid, _) = server.open_polling(PATH);
    let ws = server.websocket(&ws_path(&sid));
    drop(ws);
    wait_metric(&server, "pairchat_upgrades_total{result=\"failed\"}", |n| {
        n == 1
    });
    assert_eq!(server.post(&poll_path(&sid), "4still").text(), "ok");
    assert_eq!(server.get(&poll_path(&sid)).text(), "4still");
}

// ---- close -----------------------------------------------------------------------------------

#[test]
fn close_packet_over_polling_releases_the_parked_poll_and_ends_the_session() {
    let server = calm();
    let (sid, mut parked) = parked_poll(&server);
    let res = server.post(&poll_path(&sid), "1");
    assert_eq!(res.status, 200);
    let res = parked.response().expect("parked GET released");
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), "6");
    assert_engine_error(&server.get(&poll_path(&sid)), 1, "Session ID unknown");
}

#[test]
fn close_packet_over_polling_without_a_parked_poll_ends_the_session() {
    let server = calm();
    let (sid, _) = server.open_polling(PATH);
    assert_eq!(server.post(&poll_path(&sid), "1").status, 200);
    assert_engine_error(&server.get(&poll_path(&sid)), 1, "Session ID unknown");
}

#[test]
fn close_packet_over_websocket_closes_it_at_once() {
    let server = calm();
    let (mut ws, _) = server.open_websocket(PATH);
    read_timeout(&ws, Duration::from_secs(1));
    send_text(&mut ws, "1");
    assert!(ws_closed(&mut ws), "WebSocket open after `1`");
}

/// A message followed at once by the client's FIN (one readiness event for both): the server
/// still sees the end of the stream and closes, instead of waiting for the ping timeout.
#[test]
fn a_message_then_a_half_close_over_websocket_ends_the_connection() {
    let server = calm();
    for _ in 0..20 {
        let (mut ws, _) = server.open_websocket(PATH);
        read_timeout(&ws, Duration::from_secs(1));
        send_text(&mut ws, "4bye");
        ws.get_ref().shutdown(std::net::Shutdown::Write).unwrap();
        assert!(
            ws_closed(&mut ws),
            "WebSocket still open after the client's FIN"
        );
    }
}

// ---- invalid packets -------------------------------------------------------------------------

#[test]
fn invalid_packet_over_polling_closes_the_session() {
    let server = calm();
    let (sid, _) = server.open_polling(PATH);
    // The POST's own status is not specified (the reference answers `ok`).
    let _ = server.post(&poll_path(&sid), "abc");
    assert_engine_error(&server.get(&poll_path(&sid)), 1, "Session ID unknown");
}

#[test]
fn invalid_packet_in_a_payload_closes_a_session_with_a_parked_poll() {
    let server = calm();
    let (sid, mut parked) = parked_poll(&server);
    let _ = server.post(&poll_path(&sid), "4ok\x1ezzz");
    let res = parked.response().expect("parked GET released");
    assert_eq!(res.status, 200);
    // The parked poll ends with a close packet (possibly after the echo of `4ok`).
    assert!(res.text().ends_with('1'), "{:?}", res.text());
    assert_eq!(server.get(&poll_path(&sid)).status, 400);
}

#[test]
fn invalid_packet_over_websocket_closes_it_at_once() {
    let server = calm();
    let (mut ws, _) = server.open_websocket(PATH);
    read_timeout(&ws, Duration::from_secs(1));
    send_text(&mut ws, "abc");
    assert!(ws_closed(&mut ws), "WebSocket open after an invalid packet");
}

// ---- CORS ------------------------------------------------------------------------------------

const ORIGIN: &str = "http://example.com";

fn with_origin(method: &str, path: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nOrigin: {ORIGIN}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn assert_cors(res: &Response) {
    assert_eq!(
        res.header("access-control-allow-origin"),
        Some(ORIGIN),
        "{res:?}"
    );
    assert_eq!(
        res.header("access-control-allow-credentials"),
        Some("true"),
        "{res:?}"
    );
}

#[test]
fn cors_headers_echo_the_origin() {
    let server = listing_origin();
    let res = server.request(&with_origin(
        "GET",
        &format!("{PATH}?EIO=4&transport=polling"),
        "",
    ));
    assert_eq!(res.status, 200);
    assert_cors(&res);
    let sid = serde_json::from_str::<serde_json::Value>(&res.text()[1..]).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_string();
    let res = server.request(&with_origin("POST", &poll_path(&sid), "4hi"));
    assert_eq!(res.text(), "ok");
    assert_cors(&res);
    let res = server.request(&with_origin("GET", &poll_path(&sid), ""));
    assert_eq!(res.text(), "4hi");
    assert_cors(&res);
    // Without an Origin, no CORS headers.
    let res = server.get(&format!("{PATH}?EIO=4&transport=polling"));
    assert_eq!(res.header("access-control-allow-origin"), None);
}

#[test]
fn a_parked_poll_answer_carries_cors_headers() {
    let server = listing_origin();
    let (sid, _) = server.open_polling(PATH);
    let mut parked = HttpConn::new(server.connect());
    parked.send(with_origin("GET", &poll_path(&sid), "").as_bytes());
    server.wait_parked_polls(1);
    assert_eq!(server.post(&poll_path(&sid), "4x").text(), "ok");
    let res = parked.response().expect("parked GET answered");
    assert_eq!(res.text(), "4x");
    assert_cors(&res);
}

/// The default `*` allows any origin the way socket.io's `origin: "*"` does: a literal `*`,
/// never an echoed origin with credentials (any site could then make credentialed requests).
#[test]
fn any_origin_gets_a_literal_star_without_credentials() {
    let server = calm();
    let (sid, _) = server.open_polling(PATH);
    let mut parked = HttpConn::new(server.connect());
    parked.send(with_origin("GET", &poll_path(&sid), "").as_bytes());
    server.wait_parked_polls(1);
    let mut answers = vec![
        server.request(&with_origin(
            "GET",
            &format!("{PATH}?EIO=4&transport=polling"),
            "",
        )),
        server.request(&with_origin("POST", &poll_path(&sid), "4x")),
        server.request(&with_origin(
            "OPTIONS",
            &format!("{PATH}?EIO=4&transport=polling"),
            "",
        )),
        server.request(&with_origin("GET", &poll_path("AAAAAAAAAAAAAAAAAAAA"), "")),
    ];
    answers.push(parked.response().expect("parked GET answered"));
    for res in &answers {
        assert_eq!(
            res.header("access-control-allow-origin"),
            Some("*"),
            "{res:?}"
        );
        assert_eq!(
            res.header("access-control-allow-credentials"),
            None,
            "{res:?}"
        );
    }
    // Even the `null` origin of a sandboxed page or a file: it may read, but not with cookies.
    let res = server.request(&format!(
        "GET {PATH}?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nOrigin: null\r\n\r\n"
    ));
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));
    assert_eq!(res.header("access-control-allow-credentials"), None);
}

#[test]
fn cors_preflight_gets_204_with_methods_and_headers() {
    let server = listing_origin();
    let res = server.request(&format!(
        "OPTIONS {PATH}?EIO=4&transport=polling HTTP/1.1\r\nHost: localhost\r\nOrigin: {ORIGIN}\r\n\
         Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n\r\n"
    ));
    assert_eq!(res.status, 204);
    assert!(res.body.is_empty());
    assert_cors(&res);
    let methods = res
        .header("access-control-allow-methods")
        .expect("Access-Control-Allow-Methods");
    for m in ["GET", "POST"] {
        assert!(methods.contains(m), "{methods}");
    }
    let headers = res
        .header("access-control-allow-headers")
        .expect("Access-Control-Allow-Headers");
    assert!(
        headers.to_ascii_lowercase().contains("content-type"),
        "{headers}"
    );
}

#[test]
fn error_answers_carry_cors_headers() {
    let server = listing_origin();
    for path in [
        format!("{PATH}?EIO=3&transport=polling"),
        format!("{PATH}?EIO=4&transport=abc"),
        poll_path("AAAAAAAAAAAAAAAAAAAA"),
    ] {
        let res = server.request(&with_origin("GET", &path, ""));
        assert_eq!(res.status, 400, "{path}");
        assert_cors(&res);
    }
    let res = server.request(&with_origin(
        "POST",
        &format!("{PATH}?EIO=4&transport=polling"),
        "4x",
    ));
    assert_eq!(res.status, 400);
    assert_cors(&res);
}

#[test]
fn an_origin_outside_the_allowlist_is_refused() {
    let server = TestServer::start(
        Config {
            cors_origins: CorsOrigins::List(vec![ORIGIN.into()]),
            ..engine_config(0)
        },
        |_| Echo,
    );
    let handshake = format!("{PATH}?EIO=4&transport=polling");
    let res = server.request(&with_origin("GET", &handshake, ""));
    assert_eq!(res.status, 200);
    assert_cors(&res);
    let res = server.request(&format!(
        "GET {handshake} HTTP/1.1\r\nHost: localhost\r\nOrigin: http://evil.example\r\n\r\n"
    ));
    assert_eq!(res.status, 403);
    assert_eq!(res.json()["code"], 4);
    assert_eq!(res.header("access-control-allow-origin"), None);
}

/// Cross-site WebSocket hijacking: a page from another origin opens a WebSocket (browsers send
/// its `Origin`, and CORS does not apply to WebSockets). Refused like a polling request, for a
/// new session and for an upgrade of an existing one; so are requests naming a session.
#[test]
fn a_disallowed_origin_cannot_open_or_use_sessions_over_any_transport() {
    let server = listing_origin();
    let evil = "http://evil.example";
    let upgrade = |query: &str, origin: &str| {
        format!(
            "GET {PATH}?EIO=4&transport=websocket{query} HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n\
             Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
    };
    assert_eq!(server.request(&upgrade("", ORIGIN)).status, 101);
    let (sid, _) = server.open_polling(PATH);
    for raw in [
        upgrade("", evil),
        upgrade(&format!("&sid={sid}"), evil),
        format!(
            "GET {} HTTP/1.1\r\nHost: x\r\nOrigin: {evil}\r\n\r\n",
            poll_path(&sid)
        ),
        format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nOrigin: {evil}\r\nContent-Length: 2\r\n\r\n4x",
            poll_path(&sid)
        ),
    ] {
        let res = server.request(&raw);
        assert_eq!(res.status, 403, "{raw}");
        assert_eq!(res.json()["code"], 4);
    }
    // The session saw none of it.
    assert_eq!(server.post(&poll_path(&sid), "4mine").text(), "ok");
    assert_eq!(server.get(&poll_path(&sid)).text(), "4mine");
}

// ---- limits and transport mix-ups ------------------------------------------------------------

/// A client that drops its pending poll has gone away (the reference server and the official
/// suite's "closes the session upon cancelled polling request"): the session ends.
#[test]
fn a_cancelled_parked_poll_closes_the_session() {
    let server = calm();
    let (sid, parked) = parked_poll(&server);
    drop(parked);
    let closed = "pairchat_sessions_closed_total{reason=\"transport_close\"}";
    wait_metric(&server, closed, |n| n == 1);
    let res = server.get(&poll_path(&sid));
    assert_eq!(res.status, 400);
    assert_eq!(res.json()["code"], 1);
}

/// The same, with the next poll sent at once after the cancel (as the suite does).
#[test]
fn a_poll_right_after_a_cancelled_one_gets_400() {
    let server = calm();
    let (sid, parked) = parked_poll(&server);
    drop(parked);
    assert_eq!(server.get(&poll_path(&sid)).status, 400);
}

#[test]
fn an_answered_poll_connection_serves_the_next_poll() {
    let server = calm();
    let (sid, _) = server.open_polling(PATH);
    let mut conn = start_get(&server, &poll_path(&sid));
    for word in ["4one", "4two"] {
        server.wait_parked_polls(1);
        assert_eq!(server.post(&poll_path(&sid), word).text(), "ok");
        let res = conn.response().expect("poll answered");
        assert_eq!(res.text(), word);
        conn.send(format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", poll_path(&sid)).as_bytes());
    }
}

#[test]
fn polling_on_a_websocket_session_gets_400() {
    let server = calm();
    let (mut ws, open) = server.open_websocket(PATH);
    let sid = open["sid"].as_str().unwrap();
    let res = server.get(&poll_path(sid));
    assert_engine_error(&res, 3, "Bad request");
    // The WebSocket session is unaffected.
    send_text(&mut ws, "4still");
    assert_eq!(recv_text(&mut ws), "4still");
}

#[test]
fn polling_output_over_max_poll_buffer_closes_the_session() {
    let server = TestServer::start(
        Config {
            max_poll_buffer: 100,
            ..engine_config(0)
        },
        |_| Echo,
    );
    let (sid, _) = server.open_polling(PATH);
    let _ = server.post(&poll_path(&sid), &format!("4{}", "a".repeat(300)));
    assert_engine_error(&server.get(&poll_path(&sid)), 1, "Session ID unknown");
}

#[test]
fn an_unfinished_upgrade_times_out_and_polling_goes_on() {
    let server = calm_with(|c| Config {
        upgrade_timeout: Duration::from_millis(200),
        ..c
    });
    let (sid, mut ws) = polling_then_probe_socket(&server);
    send_text(&mut ws, "2probe");
    assert_eq!(recv_text(&mut ws), "3probe");
    // Never `5`: the probe socket is dropped after the upgrade timeout.
    let start = Instant::now();
    assert!(ws_closed(&mut ws), "probe WebSocket never closed");
    assert!(start.elapsed() < Duration::from_millis(1500));
    // Polling is back to normal: messages, not noops.
    assert_eq!(server.post(&poll_path(&sid), "4polling").text(), "ok");
    assert_eq!(server.get(&poll_path(&sid)).text(), "4polling");
}

// ---- metrics ---------------------------------------------------------------------------------

/// `/metrics` counts each session's end under its own reason, and refused input under its own.
#[test]
fn closes_and_refusals_are_counted_by_reason() {
    // Pings late enough not to answer the polls below, soon enough to time one session out.
    let server = calm_with(|c| Config {
        ping_interval: Duration::from_millis(1000),
        ping_timeout: Duration::from_millis(200),
        ..c
    });
    let series = |reason: &str| format!("pairchat_sessions_closed_total{{reason=\"{reason}\"}}");
    // transport close: a WebSocket client goes away.
    drop(server.open_websocket(PATH));
    // client close: a close packet.
    let (sid, _) = server.open_polling(PATH);
    assert_eq!(server.post(&poll_path(&sid), "1").text(), "ok");
    // parse error: a body that is no Engine.IO payload (and a malformed refusal).
    let (sid, _) = server.open_polling(PATH);
    assert_eq!(server.post(&poll_path(&sid), "x").status, 400);
    // transport error: two polls at once.
    let (sid, mut parked) = parked_poll(&server);
    assert_eq!(server.get(&poll_path(&sid)).status, 400);
    assert_eq!(parked.response().expect("first poll").text(), "1");
    // ping timeout: a session that never answers its ping.
    server.open_polling(PATH);
    // headers too large.
    let big = format!("GET /health HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
    assert_eq!(server.request(&big).status, 431);

    for reason in [
        "transport_close",
        "client_close",
        "parse_error",
        "transport_error",
        "ping_timeout",
    ] {
        wait_metric(&server, &series(reason), |n| n == 1);
    }
    let m = server.get("/metrics").text();
    let value = |s: &str| common::chat::metric(&m, s);
    assert_eq!(value(&series("forced_close")), 0);
    assert_eq!(value("pairchat_rejected_total{reason=\"malformed\"}"), 1);
    assert_eq!(
        value("pairchat_rejected_total{reason=\"headers_too_large\"}"),
        1
    );
    assert_eq!(value("pairchat_sessions_opened_total"), 5);
}

// ---- the handler's own sockets ----------------------------------------------------------------

/// A handler with a socket of its own in the loop's poll: it connects to `peer` when a session
/// opens and relays what arrives there to that session.
struct SideChannel {
    peer: std::net::SocketAddr,
    side: Option<(mio::net::TcpStream, pairchat::engine::SocketToken)>,
    session: Option<pairchat::engine::SessionId>,
}

impl pairchat::engine::Handler for SideChannel {
    type Timer = ();

    fn handle(
        &mut self,
        event: pairchat::engine::Event<'_, ()>,
        io: &mut pairchat::engine::Io<'_, ()>,
    ) {
        use pairchat::engine::{Event, Outgoing};
        match event {
            Event::Open { session, .. } => {
                let mut stream = mio::net::TcpStream::connect(self.peer).expect("connect");
                let token = io
                    .register_socket(&mut stream, mio::Interest::READABLE)
                    .expect("register");
                self.side = Some((stream, token));
                self.session = Some(session);
            }
            Event::Socket {
                token, readable, ..
            } => {
                let (Some((stream, mine)), Some(session)) = (&mut self.side, self.session) else {
                    return;
                };
                assert_eq!(token, *mine);
                let mut got = Vec::new();
                let mut buf = [0u8; 1024];
                // Edge-triggered: read until the socket is empty.
                if readable {
                    loop {
                        match std::io::Read::read(stream, &mut buf) {
                            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                            _ => break,
                        }
                    }
                }
                if !got.is_empty() {
                    io.send(
                        session,
                        Outgoing::message_str(&String::from_utf8_lossy(&got)),
                    );
                }
            }
            _ => {}
        }
    }
}

/// The extra-socket seam: a handler's own non-blocking socket lives in the loop's poll (no
/// thread) and its readiness reaches the handler as an event.
#[test]
fn a_handler_socket_in_the_loop_delivers_its_readiness() {
    let side = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = side.local_addr().unwrap();
    let quiet = Config {
        ping_interval: Duration::from_secs(20),
        ping_timeout: Duration::from_secs(20),
        ..engine_config(0)
    };
    let server = TestServer::start(quiet, move |_| SideChannel {
        peer,
        side: None,
        session: None,
    });
    let (mut ws, _) = server.open_websocket(PATH);
    read_timeout(&ws, Duration::from_secs(5));
    let (mut other_end, _) = side.accept().expect("the handler connected");
    other_end.write_all(b"from a side socket").unwrap();
    assert_eq!(recv_text(&mut ws), "4from a side socket");
    other_end.write_all(b"and again").unwrap();
    assert_eq!(recv_text(&mut ws), "4and again");
}
