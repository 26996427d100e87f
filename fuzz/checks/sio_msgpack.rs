//! socket.io-msgpack-parser packets (`sio::msgpack::decode`) on arbitrary bytes: never panics,
//! and a packet that decodes re-encodes (`encode`, from its JSON text and attachments) into
//! one that decodes to the same packet: type, namespace, ack id and attachments (in another
//! order when the first re-encoding reorders an object's keys: `encode` writes them sorted).
//! Written once more from that, it comes out the same bytes.
//!
//! Shared by the fuzz target of the same name and by `tests/fuzz_corpus.rs`.
use pairchat::sio::msgpack::{self, Decoded};

const MAX_TEXT: usize = 1 << 20;

fn encode(d: &Decoded) -> Vec<u8> {
    let attachments: Vec<&[u8]> = d.attachments.iter().map(Vec::as_slice).collect();
    msgpack::encode(d.kind, &d.nsp, d.id, d.data.as_deref(), &attachments)
        .expect("a decoded packet encodes")
}

/// The property, on one input.
pub fn check(data: &[u8]) {
    let Ok(first) = msgpack::decode(data, MAX_TEXT) else {
        return;
    };
    let _ = msgpack::to_text(&first);
    let once = encode(&first);
    let second = msgpack::decode(&once, MAX_TEXT).expect("a re-encoded packet decodes");
    // The same attachments, perhaps in another order (their objects' keys sorted).
    let sorted = |d: &Decoded| {
        let mut a = d.attachments.clone();
        a.sort();
        a
    };
    assert_eq!(
        (second.kind, &second.nsp, second.id, sorted(&second)),
        (first.kind, &first.nsp, first.id, sorted(&first))
    );
    assert_eq!(first.data.is_some(), second.data.is_some());
    let twice = encode(&second);
    assert_eq!(twice, once, "written twice, the same bytes");
}
