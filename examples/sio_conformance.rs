//! The Socket.IO server the official `socket.io-protocol` test suite expects, at `/socket.io/`
//! on port 3000 (`PORT` honoured): pingInterval 300 ms, pingTimeout 200 ms, maxPayload
//! 1 000 000, connectTimeout 1000 ms, namespace `/custom`; the behaviour is
//! `pairchat::conformance::SioConformance`.
//!
//! `cargo run --release --example sio_conformance`

use pairchat::{Server, conformance};

fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let config = conformance::sio_config(port);
    let handler = conformance::sio_handler(&config);
    let mut server = Server::bind(config, handler)?;
    server.stop_on_signals();
    eprintln!("sio_conformance listening on {}", server.local_addr());
    server.run()
}
