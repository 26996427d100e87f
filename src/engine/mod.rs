//! Engine.IO v4 (and v3, for socket.io-client 2.x: `Protocol`, `v3`): the transport layer
//! under Socket.IO.
//!
//! The event loop (`crate::server`) owns the sockets and the sessions' transport state; this
//! module defines what the layer above sees. A `Handler` receives `Event`s as values (a
//! session opened, a text or binary message arrived, a session closed, a timer of its own
//! fired) and answers through `Io`: commands to send or close, and timers on the loop's wheel.
//! The Engine.IO layer knows nothing of Socket.IO: a plain echo server is a `Handler` too.

pub mod base64;
mod echo;
mod error;
pub mod packet;
pub mod session;
pub mod sid;
pub mod v3;

use rand::rngs::StdRng;

pub use echo::Echo;
pub use error::EngineError;
pub use packet::{Outgoing, SharedText};
pub use sid::Sid;

use crate::timer::{Millis, TimerId};

/// A session: its slot in the loop's session table plus a generation, so a stale id never
/// reaches a session that reused the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId {
    pub(crate) idx: u32,
    pub(crate) generation: u32,
}

impl crate::slots::SlotKey for SessionId {
    fn new(idx: u32, generation: u32) -> Self {
        SessionId { idx, generation }
    }
    fn idx(&self) -> u32 {
        self.idx
    }
    fn generation(&self) -> u32 {
        self.generation
    }
}

/// The transport a session uses now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// HTTP long-polling.
    Polling,
    /// WebSocket.
    WebSocket,
}

/// The Engine.IO protocol revision a session speaks: it decides the heartbeat's direction and
/// the polling payload's framing (`v3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// Engine.IO v4 (`EIO=4`): the server pings, payloads are joined by `\x1e`.
    #[default]
    V4,
    /// Engine.IO v3 (socket.io-client 2.x): the client pings, the server answers; payloads are
    /// length-prefixed (`v3`).
    V3,
}

impl Protocol {
    /// A WebSocket text frame as a packet.
    pub fn decode_ws_text(self, text: &str) -> Result<packet::Packet<'_>, EngineError> {
        match self {
            Protocol::V4 => packet::decode_text(text),
            Protocol::V3 => v3::to_packet(v3::decode_frame(text)),
        }
    }

    /// The message a WebSocket binary frame carries: a v3 frame starts with the message type.
    pub fn ws_binary_message(self, frame: &[u8]) -> Result<&[u8], EngineError> {
        match (self, frame.split_first()) {
            (Protocol::V4, _) => Ok(frame),
            (Protocol::V3, Some((&v3::MESSAGE_TYPE, rest))) => Ok(rest),
            (Protocol::V3, _) => Err(EngineError::BadPacket),
        }
    }

    /// A binary message as a WebSocket frame's payload.
    pub fn ws_binary_frame(self, message: &[u8]) -> std::borrow::Cow<'_, [u8]> {
        match self {
            Protocol::V4 => message.into(),
            Protocol::V3 => [&[v3::MESSAGE_TYPE], message].concat().into(),
        }
    }

    /// The answer to a polling handshake: the open packet (`open`, its text), which v3 frames
    /// as a payload.
    pub fn polling_open(self, open: String) -> Vec<u8> {
        match self {
            Protocol::V4 => open.into_bytes(),
            Protocol::V3 => v3::encode_text(&[packet::Outgoing::Text(open.into())]),
        }
    }
}

/// Why a session ended (the reason strings are socket.io's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed the connection (or an upgrade-less transport failed).
    TransportClose,
    /// The client sent a close packet.
    ClientClose,
    /// No pong within the ping timeout.
    PingTimeout,
    /// The client sent something that is not Engine.IO.
    ParseError,
    /// The transport broke: duplicate poll, output overflow, oversized message.
    TransportError,
    /// The application closed the session.
    ServerClose,
    /// The server is stopping.
    ServerShutdown,
}

