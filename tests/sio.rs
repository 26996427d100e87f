//! Socket.IO v5 over real sockets: the conformance server (`pairchat::conformance`) and a small
//! rooms application, over WebSocket-only sessions and HTTP long-polling.
//!
//! Timing: pingInterval 300 ms, pingTimeout 200 ms, connectTimeout 1000 ms. Helpers that wait
//! for a close answer pings, so a close they see is never the ping timeout's doing.

mod common;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{READ_TIMEOUT, TestServer, recv_skip_pings, send_text};
use pairchat::sio::{App, Nsp, RecoveryConfig, SioConfig, SioEvent, SioIo, SocketIo, SocketRef};
use serde_json::Value;
use tungstenite::{Message, WebSocket};

const PATH: &str = "/socket.io/";

type Ws = WebSocket<TcpStream>;

// ---- servers -------------------------------------------------------------------------------

/// The Socket.IO conformance server.
fn server() -> TestServer {
    TestServer::start(pairchat::conformance::sio_config(0), |cfg| {
        pairchat::conformance::sio_handler(cfg)
    })
}

/// The conformance application with a small Socket.IO attachment budget (`max_payload`).
fn server_with_attachment_budget(max_payload: usize) -> TestServer {
    TestServer::start(pairchat::conformance::sio_config(0), move |_| {
        let sio = SioConfig {
            namespaces: vec!["/custom".into()],
            connect_timeout: Duration::from_millis(1000),
            recovery: RecoveryConfig::off(),
            pid_prefix: String::new(),
            ..SioConfig::default()
        };
        SocketIo::new(pairchat::conformance::SioConformance, sio, max_payload)
    })
}

/// A rooms application: `join`/`leave` a room (first argument), `say` to a room (emits
/// `said` with the arguments to the room in the socket's namespace), `count` a room's members,
/// `rooms` (the socket's rooms), `whoami` (the socket id). Every event with an ack id is acked
/// after it was handled (with the answer for `count`/`rooms`/`whoami`, else no arguments).
#[derive(Default)]
struct Rooms {
    nsp: HashMap<SocketRef, Nsp>,
}

impl App for Rooms {
    type Timer = ();

    fn handle(&mut self, event: SioEvent<'_, ()>, io: &mut SioIo<'_, '_, ()>) {
        match event {
            SioEvent::Connect { socket, nsp, .. } => {
                self.nsp.insert(socket, nsp);
            }
            SioEvent::Away { .. } => {}
            SioEvent::Claim { session, nsp, .. } => io.refuse_claim(session, nsp),
            SioEvent::Disconnect { socket, .. } => {
                self.nsp.remove(&socket);
            }
            SioEvent::Timer(())
            | SioEvent::Start { .. }
            | SioEvent::TurnEnd
            | SioEvent::Socket { .. } => {}
            SioEvent::Event(e) => {
                let nsp = self.nsp[&e.socket];
                let room: String = e
                    .args
                    .first()
                    .and_then(|a| serde_json::from_str(a.get()).ok())
                    .unwrap_or_default();
                let mut answer = String::new();
                match e.name {
                    "join" => io.join(e.socket, &room),
                    "leave" => io.leave(e.socket, &room),
                    "say" => {
                        let args: Vec<&str> = e.args.iter().map(|a| a.get()).collect();
                        io.emit_to_room(nsp, &room, None, "said", &args.join(","));
                    }
                    "count" => answer = io.room_members(nsp, &room).len().to_string(),
                    "rooms" => {
                        let rooms: Vec<&str> = io.rooms_of(e.socket).iter().map(|r| &**r).collect();
                        answer = serde_json::to_string(&rooms).unwrap();
                    }
                    "whoami" => {
                        let id = io.socket_id(e.socket).expect("connected socket");
                        answer = serde_json::to_string(id.as_str()).unwrap();
                    }
                    _ => {}
                }
                if let Some(id) = e.ack {
                    io.ack(e.socket, id, &answer);
                }
            }
        }
    }
}

fn rooms_server() -> TestServer {
    TestServer::start(pairchat::conformance::sio_config(0), |cfg| {
        let sio = SioConfig {
            namespaces: vec!["/custom".into()],
            connect_timeout: Duration::from_secs(10),
            recovery: RecoveryConfig::off(),
            pid_prefix: String::new(),
            ..SioConfig::default()
        };
        SocketIo::new(Rooms::default(), sio, cfg.max_payload)
    })
}

// ---- WebSocket helpers ---------------------------------------------------------------------

/// A WebSocket-only session; returns the socket and the Engine.IO sid.
fn open_ws(server: &TestServer) -> (Ws, String) {
    let (ws, open) = server.open_websocket(PATH);
    let sid = open["sid"].as_str().expect("engine sid").to_string();
    (ws, sid)
}

