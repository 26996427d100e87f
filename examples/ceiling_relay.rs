//! The benchmarks' "ceiling": a hand-rolled `mio` relay that does only the chat's happy path
//! over WebSocket, to measure pairchat against what the same workload costs with nothing else.
//!
//! ```text
//! cargo run --release --example ceiling_relay -- 3000
//! ```
//!
//! It speaks just enough of Engine.IO/Socket.IO for `examples/loadgen.rs`: the WebSocket
//! upgrade, the Engine.IO open packet, the Socket.IO CONNECT, and `createRoom`, `joinRoom`,
//! `sendMessage` with their acks and `newMessage` to both members. No polling, pings, limits,
//! history, validation or JSON parser; bad input closes the connection. Like pairchat it reads
//! until a short read and writes each connection once per loop turn. Not a server to deploy.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use rand::RngExt as _;
use slab::Slab;

const LISTENER: Token = Token(usize::MAX);

struct Conn {
    stream: TcpStream,
    upgraded: bool,
    input: Vec<u8>,
    output: Vec<u8>,
    sid: String,
    dirty: bool,
}

struct Relay {
    conns: Slab<Conn>,
    rooms: HashMap<u32, Vec<usize>>,
    dirty: Vec<usize>,
    next_sid: u64,
}

fn main() -> io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let mut listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    pairchat::sys::set_backlog(&listener, 1024)?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    eprintln!("ceiling_relay: listening on {}", listener.local_addr()?);
    let mut relay = Relay {
        conns: Slab::new(),
        rooms: HashMap::new(),
        dirty: Vec::new(),
        next_sid: 0,
    };
    let mut events = Events::with_capacity(1024);
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in &events {
            if event.token() == LISTENER {
                while let Ok((mut stream, _)) = listener.accept() {
                    stream.set_nodelay(true)?;
                    let entry = relay.conns.vacant_entry();
                    poll.registry().register(
                        &mut stream,
                        Token(entry.key()),
                        Interest::READABLE,
                    )?;
                    entry.insert(Conn {
                        stream,
                        upgraded: false,
                        input: Vec::new(),
                        output: Vec::new(),
                        sid: String::new(),
                        dirty: false,
                    });
                }
            } else if !relay.readable(event.token().0) {
                relay.close(event.token().0);
            }
        }
        for key in std::mem::take(&mut relay.dirty) {
            let Some(c) = relay.conns.get_mut(key) else {
                continue;
            };
            c.dirty = false;
            // Loopback with small answers: a short write means a stuck client; drop it.
            if !matches!(c.stream.write(&c.output), Ok(n) if n == c.output.len()) {
                relay.close(key);
            } else {
                c.output.clear();
            }
        }
    }
}

