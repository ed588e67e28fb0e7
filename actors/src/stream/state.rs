//! The state of one stream on one side, shared by the connection and the stream's handles.
//!
//! It holds everything about the stream: the chunks received and not yet consumed, the credit
//! this side may still spend, and the wakers of the handles waiting on it. The connection owns
//! the serial and the credit it granted; it hands frames in here ([`StreamLink::deliver`])
//! only when they fit that credit, so the queue never holds more than the window.
//!
//! There is no task or mailbox per stream: the connection updates the state in place as its
//! frames arrive and wakes the handle that waits, and a handle's own future does the work its
//! call asks for (a send waits for credit and for room in the send queue itself). An idle
//! stream costs this one allocation, which matters for servers holding many idle uploads
//! (docs/BENCHMARKS.md, issue 16).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use actix::Message;
use bytes::Bytes;
use ferry_codec::proto::{ErrorCode, Layer, Side};
use ferry_codec::{Frame, HOLE_LEN, Hole, MIN_FRAME_LEN, Route};

use crate::connection::report::Report;
use crate::connection::writer::{Outbox, Room};
use crate::error::CallError;
use crate::metrics::Counters;
use crate::stream::Chunk;

/// What a stream tells its connection.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StreamNotice {
    pub serial: u32,
    pub notice: Notice,
}

pub enum Notice {
    /// The consumer drained this many bytes of credit: grant them to the peer.
    Grant(u32),
    /// This side has sent all its data: queue STREAM/OK after it, carrying this trailer.
    Finish(Bytes),
    /// (Client) the peer's finish was received and the sink committed: queue STREAM/OK.
    Confirm,
    /// (Client) the user gave up on the stream: abort it.
    Abort(CallError),
}

/// Frames and events from the peer, already checked against credit by the connection.
pub enum FromPeer {
    Data {
        bytes: Bytes,
        cost: u32,
    },
    Hole {
        length: u64,
        /// The KEEP flag: a range of the receiver's base, not zeros.
        keep: bool,
        cost: u32,
    },
    /// The peer sent all its data; its finish carried this trailer (often empty).
    Finish(Bytes),
    /// (Server) the client confirmed our finish.
    Confirm,
    Credit(u32),
    /// The call is over: its REPLY came or went, or the connection died. `None` for a REPLY/OK.
    End(Option<CallError>),
}

/// Stream settings fixed when the stream opens.
pub struct StreamSetup {
    pub counters: Arc<Counters>,
    /// Set by the connection when the call's REPLY is queued: from then on the stream sends
    /// nothing (the REPLY is a serial's last frame).
    pub halted: Arc<AtomicBool>,
    pub serial: u32,
    pub route: Route,
    pub side: Side,
    pub outbox: Outbox,
    /// Where the stream's notices go: its connection's one shared address.
    pub owner: Arc<dyn Report<StreamNotice>>,
    pub window: u32,
    pub max_chunk: u32,
    pub receives: bool,
    pub sends: bool,
}

#[derive(Default)]
struct Receiving {
    queue: VecDeque<(Chunk, u32)>,
    finished: bool,
    /// The consumer waiting for the next chunk.
    waiter: Option<Waker>,
    /// Credit drained by the consumer and not yet granted back.
    drained: u64,
    /// The local consumer dropped its handle: data is discarded.
    abandoned: bool,
    /// The payload of the peer's finish, once it came.
    trailer: Bytes,
}

/// (Server) the client's confirmation of our finish.
#[derive(Default, PartialEq, Eq)]
enum Confirmation {
    #[default]
    NotAwaited,
    Awaited,
    Received,
}

#[derive(Default)]
struct Sending {
    credit: u64,
    /// The sender waiting for credit, for its confirmation or for the stream's end.
    waiter: Option<Waker>,
    finished: bool,
    confirmation: Confirmation,
}

#[derive(Default)]
struct State {
    receiving: Option<Receiving>,
    sending: Option<Sending>,
    /// Why the stream ended, once it has; every later request is answered with it.
    ended: Option<CallError>,
}

/// One stream's state and the settings it was opened with.
pub(crate) struct Shared {
    counters: Arc<Counters>,
    halted: Arc<AtomicBool>,
    serial: u32,
    route: Route,
    side: Side,
    outbox: Outbox,
    owner: Arc<dyn Report<StreamNotice>>,
    window: u32,
    max_chunk: u32,
    state: Mutex<State>,
}

