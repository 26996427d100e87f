//! WebSocket connections on the loop: reading frames, the probe/upgrade handshake of a polling
//! session, writing frames, closing with a code.

use super::*;
use tungstenite::error::ProtocolError;

impl<H: Handler> Server<H> {
    pub(super) fn upgrade_to_ws(
        &mut self,
        key: ConnKey,
        accept: &str,
        rest: &[u8],
        probe_of: Result<SessionId, Protocol>,
    ) -> Flow {
        let ctx = ws::context(&self.config, rest.to_vec());
        let (session, open) = match probe_of {
            // The session took this connection as its probe (`begin_probe`).
            Ok(id) => {
                let at = deadline(self.now(), self.config.upgrade_timeout);
                let timer = self.timers.insert(at, Timeout::Upgrade(id));
                if let Some(s) = self.session_mut(id) {
                    s.upgrade_timer = Some(timer);
                    log::debug("upgrade to websocket begun", &[("sid", &s.eio.sid)]);
                }
                (id, None)
            }
            // A handshake on WebSocket: a new session speaking this protocol.
            Err(protocol) => {
                let transport = EioTransport::WebSocket(key);
                let (id, open) = self.open_session(transport, protocol, key);
                (id, Some(open))
            }
        };
        self.set_conn_timer(key, None);
        if let Some(conn) = self.conn_mut(key) {
            conn.state = ConnState::Ws(WsConn {
                ctx,
                out: ws::switching_protocols(accept),
                session,
                close_after_write: false,
                held: None,
            });
        }
        self.mark_dirty(key);
        if let Some(open) = open {
            self.ws_send(key, true, open.as_bytes());
            self.dispatch_open(session);
        }
        // Frames that arrived with the upgrade request are already buffered: handle them now.
        // The request's read emptied the socket, so there is nothing more to read yet.
        self.decode_ws(key, &[], false);
        Flow::Upgraded
    }

    /// Completes the handshake, then sends a close frame (no status) and closes.
    pub(super) fn accept_and_close_ws(&mut self, key: ConnKey, accept: &str) -> Flow {
        if let Some(ConnState::Http(h)) = self.conn_mut(key).map(|c| &mut c.state) {
            h.wbuf.extend_from_slice(&ws::switching_protocols(accept));
            h.wbuf.extend_from_slice(&ws::CLOSE_FRAME);
            self.mark_dirty(key);
        }
        Flow::Close
    }

