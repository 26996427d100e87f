//! Random identifiers: Engine.IO session ids and Socket.IO socket ids (20 URL-safe characters
//! drawn from a CSPRNG, as socket.io's own).

use std::fmt;

use rand::RngExt as _;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Whether `b` is in `ALPHABET` (URL-safe base64), without searching it.
fn in_alphabet(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Length of an id.
pub const ID_LEN: usize = 20;

/// A 20-character random id, usable as a `sid` or a Socket.IO socket id.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sid([u8; ID_LEN]);

impl Sid {
    /// A new random id.
    pub fn random(rng: &mut impl rand::Rng) -> Self {
        let mut id = [0u8; ID_LEN];
        for b in &mut id {
            *b = ALPHABET[rng.random_range(0..64usize)];
        }
        Sid(id)
    }

    /// A new random id that starts with `prefix` (at most `ID_LEN` characters of the id's
    /// alphabet; the rest is random).
    pub fn random_with_prefix(rng: &mut impl rand::Rng, prefix: &str) -> Self {
        let mut id = Sid::random(rng);
        let n = prefix.len().min(ID_LEN);
        id.0[..n].copy_from_slice(&prefix.as_bytes()[..n]);
        debug_assert!(id.0.iter().all(|&b| in_alphabet(b)));
        id
    }

    /// Parses an id received from a client; `None` unless it has the right form.
    pub fn parse(s: &str) -> Option<Self> {
        let bytes: [u8; ID_LEN] = s.as_bytes().try_into().ok()?;
        bytes.iter().all(|&b| in_alphabet(b)).then_some(Sid(bytes))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Every byte comes from ALPHABET, which is ASCII.
        std::str::from_utf8(&self.0).expect("ids are ASCII")
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sid({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_parse_back_and_differ() {
        let mut rng = rand::rng();
        let a = Sid::random(&mut rng);
        let b = Sid::random(&mut rng);
        assert_ne!(a, b);
        assert_eq!(Sid::parse(a.as_str()), Some(a));
        assert_eq!(Sid::parse("short"), None);
        assert_eq!(Sid::parse("!!!!!!!!!!!!!!!!!!!!"), None);
    }

    #[test]
    fn ids_parse_exactly_the_alphabet() {
        for b in 0..=u8::MAX {
            let id = [b; ID_LEN];
            let text = String::from_utf8_lossy(&id);
            assert_eq!(
                Sid::parse(&text).is_some(),
                ALPHABET.contains(&b),
                "byte {b:#04x}"
            );
        }
        // Twenty bytes of UTF-8 that are not ASCII.
        assert_eq!(Sid::parse(&"é".repeat(ID_LEN / 2)), None);
    }
}
