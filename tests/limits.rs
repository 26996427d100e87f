//! The hardening limits over real sockets: one test per limit, each showing the limit's outcome
//! and that a well-behaved pair of chat clients (`Pair`) keeps chatting before and after.
//!
//! Sessions use a 60 s ping interval so no Engine.IO ping arrives during a test. The soak test
//! (ignored by default) runs the real binary under client churn for `SOAK_SECS` seconds and checks
//! that every gauge returns to zero and the resident memory stays flat. The last two tests
//! reproduce gaps found while writing these (a slow second request on a keep-alive connection;
//! a history too large for the client's output buffer), fixed since.

mod common;

use std::collections::VecDeque;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::chat::*;
use common::process::{Proc, rss_kib};
use common::{HttpConn, READ_TIMEOUT, TestServer};
use pairchat::Config;
use pairchat::chat::limits::Rate;
use pairchat::chat::{Chat, ChatConfig, errors};
use pairchat::engine::{Event, Handler, Io};
use pairchat::sio::{SioConfig, SocketIo};
use serde_json::{Value, json};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

// ---- connection limits ---------------------------------------------------------------------

#[test]
fn slowloris_headers_are_cut_off_at_the_header_timeout() {
    let server = chat_server(
        Config {
            header_timeout: ms(300),
            ..config()
        },
        chat_config(),
    );
    let mut pair = Pair::new(server.addr);

    let mut slow = HttpConn::new(server.connect());
    let mut silent = HttpConn::new(server.connect());
    let start = Instant::now();
    slow.send(b"GET /health HTTP/1.1\r\n");
    slow.stream().set_read_timeout(Some(ms(50))).unwrap();
    // A header line every 50 ms, never the blank line that ends them.
    let closed_after = loop {
        let _ = slow.stream().write_all(b"X-Slow: 1\r\n");
        if slow.closed() {
            break start.elapsed();
        }
        if start.elapsed() > Duration::from_secs(3) {
            panic!("the slow connection is still open after 3 s");
        }
        if start.elapsed() > ms(100) && pair.sent < 4 {
            pair.round_trip(); // meanwhile, chat goes on
        }
    };
    assert!(
        closed_after >= ms(250),
        "closed after {closed_after:?}, before the header timeout"
    );
    silent.stream().set_read_timeout(Some(ms(2000))).unwrap();
    assert!(
        silent.closed(),
        "a connection that sent nothing is closed too"
    );

    pair.round_trip();
    let m = scrape(&server);
    // Only the connection that had started a request counts as a header timeout.
    assert_eq!(metric(&m, &rejected("header_timeout")), 1);
    assert_eq!(metric(&m, WS_CONNS), 2, "the pair's sockets are untouched");
}

#[test]
fn idle_keep_alive_connections_are_closed_but_parked_polls_and_busy_ones_stay() {
    let server = chat_server(
        Config {
            keep_alive_timeout: ms(300),
            header_timeout: Duration::from_secs(5),
            ..config()
        },
        chat_config(),
    );
    let mut pair = Pair::new(server.addr);

    // An idle keep-alive connection is closed after the keep-alive timeout.
    let mut idle = health_checked(&server);
    let answered = Instant::now();
    idle.stream().set_read_timeout(Some(ms(3000))).unwrap();
    assert!(idle.closed(), "the idle connection stays open");
    let idle_for = answered.elapsed();
    assert!(
        (ms(250)..ms(2000)).contains(&idle_for),
        "closed after {idle_for:?} (timeout 300 ms)"
    );

    // A connection with a request every 150 ms outlives several timeouts.
    let mut busy = HttpConn::new(server.connect());
    for _ in 0..7 {
        busy.send(HEALTH);
        assert_eq!(busy.response().expect("busy connection").status, 200);
        std::thread::sleep(ms(150));
    }

    // A long-poll parked longer than the timeout is still answered.
    let mut writer = Client::connect(server.addr, None);
    let code = writer.create_room();
    let sid = polling_connected(&server);
    let res = server.post(
        &poll_url(&sid),
        &format!("42{}", json!(["joinRoom", {"code": code}])),
    );
    assert_eq!(res.status, 200);
    writer.event("userJoined");
    let mut poll = HttpConn::new(server.connect());
    get_on(&mut poll, &poll_url(&sid));
    std::thread::sleep(ms(700));
    pair.round_trip();
    assert_success(&writer.say(&code, "still there?"));
    let res = poll.response().expect("the parked poll was dropped");
    assert_eq!(res.status, 200);
    assert!(res.text().contains("still there?"), "{}", res.text());

    pair.round_trip();
}

