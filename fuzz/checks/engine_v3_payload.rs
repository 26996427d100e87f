//! Engine.IO v3 polling payloads (`engine::v3::decode_payload`: text with UTF-16 lengths and
//! `b4<base64>`, or XHR2 binary) on arbitrary bytes: never panics, and the packets a server
//! takes (text packets starting with their type digit, binary messages) re-encode, as text and
//! as binary payloads, into payloads that decode to the same packets.
//!
//! Shared by the fuzz target of the same name and by `tests/fuzz_corpus.rs`.
use pairchat::engine::Outgoing;
use pairchat::engine::v3::{self, Packet};

/// The property, on one input.
pub fn check(data: &[u8]) {
    let _ = v3::decode_binary(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = v3::decode_text(text);
    }
    let Ok(packets) = v3::decode_payload(data) else {
        return;
    };
    let taken = packets.iter().all(|p| match p {
        Packet::Text(t) => t.starts_with(|c: char| c.is_ascii_digit()),
        Packet::Binary(kind, _) => *kind == v3::MESSAGE_TYPE,
    });
    if !taken || packets.is_empty() {
        return;
    }
    let out: Vec<Outgoing> = (packets.iter())
        .map(|p| match p {
            Packet::Text(t) => Outgoing::Text(t.as_str().into()),
            Packet::Binary(_, d) => Outgoing::binary(d.clone()),
        })
        .collect();
    let text = v3::encode_text(&out);
    assert_eq!(v3::decode_payload(&text).as_ref(), Ok(&packets));
    let binary = v3::encode_binary(&out);
    assert_eq!(v3::decode_payload(&binary).as_ref(), Ok(&packets));
}
