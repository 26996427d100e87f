//! The link to Redis: one non-blocking TCP connection in the loop's poll, RESP3 (`HELLO 3`),
//! so the node's subscription and its commands share it and Redis's order is the order seen
//! here: a message published by a script that ran before this node's command arrives before
//! that command's reply.
//!
//! Commands are pipelined: queued by `send`, written once per loop turn (`flush`), their
//! replies matched in order. Every command has a deadline (`RedisConfig::timeout`); a link
//! whose oldest command is late, or that breaks, is closed, every waiting command fails, and it
//! is made again after a backoff (100 ms doubling to 2 s). Pure mechanism: what the commands
//! mean is the cluster chat's business.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::ToSocketAddrs;
use std::time::Duration;

use mio::Interest;
use mio::net::TcpStream;

use super::resp::{self, Reply};
use crate::engine::SocketToken;
use crate::sio::SioIo;
use crate::timer::Millis;

/// Where Redis is and how to talk to it (`--redis redis://[user:password@]host:port[/db]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Host and port, as written (resolved when the link is made).
    pub host: String,
    /// Port (6379 by default).
    pub port: u16,
    /// ACL user (`default` when only a password is given).
    pub user: Option<String>,
    /// Password (`AUTH`).
    pub password: Option<String>,
    /// Database number (`SELECT`).
    pub db: u32,
    /// How long a command may wait for its reply (and a connection attempt for its answer)
    /// before the link is given up and made again.
    pub timeout: Duration,
}

impl RedisConfig {
    /// Parses `redis://[user[:password]@]host[:port][/db]` (user and password %-encoded).
    pub fn parse(url: &str) -> Result<RedisConfig, String> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or("expected redis://[user:password@]host:port[/db]")?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (hostport, db) = match rest.split_once('/') {
            Some((h, "")) => (h, 0),
            Some((h, db)) => (h, db.parse().map_err(|_| format!("bad database {db:?}"))?),
            None => (rest, 0),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || p.parse::<u16>().is_ok() => {
                (h, p.parse().map_err(|_| format!("bad port {p:?}"))?)
            }
            _ => (hostport, 6379),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err("no host".into());
        }
        let (user, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => (
                    Some(percent_decode(u)?).filter(|u| !u.is_empty()),
                    Some(percent_decode(p)?),
                ),
                None => (None, Some(percent_decode(a)?)),
            },
        };
        Ok(RedisConfig {
            host: host.to_string(),
            port,
            user,
            password,
            db,
            timeout: Duration::from_secs(2),
        })
    }

    /// The URL without its password (for logs).
    pub fn display(&self) -> String {
        let auth = match (&self.user, &self.password) {
            (Some(u), Some(_)) => format!("{u}:***@"),
            (None, Some(_)) => "***@".into(),
            _ => String::new(),
        };
        format!("redis://{auth}{}:{}/{}", self.host, self.port, self.db)
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("bad %-escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad %-escape")?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "not UTF-8".into())
}

/// What the link tells its owner.
#[derive(Debug)]
pub enum LinkEvent<T> {
    /// A command's reply (an error reply included).
    Reply(T, Reply),
    /// A command that will get no reply: the link broke or was late.
    Failed(T),
    /// A message published to the channel this link subscribed to.
    Message(Vec<u8>),
    /// The link is made: the handshake (and the scripts' loading) is done; commands go.
    Up,
    /// The link broke (after being up): it is made again after a backoff.
    Down,
}

enum Waiting<T> {
    /// A handshake step (`HELLO`, `SELECT`, `SCRIPT LOAD`): its reply must not be an error.
    Setup,
    /// A script loaded: its SHA1 goes to `shas[i]`.
    Script(usize),
    /// `TIME`: Redis's clock, against this node's (`clock_offset`).
    Time,
    /// The owner's command.
    Owner(T),
}

enum State {
    /// Not connected: a new attempt at `retry_at`.
    Down { retry_at: Millis },
    /// Connecting (`connected` once TCP is), then the handshake: all by `deadline`.
    Connecting { deadline: Millis, connected: bool },
    /// Commands go.
    Up,
}

/// The link.
pub struct Link<T> {
    config: RedisConfig,
    scripts: &'static [&'static str],
    /// The scripts' SHA1s, as `SCRIPT LOAD` answered.
    shas: Vec<Vec<u8>>,
    channel: Vec<u8>,
    state: State,
    stream: Option<(TcpStream, SocketToken)>,
    out: Vec<u8>,
    input: Vec<u8>,
    /// What one `read` fills (allocated once: zeroing 64 KiB at every read costs more than
    /// the read).
    buf: Box<[u8]>,
    waiting: VecDeque<(Waiting<T>, Millis)>,
    backoff: Duration,
    /// The subscription's confirmation came (a push): with every setup reply, the link is up.
    subscribed: bool,
    /// Commands sent since start (`/metrics`).
    pub commands: u64,
    /// Times the link was made (`/metrics`).
    pub connects: u64,
    /// Redis's clock minus this node's wall clock, in ms, as read when the link was made.
    clock_offset: i64,
}

