//! Engine.IO errors and their one mapping to the wire.

use std::fmt;

/// Why an Engine.IO request or packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineError {
    /// Missing or unknown `transport` (code 0).
    TransportUnknown,
    /// Missing or unknown `sid` (code 1).
    UnknownSid,
    /// A handshake that is not a `GET` (code 2).
    BadHandshakeMethod,
    /// A request that does not fit the session's state (code 3).
    BadRequest,
    /// An origin that is not allowed (code 4).
    Forbidden,
    /// `EIO` missing or not `4` (code 5).
    UnsupportedProtocolVersion,
    /// A packet that cannot be decoded: the session is closed.
    BadPacket,
}

impl EngineError {
    /// The Engine.IO error code, as in the reference server's JSON body.
    pub fn code(self) -> u8 {
        match self {
            EngineError::TransportUnknown => 0,
            EngineError::UnknownSid => 1,
            EngineError::BadHandshakeMethod => 2,
            EngineError::BadRequest | EngineError::BadPacket => 3,
            EngineError::Forbidden => 4,
            EngineError::UnsupportedProtocolVersion => 5,
        }
    }

    /// The HTTP answer: status and JSON body `{"code":N,"message":"…"}`.
    pub fn http(self) -> (u16, String) {
        let status = if self == EngineError::Forbidden {
            403
        } else {
            400
        };
        (
            status,
            format!("{{\"code\":{},\"message\":\"{}\"}}", self.code(), self),
        )
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EngineError::TransportUnknown => "Transport unknown",
            EngineError::UnknownSid => "Session ID unknown",
            EngineError::BadHandshakeMethod => "Bad handshake method",
            EngineError::BadRequest | EngineError::BadPacket => "Bad request",
            EngineError::Forbidden => "Forbidden",
            EngineError::UnsupportedProtocolVersion => "Unsupported protocol version",
        })
    }
}

impl std::error::Error for EngineError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_bodies() {
        assert_eq!(
            EngineError::TransportUnknown.http(),
            (400, r#"{"code":0,"message":"Transport unknown"}"#.into())
        );
        assert_eq!(
            EngineError::UnknownSid.http().1,
            r#"{"code":1,"message":"Session ID unknown"}"#
        );
        assert_eq!(EngineError::Forbidden.http().0, 403);
        assert_eq!(
            EngineError::UnsupportedProtocolVersion.http().1,
            r#"{"code":5,"message":"Unsupported protocol version"}"#
        );
    }
}
