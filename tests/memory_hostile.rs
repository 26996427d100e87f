//! A hostile review of the memory budget (`--max-memory`) and of the WebSocket write path that
//! came with it (`ws::push_frame`, `WsConn::out`, `output_bytes`), kept as regressions. Each
//! test says whether it failed on the reviewed build (b70d7f2): those were the findings, all
//! fixed since (9f18cfe); where the fix changed the policy (past its line, output now costs the
//! largest holder, not everyone), the test asserts the new outcome.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::chat::*;
use common::process::{Proc, rss_bytes};
use common::{HttpConn, TestServer, recv_text};
use pairchat::Config;
use serde_json::json;
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

const OUTPUT: &str = "pairchat_output_bytes";

// ---- the close handshake and control frames ------------------------------------------------

/// RFC 6455 §5.5.1: an endpoint that receives a close frame sends one back before closing the
/// TCP connection. tungstenite now writes the reply into `WsConn::out`, and the next
/// `ctx.read` in `decode_ws` returns `ConnectionClosed`, which `close_conn`s the connection
/// (dropping `out`, reply included) before any flush. Before the change the reply went straight
/// to the socket.
///
/// FAILS on b70d7f2 (the client sees a reset without a closing handshake); passes on dd4b6ae.
#[test]
fn a_client_close_frame_is_answered_with_a_close_frame() {
    let server = common::echo_server(config());
    for round in 0..20 {
        let (mut ws, _) = server.open_websocket(PATH);
        ws.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .expect("close frame sent");
        let reply = loop {
            match ws.read() {
                Ok(Message::Close(frame)) => break Ok(frame),
                Ok(_) => continue,
                Err(e) => break Err(e),
            }
        };
        let frame = reply.unwrap_or_else(|e| {
            panic!("round {round}: no close frame came back, the server just hung up: {e}")
        });
        assert_eq!(
            frame.map(|f| f.code),
            Some(CloseCode::Normal),
            "round {round}"
        );
    }
}

