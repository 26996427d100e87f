//! The servers the official protocol test suites expect, as library values so the examples
//! (`examples/engine_conformance.rs`, `examples/sio_conformance.rs`) and the Rust tests run the
//! same code.
//!
//! Both suites use pingInterval 300 ms, pingTimeout 200 ms, maxPayload 1 000 000 and CORS for
//! any origin; the Engine.IO one serves at `/engine.io/`, the Socket.IO one at `/socket.io/`
//! with a `/custom` namespace and a connect timeout of 1000 ms.

use std::time::Duration;

use crate::Config;
use crate::sio::{
    App, Parser, Parsers, RecoveryConfig, SioConfig, SioEvent, SioIo, SocketIo, SocketRef,
};

/// The Engine.IO suite's server settings on `port` (an [`crate::engine::Echo`] handler goes with them).
pub fn engine_config(port: u16) -> Config {
    Config {
        host: "0.0.0.0".into(),
        port,
        path: "/engine.io/".into(),
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        max_payload: 1_000_000,
        ..Config::default()
    }
}

/// The Socket.IO suite's server settings on `port`.
pub fn sio_config(port: u16) -> Config {
    Config {
        path: "/socket.io/".into(),
        ..engine_config(port)
    }
}

/// The Socket.IO suite's handler: [`SioConformance`] with `/custom` and a 1 s connect timeout.
pub fn sio_handler(config: &Config) -> SocketIo<SioConformance> {
    let sio = SioConfig {
        namespaces: vec!["/custom".into()],
        connect_timeout: Duration::from_millis(1000),
        // The suite expects socket.io's wire without recovery (`40{"sid":…}`, no offsets).
        recovery: RecoveryConfig::off(),
        pid_prefix: String::new(),
        // socket.io's default parser only, as the suite expects.
        parsers: Parsers::Only(Parser::Json),
    };
    SocketIo::new(SioConformance, sio, config.max_payload)
}

/// How long after the CONNECT reply `auth` is emitted. The suite attaches its listener for the
/// `auth` frame only after its `await` on the CONNECT reply resumes; frames that arrive in the
/// same read are delivered before that, and the `auth` frame would be lost (the reference
/// server loses it too, intermittently). A short pause lets the suite's listener attach.
pub const AUTH_DELAY_MS: u64 = 20;

/// On connection to `/` or `/custom` emits `auth` with the handshake's auth payload
/// ([`AUTH_DELAY_MS`] later); `message` is emitted back as `message-back` with the same
/// arguments (attachments included); `message-with-ack` is acked with the same arguments.
#[derive(Debug, Default)]
pub struct SioConformance;

impl App for SioConformance {
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
            // No pid prefix: no claims; one would connect a fresh socket.
            SioEvent::Claim { session, nsp, .. } => io.refuse_claim(session, nsp),
            SioEvent::Away { .. }
            | SioEvent::Disconnect { .. }
            | SioEvent::Start { .. }
            | SioEvent::TurnEnd
            | SioEvent::Socket { .. } => {}
        }
    }
}