/// The next non-ping frame, which must be text.
fn next_text(ws: &mut Ws) -> String {
    match recv_skip_pings(ws) {
        Message::Text(t) => t.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// The next non-ping frame, which must be binary.
fn next_binary(ws: &mut Ws) -> Vec<u8> {
    match recv_skip_pings(ws) {
        Message::Binary(b) => b.to_vec(),
        other => panic!("expected a binary frame, got {other:?}"),
    }
}

fn send_binary(ws: &mut Ws, data: &[u8]) {
    ws.send(Message::binary(data.to_vec()))
        .expect("websocket send");
}

/// Parses a CONNECT reply `40[<nsp>,]{"sid":…}`: exactly one key `sid`, a string. Returns it.
fn connect_reply_sid(frame: &str, nsp: &str) -> String {
    let prefix = if nsp == "/" {
        "40".to_string()
    } else {
        format!("40{nsp},")
    };
    let json = frame
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("expected a CONNECT reply for {nsp}, got {frame:?}"));
    let v: Value = serde_json::from_str(json).expect("CONNECT reply JSON");
    let obj = v.as_object().expect("CONNECT reply is an object");
    assert_eq!(obj.len(), 1, "only `sid` in the CONNECT reply: {frame}");
    let sid = obj["sid"].as_str().expect("sid is a string");
    assert!(!sid.is_empty());
    sid.to_string()
}

/// Sends `packet` (a CONNECT to `nsp`), checks the reply and the `auth` event that follows
/// (`auth` is the expected JSON). Returns the socket id.
fn ws_connect(ws: &mut Ws, packet: &str, nsp: &str, auth: &str) -> String {
    send_text(ws, packet);
    let sid = connect_reply_sid(&next_text(ws), nsp);
    let expected = if nsp == "/" {
        format!("42[\"auth\",{auth}]")
    } else {
        format!("42{nsp},[\"auth\",{auth}]")
    };
    assert_eq!(next_text(ws), expected);
    sid
}

/// A WebSocket session connected to `/` (auth `{}`).
fn ws_connected(server: &TestServer) -> (Ws, String) {
    let (mut ws, _) = open_ws(server);
    let sid = ws_connect(&mut ws, "40", "/", "{}");
    (ws, sid)
}

/// Reads frames for up to `limit`, answering pings, until the server closes the WebSocket
/// (close frame, EOF or reset). Returns whether it closed, the other frames seen and when.
fn read_until_closed(ws: &mut Ws, limit: Duration) -> (bool, Vec<Message>, Duration) {
    let start = Instant::now();
    let mut seen = Vec::new();
    let closed = loop {
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            break false;
        }
        ws.get_ref()
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match ws.read() {
            Ok(Message::Close(_)) => break true,
            Ok(m) if m == Message::text("2") => {
                let _ = ws.send(Message::text("3"));
            }
            Ok(m) => seen.push(m),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => break true,
        }
    };
    let _ = ws.get_ref().set_read_timeout(Some(READ_TIMEOUT));
    (closed, seen, start.elapsed())
}

/// Asserts the server closes the WebSocket promptly (pings are answered meanwhile, so neither
/// the ping timeout nor, for connected sessions, the connect timeout can be the cause).
/// Returns the frames seen before the close.
fn assert_ws_closed_promptly(ws: &mut Ws, what: &str) -> Vec<Message> {
    let (closed, seen, elapsed) = read_until_closed(ws, Duration::from_secs(2));
    assert!(
        closed,
        "{what}: WebSocket still open after 2 s (frames: {seen:?})"
    );
    assert!(
        elapsed < Duration::from_millis(800),
        "{what}: closed only after {elapsed:?}"
    );
    seen
}

/// Asserts nothing but pings arrives for `period` and the socket stays open.
fn assert_ws_quiet(ws: &mut Ws, period: Duration) {
    let (closed, seen, _) = read_until_closed(ws, period);
    assert!(!closed, "closed unexpectedly (frames: {seen:?})");
    assert!(seen.is_empty(), "unexpected frames: {seen:?}");
}

// ---- polling helpers -----------------------------------------------------------------------

/// A polling session: packets from GETs are buffered; pings are answered with a POST `3`.
struct Polling<'a> {
    server: &'a TestServer,
    sid: String,
    buffered: VecDeque<String>,
}

impl<'a> Polling<'a> {
    fn open(server: &'a TestServer) -> Self {
        let (sid, _) = server.open_polling(PATH);
        Polling {
            server,
            sid,
            buffered: VecDeque::new(),
        }
    }

    fn url(&self) -> String {
        format!("{PATH}?EIO=4&transport=polling&sid={}", self.sid)
    }

    /// POSTs a payload; returns the response status.
    fn post(&self, body: &str) -> u16 {
        self.server.post(&self.url(), body).status
    }

    /// POSTs a payload that must be accepted (`ok`).
    fn post_ok(&self, body: &str) {
        let res = self.server.post(&self.url(), body);
        assert_eq!(
            (res.status, res.text().as_str()),
            (200, "ok"),
            "POST {body:?}"
        );
    }

    /// One GET: the packets of the payload (status 200 required).
    fn get_packets(&self) -> Result<Vec<String>, u16> {
        let res = self.server.get(&self.url());
        if res.status != 200 {
            return Err(res.status);
        }
        Ok(res.text().split('\x1e').map(str::to_string).collect())
    }

    /// The next Engine.IO packet that is not a ping (pings answered).
    fn next(&mut self) -> String {
        loop {
            if let Some(p) = self.buffered.pop_front() {
                if p == "2" {
                    self.post_ok("3");
                    continue;
                }
                return p;
            }
            let packets = self
                .get_packets()
                .unwrap_or_else(|status| panic!("poll GET answered {status}"));
            self.buffered.extend(packets);
        }
    }

    /// Polls (answering pings) until the session is found closed: a `1` close packet or a GET
    /// answered 400. Returns the other packets seen and the time it took.
    fn until_closed(&mut self, limit: Duration) -> (Vec<String>, Duration) {
        let start = Instant::now();
        let mut seen = Vec::new();
        loop {
            assert!(
                start.elapsed() < limit,
                "polling session still open after {limit:?} (packets: {seen:?})"
            );
            let packets = match self.get_packets() {
                Ok(p) => p,
                Err(status) => {
                    assert_eq!(status, 400, "GET on a closed session");
                    return (seen, start.elapsed());
                }
            };
            for p in packets {
                match p.as_str() {
                    "1" => {
                        // Closed: the next GET must be refused.
                        assert_eq!(self.get_packets(), Err(400), "GET after the close packet");
                        return (seen, start.elapsed());
                    }
                    "2" => {
                        let _ = self.post("3");
                    }
                    _ => seen.push(p),
                }
            }
        }
    }

