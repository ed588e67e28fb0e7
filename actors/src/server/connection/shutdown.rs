//! How one server connection ends: draining (the server is shutting down: no new calls, close
//! once the open ones are done or the drain time is over) and closing (GOAWAY, flush, stop).
//! Closing is bounded: the grace timer stops the actor even if the peer never reads.

use std::time::Duration;

use actix::prelude::*;
use ferry_codec::Frame;
use ferry_codec::proto::{ErrorCode, Layer, Shutdown, Side};
use tracing::debug;

use crate::connection::writer::Outbox;
use crate::control::ControlMessage;
use crate::error::CallError;

/// How long a closing connection waits for its last frames (GOAWAY) to be written.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Where a connection is on its way out.
#[derive(Default)]
pub(super) struct Closing {
    /// The server is shutting down: new calls are refused.
    draining: bool,
    /// The connection is closing: frames read are ignored.
    closing: bool,
}

impl Closing {
    pub fn draining(&self) -> bool {
        self.draining
    }

    pub fn closing(&self) -> bool {
        self.closing
    }

    /// Starts draining and returns the SHUTDOWN notice to send; `None` if already draining.
    pub fn begin_drain(&mut self, drain: Duration) -> Option<Frame> {
        if self.draining {
            return None;
        }
        self.draining = true;
        let notice = Shutdown {
            drain_millis: drain.as_millis() as u64,
            reason: "server shutting down".into(),
        };
        Some(ControlMessage::Shutdown(notice).to_frame())
    }

    /// Sends GOAWAY with `error`, flushes, and stops; the grace timer stops the actor even if
    /// the peer never reads.
    pub fn close_with<A>(
        &mut self,
        ctx: &mut Context<A>,
        outbox: &Outbox,
        span: &tracing::Span,
        code: ErrorCode,
        message: String,
    ) where
        A: Actor<Context = Context<A>>,
    {
        if self.closing {
            return;
        }
        self.closing = true;
        debug!(parent: span, ?code, "closing: {message}");
        let body = CallError::new(code, Side::Server, Layer::Connection, message).to_body();
        let outbox = outbox.clone();
        ctx.spawn(actix::fut::wrap_future(async move {
            let _ = outbox.send(ControlMessage::GoAway(body).to_frame()).await;
            outbox.close().await;
        }));
        ctx.run_later(CLOSE_GRACE, |_, ctx| ctx.stop());
    }

    /// The peer is done with the connection (it closed its side, or said GOAWAY): what is
    /// already queued is written, never a frame cut short, then the connection closes; the
    /// grace timer closes it anyway if the peer stops reading.
    pub fn wind_down<A>(&mut self, ctx: &mut Context<A>, outbox: &Outbox)
    where
        A: Actor<Context = Context<A>>,
    {
        if self.closing {
            return;
        }
        self.closing = true;
        let outbox = outbox.clone();
        ctx.spawn(actix::fut::wrap_future(async move { outbox.close().await }));
        ctx.run_later(CLOSE_GRACE, |_, ctx| ctx.stop());
    }
}
