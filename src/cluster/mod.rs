//! The chat on a cluster (`--redis`): several pairchat nodes share one room space through Redis.
//!
//! The contract is the embedded chat's (`crate::chat`), event for event; what changes is
//! where a room lives. Redis holds each room (its id, expiry and two seats, each seat a node
//! and a socket id), its history and which node holds which seats; every change is one Lua
//! script, so two nodes never race on a seat or a code. Each node keeps in memory only its own
//! members, in the Socket.IO room named by the code, as the embedded chat does.
//!
//! Delivery: a script that changes a room tells the *other* seat's node, by publishing to that
//! node's channel (`pairchat:to:<node>`: `m` a message, `j` joined, `l` left, `u` a seat taken
//! from an away member); the calling node handles its own members when the reply comes. The
//! node's subscription and its commands share one RESP3 connection (`link`), so a node sees
//! every room's changes in the one order Redis ran them: a reply sent after a message was
//! acknowledged is never shown before it. A room whose two members are on this node (both
//! present) needs no one else: its messages are delivered and acknowledged at once, and only
//! appended to the history in Redis (pipelined, never waited for).
//!
//! Liveness: each node refreshes `pairchat:alive:<node>` (TTL `NODE_TTL`) every second and
//! runs the reaper, which marks the seats of nodes whose key expired away: members on surviving
//! nodes get `userLeft` within `NODE_TTL` plus a second of a node's death, and the seats are
//! freed once the recovery window has passed without their clients coming back. When the link to
//! Redis is made again, the node tells Redis exactly which seats it holds (`resync`): rooms
//! Redis lost are made again, seats taken meanwhile are lost (`roomUnavailable`).
//!
//! Recovery across nodes: a client back on another node with its socket's pid claims it
//! (`claim`): the node it lives on (`pairchat:pid:<pid>` if it moved, else the one whose id
//! starts the pid) moves its seat with `move`, which tells the claiming node `M` first so every
//! later event of the room reaches the socket arriving there, then hands the socket over with
//! the events the client missed (`H`).
//!
//! A dead node's sockets come back too, with the messages their clients missed: those are in
//! the room's history, which Redis numbers (`seq`), and every event a node sends to a room's
//! members carries the room's message count in its offset (`recovery::tagged`). Each socket in a
//! room has a record (`Record`, in `pairchat:pid:<pid>`) that says how to read its client's
//! last offset; a node claiming the socket of a dead node (its alive key gone: a claim waits for
//! that) takes its seat over and replays the history after what the client has (`adopt`).
//! Presence events the client missed there (`userJoined`, `userLeft`) are not replayed. A
//! socket in no room has no record: its client gets a fresh socket.
//!
//! While Redis is away: members whose partner is on this node keep chatting (the history of
//! those messages is not kept); `createRoom`, `joinRoom` and messages to another node's
//! member answer `Server busy` at once, and requests in flight when the link broke answer it
//! within `--redis-timeout`.

pub mod link;
pub mod resp;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde_json::value::RawValue;

use crate::chat::args::Fields;
use crate::chat::limits::{Bucket, Failures};
use crate::chat::rooms::{MAX_HISTORY_BYTES, ROOM_CAPACITY, RoomCode};
use crate::chat::{
    ChatConfig, Reply, SUCCESS, error_json, errors, members, message_text, room_of, user_json,
    write_message_json, write_room_metrics,
};
use crate::engine::{Outgoing, SessionId, Sid};
use crate::log::Sampler;
use crate::sio::packet::write_json_string;
use crate::sio::recovery::{self, RecoveryConfig};
use crate::sio::{Adopted, App, EventData, Nsp, SioEvent, SioIo, SocketRef};
use crate::timer::{Millis, TimerId, deadline};
use link::{Link, LinkEvent, RedisConfig};
use resp::Reply as Resp;

/// How long a node's alive key lives: a node that has not refreshed it for this long is dead,
/// and its seats are freed. Five seconds: five refreshes (one a second), so a slow loop turn or
/// a busy Redis never makes a live node look dead, and short enough that a partner hears of a
/// dead node's member within about six seconds (a socket.io client notices a dead server only
/// after its heartbeat, 45 s by default). A node paused longer (SIGSTOP, a frozen VM) finds it
/// was reaped at its next refresh and puts its seats back (`Op::Registered`).
pub const NODE_TTL: Duration = Duration::from_secs(5);
/// How often the link is checked (timeouts, reconnects).
const TICK: Duration = Duration::from_millis(250);
/// Every this many ticks, the node refreshes its alive key and runs the reaper.
const TICKS_PER_BEAT: u32 = 4;
/// How long Redis keeps a room's keys past its expiry, in case no node is left to delete them.
const KEEP_AFTER_EXPIRY: u64 = 60_000;
/// Characters of a node id (from the sid alphabet: 36 random bits).
pub const NODE_ID_LEN: usize = 6;
/// Commands waiting on Redis past which requests that add more answer `Server busy`
/// (`redis_behind`).
const MAX_BEHIND: usize = 16384;
/// Codes drawn for one `createRoom` before it answers `Server busy`.
const CODE_TRIES: u8 = 16;

/// The scripts, loaded when the link is made; `Script` indexes them.
static SCRIPTS: [&str; 13] = [
    concat!(
        include_str!("lua/prelude.lua"),
        include_str!("lua/create.lua")
    ),
    concat!(
        include_str!("lua/prelude.lua"),
        include_str!("lua/join.lua")
    ),
    concat!(
        include_str!("lua/prelude.lua"),
        include_str!("lua/send.lua")
    ),
    concat!(
        include_str!("lua/prelude.lua"),
        include_str!("lua/append.lua")
    ),
    concat!(
        include_str!("lua/prelude.lua"),
        include_str!("lua/leave.lua")
    ),
    concat!(
        include_str!("lua/prelude.lua"),
        include_str!("lua/expire.lua")
    ),
    concat!(
        include_str!("lua/prelude.lua"),
        include_str!("lua/reap.lua")
    ),
    concat!(
        include_str!("lua/prelude.lua"),
        include_str!("lua/resync.lua")
    ),
    concat!(
        include_str!("lua/prelude.lua"),
        include_str!("lua/nodes.lua")
    ),
    concat!(
        include_str!("lua/prelude.lua"),
        include_str!("lua/move.lua")
    ),
    concat!(
        include_str!("lua/prelude.lua"),
        include_str!("lua/unpid.lua")
    ),
    concat!(
        include_str!("lua/prelude.lua"),
        include_str!("lua/claim.lua")
    ),
    concat!(
        include_str!("lua/prelude.lua"),
        include_str!("lua/adopt.lua")
    ),
];

#[derive(Debug, Clone, Copy)]
enum Script {
    Create,
    Join,
    Send,
    Append,
    Leave,
    Expire,
    Reap,
    Resync,
    Nodes,
    Move,
    Unpid,
    Claim,
    Adopt,
}

/// Settings of the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Where Redis is.
    pub redis: RedisConfig,
    /// The address other nodes reach this one at (`--advertise`), registered in Redis.
    pub advertise: String,
    /// Connection state recovery's settings (the Socket.IO layer's): how long a dead node's
    /// seats wait for their clients to come back elsewhere, how much a recovery may replay.
    pub recovery: RecoveryConfig,
}

/// The cluster's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterTimer {
    /// Check the link; every `TICKS_PER_BEAT`, the heartbeat and the reaper.
    Tick,
    /// A room's time is up (every node with a member fires its own, at the same `exp`).
    Expire {
        /// The room.
        code: RoomCode,
        /// Which room of that code.
        id: u64,
    },
}

/// A command in flight, and what to do with its reply.
#[derive(Debug)]
enum Op {
    Create {
        socket: SocketRef,
        ack: Option<u64>,
        code: RoomCode,
        sid: Sid,
        id: u64,
        exp: u64,
        tries: u8,
    },
    Join {
        socket: SocketRef,
        ack: Option<u64>,
        code: RoomCode,
        sid: Sid,
        repeat: bool,
    },
    Send {
        socket: SocketRef,
        ack: Option<u64>,
        code: RoomCode,
        message: String,
    },
    Back {
        socket: SocketRef,
        code: RoomCode,
    },
    Resync,
    /// The live nodes' addresses.
    Nodes,
    /// The node's registration: `1` if it had been reaped.
    Registered,
    /// Whether a room this socket is not in lives (`not_member`).
    Exists {
        socket: SocketRef,
        ack: Option<u64>,
    },
    /// The cluster's relay secret.
    Secret,
    /// Where a claimed socket lives (`claim`).
    Owner {
        tag: u64,
    },
    /// A dead node's socket taken over (`adopt`).
    Adopt {
        tag: u64,
        code: RoomCode,
        sid: Sid,
        pid: Sid,
        has: u64,
    },
    /// A claim published to the socket's node (`0`: no node heard it).
    Claim {
        tag: u64,
    },
    /// A member's seat moved to the node that claimed it (`move`): hand the socket over.
    Move {
        socket: SocketRef,
        sid: Sid,
        pid: Sid,
        tag: u64,
        /// The claiming node.
        to: String,
        offset: Option<u64>,
        code: RoomCode,
    },
    /// A room's history appended (`append`): its message count now.
    Appended {
        code: RoomCode,
    },
    /// Nothing waits for it (an error is logged).
    Ignore,
}

/// A socket's requests waiting on Redis, and those queued behind them.
#[derive(Debug, Default)]
struct Queue {
    /// Requests of the socket waiting on Redis.
    pending: usize,
    /// Those are all `sendMessage`: another one goes to Redis at once, behind them on the
    /// link (Redis runs them in order, and their replies come in order).
    only_sends: bool,
    waiting: VecDeque<Queued>,
}

impl Queue {
    /// Whether a request named `name` may start now rather than wait its turn.
    fn may_start(&self, name: &str) -> bool {
        self.waiting.is_empty()
            && (self.pending == 0
                || self.only_sends && name == "sendMessage" && self.pending < MAX_PIPELINED)
    }
}

/// A request kept for later: its event name, arguments (a JSON array) and ack id.
#[derive(Debug)]
struct Queued {
    name: Box<str>,
    args: Box<str>,
    ack: Option<u64>,
}

/// Requests a socket may queue behind one waiting on Redis; past it they answer `Server busy`.
const MAX_QUEUED: usize = 32;
/// A socket's `sendMessage` requests on their way to Redis at once, at most.
const MAX_PIPELINED: usize = 4;

/// A room with members on this node.
#[derive(Debug)]
struct Local {
    id: u64,
    /// When it expires, in Unix ms (the same on every node).
    exp: u64,
    timer: TimerId,
    /// The partner's seat when it is on another node (`<node> <sid>`, `… a` while away), as
    /// this node last heard: `resync` puts it back if Redis lost the room.
    remote: Option<String>,
    /// The room's messages so far (as Redis numbers them: `seq`), the tag of the offsets of
    /// the room's events (`recovery::tagged`): what a client has, for another node to know.
    seq: u64,
}