/// Room in the send queue that a sender is waiting for, and then holds for its next frame.
#[derive(Default)]
pub(crate) struct Reservation {
    waiting: Option<Pin<Box<dyn Future<Output = Room> + Send>>>,
    room: Option<Room>,
}

/// Which of the handles was dropped before its direction was done.
pub(crate) enum Abandon {
    Receiving,
    Sending,
}

impl Shared {
    pub fn open(setup: StreamSetup) -> Arc<Self> {
        setup.counters.streams_open.inc();
        Arc::new(Self {
            counters: setup.counters,
            halted: setup.halted,
            serial: setup.serial,
            route: setup.route,
            side: setup.side,
            outbox: setup.outbox,
            owner: setup.owner,
            window: setup.window,
            max_chunk: setup.max_chunk,
            state: Mutex::new(State {
                receiving: setup.receives.then(Receiving::default),
                sending: setup.sends.then(Sending::default),
                ended: None,
            }),
        })
    }

    pub fn halted(&self) -> &Arc<AtomicBool> {
        &self.halted
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements; a panic elsewhere does not spoil it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn error(&self, code: ErrorCode, message: &str) -> CallError {
        CallError::new(code, self.side, Layer::Stream, message)
    }

    fn notify(&self, notice: Notice) {
        self.owner.report(StreamNotice {
            serial: self.serial,
            notice,
        });
    }

    /// The next chunk, `None` once the peer finished, or why the stream ended. Grants back
    /// the credit the consumer frees.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<Option<Chunk>, CallError>> {
        let mut state = self.lock();
        let State {
            receiving, ended, ..
        } = &mut *state;
        let Some(receiving) = receiving.as_mut() else {
            return Poll::Ready(Err(self.error(
                ErrorCode::FailedPrecondition,
                "this stream receives no data on this side",
            )));
        };
        let outcome = if let Some((chunk, cost)) = receiving.queue.pop_front() {
            receiving.drained += u64::from(cost);
            self.counters.stream_buffered_bytes.sub(u64::from(cost));
            Ok(Some(chunk))
        } else if receiving.finished {
            Ok(None)
        } else if let Some(error) = ended {
            Err(error.clone())
        } else {
            receiving.waiter = Some(cx.waker().clone());
            return Poll::Pending;
        };
        // Grant in steps of a quarter window: fewer CREDIT frames, and the sender never runs
        // dry while the consumer keeps up.
        if receiving.drained >= u64::from(self.window / 4).max(1) && ended.is_none() {
            let grant = receiving.drained as u32;
            receiving.drained = 0;
            self.notify(Notice::Grant(grant));
        }
        Poll::Ready(outcome)
    }

    /// The trailer of the peer's finish (empty before it, or if it carried none).
    pub fn trailer(&self) -> Bytes {
        self.lock()
            .receiving
            .as_ref()
            .map(|receiving| receiving.trailer.clone())
            .unwrap_or_default()
    }

    /// Why a new send is refused, if it is: the stream ended, sends nothing on this side, or
    /// was finished.
    pub fn refuse_send(&self) -> Option<CallError> {
        let state = self.lock();
        match (&state.ended, &state.sending) {
            (Some(error), _) => Some(error.clone()),
            (None, None) => Some(self.error(
                ErrorCode::FailedPrecondition,
                "this stream sends no data on this side",
            )),
            (None, Some(sending)) if sending.finished => Some(self.error(
                ErrorCode::FailedPrecondition,
                "the stream was already finished",
            )),
            (None, Some(_)) => None,
        }
    }

