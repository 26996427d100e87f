//! A Socket.IO client of the chat over real sockets (WebSocket-only sessions), a pair of
//! well-behaved users, polling helpers and `/metrics` readers: shared by the tests that drive
//! the chat (`limits`, `hostile`, `chat`).
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use pairchat::Config;
use pairchat::chat::{Chat, ChatConfig};
use pairchat::sio::{SioConfig, SocketIo};
use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

use super::{HttpConn, READ_TIMEOUT, TestServer};

pub const PATH: &str = "/socket.io/";
pub const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n";
pub const METRICS: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";

pub type Ws = WebSocket<TcpStream>;

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---- servers -------------------------------------------------------------------------------

/// Defaults with heartbeats too slow to show up in a test.
pub fn config() -> Config {
    Config {
        ping_interval: Duration::from_secs(60),
        ping_timeout: Duration::from_secs(60),
        ..Config::default()
    }
}

/// The chat with no abuse limits; tests switch on the one they are about.
pub fn chat_config() -> ChatConfig {
    ChatConfig {
        join_failures: None,
        message_rate: None,
        ..ChatConfig::default()
    }
}

pub fn chat_server(config: Config, chat: ChatConfig) -> TestServer {
    chat_server_with(config, chat, SioConfig::default())
}

pub fn chat_server_with(config: Config, chat: ChatConfig, sio: SioConfig) -> TestServer {
    TestServer::start(config, move |cfg| {
        SocketIo::new(Chat::new(chat), sio, cfg.max_payload)
    })
}

// ---- metrics -------------------------------------------------------------------------------

/// The value of one series (`name` or `name{labels}`) in a `/metrics` text.
pub fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

/// Panics caught by the server's loop.
pub fn panics(server: &TestServer) -> u64 {
    metric(&scrape(server), "pairchat_panics_total")
}

pub fn scrape(server: &TestServer) -> String {
    let res = server.get("/metrics");
    assert_eq!(res.status, 200);
    res.text()
}

/// Scrapes until `series` satisfies `ok` (5 s at most); returns the last value.
pub fn wait_metric(server: &TestServer, series: &str, ok: impl Fn(u64) -> bool) -> u64 {
    wait_metric_for(server, series, READ_TIMEOUT, ok)
}

pub fn wait_metric_for(
    server: &TestServer,
    series: &str,
    limit: Duration,
    ok: impl Fn(u64) -> bool,
) -> u64 {
    let deadline = Instant::now() + limit;
    loop {
        let value = metric(&scrape(server), series);
        if ok(value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{series} stuck at {value}");
        std::thread::sleep(ms(20));
    }
}

pub const HTTP_CONNS: &str = "pairchat_connections{kind=\"http\"}";
pub const WS_CONNS: &str = "pairchat_connections{kind=\"websocket\"}";

pub fn rejected(reason: &str) -> String {
    format!("pairchat_rejected_total{{reason=\"{reason}\"}}")
}

pub fn limited(limit: &str) -> String {
    format!("pairchat_limited_total{{limit=\"{limit}\"}}")
}

// ---- Socket.IO clients ---------------------------------------------------------------------

/// A TCP connection with the test read timeout.
pub fn tcp(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// A connection to `addr` (IPv4) with a 4 KiB receive buffer set before connecting, so the
/// window it offers stays small: a client that does not read holds the server's output back
/// (and so pauses its input) within a few kilobytes.
pub fn small_window_tcp(addr: SocketAddr) -> TcpStream {
    raw_tcp(addr, Some(4096), None)
}

/// A connection to `addr` (IPv4) from local address `from` (another loopback address, say
/// `127.0.0.2`: a client the server tells apart from the others).
pub fn tcp_from(from: std::net::Ipv4Addr, addr: SocketAddr) -> TcpStream {
    raw_tcp(addr, None, Some(from))
}

fn raw_tcp(
    addr: SocketAddr,
    receive_buffer: Option<libc::c_int>,
    from: Option<std::net::Ipv4Addr>,
) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        panic!("an IPv4 test server");
    };
    let sin = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor created here and handed to `TcpStream`,
    // which owns it from then on; the option and address structs are live locals.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket");
        if let Some(size) = receive_buffer {
            let rc = libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            assert_eq!(rc, 0, "setsockopt");
        }
        if let Some(ip) = from {
            let local = sin(ip, 0);
            let rc = libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len);
            assert_eq!(rc, 0, "bind");
        }
        let remote = sin(*v4.ip(), v4.port());
        let rc = libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len);
        assert_eq!(rc, 0, "connect");
        let stream = TcpStream::from_raw_fd(fd);
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream
    }
}

/// `/metrics` of the server at `addr` (a process, not a `TestServer`).
pub fn scrape_addr(addr: SocketAddr) -> String {
    let mut conn = HttpConn::new(tcp(addr));
    conn.send(METRICS);
    conn.response().expect("metrics").text()
}

