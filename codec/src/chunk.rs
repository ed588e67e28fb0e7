//! What a stream carries, as its two ends see it: chunks of data, holes and kept ranges (each
//! one STREAM or STREAM_HOLE frame on the wire, docs/PROTOCOL.md section 7).

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

/// Zeros handed out for holes when a consumer asks for plain bytes (or hashes them); shared,
/// never allocated.
pub static ZEROS: [u8; 256 * 1024] = [0; 256 * 1024];
