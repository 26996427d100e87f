//! Engine.IO v3's long-polling payloads (socket.io-client 2.x), for `--allow-eio3`: what differs
//! from v4 is the framing of several packets in one HTTP body.
//!
//! - Text (`text/plain`): each packet as `<length>:<packet>`, where the length counts the
//!   packet's **UTF-16 code units** (JavaScript's `String.length`: `€` is 1, an emoji 2), and a
//!   binary packet travels as `b<type><base64>`. An empty payload is `0:`.
//! - Binary (XHR2, `application/octet-stream`, for a client that did not ask for `b64=1`):
//!   each packet as `<0|1><length digits, one byte each><0xFF><packet>`, `0` for a text packet
//!   (its UTF-8 bytes, the length in bytes) and `1` for a binary one (its type byte, then its
//!   data).
//!
//! Pure data, checked against bytes engine.io-parser 2.2.1 wrote (the tests).

use std::borrow::Cow;

use super::EngineError;
use super::base64;
use super::packet::Outgoing;
use crate::decimal::push_decimal;

/// One packet of a payload a client sent: a text packet (type digit first), or a binary
/// message's data (binary packets of any other type are malformed: clients send none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// `4hello`, `2`, `3probe`…
    Text(&'a str),
    /// A binary message: base64-decoded from a text payload, as sent in a binary one.
    Binary(Cow<'a, [u8]>),
}

/// Why a payload does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Most length digits accepted (a packet is bounded by the server's payload limit long before).
const MAX_DIGITS: usize = 10;

/// The UTF-16 length of `s` (what JavaScript's `length` says).
pub fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// A text payload: `<length>:<packet>` each, binary packets as base64 (`b4…`).
pub fn encode_text(packets: &[Outgoing]) -> Vec<u8> {
    if packets.is_empty() {
        return b"0:".to_vec();
    }
    let mut out = Vec::with_capacity(packets.iter().map(|p| p.len() + 8).sum());
    for p in packets {
        match p {
            Outgoing::Text(t) => {
                push_decimal(&mut out, utf16_len(t) as u64);
                out.push(b':');
                out.extend_from_slice(t.as_bytes());
            }
            Outgoing::Binary(data) => {
                push_decimal(&mut out, (2 + data.len().div_ceil(3) * 4) as u64);
                out.extend_from_slice(b":b4");
                base64::encode_into(data, &mut out);
            }
        }
    }
    out
}

/// A binary (XHR2) payload.
pub fn encode_binary(packets: &[Outgoing]) -> Vec<u8> {
    let mut out = Vec::with_capacity(packets.iter().map(|p| p.len() + 12).sum());
    for p in packets {
        let (marker, data) = match p {
            Outgoing::Text(t) => (0u8, t.as_bytes()),
            Outgoing::Binary(b) => (1u8, &b[..]),
        };
        out.push(marker);
        let at = out.len();
        push_decimal(&mut out, (data.len() + usize::from(marker)) as u64);
        // The length's digits go as numbers, one byte each.
        out[at..].iter_mut().for_each(|d| *d -= b'0');
        out.push(0xff);
        if marker == 1 {
            out.push(MESSAGE_TYPE);
        }
        out.extend_from_slice(data);
    }
    out
}

/// A binary message's type byte (a v3 WebSocket binary frame starts with it too).
pub const MESSAGE_TYPE: u8 = 4;

/// A session's polling payload of `packets`: text, or binary (XHR2) when it carries binary
/// data and the client takes binary payloads; true for binary.
pub fn encode_payload(packets: &[Outgoing], binary_ok: bool) -> (Vec<u8>, bool) {
    if binary_ok && packets.iter().any(|p| matches!(p, Outgoing::Binary(_))) {
        (encode_binary(packets), true)
    } else {
        (encode_text(packets), false)
    }
}

/// A payload read as either framing (a text payload starts with a length digit, a binary
/// one with its 0 or 1 marker byte): its packets one by one, borrowed from the body. After a
/// malformed packet there are no more.
pub fn decode_payload(body: &[u8]) -> Result<Payload<'_>, Malformed> {
    match body.first() {
        None => Err(Malformed),
        Some(0 | 1) => Ok(Payload::Binary(body)),
        Some(_) => Ok(Payload::Text(
            std::str::from_utf8(body).map_err(|_| Malformed)?,
        )),
    }
}

