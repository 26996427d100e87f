//! Relaying a request for another node's session (cluster mode, no sticky sessions needed): a
//! node that gets a polling request or a WebSocket upgrade for a session it does not have asks
//! the handler where it lives (`Handler::owner_of`: the sid starts with its node's id), opens
//! a connection to that node and from then on pipes the client's connection to it, both ways:
//! the request (with `X-Pairchat-Relay: <secret>` and `X-Pairchat-Client: <address>` added
//! after its request line), what follows it, and every answer back, WebSocket frames
//! included. The owner sees the secret and never relays that connection again (no loops), and
//! takes the client's address from it for its per-address limits.
//!
//! A pipe end is an ordinary connection in the slab (`ConnState::Pipe`): read with the others'
//! fairness, written at the end of the turn, with backpressure (an end whose partner holds more
//! than `OUTPUT_PAUSE` unwritten stops reading until it drains). Either end's close closes the
//! other once what it holds is written. The owner's heartbeat bounds a pipe's life; a connect
//! that takes longer than `RELAY_CONNECT_TIMEOUT` is answered `Session ID unknown`, as the
//! client would be told without a cluster, and it makes a new session.

use super::*;

/// Longest wait for the owner node to accept the relay's connection.
const RELAY_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One end of a relay.
pub(super) struct PipeConn {
    /// The other end.
    pub(super) other: ConnKey,
    /// Bytes for this end's socket, not written yet.
    pub(super) out: Vec<u8>,
    /// The connection to the owner is not made yet (its end only): nothing is written.
    pub(super) connecting: bool,
    /// Close once `out` is written (the other end is gone).
    pub(super) close_after_write: bool,
}

