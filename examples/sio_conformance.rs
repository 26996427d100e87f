//! The Socket.IO server the official `socket.io-protocol` test suite expects, at `/socket.io/`
//! on port 3000 (`PORT` honoured): pingInterval 300 ms, pingTimeout 200 ms, maxPayload
//! 1 000 000, connectTimeout 1000 ms. On connection to `/` or `/custom` it emits `auth` with the
//! handshake's auth payload (20 ms later, see `AUTH_DELAY_MS`); `message` is emitted back as `message-back` with the same
//! arguments (attachments included); `message-with-ack` is acked with the same arguments.
//!
//! `cargo run --release --example sio_conformance`

use std::time::Duration;

use pairchat::sio::{App, SioConfig, SioEvent, SioIo, SocketIo, SocketRef};
use pairchat::{Config, Server};

/// How long after the CONNECT reply `auth` is emitted. The suite attaches its listener for the
/// `auth` frame only after its `await` on the CONNECT reply resumes; frames that arrive in the
/// same read are delivered before that, and the `auth` frame would be lost (the reference
/// server loses it too, intermittently). A short pause lets the suite's listener attach.
const AUTH_DELAY_MS: u64 = 20;

struct Conformance;

impl App for Conformance {
    /// `auth` to emit: the socket and the handshake's auth payload.
    type Timer = (SocketRef, Box<str>);

    fn handle(&mut self, event: SioEvent<'_, Self::Timer>, io: &mut SioIo<'_, '_, Self::Timer>) {
        match event {
            SioEvent::Connect { socket, auth, .. } => {
                let at = io.now() + AUTH_DELAY_MS;
                io.set_timer(at, (socket, auth.get().into()));
            }
            SioEvent::Timer((socket, auth)) => io.emit(socket, "auth", &auth),
            SioEvent::Event(e) => {
                let args: Vec<&str> = e.args.iter().map(|a| a.get()).collect();
                let args = args.join(",");
                match (e.name, e.ack) {
                    ("message", _) => {
                        io.emit_with_binary(e.socket, "message-back", &args, e.attachments)
                    }
                    ("message-with-ack", Some(id)) => {
                        io.ack_with_binary(e.socket, id, &args, e.attachments)
                    }
                    _ => {}
                }
            }
            SioEvent::Disconnect { .. } => {}
        }
    }
}

fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let config = Config {
        host: "0.0.0.0".into(),
        port,
        path: "/socket.io/".into(),
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        max_payload: 1_000_000,
        ..Config::default()
    };
    let sio = SioConfig {
        namespaces: vec!["/custom".into()],
        connect_timeout: Duration::from_millis(1000),
    };
    let mut server = Server::bind(
        config.clone(),
        SocketIo::new(Conformance, sio, config.max_payload),
    )?;
    server.stop_on_signals();
    eprintln!("sio_conformance listening on {}", server.local_addr());
    server.run()
}