/// A WebSocket ping gets its pong, also right behind a large data frame to the same client
/// (under the 64 KiB pause, see the next test for over it): the pong follows the frame, it
/// never lands inside it (tungstenite's client would fail on a torn frame).
///
/// Passes on b70d7f2.
#[test]
fn pings_get_pongs_after_whole_data_frames() {
    let server = common::echo_server(config());
    let (mut ws, _) = server.open_websocket(PATH);
    let big = format!("4{}", "p".repeat(60_000));
    for n in 0..20u8 {
        // A large echo, a ping right behind it, then a small echo: the answers come in order.
        ws.write(Message::text(big.clone())).unwrap();
        ws.write(Message::Ping(vec![n].into())).unwrap();
        ws.write(Message::text(format!("4small{n}"))).unwrap();
        ws.flush().unwrap();
        let mut got = Vec::new();
        while got.len() < 3 {
            match ws.read().expect("read") {
                Message::Text(t) if t.as_str() == "2" => send_text(&mut ws, "3"),
                Message::Text(t) if t.len() > 1000 => {
                    assert_eq!(t.as_str(), big, "a torn or mixed data frame");
                    got.push("big".to_string());
                }
                Message::Text(t) => got.push(t.to_string()),
                Message::Pong(p) => {
                    assert_eq!(&p[..], &[n]);
                    got.push("pong".into());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        // The pong may overtake nothing it was queued behind, but may come before the small echo.
        assert_eq!(got[0], "big", "{got:?}");
        assert!(got.contains(&"pong".to_string()), "{got:?}");
        assert!(got.contains(&format!("4small{n}")), "{got:?}");
    }
}

/// A server-side close (a Socket.IO parse error closes the session) completes the handshake:
/// data before it, the close frame, and the client's reply is drained.
///
/// Passes on b70d7f2.
#[test]
fn a_server_close_is_a_close_frame_after_the_data() {
    let server = common::echo_server(config());
    let (mut ws, _) = server.open_websocket(PATH);
    ws.write(Message::text(format!("4{}", "d".repeat(50_000))))
        .unwrap();
    // Not an Engine.IO packet: the session closes with a protocol error.
    ws.write(Message::text("x")).unwrap();
    ws.flush().unwrap();
    let mut saw_data = false;
    let close = loop {
        match ws.read().expect("read") {
            Message::Text(t) if t.len() > 1000 => saw_data = true,
            Message::Close(frame) => break frame,
            Message::Text(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(saw_data, "the echo before the close was lost");
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Protocol));
    // Nothing after the close frame.
    match ws.read() {
        Err(tungstenite::Error::ConnectionClosed) => {}
        other => panic!("after the close: {other:?}"),
    }
}

/// At shutdown a WebSocket client gets its data, the Engine.IO close packet and a close frame
/// (going away), in that order, and nothing after it.
///
/// Passes on b70d7f2.
#[test]
fn shutdown_ends_websockets_with_a_close_frame_after_the_data() {
    let server = common::echo_server(config());
    let (mut ws, _) = server.open_websocket(PATH);
    send_text(&mut ws, &format!("4{}", "s".repeat(50_000)));
    std::thread::sleep(ms(100));
    server.request_stop();
    let mut seen = Vec::new();
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => seen.push(if t.len() > 100 {
                "data".into()
            } else {
                t.to_string()
            }),
            Ok(Message::Close(f)) => {
                seen.push(format!("close {:?}", f.map(|f| f.code)));
                break;
            }
            Ok(other) => seen.push(format!("{other:?}")),
            Err(e) => {
                seen.push(format!("error {e}"));
                break;
            }
        }
    }
    assert_eq!(seen, ["data", "1", "close Some(Away)"]);
    assert!(matches!(
        ws.read(),
        Err(tungstenite::Error::ConnectionClosed)
    ));
}

/// Frames that arrive in one read behind a message whose answer passes `OUTPUT_PAUSE`
/// (64 KiB) are stranded: `decode_ws` stops decoding and keeps the rest of the input as `held`
/// only if it has not been consumed yet, but tungstenite's `read` already pulled the following
/// frames into its own buffer, so nothing is held, the connection is not paused, and nothing
/// decodes them until the client sends something else (its next pong: 25 s). A socket.io-client
/// that sends `joinRoom` (a 1 MiB history) and a `sendMessage` right behind it waits that long
/// for the second answer; a ping behind a large answer waits as long for its pong.
///
/// FAILS on b70d7f2 (and on dd4b6ae: the pause logic is older than the change).
#[test]
fn frames_behind_a_large_answer_are_not_stranded() {
    let server = chat_server(config(), chat_config());
    let mut owner = Client::connect(server.addr, None);
    let code = owner.create_room();
    let text = "é".repeat(2000);
    // 20 long messages: an 82 KB history, a joinRoom answer over the 64 KiB pause.
    for _ in 0..20 {
        assert_success(&owner.say(&code, &text));
        owner.message(&text);
    }
    for ping in [false, true] {
        // Two tiny frames in one write (one read on the server): a join of its own room,
        // answered with the history, and a message or a ping right behind it.
        let join = owner.queue("joinRoom", json!({ "code": code }));
        let next = if ping {
            owner.ws.write(Message::Ping(vec![7].into())).unwrap();
            None
        } else {
            Some(owner.queue(
                "sendMessage",
                json!({ "code": code, "text": "right behind" }),
            ))
        };
        owner.flush();
        let kept = owner.ack(join)["messages"].as_array().map(Vec::len);
        assert!(kept >= Some(20), "{kept:?}");
        let started = Instant::now();
        match next {
            Some(id) => {
                let answer =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| owner.ack(id)));
                assert!(
                    answer.is_ok(),
                    "the sendMessage behind the join was not answered within 5 s"
                );
            }
            None => loop {
                match owner.ws.read() {
                    Ok(Message::Pong(p)) => {
                        assert_eq!(&p[..], &[7]);
                        break;
                    }
                    Ok(_) => continue,
                    Err(e) => panic!("no pong within {:?}: {e}", started.elapsed()),
                }
            },
        }
    }
}

// ---- output accounting -------------------------------------------------------------------