    /// CONNECT to `/` and read the reply and the `auth` event; returns the socket id.
    fn connect_main(&mut self) -> String {
        self.post_ok("40");
        let sid = connect_reply_sid(&self.next(), "/");
        assert_eq!(self.next(), "42[\"auth\",{}]");
        sid
    }
}

// ---- CONNECT -------------------------------------------------------------------------------

#[test]
fn connect_to_main_namespace_over_websocket() {
    let server = server();
    let (mut ws, engine_sid) = open_ws(&server);
    send_text(&mut ws, "40");
    let sid = connect_reply_sid(&next_text(&mut ws), "/");
    assert_ne!(sid, engine_sid, "the socket id is not the Engine.IO sid");
    assert_eq!(next_text(&mut ws), "42[\"auth\",{}]");
}

#[test]
fn connect_with_auth_payload_over_websocket() {
    let server = server();
    let (mut ws, _) = open_ws(&server);
    ws_connect(&mut ws, "40{\"token\":\"123\"}", "/", "{\"token\":\"123\"}");
}

#[test]
fn connect_to_custom_namespace_over_websocket() {
    let server = server();
    let (mut ws, engine_sid) = open_ws(&server);
    let sid = ws_connect(&mut ws, "40/custom,", "/custom", "{}");
    assert_ne!(sid, engine_sid);
}

#[test]
fn connect_to_custom_namespace_without_comma_and_with_auth() {
    let server = server();
    let (mut ws, _) = open_ws(&server);
    ws_connect(&mut ws, "40/custom", "/custom", "{}");
    let (mut ws, _) = open_ws(&server);
    ws_connect(
        &mut ws,
        "40/custom,{\"token\":\"abc\"}",
        "/custom",
        "{\"token\":\"abc\"}",
    );
}

#[test]
fn one_session_connects_to_two_namespaces_with_distinct_socket_ids() {
    let server = server();
    let (mut ws, engine_sid) = open_ws(&server);
    let main = ws_connect(&mut ws, "40", "/", "{}");
    let custom = ws_connect(&mut ws, "40/custom,", "/custom", "{}");
    assert_ne!(main, custom);
    assert_ne!(custom, engine_sid);
    // Events are routed by namespace.
    send_text(&mut ws, "42/custom,[\"message\",\"c\"]");
    assert_eq!(next_text(&mut ws), "42/custom,[\"message-back\",\"c\"]");
    send_text(&mut ws, "42[\"message\",\"m\"]");
    assert_eq!(next_text(&mut ws), "42[\"message-back\",\"m\"]");
}

#[test]
fn socket_ids_differ_between_sessions() {
    let server = server();
    let (_a, sid_a) = ws_connected(&server);
    let (_b, sid_b) = ws_connected(&server);
    assert_ne!(sid_a, sid_b);
}

#[test]
fn unknown_namespace_is_refused_and_session_stays_open() {
    let server = server();
    let (mut ws, _) = open_ws(&server);
    send_text(&mut ws, "40/random,");
    assert_eq!(
        next_text(&mut ws),
        "44/random,{\"message\":\"Invalid namespace\"}"
    );
    // Without the trailing comma (as the official suite sends it).
    send_text(&mut ws, "40/random");
    assert_eq!(
        next_text(&mut ws),
        "44/random,{\"message\":\"Invalid namespace\"}"
    );
    // The Engine.IO session is still usable: a valid CONNECT succeeds afterwards.
    ws_connect(&mut ws, "40", "/", "{}");
}

#[test]
fn connect_and_events_over_polling() {
    let server = server();
    let mut p = Polling::open(&server);
    let sid = p.connect_main();
    assert_ne!(sid, p.sid, "the socket id is not the Engine.IO sid");
    p.post_ok("42[\"message\",1,\"2\",{\"3\":[true]}]");
    assert_eq!(p.next(), "42[\"message-back\",1,\"2\",{\"3\":[true]}]");
    p.post_ok("421[\"message-with-ack\",1,\"2\"]");
    assert_eq!(p.next(), "431[1,\"2\"]");
}

#[test]
fn connect_with_auth_and_custom_namespace_over_polling() {
    let server = server();
    let mut p = Polling::open(&server);
    p.post_ok("40/custom,{\"token\":\"xyz\"}");
    connect_reply_sid(&p.next(), "/custom");
    assert_eq!(p.next(), "42/custom,[\"auth\",{\"token\":\"xyz\"}]");
    p.post_ok("40/random,");
    assert_eq!(p.next(), "44/random,{\"message\":\"Invalid namespace\"}");
}

#[test]
fn several_packets_in_one_polling_post_are_handled_in_order() {
    let server = server();
    let mut p = Polling::open(&server);
    p.connect_main();
    p.post_ok("42[\"message\",\"a\"]\x1e427[\"message-with-ack\",\"b\"]\x1e42[\"message\",\"c\"]");
    assert_eq!(p.next(), "42[\"message-back\",\"a\"]");
    assert_eq!(p.next(), "437[\"b\"]");
    assert_eq!(p.next(), "42[\"message-back\",\"c\"]");
}

// ---- events and acks -----------------------------------------------------------------------

