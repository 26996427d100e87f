//! The chat: temporary one-to-one rooms as a Socket.IO application.
//!
//! Events in (each answered with an ack when the client asks for one):
//!
//! | event | payload | ack |
//! |---|---|---|
//! | `createRoom` | `{}` or none | `{"code":"483920"}` |
//! | `joinRoom` | `{code}` | `{"success":true,"messages":[…]}` or `{"error":…}` |
//! | `sendMessage` | `{code,text}` | `{"success":true}` or `{"error":…}` |
//! | `leaveRoom` | `{code}` | `{"success":true}` or `{"error":…}` |
//!
//! Events out: `newMessage {sender,text,timestamp}` to both members, `userJoined {userId}`,
//! `userLeft {userId}`, `roomExpired {}`, and `roomUnavailable {code,error}` to a member that
//! comes back (connection state recovery) to find its room is not its own any more. Rooms
//! expire on the loop's timer wheel; a room whose members are all gone for good is deleted at
//! once.
//!
//! With recovery on, a member whose transport drops is *away*: its partner is told
//! `userLeft` at once and its seat is free, but it stays in the Socket.IO room (so the room's
//! events are kept for it) and the room lives on, until it comes back (its partner is told
//! `userJoined` with the same id) or its window closes. A join that takes its seat takes it out
//! of the room.
//!
//! This module parses payloads and decides. A room's members are a Socket.IO room named by its
//! code (the one room model, behind `sio`'s adapter); the chat's own table (`rooms`) adds the
//! history and the expiry; the Socket.IO layer does the wire. The chat serves the main
//! namespace.

pub(crate) mod args;
pub mod limits;
pub mod rooms;

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use serde_json::value::RawValue;

use crate::log::Sampler;
use crate::sio::packet::{push_decimal, write_json_string};
use crate::sio::{App, EventData, Nsp, SioEvent, SioIo, SocketRef};
use args::Fields;
use limits::{Bucket, Failures, Rate};
use rooms::{RoomCode, Rooms};

/// Error texts sent in `{"error":…}` acks.
pub mod errors {
    /// No live room has the code.
    pub const ROOM_NOT_FOUND: &str = "Room not found";
    /// The room has two members already.
    pub const ROOM_FULL: &str = "Room full";
    /// The code is missing or not six digits.
    pub const INVALID_CODE: &str = "Invalid room code";
    /// The socket is not in the room it names.
    pub const NOT_MEMBER: &str = "Not a member of this room";
    /// `text` missing or not a string.
    pub const TEXT_REQUIRED: &str = "Message text must be a string";
    /// `text` empty after trimming.
    pub const TEXT_EMPTY: &str = "Message text is empty";
    /// `text` longer than the limit.
    pub const TEXT_TOO_LONG: &str = "Message text is too long";
    /// Every room code is taken.
    pub const SERVER_BUSY: &str = "Server busy";
    /// The event name is not one of the chat's.
    pub const UNKNOWN_EVENT: &str = "Unknown event";
    /// Too many failed joins lately (per socket or per client address).
    pub const TOO_MANY_ATTEMPTS: &str = "Too many attempts, retry later";
    /// Messages sent faster than `--message-rate`.
    pub const RATE_LIMITED: &str = "Rate limited";
}

/// Settings of the chat.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// How long a room lives after its creation. Defaults to 20 minutes.
    pub room_ttl: Duration,
    /// Longest message text, in characters. Defaults to 2000.
    pub max_message_chars: usize,
    /// Messages kept per room (oldest dropped first). Defaults to 500.
    pub max_history: usize,
    /// Bytes of history kept by all rooms together (the history share of the memory budget):
    /// past it the oldest messages across all rooms go first. Unbounded by default (the
    /// binary sets it from `--max-memory`).
    pub max_history_bytes: usize,
    /// Failed `joinRoom`s allowed per socket (and per trustworthy client address) per period;
    /// `None`: no limit. Defaults to 10 per minute.
    pub join_failures: Option<Rate>,
    /// `sendMessage`s per socket (token bucket, bursts of twice the rate); `None`: no limit.
    /// Defaults to 20 per second.
    pub message_rate: Option<Rate>,
    /// Most live rooms; `createRoom` answers `Server busy` past it. Defaults to 100 000.
    pub max_rooms: usize,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            room_ttl: Duration::from_secs(20 * 60),
            max_message_chars: 2000,
            max_history: 500,
            max_history_bytes: usize::MAX,
            join_failures: Some(Rate {
                count: 10,
                per: Duration::from_secs(60),
            }),
            message_rate: Some(Rate {
                count: 20,
                per: Duration::from_secs(1),
            }),
            max_rooms: 100_000,
        }
    }
}

