//! Pieces both ends of a connection share: the transport, the reader and the writer, credit
//! for received streams, and keepalive.

pub mod credit;
pub mod keepalive;
pub mod reader;
pub mod transport;
pub mod writer;
