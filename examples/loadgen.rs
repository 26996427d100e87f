//! A load generator for pairchat (and any server with the same chat contract): N concurrent
//! Socket.IO sessions over WebSocket (or HTTP long-polling, `--transport polling`) from one
//! `mio` loop, no async runtime.
//!
//! ```text
//! cargo run --release --example loadgen -- connect --url 127.0.0.1:3000 --sessions 10000 --concurrency 500
//! cargo run --release --example loadgen -- chat --pairs 1000 --in-flight 8 --duration 10s
//! cargo run --release --example loadgen -- chat --pairs 1000 --rate 10000 --duration 10s
//! cargo run --release --example loadgen -- idle --sessions 10000 --server-pid <pid>
//! # a cluster: each pair split across two nodes, CPU of both nodes and of Redis, Redis commands
//! cargo run --release --example loadgen -- chat --url 127.0.0.1:3001 --join-url 127.0.0.1:3002 \
//!     --server-pid <pid1>,<pid2> --redis-pid <pid> --redis 127.0.0.1:6379
//! ```
//!
//! - `connect`: sessions/s and connect latency percentiles (TCP connect → WebSocket upgrade →
//!   Engine.IO open → Socket.IO CONNECT answered; over polling: the handshake GET, the `40`
//!   POST, the GET that brings the CONNECT answer). Sessions are held until the end.
//!
//! A polling client holds two keep-alive connections as a browser does: a parked GET on one,
//! POSTs on the other, one at a time, with what waits joined into the next (socket.io-client's
//! batching). Every GET answer is followed at once by the next GET. `--transport upgrade`
//! connects as socket.io-client does by default: polling until the CONNECT answer, then the
//! upgrade to a WebSocket, which the session goes on with.
//! - `chat`: P room pairs (one `createRoom`, one `joinRoom`), each client keeping W
//!   `sendMessage` in flight (or a paced total rate): deliveries/s, ack and delivery latency
//!   p50/p99/p999, and an exactly-once check of every message at both members.
//! - `idle`: hold N sessions answering pings; the server's RSS per session from
//!   `/proc/PID/status` (needs `--server-pid`).
//!
//! With `--server-pid`, the server's CPU time (utime+stime from `/proc/PID/stat`) over the
//! measured window is reported per operation; given several times (or as a comma list), the
//! pids' CPU is summed (`server_cpu_s_each` lists each). `--redis-pid` reports a Redis server's
//! CPU beside it, and `--redis HOST:PORT` the commands Redis ran in the window (its
//! `INFO commandstats`: commands run by scripts count too, and the load generator's own `INFO`
//! does not) per operation.
//!
//! `--url` may list several servers: sessions (in chat mode, pairs) are spread over them in
//! turn. In chat mode `--join-url` sends each room's joining member elsewhere (a list is spread
//! the same way), so each pair is split across two servers; by default it joins where the
//! room's creator is. `--join-transport` gives the joining member a transport of its own (a
//! pair with one member on polling, the other on WebSocket). Client sockets are spread over `--sources` loopback source addresses
//! (127.0.0.1 … 127.0.0.N) so 20k+ sessions fit in the ephemeral port range. Progress goes to
//! stderr; one JSON result line to stdout.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Connect,
    Chat,
    Idle,
}

/// How sessions talk to the server (`--transport`).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Transport {
    /// A WebSocket from the start (`transports: ['websocket']`).
    WebSocket,
    /// HTTP long-polling for the whole session (`transports: ['polling']`), as a browser does
    /// it: a parked GET on one keep-alive connection, POSTs (one at a time, batched) on another.
    Polling,
    /// socket.io-client's default: long-polling until connected, then the upgrade to a
    /// WebSocket (`2probe`, `3probe`, `5`; the parked GET released by a noop). A session counts
    /// as connected once upgraded.
    Upgrade,
}

impl Transport {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "websocket" => Some(Transport::WebSocket),
            "polling" => Some(Transport::Polling),
            "upgrade" => Some(Transport::Upgrade),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::Polling => "polling",
            Transport::Upgrade => "upgrade",
        }
    }
}

struct Options {
    mode: Mode,
    /// Where sessions connect (chat: each pair's creator), in turn.
    targets: Vec<SocketAddrV4>,
    /// Where each pair's joiner connects, in turn; empty: where its creator is.
    join_targets: Vec<SocketAddrV4>,
    path: String,
    sessions: usize,
    concurrency: usize,
    pairs: usize,
    in_flight: usize,
    rate: f64,
    duration: Duration,
    warmup: Duration,
    sources: u8,
    server_pids: Vec<u32>,
    redis_pids: Vec<u32>,
    /// A Redis whose `INFO commandstats` is read at the window's edges.
    redis: Option<SocketAddrV4>,
    timeout: Duration,
    text_len: usize,
    transport: Transport,
    /// The transport of each pair's joining member, when not `transport` (mixed pairs).
    join_transport: Option<Transport>,
}

const USAGE: &str = "usage: loadgen <connect|chat|idle> [--url HOST:PORT[,HOST:PORT…]] \
[--join-url HOST:PORT[,…]] [--path /socket.io/] [--sessions N] [--concurrency K] [--pairs P] \
[--in-flight W] [--rate MSGS_PER_S] [--duration 10s] [--warmup 1s] [--sources N] \
[--server-pid PID[,PID…]]… [--redis-pid PID[,PID…]]… [--redis HOST:PORT] [--timeout 120s] \
[--text-len BYTES] [--transport websocket|polling|upgrade] [--join-transport …]";

