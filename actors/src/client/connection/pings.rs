//! The PINGs one client connection sent and the server has not answered yet, oldest first (a
//! peer answers each one, in order): a [`Ping`](super::Ping) awaiting its PONG, or a
//! keepalive probe.

use std::collections::VecDeque;

use tokio::sync::oneshot;

#[derive(Default)]
pub(super) struct Pings(VecDeque<Option<oneshot::Sender<()>>>);

impl Pings {
    /// A keepalive probe went out.
    pub fn probe(&mut self) {
        self.0.push_back(None);
    }

    /// A PING the caller waits on went out; the receiver resolves on its PONG.
    pub fn ask(&mut self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.0.push_back(Some(tx));
        rx
    }

    /// A PONG came: it answers the oldest PING.
    pub fn answered(&mut self) {
        if let Some(Some(waiter)) = self.0.pop_front() {
            let _ = waiter.send(());
        }
    }

    /// The connection ended: nobody waits for a PONG any more.
    pub fn clear(&mut self) {
        self.0.clear();
    }
}
