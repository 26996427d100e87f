//! RESP, the Redis protocol: commands out (arrays of bulk strings, written here: a dozen lines)
//! and RESP3 replies in (decoded by `redis-protocol`'s sans-I/O parser, turned into a small
//! owned `Reply`).

use redis_protocol::resp3::decode::complete::decode_range;
use redis_protocol::resp3::types::RangeFrame;

use crate::decimal::push_decimal;

/// A reply (or a push) from Redis, owned.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Nil (a missing key, Lua's `false`).
    Nil,
    /// An integer.
    Int(i64),
    /// A simple or bulk string (bytes as sent).
    Bytes(Vec<u8>),
    /// An error, as Redis worded it.
    Error(String),
    /// An array, a set, a map (keys and values in turn), or a push.
    Array(Vec<Reply>),
    /// Out-of-band data (RESP3 push: a published message, a subscription's confirmation).
    Push(Vec<Reply>),
}

impl Reply {
    /// The bytes of a string reply.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// A string reply as UTF-8.
    pub fn str(&self) -> Option<&str> {
        self.bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// An integer reply (or a string of digits, as Lua numbers can come back).
    pub fn int(&self) -> Option<i64> {
        match self {
            Reply::Int(n) => Some(*n),
            Reply::Bytes(_) => self.str()?.parse().ok(),
            _ => None,
        }
    }

    /// The items of an array reply (none for anything else).
    pub fn items(&self) -> &[Reply] {
        match self {
            Reply::Array(items) | Reply::Push(items) => items,
            _ => &[],
        }
    }
}

/// Appends a command to `out`: the words of `head` (its name first), then `args`.
pub fn command(out: &mut Vec<u8>, head: &[&[u8]], args: &[&[u8]]) {
    out.push(b'*');
    push_decimal(out, (head.len() + args.len()) as u64);
    out.extend_from_slice(b"\r\n");
    for arg in head.iter().chain(args) {
        out.push(b'$');
        push_decimal(out, arg.len() as u64);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Decodes the first complete reply in `buf`: the reply and the bytes it took, `Ok(None)` if
/// more input is needed, `Err` for input that is not RESP (the link is then unusable).
pub fn decode(buf: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    match decode_range(buf) {
        Ok(Some((frame, used))) => Ok(Some((owned(buf, frame), used))),
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

fn owned(buf: &[u8], frame: RangeFrame) -> Reply {
    let bytes = |(start, end): (usize, usize)| buf[start..end].to_vec();
    let text =
        |(start, end): (usize, usize)| String::from_utf8_lossy(&buf[start..end]).into_owned();
    match frame {
        RangeFrame::Null => Reply::Nil,
        RangeFrame::Number { data, .. } => Reply::Int(data),
        RangeFrame::Boolean { data, .. } => Reply::Int(i64::from(data)),
        RangeFrame::Double { data, .. } => Reply::Bytes(data.to_string().into_bytes()),
        RangeFrame::BlobString { data, .. }
        | RangeFrame::SimpleString { data, .. }
        | RangeFrame::BigNumber { data, .. }
        | RangeFrame::VerbatimString { data, .. }
        | RangeFrame::ChunkedString(data) => Reply::Bytes(bytes(data)),
        RangeFrame::BlobError { data, .. } | RangeFrame::SimpleError { data, .. } => {
            Reply::Error(text(data))
        }
        RangeFrame::Array { data, .. } => {
            Reply::Array(data.into_iter().map(|f| owned(buf, f)).collect())
        }
        RangeFrame::Set { data, .. } => {
            Reply::Array(data.into_iter().map(|f| owned(buf, f)).collect())
        }
        RangeFrame::Map { data, .. } => Reply::Array(
            data.into_iter()
                .flat_map(|(k, v)| [owned(buf, k), owned(buf, v)])
                .collect(),
        ),
        RangeFrame::Push { data, .. } => {
            Reply::Push(data.into_iter().map(|f| owned(buf, f)).collect())
        }
        RangeFrame::Hello { .. } => Reply::Nil,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &[b"SET"], &[b"k", b""]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }

    #[test]
    fn replies_decode_whole_or_wait_for_more() {
        let input = b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n:7\r\n";
        for cut in 0..input.len() - 4 {
            assert_eq!(decode(&input[..cut]).unwrap(), None, "cut at {cut}");
        }
        let (push, used) = decode(input).unwrap().unwrap();
        assert_eq!(
            push,
            Reply::Push(vec![
                Reply::Bytes(b"message".to_vec()),
                Reply::Bytes(b"ch".to_vec()),
                Reply::Bytes(b"hello".to_vec()),
            ])
        );
        let (n, rest) = decode(&input[used..]).unwrap().unwrap();
        assert_eq!((n, used + rest), (Reply::Int(7), input.len()));
        assert_eq!(
            decode(b"-ERR no\r\n").unwrap().unwrap().0,
            Reply::Error("ERR no".into())
        );
        assert_eq!(decode(b"_\r\n").unwrap().unwrap().0, Reply::Nil);
        assert!(decode(b"?what\r\n").is_err());
    }
}