fn parse_options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mode = match args.next().as_deref() {
        Some("connect") => Mode::Connect,
        Some("chat") => Mode::Chat,
        Some("idle") => Mode::Idle,
        _ => return Err(USAGE.into()),
    };
    let mut o = Options {
        mode,
        targets: vec![SocketAddrV4::new(Ipv4Addr::LOCALHOST, 3000)],
        join_targets: Vec::new(),
        path: "/socket.io/".into(),
        sessions: 10_000,
        concurrency: 500,
        pairs: 1000,
        in_flight: 8,
        rate: 0.0,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(1),
        sources: 4,
        server_pids: Vec::new(),
        redis_pids: Vec::new(),
        redis: None,
        timeout: Duration::from_secs(120),
        text_len: 16,
        transport: Transport::WebSocket,
        join_transport: None,
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = || format!("{flag}: bad value {value:?}");
        match flag.as_str() {
            "--url" => o.targets = parse_list(&value, parse_addr).ok_or_else(bad)?,
            "--join-url" => o.join_targets = parse_list(&value, parse_addr).ok_or_else(bad)?,
            "--redis" => o.redis = Some(parse_addr(&value).ok_or_else(bad)?),
            "--path" => o.path = value,
            "--sessions" => o.sessions = value.parse().map_err(|_| bad())?,
            "--concurrency" => o.concurrency = value.parse().map_err(|_| bad())?,
            "--pairs" => o.pairs = value.parse().map_err(|_| bad())?,
            "--in-flight" => o.in_flight = value.parse().map_err(|_| bad())?,
            "--rate" => o.rate = value.parse().map_err(|_| bad())?,
            "--duration" => o.duration = parse_duration(&value)?,
            "--warmup" => o.warmup = parse_duration(&value)?,
            "--sources" => o.sources = value.parse().map_err(|_| bad())?,
            "--server-pid" => o
                .server_pids
                .extend(parse_list(&value, |v| v.parse::<u32>().ok()).ok_or_else(bad)?),
            "--redis-pid" => o
                .redis_pids
                .extend(parse_list(&value, |v| v.parse::<u32>().ok()).ok_or_else(bad)?),
            "--timeout" => o.timeout = parse_duration(&value)?,
            "--text-len" => o.text_len = value.parse().map_err(|_| bad())?,
            "--transport" => o.transport = Transport::parse(&value).ok_or_else(bad)?,
            "--join-transport" => {
                o.join_transport = Some(Transport::parse(&value).ok_or_else(bad)?)
            }
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    o.sources = o.sources.max(1);
    o.concurrency = o.concurrency.max(1);
    o.in_flight = o.in_flight.max(1);
    Ok(o)
}

/// `HOST:PORT`, with or without a scheme (`http://`, `ws://`, `redis://`) or a trailing `/`.
fn parse_addr(value: &str) -> Option<SocketAddrV4> {
    let v = ["http://", "ws://", "redis://"]
        .iter()
        .fold(value, |v, scheme| v.trim_start_matches(scheme));
    v.trim_end_matches('/')
        .replace("localhost", "127.0.0.1")
        .parse()
        .ok()
}

/// A comma-separated list, none of it empty.
fn parse_list<T>(value: &str, item: impl Fn(&str) -> Option<T>) -> Option<Vec<T>> {
    value.split(',').map(|v| item(v.trim())).collect()
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(format!("bad duration {s:?}")),
    })
}

/// The server process's CPU time and resident set, from `/proc`.
fn server_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis(ticks * 10))
}

fn server_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The sum over several processes, if every one of them answers (none given: none).
fn sum_over<T: std::iter::Sum<T>>(pids: &[u32], read: impl Fn(u32) -> Option<T>) -> Option<T> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| read(p)).sum()
}

/// Calls per command, from a Redis server's `INFO commandstats` (one blocking round trip on a
/// connection of its own; commands run by scripts are counted too).
fn redis_calls(addr: SocketAddrV4) -> io::Result<Vec<(String, u64)>> {
    let mut stream = std::net::TcpStream::connect_timeout(&addr.into(), Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"INFO commandstats\r\n")?;
    // The answer is one bulk string: `$<len>\r\n<text>\r\n`.
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    let text = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        reply.extend_from_slice(&chunk[..n]);
        let Some(eol) = reply.windows(2).position(|w| w == b"\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&reply[..eol]).into_owned();
        let len: usize = head
            .strip_prefix('$')
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| io::Error::other(format!("INFO answered {head:?}")))?;
        if reply.len() >= eol + 2 + len {
            break String::from_utf8_lossy(&reply[eol + 2..eol + 2 + len]).into_owned();
        }
    };
    // Lines such as `cmdstat_evalsha:calls=12,usec=…`.
    Ok(text
        .lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect())
}

/// Commands that run a script: one round trip, however many commands the script runs.
const SCRIPT_COMMANDS: [&str; 6] = [
    "eval",
    "evalsha",
    "eval_ro",
    "evalsha_ro",
    "fcall",
    "fcall_ro",
];

/// What is read at the edges of the measured window: the servers' and Redis's CPU time, and
/// the commands Redis has run.
struct Sample {
    server_cpu: Vec<Option<Duration>>,
    redis_cpu: Option<Duration>,
    redis_calls: Option<Vec<(String, u64)>>,
}

impl Sample {
    fn take(o: &Options) -> Sample {
        Sample {
            server_cpu: o.server_pids.iter().map(|&p| server_cpu(p)).collect(),
            redis_cpu: sum_over(&o.redis_pids, server_cpu),
            redis_calls: o.redis.and_then(|addr| {
                redis_calls(addr)
                    .inspect_err(|e| eprintln!("loadgen: redis {addr}: {e}"))
                    .ok()
            }),
        }
    }

    /// The JSON fields (each after a comma) for what the servers and Redis spent since
    /// `before`, over `ops` operations called `per` (`session`, `message`), CPU per operation
    /// with `digits` decimals.
    fn usage_json(&self, before: &Sample, ops: u64, per: &str, digits: usize) -> String {
        let ops = ops.max(1) as f64;
        let spent: Vec<Option<f64>> = before
            .server_cpu
            .iter()
            .zip(&self.server_cpu)
            .map(|(a, b)| Some((b.as_ref()?.saturating_sub(*a.as_ref()?)).as_secs_f64()))
            .collect();
        let mut out = String::new();
        // No pids: no figure (a sum over nothing would be 0).
        let total = if spent.is_empty() {
            None
        } else {
            spent.iter().copied().sum::<Option<f64>>()
        };
        if let Some(cpu) = total {
            out += &format!(
                ",\"server_cpu_s\":{cpu:.2},\"server_cpu_us_per_{per}\":{:.digits$}",
                cpu * 1e6 / ops
            );
            let each: Vec<String> = spent.iter().flatten().map(|s| format!("{s:.2}")).collect();
            out += &format!(",\"server_cpu_s_each\":[{}]", each.join(","));
        }
        if let (Some(a), Some(b)) = (before.redis_cpu, self.redis_cpu) {
            let cpu = b.saturating_sub(a).as_secs_f64();
            out += &format!(
                ",\"redis_cpu_s\":{cpu:.2},\"redis_cpu_us_per_{per}\":{:.digits$}",
                cpu * 1e6 / ops
            );
        }
        if let (Some(a), Some(b)) = (&before.redis_calls, &self.redis_calls) {
            let mut calls: Vec<(&str, u64)> = b
                .iter()
                // The load generator's own INFO is not the servers'.
                .filter(|(name, _)| name != "info")
                .map(|(name, n)| {
                    let was = a.iter().find(|(m, _)| m == name).map_or(0, |(_, n)| *n);
                    (name.as_str(), n.saturating_sub(was))
                })
                .filter(|&(_, n)| n > 0)
                .collect();
            calls.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(y.0)));
            let total: u64 = calls.iter().map(|c| c.1).sum();
            let scripts: u64 = calls
                .iter()
                .filter(|c| SCRIPT_COMMANDS.contains(&c.0))
                .map(|c| c.1)
                .sum();
            let each: Vec<String> = calls
                .iter()
                .map(|(name, n)| format!("\"{name}\":{:.3}", *n as f64 / ops))
                .collect();
            out += &format!(
                ",\"redis_commands\":{total},\"redis_commands_per_{per}\":{:.3},\
                 \"redis_scripts_per_{per}\":{:.3},\"redis_calls_per_{per}\":{{{}}}",
                total as f64 / ops,
                scripts as f64 / ops,
                each.join(",")
            );
        }
        out
    }
}

