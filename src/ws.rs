//! The WebSocket upgrade, by hand: validate the request, answer `101`, and set tungstenite up
//! for small boxes. Framing itself is tungstenite's `WebSocketContext`, with the `TcpStream`
//! kept in the connection's slab entry.

use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};

use crate::config::Config;
use crate::http::Request;

/// tungstenite's own read buffer per connection: it zero-fills it up to this size, so it is what
/// an idle session costs in resident memory (RSS per idle WebSocket session, 10 000 held: 4 KiB
/// made 5.4 KB, 1 KiB 2.35 KB, 256 B 1.58 KB). The loop reads the socket into one shared buffer
/// and feeds the bytes in, this much at a time: a chat message's frame (100–200 bytes) fits, and
/// larger frames grow the buffer while they are read.
pub const READ_BUFFER: usize = 256;

/// Validates an upgrade request; `None` if it is not a valid RFC 6455 handshake (§4.2.1: one
/// `Sec-WebSocket-Key`, the base64 of 16 bytes).
pub fn accept_key(req: &Request<'_>) -> Option<String> {
    let connection_upgrade = req.headers.connection.is_some_and(|c| {
        c.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    });
    let key = req.headers.ws_key?;
    let nonce_len = crate::engine::base64::decode(key.as_bytes()).map(|n| n.len());
    if !req.is_websocket_upgrade()
        || !connection_upgrade
        || req.headers.ws_version != Some("13")
        || req.headers.ws_key_repeated
        || nonce_len != Some(16)
    {
        return None;
    }
    Some(derive_accept_key(key.as_bytes()))
}

/// A server close frame without a status code (FIN + close opcode, empty payload).
pub const CLOSE_FRAME: [u8; 2] = [0x88, 0x00];

/// The `101 Switching Protocols` answer.
pub fn switching_protocols(accept: &str) -> Vec<u8> {
    format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")
        .into_bytes()
}

/// Appends one unmasked, final data frame (text or binary) to `out`: the header as
/// tungstenite formats it, then the payload. Data frames are written here, into the
/// connection's own buffer, rather than through the context: tungstenite's write buffer keeps
/// the capacity of the largest message it ever held (a megabyte of history, for the life of
/// the connection), where the connection's own buffer is let go once it drains.
pub fn push_frame(out: &mut Vec<u8>, text: bool, payload: &[u8]) {
    let header = FrameHeader {
        opcode: OpCode::Data(if text { Data::Text } else { Data::Binary }),
        ..FrameHeader::default()
    };
    out.reserve(header.len(payload.len() as u64) + payload.len());
    // Writing to a `Vec` cannot fail.
    let _ = header.format(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// A server-side context, fed with the bytes that arrived after the upgrade request.
pub fn context(config: &Config, already_read: Vec<u8>) -> WebSocketContext {
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        // The context writes only control frames (pongs, closes), into the connection's
        // buffer (see `push_frame`).
        .write_buffer_size(0)
        .max_write_buffer_size(config.max_ws_buffer.max(64 * 1024 + 1))
        .max_message_size(Some(config.max_payload))
        .max_frame_size(Some(config.max_payload));
    WebSocketContext::from_partially_read(already_read, Role::Server, Some(ws_config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_frames_carry_their_length_in_the_shortest_form() {
        for (len, head) in [
            (0, vec![0x81, 0]),
            (125, vec![0x81, 125]),
            (126, vec![0x81, 126, 0, 126]),
            (65_535, vec![0x81, 126, 0xff, 0xff]),
            (65_536, vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let payload = vec![b'a'; len];
            let mut out = Vec::new();
            push_frame(&mut out, true, &payload);
            assert_eq!(&out[..head.len()], &head[..], "{len}");
            assert_eq!(out.len(), head.len() + len);
        }
        let mut out = Vec::new();
        push_frame(&mut out, false, &[1, 2]);
        assert_eq!(out, [0x82, 2, 1, 2]);
    }
}
