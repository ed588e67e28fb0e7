//! Event subscriptions of one client connection: MESSAGE frames of one program and procedure
//! go to every subscriber's bounded queue; a subscriber that does not keep up loses events
//! (counted), never the connection.

use ferry_codec::Frame;
use tokio::sync::mpsc;

use crate::metrics::Counters;

struct Subscriber {
    program: u32,
    procedure: u32,
    tx: mpsc::Sender<Frame>,
}

/// The subscribers of one connection.
#[derive(Default)]
pub(super) struct Subscribers(Vec<Subscriber>);

impl Subscribers {
    /// A new subscriber's queue, of `queue` events.
    pub fn subscribe(
        &mut self,
        program: u32,
        procedure: u32,
        queue: usize,
    ) -> mpsc::Receiver<Frame> {
        let (tx, rx) = mpsc::channel(queue);
        self.0.push(Subscriber {
            program,
            procedure,
            tx,
        });
        rx
    }

    /// Hands an event to each of its subscribers; drops subscribers that went away.
    pub fn deliver(&mut self, frame: Frame, counters: &Counters) {
        let (program, procedure) = (frame.header.program, frame.header.procedure);
        self.0.retain(|s| !s.tx.is_closed());
        for subscriber in &self.0 {
            if subscriber.program == program
                && subscriber.procedure == procedure
                && subscriber.tx.try_send(frame.clone()).is_err()
            {
                counters.events_dropped.inc();
            }
        }
    }
}
