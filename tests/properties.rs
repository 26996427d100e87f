//! Property tests of the pure codecs and the timer wheel, driven by a small deterministic PRNG
//! (no extra dependencies): encoders and decoders round-trip, decoders never panic on random or
//! mutated input, and the timer wheel agrees with a `BTreeMap` model.
//!
//! Every property runs a few thousand cases from a fixed seed, so a failure reproduces exactly;
//! the failing case is printed with its index.

use std::collections::BTreeMap;

use pairchat::engine::Outgoing;
use pairchat::engine::base64;
use pairchat::engine::packet::{self as eio, Packet, decode_payload, decode_record, decode_text};
use pairchat::http::chunked::ChunkedDecoder;
use pairchat::http::request::{Parsed, forwarded_client, parse, query_param};
use pairchat::sio::packet::{
    MAX_ATTACHMENTS, check_placeholders, decode, encode, split_args, split_event, write_json_string,
};
use pairchat::sio::{PacketType, SioError};
use pairchat::timer::TimerWheel;

/// SplitMix64: tiny, fast, and good enough to explore input spaces.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`); the modulo bias is irrelevant here.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let len = self.below(max_len + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// A character biased towards the ones codecs treat specially.
    fn char(&mut self) -> char {
        const SPECIAL: &[char] = &[
            '"',
            '\\',
            '/',
            '\n',
            '\r',
            '\t',
            '\0',
            '\u{1}',
            '\u{1f}',
            '\u{1e}',
            '\u{7f}',
            ',',
            '[',
            ']',
            '{',
            '}',
            ':',
            '-',
            '0',
            '9',
            'b',
            ' ',
            '\u{2028}',
            '\u{2029}',
            '\u{feff}',
            'é',
            '€',
            '😀',
            '\u{10ffff}',
        ];
        match self.below(4) {
            0 => *self.pick(SPECIAL),
            1 => (b' ' + self.below(95) as u8) as char,
            2 => char::from_u32(self.below(0x20) as u32).unwrap_or('?'),
            // Any scalar value: surrogates are skipped by `from_u32`.
            _ => char::from_u32(self.below(0x11_0000) as u32).unwrap_or('\u{fffd}'),
        }
    }

    fn string(&mut self, max_chars: usize) -> String {
        let len = self.below(max_chars + 1);
        (0..len).map(|_| self.char()).collect()
    }
}

/// Runs `cases` cases of a property, each with its own RNG, naming the failing case.
fn check(name: &str, cases: u64, mut property: impl FnMut(&mut Rng)) {
    for case in 0..cases {
        let mut rng = Rng::new(case.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ name.len() as u64);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| property(&mut rng)));
        if let Err(e) = result {
            eprintln!("property `{name}` failed at case {case}");
            std::panic::resume_unwind(e);
        }
    }
}

// ---- base64 -------------------------------------------------------------------------------

#[test]
fn base64_round_trips() {
    check("base64", 4000, |rng| {
        let data = rng.bytes(200);
        let mut enc = Vec::new();
        base64::encode_into(&data, &mut enc);
        assert_eq!(enc.len(), data.len().div_ceil(3) * 4);
        assert_eq!(base64::decode(&enc).as_deref(), Some(&data[..]), "{enc:?}");
        // Padding is optional, and the URL-safe alphabet decodes the same.
        let unpadded: Vec<u8> = enc.iter().copied().filter(|&c| c != b'=').collect();
        assert_eq!(base64::decode(&unpadded).as_deref(), Some(&data[..]));
        let url_safe: Vec<u8> = enc
            .iter()
            .map(|&c| match c {
                b'+' => b'-',
                b'/' => b'_',
                c => c,
            })
            .collect();
        assert_eq!(base64::decode(&url_safe).as_deref(), Some(&data[..]));
    });
}

// ---- Engine.IO payloads -------------------------------------------------------------------

/// What a client decoding a packet should see (owned, so cases need not borrow).
#[derive(Debug)]
enum Want {
    Packet(Packet<'static>),
    Message(String),
    Binary(Vec<u8>),
}

impl Want {
    fn packet(&self) -> Packet<'_> {
        match self {
            Want::Packet(p) => p.clone(),
            Want::Message(m) => Packet::Message(m),
            Want::Binary(b) => Packet::Binary(b.clone()),
        }
    }
}

