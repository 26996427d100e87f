//! Hostile clients over real sockets: each test replays an attack found against an earlier
//! build (a panic, lost timers, a stuck connection, unbounded memory, a stalled loop) and shows
//! the server shrugging it off while other clients are served.

mod common;

use std::io::{ErrorKind, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::chat::*;
use common::{HttpConn, TestServer};
use pairchat::Config;
use pairchat::chat::ChatConfig;
use pairchat::chat::limits::Rate;
use pairchat::engine::{Event, Handler, Io};
use serde_json::json;

fn post_raw(path: &str, body: &str) -> String {
    common::post_request(path, body)
}

/// A new session's polling path, and a fresh connection to send its requests on.
fn session_and_connection(server: &TestServer) -> (String, HttpConn) {
    let (sid, _) = server.open_polling(PATH);
    (poll_url(&sid), HttpConn::new(server.connect()))
}

/// Sessions closed by their client's close packet.
fn client_closes(server: &TestServer) -> u64 {
    metric(
        &scrape(server),
        "pairchat_sessions_closed_total{reason=\"client_close\"}",
    )
}

/// Closing a session answers its parked GET; the requests pipelined behind that GET must not
/// run inside the close. Here the one behind it closes the same session again: the server
/// panicked (`invalid key`) and the other client's request went unanswered.
#[test]
fn a_close_pipelined_behind_a_parked_poll_does_not_close_twice() {
    let server = common::echo_server(Config::default());
    let (path, mut c1) = session_and_connection(&server);
    c1.send(format!("{}{}", common::get_request(&path), post_raw(&path, "1")).as_bytes());
    server.wait_parked_polls(1);
    let mut c2 = HttpConn::new(server.connect());
    c2.send(post_raw(&path, "1").as_bytes());
    let res = c2.response().expect("the closing POST is answered");
    assert_eq!((res.status, res.text().as_str()), (200, "ok"));
    // The parked GET gets the noop of a client close; the POST behind it finds no session.
    assert_eq!(c1.response().expect("parked GET").text(), "6");
    let behind = c1.response().expect("the POST behind it");
    assert_eq!(behind.status, 400);
    assert_eq!(behind.json()["message"], "Session ID unknown");
    assert_eq!(panics(&server), 0);
    assert_eq!(client_closes(&server), 1);
}

/// A handshake pipelined behind such a close took the closed session's slot, and the outer
/// close then removed the new session: its client held a sid that was "unknown".
#[test]
fn a_session_opened_during_a_close_survives_it() {
    let server = common::echo_server(Config::default());
    let (path, mut c1) = session_and_connection(&server);
    let handshake = common::get_request(&format!("{PATH}?EIO=4&transport=polling"));
    c1.send(
        format!(
            "{}{}{handshake}",
            common::get_request(&path),
            post_raw(&path, "1")
        )
        .as_bytes(),
    );
    server.wait_parked_polls(1);
    assert_eq!(server.post(&path, "1").text(), "ok");
    assert_eq!(c1.response().expect("parked GET").text(), "6");
    assert_eq!(c1.response().expect("the close").status, 400);
    let open = c1.response().expect("the new handshake").text();
    let new_sid = serde_json::from_str::<serde_json::Value>(&open[1..]).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_string();
    let res = server.post(&poll_url(&new_sid), "4still here");
    assert_eq!((res.status, res.text().as_str()), (200, "ok"));
    assert_eq!(server.get(&poll_url(&new_sid)).text(), "4still here");
    assert_eq!(panics(&server), 0);
}

/// A second GET pipelined behind a parked one re-parked on a session being closed, with no
/// timer: never answered. Now it finds no session, and every parked GET has a deadline.
#[test]
fn a_poll_queued_behind_a_closing_session_is_answered() {
    let server = common::echo_server(Config::default());
    let (path, mut c1) = session_and_connection(&server);
    c1.send(
        format!(
            "{}{}",
            common::get_request(&path),
            common::get_request(&path)
        )
        .as_bytes(),
    );
    server.wait_parked_polls(1);
    assert_eq!(server.post(&path, "1").text(), "ok");
    assert_eq!(c1.response().expect("first GET").text(), "6");
    let second = c1.response().expect("second GET");
    assert_eq!(second.status, 400);
    assert_eq!(second.json()["message"], "Session ID unknown");
    server.wait_parked_polls(0);
}

/// A chain of sessions whose parked GETs each have a close of the next session pipelined
/// behind them: closing the first closed them all through nested calls, one stack frame set per
/// link, until the stack overflowed and the process aborted (seen at 3000 links). Now each
/// connection resumes at the end of the turn, one after another.
#[test]
fn a_chain_of_closes_behind_parked_polls_does_not_recurse() {
    const LINKS: usize = 400;
    let server = common::echo_server(Config::default());
    let sids: Vec<String> = (0..=LINKS).map(|_| server.open_polling(PATH).0).collect();
    let mut conns = Vec::new();
    for i in 0..LINKS {
        let mut c = HttpConn::new(server.connect());
        let close_next = post_raw(&poll_url(&sids[i + 1]), "1");
        c.send(format!("{}{close_next}", common::get_request(&poll_url(&sids[i]))).as_bytes());
        conns.push(c);
    }
    server.wait_parked_polls(LINKS as u64);
    assert_eq!(server.post(&poll_url(&sids[0]), "1").text(), "ok");
    for (i, c) in conns.iter_mut().enumerate() {
        assert_eq!(c.response().expect("parked GET").text(), "6", "link {i}");
        assert_eq!(c.response().expect("the close behind it").text(), "ok");
    }
    assert_eq!(server.get("/health").status, 200);
    assert_eq!(panics(&server), 0);
    assert_eq!(client_closes(&server), LINKS as u64 + 1);
}

/// Timers that fire in the same turn are independent: sessions time out on time while a
/// connection runs the close-behind-a-poll pattern that used to panic inside a timer and drop
/// the rest of that turn's timers.
#[test]
fn sessions_time_out_while_another_closes_behind_its_poll() {
    let server = common::echo_server(Config {
        ping_interval: Duration::from_millis(200),
        ping_timeout: Duration::from_millis(200),
        ..Config::default()
    });
    let quiet: Vec<String> = (0..20).map(|_| server.open_polling(PATH).0).collect();
    let (sid, _) = server.open_polling(PATH);
    let path = poll_url(&sid);
    let mut c1 = HttpConn::new(server.connect());
    c1.send(
        format!(
            "{}{}{}",
            common::get_request(&path),
            common::get_request(&path),
            post_raw(&path, "1")
        )
        .as_bytes(),
    );
    // Every quiet session misses its pong and is closed by its own timer.
    let timed_out = "pairchat_sessions_closed_total{reason=\"ping_timeout\"}";
    wait_metric(&server, timed_out, |n| n >= quiet.len() as u64);
    for sid in &quiet {
        assert_eq!(
            server.get(&poll_url(sid)).status,
            400,
            "{sid} outlived its timeout"
        );
    }
    assert_eq!(panics(&server), 0);
}

/// One socket pipelining requests without reading their answers: the server read and
/// answered all of it (5 MB of `GET /metrics` grew its RSS by 517 MB). Now it stops reading
/// once 64 KiB of answers wait, so the client's own writes block.
#[test]
fn a_client_that_pipelines_without_reading_is_stopped_by_backpressure() {
    let server = common::echo_server(Config::default());
    let mut conn = server.connect();
    conn.set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let burst = "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2000); // 66 KB of requests
    let mut written = 0usize;
    let limit = 64 << 20;
    let blocked = loop {
        match conn.write(burst.as_bytes()) {
            Ok(n) => written += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break true;
            }
            Err(e) => panic!("write: {e}"),
        }
        if written > limit {
            break false;
        }
    };
    assert!(
        blocked,
        "{written} bytes of requests taken without reading an answer"
    );
    // Kernel buffers aside, the server holds a bounded amount: others are served at once.
    assert_eq!(server.get("/health").status, 200);
    let m = scrape(&server);
    assert_eq!(metric(&m, "pairchat_connections{kind=\"http\"}"), 2);
}

