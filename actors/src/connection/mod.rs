//! Pieces both ends of a connection share: the transport, the reader and the writer, credit
//! for received streams, keepalive, and how calls and streams report to their connection.

pub mod credit;
pub mod keepalive;
pub mod reader;
pub mod report;
pub mod transport;
pub mod writer;