/// The chat's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatTimer {
    /// A room's time is up.
    Expire {
        /// The room.
        code: RoomCode,
        /// Which room of that code (a code can be drawn again after its room is gone).
        generation: u64,
    },
}

/// The chat application.
#[derive(Debug)]
pub struct Chat {
    config: ChatConfig,
    rooms: Rooms,
    join_failures: Option<(Failures<SocketRef>, Failures<IpAddr>)>,
    buckets: HashMap<SocketRef, Bucket>,
    stats: Stats,
    /// Where each message's wire JSON is written (reused, so sending allocates no text).
    message_buf: String,
    /// Rooms left with away members only, oldest first (some since taken back or gone): at
    /// `max_rooms`, the oldest such room makes way for a new one.
    unattended: VecDeque<(RoomCode, u64)>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
struct Stats {
    rooms_created: u64,
    rooms_expired: u64,
    messages: u64,
    joins: u64,
    limited_joins: u64,
    limited_messages: u64,
    busy: u64,
    /// Rooms with away members only, deleted at `max_rooms` to make way.
    evicted: u64,
    /// Requests refused because output was near its share of the memory budget.
    output_full: u64,
}

type Io<'a, 'b> = SioIo<'a, 'b, ChatTimer>;

impl Chat {
    /// A chat with no rooms.
    pub fn new(config: ChatConfig) -> Self {
        let rooms = Rooms::new(config.max_history, config.max_history_bytes);
        let join_failures = config
            .join_failures
            .map(|r| (Failures::new(r), Failures::new(r)));
        Chat {
            config,
            rooms,
            join_failures,
            buckets: HashMap::new(),
            stats: Stats::default(),
            message_buf: String::new(),
            unattended: VecDeque::new(),
        }
    }

    /// The room table.
    pub fn rooms(&self) -> &Rooms {
        &self.rooms
    }

    fn on_event(&mut self, e: EventData<'_>, io: &mut Io<'_, '_>) {
        let reply = match e.name {
            "createRoom" => self.create_room(e.socket, io),
            "joinRoom" => self.join_room_limited(e.socket, e.args, io),
            "sendMessage" => self.send_message(e.socket, e.args, io),
            "leaveRoom" => self.leave_room(e.socket, e.args, io),
            _ => Err(errors::UNKNOWN_EVENT),
        };
        if let Some(id) = e.ack {
            match reply {
                Ok(json) => io.ack(e.socket, id, &json),
                Err(message) => io.ack(e.socket, id, &error_json(message)),
            }
        }
    }

    fn create_room(
        &mut self,
        socket: SocketRef,
        io: &mut Io<'_, '_>,
    ) -> Result<Reply, &'static str> {
        io.socket_id(socket).ok_or(errors::SERVER_BUSY)?;
        if io.output_full() {
            return Err(self.busy());
        }
        // Capacity first: a refused createRoom must not cost the caller its current room (a
        // room it is alone in, with no away member, goes when it leaves, which makes room).
        let frees_one = room_of(io, socket).is_some_and(|c| members(io, c).len() == 1);
        if self.rooms.len() - usize::from(frees_one) >= self.config.max_rooms
            && !self.evict_unattended(io)
        {
            self.stats.busy += 1;
            static ROOM_LIMIT: Sampler = Sampler::new();
            let client = io.client_addr(socket);
            ROOM_LIMIT.warn(
                "room limit reached",
                &[("rooms", &self.rooms.len()), ("client", &client)],
            );
            return Err(errors::SERVER_BUSY);
        }
        let code = self.rooms.fresh_code(io.rng()).ok_or(errors::SERVER_BUSY)?;
        self.leave(socket, io);
        self.stats.rooms_created += 1;
        let generation = self.rooms.create(code);
        let name = code.name();
        io.join(socket, &name);
        self.rooms.set_members(code, io.room_id(Nsp::MAIN, &name));
        let at = crate::timer::deadline(io.now(), self.config.room_ttl);
        let timer = io.set_timer(at, ChatTimer::Expire { code, generation });
        self.rooms.set_expiry(code, timer);
        Ok(format!("{{\"code\":\"{code}\"}}").into())
    }

