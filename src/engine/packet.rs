//! Engine.IO v4 packets and long-polling payloads. Pure: no I/O.
//!
//! Text packets are one type digit followed by data (`4hello`, `2probe`). Over long-polling a
//! payload joins packets with the record separator `\x1e`, and binary messages travel as `b`
//! followed by base64. Over WebSocket a binary message is a raw binary frame.

use std::cell::Cell;
use std::ops::Deref;
use std::sync::Arc;

use tungstenite::Bytes;

use super::EngineError;
use super::base64;

/// `0`: open (server → client handshake).
pub const OPEN: u8 = b'0';
/// `1`: close.
pub const CLOSE: u8 = b'1';
/// `2`: ping.
pub const PING: u8 = b'2';
/// `3`: pong.
pub const PONG: u8 = b'3';
/// `4`: message.
pub const MESSAGE: u8 = b'4';
/// `5`: upgrade.
pub const UPGRADE: u8 = b'5';
/// `6`: noop.
pub const NOOP: u8 = b'6';
/// Separator of packets in a long-polling payload.
pub const SEPARATOR: u8 = 0x1e;

/// A decoded packet received from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// `1`
    Close,
    /// `2` with optional data (`2probe`).
    Ping(&'a str),
    /// `3` with optional data (`3probe`).
    Pong(&'a str),
    /// `4` + text.
    Message(&'a str),
    /// A binary message (raw over WebSocket, `b` + base64 over polling).
    Binary(Vec<u8>),
    /// `5`
    Upgrade,
    /// `6`
    Noop,
}

/// Decodes one text packet (a WebSocket text frame, or one record of a polling payload).
pub fn decode_text(s: &str) -> Result<Packet<'_>, EngineError> {
    let data = s.get(1..).unwrap_or("");
    match s.as_bytes().first() {
        Some(&CLOSE) => Ok(Packet::Close),
        Some(&PING) => Ok(Packet::Ping(data)),
        Some(&PONG) => Ok(Packet::Pong(data)),
        Some(&MESSAGE) => Ok(Packet::Message(data)),
        Some(&UPGRADE) => Ok(Packet::Upgrade),
        Some(&NOOP) => Ok(Packet::Noop),
        _ => Err(EngineError::BadPacket),
    }
}

/// Decodes one record of a long-polling payload (text packet or `b` + base64).
pub fn decode_record(s: &str) -> Result<Packet<'_>, EngineError> {
    match s.strip_prefix('b') {
        Some(b64) => base64::decode(b64.as_bytes())
            .map(Packet::Binary)
            .ok_or(EngineError::BadPacket),
        None => decode_text(s),
    }
}

/// Splits a long-polling POST body into its records. The body must be UTF-8.
pub fn decode_payload(
    body: &[u8],
) -> Result<impl Iterator<Item = Result<Packet<'_>, EngineError>>, EngineError> {
    let text = std::str::from_utf8(body).map_err(|_| EngineError::BadPacket)?;
    if text.is_empty() {
        return Err(EngineError::BadPacket);
    }
    Ok(text.split('\x1e').map(decode_record))
}

thread_local! {
    /// Where `Outgoing::message` writes a packet before it has its own allocation.
    static SCRATCH: Cell<String> = const { Cell::new(String::new()) };
}

/// The largest scratch buffer kept between packets (a history answer may be a megabyte).
const KEPT_SCRATCH: usize = 64 * 1024;

/// A text packet's bytes in one allocation shared by its recipients, the reference count beside
/// the text. A recovery outbox drops a packet long after it was sent, when its memory has left
/// the cache: freeing it then costs one cache miss, where a `Bytes` (a header allocated apart
/// from the data, each with an allocator header) cost three.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedText(Arc<str>);

impl SharedText {
    /// The packet's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for SharedText {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for SharedText {
    fn from(text: &str) -> Self {
        SharedText(Arc::from(text))
    }
}

impl From<String> for SharedText {
    fn from(text: String) -> Self {
        SharedText(Arc::from(text))
    }
}

/// A packet to send, encoded once and shared by every recipient (cloning is a reference count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A complete text packet, type digit included (`4…`, `2`, `1`).
    Text(SharedText),
    /// A binary message's raw bytes.
    Binary(Bytes),
}

impl Outgoing {
    /// A message packet (`4` + what `write` appends).
    pub fn message(write: impl FnOnce(&mut String)) -> Self {
        Outgoing::message_with_capacity(64, write)
    }

    /// A message packet (`4` + what `write` appends), its buffer sized for `capacity` bytes.
    pub fn message_with_capacity(capacity: usize, write: impl FnOnce(&mut String)) -> Self {
        // Written in a buffer kept for the next packet, then copied into its own allocation
        // (taken, not borrowed: a `write` that made a packet itself would get a fresh buffer).
        let mut s = SCRATCH.take();
        s.clear();
        s.reserve(capacity + 1);
        s.push(MESSAGE as char);
        write(&mut s);
        let packet = Outgoing::Text(SharedText::from(s.as_str()));
        if s.capacity() <= KEPT_SCRATCH {
            SCRATCH.set(s);
        }
        packet
    }