/// A non-blocking TCP connect from a chosen loopback source address. std and mio do not bind
/// before connecting, so the libc calls are declared here by hand.
fn connect_from(source: Ipv4Addr, target: SocketAddrV4) -> io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    #[repr(C)]
    struct SockaddrIn {
        family: u16,
        port: u16,
        addr: [u8; 4],
        zero: [u8; 8],
    }
    impl SockaddrIn {
        fn new(addr: SocketAddrV4) -> Self {
            SockaddrIn {
                family: AF_INET as u16,
                port: addr.port().to_be(),
                addr: addr.ip().octets(),
                zero: [0; 8],
            }
        }
    }
    unsafe extern "C" {
        fn socket(domain: i32, ty: i32, protocol: i32) -> i32;
        fn setsockopt(fd: i32, level: i32, name: i32, value: *const i32, len: u32) -> i32;
        fn bind(fd: i32, addr: *const SockaddrIn, len: u32) -> i32;
        fn connect(fd: i32, addr: *const SockaddrIn, len: u32) -> i32;
    }
    const AF_INET: i32 = 2;
    const SOCK_STREAM: i32 = 1;
    const SOCK_NONBLOCK: i32 = 0o4000;
    const SOCK_CLOEXEC: i32 = 0o2000000;
    const SOL_IP: i32 = 0;
    const IP_BIND_ADDRESS_NO_PORT: i32 = 24;
    const EINPROGRESS: i32 = 115;
    let len = std::mem::size_of::<SockaddrIn>() as u32;
    // SAFETY: plain syscalls on integers and on properly laid out sockaddr_in values that live
    // on the stack for the duration of each call; the fd is owned by `stream` from its creation,
    // so it is closed on every error path.
    unsafe {
        let fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = std::net::TcpStream::from_raw_fd(fd);
        let one = 1i32;
        // Let connect() pick the port per destination instead of bind() per source.
        setsockopt(fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, 4);
        if bind(fd, &SockaddrIn::new(SocketAddrV4::new(source, 0)), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        // On a non-blocking socket `connect` answers EINPROGRESS, which is what mio expects.
        if connect(fd, &SockaddrIn::new(target), len) != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(EINPROGRESS) {
                return Err(e);
            }
        }
        stream.set_nodelay(true)?;
        Ok(TcpStream::from_std(stream))
    }
}

/// A client's connections, each with its own token (`token`): its WebSocket or a polling
/// session's POSTs, a polling session's long GET, the WebSocket probing its upgrade.
const MAIN: usize = 0;
const GET: usize = 1;
const PROBE: usize = 2;

fn token(key: usize, conn: usize) -> Token {
    Token(key << 2 | conn)
}

/// A connection from `source` to `target`, in the poll as `token`.
fn open(
    poll: &Poll,
    source: Ipv4Addr,
    target: SocketAddrV4,
    token: Token,
) -> io::Result<TcpStream> {
    let mut stream = connect_from(source, target)?;
    poll.registry()
        .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
    Ok(stream)
}

/// A WebSocket upgrade request for the Engine.IO path, `query` after its `EIO` and transport.
fn upgrade_request(path: &str, query: &str, host: SocketAddrV4) -> Vec<u8> {
    format!(
        "GET {path}?EIO=4&transport=websocket{query} HTTP/1.1\r\nHost: {host}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Where a client is in its session setup.
enum Phase {
    /// TCP connect in progress, then the upgrade request written and its answer read.
    Upgrading {
        buf: Vec<u8>,
        written: usize,
    },
    /// WebSocket up, waiting for the Engine.IO open packet.
    Opening,
    /// Polling: the handshake GET sent, its open packet awaited.
    Handshaking,
    /// Upgrading from polling: `2probe` sent on the WebSocket, `3probe` awaited.
    Probing,
    /// `40` sent, waiting for the CONNECT answer.
    Connecting,
    /// Connected: sid known.
    Ready,
    Dead,
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Phase::Upgrading { .. } => "upgrading",
            Phase::Opening => "opening",
            Phase::Handshaking => "handshaking",
            Phase::Probing => "probing",
            Phase::Connecting => "connecting",
            Phase::Ready => "ready",
            Phase::Dead => "dead",
        }
    }
}

/// Which sequence numbers of one sender one client has received: a bitmap, for the
/// exactly-once check whatever order a server delivers in.
#[derive(Default)]
struct Seen {
    bits: Vec<u64>,
    count: u64,
    next: u64,
}

enum Record {
    InOrder,
    Reordered,
    Duplicate,
}

impl Seen {
    fn record(&mut self, seq: u64) -> Record {
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        if self.bits[word] & bit != 0 {
            return Record::Duplicate;
        }
        self.bits[word] |= bit;
        self.count += 1;
        let in_order = seq == self.next;
        self.next = self.next.max(seq + 1);
        if in_order {
            Record::InOrder
        } else {
            Record::Reordered
        }
    }
}

/// How long the chat setup (sessions, rooms) may take before the run goes on without the
/// pairs that are not ready.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

