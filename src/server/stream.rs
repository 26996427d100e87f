//! Stream adapters for the loop's writes (and a WebSocket's reads): a WebSocket's socket as its
//! frame codec sees it, count bytes, write without blocking.

use std::io::{self, Read, Write};

use mio::net::TcpStream;

/// A WebSocket connection's socket as tungstenite sees it. Reads come from bytes the loop has
/// already read off the socket: `WouldBlock` once they are used up, or end of stream when the
/// socket said so. Writes (its control frames: pongs, closes) join the connection's output
/// buffer, behind the data frames already there, and leave with them at the next flush.
pub(super) struct WsStream<'a> {
    pub(super) input: &'a [u8],
    pub(super) eof: bool,
    pub(super) out: &'a mut Vec<u8>,
}

impl<'a> WsStream<'a> {
    /// For writing only.
    pub(super) fn output(out: &'a mut Vec<u8>) -> Self {
        WsStream {
            input: &[],
            eof: false,
            out,
        }
    }
}

impl Read for WsStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() && !self.eof {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.input.read(buf)
    }
}

impl Write for WsStream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A stream that counts the bytes written through it.
pub(super) struct Counted<'a> {
    pub(super) stream: &'a mut TcpStream,
    pub(super) bytes: &'a mut u64,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.stream.write(buf)?;
        *self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// The largest drained output buffer a connection keeps for its next turn (about a turn's worth
/// of chat).
const KEPT_OUTPUT: usize = 4 * 1024;

/// Writes as much of `buf` as the socket takes. `Ok(true)` when all of it left.
///
/// A drained buffer is let go when it is larger than a turn's worth of chat (a burst's, a
/// history's) or far larger than what it just carried (a WebSocket handshake's): an idle
/// connection keeps a few bytes, a busy one the size of its usual turn (freeing it at every
/// drain cost busy WebSocket connections ~10 % CPU per chat message).
pub(super) fn write_all_nonblocking(
    stream: &mut impl Write,
    buf: &mut Vec<u8>,
) -> io::Result<bool> {
    let sent = buf.len();
    let mut written = 0;
    let result = loop {
        if written == buf.len() {
            break Ok(true);
        }
        match stream.write(&buf[written..]) {
            Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    buf.drain(..written);
    if buf.is_empty() && (buf.capacity() > KEPT_OUTPUT || buf.capacity() > 4 * sent + 64) {
        *buf = Vec::new();
    }
    result
}
