//! The room table: codes, history, expiry. Pure data, no I/O and no clock of its own.
//!
//! Who is in a room is Socket.IO's business (its rooms, behind the adapter: one room model,
//! named by the code); this keeps what the chat adds to a room: a bounded history of messages,
//! each kept as the JSON object that is sent on the wire (`{"sender":…,"text":…,"timestamp":…}`)
//! so joining and delivering never re-encode, the expiry timer, and a generation so a stale
//! expiry timer (for a code that was freed and drawn again) cannot expire its successor.

use std::collections::HashMap;
use std::fmt;

use rand::RngExt;
use slab::Slab;

use crate::sio::RoomId;
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

/// A code as its six digits, without allocating (the name of its Socket.IO room).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeName([u8; 6]);

impl CodeName {
    /// The digits as bytes (no UTF-8 check).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::Deref for CodeName {
    type Target = str;

    fn deref(&self) -> &str {
        // Six ASCII digits.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl RoomCode {
    /// The six digits (leading zeros kept): the name of the room's Socket.IO room.
    pub fn name(self) -> CodeName {
        let mut digits = [b'0'; 6];
        let mut n = self.0;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        CodeName(digits)
    }
}

impl fmt::Display for RoomCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06}", self.0)
    }
}

/// Most bytes of history kept per room, whatever `max_history` says: the joinRoom answer that
/// carries it must stay well under the per-client output cap (`--max-buffer`, 4 MB).
pub const MAX_HISTORY_BYTES: usize = 1 << 20;

/// What keeping one message costs besides its text: its slot in the table's message store (with
/// its links), and its text's allocation header and rounding. Counted, so the history
/// share of the memory budget bounds what the allocator really holds for it.
pub const MESSAGE_OVERHEAD: usize = 80;

/// A kept message: the wire JSON object, whose it is, and its links: to the next message of its
/// room, and to its neighbours in the age order of all rooms' messages.
#[derive(Debug)]
struct Kept {
    json: Box<str>,
    code: RoomCode,
    next: Option<usize>,
    older: Option<usize>,
    newer: Option<usize>,
}

impl Kept {
    fn cost(&self) -> usize {
        self.json.len() + MESSAGE_OVERHEAD
    }
}

/// A live room.
#[derive(Debug)]
pub struct Room {
    /// Its Socket.IO room (the members), by handle: messages reach them without a lookup.
    pub members: Option<RoomId>,
    /// Its oldest and newest messages in the table's store (a list through `Kept::next`).
    first: Option<usize>,
    last: Option<usize>,
    /// Messages kept.
    len: usize,
    /// What they cost (`Kept::cost`).
    history_bytes: usize,
    /// The expiry timer, cancelled when the room is deleted early.
    pub expiry: Option<TimerId>,
    /// Distinguishes this room from earlier rooms with the same code.
    pub generation: u64,
}

impl Room {
    /// Number of messages kept.
    pub fn history_len(&self) -> usize {
        self.len
    }

    /// What the history takes on the wire: each message and a comma.
    fn wire_bytes(&self) -> usize {
        self.history_bytes - self.len * (MESSAGE_OVERHEAD - 1)
    }
}

/// All live rooms.
///
/// Every room's messages live in one store (a slab, each room's a list through it) rather
/// than a queue per room: queues that grow to 500 slots and shrink as the budget trims them
/// left the heap in pieces the allocator could not use again (12 KB of RSS per room that ever
/// filled, measured), where the store's slots are reused by whichever room speaks next.
#[derive(Debug)]
pub struct Rooms {
    rooms: HashMap<RoomCode, Room>,
    store: Store,
    max_history: usize,
    /// Most history bytes of all rooms together (the budget's history share).
    max_bytes: usize,
    /// Most wire bytes of history per room: `MAX_HISTORY_BYTES`, or a quarter of `max_bytes`
    /// under a small budget (so a joinRoom answer stays within the output share, an eighth
    /// of the budget against its quarter).
    room_cap: usize,
    /// What every room's history costs together.
    bytes: usize,
    /// Messages dropped to keep within `max_bytes`.
    trimmed: u64,
    next_generation: u64,
}

