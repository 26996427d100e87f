//! Socket.IO v5 on top of Engine.IO: namespaces, sockets, acks, binary attachments and rooms.
//!
//! `SocketIo<A>` is an Engine.IO `Handler`. It decodes Socket.IO packets from a session's
//! messages, keeps the sockets (one per namespace a session joined) and their rooms (behind an
//! `Adapter`: in this process by default, `adapter::LocalAdapter`), and hands
//! the application `SioEvent`s as values: a socket connected (with its auth payload), an event
//! arrived (name, raw JSON arguments, attachments, ack id), a socket disconnected, a timer
//! fired. The application answers through `SioIo`: ack, emit to a socket or a room, join and
//! leave rooms, timers. Malformed packets close the Engine.IO session.
//!
//! With connection state recovery on (`recovery`), a socket whose transport drops is first
//! *away* (`SioEvent::Away`): still registered with its id and rooms, its events kept, for the
//! recovery window. A client that comes back with the socket's private id gets it back
//! (`SioEvent::Connect` with `recovered`); otherwise the window closes with
//! `SioEvent::Disconnect`, which always means gone for good.
//!
//! Engine.IO v3 sessions (socket.io-client 2.x, `Config::allow_eio3`) speak Socket.IO v4:
//! the server connects them to `/` itself and answers a bare `40`; a socket's id is the
//! Engine.IO sid (`socket_name`: `/ns#<sid>` elsewhere than `/`); a namespace's query
//! (`40/chat?token=x,`) is its CONNECT auth; they are never recovered.

pub mod adapter;
mod error;
pub mod msgpack;
pub mod packet;
pub mod recovery;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use crate::slots::{SlotKey, SlotMap, Slots};
use serde_json::value::RawValue;
use tungstenite::Bytes;

use crate::engine::{
    CloseReason, Event, Handler, Io, Outgoing, Protocol, SessionId, Sid, SocketToken,
};
use crate::timer::{Millis, TimerId};

pub use adapter::{Adapter, LocalAdapter, RoomId};
pub use error::SioError;
pub use packet::PacketType;
pub use recovery::RecoveryConfig;

/// A socket: a session's membership of one namespace. Generation-checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketRef {
    idx: u32,
    generation: u32,
}

impl SlotKey for SocketRef {
    fn new(idx: u32, generation: u32) -> Self {
        SocketRef { idx, generation }
    }
    fn idx(&self) -> u32 {
        self.idx
    }
    fn generation(&self) -> u32 {
        self.generation
    }
}

impl SocketRef {
    /// A reference for unit tests of applications (no socket behind it).
    #[cfg(test)]
    pub(crate) fn for_test(idx: u32) -> Self {
        SocketRef { idx, generation: 1 }
    }
}

/// A registered namespace, by index (`/` is always 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nsp(u16);

impl Nsp {
    /// The main namespace `/`.
    pub const MAIN: Nsp = Nsp(0);
}

/// An event arrived on a socket.
#[derive(Debug)]
pub struct EventData<'a> {
    /// The socket.
    pub socket: SocketRef,
    /// The event name.
    pub name: &'a str,
    /// The arguments, raw JSON (binary attachments appear as placeholders).
    pub args: &'a [&'a RawValue],
    /// The binary attachments, in placeholder order.
    pub attachments: &'a [Bytes],
    /// Set when the client waits for an ack.
    pub ack: Option<u64>,
}

/// What the Socket.IO layer hands the application.
#[derive(Debug)]
pub enum SioEvent<'a, T> {
    /// A socket connected to a namespace, or came back to it.
    Connect {
        /// The socket.
        socket: SocketRef,
        /// The namespace.
        nsp: Nsp,
        /// The handshake's auth payload (`{}` when none was sent).
        auth: &'a RawValue,
        /// The socket is one that was away, back with its id and rooms; the events it missed
        /// were sent again before the CONNECT reply.
        recovered: bool,
    },
    /// An event.
    Event(EventData<'a>),
    /// A socket's transport dropped and it may come back (recovery on): it keeps its id and
    /// rooms, and room events reach it (kept, not sent) until it is back (`Connect` with
    /// `recovered`) or gone (`Disconnect`).
    Away {
        /// The socket.
        socket: SocketRef,
        /// Why the transport dropped (socket.io's reason strings).
        reason: &'static str,
    },
    /// A socket is gone for good (namespace disconnect, session closed without recovery, or
    /// its recovery window closed). It is still registered while this is handled.
    Disconnect {
        /// The socket.
        socket: SocketRef,
        /// Why (socket.io's reason strings).
        reason: &'static str,
    },
    /// A client asks to recover a socket whose pid is not known here, which may live on
    /// another node (claims on: `SioConfig::pid_prefix`):
    /// the application brings it here (`SioIo::arrive`, then `SioIo::adopt`) or gives up
    /// (`SioIo::refuse_claim`: a fresh socket, with its `Connect`). Until then the CONNECT
    /// waits, within the connect timeout.
    Claim {
        /// The client's session.
        session: SessionId,
        /// The namespace.
        nsp: Nsp,
        /// The private id it came back with.
        pid: Sid,
        /// The last offset it saw.
        offset: Option<u64>,
    },
    /// An application timer fired.
    Timer(T),
    /// The loop is about to start (once, first): open sockets of the application's own, set
    /// its first timers.
    Start {
        /// The address the server is bound to.
        addr: std::net::SocketAddr,
    },
    /// The loop turn's events are handled: write what was batched for the application's own
    /// sockets.
    TurnEnd,
    /// A socket of the application's own (`SioIo::register_socket`) is ready.
    Socket {
        /// Which one.
        token: SocketToken,
        /// Readable (or closed).
        readable: bool,
        /// Writable again.
        writable: bool,
    },
}

/// A Socket.IO application.
pub trait App {
    /// The payload of the application's timers.
    type Timer;

    /// Handles one event.
    fn handle(&mut self, event: SioEvent<'_, Self::Timer>, io: &mut SioIo<'_, '_, Self::Timer>);

    /// Appends the application's metrics (Prometheus text) to a `/metrics` answer.
    fn metrics(&self, _out: &mut String) {}

    /// Appends fields to the `/health` answer (`engine::Handler::health`).
    fn health(&self, _out: &mut String) {}

    /// The node a foreign session lives on (`engine::Handler::owner_of`).
    fn owner_of(&self, _sid: &Sid) -> Option<std::net::SocketAddr> {
        None
    }

    /// The cluster's relay secret (`engine::Handler::relay_secret`).
    fn relay_secret(&self) -> Option<&str> {
        None
    }
}

/// Timers of the Socket.IO layer.
#[derive(Debug)]
pub enum SioTimer<T> {
    /// The session sent no CONNECT in time.
    ConnectTimeout(SessionId),
    /// An away socket's recovery window closed.
    RecoveryWindow(SocketRef),
    /// The application's own.
    App(T),
}

/// Socket.IO settings.
#[derive(Debug, Clone)]
pub struct SioConfig {
    /// Namespaces besides `/`, e.g. `/custom`.
    pub namespaces: Vec<String>,
    /// How long a session may go without connecting to a namespace. Defaults to 45 s.
    pub connect_timeout: std::time::Duration,
    /// Connection state recovery (on by default, for 2 minutes).
    pub recovery: RecoveryConfig,
    /// What every private id (`pid`) made here starts with: a cluster node's id. Set, a
    /// CONNECT with a pid not known here may be another node's socket: the application is
    /// asked to bring it here (`SioEvent::Claim`). Empty: no claims.
    pub pid_prefix: String,
    /// The parsers clients may speak (`--parser`): each session's first Socket.IO packet says
    /// which it speaks (a text message: JSON; a binary one: msgpack). Defaults to both.
    pub parsers: Parsers,
}

/// A Socket.IO parser: socket.io's default (JSON text, binary attachments as separate
/// messages) or socket.io-msgpack-parser's (one MessagePack binary message per packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parser {
    /// socket.io-parser.
    Json,
    /// socket.io-msgpack-parser.
    Msgpack,
}

/// Which parsers a server takes (`--parser auto|json|msgpack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Parsers {
    /// Either, each session the one it speaks first.
    #[default]
    Auto,
    /// Only this one.
    Only(Parser),
}

impl Parsers {
    /// Whether a session may speak `p`.
    fn take(self, p: Parser) -> bool {
        self == Parsers::Auto || self == Parsers::Only(p)
    }
}

impl Default for SioConfig {
    fn default() -> Self {
        SioConfig {
            namespaces: Vec::new(),
            connect_timeout: std::time::Duration::from_secs(45),
            recovery: RecoveryConfig::default(),
            pid_prefix: String::new(),
            parsers: Parsers::Auto,
        }
    }
}