    /// Hands `input` to the connection's frame decoder and handles every complete message,
    /// including frames it had buffered before (say, sent along with the upgrade request).
    /// Decoding stops while the connection's output is over `OUTPUT_PAUSE`: what is left of
    /// `input` is held until a flush drains it (`resume_if_drained`).
    pub(super) fn decode_ws(&mut self, key: ConnKey, input: &[u8], eof: bool) {
        let mut at = 0;
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            let ConnState::Ws(w) = &mut conn.state else {
                return;
            };
            if w.out.len() >= OUTPUT_PAUSE {
                // The rest waits, and so do frames the decoder already took in behind the last
                // message (it reads ahead): the resume decodes again even with nothing held. An
                // end of stream is met again by the read after the pause.
                w.held = Some(input[at..].into());
                conn.paused = true;
                return;
            }
            let session = w.session;
            let mut io = WsStream {
                input: &input[at..],
                eof,
                out: &mut w.out,
            };
            let result = w.ctx.read(&mut io);
            at = input.len() - io.input.len();
            match result {
                Ok(Message::Text(text)) => self.on_ws_text(key, session, text.as_str()),
                Ok(Message::Binary(data)) => self.on_ws_binary(key, session, &data),
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
                // The peer's close frame was answered: the reply leaves with what is queued.
                Err(tungstenite::Error::ConnectionClosed) => return self.ws_closed_by_peer(key),
                // The peer went away without a close frame: an ordinary disconnect.
                Err(tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                    return self.close_conn(key);
                }
                Err(tungstenite::Error::Protocol(_)) => {
                    return self.ws_fail(key, CloseCode::Protocol, "protocol error");
                }
                Err(_) => return self.close_conn(key),
            }
        }
    }

    /// Whether `key` is session `id`'s WebSocket transport (not a probe, not gone).
    pub(super) fn is_active_ws(&self, key: ConnKey, id: SessionId) -> bool {
        self.active_protocol(key, id).is_some()
    }

    /// A binary message on a session's WebSocket: a v3 client's starts with the message type
    /// byte.
    fn on_ws_binary(&mut self, key: ConnKey, id: SessionId, data: &[u8]) {
        let Some(protocol) = self.active_protocol(key, id) else {
            return;
        };
        match protocol.ws_binary_message(data) {
            Ok(data) => self.dispatch(Event::Binary { session: id, data }),
            Err(_) => self.close_session(id, CloseReason::ParseError),
        }
    }

    /// The protocol of session `id`, if `key` is its WebSocket transport.
    fn active_protocol(&self, key: ConnKey, id: SessionId) -> Option<Protocol> {
        (self.sessions.get(id))
            .filter(|s| s.eio.is_transport(key))
            .map(|s| s.eio.protocol)
    }

    pub(super) fn on_ws_text(&mut self, key: ConnKey, id: SessionId, text: &str) {
        if let Some(protocol) = self.active_protocol(key, id) {
            match protocol.decode_ws_text(text) {
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
        let probe = session
            .eio
            .on_probe_packet(key, packet::decode_text(text).map_err(drop));
        self.count_poll_output(id);
        match probe {
            Probe::Probed(parked) => {
                self.ws_send(key, true, b"3probe");
                // A write that failed closed the session: its poll gets the close packet.
                if let Some(parked) = parked {
                    let kind = if self.sessions.contains(id) {
                        packet::NOOP
                    } else {
                        packet::CLOSE
                    };
                    self.answer_parked_conn(parked, PollAnswer::Control(kind));
                }
            }
            // The session moved to this WebSocket: what polling had queued follows, in order.
            Probe::Upgraded(parked, queue) => {
                self.metrics.upgrades_ok += 1;
                if let Some(s) = self.sessions.get(id) {
                    log::debug("session upgraded to websocket", &[("sid", &s.eio.sid)]);
                }
                if let Some(parked) = parked {
                    self.answer_parked_conn(parked, PollAnswer::Control(packet::NOOP));
                }
                let Some(s) = self.sessions.get_mut(id) else {
                    return;
                };
                if let Some(t) = s.upgrade_timer.take() {
                    self.timers.cancel(t);
                }
                let protocol = s.eio.protocol;
                for p in queue {
                    self.ws_send_packet(key, &p, protocol);
                }
            }
            Probe::Nothing => {}
            Probe::Failed => self.ws_fail(key, CloseCode::Policy, "bad upgrade"),
        }
    }

    /// Sends a packet on a session's WebSocket, framed as its `protocol` frames it.
    pub(super) fn ws_send_packet(&mut self, key: ConnKey, p: &Outgoing, protocol: Protocol) {
        match p {
            Outgoing::Text(t) => self.ws_send(key, true, t.as_bytes()),
            Outgoing::Binary(b) => self.ws_send(key, false, &protocol.ws_binary_frame(b)),
        }
    }

    /// Queues one data frame (text or binary).
    pub(super) fn ws_send(&mut self, key: ConnKey, text: bool, payload: &[u8]) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let ConnState::Ws(w) = &mut conn.state else {
            return;
        };
        // After a close frame (ours or the peer's) no data frame may follow.
        if w.close_after_write || !w.ctx.can_write() {
            return;
        }
        ws::push_frame(&mut w.out, text, payload);
        let (held, id) = (w.out.len(), w.session);
        // A reader that stopped reading is dropped rather than buffered without bound (the
        // output share of the memory budget is kept after the turn's flushes, where readers
        // that keep up hold nothing: `keep_output_within_share`).
        if held > self.config.max_ws_buffer {
            self.metrics.reject(Rejected::SlowConsumer);
            // The session first, so it ends as a transport error (the connection's own close
            // would end it as a transport close).
            self.close_session(id, CloseReason::TransportError);
            self.close_conn(key);
        } else {
            self.mark_dirty(key);
        }
    }

    /// The peer closed the WebSocket (its close frame is answered, in `out`): the session ends
    /// as a transport close, and the connection once the reply is written (or at the linger
    /// deadline).
    fn ws_closed_by_peer(&mut self, key: ConnKey) {
        self.ws_close_after_write(key, None, CloseReason::TransportClose);
    }

    /// Closes a WebSocket with a close frame (and its session, if it is the active transport).
    pub(super) fn ws_fail(&mut self, key: ConnKey, code: CloseCode, reason: &'static str) {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        self.ws_close_after_write(key, Some(frame), CloseReason::TransportError);
    }

    /// Ends a WebSocket once its output (and `frame`, if any) is written, or at the linger
    /// deadline for a peer that never reads it; its session ends for `why`, or, if it was only
    /// probing an upgrade, the upgrade is off.
    fn ws_close_after_write(&mut self, key: ConnKey, frame: Option<CloseFrame>, why: CloseReason) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let ConnState::Ws(w) = &mut conn.state else {
            return;
        };
        let id = w.session;
        if let Some(frame) = frame {
            let _ = w.ctx.close(&mut WsStream::output(&mut w.out), Some(frame));
        }
        w.close_after_write = true;
        self.mark_dirty(key);
        self.set_conn_timer(key, Some(LINGER));
        if self.is_active_ws(key, id) {
            self.close_session(id, why);
        } else {
            self.abandon_probe(id, key);
        }
    }

    /// If `key` is probing an upgrade of session `id`, the upgrade is off (counted as failed)
    /// and the session goes on over polling.
    pub(super) fn abandon_probe(&mut self, id: SessionId, key: ConnKey) {
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        if s.eio.abandon_probe(key) {
            if let Some(t) = s.upgrade_timer.take() {
                self.timers.cancel(t);
            }
            log::debug(
                "upgrade abandoned; the session stays on polling",
                &[("sid", &s.eio.sid)],
            );
            self.metrics.upgrades_failed += 1;
        }
    }
}