struct Client {
    phase: Phase,
    stream: Option<TcpStream>,
    ws: Option<WebSocket<TcpStream>>,
    /// On long-polling: its two connections and what waits for the next POST.
    polling: Option<Box<Polling>>,
    /// Its WebSocket is a probe to upgrade a polling session (`Transport::Upgrade`).
    probing: bool,
    sid: String,
    started: Instant,
    /// Pair index and role (0 creates, 1 joins).
    pair: usize,
    role: u8,
    /// Next sequence number to send, and to expect from self and from the partner.
    next_seq: u64,
    seen_own: Seen,
    seen_peer: Seen,
    /// Outstanding acks in send order: (ack id, sent at).
    pending: VecDeque<(u64, Instant)>,
    next_ack: u64,
}

impl Client {
    /// A client of pair `pair` in role `role`, before its transport is set.
    fn new(pair: usize, role: u8) -> Self {
        Client {
            phase: Phase::Dead,
            stream: None,
            ws: None,
            polling: None,
            probing: false,
            sid: String::new(),
            started: Instant::now(),
            pair,
            role,
            next_seq: 0,
            seen_own: Seen::default(),
            seen_peer: Seen::default(),
            pending: VecDeque::new(),
            next_ack: 0,
        }
    }
}

/// One keep-alive HTTP/1.1 connection of a polling client: one request at a time.
struct Http {
    stream: TcpStream,
    /// Request bytes not written yet.
    out: Vec<u8>,
    /// Response bytes read and not taken yet.
    input: Vec<u8>,
    /// A request awaits its response.
    busy: bool,
}

impl Http {
    fn new(stream: TcpStream) -> Self {
        Http {
            stream,
            out: Vec::new(),
            input: Vec::new(),
            busy: false,
        }
    }

    fn request(&mut self, method: &str, path: &str, host: SocketAddrV4, body: &str) {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain;charset=UTF-8\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        self.out.extend_from_slice(head.as_bytes());
        self.out.extend_from_slice(body.as_bytes());
        self.busy = true;
    }

    /// Writes what it can (the rest when the socket is writable again).
    fn write(&mut self) -> io::Result<()> {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected
                    ) =>
                {
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads everything there is (edge-triggered).
    fn read(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// The next complete response (`Content-Length` framed): its status and body.
    fn response(&mut self) -> io::Result<Option<(u16, String)>> {
        let Some(end) = self.input.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Ok(None);
        };
        let head = String::from_utf8_lossy(&self.input[..end]).into_owned();
        let status = head.get(9..12).and_then(|s| s.parse().ok());
        let status = status.ok_or_else(|| io::Error::other(format!("bad status line: {head}")))?;
        let len = (head.lines())
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let total = end + 4 + len;
        if self.input.len() < total {
            return Ok(None);
        }
        let body = String::from_utf8_lossy(&self.input[end + 4..total]).into_owned();
        self.input.drain(..total);
        self.busy = false;
        Ok(Some((status, body)))
    }
}

/// A polling client's transport: its POST connection (the handshake's too), its GET one, and
/// the packets waiting for the next POST.
struct Polling {
    target: SocketAddrV4,
    source: Ipv4Addr,
    /// The Engine.IO session id.
    sid: String,
    /// `…?EIO=4&transport=polling&sid=…`, once the handshake answered.
    path: String,
    post: Http,
    get: Option<Http>,
    outbox: Vec<String>,
}

impl Polling {
    /// One POST of everything waiting, as socket.io-client batches (packets joined by `\x1e`).
    fn post_outbox(&mut self) {
        let body = self.outbox.join("\x1e");
        self.outbox.clear();
        self.post.request("POST", &self.path, self.target, &body);
    }
}

struct Pair {
    code: Option<String>,
    clients: [usize; 2],
    joined: bool,
}

#[derive(Default)]
struct Stats {
    connected: usize,
    connect_errors: usize,
    connect_lat: Vec<u32>,
    sent: u64,
    acked: u64,
    deliveries: u64,
    ack_lat: Vec<u32>,
    delivery_lat: Vec<u32>,
    duplicates: u64,
    reordered: u64,
    acks_reordered: u64,
    ack_errors: u64,
    protocol_errors: u64,
    closed_by_server: usize,
    measuring: bool,
}

struct Gen {
    o: Options,
    poll: Poll,
    clients: Slab<Client>,
    pairs: Vec<Pair>,
    stats: Stats,
    epoch: Instant,
    launched: usize,
    in_setup: usize,
    text_pad: String,
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl Gen {
    /// Where a session connects: pairs (other sessions in launch order) take the servers in
    /// turn, and a pair's joiner goes to `--join-url` when there is one.
    fn target(&self, pair: usize, role: u8) -> SocketAddrV4 {
        let turn = if pair == usize::MAX {
            self.launched
        } else {
            pair
        };
        let list = if role == 1 && !self.o.join_targets.is_empty() {
            &self.o.join_targets
        } else {
            &self.o.targets
        };
        list[turn % list.len()]
    }

    /// The transport of a session in role `role` (a pair's joiner may have its own).
    fn transport_of(&self, role: u8) -> Transport {
        match self.o.join_transport {
            Some(t) if role == 1 => t,
            _ => self.o.transport,
        }
    }

    fn launch(&mut self, pair: usize, role: u8) -> io::Result<usize> {
        let source = Ipv4Addr::new(
            127,
            0,
            0,
            1 + (self.launched % self.o.sources as usize) as u8,
        );
        let target = self.target(pair, role);
        let transport = self.transport_of(role);
        self.launched += 1;
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        let stream = open(&self.poll, source, target, token(key, MAIN))?;
        if transport != Transport::WebSocket {
            let mut post = Http::new(stream);
            let path = format!("{}?EIO=4&transport=polling", self.o.path);
            post.request("GET", &path, target, "");
            let polling = Polling {
                target,
                source,
                sid: String::new(),
                path: String::new(),
                post,
                get: None,
                outbox: Vec::new(),
            };
            entry.insert(Client {
                phase: Phase::Handshaking,
                polling: Some(Box::new(polling)),
                ..Client::new(pair, role)
            });
            self.in_setup += 1;
            return Ok(key);
        }
        entry.insert(Client {
            phase: Phase::Upgrading {
                buf: upgrade_request(&self.o.path, "", target),
                written: 0,
            },
            stream: Some(stream),
            ..Client::new(pair, role)
        });
        self.in_setup += 1;
        Ok(key)
    }

    fn fail(&mut self, key: usize, why: &str) {
        let c = &mut self.clients[key];
        if matches!(c.phase, Phase::Dead) {
            return;
        }
        if !matches!(c.phase, Phase::Ready) {
            self.stats.connect_errors += 1;
            self.in_setup -= 1;
            if self.stats.connect_errors <= 5 {
                eprintln!(
                    "loadgen: session failed during setup after {:?}: {why}",
                    c.started.elapsed()
                );
            }
        } else {
            self.stats.closed_by_server += 1;
            if self.stats.closed_by_server <= 5 {
                eprintln!(
                    "loadgen: session closed after {:?}: {why}",
                    c.started.elapsed()
                );
            }
        }
        c.phase = Phase::Dead;
        c.ws = None;
        c.stream = None;
        c.polling = None;
    }

    /// Drives one client after a readiness event on its connection `conn` (a polling client's
    /// `GET`, its upgrade's WebSocket `PROBE`, any other `MAIN`).
    fn drive(&mut self, key: usize, conn: usize) {
        if self.clients[key].polling.is_some() && conn != PROBE {
            if let Err(e) = self.drive_polling(key, conn) {
                self.fail(key, &format!("polling: {e}"));
            }
            return;
        }
        if let Phase::Upgrading { .. } = self.clients[key].phase
            && let Err(e) = self.upgrade_step(key)
        {
            self.fail(key, &format!("upgrade: {e}"));
            return;
        }
        if self.clients[key].ws.is_none() {
            return;
        }
        loop {
            let msg = {
                let ws = self.clients[key].ws.as_mut().expect("ws");
                match ws.read() {
                    Ok(m) => m,
                    Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                        break;
                    }
                    Err(e) => {
                        self.fail(key, &format!("read: {e}"));
                        return;
                    }
                }
            };
            match msg {
                Message::Text(t) => self.on_text(key, t.as_str()),
                Message::Close(frame) => {
                    self.fail(key, &format!("close frame {frame:?}"));
                    return;
                }
                _ => {}
            }
        }
        self.flush(key);
    }