/// Sessions of every kind churn: polling sessions with queued output closed by their client,
/// left to time out, or upgraded to WebSocket with output queued; probes that fail or are
/// dropped; WebSocket clients that hang up with output pending, that never read (cut as slow
/// consumers or timed out), and that the server closes. When all of them are gone,
/// `pairchat_output_bytes` is back to 0, and nothing panicked (an underflow in a debug build
/// is a panic the loop catches and counts).
///
/// Passes on b70d7f2.
#[test]
fn output_bytes_returns_to_zero_after_churn() {
    let server = common::echo_server(Config {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(300),
        upgrade_timeout: Duration::from_millis(500),
        keep_alive_timeout: Duration::from_secs(1),
        max_ws_buffer: 1 << 20,
        max_output_bytes: 6 << 20,
        ..Config::default()
    });
    let chunk = "c".repeat(50_000);
    for round in 0..3 {
        let mut keep = Vec::new();
        // 1. Polling, output queued, closed by the client.
        for _ in 0..5 {
            let (sid, _) = server.open_polling(PATH);
            let path = poll_url(&sid);
            for _ in 0..4 {
                assert_eq!(server.post(&path, &format!("4{chunk}")).status, 200);
            }
            assert_eq!(server.post(&path, "1").status, 200);
        }
        // 2. Polling, output queued, never polled: the heartbeat ends it.
        for _ in 0..5 {
            let (sid, _) = server.open_polling(PATH);
            assert_eq!(
                server.post(&poll_url(&sid), &format!("4{chunk}")).status,
                200
            );
        }
        // 3. Polling with output queued, upgraded; the WebSocket reads some, then hangs up.
        for i in 0..5 {
            let (sid, _) = server.open_polling(PATH);
            let path = poll_url(&sid);
            for _ in 0..6 {
                assert_eq!(server.post(&path, &format!("4{chunk}")).status, 200);
            }
            let mut ws = server.websocket(&format!("{PATH}?EIO=4&transport=websocket&sid={sid}"));
            send_text(&mut ws, "2probe");
            assert_eq!(recv_text(&mut ws), "3probe");
            send_text(&mut ws, "5");
            if i % 2 == 0 {
                let _ = ws.read();
            }
            drop(ws);
        }
        // 4. Probes that fail (a bad packet), that are dropped, or that time out; the session
        // goes on polling with its queue, then closes.
        for i in 0..6 {
            let (sid, _) = server.open_polling(PATH);
            let path = poll_url(&sid);
            assert_eq!(server.post(&path, &format!("4{chunk}")).status, 200);
            let mut ws = server.websocket(&format!("{PATH}?EIO=4&transport=websocket&sid={sid}"));
            match i % 3 {
                0 => send_text(&mut ws, "4not a probe"),
                1 => drop(ws),
                _ => keep.push(ws),
            }
            if i % 2 == 0 {
                assert_eq!(server.post(&path, "1").status, 200);
            } else {
                let body = server.get(&path).text();
                assert!(body.contains(&chunk[..100]), "the queue survived the probe");
            }
        }
        // 5. WebSocket clients that never read: some echo until they are cut, some stop
        // short and time out, some hang up with output pending (a reset).
        for i in 0..9 {
            let stream = small_window_tcp(server.addr);
            stream
                .set_write_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let url = format!("ws://{}{PATH}?EIO=4&transport=websocket", server.addr);
            let (mut ws, _) = tungstenite::client(url, stream).expect("handshake");
            let _ = ws.read();
            let sends = [60, 3, 10][i % 3];
            for _ in 0..sends {
                if ws.send(Message::text(format!("4{chunk}"))).is_err() {
                    break;
                }
            }
            match i % 3 {
                2 => drop(ws),
                _ => keep.push(ws),
            }
        }
        // 6. WebSocket sessions the server closes with output pending (a parse error).
        for _ in 0..5 {
            let (mut ws, _) = server.open_websocket(PATH);
            ws.write(Message::text(format!("4{chunk}"))).unwrap();
            ws.write(Message::text("garbage")).unwrap();
            let _ = ws.flush();
            keep.push(ws);
        }
        // 7. A polling session whose parked GET's connection goes away (the session closes).
        for _ in 0..3 {
            let (sid, _) = server.open_polling(PATH);
            let mut c = HttpConn::new(server.connect());
            c.send(common::get_request(&poll_url(&sid)).as_bytes());
            server.wait_parked_polls(1);
            drop(c);
            server.wait_parked_polls(0);
        }
        let mid = metric(&scrape(&server), OUTPUT);
        eprintln!("round {round}: {mid} bytes of output held mid-churn");
        // Everything ends by its own deadline (heartbeat, linger, upgrade timeout).
        for transport in ["polling", "websocket"] {
            let series = format!("pairchat_sessions{{transport=\"{transport}\"}}");
            wait_metric_for(&server, &series, Duration::from_secs(10), |n| n == 0);
        }
        drop(keep);
        wait_metric_for(&server, WS_CONNS, Duration::from_secs(10), |n| n == 0);
        let held = wait_metric_for(&server, OUTPUT, Duration::from_secs(10), |n| n == 0);
        assert_eq!(held, 0, "round {round}: output_bytes drifted");
    }
    assert_eq!(panics(&server), 0, "an accounting underflow panicked");
}

/// The slow-consumer cuts under churn, in the chat: a WebSocket partner that never reads is
/// cut at `max_ws_buffer`, a polling partner that never polls at `max_poll_buffer`, one that
/// upgrades with a queue larger than the output share is cut while the queue moves to its
/// WebSocket; readers in the same rooms hang up abruptly. Afterwards the gauge is 0 again.
///
/// Passes on b70d7f2.
#[test]
fn output_bytes_returns_to_zero_after_slow_consumers_are_cut() {
    let server = chat_server(
        Config {
            ping_interval: Duration::from_millis(300),
            ping_timeout: Duration::from_millis(300),
            max_ws_buffer: 512 << 10,
            max_poll_buffer: 512 << 10,
            max_output_bytes: 1 << 20,
            ..Config::default()
        },
        chat_config(),
    );
    let text = "é".repeat(2000);
    let slow = rejected("slow_consumer");
    for round in 0..3 {
        let before = metric(&scrape(&server), &slow);
        // A WebSocket partner that reads nothing.
        let mut writer = Client::connect(server.addr, None);
        let code = writer.create_room();
        let stream = small_window_tcp(server.addr);
        let mut sleeper = Client::connect_on(stream, server.addr, None);
        assert_success(&sleeper.join(&code));
        say_until_refused(&mut writer, &code, &text, 200);
        // A polling partner that never polls.
        let code2 = writer.create_room();
        let _sink = polling_sink(&server, &code2);
        say_until_refused(&mut writer, &code2, &text, 200);
        // A polling partner with a queue that then upgrades (and reads nothing).
        let code3 = writer.create_room();
        let path = polling_sink(&server, &code3);
        say_until_refused(&mut writer, &code3, &text, 110);
        let sid = path.split("sid=").nth(1).unwrap().to_string();
        let stream = small_window_tcp(server.addr);
        let url = format!(
            "ws://{}{PATH}?EIO=4&transport=websocket&sid={sid}",
            server.addr
        );
        let (mut ws, _) = tungstenite::client(url, stream).expect("handshake");
        send_text(&mut ws, "2probe");
        assert_eq!(recv_text(&mut ws), "3probe");
        send_text(&mut ws, "5");
        std::thread::sleep(ms(200));
        let cut = metric(&scrape(&server), &slow) - before;
        eprintln!("round {round}: {cut} slow consumers cut");
        drop((writer, sleeper, ws));
        for transport in ["polling", "websocket"] {
            let series = format!("pairchat_sessions{{transport=\"{transport}\"}}");
            wait_metric_for(&server, &series, Duration::from_secs(10), |n| n == 0);
        }
        let held = wait_metric_for(&server, OUTPUT, Duration::from_secs(10), |n| n == 0);
        assert_eq!(held, 0, "round {round}");
    }
    assert_eq!(panics(&server), 0);
}

