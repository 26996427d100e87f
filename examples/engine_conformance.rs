//! The Engine.IO server the official `engine.io-protocol` test suite expects: an echo server at
//! `/engine.io/` on port 3000 (`PORT` honoured), pingInterval 300 ms, pingTimeout 200 ms,
//! maxPayload 1 000 000, CORS any origin (see `pairchat::conformance`).
//!
//! `cargo run --release --example engine_conformance`

use pairchat::engine::Echo;
use pairchat::{Server, conformance};

fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let mut server = Server::bind(conformance::engine_config(port), Echo)?;
    server.stop_on_signals();
    eprintln!("engine_conformance listening on {}", server.local_addr());
    server.run()
}