impl Relay {
    /// Reads what the connection has and handles every complete message; false to close.
    fn readable(&mut self, key: usize) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            let Some(c) = self.conns.get_mut(key) else {
                return true;
            };
            match c.stream.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => {
                    c.input.extend_from_slice(&buf[..n]);
                    if !self.consume(key) {
                        return false;
                    }
                    if n < buf.len() {
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
    }

    fn consume(&mut self, key: usize) -> bool {
        let mut input = std::mem::take(&mut self.conns[key].input);
        let mut at = 0;
        let ok = loop {
            if !self.conns[key].upgraded {
                let Some(end) = input.windows(4).position(|w| w == b"\r\n\r\n") else {
                    break true;
                };
                if !self.upgrade(key, &input[..end + 4]) {
                    break false;
                }
                at = end + 4;
                continue;
            }
            match unframe(&mut input[at..]) {
                Some(Ok((start, len, used))) => {
                    let payload = at + start..at + start + len;
                    at += used;
                    if !self.on_text(key, &input[payload]) {
                        break false;
                    }
                }
                Some(Err(())) => break false,
                None => break true,
            }
        };
        input.drain(..at);
        if let Some(c) = self.conns.get_mut(key) {
            c.input = input;
        }
        ok
    }

    fn upgrade(&mut self, key: usize, head: &[u8]) -> bool {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        if !matches!(request.parse(head), Ok(httparse::Status::Complete(_))) {
            return false;
        }
        let Some(ws_key) = request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))
        else {
            return false;
        };
        let accept = tungstenite::handshake::derive_accept_key(ws_key.value);
        self.next_sid += 1;
        let sid = format!("{:020}", self.next_sid);
        let c = &mut self.conns[key];
        c.upgraded = true;
        c.output.extend_from_slice(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            )
            .as_bytes(),
        );
        let open = format!(
            "0{{\"sid\":\"{sid}\",\"upgrades\":[],\"pingInterval\":25000,\
             \"pingTimeout\":20000,\"maxPayload\":1000000}}"
        );
        c.sid = sid;
        self.send(key, &open);
        true
    }

    fn on_text(&mut self, key: usize, text: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(text) else {
            return false;
        };
        if text == "40" {
            let answer = format!("40{{\"sid\":\"{}\"}}", self.conns[key].sid);
            self.send(key, &answer);
            return true;
        }
        let Some(rest) = text.strip_prefix("42") else {
            return text == "3";
        };
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (id, args) = rest.split_at(digits);
        if let Some(_empty) = args.strip_prefix("[\"createRoom\"") {
            let code = loop {
                let code = rand::rng().random_range(100_000..1_000_000u32);
                if !self.rooms.contains_key(&code) {
                    break code;
                }
            };
            self.rooms.insert(code, vec![key]);
            self.send(key, &format!("43{id}[{{\"code\":\"{code}\"}}]"));
        } else if let Some(body) = args.strip_prefix("[\"joinRoom\"") {
            let Some(members) =
                field(body, "code").and_then(|c| self.rooms.get_mut(&c.parse().ok()?))
            else {
                return false;
            };
            members.push(key);
            let others: Vec<usize> = members.iter().copied().filter(|&m| m != key).collect();
            let joined = format!(
                "42[\"userJoined\",{{\"userId\":\"{}\"}}]",
                self.conns[key].sid
            );
            for other in others {
                self.send(other, &joined);
            }
            self.send(
                key,
                &format!("43{id}[{{\"success\":true,\"messages\":[]}}]"),
            );
        } else if let Some(body) = args.strip_prefix("[\"sendMessage\"") {
            let (Some(code), Some(text)) = (field(body, "code"), field(body, "text")) else {
                return false;
            };
            let Some(members) = code.parse().ok().and_then(|c: u32| self.rooms.get(&c)) else {
                return false;
            };
            // A room has two members at most: copied out, no allocation.
            let members = [members.first().copied(), members.get(1).copied()];
            let timestamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let message = format!(
                "42[\"newMessage\",{{\"sender\":\"{}\",\"text\":\"{text}\",\"timestamp\":{timestamp}}}]",
                self.conns[key].sid
            );
            self.send(key, &format!("43{id}[{{\"success\":true}}]"));
            for member in members.into_iter().flatten() {
                self.send(member, &message);
            }
        } else {
            return false;
        }
        true
    }

    /// Appends one unmasked text frame to the connection's output.
    fn send(&mut self, key: usize, text: &str) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.output.push(0x81);
        match text.len() {
            n @ 0..=125 => c.output.push(n as u8),
            n @ 126..=0xffff => {
                c.output.push(126);
                c.output.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                c.output.push(127);
                c.output.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        c.output.extend_from_slice(text.as_bytes());
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(key);
        }
    }

    fn close(&mut self, key: usize) {
        if self.conns.try_remove(key).is_some() {
            self.rooms.retain(|_, members| {
                members.retain(|&m| m != key);
                !members.is_empty()
            });
        }
    }
}

/// The string value of `"name":"…"` in a flat JSON object, still escaped.
fn field<'a>(json: &'a str, name: &str) -> Option<&'a str> {
    let start = json.find(&format!("\"{name}\":\""))? + name.len() + 4;
    let bytes = json.as_bytes();
    let mut end = start;
    while end < bytes.len() && bytes[end] != b'"' {
        end += if bytes[end] == b'\\' { 2 } else { 1 };
    }
    json.get(start..end)
}

/// One masked client text frame at the start of `data`, unmasked in place: the payload's start
/// and length and the bytes used; `None` if incomplete, `Err` for anything but a final text frame.
fn unframe(data: &mut [u8]) -> Option<Result<(usize, usize, usize), ()>> {
    if data.len() < 2 {
        return None;
    }
    if data[0] != 0x81 || data[1] & 0x80 == 0 {
        return Some(Err(()));
    }
    let (len, header) = match data[1] & 0x7f {
        126 => (
            u16::from_be_bytes(data.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => return Some(Err(())),
        n => (n as usize, 2),
    };
    let mask: [u8; 4] = data.get(header..header + 4)?.try_into().ok()?;
    let start = header + 4;
    let payload = data.get_mut(start..start + len)?;
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
    Some(Ok((start, len, start + len)))
}
