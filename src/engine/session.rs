//! The Engine.IO session as a state machine: handshake, heartbeat, polling, upgrade and close.
//!
//! It does no I/O and holds no timer: the loop feeds it inputs (a poll arrived, a packet was
//! decoded, a deadline passed, a WebSocket asked to take over) with the time, and carries out
//! what each input returns (answer this poll, write this frame, arm the heartbeat at this
//! time, close with this reason). Connections are the loop's own keys (`C`), opaque here. So
//! every rule of the protocol is unit-tested below with time stepped by hand; the loop owns the
//! sockets, the wheel and the write path.
//!
//! | state | transport | upgrade |
//! |---|---|---|
//! | polling, idle | `Polling { parked: None }` | `None` |
//! | polling, a GET held open | `Polling { parked: Some(c) }` | `None` |
//! | probing a WebSocket `w` | `Polling` | `Probing(w)`, then `Probed(w)` after `2probe` |
//! | on WebSocket `w` | `WebSocket(w)` | `None` |

use std::net::IpAddr;

use super::packet::{self, Outgoing, Packet};
use super::{CloseReason, Protocol, Sid, TransportKind};
use crate::timer::Millis;

/// The heartbeat and buffering settings of sessions.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Between a pong (or the open) and the next ping.
    pub ping_interval: Millis,
    /// How long a ping waits for its pong.
    pub ping_timeout: Millis,
    /// Largest polling output held for a session before it is dropped as a slow consumer.
    pub max_poll_buffer: usize,
    /// Largest message or polling body (announced in the open packet).
    pub max_payload: usize,
}

/// The transport a session is on.
#[derive(Debug)]
pub enum Transport<C> {
    /// HTTP long-polling.
    Polling {
        /// The connection holding this session's long-poll GET.
        parked: Option<C>,
        /// Packets waiting for a GET.
        queue: Vec<Outgoing>,
        /// Their size on the wire.
        queued_bytes: usize,
    },
    /// A WebSocket.
    WebSocket(C),
}

/// Where an upgrade to WebSocket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrade<C> {
    /// None under way.
    None,
    /// A WebSocket with this sid is open; `2probe` not seen yet.
    Probing(C),
    /// `3probe` sent; polls are answered with noops until `5`.
    Probed(C),
}

/// One Engine.IO session.
#[derive(Debug)]
pub struct Session<C> {
    /// Its id.
    pub sid: Sid,
    /// The protocol revision it speaks.
    pub protocol: Protocol,
    /// The transport it is on.
    pub transport: Transport<C>,
    /// An upgrade under way.
    pub upgrade: Upgrade<C>,
    /// The client's address, when trustworthy.
    pub client: Option<IpAddr>,
    /// The client has sent a message (it is not a bare handshake).
    pub heard: bool,
    /// A v3 polling client asked for text payloads only (`b64=1`): binary data goes as
    /// base64 in them, never as a binary (XHR2) payload.
    pub base64: bool,
    /// When the next ping is due.
    next_ping: Millis,
    /// Set while a ping awaits its pong: the time the session dies without one. In v3, where
    /// the client pings, the time it dies without the client's next ping.
    pong_deadline: Option<Millis>,
}

/// When the heartbeat wants the loop back: at `at`, for a ping or for a missing pong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Call `on_ping_due` at this time.
    Ping(Millis),
    /// Call `on_pong_missed` at this time (unless a pong came).
    Pong(Millis),
}

/// What to do with a queued packet (`send`).
#[derive(Debug)]
pub enum Sent<C> {
    /// Write it on this WebSocket.
    Ws(C, Outgoing),
    /// Queued; the GET parked on this connection can be answered (at the end of the turn).
    Wake(C),
    /// Queued for the next GET.
    Queued,
    /// Over `max_poll_buffer`: the session must close (a slow consumer).
    Overflow,
}

/// The answer to a polling GET (`on_poll`).
#[derive(Debug, PartialEq, Eq)]
pub enum Polled {
    /// Another GET is parked already: refuse this one with a bad request, and close the
    /// session as a transport error (the parked one gets its close packet).
    Conflict,
    /// Answer at once with this payload.
    Answer(Payload),
    /// Hold the GET until there is output (it is the session's `parked` now).
    Park,
}

