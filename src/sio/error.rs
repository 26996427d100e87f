//! Socket.IO errors. Every one of them closes the Engine.IO session (as socket.io does).

use std::fmt;

/// Why a Socket.IO packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SioError {
    /// The first character is not a packet type.
    UnknownType,
    /// The ack id is not a number that fits 64 bits.
    BadAckId,
    /// The data is not valid JSON, or not the shape its packet type needs.
    BadPayload,
    /// Attachment count, placeholders or attachment bytes out of bounds or out of order.
    BadAttachments,
    /// A message for a session the layer does not know.
    UnknownSession,
}

impl fmt::Display for SioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SioError::UnknownType => "unknown packet type",
            SioError::BadAckId => "invalid ack id",
            SioError::BadPayload => "invalid payload",
            SioError::BadAttachments => "invalid binary attachments",
            SioError::UnknownSession => "unknown session",
        })
    }
}

impl std::error::Error for SioError {}
