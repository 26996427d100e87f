//! HTTP/1.1 request parsing over a byte buffer, with `httparse`. Pure: no I/O.
//!
//! `parse_head` looks at the start of a connection's read buffer and answers `None` (read
//! more), the request's head with how its body is framed (`Content-Length` or chunked), or an
//! `HttpError` that maps to a status code. The framing rules guard against request smuggling
//! (RFC 9112 §6.1, §6.3): `Transfer-Encoding` with `Content-Length`, differing lengths, a
//! length that is not plain digits and `Transfer-Encoding` on HTTP/1.0 are refused, and so is
//! any transfer coding but `chunked`. `parse` reads a whole request, body included, in one go.

use std::borrow::Cow;
use std::net::IpAddr;

use super::chunked;
use super::{Exchange, HttpError};

/// Largest request head (request line + headers) accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// The first header of a request relayed by another node of a cluster (`server::relay`).
pub const RELAY_MARK: &[u8] = b"X-Pairchat-Relay:";
/// What a relaying node adds to a head: its two marks, with room to spare.
pub const RELAY_ALLOWANCE: usize = 512;
const MAX_HEADERS: usize = 32;

/// Request methods the server distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
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
    /// `Sec-WebSocket-Key` appeared more than once.
    pub ws_key_repeated: bool,
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
    /// `X-Pairchat-Relay`: the cluster's secret, on a request another node relayed.
    pub relay: Option<&'a str>,
    /// `X-Pairchat-Client`: the client a relaying node got the request from.
    pub relay_client: Option<&'a str>,
}

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length` bytes (0 when the header is absent).
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A request: its head, and its body once read.
#[derive(Debug, Clone)]
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
    /// HTTP/1.0 (which closes after each answer unless it asks for keep-alive).
    pub http10: bool,
    /// The client sent `Expect: 100-continue` and waits for `100 Continue` before its body.
    pub expect_continue: bool,
    /// How the body is delimited.
    pub framing: Framing,
    /// The body, decoded (empty until it is read: see `parse_head`).
    pub body: Cow<'a, [u8]>,
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

    /// What the request settles about its answer: close after it, headers only, or an
    /// HTTP/1.0 keep-alive to confirm.
    pub fn exchange(&self) -> Exchange {
        Exchange {
            close: !self.keep_alive,
            head: self.method == Method::Head,
            keep_alive_10: self.http10 && self.keep_alive,
        }
    }
}

/// The first value of `key` (a name without `=`, as every Engine.IO parameter's) in a query
/// string.
pub fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|pair| match pair.strip_prefix(key)? {
            "" => Some(""),
            v => v.strip_prefix('='),
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

/// Parses one whole request, body included, from the start of `buf`. Bodies over `max_body`
/// (decoded) are refused as soon as their length shows it.
pub fn parse(buf: &[u8], max_body: usize) -> Result<Parsed<'_>, HttpError> {
    let Some((mut req, head_len)) = parse_head(buf, max_body)? else {
        return Ok(Parsed::Partial);
    };
    let rest = &buf[head_len..];
    match req.framing {
        Framing::Length(n) if rest.len() < n => Ok(Parsed::Partial),
        Framing::Length(n) => {
            req.body = Cow::Borrowed(&rest[..n]);
            Ok(Parsed::Complete(req, head_len + n))
        }
        Framing::Chunked => match chunked::decode_all(rest, max_body)? {
            None => Ok(Parsed::Partial),
            Some((body, used)) => {
                req.body = Cow::Owned(body);
                Ok(Parsed::Complete(req, head_len + used))
            }
        },
    }
}

/// Parses the head of the request at the start of `buf`: the request (with an empty body) and
/// the head's length, or `None` when the head is not complete yet. A `Content-Length` over
/// `max_body` is refused here, before its body arrives.
pub fn parse_head(buf: &[u8], max_body: usize) -> Result<Option<(Request<'_>, usize)>, HttpError> {
    // A request another node relayed carries its marks first: the head may be that much
    // larger than what its client sent, which was held to the limits.
    let relayed = buf
        .iter()
        .position(|b| *b == b'\n')
        .and_then(|p| buf.get(p + 1..p + 1 + RELAY_MARK.len()))
        .is_some_and(|h| h.eq_ignore_ascii_case(RELAY_MARK));
    let (max_head, max_headers) = if relayed {
        (MAX_HEAD + RELAY_ALLOWANCE, MAX_HEADERS + 2)
    } else {
        (MAX_HEAD, MAX_HEADERS)
    };
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS + 2];
    let mut req = httparse::Request::new(&mut raw[..max_headers]);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > max_head {
                Err(HttpError::HeadersTooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadersTooLarge),
        Err(_) => return Err(HttpError::Malformed),
    };
    if head_len > max_head {
        return Err(HttpError::HeadersTooLarge);
    }
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some("POST") => Method::Post,
        Some("OPTIONS") => Method::Options,
        _ => Method::Other,
    };
    let target = req.path.ok_or(HttpError::Malformed)?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let http10 = req.version.ok_or(HttpError::Malformed)? == 0;

    let mut headers = Headers::default();
    let mut content_length: Option<usize> = None;
    // Transfer codings in order, across repeated headers: (chunked seen, any other seen).
    let mut codings: Option<(usize, bool)> = None;
    let mut connection_close = http10;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| HttpError::Malformed)?
            .trim();
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            // `1*DIGIT`, or a list of one repeated value; anything else could be read two ways.
            for item in value.split(',').map(str::trim) {
                if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(HttpError::Malformed);
                }
                let n = item.parse().map_err(|_| HttpError::PayloadTooLarge)?;
                if content_length.is_some_and(|m| m != n) {
                    return Err(HttpError::Malformed);
                }
                content_length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let (chunked, other) = codings.get_or_insert((0, false));
            for coding in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                if coding.eq_ignore_ascii_case("chunked") {
                    *chunked += 1;
                } else {
                    *other = true;
                }
            }
        } else if name.eq_ignore_ascii_case("connection") {
            headers.connection = Some(value);
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    connection_close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    connection_close = false;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            // HTTP/1.0 clients cannot expect anything (RFC 9110 §10.1.1).
            if !http10 {
                if !value.eq_ignore_ascii_case("100-continue") {
                    return Err(HttpError::ExpectationFailed);
                }
                expect_continue = true;
            }
        } else if name.eq_ignore_ascii_case("origin") {
            headers.origin = Some(value);
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            headers.forwarded_for = Some(value);
        } else if name.eq_ignore_ascii_case("forwarded") {
            headers.forwarded = Some(value);
        // The first copy: a relaying node puts its own right after the request line, before
        // any a client sent.
        } else if name.eq_ignore_ascii_case("x-pairchat-relay") {
            headers.relay = headers.relay.or(Some(value));
        } else if name.eq_ignore_ascii_case("x-pairchat-client") {
            headers.relay_client = headers.relay_client.or(Some(value));
        } else if name.eq_ignore_ascii_case("upgrade") {
            headers.upgrade = Some(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            headers.ws_key_repeated |= headers.ws_key.is_some();
            headers.ws_key = Some(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            headers.ws_version = Some(value);
        } else if name.eq_ignore_ascii_case("access-control-request-headers") {
            headers.acr_headers = Some(value);
        } else if name.eq_ignore_ascii_case("content-type") {
            headers.content_type = Some(value);
        }
    }
    let framing = match codings {
        None => Framing::Length(content_length.unwrap_or(0)),
        Some(_) if http10 || content_length.is_some() => return Err(HttpError::Malformed),
        Some((_, true)) => return Err(HttpError::UnsupportedTransferEncoding),
        Some((1, false)) => Framing::Chunked,
        Some(_) => return Err(HttpError::Malformed), // empty, or chunked twice
    };
    if let Framing::Length(n) = framing
        && (n > max_body || head_len.checked_add(n).is_none())
    {
        return Err(HttpError::PayloadTooLarge);
    }
    let request = Request {
        method,
        path,
        query,
        headers,
        keep_alive: !connection_close,
        http10,
        expect_continue,
        framing,
        body: Cow::Borrowed(&[]),
    };
    Ok(Some((request, head_len)))
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
    fn query_params_match_whole_keys_and_take_the_first_value() {
        let q = "sidx=1&b64&j=&sid=a=b&sid=2&=3";
        assert_eq!(query_param(q, "sid"), Some("a=b"));
        assert_eq!(query_param(q, "b64"), Some(""));
        assert_eq!(query_param(q, "j"), Some(""));
        assert_eq!(query_param(q, "si"), None);
        assert_eq!(query_param(q, ""), Some("3"));
        assert_eq!(query_param("", "sid"), None);
    }

    #[test]
    fn body_waits_for_content_length() {
        let full = b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        assert!(matches!(
            parse(&full[..full.len() - 2], 1000),
            Ok(Parsed::Partial)
        ));
        let (r, n) = complete(full);
        assert_eq!(&*r.body, b"hello");
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
        let plus = b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello";
        assert_eq!(parse(plus, 10).unwrap_err(), HttpError::Malformed);
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        let req = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\nGET";
        let (r, n) = complete(req);
        assert_eq!(r.framing, Framing::Chunked);
        assert_eq!(&*r.body, b"abcde");
        assert_eq!(&req[n..], b"GET");
        for cut in 0..n {
            assert!(
                matches!(parse(&req[..cut], 1000), Ok(Parsed::Partial)),
                "{cut}"
            );
        }
        let over = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n";
        assert_eq!(parse(over, 1000).unwrap_err(), HttpError::PayloadTooLarge);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let cases: [(&[u8], HttpError); 8] = [
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                HttpError::Malformed,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
                HttpError::Malformed,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\n",
                HttpError::Malformed,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                HttpError::UnsupportedTransferEncoding,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n",
                HttpError::UnsupportedTransferEncoding,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                HttpError::Malformed,
            ),
            (
                b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                HttpError::Malformed,
            ),
            (
                b"POST / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n",
                HttpError::ExpectationFailed,
            ),
        ];
        for (raw, err) in cases {
            assert_eq!(
                parse(raw, 100).unwrap_err(),
                err,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        // The same length twice is one length.
        let same = b"POST / HTTP/1.1\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nhi";
        assert_eq!(&*complete(same).0.body, b"hi");
    }

    #[test]
    fn the_head_is_complete_before_the_body() {
        let req = b"POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\n";
        let (r, n) = parse_head(req, 10).unwrap().unwrap();
        assert_eq!(n, req.len());
        assert!(r.expect_continue);
        assert_eq!(r.framing, Framing::Length(5));
        assert!(r.body.is_empty());
        // HTTP/1.0 cannot expect: the header is ignored.
        let old = b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n";
        assert!(!parse_head(old, 10).unwrap().unwrap().0.expect_continue);
    }

    #[test]
    fn connection_semantics() {
        assert!(
            !complete(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
                .0
                .keep_alive
        );
        assert!(!complete(b"GET / HTTP/1.0\r\n\r\n").0.keep_alive);
        let head = complete(b"HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").0;
        assert_eq!(
            head.exchange(),
            Exchange {
                close: false,
                head: true,
                keep_alive_10: true
            }
        );
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