    /// Queues as much of `rest` as credit and the connection's send queue allow; ready once
    /// all of it is queued (or a hole, which goes as one frame), or the stream ended.
    pub fn poll_send(
        &self,
        cx: &mut Context<'_>,
        rest: &mut Chunk,
        reservation: &mut Reservation,
    ) -> Poll<Result<(), CallError>> {
        let head = MIN_FRAME_LEN as u64;
        loop {
            let mut state = self.lock();
            let State { sending, ended, .. } = &mut *state;
            let sending = sending.as_mut().expect("refuse_send checked the direction");
            if let Some(error) = ended {
                return Poll::Ready(Err(error.clone()));
            }
            sending.waiter = Some(cx.waker().clone());
            if self.halted.load(Ordering::Relaxed) {
                // The REPLY is queued; the end that follows it wakes us.
                return Poll::Pending;
            }
            if let Some(waiting) = reservation.waiting.as_mut() {
                let Poll::Ready(room) = waiting.as_mut().poll(cx) else {
                    return Poll::Pending;
                };
                reservation.waiting = None;
                reservation.room = Some(room);
            }
            // The next frame's wire length, as far as credit allows.
            let wanted = match &*rest {
                Chunk::Data(bytes) if bytes.is_empty() => return Poll::Ready(Ok(())),
                Chunk::Data(bytes) if sending.credit > head => {
                    head + (sending.credit - head)
                        .min(u64::from(self.max_chunk))
                        .min(bytes.len() as u64)
                }
                Chunk::Hole(_) | Chunk::Keep(_) if sending.credit >= head + HOLE_LEN as u64 => {
                    head + HOLE_LEN as u64
                }
                _ => {
                    self.counters.credit_stalls.inc();
                    return Poll::Pending;
                }
            };
            let reserved = reservation.room.take();
            let Some(room) = reserved.or_else(|| self.outbox.try_reserve(wanted as usize)) else {
                // The send queue is full: wait for its room in turn, then try again.
                self.counters.send_queue_stalls.inc();
                reservation.waiting = Some(Box::pin(self.outbox.reserve(wanted as usize)));
                continue;
            };
            let sent = match rest {
                Chunk::Data(bytes) => {
                    // A reservation made for a smaller credit (or clamped to the whole send
                    // queue) bounds the piece too.
                    let fits = (wanted.min(room.bytes() as u64) - head) as usize;
                    let piece = bytes.split_to(fits);
                    sending.credit -= head + piece.len() as u64;
                    Frame::stream_data(self.route, self.serial, piece)
                }
                Chunk::Hole(length) => {
                    sending.credit -= wanted;
                    Frame::hole(self.route, self.serial, Hole::new(*length))
                }
                Chunk::Keep(length) => {
                    sending.credit -= wanted;
                    Frame::hole(self.route, self.serial, Hole::keep(*length))
                }
            };
            let is_hole = !matches!(rest, Chunk::Data(_));
            let outcome = self.outbox.send_data(sent, room).map_err(|_| {
                CallError::connection_lost(self.side, "the connection's writer stopped")
            });
            if outcome.is_err() || is_hole {
                return Poll::Ready(outcome);
            }
        }
    }

    /// Ends the sending direction, with a trailer on the finish. The server then waits for
    /// the client's confirmation; the client's confirmation is the REPLY, which the caller
    /// awaits separately.
    pub fn finish(&self, trailer: Bytes) -> Result<(), CallError> {
        let mut state = self.lock();
        if let Some(error) = &state.ended {
            return Err(error.clone());
        }
        let Some(sending) = state.sending.as_mut() else {
            return Err(self.error(
                ErrorCode::FailedPrecondition,
                "this stream sends no data on this side",
            ));
        };
        if !sending.finished {
            sending.finished = true;
            self.notify(Notice::Finish(trailer));
        }
        if self.side == Side::Server && sending.confirmation == Confirmation::NotAwaited {
            sending.confirmation = Confirmation::Awaited;
        }
        Ok(())
    }

    /// (Server) ready once the client confirmed our finish, or the stream ended.
    pub fn poll_confirmed(&self, cx: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        if self.side != Side::Server {
            return Poll::Ready(Ok(()));
        }
        let mut state = self.lock();
        let State { sending, ended, .. } = &mut *state;
        let sending = sending.as_mut().expect("finish checked the direction");
        if sending.confirmation == Confirmation::Received {
            return Poll::Ready(Ok(()));
        }
        if let Some(error) = ended {
            return Poll::Ready(Err(error.clone()));
        }
        sending.waiter = Some(cx.waker().clone());
        Poll::Pending
    }

    /// (Client) confirm the peer's finish once the local sink committed.
    pub fn confirm(&self) -> Result<(), CallError> {
        let state = self.lock();
        if let Some(error) = &state.ended {
            return Err(error.clone());
        }
        match &state.receiving {
            Some(receiving) if receiving.finished && receiving.queue.is_empty() => {
                self.notify(Notice::Confirm);
                Ok(())
            }
            Some(_) => Err(self.error(
                ErrorCode::FailedPrecondition,
                "the stream has not been received to its end",
            )),
            None => Err(self.error(
                ErrorCode::FailedPrecondition,
                "this stream receives no data on this side",
            )),
        }
    }

