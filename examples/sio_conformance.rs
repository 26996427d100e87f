//! The Socket.IO server the official `socket.io-protocol` test suite expects, at `/socket.io/`
//! on port 3000 (`PORT` honoured): pingInterval 300 ms, pingTimeout 200 ms, maxPayload
//! 1 000 000, connectTimeout 1000 ms. On connection to `/` or `/custom` it emits `auth` with the
//! handshake's auth payload; `message` is emitted back as `message-back` with the same
//! arguments (attachments included); `message-with-ack` is acked with the same arguments.
//!
//! `cargo run --release --example sio_conformance`

use std::time::Duration;

use pairchat::sio::{App, SioConfig, SioEvent, SioIo, SocketIo};
use pairchat::{Config, Server};

struct Conformance;

impl App for Conformance {
    type Timer = ();

    fn handle(&mut self, event: SioEvent<'_, ()>, io: &mut SioIo<'_, '_, ()>) {
        match event {
            SioEvent::Connect { socket, auth, .. } => io.emit(socket, "auth", auth.get()),
            SioEvent::Event(e) => {
                let args: Vec<&str> = e.args.iter().map(|a| a.get()).collect();
                let args = args.join(",");
                match (e.name, e.ack) {
                    ("message", _) => io.emit_with_binary(e.socket, "message-back", &args, e.attachments),
                    ("message-with-ack", Some(id)) => io.ack_with_binary(e.socket, id, &args, e.attachments),
                    _ => {}
                }
            }
            SioEvent::Disconnect { .. } | SioEvent::Timer(()) => {}
        }
    }
}

fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3000);
    let config = Config {
        host: "0.0.0.0".into(),
        port,
        path: "/socket.io/".into(),
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        max_payload: 1_000_000,
        ..Config::default()
    };
    let sio = SioConfig { namespaces: vec!["/custom".into()], connect_timeout: Duration::from_millis(1000) };
    let mut server = Server::bind(config.clone(), SocketIo::new(Conformance, sio, config.max_payload))?;
    server.stop_on_signals();
    eprintln!("sio_conformance listening on {}", server.local_addr());
    server.run()
}
