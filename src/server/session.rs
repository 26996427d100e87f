//! Engine.IO sessions on the loop: the state machine (`engine::session`) decides, this
//! carries its decisions out: timers on the wheel, frames on sockets, answers to parked polls,
//! the handler told.

use super::*;

impl<H: Handler> Server<H> {
    /// Opens a session on `transport`, asked for on connection `key`: its id and its open
    /// packet.
    pub(super) fn open_session(
        &mut self,
        transport: EioTransport<ConnKey>,
        protocol: Protocol,
        key: ConnKey,
    ) -> (SessionId, String) {
        self.metrics.sessions_opened += 1;
        let (peer, client) = match self.conns.get(key) {
            Some(c) => (Some(c.peer), c.client),
            None => (None, None),
        };
        let sid = loop {
            let sid = Sid::random_with_prefix(&mut self.rng, &self.config.sid_prefix);
            if !self.sids.contains_key(&sid) {
                break sid;
            }
        };
        if let Some(ip) = client.filter(|_| self.config.max_connections_per_ip > 0) {
            *self.sessions_per_ip.entry(ip).or_insert(0) += 1;
        }
        let (eio, open, beat) =
            EioSession::open_with(protocol, sid, transport, client, self.now(), &self.eio);
        let transport = eio.transport_kind();
        let id = self.sessions.insert(Session {
            eio,
            heartbeat: None,
            upgrade_timer: None,
            poll_ready: false,
            counted: 0,
            opened: self.now(),
        });
        log::debug(
            "session opened",
            &[
                ("sid", &sid),
                ("session", &id),
                ("transport", &transport_label(transport)),
                ("peer", &peer),
                ("client", &client),
            ],
        );
        self.sids.insert(sid, id);
        // Entries of sessions that spoke or closed since are dropped lazily; pruned here so
        // the queue stays within a constant factor of the table.
        if self.unheard.len() > 2 * self.sessions.len() + 64 {
            let sessions = &self.sessions;
            self.unheard
                .retain(|id| sessions.get(*id).is_some_and(|s| !s.eio.heard));
        }
        self.unheard.push_back(id);
        self.arm_heartbeat(id, beat);
        (id, open)
    }

    pub(super) fn dispatch_open(&mut self, id: SessionId) {
        if let Some(s) = self.session_mut(id) {
            let event = Event::Open {
                session: id,
                sid: s.eio.sid,
                transport: s.eio.transport_kind(),
                protocol: s.eio.protocol,
                client: s.eio.client,
            };
            self.dispatch(event);
        }
    }

    /// Puts the session's heartbeat timer where the state machine wants it.
    pub(super) fn arm_heartbeat(&mut self, id: SessionId, beat: Beat) {
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        if let Some(t) = s.heartbeat.take() {
            self.timers.cancel(t);
        }
        let timer = match beat {
            Beat::Ping(at) => self.timers.insert(at, Timeout::Ping(id)),
            Beat::Pong(at) => self.timers.insert(at, Timeout::Pong(id)),
        };
        s.heartbeat = Some(timer);
    }

    pub(super) fn on_ping_due(&mut self, id: SessionId) {
        let now = self.now();
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        s.heartbeat = None;
        let (ping, beat) = s.eio.on_ping_due(now, &self.eio);
        self.arm_heartbeat(id, beat);
        if let Some(ping) = ping {
            self.send(id, ping);
        }
    }

    pub(super) fn on_pong_missed(&mut self, id: SessionId) {
        let now = self.now();
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        s.heartbeat = None;
        match s.eio.on_pong_missed(now) {
            None => self.close_session(id, CloseReason::PingTimeout),
            Some(beat) => self.arm_heartbeat(id, beat),
        }
    }

