//! The chat contract (README "Frontend guide", `src/chat/mod.rs`) over real sockets, with a Rust
//! Socket.IO client: createRoom, joinRoom, sendMessage and leaveRoom with their acks and errors,
//! the events each member hears (`newMessage`, `userJoined`, `userLeft`, `roomExpired`), history
//! order and bounds, membership moves, disconnects and expiry.
//!
//! Why: the Node suite (`tests/e2e/chat.test.mjs`) stays the proof that the real
//! `socket.io-client` works, but it is skipped where Node is missing; this file makes a plain
//! `cargo test` cover the same contract. Expectations are exact: every ack is compared whole, and
//! `User::heard` returns everything a client was sent so far (its barrier is a request with no
//! effect, whose answer comes after whatever the server sent before it), so "nobody else hears
//! it" is checked without waiting for silence. Sessions use a 60 s ping interval, so no ping
//! shows up during a test.

mod common;

use std::ops::{Deref, DerefMut, RangeInclusive};

use common::TestServer;
use common::chat::*;
use pairchat::chat::{ChatConfig, errors};
use pairchat::sio::{RecoveryConfig, SioConfig};
use serde_json::{Value, json};

const ROOMS: &str = "pairchat_rooms";

/// What `heard` answers when nothing was sent.
const NOTHING: [Value; 0] = [];

// ---- helpers -------------------------------------------------------------------------------

/// A chat client and its socket id (the `sid` of the Socket.IO CONNECT reply: `socket.id`).
struct User {
    client: Client,
    id: String,
}

impl Deref for User {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl DerefMut for User {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl User {
    /// A WebSocket session connected to `/`.
    fn connect(server: &TestServer) -> User {
        let client = Client::connect(server.addr, None);
        let id = client.id.clone();
        User { client, id }
    }

    /// The next `name` event; events of other names stay queued for `heard`.
    fn take(&mut self, name: &str) -> Value {
        loop {
            if let Some(i) = self.events.iter().position(|(n, _)| n == name) {
                return self.events.remove(i).expect("found just now").1;
            }
            self.read_one();
        }
    }

    /// Every event sent to this client and not taken yet, as `[name, arg]`, in order. A request
    /// with no effect is the barrier: its answer follows anything the server sent earlier.
    fn heard(&mut self) -> Vec<Value> {
        let res = self.call("heard?", json!({}));
        assert_eq!(res, json!({ "error": errors::UNKNOWN_EVENT }));
        self.events
            .drain(..)
            .map(|(name, arg)| json!([name, arg]))
            .collect()
    }

    /// An event with an ack but no argument at all (`42<id>["name"]`).
    fn call_bare(&mut self, event: &str) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        send_text(&mut self.ws, &format!("42{id}{}", json!([event])));
        self.ack(id)
    }

    fn join_number(&mut self, code: &str) -> Value {
        let n: u32 = code.parse().expect("a numeric code");
        self.call("joinRoom", json!({ "code": n }))
    }

    fn leave(&mut self, code: &str) -> Value {
        self.call("leaveRoom", json!({ "code": code }))
    }
}

fn error(message: &str) -> Value {
    json!({ "error": message })
}

fn success() -> Value {
    json!({ "success": true })
}

fn joined(messages: &[Value]) -> Value {
    json!({ "success": true, "messages": messages })
}

fn unix_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.expect("a clock after 1970").as_millis() as u64
}

/// Asserts a message is exactly `{sender, text, timestamp}`, stamped within `sent`.
fn assert_message(m: &Value, sender: &str, text: &str, sent: RangeInclusive<u64>) {
    let timestamp = m["timestamp"]
        .as_u64()
        .unwrap_or_else(|| panic!("no timestamp in {m}"));
    assert!(
        sent.contains(&timestamp),
        "timestamp {timestamp} outside {sent:?}"
    );
    assert_eq!(
        *m,
        json!({ "sender": sender, "text": text, "timestamp": timestamp })
    );
}

/// `from` sends `text` (acked `{"success":true}`); returns the `newMessage` it got back,
/// checked field by field.
fn send(from: &mut User, code: &str, text: &str) -> Value {
    let before = unix_ms();
    assert_eq!(from.say(code, text), success(), "sending {text:?}");
    let message = from.take("newMessage");
    let id = from.id.clone();
    assert_message(&message, &id, text, before..=unix_ms());
    message
}

