//! Hostile review of cluster mode (`--redis`) and the relay between nodes, as regressions: each
//! test shows one bug found by attacking the cluster as a hostile client or a hostile network
//! would, over real sockets, with the real binary and a real `redis-server` (started per test
//! on a free port, killed on drop). Each test fails on the reviewed build and passes once its
//! bug is mended.
//!
//! Unlike `tests/cluster.rs`, some tests here write to Redis on purpose (`SCRIPT FLUSH`, a
//! script that keeps Redis busy): a Redis that misbehaves is part of the attack. Without
//! `redis-server` on `PATH` each test prints a loud SKIPPED line and passes, unless `CI` is set.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::HttpConn;
use common::chat::{
    Client, PATH, Ws, chat_config, chat_server, config, error_of, ms, next_text, send_text,
    small_window_tcp, tcp, tcp_from,
};
use common::cluster::Cluster;
use common::redis::{Resp, wait_redis_state};
use common::{get_request, post_request};
use serde_json::{Value, json};
use tungstenite::Message;
use tungstenite::client::IntoClientRequest;

const SUITE: &str = "the hostile cluster tests (tests/cluster_hostile.rs)";
/// How long a dead (or paused) node's partner may wait for `userLeft`.
const NODE_GONE: Duration = Duration::from_secs(12);
/// What a node may take to put things right after it resumes or its link comes back.
const SETTLE: Duration = Duration::from_secs(3);

impl Cluster {
    /// A new Redis and `nodes` nodes with `FLAGS` and `flags`, each with its link up and
    /// knowing the others (so relays go); `None` (after the loud skip) without `redis-server`.
    fn start_met(nodes: usize, flags: &[&str]) -> Option<Cluster> {
        let cluster = Cluster::start(SUITE, nodes, flags)?;
        cluster.wait_peers();
        Some(cluster)
    }

    /// Waits until `/health` of node `node` says Redis is `state`.
    fn wait_link(&self, node: usize, state: &str) {
        wait_redis_state(&self.nodes[node - 1].addr, state, Duration::from_secs(10))
            .unwrap_or_else(|s| panic!("node {node}: redis {s}, expected {state}"));
    }

    /// SIGSTOP node `node` until the guard is dropped (SIGCONT).
    fn pause(&self, node: usize) -> Paused {
        let pid = self.nodes[node - 1].pid();
        signal(pid, libc::SIGSTOP);
        Paused(pid)
    }

    /// Waits until node `node` holds `n` HTTP connections (the scrape's own included).
    fn wait_http_connections(&self, node: usize, n: u64, limit: Duration, what: &str) {
        let deadline = Instant::now() + limit;
        loop {
            let held = self.metric(node, "pairchat_connections{kind=\"http\"}");
            if held == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {node} holds {held} HTTP connections {limit:?} {what}, expected {n}"
            );
            std::thread::sleep(ms(100));
        }
    }
}

/// A node stopped with SIGSTOP (its pid): continued when dropped, whatever the test did.
struct Paused(u32);

impl Drop for Paused {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: a plain kill(2) of a child of this process that has not been waited for (the
    // `Proc` owning it is alive), so the pid cannot have been reused.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill {pid}");
}

/// Opens a polling session on `addr` (a plain handshake): its sid, which starts with the id of
/// the node that made it.
fn open_polling(addr: SocketAddr) -> String {
    let mut conn = HttpConn::new(tcp(addr));
    conn.send(get_request(&format!("{PATH}?EIO=4&transport=polling")).as_bytes());
    let res = conn.response().expect("a handshake answer");
    assert_eq!(res.status, 200, "{}", res.text());
    let text = res.text();
    let open: Value =
        serde_json::from_str(text.strip_prefix('0').expect("an open packet")).expect("open JSON");
    open["sid"].as_str().expect("a sid").to_string()
}

fn poll_path(sid: &str) -> String {
    format!("{PATH}?EIO=4&transport=polling&sid={sid}")
}

/// One request on a new connection to `addr`: the answer as `(status, body)`.
fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut conn = HttpConn::new(tcp(addr));
    conn.send(request);
    let res = conn.response().expect("an answer");
    (res.status, String::from_utf8_lossy(&res.body).into_owned())
}

/// The first event `client` gets within `limit` (those already read included), if any.
fn first_event_within(client: &mut Client, limit: Duration) -> Option<(String, Value)> {
    let deadline = Instant::now() + limit;
    while client.events.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !client.read_one_within(left) {
            break;
        }
    }
    client.events.pop_front()
}