    /// A handle was dropped before its direction was done. On the server the handler's
    /// outcome settles the call; on the client, dropping a handle aborts the stream.
    pub fn abandon(&self, which: Abandon) {
        let mut state = self.lock();
        if let (Abandon::Receiving, Some(receiving)) = (&which, state.receiving.as_mut()) {
            receiving.abandoned = true;
            self.discard_queue(receiving);
        }
        if self.side == Side::Client && state.ended.is_none() {
            let error = self.error(ErrorCode::Cancelled, "the client dropped the stream");
            self.notify(Notice::Abort(error.clone()));
            self.end(&mut state, Some(error));
        }
    }

    fn deliver(&self, event: FromPeer) {
        let mut state = self.lock();
        match event {
            FromPeer::Data { bytes, cost } => self.received(&mut state, Chunk::Data(bytes), cost),
            FromPeer::Hole { length, keep, cost } => {
                let chunk = if keep {
                    Chunk::Keep(length)
                } else {
                    Chunk::Hole(length)
                };
                self.received(&mut state, chunk, cost)
            }
            FromPeer::Finish(trailer) => {
                if let Some(receiving) = state.receiving.as_mut() {
                    receiving.finished = true;
                    receiving.trailer = trailer;
                    wake(&mut receiving.waiter);
                }
            }
            FromPeer::Confirm => {
                if let Some(sending) = state
                    .sending
                    .as_mut()
                    .filter(|s| s.confirmation == Confirmation::Awaited)
                {
                    sending.confirmation = Confirmation::Received;
                    wake(&mut sending.waiter);
                }
            }
            FromPeer::Credit(grant) => {
                if let Some(sending) = state.sending.as_mut() {
                    // Credit beyond 2^32-1 outstanding is capped (docs/PROTOCOL.md 7.5).
                    sending.credit = (sending.credit + u64::from(grant)).min(u64::from(u32::MAX));
                    wake(&mut sending.waiter);
                }
            }
            FromPeer::End(error) => self.end(&mut state, error),
        }
    }

    fn received(&self, state: &mut State, chunk: Chunk, cost: u32) {
        let Some(receiving) = state.receiving.as_mut() else {
            return;
        };
        if receiving.abandoned || state.ended.is_some() {
            return;
        }
        receiving.queue.push_back((chunk, cost));
        self.counters.stream_buffered_bytes.add(u64::from(cost));
        wake(&mut receiving.waiter);
    }

    fn end(&self, state: &mut State, error: Option<CallError>) {
        if state.ended.is_some() {
            return;
        }
        let error = error.unwrap_or_else(|| {
            self.error(
                ErrorCode::Aborted,
                "the call ended before the stream finished",
            )
        });
        state.ended = Some(error);
        if let Some(receiving) = state.receiving.as_mut() {
            if !receiving.finished {
                // Chunks not yet consumed are dropped: an ended stream holds no memory.
                self.discard_queue(receiving);
            }
            wake(&mut receiving.waiter);
        }
        if let Some(sending) = state.sending.as_mut() {
            wake(&mut sending.waiter);
        }
    }

    fn discard_queue(&self, receiving: &mut Receiving) {
        let held: u64 = receiving
            .queue
            .drain(..)
            .map(|(_, cost)| u64::from(cost))
            .sum();
        self.counters.stream_buffered_bytes.sub(held);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(mut receiving) = state.receiving.take() {
            self.discard_queue(&mut receiving);
        }
        self.counters.streams_open.dec();
    }
}

fn wake(waiter: &mut Option<Waker>) {
    if let Some(waker) = waiter.take() {
        waker.wake();
    }
}

/// The connection's end of a stream: where it delivers the peer's frames and the call's end.
/// Dropped without an end (the connection went away without saying), it ends the stream as
/// lost, so a handle never waits forever.
pub(crate) struct StreamLink(Arc<Shared>);

impl StreamLink {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self(shared)
    }

    /// Hands an event from the peer (or the call's end) to the stream and wakes its handle.
    pub fn deliver(&self, event: FromPeer) {
        self.0.deliver(event);
    }

    /// (Server) the call's REPLY is queued: the stream sends nothing more.
    pub fn halt(&self) {
        self.0.halted.store(true, Ordering::Relaxed);
    }
}

impl Drop for StreamLink {
    fn drop(&mut self) {
        let lost = CallError::connection_lost(Side::Unspecified, "the stream's connection is gone");
        let mut state = self.0.lock();
        self.0.end(&mut state, Some(lost));
    }
}
