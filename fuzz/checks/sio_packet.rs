//! Socket.IO packet decoding (`decode`, `split_event`, `check_placeholders`) on arbitrary
//! text: never panics; a decoded packet re-encodes into one that decodes the same; an event
//! that `decode` accepts always splits into a name and arguments (the server relies on it);
//! `write_json_string` output parses back to its input.
//!
//! Binary reassembly (a `5N-`/`6N-` packet waiting for its attachments) lives in the private
//! `SocketIo` handler; the `connection` target reaches it through polling payloads.
//!
//! Shared by the fuzz target of the same name and by `tests/fuzz_corpus.rs`, which replays
//! the committed seeds and every input that ever failed (`fuzz/regressions/`) in `cargo test`.
use pairchat::sio::PacketType;
use pairchat::sio::packet::{
    check_placeholders, decode, encode, split_args, split_event, write_json_string,
};

/// The property, on one input.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = split_event(text);
    let _ = check_placeholders(text, 3);

    let mut quoted = String::new();
    write_json_string(&mut quoted, text);
    let back: String = parse_json_string(&quoted);
    assert_eq!(back, text);

    check_packet(text);
    // Each message record of a polling body, as the server decodes it.
    if text.contains('\u{1e}') {
        for record in text.split('\u{1e}') {
            if let Some(message) = record.strip_prefix('4') {
                check_packet(message);
            }
        }
    }
}

/// Parses a JSON string literal through the public API only (`split_event` reads the name).
fn parse_json_string(quoted: &str) -> String {
    let event = format!("[{quoted}]");
    let (name, _) = split_event(&event).expect("write_json_string writes valid JSON");
    name.to_string()
}

fn check_packet(message: &str) {
    let Ok(p) = decode(message) else {
        return;
    };
    let mut again = String::new();
    encode(&mut again, p.kind, p.nsp, p.attachments, p.id, p.data);
    assert_eq!(decode(&again), Ok(p), "{message:?} re-encoded as {again:?}");
    let Some(data) = p.data else {
        return;
    };
    if p.kind.is_binary() {
        let _ = check_placeholders(data, p.attachments);
    }
    match p.kind {
        PacketType::Event | PacketType::BinaryEvent => {
            assert!(split_event(data).is_ok(), "accepted event {message:?}");
        }
        PacketType::Ack | PacketType::BinaryAck => {
            assert!(split_args(data).is_ok(), "accepted ack {message:?}");
        }
        _ => {}
    }
}