/// Every event `client` gets for `span` (answering pings meanwhile).
fn events_for(client: &mut Client, span: Duration) -> Vec<(String, Value)> {
    let deadline = Instant::now() + span;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        client.read_one_within(left);
    }
    client.events.drain(..).collect()
}

/// A member on node `a` makes a room and one on node `b` joins it (the first is told).
fn pair(cluster: &Cluster, a: usize, b: usize) -> (Client, Client, String) {
    let mut first = cluster.client(a);
    let code = first.create_room();
    let mut second = cluster.client(b);
    assert_eq!(second.join(&code), json!({"success": true, "messages": []}));
    assert_eq!(first.next_event("userJoined"), json!({"userId": second.id}));
    (first, second, code)
}

// ---- the relay -----------------------------------------------------------------------------

/// The relaying node inserts `X-Pairchat-Relay: <secret>` and `X-Pairchat-Client` after the
/// first `\r\n` of the request (`start_relay`), but HTTP/1.1 (and httparse, which both nodes
/// parse with) ends the request line at a bare `\n` too. A request whose head uses bare line
/// feeds and whose body holds the first `\r\n` gets the cluster's secret inserted into its
/// body: the owner reads it as part of a Socket.IO CONNECT to a namespace, which it echoes
/// back in its `Invalid namespace` error. With the secret, a client can claim any address
/// (`X-Pairchat-Client`) on any node; the same shift also smuggles a second request onto the
/// pooled connection between the nodes.
#[test]
fn a_bare_lf_request_relayed_does_not_leak_the_cluster_secret() {
    let Some(cluster) = Cluster::start_met(2, &[]) else {
        return;
    };
    let secret = match cluster.redis(&["GET", "pairchat:secret"]) {
        Resp::Bulk(Some(s)) => s,
        other => panic!("no secret in Redis: {other:?}"),
    };
    let sid = open_polling(cluster.addr(1));
    // What the relay inserts, as this client (on 127.0.0.1) can work out: the body is padded so
    // that, shifted by it, the owner's `Content-Length` ends right after the CONNECT packet.
    let inserted = "X-Pairchat-Relay: ".len()
        + secret.len()
        + "\r\n".len()
        + "X-Pairchat-Client: 127.0.0.1\r\n".len();
    let body = format!("40/x\r\n,{{}}{}", "Z".repeat(inserted));
    let request = format!(
        "POST {} HTTP/1.1\nHost: x\nContent-Length: {}\n\n{body}",
        poll_path(&sid),
        body.len()
    );
    let (status, answer) = exchange(cluster.addr(2), request.as_bytes());
    eprintln!("relayed bare-LF POST: {status} {answer:?}");
    assert!(
        !answer.contains(&secret),
        "the secret in the answer: {answer:?}"
    );
    // The body reached the owner as sent: a Socket.IO packet it cannot read, so the session
    // is closed (as it would be without a relay). Had the marks gone into the body instead,
    // the session would live on and its next poll echo them back.
    let connect = post_request(&poll_path(&sid), "40");
    let (status, posted) = exchange(cluster.addr(1), connect.as_bytes());
    if status == 200 {
        let (_, polled) = exchange(cluster.addr(1), get_request(&poll_path(&sid)).as_bytes());
        assert!(
            !polled.contains(&secret),
            "the client read the cluster's relay secret back: {polled:?}"
        );
    } else {
        assert_eq!(
            (status, posted.as_str()),
            (400, r#"{"code":1,"message":"Session ID unknown"}"#)
        );
    }
}

/// A polling POST with `Expect: 100-continue` (curl sends it for large bodies, as do .NET and
/// Java clients) for a session on another node is answered `400 Session ID unknown` by the node
/// it reaches, never relayed: the `Expect` branch of `next_request` asks `wants_body`, which
/// only knows this node's sessions, before `relay_target` is consulted. The owner itself
/// answers `100 Continue` and then `ok`; the client loses its session for the node it hit.
#[test]
fn a_relayed_post_with_expect_continue_reaches_the_owner() {
    let Some(cluster) = Cluster::start_met(2, &[]) else {
        return;
    };
    for node in [1, 2] {
        let sid = open_polling(cluster.addr(1));
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
            poll_path(&sid)
        );
        let stream = tcp(cluster.addr(node));
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let mut conn = HttpConn::new(stream);
        conn.send(head.as_bytes());
        // A `100 Continue` (or nothing, a server may just wait): then the body goes.
        let mut res = conn.response().ok();
        if res.as_ref().is_none_or(|r| r.status == 100) {
            conn.send(b"40");
            conn.stream()
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            res = Some(conn.response().expect("an answer after the body"));
        }
        let res = res.expect("an answer");
        assert_eq!(
            (res.status, String::from_utf8_lossy(&res.body).into_owned()),
            (200, "ok".to_string()),
            "Expect: 100-continue POST for node 1's session, sent to node {node}"
        );
    }
}