// ---- the output share's refusal ------------------------------------------------------------

/// Up to `max` messages from `writer` to `code` (each seen by the writer), until one is refused.
fn say_until_refused(writer: &mut Client, code: &str, text: &str, max: usize) {
    for _ in 0..max {
        if writer.say(code, text).get("error").is_some() {
            return;
        }
        writer.message(text);
    }
}

/// A polling session of the chat, connected to `/` and seated in `code`: the client never
/// polls again after this (its output only queues).
fn polling_sink(server: &TestServer, code: &str) -> String {
    let sid = polling_connected(server);
    let path = poll_url(&sid);
    let join = format!("42{}", json!(["joinRoom", { "code": code }]));
    let res = server.post(&path, &join);
    assert_eq!((res.status, res.text()), (200, "ok".to_string()));
    path
}

/// Whether a new client gets a room right now.
fn can_create_room(addr: SocketAddr) -> bool {
    let mut c = Client::connect(addr, None);
    let res = c.call("createRoom", json!({}));
    res.get("code").is_some()
}

/// Two polling sessions join rooms of their own accomplices, have them send chat messages
/// until output passes three quarters of its share, and then never poll again: they only POST
/// a pong (`3`) now and then, without ever collecting the pings. Their queues stay, the
/// heartbeat is satisfied (a pong counts whether or not its ping was delivered), nobody is cut
/// (that happens only past the whole share, and only to a connection that is sent more), and
/// every `createRoom`, `joinRoom` and `sendMessage` of everyone else answers `Server busy`, for
/// as long as the attacker likes. Before the change there was no such refusal.
///
/// FAILS on b70d7f2: after 20 heartbeat periods the server still refuses every new room.
#[test]
fn polling_sessions_that_never_poll_cannot_hold_the_server_busy() {
    let server = chat_server(
        Config {
            max_output_bytes: 1 << 20,
            ping_interval: Duration::from_millis(200),
            ping_timeout: Duration::from_millis(200),
            ..Config::default()
        },
        chat_config(),
    );
    let text = "é".repeat(2000);
    let mut sinks = Vec::new();
    let mut writers = Vec::new();
    for _ in 0..2 {
        let mut writer = Client::connect(server.addr, None);
        let code = writer.create_room();
        sinks.push(polling_sink(&server, &code));
        writers.push((writer, code));
    }
    // Half the way with the first sink, the rest with the second.
    let (w, code) = &mut writers[0];
    for _ in 0..100 {
        assert_success(&w.say(code, &text));
        w.message(&text);
    }
    let (w, code) = &mut writers[1];
    for n in 0..400 {
        let res = w.say(code, &text);
        assert!(res.get("error").is_none(), "refused after {n}: {res}");
        w.message(&text);
    }
    // The sinks held the most, so they were cut: nobody else is refused.
    assert!(metric(&scrape(&server), &rejected("slow_consumer")) >= 1);
    assert!(can_create_room(server.addr));
    assert!(metric(&scrape(&server), OUTPUT) < 3 * (1 << 20) / 4);
}

fn kernel_send_queues(port: u16) -> Vec<usize> {
    let out = std::process::Command::new("ss")
        .args(["-tnH", "state", "established", &format!("sport = :{port}")])
        .output()
        .expect("ss");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect()
}

