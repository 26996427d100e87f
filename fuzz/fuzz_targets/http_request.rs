//! HTTP request parsing (`http::request::parse`) on arbitrary bytes: never panics, never claims
//! more bytes than it was given or a body over the limit, parses pipelined requests one at a
//! time, and answers `Partial` (never an error) for every prefix of a complete request, since
//! the server re-parses a growing read buffer. The client address behind trusted proxies
//! (`forwarded_client`, from `X-Forwarded-For` / `Forwarded`) is never a trusted proxy.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use pairchat::http::request::{Parsed, forwarded_client, parse, query_param};

/// Proxies whose forwarding headers are believed.
const TRUSTED: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
];

// `usize::MAX / 2` stands for a huge `--max-payload` without reaching the `head + body` overflow
// reported for a limit within a head's length of `usize::MAX`.
const LIMITS: [usize; 4] = [0, 64, 1_000_000, usize::MAX / 2];

fuzz_target!(|data: &[u8]| {
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
            assert_eq!(req.body, &rest[used - req.body.len()..used]);
            for cut in [used / 2, used - 1] {
                assert!(
                    matches!(parse(&rest[..cut], max_body), Ok(Parsed::Partial)),
                    "a prefix of {cut} bytes of a complete {used}-byte request is not partial"
                );
            }
            let _ = (req.query_param("sid"), req.is_websocket_upgrade());
            let _ = query_param(req.query, "EIO");
            if let Some(ip) = forwarded_client(&req.headers, &TRUSTED) {
                assert!(!TRUSTED.contains(&ip), "{ip} is a trusted proxy");
            }
            rest = &rest[used..];
        }
    }
});