    fn flush(&mut self, key: usize) {
        if let Some(p) = self.clients[key].polling.as_mut() {
            if let Err(e) = p.post.write() {
                self.fail(key, &format!("post: {e}"));
            }
            return;
        }
        if let Some(ws) = self.clients[key].ws.as_mut() {
            match ws.flush() {
                Ok(()) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => self.fail(key, &format!("flush: {e}")),
            }
        }
    }

    fn send(&mut self, key: usize, text: String) {
        if let Some(p) = self.clients[key].polling.as_mut() {
            p.outbox.push(text);
            if !p.post.busy {
                p.post_outbox();
            }
            return;
        }
        let Some(ws) = self.clients[key].ws.as_mut() else {
            return;
        };
        match ws.write(Message::text(text)) {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => self.fail(key, &format!("write: {e}")),
        }
    }

    /// A polling client's connection `conn` is ready: write what waits, read, and handle each
    /// complete response (the handshake's open packet, a POST's `ok`, a GET's payload, after
    /// which the next GET parks).
    fn drive_polling(&mut self, key: usize, conn: usize) -> io::Result<()> {
        loop {
            let Some(p) = self.clients.get_mut(key).and_then(|c| c.polling.as_mut()) else {
                return Ok(());
            };
            let http = match conn {
                MAIN => &mut p.post,
                _ => p
                    .get
                    .as_mut()
                    .ok_or_else(|| io::Error::other("no GET connection"))?,
            };
            if let Some(e) = http.stream.take_error()? {
                return Err(e);
            }
            http.write()?;
            http.read()?;
            let Some((status, body)) = http.response()? else {
                return Ok(());
            };
            if status != 200 {
                return Err(io::Error::other(format!("{status}: {body}")));
            }
            match (conn, &self.clients[key].phase) {
                (MAIN, Phase::Handshaking) => self.on_polling_open(key, &body)?,
                (MAIN, _) if body == "ok" => {
                    let p = self.clients[key].polling.as_mut().expect("polling");
                    if !p.outbox.is_empty() {
                        p.post_outbox();
                        p.post.write()?;
                    }
                }
                (MAIN, _) => return Err(io::Error::other(format!("POST answered {body:?}"))),
                _ => {
                    for packet in body.split('\x1e') {
                        self.on_text(key, packet);
                    }
                    let c = &mut self.clients[key];
                    // Polling pauses while the upgrade's probe is under way.
                    let Some(p) = c.polling.as_mut().filter(|_| !c.probing) else {
                        return Ok(());
                    };
                    let get = p.get.as_mut().expect("a GET connection");
                    get.request("GET", &p.path, p.target, "");
                    get.write()?;
                    self.flush(key);
                }
            }
        }
    }

    /// The handshake's open packet: the GET connection opens and parks its first GET, and the
    /// CONNECT goes in the first POST.
    fn on_polling_open(&mut self, key: usize, body: &str) -> io::Result<()> {
        let sid = json_str(body, "\"sid\":\"")
            .ok_or_else(|| io::Error::other(format!("no open packet: {body}")))?
            .to_string();
        let base = &self.o.path;
        let p = self.clients[key].polling.as_mut().expect("polling");
        p.path = format!("{base}?EIO=4&transport=polling&sid={sid}");
        p.sid = sid;
        let stream = open(&self.poll, p.source, p.target, token(key, GET))?;
        let mut get = Http::new(stream);
        get.request("GET", &p.path, p.target, "");
        get.write()?;
        p.get = Some(get);
        self.clients[key].phase = Phase::Connecting;
        self.send(key, "40".into());
        self.flush(key);
        Ok(())
    }

