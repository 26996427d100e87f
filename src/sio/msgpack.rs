//! socket.io-msgpack-parser's wire: each Socket.IO packet is one binary Engine.IO message, a
//! MessagePack map `{type, nsp, data, id}` (`id` only with an ack id; an `options` key the npm
//! client adds to events is ignored). There are no attachments: binary data sits inline as
//! `bin`. This layer speaks JSON text to the application, so the codec transcodes: `decode`
//! turns a packet's data into JSON text (each `bin` into an attachment placeholder, its bytes
//! into an attachment, as the JSON parser's binary events have them), `encode` turns JSON text
//! (and attachments) back into MessagePack.
//!
//! Written here rather than taken from a crate: it goes straight between JSON text and
//! MessagePack bytes, with no value tree in between, and the format's part it needs is small
//! (the tests check it against `rmp`, a well-kept implementation). What the npm client
//! (notepack.io) sends is accepted: `undefined` as the extension `d4 00 00` (a CONNECT without
//! auth has `data: undefined`), floats as float64, integers in their smallest encoding. Pure
//! data: no I/O here.

use serde_json::Value;

use super::error::SioError;
use super::packet::{self, PacketType, push_decimal, write_json_string};
use crate::engine::Outgoing;

/// Deepest nesting of arrays and maps accepted in a packet's data (serde_json's limit for the
/// JSON parser's packets).
pub const MAX_DEPTH: usize = 128;

/// A decoded packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The type (`BinaryEvent` or `BinaryAck` when its data held `bin`).
    pub kind: PacketType,
    /// The namespace.
    pub nsp: String,
    /// The ack id.
    pub id: Option<u64>,
    /// The data as JSON text (`None`: absent or `undefined`).
    pub data: Option<String>,
    /// The bytes of each `bin` in the data, in order (their placeholders count from 0).
    pub attachments: Vec<Vec<u8>>,
}

/// Decodes one packet, checking what socket.io's msgpack decoder checks: a `type` from 0 to
/// 4, a string `nsp`, an integer `id` if any, and data that fits the type (an object or
/// nothing for CONNECT, nothing for DISCONNECT, a non-empty array starting with a string for
/// EVENT, an array for ACK). Its data as JSON text is at most `max_text` bytes, with at most
/// `MAX_ATTACHMENTS` `bin`s, and no key appears twice.
pub fn decode(bytes: &[u8], max_text: usize) -> Result<Decoded, SioError> {
    let mut r = Reader {
        bytes,
        at: 0,
        max_text,
    };
    let fields = r.map_len()?;
    let (mut kind, mut nsp, mut id, mut data) = (None, None, None, None);
    let mut attachments = Vec::new();
    let mut seen = [false; 4];
    for _ in 0..fields {
        let key = r.str()?;
        let slot = ["type", "nsp", "id", "data"].iter().position(|k| *k == key);
        if let Some(i) = slot {
            if seen[i] {
                return Err(SioError::BadPayload);
            }
            seen[i] = true;
        }
        match key {
            "type" => kind = Some(r.uint()?),
            "nsp" => nsp = Some(r.str()?.to_string()),
            "id" => id = Some(r.uint()?),
            "data" => {
                let mut json = String::new();
                if r.value(&mut json, &mut attachments, 0)? {
                    data = Some(json);
                }
            }
            _ => r.skip(0)?,
        }
    }
    if r.at != bytes.len() {
        return Err(SioError::BadPayload);
    }
    let kind = match kind.ok_or(SioError::UnknownType)? {
        0 => PacketType::Connect,
        1 => PacketType::Disconnect,
        2 => PacketType::Event,
        3 => PacketType::Ack,
        4 => PacketType::ConnectError,
        _ => return Err(SioError::UnknownType),
    };
    let nsp = nsp.ok_or(SioError::BadPayload)?;
    let first = data.as_deref().map(|d| d.as_bytes()[0]);
    let fits = match kind {
        PacketType::Connect => matches!(first, None | Some(b'{')),
        PacketType::Disconnect => first.is_none(),
        PacketType::Event => {
            data.as_deref().is_some_and(|d| d.starts_with("[\"")) // an array, a name first
        }
        PacketType::Ack => first == Some(b'['),
        _ => false, // clients never send CONNECT_ERROR
    };
    if !fits {
        return Err(SioError::BadPayload);
    }
    let kind = match kind {
        PacketType::Event if !attachments.is_empty() => PacketType::BinaryEvent,
        PacketType::Ack if !attachments.is_empty() => PacketType::BinaryAck,
        k => k,
    };
    Ok(Decoded {
        kind,
        nsp,
        id,
        data,
        attachments,
    })
}