/// A frame the chat sends on `/`.
pub enum Frame {
    /// `42[name, arg]`.
    Event(String, Value),
    /// `43<id>[arg]`.
    Ack(u32, Value),
    Other(String),
}

pub fn parse_frame(text: &str) -> Frame {
    if let Some(rest) = text.strip_prefix("42") {
        let v: Value = serde_json::from_str(rest).expect("event JSON");
        let name = v[0].as_str().expect("event name").to_string();
        return Frame::Event(name, v[1].clone());
    }
    if let Some(rest) = text.strip_prefix("43") {
        let split = rest.find('[').expect("ack arguments");
        let id = rest[..split].parse().expect("ack id");
        let v: Value = serde_json::from_str(&rest[split..]).expect("ack JSON");
        return Frame::Ack(id, v[0].clone());
    }
    Frame::Other(text.to_string())
}

/// A Socket.IO client of the chat over a WebSocket-only session.
pub struct Client {
    /// The socket id (`socket.id`: the `sid` of the CONNECT reply).
    pub id: String,
    pub ws: Ws,
    pub next_id: u32,
    pub acks: HashMap<u32, Value>,
    pub events: VecDeque<(String, Value)>,
}

impl Client {
    /// Opens a session (optionally claiming a forwarded address) and connects to `/`.
    pub fn connect(addr: SocketAddr, forwarded_for: Option<&str>) -> Client {
        Client::connect_on(tcp(addr), addr, forwarded_for)
    }

    /// `connect` over a TCP connection made by the caller (with socket options of its own).
    pub fn connect_on(stream: TcpStream, addr: SocketAddr, forwarded_for: Option<&str>) -> Client {
        let mut req = format!("ws://{addr}{PATH}?EIO=4&transport=websocket")
            .into_client_request()
            .unwrap();
        if let Some(xff) = forwarded_for {
            req.headers_mut()
                .insert("X-Forwarded-For", xff.parse().unwrap());
        }
        let (mut ws, res) = tungstenite::client(req, stream).expect("websocket handshake");
        assert_eq!(res.status(), 101);
        let open = next_text(&mut ws);
        assert!(open.starts_with("0{\"sid\":"), "{open}");
        send_text(&mut ws, "40");
        let connected = next_text(&mut ws);
        let reply = connected.strip_prefix("40").expect("a CONNECT reply");
        let reply: Value = serde_json::from_str(reply).expect("CONNECT JSON");
        let id = reply["sid"].as_str().expect("a socket id").to_string();
        Client {
            id,
            ws,
            next_id: 0,
            acks: HashMap::new(),
            events: VecDeque::new(),
        }
    }

    /// Writes an event asking for an ack (not flushed); returns the ack id.
    pub fn queue(&mut self, event: &str, arg: Value) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        let text = format!("42{id}{}", json!([event, arg]));
        self.ws.write(Message::text(text)).expect("websocket write");
        id
    }

    pub fn flush(&mut self) {
        self.ws.flush().expect("websocket flush");
    }

    /// Leaves for good, as `socket.disconnect()` does (a Socket.IO DISCONNECT, then the
    /// transport closes): not recoverable.
    pub fn disconnect(mut self) {
        send_text(&mut self.ws, "41");
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }

    /// Sends an event without asking for an ack.
    pub fn emit(&mut self, event: &str, arg: Value) {
        send_text(&mut self.ws, &format!("42{}", json!([event, arg])));
    }

    /// Reads one frame and files it.
    pub fn read_one(&mut self) {
        let text = next_text(&mut self.ws);
        self.file(&text);
    }

    /// Files a frame: an event in `events`, an ack in `acks`.
    fn file(&mut self, text: &str) {
        match parse_frame(text) {
            Frame::Event(name, arg) => self.events.push_back((name, arg)),
            Frame::Ack(id, arg) => {
                self.acks.insert(id, arg);
            }
            Frame::Other(text) => panic!("unexpected frame {text:?}"),
        }
    }

    /// Files one frame if it arrives within `limit` (a ping is answered): whether one did.
    pub fn read_one_within(&mut self, limit: Duration) -> bool {
        self.ws.get_ref().set_read_timeout(Some(limit)).unwrap();
        let result = self.ws.read();
        self.ws
            .get_ref()
            .set_read_timeout(Some(READ_TIMEOUT))
            .unwrap();
        match result {
            Ok(Message::Text(t)) if t.as_str() == "2" => send_text(&mut self.ws, "3"),
            Ok(Message::Text(t)) => self.file(&t),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(e) => panic!("websocket read: {e}"),
        }
        true
    }

    /// Reads until no frame has come for `quiet`, then takes every event not taken yet
    /// (oldest first): what a test checks when nothing more may arrive.
    pub fn events_until_quiet(&mut self, quiet: Duration) -> Vec<(String, Value)> {
        while self.read_one_within(quiet) {}
        self.events.drain(..).collect()
    }

    /// The answer to ack id `id`.
    pub fn ack(&mut self, id: u32) -> Value {
        loop {
            if let Some(v) = self.acks.remove(&id) {
                return v;
            }
            self.read_one();
        }
    }

    /// Emits with an ack and waits for the answer.
    pub fn call(&mut self, event: &str, arg: Value) -> Value {
        let id = self.queue(event, arg);
        self.flush();
        self.ack(id)
    }

    /// The argument of the next `name` event (earlier events of other names are dropped).
    pub fn event(&mut self, name: &str) -> Value {
        loop {
            while let Some((n, arg)) = self.events.pop_front() {
                if n == name {
                    return arg;
                }
            }
            self.read_one();
        }
    }

    /// The argument of the next event, which must be called `name`: unlike `event`, nothing
    /// may come before it.
    pub fn next_event(&mut self, name: &str) -> Value {
        while self.events.is_empty() {
            self.read_one();
        }
        let (got, arg) = self.events.pop_front().expect("an event");
        assert_eq!(got, name, "{} expected {name}, got {got} {arg}", self.id);
        arg
    }

    /// Waits for the `newMessage` carrying `text` (other events before it are dropped).
    pub fn message(&mut self, text: &str) {
        while self.event("newMessage")["text"] != text {}
    }

    pub fn create_room(&mut self) -> String {
        let res = self.call("createRoom", json!({}));
        res["code"]
            .as_str()
            .unwrap_or_else(|| panic!("createRoom: {res}"))
            .to_string()
    }

    pub fn join(&mut self, code: &str) -> Value {
        self.call("joinRoom", json!({ "code": code }))
    }

    pub fn say(&mut self, code: &str, text: &str) -> Value {
        self.call("sendMessage", json!({ "code": code, "text": text }))
    }
}

