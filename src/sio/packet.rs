//! Socket.IO v5 packets: decoding and encoding, pure and allocation-light.
//!
//! `<type>[<attachments>-][<namespace>,][<ack id>][<JSON data>]`, e.g. `2["hello",1]`,
//! `451-/admin,1["up",{"_placeholder":true,"num":0}]`. Decoding borrows from the input: the
//! data stays raw JSON (`&str`) until the layer above parses what it needs.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::SioError;

/// Most binary attachments accepted in one packet.
pub const MAX_ATTACHMENTS: usize = 10;

/// Packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    /// `0`
    Connect,
    /// `1`
    Disconnect,
    /// `2`
    Event,
    /// `3`
    Ack,
    /// `4`
    ConnectError,
    /// `5`
    BinaryEvent,
    /// `6`
    BinaryAck,
}

impl PacketType {
    fn from_digit(c: u8) -> Option<Self> {
        Some(match c {
            b'0' => PacketType::Connect,
            b'1' => PacketType::Disconnect,
            b'2' => PacketType::Event,
            b'3' => PacketType::Ack,
            b'4' => PacketType::ConnectError,
            b'5' => PacketType::BinaryEvent,
            b'6' => PacketType::BinaryAck,
            _ => return None,
        })
    }

    fn digit(self) -> char {
        match self {
            PacketType::Connect => '0',
            PacketType::Disconnect => '1',
            PacketType::Event => '2',
            PacketType::Ack => '3',
            PacketType::ConnectError => '4',
            PacketType::BinaryEvent => '5',
            PacketType::BinaryAck => '6',
        }
    }

    /// Whether binary attachments follow this packet.
    pub fn is_binary(self) -> bool {
        matches!(self, PacketType::BinaryEvent | PacketType::BinaryAck)
    }
}

/// A decoded packet, borrowing from the text it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The type.
    pub kind: PacketType,
    /// Number of binary attachments that follow (binary types only).
    pub attachments: usize,
    /// The namespace (`/` by default).
    pub nsp: &'a str,
    /// The ack id.
    pub id: Option<u64>,
    /// The JSON data, raw (validated: see `decode`).
    pub data: Option<&'a str>,
}

/// Decodes a packet and checks that its data fits its type: an object (or nothing) for
/// CONNECT, nothing for DISCONNECT, a non-empty array starting with a string for events, an
/// array for acks. Clients never send CONNECT_ERROR.
pub fn decode(s: &str) -> Result<Packet<'_>, SioError> {
    decode_parts(s).map(|(p, _)| p)
}

/// An event's name and raw arguments.
pub type EventParts<'a> = (Cow<'a, str>, Vec<&'a RawValue>);

/// Like `decode`, and for events also the name and arguments, split once while validating.
pub fn decode_parts(s: &str) -> Result<(Packet<'_>, Option<EventParts<'_>>), SioError> {
    let packet = split(s)?;
    let parts = validate(&packet)?;
    Ok((packet, parts))
}

/// Reads a packet's head (type, attachment count, namespace, ack id) and takes the rest as its
/// data, unchecked: `decode_parts` checks what clients send.
pub fn split(s: &str) -> Result<Packet<'_>, SioError> {
    let bytes = s.as_bytes();
    let kind = bytes
        .first()
        .and_then(|&c| PacketType::from_digit(c))
        .ok_or(SioError::UnknownType)?;
    let mut i = 1;
    let mut attachments = 0;
    if kind.is_binary() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i - start > 2 || bytes.get(i) != Some(&b'-') {
            return Err(SioError::BadAttachments);
        }
        attachments = s[start..i].parse().map_err(|_| SioError::BadAttachments)?;
        if attachments > MAX_ATTACHMENTS {
            return Err(SioError::BadAttachments);
        }
        i += 1;
    }
    let mut nsp = "/";
    if bytes.get(i) == Some(&b'/') {
        let end = s[i..].find(',').map_or(s.len(), |p| i + p);
        nsp = &s[i..end];
        i = (end + 1).min(s.len());
    }
    let start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    let id = if i > start {
        Some(s[start..i].parse::<u64>().map_err(|_| SioError::BadAckId)?)
    } else {
        None
    };
    let data = (i < s.len()).then(|| &s[i..]);
    Ok(Packet {
        kind,
        attachments,
        nsp,
        id,
        data,
    })
}

