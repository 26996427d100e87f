//! Cluster mode (`--redis`) over real sockets: `pairchat` nodes as processes sharing a real
//! `redis-server` that each test starts on a port of its own, driven by the Rust Socket.IO
//! client. Members on different nodes chat as on one server (the contract, codes, order,
//! expiry); a node killed with SIGKILL frees its seats, even one killed while Redis was away;
//! without Redis a node keeps its same-node rooms chatting and answers the rest `Server busy`
//! (within `--redis-timeout` when Redis hangs, and then the refused request takes no effect),
//! then puts its rooms back in Redis when it returns.
//!
//! Redis is only read here (`redis_cli`), never written: every state a test checks, the nodes
//! made. Without `redis-server` on `PATH` each test prints a loud SKIPPED line and passes,
//! unless `CI` is set: then it fails.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::chat::{Client, absent_code, assert_success, error_of, limited, ms};
use common::cluster::{Cluster, FLAGS};
use common::process::Proc;
use common::redis::{Redis, Resp, redis_cli_all, wait_redis_state};
use serde_json::{Value, json};

const SUITE: &str = "the cluster tests (tests/cluster.rs)";
/// `--redis-timeout` of the tests that take Redis away.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// What an answer given "within --redis-timeout" may take on top of it: the node checks its
/// link every 250 ms, and a test machine may be busy.
const TIMEOUT_SLACK: Duration = Duration::from_millis(1500);
/// How long nothing more may arrive before a test says a client got all it will get.
const QUIET: Duration = Duration::from_millis(300);
const BUSY: &str = "Server busy";
/// How long a dead node's partners may wait for `userLeft`: its alive key lives 5 s, and the
/// reaper runs every second.
const NODE_GONE: Duration = Duration::from_secs(10);

impl Cluster {
    /// A member on node `a` makes a room and one on node `b` joins it (the first is told):
    /// the two clients and the room's code.
    fn pair(&self, a: usize, b: usize) -> (Client, Client, String) {
        let mut first = self.client(a);
        let code = first.create_room();
        assert_code(&code);
        let mut second = self.client(b);
        assert_eq!(second.join(&code), json!({"success": true, "messages": []}));
        assert_eq!(first.next_event("userJoined"), json!({"userId": second.id}));
        (first, second, code)
    }

    /// Waits until `/health` of each of `nodes` says Redis is `state` (`up` or `down`), `after`
    /// what; `/metrics` must agree.
    fn wait_link(&self, nodes: &[usize], state: &str, limit: Duration, after: &str) {
        for &node in nodes {
            let took = wait_redis_state(&self.nodes[node - 1].addr, state, limit)
                .unwrap_or_else(|s| panic!("node {node}: redis {s} {limit:?} after {after}"));
            eprintln!("node {node}: redis {state} {took:?} after {after}");
            let up = self.metric(node, "pairchat_redis_up");
            assert_eq!(up, u64::from(state == "up"), "node {node}");
        }
    }

    /// What Redis still holds about room `code`: its keys, and the nodes' seat sets naming it.
    fn traces(&self, code: &str) -> Vec<String> {
        let keys = self.redis(&["KEYS", "pairchat:*"]).strings();
        let suffix = format!(":{code}");
        let mut traces: Vec<String> = keys
            .iter()
            .filter(|k| k.ends_with(&suffix))
            .cloned()
            .collect();
        for set in keys.iter().filter(|k| k.starts_with("pairchat:seats:")) {
            if self.redis(&["SISMEMBER", set, code]).int() == Some(1) {
                traces.push(format!("{code} in {set}"));
            }
        }
        traces
    }

    /// Waits (bounded) until Redis's record of room `code` holds `seats` seats: what a node
    /// writes when its link comes back, which the test then relies on.
    fn wait_seats(&self, code: &str, seats: usize) {
        let room = format!("pairchat:room:{code}");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let fields = self.redis(&["HKEYS", &room]).strings();
            let held = fields.iter().filter(|f| *f == "s1" || *f == "s2").count();
            if held == seats {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "room {code} has fields {fields:?}, expected {seats} seats"
            );
            std::thread::sleep(ms(20));
        }
    }
}

/// Asserts a `newMessage` payload: exactly `{sender, text, timestamp}`.
fn assert_message(message: &Value, sender: &str, text: &str) {
    assert_eq!(message["sender"], sender, "{message}");
    assert_eq!(message["text"], text, "{message}");
    assert!(message["timestamp"].is_u64(), "{message}");
    assert_eq!(message.as_object().map(|o| o.len()), Some(3), "{message}");
}

/// `from` sends `text` to room `code`: acknowledged, and delivered to `from` and `to` alike.
fn exchange(from: &mut Client, to: &mut Client, code: &str, text: &str) -> Value {
    assert_success(&from.say(code, text));
    let mine = from.next_event("newMessage");
    assert_message(&mine, &from.id, text);
    assert_eq!(
        to.next_event("newMessage"),
        mine,
        "both members get the same message"
    );
    mine
}

/// Asserts `client` gets no event (other than those already taken) within `QUIET`.
fn assert_quiet(client: &mut Client, who: &str) {
    let events = client.events_until_quiet(QUIET);
    assert!(events.is_empty(), "{who} got {events:?}");
}

/// `(sender, text)` of each message of a JSON array.
fn said(messages: &Value) -> Vec<(String, String)> {
    let list = messages
        .as_array()
        .unwrap_or_else(|| panic!("not a list of messages: {messages}"));
    let field = |m: &Value, f: &str| m[f].as_str().unwrap_or_default().to_string();
    list.iter()
        .map(|m| (field(m, "sender"), field(m, "text")))
        .collect()
}

/// The history `member` gets by joining the room it is in, as `said` gives it.
fn history(member: &mut Client, code: &str) -> Vec<(String, String)> {
    let reply = member.join(code);
    assert_success(&reply);
    said(&reply["messages"])
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

fn assert_code(code: &str) {
    let digits = code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit());
    assert!(digits && !code.starts_with('0'), "code {code:?}");
}