#[test]
fn plain_event_is_echoed_over_websocket() {
    let server = server();
    let (mut ws, _) = ws_connected(&server);
    send_text(&mut ws, "42[\"message\",1,\"2\",{\"3\":[true]}]");
    assert_eq!(
        next_text(&mut ws),
        "42[\"message-back\",1,\"2\",{\"3\":[true]}]"
    );
}

#[test]
fn event_without_arguments_and_unicode_arguments() {
    let server = server();
    let (mut ws, _) = ws_connected(&server);
    send_text(&mut ws, "42[\"message\"]");
    assert_eq!(next_text(&mut ws), "42[\"message-back\"]");
    send_text(
        &mut ws,
        "42[\"message\",\"h\u{e9}llo \u{1f600}\",\"q\\\"\\n\"]",
    );
    assert_eq!(
        next_text(&mut ws),
        "42[\"message-back\",\"h\u{e9}llo \u{1f600}\",\"q\\\"\\n\"]"
    );
}

#[test]
fn ack_over_websocket() {
    let server = server();
    let (mut ws, _) = ws_connected(&server);
    send_text(&mut ws, "421[\"message-with-ack\",1,\"2\"]");
    assert_eq!(next_text(&mut ws), "431[1,\"2\"]");
    send_text(
        &mut ws,
        "42456[\"message-with-ack\",1,\"2\",{\"3\":[false]}]",
    );
    assert_eq!(next_text(&mut ws), "43456[1,\"2\",{\"3\":[false]}]");
}

#[test]
fn ack_on_custom_namespace() {
    let server = server();
    let (mut ws, _) = open_ws(&server);
    ws_connect(&mut ws, "40/custom,", "/custom", "{}");
    send_text(&mut ws, "42/custom,5[\"message-with-ack\",\"x\"]");
    assert_eq!(next_text(&mut ws), "43/custom,5[\"x\"]");
}

#[test]
fn events_to_a_namespace_not_connected_are_ignored() {
    // src/sio: EVENT for a namespace the session has no socket in is dropped (Ok, no reply).
    let server = server();
    let (mut ws, _) = ws_connected(&server);
    send_text(&mut ws, "42/custom,[\"message\",\"lost\"]");
    send_text(&mut ws, "42/custom,3[\"message-with-ack\",\"lost\"]");
    // Also an unregistered namespace.
    send_text(&mut ws, "42/random,[\"message\",\"lost\"]");
    // Handled in order: the reply to this comes first, so nothing was sent for the above.
    send_text(&mut ws, "42[\"message\",\"main\"]");
    assert_eq!(next_text(&mut ws), "42[\"message-back\",\"main\"]");
}

#[test]
fn stray_ack_from_client_is_ignored() {
    let server = server();
    let (mut ws, _) = ws_connected(&server);
    send_text(&mut ws, "439[1]");
    send_text(&mut ws, "42[\"message\",\"still here\"]");
    assert_eq!(next_text(&mut ws), "42[\"message-back\",\"still here\"]");
}

// ---- binary attachments --------------------------------------------------------------------

#[test]
fn binary_event_over_websocket() {
    let server = server();
    let (mut ws, _) = ws_connected(&server);
    send_text(
        &mut ws,
        "451-[\"message\",{\"_placeholder\":true,\"num\":0}]",
    );
    send_binary(&mut ws, &[1, 2, 3]);
    assert_eq!(
        next_text(&mut ws),
        "451-[\"message-back\",{\"_placeholder\":true,\"num\":0}]"
    );
    assert_eq!(next_binary(&mut ws), [1, 2, 3]);
}

#[test]
fn binary_event_with_two_attachments_over_websocket() {
    let server = server();
    let (mut ws, _) = ws_connected(&server);
    send_text(
        &mut ws,
        "452-[\"message\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]",
    );
    send_binary(&mut ws, &[1, 2, 3]);
    send_binary(&mut ws, &[4, 5, 6]);
    assert_eq!(
        next_text(&mut ws),
        "452-[\"message-back\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]"
    );
    assert_eq!(next_binary(&mut ws), [1, 2, 3]);
    assert_eq!(next_binary(&mut ws), [4, 5, 6]);
    // Back to plain events afterwards.
    send_text(&mut ws, "42[\"message\",1]");
    assert_eq!(next_text(&mut ws), "42[\"message-back\",1]");
}

#[test]
fn binary_ack_over_websocket() {
    let server = server();
    let (mut ws, _) = ws_connected(&server);
    send_text(
        &mut ws,
        "451-12[\"message-with-ack\",{\"_placeholder\":true,\"num\":0}]",
    );
    send_binary(&mut ws, &[9, 8, 7]);
    assert_eq!(
        next_text(&mut ws),
        "461-12[{\"_placeholder\":true,\"num\":0}]"
    );
    assert_eq!(next_binary(&mut ws), [9, 8, 7]);
}

#[test]
fn binary_ack_with_two_attachments_over_websocket() {
    let server = server();
    let (mut ws, _) = ws_connected(&server);
    send_text(
        &mut ws,
        "452-789[\"message-with-ack\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]",
    );
    send_binary(&mut ws, &[1, 2, 3]);
    send_binary(&mut ws, &[4, 5, 6]);
    assert_eq!(
        next_text(&mut ws),
        "462-789[{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]"
    );
    assert_eq!(next_binary(&mut ws), [1, 2, 3]);
    assert_eq!(next_binary(&mut ws), [4, 5, 6]);
}

