//! HTTP/1.1: request parsing (pure), response writing and CORS headers.
//!
//! Nothing here touches a socket: responses are appended to a connection's write buffer.

pub mod chunked;
pub mod request;

use std::fmt;

use crate::config::CorsOrigins;
use crate::decimal::push_decimal;

pub use request::{Framing, Method, Parsed, Request};

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What a request settles about the framing of its answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exchange {
    /// The connection closes after the answer, which says so (`Connection: close`).
    pub close: bool,
    /// A `HEAD` request: the answer's headers (its `Content-Length` too), no body.
    pub head: bool,
    /// An HTTP/1.0 request that asked for keep-alive, which the answer confirms.
    pub keep_alive_10: bool,
}

/// A request the server refuses before routing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// Not HTTP/1.x.
    Malformed,
    /// The request head is over 8 KiB.
    HeadersTooLarge,
    /// The body is over the max payload.
    PayloadTooLarge,
    /// A transfer coding other than `chunked`.
    UnsupportedTransferEncoding,
    /// An `Expect` other than `100-continue`.
    ExpectationFailed,
}

impl HttpError {
    /// The status this error is answered with (the connection is then closed).
    pub fn status(self) -> u16 {
        match self {
            HttpError::Malformed => 400,
            HttpError::HeadersTooLarge => 431,
            HttpError::PayloadTooLarge => 413,
            HttpError::UnsupportedTransferEncoding => 501,
            HttpError::ExpectationFailed => 417,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HttpError::Malformed => "malformed request",
            HttpError::HeadersTooLarge => "request headers too large",
            HttpError::PayloadTooLarge => "payload too large",
            HttpError::UnsupportedTransferEncoding => "transfer-encoding not supported",
            HttpError::ExpectationFailed => "expectation not supported",
        })
    }
}

impl std::error::Error for HttpError {}

/// The reason phrase of a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// The CORS headers of an answer to a request from a browser.
///
/// With any origin allowed (`*`, socket.io's `origin: "*"`) the answer says a literal `*`,
/// which lets any page read it without credentials (all a default socket.io-client, with
/// `withCredentials: false`, needs). Only an origin listed explicitly is echoed, with
/// `Access-Control-Allow-Credentials: true`: a page may send cookies only to a server that
/// named it.
#[derive(Debug, Clone, Copy)]
pub struct Cors<'a> {
    allow: Option<AllowOrigin<'a>>,
}

#[derive(Debug, Clone, Copy)]
enum AllowOrigin<'a> {
    Any,
    Listed(&'a str),
}

/// `Cors` that owns its origin (see `Cors::keep`).
#[derive(Debug, Clone)]
pub enum KeptCors {
    /// No CORS headers.
    None,
    /// `*`.
    Any,
    /// This origin, with credentials.
    Listed(Box<str>),
}

impl KeptCors {
    /// The headers to write.
    pub fn get(&self) -> Cors<'_> {
        let allow = match self {
            KeptCors::None => None,
            KeptCors::Any => Some(AllowOrigin::Any),
            KeptCors::Listed(o) => Some(AllowOrigin::Listed(o)),
        };
        Cors { allow }
    }
}

impl<'a> Cors<'a> {
    /// CORS for a request carrying `origin`, under the allowlist; none for a request with no
    /// `Origin` (not from a browser) or from an origin that is not allowed.
    pub fn new(origins: &CorsOrigins, origin: Option<&'a str>) -> Self {
        let allow = origin.and_then(|o| match origins {
            CorsOrigins::Any => Some(AllowOrigin::Any),
            CorsOrigins::List(_) if origins.allows(o) => Some(AllowOrigin::Listed(o)),
            CorsOrigins::List(_) => None,
        });
        Cors { allow }
    }

    /// No CORS headers.
    pub fn none() -> Self {
        Cors { allow: None }
    }

    /// The same headers, kept beyond the request's buffer (for an answer written later); only
    /// an echoed origin allocates.
    pub fn keep(&self) -> KeptCors {
        match self.allow {
            None => KeptCors::None,
            Some(AllowOrigin::Any) => KeptCors::Any,
            Some(AllowOrigin::Listed(o)) => KeptCors::Listed(o.into()),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self.allow {
            None => {}
            Some(AllowOrigin::Any) => out.extend_from_slice(b"Access-Control-Allow-Origin: *\r\n"),
            Some(AllowOrigin::Listed(origin)) => {
                out.extend_from_slice(b"Access-Control-Allow-Origin: ");
                out.extend_from_slice(origin.as_bytes());
                out.extend_from_slice(
                    b"\r\nAccess-Control-Allow-Credentials: true\r\nVary: Origin\r\n",
                );
            }
        }
    }
}

/// A response to append to a write buffer.
#[derive(Debug, Clone, Copy)]
pub struct Response<'a> {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'a str,
    /// Body.
    pub body: &'a [u8],
    /// CORS headers.
    pub cors: Cors<'a>,
    /// Extra header lines, each ending in `\r\n`.
    pub extra: &'a str,
    /// Whether the connection closes after it (announced with `Connection: close`).
    pub close: bool,
}

