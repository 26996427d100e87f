//! Engine.IO v3 polling payloads (`engine::v3::decode_payload`: text with UTF-16 lengths and
//! `b4<base64>`, or XHR2 binary) and text frames (`decode_frame`) on arbitrary bytes: never
//! panics, and the packets of a payload that decodes whole re-encode, as a text and as a binary
//! payload, into payloads that decode to the same packets (text packets starting with their
//! type digit, as a server takes them).
//!
//! Shared by the fuzz target of the same name and by `tests/fuzz_corpus.rs`.
use pairchat::engine::Outgoing;
use pairchat::engine::v3::{self, Packet};

/// The property, on one input.
pub fn check(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = v3::decode_frame(text);
    }
    let Ok(payload) = v3::decode_payload(data) else {
        return;
    };
    let Ok(packets) = payload.collect::<Result<Vec<Packet<'_>>, _>>() else {
        return;
    };
    let taken = packets.iter().all(|p| match p {
        Packet::Text(t) => t.starts_with(|c: char| c.is_ascii_digit()),
        Packet::Binary(_) => true,
    });
    if !taken || packets.is_empty() {
        return;
    }
    let out: Vec<Outgoing> = (packets.iter())
        .map(|p| match p {
            Packet::Text(t) => Outgoing::Text((*t).into()),
            Packet::Binary(d) => Outgoing::binary(d.to_vec()),
        })
        .collect();
    for again in [v3::encode_text(&out), v3::encode_binary(&out)] {
        let back: Result<Vec<Packet<'_>>, _> =
            v3::decode_payload(&again).and_then(Iterator::collect);
        assert_eq!(back, Ok(packets.clone()));
    }
}
