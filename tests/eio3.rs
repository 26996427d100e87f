//! Engine.IO v3 and Socket.IO v4 (socket.io-client 2.x, `--allow-eio3`) over raw HTTP and
//! WebSockets: the handshake, the length-prefixed polling payloads (UTF-16 lengths, base64
//! and XHR2 binary), the reversed heartbeat, v3's binary frames, the server's own CONNECT to
//! `/`, socket ids, a namespace's query as auth. The real socket.io-client 2.5.0 is in
//! `tests/e2e/clients.test.mjs`.

mod common;

use common::chat::wait_metric;
use common::{HttpConn, Response, TestServer, recv_text, send_text, ws_closed};
use pairchat::config::Config;
use pairchat::sio::{App, RecoveryConfig, SioConfig, SioEvent, SioIo, SocketIo};
use serde_json::json;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<std::net::TcpStream>;

const PATH: &str = "/socket.io/";

/// Tells each socket its name and auth on connect (`hello`), echoes events (`echo`) and acks
/// them with their arguments, attachments included.
struct Hello;

impl App for Hello {
    type Timer = ();

    fn handle(&mut self, event: SioEvent<'_, ()>, io: &mut SioIo<'_, '_, ()>) {
        match event {
            SioEvent::Connect { socket, auth, .. } => {
                let name = json!(io.socket_name(socket).expect("a connected socket"));
                io.emit(socket, "hello", &format!("{name},{}", auth.get()));
            }
            SioEvent::Event(e) => {
                let args: Vec<&str> = e.args.iter().map(|a| a.get()).collect();
                let args = args.join(",");
                match e.ack {
                    Some(id) => io.ack_with_binary(e.socket, id, &args, e.attachments),
                    None => io.emit_with_binary(e.socket, "echo", &args, e.attachments),
                }
            }
            _ => {}
        }
    }
}

/// Heartbeat 300 ms + 200 ms, `/custom` besides `/`, recovery off.
fn server(allow_eio3: bool) -> TestServer {
    server_with(allow_eio3, RecoveryConfig::off())
}

fn server_with(allow_eio3: bool, recovery: RecoveryConfig) -> TestServer {
    let config = Config {
        allow_eio3,
        ..pairchat::conformance::sio_config(0)
    };
    start(config, recovery)
}

fn start(config: Config, recovery: RecoveryConfig) -> TestServer {
    TestServer::start(config, |cfg| {
        let sio = SioConfig {
            namespaces: vec!["/custom".into()],
            recovery,
            ..SioConfig::default()
        };
        SocketIo::new(Hello, sio, cfg.max_payload)
    })
}

/// A v3 text payload, lengths in UTF-16 units (as JavaScript counts them).
fn payload(packets: &[&str]) -> String {
    (packets.iter())
        .map(|p| format!("{}:{p}", p.encode_utf16().count()))
        .collect()
}

fn url(query: &str) -> String {
    format!("{PATH}?EIO=3&transport=polling{query}")
}

/// A v3 polling client.
struct Polling<'a> {
    server: &'a TestServer,
    sid: String,
}

impl<'a> Polling<'a> {
    /// A handshake (`extra` query parameters, `&b64=1` say): its open packet, as a payload.
    fn open(server: &'a TestServer, extra: &str) -> (Polling<'a>, serde_json::Value) {
        let res = server.get(&url(extra));
        assert_eq!(res.status, 200, "{}", res.text());
        let text = res.text();
        let (len, open) = text.split_once(':').expect("a length-prefixed payload");
        assert_eq!(len.parse::<usize>().unwrap(), open.encode_utf16().count());
        let open: serde_json::Value = serde_json::from_str(&open[1..]).expect("open JSON");
        let sid = open["sid"].as_str().unwrap().to_string();
        (Polling { server, sid }, open)
    }

    fn get(&self) -> Response {
        self.server.get(&url(&format!("&sid={}", self.sid)))
    }

    fn get_text(&self) -> String {
        let res = self.get();
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(
            res.header("content-type"),
            Some("text/plain; charset=UTF-8")
        );
        res.text()
    }