impl<'a> Response<'a> {
    /// A response with no CORS headers that keeps the connection open.
    pub fn new(status: u16, content_type: &'a str, body: &'a [u8]) -> Self {
        Response {
            status,
            content_type,
            body,
            cors: Cors::none(),
            extra: "",
            close: false,
        }
    }

    /// A plain-text response.
    pub fn text(status: u16, body: &'a str) -> Self {
        Response::new(status, "text/plain; charset=UTF-8", body.as_bytes())
    }

    /// Adds CORS headers.
    pub fn cors(mut self, cors: Cors<'a>) -> Self {
        self.cors = cors;
        self
    }

    /// Appends the response to `out`, framed for the request it answers (`exchange`): its
    /// `Connection` header, and no body for `HEAD`. Closes when `self.close` or the exchange
    /// says so.
    pub fn write_to(&self, out: &mut Vec<u8>, exchange: Exchange) {
        // Room for it all at once (the head's fixed lines, the CORS headers and the body), not
        // in growth steps; and no formatting machinery (every poll answer comes here).
        out.reserve(256 + self.extra.len() + self.body.len());
        out.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(out, u64::from(self.status));
        out.push(b' ');
        out.extend_from_slice(reason(self.status).as_bytes());
        out.extend_from_slice(b"\r\nContent-Type: ");
        out.extend_from_slice(self.content_type.as_bytes());
        out.extend_from_slice(b"\r\nContent-Length: ");
        push_decimal(out, self.body.len() as u64);
        out.extend_from_slice(b"\r\n");
        self.cors.write(out);
        out.extend_from_slice(self.extra.as_bytes());
        if self.close || exchange.close {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if exchange.keep_alive_10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !exchange.head {
            out.extend_from_slice(self.body);
        }
    }
}

/// Answer to a CORS preflight (`OPTIONS`).
pub fn preflight<'a>(
    cors: Cors<'a>,
    request_headers: Option<&str>,
    extra: &'a mut String,
) -> Response<'a> {
    let allow_headers =
        request_headers.filter(|h| h.bytes().all(|b| b.is_ascii_graphic() || b == b' '));
    *extra = format!(
        "Access-Control-Allow-Methods: GET, POST, OPTIONS\r\nAccess-Control-Allow-Headers: {}\r\nAccess-Control-Max-Age: 86400\r\n",
        allow_headers.unwrap_or("content-type")
    );
    let mut r = Response::new(204, "text/plain", b"").cors(cors);
    r.extra = extra;
    r
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The `/health` body: `{"status":"ok","timestamp":<ms since epoch>}`.
pub fn health_body(extra: impl FnOnce(&mut String)) -> String {
    let mut body = format!("{{\"status\":\"ok\",\"timestamp\":{}", unix_millis());
    extra(&mut body);
    body.push('}');
    body
}

/// A query component decoded as Node's `querystring` does: `+` is a space, `%XX` a byte (a
/// `%` without two hex digits stays as it is), bytes that are no UTF-8 become U+FFFD.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |at: usize| b.get(at).and_then(|c| (*c as char).to_digit(16));
        match (b[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
            (b'+', ..) => out.push(b' '),
            (c, ..) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_reads_as_node_querystring() {
        assert_eq!(percent_decode("a+b%20c%C3%A9"), "a b cé");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
        assert_eq!(percent_decode(""), "");
    }

    #[test]
    fn response_has_length_type_and_cors() {
        let mut out = Vec::new();
        let origins = CorsOrigins::List(vec!["http://a".into()]);
        Response::text(200, "ok")
            .cors(Cors::new(&origins, Some("http://a")))
            .write_to(&mut out, Exchange::default());
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(s.contains("Content-Length: 2\r\n"));
        assert!(s.contains("Content-Type: text/plain; charset=UTF-8\r\n"));
        assert!(s.contains("Access-Control-Allow-Origin: http://a\r\n"));
        assert!(s.contains("Access-Control-Allow-Credentials: true\r\n"));
        assert!(s.ends_with("\r\n\r\nok"));
    }

    #[test]
    fn any_origin_is_a_literal_star_without_credentials() {
        let mut out = Vec::new();
        Response::text(200, "ok")
            .cors(Cors::new(&CorsOrigins::Any, Some("null")))
            .write_to(&mut out, Exchange::default());
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("Access-Control-Allow-Origin: *\r\n"), "{s}");
        assert!(!s.contains("Credentials"), "{s}");
    }

    #[test]
    fn disallowed_origin_gets_no_cors() {
        let mut out = Vec::new();
        let origins = CorsOrigins::List(vec!["http://good".into()]);
        Response::text(200, "ok")
            .cors(Cors::new(&origins, Some("http://evil")))
            .write_to(&mut out, Exchange::default());
        assert!(!String::from_utf8(out).unwrap().contains("Access-Control"));
    }
}
