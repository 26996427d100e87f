//! The event loop: one `mio::Poll`, the listener, a `Slab` of connections, the Engine.IO
//! sessions, and one timer wheel for every deadline.
//!
//! Single-threaded, no locks, no async runtime. Sockets are registered once, edge-triggered;
//! a readable connection gets one `recv` of up to 64 KiB into a buffer shared by all (one
//! that filled it is put back on a ready list for the next turn, so one client cannot starve
//! the rest); writes are queued per connection and flushed once per loop turn. Protocol decoding happens in `http`, `engine::packet` and
//! `ws`; this module moves bytes and drives the session state machines (see LIFECYCLE.md).
//!
//! Here: the types, the loop itself, connections (accept, limits, flush, close) and dispatch to
//! the handler. The rest of `Server`'s methods live beside it by concern: `requests` (HTTP
//! routing, polling, the upgrade request), `websocket` (frames, probe and upgrade), `session`
//! (heartbeat, output queues, closing) and `stream` (read/write adapters).

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use tungstenite::Message;
use tungstenite::protocol::WebSocketContext;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

use crate::config::{Config, MetricsAccess};
use crate::engine::packet::{self, Packet};
use crate::engine::session::{
    Beat, Payload, Polled, Probe, Received, Sent, Session as EioSession, Settings as EioSettings,
    Transport as EioTransport, Upgrade, control_payload,
};
use crate::engine::{
    CloseReason, Command, EngineError, Event, Handler, Io, Outgoing, Protocol, SessionId, Sid,
    SocketToken, TransportKind, v3,
};
use crate::http::chunked::ChunkedDecoder;
use crate::http::{self, Cors, Exchange, Framing, HttpError, KeptCors, Method, Request, Response};
use crate::log;
use crate::metrics::{Gauges, Metrics, Rejected};
use crate::slots::{SlotKey, Slots};
use crate::timer::{Millis, TimerId, TimerWheel, deadline, ms};
use crate::{sys, ws};

mod relay;
mod requests;
mod session;
mod stream;
mod websocket;

use self::relay::{PipeConn, UpstreamConn};
use self::stream::{Counted, WsStream, write_all_nonblocking};

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);
const METRICS_LISTENER: Token = Token(usize::MAX - 2);
const RELAY_LISTENER: Token = Token(usize::MAX - 3);
/// The first token of the handler's own sockets (`Io::register_socket`); connections' tokens
/// are their slots, far below.
const EXTRA_BASE: usize = usize::MAX / 2;
/// Bytes read from one connection per turn (one `recv` into the loop's shared buffer) before
/// yielding to others.
const READ_CHUNK: usize = 64 * 1024;
/// Unsent output at which a connection's input waits: an HTTP connection handles (and reads)
/// no more pipelined requests, a WebSocket decodes no more frames, until a flush has sent it
/// (TCP backpressure, as Node's HTTP server applies). A client that pipelines without reading,
/// or asks for large answers in a burst, gets at most this much (plus one answer) queued per
/// loop turn, and only as fast as it reads.
const OUTPUT_PAUSE: usize = 64 * 1024;
/// The socket send buffer asked for on every connection (Linux doubles it for its own
/// bookkeeping): what the kernel holds for a client that stops reading, at most.
const SEND_BUFFER: usize = 64 * 1024;
/// Polling handshakes one connection may make: the answer to the last one closes it. A
/// socket.io-client makes one per connection; a client pipelining thousands would otherwise
/// fill the session table through one socket.
const MAX_HANDSHAKES_PER_CONN: u8 = 4;
/// How often `sweep` looks for sessions and connections nothing would end.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// How long a closing connection may linger to drain the peer's last bytes.
const LINGER: Duration = Duration::from_secs(2);
/// Longest poll wait: bounds how late a stop request is noticed without a signal.
const MAX_WAIT: Duration = Duration::from_millis(500);
/// Listen backlog (mio's default of 128 makes bursts of clients wait for SYN retries).
const BACKLOG: i32 = 1024;

/// The application's timers live on the loop's wheel beside the loop's own.
impl<T> crate::engine::Timers<T> for TimerWheel<Timeout<T>> {
    fn set(&mut self, at: Millis, value: T) -> TimerId {
        self.insert(at, Timeout::App(value))
    }

    fn cancel(&mut self, id: TimerId) {
        TimerWheel::cancel(self, id);
    }
}

/// The handler's own sockets in the loop's poll, at tokens from `EXTRA_BASE` up.
struct ExtraSockets {
    registry: mio::Registry,
    free: Vec<u32>,
    next: u32,
}

impl crate::engine::SocketRegistry for ExtraSockets {
    fn register(
        &mut self,
        source: &mut dyn mio::event::Source,
        interest: Interest,
    ) -> io::Result<SocketToken> {
        let n = self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next - 1
        });
        match self
            .registry
            .register(source, Token(EXTRA_BASE + n as usize), interest)
        {
            Ok(()) => Ok(SocketToken(n)),
            Err(e) => {
                self.free.push(n);
                Err(e)
            }
        }
    }

    fn deregister(
        &mut self,
        source: &mut dyn mio::event::Source,
        token: SocketToken,
    ) -> io::Result<()> {
        self.registry.deregister(source)?;
        self.free.push(token.0);
        Ok(())
    }
}

/// A connection: its slot (also its `mio::Token`) plus a generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnKey {
    idx: u32,
    generation: u32,
}

impl SlotKey for ConnKey {
    fn new(idx: u32, generation: u32) -> Self {
        ConnKey { idx, generation }
    }
    fn idx(&self) -> u32 {
        self.idx
    }
    fn generation(&self) -> u32 {
        self.generation
    }
}

/// What a timer on the wheel is for.
#[derive(Debug)]
pub(crate) enum Timeout<T> {
    /// Header-read / keep-alive / linger deadline of a connection.
    Conn(ConnKey),
    /// Heartbeat of a session: send the next ping.
    Ping(SessionId),
    /// Heartbeat of a session: the pong did not come.
    Pong(SessionId),
    /// A WebSocket upgrade that never completed.
    Upgrade(SessionId),
    /// The coarse check for sessions and connections nothing would ever end (`sweep`).
    Sweep,
    /// The application's own timer.
    App(T),
}