/// A socket of another node this node claimed for a client that came back here.
#[derive(Debug)]
struct Claiming {
    session: SessionId,
    nsp: Nsp,
    pid: Sid,
    /// The last offset the client saw.
    offset: Option<u64>,
    started: Millis,
    /// When it is given up (a fresh socket).
    deadline: Millis,
    /// The socket on its way (after `M`).
    arriving: Option<Arriving>,
    /// Its record (`pairchat:pid:<pid>`), as the claim found it.
    record: Option<String>,
    /// Its node heard no one on its channel (dead, or just cut off from Redis): the claim
    /// looks again at the next tick, until that node's alive key is gone.
    look_again: bool,
}

/// A socket whose seat moved here for a claim, registered (away) until the events it missed
/// come.
#[derive(Debug, Clone, Copy)]
struct Arriving {
    socket: SocketRef,
    sid: Sid,
    code: RoomCode,
    /// Its member was away (its partner heard `userLeft`).
    away: bool,
    /// The room's messages at the move.
    seq: u64,
}

/// How long `pairchat:pid:<pid>` names the node a socket moved to, at most: its node deletes
/// it when the socket is gone, so this only bounds what a dead node leaves behind. A socket
/// that lives longer on a node it moved to cannot be claimed from there any more (its client,
/// back elsewhere, gets a fresh socket).
const PID_TTL: Duration = Duration::from_secs(24 * 3600);

/// Claims waiting at once; more connect fresh sockets.
const MAX_CLAIMS: usize = 1024;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
struct Stats {
    rooms_created: u64,
    rooms_expired: u64,
    messages: u64,
    joins: u64,
    limited_joins: u64,
    limited_messages: u64,
    /// Requests refused because Redis was unreachable (or too slow).
    unavailable: u64,
    output_full: u64,
    errors: u64,
    /// Sockets recovered here from another node.
    claims_recovered: u64,
    /// Claims that ended in a fresh socket (owner dead or unknown, events lost, too slow).
    claims_failed: u64,
    /// Sockets handed over to another node.
    handed_over: u64,
}

/// The chat on a cluster.
pub struct ClusterChat {
    config: ChatConfig,
    /// This process's id in the cluster: random, new at every start; every Engine.IO sid this
    /// node makes starts with it (`Config::sid_prefix`), so any node can tell where a session
    /// lives.
    node: String,
    advertise: String,
    /// The other live nodes' addresses, by id (refreshed every second).
    peers: HashMap<String, SocketAddr>,
    /// The secret that marks requests relayed between nodes (kept in Redis).
    secret: Option<String>,
    link: Link<Op>,
    events: Vec<LinkEvent<Op>>,
    rooms: HashMap<RoomCode, Local>,
    /// Members back from away whose seat Redis has not confirmed yet.
    unseated: HashSet<SocketRef>,
    /// Sockets with a request waiting on Redis, and the requests they sent after it.
    queues: HashMap<SocketRef, Queue>,
    join_failures: Option<(Failures<SocketRef>, Failures<IpAddr>)>,
    buckets: HashMap<SocketRef, Bucket>,
    ticks: u32,
    stats: Stats,
    message_buf: String,
    /// `--max-history` and the per-room byte bound, as script arguments.
    history_args: (String, String),
    /// Messages of rooms whose members are both here, delivered this turn: their history
    /// goes to Redis at the turn's end (`flush_appends`).
    appends: Vec<(RoomCode, u64, String)>,
    /// Sockets of other nodes claimed for clients that came back here, by tag.
    claims: HashMap<u64, Claiming>,
    last_tag: u64,
    /// Sockets moved here from another node, with their pids: `pairchat:pid:<pid>` names
    /// this node until they are gone.
    moved_in: HashMap<SocketRef, Sid>,
    /// The claims in `claims`, by pid.
    claiming: HashMap<Sid, u64>,
    recovery: RecoveryConfig,
}

type Io<'a, 'b> = SioIo<'a, 'b, ClusterTimer>;

/// A socket handed over: its id, the bytes restores sent it again lately, the events its
/// client missed (with their offsets).
type Handed<'a> = (Sid, usize, &'a [(u64, Outgoing)]);

impl ClusterChat {
    /// A node with no rooms; it connects when the loop starts.
    pub fn new(config: ChatConfig, cluster: ClusterConfig) -> Self {
        let node = Sid::random(&mut rand::rng()).as_str()[..NODE_ID_LEN].to_string();
        let channel = format!("pairchat:to:{node}");
        let history_args = (
            config.max_history.to_string(),
            MAX_HISTORY_BYTES.to_string(),
        );
        let join_failures = config
            .join_failures
            .map(|r| (Failures::new(r), Failures::new(r)));
        ClusterChat {
            config,
            link: Link::new(cluster.redis, &SCRIPTS, channel),
            node,
            advertise: cluster.advertise,
            peers: HashMap::new(),
            secret: None,
            events: Vec::new(),
            rooms: HashMap::new(),
            unseated: HashSet::new(),
            queues: HashMap::new(),
            join_failures,
            buckets: HashMap::new(),
            ticks: 0,
            stats: Stats::default(),
            message_buf: String::new(),
            history_args,
            appends: Vec::new(),
            claims: HashMap::new(),
            last_tag: 0,
            moved_in: HashMap::new(),
            claiming: HashMap::new(),
            recovery: cluster.recovery,
        }
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether the link to Redis is up.
    pub fn redis_up(&self) -> bool {
        self.link.is_up()
    }

    /// A request. A socket's requests are handled in the order it sent them, as by one
    /// process: while one waits on Redis, those after it wait too (`queues`).
    fn on_event(&mut self, e: EventData<'_>, io: &mut Io<'_, '_>) {
        if let Some(q) = (self.queues.get_mut(&e.socket)).filter(|q| !q.may_start(e.name)) {
            if q.waiting.len() >= MAX_QUEUED {
                if let Some(id) = e.ack {
                    io.ack(e.socket, id, &error_json(errors::SERVER_BUSY));
                }
                return;
            }
            let mut args = String::from("[");
            for (i, a) in e.args.iter().enumerate() {
                if i > 0 {
                    args.push(',');
                }
                args.push_str(a.get());
            }
            args.push(']');
            q.waiting.push_back(Queued {
                name: e.name.into(),
                args: args.into(),
                ack: e.ack,
            });
            return;
        }
        self.request(e.socket, e.name, e.args, e.ack, io);
    }

    fn request(
        &mut self,
        socket: SocketRef,
        name: &str,
        args: &[&RawValue],
        ack: Option<u64>,
        io: &mut Io<'_, '_>,
    ) {
        let reply = match name {
            "createRoom" => self.create_room(socket, ack, io),
            "joinRoom" => self.join_room(socket, args, ack, io),
            "sendMessage" => self.send_message(socket, args, ack, io),
            "leaveRoom" => self.leave_room(socket, args, ack, io),
            _ => Err(errors::UNKNOWN_EVENT),
        };
        match reply {
            Ok(None) => {
                // It waits on Redis.
                let q = self.queues.entry(socket).or_default();
                q.only_sends = (q.pending == 0 || q.only_sends) && name == "sendMessage";
                q.pending += 1;
            }
            answered => self.answer(socket, ack, answered, io),
        }
    }

    /// Whether requests of the socket wait on Redis.
    fn pending(&self, socket: SocketRef) -> bool {
        self.queues.get(&socket).is_some_and(|q| q.pending > 0)
    }

    /// Redis is behind this node: its oldest command has waited a quarter of
    /// `--redis-timeout`, or `MAX_BEHIND` commands wait. Work that adds more is refused
    /// (`Server busy`) until it catches up, rather than queued until the link is given up and
    /// the queue lost with it.
    fn redis_behind(&self, now: Millis) -> bool {
        let quarter = self.link.timeout().as_millis() as Millis / 4;
        self.link.waiting() >= MAX_BEHIND || self.link.lag(now) > quarter
    }

    /// Sends the turn's history appends: one script per room, its messages in order.
    fn flush_appends(&mut self, now: Millis) {
        if self.appends.is_empty() {
            return;
        }
        let mut appends = std::mem::take(&mut self.appends);
        // Stable: each room's messages keep their order.
        appends.sort_by_key(|(code, _, _)| *code);
        let (max, max_bytes) = (&self.history_args.0, &self.history_args.1);
        for room in appends.chunk_by(|a, b| a.0 == b.0) {
            let code = room[0].0;
            let name = code.name();
            let keep = self
                .rooms
                .get(&code)
                .map_or(0, |r| r.exp + KEEP_AFTER_EXPIRY)
                .to_string();
            let first = room[0].1.to_string();
            let mut args: Vec<&[u8]> = Vec::with_capacity(5 + room.len());
            args.extend_from_slice(&[
                name.as_bytes(),
                max.as_bytes(),
                max_bytes.as_bytes(),
                keep.as_bytes(),
                first.as_bytes(),
            ]);
            args.extend(room.iter().map(|(_, _, m)| m.as_bytes()));
            let op = Op::Appended { code };
            let _ = self.link.script(Script::Append as usize, &args, op, now);
        }
        appends.clear();
        self.appends = appends;
    }

    /// Counts a request refused because Redis is unreachable.
    fn unavailable(&mut self) -> &'static str {
        self.stats.unavailable += 1;
        static UNAVAILABLE: Sampler = Sampler::new();
        UNAVAILABLE.warn("redis unavailable: refusing work", &[]);
        errors::SERVER_BUSY
    }

