//! Relaying requests for another node's session (cluster mode: no sticky sessions needed). A
//! node that gets a polling request or a WebSocket upgrade for a session it does not have asks
//! the handler where it lives (`Handler::owner_of`: a sid starts with its node's id) and
//! forwards that one request to the owner, with `X-Pairchat-Relay: <secret>` and
//! `X-Pairchat-Client: <address>` added after its request line, over a connection of a small
//! per-node pool; the answer comes back to the client as it arrives. The client's connection
//! then serves its next request as usual (a browser's keep-alive connection carries requests of
//! several sessions, which may live on different nodes). An upgrade's `101` turns both
//! connections into a tunnel (`ConnState::Pipe`) for the WebSocket's life.
//!
//! The owner sees the secret, never relays what comes on that connection (no loops between
//! nodes), and takes the client's address from it for its per-address limits. An owner that
//! cannot be reached within `RELAY_CONNECT_TIMEOUT`, or that fails before answering, gets the
//! client `Session ID unknown`, as it would be told without a cluster: it makes a new session.
//! Every relay is bounded: a connect deadline, an answer deadline (a long poll's longest wait,
//! twice), `OUTPUT_PAUSE` of backpressure both ways.

use super::*;

/// Longest wait for the owner node to accept a relay's connection.
const RELAY_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an idle pooled connection to a node is kept.
const RELAY_IDLE: Duration = Duration::from_secs(20);
/// How long the end of a tunnel whose other end closed may take to write what it holds (as
/// long as a closing WebSocket lingers).
const TUNNEL_DRAIN: Duration = LINGER;
/// Idle connections kept per node.
const RELAY_POOL: usize = 16;

/// A connection to another node, carrying relayed requests (`Upstream`).
pub(super) struct UpstreamConn {
    /// The node.
    pub(super) node: SocketAddr,
    /// The client connection whose request it carries; `None` while pooled.
    pub(super) client: Option<ConnKey>,
    /// Bytes for the node, not written yet.
    pub(super) out: Vec<u8>,
    /// The connection is not made yet: nothing is written.
    pub(super) connecting: bool,
    /// Where the answer being relayed got to.
    pub(super) answer: Answer,
    /// The answer's head arrives in pieces: kept until it parses.
    pub(super) head: Vec<u8>,
}

/// Progress through the answer to the relayed request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Answer {
    /// Nothing yet (or not all of its head).
    Head {
        /// The request was a HEAD: no body follows whatever the head says.
        head_request: bool,
    },
    /// This many body bytes still to come; then the connection may carry another request
    /// (`reuse`).
    Body { left: usize, reuse: bool },
    /// A body that ends when the node closes.
    UntilClose,
    /// No request in flight.
    Idle,
}

/// One end of a tunnel (an upgraded relay).
pub(super) struct PipeConn {
    /// The other end.
    pub(super) other: ConnKey,
    /// Bytes for this end's socket, not written yet.
    pub(super) out: Vec<u8>,
    /// Close once `out` is written (the other end is gone).
    pub(super) close_after_write: bool,
}

