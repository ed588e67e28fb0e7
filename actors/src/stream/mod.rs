//! Data streams: a per-stream actor on each side owns the stream's buffers and its credit;
//! [`Incoming`] and [`Outgoing`] are the handles user code reads and writes through.
//!
//! docs/PROTOCOL.md section 7 is the contract: credit counts whole frames on the wire, the
//! sender finishes with STREAM/OK, the receiver confirms once its sink committed, and either
//! side may abort.

mod actor;
mod handles;
mod hash;
mod io;

pub use actor::StreamActor;
pub(crate) use actor::{FromPeer, Notice, StreamNotice, StreamSetup};
pub use handles::{Halted, Incoming, Outgoing};
pub use hash::ContentHash;
pub use io::{IncomingReader, OutgoingWriter};

/// Zeros handed out for holes when a consumer asks for plain bytes (or hashes them); shared,
/// never allocated.
pub static ZEROS: [u8; 256 * 1024] = [0; 256 * 1024];

/// Which way data flows for a procedure, seen from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// No stream: a plain call.
    Unary,
    /// Client to server.
    Upload,
    /// Server to client.
    Download,
    /// Both at once.
    Both,
}

impl Direction {
    pub fn is_stream(self) -> bool {
        self != Self::Unary
    }

    /// Whether the client sends data in this direction.
    pub fn client_sends(self) -> bool {
        matches!(self, Self::Upload | Self::Both)
    }

    /// Whether the server sends data in this direction.
    pub fn server_sends(self) -> bool {
        matches!(self, Self::Download | Self::Both)
    }

    /// STREAM/OK frames the client sends before its side is closed: its finish (if it
    /// sends) and its confirmation (if it receives).
    pub(crate) fn client_oks(self) -> u8 {
        u8::from(self.client_sends()) + u8::from(self.server_sends())
    }
}

/// A piece of stream data: bytes, a run of zeros that was not sent, or a run the receiver
/// already has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    Data(bytes::Bytes),
    Hole(u64),
    /// This many bytes equal the receiver's *base* at the same offset (a STREAM_HOLE with the
    /// KEEP flag, docs/PROTOCOL.md section 7.4): a delta transfer's unchanged range. Only a
    /// procedure that names a base gives it a meaning; any other receiver refuses it.
    Keep(u64),
}

impl Chunk {
    /// How many bytes of the stream this chunk stands for.
    pub fn len(&self) -> u64 {
        match self {
            Self::Data(bytes) => bytes.len() as u64,
            Self::Hole(length) | Self::Keep(length) => *length,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Checks a STREAM/CONTINUE or STREAM_HOLE frame from the peer against the stream's limits and
/// the credit the peer still has, and spends that credit. The error says which rule broke.
pub(crate) fn admit_inbound(
    frame: ferry_codec::Frame,
    allowance: &mut u64,
    max_chunk: u32,
) -> Result<FromPeer, String> {
    use ferry_codec::{Hole, MessageType};
    let cost = frame.wire_len() as u64;
    let event = match frame.header.kind {
        MessageType::StreamHole => {
            let hole = Hole::decode(&frame.payload).map_err(|e| e.to_string())?;
            FromPeer::Hole {
                length: hole.length,
                keep: hole.is_keep(),
                cost: cost as u32,
            }
        }
        _ if frame.payload.is_empty() => return Err("empty stream data chunk".into()),
        _ if frame.payload.len() > max_chunk as usize => {
            return Err(format!(
                "stream chunk of {} bytes exceeds max_chunk ({max_chunk})",
                frame.payload.len()
            ));
        }
        _ => FromPeer::Data {
            bytes: frame.payload,
            cost: cost as u32,
        },
    };
    if cost > *allowance {
        return Err(format!(
            "frame of {cost} bytes exceeds the remaining credit of {allowance} bytes"
        ));
    }
    *allowance -= cost;
    Ok(event)
}