/// A random outgoing packet and what a client decoding it should see.
fn random_outgoing(rng: &mut Rng) -> (Outgoing, Want) {
    match rng.below(4) {
        0 => {
            let data = rng.bytes(64);
            (Outgoing::binary(data.clone()), Want::Binary(data))
        }
        1 => {
            let (kind, packet) = rng
                .pick(&[
                    (eio::CLOSE, Packet::Close),
                    (eio::PING, Packet::Ping("")),
                    (eio::PONG, Packet::Pong("")),
                    (eio::UPGRADE, Packet::Upgrade),
                    (eio::NOOP, Packet::Noop),
                ])
                .clone();
            (Outgoing::control(kind), Want::Packet(packet))
        }
        2 => (
            Outgoing::Text("2probe".into()),
            Want::Packet(Packet::Ping("probe")),
        ),
        _ => {
            // The record separator cannot appear inside a polling record: Socket.IO text is
            // JSON, which escapes it.
            let text: String = rng.string(40).replace('\u{1e}', "");
            (Outgoing::message_str(&text), Want::Message(text))
        }
    }
}

#[test]
fn engine_payload_round_trips() {
    check("engine_payload", 3000, |rng| {
        let count = 1 + rng.below(8);
        let (packets, wanted): (Vec<_>, Vec<_>) = (0..count).map(|_| random_outgoing(rng)).unzip();
        let mut payload = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            let before = payload.len();
            p.append_to_payload(&mut payload);
            let separator = usize::from(i > 0);
            assert_eq!(
                payload.len() - before,
                p.len() + separator,
                "len() of {p:?}"
            );
        }
        let decoded: Vec<_> = decode_payload(&payload)
            .expect("a UTF-8, non-empty payload")
            .collect();
        let expected: Vec<_> = wanted.iter().map(|w| Ok(w.packet())).collect();
        assert_eq!(decoded, expected, "{:?}", String::from_utf8_lossy(&payload));
        // A text packet alone is also a valid WebSocket frame.
        if let Outgoing::Text(t) = &packets[0] {
            assert_eq!(decode_text(t.as_str()), expected[0]);
        }
    });
}

// ---- Socket.IO packets --------------------------------------------------------------------

/// Random JSON text (not necessarily canonical: numbers and whitespace vary).
fn random_json(rng: &mut Rng, depth: usize, out: &mut String) {
    let kinds = if depth == 0 { 5 } else { 7 };
    match rng.below(kinds) {
        0 => out.push_str(rng.pick::<&str>(&["null", "true", "false"])),
        1 => out.push_str(&(rng.next() as i64 >> rng.below(64)).to_string()),
        2 => out.push_str(rng.pick::<&str>(&["0.5", "-1e10", "3.25E-2", "0", "-0", "1e308"])),
        3 | 4 => write_json_string(out, &rng.string(12)),
        5 => {
            out.push('[');
            for i in 0..rng.below(4) {
                if i > 0 {
                    out.push(',');
                }
                random_json(rng, depth - 1, out);
            }
            out.push(']');
        }
        _ => random_object(rng, depth - 1, out),
    }
}

fn random_object(rng: &mut Rng, depth: usize, out: &mut String) {
    out.push('{');
    for i in 0..rng.below(4) {
        if i > 0 {
            out.push(',');
        }
        write_json_string(out, &rng.string(6));
        out.push_str(if rng.chance(4) { " : " } else { ":" });
        random_json(rng, depth, out);
    }
    out.push('}');
}

/// `["name", args…]`, with placeholders below `attachments` among the arguments.
fn random_event(rng: &mut Rng, with_name: bool, attachments: usize) -> (String, usize) {
    let mut s = String::from("[");
    let mut args = 0;
    if with_name {
        write_json_string(&mut s, &rng.string(10));
    }
    for _ in 0..rng.below(4) {
        if s.len() > 1 {
            s.push(',');
        }
        if attachments > 0 && rng.chance(2) {
            let num = rng.below(attachments);
            s.push_str(&format!("{{\"_placeholder\":true,\"num\":{num}}}"));
        } else {
            random_json(rng, 3, &mut s);
        }
        args += 1;
    }
    s.push(']');
    (s, args)
}

fn random_nsp(rng: &mut Rng) -> String {
    if rng.chance(2) {
        return "/".into();
    }
    // Anything but `,`, which ends the namespace.
    let tail: String = rng.string(8).replace(',', "");
    format!("/{tail}")
}

