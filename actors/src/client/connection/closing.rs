//! Why one client connection takes no new calls, or ended: the server's SHUTDOWN notice or a
//! local close (new calls refused), and the first cause of the end, shared with the
//! [`Client`](crate::Client) so calls made after the actor stopped fail with it too.

use std::sync::{Arc, OnceLock};

use ferry_codec::proto::{ErrorCode, Layer, Shutdown, Side};

use crate::error::CallError;

pub(super) struct Closing {
    /// Why the connection ended, first cause wins.
    closed: Arc<OnceLock<CallError>>,
    /// Set by the server's SHUTDOWN notice, or by a local close: no new calls.
    refusing: Option<CallError>,
}

impl Closing {
    pub fn new(closed: Arc<OnceLock<CallError>>) -> Self {
        Self {
            closed,
            refusing: None,
        }
    }

    /// The error a new call (or PING) gets, if the connection takes none.
    pub fn refusal(&self) -> Option<&CallError> {
        self.refusing.as_ref()
    }

    /// The server is shutting down: no new calls.
    pub fn shutting_down(&mut self, notice: &Shutdown) {
        self.refusing = Some(CallError::new(
            ErrorCode::ShuttingDown,
            Side::Server,
            Layer::Connection,
            format!("the server is shutting down: {}", notice.reason),
        ));
    }

    /// The connection ended with `error` (unless it already ended).
    pub fn ended(&mut self, error: &CallError) {
        let _ = self.closed.set(error.clone());
    }

    /// No new calls from now on; the first reason stays.
    pub fn refuse(&mut self, error: CallError) {
        self.refusing.get_or_insert(error);
    }
}
