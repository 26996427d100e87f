//! The room table driven through the timer wheel with stepped time, as the loop drives it.

use super::rooms::*;
use super::{ChatConfig, ChatTimer};
use crate::engine::Sid;
use crate::sio::SocketRef;
use crate::timer::{Millis, TimerWheel};

fn member(n: u32) -> Member {
    Member {
        socket: SocketRef::for_test(n),
        id: Sid::random(&mut rand::rng()),
    }
}

struct Harness {
    rooms: Rooms,
    wheel: TimerWheel<ChatTimer>,
    ttl: Millis,
    expired: Vec<(RoomCode, Vec<Member>)>,
}

impl Harness {
    fn new() -> Self {
        let ttl = ChatConfig::default().room_ttl.as_millis() as Millis;
        Harness {
            rooms: Rooms::new(3),
            wheel: TimerWheel::new(0),
            ttl,
            expired: Vec::new(),
        }
    }

    fn create(&mut self, now: Millis, creator: Member) -> RoomCode {
        let code = self
            .rooms
            .fresh_code(&mut rand::rng())
            .expect("a free code");
        let generation = self.rooms.create(code, creator);
        let timer = self
            .wheel
            .insert(now + self.ttl, ChatTimer::Expire { code, generation });
        self.rooms.set_expiry(code, timer);
        code
    }

    fn leave(&mut self, socket: SocketRef) -> Option<Left> {
        let left = self.rooms.leave(socket)?;
        if let Some(Some(timer)) = left.deleted {
            self.wheel.cancel(timer);
        }
        Some(left)
    }

    fn step_to(&mut self, now: Millis) {
        let mut fired = Vec::new();
        self.wheel.poll_to(now, &mut fired);
        for ChatTimer::Expire { code, generation } in fired {
            if let Some(room) = self.rooms.expire(code, generation) {
                self.expired.push((code, room.members));
            }
        }
    }
}

#[test]
fn rooms_expire_at_their_own_deadline() {
    let mut h = Harness::new();
    let (a, b, c) = (member(1), member(2), member(3));
    let first = h.create(0, a);
    h.rooms.join(first, b).unwrap();
    let second = h.create(90_000, c);

    h.step_to(h.ttl - 1);
    assert!(h.expired.is_empty(), "nothing expires before its deadline");
    assert_eq!(h.rooms.len(), 2);

    h.step_to(h.ttl);
    assert_eq!(h.expired, vec![(first, vec![a, b])]);
    assert!(h.rooms.get(first).is_none());
    assert_eq!(h.rooms.room_of(a.socket), None);
    assert_eq!(h.rooms.room_of(c.socket), Some(second));

    // A long pause: the wheel catches up in one step.
    h.step_to(10 * h.ttl);
    assert_eq!(h.expired.len(), 2);
    assert_eq!(h.expired[1], (second, vec![c]));
    assert!(h.rooms.is_empty());
    assert_eq!(h.wheel.len(), 0);
}

#[test]
fn an_empty_room_is_deleted_at_once_and_its_timer_cancelled() {
    let mut h = Harness::new();
    let (a, b) = (member(1), member(2));
    let code = h.create(0, a);
    h.rooms.join(code, b).unwrap();
    let left = h.leave(a.socket).unwrap();
    assert_eq!(left.remaining, vec![b]);
    assert_eq!(left.deleted, None);
    let left = h.leave(b.socket).unwrap();
    assert!(left.remaining.is_empty());
    assert!(matches!(left.deleted, Some(Some(_))));
    assert!(h.rooms.is_empty());
    assert_eq!(h.wheel.len(), 0, "the expiry timer went with the room");
    h.step_to(2 * h.ttl);
    assert!(h.expired.is_empty());
}

#[test]
fn a_stale_expiry_never_hits_a_newer_room_with_the_same_code() {
    let mut rooms = Rooms::new(10);
    let code = RoomCode::new(123_456).unwrap();
    let old = rooms.create(code, member(1));
    rooms.leave(SocketRef::for_test(1));
    let new = rooms.create(code, member(2));
    assert_ne!(old, new);
    assert!(rooms.expire(code, old).is_none());
    assert!(rooms.get(code).is_some());
    assert!(rooms.expire(code, new).is_some());
}

#[test]
fn two_members_at_most_and_rejoining_is_a_no_op() {
    let mut rooms = Rooms::new(10);
    let (a, b, c) = (member(1), member(2), member(3));
    let code = RoomCode::new(555_555).unwrap();
    rooms.create(code, a);
    assert_eq!(rooms.join(code, b), Ok(Joined::New { partner: Some(a) }));
    assert_eq!(rooms.join(code, b), Ok(Joined::Already));
    assert_eq!(rooms.join(code, c), Err(JoinError::Full));
    assert_eq!(
        rooms.join(RoomCode::new(111_111).unwrap(), c),
        Err(JoinError::NotFound)
    );
    assert_eq!(rooms.get(code).unwrap().members, vec![a, b]);
}

#[test]
fn history_is_capped_by_bytes_too() {
    let mut rooms = Rooms::new(1000);
    let a = member(1);
    let code = RoomCode::new(222_222).unwrap();
    rooms.create(code, a);
    assert_eq!(rooms.get(code).unwrap().history_json(), "[]");
    let big = |c: char| format!("\"{}\"", c.to_string().repeat(400 * 1024));
    for c in ['a', 'b', 'c'] {
        rooms.push_message(code, a.socket, &big(c)).unwrap();
    }
    let room = rooms.get(code).unwrap();
    assert_eq!(room.history_len(), 2);
    assert_eq!(room.history_json(), format!("[{},{}]", big('b'), big('c')));
    // One message over the cap is delivered but not kept; what was kept stays.
    let huge = format!("\"{}\"", "d".repeat(MAX_HISTORY_BYTES));
    assert!(rooms.push_message(code, a.socket, &huge).is_ok());
    assert_eq!(rooms.get(code).unwrap().history_len(), 2);
}

#[test]
fn history_is_capped_oldest_first() {
    let mut rooms = Rooms::new(3);
    let a = member(1);
    let code = RoomCode::new(222_222).unwrap();
    rooms.create(code, a);
    for i in 0..5 {
        let delivered = rooms
            .push_message(code, a.socket, &format!("{{\"n\":{i}}}"))
            .unwrap();
        assert_eq!(delivered, &[a]);
    }
    let room = rooms.get(code).unwrap();
    assert_eq!(room.history_len(), 3);
    assert_eq!(room.history_json(), "[{\"n\":2},{\"n\":3},{\"n\":4}]");
    assert_eq!(
        rooms.push_message(code, SocketRef::for_test(9), "{}"),
        Err(SendError::NotMember)
    );
    assert_eq!(
        rooms.push_message(RoomCode::new(333_333).unwrap(), a.socket, "{}"),
        Err(SendError::NotFound)
    );
}

#[test]
fn fresh_codes_are_unique_among_live_rooms() {
    let mut rooms = Rooms::new(0);
    let mut rng = rand::rng();
    for n in 0..20_000 {
        let code = rooms.fresh_code(&mut rng).unwrap();
        assert!(rooms.get(code).is_none());
        rooms.create(code, member(n));
    }
    assert_eq!(rooms.len(), 20_000);
}