/// What is left of a payload being decoded (`decode_payload`).
#[derive(Debug)]
pub enum Payload<'a> {
    /// A text payload.
    Text(&'a str),
    /// A binary (XHR2) payload.
    Binary(&'a [u8]),
}

impl<'a> Iterator for Payload<'a> {
    type Item = Result<Packet<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let next = match *self {
                Payload::Text("") | Payload::Binary([]) => return None,
                Payload::Text(rest) => next_text(rest).map(|(p, rest)| (p, Payload::Text(rest))),
                Payload::Binary(rest) => {
                    next_binary(rest).map(|(p, rest)| (Some(p), Payload::Binary(rest)))
                }
            };
            match next {
                // `0:`, an empty packet (what an empty payload is): nothing to take.
                Ok((None, rest)) => *self = rest,
                Ok((Some(p), rest)) => {
                    *self = rest;
                    return Some(Ok(p));
                }
                Err(e) => {
                    *self = Payload::Text("");
                    return Some(Err(e));
                }
            }
        }
    }
}

/// The first packet of a text payload (`None`: an empty one) and the rest.
fn next_text(body: &str) -> Result<(Option<Packet<'_>>, &str), Malformed> {
    let colon = (body.bytes().take(MAX_DIGITS + 1))
        .position(|b| b == b':')
        .ok_or(Malformed)?;
    let digits = &body[..colon];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Malformed);
    }
    let units: usize = digits.parse().map_err(|_| Malformed)?;
    let after = &body[colon + 1..];
    // Take `units` UTF-16 code units: never half a surrogate pair.
    let (mut taken, mut end) = (0, 0);
    for c in after.chars() {
        if taken >= units {
            break;
        }
        taken += c.len_utf16();
        end += c.len_utf8();
    }
    if taken != units {
        return Err(Malformed);
    }
    let (packet, rest) = after.split_at(end);
    let packet = (!packet.is_empty()).then(|| decode_frame(packet));
    Ok((packet.transpose()?, rest))
}

/// A packet of a payload or WebSocket frame as a session takes it.
pub fn to_packet(
    p: Result<Packet<'_>, Malformed>,
) -> Result<super::packet::Packet<'_>, EngineError> {
    match p.map_err(|_| EngineError::BadPacket)? {
        Packet::Text(t) => super::packet::decode_text(t),
        Packet::Binary(data) => Ok(super::packet::Packet::Binary(data.into_owned())),
    }
}

/// One text packet: of a text payload, or a WebSocket text frame (where a client that forces
/// base64 sends binary as `b4<base64>` too).
pub fn decode_frame(text: &str) -> Result<Packet<'_>, Malformed> {
    match text.strip_prefix('b') {
        None => Ok(Packet::Text(text)),
        Some(b64) => {
            let data = b64.strip_prefix('4').ok_or(Malformed)?;
            let data = base64::decode(data.as_bytes()).ok_or(Malformed)?;
            Ok(Packet::Binary(data.into()))
        }
    }
}

