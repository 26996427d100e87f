//! The chat as the loop drives it: `SocketIo<Chat>` handed engine events, its timers on a
//! wheel stepped by hand (so the chat's own wiring of expiry timers is what runs); and the
//! room table on its own.

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;

use super::rooms::*;
use super::{Chat, ChatConfig, ChatTimer};
use crate::engine::CloseReason;
use crate::engine::{
    Command, Event, Handler, Io, Outgoing, SessionId, Sid, SocketRegistry, SocketToken, Timers,
};
use crate::sio::{RecoveryConfig, SioConfig, SioTimer, SocketIo};
use crate::timer::{Millis, TimerId, TimerWheel};

/// The handler's timers on a wheel of their own.
struct Wheel(TimerWheel<SioTimer<ChatTimer>>);

impl Timers<SioTimer<ChatTimer>> for Wheel {
    fn set(&mut self, at: Millis, value: SioTimer<ChatTimer>) -> TimerId {
        self.0.insert(at, value)
    }

    fn cancel(&mut self, id: TimerId) {
        self.0.cancel(id);
    }
}

/// No sockets of the handler's own here.
struct NoSockets;

impl SocketRegistry for NoSockets {
    fn register(
        &mut self,
        _: &mut dyn mio::event::Source,
        _: mio::Interest,
    ) -> std::io::Result<SocketToken> {
        Err(std::io::ErrorKind::Unsupported.into())
    }

    fn deregister(
        &mut self,
        _: &mut dyn mio::event::Source,
        _: SocketToken,
    ) -> std::io::Result<()> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

/// `SocketIo<Chat>` with the loop's part played by hand: sessions, time and the wheel.
struct Driver {
    sio: SocketIo<Chat>,
    wheel: Wheel,
    rng: StdRng,
    now: Millis,
    commands: Vec<Command>,
    /// Every Socket.IO packet sent, by session, without the Engine.IO `4`.
    sent: Vec<(SessionId, String)>,
    /// Sessions the handler closed.
    closed: Vec<(SessionId, CloseReason)>,
    ttl: Millis,
    /// What the loop tells the handler of its output (`Io::output_full`).
    output_full: bool,
}

impl Driver {
    /// With recovery as pairchat runs it (on, 2 minutes).
    fn new() -> Self {
        Self::with(RecoveryConfig::default())
    }

    fn without_recovery() -> Self {
        Self::with(RecoveryConfig::off())
    }

    fn with(recovery: RecoveryConfig) -> Self {
        Self::with_chat(ChatConfig::default(), recovery)
    }

    fn with_chat(config: ChatConfig, recovery: RecoveryConfig) -> Self {
        let ttl = crate::timer::ms(config.room_ttl);
        let sio = SioConfig {
            recovery,
            ..SioConfig::default()
        };
        Driver {
            sio: SocketIo::new(Chat::new(config), sio, 1_000_000),
            wheel: Wheel(TimerWheel::new(0)),
            rng: StdRng::seed_from_u64(7),
            now: 0,
            commands: Vec::new(),
            sent: Vec::new(),
            closed: Vec::new(),
            ttl,
            output_full: false,
        }
    }