struct Socket {
    id: Sid,
    /// The client's address, when trustworthy.
    addr: Option<IpAddr>,
    /// The session it is connected through (the last one, while away).
    session: SessionId,
    nsp: Nsp,
    rooms: Vec<Box<str>>,
    /// Recovery on: the private id a client comes back with, and the last events sent.
    pid: Option<Sid>,
    outbox: recovery::Outbox,
    /// Set while the transport is gone and the socket may come back. Boxed: it is rare, and
    /// every socket has the field.
    away: Option<Box<Away>>,
    /// Restores lately: since when, and the bytes they sent again (`MAX_REPLAY_BYTES`).
    restores: (Millis, usize),
    /// Being handed over to another node (`SioIo::set_moving`): not restored here.
    moving: bool,
    /// Its session speaks socket.io-msgpack-parser (`Parser::Msgpack`).
    msgpack: bool,
    /// Its session speaks Engine.IO v3 (Socket.IO v4): its id is the session's sid.
    v3: bool,
}

struct Away {
    /// When the recovery window closes.
    timer: TimerId,
    /// Why the transport dropped.
    reason: &'static str,
    /// Its place in `Recovery::away_order`.
    seq: u64,
}

/// Recovery's state: offsets, the pids of the sockets that can come back, the shared budget.
struct Recovery {
    window: std::time::Duration,
    caps: recovery::Caps,
    budget: recovery::Budget,
    /// The last offset given to a packet.
    offset: u64,
    /// Offsets follow the clock and carry a tag (a cluster: `next_offset`).
    clocked: bool,
    /// The tag of event packets' offsets for now (`SioIo::tagged`), else `TAG_UNKNOWN`.
    tag: Option<u64>,
    pids: HashMap<Sid, SocketRef>,
    /// Every away socket, oldest first: at the cap on away sockets, the first to go.
    away_order: BTreeMap<u64, SocketRef>,
    /// The away sockets that hold events, oldest first: the first to lose them when the
    /// budget is short (those nearest the end of their window). One holding nothing keeps
    /// its recovery: it would free nothing.
    holding: BTreeMap<u64, SocketRef>,
    away_seq: u64,
    stats: RecoveryStats,
}

/// Recoveries for `/metrics`, by outcome.
#[derive(Default)]
struct RecoveryStats {
    recovered: u64,
    /// No socket with that pid (never, or its window closed), or on another namespace.
    unknown: u64,
    /// Events after the client's offset were dropped by a cap (or the offset is not ours).
    incomplete: u64,
    /// Away sockets ended early to make room (at the cap on away sockets, the oldest goes).
    no_room: u64,
    /// Refused: restores sent the socket `MAX_REPLAY_BYTES` again within `RESTORE_PERIOD`.
    too_often: u64,
    /// Handed over to another node (`SioIo::hand_over`).
    handed_over: u64,
}

#[derive(Default)]
struct Client {
    /// The client's address, when trustworthy (`engine::Event::Open`).
    addr: Option<IpAddr>,
    sockets: Vec<SocketRef>,
    connect_timer: Option<TimerId>,
    /// A binary packet waiting for its attachments. Boxed, as `held` is.
    pending: Option<Box<PendingBinary>>,
    /// A CONNECT whose socket lives on another node, while the application claims it
    /// (`SioEvent::Claim`): the namespace and the auth payload.
    /// Boxed: it is rare, and every session has the field.
    held: Option<Box<Held>>,
    /// The parser it speaks, once its first Socket.IO packet said.
    parser: Option<Parser>,
    /// An Engine.IO v3 session's sid (it speaks Socket.IO v4): its sockets' id.
    eio3: Option<Sid>,
}

impl Client {
    /// Whether it speaks socket.io-msgpack-parser.
    fn msgpack(&self) -> bool {
        self.parser == Some(Parser::Msgpack)
    }

    /// Whether it speaks parser `p`: its first Socket.IO packet decides, among the parsers
    /// the server takes.
    fn speaks(&mut self, p: Parser, parsers: Parsers) -> bool {
        match self.parser {
            Some(q) => q == p,
            None if parsers.take(p) => {
                self.parser = Some(p);
                true
            }
            None => false,
        }
    }
}

/// A CONNECT waiting on a claim (`SioEvent::Claim`).
struct Held {
    nsp: Nsp,
    auth: Box<RawValue>,
    /// The last offset the client saw (on another node, perhaps).
    offset: Option<u64>,
}

/// Per-session state, attached to the loop's session ids (a lookup per packet, no hashing).
type Clients = SlotMap<SessionId, Client>;

struct PendingBinary {
    text: String,
    expected: usize,
    attachments: Vec<Bytes>,
    bytes: usize,
}

/// Sockets, rooms and namespaces: the tables `SioIo` works on.
struct Tables {
    clients: Clients,
    /// Claims the application gave up on (`SioIo::refuse_claim`): those sessions connect a
    /// fresh socket once its handler returns.
    unclaimed: Vec<(SessionId, Nsp)>,
    /// What every pid made here starts with (`SioConfig::pid_prefix`).
    pid_prefix: String,
    namespaces: Vec<String>,
    sockets: Slots<SocketRef, Socket>,
    /// Room membership (each socket also lists its own rooms, for `rooms_of` and its exit).
    rooms: Box<dyn Adapter>,
    /// Connection state recovery, when on.
    recovery: Option<Recovery>,
}

/// The Socket.IO layer: an Engine.IO handler running an `App`.
pub struct SocketIo<A: App> {
    app: A,
    config: SioConfig,
    max_payload: usize,
    tables: Tables,
}

impl<A: App> SocketIo<A> {
    /// The layer with `app` on top, rooms in this process (`LocalAdapter`); `max_payload`
    /// bounds binary attachments.
    pub fn new(app: A, config: SioConfig, max_payload: usize) -> Self {
        Self::with_adapter(app, config, max_payload, Box::new(LocalAdapter::default()))
    }

    /// The layer with `app` on top and its rooms kept by `rooms`.
    pub fn with_adapter(
        app: A,
        config: SioConfig,
        max_payload: usize,
        rooms: Box<dyn Adapter>,
    ) -> Self {
        let mut namespaces = vec!["/".to_string()];
        namespaces.extend(config.namespaces.iter().cloned());
        let pid_prefix = config.pid_prefix.clone();
        let r = &config.recovery;
        let recovery = r.enabled().then(|| Recovery {
            window: r.window,
            caps: recovery::Caps {
                events: r.max_events,
                bytes: r.max_socket_bytes,
            },
            budget: recovery::Budget {
                used: 0,
                max: r.max_bytes,
            },
            offset: 0,
            clocked: !pid_prefix.is_empty(),
            tag: None,
            pids: HashMap::new(),
            away_order: BTreeMap::new(),
            holding: BTreeMap::new(),
            away_seq: 0,
            stats: RecoveryStats::default(),
        });
        SocketIo {
            app,
            config,
            max_payload,
            tables: Tables {
                clients: Clients::default(),
                unclaimed: Vec::new(),
                pid_prefix,
                namespaces,
                sockets: Slots::default(),
                rooms,
                recovery,
            },
        }
    }

    /// The application, to change.
    pub fn app_mut(&mut self) -> &mut A {
        &mut self.app
    }

    /// The application.
    pub fn app(&self) -> &A {
        &self.app
    }

    /// Number of sockets, connected or away.
    pub fn socket_count(&self) -> usize {
        self.tables.sockets.len()
    }

    fn dispatch(&mut self, event: SioEvent<'_, A::Timer>, io: &mut Io<'_, SioTimer<A::Timer>>) {
        let mut sio = SioIo {
            io,
            tables: &mut self.tables,
        };
        self.app.handle(event, &mut sio);
        while !self.tables.unclaimed.is_empty() {
            for (session, nsp) in std::mem::take(&mut self.tables.unclaimed) {
                let client = self.tables.clients.get_mut(session);
                let held = client.and_then(|c| c.held.take_if(|h| h.nsp == nsp));
                if let Some(held) = held {
                    let socket = self.connect(session, nsp, &held.auth, io);
                    // socket.io-client keeps its last offset across sockets: one from another
                    // node means nothing here (this socket sent it nothing yet).
                    if let Some(s) = self.tables.sockets.get_mut(socket) {
                        s.outbox.set_base(held.offset);
                    }
                }
            }
        }
    }

    /// A claim on a socket that may live on another node: its pid and offset, when recovery
    /// and claims are on and the pid is not known here (a socket keeps its pid as it moves
    /// between nodes, so this node's own pids are claimed too).
    fn foreign(&self, claim: &Claim) -> Option<(Sid, Option<u64>)> {
        let pid = claim.pid?;
        let known = self.tables.recovery.as_ref()?.pids.contains_key(&pid);
        let offset = claim.offset.ok()?;
        (!self.tables.pid_prefix.is_empty() && !known).then_some((pid, offset))
    }