    fn create_room(
        &mut self,
        socket: SocketRef,
        ack: Option<u64>,
        io: &mut Io<'_, '_>,
    ) -> Result<Option<Reply>, &'static str> {
        let sid = io.socket_id(socket).ok_or(errors::SERVER_BUSY)?;
        if io.output_full() {
            self.stats.output_full += 1;
            return Err(errors::SERVER_BUSY);
        }
        if self.rooms.len() >= self.config.max_rooms {
            return Err(errors::SERVER_BUSY);
        }
        if self.redis_behind(io.now()) {
            return Err(self.unavailable());
        }
        let id = rand::RngExt::random::<u64>(io.rng()) >> 1;
        let exp = io.unix_millis() + self.config.room_ttl.as_millis() as u64;
        self.try_create(socket, ack, sid, id, exp, 0, io)
    }

    #[allow(clippy::too_many_arguments)]
    fn try_create(
        &mut self,
        socket: SocketRef,
        ack: Option<u64>,
        sid: Sid,
        id: u64,
        exp: u64,
        tries: u8,
        io: &mut Io<'_, '_>,
    ) -> Result<Option<Reply>, &'static str> {
        let code = RoomCode::random(io.rng());
        let op = Op::Create {
            socket,
            ack,
            code,
            sid,
            id,
            exp,
            tries,
        };
        let (name, id_s, exp_s, keep) = (
            code.name(),
            id.to_string(),
            exp.to_string(),
            (exp + KEEP_AFTER_EXPIRY).to_string(),
        );
        let deadline = self.link.deadline(io.unix_millis()).to_string();
        let args: [&[u8]; 7] = [
            name.as_bytes(),
            self.node.as_bytes(),
            sid.as_str().as_bytes(),
            id_s.as_bytes(),
            exp_s.as_bytes(),
            keep.as_bytes(),
            deadline.as_bytes(),
        ];
        let sent = self
            .link
            .script(Script::Create as usize, &args, op, io.now());
        self.waits(sent)
    }

    fn join_room(
        &mut self,
        socket: SocketRef,
        args: &[&RawValue],
        ack: Option<u64>,
        io: &mut Io<'_, '_>,
    ) -> Result<Option<Reply>, &'static str> {
        if io.output_full() {
            self.stats.output_full += 1;
            return Err(errors::SERVER_BUSY);
        }
        if self.redis_behind(io.now()) {
            return Err(self.unavailable());
        }
        let now = io.now();
        let addr = io.client_addr(socket);
        if let Some((per_socket, per_addr)) = &self.join_failures
            && (per_socket.exhausted(socket, now)
                || addr.is_some_and(|a| per_addr.exhausted(a, now)))
        {
            self.stats.limited_joins += 1;
            return Err(errors::TOO_MANY_ATTEMPTS);
        }
        let code = match Fields::of(args).code() {
            Ok(code) => code,
            Err(e) => {
                self.join_failed(socket, io);
                return Err(e);
            }
        };
        let sid = io.socket_id(socket).ok_or(errors::ROOM_NOT_FOUND)?;
        let repeat = room_of(io, socket) == Some(code);
        let op = Op::Join {
            socket,
            ack,
            code,
            sid,
            repeat,
        };
        let name = code.name();
        let deadline = self.link.deadline(io.unix_millis()).to_string();
        let args: [&[u8]; 4] = [
            name.as_bytes(),
            self.node.as_bytes(),
            sid.as_str().as_bytes(),
            deadline.as_bytes(),
        ];
        let sent = self.link.script(Script::Join as usize, &args, op, now);
        self.waits(sent)
    }

    fn join_failed(&mut self, socket: SocketRef, io: &Io<'_, '_>) {
        let now = io.now();
        if let Some((per_socket, per_addr)) = &mut self.join_failures {
            per_socket.fail(socket, now);
            if let Some(a) = io.client_addr(socket) {
                per_addr.fail(a, now);
            }
        }
    }

    fn send_message(
        &mut self,
        socket: SocketRef,
        args: &[&RawValue],
        ack: Option<u64>,
        io: &mut Io<'_, '_>,
    ) -> Result<Option<Reply>, &'static str> {
        let fields = Fields::of(args);
        let code = fields.code()?;
        if room_of(io, socket) != Some(code) || self.unseated.contains(&socket) {
            return self.not_member(socket, code, ack, io);
        }
        let raw_text = message_text(&fields, self.config.max_message_chars)?;
        if io.output_full() {
            self.stats.output_full += 1;
            return Err(errors::SERVER_BUSY);
        }
        if self.redis_behind(io.now()) {
            return Err(self.unavailable());
        }
        if let Some(rate) = self.config.message_rate {
            let now = io.now();
            let bucket = self
                .buckets
                .entry(socket)
                .or_insert_with(|| Bucket::full(rate, now));
            if !bucket.take(rate, now) {
                self.stats.limited_messages += 1;
                return Err(errors::RATE_LIMITED);
            }
        }
        let sender = io.socket_id(socket).ok_or(errors::NOT_MEMBER)?;
        let mut message = std::mem::take(&mut self.message_buf);
        write_message_json(&mut message, sender.as_str(), &raw_text, io.unix_millis());
        // Both seats here and taken: no other node needs to know now.
        let seated_here = members(io, code)
            .iter()
            .filter(|m| io.is_present(**m) && !io.is_moving(**m) && !self.unseated.contains(m))
            .count();
        // Not past the room's messages still on their way through Redis, though: it goes the
        // same way, behind them (and Redis numbers the room's messages in that order).
        let waiting = members(io, code).iter().any(|m| self.pending(*m));
        // And Redis has both seats here (a seat it says is elsewhere is not this socket's).
        let remote = self.rooms.get(&code).is_none_or(|r| r.remote.is_some());
        if seated_here == ROOM_CAPACITY && !waiting && !remote {
            // Its history goes to Redis at the turn's end, with the room's other messages of
            // the turn (without Redis the history misses it; the members still get it).
            // Numbered as Redis will number it (no one else adds to the room meanwhile).
            if self.link.is_up()
                && let Some(local) = self.rooms.get_mut(&code)
            {
                local.seq += 1;
                self.appends.push((code, local.seq, message.clone()));
            }
            self.tagged(code, io, |io| deliver(code, &message, io));
            self.message_buf = message;
            self.stats.messages += 1;
            return Ok(Some(SUCCESS.into()));
        }
        // Whatever this room's members here said before goes to Redis before this.
        self.flush_appends(io.now());
        let name = code.name();
        let (max, max_bytes) = (&self.history_args.0, &self.history_args.1);
        let keep = self
            .rooms
            .get(&code)
            .map_or(0, |r| r.exp + KEEP_AFTER_EXPIRY)
            .to_string();
        let deadline = self.link.deadline(io.unix_millis()).to_string();
        let args: [&[u8]; 8] = [
            name.as_bytes(),
            self.node.as_bytes(),
            sender.as_str().as_bytes(),
            message.as_bytes(),
            max.as_bytes(),
            max_bytes.as_bytes(),
            keep.as_bytes(),
            deadline.as_bytes(),
        ];
        let op = Op::Send {
            socket,
            ack,
            code,
            message: message.clone(),
        };
        let sent = self.link.script(Script::Send as usize, &args, op, io.now());
        self.message_buf = message;
        self.waits(sent)
    }

    fn leave_room(
        &mut self,
        socket: SocketRef,
        args: &[&RawValue],
        ack: Option<u64>,
        io: &mut Io<'_, '_>,
    ) -> Result<Option<Reply>, &'static str> {
        let code = Fields::of(args).code()?;
        if room_of(io, socket) != Some(code) {
            return self.not_member(socket, code, ack, io);
        }
        self.leave(socket, io);
        Ok(Some(SUCCESS.into()))
    }

    /// The answer to a request for a room the socket is not in: `Not a member` if the room
    /// lives, else `Room not found`, as one process answers. Whether it lives is Redis's to
    /// say when no member of it is on this node (`Op::Exists`).
    fn not_member(
        &mut self,
        socket: SocketRef,
        code: RoomCode,
        ack: Option<u64>,
        io: &mut Io<'_, '_>,
    ) -> Result<Option<Reply>, &'static str> {
        if self.rooms.contains_key(&code) {
            return Err(errors::NOT_MEMBER);
        }
        let key = format!("pairchat:room:{code}");
        let op = Op::Exists { socket, ack };
        let sent = self.link.send(&[b"EXISTS", key.as_bytes()], op, io.now());
        self.waits(sent)
    }

    /// A request whose command went to Redis waits for its reply (`Ok(None)`); one that could
    /// not go answers `Server busy`.
    fn waits(&mut self, sent: Result<(), Op>) -> Result<Option<Reply>, &'static str> {
        match sent {
            Ok(()) => Ok(None),
            Err(_) => Err(self.unavailable()),
        }
    }

    /// Takes a socket out of its room for good: a partner here is told (unless it was told
    /// when the socket went away), Redis frees the seat (and tells a partner elsewhere).
    fn leave(&mut self, socket: SocketRef, io: &mut Io<'_, '_>) {
        let Some(code) = room_of(io, socket) else {
            return;
        };
        let told = !io.is_present(socket) || self.unseated.remove(&socket);
        let name = code.name();
        io.leave(socket, &name);
        if !told {
            self.announce(socket, code, "userLeft", io);
        }
        self.forget_if_empty(code, io);
        self.tell_seat(socket, code, "gone", Op::Ignore, io);
        // Its record (`Record`) names a seat it does not have any more.
        if let Some(pid) = io.pid_of(socket) {
            self.unpid(pid, io);
        }
    }

    /// Runs the `leave` script for a member's seat (`gone`, `away` or `back`). Without Redis
    /// nothing is sent: `resync` puts the seats right when the link is back.
    fn tell_seat(&mut self, socket: SocketRef, code: RoomCode, mode: &str, op: Op, io: &Io) {
        if let Some(sid) = io.socket_id(socket) {
            self.seat_script(code, sid, mode, op, io.now());
        }
    }

    /// The `leave` script for the seat of socket id `sid` in room `code`.
    fn seat_script(&mut self, code: RoomCode, sid: Sid, mode: &str, op: Op, now: Millis) {
        self.seat_script_of(code, None, sid, mode, op, now);
    }

    /// The `leave` script for a seat of node `node` (`None`: this one; another: a seat moved
    /// there for a claim).
    fn seat_script_of(
        &mut self,
        code: RoomCode,
        node: Option<&str>,
        sid: Sid,
        mode: &str,
        op: Op,
        now: Millis,
    ) {
        self.flush_appends(now);
        let name = code.name();
        let node = node.unwrap_or(&self.node);
        let args: [&[u8]; 4] = [
            name.as_bytes(),
            node.as_bytes(),
            sid.as_str().as_bytes(),
            mode.as_bytes(),
        ];
        let _ = self.link.script(Script::Leave as usize, &args, op, now);
    }

    /// Forgets a room once no member of it is on this node.
    fn forget_if_empty(&mut self, code: RoomCode, io: &mut Io<'_, '_>) {
        if members(io, code).is_empty()
            && let Some(local) = self.rooms.remove(&code)
        {
            io.cancel_timer(local.timer);
        }
    }

    /// A member of this node joined a room (made or joined it): it leaves the one it was in.
    fn seat(&mut self, socket: SocketRef, code: RoomCode, id: u64, exp: u64, io: &mut Io<'_, '_>) {
        if let Some(current) = room_of(io, socket)
            && current != code
        {
            self.leave(socket, io);
        }
        io.join(socket, &code.name());
        self.local_room(code, id, exp, io);
    }

    /// Notes a room with a member here (its expiry timer set), unless it is known.
    fn local_room(&mut self, code: RoomCode, id: u64, exp: u64, io: &mut Io<'_, '_>) {
        if self.rooms.get(&code).is_none_or(|r| r.id != id) {
            let wait = Duration::from_millis(exp.saturating_sub(io.unix_millis()));
            let timer = io.set_timer(deadline(io.now(), wait), ClusterTimer::Expire { code, id });
            let local = Local {
                id,
                exp,
                timer,
                remote: None,
                seq: 0,
            };
            if let Some(old) = self.rooms.insert(code, local) {
                io.cancel_timer(old.timer);
            }
        }
    }

    fn on_reply(&mut self, op: Op, reply: Result<Resp, ()>, io: &mut Io<'_, '_>) {
        if let Ok(Resp::Error(e)) = &reply {
            self.stats.errors += 1;
            static ERRORS: Sampler = Sampler::new();
            ERRORS.warn("redis script failed", &[("error", e)]);
        }
        match op {
            Op::Create {
                socket,
                ack,
                code,
                sid,
                id,
                exp,
                tries,
            } => {
                let answer = match reply.as_ref().map(Resp::int) {
                    Ok(Some(1)) if io.socket_id(socket) == Some(sid) => {
                        self.stats.rooms_created += 1;
                        self.seat(socket, code, id, exp, io);
                        self.record_seat(socket, code, 0, io);
                        Ok(Some(format!("{{\"code\":\"{code}\"}}").into()))
                    }
                    // Made for a socket that has gone meanwhile.
                    Ok(Some(1)) => {
                        self.seat_script(code, sid, "gone", Op::Ignore, io.now());
                        return;
                    }
                    // Redis ran it after this node gave up: it changed nothing.
                    Ok(Some(-1)) => Err(self.unavailable()),
                    Ok(Some(0)) if tries + 1 < CODE_TRIES => {
                        self.try_create(socket, ack, sid, id, exp, tries + 1, io)
                    }
                    Ok(_) => Err(errors::SERVER_BUSY),
                    Err(()) => Err(self.unavailable()),
                };
                self.finish(socket, ack, answer, io);
            }
            Op::Join {
                socket,
                ack,
                code,
                sid,
                repeat,
            } => {
                let answer = match reply {
                    Ok(r) => self.joined(socket, code, sid, repeat, &r, io),
                    Err(()) => Err(self.unavailable()),
                };
                if answer.is_err() || repeat {
                    self.join_failed(socket, io);
                }
                self.finish(socket, ack, answer, io);
            }
            Op::Send {
                socket,
                ack,
                code,
                message,
            } => {
                let answer = match reply.as_ref().map(|r| (r.int(), r.str())) {
                    Ok((Some(seq), _)) => {
                        self.set_seq(code, seq as u64);
                        self.tagged(code, io, |io| deliver(code, &message, io));
                        self.stats.messages += 1;
                        Ok(Some(SUCCESS.into()))
                    }
                    Ok((_, Some("nm"))) => Err(errors::NOT_MEMBER),
                    Ok((_, Some("nf"))) => Err(errors::ROOM_NOT_FOUND),
                    Ok((_, Some("late"))) => Err(self.unavailable()),
                    Ok(_) => Err(errors::SERVER_BUSY),
                    Err(()) => Err(self.unavailable()),
                };
                self.finish(socket, ack, answer, io);
            }
            Op::Back { socket, code } => {
                if self.unseated.remove(&socket) && room_of(io, socket) == Some(code) {
                    match reply.as_ref().map(Resp::str) {
                        Ok(Some("lost")) => self.unseat(socket, code, errors::ROOM_FULL, io),
                        _ => self.announce(socket, code, "userJoined", io),
                    }
                }
                self.next_request(socket, io);
            }
            Op::Resync => {
                let Ok(r) = reply else { return };
                let [lost, gone, seqs] = r.items() else {
                    return;
                };
                for (code, seq) in seqs.items().iter().filter_map(code_and_sid) {
                    if let Ok(seq) = seq.parse() {
                        self.raise_seq(code, seq);
                    }
                }
                for (code, sid) in lost.items().iter().filter_map(code_and_sid) {
                    if let Some(socket) = member_with_sid(io, code, sid) {
                        self.unseat(socket, code, errors::ROOM_FULL, io);
                    }
                }
                // Partners that left while Redis was away.
                for (code, sid) in gone.items().iter().filter_map(code_and_sid) {
                    self.set_remote(code, "");
                    let json = user_json(sid);
                    self.tagged(code, io, |io| {
                        io.emit_to_room(Nsp::MAIN, &code.name(), None, "userLeft", &json)
                    });
                }
            }
            Op::Nodes => {
                // An error reply (a busy Redis) keeps the nodes known.
                if let Ok(r @ Resp::Array(_)) = reply {
                    let mut peers = HashMap::new();
                    for pair in r.items().chunks(2) {
                        let (Some(node), Some(address)) =
                            (pair[0].str(), pair.get(1).and_then(Resp::str))
                        else {
                            continue;
                        };
                        if node == self.node {
                            continue;
                        }
                        let known = self
                            .peers
                            .get(node)
                            .filter(|a| a.to_string() == address)
                            .copied();
                        // An address that is not an IP literal is looked up here (blocking): give
                        // `--advertise` as ip:port.
                        let resolved = known.or_else(|| address.to_socket_addrs().ok()?.next());
                        if let Some(a) = resolved {
                            peers.insert(node.to_string(), a);
                        }
                    }
                    self.peers = peers;
                }
            }
            Op::Exists { socket, ack } => {
                let answer = match reply {
                    Ok(Resp::Int(1)) => Err(errors::NOT_MEMBER),
                    Ok(Resp::Int(0)) => Err(errors::ROOM_NOT_FOUND),
                    _ => Err(self.unavailable()),
                };
                self.finish(socket, ack, answer, io);
            }
            Op::Registered => {
                if matches!(reply, Ok(Resp::Int(1))) {
                    static REAPED: Sampler = Sampler::new();
                    REAPED.warn("this node was taken for dead: putting its seats back", &[]);
                    self.resync(io);
                }
            }
            Op::Owner { tag } => match reply {
                Ok(r @ Resp::Array(_)) => self.found_owner(tag, &r, io),
                _ => {
                    self.give_up(tag, io);
                }
            },
            Op::Claim { tag } => match reply {
                Ok(Resp::Int(n)) if n > 0 => {}
                // Published to no one: the node is dead (or cut off from Redis); its alive key
                // says which at the next look (`expire_claims`).
                Ok(Resp::Int(0)) if self.look_again(tag, io) => {}
                _ => {
                    self.give_up(tag, io);
                }
            },
            Op::Adopt {
                tag,
                code,
                sid,
                pid,
                has,
            } => self.adopted(tag, (code, sid, pid), has, reply, io),
            Op::Move {
                socket,
                sid,
                pid,
                tag,
                to,
                offset,
                code,
            } => {
                io.set_moving(socket, false);
                match reply.as_ref().map(Resp::str) {
                    Ok(Some("ok")) if io.socket_id(socket) == Some(sid) => {
                        self.hand_over(socket, sid, pid, &to, tag, offset, Some(code), io)
                    }
                    Ok(Some("ok")) => {
                        // Gone meanwhile: the seat that moved is freed.
                        self.seat_script_of(code, Some(&to), sid, "gone", Op::Ignore, io.now());
                        self.answer_claim(&to, tag, None, io);
                    }
                    _ => self.answer_claim(&to, tag, None, io),
                }
            }
            Op::Secret => {
                if let Ok(Resp::Bytes(secret)) = reply {
                    self.secret = String::from_utf8(secret).ok();
                }
            }
            Op::Appended { code } => {
                if let Ok(Resp::Int(seq)) = reply {
                    self.raise_seq(code, seq as u64);
                }
            }
            Op::Ignore => {}
        }
    }

    /// Acks a request's answer (`Ok(None)`: none, it goes on waiting on Redis).
    fn answer(
        &mut self,
        socket: SocketRef,
        ack: Option<u64>,
        answer: Result<Option<Reply>, &'static str>,
        io: &mut Io<'_, '_>,
    ) {
        match (answer, ack) {
            (Ok(Some(json)), Some(id)) => io.ack(socket, id, &json),
            (Err(message), Some(id)) => io.ack(socket, id, &error_json(message)),
            _ => {}
        }
    }

    /// The answer to a request that waited on Redis (`Ok(None)`: it waits again, as a
    /// `createRoom` drawing another code); then the socket's next requests.
    fn finish(
        &mut self,
        socket: SocketRef,
        ack: Option<u64>,
        answer: Result<Option<Reply>, &'static str>,
        io: &mut Io<'_, '_>,
    ) {
        if matches!(answer, Ok(None)) {
            return;
        }
        self.answer(socket, ack, answer, io);
        self.next_request(socket, io);
    }

    /// A request of the socket that waited on Redis is done: the requests queued behind it
    /// start, as many as may (`Queue::may_start`).
    fn next_request(&mut self, socket: SocketRef, io: &mut Io<'_, '_>) {
        if let Some(q) = self.queues.get_mut(&socket) {
            q.pending = q.pending.saturating_sub(1);
        }
        loop {
            let Some(q) = self.queues.get_mut(&socket) else {
                return;
            };
            let Some(front) = q.waiting.front() else {
                if q.pending == 0 {
                    self.queues.remove(&socket);
                }
                return;
            };
            let starts = q.pending == 0
                || q.only_sends && &*front.name == "sendMessage" && q.pending < MAX_PIPELINED;
            if !starts {
                return;
            }
            let Some(next) = q.waiting.pop_front() else {
                return;
            };
            match serde_json::from_str::<Vec<&RawValue>>(&next.args) {
                Ok(args) => self.request(socket, &next.name, &args, next.ack, io),
                Err(_) => self.answer(socket, next.ack, Err(errors::SERVER_BUSY), io),
            }
        }
    }

    /// The reply to a `join`: `['ok', id, exp, other seat, seq, message…]`, `['nf']` or
    /// `['full']`.
    fn joined(
        &mut self,
        socket: SocketRef,
        code: RoomCode,
        sid: Sid,
        repeat: bool,
        reply: &Resp,
        io: &mut Io<'_, '_>,
    ) -> Result<Option<Reply>, &'static str> {
        let items = reply.items();
        match items.first().and_then(Resp::str) {
            Some("ok") => {}
            Some("nf") => return Err(errors::ROOM_NOT_FOUND),
            Some("full") => return Err(errors::ROOM_FULL),
            Some("late") => return Err(self.unavailable()),
            _ => return Err(errors::SERVER_BUSY),
        }
        let (Some(id), Some(exp), Some(seq)) = (
            items.get(1).and_then(Resp::int),
            items.get(2).and_then(Resp::int),
            items.get(4).and_then(Resp::int),
        ) else {
            return Err(errors::SERVER_BUSY);
        };
        if io.socket_id(socket) != Some(sid) {
            // Seated for a socket that has gone meanwhile.
            self.seat_script(code, sid, "gone", Op::Ignore, io.now());
            return Err(errors::ROOM_NOT_FOUND);
        }
        if !repeat && room_of(io, socket) != Some(code) {
            self.seat(socket, code, id as u64, exp as u64, io);
            self.set_seq(code, seq as u64);
            let other = items.get(3).and_then(Resp::str).unwrap_or("");
            self.set_remote(code, other);
            // A partner on this node (one elsewhere was told by the script).
            let json = user_json(sid);
            self.tagged(code, io, |io| {
                io.emit_to_room(Nsp::MAIN, &code.name(), Some(socket), "userJoined", &json)
            });
            self.record_seat(socket, code, seq as u64, io);
            self.stats.joins += 1;
        }
        let mut answer = String::from("{\"success\":true,\"messages\":[");
        for (i, m) in items.iter().skip(5).enumerate() {
            if let Some(m) = m.str() {
                if i > 0 {
                    answer.push(',');
                }
                answer.push_str(m);
            }
        }
        answer.push_str("]}");
        Ok(Some(answer.into()))
    }

    /// Takes a member of this node out of its room, the seat not its own any more:
    /// `roomUnavailable {code, error}`.
    fn unseat(&mut self, socket: SocketRef, code: RoomCode, error: &str, io: &mut Io<'_, '_>) {
        let mut json = format!("{{\"code\":\"{code}\",\"error\":");
        write_json_string(&mut json, error);
        json.push('}');
        self.tagged(code, io, |io| io.emit(socket, "roomUnavailable", &json));
        io.leave(socket, &code.name());
        self.unseated.remove(&socket);
        self.forget_if_empty(code, io);
    }

    /// A message on this node's channel: `<kind> <code> <rest>`.
    fn on_message(&mut self, payload: &[u8], io: &mut Io<'_, '_>) {
        if payload.starts_with(b"H ") {
            return self.on_handed(payload, io);
        }
        let Ok(text) = std::str::from_utf8(payload) else {
            return;
        };
        if let Some(rest) = text.strip_prefix("h ") {
            return self.on_claimed(rest, io);
        }
        if let Some(rest) = text.strip_prefix("M ") {
            return self.on_moved(rest, io);
        }
        let (Some(kind), Some(code), Some(rest)) = (
            text.get(..1),
            text.get(2..8).and_then(RoomCode::parse),
            text.get(9..),
        ) else {
            return;
        };
        let name = code.name();
        match kind {
            // `<seq> <json>`.
            "m" => {
                let Some((seq, message)) = rest.split_once(' ') else {
                    return;
                };
                if let Ok(seq) = seq.parse() {
                    self.set_seq(code, seq);
                }
                self.tagged(code, io, |io| deliver(code, message, io));
            }
            // A partner on another node joined or came back (`j`), went away (`a`) or left
            // for good (`l`): `rest` is its seat, `<node> <sid>`.
            "j" | "a" | "l" => {
                let Some((_, sid)) = rest.split_once(' ') else {
                    return;
                };
                let (event, remote) = match kind {
                    "j" => ("userJoined", rest.to_string()),
                    "a" => ("userLeft", format!("{rest} a")),
                    _ => ("userLeft", String::new()),
                };
                self.set_remote(code, &remote);
                let json = user_json(sid);
                // Not to the member itself (one arriving here for a claim).
                let except = member_with_sid(io, code, sid);
                self.tagged(code, io, |io| {
                    io.emit_to_room(Nsp::MAIN, &name, except, event, &json)
                });
            }
            // The partner's seat moved to another node (connection state recovery there).
            "r" => self.set_remote(code, rest),
            "u" => {
                if let Some(socket) = member_with_sid(io, code, rest) {
                    self.unseat(socket, code, errors::ROOM_FULL, io);
                }
            }
            _ => {}
        }
    }

    /// Runs `f` with the offsets of the events it emits tagged with the room's message count
    /// (`Local::seq`).
    fn tagged<R>(&self, code: RoomCode, io: &mut Io<'_, '_>, f: impl FnOnce(&mut Io) -> R) -> R {
        io.tagged(self.rooms.get(&code).map(|r| r.seq), f)
    }

    /// Notes the room's message count, as Redis numbers them.
    fn set_seq(&mut self, code: RoomCode, seq: u64) {
        if let Some(local) = self.rooms.get_mut(&code) {
            local.seq = seq;
        }
    }

    /// Notes the room's message count as Redis numbered it a while ago (messages this node
    /// numbered since are above it).
    fn raise_seq(&mut self, code: RoomCode, seq: u64) {
        if let Some(local) = self.rooms.get_mut(&code) {
            local.seq = local.seq.max(seq);
        }
    }

    /// Writes the socket's record (`Record`): its client has the room's first `has` messages
    /// if its last offset is `base` or of a count up to `count`.
    fn record(
        &mut self,
        socket: SocketRef,
        code: RoomCode,
        has: u64,
        base: Option<u64>,
        count: u64,
        io: &Io<'_, '_>,
    ) {
        let (Some(pid), Some(sid), Some(local)) = (
            io.pid_of(socket),
            io.socket_id(socket),
            self.rooms.get(&code),
        ) else {
            return;
        };
        let key = format!("pairchat:pid:{pid}");
        let base = offset_arg(base);
        let value = format!("{} {sid} {code} {has} {count} {base}", self.node);
        let keep = local.exp + KEEP_AFTER_EXPIRY;
        let ttl = keep.saturating_sub(io.unix_millis()).max(1).to_string();
        let set: [&[u8]; 5] = [
            b"SET",
            key.as_bytes(),
            value.as_bytes(),
            b"PX",
            ttl.as_bytes(),
        ];
        let _ = self.link.send(&set, Op::Ignore, io.now());
    }

    /// The record of a socket that just took a seat here: what its client has now. Its
    /// client's last offset is the one it connected with (its base) or one this node gave it.
    fn record_seat(&mut self, socket: SocketRef, code: RoomCode, has: u64, io: &Io<'_, '_>) {
        let count = recovery::count_of(io.last_offset());
        self.record(socket, code, has, io.base_offset(socket), count, io);
    }

    /// Asks Redis where a claimed socket lives (`claim`); false if it cannot be asked.
    fn look_up(&mut self, tag: u64, pid: Sid, io: &Io<'_, '_>) -> bool {
        let args: [&[u8]; 1] = [pid.as_str().as_bytes()];
        let op = Op::Owner { tag };
        (self
            .link
            .script(Script::Claim as usize, &args, op, io.now()))
        .is_ok()
    }

    /// Where a claimed socket lives: `[record, alive, seq]`, or `[]` (no record: the node
    /// that made its pid, if any, is asked). A live node is asked for it (`ask_owner`); a
    /// dead node's socket is taken over (`adopt`), with the messages its client missed.
    fn found_owner(&mut self, tag: u64, reply: &Resp, io: &mut Io<'_, '_>) {
        let items = reply.items();
        let (Some(record), Some(alive), Some(seq)) = (
            items.first().and_then(Resp::str),
            items.get(1).and_then(Resp::int),
            items.get(2).and_then(Resp::int),
        ) else {
            return self.ask_owner(tag, None, io);
        };
        let Some(claim) = self.claims.get_mut(&tag) else {
            return;
        };
        claim.record = Some(record.to_string());
        let (pid, offset) = (claim.pid, claim.offset);
        let owner = record.split(' ').next().unwrap_or_default().to_string();
        if alive == 1 {
            return self.ask_owner(tag, Some(&owner), io);
        }
        let found = Record::parse(record).and_then(|r| Some((r.has(offset, seq as u64)?, r)));
        let Some((has, r)) = found else {
            return self.give_up(tag, io);
        };
        let op = Op::Adopt {
            tag,
            code: r.code,
            sid: r.sid,
            pid,
            has,
        };
        let (has, count, base, most, deadline) = (
            has.to_string(),
            recovery::count_of(io.last_offset()).to_string(),
            offset_arg(offset),
            self.recovery.max_events.to_string(),
            self.link.deadline(io.unix_millis()).to_string(),
        );
        let args: [&[u8]; 8] = [
            pid.as_str().as_bytes(),
            record.as_bytes(),
            self.node.as_bytes(),
            has.as_bytes(),
            count.as_bytes(),
            base.as_bytes(),
            most.as_bytes(),
            deadline.as_bytes(),
        ];
        let sent = self
            .link
            .script(Script::Adopt as usize, &args, op, io.now());
        if sent.is_err() {
            self.give_up(tag, io);
        }
    }

    /// The answer to `adopt`: `['ok', id, exp, other seat, seq, away, message…]` (the
    /// messages after the first `has`), `['lost']` or `['late']`. The socket of a dead node comes back
    /// here with the messages its client missed, then its CONNECT reply; a partner here that
    /// heard it left hears it joined.
    fn adopted(
        &mut self,
        tag: u64,
        (code, sid, pid): (RoomCode, Sid, Sid),
        has: u64,
        reply: Result<Resp, ()>,
        io: &mut Io<'_, '_>,
    ) {
        let reply = reply.unwrap_or(Resp::Nil);
        let items = reply.items();
        let ok = items.first().and_then(Resp::str) == Some("ok");
        let fields = (
            items.get(1).and_then(Resp::int),
            items.get(2).and_then(Resp::int),
            items.get(3).and_then(Resp::str),
            items.get(4).and_then(Resp::int),
            items.get(5).and_then(Resp::int),
        );
        let Some(claim) = self.take_claim(tag) else {
            // Given up on meanwhile: the seat that moved here is freed.
            if ok {
                self.seat_script(code, sid, "gone", Op::Ignore, io.now());
                self.unpid(pid, io);
            }
            return;
        };
        let (true, (Some(id), Some(exp), Some(other), Some(seq), Some(away))) = (ok, fields) else {
            return self.claim_failed(claim, io);
        };
        let away = away == 1;
        let name = code.name();
        let Some(socket) = io.arrive(claim.session, claim.nsp, sid, claim.pid, &[&name]) else {
            self.seat_script(code, sid, "gone", Op::Ignore, io.now());
            return self.claim_failed(claim, io);
        };
        self.local_room(code, id as u64, exp as u64, io);
        self.set_seq(code, seq as u64);
        self.set_remote(code, other);
        let mut missed = Vec::new();
        for (i, m) in items.iter().skip(6).enumerate() {
            let Some(m) = m.str() else { continue };
            let n = has + 1 + i as u64;
            let packets = io.tagged(Some(n), |io| {
                io.event_packet(Nsp::MAIN, "newMessage", m, &[])
            });
            if let (Some(offset), Some(packet)) = (packets.offset(), packets.first()) {
                missed.push((offset, packet.clone()));
            }
        }
        match io.adopt(socket, claim.session, missed, claim.offset, 0) {
            Adopted::Failed => {
                // `adopt` discarded it.
                self.free_moved_seat(code, sid, away, claim.pid, io);
                self.stats.claims_failed += 1;
                io.refuse_claim(claim.session, claim.nsp);
            }
            Adopted::Connected => {
                self.stats.claims_recovered += 1;
                self.moved_in.insert(socket, claim.pid);
                if away {
                    self.announce(socket, code, "userJoined", io);
                }
            }
            Adopted::Away => {
                self.stats.claims_recovered += 1;
                self.moved_in.insert(socket, claim.pid);
                if !away {
                    self.announce(socket, code, "userLeft", io);
                }
                self.tell_seat(socket, code, "away", Op::Ignore, io);
            }
        }
    }

    /// Notes the partner's seat on another node (`''`: none, or it is on this node).
    fn set_remote(&mut self, code: RoomCode, seat: &str) {
        if let Some(local) = self.rooms.get_mut(&code) {
            let elsewhere = seat
                .split(' ')
                .next()
                .is_some_and(|node| !node.is_empty() && node != self.node);
            local.remote = elsewhere.then(|| seat.to_string());
        }
    }

    /// A client came back here with the pid of a socket this node does not have: the node
    /// it lives on is asked for it (`ask_owner`); until it answers, the CONNECT waits, at most
    /// `--redis-timeout`. A second claim of the same pid (a quicker reconnect) takes the first
    /// one's place, whose session gets a fresh socket.
    fn claim(
        &mut self,
        session: SessionId,
        nsp: Nsp,
        pid: Sid,
        offset: Option<u64>,
        io: &mut Io<'_, '_>,
    ) {
        if let Some(claim) = (self.claiming.get(&pid)).and_then(|tag| self.claims.get_mut(tag)) {
            let first = std::mem::replace(&mut claim.session, session);
            io.refuse_claim(first, nsp);
            return;
        }
        let full = self.claims.len() >= MAX_CLAIMS || self.redis_behind(io.now());
        if nsp != Nsp::MAIN || !self.link.is_up() || full {
            self.stats.claims_failed += 1;
            io.refuse_claim(session, nsp);
            return;
        }
        self.last_tag += 1;
        let tag = self.last_tag;
        if !self.look_up(tag, pid, io) {
            self.stats.claims_failed += 1;
            io.refuse_claim(session, nsp);
            return;
        }
        // A claim takes about four round trips to Redis (the lookup, `h`, `move`, `M`/`H`).
        let deadline = deadline(io.now(), self.link.timeout() * 2);
        let claiming = Claiming {
            session,
            nsp,
            pid,
            offset,
            started: io.now(),
            deadline,
            arriving: None,
            record: None,
            look_again: false,
        };
        self.claims.insert(tag, claiming);
        self.claiming.insert(pid, tag);
    }

    /// Ends a claim (answered, failed or late).
    fn take_claim(&mut self, tag: u64) -> Option<Claiming> {
        let claim = self.claims.remove(&tag)?;
        self.claiming.remove(&claim.pid);
        Some(claim)
    }

    /// The claimed socket's node is known: the node it moved to last (`owner`), else the one
    /// that made its pid. That node is asked for the socket: `h <tag> <node> <pid> <offset|->`
    /// on its channel.
    fn ask_owner(&mut self, tag: u64, owner: Option<&str>, io: &mut Io<'_, '_>) {
        let Some(claim) = self.claims.get(&tag) else {
            return;
        };
        let (pid, offset) = (claim.pid, claim.offset);
        let owner = owner.unwrap_or(&pid.as_str()[..NODE_ID_LEN]);
        if owner != self.node && !self.peers.contains_key(owner) && self.look_again(tag, io) {
            return;
        }
        if owner == self.node || !self.peers.contains_key(owner) {
            self.give_up(tag, io);
            return;
        }
        let message = format!("h {tag} {} {pid} {}", self.node, offset_arg(offset));
        let channel = format!("pairchat:to:{owner}");
        let publish: [&[u8]; 3] = [b"PUBLISH", channel.as_bytes(), message.as_bytes()];
        let sent = self.link.send(&publish, Op::Claim { tag }, io.now());
        if sent.is_err() {
            self.give_up(tag, io);
        }
    }

    /// The node a claimed socket lives on is not reachable (it heard no one on its channel, or
    /// this node does not know it as live): if the socket has a record, the claim looks again
    /// at the next tick (`expire_claims`), until that node's alive key is gone (then `adopt`)
    /// or `NODE_TTL` has passed. False without a record: nothing can take the socket over.
    fn look_again(&mut self, tag: u64, io: &Io<'_, '_>) -> bool {
        let wait = NODE_TTL + self.link.timeout() * 2;
        let Some(claim) = self.claims.get_mut(&tag).filter(|c| c.record.is_some()) else {
            return false;
        };
        claim.look_again = true;
        claim.deadline = claim.deadline.max(deadline(claim.started, wait));
        claim.deadline > io.now()
    }

    /// Gives up on the claim `tag`, if it is still waiting (`claim_failed`).
    fn give_up(&mut self, tag: u64, io: &mut Io<'_, '_>) {
        if let Some(claim) = self.take_claim(tag) {
            self.claim_failed(claim, io);
        }
    }

    /// Gives up on a claim: the client gets a fresh socket; a socket on its way is dropped.
    fn claim_failed(&mut self, claim: Claiming, io: &mut Io<'_, '_>) {
        self.stats.claims_failed += 1;
        match &claim.arriving {
            Some(arriving) => self.free_arrival(arriving, claim.pid, io),
            // A socket in no room may have moved here all the same (`hand_over`).
            None => self.unpid(claim.pid, io),
        }
        io.refuse_claim(claim.session, claim.nsp);
    }

    /// A socket whose seat moved here will not come: it is discarded, the seat freed (a
    /// partner here hears it left, unless it heard so when the member went away) and its pid
    /// no longer names this node.
    fn free_arrival(&mut self, a: &Arriving, pid: Sid, io: &mut Io<'_, '_>) {
        io.discard(a.socket);
        self.free_moved_seat(a.code, a.sid, a.away, pid, io);
    }

    /// Frees a seat that moved here for a socket that will not come (see `free_arrival`).
    fn free_moved_seat(&mut self, code: RoomCode, sid: Sid, away: bool, pid: Sid, io: &mut Io) {
        if !away {
            let json = user_json(sid);
            self.tagged(code, io, |io| {
                io.emit_to_room(Nsp::MAIN, &code.name(), None, "userLeft", &json)
            });
        }
        self.seat_script(code, sid, "gone", Op::Ignore, io.now());
        self.forget_if_empty(code, io);
        self.unpid(pid, io);
    }

    /// Deletes `pairchat:pid:<pid>` if it names this node.
    fn unpid(&mut self, pid: Sid, io: &Io<'_, '_>) {
        let args: [&[u8]; 2] = [pid.as_str().as_bytes(), self.node.as_bytes()];
        let _ = self
            .link
            .script(Script::Unpid as usize, &args, Op::Ignore, io.now());
    }

    /// Another node asks for a socket of this node (`h`): its seat moves there first
    /// (`move`), then the socket goes (`hand_over`). Meanwhile it is moving
    /// (`SioIo::set_moving`): events this node makes for the room reach it through the other
    /// node, not here.
    fn on_claimed(&mut self, rest: &str, io: &mut Io<'_, '_>) {
        let mut parts = rest.split(' ');
        let (Some(tag), Some(to), Some(pid), Some(offset), None) = (
            parts.next().and_then(|t| t.parse::<u64>().ok()),
            parts.next(),
            parts.next().and_then(Sid::parse),
            parts.next(),
            parts.next(),
        ) else {
            return;
        };
        let offset = match offset {
            "-" => Ok(None),
            o => crate::sio::recovery::parse_offset(o).map(Some).ok_or(()),
        };
        // Not one whose request waits on Redis (its answer would change what moves).
        let found = io.socket_by_pid(&pid).zip(offset.ok()).filter(|(s, o)| {
            !io.is_moving(*s)
                && !self.unseated.contains(s)
                && !self.queues.contains_key(s)
                && io.missed(*s, *o).is_some()
        });
        let (Some((socket, offset)), Some(sid)) = (found, found.and_then(|(s, _)| io.socket_id(s)))
        else {
            return self.answer_claim(to, tag, None, io);
        };
        let Some(code) = room_of(io, socket) else {
            // In no room: no seat to move, only the socket.
            return self.hand_over(socket, sid, pid, to, tag, offset, None, io);
        };
        self.flush_appends(io.now());
        let (name, tag_arg, ttl) = (
            code.name(),
            tag.to_string(),
            PID_TTL.as_millis().to_string(),
        );
        let args: [&[u8]; 7] = [
            name.as_bytes(),
            self.node.as_bytes(),
            sid.as_str().as_bytes(),
            to.as_bytes(),
            tag_arg.as_bytes(),
            pid.as_str().as_bytes(),
            ttl.as_bytes(),
        ];
        let op = Op::Move {
            socket,
            sid,
            pid,
            tag,
            to: to.to_string(),
            offset,
            code,
        };
        match self.link.script(Script::Move as usize, &args, op, io.now()) {
            Ok(()) => {
                io.set_moving(socket, true);
            }
            Err(_) => self.answer_claim(to, tag, None, io),
        }
    }

    /// Hands a socket over to node `to` (its seat in `code` moved there already, if any) and
    /// sends it what the client missed (`answer_claim`).
    #[allow(clippy::too_many_arguments)]
    fn hand_over(
        &mut self,
        socket: SocketRef,
        sid: Sid,
        pid: Sid,
        to: &str,
        tag: u64,
        offset: Option<u64>,
        code: Option<RoomCode>,
        io: &mut Io<'_, '_>,
    ) {
        let away = !io.is_present(socket);
        let handed = io.hand_over(socket, offset);
        self.moved_in.remove(&socket);
        self.queues.remove(&socket);
        self.unseated.remove(&socket);
        self.buckets.remove(&socket);
        if let Some((per_socket, _)) = &mut self.join_failures {
            per_socket.forget(socket);
        }
        match (code, &handed) {
            (Some(code), Some(_)) => {
                let seat = format!("{to} {sid}{}", if away { " a" } else { "" });
                self.set_remote(code, &seat);
            }
            // Its events are lost (a cap dropped some): the seat that moved is freed.
            (Some(code), None) => {
                self.seat_script_of(code, Some(to), sid, "gone", Op::Ignore, io.now())
            }
            (None, Some(_)) => {
                let key = format!("pairchat:pid:{pid}");
                let ttl = PID_TTL.as_millis().to_string();
                let set: [&[u8]; 5] =
                    [b"SET", key.as_bytes(), to.as_bytes(), b"PX", ttl.as_bytes()];
                let _ = self.link.send(&set, Op::Ignore, io.now());
            }
            (None, None) => {}
        }
        if let Some(code) = code {
            self.forget_if_empty(code, io);
        }
        let Some((missed, replayed)) = handed else {
            return self.answer_claim(to, tag, None, io);
        };
        self.stats.handed_over += 1;
        self.answer_claim(to, tag, Some((sid, replayed, &missed)), io);
    }

    /// Publishes the answer to a claim: `H <tag> ok <sid> <bytes replayed lately>\n` then each
    /// packet the client missed as `<offset> <t|b> <length>\n<bytes>`, or `H <tag> no`.
    fn answer_claim(&mut self, to: &str, tag: u64, handed: Option<Handed<'_>>, io: &Io<'_, '_>) {
        let mut payload = format!("H {tag} ").into_bytes();
        match handed {
            None => payload.extend_from_slice(b"no"),
            Some((sid, replayed, missed)) => {
                payload.extend_from_slice(format!("ok {sid} {replayed}\n").as_bytes());
                for (offset, packet) in missed {
                    let (kind, bytes) = match packet {
                        Outgoing::Text(t) => ('t', t.as_bytes()),
                        Outgoing::Binary(b) => ('b', &b[..]),
                    };
                    let head = format!("{offset} {kind} {}\n", bytes.len());
                    payload.extend_from_slice(head.as_bytes());
                    payload.extend_from_slice(bytes);
                }
            }
        }
        let channel = format!("pairchat:to:{to}");
        let publish: [&[u8]; 3] = [b"PUBLISH", channel.as_bytes(), &payload];
        let _ = self.link.send(&publish, Op::Ignore, io.now());
    }

    /// `M <tag> <code> <sid> <pid> <id> <exp> <a|-> <seq> <other seat>`: the seat of a socket
    /// this node claimed moved here (`a`: its member is away); the socket is registered (away)
    /// in its room, so every later event of the room is kept for it.
    fn on_moved(&mut self, rest: &str, io: &mut Io<'_, '_>) {
        let mut parts = rest.splitn(9, ' ');
        let (Some(tag), Some(code), Some(sid), Some(pid)) = (
            parts.next().and_then(|t| t.parse::<u64>().ok()),
            parts.next().and_then(RoomCode::parse),
            parts.next().and_then(Sid::parse),
            parts.next().and_then(Sid::parse),
        ) else {
            return;
        };
        let (Some(id), Some(exp), Some(away), Some(seq), Some(other)) = (
            parts.next().and_then(|t| t.parse::<u64>().ok()),
            parts.next().and_then(|t| t.parse::<u64>().ok()),
            parts.next().map(|a| a == "a"),
            parts.next().and_then(|t| t.parse::<u64>().ok()),
            parts.next(),
        ) else {
            return;
        };
        let name = code.name();
        let socket = (self.claims.get(&tag))
            .filter(|c| c.pid == pid)
            .and_then(|c| io.arrive(c.session, c.nsp, sid, c.pid, &[&name]));
        let Some(socket) = socket else {
            // Nobody waits for it any more.
            self.free_moved_seat(code, sid, away, pid, io);
            self.give_up(tag, io);
            return;
        };
        if let Some(claim) = self.claims.get_mut(&tag) {
            claim.arriving = Some(Arriving {
                socket,
                sid,
                code,
                away,
                seq,
            });
        }
        self.local_room(code, id, exp, io);
        self.set_seq(code, seq);
        if !other.is_empty() {
            self.set_remote(code, other);
        }
        // A partner on this node that left or went away since the move ran was announced to
        // the room before this socket was in it: it hears now.
        let mut seat = other.split(' ');
        if let (Some(node), Some(partner)) = (seat.next(), seat.next())
            && node == self.node
        {
            let here = member_with_sid(io, code, partner).filter(|m| *m != socket);
            // Away at the move already: this socket heard so on its old node.
            let was_away = seat.next() == Some("a");
            // A partner arriving here too (claimed as well) is as present as it was.
            let arriving = |m: SocketRef| {
                (self.claims.values()).any(|c| c.arriving.is_some_and(|a| a.socket == m))
            };
            let gone = !was_away && here.is_none_or(|m| !io.is_present(m) && !arriving(m));
            if gone {
                let json = user_json(partner);
                self.tagged(code, io, |io| io.emit(socket, "userLeft", &json));
            }
        }
    }

    /// `H <tag> ok <sid> <bytes>\n<packets>` or `H <tag> no`: the answer to a claim of this
    /// node. The socket is adopted; if its member was away, it takes its seat back, as after a
    /// recovery on its own node (`back`): its partner hears `userJoined`.
    fn on_handed(&mut self, payload: &[u8], io: &mut Io<'_, '_>) {
        let line_end = payload
            .iter()
            .position(|b| *b == b'\n')
            .unwrap_or(payload.len());
        let Ok(line) = std::str::from_utf8(&payload[..line_end]) else {
            return;
        };
        let mut parts = line.split(' ').skip(1);
        let (Some(tag), Some(answer)) = (
            parts.next().and_then(|t| t.parse::<u64>().ok()),
            parts.next(),
        ) else {
            return;
        };
        // Late (given up on already, and the arrival freed): nothing to do.
        let Some(claim) = self.take_claim(tag) else {
            return;
        };
        let sid = parts.next().and_then(Sid::parse);
        let replayed = parts.next().and_then(|b| b.parse::<usize>().ok());
        let missed = payload.get(line_end + 1..).and_then(parse_packets);
        let (Some(sid), Some(replayed), Some(missed), "ok") = (sid, replayed, missed, answer)
        else {
            return self.claim_failed(claim, io);
        };
        let socket = match &claim.arriving {
            Some(a) => Some(a.socket),
            None => io.arrive(claim.session, claim.nsp, sid, claim.pid, &[]),
        };
        let Some(socket) = socket else {
            return self.claim_failed(claim, io);
        };
        // Every offset the socket gets from here on is of a greater count.
        let count = recovery::count_of(io.last_offset());
        let adopted = io.adopt(socket, claim.session, missed, claim.offset, replayed);
        if adopted == Adopted::Failed {
            // `adopt` discarded it.
            return self.claim_failed(claim, io);
        }
        self.stats.claims_recovered += 1;
        self.moved_in.insert(socket, claim.pid);
        // What the client has, as its old node's record says, for a node that takes the socket
        // over if this one dies.
        if let Some(a) = &claim.arriving
            && let Some(has) = (claim.record.as_deref())
                .and_then(Record::parse)
                .filter(|r| r.code == a.code)
                .and_then(|r| r.has(claim.offset, a.seq))
        {
            self.record(socket, a.code, has, claim.offset, count, io);
        }
        let was_away = claim.arriving.is_some_and(|a| a.away);
        match (adopted, was_away, room_of(io, socket)) {
            // Back from away: its seat too.
            (Adopted::Connected, true, _) => self.back(socket, io),
            // The client dropped again while it was claimed: away here now.
            (Adopted::Away, false, Some(code)) => {
                self.announce(socket, code, "userLeft", io);
                self.tell_seat(socket, code, "away", Op::Ignore, io);
            }
            _ => {}
        }
    }

    /// A member is back from away (recovered here): it takes its seat back (`leave` with
    /// `back`), and its partner hears `userJoined`.
    fn back(&mut self, socket: SocketRef, io: &mut Io<'_, '_>) {
        let Some(code) = room_of(io, socket) else {
            return;
        };
        self.unseated.insert(socket);
        let op = Op::Back { socket, code };
        if self.link.is_up() {
            // Its requests wait until Redis says whether the seat is still its own.
            let q = self.queues.entry(socket).or_default();
            q.pending += 1;
            q.only_sends = false;
            self.tell_seat(socket, code, "back", op, io);
        } else {
            // Resync seats it when the link is back.
            self.unseated.remove(&socket);
            self.announce(socket, code, "userJoined", io);
        }
    }

    /// Tells a member's partner here that it joined or left (`event`), unless that partner's
    /// seat is moving to another node (`on_claimed`): it hears through that node.
    fn announce(&self, socket: SocketRef, code: RoomCode, event: &str, io: &mut Io<'_, '_>) {
        if members(io, code).iter().any(|m| io.is_moving(*m)) {
            return;
        }
        self.tagged(code, io, |io| announce(socket, code, event, io));
    }

    /// Claims past their deadline end in fresh sockets; those whose node heard no one look
    /// where the socket lives again.
    fn expire_claims(&mut self, io: &mut Io<'_, '_>) {
        let now = io.now();
        let again: Vec<(u64, Sid)> = (self.claims.iter_mut())
            .filter(|(_, c)| c.look_again && c.deadline > now)
            .map(|(tag, c)| {
                c.look_again = false;
                (*tag, c.pid)
            })
            .collect();
        for (tag, pid) in again {
            if !self.look_up(tag, pid, io) {
                self.give_up(tag, io);
            }
        }
        let late: Vec<u64> = (self.claims.iter())
            .filter(|(_, c)| c.deadline <= now)
            .map(|(tag, _)| *tag)
            .collect();
        for tag in late {
            self.give_up(tag, io);
        }
    }

    fn on_expire(&mut self, code: RoomCode, id: u64, io: &mut Io<'_, '_>) {
        if self.rooms.get(&code).is_none_or(|r| r.id != id) {
            return;
        }
        let seq = self.rooms.remove(&code).map(|r| r.seq);
        self.stats.rooms_expired += 1;
        let name = code.name();
        // Not to a member whose seat is moving: the node it moves to tells it.
        for member in members(io, code).to_vec() {
            if !io.is_moving(member) {
                io.tagged(seq, |io| io.emit(member, "roomExpired", "{}"));
            }
        }
        for member in members(io, code).to_vec() {
            io.leave(member, &name);
            self.unseated.remove(&member);
        }
        let id = id.to_string();
        let args: [&[u8]; 2] = [name.as_bytes(), id.as_bytes()];
        let _ = self
            .link
            .script(Script::Expire as usize, &args, Op::Ignore, io.now());
    }

    fn on_tick(&mut self, io: &mut Io<'_, '_>) {
        io.set_timer(deadline(io.now(), TICK), ClusterTimer::Tick);
        let mut events = std::mem::take(&mut self.events);
        self.link.tick(io, &mut events);
        self.handle_link(&mut events, io);
        self.expire_claims(io);
        self.ticks += 1;
        if self.ticks.is_multiple_of(TICKS_PER_BEAT) && self.link.is_up() {
            self.beat(io, true);
            let now = io.now();
            let window = self.recovery.window.as_millis().to_string();
            let _ = self
                .link
                .script(Script::Reap as usize, &[window.as_bytes()], Op::Ignore, now);
            let _ = self
                .link
                .script(Script::Nodes as usize, &[], Op::Nodes, now);
        }
        self.events = events;
    }

    /// Refreshes this node's alive key (and its place in the node set).
    fn beat(&mut self, io: &Io<'_, '_>, check: bool) {
        let now = io.now();
        let alive = format!("pairchat:alive:{}", self.node);
        let ttl = NODE_TTL.as_millis().to_string();
        let node = self.node.clone();
        let advertise = self.advertise.clone();
        let set: [&[u8]; 5] = [
            b"SET",
            alive.as_bytes(),
            advertise.as_bytes(),
            b"PX",
            ttl.as_bytes(),
        ];
        let _ = self.link.send(&set, Op::Ignore, now);
        // Added anew (`1`): the node was taken for dead (a pause longer than `NODE_TTL`) and
        // reaped: its seats go back to Redis (`Op::Registered`).
        let op = if check { Op::Registered } else { Op::Ignore };
        let _ = self
            .link
            .send(&[b"SADD", b"pairchat:nodes", node.as_bytes()], op, now);
    }

    /// The link is (again) up: this node's seats, as it has them, go to Redis first.
    fn resync(&mut self, io: &mut Io<'_, '_>) {
        self.beat(io, false);
        let now = io.now();
        let secret = Sid::random(io.rng()).to_string() + Sid::random(io.rng()).as_str();
        let set: [&[u8]; 4] = [b"SET", b"pairchat:secret", secret.as_bytes(), b"NX"];
        let _ = self.link.send(&set, Op::Ignore, now);
        let _ = self
            .link
            .send(&[b"GET", b"pairchat:secret"], Op::Secret, now);
        let _ = self
            .link
            .script(Script::Nodes as usize, &[], Op::Nodes, now);
        let mut owned: Vec<String> = vec![self.node.clone(), NODE_TTL.as_millis().to_string()];
        for (code, local) in &self.rooms {
            for &m in members(io, *code) {
                let Some(sid) = io.socket_id(m) else { continue };
                let away = !io.is_present(m);
                owned.push(code.to_string());
                owned.push(if away {
                    format!("{sid} a")
                } else {
                    sid.to_string()
                });
                owned.push(local.id.to_string());
                owned.push(local.exp.to_string());
                owned.push((local.exp + KEEP_AFTER_EXPIRY).to_string());
                owned.push(local.remote.clone().unwrap_or_default());
                owned.push(local.seq.to_string());
            }
        }
        self.unseated.clear();
        let args: Vec<&[u8]> = owned.iter().map(|s| s.as_bytes()).collect();
        let _ = self
            .link
            .script(Script::Resync as usize, &args, Op::Resync, io.now());
    }

    fn handle_link(&mut self, events: &mut Vec<LinkEvent<Op>>, io: &mut Io<'_, '_>) {
        for event in events.drain(..) {
            match event {
                LinkEvent::Reply(op, reply) => self.on_reply(op, Ok(reply), io),
                LinkEvent::Failed(op) => self.on_reply(op, Err(()), io),
                LinkEvent::Message(payload) => self.on_message(&payload, io),
                LinkEvent::Up => {
                    crate::log::info("redis link up", &[("node", &self.node)]);
                    self.resync(io);
                }
                LinkEvent::Down => {}
            }
        }
    }
}