struct Conn {
    stream: TcpStream,
    state: ConnState,
    timer: Option<TimerId>,
    /// Queued on `dirty` for a flush this turn.
    dirty: bool,
    /// The peer has shut its write side (EPOLLRDHUP seen): read to EOF, never stop at a short
    /// read (see `read_socket`).
    peer_closed: bool,
    /// The TCP peer's address.
    peer: IpAddr,
    /// The client's address when it can be trusted (see `Server::client_of`).
    client: Option<IpAddr>,
    /// The address this connection counts against in `per_ip`, once counted.
    counted_ip: Option<IpAddr>,
    /// Over `max_connections_per_ip`: its first request is answered 503 and it closes.
    refused: bool,
    /// Accepted on the metrics port: only `/metrics` and `/health` are served.
    metrics_only: bool,
    /// Its output is over `OUTPUT_PAUSE`: input waits (see `flush`, which resumes it).
    paused: bool,
    /// Resumed after a pause: the requests it already read go first, before any more input.
    backlog: bool,
    /// Polling handshakes made on this connection (see `MAX_HANDSHAKES_PER_CONN`).
    handshakes: u8,
    /// How much of its unsent output (`wbuf` or `out`) is counted in `Server::output_bytes`
    /// (see `count_output`).
    counted: usize,
    /// Relayed by another node of the cluster (or a relay's connection to one): never
    /// relayed again.
    relayed: bool,
}

// Long-lived connections are WebSockets, so boxing `WsConn` would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum ConnState {
    Http(HttpConn),
    Ws(WsConn),
    /// A connection to another node of the cluster, carrying relayed requests (`relay`).
    Upstream(UpstreamConn),
    /// One end of a tunnel: a relayed WebSocket upgrade (`relay`).
    Pipe(PipeConn),
    /// Output flushed or abandoned, write side shut: drain the peer until EOF or the linger timer.
    Closing,
}

#[derive(Default)]
struct HttpConn {
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// Close once `wbuf` is written.
    close_after_write: bool,
    /// Waiting for a next request under the keep-alive timeout.
    keep_alive_idle: bool,
    /// A long-poll GET held open for a session.
    parked: Option<Parked>,
    /// How answers to the request being handled are framed (`respond`).
    exchange: Exchange,
    /// The body of the request at the head of `rbuf`, while it arrives: chunked, or after a
    /// `100 Continue`.
    body: Option<Box<PendingBody>>,
    /// Its request was relayed to another node on this connection to it: no more requests
    /// are read until the answer is through (`relay`).
    relay: Option<ConnKey>,
}

struct Parked {
    session: SessionId,
    /// Its session's protocol, which frames the answer.
    protocol: Protocol,
    cors: KeptCors,
    exchange: Exchange,
}

/// What answers a parked poll.
enum PollAnswer {
    /// The session's output.
    Payload(Payload),
    /// One control packet (`packet::NOOP`, `packet::CLOSE`), framed for the session.
    Control(u8),
}

/// A request body on its way in.
struct PendingBody {
    /// `100 Continue` was sent (once per request).
    continued: bool,
    /// A chunked body's decoder and what it decoded so far.
    decoder: ChunkedDecoder,
    decoded: Vec<u8>,
}

impl PendingBody {
    /// The body in progress, made on first use (most requests have their whole body at once
    /// and need none).
    fn of(body: &mut Option<Box<PendingBody>>, max_body: usize) -> &mut PendingBody {
        body.get_or_insert_with(|| {
            Box::new(PendingBody {
                continued: false,
                decoder: ChunkedDecoder::new(max_body),
                decoded: Vec::new(),
            })
        })
    }

    fn decode(&mut self, input: &[u8]) -> Result<http::chunked::Progress, HttpError> {
        self.decoder.decode(input, &mut self.decoded)
    }
}

struct WsConn {
    ctx: WebSocketContext,
    /// Output not written yet: the `101` answer first, then frames (see `ws::push_frame`).
    out: Vec<u8>,
    session: SessionId,
    close_after_write: bool,
    /// Input read but not decoded yet: decoding stopped when `unflushed` passed the bound.
    held: Option<Box<[u8]>>,
}

/// A session on the loop: the Engine.IO state machine and the loop's handles on it.
struct Session {
    eio: EioSession<ConnKey>,
    /// The ping or pong-timeout timer.
    heartbeat: Option<TimerId>,
    upgrade_timer: Option<TimerId>,
    /// Queued on `poll_ready` to answer the parked GET this turn.
    poll_ready: bool,
    /// How much of its polling queue is counted in `Server::output_bytes`
    /// (`count_poll_output`).
    counted: usize,
    /// When it opened (the loop's clock), for its duration in the log.
    opened: Millis,
}

/// Where reading the next request got to.
enum Next {
    /// Its head or body is incomplete: wait for more input, after dropping this range of the
    /// read buffer (chunked body bytes that were decoded).
    Wait(std::ops::Range<usize>),
    /// It was handled: how that leaves the connection, and the bytes it used.
    Handled(Flow, usize),
}

/// How handling a request leaves the connection.
enum Flow {
    /// Handle the next pipelined request.
    Continue,
    /// A long-poll GET is parked: wait.
    Parked,
    /// The connection is now a WebSocket.
    Upgraded,
    /// The request is for another node's session: the connection becomes a pipe to it.
    Relay(SocketAddr),
    /// Stop reading; close once the response is written.
    Close,
}

/// What holds unsent output: a connection (its buffer) or a polling session (its queue).
#[derive(Clone, Copy)]
pub(super) enum Holder {
    Conn(ConnKey),
    Session(SessionId),
}

/// What a piece of guarded work was serving: what a panic in it closes.
#[derive(Clone, Copy)]
enum Culprit {
    Conn(ConnKey),
    Session(SessionId),
    None,
}

/// Stops a running server from another thread.
#[derive(Clone)]
pub struct StopHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl StopHandle {
    /// Asks the loop to stop (graceful: sessions are closed and output flushed).
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        // A failed wake only delays the stop to the next poll timeout.
        let _ = self.waker.wake();
    }
}

