use std::fmt;

/// Everything that can go wrong reading or writing a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// The frame header declares more than [`crate::MAX_FRAME`] bytes.
    FrameTooLarge { len: u32 },
    /// The frame header declares zero bytes; no message is that short.
    EmptyFrame,
    /// The stream ended inside a frame.
    Truncated { expected: usize, got: usize },
    /// The payload does not decode as the expected message (unknown tag,
    /// invalid value, a length past the frame).
    Decode(String),
    /// The payload decoded but bytes were left over.
    TrailingBytes,
    /// The message could not be encoded (it would exceed the frame limit).
    Encode(String),
    /// The peer speaks another protocol version.
    VersionMismatch { ours: u32, theirs: u32 },
    /// An `Apply` names more than [`crate::MAX_LISTENERS`] listeners.
    TooManyListeners { count: usize },
    /// Two listeners of one `Apply` share a bind key.
    DuplicateBindKey { first: usize, second: usize },
    /// Two unix listeners of one `Apply` share a path (socket types aside).
    SharedUnixPath { first: usize, second: usize },
    /// Reading or writing the stream failed.
    Io(String),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::FrameTooLarge { len } => write!(
                f,
                "frame of {len} bytes exceeds the maximum of {} bytes",
                crate::MAX_FRAME
            ),
            ProtocolError::EmptyFrame => write!(f, "empty frame"),
            ProtocolError::Truncated { expected, got } => {
                write!(f, "truncated frame: expected {expected} bytes, got {got}")
            }
            ProtocolError::Decode(e) => write!(f, "malformed message: {e}"),
            ProtocolError::TrailingBytes => write!(f, "malformed message: trailing bytes"),
            ProtocolError::Encode(e) => write!(f, "cannot encode message: {e}"),
            ProtocolError::VersionMismatch { ours, theirs } => write!(
                f,
                "protocol version mismatch: this side speaks version {ours}, the peer speaks version {theirs}"
            ),
            ProtocolError::TooManyListeners { count } => write!(
                f,
                "too many listeners: {count} (at most {})",
                crate::MAX_LISTENERS
            ),
            ProtocolError::DuplicateBindKey { first, second } => write!(
                f,
                "listeners {first} and {second} have the same bind key"
            ),
            ProtocolError::SharedUnixPath { first, second } => write!(
                f,
                "listeners {first} and {second} are unix listeners on one path"
            ),
            ProtocolError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ProtocolError {}