/// WebSocket clients that never read, each seated in a room with a long history and sending
/// a few tiny `joinRoom`s (answered with the history each time): each fills the kernel's send
/// buffer of its connection (autotuned to ~2.8 MB on loopback, uncounted), then holds a few
/// hundred KB in the server's own buffer (counted), until its heartbeat ends it (45 s by
/// default). With output at about two thirds of its share — under the ¾ where `Server busy`
/// starts — an ordinary, reading client that joins a room with a long history has its own
/// answer push output past the share in `ws_send`, which cuts it as a slow consumer before a
/// byte of it was offered to the socket. The attacker's clients are not touched.
///
/// FAILS on b70d7f2: the reading joiner is disconnected.
#[test]
fn never_reading_clients_cannot_get_a_reading_joiner_cut() {
    let share: usize = 2 << 20;
    let server = chat_server(
        Config {
            max_output_bytes: share,
            ping_interval: Duration::from_millis(5000),
            ping_timeout: Duration::from_millis(5000),
            ..Config::default()
        },
        chat_config(),
    );
    let text = "é".repeat(2000);
    // Rooms with 200 long messages each (814 KB of history).
    let mut owners = Vec::new();
    for _ in 0..3 {
        let mut owner = Client::connect(server.addr, None);
        let code = owner.create_room();
        for _ in 0..200 {
            assert_success(&owner.say(&code, &text));
            owner.message(&text);
        }
        owners.push((owner, code));
    }
    // Sleepers, two per room (the owner seats one, and leaves), until half the share is held.
    let mut sleepers = Vec::new();
    let seats: Vec<usize> = vec![0, 0, 1, 1];
    for (i, &room) in seats.iter().enumerate() {
        if metric(&scrape(&server), OUTPUT) as usize > share / 2 {
            break;
        }
        let code = owners[room].1.clone();
        let stream = small_window_tcp(server.addr);
        let mut c = Client::connect_on(stream, server.addr, None);
        // One write each: frames behind a large answer in the same read would be stranded
        // (see `frames_behind_a_large_answer_are_not_stranded`).
        for _ in 0..6 {
            c.queue("joinRoom", json!({ "code": code }));
            let _ = c.ws.flush();
            std::thread::sleep(ms(20));
        }
        sleepers.push(c);
        if i % 2 == 0 {
            let (owner, code) = &mut owners[room];
            let code = code.clone();
            owner.call("leaveRoom", json!({ "code": code }));
        }
    }
    let held = metric(&scrape(&server), OUTPUT) as usize;
    eprintln!(
        "{} never-reading clients: {held} B of output counted, kernel send queues {:?}",
        sleepers.len(),
        kernel_send_queues(server.addr.port())
    );
    assert!(held < share / 4 * 3, "not busy yet");
    let before = metric(&scrape(&server), &rejected("slow_consumer"));
    // An ordinary client joins the third room, and reads.
    let code = owners[2].1.clone();
    let mut joiner = Client::connect(server.addr, None);
    let id = joiner.queue("joinRoom", json!({ "code": code }));
    joiner.flush();
    let answer = loop {
        match joiner.ws.read() {
            Ok(Message::Text(t)) if t.starts_with(&format!("43{id}")) => break Ok(t.len()),
            Ok(_) => continue,
            Err(e) => break Err(e),
        }
    };
    let cut = metric(&scrape(&server), &rejected("slow_consumer")) - before;
    if let Err(e) = answer {
        panic!("a reading joiner was cut ({e}); slow consumers cut: {cut}");
    }
}

/// What the kernel holds for a client that does not read is outside the budget: the server
/// leaves `SO_SNDBUF` to autotuning, which grows it to megabytes per connection, and the
/// output share counts only what the kernel would not take. Under a cgroup v2 `MemoryMax`
/// (the budget's default and the shipped unit's basis) that socket memory is charged to the
/// service, while `pairchat_output_bytes` says 0 and nothing is refused or cut.
///
/// FAILS on b70d7f2 (and on dd4b6ae): a never-reading client's 1 MB `joinRoom` answer sits
/// whole in the kernel, with 0 B counted.
#[test]
fn a_never_reading_client_costs_what_the_budget_counts() {
    let server = chat_server(config(), chat_config());
    let text = "é".repeat(2000);
    let mut owner = Client::connect(server.addr, None);
    let code = owner.create_room();
    for _ in 0..250 {
        assert_success(&owner.say(&code, &text));
        owner.message(&text);
    }
    let stream = small_window_tcp(server.addr);
    let mut sleeper = Client::connect_on(stream, server.addr, None);
    sleeper.queue("joinRoom", json!({ "code": code }));
    sleeper.flush();
    std::thread::sleep(ms(500));
    let kernel: usize = kernel_send_queues(server.addr.port()).iter().sum();
    let counted = metric(&scrape(&server), OUTPUT) as usize;
    assert!(
        kernel <= 256 << 10 || counted >= kernel,
        "{kernel} B queued in the kernel, {counted} B counted as output"
    );
}

// ---- small budgets -----------------------------------------------------------------------

