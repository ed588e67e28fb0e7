//! A transfer's progress, published to the event hub every `progress_every` bytes (and, for
//! migrations and copies, emitted to the caller), and how it ended.

use std::sync::Arc;

use ferry_actors::CallError;
use ferry_actors::program::CallContext;

use crate::events::{EventHub, now_millis};
use crate::proto::events::{self, Event, event};
use crate::volume::program::{PROGRESS, VolumeProgram};

/// Publishes a transfer's progress every `every` bytes, and how it ended, to the event hub
/// (and, for migrations and copies, to the caller). A transfer dropped before it settled
/// (its call was cancelled or its connection lost) is published as failed.
pub(super) struct Progress {
    pub events: Arc<EventHub>,
    name: String,
    direction: events::Direction,
    peer: String,
    total: u64,
    bytes: u64,
    every: u64,
    next: u64,
    /// Also emit progress to this call's client.
    caller: Option<CallContext>,
    settled: bool,
}

impl Progress {
    pub fn new(
        events: &Arc<EventHub>,
        every: u64,
        name: &str,
        direction: events::Direction,
        peer: String,
        start: u64,
        total: u64,
    ) -> Self {
        Self {
            events: events.clone(),
            name: name.to_owned(),
            direction,
            peer,
            total,
            bytes: start,
            every,
            next: start + every,
            caller: None,
            settled: false,
        }
    }

    pub fn tell_caller(mut self, context: &CallContext) -> Self {
        self.caller = Some(context.clone());
        self
    }

    pub async fn advance(&mut self, n: u64) {
        self.bytes += n;
        if self.bytes < self.next {
            return;
        }
        self.next = self.bytes + self.every;
        let kind = event::Kind::Progress(events::TransferProgress {
            name: self.name.clone(),
            direction: self.direction as i32,
            bytes: self.bytes,
            total: self.total,
            peer: self.peer.clone(),
        });
        if let Some(caller) = &self.caller {
            let event = Event {
                at_millis: now_millis(),
                dropped_before: 0,
                kind: Some(kind.clone()),
            };
            // A caller that went away is not the transfer's problem: its call is being
            // cancelled and this future dropped.
            let _ = caller.emit(VolumeProgram::NUMBER, PROGRESS, &event).await;
        }
        self.events.publish(kind);
    }

    pub fn finished(&mut self) {
        self.settled = true;
        self.events
            .publish(event::Kind::Finished(events::TransferFinished {
                name: self.name.clone(),
                direction: self.direction as i32,
                bytes: self.bytes,
                peer: self.peer.clone(),
            }));
    }

    pub fn failed(&mut self, error: &CallError) {
        self.fail(error.to_string());
    }

    pub fn fail(&mut self, reason: String) {
        self.settled = true;
        self.events
            .publish(event::Kind::Failed(events::TransferFailed {
                name: self.name.clone(),
                direction: self.direction as i32,
                bytes: self.bytes,
                reason,
                peer: self.peer.clone(),
            }));
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if !self.settled {
            self.fail("cancelled: the call ended before the transfer did".into());
        }
    }
}