/// The fate of a packet the client sent on the session's transport (`on_packet`).
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// A message (text or binary) for the layer above.
    Deliver,
    /// A pong that ended a wait: the heartbeat goes on at this time.
    Rearm(Beat),
    /// A v3 client's ping: send this pong, and the heartbeat goes on at this time.
    Answer(Outgoing, Beat),
    /// A heartbeat packet in the wrong direction for the protocol (a v3 client's pong): a
    /// transport error.
    Wrong,
    /// Nothing to do (a stray pong, a ping, a noop, an upgrade on the wrong transport).
    Nothing,
    /// The client closed the session.
    Close,
}

/// What a WebSocket with this session's sid said before it took over (`on_probe_packet`).
#[derive(Debug, PartialEq, Eq)]
pub enum Probe<C> {
    /// `2probe`: answer `3probe` on the WebSocket, and answer this parked GET (if any) with a
    /// noop so the client can pause polling.
    Probed(Option<C>),
    /// `5`: the WebSocket is the transport now; send it what polling had queued, in order,
    /// and answer this parked GET (if any) with a noop.
    Upgraded(Option<C>, Vec<Outgoing>),
    /// A noop during the probe: nothing to do.
    Nothing,
    /// Anything else: the upgrade fails (close this WebSocket, polling goes on).
    Failed,
}

/// A polling answer's body.
#[derive(Debug, PartialEq, Eq)]
pub struct Payload {
    /// The bytes.
    pub body: Vec<u8>,
    /// A binary (XHR2) payload of Engine.IO v3 (`application/octet-stream`), else text.
    pub binary: bool,
}

impl Payload {
    /// A text payload.
    fn text(body: Vec<u8>) -> Self {
        Payload {
            body,
            binary: false,
        }
    }
}

/// What closing a session leaves for the loop to do (`close`).
#[derive(Debug)]
pub struct Closed<C> {
    /// A parked GET to answer with this control packet (a noop for the client's own close,
    /// else a close: `control_payload`).
    pub parked: Option<(C, u8)>,
    /// A probing WebSocket to close (going away).
    pub probe: Option<C>,
    /// The WebSocket transport to close, and whether to send it the close packet first (a
    /// server-side decision: forced close, shutdown).
    pub ws: Option<(C, bool)>,
}

impl<C: Copy + PartialEq> Session<C> {
    /// A new session on `transport`, opened at `now`: the session, its open packet and the
    /// heartbeat's first deadline.
    pub fn open(
        sid: Sid,
        transport: Transport<C>,
        client: Option<IpAddr>,
        now: Millis,
        settings: &Settings,
    ) -> (Self, String, Beat) {
        Session::open_with(Protocol::V4, sid, transport, client, now, settings)
    }

    /// `open` for a protocol revision: in v3 the heartbeat waits for the client's first ping
    /// (within `ping_interval + ping_timeout`).
    pub fn open_with(
        protocol: Protocol,
        sid: Sid,
        transport: Transport<C>,
        client: Option<IpAddr>,
        now: Millis,
        settings: &Settings,
    ) -> (Self, String, Beat) {
        let kind = match transport {
            Transport::Polling { .. } => TransportKind::Polling,
            Transport::WebSocket(_) => TransportKind::WebSocket,
        };
        let next_ping = now.saturating_add(settings.ping_interval);
        let ping_by = next_ping.saturating_add(settings.ping_timeout);
        let session = Session {
            sid,
            protocol,
            transport,
            upgrade: Upgrade::None,
            client,
            heard: false,
            base64: false,
            next_ping,
            pong_deadline: (protocol == Protocol::V3).then_some(ping_by),
        };
        let open = open_packet(sid, kind, settings);
        let beat = match protocol {
            Protocol::V4 => Beat::Ping(next_ping),
            Protocol::V3 => Beat::Pong(ping_by),
        };
        (session, open, beat)
    }

    /// A polling session, idle.
    pub fn polling() -> Transport<C> {
        Transport::Polling {
            parked: None,
            queue: Vec::new(),
            queued_bytes: 0,
        }
    }

    /// The transport's kind.
    pub fn transport_kind(&self) -> TransportKind {
        match self.transport {
            Transport::Polling { .. } => TransportKind::Polling,
            Transport::WebSocket(_) => TransportKind::WebSocket,
        }
    }

