//! The `connection` fuzz target: the property lives in `fuzz/checks/connection.rs` (shared with
//! `cargo test`, which replays the corpus).
#![no_main]

#[path = "../checks/connection.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
