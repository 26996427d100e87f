//! HTTP/1.1 over real sockets: /health, framing (partial, pipelined, keep-alive) and the error
//! answers (400, 404, 405, 413, 431).

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::{HttpConn, Response, TestServer};
use pairchat::Config;
use pairchat::engine::Echo;

fn server() -> TestServer {
    TestServer::start(Config::default(), |_| Echo)
}

/// Asserts the response names a content type and that `Content-Length` is the body's length.
fn assert_framed(res: &Response) {
    let ct = res.header("content-type").expect("Content-Type");
    assert!(!ct.is_empty(), "empty Content-Type");
    let len: usize = res
        .header("content-length")
        .expect("Content-Length")
        .parse()
        .expect("numeric Content-Length");
    assert_eq!(len, res.body.len());
}

/// Sends `raw` on a fresh connection and reads everything until the server closes: the head
/// (status line and headers) and the raw bytes after it.
fn exchange_until_close(server: &TestServer, raw: &[u8]) -> (String, Vec<u8>) {
    let mut conn = HttpConn::new(server.connect());
    conn.send(raw);
    let mut all = Vec::new();
    let mut stream = conn.stream();
    // A reset after the full answer still leaves what was read in `all`.
    let _ = stream.read_to_end(&mut all);
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&all)));
    let head = String::from_utf8(all[..split].to_vec()).expect("ASCII head");
    (head, all[split + 4..].to_vec())
}

fn head_header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The polling path (`?EIO=4&transport=polling&sid=…`) of a new session.
fn polling_path(server: &TestServer) -> String {
    let (sid, _) = server.open_polling("/socket.io/");
    format!("/socket.io/?EIO=4&transport=polling&sid={sid}")
}

fn head_status(head: &str) -> u16 {
    head.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn health_answers_ok_with_a_current_timestamp() {
    let server = server();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let res = server.get("/health");
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(
        res.header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        res.body.len()
    );
    let json = res.json();
    assert_eq!(json["status"], "ok");
    let ts = json["timestamp"].as_u64().expect("numeric timestamp");
    assert!(
        ts >= before && ts < before + 60_000,
        "timestamp {ts} vs {before}"
    );
}

#[test]
fn a_request_split_into_small_writes_is_reassembled() {
    let server = server();
    let mut conn = HttpConn::new(server.connect());
    let raw = b"GET /health HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slow\r\n\r\n";
    for chunk in raw.chunks(5) {
        conn.send(chunk);
        std::thread::sleep(Duration::from_millis(3));
    }
    let res = conn.response().expect("response");
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["status"], "ok");
    // And the connection still serves the next request.
    conn.send(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(conn.response().expect("second response").status, 200);
}

#[test]
fn a_post_body_split_across_writes_is_reassembled() {
    let server = server();
    let (sid, _) = server.open_polling("/socket.io/");
    let body = "4split message body";
    let head = format!(
        "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut conn = HttpConn::new(server.connect());
    // Head cut in the middle of a header, then the body in two halves.
    let (h1, h2) = head.split_at(30);
    let (b1, b2) = body.split_at(6);
    for part in [h1, h2, b1, b2] {
        conn.send(part.as_bytes());
        std::thread::sleep(Duration::from_millis(15));
    }
    let res = conn.response().expect("POST response");
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), "ok");
    let res = server.get(&format!("/socket.io/?EIO=4&transport=polling&sid={sid}"));
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), body);
}

#[test]
fn pipelined_requests_in_one_write_are_answered_in_order() {
    let server = server();
    let mut conn = HttpConn::new(server.connect());
    conn.send(
        b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n\
          GET /nope HTTP/1.1\r\nHost: localhost\r\n\r\n\
          POST /health HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
    );
    let first = conn.response().expect("first");
    let second = conn.response().expect("second");
    let third = conn.response().expect("third");
    assert_eq!(first.status, 200);
    assert_eq!(first.json()["status"], "ok");
    assert_eq!(second.status, 404);
    assert_eq!(third.status, 405);
}

