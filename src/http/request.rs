//! HTTP/1.1 request parsing over a byte buffer, with `httparse`. Pure: no I/O.
//!
//! `parse` looks at the start of a connection's read buffer and answers `Partial` (read more),
//! a complete `Request` (head + `Content-Length` body) with the number of bytes it used, or an
//! `HttpError` that maps to a status code.

use std::net::IpAddr;

use super::HttpError;

/// Largest request head (request line + headers) accepted.
pub const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 32;

/// Request methods the server distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
    /// `OPTIONS`
    Options,
    /// Anything else (`PUT`, `DELETE`, …).
    Other,
}

/// The headers the server acts on, borrowed from the read buffer.
#[derive(Debug, Default, Clone, Copy)]
pub struct Headers<'a> {
    /// `Origin`
    pub origin: Option<&'a str>,
    /// `Upgrade`
    pub upgrade: Option<&'a str>,
    /// `Connection`
    pub connection: Option<&'a str>,
    /// `Sec-WebSocket-Key`
    pub ws_key: Option<&'a str>,
    /// `Sec-WebSocket-Version`
    pub ws_version: Option<&'a str>,
    /// `Access-Control-Request-Headers`
    pub acr_headers: Option<&'a str>,
    /// `Content-Type`
    pub content_type: Option<&'a str>,
    /// `X-Forwarded-For` (the last one, if repeated)
    pub forwarded_for: Option<&'a str>,
    /// `Forwarded` (RFC 7239; the last one, if repeated)
    pub forwarded: Option<&'a str>,
}

/// A complete request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The method.
    pub method: Method,
    /// The path, without the query string.
    pub path: &'a str,
    /// The query string, without `?` (empty when absent).
    pub query: &'a str,
    /// Headers of interest.
    pub headers: Headers<'a>,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// The body (`Content-Length` bytes).
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    /// The first value of a query parameter (no percent-decoding: the Engine.IO parameters
    /// are plain ASCII).
    pub fn query_param(&self, key: &str) -> Option<&'a str> {
        query_param(self.query, key)
    }

    /// Whether this is a WebSocket upgrade request (`Upgrade: websocket`).
    pub fn is_websocket_upgrade(&self) -> bool {
        self.headers
            .upgrade
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
    }
}

/// The first value of `key` in a query string.
pub fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then_some(v)
    })
}

/// The outcome of looking at a read buffer.
// Returned by value once per request and matched at once: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Parsed<'a> {
    /// More bytes are needed.
    Partial,
    /// A request, and how many bytes of the buffer it used.
    Complete(Request<'a>, usize),
}

/// Parses one request from the start of `buf`. Bodies over `max_body` are refused before they
/// are read.
pub fn parse(buf: &[u8], max_body: usize) -> Result<Parsed<'_>, HttpError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut raw);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > MAX_HEAD {
                Err(HttpError::HeadersTooLarge)
            } else {
                Ok(Parsed::Partial)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadersTooLarge),
        Err(_) => return Err(HttpError::Malformed),
    };
    if head_len > MAX_HEAD {
        return Err(HttpError::HeadersTooLarge);
    }
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("POST") => Method::Post,
        Some("OPTIONS") => Method::Options,
        _ => Method::Other,
    };
    let target = req.path.ok_or(HttpError::Malformed)?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let version = req.version.ok_or(HttpError::Malformed)?;

    let mut headers = Headers::default();
    let mut content_length: Option<usize> = None;
    let mut connection_close = version == 0;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| HttpError::Malformed)?
            .trim();
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value.parse().map_err(|_| HttpError::Malformed)?;
            if content_length.is_some_and(|m| m != n) {
                return Err(HttpError::Malformed);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::UnsupportedTransferEncoding);
        } else if name.eq_ignore_ascii_case("connection") {
            headers.connection = Some(value);
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    connection_close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    connection_close = false;
                }
            }
        } else if name.eq_ignore_ascii_case("origin") {
            headers.origin = Some(value);
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            headers.forwarded_for = Some(value);
        } else if name.eq_ignore_ascii_case("forwarded") {
            headers.forwarded = Some(value);
        } else if name.eq_ignore_ascii_case("upgrade") {
            headers.upgrade = Some(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            headers.ws_key = Some(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            headers.ws_version = Some(value);
        } else if name.eq_ignore_ascii_case("access-control-request-headers") {
            headers.acr_headers = Some(value);
        } else if name.eq_ignore_ascii_case("content-type") {
            headers.content_type = Some(value);
        }
    }
    let body_len = content_length.unwrap_or(0);
    if body_len > max_body {
        return Err(HttpError::PayloadTooLarge);
    }
    let total = head_len
        .checked_add(body_len)
        .ok_or(HttpError::PayloadTooLarge)?;
    if buf.len() < total {
        return Ok(Parsed::Partial);
    }
    let request = Request {
        method,
        path,
        query,
        headers,
        keep_alive: !connection_close,
        body: &buf[head_len..total],
    };
    Ok(Parsed::Complete(request, total))
}