    fn on_message(
        &mut self,
        session: SessionId,
        text: &str,
        io: &mut Io<'_, SioTimer<A::Timer>>,
    ) -> Result<(), SioError> {
        let client = self
            .tables
            .clients
            .get_mut(session)
            .ok_or(SioError::UnknownSession)?;
        if !client.speaks(Parser::Json, self.config.parsers) {
            return Err(SioError::BadPayload);
        }
        if client.pending.is_some() {
            return Err(SioError::BadAttachments); // text where an attachment was due
        }
        let (p, parts) = packet::decode_parts(text)?;
        if p.kind.is_binary() {
            if let Some(data) = p.data {
                packet::check_placeholders(data, p.attachments)?;
            }
            if p.attachments > 0 {
                client.pending = Some(Box::new(PendingBinary {
                    text: text.to_string(),
                    expected: p.attachments,
                    attachments: Vec::new(),
                    bytes: 0,
                }));
                return Ok(());
            }
        }
        self.on_packet(session, p, parts, &[], io)
    }

    /// A packet of socket.io-msgpack-parser (`first`: the session's first, which must be a
    /// CONNECT): read as the JSON parser's text and attachments, then handled as those are.
    fn on_msgpack(
        &mut self,
        session: SessionId,
        data: &[u8],
        first: bool,
        io: &mut Io<'_, SioTimer<A::Timer>>,
    ) -> Result<(), SioError> {
        let decoded = msgpack::decode(data, self.max_payload)?;
        if first && decoded.kind != PacketType::Connect {
            return Err(SioError::BadPayload);
        }
        if let (true, Some(data)) = (decoded.kind.is_binary(), &decoded.data) {
            packet::check_placeholders(data, decoded.attachments.len())?;
        }
        let text = msgpack::to_text(&decoded);
        let attachments: Vec<Bytes> = (decoded.attachments.into_iter()).map(Bytes::from).collect();
        let (p, parts) = packet::decode_parts(&text)?;
        self.on_packet(session, p, parts, &attachments, io)
    }

    fn on_binary(
        &mut self,
        session: SessionId,
        data: &[u8],
        io: &mut Io<'_, SioTimer<A::Timer>>,
    ) -> Result<(), SioError> {
        let client = self
            .tables
            .clients
            .get_mut(session)
            .ok_or(SioError::UnknownSession)?;
        let pending = client.pending.as_mut().ok_or(SioError::BadAttachments)?;
        pending.bytes += data.len();
        if pending.bytes > self.max_payload {
            return Err(SioError::BadAttachments);
        }
        pending.attachments.push(Bytes::copy_from_slice(data));
        if pending.attachments.len() < pending.expected {
            return Ok(());
        }
        let PendingBinary {
            text, attachments, ..
        } = *client.pending.take().ok_or(SioError::BadAttachments)?;
        let (p, parts) = packet::decode_parts(&text)?;
        self.on_packet(session, p, parts, &attachments, io)
    }

    fn on_packet(
        &mut self,
        session: SessionId,
        p: packet::Packet<'_>,
        parts: Option<packet::EventParts<'_>>,
        attachments: &[Bytes],
        io: &mut Io<'_, SioTimer<A::Timer>>,
    ) -> Result<(), SioError> {
        // A 2.x client (Engine.IO v3) puts a CONNECT's auth in its namespace, as a query.
        let v3 = p.kind == PacketType::Connect
            && (self.tables.clients.get(session)).is_some_and(|c| c.eio3.is_some());
        let (name, query) = match v3.then(|| p.nsp.split_once('?')).flatten() {
            Some((name, query)) => (name, Some(query)),
            None => (p.nsp, None),
        };
        let nsp = (self.tables.namespaces.iter())
            .position(|n| n == name)
            .map(|i| Nsp(i as u16));
        let socket = nsp.and_then(|nsp| self.socket_of(session, nsp));
        match p.kind {
            PacketType::Connect => {
                let Some(nsp) = nsp else {
                    let mut s = String::new();
                    packet::encode(
                        &mut s,
                        PacketType::ConnectError,
                        name,
                        0,
                        None,
                        Some("{\"message\":\"Invalid namespace\"}"),
                    );
                    let msgpack = self.tables.msgpack(session);
                    send_packet(io, session, msgpack, &[Outgoing::message_str(&s)]);
                    return Ok(());
                };
                if socket.is_some() || self.tables.held(session).is_some() {
                    return Ok(()); // already connected to this namespace (or on its way)
                }
                let from_query;
                let auth: &RawValue = match (v3, p.data) {
                    (true, _) => {
                        from_query = query_object(query.unwrap_or(""));
                        &from_query
                    }
                    (false, Some(d)) => {
                        serde_json::from_str(d).map_err(|_| SioError::BadPayload)?
                    }
                    (false, None) => empty_object(),
                };
                let recovers = self.tables.recovery.is_some() && !v3;
                let claim = recovers.then(|| Claim::of(auth)).flatten();
                if let Some((pid, offset)) = claim.as_ref().and_then(|c| self.foreign(c)) {
                    if let Some(client) = self.tables.clients.get_mut(session) {
                        client.held = Some(Box::new(Held {
                            nsp,
                            auth: auth.to_owned(),
                            offset,
                        }));
                    }
                    let event = SioEvent::Claim {
                        session,
                        nsp,
                        pid,
                        offset,
                    };
                    self.dispatch(event, io);
                    return Ok(());
                }
                let offset = claim.as_ref().and_then(|c| c.offset.ok().flatten());
                if !claim.is_some_and(|c| self.restore(session, nsp, c, auth, io)) {
                    let socket = self.connect(session, nsp, auth, io);
                    // A fresh socket for a client that asked for recovery: its last offset
                    // (kept across sockets by socket.io-client) means nothing here.
                    if let Some(s) = self.tables.sockets.get_mut(socket) {
                        s.outbox.set_base(offset);
                    }
                }
            }
            PacketType::Disconnect => {
                if let Some(socket) = socket {
                    self.remove_socket(socket, "client namespace disconnect", io);
                }
            }
            PacketType::Event | PacketType::BinaryEvent => {
                let Some(socket) = socket else { return Ok(()) };
                // `decode_parts` split every event it accepted.
                let Some((name, args)) = parts else {
                    return Err(SioError::BadPayload);
                };
                let data = EventData {
                    socket,
                    name: &name,
                    args: &args,
                    attachments,
                    ack: p.id,
                };
                self.dispatch(SioEvent::Event(data), io);
            }
            // The server never asks clients for acks; a stray one is ignored.
            PacketType::Ack | PacketType::BinaryAck => {}
            PacketType::ConnectError => return Err(SioError::BadPayload),
        }
        Ok(())
    }

    fn socket_of(&self, session: SessionId, nsp: Nsp) -> Option<SocketRef> {
        let client = self.tables.clients.get(session)?;
        client
            .sockets
            .iter()
            .copied()
            .find(|s| self.tables.socket(*s).is_some_and(|s| s.nsp == nsp))
    }

    fn connect(
        &mut self,
        session: SessionId,
        nsp: Nsp,
        auth: &RawValue,
        io: &mut Io<'_, SioTimer<A::Timer>>,
    ) -> SocketRef {
        let client = self.tables.clients.get(session);
        let (addr, eio3) = client.map_or((None, None), |c| (c.addr, c.eio3));
        // A 2.x client's socket id is its session's sid; it is never recovered.
        let id = eio3.unwrap_or_else(|| Sid::random(io.rng()));
        let prefix = &self.tables.pid_prefix;
        let pid = (self.tables.recovery.as_ref())
            .filter(|_| eio3.is_none())
            .map(|_| Sid::random_with_prefix(io.rng(), prefix));
        let socket = self.tables.sockets.insert(Socket {
            id,
            addr,
            session,
            nsp,
            rooms: Vec::new(),
            pid,
            outbox: recovery::Outbox::default(),
            away: None,
            restores: (io.now, 0),
            moving: false,
            msgpack: false,
            v3: eio3.is_some(),
        });
        if let (Some(pid), Some(r)) = (pid, &mut self.tables.recovery) {
            r.pids.insert(pid, socket);
        }
        self.attach(session, socket, auth, false, io);
        socket
    }