#[test]
fn members_on_two_nodes_chat_as_on_one_server() {
    let Some(cluster) = Cluster::start(SUITE, 2, &[]) else {
        return;
    };
    let mut alice = cluster.client(1);
    let code = alice.create_room();
    assert_code(&code);
    assert_success(&alice.say(&code, "before bob"));
    let first = alice.next_event("newMessage");
    assert_message(&first, &alice.id, "before bob");

    // Bob, on the other node, joins with the history; Alice is told.
    let mut bob = cluster.client(2);
    assert_eq!(
        bob.join(&code),
        json!({"success": true, "messages": [first]})
    );
    assert_eq!(alice.next_event("userJoined"), json!({"userId": bob.id}));

    // Messages both ways, each delivered once to each member.
    let m1 = exchange(&mut alice, &mut bob, &code, "hello from node 1");
    let m2 = exchange(&mut bob, &mut alice, &code, "hello from node 2");
    assert_quiet(&mut alice, "alice");
    assert_quiet(&mut bob, "bob");

    // A third member on either node: Room full, and the members hear nothing of it.
    for node in [1, 2] {
        let mut third = cluster.client(node);
        assert_eq!(error_of(&third.join(&code)), "Room full", "on node {node}");
        let unknown = absent_code(&[&code]);
        assert_eq!(error_of(&third.join(&unknown)), "Room not found");
    }
    assert_quiet(&mut alice, "alice");
    assert_quiet(&mut bob, "bob");

    // Bob leaves: Alice is told, and the seat is free for a newcomer, who gets the history.
    assert_success(&bob.call("leaveRoom", json!({ "code": code })));
    assert_eq!(alice.next_event("userLeft"), json!({"userId": bob.id}));
    let mut carol = cluster.client(2);
    assert_eq!(
        carol.join(&code),
        json!({"success": true, "messages": [first, m1, m2]})
    );
    assert_eq!(alice.next_event("userJoined"), json!({"userId": carol.id}));
    exchange(&mut carol, &mut alice, &code, "carol here");

    // Alice disconnects: Carol, on the other node, is told; Bob (no longer a member) is not.
    let alice_id = alice.id.clone();
    alice.disconnect();
    assert_eq!(carol.next_event("userLeft"), json!({"userId": alice_id}));
    assert_quiet(&mut bob, "bob");

    // The last member leaves: the room is gone on both nodes, and from Redis.
    assert_success(&carol.call("leaveRoom", json!({ "code": code })));
    for node in [1, 2] {
        let mut late = cluster.client(node);
        assert_eq!(error_of(&late.join(&code)), "Room not found", "node {node}");
    }
    assert_eq!(cluster.traces(&code), Vec::<String>::new());
    assert_quiet(&mut carol, "carol");
}

#[test]
fn room_codes_are_unique_across_nodes() {
    const ROOMS_PER_NODE: usize = 100;
    let Some(cluster) = Cluster::start(SUITE, 2, &[]) else {
        return;
    };
    let mut clients: Vec<Client> = (0..2 * ROOMS_PER_NODE)
        .map(|i| cluster.client(i % 2 + 1))
        .collect();
    // Every request is out before any answer is read: both nodes draw codes at once.
    let ids: Vec<u32> = clients
        .iter_mut()
        .map(|c| {
            let id = c.queue("createRoom", json!({}));
            c.flush();
            id
        })
        .collect();
    let mut codes: Vec<String> = clients
        .iter_mut()
        .zip(ids)
        .map(|(c, id)| {
            let reply = c.ack(id);
            reply["code"]
                .as_str()
                .unwrap_or_else(|| panic!("createRoom: {reply}"))
                .to_string()
        })
        .collect();
    codes.iter().for_each(|c| assert_code(c));
    let distinct: HashSet<&String> = codes.iter().collect();
    assert_eq!(distinct.len(), codes.len(), "codes of live rooms repeat");

    // Redis holds exactly these rooms, and each node counts its own.
    codes.sort();
    let rooms: Vec<String> = cluster
        .redis(&["KEYS", "pairchat:room:*"])
        .strings()
        .into_iter()
        .map(|k| k.trim_start_matches("pairchat:room:").to_string())
        .collect();
    assert_eq!(rooms, codes);
    for node in [1, 2] {
        assert_eq!(
            cluster.metric(node, "pairchat_rooms"),
            ROOMS_PER_NODE as u64
        );
    }
}

#[test]
fn both_members_see_messages_in_the_order_they_were_acknowledged() {
    const ROUNDS: usize = 100;
    let Some(cluster) = Cluster::start(SUITE, 2, &[]) else {
        return;
    };
    let (mut alice, mut bob, code) = cluster.pair(1, 2);

    // Alice's message is acknowledged, then Bob, on the other node, sends at once: Bob's node
    // gets Alice's message from Redis while Bob's request is on its way.
    let mut sent = Vec::new();
    for i in 0..ROUNDS {
        let text = format!("alice {i}");
        assert_success(&alice.say(&code, &text));
        sent.push((alice.id.clone(), text));
        let text = format!("bob {i}");
        assert_success(&bob.say(&code, &text));
        sent.push((bob.id.clone(), text));
    }
    let stream = |client: &mut Client| {
        let messages = (0..sent.len()).map(|_| client.next_event("newMessage"));
        said(&Value::Array(messages.collect()))
    };
    assert_eq!(stream(&mut alice), sent, "alice's stream");
    assert_eq!(stream(&mut bob), sent, "bob's stream");
    assert_quiet(&mut alice, "alice");
    assert_quiet(&mut bob, "bob");

    // The history has the same order.
    assert_eq!(history(&mut bob, &code), sent);
}

#[test]
fn a_room_expires_for_members_on_both_nodes() {
    let Some(cluster) = Cluster::start(SUITE, 2, &["--room-ttl", "1500ms"]) else {
        return;
    };
    let (mut alice, mut bob, code) = cluster.pair(1, 2);
    exchange(&mut bob, &mut alice, &code, "soon gone");

    assert_eq!(alice.next_event("roomExpired"), json!({}));
    assert_eq!(bob.next_event("roomExpired"), json!({}));
    assert_quiet(&mut alice, "alice");
    assert_quiet(&mut bob, "bob");

    assert_eq!(error_of(&alice.join(&code)), "Room not found");
    assert_eq!(error_of(&bob.say(&code, "anyone?")), "Room not found");
    let mut carol = cluster.client(2);
    assert_eq!(error_of(&carol.join(&code)), "Room not found");
    assert_eq!(cluster.traces(&code), Vec::<String>::new());
}

#[test]
fn a_killed_node_frees_its_members_seats() {
    let Some(mut cluster) = Cluster::start(SUITE, 3, &[]) else {
        return;
    };
    let (mut alice, mut bob, code) = cluster.pair(1, 2);
    let m1 = exchange(&mut alice, &mut bob, &code, "hi bob");
    let m2 = exchange(&mut bob, &mut alice, &code, "hi alice");
    assert_eq!(cluster.redis(&["SCARD", "pairchat:nodes"]).int(), Some(3));

    // Bob's node dies without a word: Alice hears that Bob left once Redis notices.
    let killed = Instant::now();
    cluster.node(2).signal("KILL");
    assert!(cluster.node(2).wait_exit(Duration::from_secs(5)).is_some());
    let first = first_event_within(&mut alice, NODE_GONE);
    eprintln!(
        "{:?} after the SIGKILL, alice got {first:?}",
        killed.elapsed()
    );
    assert_eq!(
        first,
        Some(("userLeft".into(), json!({"userId": bob.id}))),
        "alice's first event within {NODE_GONE:?} of the SIGKILL"
    );
    // The dead node is forgotten, and so are its seats (node 1 holds the only ones left).
    assert_eq!(cluster.redis(&["SCARD", "pairchat:nodes"]).int(), Some(2));
    let seat_sets = cluster.redis(&["KEYS", "pairchat:seats:*"]).strings();
    assert_eq!(seat_sets.len(), 1, "{seat_sets:?}");

    // A newcomer on node 3 takes the seat, with the history.
    let mut carol = cluster.client(3);
    assert_eq!(
        carol.join(&code),
        json!({"success": true, "messages": [m1, m2]})
    );
    assert_eq!(alice.next_event("userJoined"), json!({"userId": carol.id}));
    exchange(&mut alice, &mut carol, &code, "welcome carol");
    exchange(&mut carol, &mut alice, &code, "thanks");
    assert_quiet(&mut alice, "alice");
    assert_quiet(&mut carol, "carol");
}