/// A member asking for its own room again got the whole history every time: 2000 such
/// frames in one write cost the loop seconds. A repeated join now counts like a failed one,
/// and a connection's work per turn is bounded by its output: the joins are spread over
/// turns (at least one per join here), so other clients are served in between.
#[test]
fn repeated_joins_of_a_full_history_are_limited_and_spread_over_turns() {
    let server = chat_server(
        config(),
        ChatConfig {
            join_failures: Some(Rate {
                count: 10,
                per: Duration::from_secs(60),
            }),
            ..chat_config()
        },
    );
    let mut pair = Pair::new(server.addr);
    // A room with a history of about 1 MB (500 messages of 2000 characters).
    let mut member = Client::connect(server.addr, None);
    let code = member.create_room();
    let text = "h".repeat(2000);
    for _ in 0..500 {
        assert_success(&member.say(&code, &text));
    }
    member.events.clear();
    let turns_before = metric(&scrape(&server), "pairchat_loop_iterations_total");
    let ids: Vec<u32> = (0..40)
        .map(|_| member.queue("joinRoom", json!({ "code": code })))
        .collect();
    member.flush();
    let answers: Vec<serde_json::Value> = ids.iter().map(|id| member.ack(*id)).collect();
    // The first ten get the history (each about 1 MB); then the limit answers.
    for (i, a) in answers.iter().enumerate() {
        if i < 10 {
            assert_eq!(
                a["messages"].as_array().map(Vec::len),
                Some(500),
                "join {i}"
            );
        } else {
            assert_eq!(error_of(a), "Too many attempts, retry later", "join {i}");
        }
    }
    let turns = metric(&scrape(&server), "pairchat_loop_iterations_total") - turns_before;
    assert!(turns >= 10, "ten 1 MB answers built in {turns} loop turns");
    pair.round_trip();
}

