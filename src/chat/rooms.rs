//! The room table: codes, members, history. Pure data, no I/O and no clock of its own.
//!
//! A room holds at most two members and a bounded history of messages, each kept as the JSON
//! object that is sent on the wire (`{"sender":…,"text":…,"timestamp":…}`), so joining and
//! delivering never re-encode. Every room carries a generation so a stale expiry timer (for a
//! code that was freed and drawn again) cannot expire its successor. A socket is in at most
//! one room; `room_of` answers that in O(1).

use std::collections::{HashMap, VecDeque};
use std::fmt;

use rand::RngExt;

use crate::engine::Sid;
use crate::sio::SocketRef;
use crate::timer::TimerId;

/// Members per room.
pub const ROOM_CAPACITY: usize = 2;

/// A six-digit room code. Rooms are created with codes 100000–999999; a code with a leading
/// zero (`012345`) is well-formed but never names a live room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomCode(u32);

impl RoomCode {
    /// The smallest code.
    pub const MIN: u32 = 100_000;
    /// The largest code.
    pub const MAX: u32 = 999_999;

    /// The code for a number in range.
    pub fn new(n: u32) -> Option<Self> {
        (Self::MIN..=Self::MAX).contains(&n).then_some(RoomCode(n))
    }

    /// Parses exactly six ASCII digits (surrounding whitespace allowed), leading zeros too.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.len() != 6 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok().map(RoomCode)
    }

    /// A code drawn uniformly from the whole range.
    pub fn random(rng: &mut impl rand::Rng) -> Self {
        RoomCode(rng.random_range(Self::MIN..=Self::MAX))
    }
}

impl fmt::Display for RoomCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06}", self.0)
    }
}

/// A member: the socket and its id as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// The Socket.IO socket.
    pub socket: SocketRef,
    /// Its id (`sender`, `userId` on the wire).
    pub id: Sid,
}

/// Most bytes of history kept per room, whatever `max_history` says: the joinRoom answer that
/// carries it must stay well under the per-client output cap (`--max-buffer`, 4 MB).
pub const MAX_HISTORY_BYTES: usize = 1 << 20;

/// A live room.
#[derive(Debug)]
pub struct Room {
    /// Members in joining order (at most two).
    pub members: Vec<Member>,
    /// Messages as wire JSON objects, oldest first, each after a comma (`,{…},{…}`): one
    /// buffer per room, so keeping a message allocates nothing once the buffer has grown.
    history: VecDeque<u8>,
    /// Each kept message's length in `history`, comma included.
    history_lens: VecDeque<u32>,
    /// The expiry timer, cancelled when the room is deleted early.
    pub expiry: Option<TimerId>,
    /// Distinguishes this room from earlier rooms with the same code.
    pub generation: u64,
}

impl Room {
    /// The history as a JSON array (`[{…},{…}]`).
    pub fn history_json(&self) -> String {
        let mut out = Vec::with_capacity(self.history.len() + 2);
        out.push(b'[');
        // Everything but the first message's comma.
        let (a, b) = self.history.as_slices();
        match a.split_first() {
            Some((_, rest)) => {
                out.extend_from_slice(rest);
                out.extend_from_slice(b);
            }
            None => out.extend_from_slice(b.get(1..).unwrap_or_default()),
        }
        out.push(b']');
        // Whole `&str` messages were pushed, so this never replaces anything.
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// Number of messages kept.
    pub fn history_len(&self) -> usize {
        self.history_lens.len()
    }

    fn is_member(&self, socket: SocketRef) -> bool {
        self.members.iter().any(|m| m.socket == socket)
    }
}

/// Why a join failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinError {
    /// No live room has this code.
    NotFound,
    /// The room already has two members.
    Full,
}

/// A successful join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// The socket was added; `partner` is the member already there.
    New {
        /// The other member, if any.
        partner: Option<Member>,
    },
    /// The socket was already a member: nothing changed.
    Already,
}

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// No live room has this code.
    NotFound,
    /// The sender is not in the room.
    NotMember,
}

/// The result of a member leaving.
#[derive(Debug, PartialEq, Eq)]
pub struct Left {
    /// The room it left.
    pub code: RoomCode,
    /// Who is still there (to be told `userLeft`).
    pub remaining: Vec<Member>,
    /// The room's expiry timer, when the room was deleted because it became empty.
    pub deleted: Option<Option<TimerId>>,
}

/// All live rooms.
#[derive(Debug)]
pub struct Rooms {
    rooms: HashMap<RoomCode, Room>,
    room_of: HashMap<SocketRef, RoomCode>,
    max_history: usize,
    next_generation: u64,
}

impl Rooms {
    /// An empty table keeping at most `max_history` messages per room.
    pub fn new(max_history: usize) -> Self {
        Rooms {
            rooms: HashMap::new(),
            room_of: HashMap::new(),
            max_history,
            next_generation: 0,
        }
    }

    /// Number of live rooms.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether no room is live.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// A live room.
    pub fn get(&self, code: RoomCode) -> Option<&Room> {
        self.rooms.get(&code)
    }

    /// The room a socket is in.
    pub fn room_of(&self, socket: SocketRef) -> Option<RoomCode> {
        self.room_of.get(&socket).copied()
    }

