//! Ferry's wire format.
//!
//! Every frame is a 4-byte big-endian length that counts itself, a 24-byte header of six
//! big-endian `u32` (program, version, procedure, type, serial, status) and a payload. The
//! layout is libvirt's remote protocol, bit for bit; `docs/PROTOCOL.md` is the contract.
//!
//! This crate does no I/O: [`FrameCodec`] plugs into `tokio_util::codec`, and
//! [`Frame::wire_parts`] hands the connection writer a header and the untouched payload for a
//! vectored write, so stream data is never copied on its way through.

mod chunk;
mod codec;
mod error;
mod frame;
mod header;
mod payload;

/// Protobuf bodies of the wire protocol (`proto/ferry/v1/wire.proto`).
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/ferry.v1.rs"));
}

pub use chunk::{Chunk, ZEROS};
pub use codec::{FrameCodec, Limits};
pub use error::{DecodeError, EncodeError, PayloadError};
pub use frame::{Frame, Route};
pub use header::{HEADER_LEN, Header, LENGTH_LEN, MIN_FRAME_LEN, MessageType, Status, WireHead};
pub use payload::{
    CREDIT_LEN, Credit, HOLE_LEN, Hole, MAX_TRAILER, decode_message, encode_message,
};