#[test]
fn without_redis_same_node_rooms_keep_chatting_and_come_back() {
    let timeout = format!("{}ms", REDIS_TIMEOUT.as_millis());
    let Some(mut cluster) = Cluster::start(SUITE, 2, &["--redis-timeout", &timeout]) else {
        return;
    };
    // A room with both members on node 1, and one across the nodes.
    let (mut alice, mut bob, local) = cluster.pair(1, 1);
    let (mut carol, mut dave, cross) = cluster.pair(1, 2);
    exchange(&mut alice, &mut bob, &local, "local 1");
    exchange(&mut carol, &mut dave, &cross, "cross 1");

    cluster.redis.stop();
    cluster.wait_link(&[1, 2], "down", Duration::from_secs(5), "the stop");

    // What needs Redis answers Server busy, within --redis-timeout.
    for node in [1, 2] {
        let mut eve = cluster.client(node);
        let asked = Instant::now();
        assert_eq!(error_of(&eve.call("createRoom", json!({}))), BUSY);
        let took = asked.elapsed();
        assert!(
            took < REDIS_TIMEOUT + TIMEOUT_SLACK,
            "createRoom took {took:?}"
        );
        assert_eq!(error_of(&eve.join(&local)), BUSY);
    }
    assert_eq!(error_of(&carol.say(&cross, "cross 2")), BUSY);
    assert_eq!(error_of(&dave.say(&cross, "cross 3")), BUSY);
    assert_quiet(&mut carol, "carol");
    assert_quiet(&mut dave, "dave");
    // Each node refused a createRoom, a joinRoom and a sendMessage.
    for node in [1, 2] {
        assert_eq!(cluster.metric(node, &limited("redis")), 3, "node {node}");
    }

    // Members on one node need no Redis.
    exchange(&mut alice, &mut bob, &local, "local 2");
    exchange(&mut bob, &mut alice, &local, "local 3");

    // Redis comes back, empty, on the same port: the nodes reconnect and put their rooms back.
    let connects = [1, 2].map(|node| cluster.metric(node, "pairchat_redis_connects_total"));
    cluster.redis.restart();
    cluster.wait_link(&[1, 2], "up", Duration::from_secs(10), "the restart");
    for node in [1, 2] {
        let now = cluster.metric(node, "pairchat_redis_connects_total");
        assert_eq!(now, connects[node - 1] + 1, "node {node}: links made");
    }
    cluster.wait_seats(&local, 2);
    cluster.wait_seats(&cross, 2);
    // Nobody left or joined, so the members are told nothing; checked last, so that a failure
    // here does not hide the rest.
    let meanwhile = [
        ("alice", &mut alice),
        ("bob", &mut bob),
        ("carol", &mut carol),
        ("dave", &mut dave),
    ]
    .map(|(who, client)| (who, client.events_until_quiet(QUIET)));
    for node in [1, 2] {
        let mut eve = cluster.client(node);
        assert_code(&eve.create_room());
        assert_eq!(error_of(&eve.join(&local)), "Room full", "node {node}");
    }
    exchange(&mut alice, &mut bob, &local, "local 4");
    exchange(&mut carol, &mut dave, &cross, "cross 4");
    exchange(&mut dave, &mut carol, &cross, "cross 5");
    for (client, who) in [
        (&mut alice, "alice"),
        (&mut bob, "bob"),
        (&mut carol, "carol"),
        (&mut dave, "dave"),
    ] {
        assert_quiet(client, who);
    }
    for (who, events) in meanwhile {
        assert!(
            events.is_empty(),
            "{who} got {events:?} when Redis came back, though nobody left or joined"
        );
    }
}

#[test]
fn a_node_that_dies_while_redis_is_away_still_frees_its_seats() {
    let Some(mut cluster) = Cluster::start(SUITE, 2, &[]) else {
        return;
    };
    let (mut alice, mut bob, code) = cluster.pair(1, 2);
    exchange(&mut alice, &mut bob, &code, "hi");

    // Redis goes, Bob's node dies meanwhile, Redis comes back empty: only node 1 returns.
    cluster.redis.stop();
    cluster.wait_link(&[1, 2], "down", Duration::from_secs(5), "the stop");
    cluster.node(2).signal("KILL");
    assert!(cluster.node(2).wait_exit(Duration::from_secs(5)).is_some());
    cluster.redis.restart();
    cluster.wait_link(&[1], "up", Duration::from_secs(10), "the restart");

    // Bob is gone as surely as if his node had died with Redis up: Alice is told, in the same
    // few seconds, and the seat is free again.
    let restarted = Instant::now();
    let first = first_event_within(&mut alice, NODE_GONE);
    eprintln!(
        "{:?} after the restart, alice got {first:?}",
        restarted.elapsed()
    );
    assert_eq!(
        first,
        Some(("userLeft".into(), json!({"userId": bob.id}))),
        "alice's first event within {NODE_GONE:?} of Redis's return without Bob's node"
    );
    let mut carol = cluster.client(1);
    assert_success(&carol.join(&code));
}

#[test]
fn a_frozen_redis_answers_server_busy_within_the_timeout() {
    let timeout = format!("{}ms", REDIS_TIMEOUT.as_millis());
    let Some(cluster) = Cluster::start(SUITE, 2, &["--redis-timeout", &timeout]) else {
        return;
    };
    let (mut alice, mut bob, code) = cluster.pair(1, 2);
    exchange(&mut alice, &mut bob, &code, "before");

    // Redis keeps the link open but answers nothing: the request waits --redis-timeout.
    cluster.redis.freeze();
    let asked = Instant::now();
    assert_eq!(error_of(&alice.say(&code, "into the void")), BUSY);
    let took = asked.elapsed();
    eprintln!("Server busy {took:?} after the request");
    assert!(
        took < REDIS_TIMEOUT + TIMEOUT_SLACK,
        "answered after {took:?}"
    );
    // Only node 1 had a request in flight: node 2's link may or may not outlive the freeze.
    cluster.wait_link(&[1], "down", Duration::from_secs(5), "the freeze");
    assert_eq!(cluster.metric(1, &limited("redis")), 1);

    // Thawed well within the nodes' alive keys' life: nothing was lost, the chat goes on.
    cluster.redis.thaw();
    cluster.wait_link(&[1, 2], "up", Duration::from_secs(10), "the thaw");
    // What Bob got meanwhile is checked last, so that the chat's recovery is checked too.
    let bob_meanwhile = bob.events_until_quiet(QUIET);
    let alice_meanwhile = alice.events_until_quiet(QUIET);
    exchange(&mut alice, &mut bob, &code, "after");
    exchange(&mut bob, &mut alice, &code, "after too");
    assert_quiet(&mut alice, "alice");
    assert_quiet(&mut bob, "bob");

    // The refused message took no effect: no member saw it, no joiner will.
    let history = history(&mut bob, &code);
    assert!(
        alice_meanwhile.is_empty() && bob_meanwhile.is_empty(),
        "a message answered Server busy reached the room: alice got {alice_meanwhile:?}, \
         bob got {bob_meanwhile:?}; history {history:?}"
    );
    let (a, b) = (alice.id.as_str(), bob.id.as_str());
    assert_eq!(
        history,
        [(a, "before"), (a, "after"), (b, "after too")].map(|(s, t)| (s.into(), t.into())),
        "the history (a message answered Server busy must not be in it)"
    );
}