/// A client that sends its request and then shuts its write side (HTTP/1.0-style tools,
/// `nc -q`, some proxies' health checks) gets its answer from the owner directly; through a
/// relay it gets none, and the request is dropped: the end of stream arrives while the relay is
/// in flight, `on_http_eof` finds nothing in `wbuf` and closes the connection, which closes
/// the node connection before the request was even written.
#[test]
fn a_relayed_request_from_a_half_closed_client_is_answered() {
    let Some(cluster) = Cluster::start_met(2, &[]) else {
        return;
    };
    for node in [1, 2] {
        let sid = open_polling(cluster.addr(1));
        let stream = tcp(cluster.addr(node));
        let mut conn = HttpConn::new(stream);
        conn.send(post_request(&poll_path(&sid), "40").as_bytes());
        conn.stream().shutdown(Shutdown::Write).unwrap();
        let res = conn.response();
        assert!(
            matches!(&res, Ok(r) if r.status == 200 && r.body == b"ok"),
            "half-closed POST for node 1's session, sent to node {node}: {:?}",
            res.map(|r| (r.status, r.text()))
        );
    }
}

/// The relaying node adds about 90 bytes of headers to the head it forwards, and the owner
/// applies the same 8 KiB head limit to the result: a request that either node serves directly
/// is refused `431` through a relay.
#[test]
fn a_request_near_the_head_limit_is_served_through_a_relay_too() {
    let Some(cluster) = Cluster::start_met(2, &[]) else {
        return;
    };
    for node in [1, 2] {
        let sid = open_polling(cluster.addr(1));
        let base = format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nCookie: ",
            poll_path(&sid)
        );
        // A head of 8 182 bytes: under the 8 KiB limit by ten.
        let pad = 8 * 1024 - base.len() - "\r\n\r\n".len() - 10;
        let request = format!("{base}{}\r\n\r\n40", "c".repeat(pad));
        assert_eq!(
            exchange(cluster.addr(node), request.as_bytes()),
            (200, "ok".to_string()),
            "a POST with an 8 182-byte head for node 1's session, sent to node {node}"
        );
    }
}

/// A WebSocket relayed to its owner (a tunnel) whose client stops reading: the owner ends the
/// session (no pong) and closes its side, but the relaying node keeps both ends of the tunnel
/// for ever. The node end was paused (the client end's output is over `OUTPUT_PAUSE`), so its
/// end of stream is never read; tunnel ends have no timer, and the sweep only closes a tunnel
/// whose other end is gone. Each such client holds two connections and their buffers on the
/// relaying node for as long as it keeps its socket open.
#[test]
fn a_tunnel_whose_client_stops_reading_is_closed_when_the_owner_closes() {
    let Some(cluster) = Cluster::start_met(2, &["--ping-interval", "1s", "--ping-timeout", "1s"])
    else {
        return;
    };
    let (owner, relay) = (cluster.addr(1), cluster.addr(2));
    cluster.wait_http_connections(2, 1, Duration::from_secs(5), "at the start");
    let sid = open_polling(owner);
    let url = format!("ws://{relay}{PATH}?EIO=4&transport=websocket&sid={sid}");
    let request = url.into_client_request().unwrap();
    let (mut ws, res) =
        tungstenite::client(request, small_window_tcp(relay)).expect("a relayed upgrade");
    assert_eq!(res.status(), 101);
    send_text(&mut ws, "2probe");
    assert_eq!(next_text(&mut ws), "3probe");
    send_text(&mut ws, "5");
    // Each CONNECT to an unknown namespace is echoed back by the owner (about 200 KB each):
    // far more than the client's 4 KiB window and the kernel buffers hold. Then nothing more
    // is read.
    for _ in 0..4 {
        let packet = format!("40/{},{{}}", "x".repeat(200_000));
        ws.send(Message::text(packet)).expect("websocket send");
    }
    // The owner ends the session: no pong came.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.metric(1, "pairchat_sessions{transport=\"websocket\"}") > 0 {
        assert!(Instant::now() < deadline, "the owner kept the session");
        std::thread::sleep(ms(100));
    }
    // The relaying node must let go of the tunnel (only the scrape's own connection is left).
    cluster.wait_http_connections(
        2,
        1,
        Duration::from_secs(10),
        "after the owner closed the tunnel",
    );
    drop(ws);
}