    fn upgrade_step(&mut self, key: usize) -> io::Result<()> {
        let c = &mut self.clients[key];
        let stream = c.stream.as_mut().expect("stream");
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        let Phase::Upgrading { buf, written } = &mut c.phase else {
            return Ok(());
        };
        // Write the request (once the connect completes), then read the 101.
        while *written < buf.len() {
            match stream.write(&buf[*written..]) {
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) => return Err(e),
            }
            if *written == buf.len() {
                buf.clear();
                *written = usize::MAX;
            }
        }
        let mut chunk = [0u8; 1024];
        loop {
            match stream.read(&mut chunk) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Ok(());
        };
        if !buf.starts_with(b"HTTP/1.1 101") {
            let line = String::from_utf8_lossy(&buf[..buf.len().min(40)]).into_owned();
            return Err(io::Error::other(format!("no 101: {line}")));
        }
        let rest = buf[end + 4..].to_vec();
        let stream = c.stream.take().expect("stream");
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            // Frames accumulate until the loop flushes the client once per turn.
            .write_buffer_size(64 * 1024);
        let mut ws = WebSocket::from_partially_read(stream, rest, Role::Client, Some(config));
        c.phase = if c.probing {
            // A probe: the session exists, so no open packet comes.
            ws.send(Message::text("2probe")).or_else(|e| match e {
                tungstenite::Error::Io(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                e => Err(io::Error::other(e)),
            })?;
            Phase::Probing
        } else {
            Phase::Opening
        };
        c.ws = Some(ws);
        Ok(())
    }

    fn on_text(&mut self, key: usize, text: &str) {
        let bytes = text.as_bytes();
        match bytes.first() {
            Some(b'0') => {
                if let Phase::Opening = self.clients[key].phase {
                    self.clients[key].phase = Phase::Connecting;
                    self.send(key, "40".into());
                }
            }
            Some(b'2') => self.send(key, "3".into()),
            Some(b'3') if text == "3probe" => self.upgraded(key),
            Some(b'4') => match bytes.get(1) {
                Some(b'0') => self.on_connected(key, text),
                Some(b'2') => self.on_event(key, &text[2..]),
                Some(b'3') => self.on_ack(key, &text[2..]),
                _ => self.stats.protocol_errors += 1,
            },
            _ => {}
        }
    }

    fn on_connected(&mut self, key: usize, text: &str) {
        let c = &mut self.clients[key];
        if !matches!(c.phase, Phase::Connecting) {
            return;
        }
        c.sid = json_str(text, "\"sid\":\"").unwrap_or_default().to_string();
        let role = c.role;
        if self.transport_of(role) == Transport::Upgrade {
            if let Err(e) = self.probe(key) {
                self.fail(key, &format!("probe: {e}"));
            }
            return;
        }
        self.ready(key);
    }

    /// Opens the WebSocket that probes for the upgrade of a polling session.
    fn probe(&mut self, key: usize) -> io::Result<()> {
        let c = &mut self.clients[key];
        let p = c.polling.as_ref().expect("a polling session");
        let stream = open(&self.poll, p.source, p.target, token(key, PROBE))?;
        let buf = upgrade_request(&self.o.path, &format!("&sid={}", p.sid), p.target);
        c.stream = Some(stream);
        c.probing = true;
        c.phase = Phase::Upgrading { buf, written: 0 };
        Ok(())
    }

    /// `3probe`: the upgrade completes with `5` (the parked GET has its noop), and the session
    /// goes on over the WebSocket alone.
    fn upgraded(&mut self, key: usize) {
        let c = &mut self.clients[key];
        if !matches!(c.phase, Phase::Probing) {
            self.stats.protocol_errors += 1;
            return;
        }
        let outbox = c.polling.take().map(|p| p.outbox).unwrap_or_default();
        c.probing = false;
        self.send(key, "5".into());
        for packet in outbox {
            self.send(key, packet);
        }
        self.flush(key);
        self.ready(key);
    }

    /// Connected (and upgraded, when it upgrades): counted, and the chat begins.
    fn ready(&mut self, key: usize) {
        let c = &mut self.clients[key];
        c.phase = Phase::Ready;
        self.in_setup -= 1;
        self.stats.connected += 1;
        self.stats
            .connect_lat
            .push(c.started.elapsed().as_micros() as u32);
        if self.o.mode == Mode::Chat {
            if c.role == 0 {
                self.send(key, "420[\"createRoom\",{}]".into());
            } else {
                let pair = c.pair;
                self.try_join(pair);
            }
        }
    }

    /// The joiner joins once it is connected and the creator has its code.
    fn try_join(&mut self, pair: usize) {
        let partner = self.pairs[pair].clients[1];
        let Some(code) = self.pairs[pair].code.as_deref() else {
            return;
        };
        if !self
            .clients
            .get(partner)
            .is_some_and(|c| matches!(c.phase, Phase::Ready))
        {
            return;
        }
        let packet = format!("420[\"joinRoom\",{{\"code\":\"{code}\"}}]");
        self.send(partner, packet);
        self.flush(partner);
    }

    fn on_ack(&mut self, key: usize, text: &str) {
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        let Ok(id) = text[..digits].parse::<u64>() else {
            self.stats.protocol_errors += 1;
            return;
        };
        let body = &text[digits..];
        let c = &mut self.clients[key];
        if c.pair != usize::MAX && self.pairs[c.pair].joined {
            // A sendMessage ack (a server may answer concurrent events out of order).
            match c.pending.iter().position(|&(want, _)| want == id) {
                Some(i) => {
                    let (_, at) = c.pending.remove(i).expect("position is in range");
                    if i > 0 {
                        self.stats.acks_reordered += 1;
                    }
                    if !body.contains("\"success\":true") {
                        self.stats.ack_errors += 1;
                    }
                    self.stats.acked += 1;
                    if self.stats.measuring {
                        self.stats.ack_lat.push(at.elapsed().as_micros() as u32);
                    }
                }
                None => self.stats.ack_errors += 1,
            }
            return;
        }
        // Setup acks.
        let pair = c.pair;
        if pair == usize::MAX {
            self.stats.protocol_errors += 1;
        } else if c.role == 0 {
            let Some(code) = json_str(body, "\"code\":\"") else {
                self.stats.ack_errors += 1;
                eprintln!("loadgen: createRoom failed: {body}");
                return;
            };
            self.pairs[pair].code = Some(code.to_string());
            self.try_join(pair);
        } else if body.contains("\"success\":true") {
            self.pairs[pair].joined = true;
        } else {
            self.stats.ack_errors += 1;
            eprintln!("loadgen: joinRoom failed: {body}");
        }
    }