fn validate<'a>(p: &Packet<'a>) -> Result<Option<EventParts<'a>>, SioError> {
    let first = p.data.map(|d| d.trim_start().as_bytes().first().copied());
    match (p.kind, first) {
        (PacketType::Connect, None) | (PacketType::Disconnect, None) => Ok(None),
        (PacketType::Connect, Some(Some(b'{'))) => {
            serde_json::from_str::<&RawValue>(p.data.unwrap_or(""))
                .map_err(|_| SioError::BadPayload)?;
            Ok(None)
        }
        // The name must decode as a string (a lone surrogate escape is valid raw JSON but not
        // a string): `split_event` checks that.
        (PacketType::Event | PacketType::BinaryEvent, Some(Some(b'['))) => {
            split_event(p.data.unwrap_or("")).map(Some)
        }
        (PacketType::Ack | PacketType::BinaryAck, Some(Some(b'['))) => {
            split_args(p.data.unwrap_or("")).map(|_| None)
        }
        _ => Err(SioError::BadPayload),
    }
}

/// Splits a JSON array into its raw elements.
pub fn split_args(data: &str) -> Result<Vec<&RawValue>, SioError> {
    serde_json::from_str::<Vec<&RawValue>>(data).map_err(|_| SioError::BadPayload)
}

/// Splits an event's data into its name (borrowed unless it has escapes) and raw arguments,
/// in one pass.
pub fn split_event(data: &str) -> Result<(Cow<'_, str>, Vec<&RawValue>), SioError> {
    let mut de = serde_json::Deserializer::from_str(data);
    let parts = de
        .deserialize_seq(EventSeq)
        .map_err(|_| SioError::BadPayload)?;
    de.end().map_err(|_| SioError::BadPayload)?;
    Ok(parts)
}

/// `["name", args…]`: the name as a string (a lone surrogate escape is valid raw JSON but
/// not a string, so it is refused here), then each argument as raw JSON.
struct EventSeq;

impl<'de> Visitor<'de> for EventSeq {
    type Value = (Cow<'de, str>, Vec<&'de RawValue>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array starting with the event name")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let Some(Name(name)) = seq.next_element()? else {
            return Err(de::Error::invalid_length(0, &self));
        };
        let mut args = Vec::new();
        while let Some(arg) = seq.next_element()? {
            args.push(arg);
        }
        Ok((name, args))
    }
}

/// A JSON string, borrowed from the input unless it has escapes.
struct Name<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Appends an encoded packet to `out`. `data` is raw JSON (already an array or object).
pub fn encode(
    out: &mut String,
    kind: PacketType,
    nsp: &str,
    attachments: usize,
    id: Option<u64>,
    data: Option<&str>,
) {
    encode_head(out, kind, nsp, attachments, id);
    if let Some(data) = data {
        out.push_str(data);
    }
}

/// Upper bound of what `encode_head` appends for this namespace.
pub fn head_len(nsp: &str) -> usize {
    // Type digit, attachment count and dash, namespace and comma, ack id.
    1 + 21 + nsp.len() + 1 + 20
}

/// Appends a packet's head (type, attachment count, namespace, ack id): the data follows.
pub fn encode_head(
    out: &mut String,
    kind: PacketType,
    nsp: &str,
    attachments: usize,
    id: Option<u64>,
) {
    out.push(kind.digit());
    if kind.is_binary() {
        // Writing to a String cannot fail.
        let _ = write!(out, "{attachments}-");
    }
    if nsp != "/" {
        out.push_str(nsp);
        out.push(',');
    }
    if let Some(id) = id {
        push_decimal(out, id);
    }
}