    /// Draws a code no live room uses; `None` when (nearly) every code is taken.
    pub fn fresh_code(&self, rng: &mut impl rand::Rng) -> Option<RoomCode> {
        let total = (RoomCode::MAX - RoomCode::MIN + 1) as usize;
        if self.rooms.len() >= total {
            return None;
        }
        // The table is at most 90 % full in practice (`max_rooms`), so a few draws suffice;
        // the bound keeps a nearly full table from spinning.
        (0..1000)
            .map(|_| RoomCode::random(rng))
            .find(|c| !self.rooms.contains_key(c))
    }

    /// Creates a room with `creator` as its first member; returns the room's generation.
    /// The creator must not be in a room (`leave` first).
    pub fn create(&mut self, code: RoomCode, creator: Member) -> u64 {
        self.next_generation += 1;
        let generation = self.next_generation;
        let room = Room {
            members: vec![creator],
            history: VecDeque::new(),
            history_lens: VecDeque::new(),
            expiry: None,
            generation,
        };
        self.rooms.insert(code, room);
        self.room_of.insert(creator.socket, code);
        generation
    }

    /// Records the expiry timer of a room.
    pub fn set_expiry(&mut self, code: RoomCode, timer: TimerId) {
        if let Some(room) = self.rooms.get_mut(&code) {
            room.expiry = Some(timer);
        }
    }

    /// Adds `member` to a room. The member must not be in another room (`leave` first).
    pub fn join(&mut self, code: RoomCode, member: Member) -> Result<Joined, JoinError> {
        let room = self.rooms.get_mut(&code).ok_or(JoinError::NotFound)?;
        if room.is_member(member.socket) {
            return Ok(Joined::Already);
        }
        if room.members.len() >= ROOM_CAPACITY {
            return Err(JoinError::Full);
        }
        let partner = room.members.first().copied();
        room.members.push(member);
        self.room_of.insert(member.socket, code);
        Ok(Joined::New { partner })
    }

    /// Removes a socket from its room, deleting the room when it becomes empty.
    pub fn leave(&mut self, socket: SocketRef) -> Option<Left> {
        let code = self.room_of.remove(&socket)?;
        let room = self.rooms.get_mut(&code)?;
        room.members.retain(|m| m.socket != socket);
        let remaining = room.members.clone();
        let deleted = if remaining.is_empty() {
            self.rooms.remove(&code).map(|r| r.expiry)
        } else {
            None
        };
        Some(Left {
            code,
            remaining,
            deleted,
        })
    }

    /// Whether `socket` may send to the room `code`.
    pub fn check_member(&self, code: RoomCode, socket: SocketRef) -> Result<(), SendError> {
        match self.rooms.get(&code) {
            None => Err(SendError::NotFound),
            Some(room) if !room.is_member(socket) => Err(SendError::NotMember),
            Some(_) => Ok(()),
        }
    }

    /// Appends a message (wire JSON) from `sender`; returns the members to deliver it to.
    pub fn push_message(
        &mut self,
        code: RoomCode,
        sender: SocketRef,
        message: &str,
    ) -> Result<&[Member], SendError> {
        let room = self.rooms.get_mut(&code).ok_or(SendError::NotFound)?;
        if !room.is_member(sender) {
            return Err(SendError::NotMember);
        }
        if self.max_history > 0 && message.len() < MAX_HISTORY_BYTES {
            room.history.push_back(b',');
            room.history.extend(message.as_bytes());
            room.history_lens.push_back(message.len() as u32 + 1);
            // Oldest out first: by count, and by bytes so the joinRoom answer fits any client
            // buffer (a reader's output cap is 4 MB by default).
            while room.history_lens.len() > self.max_history
                || room.history.len() > MAX_HISTORY_BYTES
            {
                let Some(old) = room.history_lens.pop_front() else {
                    break;
                };
                room.history.drain(..old as usize);
            }
        }
        Ok(&room.members)
    }

    /// Deletes a room whose time is up, if it is still the room of that generation.
    pub fn expire(&mut self, code: RoomCode, generation: u64) -> Option<Room> {
        if self.rooms.get(&code)?.generation != generation {
            return None;
        }
        let room = self.rooms.remove(&code)?;
        for m in &room.members {
            self.room_of.remove(&m.socket);
        }
        Some(room)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_parse_only_six_digits_in_range() {
        assert_eq!(RoomCode::parse("483920"), RoomCode::new(483_920));
        assert_eq!(RoomCode::parse(" 100000 "), RoomCode::new(100_000));
        assert_eq!(
            RoomCode::parse("999999").map(|c| c.to_string()),
            Some("999999".into())
        );
        // Well-formed, though no room is ever created with it.
        let zero = RoomCode::parse("012345").expect("six digits");
        assert_eq!(zero.to_string(), "012345");
        assert_ne!(RoomCode::new(12_345), Some(zero));
        for bad in [
            "",
            "12345",
            "1234567",
            "12a456",
            "+12345",
            "-12345",
            "１２３４５６",
        ] {
            assert_eq!(RoomCode::parse(bad), None, "{bad:?}");
        }
        assert_eq!(RoomCode::new(99_999), None);
        assert_eq!(RoomCode::new(1_000_000), None);
    }

    #[test]
    fn random_codes_stay_in_range() {
        let mut rng = rand::rng();
        for _ in 0..10_000 {
            let c = RoomCode::random(&mut rng);
            assert!((RoomCode::MIN..=RoomCode::MAX).contains(&c.0));
            assert_eq!(c.to_string().len(), 6);
        }
    }
}