    /// Gives a session the socket (new, or back: `recovered`), sends the CONNECT reply and
    /// tells the application.
    fn attach(
        &mut self,
        session: SessionId,
        socket: SocketRef,
        auth: &RawValue,
        recovered: bool,
        io: &mut Io<'_, SioTimer<A::Timer>>,
    ) {
        if !self.tables.connect_reply(session, socket, io) {
            return;
        }
        let Some(s) = self.tables.socket(socket) else {
            return;
        };
        let name = &self.tables.namespaces[s.nsp.0 as usize];
        crate::log::debug(
            "socket connected",
            &[
                ("socket", &s.id),
                ("nsp", name),
                ("session", &session),
                ("recovered", &recovered),
            ],
        );
        let event = SioEvent::Connect {
            socket,
            nsp: s.nsp,
            auth,
            recovered,
        };
        self.dispatch(event, io);
    }

    /// A CONNECT with a `pid`: gives the client its away socket back, with every event after
    /// its offset sent again first, if that is complete. False: connect a fresh socket.
    fn restore(
        &mut self,
        session: SessionId,
        nsp: Nsp,
        claim: Claim,
        auth: &RawValue,
        io: &mut Io<'_, SioTimer<A::Timer>>,
    ) -> bool {
        let Tables {
            sockets, recovery, ..
        } = &mut self.tables;
        let Some(r) = recovery else {
            return false;
        };
        let found = claim
            .pid
            .and_then(|pid| r.pids.get(&pid).copied())
            .filter(|s| sockets.get(*s).is_some_and(|s| s.nsp == nsp && !s.moving));
        let Some(socket) = found else {
            r.stats.unknown += 1;
            return false;
        };
        // Still connected through another session: that transport is stale (the client is
        // here now), so the socket goes away from it first and that session closes.
        if let Some(s) = sockets.get(socket)
            && s.away.is_none()
        {
            let old = s.session;
            self.go_away(socket, CloseReason::TransportClose.as_str(), io);
            if self
                .tables
                .clients
                .get(old)
                .is_some_and(|c| c.sockets.is_empty())
            {
                io.close(old, CloseReason::ServerClose);
            }
        }
        let Tables {
            sockets,
            recovery,
            clients,
            ..
        } = &mut self.tables;
        let (Some(s), Some(r)) = (sockets.get_mut(socket), recovery.as_mut()) else {
            return false;
        };
        if io.now.saturating_sub(s.restores.0) >= recovery::RESTORE_PERIOD {
            s.restores = (io.now, 0);
        }
        let replay = match claim.offset.map(|o| s.outbox.after(o)) {
            Ok(Ok(missed)) => {
                let missed: Vec<Outgoing> = missed.cloned().collect();
                s.restores.1 += missed.iter().map(Outgoing::len).sum::<usize>();
                let too_often = s.restores.1 > recovery::MAX_REPLAY_BYTES;
                r.stats.too_often += u64::from(too_often);
                (!too_often).then_some(missed)
            }
            _ => {
                r.stats.incomplete += 1;
                None
            }
        };
        let Some(replay) = replay else {
            // The client missed events that are gone (or comes back too often): it gets a
            // fresh socket, and this one (which cannot come back whole) is gone too.
            let reason = s.away.as_ref().map_or("transport close", |a| a.reason);
            self.remove_socket(socket, reason, io);
            return false;
        };
        r.stats.recovered += 1;
        if let Some(away) = s.away.take() {
            r.away_order.remove(&away.seq);
            r.holding.remove(&away.seq);
            io.cancel_timer(away.timer);
        }
        s.outbox.resent();
        s.session = session;
        s.addr = clients.get(session).and_then(|c| c.addr);
        s.msgpack = clients.get(session).is_some_and(Client::msgpack);
        send_messages(io, session, s.msgpack, replay);
        self.attach(session, socket, auth, true, io);
        true
    }

    /// The socket's transport dropped: with recovery on, it stays (away) for the window;
    /// otherwise it is gone.
    fn go_away(
        &mut self,
        socket: SocketRef,
        reason: &'static str,
        io: &mut Io<'_, SioTimer<A::Timer>>,
    ) {
        let Some(r) = &mut self.tables.recovery else {
            self.remove_socket(socket, reason, io);
            return;
        };
        if (r.away_order.len() + 1) * recovery::AWAY_COST > r.budget.max {
            // As many sockets away as the budget allows: the oldest one's window ends now
            // (or, when none is left to end, this one cannot be kept).
            r.stats.no_room += 1;
            let oldest = r.away_order.first_key_value().map(|(_, s)| *s);
            let ended = oldest.unwrap_or(socket);
            let why = self.tables.socket(ended).and_then(|s| s.away.as_ref());
            let why = why.map_or(reason, |a| a.reason);
            self.remove_socket(ended, why, io);
            if ended == socket {
                return;
            }
        }
        let Some(r) = &mut self.tables.recovery else {
            return;
        };
        let Some(s) = self.tables.sockets.get_mut(socket) else {
            return;
        };
        let at = crate::timer::deadline(io.now, r.window);
        let timer = io.set_timer(at, SioTimer::RecoveryWindow(socket));
        r.away_seq += 1;
        let seq = r.away_seq;
        r.away_order.insert(seq, socket);
        if !s.outbox.is_empty() && !s.outbox.is_lost() {
            r.holding.insert(seq, socket);
        }
        if let Some(old) = s.away.replace(Box::new(Away { timer, reason, seq })) {
            io.cancel_timer(old.timer);
            r.away_order.remove(&old.seq);
            r.holding.remove(&old.seq);
        }
        if let Some(client) = self.tables.clients.get_mut(s.session) {
            client.sockets.retain(|x| *x != socket);
        }
        self.dispatch(SioEvent::Away { socket, reason }, io);
    }

    fn remove_socket(
        &mut self,
        socket: SocketRef,
        reason: &'static str,
        io: &mut Io<'_, SioTimer<A::Timer>>,
    ) {
        self.dispatch(SioEvent::Disconnect { socket, reason }, io);
        self.tables.remove(socket, io);
    }
}

impl Recovery {
    /// The next offset: one more than the last. In a cluster (`clocked`) an offset is a count
    /// `<< TAG_BITS` with `tag` in the bits below (`recovery::tagged`); the count is at least
    /// the wall clock in quarter milliseconds (four per millisecond before it runs ahead), so
    /// a client's last offset from one node is below the offsets another node gives later:
    /// socket.io-client keeps it across sockets and nodes (`Outbox::after`).
    fn next_offset(&mut self, unix_ms: u64, tag: u64) -> u64 {
        if self.clocked {
            let count = (recovery::count_of(self.offset) + 1).max(unix_ms.saturating_mul(4));
            self.offset = recovery::tagged(count, tag);
        } else {
            self.offset += 1;
        }
        self.offset
    }
}

/// What a CONNECT asking for recovery claims: the socket's private id and the last offset the
/// client saw (`Err`: one that is no offset of ours).
struct Claim {
    pid: Option<Sid>,
    offset: Result<Option<u64>, ()>,
}

impl Claim {
    /// The claim in a CONNECT's auth payload, if it has a `pid`.
    fn of(auth: &RawValue) -> Option<Claim> {
        let [pid, offset] = crate::json::raw_fields(auth.get(), ["pid", "offset"])?;
        fn string(raw: &RawValue) -> Option<&str> {
            serde_json::from_str(raw.get()).ok()
        }
        let offset = match offset {
            None => Ok(None),
            Some(raw) if raw.get() == "null" => Ok(None),
            Some(raw) => string(raw)
                .and_then(recovery::parse_offset)
                .map(Some)
                .ok_or(()),
        };
        Some(Claim {
            pid: string(pid?).and_then(Sid::parse),
            offset,
        })
    }
}

impl<A: App> Handler for SocketIo<A> {
    type Timer = SioTimer<A::Timer>;