    /// Closes the oldest session whose client never sent a packet; false if there is none.
    pub(super) fn reclaim_unheard_session(&mut self) -> bool {
        while let Some(id) = self.unheard.pop_front() {
            if self.session_mut(id).is_some_and(|s| !s.eio.heard) {
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
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        let protocol = s.eio.protocol;
        match s.eio.send(p, &self.eio) {
            Sent::Ws(key, p) => self.ws_send_packet(key, &p, protocol),
            Sent::Wake(_) => {
                if !s.poll_ready {
                    s.poll_ready = true;
                    self.poll_ready.push(id);
                }
                self.count_poll_output(id);
            }
            Sent::Queued => self.count_poll_output(id),
            Sent::Overflow => self.cut_slow_consumer(Holder::Session(id)),
        }
    }

    /// Brings `output_bytes` up to date with what the session's polling queue holds now.
    pub(super) fn count_poll_output(&mut self, id: SessionId) {
        if let Some(s) = self.sessions.get_mut(id) {
            let queued = s.eio.queued_bytes();
            self.output_bytes = self.output_bytes - s.counted + queued;
            s.counted = queued;
        }
    }

    pub(super) fn answer_ready_poll(&mut self, id: SessionId) {
        let Some(s) = self.session_mut(id) else {
            return;
        };
        s.poll_ready = false;
        let ready = s.eio.take_ready_poll();
        self.count_poll_output(id);
        if let Some((key, payload)) = ready {
            self.answer_parked_conn(key, PollAnswer::Payload(payload));
        }
    }

    /// Answers the poll parked on connection `key`. Requests pipelined behind it are not
    /// handled here (this runs in the middle of other work, a session's close among it): the
    /// connection is queued to resume at the end of the turn.
    pub(super) fn answer_parked_conn(&mut self, key: ConnKey, answer: PollAnswer) {
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
        let (body, binary) = match &answer {
            PollAnswer::Payload(p) => (&p.body[..], p.binary),
            PollAnswer::Control(kind) => (control_payload(p.protocol, *kind), false),
        };
        Response::new(200, payload_type(binary), body)
            .cors(p.cors.get())
            .write_to(&mut h.wbuf, exchange);
        let idle = idle_timeout(&self.config, h.rbuf.is_empty());
        h.close_after_write |= exchange.close;
        self.mark_dirty(key);
        // A deadline in every case: an answer that cannot leave (a peer that stopped
        // reading) does not keep the connection past it.
        self.set_conn_timer(key, Some(idle));
        if !exchange.close && !self.resume.contains(&key) {
            self.resume.push(key);
        }
    }

    /// Ends a session: takes it out of the tables first (nothing that runs later in this
    /// close can reach it again), then answers its parked poll, closes its WebSockets and
    /// tells the handler.
    pub(super) fn close_session(&mut self, id: SessionId, reason: CloseReason) {
        let Some(s) = self.sessions.remove(id) else {
            return;
        };
        self.output_bytes -= s.counted;
        self.metrics.session_closed(reason);
        log::debug(
            "session closed",
            &[
                ("sid", &s.eio.sid),
                ("reason", &reason.label()),
                ("transport", &transport_label(s.eio.transport_kind())),
                ("duration_ms", &self.now().saturating_sub(s.opened)),
            ],
        );
        if reason == CloseReason::ParseError {
            self.metrics.reject(Rejected::Malformed);
        }
        self.sids.remove(&s.eio.sid);
        if let Some(ip) = s.eio.client
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
        let closed = s.eio.close(reason);
        if let Some(probe) = closed.probe {
            self.ws_fail(probe, CloseCode::Away, "");
        }
        if let Some((key, last)) = closed.parked {
            self.answer_parked_conn(key, PollAnswer::Control(last));
        }
        if let Some((key, tell_client)) = closed.ws {
            if tell_client {
                self.ws_send(key, true, b"1");
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
}

/// A transport as logs name it.
pub(super) fn transport_label(kind: TransportKind) -> &'static str {
    match kind {
        TransportKind::Polling => "polling",
        TransportKind::WebSocket => "websocket",
    }
}
