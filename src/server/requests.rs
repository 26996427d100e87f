//! HTTP on the loop: reading requests off a connection, routing them (`/health`, `/metrics`,
//! the Engine.IO endpoint), the polling transport's GET/POST, and the WebSocket upgrade request.

use super::*;

impl<H: Handler> Server<H> {
    /// Bytes read off an HTTP connection: buffered, then every complete request handled.
    /// After a last answer (`close_after_write`) input is dropped; behind a parked poll it
    /// may wait, but no more than one request can take.
    pub(super) fn on_http_input(&mut self, key: ConnKey, input: &[u8], eof: bool) {
        let Some(ConnState::Http(h)) = self.conn_mut(key).map(|c| &mut c.state) else {
            return;
        };
        if !h.close_after_write {
            h.rbuf.extend_from_slice(input);
        }
        // Bytes arriving on an idle keep-alive connection start a request: from now on it has
        // `header_timeout`, not the (longer) keep-alive timeout, to complete it.
        if h.keep_alive_idle && !h.rbuf.is_empty() {
            h.keep_alive_idle = false;
            self.set_conn_timer(key, Some(self.config.header_timeout));
        }
        self.process_http(key);
        let most =
            http::request::MAX_HEAD + http::request::RELAY_ALLOWANCE + self.config.max_payload;
        let Some(conn) = self.conn_mut(key) else {
            return;
        };
        // Paused for its unsent output, it holds complete requests it reads no more after
        // (at most one read's worth): they wait, and so does its end of stream, which the read
        // after the pause meets again.
        if conn.paused {
            return;
        }
        // What is left is one incomplete request, unless a parked poll holds up the rest.
        if matches!(&conn.state, ConnState::Http(h) if h.rbuf.len() > most) {
            self.metrics.reject(Rejected::PayloadTooLarge);
            return self.close_conn(key);
        }
        if eof {
            self.on_http_eof(key);
        }
    }

    /// The peer closed its side. Answers already produced are still written (a client may
    /// half-close after its request); a parked poll or an idle connection ends at once.
    pub(super) fn on_http_eof(&mut self, key: ConnKey) {
        let Some(conn) = self.conn_mut(key) else {
            return;
        };
        match &mut conn.state {
            // A request relayed to another node is answered when its answer is through.
            ConnState::Http(h) if h.relay.is_some() => {
                h.close_after_write = true;
                h.rbuf.clear();
            }
            ConnState::Http(h) if h.parked.is_none() && !h.wbuf.is_empty() => {
                h.close_after_write = true;
                h.rbuf.clear();
                self.mark_dirty(key);
            }
            _ => self.close_conn(key),
        }
    }

    /// Handles every complete request in the read buffer, in order, until one parks or closes.
    pub(super) fn process_http(&mut self, key: ConnKey) {
        loop {
            let Some(conn) = self.conn_mut(key) else {
                return;
            };
            let ConnState::Http(h) = &mut conn.state else {
                return;
            };
            if h.parked.is_some() || h.relay.is_some() || h.close_after_write || h.rbuf.is_empty() {
                return;
            }
            // A client that pipelines without reading its answers gets no more of them.
            if h.wbuf.len() >= OUTPUT_PAUSE {
                conn.paused = true;
                return;
            }
            h.exchange = Exchange::default();
            let mut rbuf = std::mem::take(&mut h.rbuf);
            let mut body = h.body.take();
            let (flow, consumed) = match self.next_request(key, &rbuf, &mut body) {
                Next::Wait(drain) => {
                    // A chunked body's decoded bytes leave the buffer: only the head and
                    // what is not decoded yet stay.
                    rbuf.drain(drain);
                    self.put_back_rbuf(key, rbuf, 0, body);
                    return;
                }
                Next::Handled(flow, consumed) => (flow, consumed),
            };
            match flow {
                Flow::Upgraded => return,
                Flow::Relay(owner) => {
                    self.start_relay(key, owner, &rbuf[..consumed]);
                    self.put_back_rbuf(key, rbuf, consumed, None);
                    return;
                }
                Flow::Close => {
                    if let Some(ConnState::Http(h)) = self.conn_mut(key).map(|c| &mut c.state) {
                        h.close_after_write = true;
                    }
                    self.mark_dirty(key);
                    return;
                }
                Flow::Parked | Flow::Continue => {
                    self.put_back_rbuf(key, rbuf, consumed, None);
                    self.mark_dirty(key);
                    let Some(ConnState::Http(h)) = self.conn_mut(key).map(|c| &mut c.state) else {
                        return;
                    };
                    if matches!(flow, Flow::Parked) || h.close_after_write {
                        return;
                    }
                    let keep_alive_idle = h.rbuf.is_empty();
                    h.keep_alive_idle = keep_alive_idle;
                    self.set_conn_timer(key, Some(idle_timeout(&self.config, keep_alive_idle)));
                }
            }
        }
    }