impl CloseReason {
    /// socket.io's name for the reason.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::TransportClose => "transport close",
            CloseReason::ClientClose => "client close",
            CloseReason::PingTimeout => "ping timeout",
            CloseReason::ParseError => "parse error",
            CloseReason::TransportError => "transport error",
            CloseReason::ServerClose => "forced close",
            CloseReason::ServerShutdown => "server shutting down",
        }
    }

    /// The reason as a metric label value or log field: socket.io's name in snake_case
    /// (`ping_timeout`).
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::TransportClose => "transport_close",
            CloseReason::ClientClose => "client_close",
            CloseReason::PingTimeout => "ping_timeout",
            CloseReason::ParseError => "parse_error",
            CloseReason::TransportError => "transport_error",
            CloseReason::ServerClose => "forced_close",
            CloseReason::ServerShutdown => "server_shutting_down",
        }
    }

    /// Whether a socket closed for this reason may be recovered: not after input that is no
    /// Engine.IO. A client's close packet is recoverable (socket.io's "transport close"): a
    /// polling client sends one as it gives up on a broken transport, before reconnecting; a
    /// client leaving for good disconnects its sockets first (`41`).
    pub fn recoverable(self) -> bool {
        self != CloseReason::ParseError
    }
}

/// What happened, handed to the `Handler`.
#[derive(Debug)]
pub enum Event<'a, T> {
    /// A session completed its handshake.
    Open {
        /// The session.
        session: SessionId,
        /// Its Engine.IO sid.
        sid: Sid,
        /// The transport it opened on.
        transport: TransportKind,
        /// The protocol revision it speaks.
        protocol: Protocol,
        /// The client's address, when it can be trusted for per-address limits: a direct
        /// peer's, or what a trusted proxy forwarded (`Config::trust_proxy`).
        client: Option<std::net::IpAddr>,
    },
    /// The client answered a ping: everything queued for the session before that ping has
    /// reached it (the transport keeps order), so a layer above may forget it was sent.
    Pong {
        /// The session.
        session: SessionId,
    },
    /// A text message (`4…`), without the type digit.
    Message {
        /// The session.
        session: SessionId,
        /// The text.
        text: &'a str,
    },
    /// A binary message.
    Binary {
        /// The session.
        session: SessionId,
        /// The bytes.
        data: &'a [u8],
    },
    /// The session is gone; nothing more can be sent to it.
    Close {
        /// The session.
        session: SessionId,
        /// Why.
        reason: CloseReason,
    },
    /// A timer set through `Io::set_timer` fired.
    Timer(T),
    /// The loop is about to start: a handler opens its own sockets (`Io::register_socket`)
    /// and sets its first timers here. Sent once, before any other event.
    Start {
        /// The address this server is reached at directly: its main one, or its relay
        /// listener's when the main port is shared (`Config::relay_listener`).
        addr: std::net::SocketAddr,
    },
    /// The loop turn's events are handled and its output is about to be flushed: a handler
    /// that batches writes to its own sockets writes them now (one write per turn).
    TurnEnd,
    /// A socket registered through `Io::register_socket` is ready.
    Socket {
        /// Which one.
        token: SocketToken,
        /// Readable (or closed: reading tells).
        readable: bool,
        /// Writable again.
        writable: bool,
    },
}

/// What a handler asks of the engine.
#[derive(Debug)]
pub enum Command {
    /// Queue a packet for a session (dropped if the session is gone).
    Send(SessionId, Outgoing),
    /// Close a session, for this reason (`ParseError` for input the layer above could not
    /// read, `ServerClose` for its own decision: the client is sent a close packet first).
    Close(SessionId, CloseReason),
}

/// A socket of the handler's own in the loop's poll (a connection to Redis or to another
/// node, say): its readiness comes back as `Event::Socket` with this token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocketToken(pub u32);

