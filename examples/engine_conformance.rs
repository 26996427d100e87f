//! The Engine.IO server the official `engine.io-protocol` test suite expects: an echo server at
//! `/engine.io/` on port 3000 (`PORT` honoured), pingInterval 300 ms, pingTimeout 200 ms,
//! maxPayload 1 000 000, CORS any origin.
//!
//! `cargo run --release --example engine_conformance`

use std::time::Duration;

use pairchat::engine::Echo;
use pairchat::{Config, Server};

fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let config = Config {
        host: "0.0.0.0".into(),
        port,
        path: "/engine.io/".into(),
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        max_payload: 1_000_000,
        ..Config::default()
    };
    let mut server = Server::bind(config, Echo)?;
    server.stop_on_signals();
    eprintln!("engine_conformance listening on {}", server.local_addr());
    server.run()
}
