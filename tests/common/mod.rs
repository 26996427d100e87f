//! Shared harness for the socket-level tests: a server on port 0 in its own thread (stopped on
//! drop), a minimal blocking HTTP/1.1 client, and WebSocket clients from tungstenite. Its
//! modules: the chat client (`chat`), the binary as a process (`process`), a real Redis and
//! cluster nodes on it (`redis`, `cluster`), and finding external programs or skipping loudly (`tools`).
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use pairchat::engine::Handler;
use pairchat::{Config, Server, StopHandle};
use tungstenite::{Message, WebSocket};

pub mod balancer;
pub mod chat;
pub mod cluster;
pub mod process;
pub mod redis;
pub mod tools;

/// How long a test waits for any single read before failing.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A server running on its own thread; stopped and joined on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: StopHandle,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server with `config` (host and port are forced to 127.0.0.1:0) and the
    /// handler `make` builds on the server thread.
    pub fn start<H, F>(config: Config, make: F) -> TestServer
    where
        H: Handler + 'static,
        F: FnOnce(&Config) -> H + Send + 'static,
    {
        let config = Config {
            host: "127.0.0.1".into(),
            port: 0,
            ..config
        };
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let handler = make(&config);
            let mut server = Server::bind(config, handler).expect("bind");
            tx.send((server.local_addr(), server.stop_handle()))
                .unwrap();
            server.run().expect("server loop");
        });
        let (addr, stop) = rx.recv().expect("server started");
        TestServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// A new TCP connection with the test read timeout.
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
    }

    /// One request on a fresh connection; the response.
    pub fn request(&self, raw: &str) -> Response {
        let mut conn = HttpConn::new(self.connect());
        conn.send(raw.as_bytes());
        conn.response().expect("response")
    }

    /// `GET path` on a fresh connection.
    pub fn get(&self, path: &str) -> Response {
        self.request(&format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"))
    }

    /// `POST path` with a text body on a fresh connection.
    pub fn post(&self, path: &str, body: &str) -> Response {
        self.request(&post_request(path, body))
    }

    /// A WebSocket client at `path_and_query` (e.g. `/engine.io/?EIO=4&transport=websocket`).
    pub fn websocket(&self, path_and_query: &str) -> WebSocket<TcpStream> {
        let url = format!("ws://{}{path_and_query}", self.addr);
        let (ws, response) = tungstenite::client(url, self.connect()).expect("websocket handshake");
        assert_eq!(response.status(), 101);
        ws
    }

    /// Opens a polling session at `path` and returns its sid and open packet.
    pub fn open_polling(&self, path: &str) -> (String, serde_json::Value) {
        let res = self.get(&format!("{path}?EIO=4&transport=polling"));
        assert_eq!(res.status, 200, "handshake: {}", res.text());
        let text = res.text();
        let open = text.strip_prefix('0').expect("open packet");
        let open: serde_json::Value = serde_json::from_str(open).expect("open JSON");
        (open["sid"].as_str().unwrap().to_string(), open)
    }

    /// Opens a WebSocket session at `path` and returns the socket and its open packet.
    pub fn open_websocket(&self, path: &str) -> (WebSocket<TcpStream>, serde_json::Value) {
        let mut ws = self.websocket(&format!("{path}?EIO=4&transport=websocket"));
        let text = recv_text(&mut ws);
        let open = text.strip_prefix('0').expect("open packet");
        (ws, serde_json::from_str(open).expect("open JSON"))
    }
}

impl TestServer {
    /// Asks the server to stop (gracefully) without waiting for it; `drop` waits.
    pub fn request_stop(&self) {
        self.stop.stop();
    }

    /// Waits until the server holds `n` parked long-poll GETs (its `pairchat_parked_polls`
    /// gauge): proof that a GET sent before this call is parked, not merely sent.
    pub fn wait_parked_polls(&self, n: u64) {
        let deadline = std::time::Instant::now() + READ_TIMEOUT;
        loop {
            let metrics = self.get("/metrics").text();
            let parked = metrics
                .lines()
                .find_map(|l| l.strip_prefix("pairchat_parked_polls "))
                .and_then(|v| v.parse::<u64>().ok())
                .expect("a pairchat_parked_polls gauge in /metrics");
            if parked == n {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{parked} parked polls, expected {n}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An HTTP response as read off the wire.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// A client connection that can send raw bytes and read several responses in order.
pub struct HttpConn {
    reader: BufReader<TcpStream>,
}

/// A keep-alive `POST path` with a text body.
/// A raw `GET` request for `path`.
pub fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")
}

/// An Engine.IO server that echoes every message back (`Echo`).
pub fn echo_server(config: Config) -> TestServer {
    TestServer::start(config, |_| pairchat::engine::Echo)
}

pub fn post_request(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain;charset=UTF-8\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

impl HttpConn {
    pub fn new(stream: TcpStream) -> HttpConn {
        HttpConn {
            reader: BufReader::new(stream),
        }
    }

    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("write");
    }

    /// Sends `POST path` with a text body (keep-alive); read the answer with `response`.
    pub fn send_post(&mut self, path: &str, body: &str) {
        self.send(post_request(path, body).as_bytes());
    }

    /// Reads one response (`Content-Length` framed). `Err` if the server closed first.
    pub fn response(&mut self) -> io::Result<Response> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, line.clone()))?;
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("header line");
            headers.push((name.to_string(), value.trim().to_string()));
        }
        let len = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse::<usize>().expect("Content-Length"))
            .unwrap_or(0);
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body)?;
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// True once the server has closed the connection (EOF or reset) within the read timeout;
    /// any bytes before the close are skipped.
    pub fn closed(&mut self) -> bool {
        let mut buf = [0u8; 1024];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return false;
                }
                Err(_) => return true,
            }
        }
    }
}

/// The next text message (pings included); panics on anything else.
pub fn recv_text(ws: &mut WebSocket<TcpStream>) -> String {
    match ws.read().expect("websocket read") {
        Message::Text(text) => text.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// The next message that is not an Engine.IO ping (pings are answered).
pub fn recv_skip_pings(ws: &mut WebSocket<TcpStream>) -> Message {
    loop {
        let msg = ws.read().expect("websocket read");
        if msg == Message::text("2") {
            ws.send(Message::text("3")).expect("pong");
            continue;
        }
        return msg;
    }
}

/// Sends a text frame.
pub fn send_text(ws: &mut WebSocket<TcpStream>, text: &str) {
    ws.send(Message::text(text)).expect("websocket send");
}

/// True once the server has closed the WebSocket (close frame, EOF or reset) within the read
/// timeout; data frames before the close are skipped.
pub fn ws_closed(ws: &mut WebSocket<TcpStream>) -> bool {
    loop {
        match ws.read() {
            Ok(Message::Close(_)) => return true,
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                return false;
            }
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}
