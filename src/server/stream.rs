//! Stream adapters for the loop's reads and writes: stop at a short read, feed bytes already
//! read to a decoder, count bytes, write without blocking.

use std::io::{self, Read, Write};

use mio::net::TcpStream;

/// A socket that reports `WouldBlock` after a short read instead of asking the kernel again.
///
/// A read that returns fewer bytes than asked for has emptied the receive queue; data that
/// arrives later raises a new edge-triggered readiness event. Skipping the read that would
/// only say `EAGAIN` saves a system call per readable event.
///
/// Not when the peer has half-closed: its FIN raised the one event there will be, so reads go
/// on until they return 0.
pub(super) struct UntilDrained<'a> {
    pub(super) stream: &'a mut TcpStream,
    pub(super) drained: &'a mut bool,
    pub(super) read_to_eof: bool,
    pub(super) bytes: &'a mut u64,
}

impl Read for UntilDrained<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if *self.drained {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.stream.read(buf)?;
        *self.bytes += n as u64;
        if n < buf.len() && n > 0 && !self.read_to_eof {
            *self.drained = true;
        }
        Ok(n)
    }
}

impl Write for UntilDrained<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// Bytes already read off a socket, handed to a frame decoder as a stream: `WouldBlock` once
/// they are used up (or end of stream when the socket said so). Writes (a pong, a close reply)
/// go to the socket.
pub(super) struct Feed<'a> {
    pub(super) data: &'a [u8],
    pub(super) eof: bool,
    pub(super) stream: &'a mut TcpStream,
}

impl Read for Feed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.data.is_empty() && !self.eof {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.data.read(buf)
    }
}

impl Write for Feed<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
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

/// Writes as much of `buf` as the socket takes. `Ok(true)` when all of it left.
pub(super) fn write_all_nonblocking(
    stream: &mut impl Write,
    buf: &mut Vec<u8>,
) -> io::Result<bool> {
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
    if buf.is_empty() && buf.capacity() > 64 * 1024 {
        *buf = Vec::new();
    }
    result
}