    fn handle(&mut self, event: Event<'_, Self::Timer>, io: &mut Io<'_, Self::Timer>) {
        match event {
            Event::Open {
                session,
                client,
                protocol: Protocol::V3,
                sid,
                ..
            } => {
                // socket.io-client 2.x speaks the JSON parser only.
                if !self.config.parsers.take(Parser::Json) {
                    io.close(session, CloseReason::ServerClose);
                    return;
                }
                // Socket.IO v4: the server connects the client to `/` itself.
                let client = Client {
                    addr: client,
                    parser: Some(Parser::Json),
                    eio3: Some(sid),
                    ..Client::default()
                };
                self.tables.clients.insert(session, client);
                self.connect(session, Nsp(0), empty_object(), io);
            }
            Event::Open {
                session, client, ..
            } => {
                let at = crate::timer::deadline(io.now, self.config.connect_timeout);
                let timer = io.set_timer(at, SioTimer::ConnectTimeout(session));
                self.tables.clients.insert(
                    session,
                    Client {
                        addr: client,
                        connect_timer: Some(timer),
                        ..Client::default()
                    },
                );
            }
            // Input that is no Socket.IO: Engine.IO's "parse error" (never recovered).
            Event::Message { session, text } => {
                if self.on_message(session, text, io).is_err() {
                    io.close(session, CloseReason::ParseError);
                }
            }
            Event::Binary { session, data } => {
                let parsers = self.config.parsers;
                let client = self.tables.clients.get_mut(session);
                let parser = client.as_ref().and_then(|c| c.parser);
                // A binary message first: a msgpack CONNECT, if anything.
                let ok = match parser {
                    Some(Parser::Json) => self.on_binary(session, data, io).is_ok(),
                    _ => {
                        client.is_some_and(|c| c.speaks(Parser::Msgpack, parsers))
                            && self.on_msgpack(session, data, parser.is_none(), io).is_ok()
                    }
                };
                if !ok {
                    io.close(session, CloseReason::ParseError);
                }
            }
            Event::Close { session, reason } => {
                let Some(client) = self.tables.clients.remove(session) else {
                    return;
                };
                if let Some(timer) = client.connect_timer {
                    io.cancel_timer(timer);
                }
                let recoverable = reason.recoverable();
                let reason = disconnect_reason(reason);
                for socket in client.sockets {
                    // Only a socket with a private id can come back.
                    let pid = self.tables.socket(socket).and_then(|s| s.pid);
                    if recoverable && pid.is_some() {
                        self.go_away(socket, reason, io);
                    } else {
                        self.remove_socket(socket, reason, io);
                    }
                }
            }
            Event::Timer(SioTimer::ConnectTimeout(session)) => {
                if let Some(client) = self.tables.clients.get_mut(session) {
                    client.connect_timer = None;
                    if client.sockets.is_empty() {
                        io.close(session, CloseReason::ServerClose);
                    }
                }
            }
            Event::Pong { session } => {
                let (Some(client), Some(r)) =
                    (self.tables.clients.get(session), &mut self.tables.recovery)
                else {
                    return;
                };
                for socket in &client.sockets {
                    if let Some(s) = self.tables.sockets.get_mut(*socket) {
                        s.outbox.confirm(&mut r.budget);
                    }
                }
            }
            Event::Timer(SioTimer::RecoveryWindow(socket)) => {
                let away = self.tables.socket(socket).and_then(|s| s.away.as_ref());
                if let Some(reason) = away.map(|a| a.reason) {
                    self.remove_socket(socket, reason, io);
                }
            }
            Event::Timer(SioTimer::App(t)) => self.dispatch(SioEvent::Timer(t), io),
            Event::Start { addr } => self.dispatch(SioEvent::Start { addr }, io),
            Event::TurnEnd => self.dispatch(SioEvent::TurnEnd, io),
            Event::Socket {
                token,
                readable,
                writable,
            } => self.dispatch(
                SioEvent::Socket {
                    token,
                    readable,
                    writable,
                },
                io,
            ),
        }
    }

    fn health(&self, out: &mut String) {
        self.app.health(out);
    }

    fn owner_of(&self, sid: &Sid) -> Option<std::net::SocketAddr> {
        self.app.owner_of(sid)
    }

    fn relay_secret(&self) -> Option<&str> {
        self.app.relay_secret()
    }

    fn metrics(&self, out: &mut String) {
        use crate::metrics::{gauge, labelled_counter};
        let r = self.tables.recovery.as_ref();
        let away = r.map_or(0, |r| r.away_order.len());
        let sockets = (self.tables.sockets.len() - away) as u64;
        let help = "Connected Socket.IO sockets (all namespaces).";
        gauge(out, "pairchat_sio_sockets", help, sockets);
        if let Some(r) = r {
            let help = "Sockets whose transport dropped, within their recovery window.";
            gauge(out, "pairchat_sio_away_sockets", help, away as u64);
            let help = "Bytes kept for connection state recovery.";
            gauge(out, "pairchat_recovery_bytes", help, r.budget.used as u64);
            let help = "Most bytes kept for recovery (--recovery-max-bytes, within --max-memory).";
            gauge(
                out,
                "pairchat_recovery_limit_bytes",
                help,
                r.budget.max as u64,
            );
            let help =
                "Away sockets whose window ended early: as many were away as the budget allows.";
            crate::metrics::counter(
                out,
                "pairchat_recovery_refused_total",
                help,
                r.stats.no_room,
            );
            labelled_counter(
                out,
                "pairchat_recoveries_total",
                "Connection state recoveries asked for, by result.",
                "result",
                [
                    ("recovered", r.stats.recovered),
                    ("unknown_session", r.stats.unknown),
                    ("missed_events_dropped", r.stats.incomplete),
                    ("too_often", r.stats.too_often),
                    ("handed_over", r.stats.handed_over),
                ],
            );
        }
        self.app.metrics(out);
    }
}

/// socket.io's reason for a socket whose session closed: a client's Engine.IO close packet is
/// its "transport close" (recoverable, as a polling client sends one when its transport
/// breaks); the rest as the engine names them ("forced close" for the server's own).
fn disconnect_reason(reason: CloseReason) -> &'static str {
    match reason {
        CloseReason::ClientClose => "transport close",
        other => other.as_str(),
    }
}

/// A namespace's query (`token=x&a=1`) as a CONNECT's auth payload (`{"token":"x","a":"1"}`),
/// as Node's `querystring` reads it: `+` is a space, `%XX` a byte, a repeated key an array,
/// the first 1000 pairs only.
fn query_object(query: &str) -> Box<RawValue> {
    const MAX_PAIRS: usize = 1000;
    let mut map = serde_json::Map::new();
    for pair in query.split('&').take(MAX_PAIRS).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = serde_json::Value::String(crate::http::percent_decode(value));
        match map.entry(crate::http::percent_decode(key)) {
            serde_json::map::Entry::Vacant(e) => {
                e.insert(value);
            }
            serde_json::map::Entry::Occupied(mut e) => match e.get_mut() {
                serde_json::Value::Array(values) => values.push(value),
                first => *first = serde_json::Value::Array(vec![first.take(), value]),
            },
        }
    }
    let json = serde_json::Value::Object(map).to_string();
    RawValue::from_string(json).unwrap_or_else(|_| empty_object().to_owned())
}

fn empty_object() -> &'static RawValue {
    // A constant that is valid JSON.
    serde_json::from_str("{}").expect("`{}` is valid JSON")
}

impl Tables {
    fn socket(&self, s: SocketRef) -> Option<&Socket> {
        self.sockets.get(s)
    }

    /// The namespace a session's CONNECT waits on a claim for.
    fn held(&self, session: SessionId) -> Option<Nsp> {
        self.clients.get(session)?.held.as_ref().map(|h| h.nsp)
    }

    /// Gives a session the socket and sends the CONNECT reply; false if the session is gone.
    fn connect_reply<T>(
        &mut self,
        session: SessionId,
        socket: SocketRef,
        io: &mut Io<'_, SioTimer<T>>,
    ) -> bool {
        let (Some(client), Some(s)) = (self.clients.get_mut(session), self.sockets.get_mut(socket))
        else {
            return false;
        };
        client.sockets.push(socket);
        s.msgpack = client.msgpack();
        if let Some(timer) = client.connect_timer.take() {
            io.cancel_timer(timer);
        }
        let name = &self.namespaces[s.nsp.0 as usize];
        if client.eio3.is_some() {
            // Socket.IO v4's CONNECT reply has no payload (the client knows its id).
            let mut out = String::with_capacity(2 + name.len());
            packet::encode(&mut out, PacketType::Connect, name, 0, None, None);
            io.send(session, Outgoing::message_str(&out));
            return true;
        }
        let mut data = String::with_capacity(64);
        data.push_str("{\"sid\":\"");
        data.push_str(s.id.as_str());
        if let Some(pid) = s.pid {
            data.push_str("\",\"pid\":\"");
            data.push_str(pid.as_str());
        }
        data.push_str("\"}");
        let mut out = String::with_capacity(80);
        packet::encode(&mut out, PacketType::Connect, name, 0, None, Some(&data));
        send_packet(io, session, s.msgpack, &[Outgoing::message_str(&out)]);
        true
    }

    /// Whether a session speaks socket.io-msgpack-parser.
    fn msgpack(&self, session: SessionId) -> bool {
        self.clients.get(session).is_some_and(Client::msgpack)
    }

    /// Takes a socket out of every table without telling the application (it handed the
    /// socket over, or never had it); a session it was connected through closes if it has no
    /// socket left.
    fn discard<T>(&mut self, socket: SocketRef, io: &mut Io<'_, SioTimer<T>>) {
        let Some(session) = self.remove(socket, io) else {
            return;
        };
        if let Some(client) = self.clients.get(session)
            && client.sockets.is_empty()
            && client.held.is_none()
        {
            io.close(session, CloseReason::ServerClose);
        }
    }

