//! The chunked transfer coding (RFC 9112 §7.1) of request bodies: a pure, incremental decoder.
//!
//! `ChunkedDecoder::decode` takes whatever bytes have arrived (any split, down to one byte at a
//! time), appends the data they carry to the body and says how many it used; it keeps its place
//! between calls, so no byte is looked at twice. Chunk extensions are skipped, trailer fields
//! read and dropped. The decoded body is held to a limit as it grows, so a body over it is
//! refused at the chunk that passes it, not after the rest was buffered. No I/O here.

use super::HttpError;
use super::request::MAX_HEAD;

/// Where the decoder is within the coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk-size's hex digits (`digits` so far).
    Size { size: u64, digits: u8 },
    /// After the size: whitespace before an extension (`BWS`), then `;` or the line's CR.
    SizeWs { size: u64 },
    /// After the size: skipping a chunk extension up to the line's CR.
    Extension { size: u64 },
    /// Expecting the LF of the chunk-size line.
    SizeLf { size: u64 },
    /// Copying `left` more data bytes of the current chunk.
    Data { left: u64 },
    /// Expecting the CR after a chunk's data.
    DataCr,
    /// Expecting the LF after a chunk's data.
    DataLf,
    /// At the start of a trailer line (or of the empty line that ends the body).
    TrailerStart,
    /// Inside a trailer field line, up to its CR.
    Trailer,
    /// Expecting the LF of a trailer line.
    TrailerLf,
    /// Expecting the LF of the final empty line.
    EndLf,
    /// The body is complete.
    Done,
}

/// Progress of one `decode` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Input bytes used; the rest belongs to whatever follows (the next request).
    pub used: usize,
    /// The body is complete (the last chunk and the trailer section were read).
    pub done: bool,
}

/// Decodes one chunked body; see the module docs.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Bytes of chunk extensions and trailers so far: metadata is held to `MAX_HEAD` in all.
    meta: usize,
    /// Largest decoded body.
    max_body: usize,
}

/// More hex digits than this cannot be a size below `u64::MAX` worth reading (leading zeros
/// aside, which are refused past this many too).
const MAX_SIZE_DIGITS: u8 = 16;

impl ChunkedDecoder {
    /// A decoder for a body of at most `max_body` decoded bytes.
    pub fn new(max_body: usize) -> Self {
        ChunkedDecoder {
            state: State::Size { size: 0, digits: 0 },
            meta: 0,
            max_body,
        }
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes what `input` holds, appending data to `body`. Errors: a malformed coding is
    /// `Malformed`, a body over the limit `PayloadTooLarge`, extensions and trailers over
    /// `MAX_HEAD` bytes `HeadersTooLarge`.
    pub fn decode(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<Progress, HttpError> {
        let mut at = 0;
        while at < input.len() && self.state != State::Done {
            if let State::Data { left } = self.state {
                let take = (input.len() - at).min(usize::try_from(left).unwrap_or(usize::MAX));
                body.extend_from_slice(&input[at..at + take]);
                at += take;
                let left = left - take as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data { left }
                };
                continue;
            }
            let b = input[at];
            at += 1;
            self.state = self.step(b, body.len())?;
        }
        Ok(Progress {
            used: at,
            done: self.state == State::Done,
        })
    }

    /// One byte outside chunk data.
    fn step(&mut self, b: u8, decoded: usize) -> Result<State, HttpError> {
        Ok(match self.state {
            State::Size { size, digits } => match hex_value(b) {
                Some(v) => {
                    if digits >= MAX_SIZE_DIGITS {
                        return Err(HttpError::PayloadTooLarge);
                    }
                    let size = size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(u64::from(v)))
                        .ok_or(HttpError::PayloadTooLarge)?;
                    State::Size {
                        size,
                        digits: digits + 1,
                    }
                }
                _ if digits == 0 => return Err(HttpError::Malformed),
                _ => {
                    // The size is known: refuse a body that would pass the limit now.
                    let total = (decoded as u64).saturating_add(size);
                    if total > self.max_body as u64 {
                        return Err(HttpError::PayloadTooLarge);
                    }
                    self.after_size(b, size)?
                }
            },
            State::SizeWs { size } => {
                self.count_meta()?;
                match b {
                    b' ' | b'\t' => State::SizeWs { size },
                    b';' => State::Extension { size },
                    b'\r' => State::SizeLf { size },
                    _ => return Err(HttpError::Malformed),
                }
            }
            State::Extension { size } => {
                self.count_meta()?;
                match b {
                    b'\r' => State::SizeLf { size },
                    b'\t' | b' '..=b'~' | 0x80.. => State::Extension { size },
                    _ => return Err(HttpError::Malformed),
                }
            }
            State::SizeLf { size } => match b {
                b'\n' if size == 0 => State::TrailerStart,
                b'\n' => State::Data { left: size },
                _ => return Err(HttpError::Malformed),
            },
            State::DataCr => expect(b, b'\r', State::DataLf)?,
            State::DataLf => expect(b, b'\n', State::Size { size: 0, digits: 0 })?,
            State::TrailerStart => match b {
                b'\r' => State::EndLf,
                b'\n' => return Err(HttpError::Malformed),
                _ => {
                    self.count_meta()?;
                    State::Trailer
                }
            },
            State::Trailer => {
                self.count_meta()?;
                match b {
                    b'\r' => State::TrailerLf,
                    b'\n' => return Err(HttpError::Malformed),
                    _ => State::Trailer,
                }
            }
            State::TrailerLf => expect(b, b'\n', State::TrailerStart)?,
            State::EndLf => expect(b, b'\n', State::Done)?,
            State::Data { .. } | State::Done => self.state,
        })
    }

