//! Engine.IO decoding (`decode_text`, `decode_record`, `decode_payload`, base64) on arbitrary
//! bytes: never panics, and whatever decodes re-encodes (`Outgoing::append_to_payload`) into a
//! payload that decodes to the same packets.
//!
//! Shared by the fuzz target of the same name and by `tests/fuzz_corpus.rs`, which replays
//! the committed seeds and every input that ever failed (`fuzz/regressions/`) in `cargo test`.
use pairchat::engine::packet::{self, Packet, decode_payload, decode_record, decode_text};
use pairchat::engine::{Outgoing, base64};

fn outgoing(p: &Packet<'_>) -> Outgoing {
    match p {
        Packet::Close => Outgoing::control(packet::CLOSE),
        Packet::Ping(d) => Outgoing::Text(format!("2{d}").into()),
        Packet::Pong(d) => Outgoing::Text(format!("3{d}").into()),
        Packet::Message(m) => Outgoing::message_str(m),
        Packet::Binary(b) => Outgoing::binary(b.clone()),
        Packet::Upgrade => Outgoing::control(packet::UPGRADE),
        Packet::Noop => Outgoing::control(packet::NOOP),
    }
}

/// The property, on one input.
pub fn check(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = decode_text(text);
        let _ = decode_record(text);
    }
    if let Some(bytes) = base64::decode(data) {
        let mut again = Vec::new();
        base64::encode_into(&bytes, &mut again);
        assert_eq!(base64::decode(&again).as_deref(), Some(&bytes[..]));
    }
    let Ok(records) = decode_payload(data) else {
        return;
    };
    let good: Vec<Packet<'_>> = records.filter_map(Result::ok).collect();
    if good.is_empty() {
        return;
    }
    let mut payload = Vec::new();
    for p in &good {
        outgoing(p).append_to_payload(&mut payload);
    }
    let back: Vec<_> = decode_payload(&payload)
        .expect("a re-encoded payload is UTF-8 and not empty")
        .collect();
    let good: Vec<_> = good.into_iter().map(Ok).collect();
    assert_eq!(back, good);
}