/// A room created by `a` and joined by `b` (empty history); `a` has taken its `userJoined`.
fn pair(server: &TestServer) -> (User, User, String) {
    let mut a = User::connect(server);
    let code = a.create_room();
    let mut b = User::connect(server);
    assert_eq!(b.join(&code), joined(&[]));
    assert_eq!(a.take("userJoined"), json!({ "userId": b.id }));
    (a, b, code)
}

/// A six-digit code that was a live room and is no more.
fn dead_code(server: &TestServer) -> String {
    let mut u = User::connect(server);
    let code = u.create_room();
    assert_eq!(u.leave(&code), success());
    code
}

fn rooms(server: &TestServer) -> u64 {
    metric(&scrape(server), ROOMS)
}

// ---- createRoom and joinRoom ---------------------------------------------------------------

#[test]
fn create_room_answers_a_six_digit_code_and_the_creator_is_a_member() {
    let server = chat_server(config(), chat_config());
    let mut a = User::connect(&server);
    let mut b = User::connect(&server);
    let with_payload = a.call("createRoom", json!({}));
    let without = b.call_bare("createRoom");
    let codes: Vec<String> = [&with_payload, &without]
        .iter()
        .map(|res| res["code"].as_str().expect("a code").to_string())
        .collect();
    for (res, code) in [&with_payload, &without].into_iter().zip(&codes) {
        assert_eq!(*res, json!({ "code": code }));
        assert!(code.len() == 6 && code.bytes().all(|c| c.is_ascii_digit()));
        let n: u32 = code.parse().unwrap();
        assert!((100_000..=999_999).contains(&n), "{code}");
    }
    assert_ne!(codes[0], codes[1]);
    assert_eq!(rooms(&server), 2);

    // The creator is a member: it can send, and hears its own message.
    let m = send(&mut a, &codes[0], "first");
    assert_eq!(a.heard(), NOTHING);
    assert_eq!(b.heard(), NOTHING);
    let mut c = User::connect(&server);
    assert_eq!(c.join(&codes[0]), joined(&[m]));
}