    /// The byte right after a chunk-size's digits: an extension, optional whitespace before
    /// it, or the line's CR.
    fn after_size(&mut self, b: u8, size: u64) -> Result<State, HttpError> {
        match b {
            b'\r' => Ok(State::SizeLf { size }),
            b';' => {
                self.count_meta()?;
                Ok(State::Extension { size })
            }
            b' ' | b'\t' => {
                self.count_meta()?;
                Ok(State::SizeWs { size })
            }
            _ => Err(HttpError::Malformed),
        }
    }

    fn count_meta(&mut self) -> Result<(), HttpError> {
        self.meta += 1;
        if self.meta > MAX_HEAD {
            return Err(HttpError::HeadersTooLarge);
        }
        Ok(())
    }
}

fn expect(b: u8, want: u8, next: State) -> Result<State, HttpError> {
    if b == want {
        Ok(next)
    } else {
        Err(HttpError::Malformed)
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes a complete chunked body in one go: `(decoded, bytes used)`, or `None` when `input`
/// ends before the body does.
pub fn decode_all(input: &[u8], max_body: usize) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
    let mut decoder = ChunkedDecoder::new(max_body);
    let mut body = Vec::new();
    let progress = decoder.decode(input, &mut body)?;
    Ok(progress.done.then_some((body, progress.used)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split into pieces of `step` bytes.
    fn in_steps(input: &[u8], step: usize, max: usize) -> Result<(Vec<u8>, usize), HttpError> {
        let mut d = ChunkedDecoder::new(max);
        let mut body = Vec::new();
        let mut used = 0;
        for piece in input.chunks(step) {
            let p = d.decode(piece, &mut body)?;
            used += p.used;
            if p.done {
                return Ok((body, used));
            }
            assert_eq!(
                p.used,
                piece.len(),
                "an unfinished body uses all it is given"
            );
        }
        panic!("body not complete");
    }

    #[test]
    fn decodes_at_every_split() {
        let wire =
            b"5\r\nhello\r\n1 ;name=value\r\n \r\nA\t\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        for step in 1..wire.len() {
            let (body, used) = in_steps(wire, step, 100).unwrap();
            assert_eq!(body, b"hello 0123456789", "step {step}");
            assert_eq!(&wire[used..], b"NEXT", "step {step}");
        }
    }

    #[test]
    fn an_empty_body_and_uppercase_hex() {
        assert_eq!(decode_all(b"0\r\n\r\n", 0).unwrap(), Some((vec![], 5)));
        let (body, _) = decode_all(b"0000B\r\nhello world\r\n0\r\n\r\n", 100)
            .unwrap()
            .unwrap();
        assert_eq!(body, b"hello world");
    }

    #[test]
    fn incomplete_is_not_an_error() {
        for cut in 0..b"3\r\nabc\r\n0\r\n\r\n".len() {
            assert_eq!(decode_all(&b"3\r\nabc\r\n0\r\n\r\n"[..cut], 100), Ok(None));
        }
    }

    #[test]
    fn the_limit_applies_to_decoded_bytes_as_soon_as_a_size_passes_it() {
        assert!(decode_all(b"a\r\n0123456789\r\n0\r\n\r\n", 10).is_ok());
        assert_eq!(
            decode_all(b"a\r\n0123456789\r\n1\r\n", 10),
            Err(HttpError::PayloadTooLarge)
        );
        // Refused at the size line, before any data of that chunk.
        assert_eq!(decode_all(b"b\r\n", 10), Err(HttpError::PayloadTooLarge));
    }

    #[test]
    fn sizes_cannot_overflow() {
        let huge = b"ffffffffffffffff\r\n";
        assert_eq!(
            decode_all(huge, usize::MAX / 2),
            Err(HttpError::PayloadTooLarge)
        );
        let over = b"1ffffffffffffffff\r\n";
        assert_eq!(
            decode_all(over, usize::MAX),
            Err(HttpError::PayloadTooLarge)
        );
        let long = b"00000000000000001\r\n";
        assert_eq!(
            decode_all(long, usize::MAX),
            Err(HttpError::PayloadTooLarge)
        );
    }

    #[test]
    fn malformed_codings_are_refused() {
        for bad in [
            &b"\r\n"[..],
            b"x\r\n",
            b"-1\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloX",
            b"5\r\nhello\n",
            b"0\r\nTrailer\n",
            b"0\r\n\n",
            b"0x5\r\n",
            b"5;ext\n",
            b"5 junk\r\n",
            b"5;\x00\x01\r\n",
        ] {
            assert_eq!(
                decode_all(bad, 100),
                Err(HttpError::Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn extensions_and_trailers_are_bounded() {
        let mut ext = b"1;".to_vec();
        ext.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        assert_eq!(decode_all(&ext, 100), Err(HttpError::HeadersTooLarge));
        let mut trailer = b"0\r\n".to_vec();
        for _ in 0..MAX_HEAD / 4 {
            trailer.extend_from_slice(b"A: b\r\n");
        }
        assert_eq!(decode_all(&trailer, 100), Err(HttpError::HeadersTooLarge));
    }
}