/// Encodes one packet: `data` is JSON text (its attachment placeholders become `bin` with the
/// bytes of `attachments`). `None` if `data` is not JSON or a placeholder names no attachment.
pub fn encode(
    kind: PacketType,
    nsp: &str,
    id: Option<u64>,
    data: Option<&str>,
    attachments: &[&[u8]],
) -> Option<Vec<u8>> {
    // As socket.io-parser's `reconstructPacket`: placeholders only in binary packets.
    let attachments = kind.is_binary().then_some(attachments);
    let kind = match kind {
        PacketType::BinaryEvent => PacketType::Event,
        PacketType::BinaryAck => PacketType::Ack,
        k => k,
    };
    let data = match data {
        Some(d) => Some(serde_json::from_str::<Value>(d).ok()?),
        None => None,
    };
    let mut out = Vec::with_capacity(32 + nsp.len());
    let fields = 2 + usize::from(data.is_some()) + usize::from(id.is_some());
    out.push(0x80 | fields as u8);
    write_str(&mut out, "type");
    out.push(kind as u8);
    write_str(&mut out, "nsp");
    write_str(&mut out, nsp);
    if let Some(data) = &data {
        write_str(&mut out, "data");
        write_value(&mut out, data, attachments)?;
    }
    if let Some(id) = id {
        write_str(&mut out, "id");
        write_uint(&mut out, id);
    }
    Some(out)
}

/// A packet this layer wrote for the JSON parser (the Engine.IO message `4…`, then its
/// attachments) as the one binary message the msgpack parser sends instead.
pub fn from_messages(messages: &[Outgoing]) -> Option<Outgoing> {
    let Outgoing::Text(text) = messages.first()? else {
        return None;
    };
    let p = packet::split(text.as_str().get(1..)?).ok()?;
    let attachments: Vec<&[u8]> = (messages[1..].iter())
        .filter_map(|m| match m {
            Outgoing::Binary(b) => Some(&b[..]),
            Outgoing::Text(_) => None,
        })
        .collect();
    encode(p.kind, p.nsp, p.id, p.data, &attachments).map(Outgoing::binary)
}

/// A decoded packet as the JSON parser's text (placeholders where its attachments go).
pub fn to_text(d: &Decoded) -> String {
    let mut out = String::with_capacity(16 + d.data.as_ref().map_or(0, String::len));
    let data = d.data.as_deref();
    packet::encode(&mut out, d.kind, &d.nsp, d.attachments.len(), d.id, data);
    out
}

/// The keys of one map read so far: a few on the stack, a set past them.
#[derive(Default)]
struct Keys<'a> {
    few: [&'a str; 8],
    n: usize,
    many: Option<std::collections::HashSet<&'a str>>,
}

