//! Pieces both ends of a connection share: the transport, the writer and keepalive.

pub mod keepalive;
pub mod reader;
pub mod transport;
pub mod writer;