    /// Takes a socket out of every table: its recovery state, rooms, slot and session. The
    /// session it was connected through, if it was (not away).
    fn remove<T>(&mut self, socket: SocketRef, io: &mut Io<'_, SioTimer<T>>) -> Option<SessionId> {
        let s = self.sockets.get_mut(socket)?;
        let (session, present) = (s.session, s.away.is_none());
        if let Some(r) = &mut self.recovery {
            if let Some(away) = s.away.take() {
                r.away_order.remove(&away.seq);
                r.holding.remove(&away.seq);
                io.cancel_timer(away.timer);
            }
            if let Some(pid) = s.pid {
                r.pids.remove(&pid);
            }
            s.outbox.clear(&mut r.budget);
        }
        self.leave_all(socket);
        self.sockets.remove(socket);
        if let Some(client) = self.clients.get_mut(session) {
            client.sockets.retain(|x| *x != socket);
        }
        present.then_some(session)
    }

    fn leave_all(&mut self, socket: SocketRef) {
        let Some(s) = self.sockets.get_mut(socket) else {
            return;
        };
        for room in std::mem::take(&mut s.rooms) {
            self.rooms.leave(s.nsp, &room, socket);
        }
    }
}

/// Queues one packet's messages (its text, then its attachments) for a session, in its
/// parser: as they are, or as one msgpack message.
fn send_packet<T>(io: &mut Io<'_, SioTimer<T>>, session: SessionId, msgpack: bool, p: &[Outgoing]) {
    if !msgpack {
        for m in p {
            io.send(session, m.clone());
        }
    } else if let Some(m) = msgpack::from_messages(p) {
        io.send(session, m);
    } else {
        unsent();
    }
}

/// Logs a packet that could not be written as msgpack (data the layer wrote that msgpack
/// cannot carry: a lone surrogate escape, say).
fn unsent() {
    static UNSENT: crate::log::Sampler = crate::log::Sampler::new();
    UNSENT.warn("a packet could not be written as msgpack: not sent", &[]);
}

/// Queues packets' messages, one after another (a packet's attachments after its text), for
/// a session, in its parser.
fn send_messages<T>(
    io: &mut Io<'_, SioTimer<T>>,
    session: SessionId,
    msgpack: bool,
    messages: Vec<Outgoing>,
) {
    if !msgpack {
        for m in messages {
            io.send(session, m);
        }
        return;
    }
    let mut rest = &messages[..];
    while let Some(first) = rest.first() {
        let attachments = match first {
            Outgoing::Text(t) => (t.as_str().get(1..))
                .and_then(|t| packet::split(t).ok())
                .map_or(0, |p| p.attachments),
            Outgoing::Binary(_) => 0,
        };
        let n = (1 + attachments).min(rest.len());
        send_packet(io, session, true, &rest[..n]);
        rest = &rest[n..];
    }
}

/// Queues `packets` for every socket of `members` (and keeps an event in each one's outbox,
/// recovery on; an away socket only keeps it).
fn deliver(
    io: &mut Io<'_, SioTimer<impl Sized>>,
    sockets: &mut Slots<SocketRef, Socket>,
    mut recovery: Option<&mut Recovery>,
    members: &[SocketRef],
    except: Option<SocketRef>,
    packets: &Packets,
) {
    for member in members {
        if Some(*member) == except {
            continue;
        }
        if let (Some(offset), Some(r)) = (packets.offset, recovery.as_deref_mut()) {
            keep(sockets, r, *member, offset, packets);
        }
        let Some(s) = sockets.get(*member) else {
            continue;
        };
        if s.away.is_none() {
            if s.msgpack {
                // Written once for all the msgpack sessions it goes to.
                match packets
                    .msgpack
                    .get_or_init(|| msgpack::from_messages(packets))
                {
                    Some(m) => io.send(s.session, m.clone()),
                    None => unsent(),
                }
            } else {
                send_packet(io, s.session, false, packets);
            }
        }
    }
}

/// Keeps an event in a socket's outbox; when the budget is short, the oldest away sockets
/// lose what they kept first (they are nearest the end of their window), then the socket's own
/// oldest events go.
fn keep(
    sockets: &mut Slots<SocketRef, Socket>,
    r: &mut Recovery,
    socket: SocketRef,
    offset: u64,
    packets: &Packets,
) {
    // A socket without a private id (a 2.x client's) is never recovered: nothing to keep.
    let Some(s) = sockets.get_mut(socket).filter(|s| s.pid.is_some()) else {
        return;
    };
    for p in packets.iter() {
        s.outbox.push(offset, p.clone(), r.caps, &mut r.budget);
    }
    if let Some(away) = &s.away
        && !s.outbox.is_empty()
        && !s.outbox.is_lost()
    {
        r.holding.insert(away.seq, socket);
    }
    if r.budget.used <= r.budget.max {
        return;
    }
    while r.budget.used > r.budget.max {
        let Some((_, oldest)) = r.holding.pop_first() else {
            break;
        };
        if let Some(o) = sockets.get_mut(oldest) {
            o.outbox.lose(&mut r.budget);
        }
    }
    if let Some(s) = sockets.get_mut(socket) {
        s.outbox.trim(&mut r.budget);
    }
}

/// What `SioIo::adopt` did with an arriving socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopted {
    /// Given to the session that claimed it.
    Connected,
    /// That session is gone: the socket stays here, away, for a later recovery.
    Away,
    /// Discarded (events lost on the way, or restored too often).
    Failed,
}

/// The Engine.IO messages of one Socket.IO packet (the text, then any attachments), built once
/// and sent to any number of sockets. Derefs to a slice; the common case needs no `Vec`.
#[derive(Debug)]
pub struct Packets {
    /// The event's offset (recovery on); `None` for acks.
    offset: Option<u64>,
    parts: Parts,
    /// The packet as socket.io-msgpack-parser's message, made for the first msgpack session
    /// it goes to (`None` inside: it cannot be).
    msgpack: std::cell::OnceCell<Option<Outgoing>>,
}

#[derive(Debug)]
enum Parts {
    /// A packet without attachments.
    One([Outgoing; 1]),
    /// A packet with binary attachments.
    Many(Vec<Outgoing>),
}

impl Packets {
    /// The event's offset (recovery on).
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }
}

impl std::ops::Deref for Packets {
    type Target = [Outgoing];

    fn deref(&self) -> &[Outgoing] {
        match &self.parts {
            Parts::One(one) => one,
            Parts::Many(many) => many,
        }
    }
}

/// The application's handle on the Socket.IO layer while it handles an event.
pub struct SioIo<'a, 'b, T> {
    io: &'a mut Io<'b, SioTimer<T>>,
    tables: &'a mut Tables,
}

impl<T> SioIo<'_, '_, T> {
    /// The loop's clock, in milliseconds.
    pub fn now(&self) -> Millis {
        self.io.now
    }

    /// The wall clock in milliseconds since the Unix epoch, read with `now`.
    pub fn unix_millis(&self) -> u64 {
        self.io.unix_ms
    }

    /// A cryptographically secure random number generator.
    pub fn rng(&mut self) -> &mut rand::rngs::StdRng {
        self.io.rng()
    }

    /// Output queued for clients is near its share of the memory budget: refuse work that
    /// adds more.
    pub fn output_full(&self) -> bool {
        self.io.output_full
    }

    /// Puts a socket of the application's own into the loop's poll (see
    /// `engine::Io::register_socket`); its readiness comes as `SioEvent::Socket`.
    pub fn register_socket(
        &mut self,
        source: &mut dyn mio::event::Source,
        interest: mio::Interest,
    ) -> std::io::Result<SocketToken> {
        self.io.register_socket(source, interest)
    }

    /// Takes a socket registered with `register_socket` out of the poll.
    pub fn deregister_socket(
        &mut self,
        source: &mut dyn mio::event::Source,
        token: SocketToken,
    ) -> std::io::Result<()> {
        self.io.deregister_socket(source, token)
    }

    /// Sets an application timer.
    pub fn set_timer(&mut self, at: Millis, value: T) -> TimerId {
        self.io.set_timer(at, SioTimer::App(value))
    }

    /// Cancels an application timer.
    pub fn cancel_timer(&mut self, id: TimerId) {
        self.io.cancel_timer(id);
    }

    /// The client's address, when it can be trusted for per-address limits (a direct peer,
    /// or what a trusted proxy forwarded); `None` behind an unconfigured proxy.
    pub fn client_addr(&self, socket: SocketRef) -> Option<IpAddr> {
        self.tables.socket(socket).and_then(|s| s.addr)
    }