#[test]
fn sio_packets_round_trip() {
    const KINDS: [PacketType; 6] = [
        PacketType::Connect,
        PacketType::Disconnect,
        PacketType::Event,
        PacketType::Ack,
        PacketType::BinaryEvent,
        PacketType::BinaryAck,
    ];
    check("sio_round_trip", 4000, |rng| {
        let kind = *rng.pick(&KINDS);
        let nsp = random_nsp(rng);
        let attachments = if kind.is_binary() {
            rng.below(MAX_ATTACHMENTS + 1)
        } else {
            0
        };
        let id = match rng.below(4) {
            0 => Some(rng.next()),
            1 => Some(rng.below(1000) as u64),
            2 => Some(u64::MAX),
            _ => None,
        };
        let (data, args) = match kind {
            PacketType::Connect if rng.chance(2) => (None, 0),
            PacketType::Connect => {
                let mut s = String::new();
                random_object(rng, 3, &mut s);
                (Some(s), 0)
            }
            PacketType::Disconnect | PacketType::ConnectError => (None, 0),
            PacketType::Event | PacketType::BinaryEvent => {
                let (s, args) = random_event(rng, true, attachments);
                (Some(s), args)
            }
            PacketType::Ack | PacketType::BinaryAck => {
                let (s, args) = random_event(rng, false, attachments);
                (Some(s), args)
            }
        };
        let mut text = String::new();
        encode(&mut text, kind, &nsp, attachments, id, data.as_deref());
        let p = decode(&text).unwrap_or_else(|e| panic!("{text:?}: {e:?}"));
        assert_eq!(
            (p.kind, p.nsp, p.attachments, p.id, p.data),
            (kind, nsp.as_str(), attachments, id, data.as_deref()),
            "{text:?}"
        );
        if let Some(data) = p.data {
            if kind.is_binary() {
                assert_eq!(check_placeholders(data, attachments), Ok(()), "{text:?}");
                if attachments > 0 {
                    // One fewer attachment than a placeholder needs is refused.
                    let needs = data.contains("\"_placeholder\"");
                    let result = check_placeholders(data, 0);
                    assert_eq!(result.is_err(), needs, "{text:?}");
                }
            }
            match kind {
                PacketType::Event | PacketType::BinaryEvent => {
                    let (name, rest) = split_event(data).expect("event data");
                    let mut quoted = String::new();
                    write_json_string(&mut quoted, &name);
                    assert!(data[1..].starts_with(&quoted), "{text:?}");
                    assert_eq!(rest.len(), args);
                }
                PacketType::Ack | PacketType::BinaryAck => {
                    assert_eq!(split_args(data).map(|a| a.len()), Ok(args));
                }
                _ => {}
            }
        }
    });
}

#[test]
fn sio_connect_error_is_refused_from_clients() {
    check("sio_connect_error", 500, |rng| {
        let nsp = random_nsp(rng);
        let mut data = String::new();
        random_object(rng, 2, &mut data);
        let mut text = String::new();
        encode(
            &mut text,
            PacketType::ConnectError,
            &nsp,
            0,
            None,
            Some(&data),
        );
        assert_eq!(decode(&text), Err(SioError::BadPayload), "{text:?}");
    });
}

#[test]
fn json_strings_parse_back() {
    check("json_string", 5000, |rng| {
        let s = rng.string(40);
        let mut out = String::new();
        write_json_string(&mut out, &s);
        assert!(
            !out.bytes().any(|b| b < 0x20),
            "raw control byte in {out:?}"
        );
        let back: String = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out:?}: {e}"));
        assert_eq!(back, s);
        // Appending keeps what was there.
        let mut prefixed = String::from("[");
        write_json_string(&mut prefixed, &s);
        assert_eq!(&prefixed[1..], out);
    });
}

// ---- decoders never panic -----------------------------------------------------------------