    fn post(&self, body: &[u8], content_type: &str) -> Response {
        let mut conn = HttpConn::new(self.server.connect());
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            url(&format!("&sid={}", self.sid)),
            body.len()
        );
        conn.send(head.as_bytes());
        conn.send(body);
        conn.response().expect("a response")
    }

    fn post_text(&self, packets: &[&str]) {
        let res = self.post(payload(packets).as_bytes(), "text/plain;charset=UTF-8");
        assert_eq!((res.status, res.text().as_str()), (200, "ok"));
    }
}

#[test]
fn without_the_flag_a_v3_client_is_told_the_version_is_unsupported() {
    let server = server(false);
    for query in ["EIO=3&transport=polling", "transport=polling"] {
        let res = server.get(&format!("{PATH}?{query}"));
        assert_eq!(res.status, 400);
        assert_eq!(
            res.json(),
            json!({"code": 5, "message": "Unsupported protocol version"})
        );
    }
}

#[test]
fn a_v3_polling_session_opens_with_a_payload_and_the_server_connects_it_to_slash() {
    let server = server(true);
    let (client, open) = Polling::open(&server, "");
    assert_eq!(open["upgrades"], json!(["websocket"]));
    assert_eq!(open["pingInterval"], 300);
    // The server's CONNECT: a bare `40`, then `hello` with the socket's id, the sid.
    let sid = client.sid.clone();
    assert_eq!(
        client.get_text(),
        payload(&["40", &format!("42[\"hello\",\"{sid}\",{{}}]")])
    );
    // No `EIO` at all is v3 too; JSONP (`j=`) is not served.
    let res = server.get(&format!("{PATH}?transport=polling"));
    assert_eq!(res.status, 200);
    assert!(res.text().contains(":0{"), "{}", res.text());
    let res = server.get(&url("&j=0"));
    assert_eq!(res.status, 400);
    assert_eq!(res.json()["code"], 3);
}

#[test]
fn payload_lengths_count_utf16_units_both_ways() {
    let server = server(true);
    let (client, _) = Polling::open(&server, "");
    client.get_text();
    // `€` is one unit, `🎉` two: a length in bytes or in characters would cut the packets.
    client.post_text(&["42[\"say\",\"€🎉\"]", "421[\"ask\",\"🎉🎉\"]"]);
    assert_eq!(
        client.get_text(),
        payload(&["42[\"echo\",\"€🎉\"]", "431[\"🎉🎉\"]"])
    );
    // A length ending inside a surrogate pair, or past the body, is malformed: the session
    // closes.
    let res = client.post("2:4🎉".as_bytes(), "text/plain");
    assert_eq!(res.status, 400);
    assert_eq!(client.get().status, 400, "the session is gone");
}

#[test]
fn binary_goes_as_an_xhr2_payload_unless_the_client_asked_for_base64() {
    let server = server(true);
    let event = "451-[\"up\",{\"_placeholder\":true,\"num\":0}]";
    let echo = "451-[\"echo\",{\"_placeholder\":true,\"num\":0}]";
    // socket.io-client 2.x with XHR2: binary payloads both ways.
    let (client, _) = Polling::open(&server, "");
    client.get_text();
    let mut body = vec![0u8];
    body.extend(event.len().to_string().bytes().map(|d| d - b'0'));
    body.push(0xff);
    body.extend_from_slice(event.as_bytes());
    body.extend_from_slice(&[1, 4, 0xff, 4, 1, 2, 3]);
    let res = client.post(&body, "application/octet-stream");
    assert_eq!((res.status, res.text().as_str()), (200, "ok"));
    let res = client.get();
    assert_eq!(res.header("content-type"), Some("application/octet-stream"));
    let mut expected = vec![0u8];
    expected.extend(echo.len().to_string().bytes().map(|d| d - b'0'));
    expected.push(0xff);
    expected.extend_from_slice(echo.as_bytes());
    expected.extend_from_slice(&[1, 4, 0xff, 4, 1, 2, 3]);
    assert_eq!(res.body, expected);
    // `b64=1`: text payloads only, binary as `b4<base64>` (an empty `b64=` is no request).
    let (client, _) = Polling::open(&server, "&b64=");
    client.get_text();
    client.post_text(&[event, "b4AQID"]);
    assert_eq!(
        client.get().header("content-type"),
        Some("application/octet-stream")
    );
    let (client, _) = Polling::open(&server, "&b64=1");
    client.get_text();
    client.post_text(&[event, "b4AQID"]);
    assert_eq!(client.get_text(), payload(&[echo, "b4AQID"]));
}