    /// `["newMessage",{"sender":"…","text":"<seq> <micros>…","timestamp":…}]` and others.
    fn on_event(&mut self, key: usize, text: &str) {
        if !text.starts_with("[\"newMessage\"") {
            return;
        }
        let (Some(sender), Some(body)) = (
            json_str(text, "\"sender\":\""),
            json_str(text, "\"text\":\""),
        ) else {
            self.stats.protocol_errors += 1;
            return;
        };
        let mut parts = body.split(' ');
        let Some(seq) = parts.next().and_then(|s| s.parse::<u64>().ok()) else {
            self.stats.protocol_errors += 1;
            return;
        };
        let sent_us: u64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let c = &mut self.clients[key];
        let seen = if sender == c.sid {
            &mut c.seen_own
        } else {
            &mut c.seen_peer
        };
        match seen.record(seq) {
            Record::InOrder => {}
            Record::Reordered => self.stats.reordered += 1,
            Record::Duplicate => self.stats.duplicates += 1,
        }
        self.stats.deliveries += 1;
        if self.stats.measuring {
            let now_us = self.epoch.elapsed().as_micros() as u64;
            self.stats
                .delivery_lat
                .push(now_us.saturating_sub(sent_us) as u32);
        }
    }

    fn send_message(&mut self, key: usize) {
        let now_us = self.epoch.elapsed().as_micros() as u64;
        let c = &mut self.clients[key];
        let Some(code) = self.pairs[c.pair].code.as_deref() else {
            return;
        };
        let id = c.next_ack;
        c.next_ack += 1;
        let seq = c.next_seq;
        c.next_seq += 1;
        c.pending.push_back((id, Instant::now()));
        let packet = format!(
            "42{id}[\"sendMessage\",{{\"code\":\"{code}\",\"text\":\"{seq} {now_us} {}\"}}]",
            self.text_pad
        );
        self.stats.sent += 1;
        self.send(key, packet);
    }

    fn alive(&self) -> usize {
        self.clients
            .iter()
            .filter(|(_, c)| !matches!(c.phase, Phase::Dead))
            .count()
    }

