//! Ferry's runtime on actix: a server whose connection actors route frames by serial to
//! per-call tasks and per-stream state, and a client library with concurrent typed calls, deadlines and
//! cancellation. docs/PROTOCOL.md is the contract both sides follow.
//!
//! Modules import in one direction only (`.ci/check-imports.py` checks it), top down:
//!
//! - programs built on the runtime: [`auth`] (SCRAM, the connection's identity) and
//!   [`test_program`];
//! - [`server`] (listeners, the server connection actor, call tasks) and [`client`] (the
//!   client and its connection actor);
//! - [`program`]: declaring programs (`program!`), the registry and a call's context;
//! - [`stream`]: a stream's shared state and its handles;
//! - leaves everyone reads: the reader, writer, keepalive and transport of a connection
//!   (`connection`), [`identity`] and [`access`] (who a connection is, what it may call),
//!   [`memory`] (the per-connection budget), [`metrics`], [`control`], [`config`], [`error`],
//!   [`scram`], [`tls`], and [`ServerView`] (what programs see of the server).

pub mod access;
pub mod auth;
pub mod client;
pub mod config;
mod connection;
pub mod control;
pub mod error;
pub mod identity;
pub mod memory;
pub mod metrics;
pub mod program;
mod proto;
pub mod scram;
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