#[test]
fn a_thousand_half_open_requests_do_not_stop_new_clients() {
    const HALF_OPEN: u64 = 1000;
    let server = chat_server(
        Config {
            header_timeout: Duration::from_secs(3),
            ..config()
        },
        chat_config(),
    );
    let mut pair = Pair::new(server.addr);

    let mut half_open = Vec::new();
    for _ in 0..HALF_OPEN {
        let mut s = TcpStream::connect(server.addr).expect("connect");
        s.write_all(b"GET /socket.io/?EIO=4&tra").unwrap();
        half_open.push(s);
    }
    let started = Instant::now();
    assert_eq!(server.get("/health").status, 200);
    let mut late = Pair::new(server.addr);
    pair.round_trip();
    let served_in = started.elapsed();
    assert!(
        served_in < Duration::from_secs(2),
        "a new client waited {served_in:?}"
    );
    let open = metric(&scrape(&server), HTTP_CONNS);
    assert!(open > HALF_OPEN, "{open} HTTP connections open");

    // The header timeout clears them all, and counts each.
    wait_metric_for(&server, HTTP_CONNS, Duration::from_secs(10), |n| n == 1);
    let m = scrape(&server);
    assert_eq!(metric(&m, &rejected("header_timeout")), HALF_OPEN);
    assert_eq!(metric(&m, WS_CONNS), 4);
    late.round_trip();
    pair.round_trip();
    drop(half_open);
}

#[test]
fn at_max_connections_new_clients_wait_and_new_sessions_get_503() {
    let server = chat_server(
        Config {
            max_connections: 10,
            ..config()
        },
        chat_config(),
    );
    let mut pair = Pair::new(server.addr); // 2 connections
    let mut conns: Vec<HttpConn> = (0..8).map(|_| health_checked(&server)).collect();

    // Ten are open: the eleventh connects (the kernel's backlog) but is not served.
    let mut waiting = HttpConn::new(server.connect());
    waiting.send(HEALTH);
    waiting.stream().set_read_timeout(Some(ms(400))).unwrap();
    let early = waiting.response();
    assert!(
        early.is_err(),
        "served over max_connections: {:?}",
        early.map(|r| r.status)
    );
    pair.round_trip();

    // A new session on an open keep-alive connection is refused, with a hint to retry.
    let mut refused = conns.remove(0);
    get_on(&mut refused, &format!("{PATH}?EIO=4&transport=polling"));
    let res = refused.response().expect("an answer");
    assert_eq!(res.status, 503, "{}", res.text());
    assert_eq!(res.header("Retry-After"), Some("1"));
    assert!(refused.closed(), "the 503 closes the connection");
    drop(refused);
    // Other requests on open connections are served (nine are open: still not below 90 %).
    conns[0].send(METRICS);
    let m = conns[0].response().unwrap().text();
    assert_eq!(metric(&m, &rejected("over_capacity")), 1);
    assert!(waiting.response().is_err(), "served at 90 %");

    // Below 90 % the server accepts again: the waiting client is served, new sessions open.
    drop(conns.remove(1));
    waiting
        .stream()
        .set_read_timeout(Some(READ_TIMEOUT))
        .unwrap();
    assert_eq!(waiting.response().expect("served").status, 200);
    get_on(&mut waiting, &format!("{PATH}?EIO=4&transport=polling"));
    let res = waiting.response().unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    conns.truncate(2);
    let mut fresh = Pair::new(server.addr);
    fresh.round_trip();
    pair.round_trip();
}

/// Polling sessions need no connection of their own between polls, so one keep-alive
/// connection could open them without end: they are capped at `max_connections` too.
#[test]
fn sessions_are_capped_at_max_connections_too() {
    let server = chat_server(
        Config {
            max_connections: 10,
            ..config()
        },
        chat_config(),
    );
    let mut pair = Pair::new(server.addr); // 2 sessions
    for _ in 0..8 {
        // Sessions whose clients connected to Socket.IO: none is reclaimed.
        let mut conn = HttpConn::new(server.connect());
        let sid = handshake_on(&mut conn);
        conn.send_post(&format!("{PATH}?EIO=4&transport=polling&sid={sid}"), "40");
        assert_eq!(conn.response().expect("an answer").text(), "ok");
    }
    let mut conn = HttpConn::new(server.connect());
    get_on(&mut conn, &format!("{PATH}?EIO=4&transport=polling"));
    let res = conn.response().expect("an answer");
    assert_eq!(res.status, 503, "an eleventh session: {}", res.text());
    pair.round_trip();
    assert_eq!(metric(&scrape(&server), &rejected("over_capacity")), 1);
}

/// A handshake on `conn` (kept open), without reading the open packet's details: its sid.
fn handshake_on(conn: &mut HttpConn) -> String {
    get_on(conn, &format!("{PATH}?EIO=4&transport=polling"));
    let res = conn.response().expect("an answer");
    assert_eq!(res.status, 200, "{}", res.text());
    let open: Value = serde_json::from_str(&res.text()[1..]).expect("open packet");
    open["sid"].as_str().expect("sid").to_string()
}