    /// Runs the loop until `done` says so or the deadline passes; `tick` runs every turn.
    fn run_until(
        &mut self,
        deadline: Instant,
        mut tick: impl FnMut(&mut Gen) -> bool,
    ) -> io::Result<bool> {
        let mut events = Events::with_capacity(1024);
        while Instant::now() < deadline {
            if tick(self) {
                return Ok(true);
            }
            self.poll
                .poll(&mut events, Some(Duration::from_millis(1)))?;
            for event in events.iter() {
                let (key, conn) = (event.token().0 >> 2, event.token().0 & 3);
                if self.clients.contains(key) {
                    self.drive(key, conn);
                }
            }
        }
        Ok(false)
    }
}

/// The JSON string value after `key` (no escapes expected in what the loadgen reads).
fn json_str<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let start = text.find(key)? + key.len();
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

fn lat_json(name: &str, v: &mut [u32]) -> String {
    v.sort_unstable();
    format!(
        "\"{name}_p50_us\":{},\"{name}_p99_us\":{},\"{name}_p999_us\":{},\"{name}_max_us\":{}",
        percentile(v, 0.5),
        percentile(v, 0.99),
        percentile(v, 0.999),
        v.last().copied().unwrap_or(0)
    )
}

fn main() {
    let o = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(o) {
        eprintln!("loadgen: {e}");
        std::process::exit(1);
    }
}

fn run(o: Options) -> io::Result<()> {
    let started = Instant::now();
    let hard_deadline = started + o.timeout;
    let mut g = Gen {
        text_pad: "x".repeat(o.text_len),
        o,
        poll: Poll::new()?,
        clients: Slab::new(),
        pairs: Vec::new(),
        stats: Stats::default(),
        epoch: Instant::now(),
        launched: 0,
        in_setup: 0,
    };
    let rss_before = sum_over(&g.o.server_pids, server_rss_kib);
    let before = Sample::take(&g.o);
    match g.o.mode {
        Mode::Connect | Mode::Idle => {
            let total = g.o.sessions;
            let t0 = Instant::now();
            let mut last_report = Instant::now();
            g.run_until(hard_deadline, |g| {
                while g.launched < total && g.in_setup < g.o.concurrency {
                    if let Err(e) = g.launch(usize::MAX, 2) {
                        g.stats.connect_errors += 1;
                        g.launched += 1;
                        if g.stats.connect_errors <= 5 {
                            eprintln!("loadgen: connect: {e}");
                        }
                    }
                }
                if last_report.elapsed() > Duration::from_secs(1) {
                    last_report = Instant::now();
                    eprintln!(
                        "loadgen: {} connected, {} errors, {} in setup",
                        g.stats.connected, g.stats.connect_errors, g.in_setup
                    );
                }
                g.launched >= total && g.in_setup == 0
            })?;
            let elapsed = t0.elapsed();
            let after = Sample::take(&g.o);
            let mut out = format!(
                "{{\"mode\":\"{}\",\"transport\":\"{}\",\"sessions\":{},\"connected\":{},\"connect_errors\":{},\
                 \"elapsed_s\":{:.3},\"sessions_per_s\":{:.0},{}",
                if g.o.mode == Mode::Connect {
                    "connect"
                } else {
                    "idle"
                },
                g.o.transport.name(),
                total,
                g.stats.connected,
                g.stats.connect_errors,
                elapsed.as_secs_f64(),
                g.stats.connected as f64 / elapsed.as_secs_f64(),
                lat_json("connect", &mut g.stats.connect_lat)
            );
            out += &after.usage_json(&before, g.stats.connected as u64, "session", 1);
            if g.o.mode == Mode::Idle {
                // Hold the sessions (answering pings) and let the server settle.
                let until = (Instant::now() + g.o.duration).min(hard_deadline);
                g.run_until(until, |_| false)?;
                let rss_after = sum_over(&g.o.server_pids, server_rss_kib);
                let alive = g.alive();
                out += &format!(
                    ",\"held\":{alive},\"closed_by_server\":{}",
                    g.stats.closed_by_server
                );
                if let (Some(a), Some(b)) = (rss_before, rss_after) {
                    out += &format!(
                        ",\"server_rss_before_kib\":{a},\"server_rss_after_kib\":{b},\
                         \"server_rss_per_session_bytes\":{:.0}",
                        (b.saturating_sub(a)) as f64 * 1024.0 / alive.max(1) as f64
                    );
                }
            }
            println!("{out}}}");
        }
        Mode::Chat => run_chat(&mut g, hard_deadline)?,
    }
    Ok(())
}

fn run_chat(g: &mut Gen, hard_deadline: Instant) -> io::Result<()> {
    // Setup: 2P sessions, then createRoom/joinRoom per pair.
    let pairs = g.o.pairs;
    g.pairs = (0..pairs)
        .map(|_| Pair {
            code: None,
            clients: [usize::MAX; 2],
            joined: false,
        })
        .collect();
    let mut next_pair = 0;
    let setup_deadline = (Instant::now() + SETUP_TIMEOUT).min(hard_deadline);
    g.run_until(setup_deadline, |g| {
        while next_pair < pairs && g.in_setup + 2 <= g.o.concurrency {
            match (g.launch(next_pair, 0), g.launch(next_pair, 1)) {
                (Ok(a), Ok(b)) => g.pairs[next_pair].clients = [a, b],
                _ => g.stats.connect_errors += 1,
            }
            next_pair += 1;
        }
        // Done when every pair is in its room or has lost a member.
        next_pair == pairs
            && g.in_setup == 0
            && g.pairs.iter().all(|p| {
                p.joined
                    || p.clients.iter().any(|&c| {
                        g.clients
                            .get(c)
                            .is_none_or(|c| matches!(c.phase, Phase::Dead))
                    })
            })
    })?;
    let ready = g.pairs.iter().filter(|p| p.joined).count();
    for (i, p) in g
        .pairs
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.joined)
        .take(5)
    {
        let phase = |k: usize| g.clients.get(k).map(|c| c.phase.name()).unwrap_or("none");
        eprintln!(
            "loadgen: pair {i} not in its room: code {:?}, creator {}, joiner {}",
            p.code,
            phase(p.clients[0]),
            phase(p.clients[1])
        );
    }
    eprintln!(
        "loadgen: {ready}/{pairs} pairs in rooms ({} connect errors)",
        g.stats.connect_errors
    );
    if ready == 0 {
        return Err(io::Error::other("no pair could be set up"));
    }
    let senders: Vec<usize> = g
        .pairs
        .iter()
        .filter(|p| p.joined)
        .flat_map(|p| p.clients)
        .collect();
    let rate = g.o.rate;
    let in_flight = g.o.in_flight;
    let warmup_end = Instant::now() + g.o.warmup;
    let end = warmup_end + g.o.duration;
    let mut window: Option<(Instant, u64, u64, Sample)> = None;
    let mut paced_start: Option<Instant> = None;
    let mut cursor = 0usize;
    let mut last_report = Instant::now();
    g.run_until(hard_deadline.min(end), |g| {
        let now = Instant::now();
        if window.is_none() && now >= warmup_end {
            g.stats.measuring = true;
            window = Some((now, g.stats.deliveries, g.stats.acked, Sample::take(&g.o)));
        }
        if rate > 0.0 {
            let start = *paced_start.get_or_insert(now);
            let due = (now.duration_since(start).as_secs_f64() * rate) as u64;
            let mut budget = due.saturating_sub(g.stats.sent);
            let mut tried = 0;
            while budget > 0 && tried < senders.len() {
                let key = senders[cursor % senders.len()];
                cursor += 1;
                tried += 1;
                if g.clients[key].pending.len() < in_flight
                    && matches!(g.clients[key].phase, Phase::Ready)
                {
                    g.send_message(key);
                    g.flush(key);
                    budget -= 1;
                    tried = 0;
                }
            }
        } else {
            for &key in &senders {
                if !matches!(g.clients[key].phase, Phase::Ready) {
                    continue;
                }
                let mut wrote = false;
                while g.clients[key].pending.len() < in_flight {
                    g.send_message(key);
                    wrote = true;
                }
                if wrote {
                    g.flush(key);
                }
            }
        }
        if last_report.elapsed() > Duration::from_secs(1) {
            last_report = Instant::now();
            eprintln!(
                "loadgen: sent {} acked {} delivered {}",
                g.stats.sent, g.stats.acked, g.stats.deliveries
            );
        }
        false
    })?;
    let (w_start, d0, a0, before) = match window {
        Some((at, d, a, sample)) => (at, d, a, Some(sample)),
        None => (Instant::now(), 0, 0, None),
    };
    let elapsed = w_start.elapsed();
    let deliveries = g.stats.deliveries - d0;
    let acked = g.stats.acked - a0;
    let after = Sample::take(&g.o);
    g.stats.measuring = false;
    // Drain: everything sent must be acked and delivered to both members.
    let drain_until = (Instant::now() + Duration::from_secs(5)).min(hard_deadline);
    g.run_until(drain_until, |g| {
        g.stats.acked == g.stats.sent && g.stats.deliveries == 2 * g.stats.sent
    })?;
    let mut lost = 0u64;
    for p in g.pairs.iter().filter(|p| p.joined) {
        let [a, b] = p.clients;
        let (ca, cb) = (&g.clients[a], &g.clients[b]);
        lost += ca.next_seq.saturating_sub(ca.seen_own.count)
            + ca.next_seq.saturating_sub(cb.seen_peer.count)
            + cb.next_seq.saturating_sub(cb.seen_own.count)
            + cb.next_seq.saturating_sub(ca.seen_peer.count);
    }
    let mut out = format!(
        "{{\"mode\":\"chat\",\"transport\":\"{}\",\"join_transport\":\"{}\",\"pairs\":{ready},\"in_flight\":{in_flight},\"rate\":{rate},\
         \"elapsed_s\":{:.3},\"sent\":{},\"acked\":{},\"deliveries\":{},\
         \"deliveries_per_s\":{:.0},\"acks_per_s\":{:.0},\"lost\":{lost},\"duplicates\":{},\"reordered\":{},\"acks_reordered\":{},\
         \"ack_errors\":{},\"protocol_errors\":{},\"closed_by_server\":{},{},{}",
        g.o.transport.name(),
        g.transport_of(1).name(),
        elapsed.as_secs_f64(),
        g.stats.sent,
        g.stats.acked,
        g.stats.deliveries,
        deliveries as f64 / elapsed.as_secs_f64(),
        acked as f64 / elapsed.as_secs_f64(),
        g.stats.duplicates,
        g.stats.reordered,
        g.stats.acks_reordered,
        g.stats.ack_errors,
        g.stats.protocol_errors,
        g.stats.closed_by_server,
        lat_json("ack", &mut g.stats.ack_lat),
        lat_json("delivery", &mut g.stats.delivery_lat)
    );
    if let Some(before) = before {
        out += &after.usage_json(&before, acked, "message", 2);
    }
    println!("{out}}}");
    Ok(())
}