    /// The socket's id (what clients see as `socket.id`), if it is still connected. For a
    /// 2.x client (Engine.IO v3) on a namespace other than `/`, `socket_name` has the whole id.
    pub fn socket_id(&self, socket: SocketRef) -> Option<Sid> {
        self.tables.socket(socket).map(|s| s.id)
    }

    /// The socket's id as its client knows it: `socket_id`, or `<namespace>#<sid>` for a 2.x
    /// client (Engine.IO v3) on a namespace other than `/`, as socket.io names those.
    pub fn socket_name(&self, socket: SocketRef) -> Option<String> {
        let s = self.tables.socket(socket)?;
        let nsp = &self.tables.namespaces[s.nsp.0 as usize];
        Some(match (s.v3, nsp.as_str()) {
            (true, name) if name != "/" => format!("{name}#{}", s.id),
            _ => s.id.to_string(),
        })
    }

    /// Builds an event packet once (`args`: the raw JSON arguments, comma-separated). With
    /// recovery on, the packet gets the next offset, as the last element of its data.
    pub fn event_packet(
        &mut self,
        nsp: Nsp,
        event: &str,
        args: &str,
        attachments: &[Bytes],
    ) -> Packets {
        let kind = if attachments.is_empty() {
            PacketType::Event
        } else {
            PacketType::BinaryEvent
        };
        let unix_ms = self.io.unix_ms;
        let offset = self.tables.recovery.as_mut().map(|r| {
            let tag = r.tag.unwrap_or(recovery::TAG_UNKNOWN);
            r.next_offset(unix_ms, tag)
        });
        // `["event",args,"offset"]`, with room for escapes in the name.
        let data_len = event.len() * 2 + args.len() + 32;
        self.packet(kind, nsp, None, offset, attachments, data_len, |s| {
            packet::write_event_data(s, event, args);
            if let Some(offset) = offset {
                s.pop(); // `]`
                s.push_str(",\"");
                packet::push_decimal(s, offset);
                s.push_str("\"]");
            }
        })
    }

    /// A packet built in one buffer: head, then what `write_data` appends (about `data_len`
    /// bytes), then the attachments.
    #[allow(clippy::too_many_arguments)]
    fn packet(
        &self,
        kind: PacketType,
        nsp: Nsp,
        id: Option<u64>,
        offset: Option<u64>,
        attachments: &[Bytes],
        data_len: usize,
        write_data: impl FnOnce(&mut String),
    ) -> Packets {
        let name = self
            .tables
            .namespaces
            .get(nsp.0 as usize)
            .map_or("/", String::as_str);
        let text = Outgoing::message_with_capacity(packet::head_len(name) + data_len, |s| {
            packet::encode_head(s, kind, name, attachments.len(), id);
            write_data(s);
        });
        if attachments.is_empty() {
            return Packets {
                offset,
                parts: Parts::One([text]),
                msgpack: std::cell::OnceCell::new(),
            };
        }
        let mut out = Vec::with_capacity(1 + attachments.len());
        out.push(text);
        out.extend(attachments.iter().map(|a| Outgoing::Binary(a.clone())));
        Packets {
            offset,
            parts: Parts::Many(out),
            msgpack: std::cell::OnceCell::new(),
        }
    }

    /// Sends packets built by `event_packet` to a socket.
    pub fn send_to(&mut self, socket: SocketRef, packets: &Packets) {
        let Tables {
            sockets, recovery, ..
        } = &mut *self.tables;
        deliver(
            self.io,
            sockets,
            recovery.as_mut(),
            &[socket],
            None,
            packets,
        );
    }

    /// Whether a socket is connected (not away, recovery on).
    pub fn is_present(&self, socket: SocketRef) -> bool {
        self.tables.socket(socket).is_some_and(|s| s.away.is_none())
    }

    /// Emits an event to one socket.
    pub fn emit(&mut self, socket: SocketRef, event: &str, args: &str) {
        self.emit_with_binary(socket, event, args, &[]);
    }

    /// Emits an event with binary attachments (placeholders already in `args`).
    pub fn emit_with_binary(
        &mut self,
        socket: SocketRef,
        event: &str,
        args: &str,
        attachments: &[Bytes],
    ) {
        let Some(nsp) = self.tables.socket(socket).map(|s| s.nsp) else {
            return;
        };
        let packets = self.event_packet(nsp, event, args, attachments);
        self.send_to(socket, &packets);
    }

    /// Answers an event's ack with these raw JSON arguments (comma-separated).
    pub fn ack(&mut self, socket: SocketRef, id: u64, args: &str) {
        self.ack_with_binary(socket, id, args, &[]);
    }

    /// Answers an ack with binary attachments.
    pub fn ack_with_binary(
        &mut self,
        socket: SocketRef,
        id: u64,
        args: &str,
        attachments: &[Bytes],
    ) {
        let Some(nsp) = self.tables.socket(socket).map(|s| s.nsp) else {
            return;
        };
        let kind = if attachments.is_empty() {
            PacketType::Ack
        } else {
            PacketType::BinaryAck
        };
        let packets = self.packet(
            kind,
            nsp,
            Some(id),
            None,
            attachments,
            args.len() + 2,
            |s| {
                s.push('[');
                s.push_str(args);
                s.push(']');
            },
        );
        self.send_to(socket, &packets);
    }

    /// Emits an event to every member of a room (built once, shared by all) but `except`.
    pub fn emit_to_room(
        &mut self,
        nsp: Nsp,
        room: &str,
        except: Option<SocketRef>,
        event: &str,
        args: &str,
    ) {
        let packets = self.event_packet(nsp, event, args, &[]);
        self.send_to_room(nsp, room, except, &packets);
    }

    /// Sends packets built by `event_packet` to every member of a room but `except`.
    pub fn send_to_room(
        &mut self,
        nsp: Nsp,
        room: &str,
        except: Option<SocketRef>,
        packets: &Packets,
    ) {
        let Tables {
            sockets,
            rooms,
            recovery,
            ..
        } = &mut *self.tables;
        let members = rooms.members(nsp, room);
        deliver(
            self.io,
            sockets,
            recovery.as_mut(),
            members,
            except,
            packets,
        );
    }

    /// Sends packets built by `event_packet` to every member of a room, by its handle (from
    /// `join`): no name to look up.
    pub fn send_to_room_id(&mut self, room: RoomId, packets: &Packets) {
        let Tables {
            sockets,
            rooms,
            recovery,
            ..
        } = &mut *self.tables;
        let members = rooms.members_of(room);
        deliver(self.io, sockets, recovery.as_mut(), members, None, packets);
    }

    /// The members of a room, in joining order.
    pub fn room_members(&self, nsp: Nsp, room: &str) -> &[SocketRef] {
        self.tables.rooms.members(nsp, room)
    }

    /// The rooms a socket is in.
    pub fn rooms_of(&self, socket: SocketRef) -> &[Box<str>] {
        self.tables
            .socket(socket)
            .map_or(&[], |s| s.rooms.as_slice())
    }

    /// Adds a socket to a room (no-op if it is already in).
    pub fn join(&mut self, socket: SocketRef, room: &str) {
        let Some(s) = self.tables.sockets.get_mut(socket) else {
            return;
        };
        if !s.rooms.iter().any(|r| &**r == room) {
            s.rooms.push(room.into());
        }
        self.tables.rooms.join(s.nsp, room, socket);
    }

    /// A room's handle (for `send_to_room_id`), while it has members.
    pub fn room_id(&self, nsp: Nsp, room: &str) -> Option<RoomId> {
        self.tables.rooms.id(nsp, room)
    }

    /// Removes a socket from a room.
    pub fn leave(&mut self, socket: SocketRef, room: &str) {
        let Some(s) = self.tables.sockets.get_mut(socket) else {
            return;
        };
        s.rooms.retain(|r| &**r != room);
        self.tables.rooms.leave(s.nsp, room, socket);
    }

    /// Runs `f` with the offsets of the event packets it builds tagged with `tag` (a
    /// cluster's: `recovery::tagged`; `None`, or none given: `TAG_UNKNOWN`).
    pub fn tagged<R>(&mut self, tag: Option<u64>, f: impl FnOnce(&mut Self) -> R) -> R {
        if let Some(r) = &mut self.tables.recovery {
            r.tag = tag.map(|t| t % recovery::TAG_UNKNOWN);
        }
        let out = f(self);
        if let Some(r) = &mut self.tables.recovery {
            r.tag = None;
        }
        out
    }

    /// The last offset this node gave a packet (a cluster's offsets carry a count: every later
    /// packet's count is greater).
    pub fn last_offset(&self) -> u64 {
        self.tables.recovery.as_ref().map_or(0, |r| r.offset)
    }