/// The client's address as a chain of trusted proxies reports it: the right-most address in
/// `X-Forwarded-For` (or `for=` of `Forwarded`) that is not itself a trusted proxy. `None`
/// when the headers name no such address; the caller then uses the proxy's own address.
pub fn forwarded_client(headers: &Headers<'_>, trusted: &[IpAddr]) -> Option<IpAddr> {
    let untrusted = |a: &str| a.parse::<IpAddr>().ok().filter(|ip| !trusted.contains(ip));
    if let Some(xff) = headers.forwarded_for {
        return xff.rsplit(',').map(str::trim).find_map(untrusted);
    }
    headers
        .forwarded?
        .rsplit(',')
        .flat_map(|element| element.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            k.trim().eq_ignore_ascii_case("for").then_some(v)
        })
        .map(forwarded_node)
        .find_map(untrusted)
}

/// The address of a `Forwarded` node: `"[2001:db8::1]:4711"`, `192.0.2.1:4711` or bare.
fn forwarded_node(v: &str) -> &str {
    let v = v.trim().trim_matches('"');
    match v.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None if v.matches(':').count() == 1 => v.split(':').next().unwrap_or(""),
        None => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> (Request<'_>, usize) {
        match parse(buf, 1000).unwrap() {
            Parsed::Complete(r, n) => (r, n),
            Parsed::Partial => panic!("partial"),
        }
    }

    #[test]
    fn a_content_length_near_the_limit_of_usize_is_refused_not_overflowed() {
        let req = b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n";
        assert!(matches!(
            parse(req, usize::MAX),
            Err(HttpError::PayloadTooLarge)
        ));
    }

    #[test]
    fn get_with_query() {
        let (r, n) = complete(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nOrigin: http://a\r\n\r\n");
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.path, "/socket.io/");
        assert_eq!(r.query_param("EIO"), Some("4"));
        assert_eq!(r.query_param("transport"), Some("polling"));
        assert_eq!(r.query_param("sid"), None);
        assert_eq!(r.headers.origin, Some("http://a"));
        assert!(r.keep_alive);
        assert_eq!(n, 79);
    }

    #[test]
    fn body_waits_for_content_length() {
        let full = b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        assert!(matches!(
            parse(&full[..full.len() - 2], 1000),
            Ok(Parsed::Partial)
        ));
        let (r, n) = complete(full);
        assert_eq!(r.body, b"hello");
        assert_eq!(n, full.len());
    }

    #[test]
    fn pipelined_requests_parse_one_at_a_time() {
        let two = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        let (r, n) = complete(two);
        assert_eq!(r.path, "/a");
        let (r, _) = complete(&two[n..]);
        assert_eq!(r.path, "/b");
    }

    #[test]
    fn limits_and_garbage() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        assert_eq!(parse(&big, 10).unwrap_err(), HttpError::HeadersTooLarge);
        let post = b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n";
        assert_eq!(parse(post, 10).unwrap_err(), HttpError::PayloadTooLarge);
        assert_eq!(
            parse(b"\x16\x03\x01garbage\r\n\r\n", 10).unwrap_err(),
            HttpError::Malformed
        );
        let bad_len = b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n";
        assert_eq!(parse(bad_len, 10).unwrap_err(), HttpError::Malformed);
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            parse(chunked, 10).unwrap_err(),
            HttpError::UnsupportedTransferEncoding
        );
    }

    #[test]
    fn connection_semantics() {
        assert!(
            !complete(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
                .0
                .keep_alive
        );
        assert!(!complete(b"GET / HTTP/1.0\r\n\r\n").0.keep_alive);
        assert!(
            complete(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .0
                .keep_alive
        );
        let up = complete(b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\r\n").0;
        assert!(up.is_websocket_upgrade());
    }

    fn headers<'a>(xff: Option<&'a str>, fwd: Option<&'a str>) -> Headers<'a> {
        Headers {
            forwarded_for: xff,
            forwarded: fwd,
            ..Headers::default()
        }
    }

    #[test]
    fn right_most_untrusted_address_wins() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let h = headers(Some("203.0.113.9, 198.51.100.7, 10.0.0.1"), None);
        assert_eq!(forwarded_client(&h, &[proxy]), "198.51.100.7".parse().ok());
        let h = headers(
            None,
            Some("for=192.0.2.60;proto=http, for=\"[2001:db8::1]:4711\""),
        );
        assert_eq!(forwarded_client(&h, &[proxy]), "2001:db8::1".parse().ok());
        let h = headers(None, Some("for=192.0.2.43:1234"));
        assert_eq!(forwarded_client(&h, &[proxy]), "192.0.2.43".parse().ok());
        assert_eq!(forwarded_client(&headers(None, None), &[proxy]), None);
        assert_eq!(
            forwarded_client(&headers(Some("garbage"), None), &[proxy]),
            None
        );
    }
}