/// `--max-memory 2MiB` is accepted (the minimum is 1 MiB), and shares out 1 MiB to history
/// but 512 KiB to output. A room's history may be up to 1 MiB, and a `joinRoom` answers with
/// all of it in one frame: for a history over the output share, the joiner's own answer puts
/// output past the share while its connection holds more than 64 KiB, and `ws_send` cuts it as
/// a slow consumer, however fast it reads. The room can never be joined again.
///
/// FAILS on b70d7f2 (the joiner is disconnected); any budget under 4 MiB does it, and 4 MiB
/// too once a full 1 MiB history meets any other queued output.
#[test]
fn a_room_with_a_long_history_can_be_joined_under_a_small_budget() {
    let mut server = Proc::start(&[
        "--max-memory",
        "2MiB",
        "--message-rate",
        "0",
        "--recovery-window",
        "0",
    ]);
    let addr: SocketAddr = server.addr.parse().unwrap();
    let mut owner = Client::connect(addr, None);
    let code = owner.create_room();
    let text = "é".repeat(2000);
    for _ in 0..200 {
        assert_success(&owner.say(&code, &text));
        owner.message(&text);
    }
    let metrics = scrape_addr(addr);
    eprintln!(
        "history {} B (limit {}), output limit {}",
        metric(&metrics, "pairchat_history_bytes"),
        metric(&metrics, "pairchat_history_limit_bytes"),
        metric(&metrics, "pairchat_output_limit_bytes")
    );
    let mut joiner = Client::connect(addr, None);
    let id = joiner.queue("joinRoom", json!({ "code": code }));
    joiner.flush();
    let answer = loop {
        match joiner.ws.read() {
            Ok(Message::Text(t)) if t.starts_with(&format!("43{id}")) => break Ok(t.len()),
            Ok(_) => continue,
            Err(e) => break Err(e),
        }
    };
    let slow = metric(&scrape_addr(addr), &rejected("slow_consumer"));
    let log = server.stop_and_log();
    match answer {
        Ok(len) => assert!(len > 200_000, "{len}"),
        Err(e) => panic!(
            "a reading joiner was cut ({e}); slow_consumer rejections: {slow}\n{}",
            log.lines().take(5).collect::<Vec<_>>().join("\n")
        ),
    }
}

// ---- what the output share does not count ----------------------------------------------

/// A polling session's queue is counted, but the answer to its GET is not: the payload moves
/// from the queue (counted) into the HTTP connection's write buffer (not counted). A client
/// that GETs on fresh connections and reads none of the answers moves its queue out of the
/// budget's sight each time, so its accomplice can fill it again, without any `Server busy`,
/// while the process's resident set grows past the budget (each connection lives until the
/// keep-alive timeout, a minute by default).
///
/// (The kernel's send buffer of each connection takes the first ~2.8 MB of each answer, see
/// `a_never_reading_client_costs_what_the_budget_counts`; the rest stays in `wbuf`.)
///
/// FAILS on b70d7f2: RSS ends beyond `--max-memory` plus the fixed overhead the README
/// states, with `pairchat_output_bytes` near 0 and nothing refused.
#[test]
fn polling_answers_that_are_never_read_count_against_the_output_share() {
    let budget: usize = 64 << 20;
    let mut server = Proc::start(&[
        "--max-memory",
        "64MiB",
        "--max-buffer",
        "16777216",
        "--message-rate",
        "0",
        "--recovery-window",
        "0",
        "--max-message-chars",
        "100000",
    ]);
    let addr: SocketAddr = server.addr.parse().unwrap();
    let test_server_like = |path: &str, body: Option<&str>| {
        let mut c = HttpConn::new(tcp(addr));
        match body {
            Some(b) => c.send_post(path, b),
            None => c.send(common::get_request(path).as_bytes()),
        }
        c.response().expect("response")
    };
    // The polling sink, by hand (the binary is not a `TestServer`).
    let open = test_server_like(&format!("{PATH}?EIO=4&transport=polling"), None).text();
    let sid = serde_json::from_str::<serde_json::Value>(&open[1..]).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_string();
    let path = poll_url(&sid);
    assert_eq!(test_server_like(&path, Some("40")).text(), "ok");
    assert!(test_server_like(&path, None).text().starts_with("40"));
    let mut writer = Client::connect(addr, None);
    let code = writer.create_room();
    let join = format!("42{}", json!(["joinRoom", { "code": code }]));
    assert_eq!(test_server_like(&path, Some(&join)).text(), "ok");
    let text = "m".repeat(100_000);
    let mut unread = Vec::new();
    let mut busy = 0;
    for _ in 0..10 {
        // 11 MB queued for the sink: under ¾ of the 16 MiB output share.
        for _ in 0..110 {
            let res = writer.say(&code, &text);
            if res.get("error").is_some() {
                busy += 1;
                continue;
            }
            writer.message(&text);
        }
        // Collected on a connection that reads nothing back.
        let mut s = small_window_tcp(addr);
        s.write_all(common::get_request(&path).as_bytes()).unwrap();
        unread.push(s);
        std::thread::sleep(ms(50));
    }
    let metrics = scrape_addr(addr);
    let counted = metric(&metrics, OUTPUT) as usize;
    let rss = rss_bytes(server.pid());
    eprintln!(
        "counted output {counted} B, {busy} messages refused, resident {rss} B (budget {budget})"
    );
    drop(unread);
    server.stop_and_log();
    assert!(
        rss < budget + (8 << 20),
        "resident {rss} B with {counted} B of output counted: the budget did not see it"
    );
}