/// With `--max-connections 1` the server stopped at the first connection and never accepted
/// again (the resume level, 90 % of 1, rounds down to 0); with 2 one idle keep-alive
/// connection held everyone else off.
#[test]
fn a_tiny_connection_cap_accepts_again() {
    for cap in [1, 2] {
        let server = common::echo_server(Config {
            max_connections: cap,
            ..Config::default()
        });
        // With a cap of 2, one connection stays open and idle the whole time.
        let _idle = (cap == 2).then(|| {
            let mut c = HttpConn::new(server.connect());
            c.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(c.response().unwrap().status, 200);
            c
        });
        for i in 0..5 {
            let mut c = HttpConn::new(server.connect());
            c.send(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let res = c
                .response()
                .unwrap_or_else(|e| panic!("cap {cap}, client {i}: {e}"));
            assert_eq!(res.status, 200);
            assert!(c.closed());
        }
    }
}

/// RFC 6455 §4.2.1: one `Sec-WebSocket-Key`, the base64 of 16 bytes.
#[test]
fn websocket_keys_must_be_one_base64_nonce_of_16_bytes() {
    let server = common::echo_server(Config::default());
    let upgrade = |keys: &str| {
        format!(
            "GET {PATH}?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n{keys}\r\n"
        )
    };
    let good = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    for (status, keys) in [
        (101, good.to_string()),
        (
            400,
            format!("{good}Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"),
        ),
        (
            400,
            "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!!!\r\n".to_string(),
        ),
        (
            400,
            "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAAA\r\n".to_string(),
        ),
    ] {
        let mut c = HttpConn::new(server.connect());
        c.send(upgrade(&keys).as_bytes());
        let res = c.response().expect("an answer");
        assert_eq!(res.status, status, "{keys}");
    }
}

/// `Expect: 100-continue` on a GET that parks: the "body" that follows must not be served as a
/// request of its own (it was: a request smuggled behind a long poll).
#[test]
fn a_body_behind_an_expecting_poll_is_not_a_request() {
    let server = common::echo_server(Config::default());
    let (sid, _) = server.open_polling(PATH);
    let path = poll_url(&sid);
    let smuggled = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut c = HttpConn::new(server.connect());
    c.send(
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            smuggled.len()
        )
        .as_bytes(),
    );
    server.wait_parked_polls(1);
    c.send(smuggled.as_bytes());
    assert_eq!(server.post(&path, "4x").text(), "ok");
    let res = c.response().expect("the poll's answer");
    assert_eq!(res.text(), "4x");
    assert_eq!(res.header("connection"), Some("close"));
    assert!(
        c.closed(),
        "a second answer (the smuggled request) followed"
    );
}

/// A handler whose first timer panics; every timer it set records that it fired.
struct PanickyTimers {
    deadline: Option<u64>,
    next: u32,
    fired: Arc<AtomicUsize>,
}

impl Handler for PanickyTimers {
    type Timer = u32;