    /// Reads the request at the start of `rbuf` and, once its body is there, handles it.
    /// `body` carries a body's progress from one read to the next.
    fn next_request(
        &mut self,
        key: ConnKey,
        rbuf: &[u8],
        body: &mut Option<Box<PendingBody>>,
    ) -> Next {
        let max = self.config.max_payload;
        let (mut req, head_len) = match http::request::parse_head(rbuf, max) {
            Ok(Some(head)) => head,
            Ok(None) => return Next::Wait(0..0),
            Err(e) => {
                // Even a request too broken to parse gets no body if it is a HEAD.
                if let Some(ConnState::Http(h)) = self.conn_mut(key).map(|c| &mut c.state) {
                    h.exchange.head = rbuf.starts_with(b"HEAD ");
                }
                self.respond_http_error(key, e);
                return Next::Handled(Flow::Close, rbuf.len());
            }
        };
        if let Some(ConnState::Http(h)) = self.conn_mut(key).map(|c| &mut c.state) {
            h.exchange = req.exchange();
        }
        // Who the client is, before anything is decided for it (a relay names it to the node
        // it goes to): each request says so, on a keep-alive connection too.
        self.note_relayed(key, &req);
        if let Some(peer) = self.conn_mut(key).map(|c| c.peer)
            && self.config.trust_proxy.contains(&peer)
        {
            self.note_forwarded_client(key, peer, &req);
        }
        let body_follows = req.framing != Framing::Length(0);
        // `Expect: 100-continue`: the client waits before sending its body. Only a polling
        // POST to a live session reads one; anything else gets its final answer at once, and
        // the connection closes rather than read a body nobody wants.
        if req.expect_continue && body_follows && !body.as_ref().is_some_and(|b| b.continued) {
            if !self.wants_body(key, &req) {
                if let Some(ConnState::Http(h)) = self.conn_mut(key).map(|c| &mut c.state) {
                    h.exchange.close = true;
                }
                let flow = self.on_request(key, &req, &[]);
                return Next::Handled(flow, rbuf.len());
            }
            PendingBody::of(body, max).continued = true;
            if let Some(ConnState::Http(h)) = self.conn_mut(key).map(|c| &mut c.state) {
                h.wbuf.extend_from_slice(http::CONTINUE);
                self.mark_dirty(key);
            }
        }
        let rest = &rbuf[head_len..];
        let used = match req.framing {
            Framing::Length(n) if rest.len() < n => return Next::Wait(0..0),
            Framing::Length(n) => {
                req.body = (&rest[..n]).into();
                n
            }
            Framing::Chunked => match PendingBody::of(body, max).decode(rest) {
                Err(e) => {
                    self.respond_http_error(key, e);
                    return Next::Handled(Flow::Close, rbuf.len());
                }
                Ok(p) if !p.done => return Next::Wait(head_len..head_len + p.used),
                Ok(p) => {
                    req.body = PendingBody::of(body, max).decoded.as_slice().into();
                    p.used
                }
            },
        };
        let consumed = head_len + used;
        // Another node's session: this request goes to it, as the client sent it.
        if let Some(owner) = self.relay_target(key, &req) {
            return Next::Handled(Flow::Relay(owner), consumed);
        }
        let flow = self.on_request(key, &req, &rbuf[consumed..]);
        Next::Handled(flow, consumed)
    }