    /// Whether the heartbeat's deadline has passed (a request arriving after it finds the
    /// session dead, even before the timer fired: the reference server answers so).
    pub fn expired(&self, now: Millis) -> bool {
        self.pong_deadline.is_some_and(|d| d <= now)
    }

    /// Bytes queued for a polling client (none on WebSocket, whose frames the loop holds).
    pub fn queued_bytes(&self) -> usize {
        match &self.transport {
            Transport::Polling { queued_bytes, .. } => *queued_bytes,
            Transport::WebSocket(_) => 0,
        }
    }

    /// Queues a packet for the client.
    pub fn send(&mut self, p: Outgoing, settings: &Settings) -> Sent<C> {
        match &mut self.transport {
            Transport::WebSocket(c) => Sent::Ws(*c, p),
            Transport::Polling {
                parked,
                queue,
                queued_bytes,
            } => {
                *queued_bytes += p.len() + 1;
                queue.push(p);
                match *parked {
                    _ if *queued_bytes > settings.max_poll_buffer => Sent::Overflow,
                    Some(c) => Sent::Wake(c),
                    None => Sent::Queued,
                }
            }
        }
    }

    /// A polling GET on connection `conn`.
    pub fn on_poll(&mut self, conn: C) -> Polled {
        let Transport::Polling {
            parked,
            queue,
            queued_bytes,
        } = &mut self.transport
        else {
            return Polled::Conflict;
        };
        if parked.is_some() {
            return Polled::Conflict;
        }
        // Polling is paused while a probed WebSocket is about to take over.
        if matches!(self.upgrade, Upgrade::Probed(_)) {
            let noop = control_payload(self.protocol, packet::NOOP);
            return Polled::Answer(Payload::text(noop.to_vec()));
        }
        if !queue.is_empty() {
            *queued_bytes = 0;
            return Polled::Answer(payload(self.protocol, self.base64, queue));
        }
        *parked = Some(conn);
        Polled::Park
    }

    /// The parked GET and the payload to answer it with, when there is output for it (and
    /// polling is not paused for an upgrade).
    pub fn take_ready_poll(&mut self) -> Option<(C, Payload)> {
        let Transport::Polling {
            parked,
            queue,
            queued_bytes,
        } = &mut self.transport
        else {
            return None;
        };
        if queue.is_empty() || parked.is_none() || matches!(self.upgrade, Upgrade::Probed(_)) {
            return None;
        }
        *queued_bytes = 0;
        let conn = parked.take()?;
        Some((conn, payload(self.protocol, self.base64, queue)))
    }

    /// Forgets the parked GET on `conn` (its connection went away, or its deadline passed);
    /// true if it was this session's.
    pub fn unpark(&mut self, conn: C) -> bool {
        match &mut self.transport {
            Transport::Polling { parked, .. } if *parked == Some(conn) => {
                *parked = None;
                true
            }
            _ => false,
        }
    }

    /// A packet from the client on its transport, at `now`.
    pub fn on_packet(&mut self, p: &Packet<'_>, now: Millis, settings: &Settings) -> Received {
        match p {
            Packet::Message(_) | Packet::Binary(_) => {
                self.heard = true;
                Received::Deliver
            }
            Packet::Pong(_) if self.protocol == Protocol::V3 => Received::Wrong,
            Packet::Ping(_) if self.protocol == Protocol::V3 => {
                // The client's next ping is due within the interval, plus the timeout.
                let ping_by = now
                    .saturating_add(settings.ping_interval)
                    .saturating_add(settings.ping_timeout);
                self.pong_deadline = Some(ping_by);
                // engine.io answers with a bare pong (its data is the probe's only).
                Received::Answer(Outgoing::control(packet::PONG), Beat::Pong(ping_by))
            }
            Packet::Pong(_) => {
                if self.pong_deadline.take().is_none() {
                    return Received::Nothing;
                }
                self.next_ping = now.saturating_add(settings.ping_interval);
                Received::Rearm(Beat::Ping(self.next_ping))
            }
            Packet::Close => Received::Close,
            Packet::Ping(_) | Packet::Upgrade | Packet::Noop => Received::Nothing,
        }
    }