    fn handle(&mut self, event: Event<'_, u32>, io: &mut Io<'_, u32>) {
        match event {
            // One deadline for all: the timers fire in the same turn, in the order they were set.
            Event::Open { .. } => {
                let at = *self.deadline.get_or_insert(io.now + 300);
                io.set_timer(at, self.next);
                self.next += 1;
            }
            Event::Timer(0) => panic!("boom in a timer"),
            Event::Timer(_) => {
                self.fired.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
    }
}

/// Each fired timer is its own panic boundary: a panic in the first of a turn's timers used to
/// unwind through the loop over them and drop every other one (sessions that lost their ping
/// timer then lived on with no deadline).
#[test]
fn a_panic_in_one_timer_does_not_drop_the_others_of_its_turn() {
    let fired = Arc::new(AtomicUsize::new(0));
    let counter = fired.clone();
    let server = TestServer::start(Config::default(), move |_| PanickyTimers {
        deadline: None,
        next: 0,
        fired: counter,
    });
    // Twenty sessions on five connections, opened within a few milliseconds.
    let handshake = common::get_request(&format!("{PATH}?EIO=4&transport=polling"));
    for _ in 0..5 {
        let mut c = HttpConn::new(server.connect());
        c.send(handshake.repeat(4).as_bytes());
        for _ in 0..4 {
            assert_eq!(c.response().expect("handshake").status, 200);
        }
    }
    wait_metric(&server, "pairchat_panics_total", |n| n == 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while fired.load(Ordering::SeqCst) < 19 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {fired:?} of 19 timers fired"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.get("/health").status, 200);
}

/// A WebSocket client that stops reading: its session ends at the ping timeout, and the close
/// frame queued behind megabytes of unread output cannot leave. The connection used to stay
/// open forever (no deadline was left on it); now it is dropped after a linger.
#[test]
fn a_websocket_that_never_reads_its_close_is_dropped() {
    let server = common::echo_server(Config {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        ..Config::default()
    });
    let (mut ws, _) = server.open_websocket(PATH);
    // Echoed output that fills the socket buffers; the client reads none of it.
    let chunk = format!("4{}", "z".repeat(60 * 1024));
    for _ in 0..200 {
        if ws.send(tungstenite::Message::text(chunk.clone())).is_err() {
            break;
        }
    }
    let timed_out = "pairchat_sessions_closed_total{reason=\"ping_timeout\"}";
    wait_metric(&server, timed_out, |n| n == 1);
    wait_metric(&server, "pairchat_connections{kind=\"websocket\"}", |n| {
        n == 0
    });
    // Its own deadline ended it, not the sweep that catches what nothing would end (which did,
    // ten seconds in, before the deadline existed).
    assert_eq!(metric(&scrape(&server), "pairchat_zombies_total"), 0);
    drop(ws);
}

/// Reads every HTTP answer on `conn` until the server closes it; how many came.
fn count_answers_until_close(conn: &mut HttpConn) -> usize {
    let mut n = 0;
    while conn.response().is_ok() {
        n += 1;
    }
    n
}

/// Requests pipelined past the output pause and then a half-close: every one is answered.
/// (The end of stream used to drop the requests still waiting behind the pause: 586 of 1000,
/// 2344 of 3000 were answered.)
#[test]
fn a_pipelined_burst_then_a_half_close_is_answered_whole() {
    let server = common::echo_server(Config::default());
    // A small window keeps the answers waiting at the server, so its input pauses; the FIN
    // arrives while it does.
    let mut conn = HttpConn::new(small_window_tcp(server.addr));
    conn.send(common::get_request("/health").repeat(3000).as_bytes());
    conn.stream().shutdown(std::net::Shutdown::Write).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(count_answers_until_close(&mut conn), 3000);
}

/// With a small `--max-payload`, a pipelined burst waiting behind the output pause is not one
/// oversized request (it was: the connection was cut with no answer at all).
#[test]
fn a_pipelined_burst_is_not_an_oversized_request() {
    let server = common::echo_server(Config {
        max_payload: 1000,
        ..Config::default()
    });
    let mut conn = HttpConn::new(server.connect());
    conn.send(common::get_request("/health").repeat(1000).as_bytes());
    conn.send(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(count_answers_until_close(&mut conn), 1001);
    assert_eq!(
        metric(
            &scrape(&server),
            "pairchat_rejected_total{reason=\"payload_too_large\"}"
        ),
        0
    );
}

/// A WebSocket member that sends a burst, reads nothing for a while (its unread output pauses
/// its input) and half-closes: once it reads again, every message still reaches its partner,
/// in order. (The held input was decoded as if the stream ended there: the rest was lost and
/// the socket reset.)
#[test]
fn a_websocket_burst_then_a_half_close_reaches_the_partner_whole() {
    const N: usize = 300;
    let server = chat_server(config(), chat_config());
    let mut a = Client::connect_on(small_window_tcp(server.addr), server.addr, None);
    let code = a.create_room();
    let mut b = Client::connect(server.addr, None);
    assert_success(&b.join(&code));
    a.event("userJoined");
    let text = "x".repeat(1900);
    // The whole burst as client frames, written from a thread of its own (the server stops
    // reading it while A's output waits, so the write blocks until A reads).
    let frames = {
        let mut client =
            tungstenite::protocol::WebSocketContext::new(tungstenite::protocol::Role::Client, None);
        let mut out = std::io::Cursor::new(Vec::new());
        for i in 0..N {
            let packet = format!(
                "42{}",
                json!(["sendMessage", { "code": code, "text": format!("{i}:{text}") }])
            );
            client
                .write(&mut out, tungstenite::Message::text(packet))
                .unwrap();
        }
        client.flush(&mut out).unwrap();
        out.into_inner()
    };
    let mut writer = a.ws.get_ref().try_clone().unwrap();
    let write = std::thread::spawn(move || {
        writer.write_all(&frames).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    // A reads (and drops) its own output only after a pause, long after its FIN was sent.
    let mut reader = a.ws.get_ref().try_clone().unwrap();
    let read = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        reader
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    for i in 0..N {
        let m = b.event("newMessage");
        assert_eq!(m["text"], format!("{i}:{text}"), "message {i}");
    }
    write.join().unwrap();
    drop(read);
}