#[test]
fn binary_event_on_custom_namespace() {
    let server = server();
    let (mut ws, _) = open_ws(&server);
    ws_connect(&mut ws, "40/custom,", "/custom", "{}");
    send_text(
        &mut ws,
        "451-/custom,[\"message\",{\"_placeholder\":true,\"num\":0}]",
    );
    send_binary(&mut ws, &[0xff, 0]);
    assert_eq!(
        next_text(&mut ws),
        "451-/custom,[\"message-back\",{\"_placeholder\":true,\"num\":0}]"
    );
    assert_eq!(next_binary(&mut ws), [0xff, 0]);
}

#[test]
fn binary_event_over_polling() {
    let server = server();
    let mut p = Polling::open(&server);
    p.connect_main();
    p.post_ok("451-[\"message\",{\"_placeholder\":true,\"num\":0}]\x1ebAQID");
    assert_eq!(
        p.next(),
        "451-[\"message-back\",{\"_placeholder\":true,\"num\":0}]"
    );
    assert_eq!(p.next(), "bAQID");
}

#[test]
fn binary_ack_over_polling_with_attachment_in_a_later_post() {
    let server = server();
    let mut p = Polling::open(&server);
    p.connect_main();
    p.post_ok("451-3[\"message-with-ack\",{\"_placeholder\":true,\"num\":0}]");
    p.post_ok("bBAUG");
    assert_eq!(p.next(), "461-3[{\"_placeholder\":true,\"num\":0}]");
    assert_eq!(p.next(), "bBAUG");
}

// ---- malformed packets close the session ---------------------------------------------------

/// Connects to `/` over WebSocket, sends `packet` and asserts the session is closed promptly,
/// with nothing but the close packet `1` before the close.
fn assert_text_closes(packet: &str) {
    let server = server();
    let (mut ws, _) = ws_connected(&server);
    send_text(&mut ws, packet);
    let seen = assert_ws_closed_promptly(&mut ws, packet);
    assert!(
        seen.iter().all(|m| *m == Message::text("1")),
        "{packet}: nothing but a close packet before the close, got {seen:?}"
    );
}

#[test]
fn unknown_packet_type_closes_the_session() {
    assert_text_closes("4abc");
    assert_text_closes("47");
    assert_text_closes("4");
}

#[test]
fn invalid_event_payload_closes_the_session() {
    assert_text_closes("42{}");
    assert_text_closes("42{\"not\":\"array\"}");
    assert_text_closes("42[]");
    assert_text_closes("42[1,2]");
    assert_text_closes("42[\"x\"");
    assert_text_closes("42");
}

#[test]
fn invalid_ack_id_closes_the_session() {
    assert_text_closes("42abc[\"message-with-ack\",1,\"2\",{\"3\":[false]}]");
    assert_text_closes("4299999999999999999999999[\"message-with-ack\"]");
}

#[test]
fn invalid_connect_and_disconnect_payloads_close_the_session() {
    assert_text_closes("40[1]");
    assert_text_closes("40{\"token\":");
    assert_text_closes("41{}");
    assert_text_closes("44{\"message\":\"from client\"}");
}

#[test]
fn bad_attachment_headers_close_the_session() {
    // Too many attachments (at most 10).
    assert_text_closes("411-[\"message\",{\"_placeholder\":true,\"num\":0}]");
    // No attachment count.
    assert_text_closes("45[\"message\"]");
    // Placeholder index out of range.
    assert_text_closes("451-[\"message\",{\"_placeholder\":true,\"num\":1}]");
    // Placeholder index not an integer.
    assert_text_closes("451-[\"message\",{\"_placeholder\":true,\"num\":\"0\"}]");
}

#[test]
fn invalid_handshake_closes_the_session_before_connect() {
    let server = server();
    let (mut ws, _) = open_ws(&server);
    send_text(&mut ws, "4abc");
    assert_ws_closed_promptly(&mut ws, "4abc before CONNECT");
}

#[test]
fn text_while_attachments_are_due_closes_the_session() {
    let server = server();
    let (mut ws, _) = ws_connected(&server);
    send_text(
        &mut ws,
        "452-[\"message\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]",
    );
    send_binary(&mut ws, &[1]);
    send_text(&mut ws, "42[\"message\",1]");
    let seen = assert_ws_closed_promptly(&mut ws, "text instead of the second attachment");
    assert!(
        !seen.iter().any(|m| m.is_binary()),
        "no partial echo: {seen:?}"
    );
}

#[test]
fn unexpected_binary_frame_closes_the_session() {
    let server = server();
    let (mut ws, _) = ws_connected(&server);
    send_binary(&mut ws, &[1, 2, 3]);
    assert_ws_closed_promptly(&mut ws, "binary without a binary packet");
}

#[test]
fn attachments_over_the_payload_budget_close_the_session() {
    let server = server_with_attachment_budget(4);
    // Within the budget: echoed.
    let (mut ws, _) = ws_connected(&server);
    send_text(
        &mut ws,
        "451-[\"message\",{\"_placeholder\":true,\"num\":0}]",
    );
    send_binary(&mut ws, &[1, 2, 3, 4]);
    assert_eq!(
        next_text(&mut ws),
        "451-[\"message-back\",{\"_placeholder\":true,\"num\":0}]"
    );
    assert_eq!(next_binary(&mut ws), [1, 2, 3, 4]);
    // Over it (summed over the attachments): closed.
    send_text(
        &mut ws,
        "452-[\"message\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]",
    );
    send_binary(&mut ws, &[1, 2, 3]);
    send_binary(&mut ws, &[4, 5]);
    let seen = assert_ws_closed_promptly(&mut ws, "attachments over budget");
    assert!(!seen.iter().any(|m| m.is_binary()), "no echo: {seen:?}");
}

