//! The fuzz targets' properties, replayed in `cargo test` on every committed input: the
//! hand-written seeds (`fuzz/corpus/<target>/seed-*`) and every input that ever failed
//! (`fuzz/regressions/<target>/`), so a fixed crash stays fixed without cargo-fuzz. The
//! properties are the fuzz targets' own code (`fuzz/checks/`), compiled here too.

use std::path::{Path, PathBuf};

#[path = "../fuzz/checks/connection.rs"]
mod connection;
#[path = "../fuzz/checks/engine_payload.rs"]
mod engine_payload;
#[path = "../fuzz/checks/engine_v3_payload.rs"]
mod engine_v3_payload;
#[path = "../fuzz/checks/http_request.rs"]
mod http_request;
#[path = "../fuzz/checks/sio_msgpack.rs"]
mod sio_msgpack;
#[path = "../fuzz/checks/sio_packet.rs"]
mod sio_packet;

/// Runs `check` on every seed and regression input of `target`; returns how many.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let files = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .map(|e| e.expect("a directory entry").path())
                    .collect()
            })
            .unwrap_or_default()
    };
    // The corpus folder may also hold what a local fuzzing run grew: only seeds count there.
    let mut inputs: Vec<PathBuf> = files(&root.join("corpus").join(target))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seed-"))
        })
        .chain(files(&root.join("regressions").join(target)))
        .collect();
    inputs.sort();
    for path in &inputs {
        let data = std::fs::read(path).expect("a readable input");
        let name = path.display().to_string();
        if let Err(e) = std::panic::catch_unwind(|| check(&data)) {
            eprintln!("the {target} property fails on {name}");
            std::panic::resume_unwind(e);
        }
    }
    inputs.len()
}

#[test]
fn http_request_corpus() {
    assert!(replay("http_request", http_request::check) >= 10);
}

#[test]
fn engine_payload_corpus() {
    assert!(replay("engine_payload", engine_payload::check) >= 1);
}

#[test]
fn engine_v3_payload_corpus() {
    assert!(replay("engine_v3_payload", engine_v3_payload::check) >= 3);
}

#[test]
fn sio_msgpack_corpus() {
    assert!(replay("sio_msgpack", sio_msgpack::check) >= 4);
}

#[test]
fn sio_packet_corpus() {
    assert!(replay("sio_packet", sio_packet::check) >= 2);
}

#[test]
fn connection_corpus() {
    assert!(replay("connection", connection::check) >= 7);
    assert_eq!(connection::panics_so_far(), 0, "the server caught a panic");
}