    fn handle(&mut self, event: Event<'_, SioTimer<ChatTimer>>) {
        let mut io = Io {
            now: self.now,
            unix_ms: 1_700_000_000_000 + self.now,
            output_full: self.output_full,
            commands: &mut self.commands,
            timers: &mut self.wheel,
            sockets: &mut NoSockets,
            rng: &mut self.rng,
        };
        self.sio.handle(event, &mut io);
        for c in self.commands.drain(..) {
            match c {
                Command::Send(id, Outgoing::Text(t)) => {
                    let text = t.as_str().strip_prefix('4').expect("a message").to_string();
                    self.sent.push((id, text));
                }
                Command::Close(id, reason) => self.closed.push((id, reason)),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// A session connected to `/`.
    fn connect(&mut self, n: u32) -> SessionId {
        let session = self.open(n);
        self.handle(Event::Message { session, text: "0" });
        self.take(session);
        session
    }

    /// A new Engine.IO session (no Socket.IO CONNECT yet).
    fn open(&mut self, n: u32) -> SessionId {
        let session = SessionId {
            idx: n,
            generation: 1,
        };
        let sid = Sid::random(&mut self.rng);
        self.handle(Event::Open {
            session,
            sid,
            transport: crate::engine::TransportKind::WebSocket,
            protocol: crate::engine::Protocol::V4,
            client: None,
        });
        session
    }

    /// The CONNECT reply `{sid, pid}` most recently sent to `session` (and forgets it).
    fn handshake(&mut self, session: SessionId) -> Value {
        let at = self
            .sent
            .iter()
            .rposition(|(s, t)| *s == session && t.starts_with("0{"))
            .expect("a CONNECT reply");
        let (_, reply) = self.sent.remove(at);
        serde_json::from_str(&reply[1..]).expect("CONNECT JSON")
    }

    /// Everything sent to `session` so far, as Socket.IO packets (and forgets it).
    fn take(&mut self, session: SessionId) -> Vec<String> {
        let mut out = Vec::new();
        self.sent.retain(|(s, t)| {
            if *s != session {
                return true;
            }
            out.push(t.clone());
            false
        });
        out
    }

    fn drop_transport(&mut self, session: SessionId) {
        self.handle(Event::Close {
            session,
            reason: CloseReason::TransportClose,
        });
    }

    /// Emits `event` with an ack and returns the ack's argument.
    fn call(&mut self, session: SessionId, event: &str, arg: &str) -> Value {
        let text = format!("29[\"{event}\",{arg}]");
        self.handle(Event::Message {
            session,
            text: &text,
        });
        let at = self
            .sent
            .iter()
            .position(|(s, t)| *s == session && t.starts_with("39["))
            .expect("an ack");
        let (_, ack) = self.sent.remove(at);
        serde_json::from_str::<Value>(&ack[2..]).expect("ack JSON")[0].clone()
    }

    /// The names of the events sent to `session` so far (and forgets them).
    fn events(&mut self, session: SessionId) -> Vec<String> {
        let mut names = Vec::new();
        self.sent.retain(|(s, t)| {
            if *s != session {
                return true;
            }
            let v: Value = serde_json::from_str(&t[1..]).expect("event JSON");
            names.push(v[0].as_str().expect("a name").to_string());
            false
        });
        names
    }

    fn step_to(&mut self, now: Millis) {
        self.now = now;
        let mut due = Vec::new();
        self.wheel.0.poll_to(now, &mut due);
        for id in due {
            if let Some(t) = self.wheel.0.fire(id) {
                self.handle(Event::Timer(t));
            }
        }
    }

    fn rooms(&self) -> &Rooms {
        self.sio.app().rooms()
    }
}

#[test]
fn rooms_expire_at_their_own_deadline() {
    let mut d = Driver::new();
    let (a, b, c) = (d.connect(1), d.connect(2), d.connect(3));
    let first = d.call(a, "createRoom", "{}")["code"].clone();
    assert_eq!(
        d.call(b, "joinRoom", &format!("{{\"code\":{first}}}"))["success"],
        true
    );
    d.step_to(90_000);
    d.call(c, "createRoom", "{}");
    assert_eq!(d.events(a), ["userJoined"]);

    d.step_to(d.ttl - 1);
    assert!(d.sent.is_empty(), "nothing expires before its deadline");
    assert_eq!(d.rooms().len(), 2);

    d.step_to(d.ttl);
    assert_eq!(d.events(a), ["roomExpired"]);
    assert_eq!(d.events(b), ["roomExpired"]);
    assert!(d.sent.is_empty(), "the other room lives on");
    assert_eq!(d.rooms().len(), 1);
    let code = format!("{{\"code\":{first}}}");
    assert_eq!(d.call(a, "joinRoom", &code)["error"], "Room not found");

    // A long pause: the wheel catches up in one step.
    d.step_to(10 * d.ttl);
    assert_eq!(d.events(c), ["roomExpired"]);
    assert!(d.rooms().is_empty());
    assert_eq!(d.wheel.0.len(), 0);
}

#[test]
fn an_empty_room_is_deleted_at_once_and_its_timer_cancelled() {
    let mut d = Driver::without_recovery();
    let (a, b) = (d.connect(1), d.connect(2));
    let code = d.call(a, "createRoom", "{}")["code"].clone();
    let arg = format!("{{\"code\":{code}}}");
    assert_eq!(d.call(b, "joinRoom", &arg)["success"], true);
    assert_eq!(d.events(a), ["userJoined"]);
    assert_eq!(d.wheel.0.len(), 1, "the room's expiry");
    assert_eq!(d.call(a, "leaveRoom", &arg)["success"], true);
    assert_eq!(d.events(b), ["userLeft"]);
    assert_eq!(d.rooms().len(), 1);
    d.handle(Event::Close {
        session: b,
        reason: crate::engine::CloseReason::TransportClose,
    });
    assert!(
        d.rooms().is_empty(),
        "the last member's disconnect deletes the room"
    );
    assert_eq!(d.wheel.0.len(), 0, "the expiry timer went with the room");
    d.step_to(2 * d.ttl);
    assert!(
        d.sent.is_empty(),
        "no roomExpired for a deleted room: {:?}",
        d.sent
    );
}

#[test]
fn two_members_at_most_and_rejoining_is_a_no_op() {
    let mut d = Driver::new();
    let (a, b, c) = (d.connect(1), d.connect(2), d.connect(3));
    let code = d.call(a, "createRoom", "{}")["code"].clone();
    let arg = format!("{{\"code\":{code}}}");
    assert_eq!(d.call(b, "joinRoom", &arg)["success"], true);
    assert_eq!(d.events(a), ["userJoined"]);
    // Joining again changes nothing and tells nobody.
    assert_eq!(d.call(b, "joinRoom", &arg)["success"], true);
    assert_eq!(d.call(c, "joinRoom", &arg)["error"], "Room full");
    assert!(d.sent.is_empty(), "{:?}", d.sent);
}

#[test]
fn a_stale_expiry_never_hits_a_newer_room_with_the_same_code() {
    let mut rooms = Rooms::new(10, usize::MAX);
    let code = RoomCode::new(123_456).unwrap();
    let old = rooms.create(code);
    rooms.remove(code);
    let new = rooms.create(code);
    assert_ne!(old, new);
    assert!(rooms.expire(code, old).is_none());
    assert!(rooms.get(code).is_some());
    assert!(rooms.expire(code, new).is_some());
}

#[test]
fn history_is_capped_by_bytes_too() {
    let mut rooms = Rooms::new(1000, usize::MAX);
    let code = RoomCode::new(222_222).unwrap();
    rooms.create(code);
    assert_eq!(rooms.history_json(code), "[]");
    let big = |c: char| format!("\"{}\"", c.to_string().repeat(400 * 1024));
    for c in ['a', 'b', 'c'] {
        assert!(rooms.push_message(code, &big(c)));
    }
    let room = rooms.get(code).unwrap();
    assert_eq!(room.history_len(), 2);
    assert_eq!(
        rooms.history_json(code),
        format!("[{},{}]", big('b'), big('c'))
    );
    // One message over the cap is delivered but not kept; what was kept stays.
    let huge = format!("\"{}\"", "d".repeat(MAX_HISTORY_BYTES));
    assert!(rooms.push_message(code, &huge));
    assert_eq!(rooms.get(code).unwrap().history_len(), 2);
}

#[test]
fn history_is_capped_oldest_first() {
    let mut rooms = Rooms::new(3, usize::MAX);
    let code = RoomCode::new(222_222).unwrap();
    rooms.create(code);
    for i in 0..5 {
        assert!(rooms.push_message(code, &format!("{{\"n\":{i}}}")));
    }
    let room = rooms.get(code).unwrap();
    assert_eq!(room.history_len(), 3);
    assert_eq!(rooms.history_json(code), "[{\"n\":2},{\"n\":3},{\"n\":4}]");
    assert!(!rooms.push_message(RoomCode::new(333_333).unwrap(), "{}"));
}

#[test]
fn history_keeps_to_its_budget_dropping_the_oldest_across_rooms() {
    use super::rooms::MESSAGE_OVERHEAD;
    let cost = 10 + MESSAGE_OVERHEAD;
    let mut rooms = Rooms::new(500, 5 * cost);
    let (a, b) = (
        RoomCode::new(111_111).unwrap(),
        RoomCode::new(222_222).unwrap(),
    );
    rooms.create(a);
    rooms.create(b);
    let msg = |room: char, n: u32| format!("\"{room}{n:07}\"");
    for n in 0..3 {
        rooms.push_message(a, &msg('a', n));
        rooms.push_message(b, &msg('b', n));
    }
    // Six kept, five fit: a's first (the oldest of all) went.
    assert_eq!(rooms.history_bytes(), 5 * cost);
    assert_eq!(rooms.trimmed(), 1);
    let json = |rooms: &Rooms, code| rooms.history_json(code);
    assert_eq!(
        json(&rooms, a),
        format!("[{},{}]", msg('a', 1), msg('a', 2))
    );
    // Room b talks on: the oldest messages go wherever they are (b0, a1, b1).
    for n in 3..6 {
        rooms.push_message(b, &msg('b', n));
    }
    assert_eq!(json(&rooms, a), format!("[{}]", msg('a', 2)));
    assert_eq!(rooms.get(b).unwrap().history_len(), 4);
    assert_eq!(rooms.trimmed(), 4);
    // A deleted room's history leaves the total; its stale age entries are skipped.
    rooms.remove(b);
    assert_eq!(rooms.history_bytes(), cost);
    for n in 10..14 {
        rooms.push_message(a, &msg('a', n));
    }
    assert_eq!(rooms.history_bytes(), 5 * cost);
    assert_eq!(rooms.trimmed(), 4, "nothing more to trim");
    rooms.push_message(a, &msg('a', 14));
    assert_eq!(rooms.trimmed(), 5);
    assert!(json(&rooms, a).starts_with(&format!("[{}", msg('a', 10))));
}

#[test]
fn the_age_order_holds_every_kept_message_in_order_and_nothing_else() {
    let mut rooms = Rooms::new(2, usize::MAX);
    let mut rng = rand::rng();
    let mut codes = Vec::new();
    // What the table should keep: every live room's last two messages, in the order sent.
    let mut model: Vec<(RoomCode, String)> = Vec::new();
    for i in 0..400 {
        let code = rooms.fresh_code(&mut rng).unwrap();
        rooms.create(code);
        codes.push(code);
        for n in 0..5 {
            let json = format!("{{\"room\":{i},\"n\":{n}}}");
            rooms.push_message(code, &json);
            model.push((code, json));
            let mine: Vec<usize> = (0..model.len()).filter(|k| model[*k].0 == code).collect();
            if mine.len() > 2 {
                model.remove(mine[0]);
            }
        }
        if i % 2 == 1 {
            let gone = codes.swap_remove(0);
            rooms.remove(gone);
            model.retain(|(c, _)| *c != gone);
        }
    }
    let order: Vec<(RoomCode, String)> = rooms
        .age_order()
        .into_iter()
        .map(|(c, j)| (c, j.to_string()))
        .collect();
    assert_eq!(order, model);
}

#[test]
fn fresh_codes_are_unique_among_live_rooms() {
    let mut rooms = Rooms::new(0, usize::MAX);
    let mut rng = rand::rng();
    for _ in 0..20_000 {
        let code = rooms.fresh_code(&mut rng).unwrap();
        assert!(rooms.get(code).is_none());
        rooms.create(code);
    }
    assert_eq!(rooms.len(), 20_000);
}

// ---- Connection state recovery ---------------------------------------------------------------

/// The offset an event packet carries (its data's last element).
fn offset_of(packet: &str) -> String {
    let v: Value = serde_json::from_str(&packet[1..]).expect("event JSON");
    let args = v.as_array().expect("an array");
    args.last()
        .and_then(Value::as_str)
        .expect("an offset")
        .to_string()
}

/// `a` and `b` in one room; answers the room's code argument and `a`'s `{sid, pid}`.
fn pair(d: &mut Driver, a: SessionId, b: SessionId) -> (String, Value) {
    let hello = d.handshake(a);
    let code = d.call(a, "createRoom", "{}")["code"].clone();
    let arg = format!("{{\"code\":{code}}}");
    assert_eq!(d.call(b, "joinRoom", &arg)["success"], true);
    assert_eq!(d.events(a), ["userJoined"]);
    (arg, hello)
}

/// Connects `n` and keeps the CONNECT reply in `sent`.
fn connect_keep(d: &mut Driver, n: u32) -> SessionId {
    let session = d.open(n);
    d.handle(Event::Message { session, text: "0" });
    session
}

fn say(d: &mut Driver, from: SessionId, arg: &str, text: &str) {
    let code = &arg[8..arg.len() - 1];
    let msg = format!("{{\"code\":{code},\"text\":\"{text}\"}}");
    assert_eq!(d.call(from, "sendMessage", &msg)["success"], true);
}

/// Sends `0{pid, offset}` on a new session `n`; answers it and what it was sent, in order.
fn come_back(
    d: &mut Driver,
    n: u32,
    pid: &Value,
    offset: Option<&str>,
) -> (SessionId, Vec<String>) {
    let session = d.open(n);
    let claim = match offset {
        Some(o) => format!("0{{\"pid\":{pid},\"offset\":\"{o}\"}}"),
        None => format!("0{{\"pid\":{pid}}}"),
    };
    d.handle(Event::Message {
        session,
        text: &claim,
    });
    (session, d.take(session))
}

fn texts_of(packets: &[String]) -> Vec<String> {
    packets
        .iter()
        .filter(|p| p.starts_with("2["))
        .map(|p| {
            let v: Value = serde_json::from_str(&p[1..]).unwrap();
            match v[0].as_str().unwrap() {
                "newMessage" => v[1]["text"].as_str().unwrap().to_string(),
                other => other.to_string(),
            }
        })
        .collect()
}

#[test]
fn every_event_carries_an_offset_and_acks_none() {
    let mut d = Driver::new();
    let (a, b) = (connect_keep(&mut d, 1), d.connect(2));
    let (arg, hello) = pair(&mut d, a, b);
    assert!(hello["pid"].is_string(), "{hello}");
    say(&mut d, a, &arg, "hi");
    let (to_a, to_b) = (d.take(a), d.take(b));
    assert_eq!(to_a.len(), 1);
    let offset = offset_of(&to_a[0]);
    assert_eq!(
        offset_of(&to_b[0]),
        offset,
        "one packet, one offset, both members"
    );
    assert!(offset.parse::<u64>().is_ok());
    // Recovery off: socket.io's wire exactly.
    let mut d = Driver::without_recovery();
    let a = connect_keep(&mut d, 1);
    let hello = d.handshake(a);
    assert!(hello.get("pid").is_none(), "{hello}");
    let code = d.call(a, "createRoom", "{}")["code"].clone();
    let b = d.connect(2);
    d.call(b, "joinRoom", &format!("{{\"code\":{code}}}"));
    let joined: Value = serde_json::from_str(&d.take(a)[0][1..]).unwrap();
    assert_eq!(joined.as_array().unwrap().len(), 2, "no offset: {joined}");
}

#[test]
fn a_dropped_member_comes_back_with_its_id_room_and_missed_events_in_order() {
    let mut d = Driver::new();
    let (a, b) = (connect_keep(&mut d, 1), d.connect(2));
    let (arg, hello) = pair(&mut d, a, b);
    say(&mut d, b, &arg, "seen");
    let last = offset_of(&d.take(a)[0]);
    d.take(b);
    // Lost in flight: sent, never received.
    say(&mut d, b, &arg, "in flight");
    d.drop_transport(a);
    assert_eq!(d.events(b), ["newMessage", "userLeft"]);
    say(&mut d, b, &arg, "while away 1");
    say(&mut d, b, &arg, "while away 2");
    d.take(b);
    assert_eq!(d.rooms().len(), 1, "the room waits for its away member");

    let (a2, packets) = come_back(&mut d, 3, &hello["pid"], Some(&last));
    assert_eq!(
        texts_of(&packets),
        ["in flight", "while away 1", "while away 2"],
        "every missed event once, in order (not its own userLeft): {packets:?}"
    );
    let reply_at = packets.iter().position(|p| p.starts_with("0{")).unwrap();
    assert_eq!(reply_at, 3, "the replay comes before the CONNECT reply");
    let reply: Value = serde_json::from_str(&packets[reply_at][1..]).unwrap();
    assert_eq!(reply, hello, "same sid and pid");
    // The partner is told it joined, with the same id as before.
    let joined = d.take(b);
    assert_eq!(joined.len(), 1);
    let joined: Value = serde_json::from_str(&joined[0][1..]).unwrap();
    assert_eq!(joined[0], "userJoined");
    assert_eq!(joined[1]["userId"], hello["sid"]);
    // Back in the room, as a member.
    say(&mut d, a2, &arg, "back");
    assert_eq!(texts_of(&d.take(b)), ["back"]);
    let mine: Value = serde_json::from_str(&d.take(a2)[0][1..]).unwrap();
    assert_eq!(mine[1]["sender"], hello["sid"]);
}

#[test]
fn without_an_offset_everything_since_it_connected_is_replayed() {
    let mut d = Driver::new();
    let (a, b) = (connect_keep(&mut d, 1), d.connect(2));
    let (arg, hello) = pair(&mut d, a, b);
    say(&mut d, b, &arg, "one");
    d.drop_transport(a);
    let (_, packets) = come_back(&mut d, 3, &hello["pid"], None);
    // The userJoined it saw before pair() took it, then the message: it had no offset yet.
    assert_eq!(texts_of(&packets), ["userJoined", "one"]);
    assert!(packets.last().unwrap().starts_with("0{"));
}

#[test]
fn a_quiet_room_recovers_however_old_its_last_event() {
    let mut d = Driver::new();
    let (a, b) = (connect_keep(&mut d, 1), d.connect(2));
    let (arg, hello) = pair(&mut d, a, b);
    say(&mut d, b, &arg, "long ago");
    let last = offset_of(&d.take(a)[0]);
    // Ten minutes of silence (five windows), the heartbeat going on: every pong forgets what
    // surely reached the client.
    for minute in 1..=10 {
        d.step_to(minute * 60_000);
        d.handle(Event::Pong { session: a });
        d.handle(Event::Pong { session: b });
    }
    assert_eq!(recovery_bytes(&mut d), 0, "nothing left to resend");
    d.drop_transport(a);
    d.step_to(10 * 60_000 + 1000);
    let (_, packets) = come_back(&mut d, 3, &hello["pid"], Some(&last));
    assert_eq!(texts_of(&packets), Vec::<String>::new());
    let reply: Value = serde_json::from_str(&packets.last().unwrap()[1..]).unwrap();
    assert_eq!(reply["sid"], hello["sid"]);
}

fn recovery_bytes(d: &mut Driver) -> u64 {
    let mut out = String::new();
    crate::engine::Handler::metrics(&d.sio, &mut out);
    out.lines()
        .find_map(|l| l.strip_prefix("pairchat_recovery_bytes "))
        .expect("the gauge")
        .parse()
        .unwrap()
}

#[test]
fn pongs_forget_what_reached_the_client_and_the_rest_is_still_recovered() {
    let mut d = Driver::new();
    let (a, b) = (connect_keep(&mut d, 1), d.connect(2));
    let (arg, hello) = pair(&mut d, a, b);
    say(&mut d, b, &arg, "1");
    d.handle(Event::Pong { session: a }); // a's ping goes out after "1"
    say(&mut d, b, &arg, "2");
    let held = recovery_bytes(&mut d);
    d.handle(Event::Pong { session: a }); // "1" has reached a
    assert!(recovery_bytes(&mut d) < held);
    let got = d.take(a);
    assert_eq!(texts_of(&got), ["1", "2"]);
    let at_1 = offset_of(&got[0]);
    d.drop_transport(a);
    say(&mut d, b, &arg, "3");
    let (_, packets) = come_back(&mut d, 3, &hello["pid"], Some(&at_1));
    assert_eq!(texts_of(&packets), ["2", "3"]);
    // A client claiming to have seen less than what reached it is refused: a fresh socket.
    let mut d = Driver::new();
    let (a, b) = (connect_keep(&mut d, 1), d.connect(2));
    let (arg, hello) = pair(&mut d, a, b);
    say(&mut d, b, &arg, "1");
    let at_1 = offset_of(&d.take(a)[0]);
    say(&mut d, b, &arg, "2");
    d.handle(Event::Pong { session: a });
    d.handle(Event::Pong { session: a });
    d.drop_transport(a);
    let (_, packets) = come_back(&mut d, 3, &hello["pid"], Some(&at_1));
    let reply: Value = serde_json::from_str(&packets.last().unwrap()[1..]).unwrap();
    assert_ne!(reply["sid"], hello["sid"]);
}

#[test]
fn recovery_works_again_and_again_and_a_stale_socket_is_closed_first() {
    let mut d = Driver::new();
    let (a, b) = (connect_keep(&mut d, 1), d.connect(2));
    let (arg, hello) = pair(&mut d, a, b);
    let mut session = a;
    for round in 0..3u32 {
        say(&mut d, b, &arg, &format!("r{round}"));
        let last = offset_of(&d.take(session)[0]);
        d.take(b);
        d.drop_transport(session);
        say(&mut d, b, &arg, &format!("away{round}"));
        let (s, packets) = come_back(&mut d, 10 + round, &hello["pid"], Some(&last));
        assert_eq!(texts_of(&packets), [format!("away{round}")]);
        assert_eq!(d.events(b), ["userLeft", "newMessage", "userJoined"]);
        session = s;
    }
    // The server has not seen the drop yet (black hole): the client is back on a new session
    // while the old one still holds the socket. The old one is closed; the socket moves.
    say(&mut d, b, &arg, "x");
    let last = offset_of(&d.take(session)[0]);
    d.take(b);
    let (s, packets) = come_back(&mut d, 20, &hello["pid"], Some(&last));
    assert!(d.closed.contains(&(session, CloseReason::ServerClose)));
    assert_eq!(texts_of(&packets), Vec::<String>::new());
    assert_eq!(d.events(b), ["userLeft", "userJoined"]);
    // The old session's close, when the loop reports it, touches nothing.
    d.drop_transport(session);
    assert!(d.sent.is_empty(), "{:?}", d.sent);
    say(&mut d, s, &arg, "still here");
    assert_eq!(texts_of(&d.take(b)), ["still here"]);
    assert_eq!(d.sio.socket_count(), 2);
}

#[test]
fn a_taken_seat_is_not_given_back_and_the_member_is_told() {
    let mut d = Driver::new();
    let (a, b) = (connect_keep(&mut d, 1), d.connect(2));
    let (arg, hello) = pair(&mut d, a, b);
    d.drop_transport(a);
    // A refreshed page: a new socket, no pid, joins with the code.
    let c = d.connect(3);
    assert_eq!(d.call(c, "joinRoom", &arg)["success"], true);
    assert_eq!(d.events(b), ["userLeft", "userJoined"]);
    let (a2, packets) = come_back(&mut d, 4, &hello["pid"], None);
    let names = texts_of(&packets);
    // Told when its seat was taken (kept for it), not the new member's userJoined.
    assert_eq!(names, ["userJoined", "roomUnavailable"]);
    let told: Value = serde_json::from_str(&packets[1][1..]).unwrap();
    assert_eq!(told[1]["code"].as_str(), Some(&arg[9..15]));
    assert_eq!(told[1]["error"], "Room full");
    assert!(packets[2].starts_with("0{"), "then the CONNECT reply");
    assert!(d.sent.is_empty(), "partners untouched: {:?}", d.sent);
    // Not a member: it cannot write there.
    let msg = format!("{{\"code\":\"{}\",\"text\":\"x\"}}", &arg[9..15]);
    assert_eq!(
        d.call(a2, "sendMessage", &msg)["error"],
        "Not a member of this room"
    );
}

#[test]
fn a_room_that_expired_while_away_is_told_on_return() {
    let mut d = Driver::with(RecoveryConfig {
        window: std::time::Duration::from_secs(30 * 60),
        ..RecoveryConfig::default()
    });
    let (a, b) = (connect_keep(&mut d, 1), d.connect(2));
    let (_, hello) = pair(&mut d, a, b);
    d.drop_transport(a);
    d.step_to(d.ttl);
    assert_eq!(d.events(b), ["userLeft", "roomExpired"]);
    let (_, packets) = come_back(&mut d, 3, &hello["pid"], None);
    assert_eq!(texts_of(&packets), ["userJoined", "roomExpired"]);
    assert!(d.rooms().is_empty());
}

#[test]
fn a_room_whose_members_all_dropped_goes_when_the_window_closes() {
    let mut d = Driver::new();
    let (c, e) = (connect_keep(&mut d, 4), d.connect(5));
    pair(&mut d, c, e);
    d.step_to(1000);
    d.drop_transport(c);
    assert_eq!(d.events(e), ["userLeft"]);
    d.drop_transport(e);
    d.step_to(1000 + 120_000 - 1);
    assert_eq!(d.rooms().len(), 1, "the room waits for its members");
    d.step_to(1000 + 120_000);
    assert!(d.rooms().is_empty(), "gone for good: deleted");
    assert_eq!(d.sio.socket_count(), 0);
    assert_eq!(
        d.wheel.0.len(),
        0,
        "no timer left: not the expiry, not the windows"
    );
    assert!(d.sent.is_empty(), "{:?}", d.sent);
}

#[test]
fn refusals_give_a_fresh_socket() {
    let mut d = Driver::with(RecoveryConfig {
        max_events: 2,
        ..RecoveryConfig::default()
    });
    let (a, b) = (connect_keep(&mut d, 1), d.connect(2));
    let (arg, hello) = pair(&mut d, a, b);
    say(&mut d, b, &arg, "1");
    let last = offset_of(&d.take(a)[0]);
    d.drop_transport(a);
    say(&mut d, b, &arg, "2");
    say(&mut d, b, &arg, "3");
    say(&mut d, b, &arg, "4"); // 2 was dropped: the client, last at 1, would miss it
    let (s, packets) = come_back(&mut d, 3, &hello["pid"], Some(&last));
    let reply: Value = serde_json::from_str(&packets.last().unwrap()[1..]).unwrap();
    assert_ne!(
        reply["sid"], hello["sid"],
        "a fresh socket, never a short replay"
    );
    assert_eq!(texts_of(&packets), Vec::<String>::new());
    assert_eq!(d.rooms().len(), 1, "b is still in it");
    assert_eq!(
        d.sio.socket_count(),
        2,
        "the old socket is gone: b and the fresh one"
    );
    // Unknown pids, offsets that are not ours, a pid on an explicit disconnect: fresh too.
    for claim in [
        "{\"pid\":\"AAAAAAAAAAAAAAAAAAAA\"}",
        "{\"pid\":3}",
        "{\"pid\":\"x\",\"offset\":7}",
    ] {
        let n = d.open(40);
        d.handle(Event::Message {
            session: n,
            text: &format!("0{claim}"),
        });
        let reply = d.handshake(n);
        assert!(
            reply["sid"].is_string() && reply["pid"].is_string(),
            "{claim}"
        );
    }
    let hello = reply;
    d.handle(Event::Message {
        session: s,
        text: "1",
    });
    let (_, packets) = come_back(&mut d, 50, &hello["pid"], None);
    let reply: Value = serde_json::from_str(&packets.last().unwrap()[1..]).unwrap();
    assert_ne!(
        reply["sid"], hello["sid"],
        "an explicit disconnect is not recovered"
    );
}

#[test]
fn past_the_budget_a_dropped_socket_is_not_kept() {
    let mut d = Driver::with(RecoveryConfig {
        max_bytes: crate::sio::recovery::AWAY_COST + 400,
        ..RecoveryConfig::default()
    });
    let (a, b) = (connect_keep(&mut d, 1), d.connect(2));
    pair(&mut d, a, b);
    d.drop_transport(a);
    assert_eq!(d.sio.socket_count(), 2, "one away socket fits");
    d.drop_transport(b);
    assert_eq!(d.sio.socket_count(), 1, "a second does not: gone at once");
    d.step_to(120_000);
    assert_eq!(d.sio.socket_count(), 0);
    assert!(d.rooms().is_empty());
    assert_eq!(d.wheel.0.len(), 0);
}

/// Random chats with random drops, each losing a random tail of what was in flight: the member
/// that comes back (always within its window here) has seen every message of the room exactly
/// once, in order, under the same id, and its partner saw it leave and come back each time.
#[test]
fn recovery_against_a_model_of_the_client() {
    use rand::RngExt as _;
    let mut rng = StdRng::seed_from_u64(1414);
    for _ in 0..300 {
        let mut d = Driver::new();
        let (a, b) = (connect_keep(&mut d, 1), d.connect(2));
        let hello = d.handshake(a);
        let code = d.call(a, "createRoom", "{}")["code"].clone();
        let arg = format!("{{\"code\":{code}}}");
        assert_eq!(d.call(b, "joinRoom", &arg)["success"], true);
        let (mut session, mut next_session) = (a, 10);
        let mut connected = true;
        // What the client has: the texts it saw, its last offset.
        let (mut seen, mut offset): (Vec<String>, Option<String>) = (Vec::new(), None);
        let mut sent = Vec::new();
        let (mut drops, mut n) = (0, 0);
        for _ in 0..rng.random_range(1..60) {
            match rng.random_range(0..10) {
                0..4 => {
                    n += 1;
                    let from = if connected && rng.random_bool(0.5) {
                        session
                    } else {
                        b
                    };
                    say(&mut d, from, &arg, &format!("m{n}"));
                    sent.push(format!("m{n}"));
                }
                4..7 if connected => {
                    // The client reads what reached it; on a drop a random tail never does.
                    let packets = d.take(session);
                    let lost = if rng.random_bool(0.5) {
                        rng.random_range(0..=packets.len())
                    } else {
                        0
                    };
                    for p in &packets[..packets.len() - lost] {
                        if p.starts_with("2[") {
                            offset = Some(offset_of(p));
                            seen.extend(texts_of(std::slice::from_ref(p)));
                        }
                    }
                    if lost == 0 && rng.random_bool(0.5) {
                        // Everything reached it, a ping too: its pong comes back.
                        d.handle(Event::Pong { session });
                        d.handle(Event::Pong { session });
                    }
                    if lost > 0 || rng.random_bool(0.3) {
                        d.drop_transport(session);
                        connected = false;
                        drops += 1;
                    }
                }
                _ if !connected => {
                    d.step_to(d.now + rng.random_range(0..60_000));
                    let (s, packets) =
                        come_back(&mut d, next_session, &hello["pid"], offset.as_deref());
                    next_session += 1;
                    let reply: Value = serde_json::from_str(&packets.last().unwrap()[1..]).unwrap();
                    assert_eq!(reply, hello, "recovered, same ids");
                    for p in &packets[..packets.len() - 1] {
                        offset = Some(offset_of(p));
                        seen.extend(texts_of(std::slice::from_ref(p)));
                    }
                    session = s;
                    connected = true;
                }
                _ => {}
            }
        }
        if !connected {
            let (s, packets) = come_back(&mut d, next_session, &hello["pid"], offset.as_deref());
            for p in &packets[..packets.len() - 1] {
                seen.extend(texts_of(std::slice::from_ref(p)));
            }
            session = s;
        }
        for p in d.take(session) {
            seen.extend(texts_of(std::slice::from_ref(&p)));
        }
        let messages: Vec<&String> = seen.iter().filter(|t| t.starts_with('m')).collect();
        assert_eq!(
            messages,
            sent.iter().collect::<Vec<_>>(),
            "after {drops} drops"
        );
        let b_saw = d.events(b);
        let lefts = b_saw.iter().filter(|e| *e == "userLeft").count();
        let joins = b_saw.iter().filter(|e| *e == "userJoined").count();
        assert_eq!((lefts, joins), (drops, drops), "b saw each drop and return");
    }
}

/// A room never holds more than two members, away ones included: members that join and drop
/// one after another do not pile up in it (each join takes the seat of the one away).
#[test]
fn away_members_do_not_pile_up_in_a_room() {
    let mut d = Driver::new();
    let (a, b) = (connect_keep(&mut d, 1), d.connect(2));
    let (arg, _) = pair(&mut d, a, b);
    d.drop_transport(a);
    for n in 0..50 {
        let c = d.connect(10 + n);
        assert_eq!(d.call(c, "joinRoom", &arg)["success"], true);
        d.drop_transport(c);
    }
    d.take(b);
    let code = RoomCode::parse(&arg[9..15]).unwrap();
    let members = d.sio.app().rooms().get(code).map(|r| r.members);
    assert!(members.is_some());
    // b's message reaches one outbox besides its own: the last one away.
    let before = recovery_bytes(&mut d);
    say(&mut d, b, &arg, "x");
    let per_message = recovery_bytes(&mut d) - before;
    let one = per_message / 2;
    assert_eq!(
        per_message,
        2 * one,
        "two members hold it: {per_message} bytes"
    );
    assert!(one < 200, "{one}");
}

#[test]
fn restores_send_a_socket_at_most_four_megabytes_again_a_minute() {
    let mut d = Driver::new();
    let (a, b) = (connect_keep(&mut d, 1), d.connect(2));
    let (arg, hello) = pair(&mut d, a, b);
    // A busy room: about 200 kB unconfirmed.
    let text = "x".repeat(1900);
    for _ in 0..100 {
        d.step_to(d.now + 100); // within --message-rate
        say(&mut d, b, &arg, &text);
    }
    let mut session = a;
    let mut restored = 0;
    for n in 0..40 {
        d.drop_transport(session);
        // A client in a loop, claiming to have seen nothing (everything is sent again).
        let (s, packets) = come_back(&mut d, 10 + n, &hello["pid"], None);
        let reply: Value = serde_json::from_str(&packets.last().unwrap()[1..]).unwrap();
        session = s;
        if reply["sid"] != hello["sid"] {
            break;
        }
        restored += 1;
    }
    assert!(
        (15..=25).contains(&restored),
        "{restored} restores of ~200 kB"
    );
    // Many small restores (a flaky network) are not limited.
    let mut d = Driver::new();
    let (a, b) = (connect_keep(&mut d, 1), d.connect(2));
    let (arg, hello) = pair(&mut d, a, b);
    let mut session = a;
    for n in 0..100 {
        d.step_to(d.now + 100);
        say(&mut d, b, &arg, "hi");
        d.drop_transport(session);
        let (s, packets) = come_back(&mut d, 10 + n, &hello["pid"], None);
        let reply: Value = serde_json::from_str(&packets.last().unwrap()[1..]).unwrap();
        assert_eq!(reply["sid"], hello["sid"], "restore {n}");
        session = s;
    }
}

#[test]
fn at_the_cap_on_away_sockets_the_oldest_goes() {
    let mut d = Driver::with(RecoveryConfig {
        max_bytes: 2 * crate::sio::recovery::AWAY_COST,
        ..RecoveryConfig::default()
    });
    let sessions: Vec<SessionId> = (1..=3).map(|n| d.connect(n)).collect();
    for s in &sessions {
        d.call(*s, "createRoom", "{}");
    }
    for s in &sessions {
        d.drop_transport(*s);
    }
    assert_eq!(d.sio.socket_count(), 2, "two fit; the first went");
    assert_eq!(d.rooms().len(), 2, "its room with it");
}

#[test]
fn when_the_budget_is_short_the_oldest_away_socket_loses_its_events_first() {
    let mut d = Driver::with(RecoveryConfig {
        max_bytes: 1500,
        ..RecoveryConfig::default()
    });
    let (a, b) = (connect_keep(&mut d, 1), d.connect(2));
    let (arg, hello) = pair(&mut d, a, b);
    d.drop_transport(a);
    for n in 0..6 {
        say(&mut d, b, &arg, &format!("message {n}"));
    }
    // a's events went to make room: it gets a fresh socket, never a short replay.
    let (_, packets) = come_back(&mut d, 3, &hello["pid"], None);
    let reply: Value = serde_json::from_str(&packets.last().unwrap()[1..]).unwrap();
    assert_ne!(reply["sid"], hello["sid"]);
    assert_eq!(texts_of(&packets), Vec::<String>::new());
    assert!(recovery_bytes(&mut d) <= 1500);
}

#[test]
fn at_max_rooms_a_room_whose_members_are_all_away_makes_way() {
    let mut d = Driver::new();
    let chat = ChatConfig {
        max_rooms: 2,
        ..ChatConfig::default()
    };
    d.sio = SocketIo::new(Chat::new(chat), SioConfig::default(), 1_000_000);
    let (a, b, c) = (connect_keep(&mut d, 1), d.connect(2), d.connect(3));
    let hello = d.handshake(a);
    let first = d.call(a, "createRoom", "{}")["code"].clone();
    d.call(b, "createRoom", "{}");
    assert_eq!(d.call(c, "createRoom", "{}")["error"], "Server busy");
    // a drops: its room has nobody present; a new room may take its place.
    d.drop_transport(a);
    assert!(d.call(c, "createRoom", "{}")["code"].is_string());
    assert_eq!(d.rooms().len(), 2);
    // b's room (b present) is never taken.
    let e = d.connect(5);
    assert_eq!(d.call(e, "createRoom", "{}")["error"], "Server busy");
    // a comes back to learn its room is gone.
    let (_, packets) = come_back(&mut d, 4, &hello["pid"], None);
    let told: Value = serde_json::from_str(&packets[0][1..]).unwrap();
    assert_eq!(told[0], "roomUnavailable");
    assert_eq!(told[1]["code"], first);
    assert_eq!(told[1]["error"], "Server busy");
}

// ---- Hostile review of recovery: regressions ------------------------------------------------

fn gauge_of(d: &Driver, name: &str) -> u64 {
    let mut out = String::new();
    crate::engine::Handler::metrics(&d.sio, &mut out);
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name}"))
        .parse()
        .unwrap()
}

/// Found: the shared budget was first come, first served, and one room could fill it (70
/// members joined and dropped, each keeping every message of the room): every other client's
/// recovery then failed for two minutes. A room now holds two members, one socket keeps at
/// most 1 MiB, and the same flood leaves the budget nearly empty; a quiet pair's blip after
/// it is recovered whole.
#[test]
fn a_flood_from_one_room_leaves_other_rooms_their_recovery() {
    let mut d = Driver::new();
    // The victims: a quiet pair elsewhere.
    let (l1, l2) = (connect_keep(&mut d, 1), d.connect(2));
    let (larg, hello) = pair(&mut d, l1, l2);
    say(&mut d, l2, &larg, "hello");
    let last = offset_of(&d.take(l1)[0]);
    d.take(l2);
    // The flood: b present, 70 members joined and dropped, 1 MB of messages.
    let b = d.connect(3);
    let code = d.call(b, "createRoom", "{}")["code"].clone();
    let arg = format!("{{\"code\":{code}}}");
    for i in 0..70 {
        let s = d.connect(100 + i);
        assert_eq!(d.call(s, "joinRoom", &arg)["success"], true);
        d.drop_transport(s);
    }
    let big = "x".repeat(2000);
    for i in 0..520u64 {
        d.step_to(1000 + i * 50); // within the default 20/s rate
        say(&mut d, b, &arg, &big);
        d.take(b);
    }
    let used = recovery_bytes(&mut d);
    assert!(used < 3 << 20, "one room holds {used} bytes of the budget");
    // A victim's blip after a quiet minute (heartbeats confirmed "hello"): 20 messages missed.
    d.handle(Event::Pong { session: l1 });
    d.handle(Event::Pong { session: l1 });
    d.drop_transport(l1);
    for i in 0..20 {
        d.step_to(28_000 + i * 50);
        say(&mut d, l2, &larg, "missed");
    }
    let (_, packets) = come_back(&mut d, 9, &hello["pid"], Some(&last));
    let reply: Value = serde_json::from_str(&packets.last().unwrap()[1..]).unwrap();
    assert_eq!(reply["sid"], hello["sid"], "recovered");
    assert_eq!(texts_of(&packets), ["missed"; 20]);
}

/// When the budget is short, away sockets lose their events oldest first; one holding nothing
/// (a member of a quiet room, its events all confirmed) frees nothing and keeps its recovery,
/// even when present sockets' unconfirmed events hold the whole budget (found by a hostile
/// review: one push past the budget stripped every away socket on the server).
#[test]
fn an_away_socket_holding_nothing_keeps_its_recovery_when_the_budget_is_short() {
    let mut d = Driver::with(RecoveryConfig {
        max_bytes: 16 << 10,
        ..RecoveryConfig::default()
    });
    // A quiet pair: a has had every event (two pongs), then its transport drops.
    let (a, b) = (connect_keep(&mut d, 1), d.connect(2));
    let (arg, hello) = pair(&mut d, a, b);
    say(&mut d, b, &arg, "hello");
    let last = offset_of(&d.take(a)[0]);
    d.take(b);
    for s in [a, b, a, b] {
        d.handle(Event::Pong { session: s });
    }
    assert_eq!(recovery_bytes(&mut d), 0, "a holds nothing");
    d.drop_transport(a);
    d.take(b);
    assert_eq!(gauge_of(&d, "pairchat_sio_away_sockets"), 1);
    // A busy pair elsewhere, both present, fills the budget between two heartbeats.
    let (c, e) = (connect_keep(&mut d, 3), d.connect(4));
    let (busy, _) = pair(&mut d, c, e);
    let text = "x".repeat(1000);
    for i in 0..20 {
        d.step_to(1000 + i * 100);
        say(&mut d, c, &busy, &text);
        d.take(c);
        d.take(e);
    }
    assert!(
        recovery_bytes(&mut d) > (16 << 10) - 2200,
        "the budget is full"
    );
    // a missed nothing and held nothing: it comes back whole.
    let (_, packets) = come_back(&mut d, 9, &hello["pid"], Some(&last));
    let reply: Value = serde_json::from_str(&packets.last().unwrap()[1..]).unwrap();
    assert_eq!(
        reply["sid"], hello["sid"],
        "lost its recovery though it held nothing"
    );
}

/// `call` on a session that may be gone (no ack then).
fn try_call(d: &mut Driver, session: SessionId, event: &str, arg: &str) -> Value {
    let text = format!("29[\"{event}\",{arg}]");
    d.handle(Event::Message {
        session,
        text: &text,
    });
    let Some(at) = d
        .sent
        .iter()
        .position(|(s, t)| *s == session && t.starts_with("39["))
    else {
        return Value::Null;
    };
    let (_, ack) = d.sent.remove(at);
    serde_json::from_str::<Value>(&ack[2..]).expect("ack JSON")[0].clone()
}

/// Random churn of joins, messages, drops, restores (stale and live, good and bad offsets, no
/// offset), explicit `41`s after a restore, pongs and room expiry, under small random caps: at
/// each step no panic (debug: overflow checks), the budget held, every socket present or away;
/// once everyone is gone for good every gauge, table and timer is back to zero.
#[test]
fn recovery_churn_leaves_nothing_behind() {
    use rand::RngExt as _;
    let mut rng = StdRng::seed_from_u64(99);
    for round in 0..40 {
        let max_bytes = rng.random_range(400..6000);
        let mut d = Driver::with(RecoveryConfig {
            max_events: rng.random_range(1..6),
            max_bytes,
            window: std::time::Duration::from_millis(rng.random_range(1..5000)),
            max_socket_bytes: rng.random_range(100..3000),
        });
        // Live clients: (session, pid, last offset seen)
        let mut clients: Vec<(SessionId, Value, Option<String>)> = Vec::new();
        let mut codes: Vec<String> = Vec::new();
        let mut next = 1u32;
        for step in 0..300u64 {
            d.step_to(step * rng.random_range(1..200));
            match rng.random_range(0..10) {
                0 | 1 => {
                    let s = connect_keep(&mut d, next);
                    next += 1;
                    let hello = d.handshake(s);
                    clients.push((s, hello["pid"].clone(), None));
                }
                2 if !clients.is_empty() => {
                    let (s, _, _) = clients[rng.random_range(0..clients.len())].clone();
                    let code = try_call(&mut d, s, "createRoom", "{}");
                    if let Some(c) = code["code"].as_str() {
                        codes.push(c.to_string());
                    }
                }
                3 if !clients.is_empty() && !codes.is_empty() => {
                    let (s, _, _) = clients[rng.random_range(0..clients.len())].clone();
                    let code = &codes[rng.random_range(0..codes.len())];
                    try_call(&mut d, s, "joinRoom", &format!("{{\"code\":\"{code}\"}}"));
                }
                4 if !clients.is_empty() && !codes.is_empty() => {
                    let (s, _, _) = clients[rng.random_range(0..clients.len())].clone();
                    let code = &codes[rng.random_range(0..codes.len())];
                    let msg = format!("{{\"code\":\"{code}\",\"text\":\"m{step}\"}}");
                    try_call(&mut d, s, "sendMessage", &msg);
                }
                5 if !clients.is_empty() => {
                    let i = rng.random_range(0..clients.len());
                    d.drop_transport(clients[i].0);
                }
                6 | 7 if !clients.is_empty() => {
                    // A restore (the old session may still be live).
                    let i = rng.random_range(0..clients.len());
                    let (_, pid, last) = clients[i].clone();
                    let offset = match rng.random_range(0..4) {
                        0 => None,
                        1 => Some("18446744073709551615".to_string()),
                        _ => last.clone(),
                    };
                    let (s, packets) = come_back(&mut d, next, &pid, offset.as_deref());
                    next += 1;
                    let Some(at) = packets.iter().rposition(|p| p.starts_with("0{")) else {
                        continue;
                    };
                    let reply: Value = serde_json::from_str(&packets[at][1..]).unwrap();
                    let last = packets
                        .iter()
                        .rfind(|p| p.starts_with("2["))
                        .map(|p| offset_of(p));
                    clients[i] = (s, reply["pid"].clone(), last.or(offset));
                    if rng.random_bool(0.2) {
                        d.handle(Event::Message {
                            session: s,
                            text: "1",
                        });
                    }
                }
                8 if !clients.is_empty() => {
                    let i = rng.random_range(0..clients.len());
                    d.handle(Event::Pong {
                        session: clients[i].0,
                    });
                }
                _ => {}
            }
            for (s, _, last) in clients.iter_mut() {
                let mine = d.take(*s);
                if let Some(p) = mine.iter().rfind(|p| p.starts_with("2[")) {
                    *last = Some(offset_of(p));
                }
            }
            d.sent.clear();
            let away = gauge_of(&d, "pairchat_sio_away_sockets");
            let present = gauge_of(&d, "pairchat_sio_sockets");
            assert_eq!(present + away, d.sio.socket_count() as u64, "round {round}");
            assert!(recovery_bytes(&mut d) <= max_bytes as u64, "round {round}");
        }
        for (s, _, _) in &clients {
            d.handle(Event::Message {
                session: *s,
                text: "1",
            });
            d.drop_transport(*s);
        }
        d.step_to(10 * d.ttl);
        assert_eq!(d.sio.socket_count(), 0, "round {round}");
        assert_eq!(gauge_of(&d, "pairchat_sio_away_sockets"), 0);
        assert_eq!(recovery_bytes(&mut d), 0, "round {round}");
        assert!(d.rooms().is_empty(), "round {round}");
        assert_eq!(d.wheel.0.len(), 0, "round {round}");
    }
}

/// While the loop says output is near its share (`Io::output_full`), every request that adds
/// output is refused with `Server busy` (a refused message spends no rate-limit token), and
/// the chat goes on once it drains.
#[test]
fn output_near_its_share_makes_new_work_wait() {
    let mut d = Driver::without_recovery();
    let (a, b, c) = (d.connect(1), d.connect(2), d.connect(3));
    let code = d.call(a, "createRoom", "{}")["code"].clone();
    let arg = format!("{{\"code\":{code}}}");
    assert_eq!(d.call(b, "joinRoom", &arg)["success"], true);
    d.take(a);
    d.output_full = true;
    let say = format!("{{\"code\":{code},\"text\":\"hi\"}}");
    for _ in 0..50 {
        assert_eq!(d.call(a, "sendMessage", &say)["error"], "Server busy");
    }
    assert_eq!(d.call(c, "createRoom", "{}")["error"], "Server busy");
    assert_eq!(d.call(c, "joinRoom", &arg)["error"], "Server busy");
    assert!(d.events(b).is_empty(), "nothing was delivered");
    d.output_full = false;
    // The whole burst is still there: refusals took no token.
    for _ in 0..40 {
        assert_eq!(d.call(a, "sendMessage", &say)["success"], true);
    }
    assert_eq!(d.call(c, "joinRoom", &arg)["error"], "Room full");
}