    /// `joinRoom` behind the failed-join limits: a socket (or client address) that failed too
    /// often lately is answered `Too many attempts` without looking the code up.
    fn join_room_limited(
        &mut self,
        socket: SocketRef,
        args: &[&RawValue],
        io: &mut Io<'_, '_>,
    ) -> Result<Reply, &'static str> {
        // A join answers with the history: none while output is near its budget.
        if io.output_full() {
            return Err(self.busy());
        }
        let now = io.now();
        let addr = io.client_addr(socket);
        if let Some((per_socket, per_addr)) = &self.join_failures
            && (per_socket.exhausted(socket, now)
                || addr.is_some_and(|a| per_addr.exhausted(a, now)))
        {
            self.stats.limited_joins += 1;
            static JOIN_LIMIT: Sampler = Sampler::new();
            JOIN_LIMIT.warn("failed-join limit reached", &[("client", &addr)]);
            return Err(errors::TOO_MANY_ATTEMPTS);
        }
        // A member joining its own room again gets the history again: an answer as large as
        // the history for a request of a few bytes, so it counts like a failure.
        let repeat = Fields::of(args)
            .code()
            .is_ok_and(|code| room_of(io, socket) == Some(code));
        let result = self.join_room(socket, args, io);
        if (result.is_err() || repeat)
            && let Some((per_socket, per_addr)) = &mut self.join_failures
        {
            per_socket.fail(socket, now);
            if let Some(a) = addr {
                per_addr.fail(a, now);
            }
        }
        if result.is_ok() && !repeat {
            self.stats.joins += 1;
        }
        result
    }

    fn join_room(
        &mut self,
        socket: SocketRef,
        args: &[&RawValue],
        io: &mut Io<'_, '_>,
    ) -> Result<Reply, &'static str> {
        let code = Fields::of(args).code()?;
        let id = io.socket_id(socket).ok_or(errors::ROOM_NOT_FOUND)?;
        let current = room_of(io, socket);
        // Joining the room one is in changes nothing (the history comes again).
        if current != Some(code) {
            // Checked first, so a failed join does not cost the current room.
            if self.rooms.get(code).is_none() {
                return Err(errors::ROOM_NOT_FOUND);
            }
            // Seats are taken by members present: an away one's seat is free.
            if present(io, code) >= rooms::ROOM_CAPACITY {
                return Err(errors::ROOM_FULL);
            }
            if current.is_some() {
                self.leave(socket, io);
            }
            // The free seat may be an away member's: it loses it now (and is told when it
            // comes back), so a room never holds more than two members, away ones included.
            while members(io, code).len() >= rooms::ROOM_CAPACITY {
                let Some(away) = members(io, code)
                    .iter()
                    .copied()
                    .find(|m| !io.is_present(*m))
                else {
                    break;
                };
                unseat(away, code, errors::ROOM_FULL, io);
            }
            let name = code.name();
            io.join(socket, &name);
            // The room's handle, as Socket.IO has it now (it made the room at the first join).
            self.rooms.set_members(code, io.room_id(Nsp::MAIN, &name));
            // To the partner, and kept for an away member.
            io.emit_to_room(Nsp::MAIN, &name, Some(socket), "userJoined", &user_json(id));
        }
        // Written once, straight into the answer: a full history is a megabyte.
        let mut answer = String::from("{\"success\":true,\"messages\":[");
        self.rooms.write_history(code, &mut answer);
        answer.push_str("]}");
        Ok(answer.into())
    }

    fn send_message(
        &mut self,
        socket: SocketRef,
        args: &[&RawValue],
        io: &mut Io<'_, '_>,
    ) -> Result<Reply, &'static str> {
        let fields = Fields::of(args);
        let code = fields.code()?;
        // The room before the text: a refused message spends no rate-limit token.
        let room = self.rooms.get(code).ok_or(errors::ROOM_NOT_FOUND)?;
        let (name, members) = (code.name(), room.members);
        if !io
            .rooms_of(socket)
            .iter()
            .any(|r| r.as_bytes() == name.as_bytes())
        {
            return Err(errors::NOT_MEMBER);
        }
        let raw_text = message_text(&fields, self.config.max_message_chars)?;
        if io.output_full() {
            return Err(self.busy());
        }
        if let Some(rate) = self.config.message_rate {
            let now = io.now();
            let bucket = self
                .buckets
                .entry(socket)
                .or_insert_with(|| Bucket::full(rate, now));
            if !bucket.take(rate, now) {
                self.stats.limited_messages += 1;
                static MESSAGE_LIMIT: Sampler = Sampler::new();
                let client = io.client_addr(socket);
                MESSAGE_LIMIT.warn("message rate limit reached", &[("client", &client)]);
                return Err(errors::RATE_LIMITED);
            }
        }
        let sender = io.socket_id(socket).ok_or(errors::NOT_MEMBER)?;
        let message = &mut self.message_buf;
        write_message_json(message, sender.as_str(), &raw_text, io.unix_millis());
        let packets = io.event_packet(Nsp::MAIN, "newMessage", message, &[]);
        self.rooms.push_message(code, message);
        if let Some(members) = members {
            io.send_to_room_id(members, &packets);
        }
        self.stats.messages += 1;
        Ok(SUCCESS.into())
    }

    /// Counts a request refused because output is near its memory budget.
    fn busy(&mut self) -> &'static str {
        self.stats.output_full += 1;
        static OUTPUT_FULL: Sampler = Sampler::new();
        OUTPUT_FULL.warn(
            "output to clients near its share of --max-memory: refusing work",
            &[],
        );
        errors::SERVER_BUSY
    }

    fn leave_room(
        &mut self,
        socket: SocketRef,
        args: &[&RawValue],
        io: &mut Io<'_, '_>,
    ) -> Result<Reply, &'static str> {
        let code = Fields::of(args).code()?;
        if room_of(io, socket) != Some(code) {
            return Err(if self.rooms.get(code).is_some() {
                errors::NOT_MEMBER
            } else {
                errors::ROOM_NOT_FOUND
            });
        }
        self.leave(socket, io);
        Ok(SUCCESS.into())
    }

    /// Takes a socket out of its room: the partner is told (unless it was told when the
    /// socket went away), a room with no member left (present or away) is deleted.
    fn leave(&mut self, socket: SocketRef, io: &mut Io<'_, '_>) {
        let Some(code) = room_of(io, socket) else {
            return;
        };
        let told = !io.is_present(socket);
        let name = code.name();
        io.leave(socket, &name);
        if members(io, code).is_empty() {
            if let Some(timer) = self.rooms.remove(code).and_then(|r| r.expiry) {
                io.cancel_timer(timer);
            }
            return;
        }
        if !told {
            self.announce(socket, code, "userLeft", io);
        }
    }

    /// Tells the room's other members (present, and kept for away ones) `event {userId}`.
    fn announce(&mut self, socket: SocketRef, code: RoomCode, event: &str, io: &mut Io<'_, '_>) {
        let json = io.socket_id(socket).map_or_else(|| "{}".into(), user_json);
        io.emit_to_room(Nsp::MAIN, &code.name(), Some(socket), event, &json);
    }

    /// A member's transport dropped (it may come back): its partner is told it left and its
    /// seat is free; the room stays while it may come back.
    fn on_away(&mut self, socket: SocketRef, io: &mut Io<'_, '_>) {
        let Some(code) = room_of(io, socket) else {
            return;
        };
        self.announce(socket, code, "userLeft", io);
        if present(io, code) == 0
            && let Some(room) = self.rooms.get(code)
        {
            // Old entries go when the queue outgrows the rooms (so it stays bounded).
            if self.unattended.len() >= 2 * self.rooms.len() + 16 {
                let rooms = &self.rooms;
                self.unattended
                    .retain(|(c, g)| rooms.get(*c).is_some_and(|r| r.generation == *g));
            }
            self.unattended.push_back((code, room.generation));
        }
    }

    /// At `max_rooms`: deletes the oldest room whose members are all away (they get
    /// `roomUnavailable` if they come back), so rooms nobody is in cannot block new ones
    /// for a whole recovery window. False when there is none.
    fn evict_unattended(&mut self, io: &mut Io<'_, '_>) -> bool {
        while let Some((code, generation)) = self.unattended.pop_front() {
            let live = self
                .rooms
                .get(code)
                .is_some_and(|r| r.generation == generation);
            if !live || present(io, code) > 0 {
                continue;
            }
            self.stats.evicted += 1;
            for away in members(io, code).to_vec() {
                unseat(away, code, errors::SERVER_BUSY, io);
            }
            if let Some(timer) = self.rooms.remove(code).and_then(|r| r.expiry) {
                io.cancel_timer(timer);
            }
            return true;
        }
        false
    }

    /// A socket came back (it has had every event it missed): still in its room, its seat
    /// is still its own (a join takes an away member's seat away, `unseat`), and its partner is
    /// told it joined, with the same id.
    fn on_recovered(&mut self, socket: SocketRef, io: &mut Io<'_, '_>) {
        if let Some(code) = room_of(io, socket) {
            self.announce(socket, code, "userJoined", io);
        }
    }

    fn on_expire(&mut self, code: RoomCode, generation: u64, io: &mut Io<'_, '_>) {
        if self.rooms.expire(code, generation).is_none() {
            return;
        }
        self.stats.rooms_expired += 1;
        let name = code.name();
        io.emit_to_room(Nsp::MAIN, &name, None, "roomExpired", "{}");
        for member in members(io, code).to_vec() {
            io.leave(member, &name);
        }
    }
}

