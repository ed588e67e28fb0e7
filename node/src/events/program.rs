//! The events program's declaration: one procedure, `subscribe`, which stays open and sends
//! EVENT messages until the client cancels it.

use ferry_actors::program;

use crate::proto::events::{SubscribeReply, SubscribeRequest};

/// Event number of [`Event`](crate::proto::events::Event) messages (the procedure field of their MESSAGE frames).
pub const EVENT: u32 = 100;

program! {
    /// Node events.
    pub program EventsProgram = 0x6576_6e74, version 1;
    handler EventsHandler; client EventsClient;
    procedures {
        /// Stays open, sending EVENT messages, until the client cancels it.
        1 => subscribe(SubscribeRequest) -> SubscribeReply;
    }
}
