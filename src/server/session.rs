//! Engine.IO sessions on the loop: opening, the heartbeat, queueing output on the session's
//! transport, answering parked polls, closing.

use super::*;

impl<H: Handler> Server<H> {
    /// Opens a session on `transport`: its id and its open packet.
    pub(super) fn open_session(
        &mut self,
        transport: Transport,
        client: Option<IpAddr>,
    ) -> (SessionId, String) {
        self.metrics.sessions_opened += 1;
        let kind = match transport {
            Transport::Polling { .. } => TransportKind::Polling,
            Transport::WebSocket(_) => TransportKind::WebSocket,
        };
        let sid = loop {
            let sid = Sid::random(&mut self.rng);
            if !self.sids.contains_key(&sid) {
                break sid;
            }
        };
        let next_ping = deadline(self.now(), self.config.ping_interval);
        if let Some(ip) = client.filter(|_| self.config.max_connections_per_ip > 0) {
            *self.sessions_per_ip.entry(ip).or_insert(0) += 1;
        }
        let id = self.sessions.insert(Session {
            sid,
            protocol: Protocol::V4,
            transport,
            upgrade: Upgrade::None,
            heartbeat: None,
            next_ping,
            pong_deadline: None,
            upgrade_timer: None,
            poll_ready: false,
            client,
            heard: false,
        });
        self.sids.insert(sid, id);
        // Entries of sessions that spoke or closed since are dropped lazily; pruned here so
        // the queue stays within a constant factor of the table.
        if self.unheard.len() > 2 * self.sessions.len() + 64 {
            let sessions = &self.sessions;
            self.unheard
                .retain(|id| sessions.get(*id).is_some_and(|s| !s.heard));
        }
        self.unheard.push_back(id);
        let timer = self.timers.insert(next_ping, Timeout::Ping(id));
        if let Some(s) = self.session_mut(id) {
            s.heartbeat = Some(timer);
        }
        let open = self.open_packet(sid, kind);
        (id, open)
    }

    pub(super) fn dispatch_open(&mut self, id: SessionId, transport: TransportKind) {
        if let Some(s) = self.session_mut(id) {
            let (sid, client, protocol) = (s.sid, s.client, s.protocol);
            self.dispatch(Event::Open {
                session: id,
                sid,
                transport,
                protocol,
                client,
            });
        }
    }

    pub(super) fn on_ping_due(&mut self, id: SessionId) {
        let interval = ms(self.config.ping_interval);
        let timeout = ms(self.config.ping_timeout);
        let now = self.now();
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        if s.upgrade != Upgrade::None {
            // The heartbeat pauses while an upgrade is under way.
            s.next_ping = now.saturating_add(interval);
            let at = s.next_ping;
            s.heartbeat = Some(self.timers.insert(at, Timeout::Ping(id)));
            return;
        }
        let pong_by = s.next_ping.saturating_add(timeout);
        s.pong_deadline = Some(pong_by);
        s.heartbeat = Some(self.timers.insert(pong_by, Timeout::Pong(id)));
        self.send(id, Outgoing::control(packet::PING));
    }

    pub(super) fn on_pong(&mut self, id: SessionId) {
        let next = deadline(self.now(), self.config.ping_interval);
        let Some(s) = self.sessions.get_mut(id) else {
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

    /// The client spoke on its session (see `reclaim_unheard_session`).
    pub(super) fn mark_heard(&mut self, id: SessionId) {
        if let Some(s) = self.session_mut(id) {
            s.heard = true;
        }
    }

    /// Closes the oldest session whose client never sent a packet; false if there is none.
    pub(super) fn reclaim_unheard_session(&mut self) -> bool {
        while let Some(id) = self.unheard.pop_front() {
            if self.session_mut(id).is_some_and(|s| !s.heard) {
                self.metrics.sessions_reclaimed += 1;
                self.close_session(id, CloseReason::ServerClose);
                return true;
            }
        }
        false
    }

    /// Whether a trustworthy client address already has `max_connections_per_ip` sessions.
    pub(super) fn over_sessions_per_ip(&self, client: Option<IpAddr>) -> bool {
        let max = self.config.max_connections_per_ip;
        max > 0
            && client.is_some_and(|ip| {
                self.sessions_per_ip
                    .get(&ip)
                    .is_some_and(|n| *n as usize >= max)
            })
    }

    /// Queues a packet on the session's transport.
    pub(super) fn send(&mut self, id: SessionId, p: Outgoing) {
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

    pub(super) fn answer_ready_poll(&mut self, id: SessionId) {
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
    pub(super) fn release_parked_poll(&mut self, id: SessionId, body: &str) {
        self.answer_parked_with(id, body.as_bytes().to_vec());
    }

    pub(super) fn answer_parked_with(&mut self, id: SessionId, body: Vec<u8>) {
        let Some(s) = self.session_mut(id) else {
            return;
        };
        let Transport::Polling { parked, .. } = &mut s.transport else {
            return;
        };
        if let Some(key) = parked.take() {
            self.answer_parked_conn(key, &body);
        }
    }

    /// Answers the poll parked on connection `key`. Requests pipelined behind it are not
    /// handled here (this runs in the middle of other work, a session's close among it): the
    /// connection is queued to resume at the end of the turn.
    pub(super) fn answer_parked_conn(&mut self, key: ConnKey, body: &[u8]) {
        let stopping = self.stopping;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let ConnState::Http(h) = &mut conn.state else {
            return;
        };
        let Some(p) = h.parked.take() else { return };
        let mut exchange = p.exchange;
        exchange.close |= stopping;
        Response::new(200, "text/plain; charset=UTF-8", body)
            .cors(p.cors.get())
            .write_to(&mut h.wbuf, exchange);
        let idle = idle_timeout(&self.config, h.rbuf.is_empty());
        h.close_after_write |= exchange.close;
        self.mark_dirty(key);
        if !exchange.close {
            self.set_conn_timer(key, Some(idle));
            if !self.resume.contains(&key) {
                self.resume.push(key);
            }
        }
    }

    /// Ends a session: takes it out of the tables first (nothing that runs later in this
    /// close can reach it again), then answers its parked poll, closes its WebSockets and
    /// tells the handler.
    pub(super) fn close_session(&mut self, id: SessionId, reason: CloseReason) {
        if self.session_mut(id).is_none() {
            return;
        }
        self.metrics.session_closed(reason);
        if reason == CloseReason::ParseError {
            self.metrics.reject(Rejected::Malformed);
        }
        let Some(s) = self.sessions.remove(id) else {
            return;
        };
        self.sids.remove(&s.sid);
        if let Some(ip) = s.client
            && let Some(n) = self.sessions_per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                self.sessions_per_ip.remove(&ip);
            }
        }
        for t in [s.heartbeat, s.upgrade_timer].into_iter().flatten() {
            self.timers.cancel(t);
        }
        if let Upgrade::Probing(c) | Upgrade::Probed(c) = s.upgrade {
            self.ws_fail(c, CloseCode::Away, "");
        }
        match s.transport {
            Transport::Polling {
                parked: Some(key), ..
            } => {
                // The client's own close is answered with a noop; any other with a close packet.
                let last = if reason == CloseReason::ClientClose {
                    "6"
                } else {
                    "1"
                };
                self.answer_parked_conn(key, last.as_bytes());
            }
            Transport::Polling { .. } => {}
            Transport::WebSocket(key) => {
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
        }
        self.dispatch(Event::Close {
            session: id,
            reason,
        });
    }
}
