//! The two Socket.IO parsers over raw WebSockets against the conformance application: a
//! session's first packet chooses (a binary msgpack CONNECT: socket.io-msgpack-parser; text:
//! JSON), the choice holds for the session, `--parser json|msgpack` takes one only, and
//! malformed msgpack closes the session that sent it and nothing else. The real npm clients
//! are in `tests/e2e/msgpack.test.mjs`.

mod common;

use std::time::Duration;

use common::{TestServer, recv_skip_pings, send_text, ws_closed};
use pairchat::sio::msgpack::{self, Decoded};
use pairchat::sio::packet::PacketType;
use pairchat::sio::{Parser, Parsers, RecoveryConfig, SioConfig, SocketIo};
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<std::net::TcpStream>;

const PATH: &str = "/socket.io/";

/// The conformance application, taking `parsers`.
fn server(parsers: Parsers) -> TestServer {
    TestServer::start(pairchat::conformance::sio_config(0), move |cfg| {
        let sio = SioConfig {
            connect_timeout: Duration::from_millis(1000),
            recovery: RecoveryConfig::off(),
            parsers,
            ..SioConfig::default()
        };
        SocketIo::new(pairchat::conformance::SioConformance, sio, cfg.max_payload)
    })
}

fn open(server: &TestServer) -> Ws {
    server.open_websocket(PATH).0
}

/// A msgpack packet.
fn packet(kind: PacketType, id: Option<u64>, data: Option<&str>) -> Message {
    let bytes = msgpack::encode(kind, "/", id, data, &[]).expect("a packet");
    Message::binary(bytes)
}

/// A msgpack session connected to `/`.
fn msgpack_connected(server: &TestServer) -> Ws {
    let mut ws = open(server);
    ws.send(packet(PacketType::Connect, None, None)).unwrap();
    assert_eq!(next_msgpack(&mut ws).kind, PacketType::Connect);
    ws
}

/// The next packet, which must be msgpack.
fn next_msgpack(ws: &mut Ws) -> Decoded {
    match recv_skip_pings(ws) {
        Message::Binary(b) => msgpack::decode(&b, usize::MAX).expect("a msgpack packet"),
        other => panic!("expected a binary frame, got {other:?}"),
    }
}

#[test]
fn a_msgpack_session_and_a_json_session_side_by_side() {
    let server = server(Parsers::Auto);
    let mut mp = open(&server);
    let mut json = open(&server);
    mp.send(packet(PacketType::Connect, None, None)).unwrap();
    let reply = next_msgpack(&mut mp);
    assert_eq!(reply.kind, PacketType::Connect);
    assert!(
        reply.data.as_deref().unwrap().starts_with("{\"sid\":\""),
        "{reply:?}"
    );
    send_text(&mut json, "40");
    assert!(matches!(recv_skip_pings(&mut json), Message::Text(t) if t.starts_with("40{\"sid\"")));

    // An event with an ack, and one echoed back: msgpack both ways, JSON for the other.
    let args = r#"["message-with-ack",1,"é",{"a":[true,null,2.5]}]"#;
    mp.send(packet(PacketType::Event, Some(7), Some(args)))
        .unwrap();
    let ack = next_msgpack(&mut mp);
    assert_eq!((ack.kind, ack.id), (PacketType::Ack, Some(7)));
    assert_eq!(
        ack.data.as_deref(),
        Some(r#"[1,"é",{"a":[true,null,2.5]}]"#)
    );
    send_text(&mut json, r#"421["message-with-ack",1,"é"]"#);
    assert!(matches!(recv_skip_pings(&mut json), Message::Text(t) if t == r#"431[1,"é"]"#));

    // Binary data inline (`bin`) comes back inline.
    let data = r#"["message",{"_placeholder":true,"num":0}]"#;
    let bytes = msgpack::encode(
        PacketType::BinaryEvent,
        "/",
        None,
        Some(data),
        &[&[1, 2, 3]],
    );
    mp.send(Message::binary(bytes.unwrap())).unwrap();
    let back = next_msgpack(&mut mp);
    assert_eq!(back.kind, PacketType::BinaryEvent);
    assert_eq!(
        back.data.as_deref(),
        Some(r#"["message-back",{"_placeholder":true,"num":0}]"#)
    );
    assert_eq!(back.attachments, vec![vec![1u8, 2, 3]]);
}

#[test]
fn a_session_keeps_the_parser_its_first_packet_chose() {
    let server = server(Parsers::Auto);
    // Msgpack, then text: closed.
    let mut ws = msgpack_connected(&server);
    send_text(&mut ws, r#"42["message",1]"#);
    assert!(ws_closed(&mut ws), "text on a msgpack session");
    // JSON, then a msgpack packet (a binary message where no attachment is due): closed.
    let mut ws = open(&server);
    send_text(&mut ws, "40");
    recv_skip_pings(&mut ws);
    ws.send(packet(PacketType::Event, None, Some(r#"["message",1]"#)))
        .unwrap();
    assert!(ws_closed(&mut ws), "msgpack on a JSON session");
    // A first binary message that is no msgpack CONNECT: closed.
    let mut ws = open(&server);
    ws.send(packet(PacketType::Event, None, Some(r#"["message",1]"#)))
        .unwrap();
    assert!(ws_closed(&mut ws), "an event before the CONNECT");
}

#[test]
fn one_parser_only_refuses_the_other() {
    let json_only = server(Parsers::Only(Parser::Json));
    let mut ws = open(&json_only);
    ws.send(packet(PacketType::Connect, None, None)).unwrap();
    assert!(ws_closed(&mut ws), "msgpack on --parser json");

    let msgpack_only = server(Parsers::Only(Parser::Msgpack));
    let mut ws = open(&msgpack_only);
    send_text(&mut ws, "40");
    assert!(ws_closed(&mut ws), "JSON on --parser msgpack");
    msgpack_connected(&msgpack_only);
}

#[test]
fn malformed_msgpack_closes_its_session_only() {
    let server = server(Parsers::Auto);
    let mut good = msgpack_connected(&server);
    let bad: [&[u8]; 6] = [
        b"",
        b"\xc1",
        b"\x81\xa4type",
        b"\x83\xa4type\x00\xa3nsp\xa1/\xa4data\xdb\xff\xff\xff\xff",
        b"\x83\xa4type\x09\xa3nsp\xa1/\xa4data\xc0",
        &[0x91; 4000],
    ];
    for bytes in bad {
        let mut ws = open(&server);
        ws.send(Message::binary(bytes.to_vec())).unwrap();
        assert!(ws_closed(&mut ws), "{bytes:02x?}");
    }
    let args = r#"["message-with-ack","still here"]"#;
    good.send(packet(PacketType::Event, Some(1), Some(args)))
        .unwrap();
    assert_eq!(
        next_msgpack(&mut good).data.as_deref(),
        Some(r#"["still here"]"#)
    );
}
