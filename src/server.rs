//! The event loop: one `mio::Poll`, the listener, a `Slab` of connections, the Engine.IO
//! sessions, and one timer wheel for every deadline.
//!
//! Single-threaded, no locks, no async runtime. Sockets are registered once, edge-triggered;
//! reads drain to `WouldBlock` within a per-event budget (a connection over budget is put back
//! on a ready list, so one client cannot starve the rest); writes are queued per connection
//! and flushed once per loop turn. Protocol decoding happens in `http`, `engine::packet` and
//! `ws`; this module moves bytes and drives the session state machines (see LIFECYCLE.md).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use tungstenite::Message;
use tungstenite::protocol::WebSocketContext;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

use crate::config::Config;
use crate::engine::packet::{self, Packet};
use crate::engine::{
    CloseReason, Command, EngineError, Event, Handler, Io, Outgoing, SessionId, Sid, TransportKind,
};
use crate::http::{self, Cors, HttpError, Method, Parsed, Request, Response};
use crate::log;
use crate::metrics::{Gauges, Metrics, Rejected};
use crate::timer::{Millis, TimerId, TimerWheel};
use crate::{sys, ws};

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);
const METRICS_LISTENER: Token = Token(usize::MAX - 2);
/// Bytes read from one HTTP connection per readiness event before yielding to others.
const READ_BUDGET: usize = 64 * 1024;
/// WebSocket messages handled per connection per readiness event before yielding.
const MESSAGE_BUDGET: usize = 64;
/// How long a closing connection may linger to drain the peer's last bytes.
const LINGER: Duration = Duration::from_secs(2);
/// Longest poll wait: bounds how late a stop request is noticed without a signal.
const MAX_WAIT: Duration = Duration::from_millis(500);
/// Listen backlog (mio's default of 128 makes bursts of clients wait for SYN retries).
const BACKLOG: i32 = 1024;

/// A connection: its slab index plus a generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnKey {
    idx: usize,
    generation: u32,
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
    /// The application's own timer.
    App(T),
}

struct Conn {
    stream: TcpStream,
    generation: u32,
    state: ConnState,
    timer: Option<TimerId>,
    /// Queued on `dirty` for a flush this turn.
    dirty: bool,
    /// The peer has shut its write side (EPOLLRDHUP seen): read to EOF, never stop at a short
    /// read (see `UntilDrained`).
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
}

// Long-lived connections are WebSockets, so boxing `WsConn` would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum ConnState {
    Http(HttpConn),
    Ws(WsConn),
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
}

struct Parked {
    session: SessionId,
    origin: Option<Box<str>>,
    keep_alive: bool,
}

struct WsConn {
    ctx: WebSocketContext,
    /// The `101` answer, until it is written.
    head: Vec<u8>,
    session: SessionId,
    close_after_write: bool,
}

