//! Opening a stream: its actor, and the handles of the directions this side has.

use actix::{Actor, Addr};

use crate::stream::actor::{StreamActor, StreamSetup};
use crate::stream::{Incoming, Outgoing};

/// The stream handles of a streaming call, handed to its handler (or to the client).
#[derive(Default)]
pub struct StreamEnds {
    pub incoming: Option<Incoming>,
    pub outgoing: Option<Outgoing>,
}

impl StreamEnds {
    /// Takes the handle the procedure's declaration promises.
    pub fn take_incoming(&mut self) -> Incoming {
        self.incoming
            .take()
            .expect("the runtime opens an incoming end for this direction")
    }

    pub fn take_outgoing(&mut self) -> Outgoing {
        self.outgoing
            .take()
            .expect("the runtime opens an outgoing end for this direction")
    }
}

/// Starts the stream's actor and hands out the handles for the directions this side has.
pub(crate) fn open(setup: StreamSetup) -> (Addr<StreamActor>, StreamEnds) {
    let (receives, sends) = (setup.receives, setup.sends);
    let halted = setup.halted.clone();
    let actor = StreamActor::new(setup).start();
    let ends = StreamEnds {
        incoming: receives.then(|| Incoming::new(actor.clone())),
        outgoing: sends.then(|| Outgoing::new(actor.clone(), halted)),
    };
    (actor, ends)
}
