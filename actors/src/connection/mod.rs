//! Pieces both ends of a connection share: the transport, the writer and keepalive.

pub mod keepalive;
pub mod transport;
pub mod writer;

/// Bytes the reader asks the kernel for at a time; room for a 256 KiB chunk and its
/// neighbours, so a large chunk is split off the buffer rather than reassembled.
pub const READ_CAPACITY: usize = 512 * 1024;