#[test]
fn malformed_packet_over_polling_closes_the_session() {
    let server = server();
    for bad in ["4abc", "42{\"not\":\"array\"}", "47"] {
        let mut p = Polling::open(&server);
        p.connect_main();
        p.post(bad);
        let (seen, elapsed) = p.until_closed(Duration::from_secs(2));
        assert!(seen.is_empty(), "{bad}: {seen:?}");
        assert!(elapsed < Duration::from_millis(800), "{bad}: {elapsed:?}");
    }
}

#[test]
fn malformed_packet_closes_a_parked_poll_with_a_close_packet() {
    let server = server();
    let mut p = Polling::open(&server);
    p.connect_main();
    // A GET parked on its own connection, then the bad POST.
    let mut parked = common::HttpConn::new(server.connect());
    parked.send(format!("GET {} HTTP/1.1\r\nHost: localhost\r\n\r\n", p.url()).as_bytes());
    std::thread::sleep(Duration::from_millis(100));
    p.post("42[\"x\"");
    let res = parked.response().expect("parked GET answered");
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), "1", "the parked GET gets the close packet");
    assert_eq!(p.get_packets(), Err(400));
}

// ---- DISCONNECT ----------------------------------------------------------------------------

#[test]
fn disconnect_from_main_namespace_sends_nothing_and_keeps_session() {
    let server = server();
    let (mut ws, first) = ws_connected(&server);
    send_text(&mut ws, "41");
    // No reply to `41`: the next frame is the server's ping (~300 ms after the open).
    assert_eq!(common::recv_text(&mut ws), "2");
    send_text(&mut ws, "3");
    // Events to `/` are no longer handled…
    send_text(&mut ws, "42[\"message\",\"after disconnect\"]");
    send_text(&mut ws, "421[\"message-with-ack\",\"after disconnect\"]");
    // …but the session reconnects: the CONNECT reply comes first, with a new socket id.
    let again = ws_connect(&mut ws, "40", "/", "{}");
    assert_ne!(again, first, "a new socket has a new id");
    send_text(&mut ws, "42[\"message\",\"back\"]");
    assert_eq!(next_text(&mut ws), "42[\"message-back\",\"back\"]");
}

#[test]
fn connect_then_disconnect_custom_namespace_while_a_ping_is_unanswered() {
    // The official suite's sequence: it never answers pings, so all of this runs inside the
    // 200 ms ping timeout after the first ping.
    let server = server();
    let (mut ws, _) = ws_connected(&server);
    assert_eq!(common::recv_text(&mut ws), "2");
    send_text(&mut ws, "40/custom");
    connect_reply_sid(&common::recv_text(&mut ws), "/custom");
    assert_eq!(common::recv_text(&mut ws), "42/custom,[\"auth\",{}]");
    send_text(&mut ws, "41/custom");
    send_text(&mut ws, "42[\"message\",\"message to main namespace\"]");
    assert_eq!(
        common::recv_text(&mut ws),
        "42[\"message-back\",\"message to main namespace\"]"
    );
}

#[test]
fn reconnect_after_disconnect_gets_a_new_socket_id() {
    let server = server();
    let (mut ws, first) = ws_connected(&server);
    send_text(&mut ws, "41");
    let second = ws_connect(&mut ws, "40", "/", "{}");
    assert_ne!(first, second);
}

#[test]
fn disconnect_from_custom_namespace_keeps_main() {
    let server = server();
    let (mut ws, _) = ws_connected(&server);
    ws_connect(&mut ws, "40/custom", "/custom", "{}");
    send_text(&mut ws, "41/custom");
    send_text(&mut ws, "42/custom,[\"message\",\"to custom\"]");
    send_text(&mut ws, "42[\"message\",\"message to main namespace\"]");
    assert_eq!(
        next_text(&mut ws),
        "42[\"message-back\",\"message to main namespace\"]"
    );
}

#[test]
fn disconnect_over_polling_then_reconnect() {
    let server = server();
    let mut p = Polling::open(&server);
    let first = p.connect_main();
    p.post_ok("41\x1e42[\"message\",\"ignored\"]");
    let second = p.connect_main();
    assert_ne!(first, second);
    p.post_ok("42[\"message\",\"ok\"]");
    assert_eq!(p.next(), "42[\"message-back\",\"ok\"]");
}

#[test]
fn disconnect_of_a_namespace_not_connected_is_harmless() {
    let server = server();
    let (mut ws, _) = ws_connected(&server);
    send_text(&mut ws, "41/custom,");
    send_text(&mut ws, "41/random,");
    send_text(&mut ws, "42[\"message\",1]");
    assert_eq!(next_text(&mut ws), "42[\"message-back\",1]");
}

#[test]
fn repeated_connect_to_the_same_namespace_is_ignored() {
    // src/sio: a CONNECT to a namespace the session is already in gets no reply.
    let server = server();
    let (mut ws, _) = ws_connected(&server);
    send_text(&mut ws, "40");
    send_text(&mut ws, "42[\"message\",1]");
    assert_eq!(next_text(&mut ws), "42[\"message-back\",1]");
    assert_ws_quiet(&mut ws, Duration::from_millis(100));
}

#[test]
fn engine_close_packet_ends_the_session() {
    let server = server();
    let (mut ws, _) = ws_connected(&server);
    send_text(&mut ws, "1");
    let (closed, seen, _) = read_until_closed(&mut ws, Duration::from_secs(2));
    assert!(closed, "closed after `1` (frames: {seen:?})");
}