impl App for Chat {
    type Timer = ChatTimer;

    fn metrics(&self, out: &mut String) {
        use crate::metrics::{counter, gauge, labelled_counter};
        let s = &self.stats;
        let rooms = (self.rooms.len(), "Live chat rooms.");
        let made = [s.rooms_created, s.rooms_expired, s.joins, s.messages];
        write_room_metrics(out, rooms, made);
        counter(
            out,
            "pairchat_rooms_evicted_total",
            "Rooms whose members were all away, deleted at --max-rooms to make way.",
            s.evicted,
        );
        labelled_counter(
            out,
            "pairchat_limited_total",
            "Chat requests refused by a limit, by limit.",
            "limit",
            [
                ("join_failures", s.limited_joins),
                ("message_rate", s.limited_messages),
                ("max_rooms", s.busy),
                ("max_memory", s.output_full),
            ],
        );
        gauge(
            out,
            "pairchat_history_bytes",
            "Bytes of room history kept, all rooms together (per-message overhead included).",
            self.rooms.history_bytes() as u64,
        );
        gauge(
            out,
            "pairchat_history_limit_bytes",
            "The history share of --max-memory: past it the oldest messages across rooms go.",
            self.rooms.max_history_bytes().min(u64::MAX as usize) as u64,
        );
        counter(
            out,
            "pairchat_history_trimmed_total",
            "Messages dropped, oldest first across rooms, to keep history within its share.",
            self.rooms.trimmed(),
        );
    }