impl Cluster {
    /// Alice on node 1 makes a room and Bob, a `Recovering` socket on node `node`, joins it
    /// (an empty history; Alice hears he joined): Alice, the code, and Bob.
    fn recovering_pair(&self, node: usize) -> (Client, String, Recovering) {
        let mut alice = self.client(1);
        let code = alice.create_room();
        let (mut bob, _) = Recovering::connect(self.addr(node), None);
        assert_eq!(
            bob.call("joinRoom", json!({ "code": code })),
            json!({"success": true, "messages": []})
        );
        assert_eq!(alice.next_event("userJoined"), json!({ "userId": bob.sid }));
        (alice, code, bob)
    }

    /// Alice on node 1 makes a room and Bob, a `Recovering` socket on node `node`, joins it;
    /// then Bob's transport drops (Alice hears he left): Alice, the code, and Bob's socket id,
    /// pid and last offset, to claim his socket with.
    fn away_member(&self, node: usize) -> (Client, String, String, String, Option<String>) {
        let (mut alice, code, bob) = self.recovering_pair(node);
        let sid = bob.sid.clone();
        let (pid, offset) = bob.drop_transport();
        alice.next_event("userLeft");
        (alice, code, sid, pid, offset)
    }
}

/// A raw Socket.IO socket on `/` over WebSocket that speaks recovery as socket.io-client does:
/// it keeps its pid and the offset of the last event it saw, and claims them when it connects
/// again.
struct Recovering {
    ws: common::chat::Ws,
    /// The Engine.IO session id (it starts with its node's id).
    session: String,
    sid: String,
    pid: String,
    offset: Option<String>,
    next_ack: u32,
    events: std::collections::VecDeque<(String, Value)>,
}

impl Recovering {
    /// Connects to node `addr`, claiming `(pid, offset)` if given: the socket, and the events
    /// sent before the CONNECT reply (what a recovery sends again).
    fn connect(addr: SocketAddr, claim: Option<(&str, Option<&str>)>) -> (Recovering, Vec<Value>) {
        use tungstenite::client::IntoClientRequest;
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let stream = common::chat::tcp(addr);
        let (mut ws, _) = tungstenite::client(url.into_client_request().unwrap(), stream)
            .expect("websocket handshake");
        let open = common::chat::next_text(&mut ws);
        let open: Value = serde_json::from_str(open.strip_prefix('0').expect("an open packet"))
            .expect("open JSON");
        let session = open["sid"].as_str().expect("a session id").to_string();
        let connect = match claim {
            None => "40".to_string(),
            Some((pid, offset)) => format!("40{}", json!({"pid": pid, "offset": offset})),
        };
        common::chat::send_text(&mut ws, &connect);
        // A claim of a dead node's socket waits for that node's alive key to go (5 s).
        ws.get_mut()
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let mut socket = Recovering {
            ws,
            session,
            sid: String::new(),
            pid: String::new(),
            offset: claim.and_then(|(_, o)| o.map(str::to_string)),
            next_ack: 0,
            events: Default::default(),
        };
        let reply = loop {
            let text = common::chat::next_text(&mut socket.ws);
            if let Some(reply) = text.strip_prefix("40") {
                break serde_json::from_str::<Value>(reply).expect("CONNECT JSON");
            }
            socket.note(&text);
        };
        socket
            .ws
            .get_mut()
            .set_read_timeout(Some(common::READ_TIMEOUT))
            .unwrap();
        socket.sid = reply["sid"].as_str().expect("a sid").to_string();
        socket.pid = reply["pid"].as_str().expect("a pid").to_string();
        let replayed = socket.events.drain(..).map(|(_, v)| v).collect();
        (socket, replayed)
    }

    /// Notes an event frame: its name and payload, and its offset.
    fn note(&mut self, text: &str) {
        let event: Vec<Value> =
            serde_json::from_str(text.strip_prefix("42").expect("an event")).expect("event JSON");
        self.offset = Some(event[2].as_str().expect("an offset").to_string());
        let name = event[0].as_str().expect("an event name").to_string();
        self.events.push_back((name, event[1].clone()));
    }

    /// Calls `event` and returns its ack; events on the way are kept.
    fn call(&mut self, event: &str, arg: Value) -> Value {
        let id = self.next_ack;
        self.next_ack += 1;
        common::chat::send_text(&mut self.ws, &format!("42{id}{}", json!([event, arg])));
        let prefix = format!("43{id}");
        loop {
            let text = common::chat::next_text(&mut self.ws);
            if let Some(ack) = text.strip_prefix(&prefix) {
                return serde_json::from_str::<Value>(ack).expect("ack JSON")[0].clone();
            }
            self.note(&text);
        }
    }

    /// The next event, which must be `name`.
    fn next_event(&mut self, name: &str) -> Value {
        if self.events.is_empty() {
            let text = common::chat::next_text(&mut self.ws);
            self.note(&text);
        }
        let (got, payload) = self.events.pop_front().expect("an event");
        assert_eq!(got, name, "{payload}");
        payload
    }

    /// The transport drops (the TCP connection closes, unannounced): the pid and the last
    /// offset to claim with.
    fn drop_transport(self) -> (String, Option<String>) {
        (self.pid, self.offset)
    }
}

/// Whether the server closes this connection within a moment (an Engine.IO close packet, a
/// close frame or the end of the stream), rather than keeping it open.
fn closed_by_server(ws: &mut common::chat::Ws) -> bool {
    ws.get_mut().set_read_timeout(Some(QUIET)).unwrap();
    let closed = loop {
        match ws.read() {
            Ok(tungstenite::Message::Text(t)) if t.as_str() == "1" => break true,
            Ok(tungstenite::Message::Close(_)) => break true,
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                break false;
            }
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                break false;
            }
            Err(_) => break true,
        }
    };
    ws.get_mut().set_read_timeout(None).unwrap();
    closed
}

/// The texts of `newMessage` payloads.
fn texts(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|m| m["text"].as_str().unwrap_or("?"))
        .collect()
}

