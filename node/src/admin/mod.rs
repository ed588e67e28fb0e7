//! The admin program: its declaration ([`program`]) and server ([`server`]); clients use the
//! generated [`AdminClient`].

pub mod program;
pub mod server;

pub use program::{AdminClient, AdminHandler, AdminProgram};
pub use server::AdminService;