    /// Whether the body of this request is wanted: only a polling POST to a live session
    /// (from an allowed origin, on a connection that is not refused) reads one.
    fn wants_body(&mut self, key: ConnKey, req: &Request<'_>) -> bool {
        // Another node's session: the body is read here, then the whole request relayed.
        if self.relay_target(key, req).is_some() {
            return true;
        }
        let served = self
            .conn_mut(key)
            .is_some_and(|c| !c.refused && !c.metrics_only);
        let live_polling = req
            .query_param("sid")
            .and_then(Sid::parse)
            .and_then(|sid| self.sids.get(&sid).copied())
            .and_then(|id| self.session_mut(id))
            .is_some_and(|s| s.eio.transport_kind() == TransportKind::Polling);
        served
            && live_polling
            && req.method == Method::Post
            && self.is_engine_path(req.path)
            && req.query_param("transport") == Some("polling")
            && self.protocol_of(req).is_ok()
            && req
                .headers
                .origin
                .is_none_or(|o| self.config.cors_origins.allows(o))
    }

    /// The Engine.IO protocol a request speaks: `EIO=4` is v4; anything else (`EIO=3`, no
    /// `EIO`) is v3, served with `allow_eio3` (but not its JSONP polling, `j=`).
    fn protocol_of(&self, req: &Request<'_>) -> Result<Protocol, EngineError> {
        match req.query_param("EIO") {
            Some("4") => Ok(Protocol::V4),
            _ if !self.config.allow_eio3 => Err(EngineError::UnsupportedProtocolVersion),
            _ if req.query_param("j").is_some() => Err(EngineError::BadRequest),
            _ => Ok(Protocol::V3),
        }
    }

    pub(super) fn is_engine_path(&self, path: &str) -> bool {
        path == self.config.path || path == self.config.path.trim_end_matches('/')
    }

    /// Gives the read buffer (less the `consumed` bytes of handled requests) and the body in
    /// progress back to the connection.
    pub(super) fn put_back_rbuf(
        &mut self,
        key: ConnKey,
        mut rbuf: Vec<u8>,
        consumed: usize,
        body: Option<Box<PendingBody>>,
    ) {
        if let Some(ConnState::Http(h)) = self.conn_mut(key).map(|c| &mut c.state) {
            rbuf.drain(..consumed);
            if rbuf.is_empty() && rbuf.capacity() > 16 * 1024 {
                rbuf = Vec::new(); // do not keep a large body's buffer on an idle connection
            }
            h.rbuf = rbuf;
            h.body = body;
        }
    }

    /// Writes an answer to the request being handled; after one that closes (by its own say,
    /// the request's, or a stopping server's), the connection reads nothing more.
    pub(super) fn respond(&mut self, key: ConnKey, response: Response<'_>) {
        let stopping = self.stopping;
        if let Some(ConnState::Http(h)) = self.conn_mut(key).map(|c| &mut c.state) {
            let mut exchange = h.exchange;
            exchange.close |= response.close || stopping;
            response.write_to(&mut h.wbuf, exchange);
            h.close_after_write |= exchange.close;
            self.mark_dirty(key);
        }
    }