/// The server: listener, connections, sessions, timers and the application handler.
pub struct Server<H: Handler> {
    poll: Poll,
    /// The listener; closed when the server starts stopping, so new clients are refused at
    /// once rather than left waiting in the backlog.
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    config: Config,
    /// The sessions' settings, from `config`.
    eio: EioSettings,
    conns: Slots<ConnKey, Conn>,
    sessions: Slots<SessionId, Session>,
    sids: HashMap<Sid, SessionId>,
    timers: TimerWheel<Timeout<H::Timer>>,
    handler: H,
    /// The handler's own sockets (`Io::register_socket`).
    extra: ExtraSockets,
    commands: Vec<Command>,
    /// The other half of the command double buffer (see `dispatch`).
    spare_commands: Vec<Command>,
    rng: rand::rngs::StdRng,
    clock: Instant,
    /// Read once per loop turn (see `tick_clock`): the loop's clock and the wall clock.
    now: Millis,
    unix_ms: u64,
    dirty: Vec<ConnKey>,
    poll_ready: Vec<SessionId>,
    /// HTTP connections whose parked poll was answered: the requests pipelined behind it are
    /// handled at the end of the turn, outside whatever answered it.
    resume: Vec<ConnKey>,
    /// Connections whose read budget ran out: served again next turn.
    deferred: Vec<ConnKey>,
    /// Output queued for clients: connections' buffers and polling queues (see
    /// `Config::max_output_bytes`).
    output_bytes: usize,
    /// What `output_bytes` was when the last scan for a slow consumer found none (0: none since
    /// output was last under its line).
    output_scanned_at: usize,
    /// Every read lands here first (`READ_CHUNK`, allocated on first use), so no connection
    /// needs a large buffer of its own.
    read_buf: Box<[u8]>,
    accepting: bool,
    /// The loop is shutting down: every answer is a connection's last.
    stopping: bool,
    /// The optional second listener (`metrics_port`).
    metrics_listener: Option<TcpListener>,
    /// Where other nodes of a cluster reach this one when the main port is shared
    /// (`Config::relay_listener`).
    relay_listener: Option<TcpListener>,
    /// Idle connections to other nodes, for relayed requests (`relay`).
    relay_pool: HashMap<SocketAddr, Vec<ConnKey>>,
    /// Open connections per client address (only with `max_connections_per_ip`).
    per_ip: HashMap<IpAddr, u32>,
    /// Open sessions per trustworthy client address (only with `max_connections_per_ip`).
    sessions_per_ip: HashMap<IpAddr, u32>,
    /// Sessions in opening order, for `reclaim_unheard_session` (stale entries dropped lazily).
    unheard: std::collections::VecDeque<SessionId>,
    metrics: Metrics,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    use_signals: bool,
}

/// Which listener an address was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindTo {
    /// The main port (`Config::host`, `Config::port`).
    Main,
    /// The metrics port (`Config::metrics_port`).
    Metrics,
}

/// Why the server could not start. `setting` says which setting to name in a message
/// (the binary names the flag or variable that set it).
#[derive(Debug)]
pub enum StartError {
    /// The host is not an IP address and resolves to none.
    Resolve {
        /// The host as configured.
        host: String,
        /// Why.
        error: io::Error,
    },
    /// A listening socket could not be bound to `addr`.
    Bind {
        /// The listener.
        to: BindTo,
        /// The address.
        addr: SocketAddr,
        /// Why (`AddrInUse`, `AddrNotAvailable`, `PermissionDenied`, …).
        error: io::Error,
    },
    /// The event loop could not be set up (epoll, its waker).
    Io(io::Error),
}

impl StartError {
    /// The setting at fault, as its flag name: `host` (it does not resolve, or is not an
    /// address of this machine), `port` or `metrics-port` (the address is taken, or
    /// refused); `None` for what no setting changes.
    pub fn setting(&self) -> Option<&'static str> {
        match self {
            StartError::Resolve { .. } => Some("host"),
            StartError::Bind {
                to: BindTo::Main,
                error,
                ..
            } if error.kind() == io::ErrorKind::AddrNotAvailable => Some("host"),
            StartError::Bind {
                to: BindTo::Main, ..
            } => Some("port"),
            StartError::Bind {
                to: BindTo::Metrics,
                ..
            } => Some("metrics-port"),
            StartError::Io(_) => None,
        }
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Resolve { host, error } => write!(f, "cannot resolve {host} ({error})"),
            StartError::Bind { addr, error, .. } => match error.kind() {
                io::ErrorKind::AddrInUse => write!(f, "address {addr} in use"),
                io::ErrorKind::AddrNotAvailable => {
                    write!(f, "address {addr} is not an address of this machine")
                }
                io::ErrorKind::PermissionDenied if addr.port() < 1024 => write!(
                    f,
                    "no permission to bind {addr} (a port below 1024 needs root or \
                     CAP_NET_BIND_SERVICE)"
                ),
                _ => write!(f, "cannot bind {addr} ({error})"),
            },
            StartError::Io(error) => write!(f, "cannot set up the event loop ({error})"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Resolve { error, .. }
            | StartError::Bind { error, .. }
            | StartError::Io(error) => Some(error),
        }
    }
}

/// For callers that only deal in `io::Error` (the examples): the kind is kept, the message
/// says what failed.
impl From<StartError> for io::Error {
    fn from(e: StartError) -> io::Error {
        let kind = match &e {
            StartError::Resolve { error, .. }
            | StartError::Bind { error, .. }
            | StartError::Io(error) => error.kind(),
        };
        io::Error::new(kind, e.to_string())
    }
}

/// `host:port` as a socket address: an IP address as it is, a name through the resolver.
fn resolve(host: &str, port: u16) -> Result<SocketAddr, StartError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let resolved = std::net::ToSocketAddrs::to_socket_addrs(&(host, port)).and_then(|mut a| {
        a.next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "it resolves to no address"))
    });
    resolved.map_err(|error| StartError::Resolve {
        host: host.to_string(),
        error,
    })
}

/// A listening socket on `addr`, with the larger backlog, whose connections start with no
/// Nagle and a fixed send buffer (`sys::listen`: what the kernel holds for a client that does
/// not read stays small, where autotuning would grow it to megabytes outside the memory
/// budget's sight); `reuse_port`: shared with other processes bound to it (`SO_REUSEPORT`).
fn listen(addr: SocketAddr, to: BindTo, reuse_port: bool) -> Result<TcpListener, StartError> {
    sys::listen(addr, BACKLOG, reuse_port, SEND_BUFFER)
        .map(TcpListener::from_std)
        .map_err(|error| StartError::Bind { to, addr, error })
}