impl<'a> Keys<'a> {
    /// Adds `key`; false if it is there already.
    fn insert(&mut self, key: &'a str) -> bool {
        if let Some(many) = &mut self.many {
            return many.insert(key);
        }
        if self.few[..self.n].contains(&key) {
            return false;
        }
        if self.n < self.few.len() {
            self.few[self.n] = key;
            self.n += 1;
        } else {
            let mut many: std::collections::HashSet<&str> = self.few.iter().copied().collect();
            many.insert(key);
            self.many = Some(many);
        }
        true
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    let n = s.len();
    match n {
        0..=31 => out.push(0xa0 | n as u8),
        32..=0xff => out.extend_from_slice(&[0xd9, n as u8]),
        0x100..=0xffff => {
            out.push(0xda);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdb);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(s.as_bytes());
}

fn write_bin(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len();
    match n {
        0..=0xff => out.extend_from_slice(&[0xc4, n as u8]),
        0x100..=0xffff => {
            out.push(0xc5);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(0xc6);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(b);
}

fn write_uint(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=0x7f => out.push(n as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, n as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(0xcf);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

fn write_int(out: &mut Vec<u8>, n: i64) {
    if n >= 0 {
        return write_uint(out, n as u64);
    }
    match n {
        -32..=-1 => out.push(n as u8),
        -0x80..=-33 => out.extend_from_slice(&[0xd0, n as u8]),
        -0x8000..=-0x81 => {
            out.push(0xd1);
            out.extend_from_slice(&(n as i16).to_be_bytes());
        }
        -0x8000_0000..=-0x8001 => {
            out.push(0xd2);
            out.extend_from_slice(&(n as i32).to_be_bytes());
        }
        _ => {
            out.push(0xd3);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

fn write_len(out: &mut Vec<u8>, n: usize, fix: u8, small: u8) {
    match n {
        0..=15 => out.push(fix | n as u8),
        16..=0xffff => {
            out.push(small);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(small + 1);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
}

/// Writes a JSON value; an attachment placeholder (`{"_placeholder":true,"num":N}`) as `bin`
/// when there are attachments (a binary packet's). Integral numbers are integers, as
/// notepack.io writes JavaScript's.
fn write_value(out: &mut Vec<u8>, v: &Value, attachments: Option<&[&[u8]]>) -> Option<()> {
    match v {
        Value::Null => out.push(0xc0),
        Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                write_uint(out, u);
            } else if let Some(i) = n.as_i64() {
                write_int(out, i);
            } else {
                let f = n.as_f64()?;
                if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
                    write_int(out, f as i64);
                } else {
                    out.push(0xcb);
                    out.extend_from_slice(&f.to_be_bytes());
                }
            }
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            write_len(out, items.len(), 0x90, 0xdc);
            for item in items {
                write_value(out, item, attachments)?;
            }
        }
        Value::Object(map) => {
            if let Some(attachments) = attachments
                && map.len() == 2
                && map.get("_placeholder") == Some(&Value::Bool(true))
            {
                let num = map.get("num")?.as_u64()?;
                write_bin(out, attachments.get(usize::try_from(num).ok()?)?);
                return Some(());
            }
            write_len(out, map.len(), 0x80, 0xde);
            for (k, item) in map {
                write_str(out, k);
                write_value(out, item, attachments)?;
            }
        }
    }
    Some(())
}

/// A cursor over MessagePack bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Most bytes of JSON text a value may become.
    max_text: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SioError> {
        let end = self.at.checked_add(n).ok_or(SioError::BadPayload)?;
        let out = self.bytes.get(self.at..end).ok_or(SioError::BadPayload)?;
        self.at = end;
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8, SioError> {
        Ok(self.take(1)?[0])
    }

    fn be(&mut self, n: usize) -> Result<u64, SioError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0, |acc, b| acc << 8 | u64::from(*b)))
    }

    fn map_len(&mut self) -> Result<usize, SioError> {
        match self.byte()? {
            m @ 0x80..=0x8f => Ok(usize::from(m & 0x0f)),
            0xde => Ok(self.be(2)? as usize),
            0xdf => Ok(self.be(4)? as usize),
            _ => Err(SioError::BadPayload),
        }
    }

    /// The length of a string whose marker is `m`, if it is one.
    fn str_len(&mut self, m: u8) -> Result<Option<usize>, SioError> {
        Ok(Some(match m {
            0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9 => self.be(1)? as usize,
            0xda => self.be(2)? as usize,
            0xdb => self.be(4)? as usize,
            _ => return Ok(None),
        }))
    }

    fn str(&mut self) -> Result<&'a str, SioError> {
        let m = self.byte()?;
        let n = self.str_len(m)?.ok_or(SioError::BadPayload)?;
        std::str::from_utf8(self.take(n)?).map_err(|_| SioError::BadPayload)
    }

    /// An integer that fits 64 bits unsigned (a float with no fraction too: JavaScript's
    /// numbers are floats, and an encoder may send one).
    fn uint(&mut self) -> Result<u64, SioError> {
        let m = self.byte()?;
        let n = match m {
            0x00..=0x7f => u64::from(m),
            0xcc => self.be(1)?,
            0xcd => self.be(2)?,
            0xce => self.be(4)?,
            0xcf => self.be(8)?,
            0xd0..=0xd3 => {
                let n = self.sint(m)?;
                u64::try_from(n).map_err(|_| SioError::BadAckId)?
            }
            0xca | 0xcb => {
                let f = self.float(m)?;
                if f.fract() != 0.0 || !(0.0..9.007_199_254_740_992e15).contains(&f) {
                    return Err(SioError::BadAckId);
                }
                f as u64
            }
            _ => return Err(SioError::BadAckId),
        };
        Ok(n)
    }

    fn sint(&mut self, m: u8) -> Result<i64, SioError> {
        Ok(match m {
            0xd0 => i64::from(self.be(1)? as u8 as i8),
            0xd1 => i64::from(self.be(2)? as u16 as i16),
            0xd2 => i64::from(self.be(4)? as u32 as i32),
            _ => self.be(8)? as i64,
        })
    }

    fn float(&mut self, m: u8) -> Result<f64, SioError> {
        Ok(if m == 0xca {
            f64::from(f32::from_bits(self.be(4)? as u32))
        } else {
            f64::from_bits(self.be(8)?)
        })
    }

    /// Transcodes one value to JSON into `out`; false for `undefined` (nothing written).
    fn value(
        &mut self,
        out: &mut String,
        attachments: &mut Vec<Vec<u8>>,
        depth: usize,
    ) -> Result<bool, SioError> {
        if depth > MAX_DEPTH || out.len() > self.max_text {
            return Err(SioError::BadPayload);
        }
        let m = self.byte()?;
        if let Some(n) = self.str_len(m)? {
            let s = std::str::from_utf8(self.take(n)?).map_err(|_| SioError::BadPayload)?;
            write_json_string(out, s);
            return Ok(true);
        }
        match m {
            0x00..=0x7f => push_decimal(out, u64::from(m)),
            0xe0..=0xff => push_int(out, i64::from(m as i8)),
            0xc0 => out.push_str("null"),
            0xc2 => out.push_str("false"),
            0xc3 => out.push_str("true"),
            0xcc => push_decimal(out, self.be(1)?),
            0xcd => push_decimal(out, self.be(2)?),
            0xce => push_decimal(out, self.be(4)?),
            0xcf => push_decimal(out, self.be(8)?),
            0xd0..=0xd3 => {
                let n = self.sint(m)?;
                push_int(out, n);
            }
            0xca | 0xcb => {
                let f = self.float(m)?;
                match serde_json::Number::from_f64(f) {
                    // An integral number reads as an integer, as JSON.stringify writes it.
                    Some(_) if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => {
                        push_int(out, f as i64)
                    }
                    Some(n) => out.push_str(&n.to_string()),
                    // NaN and infinities are null in JSON, as JSON.stringify has them.
                    None => out.push_str("null"),
                }
            }
            0xc4..=0xc6 => {
                let n = self.be(1 << (m - 0xc4))? as usize;
                if attachments.len() >= packet::MAX_ATTACHMENTS {
                    return Err(SioError::BadAttachments);
                }
                let bytes = self.take(n)?.to_vec();
                out.push_str("{\"_placeholder\":true,\"num\":");
                push_decimal(out, attachments.len() as u64);
                out.push('}');
                attachments.push(bytes);
            }
            // `undefined` (notepack.io's fixext 1 of type 0).
            0xd4 => {
                if self.take(2)? != [0, 0] {
                    return Err(SioError::BadPayload);
                }
                return Ok(false);
            }
            0x90..=0x9f | 0xdc | 0xdd => {
                let n = match m {
                    0xdc => self.be(2)? as usize,
                    0xdd => self.be(4)? as usize,
                    _ => usize::from(m & 0x0f),
                };
                out.push('[');
                for i in 0..n {
                    if i > 0 {
                        out.push(',');
                    }
                    // `undefined` in an array is null in JSON.
                    if !self.value(out, attachments, depth + 1)? {
                        out.push_str("null");
                    }
                }
                out.push(']');
            }
            0x80..=0x8f | 0xde | 0xdf => {
                self.at -= 1;
                let n = self.map_len()?;
                out.push('{');
                let mut first = true;
                let mut keys = Keys::default();
                for _ in 0..n {
                    let key = self.str()?;
                    // The JSON parser's attachment marker, which msgpack has no use for: one
                    // here would pass for a `bin`. A key twice: JSON readers keep the last, and
                    // lose what the first held (a `bin` among it).
                    if key == "_placeholder" || !keys.insert(key) {
                        return Err(SioError::BadPayload);
                    }
                    let mark = out.len();
                    if !first {
                        out.push(',');
                    }
                    write_json_string(out, key);
                    out.push(':');
                    if self.value(out, attachments, depth + 1)? {
                        first = false;
                    } else {
                        // A key whose value is `undefined` is left out, as in JSON.
                        out.truncate(mark);
                    }
                }
                out.push('}');
            }
            _ => return Err(SioError::BadPayload),
        }
        if out.len() > self.max_text {
            return Err(SioError::BadPayload);
        }
        Ok(true)
    }

    /// Steps over one value (a key this layer does not read, such as `options`), reading
    /// lengths only.
    fn skip(&mut self, depth: usize) -> Result<(), SioError> {
        if depth > MAX_DEPTH {
            return Err(SioError::BadPayload);
        }
        let m = self.byte()?;
        let (skip, items) = match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0xa0..=0xbf => (usize::from(m & 0x1f), 0),
            0x90..=0x9f => (0, usize::from(m & 0x0f)),
            0x80..=0x8f => (0, 2 * usize::from(m & 0x0f)),
            0xc4 | 0xd9 => (self.be(1)? as usize, 0),
            0xc5 | 0xda => (self.be(2)? as usize, 0),
            0xc6 | 0xdb => (self.be(4)? as usize, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xce | 0xd2 | 0xca => (4, 0),
            0xcf | 0xd3 | 0xcb => (8, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xc7 => (self.be(1)? as usize + 1, 0),
            0xc8 => (self.be(2)? as usize + 1, 0),
            0xc9 => (self.be(4)? as usize + 1, 0),
            0xdc => (0, self.be(2)? as usize),
            0xdd => (0, self.be(4)? as usize),
            0xde => (0, 2 * self.be(2)? as usize),
            0xdf => (0, 2 * self.be(4)? as usize),
            _ => return Err(SioError::BadPayload),
        };
        self.take(skip)?;
        for _ in 0..items {
            self.skip(depth + 1)?;
        }
        Ok(())
    }
}

fn push_int(out: &mut String, n: i64) {
    if n < 0 {
        out.push('-');
    }
    push_decimal(out, n.unsigned_abs());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::hex;
    use rand::rngs::StdRng;
    use rand::{RngExt as _, SeedableRng};

    /// Decodes with a megabyte of JSON text at most.
    fn decode(bytes: &[u8]) -> Result<Decoded, SioError> {
        super::decode(bytes, 1 << 20)
    }

    /// What socket.io-msgpack-parser 3.0.2 (notepack.io) writes for `socket.emit(
    /// "sendMessage", {code: "123456", text: "hé"}, ack)` with ack id 3 (and its `options`).
    fn event_from_npm() -> Vec<u8> {
        hex(
            "85a47479706502a36e7370a12fa46461746192ab73656e644d65737361676582a4636f6465a631\
             3233343536a474657874a368c3a9a2696403a76f7074696f6e7381a8636f6d7072657373c3",
        )
    }

    #[test]
    fn decodes_what_the_npm_client_sends() {
        let d = decode(&event_from_npm()).unwrap();
        assert_eq!(d.kind, PacketType::Event);
        assert_eq!(d.nsp, "/");
        assert_eq!(d.id, Some(3));
        assert_eq!(
            d.data.as_deref(),
            Some(r#"["sendMessage",{"code":"123456","text":"hé"}]"#)
        );
    }

    /// Bytes socket.io-msgpack-parser 3.0.2's encoder (notepack.io) wrote, in Node.
    #[test]
    fn reads_and_writes_as_the_npm_parser_does() {
        let connect = decode(&hex("83a47479706500a36e7370a12fa464617461d40000")).unwrap();
        assert_eq!((connect.kind, connect.data), (PacketType::Connect, None));
        let claim = decode(&hex(
            "83a47479706500a36e7370a12fa46461746182a3706964a3616263a66f6666736574a3313233",
        ))
        .unwrap();
        assert_eq!(
            claim.data.as_deref(),
            Some(r#"{"pid":"abc","offset":"123"}"#)
        );
        let binary = decode(&hex(
            "83a47479706502a36e7370a12fa46461746195a466696c65c40200ffcb3ff8000000000000fd\
             cf0000010000000000",
        ))
        .unwrap();
        assert_eq!(binary.kind, PacketType::BinaryEvent);
        assert_eq!(
            binary.data.as_deref(),
            Some(r#"["file",{"_placeholder":true,"num":0},1.5,-3,1099511627776]"#)
        );
        assert_eq!(binary.attachments, vec![vec![0, 255]]);
        let again = encode(
            binary.kind,
            &binary.nsp,
            None,
            binary.data.as_deref(),
            &[&binary.attachments[0]],
        );
        assert_eq!(
            again.unwrap(),
            hex(
                "83a47479706502a36e7370a12fa46461746195a466696c65c40200ffcb3ff8000000000000fd\
                 cf0000010000000000"
            )
        );
        // An ack as the npm encoder writes it, byte for byte.
        let ack = encode(
            PacketType::Ack,
            "/",
            Some(1),
            Some(r#"[{"success":true}]"#),
            &[],
        );
        assert_eq!(
            ack.unwrap(),
            hex("84a47479706503a36e7370a12fa4646174619181a773756363657373c3a2696401")
        );
    }

    #[test]
    fn bin_becomes_an_attachment_and_back() {
        let data = r#"["file",{"_placeholder":true,"num":0},[1.5,-3,null]]"#;
        let bytes = encode(
            PacketType::BinaryEvent,
            "/chat",
            Some(7),
            Some(data),
            &[b"\x00\xff"],
        )
        .unwrap();
        let d = decode(&bytes).unwrap();
        assert_eq!(d.kind, PacketType::BinaryEvent);
        assert_eq!((d.nsp.as_str(), d.id), ("/chat", Some(7)));
        assert_eq!(d.data.as_deref(), Some(data));
        assert_eq!(d.attachments, vec![vec![0u8, 0xff]]);
    }

    #[test]
    fn refuses_what_socket_io_refuses() {
        let packet = |kind: u8, data: &[u8]| {
            let mut b = vec![0x83, 0xa4];
            b.extend_from_slice(b"type");
            b.push(kind);
            b.extend_from_slice(b"\xa3nsp\xa1/\xa4data");
            b.extend_from_slice(data);
            b
        };
        assert!(decode(&packet(2, b"\x91\xa1x")).is_ok());
        assert_eq!(
            decode(&packet(2, b"\x90")),
            Err(SioError::BadPayload),
            "no name"
        );
        assert_eq!(
            decode(&packet(2, b"\x91\x01")),
            Err(SioError::BadPayload),
            "a number"
        );
        assert_eq!(
            decode(&packet(0, b"\x90")),
            Err(SioError::BadPayload),
            "CONNECT"
        );
        assert_eq!(
            decode(&packet(3, b"\x80")),
            Err(SioError::BadPayload),
            "ACK"
        );
        assert_eq!(decode(&packet(5, b"\x90")), Err(SioError::UnknownType));
        assert_eq!(decode(&packet(4, b"\xa1x")), Err(SioError::BadPayload));
        let mut trailing = packet(2, b"\x91\xa1x");
        trailing.push(0);
        assert_eq!(decode(&trailing), Err(SioError::BadPayload));
        // Nested deeper than MAX_DEPTH.
        let mut deep = vec![0x92, 0xa1, b'x'];
        deep.extend(std::iter::repeat_n(0x91, MAX_DEPTH + 1));
        deep.push(0xc0);
        assert_eq!(decode(&packet(2, &deep)), Err(SioError::BadPayload));
    }

    #[test]
    fn what_the_json_parser_bounds_msgpack_bounds_too() {
        let event = |data: &[u8], extra: &[u8]| {
            let mut b = vec![0x83 + u8::from(!extra.is_empty())];
            b.extend_from_slice(b"\xa4type\x02\xa3nsp\xa1/\xa4data");
            b.extend_from_slice(data);
            b.extend_from_slice(extra);
            b
        };
        // A key twice (the first `data`'s bins would stay behind).
        let twice = event(b"\x92\xa1x\xc4\x01\x00", b"\xa4data\x91\xa1x");
        assert_eq!(decode(&twice), Err(SioError::BadPayload));
        // ... and in the data (found by fuzzing: the JSON text kept the placeholder under the
        // first `a`, which JSON readers drop for the second), in a small map and a large one.
        let inner = event(b"\x92\xa1x\x82\xa1a\xc4\x00\xa1a\x01", b"");
        assert_eq!(decode(&inner), Err(SioError::BadPayload));
        let mut large = vec![0x92, 0xa1, b'x', 0xde, 0x00, 20];
        for k in (b'a'..=b's').chain([b'c']) {
            large.extend_from_slice(&[0xa1, k, 0x01]);
        }
        assert_eq!(decode(&event(&large, b"")), Err(SioError::BadPayload));
        large[5] = 19;
        large.truncate(large.len() - 3);
        assert!(decode(&event(&large, b"")).is_ok(), "19 distinct keys");
        // The JSON parser's placeholder, written by the client.
        let fake = event(b"\x92\xa1x\x82\xac_placeholder\xc3\xa3num\x00", b"");
        assert_eq!(decode(&fake), Err(SioError::BadPayload));
        // More bins than attachments the JSON parser takes.
        let mut many = vec![0xdc, 0x00, 0x0c, 0xa1, b'x'];
        many.extend(std::iter::repeat_n([0xc4, 0x00], 11).flatten());
        assert_eq!(decode(&event(&many, b"")), Err(SioError::BadAttachments));
        // Text that would outgrow the payload bound: 4 000 control characters, 6 bytes each.
        let mut wide = vec![0x92, 0xa1, b'x', 0xda, 0x0f, 0xa0];
        wide.extend([1u8; 4000]);
        assert!(super::decode(&event(&wide, b""), 25_000).is_ok());
        assert_eq!(
            super::decode(&event(&wide, b""), 20_000),
            Err(SioError::BadPayload)
        );
        // A key this layer skips is stepped over, however many bins it holds.
        let mut options = b"\xa7options\xdc\xff\xff".to_vec();
        options.extend(std::iter::repeat_n([0xc4, 0x00], 0xffff).flatten());
        let d = decode(&event(b"\x91\xa1x", &options)).unwrap();
        assert_eq!(
            (d.data.as_deref(), d.attachments.len()),
            (Some(r#"["x"]"#), 0)
        );
    }

    #[test]
    fn integral_numbers_are_integers_as_in_javascript() {
        let bytes = encode(PacketType::Ack, "/", Some(1), Some("[1.0,-0.0,2.5]"), &[]);
        let bytes = bytes.unwrap();
        assert!(bytes.ends_with(b"\x93\x01\x00\xcb\x40\x04\x00\x00\x00\x00\x00\x00\xa2id\x01"));
        let mut float_one = vec![0x84];
        float_one.extend_from_slice(b"\xa4type\x03\xa3nsp\xa1/\xa2id\x01\xa4data");
        float_one.extend_from_slice(b"\x91\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00");
        assert_eq!(decode(&float_one).unwrap().data.as_deref(), Some("[1]"));
        // A placeholder in a packet that is not binary is data like any other.
        let plain = r#"["x",{"_placeholder":true,"num":0}]"#;
        let bytes = encode(PacketType::Event, "/", None, Some(plain), &[]).unwrap();
        assert!(bytes.windows(12).any(|w| w == b"_placeholder"));
    }

    #[test]
    fn agrees_with_rmp() {
        // Values written by rmp (an independent implementation) read back as the same JSON.
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..2000 {
            let v = random_value(&mut rng, 0);
            let mut wire = Vec::new();
            write_rmp(&mut wire, &v);
            let mut r = Reader {
                bytes: &wire,
                at: 0,
                max_text: usize::MAX,
            };
            let mut json = String::new();
            assert!(r.value(&mut json, &mut Vec::new(), 0).unwrap());
            let back: Value = serde_json::from_str(&json).unwrap();
            assert_eq!(back, v, "{json}");
            // And ours reads back the same.
            let mut mine = Vec::new();
            write_value(&mut mine, &v, None).unwrap();
            let mut r = Reader {
                bytes: &mine,
                at: 0,
                max_text: usize::MAX,
            };
            let mut again = String::new();
            r.value(&mut again, &mut Vec::new(), 0).unwrap();
            assert_eq!(again, json);
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = StdRng::seed_from_u64(11);
        let seed = event_from_npm();
        for _ in 0..20000 {
            let mut b = seed.clone();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..b.len());
                b[i] = rng.random();
            }
            b.truncate(rng.random_range(0..=b.len()));
            let _ = decode(&b);
        }
    }

    fn random_value(rng: &mut StdRng, depth: usize) -> Value {
        let leaf = depth > 3 || rng.random_range(0..3) > 0;
        match rng.random_range(0..if leaf { 6 } else { 8 }) {
            0 => Value::Null,
            1 => Value::Bool(rng.random()),
            2 => Value::from(rng.random::<i64>() >> rng.random_range(0..63)),
            3 => Value::from(rng.random::<u64>() >> rng.random_range(0..63)),
            4 => Value::from((rng.random::<f64>() - 0.5) * 1e6),
            5 => {
                let len = [0, 5, 31, 32, 300][rng.random_range(0..5)];
                Value::from(
                    (0..len)
                        .map(|i| ['a', 'é', '"', '\n', '𝄞'][i % 5])
                        .collect::<String>(),
                )
            }
            6 => Value::Array(
                (0..rng.random_range(0..20))
                    .map(|_| random_value(rng, depth + 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..rng.random_range(0..20))
                    .map(|i| (format!("k{i}"), random_value(rng, depth + 1)))
                    .collect(),
            ),
        }
    }

    fn write_rmp(out: &mut Vec<u8>, v: &Value) {
        use rmp::encode::*;
        match v {
            Value::Null => write_nil(out).unwrap(),
            Value::Bool(b) => write_bool(out, *b).unwrap(),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    write_uint(out, u).unwrap();
                } else if let Some(i) = n.as_i64() {
                    write_sint(out, i).unwrap();
                } else {
                    write_f64(out, n.as_f64().unwrap()).unwrap();
                }
            }
            Value::String(s) => write_str(out, s).unwrap(),
            Value::Array(a) => {
                write_array_len(out, a.len() as u32).unwrap();
                for item in a {
                    write_rmp(out, item);
                }
            }
            Value::Object(m) => {
                write_map_len(out, m.len() as u32).unwrap();
                for (k, item) in m {
                    write_str(out, k).unwrap();
                    write_rmp(out, item);
                }
            }
        }
    }
}
