//! The `engine_v3_payload` fuzz target: the property lives in `fuzz/checks/engine_v3_payload.rs`
//! (shared with `cargo test`, which replays the corpus).
#![no_main]

#[path = "../checks/engine_v3_payload.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