impl Rooms {
    /// An empty table keeping at most `max_history` messages per room and `max_bytes` of
    /// history in all.
    pub fn new(max_history: usize, max_bytes: usize) -> Self {
        Rooms {
            rooms: HashMap::new(),
            store: Store::default(),
            max_history,
            max_bytes,
            room_cap: MAX_HISTORY_BYTES.min(max_bytes / 4),
            bytes: 0,
            trimmed: 0,
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

    /// What all history costs now, in bytes (`MESSAGE_OVERHEAD` per message included).
    pub fn history_bytes(&self) -> usize {
        self.bytes
    }

    /// The most history kept in all, in bytes.
    pub fn max_history_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Messages dropped, oldest first across rooms, to keep within the history budget.
    pub fn trimmed(&self) -> u64 {
        self.trimmed
    }

    /// The age order, oldest first, as (room, JSON): for tests of its links.
    #[cfg(test)]
    pub(crate) fn age_order(&self) -> Vec<(RoomCode, &str)> {
        let mut out = Vec::new();
        let mut at = self.store.oldest;
        while let Some(kept) = at.and_then(|i| self.store.kept.get(i)) {
            out.push((kept.code, &*kept.json));
            at = kept.newer;
        }
        out
    }

    /// A live room.
    pub fn get(&self, code: RoomCode) -> Option<&Room> {
        self.rooms.get(&code)
    }

    /// Appends a room's history as JSON array elements (`{…},{…}`) to `out`.
    pub fn write_history(&self, code: RoomCode, out: &mut String) {
        let Some(room) = self.rooms.get(&code) else {
            return;
        };
        out.reserve(room.wire_bytes());
        let mut at = room.first;
        while let Some(kept) = at.and_then(|i| self.store.kept.get(i)) {
            if at != room.first {
                out.push(',');
            }
            out.push_str(&kept.json);
            at = kept.next;
        }
    }

    /// A room's history as a JSON array (`[{…},{…}]`; `[]` for no live room).
    pub fn history_json(&self, code: RoomCode) -> String {
        let mut out = String::from("[");
        self.write_history(code, &mut out);
        out.push(']');
        out
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

    /// Creates a room; returns its generation.
    pub fn create(&mut self, code: RoomCode) -> u64 {
        self.remove(code);
        self.next_generation += 1;
        let generation = self.next_generation;
        let room = Room {
            members: None,
            first: None,
            last: None,
            len: 0,
            history_bytes: 0,
            expiry: None,
            generation,
        };
        self.rooms.insert(code, room);
        generation
    }

    /// Records the handle of a room's Socket.IO room.
    pub fn set_members(&mut self, code: RoomCode, members: Option<RoomId>) {
        if let Some(room) = self.rooms.get_mut(&code) {
            room.members = members;
        }
    }

    /// Records the expiry timer of a room.
    pub fn set_expiry(&mut self, code: RoomCode, timer: TimerId) {
        if let Some(room) = self.rooms.get_mut(&code) {
            room.expiry = Some(timer);
        }
    }

    /// Deletes a room (its last member left); returns it, for its expiry timer.
    pub fn remove(&mut self, code: RoomCode) -> Option<Room> {
        let mut room = self.rooms.remove(&code)?;
        while room.len > 0 {
            self.bytes -= drop_first(&mut room, &mut self.store);
        }
        Some(room)
    }

    /// Keeps a message (wire JSON) in a room's history; false if no such room is live.
    pub fn push_message(&mut self, code: RoomCode, message: &str) -> bool {
        let Some(room) = self.rooms.get_mut(&code) else {
            return false;
        };
        if self.max_history == 0 || message.len() >= self.room_cap {
            return true;
        }
        let kept = Kept {
            json: message.into(),
            code,
            next: None,
            older: self.store.newest,
            newer: None,
        };
        let cost = kept.cost();
        let slot = self.store.kept.insert(kept);
        match self.store.newest.and_then(|i| self.store.kept.get_mut(i)) {
            Some(newest) => newest.newer = Some(slot),
            None => self.store.oldest = Some(slot),
        }
        self.store.newest = Some(slot);
        match room.last.and_then(|i| self.store.kept.get_mut(i)) {
            Some(last) => last.next = Some(slot),
            None => room.first = Some(slot),
        }
        room.last = Some(slot);
        room.len += 1;
        room.history_bytes += cost;
        self.bytes += cost;
        // Oldest out first: by count, and by bytes so the joinRoom answer fits any client
        // buffer (a reader's output cap is 4 MB by default).
        while room.len > self.max_history || room.wire_bytes() > self.room_cap {
            self.bytes -= drop_first(room, &mut self.store);
        }
        // Then the oldest across all rooms, to stay within the budget: the oldest message
        // kept is always the first of its room.
        while self.bytes > self.max_bytes {
            let Some(code) = self
                .store
                .oldest
                .and_then(|i| self.store.kept.get(i))
                .map(|k| k.code)
            else {
                break;
            };
            let Some(room) = self.rooms.get_mut(&code) else {
                break;
            };
            self.bytes -= drop_first(room, &mut self.store);
            self.trimmed += 1;
        }
        true
    }

    /// Deletes a room whose time is up, if it is still the room of that generation.
    pub fn expire(&mut self, code: RoomCode, generation: u64) -> Option<Room> {
        if self.rooms.get(&code)?.generation != generation {
            return None;
        }
        self.remove(code)
    }
}

/// Every room's kept messages: one slab, each room's a list through it, and the age order of all
/// of them (a list through `Kept::older`/`newer`), whose oldest is trimmed first across rooms; a
/// message leaves both lists in O(1) whatever removes it.
#[derive(Debug, Default)]
struct Store {
    kept: Slab<Kept>,
    oldest: Option<usize>,
    newest: Option<usize>,
}

/// Drops a room's oldest message from the store and the age order; its cost (0 if the room
/// has none).
fn drop_first(room: &mut Room, store: &mut Store) -> usize {
    let Some(kept) = room.first.and_then(|i| store.kept.try_remove(i)) else {
        return 0;
    };
    room.first = kept.next;
    if room.first.is_none() {
        room.last = None;
    }
    match kept.older.and_then(|i| store.kept.get_mut(i)) {
        Some(older) => older.newer = kept.newer,
        None => store.oldest = kept.newer,
    }
    match kept.newer.and_then(|i| store.kept.get_mut(i)) {
        Some(newer) => newer.older = kept.older,
        None => store.newest = kept.older,
    }
    room.len -= 1;
    room.history_bytes -= kept.cost();
    kept.cost()
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
    fn a_code_names_its_room_with_all_six_digits() {
        assert_eq!(&*RoomCode::new(483_920).unwrap().name(), "483920");
        assert_eq!(&*RoomCode::parse("012345").unwrap().name(), "012345");
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