#[test]
fn join_room_answers_the_history_oldest_first_with_every_field() {
    let server = chat_server(config(), chat_config());
    let mut a = User::connect(&server);
    let code = a.create_room();
    let sent: Vec<Value> = ["one", "two", "three"]
        .into_iter()
        .map(|text| send(&mut a, &code, text))
        .collect();
    let mut b = User::connect(&server);
    // A numeric code works as well as the string.
    assert_eq!(b.join_number(&code), joined(&sent));
    assert_eq!(a.heard(), [json!(["userJoined", { "userId": b.id }])]);
    assert_eq!(b.heard(), NOTHING);

    // Messages of both members interleave in sending order.
    let mut history = sent;
    for (from_a, text) in [(false, "four"), (true, "five"), (false, "six")] {
        let (from, to) = if from_a {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        let m = send(from, &code, text);
        assert_eq!(to.take("newMessage"), m);
        history.push(m);
    }
    let senders: Vec<(&str, &str)> = history
        .iter()
        .map(|m| (m["sender"].as_str().unwrap(), m["text"].as_str().unwrap()))
        .collect();
    let (ida, idb) = (a.id.as_str(), b.id.as_str());
    assert_eq!(
        senders,
        [
            (ida, "one"),
            (ida, "two"),
            (ida, "three"),
            (idb, "four"),
            (ida, "five"),
            (idb, "six")
        ]
    );
    let mut c = User::connect(&server);
    assert_eq!(b.leave(&code), success());
    assert_eq!(c.join(&code), joined(&history));
}

#[test]
fn the_partner_hears_user_joined_with_the_joiners_id() {
    let server = chat_server(config(), chat_config());
    let mut a = User::connect(&server);
    let code = a.create_room();
    let mut b = User::connect(&server);
    assert_eq!(b.join(&code), joined(&[]));
    assert_ne!(a.id, b.id);
    assert_eq!(a.heard(), [json!(["userJoined", { "userId": b.id }])]);
    // The joiner hears nothing of its own join.
    assert_eq!(b.heard(), NOTHING);
}

#[test]
fn a_third_socket_gets_room_full_and_the_members_hear_nothing() {
    let server = chat_server(config(), chat_config());
    let (mut a, mut b, code) = pair(&server);
    let mut c = User::connect(&server);
    assert_eq!(c.join(&code), error(errors::ROOM_FULL));
    assert_eq!(a.heard(), NOTHING);
    assert_eq!(b.heard(), NOTHING);
    // The refused socket is not a member: it can neither send nor read.
    assert_eq!(c.say(&code, "let me in"), error(errors::NOT_MEMBER));
    let m = send(&mut a, &code, "members only");
    assert_eq!(b.heard(), [json!(["newMessage", m])]);
    assert_eq!(c.heard(), NOTHING);
    assert_eq!(a.heard(), NOTHING);
}

#[test]
fn a_dead_code_or_one_with_a_leading_zero_is_room_not_found() {
    let server = chat_server(config(), chat_config());
    let dead = dead_code(&server);
    let mut u = User::connect(&server);
    assert_eq!(u.join(&dead), error(errors::ROOM_NOT_FOUND));
    assert_eq!(u.join_number(&dead), error(errors::ROOM_NOT_FOUND));
    let never = absent_code(&[&dead]);
    assert_eq!(u.join(&never), error(errors::ROOM_NOT_FOUND));
    for zero in ["012345", "099999", "000000"] {
        assert_eq!(u.join(zero), error(errors::ROOM_NOT_FOUND), "{zero}");
    }
    assert_eq!(u.heard(), NOTHING);
    assert_eq!(rooms(&server), 0);
}

#[test]
fn a_missing_or_malformed_code_is_invalid_room_code() {
    let server = chat_server(config(), chat_config());
    let (mut a, mut b, code) = pair(&server);
    let mut u = User::connect(&server);
    assert_eq!(u.call_bare("joinRoom"), error(errors::INVALID_CODE));
    for payload in [
        json!({}),
        json!({ "code": null }),
        json!({ "code": "" }),
        json!({ "code": "12345" }),
        json!({ "code": "1234567" }),
        json!({ "code": "abcdef" }),
        json!({ "code": "12a456" }),
        json!({ "code": 12345 }),
        json!({ "code": 1_000_000 }),
        json!({ "code": 123_456.5 }),
        json!({ "code": -123_456 }),
        json!({ "code": true }),
        json!({ "code": [code] }),
        json!({ "code": { "code": code } }),
        json!({ "room": code }),
        json!(code),
    ] {
        let res = u.call("joinRoom", payload.clone());
        assert_eq!(res, error(errors::INVALID_CODE), "joinRoom {payload}");
    }
    // The other events that name a room read the code the same way.
    assert_eq!(u.call_bare("sendMessage"), error(errors::INVALID_CODE));
    assert_eq!(u.call_bare("leaveRoom"), error(errors::INVALID_CODE));
    let res = a.call("sendMessage", json!({ "text": "hi" }));
    assert_eq!(res, error(errors::INVALID_CODE));
    let res = a.call("sendMessage", json!({ "code": "12345", "text": "hi" }));
    assert_eq!(res, error(errors::INVALID_CODE));
    assert_eq!(a.call("leaveRoom", json!({})), error(errors::INVALID_CODE));
    for user in [&mut a, &mut b, &mut u] {
        assert_eq!(user.heard(), NOTHING);
    }
    // The members are still in their room.
    let m = send(&mut a, &code, "still here");
    assert_eq!(b.heard(), [json!(["newMessage", m])]);
}

#[test]
fn a_failed_join_does_not_cost_the_current_room() {
    let server = chat_server(config(), chat_config());
    let (mut a, mut b, code) = pair(&server);
    let (mut c, mut d, full) = pair(&server);
    assert_eq!(b.join(&full), error(errors::ROOM_FULL));
    assert_eq!(b.join(&dead_code(&server)), error(errors::ROOM_NOT_FOUND));
    assert_eq!(b.join("012345"), error(errors::ROOM_NOT_FOUND));
    let m = send(&mut b, &code, "still here");
    assert_eq!(a.heard(), [json!(["newMessage", m])]);
    for user in [&mut b, &mut c, &mut d] {
        assert_eq!(user.heard(), NOTHING);
    }
}

#[test]
fn joining_a_room_you_are_in_returns_the_history_and_tells_nobody() {
    let server = chat_server(config(), chat_config());
    let (mut a, mut b, code) = pair(&server);
    let first = send(&mut a, &code, "from a");
    assert_eq!(b.take("newMessage"), first);
    let second = send(&mut b, &code, "from b");
    assert_eq!(a.take("newMessage"), second);
    let history = [first, second];
    assert_eq!(b.join(&code), joined(&history));
    assert_eq!(a.join_number(&code), joined(&history));
    assert_eq!(a.heard(), NOTHING);
    assert_eq!(b.heard(), NOTHING);
    // Still two members, no more.
    let mut c = User::connect(&server);
    assert_eq!(c.join(&code), error(errors::ROOM_FULL));
}

// ---- sendMessage ---------------------------------------------------------------------------

#[test]
fn send_message_reaches_both_members_the_sender_too_with_the_same_values() {
    let server = chat_server(config(), chat_config());
    let (mut a, mut b, code) = pair(&server);
    let m = send(&mut a, &code, "hello");
    assert_eq!(b.heard(), [json!(["newMessage", m])]);
    assert_eq!(a.heard(), NOTHING);

    // A numeric code works here too.
    let n: u32 = code.parse().unwrap();
    let before = unix_ms();
    let res = b.call("sendMessage", json!({ "code": n, "text": "hi there" }));
    assert_eq!(res, success());
    let after = unix_ms();
    let mine = b.take("newMessage");
    assert_message(&mine, &b.id, "hi there", before..=after);
    assert_eq!(a.heard(), [json!(["newMessage", mine])]);
    assert_eq!(b.heard(), NOTHING);
}

#[test]
fn message_text_round_trips_exactly() {
    let server = chat_server(config(), chat_config());
    let (mut a, mut b, code) = pair(&server);
    let texts = [
        "say \"hi\"\\ and 'bye'",
        "line one\nline two\r\n\ttabbed",
        "ünïcödé → ✓ 日本語 😀👍🏽",
        "\u{1}\u{1f} control \u{2028} separators \u{2029}",
        "</script><b>not html</b> & 42",
        "  padded  ",
    ];
    let mut history = Vec::new();
    for text in texts {
        let m = send(&mut a, &code, text);
        assert_eq!(b.take("newMessage"), m);
        history.push(m);
    }
    // Text written with JSON escapes arrives as the characters they stand for.
    let id = a.next_id;
    a.next_id += 1;
    let frame = format!(
        r#"42{id}["sendMessage",{{"code":"{code}","text":"\u00e9t\u00e9 \ud83d\ude00 \/"}}]"#
    );
    send_text(&mut a.ws, &frame);
    assert_eq!(a.ack(id), success());
    let m = a.take("newMessage");
    assert_eq!(m["text"], "été 😀 /");
    assert_eq!(b.take("newMessage"), m);
    history.push(m);
    assert_eq!(a.join(&code), joined(&history));
}

#[test]
fn a_non_member_is_refused_and_nobody_hears_it() {
    let server = chat_server(config(), chat_config());
    let (mut a, mut b, code) = pair(&server);
    let mut outsider = User::connect(&server);
    let res = outsider.say(&code, "psst");
    assert_eq!(res, error(errors::NOT_MEMBER));
    let dead = dead_code(&server);
    assert_eq!(
        outsider.say(&dead, "anyone?"),
        error(errors::ROOM_NOT_FOUND)
    );
    // A member naming a room other than its own is refused too.
    assert_eq!(a.say(&dead, "wrong room"), error(errors::ROOM_NOT_FOUND));
    let mut owner = User::connect(&server);
    let other_live = owner.create_room();
    assert_eq!(a.say(&other_live, "intruder"), error(errors::NOT_MEMBER));
    for user in [&mut a, &mut b, &mut outsider, &mut owner] {
        assert_eq!(user.heard(), NOTHING);
    }
    // The refused messages are in no history either.
    assert_eq!(b.join(&code), joined(&[]));
    assert_eq!(owner.join(&other_live), joined(&[]));
}

#[test]
fn bad_text_is_refused_with_the_documented_errors_and_delivered_to_nobody() {
    let server = chat_server(
        config(),
        ChatConfig {
            max_message_chars: 10,
            ..chat_config()
        },
    );
    let (mut a, mut b, code) = pair(&server);
    for (payload, message) in [
        (json!({ "code": code }), errors::TEXT_REQUIRED),
        (json!({ "code": code, "text": null }), errors::TEXT_REQUIRED),
        (json!({ "code": code, "text": 42 }), errors::TEXT_REQUIRED),
        (
            json!({ "code": code, "text": ["hi"] }),
            errors::TEXT_REQUIRED,
        ),
        (
            json!({ "code": code, "text": { "text": "hi" } }),
            errors::TEXT_REQUIRED,
        ),
        (json!({ "code": code, "text": "" }), errors::TEXT_EMPTY),
        (
            json!({ "code": code, "text": "   \n\t " }),
            errors::TEXT_EMPTY,
        ),
        // Blank for JavaScript's `trim` too (a byte-order mark, a no-break space).
        (
            json!({ "code": code, "text": "\u{feff}\u{a0}" }),
            errors::TEXT_EMPTY,
        ),
        (
            json!({ "code": code, "text": "x".repeat(11) }),
            errors::TEXT_TOO_LONG,
        ),
    ] {
        let res = a.call("sendMessage", payload.clone());
        assert_eq!(res, error(message), "sendMessage {payload}");
    }
    assert_eq!(a.heard(), NOTHING);
    assert_eq!(b.heard(), NOTHING);
    assert_eq!(b.join(&code), joined(&[]));
}

#[test]
fn the_length_limit_counts_characters_not_bytes() {
    const MAX: usize = 5;
    let server = chat_server(
        config(),
        ChatConfig {
            max_message_chars: MAX,
            ..chat_config()
        },
    );
    let (mut a, mut b, code) = pair(&server);
    // Exactly the limit is fine, whatever each character's size in UTF-8 (1, 2, 4 bytes).
    for unit in ["x", "é", "😀"] {
        let text = unit.repeat(MAX);
        let m = send(&mut a, &code, &text);
        assert_eq!(b.take("newMessage"), m);
    }
    // Surrounding blanks count too.
    let m = send(&mut a, &code, " 😀😀 ");
    assert_eq!(b.take("newMessage"), m);
    for unit in ["x", "é", "😀"] {
        let text = unit.repeat(MAX + 1);
        assert_eq!(a.say(&code, &text), error(errors::TEXT_TOO_LONG), "{text}");
    }
    assert_eq!(a.heard(), NOTHING);
    assert_eq!(b.heard(), NOTHING);
}

// ---- other events --------------------------------------------------------------------------

#[test]
fn an_unknown_event_with_an_ack_is_answered_unknown_event() {
    let server = chat_server(config(), chat_config());
    let mut u = User::connect(&server);
    let res = u.call("deleteEverything", json!({}));
    assert_eq!(res, error(errors::UNKNOWN_EVENT));
    assert_eq!(u.call_bare("createroom"), error(errors::UNKNOWN_EVENT));
    // The session is unharmed.
    let code = u.create_room();
    send(&mut u, &code, "still fine");
}

#[test]
fn events_emitted_without_an_ack_still_take_effect() {
    let server = chat_server(config(), chat_config());
    let mut a = User::connect(&server);
    let code = a.create_room();
    let mut b = User::connect(&server);
    b.emit("joinRoom", json!({ "code": code }));
    assert_eq!(a.take("userJoined"), json!({ "userId": b.id }));
    let before = unix_ms();
    b.emit(
        "sendMessage",
        json!({ "code": code, "text": "fire and forget" }),
    );
    let m = a.take("newMessage");
    assert_message(&m, &b.id, "fire and forget", before..=unix_ms());
    assert_eq!(b.take("newMessage"), m);
    b.emit("bogus", json!({ "code": code })); // unknown, no ack asked: ignored
    b.emit("leaveRoom", json!({ "code": code }));
    assert_eq!(a.take("userLeft"), json!({ "userId": b.id }));
    assert_eq!(a.heard(), NOTHING);
    assert_eq!(b.heard(), NOTHING);
    assert!(b.acks.is_empty(), "acks nobody asked for: {:?}", b.acks);
    assert_eq!(b.say(&code, "out"), error(errors::NOT_MEMBER));
}

// ---- leaving -------------------------------------------------------------------------------

#[test]
fn leave_room_tells_the_partner_and_the_leaver_is_out() {
    let server = chat_server(config(), chat_config());
    let (mut a, mut b, code) = pair(&server);
    assert_eq!(b.leave(&code), success());
    assert_eq!(a.heard(), [json!(["userLeft", { "userId": b.id }])]);
    assert_eq!(b.say(&code, "gone"), error(errors::NOT_MEMBER));
    // Leaving a live room you are not in, or naming no room.
    assert_eq!(b.leave(&code), error(errors::NOT_MEMBER));
    assert_eq!(b.call("leaveRoom", json!({})), error(errors::INVALID_CODE));
    assert_eq!(rooms(&server), 1);
    // The last member leaving deletes the room at once.
    let n: u32 = code.parse().unwrap();
    assert_eq!(a.call("leaveRoom", json!({ "code": n })), success());
    assert_eq!(rooms(&server), 0);
    assert_eq!(a.leave(&code), error(errors::ROOM_NOT_FOUND));
    assert_eq!(b.join(&code), error(errors::ROOM_NOT_FOUND));
    assert_eq!(a.heard(), NOTHING);
    assert_eq!(b.heard(), NOTHING);
}

#[test]
fn joining_another_room_leaves_the_first() {
    let server = chat_server(config(), chat_config());
    let (mut a, mut b, first) = pair(&server);
    let mut c = User::connect(&server);
    let second = c.create_room();
    assert_eq!(a.join(&second), joined(&[]));
    assert_eq!(b.heard(), [json!(["userLeft", { "userId": a.id }])]);
    assert_eq!(c.heard(), [json!(["userJoined", { "userId": a.id }])]);
    assert_eq!(a.say(&first, "old room"), error(errors::NOT_MEMBER));
    let m = send(&mut a, &second, "new room");
    assert_eq!(c.heard(), [json!(["newMessage", m])]);
    // The first room lives on with b.
    let m = send(&mut b, &first, "alone");
    assert_eq!(a.heard(), NOTHING);
    assert_eq!(rooms(&server), 2);
    let mut d = User::connect(&server);
    assert_eq!(d.join(&first), joined(&[m]));
}

#[test]
fn create_room_while_in_a_room_leaves_it() {
    let server = chat_server(config(), chat_config());
    let (mut a, mut b, first) = pair(&server);
    let second = b.create_room();
    assert_ne!(second, first);
    assert_eq!(a.heard(), [json!(["userLeft", { "userId": b.id }])]);
    assert_eq!(b.say(&first, "x"), error(errors::NOT_MEMBER));
    send(&mut b, &second, "in the new one");
    assert_eq!(b.heard(), NOTHING);
    assert_eq!(rooms(&server), 2);
    // Alone in its room, a creates another: the first is deleted, not kept empty.
    let third = a.create_room();
    assert_eq!(rooms(&server), 2);
    let mut c = User::connect(&server);
    assert_eq!(c.join(&first), error(errors::ROOM_NOT_FOUND));
    assert_eq!(c.join(&third), joined(&[]));
}

// ---- disconnects ---------------------------------------------------------------------------

#[test]
fn a_disconnect_sends_user_left_to_the_partner_and_the_room_lives_on() {
    let server = chat_server(config(), chat_config());
    let (mut a, b, code) = pair(&server);
    let gone = b.id.clone();
    drop(b);
    assert_eq!(a.take("userLeft"), json!({ "userId": gone }));
    let m = send(&mut a, &code, "alone");
    let mut c = User::connect(&server);
    assert_eq!(c.join(&code), joined(&[m]));
    assert_eq!(a.heard(), [json!(["userJoined", { "userId": c.id }])]);
    assert_eq!(rooms(&server), 1);
}

#[test]
fn the_last_member_disconnecting_deletes_the_room() {
    let sio = SioConfig {
        recovery: RecoveryConfig::off(),
        ..SioConfig::default()
    };
    let server = chat_server_with(config(), chat_config(), sio);
    let (a, mut b, code) = pair(&server);
    let gone = a.id.clone();
    drop(a);
    assert_eq!(b.take("userLeft"), json!({ "userId": gone }));
    assert_eq!(rooms(&server), 1);
    drop(b);
    // Nothing but the disconnect happens until the gauge drops.
    wait_metric(&server, ROOMS, |n| n == 0);
    let mut c = User::connect(&server);
    assert_eq!(c.join(&code), error(errors::ROOM_NOT_FOUND));
}

#[test]
fn with_recovery_the_room_waits_for_dropped_members_until_their_window_closes() {
    let sio = SioConfig {
        recovery: RecoveryConfig {
            window: ms(1500),
            ..RecoveryConfig::default()
        },
        ..SioConfig::default()
    };
    let server = chat_server_with(config(), chat_config(), sio);
    let (a, mut b, code) = pair(&server);
    let gone = a.id.clone();
    drop(a);
    assert_eq!(
        b.take("userLeft"),
        json!({ "userId": gone }),
        "told at once"
    );
    drop(b);
    wait_metric(&server, "pairchat_sio_away_sockets", |n| n == 2);
    // Both dropped: the room is there for them (a new socket can join the free seat).
    let mut c = User::connect(&server);
    assert_eq!(c.join(&code)["success"], true);
    drop(c);
    // Once every window has closed, the room is gone.
    wait_metric(&server, "pairchat_sio_away_sockets", |n| n == 0);
    wait_metric(&server, ROOMS, |n| n == 0);
    assert_eq!(metric(&scrape(&server), "pairchat_sio_sockets"), 0);
    let mut d = User::connect(&server);
    assert_eq!(d.join(&code), error(errors::ROOM_NOT_FOUND));
}

#[test]
fn rejoin_after_a_refresh_gets_the_whole_history() {
    let server = chat_server(config(), chat_config());
    let (mut a, mut b, code) = pair(&server);
    let first = send(&mut a, &code, "before refresh 1");
    assert_eq!(b.take("newMessage"), first);
    let second = send(&mut b, &code, "before refresh 2");
    assert_eq!(a.take("newMessage"), second);
    // The page reloads: its connection drops, a new socket comes with the code it remembered.
    let old = b.id.clone();
    drop(b);
    assert_eq!(a.take("userLeft"), json!({ "userId": old }));
    let mut b2 = User::connect(&server);
    assert_ne!(b2.id, old);
    assert_eq!(b2.join(&code), joined(&[first, second]));
    assert_eq!(a.heard(), [json!(["userJoined", { "userId": b2.id }])]);
    let m = send(&mut b2, &code, "after refresh");
    assert_eq!(a.heard(), [json!(["newMessage", m])]);
    assert_eq!(b2.heard(), NOTHING);
}

// ---- expiry and history bounds -------------------------------------------------------------

#[test]
fn room_expired_reaches_both_members_and_the_code_dies() {
    let server = chat_server(
        config(),
        ChatConfig {
            room_ttl: ms(500),
            ..chat_config()
        },
    );
    let (mut a, mut b, code) = pair(&server);
    let m = send(&mut a, &code, "soon gone");
    assert_eq!(b.take("newMessage"), m);
    let mut c = User::connect(&server);
    assert_eq!(a.take("roomExpired"), json!({}));
    assert_eq!(b.take("roomExpired"), json!({}));
    for user in [&mut a, &mut b, &mut c] {
        assert_eq!(user.heard(), NOTHING);
    }
    let m = scrape(&server);
    assert_eq!(metric(&m, "pairchat_rooms_expired_total"), 1);
    assert_eq!(metric(&m, ROOMS), 0);
    for user in [&mut a, &mut b, &mut c] {
        assert_eq!(user.join(&code), error(errors::ROOM_NOT_FOUND));
    }
    assert_eq!(a.say(&code, "too late"), error(errors::ROOM_NOT_FOUND));
    assert_eq!(b.leave(&code), error(errors::ROOM_NOT_FOUND));
    // The members are in no room any more: each is free to be in a new one.
    let fresh = b.create_room();
    assert_eq!(a.join(&fresh), joined(&[]));
    assert_eq!(b.heard(), [json!(["userJoined", { "userId": a.id }])]);
}

#[test]
fn max_history_zero_keeps_no_history() {
    let server = chat_server(
        config(),
        ChatConfig {
            max_history: 0,
            ..chat_config()
        },
    );
    let mut a = User::connect(&server);
    let code = a.create_room();
    send(&mut a, &code, "one");
    send(&mut a, &code, "two");
    let mut b = User::connect(&server);
    assert_eq!(b.join(&code), joined(&[]));
    // Messages are still delivered, just not kept.
    let m = send(&mut b, &code, "three");
    assert_eq!(
        a.heard(),
        [
            json!(["userJoined", { "userId": b.id }]),
            json!(["newMessage", m])
        ]
    );
    assert_eq!(a.join(&code), joined(&[]));
}

#[test]
fn history_past_max_history_drops_the_oldest() {
    let server = chat_server(
        config(),
        ChatConfig {
            max_history: 3,
            ..chat_config()
        },
    );
    let mut a = User::connect(&server);
    let code = a.create_room();
    let mut sent: Vec<Value> = ["1", "2", "3", "4", "5"]
        .into_iter()
        .map(|text| send(&mut a, &code, text))
        .collect();
    let mut b = User::connect(&server);
    assert_eq!(b.join(&code), joined(&sent[2..]));
    let m = send(&mut b, &code, "6");
    assert_eq!(a.take("newMessage"), m);
    sent.push(m);
    assert_eq!(a.join(&code), joined(&sent[3..]));
}

/// The room is checked before the text: a non-member is told so whatever it sent, and a
/// refused message costs no rate-limit token.
#[test]
fn refusals_for_the_room_come_first_and_cost_no_token() {
    let server = chat_server(
        config(),
        ChatConfig {
            // Bursts of twice the rate: two messages at once.
            message_rate: Some(pairchat::chat::limits::Rate {
                count: 1,
                per: std::time::Duration::from_secs(60),
            }),
            ..chat_config()
        },
    );
    let (mut a, mut b, code) = pair(&server);
    let mut outsider = User::connect(&server);
    assert_eq!(outsider.say(&code, " "), error(errors::NOT_MEMBER));
    let dead = dead_code(&server);
    for _ in 0..5 {
        assert_eq!(a.say(&dead, "lost"), error(errors::ROOM_NOT_FOUND));
    }
    // The burst is whole: two messages go, the third is limited.
    send(&mut a, &code, "one");
    send(&mut a, &code, "two");
    assert_eq!(a.say(&code, "three"), error(errors::RATE_LIMITED));
    assert_eq!(b.heard().len(), 2);
}

/// No refused `sendMessage` spends a rate-limit token, whatever refused it: at 1/s (bursts of
/// two), a member whose room expired, naming a room it is not in, a bad code and every bad
/// text, is then allowed its whole burst of two.
#[test]
fn no_refused_message_spends_a_token() {
    let server = chat_server(
        config(),
        ChatConfig {
            room_ttl: ms(1000),
            message_rate: Some(pairchat::chat::limits::Rate {
                count: 1,
                per: std::time::Duration::from_secs(1),
            }),
            ..chat_config()
        },
    );
    let (mut a, mut b, expired) = pair(&server);
    assert_eq!(a.take("roomExpired"), json!({}));
    assert_eq!(b.take("roomExpired"), json!({}));
    let code = a.create_room();
    assert_eq!(b.join(&code), joined(&[]));
    let (_c, _d, other) = pair(&server);

    let text = |t: Value| json!({ "code": code, "text": t });
    let refusals = [
        (
            json!({ "code": expired, "text": "late" }),
            errors::ROOM_NOT_FOUND,
        ),
        (
            json!({ "code": other, "text": "wrong room" }),
            errors::NOT_MEMBER,
        ),
        (
            json!({ "code": "12345", "text": "bad code" }),
            errors::INVALID_CODE,
        ),
        (json!({ "text": "no code" }), errors::INVALID_CODE),
        (text(json!(" \u{feff}\n")), errors::TEXT_EMPTY),
        (text(json!(7)), errors::TEXT_REQUIRED),
        (json!({ "code": code }), errors::TEXT_REQUIRED),
        (text(json!("x".repeat(2001))), errors::TEXT_TOO_LONG),
    ];
    for _ in 0..2 {
        for (payload, refused) in &refusals {
            assert_eq!(
                a.call("sendMessage", payload.clone()),
                error(refused),
                "{payload}"
            );
        }
    }
    let sent = [send(&mut a, &code, "one"), send(&mut a, &code, "two")];
    assert_eq!(a.say(&code, "three"), error(errors::RATE_LIMITED));
    assert_eq!(b.heard(), sent.map(|m| json!(["newMessage", m])));
}

/// At `--max-rooms`, a member of a two-person room asking for a new room is refused and keeps
/// the room it has (it used to leave it first: its partner heard `userLeft`).
#[test]
fn a_refused_create_room_costs_nothing() {
    let server = chat_server(
        config(),
        ChatConfig {
            max_rooms: 1,
            ..chat_config()
        },
    );
    let (mut a, mut b, code) = pair(&server);
    assert_eq!(a.call("createRoom", json!({})), error(errors::SERVER_BUSY));
    assert_eq!(b.heard(), NOTHING);
    send(&mut a, &code, "still here");
    // Alone in its room, a member may trade it for a new one: leaving frees the slot.
    b.leave(&code);
    let fresh = a.create_room();
    assert_ne!(fresh, code);
}
