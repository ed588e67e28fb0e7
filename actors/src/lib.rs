//! Ferry's runtime on actix: a server whose connection actors route frames by serial to
//! per-call actors, and a client library with concurrent typed calls, deadlines and
//! cancellation. docs/PROTOCOL.md is the contract both sides follow.

pub mod auth;
pub mod client;
pub mod config;
mod connection;
pub mod control;
pub mod error;
pub mod memory;
pub mod metrics;
pub mod program;
pub mod server;
pub mod stream;
pub mod test_program;
pub mod tls;

pub use client::{CallOptions, Client, ClientStream};
pub use config::{ClientConfig, KeepaliveConfig, ServerConfig};
pub use error::{CallError, ConnectError, ListenError};
pub use ferry_codec as codec;
pub use ferry_codec::proto::{ErrorCode, Layer, Side};
pub use server::{Server, ServerHandle, ServerView};