/// One connection pipelining handshakes cannot fill the session table: the answer to its
/// fourth says `Connection: close`, and at the cap the oldest session whose client never
/// spoke makes room, so a new client still gets in (it was 503 for 45 s on main).
#[test]
fn a_handshake_flood_cannot_lock_new_clients_out() {
    let server = chat_server(
        Config {
            max_connections: 20,
            ..config()
        },
        chat_config(),
    );
    let mut pair = Pair::new(server.addr); // 2 sessions, connected to Socket.IO
    // 40 handshakes pipelined on one connection in one write.
    let mut flood = HttpConn::new(server.connect());
    let handshake = format!("GET {PATH}?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n");
    flood.send(handshake.repeat(40).as_bytes());
    for i in 0..4 {
        let res = flood.response().expect("a handshake answer");
        assert_eq!(res.status, 200);
        let close = res.header("connection");
        assert_eq!(close, (i == 3).then_some("close"), "answer {i}");
    }
    assert!(flood.closed(), "the flooding connection was not closed");
    // Many connections, four bare sessions each: the table (20) fills up with them...
    let mut floods = Vec::new();
    for _ in 0..6 {
        let mut c = HttpConn::new(server.connect());
        c.send(handshake.repeat(4).as_bytes());
        for _ in 0..4 {
            assert_eq!(c.response().expect("answer").status, 200);
        }
        floods.push(c);
    }
    // ...yet a new client gets a session, and it is a bare one that made room.
    let mut late = Pair::new(server.addr);
    late.round_trip();
    pair.round_trip();
    let m = scrape(&server);
    assert!(metric(&m, "pairchat_sessions_reclaimed_total") >= 8, "{m}");
    assert_eq!(metric(&m, &rejected("over_capacity")), 0);
}

#[test]
fn per_forwarded_address_connection_limit() {
    let server = chat_server(
        Config {
            trust_proxy: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            max_connections_per_ip: 2,
            ..config()
        },
        chat_config(),
    );
    // Without X-Forwarded-For the trusted proxy's own connections name no client: not limited.
    let mut pair = Pair::new(server.addr);
    let mut also = Pair::new(server.addr);

    let forwarded = |xff: &str| -> (HttpConn, u16) {
        let mut c = HttpConn::new(server.connect());
        c.send(
            format!("GET /health HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: {xff}\r\n\r\n")
                .as_bytes(),
        );
        let res = c.response().expect("an answer");
        if res.status == 503 {
            assert_eq!(res.header("Retry-After"), Some("1"));
        }
        (c, res.status)
    };
    let (first, status) = forwarded("203.0.113.7");
    assert_eq!(status, 200);
    let (_second, status) = forwarded("203.0.113.7");
    assert_eq!(status, 200);
    // A spoofed address in front does not help: the proxy's rightmost entry counts.
    let (mut third, status) = forwarded("198.51.100.99, 203.0.113.7");
    assert_eq!(status, 503);
    assert!(third.closed(), "the refused connection is closed");
    // (It counts until it is gone: the server lingers for the client's end of it.)
    drop(third);
    let (_other, status) = forwarded("203.0.113.8");
    assert_eq!(status, 200);
    pair.round_trip();
    assert_eq!(metric(&scrape(&server), &rejected("per_ip_limit")), 1);

    // Once one closes, the address may connect again.
    drop(first);
    let deadline = Instant::now() + READ_TIMEOUT;
    while forwarded("203.0.113.7").1 != 200 {
        assert!(Instant::now() < deadline, "the address stays refused");
        std::thread::sleep(ms(20));
    }
    pair.round_trip();
    also.round_trip();
}

// ---- output and input limits ---------------------------------------------------------------

#[test]
fn a_websocket_reader_that_stops_reading_is_disconnected() {
    let server = chat_server(
        Config {
            max_ws_buffer: 64 * 1024,
            ..config()
        },
        ChatConfig {
            max_message_chars: 60_000,
            ..chat_config()
        },
    );
    let mut pair = Pair::new(server.addr);

    let mut flooder = Client::connect(server.addr, None);
    let code = flooder.create_room();
    let mut stalled = Client::connect(server.addr, None);
    assert_success(&stalled.join(&code));
    flooder.event("userJoined");
    // `stalled` reads nothing from now on; the flooder reads its own copies.
    let text = "x".repeat(60_000);
    let mut sent = 0;
    loop {
        assert!(sent < 5000, "the stalled reader was never dropped");
        flooder.emit("sendMessage", json!({ "code": code, "text": text }));
        sent += 1;
        // Its own copy comes back, or the news that the stalled reader is gone.
        match parse_frame(&next_text(&mut flooder.ws)) {
            Frame::Event(name, _) if name == "newMessage" => {}
            Frame::Event(name, _) if name == "userLeft" => break,
            Frame::Event(name, _) => panic!("unexpected event {name}"),
            _ => panic!("unexpected frame"),
        }
        if sent % 50 == 0 {
            pair.round_trip();
        }
    }
    eprintln!("stalled reader dropped after {sent} messages of 60 kB");
    assert!(sent > 1, "dropped before its buffer could fill");
    pair.round_trip();
    assert!(
        common::ws_closed(&mut stalled.ws),
        "the stalled socket is closed"
    );
    let m = scrape(&server);
    assert_eq!(metric(&m, &rejected("slow_consumer")), 1);
    assert_eq!(metric(&m, WS_CONNS), 3);
    assert_success(&flooder.say(&code, "alone now"));
}