#[test]
fn the_client_pings_the_server_answers_and_a_silent_client_is_dropped() {
    let server = server(true);
    let (client, _) = Polling::open(&server, "");
    client.get_text();
    client.post_text(&["2"]);
    assert_eq!(client.get_text(), payload(&["3"]));
    // A bare pong, as engine.io answers (a ping's data is the probe's only).
    client.post_text(&["2probe"]);
    assert_eq!(client.get_text(), payload(&["3"]));
    // No ping within interval plus timeout (500 ms): gone. A poll parked just after the pong
    // (its own deadline falls in the same tick) gets the close packet, not a dropped answer.
    let parked = client.get();
    assert_eq!((parked.status, parked.text()), (200, payload(&["1"])));
    assert_eq!(client.get().status, 400);
    // A pong from a v3 client is the wrong direction: a transport error.
    let (client, _) = Polling::open(&server, "");
    client.get_text();
    client.post_text(&["3"]);
    assert_eq!(client.get().status, 400);
}

/// A v3 WebSocket session (no polling first), past its open packet and `40`: the socket and
/// its `hello`.
fn websocket_hello(server: &TestServer) -> (Ws, String, serde_json::Value) {
    let mut ws = server.websocket(&format!("{PATH}?EIO=3&transport=websocket"));
    let open = recv_text(&mut ws);
    let open: serde_json::Value = serde_json::from_str(&open[1..]).expect("open packet");
    assert_eq!(open["upgrades"], json!([]));
    assert_eq!(recv_text(&mut ws), "40");
    let sid = open["sid"].as_str().unwrap().to_string();
    let hello = recv_text(&mut ws);
    let hello = serde_json::from_str(hello.strip_prefix("42").unwrap()).unwrap();
    (ws, sid, hello)
}

fn websocket(server: &TestServer) -> (Ws, String) {
    let (ws, sid, hello) = websocket_hello(server);
    assert_eq!(hello, json!(["hello", sid, {}]));
    (ws, sid)
}

#[test]
fn websocket_binary_frames_carry_the_message_type_byte() {
    let server = server(true);
    let (mut ws, _) = websocket(&server);
    send_text(&mut ws, "451-[\"up\",{\"_placeholder\":true,\"num\":0}]");
    ws.send(Message::binary(vec![4u8, 9, 8, 7])).unwrap();
    assert_eq!(
        recv_text(&mut ws),
        "451-[\"echo\",{\"_placeholder\":true,\"num\":0}]"
    );
    assert_eq!(
        ws.read().unwrap(),
        Message::binary(vec![4u8, 9, 8, 7]),
        "the type byte, then the data"
    );
    send_text(&mut ws, "2");
    assert_eq!(recv_text(&mut ws), "3");
    // A client that forces base64 sends binary in text frames.
    send_text(&mut ws, "451-[\"up\",{\"_placeholder\":true,\"num\":0}]");
    send_text(&mut ws, "b4BgU=");
    recv_text(&mut ws);
    assert_eq!(ws.read().unwrap(), Message::binary(vec![4u8, 6, 5]));
    // A binary frame that is not a message: the session closes.
    ws.send(Message::binary(vec![2u8, 1])).unwrap();
    assert!(ws_closed(&mut ws));
}