    /// The ping is due: the packet to send (if any) and the heartbeat's next deadline. While
    /// an upgrade is under way the heartbeat pauses (the ping would go to a paused transport).
    pub fn on_ping_due(&mut self, now: Millis, settings: &Settings) -> (Option<Outgoing>, Beat) {
        if self.upgrade != Upgrade::None {
            self.next_ping = now.saturating_add(settings.ping_interval);
            return (None, Beat::Ping(self.next_ping));
        }
        let pong_by = self.next_ping.saturating_add(settings.ping_timeout);
        self.pong_deadline = Some(pong_by);
        (Some(Outgoing::control(packet::PING)), Beat::Pong(pong_by))
    }

    /// The pong timer fired: `None` if the session is dead, else when the heartbeat wants the
    /// loop back (a pong came first, or the deadline is still ahead).
    pub fn on_pong_missed(&self, now: Millis) -> Option<Beat> {
        match self.pong_deadline {
            Some(d) if d <= now => None,
            Some(d) => Some(Beat::Pong(d)),
            None => Some(Beat::Ping(self.next_ping)),
        }
    }

    /// A WebSocket with this sid asks to take over (`?sid=…&transport=websocket`): true if it
    /// may probe (the session polls and no other probe is under way), false to refuse it.
    pub fn begin_probe(&mut self, ws: C) -> bool {
        let may =
            matches!(self.transport, Transport::Polling { .. }) && self.upgrade == Upgrade::None;
        if may {
            self.upgrade = Upgrade::Probing(ws);
        }
        may
    }

    /// Whether `ws` is this session's transport.
    pub fn is_transport(&self, ws: C) -> bool {
        matches!(self.transport, Transport::WebSocket(c) if c == ws)
    }

    /// Whether `ws` is probing this session.
    pub fn is_probe(&self, ws: C) -> bool {
        matches!(self.upgrade, Upgrade::Probing(c) | Upgrade::Probed(c) if c == ws)
    }

    /// A packet on a probing WebSocket.
    pub fn on_probe_packet(&mut self, ws: C, p: Result<Packet<'_>, ()>) -> Probe<C> {
        match (self.upgrade, p) {
            (Upgrade::Probing(c), Ok(Packet::Ping("probe"))) if c == ws => {
                self.upgrade = Upgrade::Probed(ws);
                Probe::Probed(self.take_parked())
            }
            (Upgrade::Probed(c), Ok(Packet::Upgrade)) if c == ws => {
                let parked = self.take_parked();
                self.upgrade = Upgrade::None;
                let old = std::mem::replace(&mut self.transport, Transport::WebSocket(ws));
                let queue = match old {
                    Transport::Polling { queue, .. } => queue,
                    Transport::WebSocket(_) => Vec::new(),
                };
                Probe::Upgraded(parked, queue)
            }
            (Upgrade::Probing(c) | Upgrade::Probed(c), Ok(Packet::Noop)) if c == ws => {
                Probe::Nothing
            }
            _ => Probe::Failed,
        }
    }

    /// The probe on `ws` is off (it failed, timed out or went away): polling goes on. True if
    /// `ws` was probing.
    pub fn abandon_probe(&mut self, ws: C) -> bool {
        let probing = self.is_probe(ws);
        if probing {
            self.upgrade = Upgrade::None;
        }
        probing
    }

    /// Ends the session: what is left to answer and close.
    pub fn close(self, reason: CloseReason) -> Closed<C> {
        let probe = match self.upgrade {
            Upgrade::Probing(c) | Upgrade::Probed(c) => Some(c),
            Upgrade::None => None,
        };
        // The client's own close is answered with a noop; any other with a close packet.
        let last = if reason == CloseReason::ClientClose {
            packet::NOOP
        } else {
            packet::CLOSE
        };
        let (parked, ws) = match self.transport {
            Transport::Polling { parked, .. } => (parked.map(|c| (c, last)), None),
            Transport::WebSocket(c) => {
                let tell = matches!(
                    reason,
                    CloseReason::ServerClose | CloseReason::ServerShutdown
                );
                (None, Some((c, tell)))
            }
        };
        Closed { parked, probe, ws }
    }

    fn take_parked(&mut self) -> Option<C> {
        match &mut self.transport {
            Transport::Polling { parked, .. } => parked.take(),
            Transport::WebSocket(_) => None,
        }
    }
}

