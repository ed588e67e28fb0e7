//! How a connection's calls and streams report to it: through one shared address.
//!
//! An actix `Recipient` is a boxed copy of the address, and every copy of an address allocates
//! its own sender state, so a recipient made per call or per stream costs about 100 bytes that
//! an idle call holds for its whole life. A connection instead puts its address in one `Arc`
//! and hands out `Arc<dyn Report<M>>` views of it, one per message type, all sharing that
//! allocation (docs/BENCHMARKS.md, issue 16).

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, Message};

/// Somewhere to send `M` without waiting for an answer.
pub trait Report<M>: Send + Sync {
    fn report(&self, message: M);
}

impl<A, M> Report<M> for Addr<A>
where
    A: Actor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Message + Send + 'static,
    M::Result: Send,
{
    fn report(&self, message: M) {
        self.do_send(message);
    }
}