#[test]
fn keep_alive_serves_sequential_requests_on_one_connection() {
    let server = server();
    let mut conn = HttpConn::new(server.connect());
    for path in ["/health", "/missing", "/health"] {
        conn.send(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
        let res = conn.response().expect("response on the same connection");
        assert_eq!(res.status, if path == "/health" { 200 } else { 404 });
        assert_ne!(res.header("connection"), Some("close"));
    }
}

#[test]
fn connection_close_is_honoured() {
    let server = server();
    let mut conn = HttpConn::new(server.connect());
    conn.send(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert_eq!(conn.response().expect("response").status, 200);
    assert!(
        conn.closed(),
        "connection stays open after Connection: close"
    );
}

#[test]
fn headers_over_8_kib_get_431_and_the_connection_closes() {
    let server = server();
    let mut conn = HttpConn::new(server.connect());
    let raw = format!(
        "GET /health HTTP/1.1\r\nHost: localhost\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(9 * 1024)
    );
    conn.send(raw.as_bytes());
    let res = conn.response().expect("431 response");
    assert_eq!(res.status, 431);
    assert_framed(&res);
    assert!(conn.closed());
}

#[test]
fn headers_just_under_8_kib_are_accepted() {
    let server = server();
    let res = server.request(&format!(
        "GET /health HTTP/1.1\r\nHost: localhost\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(7 * 1024)
    ));
    assert_eq!(res.status, 200);
}

#[test]
fn garbage_gets_400_and_the_connection_closes() {
    let server = server();
    let mut conn = HttpConn::new(server.connect());
    conn.send(b"\x16\x03\x01\x02\x00garbage bytes\r\n\r\n");
    let res = conn.response().expect("400 response");
    assert_eq!(res.status, 400);
    assert_framed(&res);
    assert!(conn.closed(), "connection stays open after garbage");
}

#[test]
fn unknown_path_gets_404() {
    let server = server();
    let res = server.get("/no/such/path");
    assert_eq!(res.status, 404);
    assert_framed(&res);
    // The Engine.IO path of another server is unknown too.
    assert_eq!(
        server.get("/engine.io/?EIO=4&transport=polling").status,
        404
    );
}

#[test]
fn wrong_method_on_health_gets_405_with_allow() {
    let server = server();
    let res = server.post("/health", "x");
    assert_eq!(res.status, 405);
    assert_eq!(res.header("allow"), Some("GET, HEAD"));
    assert_framed(&res);
    let res = server.request("DELETE /health HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(res.status, 405);
}

#[test]
fn post_body_over_max_payload_gets_413() {
    let server = TestServer::start(
        Config {
            max_payload: 1000,
            ..Config::default()
        },
        |_| Echo,
    );
    let (sid, open) = server.open_polling("/socket.io/");
    assert_eq!(open["maxPayload"], 1000);
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");

    // Exactly max_payload bytes is fine.
    let fits = format!("4{}", "a".repeat(999));
    let res = server.post(&path, &fits);
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(server.get(&path).text(), fits);

    // One byte more is refused, and that connection is closed.
    let mut conn = HttpConn::new(server.connect());
    conn.send_post(&path, &format!("4{}", "a".repeat(1000)));
    let res = conn.response().expect("413 response");
    assert_eq!(res.status, 413);
    assert_framed(&res);
    assert!(conn.closed());
}

#[test]
fn every_response_has_content_type_and_exact_content_length() {
    let server = server();
    let (sid, _) = server.open_polling("/socket.io/");
    let close = "Connection: close\r\n";
    let requests: Vec<(u16, String)> = vec![
        (
            200,
            format!("GET /health HTTP/1.1\r\nHost: x\r\n{close}\r\n"),
        ),
        (404, format!("GET /nope HTTP/1.1\r\nHost: x\r\n{close}\r\n")),
        (
            405,
            format!("PUT /health HTTP/1.1\r\nHost: x\r\n{close}\r\n"),
        ),
        (
            200,
            format!("GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n{close}\r\n"),
        ),
        (
            400,
            format!("GET /socket.io/?EIO=3&transport=polling HTTP/1.1\r\nHost: x\r\n{close}\r\n"),
        ),
        (
            200,
            format!(
                "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\n\
                 Content-Length: 3\r\n{close}\r\n4hi"
            ),
        ),
        (
            200,
            format!(
                "GET /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\n{close}\r\n"
            ),
        ),
        (
            204,
            format!(
                "OPTIONS /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\
                 Origin: http://example.com\r\n{close}\r\n"
            ),
        ),
        (
            413,
            format!(
                "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\n\
                 Content-Length: 5000000\r\n\r\n"
            ),
        ),
        (
            431,
            format!(
                "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "b".repeat(10_000)
            ),
        ),
        (400, "NOT HTTP AT ALL\r\n\r\n".to_string()),
    ];
    for (status, raw) in requests {
        let (head, body) = exchange_until_close(&server, raw.as_bytes());
        let first = head.lines().next().unwrap().to_string();
        assert_eq!(head_status(&head), status, "{first} for {raw:?}");
        let ct = head_header(&head, "content-type");
        assert!(ct.is_some_and(|c| !c.is_empty()), "no Content-Type: {head}");
        let len: usize = head_header(&head, "content-length")
            .unwrap_or_else(|| panic!("no Content-Length: {head}"))
            .parse()
            .unwrap();
        // Nothing follows the body: the length is exact.
        assert_eq!(
            len,
            body.len(),
            "{head}\n\n{}",
            String::from_utf8_lossy(&body)
        );
    }
}

#[test]
fn incomplete_headers_are_dropped_after_the_header_timeout() {
    let server = TestServer::start(
        Config {
            header_timeout: Duration::from_millis(200),
            ..Config::default()
        },
        |_| Echo,
    );
    let mut conn = HttpConn::new(server.connect());
    conn.send(b"GET /health HTTP/1.1\r\nHost: loc");
    let start = Instant::now();
    assert!(conn.closed(), "a stalled request head is never dropped");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(100) && waited < Duration::from_millis(1500),
        "closed after {waited:?}"
    );
}

#[test]
fn idle_keep_alive_connections_are_dropped_after_the_keep_alive_timeout() {
    let server = TestServer::start(
        Config {
            keep_alive_timeout: Duration::from_millis(200),
            ..Config::default()
        },
        |_| Echo,
    );
    let mut conn = HttpConn::new(server.connect());
    conn.send(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(conn.response().expect("response").status, 200);
    let start = Instant::now();
    assert!(
        conn.closed(),
        "an idle keep-alive connection is never dropped"
    );
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(100) && waited < Duration::from_millis(1500),
        "closed after {waited:?}"
    );
}

#[test]
fn a_large_body_spanning_many_reads_is_received_whole() {
    let server = server();
    let path = polling_path(&server);
    let body = format!("4{}", "xyz".repeat(300_000));
    let res = server.post(&path, &body);
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), "ok");
    let res = server.get(&path);
    assert_eq!(res.body.len(), body.len());
    assert!(res.body == body.as_bytes());
}