// ---- what the history share does not count -------------------------------------------------

/// Sends `n` one-character messages to `code` in one write and reads their echoes.
fn burst(c: &mut Client, code: &str, n: usize) {
    for _ in 0..n {
        let text = format!(
            "42{}",
            json!(["sendMessage", { "code": code, "text": "x" }])
        );
        c.ws.write(Message::text(text)).unwrap();
    }
    c.flush();
    for _ in 0..n {
        c.event("newMessage");
    }
}

/// Each room keeps its messages in a `VecDeque<Kept>` that grows to 512 slots (12 KiB) as it
/// fills to `--max-history` (500), and never shrinks: once the global age order has trimmed a
/// room's messages (or most of them), the room still holds its 12 KiB, which the history share
/// does not count. Rooms that once held 500 messages cost 12 KiB each on top of the budget,
/// bounded only by `--max-rooms` (100 000 by default: 1.2 GB).
///
/// Messages go in bursts of 40 (one write, about 4 KB of echoes), so that the connections'
/// output buffers (see `an_idle_websocket_gives_back_its_output_buffer`) stay the same size
/// in both phases.
///
/// FAILS on b70d7f2: 600 rooms filled one after another under a 1 MiB history share grow the
/// resident set by about 7 MB (12 KB a room), with `pairchat_history_bytes` at its 1 MiB
/// limit; with `--max-history 10` the same traffic grows it by 12 KB in all. Shrinking the
/// `VecDeque` as the age order empties a room (`shrink_to` in `drop_oldest`) was tried and
/// does not help (6.9 MB): the 6 and 12 KB blocks freed between 80-byte messages fragment the
/// heap; one arena for all kept messages would.
#[test]
fn trimmed_rooms_give_back_their_history_slots() {
    let mut server = Proc::start(&[
        "--max-memory",
        "2MiB",
        "--message-rate",
        "0",
        "--recovery-window",
        "0",
    ]);
    let addr: SocketAddr = server.addr.parse().unwrap();
    const ROOMS: usize = 600;
    let mut clients = Vec::new();
    for _ in 0..ROOMS {
        let mut c = Client::connect(addr, None);
        let code = c.create_room();
        burst(&mut c, &code, 40);
        clients.push((c, code));
    }
    let before = rss_bytes(server.pid());
    let started = Instant::now();
    for (c, code) in &mut clients {
        for _ in 0..12 {
            burst(c, code, 40);
        }
    }
    let after = rss_bytes(server.pid());
    let metrics = scrape_addr(addr);
    let history = metric(&metrics, "pairchat_history_bytes") as usize;
    let limit = metric(&metrics, "pairchat_history_limit_bytes") as usize;
    eprintln!(
        "{} messages in {:?}: history {history} B of {limit} B, resident {before} -> {after} B",
        ROOMS * 480,
        started.elapsed()
    );
    drop(clients);
    server.stop_and_log();
    assert!(history <= limit);
    // What the history may add: its share, and some slack for the allocator.
    assert!(
        after.saturating_sub(before) < limit + (2 << 20),
        "the resident set grew by {} B for a history share of {limit} B",
        after - before
    );
}

/// `write_all_nonblocking` lets a drained buffer go only when its capacity is over 64 KiB, and
/// `Vec` doubling makes exactly 64 KiB the usual capacity after any burst between 32 and 64
/// KiB: every WebSocket connection that once had 33–64 KB of output at once (a `joinRoom`
/// with a few dozen long messages of history, ten long messages in a row) keeps a 64 KiB
/// buffer for the rest of its life, counted nowhere (`counted` is `out.len()`, 0). Before the
/// change tungstenite's buffer did the same; the change meant to end it (`ws::push_frame`).
///
/// FAILS on b70d7f2: 400 idle connections hold about 21 MB, with no history kept at all and
/// 0 B of output counted (20 MB on dd4b6ae: not a regression, but the change's stated fix
/// does not deliver).
#[test]
fn an_idle_websocket_gives_back_its_output_buffer() {
    let mut server = Proc::start(&[
        "--max-memory",
        "16MiB",
        "--message-rate",
        "0",
        "--recovery-window",
        "0",
        "--max-history",
        "0",
    ]);
    let addr: SocketAddr = server.addr.parse().unwrap();
    const CLIENTS: usize = 400;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut c = Client::connect(addr, None);
        let code = c.create_room();
        clients.push((c, code));
    }
    let before = rss_bytes(server.pid());
    let text = "é".repeat(2000);
    for (c, code) in &mut clients {
        // Ten long messages in one write: 41 KB of echoes queued in one turn.
        for _ in 0..10 {
            let frame = format!(
                "42{}",
                json!(["sendMessage", { "code": code, "text": text }])
            );
            c.ws.write(Message::text(frame)).unwrap();
        }
        c.flush();
        for _ in 0..10 {
            c.event("newMessage");
        }
    }
    std::thread::sleep(ms(200));
    let after = rss_bytes(server.pid());
    let counted = metric(&scrape_addr(addr), OUTPUT);
    eprintln!("{CLIENTS} idle clients: resident {before} -> {after} B, output counted {counted} B");
    drop(clients);
    server.stop_and_log();
    assert!(
        after.saturating_sub(before) < 4 << 20,
        "idle connections kept {} B of drained output buffers",
        after - before
    );
}