/// Most commands waiting for a reply: past it `send` refuses (the caller answers Server busy).
const MAX_WAITING: usize = 100_000;
/// Bytes one `read` of the link takes at most.
const READ_SIZE: usize = 64 * 1024;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl<T> Link<T> {
    /// A link, not yet made (`tick` makes it): it loads `scripts` and subscribes to `channel`.
    pub fn new(config: RedisConfig, scripts: &'static [&'static str], channel: String) -> Self {
        Link {
            config,
            scripts,
            shas: Vec::new(),
            channel: channel.into_bytes(),
            state: State::Down { retry_at: 0 },
            stream: None,
            out: Vec::new(),
            input: Vec::new(),
            buf: vec![0; READ_SIZE].into_boxed_slice(),
            waiting: VecDeque::new(),
            backoff: FIRST_BACKOFF,
            subscribed: false,
            commands: 0,
            connects: 0,
            clock_offset: 0,
        }
    }

    /// Commands go now.
    pub fn is_up(&self) -> bool {
        matches!(self.state, State::Up)
    }

    /// The moment, on Redis's clock (ms), after which a command sent now must change nothing:
    /// three quarters into its `timeout`, so that a command Redis runs late (it was stalled, or
    /// read the command off a connection this node has given up) is refused by its script
    /// rather than done behind an answer of `Server busy`. The margin covers the clocks'
    /// offset as measured (within a round trip).
    pub fn deadline(&self, unix_ms: u64) -> u64 {
        let budget = self.config.timeout.as_millis() as u64 * 3 / 4;
        (unix_ms + budget).saturating_add_signed(self.clock_offset)
    }

    /// How long the oldest command waiting for its reply has waited (0 when none waits).
    pub fn lag(&self, now: Millis) -> Millis {
        let timeout = self.config.timeout.as_millis() as Millis;
        self.waiting
            .front()
            .map_or(0, |(_, deadline)| (now + timeout).saturating_sub(*deadline))
    }

    /// The longest wait for Redis (`--redis-timeout`).
    pub fn timeout(&self) -> std::time::Duration {
        self.config.timeout
    }

    /// Commands waiting for their reply.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Queues a command (written at `flush`); the tag comes back if the link is not up or
    /// too many commands wait.
    pub fn send(&mut self, args: &[&[u8]], tag: T, now: Millis) -> Result<(), T> {
        if !self.is_up() || self.waiting.len() >= MAX_WAITING {
            return Err(tag);
        }
        self.push(args, Waiting::Owner(tag), now);
        Ok(())
    }

    /// Queues script `i` (`EVALSHA`, no keys) with `args`, as `send`.
    pub fn script(&mut self, i: usize, args: &[&[u8]], tag: T, now: Millis) -> Result<(), T> {
        if !self.is_up() || i >= self.shas.len() {
            return Err(tag);
        }
        if self.waiting.len() >= MAX_WAITING {
            return Err(tag);
        }
        let sha = std::mem::take(&mut self.shas[i]);
        self.push_parts(&[b"EVALSHA", &sha, b"0"], args, Waiting::Owner(tag), now);
        self.shas[i] = sha;
        Ok(())
    }

    fn push(&mut self, args: &[&[u8]], waiting: Waiting<T>, now: Millis) {
        self.push_parts(&[], args, waiting, now);
    }

    fn push_parts(&mut self, head: &[&[u8]], args: &[&[u8]], waiting: Waiting<T>, now: Millis) {
        resp::command(&mut self.out, head, args);
        self.commands += 1;
        let deadline = now + self.config.timeout.as_millis() as Millis;
        self.waiting.push_back((waiting, deadline));
    }

    /// Writes what is queued (once per loop turn); a write that would block waits for the
    /// socket's writable event.
    pub fn flush<A>(&mut self, io: &mut SioIo<'_, '_, A>, events: &mut Vec<LinkEvent<T>>) {
        if self.out.is_empty()
            || matches!(
                self.state,
                State::Connecting {
                    connected: false,
                    ..
                }
            )
        {
            return;
        }
        let Some((stream, _)) = &mut self.stream else {
            return;
        };
        let mut sent = 0;
        let result = loop {
            match stream.write(&self.out[sent..]) {
                Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    sent += n;
                    if sent == self.out.len() {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.out.drain(..sent);
        if let Err(e) = result {
            self.fail(&format!("write: {e}"), io, events);
        }
    }

    /// The link's socket is ready.
    pub fn on_socket<A>(
        &mut self,
        token: SocketToken,
        readable: bool,
        writable: bool,
        io: &mut SioIo<'_, '_, A>,
        events: &mut Vec<LinkEvent<T>>,
    ) {
        if self.stream.as_ref().is_none_or(|(_, t)| *t != token) {
            return;
        }
        if let State::Connecting { connected, .. } = &mut self.state
            && !*connected
        {
            if !writable && !readable {
                return;
            }
            let (stream, _) = self.stream.as_ref().expect("a stream while connecting");
            let error = match stream.take_error() {
                Ok(Some(e)) | Err(e) => Some(e),
                Ok(None) => stream.peer_addr().err(),
            };
            if let Some(e) = error {
                self.fail(&format!("connect: {e}"), io, events);
                return;
            }
            *connected = true;
        }
        if writable {
            self.flush(io, events);
        }
        if readable {
            self.read(io, events);
        }
    }

    /// Reads what Redis sent and handles each reply. A short read means the receive queue is
    /// empty and data arriving later raises a new edge-triggered event: no second `read` just
    /// to see `EAGAIN` (Redis closing after data is noticed by the next command's deadline).
    fn read<A>(&mut self, io: &mut SioIo<'_, '_, A>, events: &mut Vec<LinkEvent<T>>) {
        loop {
            let Some((stream, _)) = &mut self.stream else {
                return;
            };
            match stream.read(&mut self.buf) {
                Ok(0) => {
                    self.fail("closed by Redis", io, events);
                    return;
                }
                Ok(n) => {
                    self.input.extend_from_slice(&self.buf[..n]);
                    if n < self.buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(&format!("read: {e}"), io, events);
                    return;
                }
            }
        }
        let mut used = 0;
        let mut input = std::mem::take(&mut self.input);
        let failed = loop {
            match resp::decode(&input[used..]) {
                Ok(Some((reply, n))) => {
                    used += n;
                    if let Err(e) = self.on_reply(reply, io.unix_millis(), events) {
                        break Some(e);
                    }
                }
                Ok(None) => break None,
                Err(e) => break Some(format!("not RESP: {e}")),
            }
        };
        match failed {
            Some(e) => self.fail(&e, io, events),
            None => {
                input.drain(..used);
                self.input = input;
            }
        }
    }

    fn on_reply(
        &mut self,
        reply: Reply,
        unix_ms: u64,
        events: &mut Vec<LinkEvent<T>>,
    ) -> Result<(), String> {
        if let Reply::Push(items) = reply {
            match items.first().and_then(Reply::bytes) {
                Some(b"message") => {
                    if let Some(Reply::Bytes(payload)) = items.into_iter().nth(2) {
                        events.push(LinkEvent::Message(payload));
                    }
                }
                Some(b"subscribe") => {
                    self.subscribed = true;
                    self.check_up(events);
                }
                _ => {}
            }
            return Ok(());
        }
        let Some((waiting, _)) = self.waiting.pop_front() else {
            return Err("a reply nothing asked for".into());
        };
        match waiting {
            Waiting::Setup => {
                if let Reply::Error(e) = reply {
                    return Err(e);
                }
            }
            Waiting::Script(i) => match reply {
                Reply::Bytes(sha) => self.shas[i] = sha,
                other => return Err(format!("SCRIPT LOAD answered {other:?}")),
            },
            Waiting::Time => {
                let [secs, micros] = reply.items() else {
                    return Err(format!("TIME answered {reply:?}"));
                };
                let (Some(secs), Some(micros)) = (secs.int(), micros.int()) else {
                    return Err(format!("TIME answered {reply:?}"));
                };
                let redis_ms = secs * 1000 + micros / 1000;
                self.clock_offset = redis_ms - unix_ms as i64;
            }
            // The scripts are gone (SCRIPT FLUSH, a failover): a new link loads them again.
            Waiting::Owner(tag) if matches!(&reply, Reply::Error(e) if e.starts_with("NOSCRIPT")) =>
            {
                events.push(LinkEvent::Failed(tag));
                return Err("scripts not loaded (NOSCRIPT)".into());
            }
            Waiting::Owner(tag) => events.push(LinkEvent::Reply(tag, reply)),
        }
        self.check_up(events);
        Ok(())
    }

    fn check_up(&mut self, events: &mut Vec<LinkEvent<T>>) {
        if matches!(self.state, State::Connecting { .. })
            && self.subscribed
            && self.waiting.is_empty()
        {
            self.state = State::Up;
            self.backoff = FIRST_BACKOFF;
            self.connects += 1;
            events.push(LinkEvent::Up);
        }
    }

    /// Makes the link when it is due, and gives up one that is late: a connection or
    /// handshake past its deadline, or a command waiting past its own.
    pub fn tick<A>(&mut self, io: &mut SioIo<'_, '_, A>, events: &mut Vec<LinkEvent<T>>) {
        let now = io.now();
        match self.state {
            State::Down { retry_at } if now >= retry_at => self.connect(io, events),
            State::Down { .. } => {}
            State::Connecting { deadline, .. } if now > deadline => {
                self.fail("no answer in time", io, events)
            }
            State::Connecting { .. } => {}
            State::Up => {
                if self.waiting.front().is_some_and(|(_, d)| now > *d) {
                    self.fail("no reply in time", io, events);
                }
            }
        }
    }

    fn connect<A>(&mut self, io: &mut SioIo<'_, '_, A>, events: &mut Vec<LinkEvent<T>>) {
        let now = io.now();
        let addr = match (self.config.host.as_str(), self.config.port).to_socket_addrs() {
            Ok(mut addrs) => addrs.next(),
            Err(e) => {
                self.fail(&format!("resolve {}: {e}", self.config.host), io, events);
                return;
            }
        };
        let Some(addr) = addr else {
            self.fail(&format!("{} has no address", self.config.host), io, events);
            return;
        };
        let mut stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                self.fail(&format!("connect: {e}"), io, events);
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let token = match io.register_socket(&mut stream, Interest::READABLE | Interest::WRITABLE) {
            Ok(t) => t,
            Err(e) => {
                self.fail(&format!("register: {e}"), io, events);
                return;
            }
        };
        self.stream = Some((stream, token));
        self.state = State::Connecting {
            deadline: now + self.config.timeout.as_millis() as Millis,
            connected: false,
        };
        self.subscribed = false;
        self.shas = vec![Vec::new(); self.scripts.len()];
        let (user, password) = (self.config.user.clone(), self.config.password.clone());
        let mut hello: Vec<&[u8]> = vec![b"HELLO", b"3"];
        if let Some(password) = &password {
            let user = user.as_deref().unwrap_or("default");
            hello.extend_from_slice(&[b"AUTH", user.as_bytes(), password.as_bytes()]);
        }
        self.push(&hello, Waiting::Setup, now);
        if self.config.db != 0 {
            let db = self.config.db.to_string();
            self.push(&[b"SELECT", db.as_bytes()], Waiting::Setup, now);
        }
        self.push(&[b"TIME"], Waiting::Time, now);
        for (i, script) in self.scripts.iter().enumerate() {
            self.push(
                &[b"SCRIPT", b"LOAD", script.as_bytes()],
                Waiting::Script(i),
                now,
            );
        }
        let channel = std::mem::take(&mut self.channel);
        resp::command(&mut self.out, &[b"SUBSCRIBE"], &[&channel]);
        self.channel = channel;
    }

    /// Gives the link up: every command waiting fails, a new attempt follows the backoff.
    fn fail<A>(&mut self, why: &str, io: &mut SioIo<'_, '_, A>, events: &mut Vec<LinkEvent<T>>) {
        let was_up = self.is_up();
        if let Some((mut stream, token)) = self.stream.take() {
            let _ = io.deregister_socket(&mut stream, token);
        }
        self.out.clear();
        self.input.clear();
        self.subscribed = false;
        for (waiting, _) in self.waiting.drain(..) {
            if let Waiting::Owner(tag) = waiting {
                events.push(LinkEvent::Failed(tag));
            }
        }
        self.state = State::Down {
            retry_at: io.now() + self.backoff.as_millis() as Millis,
        };
        static DOWN: crate::log::Sampler = crate::log::Sampler::new();
        DOWN.warn(
            "redis link down",
            &[
                ("redis", &self.config.display()),
                ("error", &why),
                ("retry_in_ms", &(self.backoff.as_millis() as u64)),
            ],
        );
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        if was_up {
            events.push(LinkEvent::Down);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = RedisConfig::parse("redis://127.0.0.1:6380/2").unwrap();
        assert_eq!((c.host.as_str(), c.port, c.db), ("127.0.0.1", 6380, 2));
        assert_eq!((c.user, c.password), (None, None));
        let c = RedisConfig::parse("redis://app:p%40ss@redis.local").unwrap();
        assert_eq!((c.host.as_str(), c.port, c.db), ("redis.local", 6379, 0));
        assert_eq!(
            (c.user.as_deref(), c.password.as_deref()),
            (Some("app"), Some("p@ss"))
        );
        assert_eq!(c.display(), "redis://app:***@redis.local:6379/0");
        let c = RedisConfig::parse("redis://:secret@[::1]:7000/").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 7000));
        assert_eq!((c.user, c.password.as_deref()), (None, Some("secret")));
        for bad in [
            "http://x",
            "redis://",
            "redis://h:port",
            "redis://h/x",
            "redis://a:%zz@h",
        ] {
            assert!(RedisConfig::parse(bad).is_err(), "{bad}");
        }
    }
}