/// The first packet of a binary payload and the rest.
fn next_binary(body: &[u8]) -> Result<(Packet<'_>, &[u8]), Malformed> {
    let (&marker, rest) = body.split_first().ok_or(Malformed)?;
    let end = (rest.iter().take(MAX_DIGITS + 1))
        .position(|b| *b == 0xff)
        .ok_or(Malformed)?;
    let digits = &rest[..end];
    if marker > 1 || digits.is_empty() {
        return Err(Malformed);
    }
    let len = digits.iter().try_fold(0usize, |n, &d| {
        (d <= 9)
            .then(|| n.checked_mul(10)?.checked_add(usize::from(d)))
            .flatten()
    });
    let len = len.ok_or(Malformed)?;
    let rest = &rest[end + 1..];
    let packet = rest.get(..len).ok_or(Malformed)?;
    let packet = if marker == 0 {
        Packet::Text(std::str::from_utf8(packet).map_err(|_| Malformed)?)
    } else {
        match packet.split_first() {
            Some((&MESSAGE_TYPE, data)) => Packet::Binary(data.into()),
            _ => return Err(Malformed),
        }
    };
    Ok((packet, &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::hex;
    use rand::rngs::StdRng;
    use rand::{RngExt as _, SeedableRng};

    /// Every packet of a payload, or its error.
    fn all(body: &[u8]) -> Result<Vec<Packet<'_>>, Malformed> {
        decode_payload(body)?.collect()
    }

    /// The packets a payload of `out` decodes to.
    fn packets(out: &[Outgoing]) -> Vec<Packet<'_>> {
        (out.iter())
            .map(|p| match p {
                Outgoing::Text(t) => Packet::Text(t.as_str()),
                Outgoing::Binary(b) => Packet::Binary(Cow::Borrowed(b)),
            })
            .collect()
    }

    fn text(s: &str) -> Outgoing {
        Outgoing::Text(s.into())
    }

    /// Payloads engine.io-parser 2.2.1's `encodePayload` wrote, in Node.
    #[test]
    fn as_engine_io_parser_2_writes_them() {
        let three = [text("4€"), text("4🎉x"), text("2")];
        assert_eq!(encode_text(&three), "2:4€4:4🎉x1:2".as_bytes());
        assert_eq!(all("2:4€4:4🎉x1:2".as_bytes()), Ok(packets(&three)));
        let mixed = [Outgoing::binary(vec![1u8, 2, 3]), text("4hé")];
        let xhr2 = hex("0104ff040102030004ff3468c3a9");
        assert_eq!(encode_text(&mixed), "6:b4AQID3:4hé".as_bytes());
        assert_eq!(all("6:b4AQID3:4hé".as_bytes()), Ok(packets(&mixed)));
        assert_eq!(encode_binary(&mixed), xhr2);
        assert_eq!(all(&xhr2), Ok(packets(&mixed)));
        assert_eq!(encode_payload(&mixed, true), (xhr2, true));
        assert_eq!(
            encode_payload(&mixed, false),
            ("6:b4AQID3:4hé".as_bytes().to_vec(), false)
        );
        assert!(!encode_payload(&three, true).1, "text only: text");
        assert_eq!(encode_text(&[]), b"0:");
        assert_eq!(all(b"0:"), Ok(vec![]));
    }

    #[test]
    fn lengths_never_split_a_character() {
        // `4🎉` is 3 units: a length of 2 would end inside the emoji.
        assert_eq!(all("2:4🎉".as_bytes()), Err(Malformed));
        assert_eq!(all("3:4🎉".as_bytes()), Ok(vec![Packet::Text("4🎉")]));
        // engine.io-parser refuses what is left after the last packet.
        assert_eq!(all("3:4🎉x".as_bytes()), Err(Malformed));
        for bad in [
            "",
            ":4",
            "a:4",
            "1:",
            "5:4abc",
            "2:b4!!",
            "3:b2AA",
            "99999999999:4",
            "-1:4",
        ] {
            assert_eq!(all(bad.as_bytes()), Err(Malformed), "{bad:?}");
        }
        let bad_binary: [&[u8]; 6] = [
            b"\x02\x01\xff4",
            b"\x00\x05\xff4",
            b"\x00\x0a\xff4",
            b"\x01\xff",
            b"\x01\x02\xff\x02\x01",
            b"\x00\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\xff4",
        ];
        for bad in bad_binary {
            assert_eq!(all(bad), Err(Malformed), "{bad:02x?}");
        }
        // The packets before a malformed one are read; none after it.
        let mut p = decode_payload(b"1:61:6x").unwrap();
        assert_eq!(p.next(), Some(Ok(Packet::Text("6"))));
        assert_eq!(p.next(), Some(Ok(Packet::Text("6"))));
        assert_eq!(p.next(), Some(Err(Malformed)));
        assert_eq!(p.next(), None);
    }

    #[test]
    fn round_trips_and_never_panics() {
        let mut rng = StdRng::seed_from_u64(3);
        let chars = ['a', 'é', '€', '🎉', ':', '0', 'b'];
        for _ in 0..2000 {
            let out: Vec<Outgoing> = (0..rng.random_range(1..5))
                .map(|_| {
                    if rng.random_range(0..4) == 0 {
                        let data: Vec<u8> =
                            (0..rng.random_range(0..20)).map(|_| rng.random()).collect();
                        Outgoing::binary(data)
                    } else {
                        let body: String = (0..rng.random_range(0..12))
                            .map(|_| chars[rng.random_range(0..chars.len())])
                            .collect();
                        text(&format!("4{body}"))
                    }
                })
                .collect();
            let t = encode_text(&out);
            assert_eq!(all(&t), Ok(packets(&out)), "{t:?}");
            let b = encode_binary(&out);
            assert_eq!(all(&b), Ok(packets(&out)));
            // Cut anywhere: an error or fewer packets, never a panic.
            let _ = all(&b[..rng.random_range(0..=b.len())]);
            let _ = all(&t[..rng.random_range(0..=t.len())]);
        }
    }
}
