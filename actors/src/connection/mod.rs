//! Pieces both ends of a connection share: the transport, the writer and keepalive.

pub mod keepalive;
pub mod transport;
pub mod writer;
