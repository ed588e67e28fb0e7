//! Client helpers of the volume program, beside the typed
//! [`VolumeClient`](crate::volume::VolumeClient) its declaration generates: what both `ferry` and a node sending to a peer need to build requests. The
//! delta transfer a client drives is [`super::delta`].

use bytes::Bytes;

/// A checksum as a request carries it: 32 bytes, or none.
pub fn checksum_bytes(checksum: Option<[u8; 32]>) -> Bytes {
    checksum.map(|c| c.to_vec().into()).unwrap_or_default()
}
