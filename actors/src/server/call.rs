//! The per-call child actor: runs one handler and reports its outcome to the connection.
//!
//! Stopping the actor drops the handler's future, so a cancelled call's work stops at its next
//! await point.

use actix::prelude::*;
use bytes::Bytes;
use tracing::Instrument;

use crate::error::CallError;
use crate::program::HandlerFuture;
use crate::server::connection::ServerConnection;

pub struct CallActor {
    serial: u32,
    connection: Addr<ServerConnection>,
    handler: Option<(HandlerFuture, tracing::Span)>,
}

impl CallActor {
    pub fn new(
        serial: u32,
        connection: Addr<ServerConnection>,
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

/// Stop the call now (cancelled, or the connection is going away); no outcome is reported.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopCall;

impl Handler<StopCall> for CallActor {
    type Result = ();

    fn handle(&mut self, _: StopCall, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
