//! Data streams: on each side one shared state per stream holds the stream's buffers and its
//! credit; the connection delivers frames into it, and [`Incoming`] and [`Outgoing`] are the
//! handles user code reads and writes through.
//!
//! docs/PROTOCOL.md section 7 is the contract: credit counts whole frames on the wire, the
//! sender finishes with STREAM/OK, the receiver confirms once its sink committed, and either
//! side may abort.

mod direction;
mod ends;
mod handles;
mod hash;
mod inbound;
mod io;
mod state;

pub use direction::Direction;
pub use ends::StreamEnds;
pub(crate) use ends::open;
/// What a stream carries (in the codec, so the volume store can speak it without the runtime).
pub use ferry_codec::{Chunk, ZEROS};
pub use handles::{Halted, Incoming, Outgoing};
pub use hash::ContentHash;
pub(crate) use inbound::admit_inbound;
pub use io::{IncomingReader, OutgoingWriter};
pub(crate) use state::{FromPeer, Notice, StreamLink, StreamNotice, StreamSetup};