/// The open packet of a new session (`0{"sid":…,"upgrades":…,…}`).
pub fn open_packet(sid: Sid, transport: TransportKind, settings: &Settings) -> String {
    let upgrades = if transport == TransportKind::Polling {
        "[\"websocket\"]"
    } else {
        "[]"
    };
    format!(
        "0{{\"sid\":\"{sid}\",\"upgrades\":{upgrades},\"pingInterval\":{},\"pingTimeout\":{},\"maxPayload\":{}}}",
        settings.ping_interval, settings.ping_timeout, settings.max_payload
    )
}

/// The payload of the queued packets, oldest first, in the session's framing (the queue is
/// left empty).
fn payload(protocol: Protocol, base64: bool, queue: &mut Vec<Outgoing>) -> Payload {
    match protocol {
        Protocol::V4 => Payload::text(encode_payload(queue)),
        Protocol::V3 => {
            let (body, binary) = super::v3::encode_payload(queue, !base64);
            queue.clear();
            Payload { body, binary }
        }
    }
}

/// A payload of one control packet without data (`6`, `1`): `1:6` in v3's framing.
pub fn control_payload(protocol: Protocol, kind: u8) -> &'static [u8] {
    match (protocol, kind) {
        (Protocol::V4, packet::NOOP) => b"6",
        (Protocol::V4, _) => b"1",
        (Protocol::V3, packet::NOOP) => b"1:6",
        (Protocol::V3, _) => b"1:1",
    }
}

/// A v4 polling payload: the queued packets joined by `\x1e`, oldest first (the queue is left
/// empty).
pub fn encode_payload(queue: &mut Vec<Outgoing>) -> Vec<u8> {
    let mut body = Vec::with_capacity(queue.iter().map(|p| p.len() + 1).sum());
    for p in queue.drain(..) {
        p.append_to_payload(&mut body);
    }
    body
}

#[cfg(test)]
mod tests {
    //! Every Engine.IO rule of the official suites (`CONFORMANCE.md`) that the session decides,
    //! driven by hand: the conformance timings (ping 300 ms, timeout 200 ms).
    use super::*;
    use crate::engine::packet::decode_text;

    const S: Settings = Settings {
        ping_interval: 300,
        ping_timeout: 200,
        max_poll_buffer: 1000,
        max_payload: 1_000_000,
    };

    /// Connections are plain numbers here.
    type Conn = u32;

    fn sid() -> Sid {
        Sid::random(&mut rand::rng())
    }

    fn polling(now: Millis) -> Session<Conn> {
        Session::open(sid(), Session::polling(), None, now, &S).0
    }

    fn text(p: &Outgoing) -> &str {
        match p {
            Outgoing::Text(t) => t.as_str(),
            Outgoing::Binary(_) => panic!("binary"),
        }
    }