    pub(super) fn respond_http_error(&mut self, key: ConnKey, e: HttpError) {
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
    pub(super) fn respond_unavailable(&mut self, key: ConnKey, cors: Cors<'_>) {
        let mut r = Response::text(503, "Service Unavailable").cors(cors);
        r.extra = "Retry-After: 1\r\n";
        r.close = true;
        self.respond(key, r);
    }

    pub(super) fn render_metrics(&mut self) -> String {
        let mut g = Gauges::default();
        for (_, c) in self.conns.iter() {
            match &c.state {
                ConnState::Ws(_) => g.websocket_connections += 1,
                ConnState::Http(h) => {
                    g.http_connections += 1;
                    g.parked_polls += u64::from(h.parked.is_some());
                }
                ConnState::Closing | ConnState::Pipe(_) | ConnState::Upstream(_) => {
                    g.http_connections += 1
                }
            }
        }
        for (_, s) in self.sessions.iter() {
            match s.eio.transport_kind() {
                TransportKind::WebSocket => g.websocket_sessions += 1,
                TransportKind::Polling => g.polling_sessions += 1,
            }
        }
        let mut out = String::with_capacity(4096);
        self.metrics.render(&mut out, &g);
        crate::metrics::gauge(
            &mut out,
            "pairchat_output_bytes",
            "Output queued for clients: WebSocket buffers and polling queues.",
            self.output_bytes as u64,
        );
        crate::metrics::gauge(
            &mut out,
            "pairchat_output_limit_bytes",
            "The output share of --max-memory: past three quarters of it work that adds output is refused.",
            self.config.max_output_bytes.min(u64::MAX as usize) as u64,
        );
        self.handler.metrics(&mut out);
        out
    }

    pub(super) fn respond_engine_error(
        &mut self,
        key: ConnKey,
        cors: Cors<'_>,
        e: EngineError,
    ) -> Flow {
        let (status, body) = e.http();
        self.respond(
            key,
            Response::new(status, "application/json", body.as_bytes()).cors(cors),
        );
        Flow::Continue
    }

    pub(super) fn on_request(&mut self, key: ConnKey, req: &Request<'_>, rest: &[u8]) -> Flow {
        let Some(&Conn {
            peer, metrics_only, ..
        }) = self.conn_mut(key).map(|c| &*c)
        else {
            return Flow::Close;
        };
        if let Some(conn) = self.conn_mut(key).filter(|c| c.refused) {
            let client = conn.counted_ip.unwrap_or(peer);
            self.metrics.reject(Rejected::PerIpLimit);
            static PER_ADDRESS: log::Sampler = log::Sampler::new();
            PER_ADDRESS.warn(
                "connection refused (503): at --max-connections-per-ip",
                &[
                    ("client", &client),
                    ("limit", &self.config.max_connections_per_ip),
                ],
            );
            self.respond_unavailable(key, Cors::none());
            return Flow::Close;
        }
        let serve_metrics = match self.config.metrics {
            MetricsAccess::Off => false,
            _ if metrics_only => true,
            _ if self.config.metrics_port.is_some() => false,
            MetricsAccess::Public => true,
            // A reverse proxy on this host forwards the world from loopback, and says so.
            MetricsAccess::Local => {
                peer.is_loopback()
                    && req.headers.forwarded_for.is_none()
                    && req.headers.forwarded.is_none()
            }
        };
        let engine_path = !metrics_only && self.is_engine_path(req.path);
        if req.path == "/metrics" && serve_metrics {
            self.respond_to_get(key, req, "text/plain; version=0.0.4", Self::render_metrics)
        } else if req.path == "/health" {
            self.respond_to_get(key, req, "application/json", |s| {
                http::health_body(|out| s.handler.health(out))
            })
        } else if engine_path {
            self.on_engine_request(key, req, rest)
        } else {
            self.respond(key, Response::text(404, "Not Found"));
            Flow::Continue
        }
    }

    /// A resource that only answers GET (and HEAD): `body` for those, 405 with `Allow`
    /// otherwise.
    fn respond_to_get(
        &mut self,
        key: ConnKey,
        req: &Request<'_>,
        content_type: &str,
        body: impl FnOnce(&mut Self) -> String,
    ) -> Flow {
        if matches!(req.method, Method::Get | Method::Head) {
            let body = body(self);
            self.respond(key, Response::new(200, content_type, body.as_bytes()));
        } else {
            let mut r = Response::text(405, "Method Not Allowed");
            r.extra = "Allow: GET, HEAD\r\n";
            self.respond(key, r);
        }
        Flow::Continue
    }

    /// On a connection from a trusted proxy: the client its headers name is the connection's
    /// client, and what counts against `max_connections_per_ip` (once per connection).
    fn note_forwarded_client(&mut self, key: ConnKey, peer: IpAddr, req: &Request<'_>) {
        let client = self.client_of(peer, Some(req));
        let count = self.config.max_connections_per_ip > 0
            && self.conn_mut(key).is_some_and(|c| c.counted_ip.is_none());
        let refused = match client {
            Some(ip) if count => self.count_ip(ip),
            _ => false,
        };
        if let Some(conn) = self.conn_mut(key) {
            conn.client = client;
            if count && client.is_some() {
                conn.counted_ip = client;
                conn.refused = refused;
            }
        }
    }

    pub(super) fn on_engine_request(
        &mut self,
        key: ConnKey,
        req: &Request<'_>,
        rest: &[u8],
    ) -> Flow {
        let origins = &self.config.cors_origins;
        if let Some(origin) = req.headers.origin.filter(|o| !origins.allows(o)) {
            self.metrics.reject(Rejected::ForbiddenOrigin);
            static CORS: log::Sampler = log::Sampler::new();
            CORS.warn(
                "browser origin refused (403): not in --cors-origin",
                &[
                    ("origin", &log_text(origin)),
                    ("allowed", &log::Shown(origins)),
                ],
            );
            return self.respond_engine_error(key, Cors::none(), EngineError::Forbidden);
        }
        let cors = Cors::new(origins, req.headers.origin);
        if req.method == Method::Options {
            let mut extra = String::new();
            self.respond(
                key,
                http::preflight(cors, req.headers.acr_headers, &mut extra),
            );
            return Flow::Continue;
        }
        let transport = match req.query_param("transport") {
            Some("polling") => TransportKind::Polling,
            Some("websocket") => TransportKind::WebSocket,
            _ => return self.respond_engine_error(key, cors, EngineError::TransportUnknown),
        };
        let protocol = match self.protocol_of(req) {
            Ok(p) => p,
            Err(e) => return self.respond_engine_error(key, cors, e),
        };
        let Some(sid) = req.query_param("sid") else {
            // A handshake.
            if req.method != Method::Get {
                return self.respond_engine_error(key, cors, EngineError::BadHandshakeMethod);
            }
            // At `max_connections` no new sessions until below 90 %; and never more sessions
            // than that (polling sessions need no connection of their own between polls). At
            // that cap a session its client never spoke on (bare handshakes, say a flood of
            // them) makes room first.
            if self.sessions.len() >= self.config.max_connections {
                self.reclaim_unheard_session();
            }
            if !self.accepting || self.sessions.len() >= self.config.max_connections {
                self.metrics.reject(Rejected::OverCapacity);
                static AT_CAP: log::Sampler = log::Sampler::new();
                AT_CAP.warn(
                    "session refused (503): at --max-connections",
                    &[
                        ("sessions", &self.sessions.len()),
                        ("connections", &self.conns.len()),
                        ("limit", &self.config.max_connections),
                    ],
                );
                self.respond_unavailable(key, cors);
                return Flow::Close;
            }
            let client = self.conn_mut(key).and_then(|c| c.client);
            if self.over_sessions_per_ip(client) {
                self.metrics.reject(Rejected::PerIpLimit);
                static PER_ADDRESS: log::Sampler = log::Sampler::new();
                PER_ADDRESS.warn(
                    "session refused (503): at --max-connections-per-ip",
                    &[
                        ("client", &client),
                        ("limit", &self.config.max_connections_per_ip),
                    ],
                );
                self.respond_unavailable(key, cors);
                return Flow::Close;
            }
            return match transport {
                TransportKind::Polling => {
                    // A socket.io-client opens one session per connection; one connection that
                    // opens many is told to go (its next handshake needs a new connection).
                    if let Some(conn) = self.conn_mut(key) {
                        conn.handshakes = conn.handshakes.saturating_add(1);
                        if conn.handshakes >= MAX_HANDSHAKES_PER_CONN
                            && let ConnState::Http(h) = &mut conn.state
                        {
                            h.exchange.close = true;
                        }
                    }
                    let (id, open) = self.open_session(EioSession::polling(), protocol, key);
                    // `b64=1`: a v3 client that takes text payloads only.
                    if protocol == Protocol::V3
                        && let Some(s) = self.session_mut(id)
                    {
                        s.eio.base64 = req.query_param("b64").is_some_and(|v| !v.is_empty());
                    }
                    let open = protocol.polling_open(open);
                    let r = Response::new(200, payload_type(false), &open);
                    self.respond(key, r.cors(cors));
                    self.dispatch_open(id);
                    Flow::Continue
                }
                TransportKind::WebSocket => match ws::accept_key(req) {
                    Some(accept) => self.upgrade_to_ws(key, &accept, rest, Err(protocol)),
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
        if self.session_mut(id).is_some_and(|s| s.eio.expired(now)) {
            self.close_session(id, CloseReason::PingTimeout);
            return self.respond_engine_error(key, cors, EngineError::UnknownSid);
        }
        let client = self.conn_mut(key).and_then(|c| c.client);
        let Some(session) = self.session_mut(id) else {
            return self.respond_engine_error(key, cors, EngineError::UnknownSid);
        };
        // A 2.x client's socket id is its sid, which applications show others (the chat's
        // `sender`): its session answers only the address that opened it.
        let stranger = session.eio.client.is_some_and(|c| Some(c) != client);
        if session.eio.protocol == Protocol::V3 && stranger {
            return self.respond_engine_error(key, cors, EngineError::UnknownSid);
        }
        let polling = session.eio.transport_kind() == TransportKind::Polling;
        match transport {
            TransportKind::WebSocket => match ws::accept_key(req) {
                Some(accept) if req.method == Method::Get => {
                    if session.eio.begin_probe(key) {
                        self.upgrade_to_ws(key, &accept, rest, Ok(id))
                    } else {
                        // A second WebSocket for a session that already has one is accepted
                        // and closed at once, as the reference server does (clients expect a
                        // close).
                        self.accept_and_close_ws(key, &accept)
                    }
                }
                _ => self.respond_engine_error(key, cors, EngineError::BadRequest),
            },
            TransportKind::Polling if !polling => {
                self.respond_engine_error(key, cors, EngineError::BadRequest)
            }
            TransportKind::Polling => match req.method {
                Method::Get => self.on_poll_get(key, id, cors),
                Method::Post => {
                    let protocol = session.eio.protocol;
                    self.on_poll_post(key, id, protocol, req, cors)
                }
                _ => self.respond_engine_error(key, cors, EngineError::BadRequest),
            },
        }
    }

    pub(super) fn on_poll_get(&mut self, key: ConnKey, id: SessionId, cors: Cors<'_>) -> Flow {
        let Some(session) = self.session_mut(id) else {
            return Flow::Continue;
        };
        let polled = session.eio.on_poll(key);
        let protocol = session.eio.protocol;
        self.count_poll_output(id);
        match polled {
            Polled::Conflict => {
                // Two concurrent GETs: refuse this one and close the session (the first gets
                // `1`).
                self.respond_engine_error(key, cors, EngineError::BadRequest);
                self.close_session(id, CloseReason::TransportError);
                Flow::Continue
            }
            Polled::Answer(p) => {
                let r = Response::new(200, payload_type(p.binary), &p.body);
                self.respond(key, r.cors(cors));
                Flow::Continue
            }
            Polled::Park => {
                // The connection's exchange, not the request's: one answered before its body
                // was read closes after the answer.
                if let Some(ConnState::Http(h)) = self.conn_mut(key).map(|c| &mut c.state) {
                    h.parked = Some(Parked {
                        session: id,
                        protocol,
                        cors: cors.keep(),
                        exchange: h.exchange,
                    });
                }
                // A deadline no live session reaches (its heartbeat answers the poll first).
                let deadline = self
                    .config
                    .ping_interval
                    .saturating_add(self.config.ping_timeout);
                self.set_conn_timer(key, Some(deadline));
                Flow::Parked
            }
        }
    }

    pub(super) fn on_poll_post(
        &mut self,
        key: ConnKey,
        id: SessionId,
        protocol: Protocol,
        req: &Request<'_>,
        cors: Cors<'_>,
    ) -> Flow {
        if protocol == Protocol::V3 {
            return match v3::decode_payload(&req.body) {
                Ok(packets) => self.on_posted(key, id, cors, packets.map(v3::to_packet)),
                Err(_) => self.refuse_post(key, id, cors, EngineError::BadPacket),
            };
        }
        match packet::decode_payload(&req.body) {
            Ok(packets) => self.on_posted(key, id, cors, packets),
            Err(e) => self.refuse_post(key, id, cors, e),
        }
    }

    /// The packets of a polling POST, in order, until one does not decode (the session
    /// closes) or closes the session.
    fn on_posted<'p>(
        &mut self,
        key: ConnKey,
        id: SessionId,
        cors: Cors<'_>,
        packets: impl Iterator<Item = Result<Packet<'p>, EngineError>>,
    ) -> Flow {
        for p in packets {
            match p {
                Ok(p) => {
                    if !self.on_packet(id, p) {
                        break;
                    }
                }
                Err(e) => return self.refuse_post(key, id, cors, e),
            }
        }
        self.respond(key, Response::new(200, "text/html", b"ok").cors(cors));
        Flow::Continue
    }

    /// A POST that is no Engine.IO: the session closes, the request gets the error.
    fn refuse_post(&mut self, key: ConnKey, id: SessionId, cors: Cors<'_>, e: EngineError) -> Flow {
        self.close_session(id, CloseReason::ParseError);
        self.respond_engine_error(key, cors, e)
    }

    /// Handles one packet from a session's active transport; false once the session is closed.
    pub(super) fn on_packet(&mut self, id: SessionId, p: Packet<'_>) -> bool {
        let now = self.now();
        let Some(s) = self.sessions.get_mut(id) else {
            return false;
        };
        match s.eio.on_packet(&p, now, &self.eio) {
            Received::Deliver => match p {
                Packet::Message(text) => self.dispatch(Event::Message { session: id, text }),
                Packet::Binary(data) => self.dispatch(Event::Binary {
                    session: id,
                    data: &data,
                }),
                _ => {}
            },
            Received::Rearm(beat) => {
                self.arm_heartbeat(id, beat);
                self.dispatch(Event::Pong { session: id });
            }
            Received::Answer(pong, beat) => {
                self.send(id, pong);
                self.arm_heartbeat(id, beat);
            }
            Received::Nothing => {}
            Received::Close => {
                self.close_session(id, CloseReason::ClientClose);
                return false;
            }
            Received::Wrong => {
                self.close_session(id, CloseReason::TransportError);
                return false;
            }
        }
        self.session_mut(id).is_some()
    }
}

/// Client-sent text as a log field: at most 200 bytes (cut at a character boundary), so a
/// header cannot blow a log line up.
fn log_text(s: &str) -> &str {
    const MAX: usize = 200;
    if s.len() <= MAX {
        return s;
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