impl App for ClusterChat {
    type Timer = ClusterTimer;

    fn handle(&mut self, event: SioEvent<'_, ClusterTimer>, io: &mut Io<'_, '_>) {
        match event {
            SioEvent::Start { addr } => {
                if self.advertise.is_empty() {
                    // Reachable on this machine; other machines need --advertise.
                    let ip = if addr.ip().is_unspecified() {
                        IpAddr::from([127, 0, 0, 1])
                    } else {
                        addr.ip()
                    };
                    self.advertise = SocketAddr::new(ip, addr.port()).to_string();
                }
                self.on_tick(io)
            }
            SioEvent::TurnEnd => {
                self.flush_appends(io.now());
                let mut events = std::mem::take(&mut self.events);
                self.link.flush(io, &mut events);
                self.handle_link(&mut events, io);
                self.events = events;
            }
            SioEvent::Socket {
                token,
                readable,
                writable,
            } => {
                let mut events = std::mem::take(&mut self.events);
                self.link
                    .on_socket(token, readable, writable, io, &mut events);
                self.handle_link(&mut events, io);
                self.events = events;
            }
            SioEvent::Timer(ClusterTimer::Tick) => self.on_tick(io),
            SioEvent::Timer(ClusterTimer::Expire { code, id }) => self.on_expire(code, id, io),
            SioEvent::Event(e) => self.on_event(e, io),
            SioEvent::Claim {
                session,
                nsp,
                pid,
                offset,
            } => self.claim(session, nsp, pid, offset, io),
            SioEvent::Connect {
                socket,
                recovered: true,
                ..
            } => self.back(socket, io),
            SioEvent::Connect { .. } => {}
            SioEvent::Away { socket, .. } => {
                if let Some(code) = room_of(io, socket) {
                    self.unseated.remove(&socket);
                    self.announce(socket, code, "userLeft", io);
                    self.tell_seat(socket, code, "away", Op::Ignore, io);
                }
            }
            SioEvent::Disconnect { socket, .. } => {
                // In a room, `leave` deletes its record.
                if let Some(pid) = self.moved_in.remove(&socket)
                    && room_of(io, socket).is_none()
                {
                    self.unpid(pid, io);
                }
                self.leave(socket, io);
                self.queues.remove(&socket);
                self.unseated.remove(&socket);
                self.buckets.remove(&socket);
                if let Some((per_socket, _)) = &mut self.join_failures {
                    per_socket.forget(socket);
                }
            }
        }
    }

