//! Connection state recovery under hostile clients, over real sockets: each test replays a
//! finding of a hostile review of recovery (an unbounded room, a replay that never fit, an
//! amplifier, rooms held by nobody) and shows what the server does now.

mod common;

use common::chat::*;
use common::{HttpConn, TestServer};
use pairchat::Config;
use pairchat::sio::SioConfig;
use serde_json::{Value, json};

/// A raw WebSocket socket on `/`: (ws, sid, pid), the ids as JSON strings.
fn raw_connect(server: &TestServer) -> (Ws, Value, Value) {
    let (mut ws, _) = server.open_websocket(PATH);
    send_text(&mut ws, "40");
    let reply = next_reply(&mut ws, &mut Vec::new());
    (ws, reply["sid"].clone(), reply["pid"].clone())
}

/// Reads until the CONNECT reply; the event frames before it go to `events`.
fn next_reply(ws: &mut Ws, events: &mut Vec<Value>) -> Value {
    loop {
        let text = next_text(ws);
        if let Some(reply) = text.strip_prefix("40") {
            return serde_json::from_str(reply).expect("CONNECT JSON");
        }
        let event = text.strip_prefix("42").expect("an event");
        events.push(serde_json::from_str(event).expect("event JSON"));
    }
}

/// `createRoom` on a raw socket (its first ack id).
fn raw_create_room(ws: &mut Ws) -> String {
    send_text(ws, r#"420["createRoom",{}]"#);
    let ack = next_text(ws);
    let ack: Value = serde_json::from_str(ack.strip_prefix("430").expect("an ack")).unwrap();
    ack[0]["code"].as_str().expect("a code").to_string()
}

/// A raw socket creates a room, `b` joins it, and the creator's transport drops (it is away,
/// `b` has heard `userLeft`): (sid, pid, code, b).
fn dropped_creator(server: &TestServer) -> (Value, Value, String, Client) {
    let (mut ws, sid, pid) = raw_connect(server);
    let code = raw_create_room(&mut ws);
    let mut b = Client::connect(server.addr, None);
    assert_success(&b.join(&code));
    drop(ws);
    b.event("userLeft");
    (sid, pid, code, b)
}

fn recovered(server: &TestServer, result: &str) -> u64 {
    let series = format!("pairchat_recoveries_total{{result=\"{result}\"}}");
    metric(&scrape(server), &series)
}

/// Found: an away member kept its membership though its seat was free, so members that joined
/// and dropped piled up in one room, and each message of the room was kept once per member
/// that ever came (here 100 copies). A join now takes the seat of the member away: a message
/// is kept twice (its sender, and the one member away), however many came and went.
#[test]
fn a_join_and_drop_loop_keeps_each_message_twice() {
    let server = chat_server(config(), chat_config());
    let mut b = Client::connect(server.addr, None);
    let code = b.create_room();
    for _ in 0..100 {
        let mut c = Client::connect(server.addr, None);
        assert_success(&c.join(&code));
        b.event("userJoined");
        drop(c);
        b.event("userLeft");
    }
    let before = metric(&scrape(&server), "pairchat_recovery_bytes");
    assert_success(&b.say(&code, "x"));
    let per_message = metric(&scrape(&server), "pairchat_recovery_bytes") - before;
    assert!(
        per_message <= 2 * 200,
        "one 1-char message cost the budget {per_message} bytes"
    );
}

/// Found: what one socket kept (1 MiB) did not follow `--max-buffer`, so a replay larger than
/// the new session's output buffer closed it before the CONNECT reply, the socket went away
/// again with a fresh window, and the client, its offset unchanged, asked for the same replay:
/// it never connected. `--max-buffer N` now keeps at most N/2 per socket: a short absence
/// is replayed, a longer one gets a fresh socket at the first attempt.
#[test]
fn with_a_small_max_buffer_a_restore_connects_at_the_first_attempt() {
    let args = ["--max-buffer", "65536"].map(String::from);
    let Ok(pairchat::cli::Command::Run(settings)) = pairchat::cli::parse(&args, |_| None) else {
        panic!("--max-buffer 65536");
    };
    let cfg = Config {
        max_poll_buffer: settings.server.max_poll_buffer,
        max_ws_buffer: settings.server.max_ws_buffer,
        ..config()
    };
    let server = chat_server_with(cfg, chat_config(), settings.sio);
    let (sid, pid, code, mut b) = dropped_creator(&server);
    // 20 kB missed: replayed whole.
    let text = "x".repeat(2000);
    for _ in 0..10 {
        assert_success(&b.say(&code, &text));
    }
    let claim = format!("40{{\"pid\":{pid}}}");
    let (mut ws, _) = server.open_websocket(PATH);
    send_text(&mut ws, &claim);
    let mut events = Vec::new();
    let reply = next_reply(&mut ws, &mut events);
    assert_eq!(reply["sid"], sid, "recovered");
    // Everything unconfirmed (it sent no offset): b's arrival, then the messages.
    let names: Vec<&str> = events.iter().filter_map(|e| e[0].as_str()).collect();
    assert_eq!(
        names[..],
        [&["userJoined"][..], &["newMessage"; 10]].concat()
    );
    drop(ws);
    b.event("userJoined");
    b.event("userLeft");
    // 120 kB unconfirmed: more than the socket keeps; a fresh socket, at once, over polling.
    for _ in 0..50 {
        assert_success(&b.say(&code, &text));
    }
    let (poll_sid, _) = server.open_polling(PATH);
    assert_eq!(server.post(&poll_url(&poll_sid), &claim).status, 200);
    let get = server.get(&poll_url(&poll_sid));
    assert_eq!(get.status, 200);
    let body = get.text();
    let reply = body
        .split('\u{1e}')
        .find_map(|p| p.strip_prefix("40"))
        .unwrap_or_else(|| panic!("no CONNECT reply in {} bytes", body.len()));
    let reply: Value = serde_json::from_str(reply).unwrap();
    assert_ne!(reply["sid"], sid, "a fresh socket");
    assert_eq!(recovered(&server, "missed_events_dropped"), 1);
    assert_eq!(metric(&scrape(&server), "pairchat_sio_away_sockets"), 0);
}

/// Found: a restore sends everything unconfirmed again (up to 1 MiB) in answer to a few small
/// requests, and nothing limited how often: 20 restores of one socket sent 20 MB for the 1 MB
/// of messages that filled it. Restores now send a socket at most 4 MiB again a minute; past
/// that the claim gets a fresh socket.
#[test]
fn restores_in_a_loop_are_not_an_amplifier() {
    let server = chat_server(config(), chat_config());
    let (sid, pid, code, mut b) = dropped_creator(&server);
    let text = "x".repeat(2000);
    for _ in 0..480 {
        b.queue("sendMessage", json!({ "code": code, "text": text }));
    }
    b.flush();
    for i in 0..480 {
        assert_success(&b.ack(i + 1));
    }
    // What filling the socket took (the messages' text alone).
    let mut sent = 480 * text.len();
    let (mut received, mut restored) = (0usize, 0);
    let mut conn = HttpConn::new(server.connect());
    for round in 0..20 {
        if round % 3 == 0 {
            // At most 4 polling handshakes per connection: a new one every 3 rounds.
            conn = HttpConn::new(server.connect());
        }
        let req = format!("GET {PATH}?EIO=4&transport=polling HTTP/1.1\r\nHost: localhost\r\n\r\n");
        conn.send(req.as_bytes());
        sent += req.len();
        let open = conn.response().unwrap();
        received += open.body.len();
        let open: Value = serde_json::from_str(open.text().strip_prefix('0').unwrap()).unwrap();
        let path = poll_url(open["sid"].as_str().unwrap());
        let post = common::post_request(&path, &format!("40{{\"pid\":{pid}}}"));
        conn.send(post.as_bytes());
        sent += post.len();
        assert_eq!(conn.response().unwrap().status, 200);
        let get = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        conn.send(get.as_bytes());
        sent += get.len();
        let res = conn.response().unwrap();
        received += res.body.len();
        let text = res.text();
        let reply = text.split('\u{1e}').find_map(|p| p.strip_prefix("40"));
        let reply: Value = serde_json::from_str(reply.expect("a CONNECT reply")).unwrap();
        if reply["sid"] == sid {
            restored += 1;
        }
    }
    assert!(
        received <= (4 << 20) + (64 << 10),
        "{received} bytes received for {sent} sent ({restored} restores)"
    );
    assert!(received < 5 * sent, "{received} received for {sent} sent");
    assert_eq!(restored, 4, "four 1 MB restores a minute");
    assert_eq!(recovered(&server, "too_often"), 1);
}

/// Found: a room whose only member dropped lives for the recovery window, so one client that
/// never holds more than one connection filled `--max-rooms` (connect, createRoom, drop) and
/// every createRoom was "Server busy" for two minutes. At `--max-rooms` the oldest room whose
/// members are all away now makes way; its member, back, is told.
#[test]
fn a_connect_create_drop_loop_does_not_fill_max_rooms() {
    let chat = pairchat::chat::ChatConfig {
        max_rooms: 20,
        ..chat_config()
    };
    let server = chat_server_with(config(), chat, SioConfig::default());
    let mut first = None;
    for _ in 0..20 {
        let (mut ws, sid, pid) = raw_connect(&server);
        let code = raw_create_room(&mut ws);
        first.get_or_insert((sid, pid, code));
        drop(ws); // one connection at a time
    }
    wait_metric(&server, "pairchat_sio_away_sockets", |n| n == 20);
    let mut victim = Client::connect(server.addr, None);
    let res = victim.call("createRoom", json!({}));
    assert!(res["code"].is_string(), "rooms held by nobody: {res}");
    assert_eq!(metric(&scrape(&server), "pairchat_rooms_evicted_total"), 1);
    let (sid, pid, code) = first.unwrap();
    let (mut ws, _) = server.open_websocket(PATH);
    send_text(&mut ws, &format!("40{{\"pid\":{pid}}}"));
    let mut events = Vec::new();
    let reply = next_reply(&mut ws, &mut events);
    assert_eq!(reply["sid"], sid, "recovered, out of its room");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0][0], "roomUnavailable");
    assert_eq!(events[0][1], json!({"code": code, "error": "Server busy"}));
}