/// When Redis answers the node-list script with an error (here `BUSY`: another client's
/// script runs long; `LOADING`, `NOSCRIPT` do the same), `Op::Nodes` takes the error reply for
/// an empty list and forgets every peer, so every relay stops: a client whose session lives
/// on the other node is told `Session ID unknown` and loses it. With Redis plainly away the
/// peers are kept and relays go on; an error must not do worse.
#[test]
fn an_error_reply_to_the_node_list_does_not_stop_the_relays() {
    let Some(cluster) = Cluster::start_met(2, &[]) else {
        return;
    };
    let sid = open_polling(cluster.addr(1));
    let connect = post_request(&poll_path(&sid), "40");
    assert_eq!(
        exchange(cluster.addr(2), connect.as_bytes()),
        (200, "ok".to_string()),
        "a relayed POST while Redis is well"
    );
    // Redis answers BUSY to everyone while a script runs past 100 ms.
    cluster.redis(&["CONFIG", "SET", "busy-reply-threshold", "100"]);
    let mut hog = TcpStream::connect(("127.0.0.1", cluster.redis.port())).expect("redis");
    let script = "local i = 0 while true do i = i + 1 end";
    let eval = format!(
        "*3\r\n$4\r\nEVAL\r\n${}\r\n{script}\r\n$1\r\n0\r\n",
        script.len()
    );
    hog.write_all(eval.as_bytes()).expect("EVAL");
    hog.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let answer = exchange(cluster.addr(2), get_request(&poll_path(&sid)).as_bytes());
    let killed = cluster.redis(&["SCRIPT", "KILL"]);
    eprintln!("SCRIPT KILL: {killed:?}");
    let mut rest = [0u8; 256];
    let _ = hog.read(&mut rest);
    assert_eq!(
        answer.0, 200,
        "a relayed poll while Redis answers BUSY: {answer:?}"
    );
    assert!(answer.1.starts_with("40{"), "{answer:?}");
}

// ---- Redis ---------------------------------------------------------------------------------