impl<H: Handler> Server<H> {
    /// Binds the listener (port 0 picks a free port), and the metrics listener when
    /// `metrics_port` is set: on loopback under `MetricsAccess::Local`, on the host under
    /// `Public`.
    pub fn bind(config: Config, handler: H) -> Result<Self, StartError> {
        let addr = resolve(&config.host, config.port)?;
        let mut listener = listen(addr, BindTo::Main, config.reuse_port)?;
        let local_addr = listener.local_addr().map_err(StartError::Io)?;
        let poll = Poll::new().map_err(StartError::Io)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(StartError::Io)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(StartError::Io)?);
        let metrics_ip = match config.metrics {
            MetricsAccess::Off => None,
            MetricsAccess::Public => Some(addr.ip()),
            MetricsAccess::Local if addr.is_ipv6() => Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            MetricsAccess::Local => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        };
        let metrics_listener = match (config.metrics_port, metrics_ip) {
            (Some(port), Some(ip)) => {
                let mut l = listen(SocketAddr::new(ip, port), BindTo::Metrics, false)?;
                poll.registry()
                    .register(&mut l, METRICS_LISTENER, Interest::READABLE)
                    .map_err(StartError::Io)?;
                Some(l)
            }
            _ => None,
        };
        // With a shared port (`reuse_port`), other nodes reach this one on a port of its own.
        let relay_listener = if config.relay_listener {
            let mut l = listen(SocketAddr::new(addr.ip(), 0), BindTo::Main, false)?;
            poll.registry()
                .register(&mut l, RELAY_LISTENER, Interest::READABLE)
                .map_err(StartError::Io)?;
            Some(l)
        } else {
            None
        };
        let mut config = config;
        config.path = Config::normalized_path(&config.path);
        let extra = ExtraSockets {
            registry: poll.registry().try_clone().map_err(StartError::Io)?,
            free: Vec::new(),
            next: 0,
        };
        let mut timers = TimerWheel::new(0);
        timers.insert(ms(SWEEP_EVERY), Timeout::Sweep);
        let mut metrics = Metrics::default();
        metrics.process_start = crate::metrics::process::start_time();
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            eio: EioSettings {
                ping_interval: ms(config.ping_interval),
                ping_timeout: ms(config.ping_timeout),
                max_poll_buffer: config.max_poll_buffer,
                max_payload: config.max_payload,
            },
            config,
            conns: Slots::default(),
            sessions: Slots::default(),
            sids: HashMap::new(),
            timers,
            extra,
            handler,
            commands: Vec::new(),
            spare_commands: Vec::new(),
            rng: rand::make_rng(),
            clock: Instant::now(),
            now: 0,
            unix_ms: crate::http::unix_millis(),
            dirty: Vec::new(),
            poll_ready: Vec::new(),
            resume: Vec::new(),
            deferred: Vec::new(),
            output_bytes: 0,
            output_scanned_at: 0,
            read_buf: Box::default(),
            accepting: true,
            stopping: false,
            metrics_listener,
            relay_listener,
            relay_pool: HashMap::new(),
            per_ip: HashMap::new(),
            sessions_per_ip: HashMap::new(),
            unheard: std::collections::VecDeque::new(),
            metrics,
            stop: Arc::new(AtomicBool::new(false)),
            waker,
            use_signals: false,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address other nodes of a cluster reach this server at: its relay listener's when
    /// it has one (the main port is shared), else the main one.
    pub fn direct_addr(&self) -> SocketAddr {
        self.relay_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .unwrap_or(self.local_addr)
    }