/// Where a handler's own sockets are registered: the loop's `mio::Poll`, in a token range of
/// their own. The handler keeps the socket (and reads and writes it, non-blocking); the loop
/// only tells it when it is ready. No thread, no second poll.
pub trait SocketRegistry {
    /// Registers `source` (edge-triggered, as the loop's own sockets).
    fn register(
        &mut self,
        source: &mut dyn mio::event::Source,
        interest: mio::Interest,
    ) -> std::io::Result<SocketToken>;
    /// Takes `source` out of the poll; its token may be handed out again.
    fn deregister(
        &mut self,
        source: &mut dyn mio::event::Source,
        token: SocketToken,
    ) -> std::io::Result<()>;
}

/// Where a handler's timers go: the loop's wheel, shared with its own deadlines.
pub trait Timers<T> {
    /// Sets a timer that comes back as `Event::Timer(value)` at `at`.
    fn set(&mut self, at: Millis, value: T) -> TimerId;
    /// Cancels a timer (a fired or cancelled one is ignored).
    fn cancel(&mut self, id: TimerId);
}

/// The handler's way back into the loop: commands, timers, the clock and randomness.
pub struct Io<'a, T> {
    /// The loop's clock (milliseconds since start), read once per loop turn.
    pub now: Millis,
    /// The wall clock (milliseconds since the Unix epoch), read with `now`.
    pub unix_ms: u64,
    /// Output queued for clients is past three quarters of its share of the memory budget
    /// (`Config::max_output_bytes`): work that would add more should be refused.
    pub output_full: bool,
    pub(crate) commands: &'a mut Vec<Command>,
    pub(crate) timers: &'a mut dyn Timers<T>,
    pub(crate) sockets: &'a mut dyn SocketRegistry,
    pub(crate) rng: &'a mut StdRng,
}

impl<T> Io<'_, T> {
    /// Queues a packet for a session.
    pub fn send(&mut self, session: SessionId, packet: Outgoing) {
        self.commands.push(Command::Send(session, packet));
    }

    /// Closes a session for `reason`.
    pub fn close(&mut self, session: SessionId, reason: CloseReason) {
        self.commands.push(Command::Close(session, reason));
    }

    /// Sets a timer that comes back as `Event::Timer(value)` at `at`.
    pub fn set_timer(&mut self, at: Millis, value: T) -> TimerId {
        self.timers.set(at, value)
    }

    /// Cancels a timer set with `set_timer`.
    pub fn cancel_timer(&mut self, id: TimerId) {
        self.timers.cancel(id);
    }

    /// A cryptographically secure random number generator.
    pub fn rng(&mut self) -> &mut StdRng {
        self.rng
    }

    /// Puts a non-blocking socket of the handler's own into the loop's poll: its readiness
    /// comes back as `Event::Socket` with the token returned.
    pub fn register_socket(
        &mut self,
        source: &mut dyn mio::event::Source,
        interest: mio::Interest,
    ) -> std::io::Result<SocketToken> {
        self.sockets.register(source, interest)
    }

    /// Takes a socket registered with `register_socket` out of the poll.
    pub fn deregister_socket(
        &mut self,
        source: &mut dyn mio::event::Source,
        token: SocketToken,
    ) -> std::io::Result<()> {
        self.sockets.deregister(source, token)
    }
}

/// The layer above Engine.IO.
pub trait Handler {
    /// The payload of the handler's own timers.
    type Timer;

    /// Handles one event.
    fn handle(&mut self, event: Event<'_, Self::Timer>, io: &mut Io<'_, Self::Timer>);

    /// Appends the handler's own metrics (Prometheus text) to a `/metrics` answer.
    fn metrics(&self, _out: &mut String) {}

    /// Where the session `sid` lives when it is not this server's: another node of a cluster,
    /// to which the request is relayed (`None`: answered `Session ID unknown`).
    fn owner_of(&self, _sid: &Sid) -> Option<std::net::SocketAddr> {
        None
    }

    /// The cluster's shared secret: a request carrying it in `X-Pairchat-Relay` was relayed
    /// by another node (never relayed again; its `X-Pairchat-Client` is the client).
    fn relay_secret(&self) -> Option<&str> {
        None
    }

    /// Appends fields of the handler's own to the `/health` answer's JSON object, each
    /// written as `,"name":value` (a cluster's `"redis":"down"`, say).
    fn health(&self, _out: &mut String) {}
}