/// Valid inputs of every decoder, to mutate.
const SEEDS: &[&[u8]] = &[
    b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: localhost\r\nOrigin: http://a\r\n\r\n",
    b"POST /socket.io/?EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: x\r\n\
Content-Type: text/plain;charset=UTF-8\r\nContent-Length: 21\r\n\r\n42[\"hi\"]\x1e3\x1ebAQIDBA==",
    b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\
Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"OPTIONS /socket.io/ HTTP/1.1\r\nAccess-Control-Request-Headers: content-type\r\n\r\n",
    b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"POST /socket.io/?EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\n\
Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n3;a=b\r\n4hi\r\n0\r\nT: 1\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Forwarded-For: 203.0.113.9, 198.51.100.7, 10.0.0.1\r\n\
Forwarded: for=192.0.2.60;proto=http, for=\"[2001:db8::1]:4711\"\r\n\r\n",
    b"4hello\x1ebAQIDBA==\x1e2probe\x1e3\x1e1\x1e5\x1e6",
    b"40/custom,{\"token\":\"abc\"}",
    b"2456[\"message-with-ack\",1,{\"a\":[true,null]}]",
    b"3/admin,12[\"ok\"]",
    b"52-789[\"m\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]",
    b"61-/x,1[{\"_placeholder\":true,\"num\":0}]",
    b"0/chat,",
    b"1",
    b"AQIDBA==",
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        let pos = rng.below(input.len() + 1);
        match rng.below(7) {
            0 if pos < input.len() => input[pos] ^= 1 << rng.below(8),
            1 => input.truncate(pos),
            2 if pos < input.len() => {
                input.remove(pos);
            }
            3 => {
                let b = *rng.pick(b"\x1e\"[]{},-/:0123456789 \r\n\\b=\xff\xc3");
                input.insert(pos, b);
            }
            4 => {
                let digits = rng.pick(&["0", "99", "10", "18446744073709551616", "-1"]);
                input.splice(pos..pos, digits.bytes());
            }
            5 if !input.is_empty() => {
                let start = rng.below(input.len());
                let end = (start + rng.below(16)).min(input.len());
                let copy = input[start..end].to_vec();
                input.splice(pos..pos, copy);
            }
            _ => input.insert(pos, rng.next() as u8),
        }
    }
}

/// Feeds `input` to every decoder; only checks results for internal consistency.
fn decode_everything(input: &[u8]) {
    for max_body in [0, 16, 1_000_000] {
        match parse(input, max_body) {
            Ok(Parsed::Complete(req, used)) => {
                assert!(used <= input.len());
                assert!(req.body.len() <= max_body);
                let _ = (req.query_param("sid"), req.is_websocket_upgrade());
                let trusted = ["10.0.0.1".parse().expect("an address")];
                if let Some(ip) = forwarded_client(&req.headers, &trusted) {
                    assert_ne!(ip, trusted[0]);
                }
            }
            Ok(Parsed::Partial) | Err(_) => {}
        }
    }
    let text = String::from_utf8_lossy(input);
    let _ = query_param(&text, "EIO");
    let _ = decode_text(&text);
    let _ = decode_record(&text);
    if let Ok(records) = decode_payload(input) {
        records.for_each(drop);
    }
    let _ = base64::decode(input);
    let _ = split_event(&text);
    let _ = check_placeholders(&text, 3);
    if let Ok(p) = decode(&text) {
        // Re-encoding a decoded packet gives a packet that decodes the same.
        let mut again = String::new();
        encode(&mut again, p.kind, p.nsp, p.attachments, p.id, p.data);
        let q = decode(&again).unwrap_or_else(|e| panic!("{text:?} -> {again:?}: {e:?}"));
        assert_eq!(p, q, "{text:?} -> {again:?}");
        if let Some(data) = p.data {
            let _ = split_event(data);
            let _ = check_placeholders(data, p.attachments);
        }
    }
    // The same checks on each record, as the server applies them to a polling body.
    for record in text.split('\u{1e}') {
        if let Ok(Packet::Message(m)) = decode_record(record) {
            let _ = decode(m);
        }
    }
}

#[test]
fn decoders_survive_random_bytes() {
    check("random_bytes", 3000, |rng| {
        let mut input = rng.bytes(300);
        // Start some inputs like a real packet so the decoders get past the first byte.
        if !input.is_empty() && rng.chance(2) {
            input[0] = *rng.pick(b"0123456b");
        }
        decode_everything(&input);
    });
}

#[test]
fn decoders_survive_mutated_inputs() {
    check("mutations", 6000, |rng| {
        let mut input = rng.pick(SEEDS).to_vec();
        mutate(rng, &mut input);
        decode_everything(&input);
    });
}

// ---- chunked request bodies ---------------------------------------------------------------