#[test]
fn a_polling_session_that_never_polls_is_closed_at_max_poll_buffer() {
    let server = chat_server(
        Config {
            max_poll_buffer: 8 * 1024,
            ..config()
        },
        chat_config(),
    );
    let mut pair = Pair::new(server.addr);

    let mut writer = Client::connect(server.addr, None);
    let code = writer.create_room();
    let sid = polling_connected(&server);
    let res = server.post(
        &poll_url(&sid),
        &format!("42{}", json!(["joinRoom", {"code": code}])),
    );
    assert_eq!(res.status, 200);
    writer.event("userJoined");
    // The polling client never polls again.
    let text = "y".repeat(1000);
    let mut sent = 0;
    loop {
        assert!(sent < 100, "the session was never closed");
        assert_success(&writer.say(&code, &text));
        sent += 1;
        if writer.events.iter().any(|(n, _)| n == "userLeft") {
            break;
        }
        writer.read_one_within(ms(50));
        if writer.events.iter().any(|(n, _)| n == "userLeft") {
            break;
        }
    }
    assert!(
        (8..=10).contains(&sent),
        "closed after {sent} messages of 1 kB"
    );
    let res = server.get(&poll_url(&sid));
    assert_eq!(res.status, 400, "the session is gone: {}", res.text());
    assert_eq!(metric(&scrape(&server), &rejected("slow_consumer")), 1);
    pair.round_trip();
}

#[test]
fn oversized_polling_bodies_get_413_and_oversized_messages_close_1009() {
    let server = chat_server(
        Config {
            max_payload: 4096,
            ..config()
        },
        ChatConfig {
            max_message_chars: 4000,
            ..chat_config()
        },
    );
    let mut pair = Pair::new(server.addr);

    let sid = polling_connected(&server);
    let mut big_post = HttpConn::new(server.connect());
    big_post.send_post(&poll_url(&sid), &format!("4{}", "a".repeat(5000)));
    let res = big_post.response().expect("an answer");
    assert_eq!(res.status, 413, "{}", res.text());
    assert!(big_post.closed(), "the 413 closes the connection");

    let (mut ws, _) = server.open_websocket(PATH);
    send_text(&mut ws, "40");
    assert!(next_text(&mut ws).starts_with("40{"));
    send_text(&mut ws, &format!("4{}", "b".repeat(5000)));
    let frame = loop {
        match ws.read().expect("a close frame") {
            Message::Close(frame) => break frame,
            other => eprintln!("skipped {other:?}"),
        }
    };
    assert_eq!(frame.expect("a close code").code, CloseCode::Size);

    pair.round_trip();
    let m = scrape(&server);
    assert_eq!(metric(&m, &rejected("payload_too_large")), 1);
    assert_eq!(metric(&m, &rejected("message_too_big")), 1);
    // A message just under the limit is fine.
    let mut c = Client::connect(server.addr, None);
    let code = c.create_room();
    assert_success(&c.say(&code, &"z".repeat(3900)));
}

// ---- chat limits ---------------------------------------------------------------------------

fn three_per_minute() -> Option<Rate> {
    Some(Rate {
        count: 3,
        per: Duration::from_secs(60),
    })
}

#[test]
fn failed_joins_are_limited_per_socket() {
    let server = chat_server(
        config(),
        ChatConfig {
            join_failures: three_per_minute(),
            ..chat_config()
        },
    );
    let mut pair = Pair::new(server.addr);
    let mut host = Client::connect(server.addr, None);
    let code = host.create_room();
    let absent = absent_code(&[&pair.code, &code]);

    let mut guesser = Client::connect(server.addr, None);
    assert_eq!(error_of(&guesser.join(&absent)), errors::ROOM_NOT_FOUND);
    assert_eq!(error_of(&guesser.join("12")), errors::INVALID_CODE);
    // Six digits with a leading zero: well-formed, never live, and a failure like any other.
    assert_eq!(error_of(&guesser.join("012345")), errors::ROOM_NOT_FOUND);
    // Three failures used the window up: even a valid code is refused now.
    assert_eq!(error_of(&guesser.join(&code)), errors::TOO_MANY_ATTEMPTS);
    assert_eq!(error_of(&guesser.join(&code)), errors::TOO_MANY_ATTEMPTS);
    pair.round_trip();

    // Others are not affected (on loopback without trust_proxy no address is known).
    let mut other = Client::connect(server.addr, None);
    assert_success(&other.join(&code));
    host.event("userJoined");
    let mut fresh = Client::connect(server.addr, None);
    assert_eq!(error_of(&fresh.join(&absent)), errors::ROOM_NOT_FOUND);
    pair.round_trip();
    assert_eq!(
        metric(&scrape(&server), &limited("join_failures")),
        2,
        "both refusals counted"
    );
}

