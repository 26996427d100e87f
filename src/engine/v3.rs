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

use std::io::Write as _;

use super::base64;
use super::packet::Outgoing;

/// One packet of a payload: a text packet (type digit first) or a binary one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// `4hello`, `2`, `3probe`…
    Text(String),
    /// A binary packet: its type (4, a message) and its data.
    Binary(u8, Vec<u8>),
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
                push_decimal(&mut out, utf16_len(t));
                out.push(b':');
                out.extend_from_slice(t.as_bytes());
            }
            Outgoing::Binary(data) => {
                push_decimal(&mut out, 2 + data.len().div_ceil(3) * 4);
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
        push_decimal(&mut out, data.len() + usize::from(marker));
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

fn push_decimal(out: &mut Vec<u8>, n: usize) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{n}");
}

/// A session's polling payload of `packets`: text, or binary (XHR2) when it carries binary
/// data and the client takes binary payloads; true for binary.
pub fn encode_payload(packets: &[Outgoing], binary_ok: bool) -> (Vec<u8>, bool) {
    if binary_ok && packets.iter().any(|p| matches!(p, Outgoing::Binary(_))) {
        (encode_binary(packets), true)
    } else {
        (encode_text(packets), false)
    }
}

/// A payload read as either framing: a text payload starts with a length digit, a binary
/// one with its 0 or 1 marker byte.
pub fn decode_payload(body: &[u8]) -> Result<Vec<Packet>, Malformed> {
    match body.first() {
        Some(0 | 1) => decode_binary(body),
        _ => decode_text(std::str::from_utf8(body).map_err(|_| Malformed)?),
    }
}

/// Decodes a text payload (a POST body of socket.io-client 2.x without binary data).
pub fn decode_text(body: &str) -> Result<Vec<Packet>, Malformed> {
    let mut out = Vec::new();
    let mut rest = body;
    if rest.is_empty() {
        return Err(Malformed);
    }
    while !rest.is_empty() {
        let colon = rest.find(':').ok_or(Malformed)?;
        let digits = &rest[..colon];
        if digits.is_empty()
            || digits.len() > MAX_DIGITS
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(Malformed);
        }
        let units: usize = digits.parse().map_err(|_| Malformed)?;
        let after = &rest[colon + 1..];
        // Take `units` UTF-16 code units: never half a surrogate pair.
        let mut taken = 0;
        let mut end = 0;
        for c in after.chars() {
            if taken == units {
                break;
            }
            taken += c.len_utf16();
            end += c.len_utf8();
        }
        if taken != units {
            return Err(Malformed);
        }
        let packet = &after[..end];
        if !packet.is_empty() {
            out.push(text_packet(packet)?);
        }
        rest = &after[end..];
    }
    Ok(out)
}

/// A packet of a text payload: `b<type><base64>` is binary.
fn text_packet(p: &str) -> Result<Packet, Malformed> {
    match p.strip_prefix('b') {
        Some(b64) => {
            let kind = b64
                .bytes()
                .next()
                .filter(u8::is_ascii_digit)
                .ok_or(Malformed)?
                - b'0';
            let data = base64::decode(&b64.as_bytes()[1..]).ok_or(Malformed)?;
            Ok(Packet::Binary(kind, data))
        }
        None => Ok(Packet::Text(p.to_string())),
    }
}

