//! The volume program, in the shape every program of the node has: its declaration
//! ([`program`]: procedures and messages, the handler trait and the typed client), its server
//! ([`server`]: the handlers, with their disk work in `disk`, progress reports in `progress`
//! and store errors as call errors in `blocking`) and its client helpers ([`client`], and the
//! delta transfer a client drives, [`delta`]).

mod blocking;
pub mod client;
pub mod delta;
mod disk;
pub mod program;
mod progress;
pub mod server;

pub use client::checksum_bytes;
pub use program::{PROGRESS, VolumeClient, VolumeHandler, VolumeProgram};
pub use server::VolumeService;