    fn handle(&mut self, event: SioEvent<'_, ChatTimer>, io: &mut Io<'_, '_>) {
        match event {
            SioEvent::Connect {
                socket,
                recovered: true,
                ..
            } => self.on_recovered(socket, io),
            // The embedded chat has no sockets of its own (the cluster's Redis link has).
            SioEvent::Connect { .. }
            | SioEvent::Start { .. }
            | SioEvent::TurnEnd
            | SioEvent::Socket { .. } => {}
            SioEvent::Away { socket, .. } => self.on_away(socket, io),
            // One process: no other node's sockets to claim (no pid prefix, no claims).
            SioEvent::Claim { session, nsp, .. } => io.refuse_claim(session, nsp),
            SioEvent::Event(e) => self.on_event(e, io),
            SioEvent::Disconnect { socket, .. } => {
                self.leave(socket, io);
                self.buckets.remove(&socket);
                if let Some((per_socket, _)) = &mut self.join_failures {
                    per_socket.forget(socket);
                }
            }
            SioEvent::Timer(ChatTimer::Expire { code, generation }) => {
                self.on_expire(code, generation, io)
            }
        }
    }
}

pub(crate) const SUCCESS: &str = "{\"success\":true}";

/// The room a socket is in: its only Socket.IO room (the chat puts sockets in no other).
pub(crate) fn room_of<T>(io: &SioIo<'_, '_, T>, socket: SocketRef) -> Option<RoomCode> {
    io.rooms_of(socket).first().and_then(|r| RoomCode::parse(r))
}