/// Decodes a binary (XHR2) payload.
pub fn decode_binary(mut body: &[u8]) -> Result<Vec<Packet>, Malformed> {
    let mut out = Vec::new();
    if body.is_empty() {
        return Err(Malformed);
    }
    while let Some((&marker, rest)) = body.split_first() {
        let end = rest.iter().position(|b| *b == 0xff).ok_or(Malformed)?;
        let digits = &rest[..end];
        if marker > 1
            || digits.is_empty()
            || digits.len() > MAX_DIGITS
            || digits.iter().any(|d| *d > 9)
        {
            return Err(Malformed);
        }
        let len = digits.iter().fold(0usize, |n, d| n * 10 + usize::from(*d));
        let start = end + 1;
        let packet = rest
            .get(start..start.checked_add(len).ok_or(Malformed)?)
            .ok_or(Malformed)?;
        out.push(if marker == 0 {
            Packet::Text(
                std::str::from_utf8(packet)
                    .map_err(|_| Malformed)?
                    .to_string(),
            )
        } else {
            let (&kind, data) = packet.split_first().ok_or(Malformed)?;
            Packet::Binary(kind, data.to_vec())
        });
        body = &rest[start + len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt as _, SeedableRng};

    fn text(s: &str) -> Packet {
        Packet::Text(s.to_string())
    }

    fn outgoing(p: &Packet) -> Outgoing {
        match p {
            Packet::Text(t) => Outgoing::Text(t.as_str().into()),
            Packet::Binary(_, d) => Outgoing::binary(d.clone()),
        }
    }

    fn out(packets: &[Packet]) -> Vec<Outgoing> {
        packets.iter().map(outgoing).collect()
    }

    fn text_payload(packets: &[Packet]) -> String {
        String::from_utf8(encode_text(&out(packets))).unwrap()
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Payloads engine.io-parser 2.2.1's `encodePayload` wrote, in Node.
    #[test]
    fn as_engine_io_parser_2_writes_them() {
        let three = [text("4€"), text("4🎉x"), text("2")];
        assert_eq!(text_payload(&three), "2:4€4:4🎉x1:2");
        assert_eq!(decode_text("2:4€4:4🎉x1:2").unwrap(), three);
        let mixed = [Packet::Binary(4, vec![1, 2, 3]), text("4hé")];
        assert_eq!(text_payload(&mixed), "6:b4AQID3:4hé");
        assert_eq!(decode_text("6:b4AQID3:4hé").unwrap(), mixed);
        assert_eq!(
            encode_binary(&out(&mixed)),
            hex("0104ff040102030004ff3468c3a9")
        );
        assert_eq!(
            encode_payload(&out(&mixed), true),
            (hex("0104ff040102030004ff3468c3a9"), true)
        );
        assert_eq!(
            encode_payload(&out(&mixed), false),
            (b"6:b4AQID3:4h\xc3\xa9".to_vec(), false)
        );
        assert!(!encode_payload(&out(&three), true).1, "text only: text");
        assert_eq!(
            decode_payload(&hex("0104ff040102030004ff3468c3a9")).unwrap(),
            mixed
        );
        assert_eq!(decode_payload("6:b4AQID3:4hé".as_bytes()).unwrap(), mixed);
        assert_eq!(
            decode_binary(&hex("0104ff040102030004ff3468c3a9")).unwrap(),
            mixed
        );
        assert_eq!(text_payload(&[]), "0:");
        assert_eq!(decode_text("0:").unwrap(), vec![]);
    }

    #[test]
    fn lengths_never_split_a_character() {
        // `4🎉` is 3 units: a length of 2 would end inside the emoji.
        assert_eq!(decode_text("2:4🎉"), Err(Malformed));
        assert_eq!(decode_text("3:4🎉"), Ok(vec![text("4🎉")]));
        // engine.io-parser refuses what is left after the last packet.
        assert_eq!(decode_text("3:4🎉x"), Err(Malformed));
        for bad in [
            "",
            ":4",
            "a:4",
            "1:",
            "5:4abc",
            "2:b4!!",
            "99999999999:4",
            "-1:4",
        ] {
            assert_eq!(decode_text(bad), Err(Malformed), "{bad:?}");
        }
        let bad_binary: [&[u8]; 5] = [
            b"",
            b"\x02\x01\xff4",
            b"\x00\x05\xff4",
            b"\x00\x0a\xff4",
            b"\x01\xff",
        ];
        for bad in bad_binary {
            assert_eq!(decode_binary(bad), Err(Malformed), "{bad:02x?}");
        }
    }

    #[test]
    fn round_trips_and_never_panics() {
        let mut rng = StdRng::seed_from_u64(3);
        let chars = ['a', 'é', '€', '🎉', ':', '0', 'b'];
        for _ in 0..2000 {
            let packets: Vec<Packet> = (0..rng.random_range(1..5))
                .map(|_| {
                    if rng.random_range(0..4) == 0 {
                        Packet::Binary(
                            4,
                            (0..rng.random_range(0..20)).map(|_| rng.random()).collect(),
                        )
                    } else {
                        let body: String = (0..rng.random_range(0..12))
                            .map(|_| chars[rng.random_range(0..chars.len())])
                            .collect();
                        Packet::Text(format!("4{body}"))
                    }
                })
                .collect();
            let t = text_payload(&packets);
            assert_eq!(decode_text(&t).unwrap(), packets, "{t}");
            let b = encode_binary(&out(&packets));
            let _ = decode_payload(&b[..rng.random_range(0..=b.len())]);
            assert_eq!(decode_binary(&b).unwrap(), packets);
            // Cut anywhere: an error or fewer packets, never a panic.
            let cut = rng.random_range(0..=b.len());
            let _ = decode_binary(&b[..cut]);
            let mut at = rng.random_range(0..=t.len());
            while !t.is_char_boundary(at) {
                at -= 1;
            }
            let _ = decode_text(&t[..at]);
        }
    }
}
