//! The per-call task: runs one handler and reports its outcome to the connection (any actor
//! that takes [`CallDone`]: the call knows nothing more of the connection).
//!
//! A call is a plain task on the connection's arbiter rather than an actor: it takes no
//! messages but its stop order, which aborting the task carries, and a task costs a fraction
//! of an actor's context and mailbox (docs/BENCHMARKS.md, issue 16). Stopping it drops the
//! handler's future, so a cancelled call's work stops at its next await point.

use std::sync::Arc;
use std::time::Duration;

use actix::Message;
use bytes::Bytes;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::connection::report::Report;
use crate::error::CallError;
use crate::program::HandlerFuture;

/// The handler finished; the connection sends the REPLY and frees the serial.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CallDone {
    pub serial: u32,
    pub outcome: Result<Bytes, CallError>,
}

/// A running handler.
pub struct RunningCall(JoinHandle<()>);

impl RunningCall {
    /// Starts the handler on the current arbiter; its outcome goes to `connection`.
    pub fn start(
        serial: u32,
        connection: Arc<dyn Report<CallDone>>,
        handler: HandlerFuture,
        span: tracing::Span,
    ) -> Self {
        Self(actix_rt::spawn(async move {
            let outcome = handler.instrument(span).await;
            connection.report(CallDone { serial, outcome });
        }))
    }

    /// Stops the call (cancelled, aborted, or the connection is going away); its outcome is
    /// no longer wanted. With a grace period the handler may first finish on its own: a
    /// streaming handler learns why its stream ended from its stream handle (an abort, a lost
    /// connection) and can clean up accordingly before it is dropped.
    pub fn stop(self, grace: Option<Duration>) {
        let Self(mut task) = self;
        match grace {
            Some(grace) => {
                // The timer ends with the handler if that comes first.
                actix_rt::spawn(async move {
                    if tokio::time::timeout(grace, &mut task).await.is_err() {
                        task.abort();
                    }
                });
            }
            None => task.abort(),
        }
    }
}