    fn packet(s: &str) -> Packet<'_> {
        decode_text(s).expect("a packet")
    }

    #[test]
    fn a_v3_client_pings_and_the_server_answers() {
        let (mut s, _, beat) =
            Session::<Conn>::open_with(Protocol::V3, sid(), Session::polling(), None, 0, &S);
        // No ping from the server: it waits for the client's, interval plus timeout.
        assert_eq!(beat, Beat::Pong(500));
        assert_eq!(s.on_pong_missed(499), Some(Beat::Pong(500)));
        match s.on_packet(&packet("2probe"), 200, &S) {
            Received::Answer(pong, beat) => {
                assert_eq!(text(&pong), "3");
                assert_eq!(beat, Beat::Pong(700));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.on_pong_missed(500), Some(Beat::Pong(700)));
        assert_eq!(s.on_pong_missed(700), None, "no ping in time: dead");
        // A pong from a v3 client is the wrong direction.
        assert_eq!(s.on_packet(&packet("3"), 300, &S), Received::Wrong);
    }

    #[test]
    fn a_v3_session_answers_polls_with_v3_payloads() {
        let (mut s, _, _) =
            Session::<Conn>::open_with(Protocol::V3, sid(), Session::polling(), None, 0, &S);
        s.send(Outgoing::Text("4€".into()), &S);
        s.send(Outgoing::binary(vec![7u8]), &S);
        // Binary data: an XHR2 payload, the lengths as digit bytes.
        let xhr2 = b"\x00\x04\xff4\xe2\x82\xac\x01\x02\xff\x04\x07".to_vec();
        assert_eq!(
            s.on_poll(1),
            Polled::Answer(Payload {
                body: xhr2,
                binary: true
            })
        );
        // A client that asked for base64 (`b64=1`) gets text, lengths in UTF-16 units.
        s.base64 = true;
        s.send(Outgoing::Text("4€".into()), &S);
        s.send(Outgoing::binary(vec![7u8]), &S);
        let text = "2:4€6:b4Bw==".as_bytes().to_vec();
        assert_eq!(s.on_poll(1), Polled::Answer(Payload::text(text)));
        assert_eq!(control_payload(Protocol::V3, packet::NOOP), b"1:6");
        assert_eq!(control_payload(Protocol::V3, packet::CLOSE), b"1:1");
    }

    #[test]
    fn the_open_packet_has_exactly_the_five_keys() {
        let id = sid();
        let (_, open, beat) = Session::<Conn>::open(id, Session::polling(), None, 1000, &S);
        let json: serde_json::Value = serde_json::from_str(&open[1..]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"sid": id.as_str(), "upgrades": ["websocket"], "pingInterval": 300,
                "pingTimeout": 200, "maxPayload": 1_000_000})
        );
        assert_eq!(beat, Beat::Ping(1300));
        let (_, open, _) = Session::open(id, Transport::WebSocket(1u32), None, 0, &S);
        assert!(open.contains("\"upgrades\":[]"), "{open}");
    }

    #[test]
    fn polling_answers_what_is_queued_at_once_in_order_else_parks() {
        let mut s = polling(0);
        for m in ["4test1", "4test2"] {
            assert!(matches!(s.send(Outgoing::Text(m.into()), &S), Sent::Queued));
        }
        assert!(matches!(
            s.send(Outgoing::binary(vec![1u8, 2, 3, 4]), &S),
            Sent::Queued
        ));
        assert_eq!(
            s.on_poll(1),
            Polled::Answer(Payload::text(b"4test1\x1e4test2\x1ebAQIDBA==".to_vec()))
        );
        assert_eq!(s.on_poll(1), Polled::Park);
        // Output for a parked GET wakes it; the loop takes the payload at the end of the turn.
        assert!(matches!(
            s.send(Outgoing::Text("4x".into()), &S),
            Sent::Wake(1)
        ));
        assert_eq!(
            s.take_ready_poll(),
            Some((1, Payload::text(b"4x".to_vec())))
        );
        assert_eq!(s.take_ready_poll(), None);
    }

    #[test]
    fn a_second_poll_while_one_is_parked_is_a_conflict_and_the_first_gets_the_close() {
        let mut s = polling(0);
        assert_eq!(s.on_poll(1), Polled::Park);
        assert_eq!(s.on_poll(2), Polled::Conflict);
        let closed = s.close(CloseReason::TransportError);
        assert_eq!(closed.parked, Some((1, packet::CLOSE)));
    }

    #[test]
    fn output_over_the_poll_buffer_is_an_overflow() {
        let mut s = polling(0);
        let big = Outgoing::Text(format!("4{}", "a".repeat(600)).into());
        assert!(matches!(s.send(big.clone(), &S), Sent::Queued));
        assert!(matches!(s.send(big, &S), Sent::Overflow));
    }

    #[test]
    fn heartbeat_pings_every_interval_and_a_missing_pong_kills_the_session() {
        let mut s = polling(0);
        assert_eq!(s.on_poll(7), Polled::Park);
        let (ping, beat) = s.on_ping_due(300, &S);
        assert_eq!(text(&ping.expect("a ping")), "2");
        assert_eq!(beat, Beat::Pong(500));
        // The pong re-arms the next ping from its arrival.
        assert_eq!(
            s.on_packet(&packet("3"), 350, &S),
            Received::Rearm(Beat::Ping(650))
        );
        assert_eq!(
            s.on_pong_missed(500),
            Some(Beat::Ping(650)),
            "the pong came"
        );
        let (_, beat) = s.on_ping_due(650, &S);
        assert_eq!(beat, Beat::Pong(850));
        assert!(!s.expired(849));
        // A request at the deadline finds it dead, before the timer fires.
        assert!(s.expired(850));
        assert_eq!(s.on_pong_missed(849), Some(Beat::Pong(850)), "not yet");
        assert_eq!(s.on_pong_missed(850), None);
        // A stray pong (none awaited) changes nothing.
        let mut t = polling(0);
        assert_eq!(t.on_packet(&packet("3"), 10, &S), Received::Nothing);
    }

    #[test]
    fn messages_are_delivered_and_mark_the_client_heard_and_1_closes() {
        let mut s = polling(0);
        assert!(!s.heard);
        assert_eq!(s.on_packet(&packet("4hello"), 0, &S), Received::Deliver);
        assert!(s.heard);
        assert_eq!(s.on_packet(&packet("6"), 0, &S), Received::Nothing);
        assert_eq!(s.on_packet(&packet("1"), 0, &S), Received::Close);
        // A close with a GET parked (the suite's "forcefully closes"): the GET gets a noop.
        let mut s = polling(0);
        assert_eq!(s.on_poll(3), Polled::Park);
        assert_eq!(
            s.close(CloseReason::ClientClose).parked,
            Some((3, packet::NOOP))
        );
    }

    #[test]
    fn an_upgrade_probes_pauses_polling_and_moves_the_queue_to_the_websocket() {
        let mut s = polling(0);
        assert_eq!(s.on_poll(1), Polled::Park);
        assert!(s.begin_probe(9));
        assert!(!s.begin_probe(10), "one probe at a time");
        // `2probe`: `3probe` is sent and the parked GET released with a noop.
        assert_eq!(
            s.on_probe_packet(9, Ok(packet("2probe"))),
            Probe::Probed(Some(1))
        );
        // Polls during the probe are answered with a noop at once.
        assert_eq!(s.on_poll(2), Polled::Answer(Payload::text(b"6".to_vec())));
        // The heartbeat pauses.
        let (ping, beat) = s.on_ping_due(300, &S);
        assert!(ping.is_none());
        assert_eq!(beat, Beat::Ping(600));
        // Output queued meanwhile goes over the WebSocket, in order, once it takes over.
        assert!(matches!(
            s.send(Outgoing::Text("4late".into()), &S),
            Sent::Queued
        ));
        assert_eq!(s.on_probe_packet(9, Ok(packet("6"))), Probe::Nothing);
        match s.on_probe_packet(9, Ok(packet("5"))) {
            Probe::Upgraded(None, queue) => assert_eq!(text(&queue[0]), "4late"),
            other => panic!("{other:?}"),
        }
        assert!(s.is_transport(9));
        assert!(matches!(
            s.send(Outgoing::Text("4now".into()), &S),
            Sent::Ws(9, _)
        ));
        // After the upgrade, polling requests and a second WebSocket are refused.
        assert_eq!(s.on_poll(3), Polled::Conflict);
        assert!(!s.begin_probe(11));
    }

    #[test]
    fn anything_else_on_a_probe_fails_the_upgrade_and_polling_goes_on() {
        let mut s = polling(0);
        assert!(s.begin_probe(9));
        assert_eq!(s.on_probe_packet(9, Ok(packet("4hi"))), Probe::Failed);
        assert_eq!(s.on_probe_packet(9, Err(())), Probe::Failed);
        // `5` before `2probe` fails too.
        assert_eq!(s.on_probe_packet(9, Ok(packet("5"))), Probe::Failed);
        assert!(s.abandon_probe(9));
        assert!(!s.abandon_probe(9));
        assert_eq!(s.on_poll(1), Polled::Park);
        assert!(s.begin_probe(10), "a new probe may start");
    }

    #[test]
    fn closing_says_what_to_answer_and_close() {
        let mut s = polling(0);
        assert_eq!(s.on_poll(1), Polled::Park);
        assert!(s.begin_probe(9));
        let closed = s.close(CloseReason::PingTimeout);
        assert_eq!(closed.parked, Some((1, packet::CLOSE)));
        assert_eq!(closed.probe, Some(9));
        assert!(closed.ws.is_none());
        for (reason, tell) in [
            (CloseReason::ServerClose, true),
            (CloseReason::ServerShutdown, true),
            (CloseReason::ParseError, false),
            (CloseReason::TransportClose, false),
        ] {
            let (s, _, _) = Session::open(sid(), Transport::WebSocket(4u32), None, 0, &S);
            assert_eq!(s.close(reason).ws, Some((4, tell)), "{reason:?}");
        }
    }
}