/// Sockets `a` and `b` claim one forwarded address, `c` another; `a` fails twice, `b` once.
/// Returns the answers to valid joins by `a`, `b` and `c` (each into a room of its own host).
fn shared_join_budget(trust_proxy: bool) -> [Value; 3] {
    let server = chat_server(
        Config {
            trust_proxy: if trust_proxy {
                vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
            } else {
                Vec::new()
            },
            ..config()
        },
        ChatConfig {
            join_failures: three_per_minute(),
            ..chat_config()
        },
    );
    let mut pair = Pair::new(server.addr);
    let mut hosts: Vec<Client> = (0..3).map(|_| Client::connect(server.addr, None)).collect();
    let codes: Vec<String> = hosts.iter_mut().map(Client::create_room).collect();
    let mut taken: Vec<&str> = codes.iter().map(String::as_str).collect();
    taken.push(&pair.code);
    let absent = absent_code(&taken);

    let mut a = Client::connect(server.addr, Some("198.51.100.7"));
    let mut b = Client::connect(server.addr, Some("198.51.100.7"));
    let mut c = Client::connect(server.addr, Some("198.51.100.8"));
    assert_eq!(error_of(&a.join(&absent)), errors::ROOM_NOT_FOUND);
    assert_eq!(error_of(&a.join(&absent)), errors::ROOM_NOT_FOUND);
    assert_eq!(error_of(&b.join(&absent)), errors::ROOM_NOT_FOUND);
    pair.round_trip();
    let answers = [a.join(&codes[0]), b.join(&codes[1]), c.join(&codes[2])];
    pair.round_trip();
    answers
}

#[test]
fn failed_joins_are_shared_per_forwarded_address_only_behind_a_trusted_proxy() {
    let [a, b, c] = shared_join_budget(true);
    assert_eq!(
        error_of(&a),
        errors::TOO_MANY_ATTEMPTS,
        "two of its own + one of b's"
    );
    assert_eq!(
        error_of(&b),
        errors::TOO_MANY_ATTEMPTS,
        "one of its own + two of a's"
    );
    assert_success(&c);

    // A loopback peer with no trusted proxy configured: X-Forwarded-For is ignored, and the
    // address is not used (it would be every client of a local reverse proxy).
    let [a, b, c] = shared_join_budget(false);
    assert_success(&a);
    assert_success(&b);
    assert_success(&c);
}

#[test]
fn messages_are_rate_limited_per_socket_and_tokens_come_back() {
    let server = chat_server(
        config(),
        ChatConfig {
            message_rate: Some(Rate {
                count: 5,
                per: Duration::from_secs(1),
            }),
            ..chat_config()
        },
    );
    let mut pair = Pair::new(server.addr);
    let mut burst = Pair::join(server.addr);
    let code = burst.code.clone();

    // Fifteen at once: the bucket holds twice the rate.
    let send = |client: &mut Client, n: usize| -> Vec<Value> {
        let ids: Vec<u32> = (0..n)
            .map(|i| {
                client.queue(
                    "sendMessage",
                    json!({ "code": code, "text": format!("m{i}") }),
                )
            })
            .collect();
        client.flush();
        ids.into_iter().map(|id| client.ack(id)).collect()
    };
    let answers = send(&mut burst.a, 15);
    for (i, v) in answers.iter().enumerate() {
        if i < 10 {
            assert_success(v);
        } else {
            assert_eq!(error_of(v), errors::RATE_LIMITED, "message {i}");
        }
    }
    pair.round_trip();

    // 5/s: about two and a half tokens in 500 ms.
    std::thread::sleep(ms(500));
    let answers = send(&mut burst.a, 5);
    let ok = answers.iter().take_while(|v| v["success"] == true).count();
    assert!(
        (2..=4).contains(&ok),
        "{ok} accepted after 500 ms: {answers:?}"
    );
    for v in &answers[ok..] {
        assert_eq!(error_of(v), errors::RATE_LIMITED);
    }
    // The partner's own bucket is untouched.
    assert_success(&burst.b.say(&code, "me too"));
    pair.round_trip();
    assert_eq!(
        metric(&scrape(&server), &limited("message_rate")),
        5 + (5 - ok as u64)
    );
}