    /// A message packet with this text.
    pub fn message_str(text: &str) -> Self {
        Outgoing::message_with_capacity(text.len(), |s| s.push_str(text))
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Outgoing::Binary(data.into())
    }

    /// A control packet with no data (`1`, `2`, `6`).
    pub fn control(kind: u8) -> Self {
        Outgoing::Text(SharedText::from(match kind {
            CLOSE => "1",
            PING => "2",
            PONG => "3",
            UPGRADE => "5",
            _ => "6",
        }))
    }

    /// Encoded size on the wire (polling form for binary).
    pub fn len(&self) -> usize {
        match self {
            Outgoing::Text(t) => t.len(),
            Outgoing::Binary(b) => 1 + b.len().div_ceil(3) * 4,
        }
    }

    /// Whether the packet has no bytes at all (never true for a valid packet).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends this packet to a long-polling payload (with a separator if it is not the first).
    pub fn append_to_payload(&self, payload: &mut Vec<u8>) {
        if !payload.is_empty() {
            payload.push(SEPARATOR);
        }
        match self {
            Outgoing::Text(t) => payload.extend_from_slice(t.as_bytes()),
            Outgoing::Binary(b) => {
                payload.push(b'b');
                base64::encode_into(b, payload);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_packets() {
        assert_eq!(decode_text("4hello"), Ok(Packet::Message("hello")));
        assert_eq!(decode_text("4"), Ok(Packet::Message("")));
        assert_eq!(decode_text("2probe"), Ok(Packet::Ping("probe")));
        assert_eq!(decode_text("3"), Ok(Packet::Pong("")));
        assert_eq!(decode_text("1"), Ok(Packet::Close));
        assert_eq!(decode_text("5"), Ok(Packet::Upgrade));
        assert_eq!(decode_text("6"), Ok(Packet::Noop));
        assert_eq!(decode_text("abc"), Err(EngineError::BadPacket));
        assert_eq!(
            decode_text("0{}"),
            Err(EngineError::BadPacket),
            "clients never send open"
        );
        assert_eq!(decode_text(""), Err(EngineError::BadPacket));
    }

    #[test]
    fn payloads() {
        let p: Vec<_> = decode_payload(b"4hello\x1ebAQIDBA==\x1e3")
            .unwrap()
            .collect();
        assert_eq!(
            p,
            vec![
                Ok(Packet::Message("hello")),
                Ok(Packet::Binary(vec![1, 2, 3, 4])),
                Ok(Packet::Pong(""))
            ]
        );
        assert!(decode_payload(b"").is_err());
        assert!(decode_payload(b"\xff").is_err());
        let bad: Vec<_> = decode_payload(b"4a\x1eb!!").unwrap().collect();
        assert_eq!(bad[1], Err(EngineError::BadPacket));
    }

    #[test]
    fn encode_payload_round_trip() {
        let mut payload = Vec::new();
        Outgoing::message_str("hello").append_to_payload(&mut payload);
        Outgoing::binary(vec![1u8, 2, 3, 4]).append_to_payload(&mut payload);
        Outgoing::control(PING).append_to_payload(&mut payload);
        assert_eq!(payload, b"4hello\x1ebAQIDBA==\x1e2");
        let back: Vec<_> = decode_payload(&payload).unwrap().collect();
        assert_eq!(back[0], Ok(Packet::Message("hello")));
        assert_eq!(back[1], Ok(Packet::Binary(vec![1, 2, 3, 4])));
        assert_eq!(back[2], Ok(Packet::Ping("")));
    }

    fn text_of(p: &Outgoing) -> &str {
        match p {
            Outgoing::Text(t) => t.as_str(),
            Outgoing::Binary(_) => panic!("a text packet"),
        }
    }

    #[test]
    fn each_message_keeps_its_own_text_whatever_the_scratch_buffer_held() {
        // A packet made while another is being written gets a buffer of its own.
        let mut inner = None;
        let outer = Outgoing::message(|s| {
            s.push_str("outer");
            inner = Some(Outgoing::message(|t| t.push_str("inner")));
            s.push_str("-end");
        });
        assert_eq!(text_of(&outer), "4outer-end");
        assert_eq!(text_of(&inner.expect("made")), "4inner");
        // A large packet (not kept as scratch), then a small one: nothing left over.
        let big = Outgoing::message(|s| s.push_str(&"x".repeat(KEPT_SCRATCH * 2)));
        assert_eq!(text_of(&big).len(), KEPT_SCRATCH * 2 + 1);
        assert_eq!(text_of(&Outgoing::message_str("a")), "4a");
        // A write that panics loses the scratch buffer, nothing more.
        let panicked = std::panic::catch_unwind(|| {
            Outgoing::message(|s| {
                s.push_str("half");
                panic!("a write that fails");
            })
        });
        assert!(panicked.is_err());
        assert_eq!(text_of(&Outgoing::message_str("b")), "4b");
        // Shared, not copied: a clone is the same allocation.
        let shared = Outgoing::message_str("c");
        match (&shared, &shared.clone()) {
            (Outgoing::Text(a), Outgoing::Text(b)) => assert!(std::ptr::eq(a.as_ptr(), b.as_ptr())),
            _ => panic!("text packets"),
        }
    }
}
