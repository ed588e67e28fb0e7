//! The per-call child actor: runs one handler and reports its outcome to the connection
//! (any actor that takes [`CallDone`]: the call knows nothing more of the connection).
//!
//! Stopping the actor drops the handler's future, so a cancelled call's work stops at its next
//! await point.

use actix::prelude::*;
use bytes::Bytes;
use tracing::Instrument;

use crate::error::CallError;
use crate::program::HandlerFuture;

pub struct CallActor {
    serial: u32,
    connection: Recipient<CallDone>,
    handler: Option<(HandlerFuture, tracing::Span)>,
}

impl CallActor {
    pub fn new(
        serial: u32,
        connection: Recipient<CallDone>,
        handler: HandlerFuture,
        span: tracing::Span,
    ) -> Self {
        Self {
            serial,
            connection,
            handler: Some((handler, span)),
        }
    }
}

impl Actor for CallActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The only message is the stop order; a tiny mailbox is enough.
        ctx.set_mailbox_capacity(1);
        let (handler, span) = self.handler.take().expect("started once");
        ctx.spawn(
            handler
                .instrument(span)
                .into_actor(self)
                .map(|outcome, act, ctx| {
                    act.connection.do_send(CallDone {
                        serial: act.serial,
                        outcome,
                    });
                    ctx.stop();
                }),
        );
    }
}

/// The handler finished; the connection sends the REPLY and frees the serial.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CallDone {
    pub serial: u32,
    pub outcome: Result<Bytes, CallError>,
}

/// Stop the call (cancelled, aborted, or the connection is going away); its outcome is no
/// longer wanted. With a grace period the handler may first finish on its own: a streaming
/// handler learns why its stream ended from its stream handle (an abort, a lost connection)
/// and can clean up accordingly before it is dropped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopCall {
    pub grace: Option<std::time::Duration>,
}

impl Handler<StopCall> for CallActor {
    type Result = ();

    fn handle(&mut self, stop: StopCall, ctx: &mut Self::Context) {
        match stop.grace {
            Some(grace) => {
                ctx.run_later(grace, |_, ctx| ctx.stop());
            }
            None => ctx.stop(),
        }
    }
}