#[test]
fn a_member_back_on_another_node_recovers_there() {
    let Some(cluster) = Cluster::start(SUITE, 3, &[]) else {
        return;
    };
    cluster.wait_peers();
    let (mut alice, code, mut bob) = cluster.recovering_pair(2);
    let sid = bob.sid.clone();
    assert_success(&alice.say(&code, "m1"));
    alice.next_event("newMessage");
    assert_message(&bob.next_event("newMessage"), &alice.id, "m1");

    // Bob's connection to node 2 drops: node 2 keeps his socket, Alice hears he left, and
    // says two things he misses.
    let (pid, offset) = bob.drop_transport();
    assert_eq!(alice.next_event("userLeft"), json!({ "userId": sid }));
    for text in ["m2", "m3"] {
        assert_success(&alice.say(&code, text));
        alice.next_event("newMessage");
    }

    // He comes back on node 3: the same socket, what he missed (once, in order), his seat.
    let (mut bob, replayed) = Recovering::connect(cluster.addr(3), Some((&pid, offset.as_deref())));
    assert_eq!(bob.sid, sid, "recovered with its id");
    assert_eq!(texts(&replayed), ["m2", "m3"], "{replayed:?}");
    assert_eq!(alice.next_event("userJoined"), json!({ "userId": sid }));
    assert_eq!(
        cluster.metric(3, "pairchat_cluster_claims_total{result=\"recovered\"}"),
        1
    );
    assert_eq!(
        cluster.metric(2, "pairchat_recoveries_total{result=\"handed_over\"}"),
        1
    );
    assert_success(&alice.say(&code, "m4"));
    alice.next_event("newMessage");
    assert_message(&bob.next_event("newMessage"), &alice.id, "m4");
    assert_success(&bob.call("sendMessage", json!({"code": code, "text": "b1"})));
    assert_message(&alice.next_event("newMessage"), &sid, "b1");
    assert_message(&bob.next_event("newMessage"), &sid, "b1");

    // Again, to node 1 (Alice's), while node 3 still takes his old connection for alive (a
    // stale one): node 3 hands the connected socket over and closes that connection; Alice
    // hears nothing of the move, and the two now chat on one node.
    let (pid, offset) = (bob.pid.clone(), bob.offset.clone());
    let (mut bob2, replayed) =
        Recovering::connect(cluster.addr(1), Some((&pid, offset.as_deref())));
    assert_eq!(bob2.sid, sid);
    assert_eq!(replayed, Vec::<Value>::new(), "nothing was missed");
    bob.ws
        .get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    loop {
        match bob.ws.read() {
            Ok(tungstenite::Message::Text(t)) if t.as_str() == "2" => continue,
            // Engine.IO's close packet.
            Ok(tungstenite::Message::Text(t)) if t.as_str() == "1" => break,
            Ok(tungstenite::Message::Close(_)) => continue,
            Ok(other) => panic!("the stale connection got {other:?}"),
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => break,
            Err(tungstenite::Error::Protocol(_)) => break,
            Err(e) => panic!("the stale connection was not closed: {e}"),
        }
    }
    assert_success(&bob2.call("sendMessage", json!({"code": code, "text": "b2"})));
    assert_message(&alice.next_event("newMessage"), &sid, "b2");
    assert_message(&bob2.next_event("newMessage"), &sid, "b2");
    assert_quiet(&mut alice, "alice");
    let room = format!("pairchat:room:{code}");
    let mut seats = cluster.redis(&["HMGET", &room, "s1", "s2"]).strings();
    seats.sort();
    // Engine.IO session ids start with their node's id.
    let node1 = &bob2.session[..6];
    let mut expected = [format!("{node1} {}", alice.id), format!("{node1} {sid}")];
    expected.sort();
    assert_eq!(seats, expected);
    let said: Vec<(String, String)> = [(0, "m1"), (0, "m2"), (0, "m3"), (0, "m4"), (1, "b1")]
        .into_iter()
        .chain([(1, "b2")])
        .map(|(who, t)| ([&alice.id, &sid][who].clone(), t.to_string()))
        .collect();
    assert_eq!(history(&mut alice, &code), said);

    // His connection to node 1 drops (Alice, on node 1 too, hears he left) and he comes back
    // on node 2: Alice, on the node he left, hears he is back.
    let (pid, offset) = bob2.drop_transport();
    assert_eq!(alice.next_event("userLeft"), json!({ "userId": sid }));
    assert_success(&alice.say(&code, "m5"));
    alice.next_event("newMessage");
    let (bob3, replayed) = Recovering::connect(cluster.addr(2), Some((&pid, offset.as_deref())));
    assert_eq!(
        (bob3.sid.as_str(), texts(&replayed)),
        (sid.as_str(), vec!["m5"])
    );
    assert_eq!(alice.next_event("userJoined"), json!({ "userId": sid }));

    // And once more, back to Alice's node: she hears he is back from that node itself.
    let (pid, offset) = bob3.drop_transport();
    assert_eq!(alice.next_event("userLeft"), json!({ "userId": sid }));
    let (mut bob4, replayed) =
        Recovering::connect(cluster.addr(1), Some((&pid, offset.as_deref())));
    assert_eq!((bob4.sid.as_str(), replayed.len()), (sid.as_str(), 0));
    assert_eq!(alice.next_event("userJoined"), json!({ "userId": sid }));
    assert_success(&bob4.call("sendMessage", json!({"code": code, "text": "b3"})));
    assert_message(&alice.next_event("newMessage"), &sid, "b3");
    assert_quiet(&mut alice, "alice");

    // A pid of a node that is not there: a fresh socket, at once. The client's last offset
    // came from elsewhere: a later recovery of the fresh socket still gives it everything.
    let stranger = format!("zzzzzz{}", &pid[6..]);
    let far = Some("99999999999999999");
    let (mut fresh, replayed) = Recovering::connect(cluster.addr(2), Some((&stranger, far)));
    assert_ne!(fresh.sid, sid);
    assert!(replayed.is_empty());
    let code2 = fresh.call("createRoom", json!({}))["code"]
        .as_str()
        .expect("a code")
        .to_string();
    let mut carol = cluster.client(3);
    assert_success(&carol.join(&code2));
    assert_eq!(
        fresh.next_event("userJoined"),
        json!({ "userId": carol.id })
    );
    let (fresh_pid, fresh_sid) = (fresh.pid.clone(), fresh.sid.clone());
    drop(fresh);
    assert_eq!(carol.next_event("userLeft"), json!({ "userId": fresh_sid }));
    assert_success(&carol.say(&code2, "while away"));
    // The client had read nothing of the fresh socket but `userJoined`; it claims with the
    // offset it kept from before (socket.io-client keeps its last one across sockets).
    let (again, replayed) = Recovering::connect(cluster.addr(2), Some((&fresh_pid, far)));
    assert_eq!(again.sid, fresh_sid);
    let names: Vec<&str> = replayed
        .iter()
        .map(|e| {
            if e["text"].is_string() {
                "newMessage"
            } else {
                "other"
            }
        })
        .collect();
    assert_eq!(names, ["other", "newMessage"], "{replayed:?}");
}