/// `Rooms` under random creates (fresh codes and codes in use), messages, removals and
/// expiries (current and stale generations), with a tight history budget: no counter
/// underflows (a debug build panics on one), `history_bytes` always equals what the live
/// rooms hold, stays within the budget, and the age order keeps no more than it should.
///
/// Passes on b70d7f2.
#[test]
fn the_room_table_keeps_its_counters_under_random_churn() {
    use pairchat::chat::rooms::{MESSAGE_OVERHEAD, RoomCode, Rooms};
    let mut seed = 0x5eed_u64;
    let mut next = move |n: u64| {
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    };
    let max_bytes = 40_000;
    let mut rooms = Rooms::new(7, max_bytes);
    // Room i's messages are all `size(i)` bytes long.
    let size = |code: RoomCode| 10 + (code.to_string().parse::<usize>().unwrap() % 13) * 37;
    let codes: Vec<RoomCode> = (0..12)
        .map(|i| RoomCode::new(100_000 + i).unwrap())
        .collect();
    let mut generations = Vec::new();
    for step in 0..200_000 {
        let code = codes[next(codes.len() as u64) as usize];
        match next(100) {
            0..=4 => generations.push((code, rooms.create(code))),
            5..=7 => {
                rooms.remove(code);
            }
            8..=9 if !generations.is_empty() => {
                let (c, g) = generations[next(generations.len() as u64) as usize];
                rooms.expire(c, g);
            }
            _ => {
                let text = "x".repeat(size(code));
                rooms.push_message(code, &text);
            }
        }
        let expected: usize = codes
            .iter()
            .filter_map(|c| {
                rooms
                    .get(*c)
                    .map(|r| r.history_len() * (size(*c) + MESSAGE_OVERHEAD))
            })
            .sum();
        assert_eq!(rooms.history_bytes(), expected, "step {step}");
        assert!(rooms.history_bytes() <= max_bytes, "step {step}");
        for c in &codes {
            if let Some(r) = rooms.get(*c) {
                assert!(r.history_len() <= 7);
            }
        }
    }
}

// ---- the command line ------------------------------------------------------------------

fn settings(args: &[&str], env: &[(&str, &str)]) -> Result<pairchat::cli::Settings, String> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match pairchat::cli::parse(&args, |k| {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })? {
        pairchat::cli::Command::Run(s) => Ok(*s),
        _ => Err("not a run".into()),
    }
}

/// Edge values of `--max-memory` and its neighbours. What passes on b70d7f2: 0 and 1 MiB − 1
/// are refused, `usize::MAX` is taken without overflow in the shares, a flag beats the
/// variable, an explicit `--recovery-max-bytes` over the share is capped silently. What
/// FAILS: `--max-buffer`, the other memory size flag, takes no unit (`16MiB` is an error while
/// `--max-memory 16MiB` and `--recovery-max-bytes 16MiB` are fine).
#[test]
fn memory_flags_at_their_edges() {
    assert!(settings(&["--max-memory", "0"], &[]).is_err());
    assert!(settings(&["--max-memory", "1048575"], &[]).is_err());
    let s = settings(&["--max-memory", "18446744073709551615"], &[]).unwrap();
    assert_eq!(s.max_memory, usize::MAX);
    assert_eq!(
        s.server.max_output_bytes,
        usize::MAX - usize::MAX / 2 - usize::MAX / 4
    );
    assert_eq!(s.sio.recovery.max_bytes, 64 << 20);
    let s = settings(
        &["--max-memory", "8MiB"],
        &[("PAIRCHAT_MAX_MEMORY", "1GiB")],
    )
    .unwrap();
    assert_eq!(s.max_memory, 8 << 20);
    // An operator's explicit 1 GiB of recovery becomes 2 MiB without a word.
    let s = settings(
        &["--max-memory", "8MiB", "--recovery-max-bytes", "1GiB"],
        &[],
    )
    .unwrap();
    assert_eq!(s.sio.recovery.max_bytes, 2 << 20);
    let s = settings(&["--max-buffer", "16MiB"], &[]);
    assert!(s.is_ok(), "--max-buffer 16MiB: {:?}", s.err());
}
