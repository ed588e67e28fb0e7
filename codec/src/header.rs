//! The fixed part of every frame: the length word and the six-field header.

use crate::error::DecodeError;

/// Size of the length word that starts every frame.
pub const LENGTH_LEN: usize = 4;
/// Size of the header that follows the length word: six big-endian `u32`.
pub const HEADER_LEN: usize = 24;
/// The smallest legal value of the length word: a frame with an empty payload.
pub const MIN_FRAME_LEN: usize = LENGTH_LEN + HEADER_LEN;

/// What a frame is. Numbers 0–6 are libvirt's; 7 and 8 are Ferry's additions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MessageType {
    /// A request; opens a call (and, for streaming procedures, its stream).
    Call = 0,
    /// The one answer to a call; the last frame the server sends for that serial.
    Reply = 1,
    /// An asynchronous event or a connection-control message.
    Message = 2,
    /// A chunk of opaque stream data, a stream's finish, or its abort.
    Stream = 3,
    /// A gap in sparse stream data: `{length: u64, flags: u32}`.
    StreamHole = 6,
    /// Flow-control credit for one stream: `{bytes: u32}`.
    Credit = 7,
    /// The client asks the server to cancel an in-flight call.
    Cancel = 8,
}

impl TryFrom<u32> for MessageType {
    type Error = DecodeError;

    fn try_from(value: u32) -> Result<Self, DecodeError> {
        Ok(match value {
            0 => Self::Call,
            1 => Self::Reply,
            2 => Self::Message,
            3 => Self::Stream,
            6 => Self::StreamHole,
            7 => Self::Credit,
            8 => Self::Cancel,
            other => return Err(DecodeError::UnknownType(other)),
        })
    }
}

/// The outcome a frame reports; its meaning depends on the [`MessageType`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Status {
    Ok = 0,
    Error = 1,
    Continue = 2,
}

impl TryFrom<u32> for Status {
    type Error = DecodeError;

    fn try_from(value: u32) -> Result<Self, DecodeError> {
        Ok(match value {
            0 => Self::Ok,
            1 => Self::Error,
            2 => Self::Continue,
            other => return Err(DecodeError::UnknownStatus(other)),
        })
    }
}

/// The 24-byte header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    pub program: u32,
    pub version: u32,
    pub procedure: u32,
    pub kind: MessageType,
    pub serial: u32,
    pub status: Status,
}

/// The length word and header exactly as they go on the wire.
pub type WireHead = [u8; MIN_FRAME_LEN];

impl Header {
    /// Parses the 24 header bytes (without the length word).
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Result<Self, DecodeError> {
        let word = |i: usize| u32::from_be_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap());
        Ok(Self {
            program: word(0),
            version: word(1),
            procedure: word(2),
            kind: MessageType::try_from(word(3))?,
            serial: word(4),
            status: Status::try_from(word(5))?,
        })
    }

    /// The length word for a payload of `payload_len` bytes followed by this header.
    ///
    /// The caller guarantees that the total fits the frame limit, which is far below `u32::MAX`.
    pub fn encode(&self, payload_len: usize) -> WireHead {
        let total = u32::try_from(MIN_FRAME_LEN + payload_len).expect("frame length fits u32");
        let words = [
            total,
            self.program,
            self.version,
            self.procedure,
            self.kind as u32,
            self.serial,
            self.status as u32,
        ];
        let mut out = [0u8; MIN_FRAME_LEN];
        for (chunk, word) in out.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }
}