/// What a client whose session's owner cannot be reached is told (no CORS headers: the client
/// only needs to see the request fail to make a new session).
const UNKNOWN_SID: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 41\r\nConnection: close\r\n\r\n{\"code\":1,\"message\":\"Session ID unknown\"}";

impl<H: Handler> Server<H> {
    /// The node to relay this request to: an Engine.IO request for a session this server does
    /// not have, whose owner the handler knows, on a connection that was not itself relayed
    /// (and not chunked: socket.io clients send lengths).
    pub(super) fn relay_target(&mut self, key: ConnKey, req: &Request<'_>) -> Option<SocketAddr> {
        let conn = self.conns.get(key)?;
        if conn.relayed
            || conn.refused
            || conn.metrics_only
            || req.framing == Framing::Chunked
            || !self.is_engine_path(req.path)
        {
            return None;
        }
        let sid = Sid::parse(req.query_param("sid")?)?;
        if self.sids.contains_key(&sid) {
            return None;
        }
        self.handler.owner_of(&sid)
    }

    /// A connection whose request carries the cluster's secret comes from another node: none
    /// of its requests is relayed again, and the client of each is the one that node names (a
    /// node's pooled connection carries many clients' requests, one after another; one
    /// without the marks names none).
    pub(super) fn note_relayed(&mut self, key: ConnKey, req: &Request<'_>) {
        let from_node =
            req.headers.relay.is_some() && self.handler.relay_secret() == req.headers.relay;
        let client = req
            .headers
            .relay_client
            .and_then(|c| c.trim().parse::<IpAddr>().ok())
            .filter(|ip| !ip.is_loopback());
        if let Some(conn) = self.conn_mut(key) {
            if from_node {
                conn.relayed = true;
                conn.client = client;
            } else if conn.relayed {
                conn.client = None;
            }
        }
    }

    /// Sends `request` (one whole request as the client sent it) to `node` for client
    /// connection `key`, which reads no more requests until the answer is through.
    pub(super) fn start_relay(&mut self, key: ConnKey, node: SocketAddr, request: &[u8]) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let client_ip = conn.client.unwrap_or(conn.peer);
        let Some(upstream) = self.upstream_to(node) else {
            self.relay_failed(key);
            return;
        };
        // After the request line, whether it ends in CRLF or a bare LF (both parse): the
        // marks are the first headers, and the owner reads the first copy of each.
        let line_end = request
            .iter()
            .position(|b| *b == b'\n')
            .map_or(request.len(), |p| p + 1);
        let secret = self.handler.relay_secret().unwrap_or("").to_string();
        let head_request = request.starts_with(b"HEAD ");
        let Some(ConnState::Upstream(up)) = self.conn_mut(upstream).map(|c| &mut c.state) else {
            return;
        };
        up.out.extend_from_slice(&request[..line_end]);
        up.out.extend_from_slice(b"X-Pairchat-Relay: ");
        up.out.extend_from_slice(secret.as_bytes());
        up.out.extend_from_slice(b"\r\nX-Pairchat-Client: ");
        up.out.extend_from_slice(client_ip.to_string().as_bytes());
        up.out.extend_from_slice(b"\r\n");
        up.out.extend_from_slice(&request[line_end..]);
        up.client = Some(key);
        up.answer = Answer::Head { head_request };
        up.head.clear();
        let connecting = up.connecting;
        // The answer may take a long poll's longest wait (ping interval + timeout), twice over.
        let wait = if connecting {
            RELAY_CONNECT_TIMEOUT
        } else {
            2 * (self.config.ping_interval + self.config.ping_timeout)
        };
        self.set_conn_timer(upstream, Some(wait));
        self.mark_dirty(upstream);
        self.metrics.relays += 1;
        if let Some(ConnState::Http(h)) = self.conn_mut(key).map(|c| &mut c.state) {
            h.relay = Some(upstream);
        }
        // The client's own deadlines wait: the node's answer bounds this one.
        self.set_conn_timer(key, None);
    }

    /// A pooled connection to `node`, or a new one.
    fn upstream_to(&mut self, node: SocketAddr) -> Option<ConnKey> {
        while let Some(key) = self.relay_pool.get_mut(&node).and_then(Vec::pop) {
            if matches!(self.conns.get(key).map(|c| &c.state), Some(ConnState::Upstream(u)) if u.client.is_none())
            {
                return Some(key);
            }
        }
        let stream = TcpStream::connect(node).ok()?;
        let _ = stream.set_nodelay(true);
        let key = self.conns.insert(Conn {
            stream,
            state: ConnState::Upstream(UpstreamConn {
                node,
                client: None,
                out: Vec::new(),
                connecting: true,
                answer: Answer::Idle,
                head: Vec::new(),
            }),
            timer: None,
            dirty: false,
            peer_closed: false,
            peer: node.ip(),
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
        let conn = self.conns.get_mut(key)?;
        let token = Token(key.idx as usize);
        let interest = Interest::READABLE | Interest::WRITABLE;
        if registry
            .register(&mut conn.stream, token, interest)
            .is_err()
        {
            self.conns.remove(key);
            return None;
        }
        Some(key)
    }

    /// The owner cannot be reached: the client is told its session is unknown, and the
    /// connection closes after that.
    fn relay_failed(&mut self, key: ConnKey) {
        self.metrics.relays_failed += 1;
        if let Some(ConnState::Http(h)) = self.conn_mut(key).map(|c| &mut c.state) {
            h.relay = None;
            h.wbuf.extend_from_slice(UNKNOWN_SID);
            h.close_after_write = true;
            h.rbuf.clear();
            self.mark_dirty(key);
        }
    }

    /// The connection to a node is made (its first writable event), or failed (false: it is
    /// closed).
    pub(super) fn on_upstream_writable(&mut self, key: ConnKey) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        let ConnState::Upstream(up) = &mut conn.state else {
            return true;
        };
        if !up.connecting {
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
        up.connecting = false;
        if up.client.is_some() {
            let wait = 2 * (self.config.ping_interval + self.config.ping_timeout);
            self.set_conn_timer(key, Some(wait));
        }
        true
    }

    /// Bytes from a node: the answer's head is read for its framing, and everything goes to
    /// the client as it comes. A complete answer frees both connections for their next
    /// request; a `101` makes them a tunnel.
    pub(super) fn on_upstream_input(&mut self, key: ConnKey, input: &[u8], eof: bool) {
        let Some(ConnState::Upstream(up)) = self.conn_mut(key).map(|c| &mut c.state) else {
            return;
        };
        let Some(client) = up.client else {
            // An idle pooled connection: the node closed it (or sent what nobody asked for).
            self.close_conn(key);
            return;
        };
        let mut input = input;
        let mut joined = Vec::new();
        if let Answer::Head { head_request } = up.answer {
            up.head.extend_from_slice(input);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            let parsed = match response.parse(&up.head) {
                Ok(httparse::Status::Complete(n)) => Some(n),
                Ok(httparse::Status::Partial) if up.head.len() < http::request::MAX_HEAD => None,
                _ => {
                    // Not HTTP: the client gets what an unreachable owner gets.
                    self.close_conn(key);
                    return;
                }
            };
            let Some(head_len) = parsed else {
                if eof {
                    self.close_conn(key);
                }
                return;
            };
            // An interim answer (`100 Continue`: this node already sent its own) is dropped,
            // and what follows it read as the answer.
            if response
                .code
                .is_some_and(|c| (100..200).contains(&c) && c != 101)
            {
                let rest = up.head.split_off(head_len);
                up.head.clear();
                self.on_upstream_input(key, &rest, eof);
                return;
            }
            let framing = answer_framing(&response, head_request);
            joined = std::mem::take(&mut up.head);
            if framing == Framing101::Upgrade {
                self.become_tunnel(key, client, joined);
                return;
            }
            up.answer = match framing {
                Framing101::Body { length, reuse } => Answer::Body {
                    left: length + head_len,
                    reuse,
                },
                _ => Answer::UntilClose,
            };
            input = &[];
        }
        // What goes to the client now: the head and body read so far, no more than the answer.
        let bytes: &[u8] = if joined.is_empty() { input } else { &joined };
        let (take, done, reuse) = match up.answer {
            Answer::Body { left, reuse } => {
                let take = bytes.len().min(left);
                up.answer = Answer::Body {
                    left: left - take,
                    reuse,
                };
                (take, left == take, reuse)
            }
            _ => (bytes.len(), eof, false),
        };
        let full = match self.conn_mut(client).map(|c| &mut c.state) {
            Some(ConnState::Http(h)) => {
                h.wbuf.extend_from_slice(&bytes[..take]);
                h.wbuf.len() >= OUTPUT_PAUSE
            }
            _ => {
                self.close_conn(key);
                return;
            }
        };
        self.mark_dirty(client);
        if done {
            self.answer_relayed(key, client, reuse && !eof);
        } else if eof {
            // Cut short: the client cannot tell where the answer ends but by the close.
            self.close_conn(key);
            if let Some(ConnState::Http(h)) = self.conn_mut(client).map(|c| &mut c.state) {
                h.close_after_write = true;
                h.relay = None;
            }
        } else if full && let Some(conn) = self.conn_mut(key) {
            conn.paused = true;
        }
    }

    /// A relayed answer is through: the client connection handles its next request; the
    /// node's connection goes back to the pool (or closes).
    fn answer_relayed(&mut self, key: ConnKey, client: ConnKey, reuse: bool) {
        if let Some(ConnState::Http(h)) = self.conn_mut(client).map(|c| &mut c.state) {
            h.relay = None;
            // The client asked to close after this answer (the node's answer says so too).
            h.close_after_write |= h.exchange.close;
            let idle = h.rbuf.is_empty();
            self.set_conn_timer(client, Some(idle_timeout(&self.config, idle)));
            self.resume.push(client);
        }
        let node = match self.conn_mut(key).map(|c| &mut c.state) {
            Some(ConnState::Upstream(up)) => {
                up.client = None;
                up.answer = Answer::Idle;
                up.node
            }
            _ => return,
        };
        let pool = self.relay_pool.entry(node).or_default();
        if reuse && pool.len() < RELAY_POOL {
            pool.push(key);
            self.set_conn_timer(key, Some(RELAY_IDLE));
        } else {
            self.close_conn(key);
        }
    }

    /// A `101`: the client connection and the node's become the two ends of a tunnel; what
    /// the client sent after its upgrade request goes first.
    fn become_tunnel(&mut self, key: ConnKey, client: ConnKey, answer: Vec<u8>) {
        let early = match self.conn_mut(client).map(|c| &mut c.state) {
            Some(ConnState::Http(h)) => {
                let mut owed = std::mem::take(&mut h.wbuf);
                owed.extend_from_slice(&answer);
                (owed, std::mem::take(&mut h.rbuf))
            }
            _ => {
                self.close_conn(key);
                return;
            }
        };
        let (to_client, to_node) = early;
        let pending = match self.conn_mut(key).map(|c| &mut c.state) {
            Some(ConnState::Upstream(up)) => std::mem::take(&mut up.out),
            _ => Vec::new(),
        };
        if let Some(conn) = self.conn_mut(client) {
            conn.state = ConnState::Pipe(PipeConn {
                other: key,
                out: to_client,
                close_after_write: false,
            });
        }
        if let Some(conn) = self.conn_mut(key) {
            let mut out = pending;
            out.extend_from_slice(&to_node);
            conn.state = ConnState::Pipe(PipeConn {
                other: client,
                out,
                close_after_write: false,
            });
        }
        // The WebSocket's own heartbeat (the owner's) bounds the tunnel now.
        self.set_conn_timer(key, None);
        self.set_conn_timer(client, None);
        self.mark_dirty(client);
        self.mark_dirty(key);
    }

    /// A node connection closed: its client, if it was waiting for an answer that had not
    /// begun, is told its session is unknown; one mid-answer closes.
    pub(super) fn on_upstream_closed(&mut self, up: &UpstreamConn, key: ConnKey) {
        if let Some(pool) = self.relay_pool.get_mut(&up.node) {
            pool.retain(|k| *k != key);
        }
        let Some(client) = up.client else {
            return;
        };
        match up.answer {
            Answer::Head { .. } => self.relay_failed(client),
            _ => {
                if let Some(ConnState::Http(h)) = self.conn_mut(client).map(|c| &mut c.state) {
                    h.relay = None;
                    h.close_after_write = true;
                    h.rbuf.clear();
                    self.mark_dirty(client);
                }
            }
        }
    }

    /// A client connection closed while its request was relayed: the node's connection is
    /// mid-answer and cannot carry another request.
    pub(super) fn on_relaying_client_closed(&mut self, upstream: ConnKey) {
        self.close_conn(upstream);
    }

    /// Bytes read off one end of a tunnel go to the other; its end of stream closes the other
    /// once that has written what it holds.
    pub(super) fn on_pipe_input(&mut self, key: ConnKey, input: &[u8], eof: bool) {
        let Some(ConnState::Pipe(p)) = self.conn_mut(key).map(|c| &mut c.state) else {
            return;
        };
        let other = p.other;
        let mut full = false;
        if let Some(ConnState::Pipe(o)) = self.conn_mut(other).map(|c| &mut c.state) {
            o.out.extend_from_slice(input);
            o.close_after_write |= eof;
            full = o.out.len() >= OUTPUT_PAUSE;
            self.mark_dirty(other);
        }
        match self.conn_mut(key) {
            // Its peer is gone (or going: its close was seen before this pause, and will not
            // be seen again): what it still holds cannot be delivered anywhere.
            Some(conn) if eof || (full && conn.peer_closed) => self.close_conn(key),
            // Its partner's peer does not read: if it still has not after a heartbeat's worth
            // (the owner would have given that client up by then), the tunnel ends.
            Some(conn) if full => {
                conn.paused = true;
                let stall = self.config.ping_interval + self.config.ping_timeout;
                self.set_conn_timer(key, Some(stall));
            }
            _ => {}
        }
    }

    /// One end of a tunnel closed: the other writes what it holds, then closes, within
    /// `TUNNEL_DRAIN`, for a peer that does not read.
    pub(super) fn on_pipe_closed(&mut self, other: ConnKey) {
        if let Some(ConnState::Pipe(o)) = self.conn_mut(other).map(|c| &mut c.state) {
            o.close_after_write = true;
            self.mark_dirty(other);
            self.set_conn_timer(other, Some(TUNNEL_DRAIN));
        }
    }
}

/// How a relayed answer ends.
#[derive(Debug, PartialEq, Eq)]
enum Framing101 {
    /// A `101 Switching Protocols`: a tunnel from here on.
    Upgrade,
    /// A body of this length; `reuse`: the connection may carry another request after it.
    Body { length: usize, reuse: bool },
    /// A body that ends when the connection closes.
    UntilClose,
}

fn answer_framing(response: &httparse::Response<'_, '_>, head_request: bool) -> Framing101 {
    let status = response.code.unwrap_or(0);
    if status == 101 {
        return Framing101::Upgrade;
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let close = header("connection")
        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
        || response.version == Some(0);
    let no_body = head_request || status == 204 || status == 304 || (100..200).contains(&status);
    if no_body {
        return Framing101::Body {
            length: 0,
            reuse: !close,
        };
    }
    if header("transfer-encoding").is_some() {
        return Framing101::UntilClose;
    }
    match header("content-length").and_then(|v| v.trim().parse().ok()) {
        Some(length) => Framing101::Body {
            length,
            reuse: !close,
        },
        None => Framing101::UntilClose,
    }
}