enum Transport {
    Polling {
        /// The connection holding this session's long-poll GET.
        parked: Option<ConnKey>,
        queue: Vec<Outgoing>,
        queued_bytes: usize,
    },
    WebSocket(ConnKey),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Upgrade {
    None,
    /// A WebSocket with this sid is open; `2probe` not seen yet.
    Probing(ConnKey),
    /// `3probe` sent; polling is answered with noops until `5`.
    Probed(ConnKey),
}

struct Session {
    sid: Sid,
    generation: u32,
    transport: Transport,
    upgrade: Upgrade,
    /// The ping or pong-timeout timer.
    heartbeat: Option<TimerId>,
    /// When the next ping is due.
    next_ping: Millis,
    /// Set while a ping awaits its pong.
    pong_deadline: Option<Millis>,
    upgrade_timer: Option<TimerId>,
    /// Queued on `poll_ready` to answer the parked GET this turn.
    poll_ready: bool,
    /// The client's address, when trustworthy (see `Server::client_of`).
    client: Option<IpAddr>,
}

/// How handling a request leaves the connection.
enum Flow {
    /// Handle the next pipelined request.
    Continue,
    /// A long-poll GET is parked: wait.
    Parked,
    /// The connection is now a WebSocket.
    Upgraded,
    /// Stop reading; close once the response is written.
    Close,
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
    listener: TcpListener,
    local_addr: SocketAddr,
    config: Config,
    conns: Slab<Conn>,
    sessions: Slab<Session>,
    sids: HashMap<Sid, SessionId>,
    timers: TimerWheel<Timeout<H::Timer>>,
    handler: H,
    commands: Vec<Command>,
    /// The other half of the command double buffer (see `dispatch`).
    spare_commands: Vec<Command>,
    rng: rand::rngs::StdRng,
    clock: Instant,
    next_gen: u32,
    dirty: Vec<ConnKey>,
    poll_ready: Vec<SessionId>,
    /// Connections whose read budget ran out: served again next turn.
    deferred: Vec<ConnKey>,
    accepting: bool,
    /// The optional second listener (`metrics_port`).
    metrics_listener: Option<TcpListener>,
    /// Open connections per client address (only with `max_connections_per_ip`).
    per_ip: HashMap<IpAddr, u32>,
    metrics: Metrics,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    use_signals: bool,
}

impl<H: Handler> Server<H> {
    /// Binds the listener (port 0 picks a free port).
    pub fn bind(config: Config, handler: H) -> io::Result<Self> {
        let addr: SocketAddr =
            format!("{}:{}", config.host, config.port)
                .parse()
                .or_else(|_| {
                    std::net::ToSocketAddrs::to_socket_addrs(&(config.host.as_str(), config.port))?
                        .next()
                        .ok_or_else(|| {
                            io::Error::new(
                                io::ErrorKind::InvalidInput,
                                "host resolves to no address",
                            )
                        })
                })?;
        let mut listener = TcpListener::bind(addr)?;
        sys::set_backlog(&listener, BACKLOG)?;
        let local_addr = listener.local_addr()?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let metrics_listener = match config.metrics_port.filter(|_| config.metrics) {
            Some(port) => {
                let mut l = TcpListener::bind(SocketAddr::new(addr.ip(), port))?;
                poll.registry()
                    .register(&mut l, METRICS_LISTENER, Interest::READABLE)?;
                Some(l)
            }
            None => None,
        };
        let mut config = config;
        config.path = Config::normalized_path(&config.path);
        Ok(Server {
            poll,
            listener,
            local_addr,
            config,
            conns: Slab::new(),
            sessions: Slab::new(),
            sids: HashMap::new(),
            timers: TimerWheel::new(0),
            handler,
            commands: Vec::new(),
            spare_commands: Vec::new(),
            rng: rand::make_rng(),
            clock: Instant::now(),
            next_gen: 0,
            dirty: Vec::new(),
            poll_ready: Vec::new(),
            deferred: Vec::new(),
            accepting: true,
            metrics_listener,
            per_ip: HashMap::new(),
            metrics: Metrics::default(),
            stop: Arc::new(AtomicBool::new(false)),
            waker,
            use_signals: false,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The metrics listener's address, when `metrics_port` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The loop's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
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

    fn now(&self) -> Millis {
        self.clock.elapsed().as_millis() as Millis
    }

    fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
            || (self.use_signals && sys::STOP_SIGNAL.load(Ordering::Relaxed))
    }

    /// Runs the loop until stopped, then closes every session and flushes (bounded time).
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut fired = Vec::new();
        while !self.stop_requested() {
            let timeout = if self.deferred.is_empty() {
                let now = self.now();
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
            let turn_started = Instant::now();
            self.metrics.loop_iterations += 1;
            self.guarded(None, |s| s.expire_timers(&mut fired));
            for key in std::mem::take(&mut self.deferred) {
                self.guarded(Some(key), |s| s.on_readable(key));
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    METRICS_LISTENER => self.accept_metrics(),
                    WAKER => {}
                    Token(idx) => {
                        let Some(conn) = self.conns.get(idx) else {
                            continue;
                        };
                        let key = ConnKey {
                            idx,
                            generation: conn.generation,
                        };
                        if event.is_read_closed() || event.is_error() {
                            self.conns[idx].peer_closed = true;
                        }
                        let readable =
                            event.is_readable() || event.is_read_closed() || event.is_error();
                        let writable = event.is_writable();
                        self.guarded(Some(key), |s| {
                            if writable {
                                s.flush(key);
                            }
                            if readable {
                                s.on_readable(key);
                            }
                        });
                    }
                }
            }
            self.guarded(None, Self::end_turn);
            let took = turn_started.elapsed().as_micros() as u64;
            self.metrics.loop_max_us = self.metrics.loop_max_us.max(took);
        }
        self.shutdown();
        Ok(())
    }

    /// Runs one piece of event handling; a panic in it is caught here, counted and logged, and
    /// closes only the connection being served (with its session), so the loop goes on.
    fn guarded(&mut self, key: Option<ConnKey>, f: impl FnOnce(&mut Self)) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)));
        if result.is_err() {
            self.metrics.panics += 1;
            log::error(
                "panic while handling a connection; closed it",
                &[("panics", &self.metrics.panics)],
            );
            if let Some(key) = key {
                let session = match self.conn_mut(key).map(|c| &c.state) {
                    Some(ConnState::Ws(w)) => Some(w.session),
                    Some(ConnState::Http(HttpConn {
                        parked: Some(p), ..
                    })) => Some(p.session),
                    _ => None,
                };
                // Cleaning up may meet the same broken state: contain that too.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.close_conn(key);
                    if let Some(id) = session {
                        self.close_session(id, CloseReason::TransportError);
                    }
                }));
            }
        }
    }

    /// Answers ready long-polls and flushes every connection with queued output.
    fn end_turn(&mut self) {
        for id in std::mem::take(&mut self.poll_ready) {
            self.answer_ready_poll(id);
        }
        while let Some(key) = self.dirty.pop() {
            if let Some(conn) = self.conn_mut(key) {
                conn.dirty = false;
                self.flush(key);
            }
        }
    }

    fn expire_timers(&mut self, fired: &mut Vec<Timeout<H::Timer>>) {
        let now = self.now();
        self.timers.poll_to(now, fired);
        for t in fired.drain(..) {
            match t {
                Timeout::Conn(key) => self.on_conn_timeout(key),
                Timeout::Ping(id) => self.on_ping_due(id),
                Timeout::Pong(id) => {
                    if let Some(s) = self.session_mut(id) {
                        s.heartbeat = None;
                        self.close_session(id, CloseReason::PingTimeout);
                    }
                }
                Timeout::Upgrade(id) => {
                    if let Some(s) = self.session_mut(id) {
                        s.upgrade_timer = None;
                        if let Upgrade::Probing(c) | Upgrade::Probed(c) =
                            std::mem::replace(&mut s.upgrade, Upgrade::None)
                        {
                            self.metrics.upgrades_failed += 1;
                            self.close_conn(c);
                        }
                    }
                }
                Timeout::App(t) => self.dispatch(Event::Timer(t)),
            }
        }
    }

    fn shutdown(&mut self) {
        let _ = self.poll.registry().deregister(&mut self.listener);
        log::info(
            "stopping",
            &[
                ("sessions", &self.sessions.len()),
                ("connections", &self.conns.len()),
            ],
        );
        let ids: Vec<SessionId> = self
            .sessions
            .iter()
            .map(|(idx, s)| SessionId {
                idx: idx as u32,
                generation: s.generation,
            })
            .collect();
        for id in ids {
            self.close_session(id, CloseReason::ServerShutdown);
        }
        let keys: Vec<ConnKey> = self
            .conns
            .iter()
            .map(|(idx, c)| ConnKey {
                idx,
                generation: c.generation,
            })
            .collect();
        for key in keys {
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
                let Token(idx) = event.token();
                if let Some(conn) = self.conns.get(idx) {
                    let key = ConnKey {
                        idx,
                        generation: conn.generation,
                    };
                    self.flush(key);
                    self.on_readable(key);
                }
            }
            self.end_turn();
            self.drop_closing();
        }
    }

    /// At shutdown, connections with nothing left to send need not wait for the peer's EOF.
    fn drop_closing(&mut self) {
        let keys: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.state, ConnState::Closing))
            .map(|(idx, c)| ConnKey {
                idx,
                generation: c.generation,
            })
            .collect();
        for key in keys {
            self.close_conn(key);
        }
    }

    // ---- connections -------------------------------------------------------------------

    fn accept(&mut self) {
        while self.accepting {
            if self.conns.len() >= self.config.max_connections {
                self.accepting = false;
                break;
            }
            match self.listener.accept() {
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

    fn add_conn(&mut self, mut stream: TcpStream, peer: IpAddr, metrics_only: bool) {
        let _ = stream.set_nodelay(true);
        self.metrics.connections_accepted += 1;
        let trusted_proxy = self.config.trust_proxy.contains(&peer);
        // A direct client counts against its own address now; a proxied one once its first
        // request names it.
        let counted_ip =
            (self.config.max_connections_per_ip > 0 && !trusted_proxy && !metrics_only)
                .then_some(peer);
        let refused = counted_ip.is_some_and(|ip| self.count_ip(ip));
        let generation = self.bump_gen();
        let at = self.now() + ms(self.config.header_timeout);
        let client = self.client_of(peer, None);
        let entry = self.conns.vacant_entry();
        let key = ConnKey {
            idx: entry.key(),
            generation,
        };
        if self
            .poll
            .registry()
            .register(
                &mut stream,
                Token(key.idx),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            return;
        }
        let timer = self.timers.insert(at, Timeout::Conn(key));
        entry.insert(Conn {
            stream,
            generation,
            state: ConnState::Http(HttpConn::default()),
            timer: Some(timer),
            dirty: false,
            peer_closed: false,
            peer,
            client,
            counted_ip,
            refused,
            metrics_only,
        });
    }

    /// Counts one more connection from `ip`; true when that is over the per-address limit.
    fn count_ip(&mut self, ip: IpAddr) -> bool {
        let n = self.per_ip.entry(ip).or_insert(0);
        *n += 1;
        *n as usize > self.config.max_connections_per_ip
    }

    /// The client's address, when it can be trusted for per-address limits: a trusted proxy's
    /// forwarded address, a direct peer's own — but not a loopback peer without `trust_proxy`
    /// (most likely a reverse proxy on the same host, whose clients would all share it).
    fn client_of(&self, peer: IpAddr, req: Option<&Request<'_>>) -> Option<IpAddr> {
        let trusted = &self.config.trust_proxy;
        if trusted.contains(&peer) {
            return req.and_then(|r| http::request::forwarded_client(&r.headers, trusted));
        }
        (!peer.is_loopback() || !trusted.is_empty()).then_some(peer)
    }

    fn bump_gen(&mut self) -> u32 {
        self.next_gen = self.next_gen.wrapping_add(1);
        self.next_gen
    }

    fn conn_mut(&mut self, key: ConnKey) -> Option<&mut Conn> {
        self.conns
            .get_mut(key.idx)
            .filter(|c| c.generation == key.generation)
    }

    fn session_mut(&mut self, id: SessionId) -> Option<&mut Session> {
        session_in(&mut self.sessions, id)
    }

    fn mark_dirty(&mut self, key: ConnKey) {
        if let Some(conn) = self.conn_mut(key)
            && !conn.dirty
        {
            conn.dirty = true;
            self.dirty.push(key);
        }
    }

    fn set_conn_timer(&mut self, key: ConnKey, after: Option<Duration>) {
        let at = after.map(|d| self.now() + ms(d));
        let Some(conn) = self
            .conns
            .get_mut(key.idx)
            .filter(|c| c.generation == key.generation)
        else {
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
            // A parked poll has no timer; an idle or slow HTTP connection, or a lingering one, ends.
            ConnState::Http(h) => {
                if !h.rbuf.is_empty() {
                    self.metrics.reject(Rejected::HeaderTimeout);
                }
                self.close_conn(key)
            }
            ConnState::Closing => self.close_conn(key),
            ConnState::Ws(_) => {}
        }
    }

    /// Removes a connection at once and detaches it from its session.
    fn close_conn(&mut self, key: ConnKey) {
        if self.conn_mut(key).is_none() {
            return;
        }
        let mut conn = self.conns.remove(key.idx);
        let _ = self.poll.registry().deregister(&mut conn.stream);
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
        match conn.state {
            ConnState::Http(HttpConn {
                parked: Some(p), ..
            }) => {
                // A client that drops its pending poll is gone (as in the reference server).
                if let Some(Session {
                    transport: Transport::Polling { parked, .. },
                    ..
                }) = self.session_mut(p.session)
                {
                    *parked = None;
                    self.close_session(p.session, CloseReason::TransportClose);
                }
            }
            ConnState::Ws(ws) => {
                let id = ws.session;
                if let Some(s) = self.session_mut(id) {
                    match (&s.transport, s.upgrade) {
                        (Transport::WebSocket(c), _) if *c == key => {
                            self.close_session(id, CloseReason::TransportClose)
                        }
                        (_, Upgrade::Probing(c) | Upgrade::Probed(c)) if c == key => {
                            s.upgrade = Upgrade::None;
                            if let Some(t) = s.upgrade_timer.take() {
                                self.timers.cancel(t);
                            }
                            self.metrics.upgrades_failed += 1;
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        if !self.accepting && self.conns.len() < self.config.max_connections * 9 / 10 {
            self.accepting = true;
            self.accept();
        }
    }

    /// Shuts the write side after queued output and lingers to drain the peer.
    fn begin_closing(&mut self, key: ConnKey) {
        let Some(conn) = self.conn_mut(key) else {
            return;
        };
        let _ = conn.stream.shutdown(Shutdown::Write);
        conn.state = ConnState::Closing;
        self.set_conn_timer(key, Some(LINGER));
    }

    fn on_readable(&mut self, key: ConnKey) {
        let Some(conn) = self.conn_mut(key) else {
            return;
        };
        match conn.state {
            ConnState::Http(_) => self.on_http_readable(key),
            ConnState::Ws(_) => self.on_ws_readable(key),
            ConnState::Closing => {
                let mut scratch = [0u8; 1024];
                loop {
                    match conn.stream.read(&mut scratch) {
                        Ok(0) => break self.close_conn(key),
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => break self.close_conn(key),
                    }
                }
            }
        }
    }

    /// Writes queued output; closes or lingers when the connection asked for it.
    fn flush(&mut self, key: ConnKey) {
        let Some(conn) = self
            .conns
            .get_mut(key.idx)
            .filter(|c| c.generation == key.generation)
        else {
            return;
        };
        let mut stream = Counted {
            stream: &mut conn.stream,
            bytes: &mut self.metrics.bytes_out,
        };
        let outcome = match &mut conn.state {
            ConnState::Http(h) => match write_all_nonblocking(&mut stream, &mut h.wbuf) {
                Ok(true) if h.close_after_write => Some(true),
                Ok(_) => None,
                Err(_) => Some(false),
            },
            ConnState::Ws(w) => match write_all_nonblocking(&mut stream, &mut w.head) {
                Ok(false) => None,
                Err(_) => Some(false),
                Ok(true) => match w.ctx.flush(&mut stream) {
                    Ok(()) if w.close_after_write => Some(true),
                    Ok(()) => None,
                    Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => None,
                    Err(tungstenite::Error::ConnectionClosed) => Some(true),
                    Err(_) => Some(false),
                },
            },
            ConnState::Closing => None,
        };
        match outcome {
            Some(true) => self.begin_closing(key),
            Some(false) => self.close_conn(key),
            None => {}
        }
    }

    // ---- HTTP ----------------------------------------------------------------------------

    fn on_http_readable(&mut self, key: ConnKey) {
        let Some(conn) = self.conn_mut(key) else {
            return;
        };
        let read_to_eof = conn.peer_closed;
        let ConnState::Http(h) = &mut conn.state else {
            return;
        };
        // Bytes arriving on an idle keep-alive connection start a request: from now on it has
        // `header_timeout`, not the (longer) keep-alive timeout, to complete it.
        let was_idle = h.keep_alive_idle && h.rbuf.is_empty();
        let mut budget = READ_BUDGET;
        let mut eof = false;
        let mut read = 0u64;
        let mut chunk = [0u8; 4096];
        while budget > 0 {
            match conn.stream.read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    h.rbuf.extend_from_slice(&chunk[..n]);
                    read += n as u64;
                    budget = budget.saturating_sub(n);
                    if n < chunk.len() && !read_to_eof {
                        break; // drained: see `UntilDrained`
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        if was_idle && read > 0 {
            h.keep_alive_idle = false;
        }
        self.metrics.bytes_in += read;
        if was_idle && read > 0 {
            self.set_conn_timer(key, Some(self.config.header_timeout));
        }
        if budget == 0 {
            self.deferred.push(key);
        }
        self.process_http(key);
        if eof {
            self.on_http_eof(key);
        }
    }

    /// The peer closed its side. Answers already produced are still written (a client may
    /// half-close after its request); a parked poll or an idle connection ends at once.
    fn on_http_eof(&mut self, key: ConnKey) {
        let Some(conn) = self.conn_mut(key) else {
            return;
        };
        match &mut conn.state {
            ConnState::Http(h) if h.parked.is_none() && !h.wbuf.is_empty() => {
                h.close_after_write = true;
                h.rbuf.clear();
                self.mark_dirty(key);
            }
            _ => self.close_conn(key),
        }
    }

    /// Handles every complete request in the read buffer, in order, until one parks or closes.
    fn process_http(&mut self, key: ConnKey) {
        loop {
            let Some(conn) = self.conn_mut(key) else {
                return;
            };
            let ConnState::Http(h) = &mut conn.state else {
                return;
            };
            if h.parked.is_some() || h.close_after_write || h.rbuf.is_empty() {
                return;
            }
            let rbuf = std::mem::take(&mut h.rbuf);
            let (flow, consumed) = match http::request::parse(&rbuf, self.config.max_payload) {
                Ok(Parsed::Partial) => {
                    self.put_back_rbuf(key, rbuf, 0);
                    return;
                }
                Ok(Parsed::Complete(req, used)) => {
                    (self.on_request(key, &req, &rbuf[used..]), used)
                }
                Err(e) => {
                    self.respond_http_error(key, e);
                    (Flow::Close, rbuf.len())
                }
            };
            match flow {
                Flow::Upgraded => return,
                Flow::Close => {
                    if let Some(ConnState::Http(h)) = self.conn_mut(key).map(|c| &mut c.state) {
                        h.close_after_write = true;
                    }
                    self.mark_dirty(key);
                    return;
                }
                Flow::Parked | Flow::Continue => {
                    self.put_back_rbuf(key, rbuf, consumed);
                    self.mark_dirty(key);
                    if matches!(flow, Flow::Parked) {
                        return;
                    }
                    let keep_alive_idle = self.http_rbuf_empty(key);
                    if let Some(ConnState::Http(h)) = self.conn_mut(key).map(|c| &mut c.state) {
                        h.keep_alive_idle = keep_alive_idle;
                    }
                    let idle = if keep_alive_idle {
                        self.config.keep_alive_timeout
                    } else {
                        self.config.header_timeout
                    };
                    self.set_conn_timer(key, Some(idle));
                }
            }
        }
    }

    fn http_rbuf_empty(&mut self, key: ConnKey) -> bool {
        matches!(self.conn_mut(key).map(|c| &c.state), Some(ConnState::Http(h)) if h.rbuf.is_empty())
    }

    fn put_back_rbuf(&mut self, key: ConnKey, mut rbuf: Vec<u8>, consumed: usize) {
        if let Some(ConnState::Http(h)) = self.conn_mut(key).map(|c| &mut c.state) {
            rbuf.drain(..consumed);
            if rbuf.is_empty() && rbuf.capacity() > 16 * 1024 {
                rbuf = Vec::new(); // do not keep a large body's buffer on an idle connection
            }
            h.rbuf = rbuf;
        }
    }

    fn respond(&mut self, key: ConnKey, response: Response<'_>) {
        if let Some(ConnState::Http(h)) = self.conn_mut(key).map(|c| &mut c.state) {
            response.write_to(&mut h.wbuf);
            self.mark_dirty(key);
        }
    }

    fn respond_http_error(&mut self, key: ConnKey, e: HttpError) {
        self.metrics.reject(match e {
            HttpError::HeadersTooLarge => Rejected::HeadersTooLarge,
            HttpError::PayloadTooLarge => Rejected::PayloadTooLarge,
            _ => Rejected::Malformed,
        });
        let body = e.to_string();
        let mut r = Response::text(e.status(), &body);
        r.close = true;
        self.respond(key, r);
    }

    /// 503 with `Retry-After`, closing the connection.
    fn respond_unavailable(&mut self, key: ConnKey, cors: Cors<'_>) {
        let mut r = Response::text(503, "Service Unavailable").cors(cors);
        r.extra = "Retry-After: 1\r\n";
        r.close = true;
        self.respond(key, r);
    }

    fn render_metrics(&mut self) -> String {
        let mut g = Gauges::default();
        for (_, c) in &self.conns {
            match c.state {
                ConnState::Ws(_) => g.websocket_connections += 1,
                _ => g.http_connections += 1,
            }
        }
        for (_, s) in &self.sessions {
            match s.transport {
                Transport::WebSocket(_) => g.websocket_sessions += 1,
                Transport::Polling { .. } => g.polling_sessions += 1,
            }
        }
        let mut out = String::with_capacity(4096);
        self.metrics.render(&mut out, &g);
        self.handler.metrics(&mut out);
        out
    }

    fn respond_engine_error(&mut self, key: ConnKey, cors: Cors<'_>, e: EngineError) -> Flow {
        let (status, body) = e.http();
        self.respond(
            key,
            Response::new(status, "application/json", body.as_bytes()).cors(cors),
        );
        Flow::Continue
    }

    fn on_request(&mut self, key: ConnKey, req: &Request<'_>, rest: &[u8]) -> Flow {
        let Some(conn) = self.conn_mut(key) else {
            return Flow::Close;
        };
        let (peer, counted, metrics_only) =
            (conn.peer, conn.counted_ip.is_some(), conn.metrics_only);
        if self.config.trust_proxy.contains(&peer) {
            let client = self.client_of(peer, Some(req));
            let limit = self.config.max_connections_per_ip > 0;
            let refused = match client {
                Some(ip) if limit && !counted => self.count_ip(ip),
                _ => false,
            };
            if let Some(conn) = self.conn_mut(key) {
                conn.client = client;
                if limit
                    && !counted
                    && let Some(ip) = client
                {
                    conn.counted_ip = Some(ip);
                    conn.refused = refused;
                }
            }
        }
        if let Some(conn) = self.conn_mut(key).filter(|c| c.refused) {
            let client = conn.counted_ip.unwrap_or(peer);
            self.metrics.reject(Rejected::PerIpLimit);
            log::warn(
                "connection limit per address reached",
                &[("client", &client)],
            );
            self.respond_unavailable(key, Cors::none());
            return Flow::Close;
        }
        let serve_metrics =
            self.config.metrics && (metrics_only || self.config.metrics_port.is_none());
        let flow = if req.path == "/metrics" && serve_metrics {
            if req.method == Method::Get {
                let body = self.render_metrics();
                let r = Response::new(200, "text/plain; version=0.0.4", body.as_bytes());
                self.respond(key, r);
            } else {
                let mut r = Response::text(405, "Method Not Allowed");
                r.extra = "Allow: GET\r\n";
                self.respond(key, r);
            }
            Flow::Continue
        } else if metrics_only && req.path != "/health" {
            self.respond(key, Response::text(404, "Not Found"));
            Flow::Continue
        } else if req.path == "/health" {
            match req.method {
                Method::Get => {
                    let body = http::health_body();
                    self.respond(key, Response::new(200, "application/json", body.as_bytes()));
                    Flow::Continue
                }
                _ => {
                    let mut r = Response::text(405, "Method Not Allowed");
                    r.extra = "Allow: GET\r\n";
                    self.respond(key, r);
                    Flow::Continue
                }
            }
        } else if req.path == self.config.path || req.path == self.config.path.trim_end_matches('/')
        {
            self.on_engine_request(key, req, rest)
        } else {
            self.respond(key, Response::text(404, "Not Found"));
            Flow::Continue
        };
        if !req.keep_alive && matches!(flow, Flow::Continue) {
            Flow::Close
        } else {
            flow
        }
    }

    fn on_engine_request(&mut self, key: ConnKey, req: &Request<'_>, rest: &[u8]) -> Flow {
        let origins = &self.config.cors_origins;
        if req.headers.origin.is_some_and(|o| !origins.allows(o)) {
            return self.respond_engine_error(key, Cors::none(), EngineError::Forbidden);
        }
        let cors = Cors::new(origins, req.headers.origin);
        if req.method == Method::Options {
            if let Some(ConnState::Http(h)) = self.conn_mut(key).map(|c| &mut c.state) {
                http::write_preflight(&mut h.wbuf, cors, req.headers.acr_headers);
            }
            return Flow::Continue;
        }
        let transport = match req.query_param("transport") {
            Some("polling") => TransportKind::Polling,
            Some("websocket") => TransportKind::WebSocket,
            _ => return self.respond_engine_error(key, cors, EngineError::TransportUnknown),
        };
        if req.query_param("EIO") != Some("4") {
            return self.respond_engine_error(key, cors, EngineError::UnsupportedProtocolVersion);
        }
        let Some(sid) = req.query_param("sid") else {
            // A handshake.
            if req.method != Method::Get {
                return self.respond_engine_error(key, cors, EngineError::BadHandshakeMethod);
            }
            if !self.accepting {
                // At `max_connections`: no new sessions until below 90 %.
                self.metrics.reject(Rejected::OverCapacity);
                self.respond_unavailable(key, cors);
                return Flow::Close;
            }
            return match transport {
                TransportKind::Polling => {
                    let client = self.conn_mut(key).and_then(|c| c.client);
                    let id = self.open_session(
                        Transport::Polling {
                            parked: None,
                            queue: Vec::new(),
                            queued_bytes: 0,
                        },
                        client,
                    );
                    let open = self.open_packet(id, TransportKind::Polling);
                    self.respond(key, Response::text(200, &open).cors(cors));
                    self.dispatch_open(id, TransportKind::Polling);
                    Flow::Continue
                }
                TransportKind::WebSocket => match ws::accept_key(req) {
                    Some(accept) => self.upgrade_to_ws(key, &accept, rest, None),
                    None => self.respond_engine_error(key, cors, EngineError::BadRequest),
                },
            };
        };
        let now = self.now();
        let Some(id) = Sid::parse(sid).and_then(|s| self.sids.get(&s).copied()) else {
            return self.respond_engine_error(key, cors, EngineError::UnknownSid);
        };
        // The heartbeat deadline is checked here too, not only by the timer: a request that
        // arrives after it finds the session closed.
        if self
            .session_mut(id)
            .and_then(|s| s.pong_deadline)
            .is_some_and(|d| d <= now)
        {
            self.close_session(id, CloseReason::PingTimeout);
            return self.respond_engine_error(key, cors, EngineError::UnknownSid);
        }
        let Some(session) = self.session_mut(id) else {
            return self.respond_engine_error(key, cors, EngineError::UnknownSid);
        };
        let polling = matches!(session.transport, Transport::Polling { .. });
        match transport {
            TransportKind::WebSocket => {
                let accept = ws::accept_key(req);
                match accept {
                    Some(accept)
                        if req.method == Method::Get
                            && polling
                            && session.upgrade == Upgrade::None =>
                    {
                        self.upgrade_to_ws(key, &accept, rest, Some(id))
                    }
                    // A second WebSocket for a session that already has one is accepted and
                    // closed at once, as the reference server does (clients expect a close).
                    Some(accept) if req.method == Method::Get => {
                        self.accept_and_close_ws(key, &accept)
                    }
                    _ => self.respond_engine_error(key, cors, EngineError::BadRequest),
                }
            }
            TransportKind::Polling if !polling => {
                self.respond_engine_error(key, cors, EngineError::BadRequest)
            }
            TransportKind::Polling => match req.method {
                Method::Get => self.on_poll_get(key, id, req, cors),
                Method::Post => self.on_poll_post(key, id, req, cors),
                _ => self.respond_engine_error(key, cors, EngineError::BadRequest),
            },
        }
    }

    fn open_packet(&mut self, id: SessionId, transport: TransportKind) -> String {
        let sid = self
            .session_mut(id)
            .map(|s| s.sid)
            .expect("the session was just opened");
        let upgrades = if transport == TransportKind::Polling {
            "[\"websocket\"]"
        } else {
            "[]"
        };
        format!(
            "0{{\"sid\":\"{sid}\",\"upgrades\":{upgrades},\"pingInterval\":{},\"pingTimeout\":{},\"maxPayload\":{}}}",
            ms(self.config.ping_interval),
            ms(self.config.ping_timeout),
            self.config.max_payload
        )
    }

    fn on_poll_get(
        &mut self,
        key: ConnKey,
        id: SessionId,
        req: &Request<'_>,
        cors: Cors<'_>,
    ) -> Flow {
        let Some(session) = self.session_mut(id) else {
            return Flow::Continue;
        };
        let Transport::Polling {
            parked,
            queue,
            queued_bytes,
        } = &mut session.transport
        else {
            return Flow::Continue;
        };
        if parked.is_some() {
            // Two concurrent GETs: refuse this one and close the session (the first gets `1`).
            self.respond_engine_error(key, cors, EngineError::BadRequest);
            self.close_session(id, CloseReason::TransportError);
            return Flow::Continue;
        }
        if matches!(session.upgrade, Upgrade::Probed(_)) {
            self.respond(key, Response::text(200, "6").cors(cors));
            return Flow::Continue;
        }
        if !queue.is_empty() {
            let body = encode_payload(queue);
            *queued_bytes = 0;
            self.respond(
                key,
                Response::new(200, "text/plain; charset=UTF-8", &body).cors(cors),
            );
            return Flow::Continue;
        }
        *parked = Some(key);
        let origin = cors_origin(cors);
        if let Some(ConnState::Http(h)) = self.conn_mut(key).map(|c| &mut c.state) {
            h.parked = Some(Parked {
                session: id,
                origin,
                keep_alive: req.keep_alive,
            });
        }
        self.set_conn_timer(key, None);
        Flow::Parked
    }

    fn on_poll_post(
        &mut self,
        key: ConnKey,
        id: SessionId,
        req: &Request<'_>,
        cors: Cors<'_>,
    ) -> Flow {
        let packets = match packet::decode_payload(req.body) {
            Ok(p) => p,
            Err(e) => {
                self.close_session(id, CloseReason::ParseError);
                return self.respond_engine_error(key, cors, e);
            }
        };
        for p in packets {
            match p {
                Ok(p) => {
                    if !self.on_packet(id, p) {
                        break;
                    }
                }
                Err(e) => {
                    self.close_session(id, CloseReason::ParseError);
                    return self.respond_engine_error(key, cors, e);
                }
            }
        }
        self.respond(key, Response::new(200, "text/html", b"ok").cors(cors));
        Flow::Continue
    }

    /// Handles one packet from a session's active transport; false once the session is closed.
    fn on_packet(&mut self, id: SessionId, p: Packet<'_>) -> bool {
        match p {
            Packet::Message(text) => self.dispatch(Event::Message { session: id, text }),
            Packet::Binary(data) => self.dispatch(Event::Binary {
                session: id,
                data: &data,
            }),
            Packet::Pong(_) => self.on_pong(id),
            Packet::Close => {
                self.close_session(id, CloseReason::ClientClose);
                return false;
            }
            Packet::Ping(_) | Packet::Upgrade | Packet::Noop => {}
        }
        self.session_mut(id).is_some()
    }

    // ---- WebSocket ---------------------------------------------------------------------

    fn upgrade_to_ws(
        &mut self,
        key: ConnKey,
        accept: &str,
        rest: &[u8],
        probe_of: Option<SessionId>,
    ) -> Flow {
        let ctx = ws::context(&self.config, rest.to_vec());
        let session = match probe_of {
            Some(id) => {
                let at = self.now() + ms(self.config.upgrade_timeout);
                let timer = self.timers.insert(at, Timeout::Upgrade(id));
                if let Some(s) = self.session_mut(id) {
                    s.upgrade = Upgrade::Probing(key);
                    s.upgrade_timer = Some(timer);
                }
                id
            }
            None => {
                let client = self.conn_mut(key).and_then(|c| c.client);
                self.open_session(Transport::WebSocket(key), client)
            }
        };
        self.set_conn_timer(key, None);
        if let Some(conn) = self.conn_mut(key) {
            conn.state = ConnState::Ws(WsConn {
                ctx,
                head: ws::switching_protocols(accept),
                session,
                close_after_write: false,
            });
        }
        self.mark_dirty(key);
        if probe_of.is_none() {
            let open = self.open_packet(session, TransportKind::WebSocket);
            self.ws_send(key, Message::text(open));
            self.dispatch_open(session, TransportKind::WebSocket);
        }
        // Frames that arrived with the upgrade request are already buffered: read them now.
        self.on_ws_readable(key);
        Flow::Upgraded
    }

    /// Completes the handshake, then sends a close frame (no status) and closes.
    fn accept_and_close_ws(&mut self, key: ConnKey, accept: &str) -> Flow {
        if let Some(ConnState::Http(h)) = self.conn_mut(key).map(|c| &mut c.state) {
            h.wbuf.extend_from_slice(&ws::switching_protocols(accept));
            h.wbuf.extend_from_slice(&ws::CLOSE_FRAME);
            self.mark_dirty(key);
        }
        Flow::Close
    }

    fn on_ws_readable(&mut self, key: ConnKey) {
        let mut drained = false;
        let read_to_eof = self.conn_mut(key).is_some_and(|c| c.peer_closed);
        for _ in 0..MESSAGE_BUDGET {
            let Some(conn) = self
                .conns
                .get_mut(key.idx)
                .filter(|c| c.generation == key.generation)
            else {
                return;
            };
            let ConnState::Ws(w) = &mut conn.state else {
                return;
            };
            let session = w.session;
            let mut stream = UntilDrained {
                stream: &mut conn.stream,
                drained: &mut drained,
                read_to_eof,
                bytes: &mut self.metrics.bytes_in,
            };
            match w.ctx.read(&mut stream) {
                Ok(Message::Text(text)) => self.on_ws_text(key, session, text.as_str()),
                Ok(Message::Binary(data)) => {
                    if self.is_active_ws(key, session) {
                        self.dispatch(Event::Binary {
                            session,
                            data: &data,
                        });
                    }
                }
                Ok(Message::Close(_)) => {
                    // tungstenite queued the close reply; flush it, then the read side ends.
                    self.mark_dirty(key);
                }
                Ok(_) => self.mark_dirty(key), // ping: tungstenite queued the pong
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(tungstenite::Error::Capacity(_)) => {
                    self.metrics.reject(Rejected::MessageTooBig);
                    return self.ws_fail(key, CloseCode::Size, "message too big");
                }
                Err(tungstenite::Error::Protocol(_)) => {
                    return self.ws_fail(key, CloseCode::Protocol, "protocol error");
                }
                Err(_) => return self.close_conn(key),
            }
        }
        self.deferred.push(key);
    }

    fn is_active_ws(&mut self, key: ConnKey, id: SessionId) -> bool {
        matches!(self.session_mut(id), Some(Session { transport: Transport::WebSocket(c), .. }) if *c == key)
    }

    fn on_ws_text(&mut self, key: ConnKey, id: SessionId, text: &str) {
        if self.is_active_ws(key, id) {
            match packet::decode_text(text) {
                Ok(p) => {
                    self.on_packet(id, p);
                }
                Err(_) => self.close_session(id, CloseReason::ParseError),
            }
            return;
        }
        let Some(session) = self.session_mut(id) else {
            return self.ws_fail(key, CloseCode::Normal, "");
        };
        match (session.upgrade, packet::decode_text(text)) {
            (Upgrade::Probing(c), Ok(Packet::Ping("probe"))) if c == key => {
                session.upgrade = Upgrade::Probed(key);
                self.ws_send(key, Message::text("3probe"));
                self.release_parked_poll(id, "6");
            }
            (Upgrade::Probed(c), Ok(Packet::Upgrade)) if c == key => self.complete_upgrade(key, id),
            (Upgrade::Probing(c) | Upgrade::Probed(c), Ok(Packet::Noop)) if c == key => {}
            _ => self.ws_fail(key, CloseCode::Policy, "bad upgrade"),
        }
    }

    /// The client sent `5`: the session moves to this WebSocket with everything still queued.
    fn complete_upgrade(&mut self, key: ConnKey, id: SessionId) {
        self.metrics.upgrades_ok += 1;
        self.release_parked_poll(id, "6");
        let Some(session) = self.session_mut(id) else {
            return;
        };
        session.upgrade = Upgrade::None;
        let timer = session.upgrade_timer.take();
        let old = std::mem::replace(&mut session.transport, Transport::WebSocket(key));
        if let Some(t) = timer {
            self.timers.cancel(t);
        }
        if let Transport::Polling { queue, .. } = old {
            for p in queue {
                self.ws_send(key, outgoing_to_ws(p));
            }
        }
    }

    fn ws_send(&mut self, key: ConnKey, msg: Message) {
        let Some(conn) = self.conn_mut(key) else {
            return;
        };
        let ConnState::Ws(w) = &mut conn.state else {
            return;
        };
        match w.ctx.write(&mut conn.stream, msg) {
            Ok(()) => self.mark_dirty(key),
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.mark_dirty(key)
            }
            Err(tungstenite::Error::WriteBufferFull(_)) => {
                // A reader that stopped reading: drop it rather than buffer without bound.
                let id = w.session;
                self.metrics.reject(Rejected::SlowConsumer);
                self.close_conn(key);
                self.close_session(id, CloseReason::TransportError);
            }
            Err(_) => self.close_conn(key),
        }
    }

    /// Closes a WebSocket with a close frame (and its session, if it is the active transport).
    fn ws_fail(&mut self, key: ConnKey, code: CloseCode, reason: &'static str) {
        let Some(conn) = self.conn_mut(key) else {
            return;
        };
        let ConnState::Ws(w) = &mut conn.state else {
            return;
        };
        let id = w.session;
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = w.ctx.close(&mut conn.stream, Some(frame));
        w.close_after_write = true;
        self.mark_dirty(key);
        if self.is_active_ws(key, id) {
            self.close_session(id, CloseReason::TransportError);
        } else if let Some(s) = self.session_mut(id)
            && matches!(s.upgrade, Upgrade::Probing(c) | Upgrade::Probed(c) if c == key)
        {
            s.upgrade = Upgrade::None;
            if let Some(t) = s.upgrade_timer.take() {
                self.timers.cancel(t);
            }
        }
    }

    // ---- sessions ----------------------------------------------------------------------

    fn open_session(&mut self, transport: Transport, client: Option<IpAddr>) -> SessionId {
        self.metrics.sessions_opened += 1;
        let generation = self.bump_gen();
        let sid = loop {
            let sid = Sid::random(&mut self.rng);
            if !self.sids.contains_key(&sid) {
                break sid;
            }
        };
        let next_ping = self.now() + ms(self.config.ping_interval);
        let idx = self.sessions.insert(Session {
            sid,
            generation,
            transport,
            upgrade: Upgrade::None,
            heartbeat: None,
            next_ping,
            pong_deadline: None,
            upgrade_timer: None,
            poll_ready: false,
            client,
        });
        let id = SessionId {
            idx: idx as u32,
            generation,
        };
        self.sids.insert(sid, id);
        let timer = self.timers.insert(next_ping, Timeout::Ping(id));
        if let Some(s) = self.session_mut(id) {
            s.heartbeat = Some(timer);
        }
        id
    }

    fn dispatch_open(&mut self, id: SessionId, transport: TransportKind) {
        if let Some((sid, client)) = self.session_mut(id).map(|s| (s.sid, s.client)) {
            self.dispatch(Event::Open {
                session: id,
                sid,
                transport,
                client,
            });
        }
    }

    fn on_ping_due(&mut self, id: SessionId) {
        let interval = ms(self.config.ping_interval);
        let timeout = ms(self.config.ping_timeout);
        let now = self.now();
        let Some(s) = session_in(&mut self.sessions, id) else {
            return;
        };
        if s.upgrade != Upgrade::None {
            // The heartbeat pauses while an upgrade is under way.
            s.next_ping = now + interval;
            let at = s.next_ping;
            s.heartbeat = Some(self.timers.insert(at, Timeout::Ping(id)));
            return;
        }
        let deadline = s.next_ping + timeout;
        s.pong_deadline = Some(deadline);
        s.heartbeat = Some(self.timers.insert(deadline, Timeout::Pong(id)));
        self.send(id, Outgoing::control(packet::PING));
    }

    fn on_pong(&mut self, id: SessionId) {
        let next = self.now() + ms(self.config.ping_interval);
        let Some(s) = session_in(&mut self.sessions, id) else {
            return;
        };
        if s.pong_deadline.take().is_none() {
            return;
        }
        if let Some(t) = s.heartbeat.take() {
            self.timers.cancel(t);
        }
        s.next_ping = next;
        s.heartbeat = Some(self.timers.insert(next, Timeout::Ping(id)));
    }

    /// Queues a packet on the session's transport.
    fn send(&mut self, id: SessionId, p: Outgoing) {
        let max = self.config.max_poll_buffer;
        let Some(s) = self.session_mut(id) else {
            return;
        };
        match &mut s.transport {
            Transport::WebSocket(key) => {
                let key = *key;
                self.ws_send(key, outgoing_to_ws(p));
            }
            Transport::Polling {
                parked,
                queue,
                queued_bytes,
            } => {
                *queued_bytes += p.len() + 1;
                queue.push(p);
                if *queued_bytes > max {
                    self.metrics.reject(Rejected::SlowConsumer);
                    self.close_session(id, CloseReason::TransportError);
                } else if parked.is_some() && !s.poll_ready {
                    s.poll_ready = true;
                    self.poll_ready.push(id);
                }
            }
        }
    }

    fn answer_ready_poll(&mut self, id: SessionId) {
        let Some(s) = self.session_mut(id) else {
            return;
        };
        s.poll_ready = false;
        let Transport::Polling {
            parked,
            queue,
            queued_bytes,
        } = &mut s.transport
        else {
            return;
        };
        if queue.is_empty() || parked.is_none() || matches!(s.upgrade, Upgrade::Probed(_)) {
            return;
        }
        let body = encode_payload(queue);
        *queued_bytes = 0;
        self.answer_parked_with(id, body);
    }

    /// Answers the session's parked GET (if any) with `body` (e.g. `6` or `1`).
    fn release_parked_poll(&mut self, id: SessionId, body: &str) {
        self.answer_parked_with(id, body.as_bytes().to_vec());
    }

    fn answer_parked_with(&mut self, id: SessionId, body: Vec<u8>) {
        let Some(s) = self.session_mut(id) else {
            return;
        };
        let Transport::Polling { parked, .. } = &mut s.transport else {
            return;
        };
        let Some(key) = parked.take() else { return };
        let Some(conn) = self
            .conns
            .get_mut(key.idx)
            .filter(|c| c.generation == key.generation)
        else {
            return;
        };
        let ConnState::Http(h) = &mut conn.state else {
            return;
        };
        let Some(p) = h.parked.take() else { return };
        let cors = Cors::new(&self.config.cors_origins, p.origin.as_deref());
        Response::new(200, "text/plain; charset=UTF-8", &body)
            .cors(cors)
            .write_to(&mut h.wbuf);
        let idle = if h.rbuf.is_empty() {
            self.config.keep_alive_timeout
        } else {
            self.config.header_timeout
        };
        h.close_after_write |= !p.keep_alive;
        self.mark_dirty(key);
        if p.keep_alive {
            self.set_conn_timer(key, Some(idle));
            // Pipelined requests behind the poll can go on now.
            self.process_http(key);
        }
    }

    /// Ends a session: answers its parked poll, closes its WebSockets, tells the handler.
    fn close_session(&mut self, id: SessionId, reason: CloseReason) {
        if self.session_mut(id).is_none() {
            return;
        }
        // The client's own close is answered with a noop; a server-side close with a close packet.
        let last = if reason == CloseReason::ClientClose {
            "6"
        } else {
            "1"
        };
        self.release_parked_poll(id, last);
        self.metrics.session_closed(reason);
        if reason == CloseReason::ParseError {
            self.metrics.reject(Rejected::Malformed);
        }
        let s = self.sessions.remove(id.idx as usize);
        self.sids.remove(&s.sid);
        for t in [s.heartbeat, s.upgrade_timer].into_iter().flatten() {
            self.timers.cancel(t);
        }
        if let Upgrade::Probing(c) | Upgrade::Probed(c) = s.upgrade {
            self.ws_fail(c, CloseCode::Away, "");
        }
        if let Transport::WebSocket(key) = s.transport {
            let tell_client = matches!(
                reason,
                CloseReason::ServerClose | CloseReason::ServerShutdown
            );
            if tell_client {
                self.ws_send(key, Message::text("1"));
            }
            let code = match reason {
                CloseReason::ParseError => CloseCode::Protocol,
                CloseReason::ServerShutdown => CloseCode::Away,
                _ => CloseCode::Normal,
            };
            self.ws_fail(key, code, "");
        }
        self.dispatch(Event::Close {
            session: id,
            reason,
        });
    }

    // ---- the handler -------------------------------------------------------------------

    /// Hands an event to the handler and carries out what it asked for.
    fn dispatch(&mut self, event: Event<'_, H::Timer>) {
        let now = self.now();
        let mut io = Io {
            now,
            commands: &mut self.commands,
            timers: &mut self.timers,
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
                    Command::Close(id) => self.close_session(id, CloseReason::ServerClose),
                }
            }
            if self.spare_commands.capacity() < batch.capacity() {
                self.spare_commands = batch;
            }
        }
    }
}

fn session_in(sessions: &mut Slab<Session>, id: SessionId) -> Option<&mut Session> {
    sessions
        .get_mut(id.idx as usize)
        .filter(|s| s.generation == id.generation)
}

fn ms(d: Duration) -> Millis {
    d.as_millis() as Millis
}

fn cors_origin(cors: Cors<'_>) -> Option<Box<str>> {
    cors.origin().map(Box::from)
}

fn encode_payload(queue: &mut Vec<Outgoing>) -> Vec<u8> {
    let mut body = Vec::with_capacity(queue.iter().map(|p| p.len() + 1).sum());
    for p in queue.drain(..) {
        p.append_to_payload(&mut body);
    }
    body
}

fn outgoing_to_ws(p: Outgoing) -> Message {
    match p {
        Outgoing::Text(t) => Message::Text(t),
        Outgoing::Binary(b) => Message::Binary(b),
    }
}

/// A socket that reports `WouldBlock` after a short read instead of asking the kernel again.
///
/// A read that returns fewer bytes than asked for has emptied the receive queue; data that
/// arrives later raises a new edge-triggered readiness event. Skipping the read that would
/// only say `EAGAIN` saves a system call per readable event.
///
/// Not when the peer has half-closed: its FIN raised the one event there will be, so reads go
/// on until they return 0.
struct UntilDrained<'a> {
    stream: &'a mut TcpStream,
    drained: &'a mut bool,
    read_to_eof: bool,
    bytes: &'a mut u64,
}

impl Read for UntilDrained<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if *self.drained {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.stream.read(buf)?;
        *self.bytes += n as u64;
        if n < buf.len() && n > 0 && !self.read_to_eof {
            *self.drained = true;
        }
        Ok(n)
    }
}

impl Write for UntilDrained<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// Writes as much of `buf` as the socket takes. `Ok(true)` when all of it left.
/// A stream that counts the bytes written through it.
struct Counted<'a> {
    stream: &'a mut TcpStream,
    bytes: &'a mut u64,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.stream.write(buf)?;
        *self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

fn write_all_nonblocking(stream: &mut impl Write, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut written = 0;
    let result = loop {
        if written == buf.len() {
            break Ok(true);
        }
        match stream.write(&buf[written..]) {
            Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    buf.drain(..written);
    if buf.is_empty() && buf.capacity() > 64 * 1024 {
        *buf = Vec::new();
    }
    result
}