#[test]
fn max_rooms_answers_server_busy() {
    let server = chat_server(
        config(),
        ChatConfig {
            max_rooms: 2,
            ..chat_config()
        },
    );
    let mut pair = Pair::new(server.addr); // room 1
    let mut second = Client::connect(server.addr, None);
    second.create_room(); // room 2
    let mut third = Client::connect(server.addr, None);
    let res = third.call("createRoom", json!({}));
    assert_eq!(error_of(&res), errors::SERVER_BUSY);
    pair.round_trip();
    assert_eq!(metric(&scrape(&server), &limited("max_rooms")), 1);

    // A room going away makes room (its member leaves for good: a dropped one could come
    // back, and its room waits for it).
    second.disconnect();
    wait_metric(&server, "pairchat_rooms", |n| n == 1);
    third.create_room();
    pair.round_trip();
}

// ---- gaps found while writing these (fixed) ---------------------------------------------------

#[test]
fn a_slow_second_request_on_a_keep_alive_connection_is_cut_at_the_header_timeout() {
    let server = chat_server(
        Config {
            header_timeout: ms(300),
            keep_alive_timeout: Duration::from_secs(3),
            ..config()
        },
        chat_config(),
    );
    let mut pair = Pair::new(server.addr);
    let mut conn = health_checked(&server);
    std::thread::sleep(ms(50));
    // The next request starts, then trickles: a header line every 150 ms (slowly enough not to
    // reach the 32-header limit before the keep-alive timeout).
    let start = Instant::now();
    conn.send(b"GET /health HTTP/1.1\r\n");
    conn.stream().set_read_timeout(Some(ms(150))).unwrap();
    let closed_after = loop {
        let _ = conn.stream().write_all(b"X-Slow: 1\r\n");
        if conn.closed() {
            break start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(6), "never closed");
    };
    pair.round_trip();
    assert!(
        closed_after < Duration::from_millis(1500),
        "headers took {closed_after:?} (header timeout 300 ms, keep-alive timeout 3 s)"
    );
    assert_eq!(metric(&scrape(&server), &rejected("header_timeout")), 1);
}

#[test]
fn rejoining_a_room_with_a_full_history_is_not_a_slow_consumer() {
    // Default limits (4 MB WebSocket buffer, 500 messages of 2000 characters), except the
    // message rate, only so the history fills in a second rather than 25 s.
    let server = chat_server(
        config(),
        ChatConfig {
            message_rate: None,
            ..ChatConfig::default()
        },
    );
    let mut pair = Pair::new(server.addr);
    // 2000 characters, each written by the client as a `\u0061` escape: valid JSON, kept as is.
    let text = format!("\"{}\"", "\\u0061".repeat(2000));
    let frame = format!(
        "42[\"sendMessage\",{{\"code\":\"{}\",\"text\":{text}}}]",
        pair.code
    );
    for _ in 0..500 {
        send_text(&mut pair.a.ws, &frame);
        for c in [&mut pair.a, &mut pair.b] {
            let t = next_text(&mut c.ws);
            assert!(
                t.starts_with("42[\"newMessage\""),
                "{}",
                &t[..40.min(t.len())]
            );
        }
    }
    // `b` asks for the history again (as a client does after reconnecting).
    let id = pair.b.queue("joinRoom", json!({ "code": pair.code }));
    pair.b.flush();
    let answer = match pair.b.ws.read() {
        Ok(Message::Text(t)) => t.to_string(),
        other => panic!("no joinRoom answer, the joiner was dropped: {other:?}"),
    };
    let reply: Value = serde_json::from_str(
        answer
            .strip_prefix(&format!("43{id}"))
            .expect("the joinRoom ack"),
    )
    .expect("ack JSON");
    assert_eq!(reply[0]["success"], true);
    // All 500 kept (about 1 MB: under the history's byte cap), re-encoded compactly.
    let messages = reply[0]["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 500);
    let want = "a".repeat(2000);
    assert!(messages.iter().all(|m| m["text"] == want.as_str()));
    assert_eq!(
        metric(&scrape(&server), &rejected("slow_consumer")),
        0,
        "a reading client was counted as a slow consumer"
    );
}

// ---- panics --------------------------------------------------------------------------------

/// The chat, except that a message containing `boom` panics in the handler.
struct Boom(SocketIo<Chat>);

impl Handler for Boom {
    type Timer = <SocketIo<Chat> as Handler>::Timer;

    fn handle(&mut self, event: Event<'_, Self::Timer>, io: &mut Io<'_, Self::Timer>) {
        if let Event::Message { text, .. } = &event
            && text.contains("boom")
        {
            panic!("boom (a panic the test asked for)");
        }
        self.0.handle(event, io);
    }

    fn metrics(&self, out: &mut String) {
        self.0.metrics(out);
    }
}

#[test]
fn a_panic_closes_only_the_connection_being_served() {
    let server = TestServer::start(config(), |cfg| {
        Boom(SocketIo::new(
            Chat::new(chat_config()),
            SioConfig::default(),
            cfg.max_payload,
        ))
    });
    let mut pair = Pair::new(server.addr);
    let mut victim = Pair::new(server.addr);

    send_text(&mut victim.a.ws, "42[\"boom\"]");
    assert!(
        common::ws_closed(&mut victim.a.ws),
        "the panicking connection is closed"
    );
    // Its session was closed properly: the partner is told.
    victim.b.event("userLeft");
    pair.round_trip();
    let m = scrape(&server);
    assert_eq!(metric(&m, "pairchat_panics_total"), 1);
    assert_eq!(metric(&m, "pairchat_sio_sockets"), 3);
    assert_eq!(metric(&m, "pairchat_rooms"), 2);

    // Over polling: the POST's connection is closed without an answer.
    let sid = polling_connected(&server);
    let mut post = HttpConn::new(server.connect());
    post.send_post(&poll_url(&sid), "42[\"boom\"]");
    assert!(post.response().is_err(), "answered after a panic");
    assert_eq!(metric(&scrape(&server), "pairchat_panics_total"), 2);

    // The server goes on serving old and new clients.
    let mut fresh = Pair::new(server.addr);
    fresh.round_trip();
    pair.round_trip();
}

// ---- soak ----------------------------------------------------------------------------------

/// Waits until nothing is left open but the scraping connection (60 s at most).
fn wait_idle(addr: SocketAddr) -> Duration {
    let start = Instant::now();
    let series = [
        (HTTP_CONNS, 1),
        (WS_CONNS, 0),
        ("pairchat_sessions{transport=\"polling\"}", 0),
        ("pairchat_sessions{transport=\"websocket\"}", 0),
        ("pairchat_rooms", 0),
        ("pairchat_sio_sockets", 0),
    ];
    loop {
        let m = scrape_addr(addr);
        let left: Vec<String> = series
            .iter()
            .filter(|(s, want)| metric(&m, s) != *want)
            .map(|(s, _)| format!("{s} {}", metric(&m, s)))
            .collect();
        if left.is_empty() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not back to idle: {left:?}"
        );
        std::thread::sleep(ms(200));
    }
}