#[test]
fn a_dead_nodes_member_recovers_on_another_node() {
    let Some(mut cluster) = Cluster::start(SUITE, 3, &[]) else {
        return;
    };
    cluster.wait_peers();
    let (mut alice, code, mut bob) = cluster.recovering_pair(2);
    let sid = bob.sid.clone();
    assert_success(&alice.say(&code, "m1"));
    alice.next_event("newMessage");
    assert_message(&bob.next_event("newMessage"), &alice.id, "m1");
    assert_success(&bob.call("sendMessage", json!({"code": code, "text": "b1"})));
    assert_message(&bob.next_event("newMessage"), &sid, "b1");
    assert_message(&alice.next_event("newMessage"), &sid, "b1");
    // One more that reaches Bob's node but that Bob does not read.
    assert_success(&alice.say(&code, "m2"));
    alice.next_event("newMessage");
    let (pid, offset) = (bob.pid.clone(), bob.offset.clone());

    // Bob's node dies: Alice hears he left, and says something he misses.
    cluster.node(2).signal("KILL");
    assert!(cluster.node(2).wait_exit(Duration::from_secs(5)).is_some());
    assert_eq!(
        first_event_within(&mut alice, NODE_GONE),
        Some(("userLeft".into(), json!({"userId": sid})))
    );
    assert_success(&alice.say(&code, "m3"));
    alice.next_event("newMessage");

    // He comes back on node 3: the same socket, exactly what he missed, his seat.
    let (mut bob, replayed) = Recovering::connect(cluster.addr(3), Some((&pid, offset.as_deref())));
    assert_eq!(bob.sid, sid, "recovered with its id");
    assert_eq!(texts(&replayed), ["m2", "m3"], "{replayed:?}");
    assert_message(&replayed[0], &alice.id, "m2");
    assert_eq!(alice.next_event("userJoined"), json!({ "userId": sid }));
    assert_eq!(
        cluster.metric(3, "pairchat_cluster_claims_total{result=\"recovered\"}"),
        1
    );
    let record = cluster.redis(&["GET", &format!("pairchat:pid:{pid}")]);
    let Resp::Bulk(Some(record)) = record else {
        panic!("no record: {record:?}");
    };
    assert!(
        record.starts_with(&bob.session[..6]),
        "names node 3: {record}"
    );
    assert_success(&bob.call("sendMessage", json!({"code": code, "text": "b2"})));
    assert_message(&bob.next_event("newMessage"), &sid, "b2");
    assert_message(&alice.next_event("newMessage"), &sid, "b2");
    assert_success(&alice.say(&code, "m4"));
    alice.next_event("newMessage");
    assert_message(&bob.next_event("newMessage"), &alice.id, "m4");

    // And node 3 dies too, at once, before Bob reads anything more: he comes back on node 1
    // (Alice's), which waits for node 3's alive key to go, with nothing missed twice.
    assert_success(&alice.say(&code, "m5"));
    alice.next_event("newMessage");
    let (pid, offset) = (bob.pid.clone(), bob.offset.clone());
    cluster.node(3).signal("KILL");
    assert!(cluster.node(3).wait_exit(Duration::from_secs(5)).is_some());
    let (mut bob, replayed) = Recovering::connect(cluster.addr(1), Some((&pid, offset.as_deref())));
    assert_eq!(bob.sid, sid, "recovered again");
    assert_eq!(texts(&replayed), ["m5"], "{replayed:?}");
    // Alice hears he left and joined if node 3's seat was reaped before he came back, else
    // nothing.
    if let Some(first) = first_event_within(&mut alice, Duration::from_secs(2)) {
        assert_eq!(first, ("userLeft".into(), json!({ "userId": sid })));
        assert_eq!(alice.next_event("userJoined"), json!({ "userId": sid }));
    }
    assert_success(&bob.call("sendMessage", json!({"code": code, "text": "b3"})));
    assert_message(&bob.next_event("newMessage"), &sid, "b3");
    assert_message(&alice.next_event("newMessage"), &sid, "b3");
    assert_quiet(&mut alice, "alice");
}

#[test]
fn appends_lost_with_the_link_never_make_a_recovery_skip_messages() {
    let Some(mut cluster) = Cluster::start(SUITE, 2, &[]) else {
        return;
    };
    cluster.wait_peers();
    // Alice and Bob on node 1: their messages go to Redis behind them, numbered by node 1.
    let (mut alice, code, mut bob) = cluster.recovering_pair(1);
    // Node 1's link is cut while thousands of them are on their way: some appends are lost.
    let url = cluster.redis.url();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(ms(30));
        let _ = common::redis::redis_cli(&url, &["CLIENT", "KILL", "TYPE", "pubsub"]);
        let _ = common::redis::redis_cli(&url, &["CLIENT", "KILL", "TYPE", "normal"]);
    });
    for i in 0..4000 {
        alice.queue(
            "sendMessage",
            json!({"code": code, "text": format!("x{i}")}),
        );
    }
    alice.flush();
    killer.join().unwrap();
    cluster.wait_link(&[1], "up", Duration::from_secs(10), "the kill");
    alice.events_until_quiet(Duration::from_secs(1));
    bob.ws.get_mut().set_read_timeout(Some(ms(500))).unwrap();
    while let Ok(tungstenite::Message::Text(t)) = bob.ws.read() {
        if t.as_str() != "2" {
            bob.note(&t);
        }
    }
    bob.events.clear();
    bob.ws
        .get_mut()
        .set_read_timeout(Some(common::READ_TIMEOUT))
        .unwrap();
    assert_success(&alice.say(&code, "after"));
    assert_eq!(bob.next_event("newMessage")["text"], "after");
    let (pid, offset) = (bob.pid.clone(), bob.offset.clone());
    let tag = offset.as_deref().unwrap().parse::<u64>().unwrap() & ((1 << 20) - 1);
    let room = format!("pairchat:room:{code}");
    let seq = || match cluster.redis(&["HGET", &room, "seq"]) {
        Resp::Bulk(Some(seq)) => seq.parse::<u64>().unwrap(),
        other => panic!("no seq: {other:?}"),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while seq() != tag {
        assert!(
            Instant::now() < deadline,
            "Redis numbers {} where node 1 said {tag}",
            seq()
        );
        std::thread::sleep(ms(50));
    }

    // (Whether appends were lost this run: Redis notes a gap.)
    eprintln!("gap: {:?}", cluster.redis(&["HGET", &room, "gap"]));
    // Node 1 dies; once Alice's seat is away, Carol takes it on node 2 and says things Bob
    // misses; Bob comes back on node 2 and gets exactly those.
    cluster.node(1).signal("KILL");
    assert!(cluster.node(1).wait_exit(Duration::from_secs(5)).is_some());
    let deadline = Instant::now() + NODE_GONE;
    loop {
        let seats = cluster.redis(&["HMGET", &room, "s1"]);
        if matches!(&seats, Resp::Array(Some(s)) if matches!(&s[0], Resp::Bulk(Some(v)) if v.ends_with(" a")))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alice's seat never went away: {seats:?}"
        );
        std::thread::sleep(ms(100));
    }
    let mut carol = cluster.client(2);
    assert_eq!(carol.join(&code)["success"], true);
    let said: Vec<String> = (0..5).map(|i| format!("c{i}")).collect();
    for text in &said {
        assert_success(&carol.say(&code, text));
    }
    let (bob, replayed) = Recovering::connect(cluster.addr(2), Some((&pid, offset.as_deref())));
    assert_eq!(bob.pid, pid, "recovered");
    assert_eq!(texts(&replayed), said, "exactly what he missed");
}

