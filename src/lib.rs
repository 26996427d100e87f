//! pairchat: temporary one-to-one chat rooms for `socket.io-client` frontends, served by one
//! small single-threaded binary.
//!
//! The crate is a protocol stack with the chat as one application of it:
//! - [`server`]: the `mio` event loop (connections, Engine.IO sessions, timers);
//! - [`http`], [`ws`]: hand-parsed HTTP/1.1 and the WebSocket upgrade;
//! - [`engine`]: Engine.IO v4 (and v3) types and codecs, and the [`engine::Handler`] seam;
//! - [`sio`]: Socket.IO v5, and v4 for Engine.IO v3 clients (namespaces, acks, binary attachments, rooms) as an Engine.IO handler;
//! - [`chat`]: the chat rooms as a Socket.IO application;
//! - [`conformance`]: the servers the official protocol test suites expect;
//! - [`cli`]: flags and environment → the configuration of all of the above;
//! - [`memory`]: the memory budget (`--max-memory`) and its shares;
//! - [`timer`]: the hashed timer wheel behind every deadline;
//! - [`json`]: reading a few fields of a client's JSON object in one pass;
//! - [`slots`]: the generation-checked tables every connection, session and socket lives in;
//! - [`sys`]: the few libc calls std lacks (listen backlog, stop signals, fd limit).
#![warn(missing_docs)]

pub mod chat;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod conformance;
pub mod decimal;
pub mod engine;
pub mod http;
pub mod json;
pub mod log;
pub mod memory;
pub mod metrics;
pub mod server;
pub mod sio;
pub mod slots;
pub mod sys;
pub mod timer;
pub mod ws;

pub use config::Config;
pub use server::{BindTo, Server, StartError, StopHandle};

/// Helpers shared by unit tests.
#[cfg(test)]
pub(crate) mod testing {
    /// Bytes written as hex digits (`"0aff"`): fixtures other implementations wrote.
    pub fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