    fn owner_of(&self, sid: &Sid) -> Option<SocketAddr> {
        let node = sid.as_str().get(..NODE_ID_LEN)?;
        self.peers.get(node).copied()
    }

    fn relay_secret(&self) -> Option<&str> {
        self.secret.as_deref()
    }

    fn health(&self, out: &mut String) {
        out.push_str(if self.link.is_up() {
            ",\"redis\":\"up\""
        } else {
            ",\"redis\":\"down\""
        });
    }

    fn metrics(&self, out: &mut String) {
        use crate::metrics::{counter, gauge, labelled_counter};
        let s = &self.stats;
        let rooms = (self.rooms.len(), "Chat rooms with a member on this node.");
        let made = [s.rooms_created, s.rooms_expired, s.joins, s.messages];
        write_room_metrics(out, rooms, made);
        labelled_counter(
            out,
            "pairchat_limited_total",
            "Chat requests refused by a limit, by limit.",
            "limit",
            [
                ("join_failures", s.limited_joins),
                ("message_rate", s.limited_messages),
                ("max_memory", s.output_full),
                ("redis", s.unavailable),
            ],
        );
        gauge(
            out,
            "pairchat_redis_up",
            "1 while the link to Redis is up.",
            u64::from(self.link.is_up()),
        );
        gauge(
            out,
            "pairchat_cluster_peers",
            "Other live nodes this node knows the address of.",
            self.peers.len() as u64,
        );
        labelled_counter(
            out,
            "pairchat_cluster_claims_total",
            "Clients back here with another node's socket, by result: recovered here, or a \
             fresh socket (its node dead or unknown, its events lost, or too slow).",
            "result",
            [
                ("recovered", s.claims_recovered),
                ("failed", s.claims_failed),
            ],
        );
        counter(
            out,
            "pairchat_cluster_handed_over_total",
            "Sockets of this node handed over to another node their client came back to.",
            s.handed_over,
        );
        gauge(
            out,
            "pairchat_redis_waiting",
            "Redis commands waiting for their reply.",
            self.link.waiting() as u64,
        );
        counter(
            out,
            "pairchat_redis_commands_total",
            "Commands sent to Redis.",
            self.link.commands,
        );
        counter(
            out,
            "pairchat_redis_connects_total",
            "Times the link to Redis was made.",
            self.link.connects,
        );
        counter(
            out,
            "pairchat_redis_errors_total",
            "Scripts Redis answered with an error.",
            s.errors,
        );
    }
}