/// A polling client of the chat: one connection for long-polls, one for posts.
struct PollClient {
    sid: String,
    get: HttpConn,
    post: HttpConn,
    pending: VecDeque<String>,
}

impl PollClient {
    fn connect(addr: SocketAddr) -> PollClient {
        let mut post = HttpConn::new(tcp(addr));
        get_on(&mut post, &format!("{PATH}?EIO=4&transport=polling"));
        let res = post.response().expect("handshake");
        assert_eq!(res.status, 200, "{}", res.text());
        let open: Value = serde_json::from_str(&res.text()[1..]).unwrap();
        let mut client = PollClient {
            sid: open["sid"].as_str().unwrap().to_string(),
            get: HttpConn::new(tcp(addr)),
            post,
            pending: VecDeque::new(),
        };
        client.send("40");
        let connected = client.next();
        assert!(connected.starts_with("40{"), "{connected}");
        client
    }

    fn send(&mut self, body: &str) {
        self.post.send_post(&poll_url(&self.sid), body);
        let res = self.post.response().expect("post");
        assert_eq!((res.status, res.text()), (200, "ok".to_string()));
    }

    /// The next packet (long-polls when none is pending).
    fn next(&mut self) -> String {
        loop {
            if let Some(p) = self.pending.pop_front() {
                if p == "2" {
                    self.send("3");
                    continue;
                }
                return p;
            }
            get_on(&mut self.get, &poll_url(&self.sid));
            let res = self.get.response().expect("poll");
            assert_eq!(res.status, 200, "{}", res.text());
            self.pending
                .extend(res.text().split('\x1e').map(str::to_string));
        }
    }

    /// The next packet starting with `prefix` and containing `part` (others are dropped).
    fn next_matching(&mut self, prefix: &str, part: &str) -> String {
        loop {
            let p = self.next();
            if p.starts_with(prefix) && p.contains(part) {
                return p;
            }
        }
    }
}