/// What a client whose session's owner cannot be reached is told (no CORS: the client only
/// needs to see the request fail to make a new session).
const UNKNOWN_SID: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 41\r\nConnection: close\r\n\r\n{\"code\":1,\"message\":\"Session ID unknown\"}";

impl<H: Handler> Server<H> {
    /// The node to relay this request to: an Engine.IO request for a session this server does
    /// not have, whose owner the handler knows, on a connection that was not itself relayed.
    pub(super) fn relay_target(&mut self, key: ConnKey, req: &Request<'_>) -> Option<SocketAddr> {
        let conn = self.conns.get(key)?;
        if conn.relayed || conn.refused || conn.metrics_only || !self.is_engine_path(req.path) {
            return None;
        }
        let sid = Sid::parse(req.query_param("sid")?)?;
        if self.sids.contains_key(&sid) {
            return None;
        }
        self.handler.owner_of(&sid)
    }

    /// A connection whose first request carries the cluster's secret was relayed by another
    /// node: it is never relayed again, and its client is the one that node names.
    pub(super) fn note_relayed(&mut self, key: ConnKey, req: &Request<'_>) {
        let Some(secret) = req.headers.relay else {
            return;
        };
        if self.handler.relay_secret() != Some(secret) {
            return;
        }
        let client = req
            .headers
            .relay_client
            .and_then(|c| c.trim().parse::<IpAddr>().ok())
            .filter(|ip| !ip.is_loopback());
        if let Some(conn) = self.conn_mut(key) {
            conn.relayed = true;
            conn.client = client;
        }
    }

    /// Turns connection `key` into a pipe to `owner`: `input` (the request and all read
    /// after it) goes first, its marks added.
    pub(super) fn start_relay(&mut self, key: ConnKey, owner: SocketAddr, input: &[u8]) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let client = conn.client.unwrap_or(conn.peer);
        let stream = match TcpStream::connect(owner) {
            Ok(s) => s,
            Err(_) => {
                self.relay_failed(key);
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut out = Vec::with_capacity(input.len() + 128);
        let line_end = input
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(input.len(), |p| p + 2);
        out.extend_from_slice(&input[..line_end]);
        let secret = self.handler.relay_secret().unwrap_or("");
        out.extend_from_slice(
            format!("X-Pairchat-Relay: {secret}\r\nX-Pairchat-Client: {client}\r\n").as_bytes(),
        );
        out.extend_from_slice(&input[line_end..]);
        let upstream = self.conns.insert(Conn {
            stream,
            state: ConnState::Pipe(PipeConn {
                other: key,
                out,
                connecting: true,
                close_after_write: false,
            }),
            timer: None,
            dirty: false,
            peer_closed: false,
            peer: owner.ip(),
            client: None,
            counted_ip: None,
            refused: false,
            metrics_only: false,
            paused: false,
            backlog: false,
            handshakes: 0,
            counted: 0,
            relayed: true,
        });
        let registry = self.poll.registry();
        let Some(up) = self.conns.get_mut(upstream) else {
            return;
        };
        if registry
            .register(
                &mut up.stream,
                Token(upstream.idx as usize),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            self.close_conn(upstream);
            self.relay_failed(key);
            return;
        }
        self.set_conn_timer(upstream, Some(RELAY_CONNECT_TIMEOUT));
        self.metrics.relays += 1;
        // The client's end: answers it was already owed go first.
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let owed = match &mut conn.state {
            ConnState::Http(h) => std::mem::take(&mut h.wbuf),
            _ => Vec::new(),
        };
        conn.state = ConnState::Pipe(PipeConn {
            other: upstream,
            out: owed,
            connecting: false,
            close_after_write: false,
        });
        self.set_conn_timer(key, None);
        self.mark_dirty(key);
        self.count_output(upstream);
    }

    /// The owner cannot be reached: the client is told its session is unknown.
    fn relay_failed(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let owed = match &mut conn.state {
            ConnState::Http(h) => std::mem::take(&mut h.wbuf),
            ConnState::Pipe(p) => std::mem::take(&mut p.out),
            _ => Vec::new(),
        };
        let mut out = owed;
        out.extend_from_slice(UNKNOWN_SID);
        conn.state = ConnState::Pipe(PipeConn {
            other: key,
            out,
            connecting: false,
            close_after_write: true,
        });
        self.metrics.relays_failed += 1;
        self.mark_dirty(key);
    }

    /// Bytes read off one end go to the other; its end of stream closes the other once that
    /// has written what it holds.
    pub(super) fn on_pipe_input(&mut self, key: ConnKey, input: &[u8], eof: bool) {
        let Some(ConnState::Pipe(p)) = self.conn_mut(key).map(|c| &mut c.state) else {
            return;
        };
        let other = p.other;
        let mut full = false;
        match self.conn_mut(other).map(|c| &mut c.state) {
            Some(ConnState::Pipe(o)) if other != key => {
                o.out.extend_from_slice(input);
                o.close_after_write |= eof;
                full = o.out.len() >= OUTPUT_PAUSE;
                self.mark_dirty(other);
            }
            _ => {}
        }
        if eof {
            self.close_conn(key);
        } else if full && let Some(conn) = self.conn_mut(key) {
            conn.paused = true;
        }
    }

    /// The connect to the owner finished (its first writable event) or failed.
    pub(super) fn on_pipe_connected(&mut self, key: ConnKey) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        let ConnState::Pipe(p) = &mut conn.state else {
            return true;
        };
        if !p.connecting {
            return true;
        }
        let failed = match conn.stream.take_error() {
            Ok(Some(_)) | Err(_) => true,
            Ok(None) => conn.stream.peer_addr().is_err(),
        };
        if failed {
            self.close_conn(key);
            return false;
        }
        p.connecting = false;
        self.set_conn_timer(key, None);
        true
    }

    /// One end closed: the other writes what it holds, then closes; one still connecting to
    /// the owner tells the client its session is unknown.
    pub(super) fn on_pipe_closed(&mut self, other: ConnKey, was_connecting: bool) {
        match self.conn_mut(other).map(|c| &mut c.state) {
            Some(ConnState::Pipe(_)) if was_connecting => self.relay_failed(other),
            Some(ConnState::Pipe(o)) => {
                o.close_after_write = true;
                self.mark_dirty(other);
            }
            _ => {}
        }
    }
}
