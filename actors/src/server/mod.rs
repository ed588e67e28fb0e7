//! The server: listeners on TCP and unix sockets, connections spread over arbiters, and the
//! handle that shuts it all down gracefully.
//!
//! From the top: [`Server`] (builder.rs) starts the listeners (accept.rs), which hand each
//! socket to a [`ServerConnection`](connection) actor on an arbiter; the connection runs each
//! CALL in a task of its own (call.rs). The [`ServerHandle`] (handle.rs) stops it all. Below them,
//! leaves: the state connections share (shared.rs), the directory of open connections
//! (directory.rs) and what programs may see of the server (view.rs, [`ServerView`]).

mod accept;
mod builder;
mod call;
pub(crate) mod connection;
mod directory;
mod handle;
mod shared;
mod view;

pub use builder::Server;
pub use handle::ServerHandle;
pub use view::ServerView;