/// What `pairchat:pid:<pid>` says of a socket in a room, so that another node can take it over
/// if the socket's node dies: `<node> <sid> <code> <has> <count> <base>`, written by its node
/// when the socket takes a seat there or comes to it. A client whose last offset is `base`
/// (`-`: none) or of a count up to `count` (given before) has the room's first `has`
/// messages; a later offset is tagged with the room's message count when it was sent
/// (`recovery::tagged`).
#[derive(Debug, PartialEq, Eq)]
struct Record<'a> {
    node: &'a str,
    sid: Sid,
    code: RoomCode,
    has: u64,
    count: u64,
    base: &'a str,
}

impl<'a> Record<'a> {
    fn parse(value: &'a str) -> Option<Self> {
        let mut f = value.split(' ');
        let record = Record {
            node: f.next()?,
            sid: Sid::parse(f.next()?)?,
            code: RoomCode::parse(f.next()?)?,
            has: f.next()?.parse().ok()?,
            count: f.next()?.parse().ok()?,
            base: f.next()?,
        };
        f.next().is_none().then_some(record)
    }

    /// How many of the room's messages a client whose last offset is `offset` has, the room
    /// having `seq` now: `None` when the offset cannot say (its tag unknown, or pointing before
    /// what the client had at the record).
    fn has(&self, offset: Option<u64>, seq: u64) -> Option<u64> {
        let Some(o) = offset else {
            return Some(self.has);
        };
        if self.base == o.to_string() || recovery::count_of(o) <= self.count {
            return Some(self.has);
        }
        let tag = recovery::tag_of_offset(o);
        if tag == recovery::TAG_UNKNOWN {
            return None;
        }
        // The greatest count up to `seq` with that tag.
        let m = recovery::TAG_UNKNOWN;
        let back = (seq % m + m - tag) % m;
        let has = seq.checked_sub(back)?;
        (has >= self.has).then_some(has)
    }
}