    /// The last offset the socket's client had when it connected (from an earlier socket),
    /// if it said: it saw nothing of this socket yet.
    pub fn base_offset(&self, socket: SocketRef) -> Option<u64> {
        self.tables.socket(socket).and_then(|s| s.outbox.base())
    }

    /// The socket's private id (recovery on).
    pub fn pid_of(&self, socket: SocketRef) -> Option<Sid> {
        self.tables.socket(socket).and_then(|s| s.pid)
    }

    /// The socket a private id names here, if any.
    pub fn socket_by_pid(&self, pid: &Sid) -> Option<SocketRef> {
        self.tables.recovery.as_ref()?.pids.get(pid).copied()
    }

    /// The events a client that last saw `offset` missed, with their offsets; `None` when
    /// some are gone (a cap dropped them).
    pub fn missed(&self, socket: SocketRef, offset: Option<u64>) -> Option<Vec<(u64, Outgoing)>> {
        self.tables
            .socket(socket)?
            .outbox
            .entries_after(offset)
            .ok()
    }

    /// Hands a socket over to another node: the events it missed after `offset` (`missed`)
    /// and the bytes restores sent it again lately (for `adopt`); the socket leaves every
    /// table here without a `Disconnect` (the application has moved its state), and a session
    /// it was still connected through closes if it has no socket left (the client is
    /// elsewhere now).
    pub fn hand_over(
        &mut self,
        socket: SocketRef,
        offset: Option<u64>,
    ) -> Option<(Vec<(u64, Outgoing)>, usize)> {
        let missed = self.missed(socket, offset);
        let replayed = self.tables.socket(socket).map_or(0, |s| {
            let lately = self.io.now.saturating_sub(s.restores.0) < recovery::RESTORE_PERIOD;
            if lately { s.restores.1 } else { 0 }
        });
        self.tables.discard(socket, self.io);
        if missed.is_some()
            && let Some(r) = &mut self.tables.recovery
        {
            r.stats.handed_over += 1;
        }
        Some((missed?, replayed))
    }

    /// Takes a socket out of every table without a `Disconnect` (the application has dropped
    /// its state).
    pub fn discard(&mut self, socket: SocketRef) {
        self.tables.discard(socket, self.io);
    }

    /// A socket another node hands over, on its way to the session that claimed it
    /// (`SioEvent::Claim`): registered with its id and pid, in `rooms`, but away, so the events
    /// sent to it are kept, until `adopt` gives it to the session (or `discard`). `None` when
    /// recovery is off or the pid is taken here.
    pub fn arrive(
        &mut self,
        session: SessionId,
        nsp: Nsp,
        id: Sid,
        pid: Sid,
        rooms: &[&str],
    ) -> Option<SocketRef> {
        // The session may be gone already: `adopt` then keeps the socket here, away.
        let r = self.tables.recovery.as_ref()?;
        if r.pids.contains_key(&pid) {
            return None;
        }
        let socket = self.tables.sockets.insert(Socket {
            id,
            addr: self.tables.clients.get(session).and_then(|c| c.addr),
            session,
            nsp,
            rooms: Vec::new(),
            pid: Some(pid),
            outbox: recovery::Outbox::default(),
            away: None,
            restores: (self.io.now, 0),
            moving: false,
            msgpack: false,
            v3: false,
        });
        let r = self.tables.recovery.as_mut()?;
        let at = crate::timer::deadline(self.io.now, r.window);
        let timer = self.io.set_timer(at, SioTimer::RecoveryWindow(socket));
        r.away_seq += 1;
        let seq = r.away_seq;
        r.away_order.insert(seq, socket);
        // Its pid is not claimable here before it is adopted: a second CONNECT with it is
        // another claim (the application moves the claim to that session).
        if let Some(s) = self.tables.sockets.get_mut(socket) {
            s.away = Some(Box::new(Away {
                timer,
                reason: "transport close",
                seq,
            }));
        }
        for room in rooms {
            self.join(socket, room);
        }
        Some(socket)
    }

    /// Gives an arriving socket (`arrive`) to `session`, which claimed it: first `missed`
    /// (what it missed on the other node, which kept it), then what reached it here, each
    /// packet under a new offset of this node, then the CONNECT reply. `base` is the last
    /// offset the client saw there; `replayed`, the bytes restores sent it again there lately
    /// (`MAX_REPLAY_BYTES` counts across nodes). A session that is gone meanwhile (the
    /// client dropped again) leaves the socket here, away, for a later recovery. `Failed`
    /// when events were dropped on the way (a cap) or it came back too often: the socket is
    /// discarded, and the claim is the caller's to refuse.
    pub fn adopt(
        &mut self,
        socket: SocketRef,
        session: SessionId,
        missed: Vec<(u64, Outgoing)>,
        base: Option<u64>,
        replayed: usize,
    ) -> Adopted {
        let Some(s) = self.tables.sockets.get(socket) else {
            return Adopted::Failed;
        };
        let waiting = self.tables.held(session) == Some(s.nsp);
        let sent = replayed + missed.iter().map(|(_, p)| p.len()).sum::<usize>() + s.outbox.bytes();
        let too_often = sent > recovery::MAX_REPLAY_BYTES;
        let pid_taken = s.pid.is_some_and(|pid| {
            (self.tables.recovery.as_ref()).is_some_and(|r| r.pids.contains_key(&pid))
        });
        if !s.outbox.is_whole() || too_often || pid_taken {
            if let Some(r) = self.tables.recovery.as_mut() {
                r.stats.too_often += u64::from(too_often);
            }
            self.tables.discard(socket, self.io);
            return Adopted::Failed;
        }
        let addr = self.tables.clients.get(session).and_then(|c| c.addr);
        let msgpack = self.tables.msgpack(session);
        let Tables {
            sockets, recovery, ..
        } = &mut *self.tables;
        let (Some(s), Some(r)) = (sockets.get_mut(socket), recovery.as_mut()) else {
            return Adopted::Failed;
        };
        let here = s.outbox.take_all(&mut r.budget);
        for list in [missed, here] {
            let mut last = None;
            for (old, packet) in list {
                if last != Some(old) {
                    last = Some(old);
                    r.next_offset(self.io.unix_ms, recovery::tag_of_offset(old));
                }
                let packet = recovery::with_offset(&packet, r.offset);
                s.outbox.push(r.offset, packet, r.caps, &mut r.budget);
            }
        }
        if !s.outbox.is_whole() {
            self.tables.discard(socket, self.io);
            return Adopted::Failed;
        }
        s.outbox.set_base(base);
        s.outbox.resent();
        // What was sent again: nothing yet, if no session waits.
        s.restores = (self.io.now, if waiting { sent } else { replayed });
        if let Some(pid) = s.pid {
            r.pids.insert(pid, socket);
        }
        if !waiting {
            // Away here now, for the rest of its window (from its arrival).
            if let Some(away) = &s.away
                && !s.outbox.is_empty()
            {
                r.holding.insert(away.seq, socket);
            }
            return Adopted::Away;
        }
        s.session = session;
        s.addr = addr;
        if let Some(away) = s.away.take() {
            r.away_order.remove(&away.seq);
            r.holding.remove(&away.seq);
            self.io.cancel_timer(away.timer);
        }
        r.stats.recovered += 1;
        s.msgpack = msgpack;
        if let Ok(all) = s.outbox.after(None) {
            send_messages(self.io, session, s.msgpack, all.cloned().collect());
        }
        if let Some(client) = self.tables.clients.get_mut(session) {
            client.held = None;
        }
        if self.tables.connect_reply(session, socket, self.io) {
            Adopted::Connected
        } else {
            self.tables.discard(socket, self.io);
            Adopted::Failed
        }
    }

    /// Marks a socket as being handed over to another node (or no more): a client that comes
    /// back here meanwhile gets a fresh socket rather than one about to leave.
    pub fn set_moving(&mut self, socket: SocketRef, moving: bool) {
        if let Some(s) = self.tables.sockets.get_mut(socket) {
            s.moving = moving;
        }
    }

    /// Whether a socket is being handed over to another node (`set_moving`).
    pub fn is_moving(&self, socket: SocketRef) -> bool {
        self.tables.socket(socket).is_some_and(|s| s.moving)
    }

    /// Gives up on a claim (`SioEvent::Claim`): the session connects a fresh socket, with its
    /// `Connect`, once the handler returns.
    pub fn refuse_claim(&mut self, session: SessionId, nsp: Nsp) {
        if let Some(r) = &mut self.tables.recovery {
            r.stats.unknown += 1;
        }
        self.tables.unclaimed.push((session, nsp));
    }

    /// Disconnects a socket's whole Engine.IO session.
    pub fn close_session(&mut self, socket: SocketRef) {
        if let Some(s) = self.tables.socket(socket) {
            self.io.close(s.session, CloseReason::ServerClose);
        }
    }
}