/// A polling POST whose body comes chunked (as reverse proxies forward bodies of unknown
/// length), written a few bytes at a time, reaches the session whole.
#[test]
fn a_chunked_post_body_is_decoded() {
    let server = server();
    let path = polling_path(&server);
    let mut conn = HttpConn::new(server.connect());
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
         3;ext=1\r\n4hi\r\n6\r\n there\r\n0\r\nX-Trailer: t\r\n\r\n"
    );
    for piece in raw.as_bytes().chunks(7) {
        conn.send(piece);
        std::thread::sleep(Duration::from_millis(2));
    }
    let res = conn.response().expect("POST response");
    assert_eq!((res.status, res.text().as_str()), (200, "ok"));
    // The connection goes on: the body's end was found exactly.
    conn.send(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
    let res = conn.response().expect("poll");
    assert_eq!(res.text(), "4hi there");
}

/// The limit holds for the decoded body, as it grows: refused at the chunk that passes it,
/// without waiting for (or buffering) the rest.
#[test]
fn a_chunked_body_over_max_payload_gets_413_at_once() {
    let server = TestServer::start(
        Config {
            max_payload: 1000,
            ..Config::default()
        },
        |_| Echo,
    );
    let (sid, _) = server.open_polling("/socket.io/");
    let mut conn = HttpConn::new(server.connect());
    conn.send(
        format!(
            "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\n\
             Transfer-Encoding: chunked\r\n\r\n200\r\n{}\r\n200\r\n",
            "a".repeat(0x200)
        )
        .as_bytes(),
    );
    // 1024 bytes announced in all, nothing of the second chunk sent: refused already.
    let res = conn.response().expect("413 response");
    assert_eq!(res.status, 413);
    assert_eq!(res.header("connection"), Some("close"));
    assert!(conn.closed());
}

