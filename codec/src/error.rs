//! What can be wrong with bytes from the wire.

/// A frame could not be decoded. Every variant except `Io` means the byte stream can no longer
/// be trusted to be in sync, so the connection must be closed.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("frame length {0} is below the minimum of 28 bytes (length word and header)")]
    LengthTooSmall(u32),
    #[error("frame length {length} exceeds the maximum frame size of {max} bytes")]
    FrameTooLarge { length: u32, max: u32 },
    #[error("unknown message type {0}")]
    UnknownType(u32),
    #[error("unknown status {0}")]
    UnknownStatus(u32),
    #[error("reading frames: {0}")]
    Io(#[from] std::io::Error),
}

/// A frame is too big to send under the configured limit.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("frame of {length} bytes exceeds the maximum frame size of {max} bytes")]
    FrameTooLarge { length: usize, max: u32 },
    #[error("writing frames: {0}")]
    Io(#[from] std::io::Error),
}

/// A payload does not have the shape its frame type requires.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("STREAM_HOLE payload must be 12 bytes, got {0}")]
    HoleLength(usize),
    #[error("CREDIT payload must be 4 bytes, got {0}")]
    CreditLength(usize),
    #[error("payload is not a valid {message}: {source}")]
    Protobuf {
        message: &'static str,
        source: prost::DecodeError,
    },
}
