//! The `tokio_util::codec` Decoder and Encoder for frames.

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{DecodeError, EncodeError};
use crate::frame::Frame;
use crate::header::{HEADER_LEN, Header, LENGTH_LEN, MIN_FRAME_LEN};

/// Size limits of the wire format. Both peers should agree; each enforces its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame accepted or sent, length word included. Default 16 MiB.
    pub max_frame: u32,
    /// Largest payload of one STREAM data frame. Default 256 KiB. Enforced by the stream layer,
    /// which aborts the offending stream; the codec only knows whole frames.
    pub max_chunk: u32,
}

impl Limits {
    pub const DEFAULT_MAX_FRAME: u32 = 16 * 1024 * 1024;
    pub const DEFAULT_MAX_CHUNK: u32 = 256 * 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: Self::DEFAULT_MAX_FRAME,
            max_chunk: Self::DEFAULT_MAX_CHUNK,
        }
    }
}

/// Most the decoder reserves ahead of bytes that have actually arrived, so a peer that announces
/// a large frame and then stalls cannot make it allocate the announced size. (`BytesMut` grows
/// by doubling, so the buffer stays within about 2 × (bytes received + this).)
const RESERVE_AHEAD: usize = 1024 * 1024;

/// Splits frames out of a byte stream and writes them back.
///
/// Decoding never copies a payload: it is split off the read buffer as `Bytes`. The header is
/// validated as soon as its 28 bytes are in, so a bad length, type or status is reported
/// before the rest of the frame is waited for, and no buffer of a hostile size is allocated.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameCodec {
    limits: Limits,
}

impl FrameCodec {
    pub fn new(limits: Limits) -> Self {
        Self { limits }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Checks that a frame fits the limit before it is queued for writing.
    pub fn check_outgoing(&self, frame: &Frame) -> Result<(), EncodeError> {
        let length = frame.wire_len();
        if length > self.limits.max_frame as usize {
            return Err(EncodeError::FrameTooLarge {
                length,
                max: self.limits.max_frame,
            });
        }
        Ok(())
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = DecodeError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        if src.len() < LENGTH_LEN {
            return Ok(None);
        }
        let length = u32::from_be_bytes(src[..LENGTH_LEN].try_into().unwrap());
        if (length as usize) < MIN_FRAME_LEN {
            return Err(DecodeError::LengthTooSmall(length));
        }
        if length > self.limits.max_frame {
            return Err(DecodeError::FrameTooLarge {
                length,
                max: self.limits.max_frame,
            });
        }
        if src.len() < MIN_FRAME_LEN {
            return Ok(None);
        }
        let header_bytes: &[u8; HEADER_LEN] = src[LENGTH_LEN..MIN_FRAME_LEN].try_into().unwrap();
        let header = Header::parse(header_bytes)?;
        let length = length as usize;
        if src.len() < length {
            src.reserve((length - src.len()).min(RESERVE_AHEAD));
            return Ok(None);
        }
        let mut whole = src.split_to(length);
        whole.advance(MIN_FRAME_LEN);
        Ok(Some(Frame::new(header, whole.freeze())))
    }
}

/// Copies header and payload into `dst`. Convenient for tests and simple peers; the connection
/// writer uses [`Frame::wire_parts`] instead, which copies nothing.
impl Encoder<Frame> for FrameCodec {
    type Error = EncodeError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), EncodeError> {
        self.check_outgoing(&frame)?;
        let (head, payload) = frame.wire_parts();
        dst.reserve(head.len() + payload.len());
        dst.put_slice(&head);
        dst.put_slice(payload);
        Ok(())
    }
}
