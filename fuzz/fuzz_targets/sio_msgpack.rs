//! The `sio_msgpack` fuzz target: the property lives in `fuzz/checks/sio_msgpack.rs` (shared
//! with `cargo test`, which replays the corpus).
#![no_main]

#[path = "../checks/sio_msgpack.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