/// One chat between two fresh clients: create, join, three messages each way, leave (in
/// several ways: close packet, clean WebSocket close, `leaveRoom`, dropped connection).
fn soak_cycle(addr: SocketAddr, i: u64) {
    if i % 16 == 5 {
        // Now and then a client that gives up halfway through its request line.
        let mut s = tcp(addr);
        let _ = s.write_all(b"GET /socket.io/?EIO=4&transport=po");
    }
    let mut a = Client::connect(addr, None);
    let code = a.create_room();
    if i % 4 == 3 {
        // The partner on long-polling.
        let mut b = PollClient::connect(addr);
        b.send(&format!("420{}", json!(["joinRoom", {"code": code}])));
        b.next_matching("430", "\"success\":true");
        a.event("userJoined");
        for k in 0..3 {
            let text = format!("a{k}");
            assert_success(&a.say(&code, &text));
            b.next_matching("42[\"newMessage\"", &format!("\"text\":\"{text}\""));
            let text = format!("b{k}");
            b.send(&format!(
                "42{}",
                json!(["sendMessage", {"code": code, "text": text}])
            ));
            a.message(&text);
            // Its own copy too, so nothing is pending when it leaves.
            b.next_matching("42[\"newMessage\"", &format!("\"text\":\"{text}\""));
        }
        if i % 8 == 7 {
            // Gone while a long-poll is parked.
            get_on(&mut b.get, &poll_url(&b.sid));
            drop(b);
        } else {
            b.send("1");
        }
        a.event("userLeft");
    } else {
        let mut b = Client::connect(addr, None);
        if i % 8 == 1 {
            // A wrong guess first.
            let res = b.join(&absent_code(&[&code]));
            assert_eq!(error_of(&res), errors::ROOM_NOT_FOUND);
        }
        assert_success(&b.join(&code));
        a.event("userJoined");
        for k in 0..3 {
            let text = format!("a{k}");
            assert_success(&a.say(&code, &text));
            b.message(&text);
            let text = format!("b{k}");
            assert_success(&b.say(&code, &text));
            a.message(&text);
        }
        match i % 3 {
            0 => drop(b), // the TCP connection just goes
            1 => {
                // A clean WebSocket close.
                let _ = b.ws.close(None);
                while b.ws.read().is_ok() {}
            }
            _ => assert_success(&b.call("leaveRoom", json!({ "code": code }))),
        }
        a.event("userLeft");
    }
    // `a` leaves by dropping its connection; its room goes with it.
}

/// Runs `workers` churning threads for `duration`; returns the cycles done.
fn churn(
    addr: SocketAddr,
    workers: u64,
    duration: Duration,
    pid: u32,
    samples: &mut Vec<u64>,
) -> u64 {
    let cycles = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (cycles, stop) = (cycles.clone(), stop.clone());
                scope.spawn(move || {
                    let mut i = w;
                    while !stop.load(Ordering::Relaxed) {
                        soak_cycle(addr, i);
                        i += workers;
                        cycles.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let start = Instant::now();
        let mut next_sample = Duration::from_secs(10);
        while start.elapsed() < duration {
            std::thread::sleep(ms(100));
            if handles.iter().any(|h| h.is_finished()) {
                break; // a worker failed: stop the others, the join below reports it
            }
            if start.elapsed() >= next_sample {
                let rss = rss_kib(pid);
                samples.push(rss);
                eprintln!(
                    "soak: {:>4}s {:>8} cycles  RSS {rss} KiB",
                    start.elapsed().as_secs(),
                    cycles.load(Ordering::Relaxed)
                );
                next_sample += Duration::from_secs(10);
            }
        }
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            if let Err(e) = h.join() {
                std::panic::resume_unwind(e);
            }
        }
    });
    cycles.load(Ordering::Relaxed)
}

#[test]
#[ignore = "soak: run with --ignored, takes minutes"]
fn soak_churn_returns_to_idle_and_memory_stays_flat() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .map(|s| s.parse().expect("SOAK_SECS: seconds"))
        .unwrap_or(120);
    let warm_up = Duration::from_secs((secs / 4).clamp(5, 30));
    let workers = 6;
    let server = Proc::start(&["--message-rate", "0"]);
    let pid = server.pid();
    let addr: SocketAddr = server.addr.parse().expect("an address");
    let rss_start = rss_kib(pid);
    eprintln!("soak: {addr}, pid {pid}, RSS at start {rss_start} KiB");

    let mut samples = Vec::new();
    let warm_cycles = churn(addr, workers, warm_up, pid, &mut samples);
    let settled = wait_idle(addr);
    let rss_warm = rss_kib(pid);
    eprintln!(
        "soak: warm-up {warm_up:?}: {warm_cycles} cycles, idle after {settled:?}, RSS {rss_warm} KiB"
    );

    let mut samples = Vec::new();
    let started = Instant::now();
    let cycles = churn(addr, workers, Duration::from_secs(secs), pid, &mut samples);
    let took = started.elapsed();
    let settled = wait_idle(addr);
    let rss_end = rss_kib(pid);
    let m = scrape_addr(addr);
    eprintln!(
        "soak: {cycles} cycles in {took:?} ({:.0}/s), idle after {settled:?}",
        cycles as f64 / took.as_secs_f64()
    );
    eprintln!("soak: RSS under load (KiB, every 10 s): {samples:?}");
    eprintln!(
        "soak: RSS start {rss_start} KiB, after warm-up {rss_warm} KiB, after run {rss_end} KiB"
    );
    for series in [
        "pairchat_connections_accepted_total",
        "pairchat_sessions_opened_total",
        "pairchat_rooms_created_total",
        "pairchat_messages_total",
        "pairchat_panics_total",
    ] {
        eprintln!("soak: {series} {}", metric(&m, series));
    }
    assert_eq!(metric(&m, "pairchat_panics_total"), 0);
    let margin = (rss_warm / 10).max(1024);
    assert!(
        rss_end <= rss_warm + margin,
        "RSS grew from {rss_warm} KiB to {rss_end} KiB (margin {margin} KiB)"
    );
}