/// This process's members of a room, in joining order, away ones included.
pub(crate) fn members<'a, T>(io: &'a SioIo<'_, '_, T>, code: RoomCode) -> &'a [SocketRef] {
    io.room_members(Nsp::MAIN, &code.name())
}

/// Takes an away member out of its room (its seat taken, or the room deleted to make way):
/// `roomUnavailable {code, error}` is kept for it (it gets it if it comes back).
fn unseat(away: SocketRef, code: RoomCode, error: &str, io: &mut Io<'_, '_>) {
    let mut json = format!("{{\"code\":\"{code}\",\"error\":");
    write_json_string(&mut json, error);
    json.push('}');
    io.emit(away, "roomUnavailable", &json);
    io.leave(away, &code.name());
}

/// How many members of a room are present (the seats taken).
fn present(io: &Io<'_, '_>, code: RoomCode) -> usize {
    members(io, code)
        .iter()
        .filter(|m| io.is_present(**m))
        .count()
}

/// The text of a `sendMessage`, checked (a string, not blank, not too long), as the JSON
/// string that goes out: the client's as it came, unless it used escapes: then re-encoded
/// compactly (`\u0061` is six bytes for one character).
pub(crate) fn message_text<'a>(
    fields: &Fields<'a>,
    max_chars: usize,
) -> Result<Cow<'a, str>, &'static str> {
    let (text, raw_text) = fields.text()?;
    // Blank as JavaScript's `trim` sees it (a NestJS gateway's check): BOM included.
    if text
        .trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
        .is_empty()
    {
        return Err(errors::TEXT_EMPTY);
    }
    if text.chars().count() > max_chars {
        return Err(errors::TEXT_TOO_LONG);
    }
    if !raw_text.contains('\\') {
        return Ok(Cow::Borrowed(raw_text));
    }
    let mut compact = String::with_capacity(text.len() + 2);
    write_json_string(&mut compact, &text);
    Ok(Cow::Owned(compact))
}

/// Writes `{"sender":…,"text":…,"timestamp":…}` over `out` (the wire JSON, kept as history
/// as is). `raw_text` is the client's JSON string, valid JSON already.
pub(crate) fn write_message_json(out: &mut String, sender: &str, raw_text: &str, timestamp: u64) {
    out.clear();
    out.push_str("{\"sender\":\"");
    out.push_str(sender);
    out.push_str("\",\"text\":");
    out.push_str(raw_text);
    out.push_str(",\"timestamp\":");
    push_decimal(out, timestamp);
    out.push('}');
}

/// The series one process and a cluster node both report: the rooms it holds (how many, and
/// what they are), and rooms created, rooms expired, joins and messages.
pub(crate) fn write_room_metrics(out: &mut String, rooms: (usize, &str), counts: [u64; 4]) {
    use crate::metrics::{counter, gauge};
    gauge(out, "pairchat_rooms", rooms.1, rooms.0 as u64);
    let [created, expired, joins, messages] = counts;
    counter(
        out,
        "pairchat_rooms_created_total",
        "Rooms created.",
        created,
    );
    counter(
        out,
        "pairchat_rooms_expired_total",
        "Rooms expired.",
        expired,
    );
    counter(out, "pairchat_joins_total", "Successful joinRoom.", joins);
    counter(out, "pairchat_messages_total", "Messages sent.", messages);
}

/// What an event's ack carries when it succeeds: mostly a constant.
pub(crate) type Reply = Cow<'static, str>;

/// `{"userId":"<id>"}` (`userJoined`, `userLeft`).
pub(crate) fn user_json(id: impl std::fmt::Display) -> String {
    format!("{{\"userId\":\"{id}\"}}")
}

pub(crate) fn error_json(message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 12);
    out.push_str("{\"error\":");
    write_json_string(&mut out, message);
    out.push('}');
    out
}

#[cfg(test)]
mod tests;