#[test]
fn a_same_node_pairs_numbers_stay_redis_numbers_through_a_reconnect() {
    let Some(cluster) = Cluster::start(SUITE, 2, &[]) else {
        return;
    };
    cluster.wait_peers();
    let (mut alice, code, mut bob) = cluster.recovering_pair(1);
    // Node 1's link is cut while Alice talks, and Redis is kept busy (30 ms scripts) while
    // the node makes it again and resyncs: replies come late, messages go on meanwhile.
    let connects = cluster.metric(1, "pairchat_redis_connects_total");
    let url = cluster.redis.url();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(ms(100));
        let _ = common::redis::redis_cli(&url, &["CLIENT", "KILL", "TYPE", "pubsub"]);
        let _ = common::redis::redis_cli(&url, &["CLIENT", "KILL", "TYPE", "normal"]);
        let busy = "local t = redis.call('TIME') local s = t[1] * 1000000 + t[2] \
                    while true do local u = redis.call('TIME') \
                    if u[1] * 1000000 + u[2] - s > 30000 then break end end return 1";
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(1500) {
            let _ = common::redis::redis_cli(&url, &["EVAL", busy, "0"]);
            std::thread::sleep(ms(3));
        }
    });
    // Bob reads every message with the count its offset carries.
    bob.ws.get_mut().set_read_timeout(Some(ms(1500))).unwrap();
    let reader = std::thread::spawn(move || {
        let mut got: Vec<(String, u64)> = Vec::new();
        loop {
            match bob.ws.read() {
                Ok(tungstenite::Message::Text(t)) if t.as_str() == "2" => {
                    let _ = bob.ws.send(tungstenite::Message::text("3"));
                }
                Ok(tungstenite::Message::Text(t)) => {
                    let event: Vec<Value> = serde_json::from_str(&t[2..]).expect("an event");
                    if event[0] == "newMessage" {
                        let offset: u64 = event[2].as_str().unwrap().parse().unwrap();
                        let text = event[1]["text"].as_str().unwrap().to_string();
                        got.push((text, offset & ((1 << 20) - 1)));
                    }
                }
                Ok(_) => {}
                Err(_) => break got,
            }
        }
    });
    let (mut sent, mut up_at, start) = (0, None::<Instant>, Instant::now());
    while up_at.is_none_or(|t| t.elapsed() < ms(100)) && start.elapsed() < Duration::from_secs(12) {
        for _ in 0..8 {
            alice.queue(
                "sendMessage",
                json!({"code": code, "text": format!("x{sent}")}),
            );
            sent += 1;
        }
        alice.flush();
        std::thread::sleep(ms(2));
        if sent % 80 == 0
            && up_at.is_none()
            && cluster.metric(1, "pairchat_redis_connects_total") > connects
        {
            up_at = Some(Instant::now());
        }
    }
    killer.join().unwrap();
    alice.events_until_quiet(Duration::from_secs(1));
    let got = reader.join().unwrap();
    assert!(up_at.is_some(), "the link came back");

    // Bob's counts never go down, and past the gap Redis numbers each message as Bob's offset
    // said (what a node taking his socket over relies on).
    let room = format!("pairchat:room:{code}");
    let field = |f: &str| match cluster.redis(&["HGET", &room, f]) {
        Resp::Bulk(Some(n)) => n.parse::<u64>().unwrap(),
        _ => 0,
    };
    let (seq, gap) = (field("seq"), field("gap"));
    let Resp::Array(Some(history)) =
        cluster.redis(&["LRANGE", &format!("pairchat:hist:{code}"), "0", "-1"])
    else {
        panic!("no history");
    };
    let first = seq + 1 - history.len() as u64;
    let mut number = std::collections::HashMap::new();
    for (k, m) in history.iter().enumerate() {
        if let Resp::Bulk(Some(m)) = m {
            let v: Value = serde_json::from_str(m).unwrap();
            number.insert(v["text"].as_str().unwrap().to_string(), first + k as u64);
        }
    }
    eprintln!("sent {sent}, bob got {}, seq {seq}, gap {gap}", got.len());
    let mut last = 0;
    for (text, count) in &got {
        assert!(*count >= last, "{text}: count {count} after {last}");
        last = *count;
        if let Some(n) = number.get(text).filter(|n| **n > gap) {
            assert_eq!(n, count, "{text}");
        }
    }
}

#[test]
fn a_second_claim_of_a_socket_takes_the_first_ones_place() {
    let Some(cluster) = Cluster::start(SUITE, 2, &[]) else {
        return;
    };
    cluster.wait_peers();
    let (mut alice, code, sid, pid, offset) = cluster.away_member(1);
    for text in ["m1", "m2"] {
        assert_success(&alice.say(&code, text));
        alice.next_event("newMessage");
    }
    // Two reconnects to node 2 with the socket, one right after the other (the first still
    // claiming it): the second gets it, with every missed event once.
    let addr = cluster.addr(2);
    let claim = || {
        let offset = offset.clone();
        let pid = pid.clone();
        std::thread::spawn(move || Recovering::connect(addr, Some((&pid, offset.as_deref()))))
    };
    let first = claim();
    let second = claim();
    let (first, second) = (first.join().unwrap(), second.join().unwrap());
    let got: Vec<(bool, Vec<&str>)> = [&first, &second]
        .iter()
        .map(|(socket, replayed)| (socket.sid == sid, texts(replayed)))
        .collect();
    eprintln!("the two reconnects got (same socket, replayed): {got:?}");
    // Each got either the socket back, with m1 and m2, or a fresh one; at least one got it
    // back, and if both did (the second came once the first had it), the first connection
    // is closed: one live socket.
    assert!(
        got.iter()
            .all(|g| *g == (true, vec!["m1", "m2"]) || *g == (false, vec![]))
            && got.iter().any(|(same, _)| *same),
        "{got:?}"
    );
    let mut live: Vec<Recovering> = [first, second]
        .into_iter()
        .map(|(socket, _)| socket)
        .filter(|socket| socket.sid == sid)
        .filter_map(|mut socket| (!closed_by_server(&mut socket.ws)).then_some(socket))
        .collect();
    assert_eq!(live.len(), 1, "one live socket with the id");
    // Alice hears he is back (and, if the second took the socket over from the first, that
    // he left that connection and came back again, as on one node).
    let heard: Vec<String> = alice
        .events_until_quiet(QUIET)
        .into_iter()
        .map(|(event, arg)| {
            assert_eq!(arg, json!({ "userId": sid }));
            event
        })
        .collect();
    assert!(
        heard == ["userJoined"] || heard == ["userJoined", "userLeft", "userJoined"],
        "{heard:?}"
    );
    let mut bob = live.pop().expect("the live socket");
    assert_success(&bob.call("sendMessage", json!({"code": code, "text": "back"})));
    assert_message(&alice.next_event("newMessage"), &sid, "back");
    assert_quiet(&mut alice, "alice");
}

#[test]
fn restores_across_nodes_share_the_replay_bound() {
    let Some(cluster) = Cluster::start(SUITE, 2, &[]) else {
        return;
    };
    cluster.wait_peers();
    let (mut alice, code, _, pid, offset) = cluster.away_member(2);
    // About 900 KB that Bob misses.
    let text = "x".repeat(1900);
    for _ in 0..450 {
        assert_success(&alice.say(&code, &text));
        alice.next_event("newMessage");
    }
    // He comes back with the same old offset again and again, to one node then the other:
    // each time all of it again, until the bound (4 MiB a minute) says no.
    let mut replayed_bytes = 0;
    let mut hops = 0;
    loop {
        hops += 1;
        assert!(hops <= 10, "still recovering after {hops} hops");
        let node = 1 + hops % 2;
        let (socket, replayed) =
            Recovering::connect(cluster.addr(node), Some((&pid, offset.as_deref())));
        if replayed.is_empty() {
            break;
        }
        replayed_bytes += replayed.iter().map(|e| e.to_string().len()).sum::<usize>();
        drop(socket);
    }
    assert!(
        replayed_bytes <= 5 << 20,
        "{replayed_bytes} bytes sent again in {hops} hops"
    );
    let too_often: u64 = (1..=2)
        .map(|n| cluster.metric(n, "pairchat_recoveries_total{result=\"too_often\"}"))
        .sum();
    assert_eq!(too_often, 1);
}