    /// The metrics listener's address, when `metrics_port` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// A handle that stops the loop from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            flag: self.stop.clone(),
            waker: self.waker.clone(),
        }
    }

    /// Also stop on SIGINT/SIGTERM (for the binary).
    pub fn stop_on_signals(&mut self) {
        sys::install_stop_signals();
        self.use_signals = true;
    }

    /// The application handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// Number of open TCP connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Number of open Engine.IO sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The loop's clock as of this turn: events handled in one turn share one reading.
    fn now(&self) -> Millis {
        self.now
    }

    /// Reads the clocks for this turn; returns the instant read.
    fn tick_clock(&mut self) -> Instant {
        let now = Instant::now();
        self.now = ms(now - self.clock);
        self.unix_ms = crate::http::unix_millis();
        now
    }

    fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
            || (self.use_signals && sys::STOP_SIGNAL.load(Ordering::Relaxed))
    }

    /// Runs the loop until stopped, then closes every session and flushes (bounded time).
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut due = Vec::new();
        self.tick_clock();
        let addr = self.direct_addr();
        self.guarded(Culprit::None, |s| s.dispatch(Event::Start { addr }));
        while !self.stop_requested() {
            let timeout = if self.deferred.is_empty() {
                let now = ms(self.clock.elapsed());
                let wait = self
                    .timers
                    .next_deadline()
                    .map_or(MAX_WAIT, |d| Duration::from_millis(d.saturating_sub(now)));
                wait.min(MAX_WAIT)
            } else {
                Duration::ZERO
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let turn_started = self.tick_clock();
            self.expire_timers(&mut due);
            for key in std::mem::take(&mut self.deferred) {
                self.guarded(Culprit::Conn(key), |s| s.on_readable(key));
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    METRICS_LISTENER => self.accept_metrics(),
                    RELAY_LISTENER => self.accept_relay(),
                    WAKER => {}
                    Token(t) if t >= EXTRA_BASE => {
                        let token = SocketToken((t - EXTRA_BASE) as u32);
                        let (readable, writable) = (
                            event.is_readable() || event.is_read_closed() || event.is_error(),
                            event.is_writable(),
                        );
                        self.guarded(Culprit::None, |s| {
                            s.dispatch(Event::Socket {
                                token,
                                readable,
                                writable,
                            })
                        });
                    }
                    _ => self.on_conn_event(event),
                }
            }
            self.end_turn();
            let took = turn_started.elapsed().as_micros() as u64;
            self.metrics.loop_turn(took);
        }
        self.shutdown();
        Ok(())
    }

    /// A readiness event of a connection.
    fn on_conn_event(&mut self, event: &mio::event::Event) {
        let Some((key, conn)) = self.conns.get_slot_mut(event.token().0) else {
            return;
        };
        let closed = event.is_read_closed() || event.is_error();
        conn.peer_closed |= closed;
        // A tunnel end paused for its partner's unsent output reads nothing, so would never
        // see its peer go: the peer is gone, and what it held cannot be delivered.
        if closed && conn.paused && matches!(conn.state, ConnState::Pipe(_)) {
            self.close_conn(key);
            return;
        }
        // Room to write again: the flush waits for the end of the turn, so output this turn
        // adds leaves in the same `send`.
        if event.is_writable() {
            if matches!(&conn.state, ConnState::Upstream(u) if u.connecting)
                && !self.on_upstream_writable(key)
            {
                return;
            }
            self.mark_dirty(key);
        }
        if event.is_readable() || closed {
            self.guarded(Culprit::Conn(key), |s| s.on_readable(key));
        }
    }

    /// Runs one piece of event handling; a panic in it is caught here, counted and logged, and
    /// closes only what it was serving (a connection with its session, or a session), so the
    /// loop goes on.
    fn guarded(&mut self, culprit: Culprit, f: impl FnOnce(&mut Self)) {
        let Err(panic) = log::catch(|| f(self)) else {
            return;
        };
        self.metrics.panics += 1;
        let (key, session) = match culprit {
            Culprit::Conn(key) => {
                let session = match self.conn_mut(key).map(|c| &c.state) {
                    Some(ConnState::Ws(w)) => Some(w.session),
                    Some(ConnState::Http(HttpConn {
                        parked: Some(p), ..
                    })) => Some(p.session),
                    _ => None,
                };
                (Some(key), session)
            }
            Culprit::Session(id) => (None, Some(id)),
            Culprit::None => (None, None),
        };
        let closed = match (key, session) {
            (Some(_), Some(_)) => "connection and session",
            (Some(_), None) => "connection",
            (None, Some(_)) => "session",
            (None, None) => "nothing",
        };
        static PANICS: log::Sampler = log::Sampler::new();
        PANICS.log(
            log::Level::Error,
            "panic caught",
            &[
                ("panic", &panic),
                ("closed", &closed),
                ("panics", &self.metrics.panics),
            ],
        );
        // Cleaning up may meet the same broken state: contain that too.
        let _ = log::catch(|| {
            if let Some(key) = key {
                self.close_conn(key);
            }
            if let Some(id) = session {
                self.close_session(id, CloseReason::TransportError);
            }
        });
    }

    /// Answers ready long-polls, handles requests that waited behind answered polls and
    /// flushes every connection with queued output, until none of that is left: each step
    /// can make work for the others (a failed flush closes a session, which answers a poll).
    fn end_turn(&mut self) {
        self.guarded(Culprit::None, |s| s.dispatch(Event::TurnEnd));
        loop {
            for id in std::mem::take(&mut self.poll_ready) {
                self.guarded(Culprit::Session(id), |s| s.answer_ready_poll(id));
            }
            for key in std::mem::take(&mut self.resume) {
                self.guarded(Culprit::Conn(key), |s| s.process_http(key));
            }
            while let Some(key) = self.dirty.pop() {
                if let Some(conn) = self.conn_mut(key) {
                    conn.dirty = false;
                    self.guarded(Culprit::Conn(key), |s| s.flush(key));
                }
            }
            if self.poll_ready.is_empty() && self.resume.is_empty() {
                break;
            }
        }
        if self.output_bytes <= self.output_line() {
            self.output_scanned_at = 0;
        } else if self.output_bytes > self.output_scanned_at + OUTPUT_PAUSE {
            self.keep_output_within_share();
        }
    }

    /// Fires the timers due this turn, each on its own: a panic in one closes what that timer
    /// was about and leaves the others to fire.
    fn expire_timers(&mut self, due: &mut Vec<TimerId>) {
        let now = self.now();
        self.timers.poll_to(now, due);
        let mut batch = std::mem::take(due);
        for id in batch.drain(..) {
            // Cancelled by a timer that fired before it this turn: it never fires.
            let Some(t) = self.timers.fire(id) else {
                continue;
            };
            let culprit = match &t {
                Timeout::Conn(key) => Culprit::Conn(*key),
                Timeout::Ping(id) | Timeout::Pong(id) | Timeout::Upgrade(id) => {
                    Culprit::Session(*id)
                }
                Timeout::App(_) | Timeout::Sweep => Culprit::None,
            };
            self.guarded(culprit, |s| s.on_timeout(t));
        }
        *due = batch;
    }

    /// A safety net (sozu's `zombie_check`): every `SWEEP_EVERY`, sessions and connections
    /// that have no live deadline left — nothing would ever end them, whatever a bug or a
    /// caught panic left behind — are closed and counted (`pairchat_zombies_total`). Every
    /// session has a heartbeat timer; every HTTP or closing connection a timer (a parked poll
    /// too); every WebSocket belongs to a live session, as its transport or its probe, or is
    /// flushing its close.
    fn sweep(&mut self) {
        let at = deadline(self.now(), SWEEP_EVERY);
        self.timers.insert(at, Timeout::Sweep);
        // Memory freed since (rooms gone, bursts over) leaves the resident set: 16 full rooms'
        // worth took 3.2 ms to give back, an idle heap's check 56 µs (measured).
        sys::give_back_free_memory();
        let timers = &self.timers;
        let live = |t: Option<TimerId>| t.is_some_and(|t| timers.deadline(t).is_some());
        let sessions: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| !live(s.heartbeat))
            .map(|(id, _)| id)
            .collect();
        let conns: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(key, c)| match &c.state {
                ConnState::Http(_) | ConnState::Closing => !live(c.timer),
                ConnState::Ws(w) if w.close_after_write => !live(c.timer),
                ConnState::Pipe(p) => self.conns.get(p.other).is_none(),
                ConnState::Upstream(_) => !live(c.timer),
                ConnState::Ws(w) => !self
                    .sessions
                    .get(w.session)
                    .is_some_and(|s| s.eio.is_transport(*key) || s.eio.is_probe(*key)),
            })
            .map(|(key, _)| key)
            .collect();
        for id in sessions {
            self.metrics.zombies += 1;
            self.close_session(id, CloseReason::TransportError);
        }
        for key in conns {
            self.metrics.zombies += 1;
            self.close_conn(key);
        }
    }

    fn on_timeout(&mut self, t: Timeout<H::Timer>) {
        match t {
            Timeout::Conn(key) => self.on_conn_timeout(key),
            Timeout::Sweep => self.sweep(),
            Timeout::Ping(id) => self.on_ping_due(id),
            Timeout::Pong(id) => self.on_pong_missed(id),
            Timeout::Upgrade(id) => {
                if let Some(s) = self.session_mut(id) {
                    s.upgrade_timer = None;
                    if let Upgrade::Probing(c) | Upgrade::Probed(c) = s.eio.upgrade {
                        self.close_conn(c); // abandons the upgrade (`abandon_probe`)
                    }
                }
            }
            Timeout::App(t) => self.dispatch(Event::Timer(t)),
        }
    }

    fn shutdown(&mut self) {
        self.tick_clock();
        self.stopping = true;
        // Dropping the listening sockets closes them (and takes them out of the poll set).
        self.listener = None;
        self.metrics_listener = None;
        self.relay_listener = None;
        log::info(
            "stopping",
            &[
                ("sessions", &self.sessions.len()),
                ("connections", &self.conns.len()),
            ],
        );
        let ids: Vec<SessionId> = self.sessions.iter().map(|(id, _)| id).collect();
        for id in ids {
            self.close_session(id, CloseReason::ServerShutdown);
        }
        for key in self.conn_keys(|_| true) {
            if let Some(ConnState::Http(h)) = self.conn_mut(key).map(|c| &mut c.state) {
                h.close_after_write = true;
                if h.wbuf.is_empty() {
                    self.close_conn(key);
                }
            }
        }
        self.end_turn();
        self.drop_closing();
        // Give queued output a bounded time to leave.
        let deadline = Instant::now() + self.config.shutdown_timeout;
        let mut events = Events::with_capacity(256);
        while !self.conns.is_empty() && Instant::now() < deadline {
            if self
                .poll
                .poll(&mut events, Some(Duration::from_millis(50)))
                .is_err()
            {
                break;
            }
            for event in events.iter() {
                self.on_conn_event(event);
            }
            self.end_turn();
            self.drop_closing();
        }
    }

    /// At shutdown, connections with nothing left to send need not wait for the peer's EOF.
    fn drop_closing(&mut self) {
        for key in self.conn_keys(|c| matches!(c.state, ConnState::Closing)) {
            self.close_conn(key);
        }
    }

    /// The keys of the connections `keep` selects.
    fn conn_keys(&self, keep: impl Fn(&Conn) -> bool) -> Vec<ConnKey> {
        self.conns
            .iter()
            .filter(|(_, c)| keep(c))
            .map(|(key, _)| key)
            .collect()
    }

    // ---- connections -------------------------------------------------------------------

    fn accept(&mut self) {
        while self.accepting {
            if self.conns.len() >= self.config.max_connections {
                self.accepting = false;
                static PAUSED: log::Sampler = log::Sampler::new();
                PAUSED.warn(
                    "connection limit reached: new clients wait until below 90 %",
                    &[("connections", &self.conns.len())],
                );
                break;
            }
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, addr)) => self.add_conn(stream, addr.ip(), false),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break, // e.g. EMFILE: try again on the next readiness event
            }
        }
    }

    /// Accepts on the metrics port (its connections count towards `max_connections` too; the
    /// port is meant for the operator's scraper only).
    fn accept_metrics(&mut self) {
        loop {
            let Some(listener) = &self.metrics_listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, addr)) => self.add_conn(stream, addr.ip(), true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    /// Accepts on the relay listener: other nodes' relays, served as any client.
    fn accept_relay(&mut self) {
        loop {
            let Some(listener) = &self.relay_listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, addr)) => self.add_conn(stream, addr.ip(), false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    fn add_conn(&mut self, stream: TcpStream, peer: IpAddr, metrics_only: bool) {
        // Its options (no Nagle, a fixed send buffer) are its listener's (`listen`).
        self.metrics.connections_accepted += 1;
        // An IPv4 client of a dual-stack listener arrives as `::ffff:a.b.c.d`: it is a.b.c.d
        // to every rule here (loopback, `trust_proxy`, per-address counts).
        let peer = peer.to_canonical();
        // A direct client counts against its own address now; a proxied one once its first
        // request names it; a local proxy or the operator (loopback, not a trusted proxy) and
        // the scraper on the metrics port not at all.
        let client = self.client_of(peer, None);
        let counted_ip = client.filter(|_| self.config.max_connections_per_ip > 0 && !metrics_only);
        let refused = counted_ip.is_some_and(|ip| self.count_ip(ip));
        let at = deadline(self.now(), self.config.header_timeout);
        let key = self.conns.insert(Conn {
            stream,
            state: ConnState::Http(HttpConn::default()),
            timer: None,
            dirty: false,
            peer_closed: false,
            peer,
            client,
            counted_ip,
            refused,
            metrics_only,
            paused: false,
            backlog: false,
            handshakes: 0,
            counted: 0,
            relayed: false,
        });
        let timer = self.timers.insert(at, Timeout::Conn(key));
        let registry = self.poll.registry();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.timer = Some(timer);
        let token = Token(key.idx as usize);
        if registry
            .register(
                &mut conn.stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            self.close_conn(key);
        }
    }

    /// Counts one more connection from `ip`; true when that is over the per-address limit.
    fn count_ip(&mut self, ip: IpAddr) -> bool {
        let n = self.per_ip.entry(ip).or_insert(0);
        *n += 1;
        *n as usize > self.config.max_connections_per_ip
    }

    /// The client's address, when it can be trusted for per-address limits (connections,
    /// sessions, the chat's failed joins): a trusted proxy's forwarded address, a direct
    /// peer's own — but not a loopback peer that `trust_proxy` does not name: that is a
    /// reverse proxy on the same host (whose clients would all share its address) or the
    /// operator, and is not limited per address.
    fn client_of(&self, peer: IpAddr, req: Option<&Request<'_>>) -> Option<IpAddr> {
        let trusted = &self.config.trust_proxy;
        if trusted.contains(&peer) {
            return req
                .and_then(|r| http::request::forwarded_client(&r.headers, trusted))
                .map(|ip| ip.to_canonical());
        }
        (!peer.is_loopback()).then_some(peer)
    }

    fn conn_mut(&mut self, key: ConnKey) -> Option<&mut Conn> {
        self.conns.get_mut(key)
    }

    fn session_mut(&mut self, id: SessionId) -> Option<&mut Session> {
        self.sessions.get_mut(id)
    }

    /// Queues the connection's output for the end-of-turn flush (everything written to a
    /// connection's buffer comes through here, so its count is brought up to date too).
    fn mark_dirty(&mut self, key: ConnKey) {
        self.count_output(key);
        if let Some(conn) = self.conn_mut(key)
            && !conn.dirty
        {
            conn.dirty = true;
            self.dirty.push(key);
        }
    }

    /// Brings `output_bytes` up to date with what the connection holds unsent now.
    fn count_output(&mut self, key: ConnKey) {
        if let Some(conn) = self.conns.get_mut(key) {
            let held = match &conn.state {
                ConnState::Http(h) => h.wbuf.len(),
                ConnState::Ws(w) => w.out.len(),
                ConnState::Pipe(p) => p.out.len(),
                ConnState::Upstream(u) => u.out.len(),
                ConnState::Closing => 0,
            };
            self.output_bytes = self.output_bytes - conn.counted + held;
            conn.counted = held;
        }
    }

    /// Three quarters of the output share of the memory budget: past it, output is kept
    /// (`keep_output_within_share`) and new work refused (`Io::output_full`).
    fn output_line(&self) -> usize {
        self.config.max_output_bytes / 4 * 3
    }

    /// Keeps output under its line once the turn's flushes are done (what is left is what
    /// clients did not read): the largest holder goes first, a connection or a polling queue,
    /// as a slow consumer, while any holds more than `OUTPUT_PAUSE`. Readers that keep up hold
    /// nothing by now and are never the ones cut; what many small holders leave over the line
    /// makes the handler refuse new work (`Io::output_full`) until it drains. A scan that finds
    /// no one to cut is not repeated until output grows by a pause's worth (every turn would
    /// scan every connection while small holders keep it over the line).
    fn keep_output_within_share(&mut self) {
        while self.output_bytes > self.output_line() {
            let conns = self.conns.iter().map(|(k, c)| (c.counted, Holder::Conn(k)));
            let sessions = self
                .sessions
                .iter()
                .map(|(id, s)| (s.counted, Holder::Session(id)));
            let Some((_, largest)) = conns
                .chain(sessions)
                .filter(|(held, _)| *held > OUTPUT_PAUSE)
                .max_by_key(|(held, _)| *held)
            else {
                self.output_scanned_at = self.output_bytes;
                return;
            };
            self.cut_slow_consumer(largest);
        }
    }

    /// Drops a client that does not read what it is sent.
    pub(super) fn cut_slow_consumer(&mut self, holder: Holder) {
        self.metrics.reject(Rejected::SlowConsumer);
        match holder {
            Holder::Conn(key) => {
                // Its session first, so it ends as a transport error (the connection's own
                // close would end it as a transport close).
                if let Some(ConnState::Ws(w)) = self.conn_mut(key).map(|c| &c.state) {
                    let id = w.session;
                    if self.is_active_ws(key, id) {
                        self.close_session(id, CloseReason::TransportError);
                    }
                }
                self.close_conn(key);
            }
            Holder::Session(id) => self.close_session(id, CloseReason::TransportError),
        }
    }

    fn set_conn_timer(&mut self, key: ConnKey, after: Option<Duration>) {
        let at = after.map(|d| deadline(self.now(), d));
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Some(old) = conn.timer.take() {
            self.timers.cancel(old);
        }
        if let Some(at) = at {
            conn.timer = Some(self.timers.insert(at, Timeout::Conn(key)));
        }
    }

    fn on_conn_timeout(&mut self, key: ConnKey) {
        let Some(conn) = self.conn_mut(key) else {
            return;
        };
        conn.timer = None;
        match &conn.state {
            // A parked poll's deadline: a live session pings long before it, so this poll has
            // outlived its session's heartbeat. A noop answers it; the client polls again.
            ConnState::Http(HttpConn {
                parked: Some(p), ..
            }) => {
                let id = p.session;
                if let Some(s) = self.sessions.get_mut(id) {
                    s.eio.unpark(key);
                }
                self.answer_parked_conn(key, PollAnswer::Control(packet::NOOP));
            }
            // An idle or slow HTTP connection, or a lingering one, ends.
            ConnState::Http(h) => {
                if !h.rbuf.is_empty() {
                    self.metrics.reject(Rejected::HeaderTimeout);
                }
                self.close_conn(key)
            }
            ConnState::Closing => self.close_conn(key),
            // A close frame that could not be sent in time.
            ConnState::Ws(w) if w.close_after_write => self.close_conn(key),
            ConnState::Ws(_) => {}
            // A node that did not accept or answer in time, a pooled connection idle too long.
            ConnState::Upstream(_) | ConnState::Pipe(_) => self.close_conn(key),
        }
    }

    /// Removes a connection at once and detaches it from its session.
    fn close_conn(&mut self, key: ConnKey) {
        // Dropping the socket closes it, which takes it out of the epoll set (it is never
        // duplicated): no separate `epoll_ctl` to deregister.
        let Some(mut conn) = self.conns.remove(key) else {
            return;
        };
        if let Some(ip) = conn.counted_ip
            && let Some(n) = self.per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
        if let Some(t) = conn.timer.take() {
            self.timers.cancel(t);
        }
        self.output_bytes -= conn.counted;
        match conn.state {
            ConnState::Http(HttpConn {
                parked: Some(p), ..
            }) => {
                // A client that drops its pending poll is gone (as in the reference server).
                if let Some(s) = self.sessions.get_mut(p.session)
                    && s.eio.unpark(key)
                {
                    self.close_session(p.session, CloseReason::TransportClose);
                }
            }
            ConnState::Ws(ws) => {
                if self.is_active_ws(key, ws.session) {
                    self.close_session(ws.session, CloseReason::TransportClose);
                } else {
                    self.abandon_probe(ws.session, key);
                }
            }
            ConnState::Http(HttpConn {
                relay: Some(upstream),
                ..
            }) => self.on_relaying_client_closed(upstream),
            ConnState::Upstream(up) => self.on_upstream_closed(&up, key),
            ConnState::Pipe(p) => self.on_pipe_closed(p.other),
            _ => {}
        }
        if !self.accepting && resumes_accepting(self.conns.len(), self.config.max_connections) {
            self.accepting = true;
            static RESUMED: log::Sampler = log::Sampler::new();
            RESUMED.log(
                log::Level::Info,
                "accepting connections again",
                &[("connections", &self.conns.len())],
            );
            self.accept();
        }
    }

    /// Shuts the write side after queued output and lingers to drain the peer.
    fn begin_closing(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let _ = conn.stream.shutdown(Shutdown::Write);
        self.output_bytes -= std::mem::take(&mut conn.counted);
        conn.state = ConnState::Closing;
        self.set_conn_timer(key, Some(LINGER));
    }

    /// Reads what the connection has (see `read_socket`) and hands it on by state.
    fn on_readable(&mut self, key: ConnKey) {
        let Some(conn) = self.conn_mut(key) else {
            return;
        };
        // Input that waited for output to drain goes first. Not its end of stream, even if
        // the peer closed: the socket may hold more, which the read below gets first.
        if let ConnState::Ws(w) = &mut conn.state
            && let Some(held) = w.held.take()
        {
            self.decode_ws(key, &held, false);
        }
        // Requests read before a pause are handled before anything more is read: reading on
        // while they pause the connection again would only pile input up.
        if let Some(conn) = self.conn_mut(key)
            && std::mem::take(&mut conn.backlog)
            && matches!(conn.state, ConnState::Http(_))
        {
            self.process_http(key);
        }
        match self.conn_mut(key) {
            Some(c) if !c.paused => {}
            _ => return,
        }
        let mut buf = std::mem::take(&mut self.read_buf);
        if buf.is_empty() {
            buf = vec![0; READ_CHUNK].into_boxed_slice();
        }
        if let Some((n, eof)) = self.read_socket(key, &mut buf) {
            let input = &buf[..n];
            match self.conn_mut(key).map(|c| &c.state) {
                Some(ConnState::Http(_)) => self.on_http_input(key, input, eof),
                Some(ConnState::Ws(_)) => self.decode_ws(key, input, eof),
                Some(ConnState::Pipe(_)) => self.on_pipe_input(key, input, eof),
                Some(ConnState::Upstream(_)) => self.on_upstream_input(key, input, eof),
                // Lingering: what the peer still sends is dropped until its EOF.
                Some(ConnState::Closing) if eof => self.close_conn(key),
                _ => {}
            }
        }
        self.read_buf = buf;
    }

    /// One `recv` into `buf`: the bytes read and whether the peer's stream ended (a read error
    /// counts as its end). A short read means the receive queue is empty, and data arriving
    /// later raises a new edge-triggered event, so there is no second `recv` just to see
    /// `EAGAIN` — except after the peer's FIN (its one event), when reads go on to the end. A
    /// connection that filled `buf` may have more: it is served again next turn.
    fn read_socket(&mut self, key: ConnKey, buf: &mut [u8]) -> Option<(usize, bool)> {
        let conn = self.conns.get_mut(key)?;
        let (mut n, mut eof) = (0, false);
        while n < buf.len() {
            match conn.stream.read(&mut buf[n..]) {
                Ok(0) => eof = true,
                Ok(got) => {
                    n += got;
                    if conn.peer_closed {
                        continue;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => eof = true,
            }
            break;
        }
        self.metrics.bytes_in += n as u64;
        if n == buf.len() {
            self.deferred.push(key);
        }
        Some((n, eof))
    }

    /// Writes queued output; closes or lingers when the connection asked for it.
    fn flush(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let outcome = match &mut conn.state {
            ConnState::Http(h) => {
                let mut stream = Counted {
                    stream: &mut conn.stream,
                    bytes: &mut self.metrics.bytes_out,
                };
                match write_all_nonblocking(&mut stream, &mut h.wbuf) {
                    // (A relayed request's answer is still to come.)
                    Ok(true) if h.close_after_write && h.relay.is_none() => Some(true),
                    Ok(_) => None,
                    Err(_) => Some(false),
                }
            }
            ConnState::Ws(w) => {
                // Whatever the context holds joins the buffer (it writes only there).
                let flushed = w.ctx.flush(&mut WsStream::output(&mut w.out));
                let mut stream = Counted {
                    stream: &mut conn.stream,
                    bytes: &mut self.metrics.bytes_out,
                };
                match (write_all_nonblocking(&mut stream, &mut w.out), flushed) {
                    (Err(_), _) => Some(false),
                    (Ok(false), _) => None,
                    (Ok(true), Ok(())) if w.close_after_write => Some(true),
                    (Ok(true), Ok(())) => None,
                    (Ok(true), Err(tungstenite::Error::ConnectionClosed)) => Some(true),
                    (Ok(true), Err(_)) => Some(false),
                }
            }
            ConnState::Pipe(p) => {
                let mut stream = Counted {
                    stream: &mut conn.stream,
                    bytes: &mut self.metrics.bytes_out,
                };
                match write_all_nonblocking(&mut stream, &mut p.out) {
                    Ok(true) if p.close_after_write => Some(true),
                    Ok(_) => None,
                    Err(_) => Some(false),
                }
            }
            ConnState::Upstream(u) if u.connecting => None,
            ConnState::Upstream(u) => {
                let mut stream = Counted {
                    stream: &mut conn.stream,
                    bytes: &mut self.metrics.bytes_out,
                };
                write_all_nonblocking(&mut stream, &mut u.out)
                    .err()
                    .map(|_| false)
            }
            ConnState::Closing => None,
        };
        self.count_output(key);
        match outcome {
            Some(true) => self.begin_closing(key),
            Some(false) => self.close_conn(key),
            None => self.resume_if_drained(key),
        }
    }

    /// A paused connection whose output went back under `OUTPUT_PAUSE` is served again next
    /// turn (its input may have had its readiness event already).
    fn resume_if_drained(&mut self, key: ConnKey) {
        let Some(conn) = self.conn_mut(key) else {
            return;
        };
        let drained = match &mut conn.state {
            // A relayed answer waits on this client: the node's connection reads again.
            ConnState::Http(HttpConn {
                relay: Some(upstream),
                wbuf,
                ..
            }) if wbuf.len() < OUTPUT_PAUSE => {
                let upstream = *upstream;
                if let Some(u) = self.conn_mut(upstream)
                    && std::mem::take(&mut u.paused)
                {
                    self.deferred.push(upstream);
                }
                return;
            }
            ConnState::Http(h) => h.wbuf.len() < OUTPUT_PAUSE,
            ConnState::Ws(w) => w.out.len() < OUTPUT_PAUSE,
            // What waits is the other end's input: it reads again.
            ConnState::Pipe(p) if p.out.len() < OUTPUT_PAUSE => {
                let other = p.other;
                if let Some(o) = self.conn_mut(other)
                    && std::mem::take(&mut o.paused)
                {
                    self.deferred.push(other);
                    self.set_conn_timer(other, None);
                }
                return;
            }
            ConnState::Pipe(_) | ConnState::Upstream(_) | ConnState::Closing => false,
        };
        if conn.paused && drained {
            conn.paused = false;
            conn.backlog = true;
            self.deferred.push(key);
        }
    }

    // ---- the handler -------------------------------------------------------------------

    /// Hands an event to the handler and carries out what it asked for.
    fn dispatch(&mut self, event: Event<'_, H::Timer>) {
        let mut io = Io {
            now: self.now,
            unix_ms: self.unix_ms,
            output_full: self.output_bytes > self.output_line(),
            commands: &mut self.commands,
            timers: &mut self.timers,
            sockets: &mut self.extra,
            rng: &mut self.rng,
        };
        self.handler.handle(event, &mut io);
        // Carrying out a command can dispatch again (a close), which queues more: work on a
        // batch at a time and keep both buffers' capacity.
        while !self.commands.is_empty() {
            let spare = std::mem::take(&mut self.spare_commands);
            let mut batch = std::mem::replace(&mut self.commands, spare);
            for command in batch.drain(..) {
                match command {
                    Command::Send(id, p) => self.send(id, p),
                    Command::Close(id, reason) => self.close_session(id, reason),
                }
            }
            if self.spare_commands.capacity() < batch.capacity() {
                self.spare_commands = batch;
            }
        }
    }
}

/// How long an HTTP connection may wait next: for a new request under the keep-alive timeout
/// when nothing is buffered, else for the rest of the one begun under the header timeout.
fn idle_timeout(config: &Config, rbuf_empty: bool) -> Duration {
    if rbuf_empty {
        config.keep_alive_timeout
    } else {
        config.header_timeout
    }
}

/// Whether a server that stopped accepting at `max` connections accepts again with `open`:
/// below 90 % of the cap, and with a cap under 10 at once below it (90 % of 1 or 2 rounds
/// down to a level one idle keep-alive connection could hold forever).
fn resumes_accepting(open: usize, max: usize) -> bool {
    open < max - max / 10
}

/// The content type of a polling answer: text, or v3's binary (XHR2) payload.
fn payload_type(binary: bool) -> &'static str {
    if binary {
        "application/octet-stream"
    } else {
        "text/plain; charset=UTF-8"
    }
}