/// The next text frame, answering Engine.IO pings.
pub fn next_text(ws: &mut Ws) -> String {
    loop {
        match ws.read().expect("websocket read") {
            Message::Text(t) if t.as_str() == "2" => send_text(ws, "3"),
            Message::Text(t) => return t.to_string(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

pub fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).expect("websocket send");
}

pub fn error_of(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error, got {v}"))
}

pub fn assert_success(v: &Value) {
    assert_eq!(v["success"], true, "{v}");
}

/// Two clients in one room: the well-behaved users that must not notice any limit.
pub struct Pair {
    pub a: Client,
    pub b: Client,
    pub code: String,
    pub sent: u32,
}

impl Pair {
    /// Two clients in a room, without a message yet.
    pub fn join(addr: SocketAddr) -> Pair {
        let mut a = Client::connect(addr, None);
        let code = a.create_room();
        let mut b = Client::connect(addr, None);
        assert_success(&b.join(&code));
        a.event("userJoined");
        Pair {
            a,
            b,
            code,
            sent: 0,
        }
    }

    /// Two clients in a room that chatted once each way.
    pub fn new(addr: SocketAddr) -> Pair {
        let mut pair = Pair::join(addr);
        pair.round_trip();
        pair
    }

    /// One message each way, seen by both.
    pub fn round_trip(&mut self) {
        for from_a in [true, false] {
            self.sent += 1;
            let text = format!("hello #{}", self.sent);
            let (from, to) = if from_a {
                (&mut self.a, &mut self.b)
            } else {
                (&mut self.b, &mut self.a)
            };
            assert_eq!(from.say(&self.code, &text), json!({"success": true}));
            assert_eq!(from.event("newMessage")["text"], text.as_str());
            assert_eq!(to.event("newMessage")["text"], text.as_str());
        }
    }
}

/// A six-digit code that is none of `taken`.
pub fn absent_code(taken: &[&str]) -> String {
    (100_000..)
        .map(|n: u32| n.to_string())
        .find(|c| !taken.contains(&c.as_str()))
        .unwrap()
}

// ---- polling -------------------------------------------------------------------------------

pub fn poll_url(sid: &str) -> String {
    format!("{PATH}?EIO=4&transport=polling&sid={sid}")
}

/// A polling session connected to `/`.
pub fn polling_connected(server: &TestServer) -> String {
    let (sid, _) = server.open_polling(PATH);
    let res = server.post(&poll_url(&sid), "40");
    assert_eq!((res.status, res.text()), (200, "ok".to_string()));
    let res = server.get(&poll_url(&sid));
    assert!(res.text().starts_with("40{\"sid\":"), "{}", res.text());
    sid
}

/// A keep-alive connection that has had one `/health` answered.
pub fn health_checked(server: &TestServer) -> HttpConn {
    let mut conn = HttpConn::new(server.connect());
    conn.send(HEALTH);
    assert_eq!(conn.response().unwrap().status, 200);
    conn
}

pub fn get_on(conn: &mut HttpConn, path: &str) {
    conn.send(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
}
