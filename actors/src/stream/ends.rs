//! Opening a stream: its shared state, the connection's link to it, and the handles of the
//! directions this side has.

use crate::stream::state::{Shared, StreamLink, StreamSetup};
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

/// Opens the stream's state and hands out the connection's link and the handles for the
/// directions this side has.
pub(crate) fn open(setup: StreamSetup) -> (StreamLink, StreamEnds) {
    let (receives, sends) = (setup.receives, setup.sends);
    let shared = Shared::open(setup);
    let ends = StreamEnds {
        incoming: receives.then(|| Incoming::new(shared.clone())),
        outgoing: sends.then(|| Outgoing::new(shared.clone())),
    };
    (StreamLink::new(shared), ends)
}
