//! HTTP request parsing (`http::request::parse`, `parse_head` and the chunked decoder) on
//! arbitrary bytes: never panics, never claims more bytes than it was given or a body over the
//! limit, parses pipelined requests one at a time, and answers `Partial` (never an error) for
//! every prefix of a complete request, since the server re-parses a growing read buffer. A
//! chunked body decodes to the same bytes whatever the reads it arrives in. The client address
//! behind trusted proxies (`forwarded_client`, from `X-Forwarded-For` / `Forwarded`) is never a
//! trusted proxy.
//!
//! Shared by the fuzz target of the same name and by `tests/fuzz_corpus.rs`, which replays
//! the committed seeds and every input that ever failed (`fuzz/regressions/`) in `cargo test`.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pairchat::http::chunked::ChunkedDecoder;
use pairchat::http::request::{Framing, Parsed, forwarded_client, parse, parse_head, query_param};

/// Proxies whose forwarding headers are believed.
const TRUSTED: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
];

// `usize::MAX / 2` stands for a huge `--max-payload` without reaching the `head + body` overflow
// reported for a limit within a head's length of `usize::MAX`.
const LIMITS: [usize; 4] = [0, 64, 1_000_000, usize::MAX / 2];

/// The property, on one input.
pub fn check(data: &[u8]) {
    for max_body in LIMITS {
        let mut rest = data;
        // A pipelined stream: at most a few requests per input.
        for _ in 0..4 {
            let Ok(Parsed::Complete(req, used)) = parse(rest, max_body) else {
                break;
            };
            assert!(
                used > 0 && used <= rest.len(),
                "used {used} of {}",
                rest.len()
            );
            assert!(req.body.len() <= max_body);
            let (head, head_len) = parse_head(rest, max_body)
                .expect("the head of a complete request parses")
                .expect("and is complete");
            assert_eq!(head.framing, req.framing);
            match req.framing {
                Framing::Length(n) => {
                    assert_eq!(used, head_len + n);
                    assert_eq!(&*req.body, &rest[head_len..used]);
                }
                Framing::Chunked => {
                    // Byte by byte, the decoder finds the same body and the same end.
                    let mut decoder = ChunkedDecoder::new(max_body);
                    let mut body = Vec::new();
                    let mut at = head_len;
                    while !decoder.is_done() {
                        let p = decoder
                            .decode(&rest[at..at + 1], &mut body)
                            .expect("the coding decoded whole decodes byte by byte");
                        at += p.used;
                    }
                    assert_eq!(at, used);
                    assert_eq!(body, &*req.body);
                }
            }
            // Every prefix is partial (inputs are small: at most 4 KB by default).
            for cut in 0..used {
                assert!(
                    matches!(parse(&rest[..cut], max_body), Ok(Parsed::Partial)),
                    "a prefix of {cut} bytes of a complete {used}-byte request is not partial"
                );
            }
            let _ = (
                req.query_param("sid"),
                req.is_websocket_upgrade(),
                req.exchange(),
            );
            let _ = query_param(req.query, "EIO");
            if let Some(ip) = forwarded_client(&req.headers, &TRUSTED) {
                assert!(!TRUSTED.contains(&ip), "{ip} is a trusted proxy");
            }
            rest = &rest[used..];
        }
    }
}