/// Framing that two parsers could read two ways is refused and the connection closed
/// (RFC 9112 §6.1, §6.3): a request smuggled behind it is never served.
#[test]
fn ambiguous_framing_is_refused_and_closes() {
    let server = server();
    let smuggled = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    for (status, head) in [
        (
            400,
            "POST /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        ),
        (
            400,
            "POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 41\r\n\r\n",
        ),
        (
            501,
            "POST /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        ),
        (
            400,
            "POST /health HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
    ] {
        let raw = format!("{head}0\r\n\r\n{smuggled}");
        let (head_text, body) = exchange_until_close(&server, raw.as_bytes());
        assert_eq!(head_status(&head_text), status, "{head}");
        assert_eq!(
            head_header(&head_text, "connection"),
            Some("close"),
            "{head}"
        );
        assert!(
            !String::from_utf8_lossy(&body).contains("HTTP/1.1 200"),
            "the smuggled request was served after {head}"
        );
    }
}

/// `Expect: 100-continue` (curl sends it for bodies over 1 KiB): `100 Continue` first, then the
/// final answer once the body is in.
#[test]
fn expect_continue_gets_100_before_the_body() {
    let server = server();
    let path = polling_path(&server);
    for framing in ["Content-Length: 6", "Transfer-Encoding: chunked"] {
        let mut conn = HttpConn::new(server.connect());
        conn.send(
            format!("POST {path} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n{framing}\r\n\r\n")
                .as_bytes(),
        );
        let interim = conn.response().expect("100 Continue");
        assert_eq!(interim.status, 100, "{framing}");
        let body = if framing.starts_with("Content") {
            "4hello".to_string()
        } else {
            "6\r\n4hello\r\n0\r\n\r\n".to_string()
        };
        conn.send(body.as_bytes());
        let res = conn.response().expect("final answer");
        assert_eq!((res.status, res.text().as_str()), (200, "ok"), "{framing}");
        assert_eq!(server.get(&path).text(), "4hello");
    }
}

/// A request refused anyway is answered at once, without a `100 Continue` and without waiting
/// for a body nobody will read; the connection then closes.
#[test]
fn expect_continue_refused_anyway_gets_the_final_answer_at_once() {
    let server = TestServer::start(
        Config {
            max_payload: 1000,
            ..Config::default()
        },
        |_| Echo,
    );
    for (status, raw) in [
        (
            400,
            "POST /socket.io/?EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\n\
             Host: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n",
        ),
        (
            413,
            "POST /socket.io/?EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\n\
             Host: x\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n",
        ),
        (
            405,
            "POST /health HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\
             Transfer-Encoding: chunked\r\n\r\n",
        ),
        (
            417,
            "POST /health HTTP/1.1\r\nHost: x\r\nExpect: something-else\r\n\
             Content-Length: 10\r\n\r\n",
        ),
    ] {
        let mut conn = HttpConn::new(server.connect());
        conn.send(raw.as_bytes());
        let res = conn.response().expect("an answer before any body");
        assert_eq!(res.status, status, "{raw}");
        assert_eq!(res.header("connection"), Some("close"), "{raw}");
        assert!(conn.closed(), "{raw}");
    }
}

/// HEAD answers like GET, headers only: the same `Content-Length`, and no body bytes (the next
/// response on the connection starts right after the head).
#[test]
fn head_answers_like_get_without_a_body() {
    let server = server();
    let mut conn = HttpConn::new(server.connect());
    for path in ["/health", "/metrics"] {
        conn.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        let get = conn.response().expect("GET");
        conn.send(
            format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
                .as_bytes(),
        );
        let mut raw = Vec::new();
        let mut byte = [0u8];
        while !raw.ends_with(b"\r\n\r\n") {
            std::io::Read::read_exact(&mut conn.stream(), &mut byte).expect("HEAD answer");
            raw.push(byte[0]);
        }
        let head = String::from_utf8(raw).unwrap();
        assert_eq!(head_status(&head), 200, "{head}");
        assert_eq!(
            head_header(&head, "content-type"),
            get.header("content-type")
        );
        let len: usize = head_header(&head, "content-length")
            .unwrap()
            .parse()
            .unwrap();
        // /metrics grows between the two requests by a few digits at most.
        assert!(
            len.abs_diff(get.body.len()) < 64,
            "{len} vs {}",
            get.body.len()
        );
        let next = conn.response().expect("the answer after HEAD");
        assert_eq!(next.status, 404, "HEAD sent a body");
    }
}

/// RFC 9112 §9.6: an answer after which the server closes says `Connection: close`, on every
/// path that closes; Node's keep-alive agent otherwise reuses the socket ("socket hang up").
#[test]
fn every_answer_before_a_close_says_connection_close() {
    let server = TestServer::start(
        Config {
            max_payload: 1000,
            ..Config::default()
        },
        |_| Echo,
    );
    let closing = [
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_string(),
        "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_string(),
        "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            .to_string(),
        "GET /socket.io/?EIO=9&transport=polling HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            .to_string(),
        "OPTIONS /socket.io/ HTTP/1.1\r\nHost: x\r\nOrigin: http://a\r\nConnection: close\r\n\r\n"
            .to_string(),
        "GET /health HTTP/1.0\r\n\r\n".to_string(),
        "GARBAGE\r\n\r\n".to_string(),
        "POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n".to_string(),
        format!("GET /health HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000)),
        "POST /health HTTP/1.1\r\nTransfer-Encoding: br\r\n\r\n".to_string(),
    ];
    for raw in &closing {
        let (head, _) = exchange_until_close(&server, raw.as_bytes());
        assert_eq!(
            head_header(&head, "connection"),
            Some("close"),
            "{head}\nfor {raw:.60}"
        );
    }
    // Those that keep the connection say nothing, or confirm HTTP/1.0 keep-alive.
    let mut conn = HttpConn::new(server.connect());
    conn.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(conn.response().unwrap().header("connection"), None);
    conn.send(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(
        conn.response().unwrap().header("connection"),
        Some("keep-alive")
    );
    conn.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        conn.response().unwrap().status,
        200,
        "the connection was kept"
    );
}

/// At the session cap a handshake gets 503 with `Connection: close`.
#[test]
fn the_503_at_the_cap_says_connection_close() {
    let server = TestServer::start(
        Config {
            max_connections: 2,
            ..Config::default()
        },
        |_| Echo,
    );
    // Sessions whose clients spoke (bare handshakes would be reclaimed at the cap).
    for _ in 0..2 {
        let path = polling_path(&server);
        assert_eq!(server.post(&path, "4hi").text(), "ok");
    }
    let res = server.get("/socket.io/?EIO=4&transport=polling");
    assert_eq!(res.status, 503);
    assert_eq!(res.header("connection"), Some("close"));
}

/// A parked poll answered by a stopping server carries its close packet and `Connection:
/// close`: the server is about to close every connection.
#[test]
fn a_parked_poll_answered_at_shutdown_says_connection_close() {
    let server = server();
    let (sid, _) = server.open_polling("/socket.io/");
    let mut conn = HttpConn::new(server.connect());
    conn.send(
        format!("GET /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\n\r\n")
            .as_bytes(),
    );
    server.wait_parked_polls(1);
    server.request_stop();
    let res = conn.response().expect("the parked poll's answer");
    assert_eq!((res.status, res.text().as_str()), (200, "1"));
    assert_eq!(res.header("connection"), Some("close"));
    assert!(conn.closed());
}

#[test]
fn http_1_0_gets_an_answer_and_a_close() {
    let server = server();
    let mut conn = HttpConn::new(server.connect());
    conn.send(b"GET /health HTTP/1.0\r\n\r\n");
    let res = conn.response().expect("response");
    assert_eq!(res.status, 200);
    assert!(conn.closed(), "HTTP/1.0 without keep-alive stays open");
}

#[test]
fn a_request_followed_by_a_half_close_is_still_answered() {
    let server = server();
    let mut conn = HttpConn::new(server.connect());
    conn.send(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n");
    conn.stream().shutdown(std::net::Shutdown::Write).unwrap();
    let res = conn.response().expect("answer after the client's FIN");
    assert_eq!(res.status, 200);
    assert!(conn.closed());
}

/// Bytes behind a parked poll wait for it, but no more than one request can take: a client
/// that streams on past that is cut off, and its session ends with the dropped poll.
#[test]
fn input_piling_up_behind_a_parked_poll_is_bounded() {
    let server = TestServer::start(
        Config {
            max_payload: 1000,
            ..Config::default()
        },
        |_| Echo,
    );
    let path = polling_path(&server);
    let mut conn = HttpConn::new(server.connect());
    conn.send(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
    std::thread::sleep(Duration::from_millis(100));
    // A next request's head that never ends, 20 KB of it (one request may take 9 KB here).
    conn.send(b"GET /health HTTP/1.1\r\nX-Filler: ");
    conn.send(&[b'x'; 20_000]);
    conn.stream()
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    assert!(conn.closed(), "the connection was not cut off");
    assert_eq!(
        server.get(&path).status,
        400,
        "the session outlived its poll"
    );
}

/// A parked poll that asked to close (HTTP/1.0 without keep-alive, or `Connection: close`)
/// gets its answer with `Connection: close` when it comes, and then the connection closes.
#[test]
fn a_parked_poll_that_asked_to_close_says_so_in_its_answer() {
    let server = server();
    for version in ["HTTP/1.0", "HTTP/1.1\r\nConnection: close"] {
        let path = polling_path(&server);
        let mut conn = HttpConn::new(server.connect());
        conn.send(format!("GET {path} {version}\r\nHost: x\r\n\r\n").as_bytes());
        server.wait_parked_polls(1);
        assert_eq!(server.post(&path, "4later").text(), "ok");
        let res = conn.response().expect("the parked poll's answer");
        assert_eq!(res.text(), "4later");
        assert_eq!(res.header("connection"), Some("close"), "{version}");
        assert!(conn.closed(), "{version}");
    }
}
