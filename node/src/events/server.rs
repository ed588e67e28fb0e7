//! The events program's server: a subscriber's call stays open, sending it the hub's events
//! as MESSAGE frames bound to its serial.

use std::sync::Arc;

use ferry_actors::CallError;
use ferry_actors::program::CallContext;

use crate::events::hub::{EventHub, now_millis};
use crate::events::program::{EVENT, EventsHandler, EventsProgram};
use crate::proto::events::{Event, SubscribeReply, SubscribeRequest, Subscribed, event};

/// Serves the events program from a hub.
pub struct EventsService {
    pub hub: Arc<EventHub>,
}

impl EventsHandler for EventsService {
    async fn subscribe(
        &self,
        _: SubscribeRequest,
        context: CallContext,
    ) -> Result<SubscribeReply, CallError> {
        let mut subscription = self.hub.subscribe();
        let live = Event {
            at_millis: now_millis(),
            dropped_before: 0,
            kind: Some(event::Kind::Subscribed(Subscribed {})),
        };
        context.emit(EventsProgram::NUMBER, EVENT, &live).await?;
        while let Some(event) = subscription.next().await {
            context.emit(EventsProgram::NUMBER, EVENT, &event).await?;
        }
        Ok(SubscribeReply {})
    }
}
