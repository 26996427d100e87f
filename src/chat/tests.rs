//! The chat as the loop drives it: `SocketIo<Chat>` handed engine events, its timers on a
//! wheel stepped by hand (so the chat's own wiring of expiry timers is what runs); and the
//! room table on its own.

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;

use super::rooms::*;
use super::{Chat, ChatConfig, ChatTimer};
use crate::engine::{
    Command, Event, Handler, Io, Outgoing, SessionId, Sid, SocketRegistry, SocketToken, Timers,
};
use crate::sio::{SioConfig, SioTimer, SocketIo};
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
    ttl: Millis,
}

impl Driver {
    fn new() -> Self {
        let config = ChatConfig::default();
        let ttl = crate::timer::ms(config.room_ttl);
        Driver {
            sio: SocketIo::new(Chat::new(config), SioConfig::default(), 1_000_000),
            wheel: Wheel(TimerWheel::new(0)),
            rng: StdRng::seed_from_u64(7),
            now: 0,
            commands: Vec::new(),
            sent: Vec::new(),
            ttl,
        }
    }

    fn handle(&mut self, event: Event<'_, SioTimer<ChatTimer>>) {
        let mut io = Io {
            now: self.now,
            unix_ms: 1_700_000_000_000 + self.now,
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
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// A session connected to `/`.
    fn connect(&mut self, n: u32) -> SessionId {
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
        self.handle(Event::Message { session, text: "0" });
        self.sent.clear();
        session
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
        let mut fired = Vec::new();
        self.wheel.0.poll_to(now, &mut fired);
        for t in fired {
            self.handle(Event::Timer(t));
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
    let mut d = Driver::new();
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
    let mut rooms = Rooms::new(10);
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
    let mut rooms = Rooms::new(1000);
    let code = RoomCode::new(222_222).unwrap();
    rooms.create(code);
    assert_eq!(rooms.get(code).unwrap().history_json(), "[]");
    let big = |c: char| format!("\"{}\"", c.to_string().repeat(400 * 1024));
    for c in ['a', 'b', 'c'] {
        assert!(rooms.push_message(code, &big(c)));
    }
    let room = rooms.get(code).unwrap();
    assert_eq!(room.history_len(), 2);
    assert_eq!(room.history_json(), format!("[{},{}]", big('b'), big('c')));
    // One message over the cap is delivered but not kept; what was kept stays.
    let huge = format!("\"{}\"", "d".repeat(MAX_HISTORY_BYTES));
    assert!(rooms.push_message(code, &huge));
    assert_eq!(rooms.get(code).unwrap().history_len(), 2);
}

#[test]
fn history_is_capped_oldest_first() {
    let mut rooms = Rooms::new(3);
    let code = RoomCode::new(222_222).unwrap();
    rooms.create(code);
    for i in 0..5 {
        assert!(rooms.push_message(code, &format!("{{\"n\":{i}}}")));
    }
    let room = rooms.get(code).unwrap();
    assert_eq!(room.history_len(), 3);
    assert_eq!(room.history_json(), "[{\"n\":2},{\"n\":3},{\"n\":4}]");
    assert!(!rooms.push_message(RoomCode::new(333_333).unwrap(), "{}"));
}

#[test]
fn fresh_codes_are_unique_among_live_rooms() {
    let mut rooms = Rooms::new(0);
    let mut rng = rand::rng();
    for _ in 0..20_000 {
        let code = rooms.fresh_code(&mut rng).unwrap();
        assert!(rooms.get(code).is_none());
        rooms.create(code);
    }
    assert_eq!(rooms.len(), 20_000);
}