/// Appends `n` in decimal (what `write!(out, "{n}")` does, without the formatting machinery:
/// every ack id and message timestamp goes through here).
pub fn push_decimal(out: &mut String, n: u64) {
    out.push_str(crate::decimal::Decimal::new(n).as_str());
}

/// Appends `["event",args…]` to `out`; `args` is the raw JSON of the arguments, comma-separated.
pub fn write_event_data(out: &mut String, event: &str, args: &str) {
    out.push('[');
    write_json_string(out, event);
    if !args.is_empty() {
        out.push(',');
        out.push_str(args);
    }
    out.push(']');
}

/// Appends `s` as a JSON string literal.
pub fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Checks the placeholders of a binary packet: every `{"_placeholder":true,"num":N}` has an
/// integer `num` below `attachments`.
pub fn check_placeholders(data: &str, attachments: usize) -> Result<(), SioError> {
    fn walk(v: &serde_json::Value, n: usize) -> Result<(), SioError> {
        match v {
            serde_json::Value::Array(items) => items.iter().try_for_each(|i| walk(i, n)),
            serde_json::Value::Object(map) => {
                if map.get("_placeholder") == Some(&serde_json::Value::Bool(true)) {
                    match map.get("num").and_then(serde_json::Value::as_u64) {
                        Some(num) if (num as usize) < n => Ok(()),
                        _ => Err(SioError::BadAttachments),
                    }
                } else {
                    map.values().try_for_each(|i| walk(i, n))
                }
            }
            _ => Ok(()),
        }
    }
    let v: serde_json::Value = serde_json::from_str(data).map_err(|_| SioError::BadPayload)?;
    walk(&v, attachments)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(kind: PacketType, nsp: &str, att: usize, id: Option<u64>, data: Option<&str>) -> String {
        let mut s = String::new();
        encode(&mut s, kind, nsp, att, id, data);
        s
    }

    #[test]
    fn decimals() {
        let mut s = String::new();
        for n in [0, 7, 10, 999, 1_764_000_000_000, u64::MAX] {
            s.clear();
            push_decimal(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }

    #[test]
    fn an_event_name_that_is_not_a_string_is_refused_at_decode() {
        assert!(decode("2[\"\\udd80\"]").is_err());
        assert!(decode("2[\"\\u0061\"]").is_ok());
    }

    #[test]
    fn decodes_every_type() {
        let p = decode("0").unwrap();
        assert_eq!(
            (p.kind, p.nsp, p.id, p.data),
            (PacketType::Connect, "/", None, None)
        );
        let p = decode("0/custom,{\"token\":\"abc\"}").unwrap();
        assert_eq!((p.nsp, p.data), ("/custom", Some("{\"token\":\"abc\"}")));
        assert_eq!(decode("0/random").unwrap().nsp, "/random");
        assert_eq!(decode("1/custom,").unwrap().kind, PacketType::Disconnect);
        let p = decode("2[\"hello\",1]").unwrap();
        assert_eq!(
            (p.kind, p.id, p.data),
            (PacketType::Event, None, Some("[\"hello\",1]"))
        );
        let p = decode("2456[\"message-with-ack\",1]").unwrap();
        assert_eq!(p.id, Some(456));
        let p = decode("3/admin,12[\"ok\"]").unwrap();
        assert_eq!((p.kind, p.nsp, p.id), (PacketType::Ack, "/admin", Some(12)));
        let p = decode(
            "52-789[\"m\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]",
        )
        .unwrap();
        assert_eq!(
            (p.kind, p.attachments, p.id),
            (PacketType::BinaryEvent, 2, Some(789))
        );
        assert_eq!(
            decode("61-1[{\"_placeholder\":true,\"num\":0}]")
                .unwrap()
                .kind,
            PacketType::BinaryAck
        );
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(decode("abc"), Err(SioError::UnknownType));
        assert_eq!(decode(""), Err(SioError::UnknownType));
        assert_eq!(decode("7"), Err(SioError::UnknownType));
        assert_eq!(
            decode("2{}"),
            Err(SioError::BadPayload),
            "event payload must be an array"
        );
        assert_eq!(decode("2[]"), Err(SioError::BadPayload));
        assert_eq!(
            decode("2[1]"),
            Err(SioError::BadPayload),
            "event name must be a string"
        );
        assert_eq!(
            decode("2abc[\"m\"]"),
            Err(SioError::BadPayload),
            "invalid ack id"
        );
        assert_eq!(
            decode("299999999999999999999999[\"m\"]"),
            Err(SioError::BadAckId)
        );
        assert_eq!(decode("2[\"m\""), Err(SioError::BadPayload));
        assert_eq!(decode("0[1]"), Err(SioError::BadPayload));
        assert_eq!(decode("1{}"), Err(SioError::BadPayload));
        assert_eq!(decode("4{\"message\":\"x\"}"), Err(SioError::BadPayload));
        assert_eq!(decode("5[\"m\"]"), Err(SioError::BadAttachments));
        assert_eq!(decode("511-[\"m\"]"), Err(SioError::BadAttachments));
        assert_eq!(decode("2"), Err(SioError::BadPayload));
    }

    #[test]
    fn round_trips() {
        let cases = [
            (PacketType::Connect, "/", 0, None, None),
            (
                PacketType::Connect,
                "/custom",
                0,
                None,
                Some("{\"sid\":\"x\"}"),
            ),
            (
                PacketType::Event,
                "/",
                0,
                Some(7),
                Some("[\"a\",{\"b\":[1,2]}]"),
            ),
            (PacketType::Ack, "/admin", 0, Some(0), Some("[]")),
            (
                PacketType::BinaryEvent,
                "/",
                2,
                None,
                Some("[\"m\",{\"_placeholder\":true,\"num\":0}]"),
            ),
            (
                PacketType::BinaryAck,
                "/x",
                1,
                Some(3),
                Some("[{\"_placeholder\":true,\"num\":0}]"),
            ),
            (PacketType::Disconnect, "/x", 0, None, None),
        ];
        for (kind, nsp, att, id, data) in cases {
            let s = enc(kind, nsp, att, id, data);
            let p = decode(&s).unwrap();
            assert_eq!(
                (p.kind, p.nsp, p.attachments, p.id, p.data),
                (kind, nsp, att, id, data),
                "{s}"
            );
        }
    }

    #[test]
    fn event_helpers() {
        let (name, args) = split_event("[\"message\",1,\"2\",{\"3\":[true]}]").unwrap();
        assert_eq!(name, "message");
        let raw: Vec<&str> = args.iter().map(|a| a.get()).collect();
        assert_eq!(raw, ["1", "\"2\"", "{\"3\":[true]}"]);
        let (name, args) = split_event(" [\"a\\u0062\"] ").unwrap();
        assert!(matches!(name, Cow::Owned(ref n) if n == "ab") && args.is_empty());
        for bad in [
            "[]",
            "[1]",
            "[\"a\",]",
            "[\"a\"]x",
            "[\"a\"",
            "{}",
            "[\"\\udd80\"]",
        ] {
            assert!(split_event(bad).is_err(), "{bad}");
        }
        let mut s = String::new();
        write_event_data(&mut s, "say \"hi\"\n", "1");
        assert_eq!(s, "[\"say \\\"hi\\\"\\n\",1]");
        let mut s = String::new();
        write_json_string(&mut s, "a\u{1}b");
        assert_eq!(s, "\"a\\u0001b\"");
    }

    #[test]
    fn placeholders() {
        assert!(check_placeholders("[\"m\",{\"_placeholder\":true,\"num\":1}]", 2).is_ok());
        assert!(check_placeholders("[\"m\",{\"_placeholder\":true,\"num\":2}]", 2).is_err());
        assert!(check_placeholders("[\"m\",{\"_placeholder\":true,\"num\":\"0\"}]", 2).is_err());
        assert!(check_placeholders("[\"m\",{\"_placeholder\":true,\"num\":-1}]", 2).is_err());
    }
}
