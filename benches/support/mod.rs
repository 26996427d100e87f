//! Shared by the socket benchmarks: the chat server in-process on its own thread (port 0), and
//! blocking clients over loopback (tungstenite for WebSocket, raw HTTP for long-polling).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;

use pairchat::chat::{Chat, ChatConfig};
use pairchat::sio::{SioConfig, SocketIo};
use pairchat::{Config, Server, StopHandle};
use tungstenite::{Message, WebSocket};

/// The chat server on its own thread; stopped on drop.
pub struct ChatServer {
    pub addr: SocketAddr,
    stop: StopHandle,
    thread: Option<JoinHandle<()>>,
}

impl ChatServer {
    pub fn start() -> ChatServer {
        let config = Config {
            host: "127.0.0.1".into(),
            port: 0,
            max_connections: 100_000,
            ..Config::default()
        };
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            // Benchmarks measure the server, not its abuse limits (`--message-rate 0`).
            let chat = ChatConfig {
                message_rate: None,
                join_failures: None,
                ..ChatConfig::default()
            };
            let app = SocketIo::new(Chat::new(chat), SioConfig::default(), config.max_payload);
            let mut server = Server::bind(config, app).expect("bind");
            tx.send((server.local_addr(), server.stop_handle()))
                .expect("report address");
            server.run().expect("server loop");
        });
        let (addr, stop) = rx.recv().expect("server started");
        ChatServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ChatServer {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A Socket.IO client over WebSocket: upgrade, Engine.IO open, `40`, `40{"sid"}`.
pub fn connect_ws(addr: SocketAddr) -> (WebSocket<TcpStream>, String) {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tungstenite::client(url, stream).expect("upgrade");
    let open = text(&mut ws);
    assert!(open.starts_with('0'), "open packet: {open}");
    ws.send(Message::text("40")).expect("send 40");
    let connected = text(&mut ws);
    let sid = connected
        .strip_prefix("40{\"sid\":\"")
        .and_then(|s| s.strip_suffix("\"}"))
        .unwrap_or_else(|| panic!("CONNECT answer: {connected}"))
        .to_string();
    (ws, sid)
}

/// The next text frame, answering Engine.IO pings on the way.
pub fn text(ws: &mut WebSocket<TcpStream>) -> String {
    loop {
        match ws.read().expect("read") {
            Message::Text(t) if t.as_str() == "2" => ws.send(Message::text("3")).expect("pong"),
            Message::Text(t) => return t.to_string(),
            _ => {}
        }
    }
}

/// A Socket.IO session over long-polling on one keep-alive connection: handshake, `40`, poll.
pub fn connect_polling(addr: SocketAddr) -> String {
    Polling::connect(addr).sid
}

/// A Socket.IO client over long-polling, as a browser holds one: a keep-alive connection for
/// its POSTs and short GETs, and a second one for a GET that parks.
pub struct Polling {
    pub sid: String,
    path: String,
    conn: BufReader<TcpStream>,
    parked: BufReader<TcpStream>,
}

impl Polling {
    /// Handshake, `40`, and the GET that brings the CONNECT answer.
    pub fn connect(addr: SocketAddr) -> Polling {
        let mut conn = keep_alive(addr);
        let open = http(&mut conn, "GET", "/socket.io/?EIO=4&transport=polling", "");
        let sid = open
            .split("\"sid\":\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("sid in open packet")
            .to_string();
        let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
        assert_eq!(http(&mut conn, "POST", &path, "40"), "ok");
        let connected = http(&mut conn, "GET", &path, "");
        assert!(connected.starts_with("40{"), "CONNECT answer: {connected}");
        Polling {
            sid,
            path,
            conn,
            parked: keep_alive(addr),
        }
    }

    /// POSTs one payload; the answer must be `ok`.
    pub fn post(&mut self, payload: &str) {
        assert_eq!(http(&mut self.conn, "POST", &self.path, payload), "ok");
    }

    /// A GET on the first connection, answered at once when output is queued.
    pub fn get(&mut self) -> String {
        http(&mut self.conn, "GET", &self.path, "")
    }

    /// Sends a GET on the second connection without waiting: it parks until there is output.
    pub fn park(&mut self) {
        send(&mut self.parked, "GET", &self.path, "");
    }

    /// The answer to the parked GET.
    pub fn woken(&mut self) -> String {
        body(&mut self.parked)
    }
}

fn keep_alive(addr: SocketAddr) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    BufReader::new(stream)
}

/// One request on a keep-alive connection; the response body.
fn http(conn: &mut BufReader<TcpStream>, method: &str, path: &str, payload: &str) -> String {
    send(conn, method, path, payload);
    body(conn)
}

fn send(conn: &mut BufReader<TcpStream>, method: &str, path: &str, body: &str) {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.get_mut().write_all(req.as_bytes()).expect("write");
}

/// The next response's body.
fn body(conn: &mut BufReader<TcpStream>) -> String {
    let mut len = 0;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).expect("read header");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line
            .to_ascii_lowercase()
            .strip_prefix("content-length:")
            .map(|v| v.trim().to_string())
        {
            len = v.parse().expect("length");
        }
    }
    let mut body = vec![0; len];
    conn.read_exact(&mut body).expect("read body");
    String::from_utf8(body).expect("UTF-8")
}
