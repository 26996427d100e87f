//! The `http_request` fuzz target: the property lives in `fuzz/checks/http_request.rs` (shared with
//! `cargo test`, which replays the corpus).
#![no_main]

#[path = "../checks/http_request.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