/// Redis's script cache can be emptied under a live link (`SCRIPT FLUSH`; a failover or restart
/// behind a proxy that keeps the client's connection): every `EVALSHA` then answers `NOSCRIPT`,
/// which the node takes for a failed request (`Server busy`) for ever. It never loads its
/// scripts again, since only a new link does, while `/health` says Redis is up.
#[test]
fn scripts_flushed_from_redis_are_loaded_again() {
    let Some(cluster) = Cluster::start_met(1, &[]) else {
        return;
    };
    let mut alice = cluster.client(1);
    alice.create_room();
    assert_eq!(
        cluster.redis(&["SCRIPT", "FLUSH"]),
        Resp::Simple("OK".into())
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last;
    loop {
        last = alice.call("createRoom", json!({}));
        if last["code"].is_string() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(ms(250));
    }
    assert!(
        last["code"].is_string(),
        "createRoom 5 s after SCRIPT FLUSH: {last}; /health says redis {}",
        common::redis::health(&cluster.nodes[0].addr)["redis"]
    );
}

// ---- the chat across nodes -----------------------------------------------------------------

/// A node paused for a few seconds (a stopped container, a VM migrated, a machine swapping)
/// is reaped as dead: its members' seats are freed and their partners told `userLeft`. When it
/// resumes its link to Redis was never broken, so it never resyncs: it keeps its members in
/// their rooms as if nothing happened. They are told nothing (no `roomUnavailable`), their
/// messages answer `Not a member of this room` for the room they are in, and their seat can go
/// to a newcomer they never hear of. (The pause that does it is under 5 s: the alive key is
/// refreshed once a second, not twenty times per TTL as `NODE_TTL`'s doc says.)
#[test]
fn a_node_reaped_while_paused_puts_its_members_back_when_it_resumes() {
    let Some(cluster) = Cluster::start_met(2, &[]) else {
        return;
    };
    let (mut alice, mut bob, code) = pair(&cluster, 1, 2);
    {
        let _paused = cluster.pause(1);
        let (event, arg) = first_event_within(&mut bob, NODE_GONE)
            .expect("bob hears that alice's node is gone while it is paused");
        assert_eq!(
            (event.as_str(), &arg),
            ("userLeft", &json!({"userId": alice.id}))
        );
    }
    // Node 1 resumes: alice is either told her room is gone, or is a member again.
    let told = events_for(&mut alice, SETTLE);
    if told.iter().any(|(name, _)| name == "roomUnavailable") {
        return;
    }
    let reply = alice.say(&code, "I am back");
    assert_eq!(
        reply,
        json!({"success": true}),
        "alice, told only {told:?} since her node resumed, sends to the room she is in"
    );
    assert_eq!(bob.event("newMessage")["text"], "I am back");
}

/// A member leaves while Redis is away; Redis comes back empty. The partner's node, when its
/// link is back, remakes the room from what it knew — the partner's seat included, as it last
/// heard of it. If the leaver's node resynced first (it holds nothing there any more), nothing
/// ever frees that seat: the node is alive, so the reaper leaves it, and its resync is done.
/// The room stays full of a member who left: its partner is never told `userLeft`, and a
/// newcomer is answered `Room full` until the room expires.
#[test]
fn a_member_who_left_while_redis_was_away_is_not_seated_again() {
    let Some(mut cluster) = Cluster::start_met(2, &[]) else {
        return;
    };
    let (mut alice, bob, code) = pair(&cluster, 1, 2);
    let bob_id = bob.id.clone();
    cluster.redis.stop();
    cluster.wait_link(1, "down");
    cluster.wait_link(2, "down");
    bob.disconnect();
    std::thread::sleep(ms(300));
    {
        // Bob's node gets its link back first (alice's is paused meanwhile).
        let _paused = cluster.pause(1);
        cluster.redis.restart();
        cluster.wait_link(2, "up");
        std::thread::sleep(ms(500));
    }
    cluster.wait_link(1, "up");
    let told = events_for(&mut alice, SETTLE);
    assert!(
        told.contains(&("userLeft".to_string(), json!({"userId": bob_id}))),
        "alice is told bob left (he did, while Redis was away); she got {told:?}"
    );
    let mut carol = cluster.client(2);
    let reply = carol.join(&code);
    assert_eq!(
        reply["success"],
        true,
        "a newcomer joins the seat bob left: {reply} (the room in Redis: {:?})",
        cluster.redis(&["HGETALL", &format!("pairchat:room:{code}")])
    );
}

/// A member of nobody's room sending to (or leaving) an existing room is told `Not a member of
/// this room` by the embedded chat and by a node that has a member of that room; a node that
/// has none answers `Room not found`, as if the room did not exist (`send_message` and
/// `leave_room` look the code up in this node's own rooms only). The answer must not depend on
/// which node the client reached.
#[test]
fn a_non_member_gets_the_same_answer_from_every_node() {
    let Some(cluster) = Cluster::start_met(2, &[]) else {
        return;
    };
    let mut alice = cluster.client(1);
    let code = alice.create_room();
    for node in [1, 2] {
        let mut mallory = cluster.client(node);
        let said = mallory.say(&code, "let me in");
        assert_eq!(
            error_of(&said),
            "Not a member of this room",
            "sendMessage from node {node}"
        );
        let left = mallory.call("leaveRoom", json!({ "code": code }));
        assert_eq!(
            error_of(&left),
            "Not a member of this room",
            "leaveRoom from node {node}"
        );
    }
}

/// A raw Socket.IO socket on `/` over a WebSocket session at `addr`: the WebSocket and the
/// CONNECT reply's `pid` (for recovery).
fn raw_connect(addr: SocketAddr, claim: &str) -> (Ws, Value) {
    let url = format!("ws://{addr}{PATH}?EIO=4&transport=websocket");
    let (mut ws, _) =
        tungstenite::client(url.into_client_request().unwrap(), tcp(addr)).expect("a websocket");
    assert!(next_text(&mut ws).starts_with("0{"), "an open packet");
    send_text(&mut ws, claim);
    let reply = loop {
        let text = next_text(&mut ws);
        if let Some(reply) = text.strip_prefix("40") {
            break reply.to_string();
        }
    };
    let reply: Value = serde_json::from_str(&reply).expect("CONNECT JSON");
    (ws, reply["pid"].clone())
}

/// The argument of ack `id` on a raw socket (events before it are skipped).
fn raw_ack(ws: &mut Ws, id: u32) -> Value {
    let prefix = format!("43{id}");
    loop {
        let text = next_text(ws);
        if let Some(args) = text.strip_prefix(&prefix) {
            let args: Value = serde_json::from_str(args).expect("ack JSON");
            return args[0].clone();
        }
    }
}

/// A member whose transport dropped comes back (connection state recovery) and sends at once,
/// as socket.io-client does with what it buffered while disconnected (it flushes right after
/// the CONNECT). The embedded chat takes the message; a node answers `Not a member of this
/// room` for the room the socket is in, because the seat waits for Redis's answer to `back`
/// (`unseated`) and `send_message` refuses a socket in that state instead of letting the
/// request wait for (or go behind) it.
#[test]
fn a_recovered_member_that_sends_at_once_is_a_member() {
    let Some(cluster) = Cluster::start_met(1, &[]) else {
        return;
    };
    let embedded = chat_server(config(), chat_config());
    for (server, addr) in [
        ("embedded", embedded.addr),
        ("cluster node", cluster.addr(1)),
    ] {
        let (mut ws, pid) = raw_connect(addr, "40");
        send_text(&mut ws, r#"420["createRoom",{}]"#);
        let code = raw_ack(&mut ws, 0)["code"]
            .as_str()
            .expect("a code")
            .to_string();
        let mut partner = Client::connect(addr, None);
        assert_eq!(partner.join(&code)["success"], true);
        drop(ws);
        partner.event("userLeft");
        // Back, and the buffered message right behind the CONNECT.
        let url = format!("ws://{addr}{PATH}?EIO=4&transport=websocket");
        let (mut ws, _) = tungstenite::client(url.into_client_request().unwrap(), tcp(addr))
            .expect("a websocket");
        assert!(next_text(&mut ws).starts_with("0{"), "an open packet");
        let connect = format!("40{{\"pid\":{pid}}}");
        let message = format!(r#"421["sendMessage",{{"code":"{code}","text":"I was away"}}]"#);
        ws.write(Message::text(connect)).unwrap();
        ws.write(Message::text(message)).unwrap();
        ws.flush().unwrap();
        assert_eq!(
            raw_ack(&mut ws, 1),
            json!({"success": true}),
            "{server}: the recovered member's first message"
        );
        assert_eq!(
            partner.event("newMessage")["text"],
            "I was away",
            "{server}"
        );
    }
}

/// A 2.x client's session answers only the address that opened it (its sid is its socket id,
/// which the chat shows the partner). Through a relay the owner decided for the wrong client:
/// the relaying node named the trusted proxy rather than the client it forwarded (so the
/// client itself was refused), and the owner took the client of a node connection's first
/// request for all its later ones (a pooled connection carries many clients' requests, so a
/// partner relayed after the client was let in).
#[test]
fn a_relayed_v3_request_is_judged_by_its_own_client() {
    // The proxy is 127.0.0.2; the nodes reach each other from 127.0.0.1, which is not one.
    let proxy = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let flags = ["--allow-eio3", "--trust-proxy", "127.0.0.2"];
    let Some(cluster) = Cluster::start_met(2, &flags) else {
        return;
    };
    let v3 = format!("{PATH}?EIO=3&transport=polling");
    let from = |node: usize, ip: &str, method: &str, path: &str, body: &str| {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {ip}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut conn = HttpConn::new(tcp_from(proxy, cluster.addr(node)));
        conn.send(request.as_bytes());
        let res = conn.response().expect("an answer");
        (res.status, String::from_utf8_lossy(&res.body).into_owned())
    };
    let (status, open) = from(1, "192.0.2.2", "GET", &v3, "");
    assert_eq!(status, 200, "{open}");
    let sid = open.split('"').nth(3).expect("a sid");
    let poll = format!("{v3}&sid={sid}");
    // The client, through node 2: its CONNECT.
    assert_eq!(from(2, "192.0.2.2", "GET", &poll, ""), (200, "2:40".into()));
    // Its partner, through node 2 (on the node connection the client's request took): refused.
    let partner = from(2, "203.0.113.5", "POST", &poll, "1:1");
    assert_eq!(
        partner,
        (400, r#"{"code":1,"message":"Session ID unknown"}"#.into())
    );
    // The client polls on, its session whole.
    assert_eq!(
        from(2, "192.0.2.2", "POST", &poll, "1:2"),
        (200, "ok".into())
    );
    assert_eq!(from(2, "192.0.2.2", "GET", &poll, ""), (200, "1:3".into()));
}