// ---- upgrade -------------------------------------------------------------------------------

#[test]
fn socket_io_session_upgrades_from_polling_to_websocket() {
    let server = server();
    let mut p = Polling::open(&server);
    p.connect_main();
    // An answer queued on polling before the upgrade…
    p.post_ok("42[\"message\",\"queued\"]");
    let mut ws = server.websocket(&format!("{PATH}?EIO=4&transport=websocket&sid={}", p.sid));
    send_text(&mut ws, "2probe");
    assert_eq!(common::recv_text(&mut ws), "3probe");
    // Polling is paused: a GET gets a noop.
    assert_eq!(p.get_packets(), Ok(vec!["6".to_string()]));
    send_text(&mut ws, "5");
    // …arrives over the WebSocket once the upgrade completes.
    assert_eq!(next_text(&mut ws), "42[\"message-back\",\"queued\"]");
    // The Socket.IO socket survives the upgrade: same namespace socket, events and acks.
    send_text(&mut ws, "42[\"message\",\"over ws\"]");
    assert_eq!(next_text(&mut ws), "42[\"message-back\",\"over ws\"]");
    send_text(
        &mut ws,
        "451-8[\"message-with-ack\",{\"_placeholder\":true,\"num\":0}]",
    );
    send_binary(&mut ws, &[7]);
    assert_eq!(
        next_text(&mut ws),
        "461-8[{\"_placeholder\":true,\"num\":0}]"
    );
    assert_eq!(next_binary(&mut ws), [7]);
    // Reconnecting to `/` is a no-op (already connected): the next reply is the echo.
    send_text(&mut ws, "40");
    send_text(&mut ws, "42[\"message\",\"same socket\"]");
    assert_eq!(next_text(&mut ws), "42[\"message-back\",\"same socket\"]");
    // Polling requests on the upgraded session are refused.
    assert_eq!(p.get_packets(), Err(400));
}

// ---- connect timeout -----------------------------------------------------------------------

#[test]
fn no_connect_within_timeout_closes_websocket_session() {
    let server = server();
    // A session that connects must outlive the timeout; one that does not is closed.
    let (mut idle, _) = open_ws(&server);
    let (mut connected, _) = ws_connected(&server);
    let keep_alive = std::thread::spawn(move || {
        let (closed, seen, _) = read_until_closed(&mut connected, Duration::from_millis(1300));
        assert!(
            !closed,
            "a connected session is not closed by the connect timeout"
        );
        assert!(seen.is_empty(), "{seen:?}");
        send_text(&mut connected, "42[\"message\",\"alive\"]");
        assert_eq!(next_text(&mut connected), "42[\"message-back\",\"alive\"]");
    });
    let (closed, seen, elapsed) = read_until_closed(&mut idle, Duration::from_secs(2));
    assert!(closed, "idle session closed (frames: {seen:?})");
    assert!(
        elapsed >= Duration::from_millis(850) && elapsed < Duration::from_millis(1600),
        "closed by the 1000 ms connect timeout, not earlier or much later: {elapsed:?}"
    );
    assert!(
        seen.iter().all(|m| *m == Message::text("1")),
        "only a close packet: {seen:?}"
    );
    keep_alive.join().expect("connected session");
}

#[test]
fn no_connect_within_timeout_closes_polling_session() {
    let server = server();
    let mut p = Polling::open(&server);
    let (seen, elapsed) = p.until_closed(Duration::from_secs(2));
    assert!(seen.is_empty(), "{seen:?}");
    assert!(
        elapsed >= Duration::from_millis(850) && elapsed < Duration::from_millis(1600),
        "closed by the 1000 ms connect timeout: {elapsed:?}"
    );
}

#[test]
fn refused_namespace_does_not_stop_the_connect_timeout() {
    let server = server();
    let (mut ws, _) = open_ws(&server);
    send_text(&mut ws, "40/random,");
    let start = Instant::now();
    let (closed, seen, _) = read_until_closed(&mut ws, Duration::from_secs(2));
    assert!(closed);
    assert!(
        start.elapsed() >= Duration::from_millis(850),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        seen.first(),
        Some(&Message::text(
            "44/random,{\"message\":\"Invalid namespace\"}"
        ))
    );
}

// ---- rooms ---------------------------------------------------------------------------------

/// Sends an event with an ack id and returns the ack's data (the JSON array).
fn call(ws: &mut Ws, nsp: &str, id: u32, event: &str, arg: &str) -> String {
    let prefix = if nsp == "/" {
        String::new()
    } else {
        format!("{nsp},")
    };
    send_text(ws, &format!("42{prefix}{id}[\"{event}\",{arg}]"));
    let reply = next_text(ws);
    let head = format!("43{prefix}{id}");
    reply
        .strip_prefix(&head)
        .unwrap_or_else(|| panic!("expected ack {head}, got {reply:?}"))
        .to_string()
}

/// A WebSocket session connected to `nsp` of the rooms server (no `auth` event there).
fn rooms_client(server: &TestServer, nsp: &str) -> (Ws, String) {
    let (mut ws, _) = open_ws(server);
    let packet = if nsp == "/" {
        "40".to_string()
    } else {
        format!("40{nsp},")
    };
    send_text(&mut ws, &packet);
    let sid = connect_reply_sid(&next_text(&mut ws), nsp);
    (ws, sid)
}

#[test]
fn socket_id_seen_by_the_app_is_the_connect_reply_sid() {
    let server = rooms_server();
    let (mut ws, sid) = rooms_client(&server, "/");
    assert_eq!(call(&mut ws, "/", 1, "whoami", "0"), format!("[\"{sid}\"]"));
}

