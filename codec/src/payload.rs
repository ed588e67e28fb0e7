//! Fixed-layout payloads (holes, credit) and protobuf helpers for the others.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::PayloadError;

/// Size of a STREAM_HOLE payload.
pub const HOLE_LEN: usize = 12;
/// Size of a CREDIT payload.
pub const CREDIT_LEN: usize = 4;
/// The most a finish's trailer may carry (docs/PROTOCOL.md section 7.6): a checksum or a
/// few fields, never data, so a peer cannot park a large payload on a stream's end.
pub const MAX_TRAILER: usize = 4096;

/// A run of zeros in sparse stream data. The layout (`u64` length, `u32` flags, big endian)
/// is libvirt's `virNetStreamHole`, so a libvirt dissector reads it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hole {
    pub length: u64,
    /// Bit 0 is [`Hole::KEEP`]; the others are reserved: senders write 0, receivers ignore
    /// them.
    pub flags: u32,
}

impl Hole {
    /// Flag: not zeros but "the receiver's base bytes at this offset" (docs/PROTOCOL.md
    /// section 7.4): what a delta transfer sends for a range the destination already holds.
    pub const KEEP: u32 = 1;

    pub fn new(length: u64) -> Self {
        Self { length, flags: 0 }
    }

    /// A KEEP range of `length` bytes.
    pub fn keep(length: u64) -> Self {
        Self {
            length,
            flags: Self::KEEP,
        }
    }

    pub fn is_keep(self) -> bool {
        self.flags & Self::KEEP != 0
    }

    pub fn encode(self) -> Bytes {
        let mut out = BytesMut::with_capacity(HOLE_LEN);
        out.put_u64(self.length);
        out.put_u32(self.flags);
        out.freeze()
    }

    pub fn decode(mut payload: &[u8]) -> Result<Self, PayloadError> {
        if payload.len() != HOLE_LEN {
            return Err(PayloadError::HoleLength(payload.len()));
        }
        Ok(Self {
            length: payload.get_u64(),
            flags: payload.get_u32(),
        })
    }
}

/// Stream credit: the receiver allows the sender this many more bytes of STREAM and
/// STREAM_HOLE frames, counted as whole frames on the wire (length word included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credit(pub u32);

impl Credit {
    pub fn encode(self) -> Bytes {
        Bytes::copy_from_slice(&self.0.to_be_bytes())
    }

    pub fn decode(payload: &[u8]) -> Result<Self, PayloadError> {
        let bytes: [u8; CREDIT_LEN] = payload
            .try_into()
            .map_err(|_| PayloadError::CreditLength(payload.len()))?;
        Ok(Self(u32::from_be_bytes(bytes)))
    }
}

/// Encodes a protobuf body into its own buffer.
pub fn encode_message<M: prost::Message>(message: &M) -> Bytes {
    message.encode_to_vec().into()
}

/// Decodes a protobuf body, naming the message type in the error.
pub fn decode_message<M: prost::Message + Default>(payload: &[u8]) -> Result<M, PayloadError> {
    M::decode(payload).map_err(|source| PayloadError::Protobuf {
        message: std::any::type_name::<M>(),
        source,
    })
}