/// An offset as a script argument or a claim's field: `-` for none.
fn offset_arg(offset: Option<u64>) -> String {
    offset.map_or_else(|| "-".to_string(), |o| o.to_string())
}

fn member_with_sid(io: &Io<'_, '_>, code: RoomCode, sid: &str) -> Option<SocketRef> {
    members(io, code)
        .iter()
        .copied()
        .find(|m| io.socket_id(*m).is_some_and(|s| s.as_str() == sid))
}

/// Tells this node's other members of the room `event {userId}`.
fn announce(socket: SocketRef, code: RoomCode, event: &str, io: &mut Io<'_, '_>) {
    let json = io.socket_id(socket).map_or_else(|| "{}".into(), user_json);
    io.emit_to_room(Nsp::MAIN, &code.name(), Some(socket), event, &json);
}

/// A message to this node's members of a room.
fn deliver(code: RoomCode, message: &str, io: &mut Io<'_, '_>) {
    let packets = io.event_packet(Nsp::MAIN, "newMessage", message, &[]);
    if let Some(room) = io.room_id(Nsp::MAIN, &code.name()) {
        io.send_to_room_id(room, &packets);
    }
}

/// `<code> <sid>`, as scripts answer members.
fn code_and_sid(reply: &Resp) -> Option<(RoomCode, &str)> {
    let (code, sid) = reply.str()?.split_once(' ')?;
    Some((RoomCode::parse(code)?, sid))
}