/// `body` in the chunked coding, cut into random chunks (with random extensions, hex case,
/// leading zeros and trailers).
fn chunk_encode(rng: &mut Rng, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let n = 1 + rng.below(rest.len().min(40));
        let size = if rng.chance(2) {
            format!("{n:x}")
        } else {
            format!("{:0>3X}", n)
        };
        out.extend_from_slice(size.as_bytes());
        if rng.chance(4) {
            out.extend_from_slice(b";name=\"v\"");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(b"0\r\n");
    if rng.chance(3) {
        out.extend_from_slice(b"X-Checksum: abc\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[test]
fn chunked_bodies_decode_whatever_the_chunks_and_the_reads() {
    check("chunked", 3000, |rng| {
        let body = rng.bytes(200);
        let mut wire = chunk_encode(rng, &body);
        let encoded_len = wire.len();
        wire.extend_from_slice(b"GET / HTTP/1.1\r\n"); // the next request
        // Fed in random reads, as the socket delivers it.
        let mut decoder = ChunkedDecoder::new(body.len());
        let mut decoded = Vec::new();
        let mut at = 0;
        while !decoder.is_done() {
            let end = (at + 1 + rng.below(32)).min(wire.len());
            let progress = decoder
                .decode(&wire[at..end], &mut decoded)
                .expect("valid coding");
            assert!(progress.done || progress.used == end - at);
            at += progress.used;
        }
        assert_eq!(decoded, body);
        assert_eq!(at, encoded_len, "the body's end is found exactly");
        // One byte less of room is refused.
        if !body.is_empty() {
            let mut decoder = ChunkedDecoder::new(body.len() - 1);
            assert!(decoder.decode(&wire, &mut Vec::new()).is_err());
        }
    });
}

// ---- timer wheel --------------------------------------------------------------------------

#[test]
fn timer_wheel_matches_a_model() {
    check("timer_wheel", 300, |rng| {
        let start = rng.below(10_000) as u64;
        let mut wheel = TimerWheel::new(start);
        let mut now = start;
        // payload → deadline, for live timers.
        let mut model: BTreeMap<u64, u64> = BTreeMap::new();
        let mut ids = Vec::new();
        let mut next_payload = 0u64;
        for _ in 0..200 {
            match rng.below(10) {
                0..=3 => {
                    let at = match rng.below(6) {
                        0 => now.saturating_sub(rng.below(50) as u64), // already due
                        1 => now + 4096 * (1 + rng.below(3) as u64) + rng.below(3) as u64 - 1,
                        2 => now + rng.below(100_000) as u64,
                        _ => now + rng.below(200) as u64,
                    };
                    let id = wheel.insert(at, next_payload);
                    model.insert(next_payload, at);
                    ids.push((id, next_payload));
                    next_payload += 1;
                }
                4 | 5 if !ids.is_empty() => {
                    // Any handle, live or stale: a stale one must change nothing.
                    let (id, payload) = *rng.pick(&ids);
                    let live = model.remove(&payload).is_some();
                    assert_eq!(wheel.cancel(id), live.then_some(payload));
                    assert_eq!(wheel.deadline(id), None);
                }
                _ => {
                    let step = match rng.below(8) {
                        0 => 0,
                        1 => rng.below(20_000) as u64,
                        2 => 4096,
                        _ => rng.below(64) as u64,
                    };
                    // Never early: polling up to just before the announced deadline fires nothing.
                    if let Some(d) = wheel.next_deadline() {
                        assert!(d > now, "next deadline {d} not after now {now}");
                        let earliest = model.values().min().copied().unwrap_or(u64::MAX);
                        assert!(d <= earliest.max(now + 1), "{d} after earliest {earliest}");
                        let mut out = Vec::new();
                        wheel.poll_to(d - 1, &mut out);
                        assert!(out.is_empty(), "fired {out:?} before {d}");
                        now = now.max(d - 1);
                    } else {
                        assert!(model.is_empty());
                    }
                    let target = now + step;
                    let mut ids = Vec::new();
                    wheel.poll_to(target, &mut ids);
                    let mut fired: Vec<u64> =
                        ids.into_iter().filter_map(|id| wheel.fire(id)).collect();
                    fired.sort_unstable();
                    // Never late, never early: exactly the live timers due by `target`.
                    // (Polling to the current time is a no-op: past deadlines wait for the
                    // next advance.)
                    let due: Vec<u64> = model
                        .iter()
                        .filter(|&(_, &at)| at <= target && target > now)
                        .map(|(&p, _)| p)
                        .collect();
                    assert_eq!(fired, due, "poll_to({target}) from {now}");
                    model.retain(|p, _| !due.contains(p));
                    now = target;
                    assert_eq!(wheel.now(), now);
                }
            }
            assert_eq!(wheel.len(), model.len());
            for &(id, payload) in ids.iter().rev().take(8) {
                assert_eq!(wheel.deadline(id), model.get(&payload).copied());
            }
        }
    });
}
