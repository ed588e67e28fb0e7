//! The events program: clients subscribe and receive what happens on the node. Its
//! declaration ([`program`]), the hub that owns the subscribers ([`hub`]) and the server
//! ([`server`]); clients use the generated [`EventsClient`] or subscribe on their connection.

pub mod hub;
pub mod program;
pub mod server;

pub use hub::{EventHub, Subscription, now_millis};
pub use program::{EVENT, EventsClient, EventsHandler, EventsProgram};
pub use server::EventsService;