#[test]
fn a_claim_whose_connection_drops_keeps_the_socket_for_the_next_one() {
    let Some(cluster) = Cluster::start(SUITE, 2, &["--recovery-window", "2s"]) else {
        return;
    };
    cluster.wait_peers();
    let (mut alice, code, sid, pid, offset) = cluster.away_member(1);
    assert_success(&alice.say(&code, "m1"));
    alice.next_event("newMessage");

    // A reconnect to node 2 that drops at once, its CONNECT sent: node 2 claims the socket
    // all the same, and keeps it (away) for the next reconnect, which gets it whole.
    {
        use tungstenite::client::IntoClientRequest;
        let addr = cluster.addr(2);
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (mut ws, _) =
            tungstenite::client(url.into_client_request().unwrap(), common::chat::tcp(addr))
                .expect("websocket handshake");
        common::chat::next_text(&mut ws);
        let claim = json!({"pid": pid, "offset": offset});
        common::chat::send_text(&mut ws, &format!("40{claim}"));
    }
    std::thread::sleep(ms(200));
    let (mut bob, replayed) = Recovering::connect(cluster.addr(2), Some((&pid, offset.as_deref())));
    assert_eq!(bob.sid, sid, "recovered");
    assert_eq!(texts(&replayed), ["m1"]);
    assert_eq!(alice.next_event("userJoined"), json!({ "userId": sid }));
    assert_success(&bob.call("sendMessage", json!({"code": code, "text": "b1"})));
    assert_message(&alice.next_event("newMessage"), &sid, "b1");

    // He leaves for good: nothing names his socket's node in Redis any more.
    let (_, _) = bob.drop_transport();
    assert_eq!(alice.next_event("userLeft"), json!({ "userId": sid }));
    let key = format!("pairchat:pid:{pid}");
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let keys = cluster.redis(&["KEYS", "pairchat:pid:*"]).strings();
        if !keys.contains(&key) {
            // Alice's record is all that is left: she is still in the room.
            assert_eq!(keys.len(), 1, "{keys:?}");
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {keys:?}");
        std::thread::sleep(ms(100));
    }
}

#[test]
fn nodes_log_in_as_an_acl_user_and_keep_to_their_database() {
    // The default user has a password of its own; the nodes log in as `chat`, who may touch
    // only pairchat's keys and channels, and use database 3.
    let acl = [
        "chat",
        "on",
        ">s3cret",
        "~pairchat:*",
        "&pairchat:*",
        "+@all",
    ];
    let args = [&["--requirepass", "other", "--user"][..], &acl].concat();
    let Some(redis) = Redis::start_with(SUITE, &args) else {
        return;
    };
    let url = format!("redis://chat:s3cret@127.0.0.1:{}/3", redis.port());
    let start = |url: &str| {
        let mut args = vec!["--redis", url];
        args.extend_from_slice(&FLAGS);
        Proc::start(&args)
    };
    let nodes = [start(&url), start(&url)];
    for node in &nodes {
        wait_redis_state(&node.addr, "up", Duration::from_secs(10))
            .unwrap_or_else(|s| panic!("link {s}: {}", node.log_so_far()));
    }
    let addr = |n: usize| nodes[n].addr.parse::<SocketAddr>().expect("an address");
    let mut alice = Client::connect(addr(0), None);
    let code = alice.create_room();
    let mut bob = Client::connect(addr(1), None);
    assert_eq!(bob.join(&code), json!({"success": true, "messages": []}));
    alice.next_event("userJoined");
    exchange(&mut alice, &mut bob, &code, "over an ACL user's link");

    // The room is in database 3, and nothing of pairchat's in database 0.
    let keys = |db: &str| {
        let replies = redis_cli_all(
            &redis.url(),
            &[
                &["AUTH", "chat", "s3cret"],
                &["SELECT", db],
                &["KEYS", "pairchat:*"],
            ],
        )
        .expect("redis");
        assert_eq!(replies[0], Resp::Simple("OK".into()));
        replies[2].strings()
    };
    assert!(
        keys("3").contains(&format!("pairchat:room:{code}")),
        "{:?}",
        keys("3")
    );
    assert_eq!(keys("0"), Vec::<String>::new());

    // A node with a wrong password: Redis is down for it, and its log says why.
    let wrong = format!("redis://chat:nope@127.0.0.1:{}/3", redis.port());
    let mut stranger = start(&wrong);
    let started = Instant::now();
    while !stranger.log_so_far().contains("redis link down") {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{}",
            stranger.log_so_far()
        );
        std::thread::sleep(ms(50));
    }
    assert_eq!(common::redis::health(&stranger.addr)["redis"], "down");
    let log = stranger.stop_and_log();
    assert!(log.contains("WRONGPASS"), "{log}");
}

#[test]
fn a_sockets_pipelined_requests_keep_their_order() {
    let Some(cluster) = Cluster::start(SUITE, 2, &[]) else {
        return;
    };
    let (mut alice, mut bob, code) = cluster.pair(1, 2);
    // Bob writes all of this at once: his messages go to Redis one behind the other; the leave
    // waits for them, the message after it is refused, the join waits, and so on.
    let room = json!({ "code": code });
    let say = |text: &str| json!({ "code": code, "text": text });
    let mut ids = Vec::new();
    for text in ["b1", "b2", "b3", "b4", "b5"] {
        ids.push(bob.queue("sendMessage", say(text)));
    }
    ids.push(bob.queue("leaveRoom", room.clone()));
    ids.push(bob.queue("sendMessage", say("refused")));
    ids.push(bob.queue("joinRoom", room.clone()));
    ids.push(bob.queue("sendMessage", say("b6")));
    bob.flush();
    let answers: Vec<Value> = ids.iter().map(|id| bob.ack(*id)).collect();
    for answer in &answers[..6] {
        assert_success(answer);
    }
    assert_eq!(error_of(&answers[6]), "Not a member of this room");
    let history: Vec<String> = said(&answers[7]["messages"])
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert_eq!(history, ["b1", "b2", "b3", "b4", "b5"]);
    assert_success(&answers[8]);
    // Alice hears it all in that order.
    let heard: Vec<String> = alice
        .events_until_quiet(QUIET)
        .into_iter()
        .map(|(event, arg)| match event.as_str() {
            "newMessage" => arg["text"].as_str().unwrap_or("?").to_string(),
            _ => event,
        })
        .collect();
    assert_eq!(
        heard,
        ["b1", "b2", "b3", "b4", "b5", "userLeft", "userJoined", "b6"]
    );
}