#[test]
fn room_emits_reach_members_only() {
    let server = rooms_server();
    let (mut a, _) = rooms_client(&server, "/");
    let (mut b, _) = rooms_client(&server, "/");
    let (mut c, _) = rooms_client(&server, "/");
    assert_eq!(call(&mut a, "/", 1, "join", "\"r\""), "[]");
    assert_eq!(call(&mut b, "/", 1, "join", "\"r\""), "[]");
    assert_eq!(call(&mut c, "/", 1, "join", "\"other\""), "[]");
    assert_eq!(call(&mut a, "/", 2, "count", "\"r\""), "[2]");
    assert_eq!(call(&mut a, "/", 3, "rooms", "0"), "[[\"r\"]]");

    send_text(&mut a, "42[\"say\",\"r\",\"hi\"]");
    assert_eq!(next_text(&mut a), "42[\"said\",\"r\",\"hi\"]");
    assert_eq!(next_text(&mut b), "42[\"said\",\"r\",\"hi\"]");
    // `c` got nothing: its next frame is the answer to its own call.
    assert_eq!(call(&mut c, "/", 2, "count", "\"r\""), "[2]");

    // After `b` leaves, only `a` hears the room.
    assert_eq!(call(&mut b, "/", 2, "leave", "\"r\""), "[]");
    assert_eq!(call(&mut b, "/", 3, "rooms", "0"), "[[]]");
    send_text(&mut a, "42[\"say\",\"r\",\"again\"]");
    assert_eq!(next_text(&mut a), "42[\"said\",\"r\",\"again\"]");
    assert_eq!(call(&mut b, "/", 4, "count", "\"r\""), "[1]");
}

#[test]
fn joining_twice_counts_once() {
    let server = rooms_server();
    let (mut a, _) = rooms_client(&server, "/");
    call(&mut a, "/", 1, "join", "\"r\"");
    call(&mut a, "/", 2, "join", "\"r\"");
    assert_eq!(call(&mut a, "/", 3, "count", "\"r\""), "[1]");
    send_text(&mut a, "42[\"say\",\"r\",1]");
    assert_eq!(next_text(&mut a), "42[\"said\",\"r\",1]");
    assert_eq!(call(&mut a, "/", 4, "rooms", "0"), "[[\"r\"]]");
}

#[test]
fn rooms_are_per_namespace() {
    let server = rooms_server();
    let (mut main, _) = rooms_client(&server, "/");
    let (mut custom, _) = rooms_client(&server, "/custom");
    call(&mut main, "/", 1, "join", "\"r\"");
    call(&mut custom, "/custom", 1, "join", "\"r\"");
    send_text(&mut main, "42[\"say\",\"r\",\"main\"]");
    assert_eq!(next_text(&mut main), "42[\"said\",\"r\",\"main\"]");
    send_text(&mut custom, "42/custom,[\"say\",\"r\",\"custom\"]");
    // `custom` did not get `main`'s message: its first frame is its own namespace's.
    assert_eq!(
        next_text(&mut custom),
        "42/custom,[\"said\",\"r\",\"custom\"]"
    );
    assert_eq!(call(&mut main, "/", 2, "count", "\"r\""), "[1]");
    assert_eq!(call(&mut custom, "/custom", 2, "count", "\"r\""), "[1]");
}

#[test]
fn disconnect_and_session_close_leave_rooms() {
    let server = rooms_server();
    let (mut a, _) = rooms_client(&server, "/");
    let (mut b, _) = rooms_client(&server, "/");
    let (mut c, _) = rooms_client(&server, "/");
    for ws in [&mut a, &mut b, &mut c] {
        call(ws, "/", 1, "join", "\"r\"");
    }
    assert_eq!(call(&mut a, "/", 2, "count", "\"r\""), "[3]");

    // `b` leaves the namespace: out of the room at once.
    send_text(&mut b, "41");
    send_text(&mut b, "40");
    connect_reply_sid(&next_text(&mut b), "/");
    assert_eq!(call(&mut a, "/", 3, "count", "\"r\""), "[2]");
    assert_eq!(call(&mut b, "/", 2, "rooms", "0"), "[[]]", "a new socket");

    // `c` closes its Engine.IO session.
    send_text(&mut c, "1");
    assert!(read_until_closed(&mut c, Duration::from_secs(2)).0);
    assert_eq!(call(&mut a, "/", 4, "count", "\"r\""), "[1]");

    // `a`'s room message reaches neither.
    send_text(&mut a, "42[\"say\",\"r\",\"alone\"]");
    assert_eq!(next_text(&mut a), "42[\"said\",\"r\",\"alone\"]");
    assert_eq!(call(&mut b, "/", 3, "count", "\"r\""), "[1]");
}

#[test]
fn room_emit_over_polling_and_websocket() {
    let server = rooms_server();
    let (mut ws, _) = rooms_client(&server, "/");
    call(&mut ws, "/", 1, "join", "\"r\"");
    let mut p = Polling::open(&server);
    p.post_ok("40");
    connect_reply_sid(&p.next(), "/");
    p.post_ok("421[\"join\",\"r\"]");
    assert_eq!(p.next(), "431[]");
    send_text(&mut ws, "42[\"say\",\"r\",\"to both\"]");
    assert_eq!(next_text(&mut ws), "42[\"said\",\"r\",\"to both\"]");
    assert_eq!(p.next(), "42[\"said\",\"r\",\"to both\"]");
}