/// The packets of an `H` answer: `<offset> <t|b> <length>\n<bytes>`, one after another.
fn parse_packets(mut bytes: &[u8]) -> Option<Vec<(u64, Outgoing)>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let end = bytes.iter().position(|b| *b == b'\n')?;
        let head = std::str::from_utf8(&bytes[..end]).ok()?;
        let mut parts = head.split(' ');
        let (Some(offset), Some(kind), Some(len), None) = (
            parts.next().and_then(|o| o.parse::<u64>().ok()),
            parts.next(),
            parts.next().and_then(|l| l.parse::<usize>().ok()),
            parts.next(),
        ) else {
            return None;
        };
        let stop = (end + 1).checked_add(len)?;
        let body = bytes.get(end + 1..stop)?;
        let packet = match kind {
            "t" => Outgoing::Text(std::str::from_utf8(body).ok()?.to_string().into()),
            "b" => Outgoing::Binary(body.to_vec().into()),
            _ => return None,
        };
        out.push((offset, packet));
        bytes = &bytes[stop..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use recovery::tagged;

    const SID: &str = "abcdefABCDEF01234567";

    #[test]
    fn a_record_reads_back_as_written() {
        let value = format!("n0de01 {SID} 123456 7 1000 -");
        let r = Record::parse(&value).expect("a record");
        assert_eq!(
            (r.node, r.sid.as_str(), r.has, r.count, r.base),
            ("n0de01", SID, 7, 1000, "-")
        );
        assert_eq!(r.code, RoomCode::parse("123456").unwrap());
        // A node alone (a socket moved there, not in a room), or anything else, is none.
        assert_eq!(Record::parse("n0de01"), None);
        assert_eq!(Record::parse(&format!("{value} extra")), None);
        assert_eq!(Record::parse(&format!("n0de01 {SID} 12345 7 1000 -")), None);
    }

    #[test]
    fn what_a_client_has_follows_its_last_offset() {
        let value = format!("n0de01 {SID} 123456 7 1000 {}", tagged(900, 3));
        let r = Record::parse(&value).unwrap();
        // No offset, the base, or one given before the record: what it had then.
        assert_eq!(r.has(None, 20), Some(7));
        assert_eq!(r.has(Some(tagged(900, 3)), 20), Some(7));
        assert_eq!(r.has(Some(tagged(1000, 99)), 20), Some(7));
        // Later: the room's message count its event was tagged with.
        assert_eq!(r.has(Some(tagged(1001, 12)), 20), Some(12));
        assert_eq!(r.has(Some(tagged(1001, 20)), 20), Some(20));
        // Tags wrap: the greatest count up to now with that tag.
        let m = recovery::TAG_UNKNOWN;
        assert_eq!(r.has(Some(tagged(1001, 5)), m + 9), Some(m + 5));
        assert_eq!(r.has(Some(tagged(1001, 12)), m + 9), Some(12));
        // Nothing to say: a packet without a tag, or before what it had at the record.
        assert_eq!(r.has(Some(tagged(1001, m)), 20), None);
        assert_eq!(r.has(Some(tagged(1001, 6)), 20), None);
        assert_eq!(r.has(Some(tagged(1001, 25)), 20), None);
    }
}