#[test]
fn a_namespace_query_is_the_connect_auth_and_ids_are_namespaced() {
    let server = server(true);
    let (mut ws, sid) = websocket(&server);
    send_text(&mut ws, "40/custom?token=a%20b&x=1&x=2,");
    assert_eq!(recv_text(&mut ws), "40/custom,");
    let hello: serde_json::Value =
        serde_json::from_str(recv_text(&mut ws).strip_prefix("42/custom,").unwrap()).unwrap();
    assert_eq!(
        hello,
        json!(["hello", format!("/custom#{sid}"), {"token": "a b", "x": ["1", "2"]}])
    );
    // At most 1000 pairs of a query count, as Node's `querystring` reads them.
    let many: Vec<String> = (0..1500).map(|i| format!("k{i}=v")).collect();
    send_text(&mut ws, "41/custom,");
    send_text(&mut ws, &format!("40/custom?{},", many.join("&")));
    assert_eq!(recv_text(&mut ws), "40/custom,");
    let hello: serde_json::Value =
        serde_json::from_str(recv_text(&mut ws).strip_prefix("42/custom,").unwrap()).unwrap();
    let auth = hello[2].as_object().unwrap();
    assert_eq!((auth.len(), &auth["k999"]), (1000, &json!("v")));
    // Events on the namespace go by its name, without the query.
    send_text(&mut ws, "42/custom,[\"ping\",1]");
    assert_eq!(recv_text(&mut ws), "42/custom,[\"echo\",1]");
    send_text(&mut ws, "40/nope,");
    assert_eq!(
        recv_text(&mut ws),
        "44/nope,{\"message\":\"Invalid namespace\"}"
    );
    // A v4 client (Engine.IO v4) alongside: a random socket id, its own name.
    let (mut v4, _) = server.open_websocket(PATH);
    send_text(&mut v4, "40");
    let connect = recv_text(&mut v4);
    let id = serde_json::from_str::<serde_json::Value>(&connect[2..]).unwrap()["sid"].clone();
    let hello: serde_json::Value =
        serde_json::from_str(recv_text(&mut v4).strip_prefix("42").unwrap()).unwrap();
    assert_eq!(hello[1], id);
    assert_ne!(id, json!(sid));
}

#[test]
fn a_v3_polling_session_upgrades_to_websocket() {
    let server = server(true);
    let (client, _) = Polling::open(&server, "");
    client.get_text();
    let mut ws = server.websocket(&format!(
        "{PATH}?EIO=3&transport=websocket&sid={}",
        client.sid
    ));
    send_text(&mut ws, "2probe");
    assert_eq!(recv_text(&mut ws), "3probe");
    // Polling is paused: a noop, as a payload.
    assert_eq!(client.get_text(), payload(&["6"]));
    send_text(&mut ws, "5");
    send_text(&mut ws, "42[\"after\",true]");
    assert_eq!(recv_text(&mut ws), "42[\"echo\",true]");
    assert_eq!(client.get().status, 400, "polling is over");
}

#[test]
fn with_recovery_on_a_v3_socket_is_gone_with_its_transport() {
    let server = server_with(true, RecoveryConfig::default());
    // Its events carry offsets as socket.io's do (a v2 client sees one argument more) ...
    let (ws, sid, hello) = websocket_hello(&server);
    assert_eq!(
        hello.as_array().unwrap()[..3],
        [json!("hello"), json!(sid), json!({})]
    );
    assert!(hello[3].is_string(), "{hello}");
    assert_eq!(wait_metric(&server, "pairchat_sio_sockets", |n| n == 1), 1);
    // ... but it is never kept away: its transport gone, so is the socket.
    drop(ws);
    assert_eq!(wait_metric(&server, "pairchat_sio_sockets", |n| n == 0), 0);
    assert_eq!(
        wait_metric(&server, "pairchat_sio_away_sockets", |_| true),
        0
    );
}

#[test]
fn a_v3_session_answers_only_the_address_that_opened_it() {
    // Its sid is its socket id, which the chat shows the partner: a partner elsewhere who
    // tries it is told the session is unknown. (A trusted proxy on loopback names the clients.)
    let config = Config {
        allow_eio3: true,
        trust_proxy: vec!["127.0.0.1".parse().unwrap()],
        ..pairchat::conformance::sio_config(0)
    };
    let server = start(config, RecoveryConfig::off());
    let from = |ip: &str, path: &str| {
        server.request(&format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {ip}\r\n\r\n"
        ))
    };
    let open = from("203.0.113.1", &url("")).text();
    let sid = open.split('"').nth(3).expect("a sid").to_string();
    let poll = url(&format!("&sid={sid}"));
    let partner = from("203.0.113.2", &poll);
    assert_eq!(
        (partner.status, partner.json()["code"].clone()),
        (400, json!(1))
    );
    let ws = format!("{PATH}?EIO=3&transport=websocket&sid={sid}");
    let upgrade = format!(
        "GET {ws} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.2\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    assert_eq!(server.request(&upgrade).status, 400);
    // The client itself polls on: its CONNECT and `hello` were not taken.
    let mine = from("203.0.113.1", &poll);
    assert_eq!(mine.status, 200);
    assert!(mine.text().starts_with("2:40"), "{}", mine.text());
}
